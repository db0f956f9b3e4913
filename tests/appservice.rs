//! Application services through the HTTP APIs both ways: a registration file, `as_token`
//! requests to weft, and an in-test application service that weft sends transactions,
//! pings and queries to.

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post, put},
    Json, Router,
};
use common::{enc, eventually, TestServer};
use serde_json::{json, Value};

const AS_TOKEN: &str = "as-token-of-the-bridge";
const HS_TOKEN: &str = "hs-token-of-the-bridge";

/// What the in-test service saw, and how it behaves.
#[derive(Default)]
struct Seen {
    /// Transactions as received, in order: (txn id, body). Repeats included.
    transactions: Mutex<Vec<(String, Value)>>,
    pings: Mutex<Vec<Value>>,
    user_queries: Mutex<Vec<String>>,
    alias_queries: Mutex<Vec<String>>,
    /// Requests without the right hs_token.
    unauthorised: AtomicUsize,
    /// Transactions to refuse (500) before accepting.
    fail_next: AtomicUsize,
    /// Never answer transactions (a service that hangs).
    hang: std::sync::atomic::AtomicBool,
    /// The homeserver to call back (to create users and rooms on queries).
    homeserver: Mutex<String>,
}

impl Seen {
    /// Each distinct transaction's events, in the order first received.
    fn events(&self) -> Vec<Value> {
        let mut ids = Vec::new();
        let mut events = Vec::new();
        for (id, body) in self.transactions.lock().unwrap().iter() {
            if !ids.contains(id) {
                ids.push(id.clone());
                events.extend(body["events"].as_array().cloned().unwrap_or_default());
            }
        }
        events
    }

    fn bodies(&self) -> Vec<String> {
        self.events().iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect()
    }
}

fn authorised(seen: &Seen, headers: &HeaderMap) -> bool {
    let ok = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {HS_TOKEN}"));
    if !ok {
        seen.unauthorised.fetch_add(1, Ordering::SeqCst);
    }
    ok
}

async fn transaction(State(seen): State<Arc<Seen>>, Path(txn): Path<String>, headers: HeaderMap, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if !authorised(&seen, &headers) {
        return (StatusCode::FORBIDDEN, Json(json!({ "errcode": "M_FORBIDDEN" })));
    }
    seen.transactions.lock().unwrap().push((txn, body));
    if seen.hang.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let refuse = seen.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    if refuse {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "errcode": "M_UNKNOWN" })));
    }
    (StatusCode::OK, Json(json!({})))
}

async fn ping(State(seen): State<Arc<Seen>>, headers: HeaderMap, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if !authorised(&seen, &headers) {
        return (StatusCode::FORBIDDEN, Json(json!({})));
    }
    seen.pings.lock().unwrap().push(body);
    (StatusCode::OK, Json(json!({})))
}

/// Users named `@bridge_known_*` exist on the remote network: the service registers them.
async fn user_query(State(seen): State<Arc<Seen>>, Path(user_id): Path<String>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    if !authorised(&seen, &headers) {
        return (StatusCode::FORBIDDEN, Json(json!({})));
    }
    seen.user_queries.lock().unwrap().push(user_id.clone());
    let localpart = user_id.trim_start_matches('@').split(':').next().unwrap().to_owned();
    if !localpart.starts_with("bridge_known_") {
        return (StatusCode::NOT_FOUND, Json(json!({ "errcode": "M_NOT_FOUND" })));
    }
    let homeserver = seen.homeserver.lock().unwrap().clone();
    let reply = reqwest::Client::new()
        .post(format!("{homeserver}/_matrix/client/v3/register"))
        .bearer_auth(AS_TOKEN)
        .json(&json!({ "type": "m.login.application_service", "username": localpart, "inhibit_login": true }))
        .send()
        .await
        .unwrap();
    assert!(reply.status().is_success());
    (StatusCode::OK, Json(json!({})))
}

/// Aliases `#bridge_known_*` name rooms of the remote network: the service makes the room.
async fn alias_query(State(seen): State<Arc<Seen>>, Path(alias): Path<String>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    if !authorised(&seen, &headers) {
        return (StatusCode::FORBIDDEN, Json(json!({})));
    }
    seen.alias_queries.lock().unwrap().push(alias.clone());
    let localpart = alias.trim_start_matches('#').split(':').next().unwrap().to_owned();
    if !localpart.starts_with("bridge_known_") {
        return (StatusCode::NOT_FOUND, Json(json!({ "errcode": "M_NOT_FOUND" })));
    }
    let homeserver = seen.homeserver.lock().unwrap().clone();
    let reply = reqwest::Client::new()
        .post(format!("{homeserver}/_matrix/client/v3/createRoom"))
        .bearer_auth(AS_TOKEN)
        .json(&json!({ "room_alias_name": localpart, "preset": "public_chat" }))
        .send()
        .await
        .unwrap();
    assert!(reply.status().is_success(), "{:?}", reply.text().await);
    (StatusCode::OK, Json(json!({})))
}

