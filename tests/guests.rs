//! Guest accounts (`kind=guest`): off unless configured, limited to the endpoints the spec
//! opens to guests, joining only rooms with `guest_access: can_join`, upgradable in place.

mod common;

use common::{enc, TestServer};
use serde_json::json;

async fn guest_server() -> TestServer {
    TestServer::start_with(|config| config.registration.allow_guests = true).await
}

#[tokio::test]
async fn guests_are_off_by_default() {
    let server = TestServer::start().await;
    server.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await.err(403, "M_GUEST_ACCESS_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn guests_join_rooms_that_allow_them_and_only_use_guest_endpoints() {
    let server = guest_server().await;
    let (_, alice) = server.register("alice").await;
    let guest = server.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await.ok();
    let guest_id = guest["user_id"].as_str().unwrap().to_owned();
    let token = guest["access_token"].as_str().unwrap().to_owned();
    assert!(guest["device_id"].is_string());
    assert!(guest_id[1..].split(':').next().unwrap().chars().all(|c| c.is_ascii_digit()), "numeric guest id {guest_id}");
    let me = server.get("/_matrix/client/v3/account/whoami", Some(&token)).await.ok();
    assert_eq!(me["user_id"], guest_id.as_str());

    // Endpoints outside the guest list are refused.
    server.post("/_matrix/client/v3/createRoom", Some(&token), json!({})).await.err(403, "M_GUEST_ACCESS_FORBIDDEN");
    server
        .put(&format!("/_matrix/client/v3/profile/{}/avatar_url", enc(&guest_id)), Some(&token), json!({ "avatar_url": "mxc://x/y" }))
        .await
        .err(403, "M_GUEST_ACCESS_FORBIDDEN");
    server.put(&format!("/_matrix/client/v3/profile/{}/displayname", enc(&guest_id)), Some(&token), json!({ "displayname": "Visitor" })).await.ok();

    // A room without guest access refuses the guest; one with can_join lets them in.
    let closed = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&closed)), Some(&token), json!({})).await.err(403, "M_FORBIDDEN");
    let open = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.guest_access", "state_key": "", "content": { "guest_access": "can_join" } }] }),
        )
        .await;
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&open)), Some(&token), json!({})).await.ok();
    server.send_text(&token, &open, "g1", "hello from a guest").await;
    let history = server.messages(&alice, &open, "dir=b&limit=5").await;
    assert_eq!(common::bodies(&history)[0], "hello from a guest");
    let synced = server.get("/_matrix/client/v3/sync", Some(&token)).await.ok();
    assert!(synced["rooms"]["join"][&open].is_object());
    server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&open)), Some(&token), json!({})).await.ok();
    server.stop().await;
}

#[tokio::test]
async fn a_guest_upgrades_in_place_and_not_others() {
    let server = guest_server().await;
    let register_guest = || async {
        let guest = server.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await.ok();
        (guest["user_id"].as_str().unwrap().to_owned(), guest["access_token"].as_str().unwrap().to_owned())
    };
    let (first_id, first_token) = register_guest().await;
    let (second_id, _) = register_guest().await;
    let localpart = |id: &str| id[1..].split(':').next().unwrap().to_owned();

    // Someone else's localpart with this guest's token: refused.
    let upgrade = |username: String, token: String| {
        json!({ "username": username, "password": "guest-upgrade-pw", "guest_access_token": token, "auth": { "type": "m.login.dummy" } })
    };
    server.post("/_matrix/client/v3/register", None, upgrade(localpart(&second_id), first_token.clone())).await.err(403, "M_FORBIDDEN");

    let upgraded = server.post("/_matrix/client/v3/register", None, upgrade(localpart(&first_id), first_token.clone())).await.ok();
    assert_eq!(upgraded["user_id"], first_id.as_str(), "the account keeps its id");
    let token = upgraded["access_token"].as_str().unwrap();
    // A full account now: what guests may not do works, and the password logs in.
    server.post("/_matrix/client/v3/createRoom", Some(token), json!({})).await.ok();
    server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": localpart(&first_id) }, "password": "guest-upgrade-pw" }),
        )
        .await
        .ok();
    // A second upgrade of the same account: it is no guest any more.
    server.post("/_matrix/client/v3/register", None, upgrade(localpart(&first_id), token.to_owned())).await.err(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn guests_leave_when_the_room_stops_allowing_them() {
    let server = guest_server().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let guest = server.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await.ok();
    let guest_id = guest["user_id"].as_str().unwrap().to_owned();
    let token = guest["access_token"].as_str().unwrap().to_owned();
    let room = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.guest_access", "state_key": "", "content": { "guest_access": "can_join" } }] }),
        )
        .await;
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&token), json!({})).await.ok();
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&bob), json!({})).await.ok();
    let membership = |user: String| {
        let server = &server;
        let alice = alice.clone();
        let room = room.clone();
        async move {
            let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&user));
            server.get(&path, Some(&alice)).await.ok()["membership"].as_str().unwrap_or_default().to_owned()
        }
    };
    assert_eq!(membership(guest_id.clone()).await, "join");

    server
        .put(&format!("/_matrix/client/v3/rooms/{}/state/m.room.guest_access/", enc(&room)), Some(&alice), json!({ "guest_access": "forbidden" }))
        .await
        .ok();
    common::eventually(std::time::Duration::from_secs(10), || async { membership(guest_id.clone()).await == "leave" }).await;
    // The leave is the guest's own, and full accounts stay.
    let history = server.messages(&alice, &room, "dir=b&limit=5").await;
    let leave = history["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == guest_id.as_str())
        .expect("the guest's leave is in the timeline");
    assert_eq!(leave["content"]["membership"], "leave");
    assert_eq!(leave["sender"], guest_id.as_str());
    assert_eq!(membership(bob_id).await, "join");
    server.stop().await;
}
