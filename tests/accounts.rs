//! Discovery, registration, login, sessions, devices, profile and error handling, over HTTP.

mod common;

use common::{enc, TestServer};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn discovery_endpoints() {
    let server = TestServer::start().await;
    let versions = server.get("/_matrix/client/versions", None).await.ok();
    assert!(versions["versions"].as_array().unwrap().iter().any(|v| v == "v1.6"));

    let well_known = server.get("/.well-known/matrix/client", None).await.ok();
    assert!(well_known["m.homeserver"]["base_url"].as_str().unwrap().starts_with("http://"));

    let (_, token) = server.register("alice").await;
    let caps = server.get("/_matrix/client/v3/capabilities", Some(&token)).await.ok();
    assert_eq!(caps["capabilities"]["m.room_versions"]["default"], "12");
    assert_eq!(caps["capabilities"]["m.change_password"]["enabled"], true);
    assert_eq!(caps["capabilities"]["m.3pid_changes"]["enabled"], false);
    let available = caps["capabilities"]["m.room_versions"]["available"].as_object().unwrap();
    for version in 1..=12 {
        assert_eq!(available[&version.to_string()], "stable");
    }
    // No support contacts configured: 404, as the spec says.
    server.get("/.well-known/matrix/support", None).await.err(404, "M_NOT_FOUND");
    server.stop().await;

    let with_support = TestServer::start_with(|c| {
        c.support.page = "https://example.org/help".into();
        c.support.contacts = vec![
            weft::config::SupportContact { role: "m.role.admin".into(), matrix_id: "@root:localhost".into(), email_address: "root@example.org".into() },
            weft::config::SupportContact { role: "m.role.security".into(), matrix_id: String::new(), email_address: "security@example.org".into() },
            weft::config::SupportContact { role: "m.role.admin".into(), ..Default::default() },
        ];
    })
    .await;
    let support = with_support.get("/.well-known/matrix/support", None).await.ok();
    assert_eq!(
        support,
        json!({
            "support_page": "https://example.org/help",
            "contacts": [
                { "role": "m.role.admin", "matrix_id": "@root:localhost", "email_address": "root@example.org" },
                { "role": "m.role.security", "email_address": "security@example.org" },
            ],
        })
    );
    with_support.stop().await;
}

/// `/voip/turnServer`: 404 without TURN; coturn REST credentials with a shared secret.
#[tokio::test]
async fn turn_credentials_for_calls() {
    use hmac::{Hmac, Mac};
    let none = TestServer::start().await;
    let (_, token) = none.register("alice").await;
    none.get("/_matrix/client/v3/voip/turnServer", Some(&token)).await.err(404, "M_NOT_FOUND");
    none.stop().await;

    let server = TestServer::start_with(|c| {
        c.voip.turn_uris = vec!["turn:turn.example.org:3478?transport=udp".into()];
        c.voip.turn_shared_secret = "north".into();
        c.voip.turn_user_lifetime_secs = 3600;
    })
    .await;
    let (alice_id, token) = server.register("alice").await;
    server.get("/_matrix/client/v3/voip/turnServer", None).await.err(401, "M_MISSING_TOKEN");
    let turn = server.get("/_matrix/client/v3/voip/turnServer", Some(&token)).await.ok();
    assert_eq!(turn["uris"], json!(["turn:turn.example.org:3478?transport=udp"]));
    assert_eq!(turn["ttl"], 3600);
    let username = turn["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, alice_id);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 3590..=now + 3610).contains(&expiry.parse::<u64>().unwrap()), "{username}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"north").unwrap();
    mac.update(username.as_bytes());
    // Padded standard base64 of the HMAC, as coturn computes it.
    let password = turn["password"].as_str().unwrap();
    assert_eq!(password.len(), 28, "{password}");
    let decoded = ruma::serde::Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(password.trim_end_matches('=')).unwrap();
    assert_eq!(decoded.as_bytes(), mac.finalize().into_bytes().as_slice());
    server.stop().await;
}

