//! /sync over HTTP: initial and incremental syncs, long-polling, gaps, filters, lazy-loading,
//! memberships, typing, receipts, presence, to-device messages and device lists.

mod common;

use common::{enc, TestServer};
use serde_json::{json, Value};

async fn sync(server: &TestServer, token: &str, query: &str) -> Value {
    server.get(&format!("/_matrix/client/v3/sync?{query}"), Some(token)).await.ok()
}

fn timeline_bodies(response: &Value, room: &str) -> Vec<String> {
    response["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn state_types(section: &Value) -> Vec<String> {
    section["state"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn initial_then_incremental() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "name": "Chat" })).await;
    for i in 0..5 {
        server.send_text(&alice, &room, &format!("t{i}"), &format!("m{i}")).await;
    }
    let initial = sync(&server, &alice, "").await;
    let section = &initial["rooms"]["join"][&room];
    assert_eq!(timeline_bodies(&initial, &room), vec!["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(section["timeline"]["limited"], true, "the room has more than 10 events");
    assert!(section["timeline"]["prev_batch"].is_string());
    assert!(section["timeline"]["events"][0].get("room_id").is_none(), "sync events have no room_id");
    assert!(state_types(section).contains(&"m.room.create".to_owned()));
    assert_eq!(section["summary"]["m.joined_member_count"], 1);
    let next = initial["next_batch"].as_str().unwrap().to_owned();

    // Nothing new: an immediate, empty answer with the same position.
    let empty = sync(&server, &alice, &format!("since={next}&timeout=0")).await;
    assert!(empty.get("rooms").is_none(), "{empty}");
    assert_eq!(empty["next_batch"], next);

    server.send_text(&alice, &room, "t5", "m5").await;
    let incremental = sync(&server, &alice, &format!("since={next}")).await;
    assert_eq!(timeline_bodies(&incremental, &room), vec!["m5"]);
    let section = &incremental["rooms"]["join"][&room];
    assert_eq!(section["timeline"]["limited"], false);
    assert_eq!(section["state"]["events"], json!([]));
    assert_eq!(section["timeline"]["events"][0]["unsigned"]["transaction_id"], "t5");
    assert!(section.get("summary").is_none(), "an unchanged summary is left out: {section}");
    let after_m5 = incremental["next_batch"].as_str().unwrap().to_owned();

    // prev_batch continues into /messages.
    let prev = section["timeline"]["prev_batch"].as_str().unwrap();
    let older = server.messages(&alice, &room, &format!("dir=b&limit=1&from={prev}")).await;
    assert_eq!(older["chunk"][0]["content"]["body"], "m4");

    // full_state brings the state back.
    let full = sync(&server, &alice, &format!("since={next}&full_state=true")).await;
    assert!(state_types(&full["rooms"]["join"][&room]).contains(&"m.room.name".to_owned()));

    // A membership change brings the summary back.
    let (bob_id, bob) = server.register("bob").await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), Some(&alice), json!({ "user_id": bob_id })).await.ok();
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    let joined = sync(&server, &alice, &format!("since={after_m5}")).await;
    assert_eq!(joined["rooms"]["join"][&room]["summary"]["m.joined_member_count"], 2, "{joined}");
    let _ = alice_id;
    server.stop().await;
}

