//! The v1 API's event stream and initial syncs (`/events`, `/initialSync`,
//! `/rooms/{roomId}/initialSync`): deprecated, in the spec, still used by SyTest and old clients.

mod common;

use common::{enc, TestServer};
use serde_json::{json, Value};

fn chunk_of<'a>(response: &'a Value, kind: &str) -> Vec<&'a Value> {
    response["chunk"].as_array().unwrap().iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test]
async fn event_stream_carries_messages_presence_and_account_data() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();

    // Without `from`: the stream starts now, with nothing old.
    let start = server.get("/_matrix/client/r0/events?timeout=0", Some(&bob)).await.ok();
    assert!(start["chunk"].as_array().unwrap().iter().all(|e| e["type"] != "m.room.create"), "{start}");
    let token = start["end"].as_str().unwrap().to_owned();
    assert!(start["start"].is_string());

    server.send_text(&alice, &room, "e1", "streamed").await;
    server
        .put(&format!("/_matrix/client/v3/user/{}/rooms/{}/tags/work", enc(&alice_id), enc(&room)), Some(&alice), json!({}))
        .await
        .ok();
    let next = server.get(&format!("/_matrix/client/v3/events?from={}&timeout=5000", enc(&token)), Some(&bob)).await.ok();
    let messages = chunk_of(&next, "m.room.message");
    assert_eq!(messages.len(), 1, "{next}");
    assert_eq!(messages[0]["content"]["body"], "streamed");
    assert_eq!(messages[0]["room_id"], room.as_str(), "stream events say their room");
    assert_eq!(next["start"], token.as_str());

    // Nothing new: an empty chunk after the timeout, and a token to go on from.
    let idle = server.get(&format!("/_matrix/client/v3/events?from={}&timeout=50", enc(next["end"].as_str().unwrap())), Some(&bob)).await.ok();
    assert_eq!(chunk_of(&idle, "m.room.message").len(), 0);
    assert!(idle["end"].is_string());

    // Alice's own stream: her tag (room account data, with the room) arrives.
    let mine = server.get(&format!("/_matrix/client/v3/events?from={}&timeout=0", enc(&token)), Some(&alice)).await.ok();
    let tags = chunk_of(&mine, "m.tag");
    assert_eq!(tags.len(), 1, "{mine}");
    assert_eq!(tags[0]["room_id"], room.as_str());
    assert!(tags[0]["content"]["tags"]["work"].is_object());

    // The peeking form: one room only.
    let other = server.create_room(&alice, json!({})).await;
    server.send_text(&alice, &other, "e2", "elsewhere").await;
    server.send_text(&alice, &room, "e3", "here").await;
    let peek = server.get(&format!("/_matrix/client/v3/events?from={}&timeout=0&room_id={}", enc(&token), enc(&room)), Some(&alice)).await.ok();
    assert!(peek["chunk"].as_array().unwrap().iter().all(|e| e["room_id"] == room.as_str()), "{peek}");

    server.get("/_matrix/client/v3/events?from=garbage", Some(&bob)).await.err(400, "M_INVALID_PARAM");
    server.get("/_matrix/client/v3/events", None).await.err(401, "M_MISSING_TOKEN");
    server.stop().await;
}