async fn protocol(Path(protocol): Path<String>) -> (StatusCode, Json<Value>) {
    if protocol == "loose" {
        // Metadata as services write it in the wild: no field_types, bare instances.
        return (StatusCode::OK, Json(json!({ "user_fields": ["nick"], "location_fields": [], "icon": "mxc://x/y", "instances": [{ "desc": "bare" }] })));
    }
    if protocol != "gossip" {
        return (StatusCode::NOT_FOUND, Json(json!({})));
    }
    (StatusCode::OK, Json(json!({
        "user_fields": ["nick"],
        "location_fields": ["channel"],
        "icon": "mxc://example.org/gossip",
        "field_types": {
            "nick": { "regexp": "[a-z]+", "placeholder": "alice" },
            "channel": { "regexp": "#[a-z]+", "placeholder": "#rust" }
        },
        "instances": [{ "desc": "Gossip Net", "fields": {}, "network_id": "gossipnet" }]
    })))
}

async fn locations(Path(protocol): Path<String>, Query(fields): Query<BTreeMap<String, String>>) -> Json<Value> {
    Json(json!([{ "alias": "#bridge_known_rust:localhost", "protocol": protocol, "fields": fields }]))
}

async fn users(Path(protocol): Path<String>, Query(fields): Query<BTreeMap<String, String>>) -> Json<Value> {
    Json(json!([{ "userid": "@bridge_known_alice:localhost", "protocol": protocol, "fields": fields }]))
}

/// Starts the in-test application service on an ephemeral port: (its url, what it saw).
async fn start_appservice() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/_matrix/app/v1/transactions/{txn}", put(transaction))
        .route("/_matrix/app/v1/ping", post(ping))
        .route("/_matrix/app/v1/users/{user_id}", get(user_query))
        .route("/_matrix/app/v1/rooms/{alias}", get(alias_query))
        .route("/_matrix/app/v1/thirdparty/protocol/{protocol}", get(protocol))
        .route("/_matrix/app/v1/thirdparty/location/{protocol}", get(locations))
        .route("/_matrix/app/v1/thirdparty/user/{protocol}", get(users))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn registration(url: &str, extra: &str) -> String {
    format!(
        r##"id: gossip-bridge
url: "{url}"
as_token: {AS_TOKEN}
hs_token: {HS_TOKEN}
sender_localpart: gossipbot
rate_limited: false
protocols: ["gossip", "loose"]
{extra}
namespaces:
  users:
    - exclusive: true
      regex: "@bridge_.*:localhost"
  aliases:
    - exclusive: true
      regex: "#bridge_.*:localhost"
  rooms: []
"##
    )
}

/// weft with the in-test service registered.
async fn server_with_appservice(extra: &str) -> (TestServer, Arc<Seen>) {
    let (url, seen) = start_appservice().await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), registration(&url, extra)).unwrap();
    let (_, path) = file.keep().unwrap();
    let server = TestServer::start_with(|config| config.app_service_config_files = vec![path]).await;
    *seen.homeserver.lock().unwrap() = server.base.clone();
    (server, seen)
}

fn as_path(path: &str, user_id: Option<&str>) -> String {
    match user_id {
        Some(user) => format!("{path}{}user_id={}", if path.contains('?') { '&' } else { '?' }, enc(user)),
        None => path.to_owned(),
    }
}

async fn register_puppet(server: &TestServer, localpart: &str) -> String {
    let reply = server
        .post(
            "/_matrix/client/v3/register",
            Some(AS_TOKEN),
            json!({ "type": "m.login.application_service", "username": localpart, "inhibit_login": true }),
        )
        .await
        .ok();
    assert!(reply.get("access_token").is_none() && reply.get("device_id").is_none(), "inhibit_login: {reply}");
    reply["user_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_bad_registration_file_stops_start_up_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken-bridge.yaml");
    std::fs::write(&path, registration("http://127.0.0.1:1", "").replace("hs_token: hs-token-of-the-bridge\n", "")).unwrap();
    let mut config = common::test_config(dir.path());
    config.app_service_config_files = vec![path.clone()];
    let error = format!("{:#}", weft::server::start(config.clone()).await.err().expect("start-up fails"));
    assert!(error.contains("broken-bridge.yaml") && error.contains("hs_token"), "{error}");

    std::fs::write(&path, registration("http://127.0.0.1:1", "").replace("\"@bridge_.*:localhost\"", "\"@bridge_(\"")).unwrap();
    let error = format!("{:#}", weft::server::start(config.clone()).await.err().expect("start-up fails"));
    assert!(error.contains("namespaces.users[0].regex"), "{error}");

    config.app_service_config_files = vec![dir.path().join("missing.yaml")];
    let error = format!("{:#}", weft::server::start(config).await.err().expect("start-up fails"));
    assert!(error.contains("missing.yaml"), "{error}");
}