#[tokio::test]
async fn long_poll_wakes_on_new_message() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "invite": [bob_id] })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    let next = sync(&server, &bob, "").await["next_batch"].as_str().unwrap().to_owned();

    let waiting = {
        let http = server.http.clone();
        let url = format!("{}/_matrix/client/v3/sync?since={next}&timeout=30000", server.base);
        let bob = bob.clone();
        tokio::spawn(async move { http.get(url).bearer_auth(bob).send().await.unwrap().json::<Value>().await.unwrap() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    server.send_text(&alice, &room, "x", "wake up").await;
    let woke = waiting.await.unwrap();
    assert_eq!(timeline_bodies(&woke, &room), vec!["wake up"], "{woke}");
    server.stop().await;
}

#[tokio::test]
async fn no_update_is_lost_under_concurrent_sends() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let mut since = sync(&server, &alice, "").await["next_batch"].as_str().unwrap().to_owned();
    let sender = {
        let http = server.http.clone();
        let base = server.base.clone();
        let alice = alice.clone();
        let room = room.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let url = format!("{base}/_matrix/client/v3/rooms/{}/send/m.room.message/c{i}", enc(&room));
                let r = http.put(url).bearer_auth(&alice).json(&json!({ "msgtype": "m.text", "body": format!("c{i}") })).send().await.unwrap();
                assert!(r.status().is_success());
            }
        })
    };
    let mut received = Vec::new();
    while received.len() < 40 {
        let response = sync(&server, &alice, &format!("since={since}&timeout=10000&filter={}", enc(r#"{"room":{"timeline":{"limit":100}}}"#))).await;
        received.extend(timeline_bodies(&response, &room));
        since = response["next_batch"].as_str().unwrap().to_owned();
    }
    sender.await.unwrap();
    assert_eq!(received, (0..40).map(|i| format!("c{i}")).collect::<Vec<_>>());
    server.stop().await;
}

#[tokio::test]
async fn gappy_sync_carries_state_changes() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let next = sync(&server, &alice, "").await["next_batch"].as_str().unwrap().to_owned();
    server.put(&format!("/_matrix/client/v3/rooms/{}/state/m.room.name", enc(&room)), Some(&alice), json!({ "name": "Renamed" })).await.ok();
    for i in 0..8 {
        server.send_text(&alice, &room, &format!("g{i}"), &format!("g{i}")).await;
    }
    let filter = enc(r#"{"room":{"timeline":{"limit":3}}}"#);
    let response = sync(&server, &alice, &format!("since={next}&filter={filter}")).await;
    let section = &response["rooms"]["join"][&room];
    assert_eq!(section["timeline"]["limited"], true);
    assert_eq!(timeline_bodies(&response, &room), vec!["g5", "g6", "g7"]);
    let state = section["state"]["events"].as_array().unwrap();
    assert_eq!(state.len(), 1, "only what changed in the gap: {state:?}");
    assert_eq!(state[0]["content"]["name"], "Renamed");
    server.stop().await;
}

#[tokio::test]
async fn filters_stored_and_inline() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let other = server.create_room(&alice, json!({})).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    server.send_text(&bob, &room, "b", "from bob").await;
    server.send_text(&alice, &room, "a", "from alice").await;

    let created = server
        .post(
            &format!("/_matrix/client/v3/user/{}/filter", enc(&alice_id)),
            Some(&alice),
            json!({ "room": { "rooms": [room], "timeline": { "limit": 2, "types": ["m.room.message"] }, "state": { "lazy_load_members": true } } }),
        )
        .await
        .ok();
    let filter_id = created["filter_id"].as_str().unwrap().to_owned();
    let stored = server.get(&format!("/_matrix/client/v3/user/{}/filter/{filter_id}", enc(&alice_id)), Some(&alice)).await.ok();
    assert_eq!(stored["room"]["timeline"]["limit"], 2);
    server.get(&format!("/_matrix/client/v3/user/{}/filter/999", enc(&alice_id)), Some(&alice)).await.err(404, "M_NOT_FOUND");
    server.get(&format!("/_matrix/client/v3/user/{}/filter/{filter_id}", enc(&alice_id)), Some(&bob)).await.err(403, "M_FORBIDDEN");

    let response = sync(&server, &alice, &format!("filter={filter_id}")).await;
    let joined = response["rooms"]["join"].as_object().unwrap();
    assert!(joined.contains_key(&room) && !joined.contains_key(&other), "rooms filter");
    assert_eq!(timeline_bodies(&response, &room), vec!["from bob", "from alice"]);
    // Lazy-loading: members of the timeline's senders (and the user), not everyone.
    let members: Vec<&str> = response["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert!(members.contains(&bob_id.as_str()) && members.contains(&alice_id.as_str()));
    assert_eq!(response["rooms"]["join"][&room]["summary"]["m.joined_member_count"], 2);

    // Inline filter: only bob's messages.
    let inline = enc(&json!({ "room": { "timeline": { "senders": [bob_id] } } }).to_string());
    let response = sync(&server, &alice, &format!("filter={inline}")).await;
    assert_eq!(timeline_bodies(&response, &room), vec!["from bob"]);

    server.get("/_matrix/client/v3/sync?filter=%7Bnot%20json", Some(&alice)).await.err(400, "M_INVALID_PARAM");
    server.get("/_matrix/client/v3/sync?filter=12345", Some(&alice)).await.err(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn invites_joins_leaves_kicks_and_bans() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "name": "Secret club" })).await;
    let next = sync(&server, &bob, "").await["next_batch"].as_str().unwrap().to_owned();
    server.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), Some(&alice), json!({ "user_id": bob_id })).await.ok();

    let invited = sync(&server, &bob, &format!("since={next}")).await;
    let stripped = invited["rooms"]["invite"][&room]["invite_state"]["events"].as_array().unwrap();
    assert!(stripped.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Secret club"));
    assert!(stripped.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == bob_id && e["content"]["membership"] == "invite"));
    let next = invited["next_batch"].as_str().unwrap().to_owned();

    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    let joined = sync(&server, &bob, &format!("since={next}")).await;
    let section = &joined["rooms"]["join"][&room];
    // A newly joined room comes whole: its state before the timeline plus the timeline.
    let mut seen = state_types(section);
    seen.extend(section["timeline"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()));
    for kind in ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name"] {
        assert!(seen.contains(&kind.to_owned()), "{kind} missing from {section}");
    }
    let next = joined["next_batch"].as_str().unwrap().to_owned();

    server.post(&format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)), Some(&alice), json!({ "user_id": bob_id, "reason": "bye" })).await.ok();
    let kicked = sync(&server, &bob, &format!("since={next}")).await;
    let leave = &kicked["rooms"]["leave"][&room]["timeline"]["events"];
    let last = leave.as_array().unwrap().last().unwrap();
    assert_eq!(last["content"]["membership"], "leave");
    assert_eq!(last["content"]["reason"], "bye");
    assert!(kicked["rooms"]["join"].get(&room).is_none());
    // After leaving, the room's later messages do not reach bob.
    let next = kicked["next_batch"].as_str().unwrap().to_owned();
    server.send_text(&alice, &room, "after", "after the kick").await;
    let quiet = sync(&server, &bob, &format!("since={next}")).await;
    assert!(quiet.get("rooms").is_none(), "{quiet}");

    // Left rooms appear in an initial sync only with include_leave.
    let without = sync(&server, &bob, "").await;
    assert!(without["rooms"].get("leave").is_none());
    let with = sync(&server, &bob, &format!("filter={}", enc(r#"{"room":{"include_leave":true}}"#))).await;
    assert!(with["rooms"]["leave"].get(&room).is_some());

    server.post(&format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)), Some(&alice), json!({ "user_id": bob_id })).await.ok();
    let banned = sync(&server, &bob, &format!("since={next}")).await;
    let events = banned["rooms"]["leave"][&room]["timeline"]["events"].as_array().unwrap();
    assert_eq!(events.last().unwrap()["content"]["membership"], "ban");
    server.stop().await;
}

