//! Simplified sliding sync (MSC4186) through HTTP, the way matrix-rust-sdk (Element X) drives it.

mod common;

use std::time::Duration;

use common::{enc, TestServer};
use serde_json::{json, Value};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

async fn sliding(server: &TestServer, token: &str, pos: Option<&str>, timeout_ms: u64, body: &Value) -> Value {
    let mut path = format!("{PATH}?timeout={timeout_ms}");
    if let Some(pos) = pos {
        path.push_str(&format!("&pos={}", enc(pos)));
    }
    server.post(&path, Some(token), body.clone()).await.ok()
}

fn list_body(ranges: Value, timeline_limit: u64, required_state: Value) -> Value {
    json!({
        "conn_id": "room-list",
        "lists": { "all_rooms": { "ranges": ranges, "timeline_limit": timeline_limit, "required_state": required_state } },
    })
}

fn bodies(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

fn state_keys(room: &Value) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = room["required_state"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned()))
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn versions_advertise_sliding_sync() {
    let server = TestServer::start().await;
    let versions = server.get("/_matrix/client/versions", None).await.ok();
    assert_eq!(versions["unstable_features"]["org.matrix.simplified_msc3575"], true);
    server.stop().await;
}

#[tokio::test]
async fn lists_sort_by_recency_and_send_only_changes() {
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    let mut rooms = Vec::new();
    for i in 0..5 {
        let room = server.create_room(&token, json!({ "name": format!("room {i}") })).await;
        server.send_text(&token, &room, &format!("t{i}"), &format!("hello {i}")).await;
        rooms.push(room);
    }
    let body = list_body(json!([[0, 2]]), 1, json!([["m.room.name", ""], ["m.room.member", "$ME"]]));
    let first = sliding(&server, &token, None, 0, &body).await;
    assert_eq!(first["lists"]["all_rooms"]["count"], 5);
    let sent: Vec<&String> = first["rooms"].as_object().unwrap().keys().collect();
    assert_eq!(sent.len(), 3, "the window [0, 2] holds three rooms: {first}");
    for room in &rooms[2..] {
        let entry = &first["rooms"][room];
        assert_eq!(entry["initial"], true);
        assert_eq!(entry["timeline"].as_array().unwrap().len(), 1, "timeline_limit 1");
        assert!(entry["name"].as_str().unwrap().starts_with("room "));
        assert!(entry["bump_stamp"].as_u64().unwrap() > 0);
        assert_eq!(entry["joined_count"], 1);
        assert!(entry["prev_batch"].is_string());
        assert_eq!(state_keys(entry).len(), 2, "name and own member: {entry}");
    }
    // The newest rooms come first: rooms 2, 3 and 4 are in the window.
    let stamps: Vec<u64> = rooms[2..].iter().map(|r| first["rooms"][r]["bump_stamp"].as_u64().unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]));

    // Nothing happened: no rooms, the same counts.
    let pos = first["pos"].as_str().unwrap();
    let quiet = sliding(&server, &token, Some(pos), 0, &body).await;
    assert!(quiet["rooms"].as_object().is_none_or(|r| r.is_empty()), "{quiet}");
    assert_eq!(quiet["lists"]["all_rooms"]["count"], 5);

    // A message in the oldest room moves it into the window: it is new to the connection.
    let pos = quiet["pos"].as_str().unwrap();
    server.send_text(&token, &rooms[0], "late", "back on top").await;
    let moved = sliding(&server, &token, Some(pos), 0, &body).await;
    let entry = &moved["rooms"][&rooms[0]];
    assert_eq!(entry["initial"], true);
    assert_eq!(bodies(entry), vec!["back on top"]);

    // A message in a room already sent: only that event, not initial.
    let pos = moved["pos"].as_str().unwrap();
    server.send_text(&token, &rooms[4], "more", "only this").await;
    let next = sliding(&server, &token, Some(pos), 0, &body).await;
    let rooms_sent = next["rooms"].as_object().unwrap();
    assert_eq!(rooms_sent.len(), 1, "{next}");
    let entry = &next["rooms"][&rooms[4]];
    assert!(entry.get("initial").is_none());
    assert_eq!(bodies(entry), vec!["only this"]);
    assert!(entry["required_state"].as_array().is_none_or(|s| s.is_empty()), "no state changed: {entry}");
    assert_eq!(entry["num_live"], 1);
    server.stop().await;
}