#[tokio::test]
async fn the_as_token_acts_as_the_service_or_a_user_in_its_namespace() {
    let (server, _) = server_with_appservice("").await;
    let me = server.get("/_matrix/client/v3/account/whoami", Some(AS_TOKEN)).await.ok();
    assert_eq!(me["user_id"], "@gossipbot:localhost");
    assert!(me.get("device_id").is_none(), "no device: {me}");

    // A namespaced user must be registered first.
    let unregistered = server.get(&as_path("/_matrix/client/v3/account/whoami", Some("@bridge_alice:localhost")), Some(AS_TOKEN)).await;
    unregistered.err(403, "M_FORBIDDEN");
    let alice = register_puppet(&server, "bridge_alice").await;
    assert_eq!(alice, "@bridge_alice:localhost");
    let me = server.get(&as_path("/_matrix/client/v3/account/whoami", Some(&alice)), Some(AS_TOKEN)).await.ok();
    assert_eq!(me["user_id"], alice);

    // Outside the namespace: refused, registered or not.
    let (bob, _) = server.register("bob").await;
    server.get(&as_path("/_matrix/client/v3/account/whoami", Some(&bob)), Some(AS_TOKEN)).await.err(403, "M_FORBIDDEN");

    // A device the user does not have.
    let path = format!("{}&device_id=NOPE", as_path("/_matrix/client/v3/account/whoami", Some(&alice)));
    server.get(&path, Some(AS_TOKEN)).await.err(400, "M_UNKNOWN_DEVICE");

    // The service logs a puppet in (a device of its own), then acts with that device.
    let login = server
        .post(
            "/_matrix/client/v3/login",
            Some(AS_TOKEN),
            json!({ "type": "m.login.application_service", "identifier": { "type": "m.id.user", "user": "bridge_alice" } }),
        )
        .await
        .ok();
    assert_eq!(login["user_id"], alice);
    let device = login["device_id"].as_str().unwrap();
    let path = format!("{}&device_id={device}", as_path("/_matrix/client/v3/account/whoami", Some(&alice)));
    assert_eq!(server.get(&path, Some(AS_TOKEN)).await.ok()["device_id"], device);
    // The puppet's own token works as any user's.
    let token = login["access_token"].as_str().unwrap();
    assert_eq!(server.get("/_matrix/client/v3/account/whoami", Some(token)).await.ok()["user_id"], alice);

    // Logging in outside the namespace.
    server
        .post(
            "/_matrix/client/v3/login",
            Some(AS_TOKEN),
            json!({ "type": "m.login.application_service", "identifier": { "type": "m.id.user", "user": "bob" } }),
        )
        .await
        .err(400, "M_EXCLUSIVE");
    let types = server.get("/_matrix/client/v3/login", None).await.ok();
    assert!(types["flows"].as_array().unwrap().iter().any(|f| f["type"] == "m.login.application_service"), "{types}");
}