#[tokio::test]
async fn typing_notifications() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "invite": [bob_id] })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    let next = sync(&server, &bob, "").await["next_batch"].as_str().unwrap().to_owned();
    let typing = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&alice_id));
    server.put(&typing, Some(&alice), json!({ "typing": true, "timeout": 300 })).await.ok();
    let response = sync(&server, &bob, &format!("since={next}")).await;
    let ephemeral = &response["rooms"]["join"][&room]["ephemeral"]["events"];
    assert_eq!(ephemeral[0]["type"], "m.typing");
    assert_eq!(ephemeral[0]["content"]["user_ids"], json!([alice_id]));
    let next = response["next_batch"].as_str().unwrap().to_owned();
    // It expires on its own, and syncs are woken for that.
    let expired = sync(&server, &bob, &format!("since={next}&timeout=10000")).await;
    assert_eq!(expired["rooms"]["join"][&room]["ephemeral"]["events"][0]["content"]["user_ids"], json!([]));

    // Without a timeout (the spec does not require one): typing for Synapse's 30 s.
    server.put(&typing, Some(&alice), json!({ "typing": true })).await.ok();
    let next = expired["next_batch"].as_str().unwrap().to_owned();
    let again = sync(&server, &bob, &format!("since={next}")).await;
    assert_eq!(again["rooms"]["join"][&room]["ephemeral"]["events"][0]["content"]["user_ids"], json!([alice_id]));

    // Explicit stop; others cannot set alice's typing; non-members cannot type.
    server.put(&typing, Some(&alice), json!({ "typing": false })).await.ok();
    server.put(&typing, Some(&bob), json!({ "typing": true, "timeout": 1000 })).await.err(403, "M_FORBIDDEN");
    let (carol_id, carol) = server.register("carol").await;
    server
        .put(&format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&carol_id)), Some(&carol), json!({ "typing": true, "timeout": 1000 }))
        .await
        .err(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn receipts_and_read_markers() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "invite": [bob_id] })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    let event = server.send_text(&alice, &room, "m", "read me").await;
    let next = sync(&server, &alice, "").await["next_batch"].as_str().unwrap().to_owned();

    let base = format!("/_matrix/client/v3/rooms/{}/receipt", enc(&room));
    server.post(&format!("{base}/m.read/{}", enc(&event)), Some(&bob), json!({})).await.ok();
    server.post(&format!("{base}/m.read.private/{}", enc(&event)), Some(&bob), json!({})).await.ok();
    server.post(&format!("{base}/m.read/{}", enc(&event)), Some(&bob), json!({ "thread_id": "main" })).await.ok();
    server.post(&format!("{base}/m.bogus/{}", enc(&event)), Some(&bob), json!({})).await.err(400, "M_INVALID_PARAM");
    server.post(&format!("{base}/m.read/%24nope"), Some(&bob), json!({})).await.err(404, "M_NOT_FOUND");

    let response = sync(&server, &alice, &format!("since={next}")).await;
    let receipt = &response["rooms"]["join"][&room]["ephemeral"]["events"][0];
    assert_eq!(receipt["type"], "m.receipt");
    let by_type = &receipt["content"][&event];
    assert!(by_type["m.read"][&bob_id]["ts"].is_u64());
    assert!(by_type.get("m.read.private").is_none(), "private receipts stay private");
    // A later message with no new receipts: receipts are not sent again.
    let after_receipts = response["next_batch"].as_str().unwrap().to_owned();
    server.send_text(&alice, &room, "m2", "no receipts").await;
    let later = sync(&server, &alice, &format!("since={after_receipts}")).await;
    let ephemeral = later["rooms"]["join"][&room]["ephemeral"]["events"].as_array().unwrap();
    assert!(ephemeral.iter().all(|e| e["type"] != "m.receipt"), "{later}");
    // Bob sees his own private receipt.
    let own = sync(&server, &bob, "").await;
    let own_receipts = own["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .unwrap()
        .clone();
    assert!(own_receipts["content"][&event]["m.read.private"][&bob_id].is_object());

    // Read markers: m.fully_read lands in room account data.
    server
        .post(&format!("/_matrix/client/v3/rooms/{}/read_markers", enc(&room)), Some(&bob), json!({ "m.fully_read": event, "m.read": event }))
        .await
        .ok();
    let marker = server
        .get(&format!("/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read", enc(&bob_id), enc(&room)), Some(&bob))
        .await
        .ok();
    assert_eq!(marker["event_id"], event);
    let synced = sync(&server, &bob, "").await;
    let account_data = synced["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap();
    assert!(account_data.iter().any(|e| e["type"] == "m.fully_read"));
    let _ = alice_id;
    server.stop().await;
}

#[tokio::test]
async fn presence_is_shared_with_room_members() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (carol_id, carol) = server.register("carol").await;
    let room = server.create_room(&alice, json!({ "invite": [bob_id] })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    let next = sync(&server, &bob, "set_presence=offline").await["next_batch"].as_str().unwrap().to_owned();

    let status = format!("/_matrix/client/v3/presence/{}/status", enc(&alice_id));
    server.put(&status, Some(&alice), json!({ "presence": "unavailable", "status_msg": "lunch" })).await.ok();
    let got = server.get(&status, Some(&bob)).await.ok();
    assert_eq!(got["presence"], "unavailable");
    assert_eq!(got["status_msg"], "lunch");
    server.get(&status, Some(&carol)).await.err(403, "M_FORBIDDEN");
    server.put(&status, Some(&bob), json!({ "presence": "online" })).await.err(403, "M_FORBIDDEN");

    let response = sync(&server, &bob, &format!("since={next}&set_presence=offline")).await;
    let events = response["presence"]["events"].as_array().unwrap();
    let alice_presence = events.iter().find(|e| e["sender"] == alice_id).unwrap();
    assert_eq!(alice_presence["content"]["presence"], "unavailable");
    assert_eq!(alice_presence["content"]["status_msg"], "lunch");

    // Syncing marks a user online (the heartbeat); carol shares no room, so sees nothing.
    sync(&server, &alice, "").await;
    let got = server.get(&status, Some(&bob)).await.ok();
    assert_eq!(got["presence"], "online");
    assert_eq!(got["currently_active"], true);
    let carol_view = sync(&server, &carol, "").await;
    let carol_events = carol_view["presence"]["events"].as_array().cloned().unwrap_or_default();
    assert!(carol_events.iter().all(|e| e["sender"] == carol_id), "{carol_events:?}");
    server.stop().await;

    let off = TestServer::start_with(|c| c.presence.enabled = false).await;
    let (dave_id, dave) = off.register("dave").await;
    off.put(&format!("/_matrix/client/v3/presence/{}/status", enc(&dave_id)), Some(&dave), json!({ "presence": "online" }))
        .await
        .err(403, "M_FORBIDDEN");
    let response = sync(&off, &dave, "").await;
    assert!(response.get("presence").is_none());
    off.stop().await;
}

#[tokio::test]
async fn to_device_messages_until_acknowledged() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let bob_login = |device: &'static str| {
        let server = &server;
        async move {
            server
                .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "user": "bob", "password": "password", "device_id": device }))
                .await
                .ok()["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let (bob_id, _) = server.register("bob").await;
    let phone = bob_login("PHONE").await;
    let laptop = bob_login("LAPTOP").await;

    let send = |txn: &'static str, device: &'static str| {
        let server = &server;
        let alice = alice.clone();
        let bob_id = bob_id.clone();
        async move {
            server
                .put(
                    &format!("/_matrix/client/v3/sendToDevice/m.room_key_request/{txn}"),
                    Some(&alice),
                    json!({ "messages": { bob_id: { device: { "action": "request", "n": txn } } } }),
                )
                .await
                .ok();
        }
    };
    send("t1", "PHONE").await;
    send("t1", "PHONE").await; // same transaction: delivered once
    send("t2", "*").await;

    let first = sync(&server, &phone, "").await;
    let events = first["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["sender"], alice_id);
    assert_eq!(events[0]["type"], "m.room_key_request");
    assert_eq!(events[0]["content"]["n"], "t1");
    let next = first["next_batch"].as_str().unwrap();
    // Acknowledged by syncing past them: gone.
    let second = sync(&server, &phone, &format!("since={next}")).await;
    assert!(second.get("to_device").is_none(), "{second}");
    // The laptop got only the broadcast.
    let laptop_sync = sync(&server, &laptop, "").await;
    let events = laptop_sync["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["content"]["n"], "t2");
    server.stop().await;
}

#[tokio::test]
async fn device_lists_follow_shared_rooms() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let next = sync(&server, &alice, "").await["next_batch"].as_str().unwrap().to_owned();
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    let response = sync(&server, &alice, &format!("since={next}")).await;
    assert_eq!(response["device_lists"]["changed"], json!([bob_id]));
    let next = response["next_batch"].as_str().unwrap().to_owned();
    server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&bob), json!({})).await.ok();
    let response = sync(&server, &alice, &format!("since={next}")).await;
    assert_eq!(response["device_lists"]["left"], json!([bob_id]));
    server.stop().await;
}