#[tokio::test]
async fn cors_preflight_and_headers() {
    let server = TestServer::start().await;
    let response = server
        .http
        .request(Method::OPTIONS, format!("{}/_matrix/client/v3/login", server.base))
        .header("origin", "https://app.element.io")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    // The spec asks for the headers on every response.
    let reply = server.get("/_matrix/client/versions", None).await;
    assert_eq!(reply.headers["access-control-allow-origin"], "*");
    let response = server
        .http
        .get(format!("{}/_matrix/client/versions", server.base))
        .header("origin", "https://app.element.io")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    server.stop().await;
}

#[tokio::test]
async fn register_with_user_interactive_auth() {
    let server = TestServer::start().await;
    // First request without auth: the flows, and a session.
    let reply = server.post("/_matrix/client/v3/register", None, json!({ "username": "bob", "password": "pw" })).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.body["flows"][0]["stages"][0], "m.login.dummy");
    let session = reply.body["session"].as_str().unwrap().to_owned();
    assert!(reply.body.get("errcode").is_none());

    let done = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "bob", "password": "pw", "auth": { "type": "m.login.dummy", "session": session } }),
        )
        .await
        .ok();
    assert_eq!(done["user_id"], "@bob:localhost");
    assert!(done["access_token"].as_str().unwrap().len() > 30);
    assert!(done["device_id"].is_string());

    // Taken now.
    let again = server
        .post("/_matrix/client/v3/register", None, json!({ "username": "bob", "password": "pw", "auth": { "type": "m.login.dummy" } }))
        .await;
    again.err(400, "M_USER_IN_USE");
    server.get("/_matrix/client/v3/register/available?username=bob", None).await.err(400, "M_USER_IN_USE");
    let free = server.get("/_matrix/client/v3/register/available?username=carol", None).await.ok();
    assert_eq!(free["available"], true);
    server.get("/_matrix/client/v3/register/available?username=BAD%20NAME", None).await.err(400, "M_INVALID_USERNAME");

    // Invalid usernames.
    server
        .post("/_matrix/client/v3/register", None, json!({ "username": "no spaces", "password": "pw", "auth": { "type": "m.login.dummy" } }))
        .await
        .err(400, "M_INVALID_USERNAME");

    // inhibit_login: an account but no session.
    let inhibited = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "dave", "password": "pw", "inhibit_login": true, "auth": { "type": "m.login.dummy" } }),
        )
        .await
        .ok();
    assert!(inhibited.get("access_token").is_none());

    // Guests are not allowed.
    server
        .post("/_matrix/client/v3/register?kind=guest", None, json!({}))
        .await
        .err(403, "M_GUEST_ACCESS_FORBIDDEN");
    server.stop().await;
}

/// A registration's UIA session keeps the first request's parameters (a later request may
/// leave them out, the password included), and once it has registered a user a retry with
/// the same session is answered for that user, as Synapse does: a client whose answer was
/// lost can retry.
#[tokio::test]
async fn registration_sessions_keep_parameters_and_are_idempotent() {
    let server = TestServer::start().await;
    let challenge = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "erin", "password": "übers3kr1t", "device_id": "XYZZY", "initial_device_display_name": "phone" }),
        )
        .await;
    assert_eq!(challenge.status, 401);
    let session = challenge.body["session"].as_str().unwrap().to_owned();
    let auth = json!({ "auth": { "type": "m.login.dummy", "session": session } });
    let done = server.post("/_matrix/client/v3/register", None, auth.clone()).await.ok();
    assert_eq!(done["user_id"], "@erin:localhost");
    assert_eq!(done["device_id"], "XYZZY");
    let token = done["access_token"].as_str().unwrap();
    let device = server.get("/_matrix/client/v3/devices/XYZZY", Some(token)).await.ok();
    assert_eq!(device["display_name"], "phone");
    // The password of the first request is the account's.
    server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "erin" }, "password": "übers3kr1t" }))
        .await
        .ok();

    // The same session again: the same user, not M_USER_IN_USE.
    let retried = server.post("/_matrix/client/v3/register", None, auth).await.ok();
    assert_eq!(retried["user_id"], "@erin:localhost");
    assert!(retried["access_token"].is_string());

    // Without a username: the generated one is kept for the session too.
    let challenge = server.post("/_matrix/client/v3/register", None, json!({ "password": "pw" })).await;
    let auth = json!({ "auth": { "type": "m.login.dummy", "session": challenge.body["session"] } });
    let first = server.post("/_matrix/client/v3/register", None, auth.clone()).await.ok();
    let second = server.post("/_matrix/client/v3/register", None, auth).await.ok();
    assert_eq!(first["user_id"], second["user_id"]);
    server.stop().await;
}