#[tokio::test]
async fn exclusive_namespaces_are_the_services_alone() {
    let (server, _) = server_with_appservice("").await;
    let register = |body: Value, token: Option<&'static str>| {
        let server = &server;
        async move { server.post("/_matrix/client/v3/register", token, body).await }
    };
    // Without the service's token: 401, as any missing or unknown token.
    register(json!({ "type": "m.login.application_service", "username": "bridge_x" }), None).await.err(401, "M_MISSING_TOKEN");
    let (_, user_token) = server.register("carol").await;
    let reply = server
        .post("/_matrix/client/v3/register", Some(&user_token), json!({ "type": "m.login.application_service", "username": "bridge_x" }))
        .await;
    reply.err(401, "M_UNKNOWN_TOKEN");
    // The service registering outside its namespace.
    register(json!({ "type": "m.login.application_service", "username": "not_bridged" }), Some(AS_TOKEN)).await.err(400, "M_EXCLUSIVE");
    // An ordinary registration inside it.
    register(json!({ "username": "bridge_y", "password": "password", "auth": { "type": "m.login.dummy" } }), None)
        .await
        .err(400, "M_EXCLUSIVE");
    server.get("/_matrix/client/v3/register/available?username=bridge_y", None).await.err(400, "M_EXCLUSIVE");
    // Taken by the service, the id is in use.
    register_puppet(&server, "bridge_y").await;
    register(json!({ "type": "m.login.application_service", "username": "bridge_y" }), Some(AS_TOKEN)).await.err(400, "M_USER_IN_USE");

    // Aliases: a user may not take one in the exclusive namespace; the service may, without
    // joining, and only in its namespace.
    let room = server.create_room(&user_token, json!({})).await;
    let alias_path = |alias: &str| format!("/_matrix/client/v3/directory/room/{}", enc(alias));
    server.put(&alias_path("#bridge_chat:localhost"), Some(&user_token), json!({ "room_id": room })).await.err(400, "M_EXCLUSIVE");
    server.put(&alias_path("#elsewhere:localhost"), Some(AS_TOKEN), json!({ "room_id": room })).await.err(400, "M_EXCLUSIVE");
    server.put(&alias_path("#bridge_chat:localhost"), Some(AS_TOKEN), json!({ "room_id": room })).await.ok();
    assert_eq!(server.get(&alias_path("#bridge_chat:localhost"), None).await.ok()["room_id"], room);
    server.delete(&alias_path("#bridge_chat:localhost"), Some(AS_TOKEN), json!({})).await.ok();
    server.get(&alias_path("#bridge_chat:localhost"), None).await.err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn events_of_interest_reach_the_service_in_order_in_transactions() {
    let (server, seen) = server_with_appservice("").await;
    let (alice, alice_token) = server.register("alice").await;
    // A room nobody of the service's is in: none of its events are sent.
    let quiet = server.create_room(&alice_token, json!({})).await;
    server.send_text(&alice_token, &quiet, "q1", "not for the bridge").await;

    let room = server.create_room(&alice_token, json!({ "preset": "public_chat" })).await;
    let puppet = register_puppet(&server, "bridge_dave").await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), Some(&alice_token), json!({ "user_id": puppet })).await.ok();
    server.post(&as_path(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&puppet)), Some(AS_TOKEN), json!({})).await.ok();
    for i in 0..5 {
        server.send_text(&alice_token, &room, &format!("t{i}"), &format!("message {i}")).await;
    }
    // The puppet speaks (the service masquerading), with a massaged timestamp.
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/p1?user_id={}&ts=1234567", enc(&room), enc(&puppet));
    server.put(&path, Some(AS_TOKEN), json!({ "msgtype": "m.text", "body": "from the other side" })).await.ok();

    eventually(Duration::from_secs(10), || async { seen.bodies().len() >= 6 }).await;
    let bodies = seen.bodies();
    assert_eq!(bodies, ["message 0", "message 1", "message 2", "message 3", "message 4", "from the other side"]);
    let events = seen.events();
    // The invite and join of the namespaced user came first.
    let memberships: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "m.room.member" && e["state_key"] == puppet.as_str())
        .map(|e| e["content"]["membership"].as_str().unwrap())
        .collect();
    assert_eq!(memberships, ["invite", "join"]);
    assert!(events.iter().all(|e| e["room_id"] == room.as_str()), "only the bridged room: {events:?}");
    let massaged = events.iter().find(|e| e["content"]["body"] == "from the other side").unwrap();
    assert_eq!(massaged["origin_server_ts"], 1234567);
    assert_eq!(massaged["sender"], puppet.as_str());
    // Ids increase; events carry their ids; the hs_token was always sent.
    let ids: Vec<u64> = seen.transactions.lock().unwrap().iter().map(|(id, _)| id.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(events.iter().all(|e| e["event_id"].is_string() && e["origin_server_ts"].is_number()));
    assert_eq!(seen.unauthorised.load(Ordering::SeqCst), 0);
    let _ = alice;
}

#[tokio::test]
async fn a_failing_service_gets_the_same_transaction_again_and_loses_nothing() {
    let (mut server, seen) = server_with_appservice("").await;
    let (_, token) = server.register("erin").await;
    let room = server.create_room(&token, json!({ "preset": "public_chat" })).await;
    let puppet = register_puppet(&server, "bridge_frank").await;
    server.post(&as_path(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&puppet)), Some(AS_TOKEN), json!({})).await.ok();
    eventually(Duration::from_secs(10), || async { !seen.events().is_empty() }).await;

    // Two refusals: the third attempt is the same transaction, with the same events.
    seen.fail_next.store(2, Ordering::SeqCst);
    let before = seen.transactions.lock().unwrap().len();
    server.send_text(&token, &room, "r1", "retried").await;
    eventually(Duration::from_secs(20), || async { seen.transactions.lock().unwrap().len() >= before + 3 }).await;
    let attempts: Vec<(String, Value)> = seen.transactions.lock().unwrap()[before..before + 3].to_vec();
    assert!(attempts.iter().all(|(id, body)| *id == attempts[0].0 && *body == attempts[0].1), "{attempts:?}");
    assert_eq!(seen.bodies(), ["retried"]);

    // Down across a restart: what was sent meanwhile arrives after it, once each.
    seen.fail_next.store(usize::MAX, Ordering::SeqCst);
    for i in 0..3 {
        server.send_text(&token, &room, &format!("d{i}"), &format!("while down {i}")).await;
    }
    server.restart().await;
    seen.fail_next.store(0, Ordering::SeqCst);
    server.send_text(&token, &room, "after", "after the restart").await;
    eventually(Duration::from_secs(30), || async { seen.bodies().len() >= 5 }).await;
    assert_eq!(seen.bodies(), ["retried", "while down 0", "while down 1", "while down 2", "after the restart"]);
}