#[tokio::test]
async fn account_data_in_sync() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let next = sync(&server, &alice, "").await["next_batch"].as_str().unwrap().to_owned();
    server.put(&format!("/_matrix/client/v3/user/{}/account_data/m.direct", enc(&alice_id)), Some(&alice), json!({ "@x:localhost": [room] })).await.ok();
    server
        .put(&format!("/_matrix/client/v3/user/{}/rooms/{}/tags/m.favourite", enc(&alice_id), enc(&room)), Some(&alice), json!({}))
        .await
        .ok();
    let response = sync(&server, &alice, &format!("since={next}")).await;
    assert_eq!(response["account_data"]["events"][0]["type"], "m.direct");
    let room_data = response["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap();
    assert_eq!(room_data[0]["type"], "m.tag");
    assert!(room_data[0]["content"]["tags"]["m.favourite"].is_object());
    server.stop().await;
}

#[tokio::test]
async fn bad_and_foreign_tokens() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server.get("/_matrix/client/v3/sync?since=garbage", Some(&alice)).await.err(400, "M_INVALID_PARAM");
    server.get("/_matrix/client/v3/sync?since=s1_2", Some(&alice)).await.err(400, "M_INVALID_PARAM");
    server.get("/_matrix/client/v3/sync?since=s1_2_3_4_5_6", Some(&alice)).await.err(400, "M_INVALID_PARAM");
    server.get("/_matrix/client/v3/sync?timeout=soon", Some(&alice)).await.err(400, "M_INVALID_PARAM");
    server.get("/_matrix/client/v3/sync?set_presence=dancing", Some(&alice)).await.err(400, "M_INVALID_PARAM");
    // A token from the future (another server, a wiped database) is read as "now".
    let future = sync(&server, &alice, "since=s999999_999999_999999_99999999999999_999999_0_999999&timeout=0").await;
    assert!(future["next_batch"].is_string());
    server.send_text(&alice, &room, "n", "still flowing").await;
    let next = future["next_batch"].as_str().unwrap();
    let after = sync(&server, &alice, &format!("since={next}")).await;
    assert_eq!(timeline_bodies(&after, &room), vec!["still flowing"]);
    server.get("/_matrix/client/v3/sync", None).await.err(401, "M_MISSING_TOKEN");
    server.stop().await;
}