#[tokio::test]
async fn registration_disabled_by_default_and_token_flow() {
    let closed = TestServer::start_with(|c| c.registration.enabled = false).await;
    closed
        .post("/_matrix/client/v3/register", None, json!({ "username": "x", "password": "pw", "auth": { "type": "m.login.dummy" } }))
        .await
        .err(403, "M_FORBIDDEN");
    closed
        .get("/_matrix/client/v1/register/m.login.registration_token/validity?token=letmein", None)
        .await
        .err(403, "M_FORBIDDEN");
    closed.stop().await;

    let tokens = TestServer::start_with(|c| {
        c.registration.enabled = false;
        c.registration.tokens = vec!["letmein".into()];
    })
    .await;
    // Clients can check a token before registering.
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity?token=";
    assert_eq!(tokens.get(&format!("{validity}letmein"), None).await.ok(), json!({ "valid": true }));
    assert_eq!(tokens.get(&format!("{validity}nope"), None).await.ok(), json!({ "valid": false }));
    tokens.get("/_matrix/client/v1/register/m.login.registration_token/validity", None).await.err(400, "M_MISSING_PARAM");
    let challenge = tokens.post("/_matrix/client/v3/register", None, json!({ "username": "t", "password": "pw" })).await;
    assert_eq!(challenge.status, 401);
    assert_eq!(challenge.body["flows"][0]["stages"][0], "m.login.registration_token");
    let session = challenge.body["session"].as_str().unwrap();
    let wrong = tokens
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "t", "password": "pw", "auth": { "type": "m.login.registration_token", "token": "nope", "session": session } }),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.errcode(), "M_FORBIDDEN");
    // A failed stage answers with the stages done so far, none here (as Synapse).
    assert_eq!(wrong.body["completed"], json!([]), "{}", wrong.body);
    assert!(challenge.body.get("completed").is_none(), "the first challenge has none");
    // Dummy is not an allowed flow here.
    let dummy = tokens
        .post("/_matrix/client/v3/register", None, json!({ "username": "t", "password": "pw", "auth": { "type": "m.login.dummy", "session": session } }))
        .await;
    assert_eq!(dummy.status, 401);
    let ok = tokens
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "t", "password": "pw", "auth": { "type": "m.login.registration_token", "token": "letmein", "session": session } }),
        )
        .await
        .ok();
    assert_eq!(ok["user_id"], "@t:localhost");
    tokens.stop().await;
}

#[tokio::test]
async fn login_whoami_logout() {
    let server = TestServer::start().await;
    server.register("erin").await;
    let types = server.get("/_matrix/client/v3/login", None).await.ok();
    assert_eq!(types["flows"][0]["type"], "m.login.password");

    let bad = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "erin" }, "password": "wrong" }),
        )
        .await;
    bad.err(403, "M_FORBIDDEN");
    server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "nobody" }, "password": "x" }))
        .await
        .err(403, "M_FORBIDDEN");

    let login = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "@erin:localhost" }, "password": "password", "device_id": "PHONE", "initial_device_display_name": "Erin's phone" }),
        )
        .await
        .ok();
    assert_eq!(login["device_id"], "PHONE");
    let token = login["access_token"].as_str().unwrap();
    let me = server.get("/_matrix/client/v3/account/whoami", Some(token)).await.ok();
    assert_eq!(me["user_id"], "@erin:localhost");
    assert_eq!(me["device_id"], "PHONE");

    // Legacy `user` field and r0 paths still work.
    let legacy = server
        .post("/_matrix/client/r0/login", None, json!({ "type": "m.login.password", "user": "erin", "password": "password" }))
        .await
        .ok();
    let legacy_token = legacy["access_token"].as_str().unwrap();
    server.get("/_matrix/client/r0/account/whoami", Some(legacy_token)).await.ok();
    // Token in the query string.
    server.get(&format!("/_matrix/client/v3/account/whoami?access_token={legacy_token}"), None).await.ok();

    server.get("/_matrix/client/v3/account/whoami", None).await.err(401, "M_MISSING_TOKEN");
    server.get("/_matrix/client/v3/account/whoami", Some("wft_not_a_token")).await.err(401, "M_UNKNOWN_TOKEN");

    server.post("/_matrix/client/v3/logout", Some(token), json!({})).await.ok();
    server.get("/_matrix/client/v3/account/whoami", Some(token)).await.err(401, "M_UNKNOWN_TOKEN");
    server.get("/_matrix/client/v3/account/whoami", Some(legacy_token)).await.ok();

    // logout/all ends every session.
    let (_, first) = server.register("frank").await;
    let second = server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "user": "frank", "password": "password" }))
        .await
        .ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    server.post("/_matrix/client/v3/logout/all", Some(&first), json!({})).await.ok();
    server.get("/_matrix/client/v3/account/whoami", Some(&first)).await.err(401, "M_UNKNOWN_TOKEN");
    server.get("/_matrix/client/v3/account/whoami", Some(&second)).await.err(401, "M_UNKNOWN_TOKEN");
    server.stop().await;
}