#[tokio::test]
async fn many_events_go_at_most_a_hundred_a_transaction() {
    let (server, seen) = server_with_appservice("").await;
    let (_, token) = server.register("gina").await;
    let room = server.create_room(&token, json!({ "preset": "public_chat" })).await;
    let puppet = register_puppet(&server, "bridge_hank").await;
    server.post(&as_path(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&puppet)), Some(AS_TOKEN), json!({})).await.ok();
    // Held back while the service is down, so the backlog is sent in full transactions.
    seen.fail_next.store(usize::MAX, Ordering::SeqCst);
    eventually(Duration::from_secs(10), || async { !seen.transactions.lock().unwrap().is_empty() }).await;
    for i in 0..250 {
        server.send_text(&token, &room, &format!("m{i}"), &format!("bulk {i}")).await;
    }
    seen.fail_next.store(0, Ordering::SeqCst);
    eventually(Duration::from_secs(60), || async { seen.bodies().len() >= 250 }).await;
    let expected: Vec<String> = (0..250).map(|i| format!("bulk {i}")).collect();
    assert_eq!(seen.bodies(), expected);
    assert!(seen.transactions.lock().unwrap().iter().all(|(_, body)| body["events"].as_array().unwrap().len() <= 100));
}

#[tokio::test]
async fn ping_reaches_the_service() {
    let (server, seen) = server_with_appservice("").await;
    let reply = server
        .post("/_matrix/client/v1/appservice/gossip-bridge/ping", Some(AS_TOKEN), json!({ "transaction_id": "ping-1" }))
        .await
        .ok();
    assert!(reply["duration_ms"].is_u64(), "{reply}");
    assert_eq!(seen.pings.lock().unwrap().as_slice(), [json!({ "transaction_id": "ping-1" })]);
    // Another service's id, or a user's token: 403.
    server.post("/_matrix/client/v1/appservice/other/ping", Some(AS_TOKEN), json!({})).await.err(403, "M_FORBIDDEN");
    let (_, token) = server.register("ivy").await;
    server.post("/_matrix/client/v1/appservice/gossip-bridge/ping", Some(&token), json!({})).await.err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn admins_see_which_service_registered_an_account() {
    let (server, _) = server_with_appservice("").await;
    let puppet = register_puppet(&server, "bridge_yvo").await;
    let (_, admin) = server.register_admin("zara").await;
    let user = server.get(&format!("/_synapse/admin/v2/users/{}", enc(&puppet)), Some(&admin)).await.ok();
    assert_eq!(user["appservice_id"], "gossip-bridge");
    let bot = server.get(&format!("/_synapse/admin/v2/users/{}", enc("@gossipbot:localhost")), Some(&admin)).await.ok();
    assert_eq!(bot["appservice_id"], "gossip-bridge");
    let own = server.get(&format!("/_synapse/admin/v2/users/{}", enc("@zara:localhost")), Some(&admin)).await.ok();
    assert!(own["appservice_id"].is_null());
}

#[tokio::test]
async fn a_service_without_a_url_is_sent_nothing_and_its_ping_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quiet.yaml");
    std::fs::write(&path, registration("x", "").replace("url: \"x\"", "url: null")).unwrap();
    let server = TestServer::start_with(|config| config.app_service_config_files = vec![path]).await;
    server.post("/_matrix/client/v1/appservice/gossip-bridge/ping", Some(AS_TOKEN), json!({})).await.err(400, "M_URL_NOT_SET");
    // It still acts through the API.
    assert_eq!(server.get("/_matrix/client/v3/account/whoami", Some(AS_TOKEN)).await.ok()["user_id"], "@gossipbot:localhost");
}

#[tokio::test]
async fn a_ping_to_a_service_that_is_down_says_so() {
    // Nothing listens on the registered url.
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("down.yaml");
    std::fs::write(&path, registration(&format!("http://127.0.0.1:{port}"), "")).unwrap();
    let server = TestServer::start_with(|config| config.app_service_config_files = vec![path]).await;
    server.post("/_matrix/client/v1/appservice/gossip-bridge/ping", Some(AS_TOKEN), json!({})).await.err(502, "M_CONNECTION_FAILED");
}