#[tokio::test]
async fn knocks_show_knock_state() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "name": "Knock knock", "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }] }))
        .await;
    let next = sync(&server, &bob, "").await["next_batch"].as_str().unwrap().to_owned();
    server.post(&format!("/_matrix/client/v3/knock/{}", enc(&room)), Some(&bob), json!({})).await.ok();
    let response = sync(&server, &bob, &format!("since={next}")).await;
    let state = response["rooms"]["knock"][&room]["knock_state"]["events"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knock knock"));
    assert!(state.iter().any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "knock"));
    // The room's members see the knock in their timeline.
    let alice_view = sync(&server, &alice, "").await;
    let events = alice_view["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["content"]["membership"] == "knock"));
    server.stop().await;
}

/// `timeline.limit: 0` asks for state only: no events, and an incremental sync's state block
/// carries what changed in the span (it is all one gap).
#[tokio::test]
async fn timeline_limit_zero_gives_state_only() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server.send_text(&alice, &room, "z0", "before").await;
    let filter = enc(r#"{"room":{"timeline":{"limit":0},"state":{"types":["m.room.member"]}}}"#);
    let initial = sync(&server, &alice, &format!("filter={filter}")).await;
    let section = &initial["rooms"]["join"][&room];
    assert_eq!(section["timeline"]["events"], json!([]));
    assert_eq!(state_types(section), vec!["m.room.member"]);

    let since = initial["next_batch"].as_str().unwrap().to_owned();
    server.put(&format!("/_matrix/client/v3/profile/{}/displayname", enc("@alice:localhost")), Some(&alice), json!({ "displayname": "Alice Z" })).await.ok();
    server.send_text(&alice, &room, "z1", "after").await;
    let incremental = sync(&server, &alice, &format!("since={since}&filter={filter}")).await;
    let section = &incremental["rooms"]["join"][&room];
    assert_eq!(section["timeline"]["events"], json!([]));
    assert_eq!(section["timeline"]["limited"], true);
    let state = section["state"]["events"].as_array().unwrap();
    assert_eq!(state.len(), 1, "the member change of the span: {state:?}");
    assert_eq!(state[0]["content"]["displayname"], "Alice Z");
    server.stop().await;
}