#[tokio::test]
async fn required_state_wildcards_lazy_members_and_expansion() {
    let server = TestServer::start().await;
    let (alice, alice_token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let (carol, carol_token) = server.register("carol").await;
    let room = server.create_room(&alice_token, json!({ "preset": "public_chat", "name": "lazy", "topic": "t" })).await;
    for token in [&bob_token, &carol_token] {
        server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(token), json!({})).await.ok();
    }
    server.send_text(&bob_token, &room, "b1", "from bob").await;

    // $LAZY: members of the timeline's senders only (bob), plus $ME.
    let body = list_body(json!([[0, 0]]), 1, json!([["m.room.member", "$LAZY"], ["m.room.member", "$ME"], ["m.room.name", ""]]));
    let first = sliding(&server, &alice_token, None, 0, &body).await;
    let keys = state_keys(&first["rooms"][&room]);
    assert!(keys.contains(&("m.room.member".into(), bob.clone())), "{keys:?}");
    assert!(keys.contains(&("m.room.member".into(), alice.clone())));
    assert!(!keys.contains(&("m.room.member".into(), carol.clone())), "carol sent nothing in the timeline");

    // Incremental, lazily: carol's first message brings her member event; alice's own
    // message does not send alice's again ($ME sent it already, and it did not change).
    let pos = first["pos"].as_str().unwrap();
    server.send_text(&carol_token, &room, "c1", "from carol").await;
    let next = sliding(&server, &alice_token, Some(pos), 0, &body).await;
    assert_eq!(state_keys(&next["rooms"][&room]), vec![("m.room.member".to_owned(), carol.clone())]);
    let pos = next["pos"].as_str().unwrap();
    server.send_text(&alice_token, &room, "a1", "from alice").await;
    let own = sliding(&server, &alice_token, Some(pos), 0, &body).await;
    assert_eq!(bodies(&own["rooms"][&room]), vec!["from alice"]);
    assert_eq!(state_keys(&own["rooms"][&room]), Vec::<(String, String)>::new(), "{own}");

    // Asking for more state: the newly required events arrive on the next response, even with
    // nothing new in the room.
    let pos = first["pos"].as_str().unwrap();
    let wider = list_body(json!([[0, 0]]), 1, json!([["m.room.member", "*"], ["m.room.topic", ""], ["m.room.name", ""]]));
    let grown = sliding(&server, &alice_token, Some(pos), 0, &wider).await;
    let keys = state_keys(&grown["rooms"][&room]);
    assert!(keys.contains(&("m.room.member".into(), carol.clone())), "{keys:?}");
    assert!(keys.contains(&("m.room.topic".into(), String::new())));
    assert!(!keys.contains(&("m.room.name".into(), String::new())), "already sent: {keys:?}");

    // A state change in the room arrives as required state (it matches) and in the timeline.
    let pos = grown["pos"].as_str().unwrap();
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room));
    server.put(&path, Some(&alice_token), json!({ "topic": "new topic" })).await.ok();
    let changed = sliding(&server, &alice_token, Some(pos), 0, &wider).await;
    let keys = state_keys(&changed["rooms"][&room]);
    assert_eq!(keys, vec![("m.room.topic".to_owned(), String::new())]);

    // `*` for everything.
    let everything = list_body(json!([[0, 0]]), 1, json!([["*", "*"]]));
    let all = sliding(&server, &alice_token, None, 0, &everything).await;
    let keys = state_keys(&all["rooms"][&room]);
    for wanted in ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.topic"] {
        assert!(keys.iter().any(|(t, _)| t == wanted), "{wanted} missing: {keys:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn long_poll_wakes_on_a_new_event() {
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    let room = server.create_room(&token, json!({})).await;
    let body = list_body(json!([[0, 9]]), 5, json!([]));
    let first = sliding(&server, &token, None, 30_000, &body).await;
    assert!(first["rooms"][&room].is_object(), "a new connection answers at once: {first}");
    let pos = first["pos"].as_str().unwrap().to_owned();
    let base = server.base.clone();
    let waiter = {
        let (token, body) = (token.clone(), body.clone());
        tokio::spawn(async move {
            let url = format!("{base}{PATH}?timeout=20000&pos={}", enc(&pos));
            let started = std::time::Instant::now();
            let response: Value = reqwest::Client::new().post(url).bearer_auth(token).json(&body).send().await.unwrap().json().await.unwrap();
            (response, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.send_text(&token, &room, "w", "wake up").await;
    let (response, waited) = waiter.await.unwrap();
    assert_eq!(bodies(&response["rooms"][&room]), vec!["wake up"]);
    assert!(waited < Duration::from_secs(15), "woken by the send, not the timeout ({waited:?})");

    // Nothing new: the poll times out and keeps the position.
    let pos = response["pos"].as_str().unwrap();
    let quiet = sliding(&server, &token, Some(pos), 200, &body).await;
    assert!(quiet["rooms"].as_object().is_none_or(|r| r.is_empty()));
    assert_eq!(quiet["pos"], pos);
    server.stop().await;
}

#[tokio::test]
async fn unknown_positions_are_refused_and_a_restart_resets() {
    let mut server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    let body = list_body(json!([[0, 9]]), 1, json!([]));
    let path = format!("{PATH}?pos=nonsense");
    server.post(&path, Some(&token), body.clone()).await.err(400, "M_UNKNOWN_POS");
    let first = sliding(&server, &token, None, 0, &body).await;
    let pos = first["pos"].as_str().unwrap().to_owned();
    // Another connection id does not share the position.
    let other = json!({ "conn_id": "encryption", "extensions": { "e2ee": { "enabled": true } } });
    server.post(&format!("{PATH}?pos={}", enc(&pos)), Some(&token), other).await.err(400, "M_UNKNOWN_POS");
    server.restart().await;
    server.post(&format!("{PATH}?pos={}", enc(&pos)), Some(&token), body.clone()).await.err(400, "M_UNKNOWN_POS");
    // Starting again works.
    let again = sliding(&server, &token, None, 0, &body).await;
    assert!(again["pos"].is_string());
    server.stop().await;
}

#[tokio::test]
async fn filters_invites_and_subscriptions() {
    let server = TestServer::start().await;
    let (alice, alice_token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let space = server.create_room(&alice_token, json!({ "creation_content": { "type": "m.space" }, "name": "space" })).await;
    let _encrypted = server
        .create_room(&alice_token, json!({ "initial_state": [{ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }] }))
        .await;
    let dm = server.create_room(&bob_token, json!({ "invite": [alice], "is_direct": true })).await;
    let plain = server.create_room(&alice_token, json!({ "name": "plain" })).await;
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.space.child/{}", enc(&space), enc(&plain));
    server.put(&path, Some(&alice_token), json!({ "via": ["localhost"] })).await.ok();
    let path = format!("/_matrix/client/v3/user/{}/account_data/m.direct", enc(&alice));
    server.put(&path, Some(&alice_token), json!({ bob.clone(): [dm.clone()] })).await.ok();

    let list = |filters: Value| json!({ "ranges": [[0, 20]], "timeline_limit": 0, "filters": filters });
    let body = json!({ "lists": {
        "invites": list(json!({ "is_invite": true })),
        "dms": list(json!({ "is_dm": true })),
        "encrypted": list(json!({ "is_encrypted": true })),
        "spaces": list(json!({ "room_types": ["m.space"] })),
        "not_spaces": list(json!({ "not_room_types": ["m.space"], "is_invite": false })),
        "in_space": list(json!({ "spaces": [space.clone()] })),
    }});
    let response = sliding(&server, &alice_token, None, 0, &body).await;
    let count = |name: &str| response["lists"][name]["count"].as_u64().unwrap();
    assert_eq!(count("invites"), 1);
    assert_eq!(count("dms"), 1);
    assert_eq!(count("encrypted"), 1);
    assert_eq!(count("spaces"), 1);
    assert_eq!(count("not_spaces"), 2, "encrypted and plain: {response}");
    assert_eq!(count("in_space"), 1);
    // The invite carries stripped state, and no timeline.
    let invite = &response["rooms"][&dm];
    let stripped = invite["invite_state"].as_array().expect("invite_state");
    assert!(stripped.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == alice.as_str()));
    assert!(invite.get("timeline").is_none());

    // Joining turns the invite into a joined room, sent anew.
    let pos = response["pos"].as_str().unwrap();
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&dm)), Some(&alice_token), json!({})).await.ok();
    server.send_text(&bob_token, &dm, "hi", "welcome").await;
    let sub = json!({ "room_subscriptions": { dm.clone(): { "timeline_limit": 5, "required_state": [["m.room.member", "*"]] } } });
    let joined = sliding(&server, &alice_token, Some(pos), 0, &sub).await;
    let entry = &joined["rooms"][&dm];
    assert_eq!(entry["initial"], true, "{joined}");
    assert!(entry.get("invite_state").is_none());
    assert!(bodies(entry).contains(&"welcome".to_owned()));
    assert_eq!(entry["joined_count"], 2);
    // A subscription to a room the user has no membership in is ignored.
    let stranger = server.create_room(&bob_token, json!({})).await;
    let sub = json!({ "room_subscriptions": { stranger.clone(): { "timeline_limit": 5 } } });
    let none = sliding(&server, &alice_token, None, 0, &sub).await;
    assert!(none["rooms"].get(&stranger).is_none());
    server.stop().await;
}

#[tokio::test]
async fn extensions_to_device_e2ee_account_data_receipts_typing() {
    let server = TestServer::start().await;
    let (alice, alice_token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let room = server.create_room(&alice_token, json!({ "preset": "public_chat" })).await;
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&bob_token), json!({})).await.ok();
    let event = server.send_text(&bob_token, &room, "m1", "read me").await;

    let whoami = server.get("/_matrix/client/v3/account/whoami", Some(&alice_token)).await.ok();
    let alice_device = whoami["device_id"].as_str().unwrap().to_owned();
    let body = |since: Option<&str>| {
        let mut to_device = json!({ "enabled": true });
        if let Some(since) = since {
            to_device["since"] = since.into();
        }
        json!({
            "conn_id": "main",
            "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 1 } },
            "extensions": {
                "to_device": to_device,
                "e2ee": { "enabled": true },
                "account_data": { "enabled": true },
                "receipts": { "enabled": true, "rooms": ["*"] },
                "typing": { "enabled": true },
            },
        })
    };
    let first = sliding(&server, &alice_token, None, 0, &body(None)).await;
    let ext = &first["extensions"];
    assert_eq!(ext["e2ee"]["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert!(ext["e2ee"]["device_unused_fallback_key_types"].is_array());
    assert!(ext["account_data"]["global"].as_array().unwrap().iter().any(|e| e["type"] == "m.push_rules"));
    let next_batch = ext["to_device"]["next_batch"].as_str().unwrap().to_owned();

    // To-device: delivered, then gone once acknowledged with `since`.
    let path = "/_matrix/client/v3/sendToDevice/m.test/td1";
    server.put(path, Some(&bob_token), json!({ "messages": { alice.clone(): { alice_device.clone(): { "n": 1 } } } })).await.ok();
    // Receipts, typing, room account data and a key change of a room member.
    server.post(&format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&event)), Some(&bob_token), json!({})).await.ok();
    server.put(&format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&bob)), Some(&bob_token), json!({ "typing": true, "timeout": 30000 })).await.ok();
    let path = format!("/_matrix/client/v3/user/{}/rooms/{}/tags/u.work", enc(&alice), enc(&room));
    server.put(&path, Some(&alice_token), json!({ "order": 0.5 })).await.ok();
    let bob_device = server.get("/_matrix/client/v3/account/whoami", Some(&bob_token)).await.ok()["device_id"].as_str().unwrap().to_owned();
    let keys = json!({ "device_keys": {
        "user_id": bob, "device_id": bob_device, "algorithms": ["m.megolm.v1.aes-sha2"],
        "keys": { format!("ed25519:{bob_device}"): "x", format!("curve25519:{bob_device}"): "y" },
        "signatures": { bob.clone(): { format!("ed25519:{bob_device}"): "sig" } },
    }});
    server.post("/_matrix/client/v3/keys/upload", Some(&bob_token), keys).await.ok();

    let pos = first["pos"].as_str().unwrap();
    let next = sliding(&server, &alice_token, Some(pos), 0, &body(Some(&next_batch))).await;
    let ext = &next["extensions"];
    let messages = ext["to_device"]["events"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{ext}");
    assert_eq!(messages[0]["content"]["n"], 1);
    let receipts = &ext["receipts"]["rooms"][&room]["content"][&event]["m.read"];
    assert!(receipts[&bob].is_object(), "{ext}");
    assert_eq!(ext["typing"]["rooms"][&room]["content"]["user_ids"], json!([bob]));
    assert!(ext["account_data"]["rooms"][&room].as_array().unwrap().iter().any(|e| e["type"] == "m.tag"));
    assert!(ext["e2ee"]["device_lists"]["changed"].as_array().is_some_and(|c| c.iter().any(|u| u == bob.as_str())), "{ext}");

    // Acknowledged (since = the last next_batch): not delivered again.
    let pos = next["pos"].as_str().unwrap();
    let since = ext["to_device"]["next_batch"].as_str().unwrap();
    let after = sliding(&server, &alice_token, Some(pos), 0, &body(Some(since))).await;
    assert!(after["extensions"]["to_device"]["events"].as_array().is_none_or(|e| e.is_empty()));
    server.stop().await;
}