#[tokio::test]
async fn unknown_users_and_aliases_in_a_namespace_are_asked_of_the_service() {
    let (server, seen) = server_with_appservice("").await;
    let (_, token) = server.register("jack").await;
    // The service creates the user when asked; the profile is then found.
    let profile = server.get(&format!("/_matrix/client/v3/profile/{}", enc("@bridge_known_kim:localhost")), Some(&token)).await.ok();
    assert_eq!(profile["displayname"], "bridge_known_kim");
    assert_eq!(seen.user_queries.lock().unwrap().as_slice(), ["@bridge_known_kim:localhost"]);
    // One it does not know stays unknown; users outside every namespace are not asked about.
    server.get(&format!("/_matrix/client/v3/profile/{}", enc("@bridge_nobody:localhost")), Some(&token)).await.err(404, "M_NOT_FOUND");
    server.get(&format!("/_matrix/client/v3/profile/{}", enc("@stranger:localhost")), Some(&token)).await.err(404, "M_NOT_FOUND");
    assert_eq!(seen.user_queries.lock().unwrap().len(), 2);

    // Aliases: resolving one the service knows makes its room, which can then be joined.
    let alias = "#bridge_known_lobby:localhost";
    let resolved = server.get(&format!("/_matrix/client/v3/directory/room/{}", enc(alias)), Some(&token)).await.ok();
    let room_id = resolved["room_id"].as_str().unwrap().to_owned();
    assert_eq!(seen.alias_queries.lock().unwrap().as_slice(), [alias]);
    let joined = server.post(&format!("/_matrix/client/v3/join/{}", enc(alias)), Some(&token), json!({})).await.ok();
    assert_eq!(joined["room_id"], room_id);
    let other = "#bridge_known_cellar:localhost";
    let joined = server.post(&format!("/_matrix/client/v3/join/{}", enc(other)), Some(&token), json!({})).await.ok();
    assert!(joined["room_id"].is_string());
    server.get(&format!("/_matrix/client/v3/directory/room/{}", enc("#bridge_nothing:localhost")), Some(&token)).await.err(404, "M_NOT_FOUND");

    // Inviting a user weft does not know yet asks the service first.
    let invitee = "@bridge_known_nils:localhost";
    let room_id = server.create_room(&token, json!({})).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)), Some(&token), json!({ "user_id": invitee })).await.ok();
    assert!(seen.user_queries.lock().unwrap().iter().any(|u| u == invitee));
    server
        .post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)), Some(&token), json!({ "user_id": "@bridge_nobody2:localhost" }))
        .await
        .err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn a_service_deactivates_its_users_without_their_password() {
    let (server, _) = server_with_appservice("").await;
    let puppet = register_puppet(&server, "bridge_gone").await;
    server.post(&as_path("/_matrix/client/v3/account/deactivate", Some(&puppet)), Some(AS_TOKEN), json!({})).await.ok();
    server.get(&as_path("/_matrix/client/v3/account/whoami", Some(&puppet)), Some(AS_TOKEN)).await.err(403, "M_FORBIDDEN");
    // An ordinary user still needs user-interactive auth.
    let (_, token) = server.register("sven").await;
    assert_eq!(server.post("/_matrix/client/v3/account/deactivate", Some(&token), json!({})).await.status, 401);
}

#[tokio::test]
async fn typing_and_receipts_are_pushed_to_a_service_that_asks() {
    let (server, seen) = server_with_appservice("receive_ephemeral: true").await;
    let (alice, token) = server.register("lena").await;
    let room = server.create_room(&token, json!({ "preset": "public_chat" })).await;
    let puppet = register_puppet(&server, "bridge_mo").await;
    server.post(&as_path(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&puppet)), Some(AS_TOKEN), json!({})).await.ok();
    let event = server.send_text(&token, &room, "e1", "read me").await;
    server
        .put(&format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&alice)), Some(&token), json!({ "typing": true, "timeout": 10000 }))
        .await
        .ok();
    server.post(&format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&event)), Some(&token), json!({})).await.ok();
    let ephemeral = || -> Vec<Value> {
        seen.transactions.lock().unwrap().iter().flat_map(|(_, body)| body["ephemeral"].as_array().cloned().unwrap_or_default()).collect()
    };
    eventually(Duration::from_secs(10), || async { ephemeral().iter().any(|e| e["type"] == "m.receipt") }).await;
    let all = ephemeral();
    let typing = all.iter().find(|e| e["type"] == "m.typing").expect("typing pushed");
    assert_eq!(typing["room_id"], room.as_str());
    assert_eq!(typing["content"]["user_ids"], json!([alice]));
    let receipt = all.iter().find(|e| e["type"] == "m.receipt").unwrap();
    assert!(receipt["content"][&event]["m.read"][&alice]["ts"].is_number(), "{receipt}");
}

#[tokio::test]
async fn without_receive_ephemeral_no_ephemeral_data_is_sent() {
    let (server, seen) = server_with_appservice("").await;
    let (alice, token) = server.register("nora").await;
    let room = server.create_room(&token, json!({ "preset": "public_chat" })).await;
    let puppet = register_puppet(&server, "bridge_ole").await;
    server.post(&as_path(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&puppet)), Some(AS_TOKEN), json!({})).await.ok();
    server
        .put(&format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&alice)), Some(&token), json!({ "typing": true, "timeout": 10000 }))
        .await
        .ok();
    server.send_text(&token, &room, "e1", "after typing").await;
    eventually(Duration::from_secs(10), || async { seen.bodies() == ["after typing"] }).await;
    assert!(seen.transactions.lock().unwrap().iter().all(|(_, body)| body.get("ephemeral").is_none()));
}