/// A member changing their display name has not newly joined: the incremental sync has just
/// the new events, not the room's whole timeline and state again.
#[tokio::test]
async fn a_display_name_change_is_not_a_new_join() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let since = server.get("/_matrix/client/v3/sync", Some(&alice)).await.ok()["next_batch"].as_str().unwrap().to_owned();
    let rename = server
        .put(&format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&alice_id)), Some(&alice), json!({ "membership": "join", "displayname": "boris" }))
        .await
        .ok()["event_id"]
        .clone();
    let message = server.send_text(&alice, &room, "m1", "after the rename").await;
    let sync = server.get(&format!("/_matrix/client/v3/sync?since={since}"), Some(&alice)).await.ok();
    let section = &sync["rooms"]["join"][&room];
    let timeline: Vec<&Value> = section["timeline"]["events"].as_array().unwrap().iter().map(|e| &e["event_id"]).collect();
    assert_eq!(timeline, vec![&rename, &json!(message)], "{section}");
    assert_eq!(section["timeline"]["limited"], false);
    let state = section["state"]["events"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(state, 0, "no full state: {section}");
    server.stop().await;
}

/// The member events in a lazy-loading sync's state, by user id, with their membership.
fn lazy_members(response: &Value, room: &str) -> Vec<(String, String)> {
    let mut members: Vec<(String, String)> = response["rooms"]["join"][room]["state"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| (e["state_key"].as_str().unwrap().to_owned(), e["content"]["membership"].as_str().unwrap().to_owned()))
        .collect();
    members.sort();
    members
}