#[tokio::test]
async fn unread_counts_and_left_rooms() {
    let server = TestServer::start().await;
    let (_, alice_token) = server.register("alice").await;
    let (_, bob_token) = server.register("bob").await;
    let room = server.create_room(&alice_token, json!({ "preset": "public_chat", "name": "counts" })).await;
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&bob_token), json!({})).await.ok();
    let body = list_body(json!([[0, 9]]), 3, json!([["m.room.member", "$ME"]]));
    let first = sliding(&server, &bob_token, None, 0, &body).await;
    assert_eq!(first["rooms"][&room]["notification_count"], 0);
    let pos = first["pos"].as_str().unwrap();
    server.send_text(&alice_token, &room, "n1", "one").await;
    server.send_text(&alice_token, &room, "n2", "two").await;
    let next = sliding(&server, &bob_token, Some(pos), 0, &body).await;
    assert_eq!(next["rooms"][&room]["notification_count"], 2, "{next}");

    // Leaving: the room comes once more, with the leave, and nothing after it.
    let pos = next["pos"].as_str().unwrap();
    server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&bob_token), json!({})).await.ok();
    server.send_text(&alice_token, &room, "n3", "after you left").await;
    let left = sliding(&server, &bob_token, Some(pos), 0, &body).await;
    let entry = &left["rooms"][&room];
    let timeline = entry["timeline"].as_array().unwrap();
    assert!(timeline.iter().any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "leave"), "{entry}");
    assert!(!bodies(entry).contains(&"after you left".to_owned()));
    server.stop().await;
}