#[tokio::test]
async fn password_change_and_deactivation_need_uia() {
    let server = TestServer::start().await;
    let (user, token) = server.register("gina").await;
    let challenge = server.post("/_matrix/client/v3/account/password", Some(&token), json!({ "new_password": "new" })).await;
    assert_eq!(challenge.status, 401);
    assert_eq!(challenge.body["flows"][0]["stages"][0], "m.login.password");
    let session = challenge.body["session"].as_str().unwrap();
    let wrong = server
        .post(
            "/_matrix/client/v3/account/password",
            Some(&token),
            json!({ "new_password": "new", "auth": { "type": "m.login.password", "session": session, "identifier": { "type": "m.id.user", "user": user }, "password": "bad" } }),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.errcode(), "M_FORBIDDEN");
    server
        .post(
            "/_matrix/client/v3/account/password",
            Some(&token),
            json!({ "new_password": "new", "auth": { "type": "m.login.password", "session": session, "identifier": { "type": "m.id.user", "user": user }, "password": "password" } }),
        )
        .await
        .ok();
    server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "user": "gina", "password": "password" }))
        .await
        .err(403, "M_FORBIDDEN");
    server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "user": "gina", "password": "new" }))
        .await
        .ok();

    let room = server.create_room(&token, json!({})).await;
    server
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&token),
            json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "gina" }, "password": "new" } }),
        )
        .await
        .ok();
    server.get("/_matrix/client/v3/account/whoami", Some(&token)).await.err(401, "M_UNKNOWN_TOKEN");
    server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "user": "gina", "password": "new" }))
        .await
        .err(403, "M_USER_DEACTIVATED");
    // The name stays taken, and the user left their rooms.
    server
        .post("/_matrix/client/v3/register", None, json!({ "username": "gina", "password": "x", "auth": { "type": "m.login.dummy" } }))
        .await
        .err(400, "M_USER_IN_USE");
    let (_, other) = server.register("hank").await;
    let _ = room;
    let _ = other;
    server.stop().await;
}