#[tokio::test]
async fn third_party_lookups_and_network_directories_go_through_the_service() {
    let (server, _) = server_with_appservice("").await;
    let (_, token) = server.register("pia").await;
    let protocols = server.get("/_matrix/client/v3/thirdparty/protocols", Some(&token)).await.ok();
    let gossip = &protocols["gossip"];
    assert_eq!(gossip["instances"][0]["network_id"], "gossipnet");
    assert_eq!(gossip["instances"][0]["instance_id"], "gossip-bridge|gossipnet");
    assert_eq!(server.get("/_matrix/client/v3/thirdparty/protocol/gossip", Some(&token)).await.ok()["user_fields"], json!(["nick"]));
    server.get("/_matrix/client/v3/thirdparty/protocol/smoke-signals", Some(&token)).await.err(404, "M_NOT_FOUND");
    // Passed on as the service wrote it.
    let loose = server.get("/_matrix/client/v3/thirdparty/protocol/loose", Some(&token)).await.ok();
    assert_eq!(loose, json!({ "user_fields": ["nick"], "location_fields": [], "icon": "mxc://x/y", "instances": [{ "desc": "bare" }] }));
    // The token in the query is the client's, not a lookup field.
    let locations = server.get(&format!("/_matrix/client/v3/thirdparty/location/gossip?channel=%23rust&access_token={token}"), None).await.ok();
    assert_eq!(locations, json!([{ "alias": "#bridge_known_rust:localhost", "protocol": "gossip", "fields": { "channel": "#rust" } }]));
    let users = server.get("/_matrix/client/v3/thirdparty/user/gossip?nick=alice", Some(&token)).await.ok();
    assert_eq!(users[0]["userid"], "@bridge_known_alice:localhost");

    // The service lists a room in its network's directory; only that network's listing has it.
    let room = server.create_room(&token, json!({ "name": "Gossip lobby" })).await;
    let path = format!("/_matrix/client/v3/directory/list/appservice/gossipnet/{}", enc(&room));
    server.put(&path, Some(&token), json!({ "visibility": "public" })).await.err(403, "M_FORBIDDEN");
    server.put(&path, Some(AS_TOKEN), json!({ "visibility": "public" })).await.ok();
    let listed = |body: Value| {
        let server = &server;
        let token = token.clone();
        async move {
            let reply = server.post("/_matrix/client/v3/publicRooms", Some(&token), body).await.ok();
            reply["chunk"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(json!({ "third_party_instance_id": "gossip-bridge|gossipnet" })).await, [room.clone()]);
    assert!(listed(json!({})).await.is_empty());
    assert_eq!(listed(json!({ "include_all_networks": true })).await, [room.clone()]);
    server.put(&path, Some(AS_TOKEN), json!({ "visibility": "private" })).await.ok();
    assert!(listed(json!({ "third_party_instance_id": "gossip-bridge|gossipnet" })).await.is_empty());
    // Synapse's DELETE unlists too.
    server.put(&path, Some(AS_TOKEN), json!({ "visibility": "public" })).await.ok();
    server.delete(&path, Some(AS_TOKEN), json!({})).await.ok();
    assert!(listed(json!({ "third_party_instance_id": "gossip-bridge|gossipnet" })).await.is_empty());
}

#[tokio::test]
async fn a_services_users_are_not_rate_limited_when_it_says_so() {
    let (url, _seen) = start_appservice().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.yaml");
    std::fs::write(&path, registration(&url, "")).unwrap();
    let server = TestServer::start_with(|config| {
        config.app_service_config_files = vec![path];
        config.rate_limits.enabled = true;
    })
    .await;
    let (_, token) = server.register("quinn").await;
    let room = server.create_room(&token, json!({ "preset": "public_chat" })).await;
    let puppet = register_puppet(&server, "bridge_rita").await;
    server.post(&as_path(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&puppet)), Some(AS_TOKEN), json!({})).await.ok();
    // Far past the default burst of 20 sends.
    for i in 0..40 {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/rl{i}?user_id={}", enc(&room), enc(&puppet));
        server.put(&path, Some(AS_TOKEN), json!({ "msgtype": "m.text", "body": "fast" })).await.ok();
    }
    // An ordinary user is held to the limit.
    let limited = {
        let mut limited = false;
        for i in 0..40 {
            let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/u{i}", enc(&room));
            if server.put(&path, Some(&token), json!({ "msgtype": "m.text", "body": "fast" })).await.status == 429 {
                limited = true;
                break;
            }
        }
        limited
    };
    assert!(limited, "an ordinary user is rate-limited");
}

#[tokio::test]
async fn a_hanging_service_delays_neither_clients_nor_other_services() {
    let (url, seen) = start_appservice().await;
    let (stuck_url, stuck) = start_appservice().await;
    stuck.hang.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("good.yaml"), dir.path().join("stuck.yaml"));
    std::fs::write(&good, registration(&url, "")).unwrap();
    let stuck_registration = registration(&stuck_url, "")
        .replace("id: gossip-bridge", "id: stuck-bridge")
        .replace(AS_TOKEN, "as-token-of-the-stuck-one")
        .replace("sender_localpart: gossipbot", "sender_localpart: stuckbot")
        .replace("@bridge_.*:localhost", "@stuck_.*:localhost")
        .replace("#bridge_.*:localhost", "#stuck_.*:localhost");
    std::fs::write(&bad, stuck_registration).unwrap();
    let server = TestServer::start_with(|config| config.app_service_config_files = vec![good, bad]).await;
    *seen.homeserver.lock().unwrap() = server.base.clone();

    let (_, token) = server.register("tove").await;
    let room = server.create_room(&token, json!({ "preset": "public_chat" })).await;
    let puppet = register_puppet(&server, "bridge_ulf").await;
    server.post(&as_path(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&puppet)), Some(AS_TOKEN), json!({})).await.ok();
    let stuck_puppet = server
        .post("/_matrix/client/v3/register", Some("as-token-of-the-stuck-one"), json!({ "type": "m.login.application_service", "username": "stuck_vera", "inhibit_login": true }))
        .await
        .ok()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .post(&as_path(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&stuck_puppet)), Some("as-token-of-the-stuck-one"), json!({}))
        .await
        .ok();
    // The stuck service has its first transaction open and never answers.
    eventually(Duration::from_secs(10), || async { !stuck.transactions.lock().unwrap().is_empty() }).await;
    for i in 0..20 {
        server.send_text(&token, &room, &format!("s{i}"), &format!("still flowing {i}")).await;
    }
    // Clients and the other service get everything meanwhile.
    let messages = server.messages(&token, &room, "dir=b&limit=30").await;
    assert_eq!(common::bodies(&messages).len(), 20);
    eventually(Duration::from_secs(10), || async { seen.bodies().len() == 20 }).await;
    assert_eq!(stuck.transactions.lock().unwrap().len(), 1, "one attempt, still waiting for its answer");
}