/// Rooms the user gets into during a connection join the lists at once (the connection
/// re-reads the memberships of rooms with news only).
#[tokio::test]
async fn new_rooms_join_the_list_during_a_connection() {
    let server = TestServer::start().await;
    let (alice, alice_token) = server.register("alice").await;
    let (_, bob_token) = server.register("bob").await;
    let first_room = server.create_room(&alice_token, json!({})).await;
    let body = list_body(json!([[0, 9]]), 1, json!([["m.room.member", "$ME"]]));
    let first = sliding(&server, &alice_token, None, 0, &body).await;
    assert_eq!(first["lists"]["all_rooms"]["count"], 1);

    let invited = server.create_room(&bob_token, json!({ "invite": [alice] })).await;
    let pos = first["pos"].as_str().unwrap();
    let next = sliding(&server, &alice_token, Some(pos), 0, &body).await;
    assert_eq!(next["lists"]["all_rooms"]["count"], 2, "{next}");
    assert!(next["rooms"][&invited]["invite_state"].is_array());

    let own = server.create_room(&alice_token, json!({ "name": "third" })).await;
    let pos = next["pos"].as_str().unwrap();
    let third = sliding(&server, &alice_token, Some(pos), 0, &body).await;
    assert_eq!(third["lists"]["all_rooms"]["count"], 3);
    assert_eq!(third["rooms"][&own]["initial"], true);
    assert!(third["rooms"].get(&first_room).is_none(), "nothing new there: {third}");
    server.stop().await;
}