#[tokio::test]
async fn devices() {
    let server = TestServer::start().await;
    let (user, token) = server.register("ivy").await;
    let second = server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "user": "ivy", "password": "password", "device_id": "LAPTOP" }))
        .await
        .ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let list = server.get("/_matrix/client/v3/devices", Some(&token)).await.ok();
    assert_eq!(list["devices"].as_array().unwrap().len(), 2);
    server.put("/_matrix/client/v3/devices/LAPTOP", Some(&token), json!({ "display_name": "Work laptop" })).await.ok();
    let device = server.get("/_matrix/client/v3/devices/LAPTOP", Some(&token)).await.ok();
    assert_eq!(device["display_name"], "Work laptop");
    server.get("/_matrix/client/v3/devices/NOPE", Some(&token)).await.err(404, "M_NOT_FOUND");
    server.put("/_matrix/client/v3/devices/NOPE", Some(&token), json!({ "display_name": "x" })).await.err(404, "M_NOT_FOUND");

    let challenge = server.delete("/_matrix/client/v3/devices/LAPTOP", Some(&token), json!({})).await;
    assert_eq!(challenge.status, 401);
    server
        .delete(
            "/_matrix/client/v3/devices/LAPTOP",
            Some(&token),
            json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": "password" } }),
        )
        .await
        .ok();
    server.get("/_matrix/client/v3/account/whoami", Some(&second)).await.err(401, "M_UNKNOWN_TOKEN");
    let list = server.get("/_matrix/client/v3/devices", Some(&token)).await.ok();
    assert_eq!(list["devices"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn profile_is_propagated_to_rooms() {
    let server = TestServer::start().await;
    let (user, token) = server.register("jo").await;
    let room = server.create_room(&token, json!({})).await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&user));
    server.put(&path, Some(&token), json!({ "displayname": "Jo Smith" })).await.ok();
    assert_eq!(server.get(&path, None).await.ok()["displayname"], "Jo Smith");
    let avatar = format!("/_matrix/client/v3/profile/{}/avatar_url", enc(&user));
    server.put(&avatar, Some(&token), json!({ "avatar_url": "mxc://localhost/abc" })).await.ok();
    let profile = server.get(&format!("/_matrix/client/v3/profile/{}", enc(&user)), None).await.ok();
    assert_eq!(profile["displayname"], "Jo Smith");
    assert_eq!(profile["avatar_url"], "mxc://localhost/abc");

    let member = server
        .get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&user)), Some(&token))
        .await
        .ok();
    assert_eq!(member["displayname"], "Jo Smith");
    assert_eq!(member["avatar_url"], "mxc://localhost/abc");

    let (other, other_token) = server.register("kim").await;
    let _ = other;
    server.put(&path, Some(&other_token), json!({ "displayname": "Not me" })).await.err(403, "M_FORBIDDEN");
    server.get("/_matrix/client/v3/profile/%40ghost%3Alocalhost", None).await.err(404, "M_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn shared_secret_registration() {
    use hmac::{Hmac, Mac};
    let server = TestServer::start().await;
    let nonce = server.get("/_synapse/admin/v1/register", None).await.ok()["nonce"].as_str().unwrap().to_owned();
    let mac = |nonce: &str, user: &str, password: &str, admin: bool| {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"test-shared-secret").unwrap();
        mac.update(format!("{nonce}\0{user}\0{password}\0{}", if admin { "admin" } else { "notadmin" }).as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    let bad = server
        .post(
            "/_synapse/admin/v1/register",
            None,
            json!({ "nonce": nonce, "username": "admin", "password": "pw", "admin": true, "mac": mac(&nonce, "admin", "other", true) }),
        )
        .await;
    bad.err(403, "M_FORBIDDEN");
    let nonce = server.get("/_synapse/admin/v1/register", None).await.ok()["nonce"].as_str().unwrap().to_owned();
    let ok = server
        .post(
            "/_synapse/admin/v1/register",
            None,
            json!({ "nonce": nonce, "username": "admin", "password": "pw", "admin": true, "mac": mac(&nonce, "admin", "pw", true) }),
        )
        .await
        .ok();
    assert_eq!(ok["user_id"], "@admin:localhost");
    server.get("/_matrix/client/v3/account/whoami", ok["access_token"].as_str()).await.ok();
    // A nonce works once.
    server
        .post(
            "/_synapse/admin/v1/register",
            None,
            json!({ "nonce": nonce, "username": "admin2", "password": "pw", "admin": false, "mac": mac(&nonce, "admin2", "pw", false) }),
        )
        .await
        .err(400, "M_UNKNOWN");
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_matrix_errors() {
    let server = TestServer::start_with(|c| c.max_request_bytes = 4096).await;
    let (_, token) = server.register("lee").await;
    server.get("/_matrix/client/v3/nonexistent", None).await.err(404, "M_UNRECOGNIZED");
    server.get("/_matrix/client/v3/createRoom", Some(&token)).await.err(405, "M_UNRECOGNIZED");
    server
        .raw(Method::POST, "/_matrix/client/v3/login", None, Some(b"{not json".to_vec()))
        .await
        .err(400, "M_NOT_JSON");
    // Invalid UTF-8 inside a string is not JSON either.
    server
        .raw(Method::POST, "/_matrix/client/v3/register", None, Some(b"{ \"username\": \"a\x81\" }".to_vec()))
        .await
        .err(400, "M_NOT_JSON");
    server
        .post("/_matrix/client/v3/createRoom", Some(&token), json!({ "preset": 7 }))
        .await
        .err(400, "M_BAD_JSON");
    let big = json!({ "name": "x".repeat(10_000) });
    server.post("/_matrix/client/v3/createRoom", Some(&token), big).await.err(413, "M_TOO_LARGE");
    server
        .get("/_matrix/client/v3/rooms/!nope:localhost/messages?dir=sideways", Some(&token))
        .await
        .err(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_with_retry_after() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.per_second = 0.5;
        c.rate_limits.burst = 3;
    })
    .await;
    let mut limited = None;
    for _ in 0..6 {
        let reply = server
            .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "user": "x", "password": "y" }))
            .await;
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
    }
    let reply = limited.expect("login is rate limited");
    reply.err(429, "M_LIMIT_EXCEEDED");
    assert!(reply.body["retry_after_ms"].as_u64().unwrap() > 0);
    assert!(reply.headers.get("retry-after").is_some());
    server.stop().await;

    // Message sends have their own limit, configurable per action.
    let server = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.actions.insert("send_message_event".into(), weft::config::RateLimit { per_second: 0.1, burst: 2 });
        c.rate_limits.actions.remove("register");
        c.rate_limits.actions.remove("create_room");
    })
    .await;
    let (_, token) = server.register("sender").await;
    let room = server.create_room(&token, json!({})).await;
    let send = |txn: &'static str| {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(&room));
        let server = &server;
        let token = token.clone();
        async move { server.put(&path, Some(&token), json!({ "msgtype": "m.text", "body": txn })).await }
    };
    send("a").await.ok();
    send("b").await.ok();
    send("c").await.err(429, "M_LIMIT_EXCEEDED");
    server.stop().await;
}