#[tokio::test]
async fn to_device_messages_device_lists_and_key_counts_reach_an_encrypting_bridge() {
    let (server, seen) = server_with_appservice("receive_ephemeral: true\norg.matrix.msc3202: true").await;
    let (alice, token) = server.register("wilma").await;
    let room = server.create_room(&token, json!({ "preset": "public_chat" })).await;
    let puppet = register_puppet(&server, "bridge_xena").await;
    server.post(&as_path(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&puppet)), Some(AS_TOKEN), json!({})).await.ok();
    // The bridge gives its puppet a device (as mautrix does for end-to-bridge encryption).
    let login = server
        .post(
            "/_matrix/client/v3/login",
            Some(AS_TOKEN),
            json!({ "type": "m.login.application_service", "identifier": { "type": "m.id.user", "user": "bridge_xena" } }),
        )
        .await
        .ok();
    let device = login["device_id"].as_str().unwrap().to_owned();
    let as_device = |path: &str| format!("{}&device_id={device}", as_path(path, Some(&puppet)));
    // Keys need a device: without device_id the request has none.
    let without_device = server
        .post(&as_path("/_matrix/client/v3/keys/upload", Some(&puppet)), Some(AS_TOKEN), json!({ "one_time_keys": { "signed_curve25519:X": { "key": "x" } } }))
        .await;
    without_device.err(400, "M_UNKNOWN");
    server
        .post(
            &as_device("/_matrix/client/v3/keys/upload"),
            Some(AS_TOKEN),
            json!({ "one_time_keys": { "signed_curve25519:AAAAAQ": { "key": "k1" }, "signed_curve25519:AAAAAg": { "key": "k2" } } }),
        )
        .await
        .ok();

    // A to-device message to the puppet's device.
    server
        .put(
            "/_matrix/client/v3/sendToDevice/m.room_key_request/td1",
            Some(&token),
            json!({ "messages": { &puppet: { &device: { "action": "request", "body": { "session_id": "s1" } } } } }),
        )
        .await
        .ok();
    let field = |name: &str| -> Vec<Value> {
        seen.transactions.lock().unwrap().iter().filter_map(|(_, body)| body.get(name).cloned()).collect()
    };
    eventually(Duration::from_secs(10), || async { !field("de.sorunome.msc2409.to_device").is_empty() }).await;
    let message = &field("de.sorunome.msc2409.to_device")[0][0];
    assert_eq!(message["type"], "m.room_key_request");
    assert_eq!(message["sender"], alice.as_str());
    assert_eq!(message["to_user_id"], puppet.as_str());
    assert_eq!(message["to_device_id"], device.as_str());
    assert_eq!(message["content"]["body"]["session_id"], "s1");
    // The transaction that carried it told the puppet's key counts.
    let counts = field("org.matrix.msc3202.device_one_time_keys_count");
    assert_eq!(counts.last().unwrap()[&puppet][&device]["signed_curve25519"], 2, "{counts:?}");

    // A user sharing a room with the puppet gets a new device: a device-list change.
    server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "wilma" }, "password": "password" }))
        .await
        .ok();
    eventually(Duration::from_secs(15), || async {
        field("org.matrix.msc3202.device_lists").iter().any(|lists| lists["changed"].as_array().is_some_and(|c| c.contains(&json!(alice))))
    })
    .await;
}