#[tokio::test]
async fn initial_sync_shows_rooms_state_messages_and_receipts() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat", "name": "Old style" })).await;
    let mut sent = Vec::new();
    for i in 0..4 {
        sent.push(server.send_text(&alice, &room, &format!("i{i}"), &format!("m{i}")).await);
    }
    let last = sent[3].clone();
    server.post(&format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&last)), Some(&alice), json!({})).await.ok();
    // A receipt for an earlier event is accepted and moves nothing back.
    server.post(&format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&sent[1])), Some(&alice), json!({})).await.ok();

    let all = server.get("/_matrix/client/v3/initialSync?limit=2", Some(&alice)).await.ok();
    assert!(all["end"].is_string());
    let rooms = all["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 1);
    let view = &rooms[0];
    assert_eq!(view["room_id"], room.as_str());
    assert_eq!(view["membership"], "join");
    assert_eq!(view["visibility"], "public");
    let chunk = view["messages"]["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 2, "limit=2: {chunk:?}");
    assert_eq!(chunk[1]["content"]["body"], "m3");
    assert!(view["messages"]["start"].is_string() && view["messages"]["end"].is_string());
    let state = view["state"].as_array().unwrap();
    let name = state.iter().find(|e| e["type"] == "m.room.name").expect("the current state has the name");
    assert_eq!(name["content"]["name"], "Old style");
    // v1 shapes, as Synapse serves them: the sender also as user_id, presence naming its user.
    assert_eq!(name["user_id"], alice_id.as_str());
    let own_presence = all["presence"].as_array().unwrap().iter().find(|e| e["sender"] == alice_id.as_str()).expect("own presence");
    assert_eq!(own_presence["content"]["user_id"], alice_id.as_str());
    assert!(state.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == alice_id.as_str()));
    let receipt = all["receipts"].as_array().unwrap().iter().find(|e| e["room_id"] == room.as_str()).expect("receipts of the room");
    assert!(receipt["content"][&last]["m.read"][&alice_id]["ts"].is_number(), "{receipt}");

    // The token continues in the event stream.
    server.send_text(&alice, &room, "i9", "after").await;
    let next = server.get(&format!("/_matrix/client/v3/events?from={}&timeout=0", enc(all["end"].as_str().unwrap())), Some(&alice)).await.ok();
    assert_eq!(chunk_of(&next, "m.room.message").iter().map(|e| e["content"]["body"].clone()).collect::<Vec<_>>(), [json!("after")]);

    // One room, and a room left (shown only with archived=true, and to room initialSync).
    let one = server.get(&format!("/_matrix/client/v3/rooms/{}/initialSync", enc(&room)), Some(&alice)).await.ok();
    assert_eq!(one["room_id"], room.as_str());
    assert!(one["presence"].is_array() && one["receipts"].is_array());
    server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&alice), json!({})).await.ok();
    let current = server.get("/_matrix/client/v3/initialSync", Some(&alice)).await.ok();
    assert!(current["rooms"].as_array().unwrap().is_empty(), "{current}");
    let archived = server.get("/_matrix/client/v3/initialSync?archived=true", Some(&alice)).await.ok();
    assert_eq!(archived["rooms"][0]["membership"], "leave");
    let departed = server.get(&format!("/_matrix/client/v3/rooms/{}/initialSync", enc(&room)), Some(&alice)).await.ok();
    assert_eq!(departed["membership"], "leave");

    let (_, stranger) = server.register("stranger").await;
    server.get(&format!("/_matrix/client/v3/rooms/{}/initialSync", enc(&room)), Some(&stranger)).await.err(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn the_event_stream_refuses_a_limit_that_is_not_a_count() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    for limit in ["-2", "abc"] {
        server.get(&format!("/_matrix/client/v3/events?timeout=0&limit={limit}"), Some(&alice)).await.err(400, "M_INVALID_PARAM");
    }
    let room = server.create_room(&alice, json!({})).await;
    let start = server.get("/_matrix/client/v3/events?timeout=0", Some(&alice)).await.ok()["end"].as_str().unwrap().to_owned();
    for i in 0..3 {
        server.send_text(&alice, &room, &format!("l{i}"), &format!("m{i}")).await;
    }
    let page = server.get(&format!("/_matrix/client/v3/events?timeout=0&limit=2&from={}", enc(&start)), Some(&alice)).await.ok();
    assert!(chunk_of(&page, "m.room.message").len() <= 2, "{page}");
    server.stop().await;
}

/// `GET /events/{eventId}`: the event for someone who may see it, 404 for anyone else.
#[tokio::test]
async fn event_by_id_alone() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, stranger) = server.register("stranger").await;
    let room = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let event_id = server.send_text(&alice, &room, "b1", "by id").await;
    let event = server.get(&format!("/_matrix/client/v3/events/{}", enc(&event_id)), Some(&alice)).await.ok();
    assert_eq!(event["event_id"], event_id.as_str());
    assert_eq!(event["room_id"], room.as_str());
    assert_eq!(event["content"]["body"], "by id");
    server.get(&format!("/_matrix/client/r0/events/{}", enc(&event_id)), Some(&stranger)).await.err(404, "M_NOT_FOUND");
    server.get(&format!("/_matrix/client/v3/events/{}", enc("$missing")), Some(&alice)).await.err(404, "M_NOT_FOUND");
    server.stop().await;
}