/// Refresh tokens (spec v1.3): asked for with `refresh_token: true`, the access token
/// expires (a soft logout) and `/refresh` trades the refresh token for a new pair; the old
/// refresh token works until the new pair is used.
#[tokio::test]
async fn refresh_tokens_rotate_and_expire() {
    let server = TestServer::start_with(|c| c.refreshable_access_token_lifetime_secs = 1).await;
    server.register("alice").await;
    let login = |refresh: bool| {
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "password", "refresh_token": refresh })
    };
    // Without asking: no refresh token, no expiry.
    let plain = server.post("/_matrix/client/v3/login", None, login(false)).await.ok();
    assert!(plain.get("refresh_token").is_none() && plain.get("expires_in_ms").is_none());

    let session = server.post("/_matrix/client/v3/login", None, login(true)).await.ok();
    assert_eq!(session["expires_in_ms"], 1000);
    let access = session["access_token"].as_str().unwrap().to_owned();
    let refresh = session["refresh_token"].as_str().unwrap().to_owned();
    server.get("/_matrix/client/v3/account/whoami", Some(&access)).await.ok();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let expired = server.get("/_matrix/client/v3/account/whoami", Some(&access)).await;
    expired.err(401, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.body["soft_logout"], true);

    // Refresh; a retry with the same token (the answer was lost) still works.
    let first = server.post("/_matrix/client/v3/refresh", None, json!({ "refresh_token": refresh })).await.ok();
    let again = server.post("/_matrix/client/v3/refresh", None, json!({ "refresh_token": refresh })).await.ok();
    assert_ne!(first["access_token"], again["access_token"]);
    // The retried answer replaced the first one's pair.
    server.get("/_matrix/client/v3/account/whoami", Some(first["access_token"].as_str().unwrap())).await.err(401, "M_UNKNOWN_TOKEN");
    let new_access = again["access_token"].as_str().unwrap();
    let whoami = server.get("/_matrix/client/v3/account/whoami", Some(new_access)).await.ok();
    assert_eq!(whoami["device_id"], session["device_id"]);
    // The new pair is in use: the old refresh token is gone, the new one works.
    server.post("/_matrix/client/v3/refresh", None, json!({ "refresh_token": refresh })).await.err(401, "M_UNKNOWN_TOKEN");
    let next = server.post("/_matrix/client/v3/refresh", None, json!({ "refresh_token": again["refresh_token"] })).await.ok();
    assert!(next["refresh_token"].is_string());
    server.post("/_matrix/client/v3/refresh", None, json!({ "refresh_token": "nonsense" })).await.err(401, "M_UNKNOWN_TOKEN");

    // Registration can ask for one too; logging out ends the refresh token with the device.
    let registered = server
        .post("/_matrix/client/v3/register", None, json!({ "username": "bob", "password": "password", "refresh_token": true, "auth": { "type": "m.login.dummy" } }))
        .await
        .ok();
    let bob_refresh = registered["refresh_token"].as_str().unwrap().to_owned();
    server.post("/_matrix/client/v3/logout", Some(registered["access_token"].as_str().unwrap()), json!({})).await.ok();
    server.post("/_matrix/client/v3/refresh", None, json!({ "refresh_token": bob_refresh })).await.err(401, "M_UNKNOWN_TOKEN");
    server.stop().await;
}