/// Lazy-loading members in incremental syncs, as Synapse does: the members of new senders
/// only, never again one the device already has (unless it asks for redundant members);
/// a gap brings the memberships that changed in it. A retried sync (same `since`) gets
/// the same members again.
#[tokio::test]
async fn lazy_loaded_members_in_incremental_syncs() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let mut users = Vec::new();
    for name in ["bob", "carol", "dave"] {
        let (id, token) = server.register(name).await;
        if name != "dave" {
            server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&token), json!({})).await.ok();
        }
        users.push((id, token));
    }
    let [(bob_id, bob), (carol_id, carol), (dave_id, dave)] = <[_; 3]>::try_from(users).unwrap();
    let filter = enc(&json!({ "room": { "timeline": { "limit": 3 }, "state": { "lazy_load_members": true } } }).to_string());
    for n in 0..3 {
        server.send_text(&bob, &room, &format!("b{n}"), "bob speaks").await;
    }
    let first = sync(&server, &alice, &format!("filter={filter}")).await;
    let joined = |who: &str| (who.to_owned(), "join".to_owned());
    assert_eq!(lazy_members(&first, &room), vec![joined(&alice_id), joined(&bob_id)]);

    server.send_text(&carol, &room, "c0", "carol speaks").await;
    let second = sync(&server, &alice, &format!("filter={filter}&since={}", first["next_batch"].as_str().unwrap())).await;
    assert_eq!(lazy_members(&second, &room), vec![joined(&carol_id)], "only the new sender");

    server.send_text(&bob, &room, "b3", "bob again").await;
    let third = sync(&server, &alice, &format!("filter={filter}&since={}", second["next_batch"].as_str().unwrap())).await;
    assert_eq!(timeline_bodies(&third, &room), vec!["bob again"]);
    assert_eq!(lazy_members(&third, &room), vec![], "bob's member is not sent twice");
    let redundant = enc(&json!({ "room": { "timeline": { "limit": 3 }, "state": { "lazy_load_members": true, "include_redundant_members": true } } }).to_string());
    let with_redundant = sync(&server, &alice, &format!("filter={redundant}&since={}", second["next_batch"].as_str().unwrap())).await;
    assert_eq!(lazy_members(&with_redundant, &room), vec![joined(&bob_id)], "unless asked for");

    // A gap: dave joins without speaking, carol says more than the timeline holds.
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&dave), json!({})).await.ok();
    for n in 1..6 {
        server.send_text(&carol, &room, &format!("c{n}"), "carol goes on").await;
    }
    let since = third["next_batch"].as_str().unwrap().to_owned();
    let gapped = sync(&server, &alice, &format!("filter={filter}&since={since}")).await;
    assert_eq!(gapped["rooms"]["join"][&room]["timeline"]["limited"], true);
    assert_eq!(lazy_members(&gapped, &room), vec![joined(&dave_id)], "the gap's change; carol's member the device has");
    // The answer was lost: the retry from the same token gets the same members.
    let retried = sync(&server, &alice, &format!("filter={filter}&since={since}")).await;
    assert_eq!(lazy_members(&retried, &room), vec![joined(&dave_id)]);
    server.stop().await;
}

