//! What `/versions` claims, and the behaviour of v1.7–v1.12 each claim rests on.

mod common;

use common::{enc, TestServer};
use serde_json::json;

#[tokio::test]
async fn versions_are_contiguous_up_to_v1_12() {
    let server = TestServer::start().await;
    let versions = server.get("/_matrix/client/versions", None).await.ok();
    let list: Vec<&str> = versions["versions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let expected: Vec<String> = std::iter::once("r0.6.1".to_owned()).chain((1..=12).map(|n| format!("v1.{n}"))).collect();
    assert_eq!(list, expected);
    let features = &versions["unstable_features"];
    assert_eq!(features["org.matrix.msc3916.stable"], true);
    assert_eq!(features["io.element.e2ee_forced.public"], false);
    server.stop().await;
}

/// v1.7: an appservice ping with a user's token is refused (weft has no application services).
#[tokio::test]
async fn appservice_ping_refuses_user_tokens() {
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    let reply = server.post("/_matrix/client/v1/appservice/bridge/ping", Some(&token), json!({})).await;
    reply.err(403, "M_FORBIDDEN");
    server.post("/_matrix/client/v1/appservice/bridge/ping", None, json!({})).await.err(401, "M_MISSING_TOKEN");
    server.stop().await;
}

/// v1.8: only members of the room may report its events.
#[tokio::test]
async fn reporting_an_event_needs_membership() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "world_readable" } }] }))
        .await;
    let event = server.send_text(&alice, &room, "r1", "spam?").await;
    let path = format!("/_matrix/client/v3/rooms/{}/report/{}", enc(&room), enc(&event));
    // Bob can read the world-readable room but is not in it.
    server.post(&path, Some(&bob), json!({ "reason": "x" })).await.err(404, "M_NOT_FOUND");
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&bob), json!({})).await.ok();
    server.post(&path, Some(&bob), json!({ "reason": "x" })).await.ok();
    server.stop().await;
}

/// v1.10: deactivation with `erase: true` serves the user's events redacted from then on.
#[tokio::test]
async fn erased_accounts_are_served_redacted() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&bob), json!({})).await.ok();
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&carol), json!({})).await.ok();
    let bobs = server.send_text(&bob, &room, "b1", "bob's secret").await;
    server.send_text(&carol, &room, "c1", "carol stays").await;
    let auth = json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" }, "password": "password" }, "erase": true });
    server.post("/_matrix/client/v3/account/deactivate", Some(&bob), auth).await.ok();

    let event = server.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&bobs)), Some(&alice)).await.ok();
    assert_eq!(event["content"], json!({}), "erased: {event}");
    let page = server.messages(&alice, &room, "dir=b&limit=20").await;
    let texts = common::bodies(&page);
    assert!(texts.contains(&"carol stays".to_owned()));
    assert!(!texts.contains(&"bob's secret".to_owned()), "{texts:?}");
    server.stop().await;
}

/// Deactivation without `erase` leaves the events as they were.
#[tokio::test]
async fn deactivation_without_erase_keeps_events() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&bob), json!({})).await.ok();
    let bobs = server.send_text(&bob, &room, "b1", "still here").await;
    let auth = json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" }, "password": "password" } });
    server.post("/_matrix/client/v3/account/deactivate", Some(&bob), auth).await.ok();
    let event = server.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&bobs)), Some(&alice)).await.ok();
    assert_eq!(event["content"]["body"], "still here");
    server.stop().await;
}