/// UIA proves the acting account: another account's valid password is refused (403, not a
/// new challenge), and a session started for one operation cannot complete another.
#[tokio::test]
async fn uia_is_bound_to_the_account_and_the_operation() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (eve_id, _) = server.register("eve").await;
    let login = |device: &str| json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "password", "device_id": device });
    server.post("/_matrix/client/v3/login", None, login("FIRST")).await.ok();
    server.post("/_matrix/client/v3/login", None, login("SECOND")).await.ok();
    let password_of = |user: &str, session: Option<&str>| {
        let mut auth = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": "password" });
        if let Some(session) = session {
            auth["session"] = session.into();
        }
        json!({ "auth": auth })
    };
    server.delete("/_matrix/client/v3/devices/FIRST", Some(&alice), password_of(&eve_id, None)).await.err(403, "M_FORBIDDEN");
    server.get("/_matrix/client/v3/devices/FIRST", Some(&alice)).await.ok();

    let challenge = server.delete("/_matrix/client/v3/devices/FIRST", Some(&alice), json!({})).await;
    assert_eq!(challenge.status, 401);
    let session = challenge.body["session"].as_str().unwrap().to_owned();
    server.delete("/_matrix/client/v3/devices/SECOND", Some(&alice), password_of(&alice_id, Some(&session))).await.err(403, "M_FORBIDDEN");
    server.get("/_matrix/client/v3/devices/SECOND", Some(&alice)).await.ok();
    // The session still serves what it was started for.
    server.delete("/_matrix/client/v3/devices/FIRST", Some(&alice), password_of(&alice_id, Some(&session))).await.ok();
    server.get("/_matrix/client/v3/devices/FIRST", Some(&alice)).await.err(404, "M_NOT_FOUND");
    server.stop().await;
}

/// The UIA password stage in its old form (`user` instead of `identifier`), which clients
/// still send and Synapse takes, is accepted.
#[tokio::test]
async fn uia_password_stage_with_the_old_user_field() {
    let server = TestServer::start().await;
    let (_, token) = server.register("bob").await;
    let login = server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" }, "password": "password" }))
        .await
        .ok();
    let device = login["device_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/devices/{device}");
    let challenge = server.delete(&path, Some(&token), json!({})).await;
    let auth = json!({ "type": "m.login.password", "user": "bob", "password": "password", "session": challenge.body["session"] });
    server.delete(&path, Some(&token), json!({ "auth": auth })).await.ok();
    server.get(&path, Some(&token)).await.err(404, "M_NOT_FOUND");
    // A wrong password in the old form is still a wrong password.
    let other = server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" }, "password": "password" }))
        .await
        .ok()["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/_matrix/client/v3/devices/{other}");
    let challenge = server.delete(&path, Some(&token), json!({})).await;
    let reply = server.delete(&path, Some(&token), json!({ "auth": { "type": "m.login.password", "user": "bob", "password": "nope", "session": challenge.body["session"] } })).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.body["errcode"], "M_FORBIDDEN");
    server.stop().await;
}