/// Ignoring a user (`m.ignored_user_list`): their messages leave the timeline (in /sync and
/// /messages), their state events stay, and their invites are not shown.
#[tokio::test]
async fn ignored_users_are_not_shown() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    server.send_text(&bob, &room, "b1", "from bob").await;
    server.send_text(&alice, &room, "a1", "from alice").await;
    server.put(&format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", enc(&alice_id)), Some(&alice), json!({ "ignored_users": { bob_id.as_str(): {} } })).await.ok();

    let synced = sync(&server, &alice, "").await;
    assert_eq!(timeline_bodies(&synced, &room), vec!["from alice"]);
    let state_or_timeline_members = synced["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(synced["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap())
        .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob_id.as_str());
    assert!(state_or_timeline_members, "bob's membership (state) stays");
    let page = server.messages(&alice, &room, "dir=b&limit=20").await;
    let bodies: Vec<&str> = page["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, vec!["from alice"]);

    // bob's invite to another room is not shown to alice.
    let since = synced["next_batch"].as_str().unwrap().to_owned();
    let other = server.create_room(&bob, json!({})).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&other)), Some(&bob), json!({ "user_id": alice_id })).await.ok();
    let later = sync(&server, &alice, &format!("since={since}&timeout=0")).await;
    assert!(later["rooms"]["invite"].get(&other).is_none(), "{later}");
    let full = sync(&server, &alice, "").await;
    assert!(full["rooms"]["invite"].get(&other).is_none(), "{full}");
    server.stop().await;
}

/// Joined and left between two syncs: the leave section has the room's state (up to the
/// leave), as for a new join; a rejected invite gets no such state.
#[tokio::test]
async fn a_room_joined_and_left_between_syncs_comes_whole() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat", "name": "Brief" })).await;
    let since = sync(&server, &bob, "").await["next_batch"].as_str().unwrap().to_owned();
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&bob), json!({})).await.ok();
    let later = sync(&server, &bob, &format!("since={since}")).await;
    let left = &later["rooms"]["leave"][&room];
    let in_state_or_timeline = |kind: &str| {
        left["state"]["events"].as_array().into_iter().flatten().chain(left["timeline"]["events"].as_array().into_iter().flatten()).any(|e| e["type"] == kind)
    };
    assert!(in_state_or_timeline("m.room.name") && in_state_or_timeline("m.room.create"), "{left}");

    // Invited and rejected: the leave shows, the room's state does not.
    let private = server.create_room(&alice, json!({ "preset": "private_chat", "name": "Secret" })).await;
    let since = later["next_batch"].as_str().unwrap().to_owned();
    server.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&private)), Some(&alice), json!({ "user_id": bob_id })).await.ok();
    server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&private)), Some(&bob), json!({})).await.ok();
    let rejected = sync(&server, &bob, &format!("since={since}")).await;
    let section = &rejected["rooms"]["leave"][&private];
    assert!(!section["state"]["events"].as_array().into_iter().flatten().any(|e| e["type"] == "m.room.name"), "{section}");
    server.stop().await;
}

#[tokio::test]
async fn heroes_only_for_rooms_without_a_name() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let unnamed = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let named = server.create_room(&alice, json!({ "preset": "public_chat", "name": "Has a name" })).await;
    for room in [&unnamed, &named] {
        server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(room)), Some(&bob), json!({})).await.ok();
    }
    let response = sync(&server, &alice, "").await;
    let summary = |room: &str| response["rooms"]["join"][room]["summary"].clone();
    assert_eq!(summary(&unnamed)["m.heroes"], json!([bob_id]));
    assert!(summary(&named).get("m.heroes").is_none(), "{}", summary(&named));
    assert_eq!(summary(&named)["m.joined_member_count"], 2);
    server.stop().await;
}