/// A room shows only once all its initial events are written: a long-poll woken while
/// createRoom is still writing must not report a half-made room (a client would read "not
/// encrypted" from one and send in the clear).
#[tokio::test]
async fn rooms_appear_only_once_created_whole() {
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    let body = list_body(json!([[0, 50]]), 1, json!([["m.room.encryption", ""], ["m.room.name", ""]]));
    let mut pos = sliding(&server, &token, None, 0, &body).await["pos"].as_str().unwrap().to_owned();
    for round in 0..5 {
        let base = server.base.clone();
        let poll = {
            let (token, body, pos) = (token.clone(), body.clone(), pos.clone());
            tokio::spawn(async move {
                let url = format!("{base}{PATH}?timeout=10000&pos={}", enc(&pos));
                reqwest::Client::new().post(url).bearer_auth(token).json(&body).send().await.unwrap().json::<Value>().await.unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let encryption = json!({ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } });
        let room = server.create_room(&token, json!({ "name": format!("secret {round}"), "initial_state": [encryption] })).await;
        let mut response = poll.await.unwrap();
        // The poll may have answered for something else first; follow up until the room shows.
        for _ in 0..5 {
            if response["rooms"][&room].is_object() {
                break;
            }
            let next = response["pos"].as_str().unwrap().to_owned();
            response = sliding(&server, &token, Some(&next), 5000, &body).await;
        }
        let keys = state_keys(&response["rooms"][&room]);
        assert!(keys.contains(&("m.room.encryption".to_owned(), String::new())), "round {round}: {keys:?}");
        assert!(keys.contains(&("m.room.name".to_owned(), String::new())), "round {round}: {keys:?}");
        pos = response["pos"].as_str().unwrap().to_owned();
    }
    server.stop().await;
}

/// The form merged into the spec, at /_matrix/client/v4/sync: pos and timeout in the body,
/// `range`, object `required_state`, `is_invited`; `stripped_state` and `membership` back.
#[tokio::test]
async fn the_merged_form_is_accepted_at_v4() {
    let server = TestServer::start().await;
    let (alice, alice_token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let room = server.create_room(&alice_token, json!({ "preset": "public_chat", "name": "merged", "topic": "t" })).await;
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&bob_token), json!({})).await.ok();
    server.send_text(&bob_token, &room, "b1", "hello").await;
    let invite = server.create_room(&bob_token, json!({ "invite": [alice.clone()] })).await;
    let body = |pos: Option<&str>| {
        json!({
            "pos": pos, "timeout": 0,
            "lists": {
                "rooms": { "range": [0, 9], "timeline_limit": 2, "filters": { "is_invited": false },
                           "required_state": { "include": [{ "type": "m.room.name" }, { "type": "m.room.create", "state_key": "" }], "lazy_members": true } },
                "invites": { "timeline_limit": 0, "filters": { "is_invited": true } },
            },
        })
    };
    let first = server.post("/_matrix/client/v4/sync", Some(&alice_token), body(None)).await.ok();
    assert_eq!(first["lists"]["rooms"]["count"], 1, "{first}");
    assert_eq!(first["lists"]["invites"]["count"], 1);
    let joined = &first["rooms"][&room];
    assert_eq!(joined["membership"], "join");
    assert_eq!(bodies(joined), vec!["hello"]);
    let keys = state_keys(joined);
    assert!(keys.contains(&("m.room.name".to_owned(), String::new())));
    assert!(keys.contains(&("m.room.create".to_owned(), String::new())));
    assert!(keys.contains(&("m.room.member".to_owned(), bob.clone())), "lazy members: {keys:?}");
    assert!(!keys.iter().any(|(t, _)| t == "m.room.topic"));
    let invited = &first["rooms"][&invite];
    assert_eq!(invited["membership"], "invite");
    assert!(invited["stripped_state"].is_array() && invited.get("invite_state").is_none());

    let pos = first["pos"].as_str().unwrap();
    server.send_text(&bob_token, &room, "b2", "again").await;
    let next = server.post("/_matrix/client/v4/sync", Some(&alice_token), body(Some(pos))).await.ok();
    assert_eq!(bodies(&next["rooms"][&room]), vec!["again"]);
    server.stop().await;
}

/// Every response says how long weft took (`Server-Timing`), errors included: what the load
/// tool reads as server time, apart from the network.
#[tokio::test]
async fn responses_carry_server_timing() {
    let server = TestServer::start().await;
    let (_, token) = server.register("timed").await;
    let duration = |reply: &common::Reply| -> f64 {
        let value = reply.headers.get("server-timing").expect("server-timing header").to_str().unwrap().to_owned();
        let ms = value.strip_prefix("app;dur=").unwrap_or_else(|| panic!("unexpected server-timing {value:?}"));
        ms.parse().unwrap_or_else(|_| panic!("unexpected server-timing {value:?}"))
    };
    let sliding = server.post(PATH, Some(&token), json!({ "lists": {} })).await;
    assert!(sliding.status.is_success());
    assert!(duration(&sliding) >= 0.0);
    let missing = server.get("/_matrix/client/v3/no_such_endpoint", Some(&token)).await;
    missing.err(404, "M_UNRECOGNIZED");
    assert!(duration(&missing) >= 0.0);
    server.stop().await;
}
