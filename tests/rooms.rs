//! Rooms over HTTP: creation in every room version, messaging, history, state, membership,
//! and the authorization and visibility rules.

mod common;

use common::{bodies, enc, TestServer};
use serde_json::{json, Value};

#[tokio::test]
async fn every_room_version_creates_and_messages() {
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    for version in 1..=12 {
        let room = server.create_room(&token, json!({ "room_version": version.to_string(), "name": format!("v{version}") })).await;
        if version >= 12 {
            assert!(!room.contains(':'), "v12 room ids have no server part: {room}");
        } else {
            assert!(room.ends_with(":localhost"), "{room}");
        }
        let event_id = server.send_text(&token, &room, "t1", &format!("hello v{version}")).await;
        if version <= 2 {
            assert!(event_id.ends_with(":localhost"), "{event_id}");
        } else {
            assert!(!event_id.contains(':'), "{event_id}");
        }
        let create = server
            .get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.create", enc(&room)), Some(&token))
            .await
            .ok();
        assert_eq!(create["room_version"], version.to_string());
        let page = server.messages(&token, &room, "dir=b&limit=1").await;
        assert_eq!(bodies(&page), vec![format!("hello v{version}")]);
    }
    server
        .post("/_matrix/client/v3/createRoom", Some(&token), json!({ "room_version": "99" }))
        .await
        .err(400, "M_UNSUPPORTED_ROOM_VERSION");
    server.stop().await;
}

#[tokio::test]
async fn create_room_options() {
    let server = TestServer::start().await;
    let (alice, token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let room = server
        .create_room(
            &token,
            json!({
                "preset": "public_chat",
                "visibility": "public",
                "room_alias_name": "lobby",
                "name": "The Lobby",
                "topic": "Say hi",
                "invite": [bob],
                "initial_state": [{ "type": "m.room.guest_access", "state_key": "", "content": { "guest_access": "can_join" } }],
                "power_level_content_override": { "events_default": 10 },
                "creation_content": { "m.federate": false }
            }),
        )
        .await;
    let state: Vec<Value> = server
        .get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)), Some(&token))
        .await
        .ok()
        .as_array()
        .unwrap()
        .clone();
    let get = |kind: &str, key: &str| {
        state
            .iter()
            .find(|e| e["type"] == kind && e["state_key"] == key)
            .unwrap_or_else(|| panic!("{kind} in state"))["content"]
            .clone()
    };
    assert_eq!(get("m.room.name", "")["name"], "The Lobby");
    assert_eq!(get("m.room.topic", "")["topic"], "Say hi");
    assert_eq!(get("m.room.join_rules", "")["join_rule"], "public");
    assert_eq!(get("m.room.guest_access", "")["guest_access"], "can_join");
    assert_eq!(get("m.room.canonical_alias", "")["alias"], "#lobby:localhost");
    assert_eq!(get("m.room.power_levels", "")["events_default"], 10);
    assert_eq!(get("m.room.create", "")["m.federate"], false);
    assert_eq!(get("m.room.member", &alice)["membership"], "join");
    assert_eq!(get("m.room.member", &bob)["membership"], "invite");

    // The alias resolves, and joining by alias works.
    let joined = server.post("/_matrix/client/v3/join/%23lobby%3Alocalhost", Some(&bob_token), json!({})).await.ok();
    assert_eq!(joined["room_id"], room);
    // Same alias again is taken.
    server
        .post("/_matrix/client/v3/createRoom", Some(&token), json!({ "room_alias_name": "lobby" }))
        .await
        .err(400, "M_ROOM_IN_USE");

    // The presets' state, as Synapse creates it: guest access is an event only where guests
    // may join (private chats); a public chat has none (its absence forbids guests).
    let state_types = |room: String| {
        let server = &server;
        let token = token.clone();
        async move {
            let state = server.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)), Some(&token)).await.ok();
            state.as_array().unwrap().iter().map(|e| (e["type"].as_str().unwrap().to_owned(), e["content"].clone())).collect::<Vec<_>>()
        }
    };
    let public = state_types(server.create_room(&token, json!({ "preset": "public_chat" })).await).await;
    assert!(!public.iter().any(|(kind, _)| kind == "m.room.guest_access"), "{public:?}");
    let private = state_types(server.create_room(&token, json!({ "preset": "private_chat" })).await).await;
    assert!(private.iter().any(|(kind, content)| kind == "m.room.guest_access" && content["guest_access"] == "can_join"), "{private:?}");
    server.stop().await;
}

#[tokio::test]
async fn messages_paginate_both_ways() {
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    let room = server.create_room(&token, json!({})).await;
    for i in 0..25 {
        server.send_text(&token, &room, &format!("txn{i}"), &format!("m{i}")).await;
    }
    // Backwards from the end in pages of 10.
    let first = server.messages(&token, &room, "dir=b&limit=10").await;
    assert_eq!(bodies(&first), (15..25).rev().map(|i| format!("m{i}")).collect::<Vec<_>>());
    let end = first["end"].as_str().unwrap();
    let second = server.messages(&token, &room, &format!("dir=b&limit=10&from={end}")).await;
    assert_eq!(bodies(&second), (5..15).rev().map(|i| format!("m{i}")).collect::<Vec<_>>());
    let end2 = second["end"].as_str().unwrap();
    let third = server.messages(&token, &room, &format!("dir=b&limit=50&from={end2}")).await;
    assert_eq!(bodies(&third), (0..5).rev().map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert!(third.get("end").is_none(), "no more history: {third}");

    // Forwards from the beginning.
    let forward = server.messages(&token, &room, "dir=f&limit=100").await;
    assert_eq!(bodies(&forward), (0..25).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert_eq!(forward["chunk"][0]["type"], "m.room.create");
    // Forwards from a backwards token: what comes after that point.
    let after = server.messages(&token, &room, &format!("dir=f&limit=3&from={end}")).await;
    assert_eq!(bodies(&after), vec!["m16", "m17", "m18"]);

    // `to` bounds a page.
    let bounded = server.messages(&token, &room, &format!("dir=b&limit=100&to={end}")).await;
    assert_eq!(bodies(&bounded).len(), 9, "{bounded}");

    // Filters.
    let only_members = server
        .messages(&token, &room, &format!("dir=f&limit=100&filter={}", enc(r#"{"types":["m.room.member"]}"#)))
        .await;
    assert!(only_members["chunk"].as_array().unwrap().iter().all(|e| e["type"] == "m.room.member"));
    let no_messages = server
        .messages(&token, &room, &format!("dir=b&limit=5&filter={}", enc(r#"{"not_types":["m.room.message"]}"#)))
        .await;
    assert!(bodies(&no_messages).is_empty());
    let lazy = server
        .messages(&token, &room, &format!("dir=b&limit=5&filter={}", enc(r#"{"lazy_load_members":true}"#)))
        .await;
    assert_eq!(lazy["state"][0]["type"], "m.room.member");

    server.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&from=bogus", enc(&room)), Some(&token)).await.err(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn send_is_idempotent_per_transaction_and_device() {
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    let room = server.create_room(&token, json!({})).await;
    let first = server.send_text(&token, &room, "same", "once").await;
    let again = server.send_text(&token, &room, "same", "once").await;
    assert_eq!(first, again);
    let page = server.messages(&token, &room, "dir=b&limit=10").await;
    assert_eq!(bodies(&page), vec!["once"]);
    // The sending device sees its transaction id.
    assert_eq!(page["chunk"][0]["unsigned"]["transaction_id"], "same");
    // Another device of the same user: a different transaction namespace.
    let other = server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "user": "alice", "password": "password" }))
        .await
        .ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let from_other = server.send_text(&other, &room, "same", "twice").await;
    assert_ne!(first, from_other);
    let seen_by_other = server.messages(&other, &room, "dir=b&limit=10").await;
    assert!(seen_by_other["chunk"][1]["unsigned"].get("transaction_id").is_none());
    server.stop().await;
}

#[tokio::test]
async fn state_put_and_get() {
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    let room = server.create_room(&token, json!({})).await;
    let base = format!("/_matrix/client/v3/rooms/{}", enc(&room));
    // Empty state key with and without trailing slash.
    server.put(&format!("{base}/state/m.room.name"), Some(&token), json!({ "name": "One" })).await.ok();
    assert_eq!(server.get(&format!("{base}/state/m.room.name/"), Some(&token)).await.ok()["name"], "One");
    server.put(&format!("{base}/state/m.room.name/"), Some(&token), json!({ "name": "Two" })).await.ok();
    assert_eq!(server.get(&format!("{base}/state/m.room.name"), Some(&token)).await.ok()["name"], "Two");
    // Custom state with a key, and the event format.
    server.put(&format!("{base}/state/org.example.thing/k1"), Some(&token), json!({ "v": 1 })).await.ok();
    let event = server.get(&format!("{base}/state/org.example.thing/k1?format=event"), Some(&token)).await.ok();
    assert_eq!(event["content"]["v"], 1);
    assert_eq!(event["state_key"], "k1");
    server.get(&format!("{base}/state/org.example.thing/missing"), Some(&token)).await.err(404, "M_NOT_FOUND");
    server.put(&format!("{base}/state/m.room.name"), Some(&token), json!(["not an object"])).await.err(400, "M_BAD_JSON");
    // Canonical alias must point at an alias of this room.
    server
        .put(&format!("{base}/state/m.room.canonical_alias"), Some(&token), json!({ "alias": "#unknown:localhost" }))
        .await
        .err(400, "M_BAD_ALIAS");

    // A non-member cannot read or write state.
    let (_, eve) = server.register("eve").await;
    server.get(&format!("{base}/state/m.room.name"), Some(&eve)).await.err(403, "M_FORBIDDEN");
    server.put(&format!("{base}/state/m.room.name"), Some(&eve), json!({ "name": "pwned" })).await.err(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn membership_lifecycle_and_power() {
    let server = TestServer::start().await;
    let (_alice, alice_token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let (carol, carol_token) = server.register("carol").await;
    let room = server.create_room(&alice_token, json!({ "preset": "private_chat" })).await;
    let base = format!("/_matrix/client/v3/rooms/{}", enc(&room));

    // Invite-only: bob cannot join uninvited.
    server.post(&format!("{base}/join"), Some(&bob_token), json!({})).await.err(403, "M_FORBIDDEN");
    // Non-members cannot invite.
    server.post(&format!("{base}/invite"), Some(&carol_token), json!({ "user_id": bob })).await.err(403, "M_FORBIDDEN");
    server.post(&format!("{base}/invite"), Some(&alice_token), json!({ "user_id": bob })).await.ok();
    server.post(&format!("{base}/invite"), Some(&alice_token), json!({ "user_id": "@ghost:localhost" })).await.err(404, "M_NOT_FOUND");
    // An empty body is accepted where every field is optional (matrix-nio sends none).
    server.raw(reqwest::Method::POST, &format!("{base}/join"), Some(&bob_token), None).await.ok();
    let joined = server.get("/_matrix/client/v3/joined_rooms", Some(&bob_token)).await.ok();
    assert_eq!(joined["joined_rooms"], json!([room]));
    let members = server.get(&format!("{base}/joined_members"), Some(&bob_token)).await.ok();
    assert_eq!(members["joined"].as_object().unwrap().len(), 2);

    // Bob (power 0) cannot kick or ban, nor change the name (state_default 50).
    server.post(&format!("{base}/invite"), Some(&alice_token), json!({ "user_id": carol })).await.ok();
    server.post(&format!("{base}/join"), Some(&carol_token), json!({})).await.ok();
    server.post(&format!("{base}/kick"), Some(&bob_token), json!({ "user_id": carol })).await.err(403, "M_FORBIDDEN");
    server.put(&format!("{base}/state/m.room.name"), Some(&bob_token), json!({ "name": "mine" })).await.err(403, "M_FORBIDDEN");

    // Alice kicks carol; carol can no longer send.
    server.post(&format!("{base}/kick"), Some(&alice_token), json!({ "user_id": carol, "reason": "bye" })).await.ok();
    let send = server
        .put(&format!("{base}/send/m.room.message/x1"), Some(&carol_token), json!({ "msgtype": "m.text", "body": "hi" }))
        .await;
    send.err(403, "M_FORBIDDEN");

    // Ban and unban.
    server.post(&format!("{base}/ban"), Some(&alice_token), json!({ "user_id": carol })).await.ok();
    server.post(&format!("{base}/invite"), Some(&alice_token), json!({ "user_id": carol })).await.err(403, "M_FORBIDDEN");
    server.post(&format!("{base}/unban"), Some(&alice_token), json!({ "user_id": carol })).await.ok();
    server.post(&format!("{base}/unban"), Some(&alice_token), json!({ "user_id": carol })).await.err(403, "M_FORBIDDEN");

    // Members filter.
    let left = server.get(&format!("{base}/members?membership=leave"), Some(&alice_token)).await.ok();
    assert_eq!(left["chunk"].as_array().unwrap().len(), 1);
    let not_leave = server.get(&format!("{base}/members?not_membership=leave"), Some(&alice_token)).await.ok();
    assert_eq!(not_leave["chunk"].as_array().unwrap().len(), 2);

    // Bob leaves, then forgets; forgetting while joined is refused.
    server.post(&format!("{base}/forget"), Some(&bob_token), json!({})).await.err(400, "M_UNKNOWN");
    server.post(&format!("{base}/leave"), Some(&bob_token), json!({})).await.ok();
    server.post(&format!("{base}/forget"), Some(&bob_token), json!({})).await.ok();
    let joined = server.get("/_matrix/client/v3/joined_rooms", Some(&bob_token)).await.ok();
    assert_eq!(joined["joined_rooms"], json!([]));

    // Knocking needs a knock join rule (v7+).
    let knock_room = server
        .create_room(&alice_token, json!({ "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }] }))
        .await;
    let knock = server.post(&format!("/_matrix/client/v3/knock/{}", enc(&knock_room)), Some(&bob_token), json!({ "reason": "let me in" })).await.ok();
    assert_eq!(knock["room_id"], knock_room);
    server.post(&format!("/_matrix/client/v3/knock/{}", enc(&room)), Some(&carol_token), json!({})).await.err(403, "M_FORBIDDEN");
    server.post("/_matrix/client/v3/join/!unknown:localhost", Some(&bob_token), json!({})).await.err(404, "M_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn history_visibility_is_enforced() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } }] }),
        )
        .await;
    let secret = server.send_text(&alice, &room, "s1", "before bob").await;
    let base = format!("/_matrix/client/v3/rooms/{}", enc(&room));
    // Not a member: no history, no events.
    server.get(&format!("{base}/messages?dir=b"), Some(&bob)).await.err(403, "M_FORBIDDEN");
    server.post(&format!("{base}/join"), Some(&bob), json!({})).await.ok();
    server.send_text(&alice, &room, "s2", "after bob").await;
    let page = server.messages(&bob, &room, "dir=b&limit=50").await;
    assert_eq!(bodies(&page), vec!["after bob"]);
    server.get(&format!("{base}/event/{}", enc(&secret)), Some(&bob)).await.err(404, "M_NOT_FOUND");

    // Bob leaves: he keeps what he saw but not what came after.
    server.post(&format!("{base}/leave"), Some(&bob), json!({})).await.ok();
    server.send_text(&alice, &room, "s3", "after bob left").await;
    let page = server.messages(&bob, &room, "dir=b&limit=50").await;
    assert_eq!(bodies(&page), vec!["after bob"]);

    // shared: a new member sees history from before joining.
    let shared = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.send_text(&alice, &shared, "t1", "old news").await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&shared)), Some(&bob), json!({})).await.ok();
    assert_eq!(bodies(&server.messages(&bob, &shared, "dir=b&limit=50").await), vec!["old news"]);

    // world_readable: readable without joining.
    let open = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "world_readable" } }] }),
        )
        .await;
    let id = server.send_text(&alice, &open, "w1", "for everyone").await;
    assert_eq!(bodies(&server.messages(&bob, &open, "dir=b&limit=50").await), vec!["for everyone"]);
    let event = server.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&open), enc(&id)), Some(&bob)).await.ok();
    assert_eq!(event["content"]["body"], "for everyone");
    server.stop().await;
}

#[tokio::test]
async fn oversized_events_are_refused() {
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    let room = server.create_room(&token, json!({})).await;
    let reply = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/big", enc(&room)),
            Some(&token),
            json!({ "msgtype": "m.text", "body": "x".repeat(70_000) }),
        )
        .await;
    reply.err(413, "M_TOO_LARGE");
    // The room is intact and usable.
    server.send_text(&token, &room, "small", "still fine").await;
    server.stop().await;
}

#[tokio::test]
async fn restricted_rooms_admit_members_of_allowed_rooms() {
    let server = TestServer::start().await;
    let (alice, alice_token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let space = server.create_room(&alice_token, json!({ "preset": "private_chat" })).await;
    let room = server
        .create_room(
            &alice_token,
            json!({ "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": {
                "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] } }] }),
        )
        .await;
    let join = format!("/_matrix/client/v3/rooms/{}/join", enc(&room));
    server.post(&join, Some(&bob_token), json!({})).await.err(403, "M_FORBIDDEN");
    server.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&space)), Some(&alice_token), json!({ "user_id": bob })).await.ok();
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&space)), Some(&bob_token), json!({})).await.ok();
    server.post(&join, Some(&bob_token), json!({})).await.ok();
    let member = server
        .get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob)), Some(&bob_token))
        .await
        .ok();
    assert_eq!(member["membership"], "join");
    assert_eq!(member["join_authorised_via_users_server"], alice);
    server.stop().await;
}

#[tokio::test]
async fn members_at_a_point_in_history() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob_token) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.send_text(&alice, &room, "t1", "before bob").await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob_token), json!({})).await.ok();

    let now = server.get(&format!("/_matrix/client/v3/rooms/{}/members", enc(&room)), Some(&alice)).await.ok();
    assert_eq!(now["chunk"].as_array().unwrap().len(), 2);
    // A token from the first page: the state after the newest event at that time.
    let first_page = server.messages(&alice, &room, "dir=f&limit=3").await;
    let then = first_page["end"].as_str().unwrap();
    let past = server.get(&format!("/_matrix/client/v3/rooms/{}/members?at={then}", enc(&room)), Some(&alice)).await.ok();
    assert_eq!(past["chunk"].as_array().unwrap().len(), 1, "only alice then: {past}");
    // Bob was not in the room then: he may not look.
    server.get(&format!("/_matrix/client/v3/rooms/{}/members?at={then}", enc(&room)), Some(&bob_token)).await.err(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn default_room_version_is_configurable() {
    let server = TestServer::start_with(|c| c.default_room_version = ruma::RoomVersionId::V10).await;
    let (_, token) = server.register("alice").await;
    let room = server.create_room(&token, json!({})).await;
    let create = server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.create", enc(&room)), Some(&token)).await.ok();
    assert_eq!(create["room_version"], "10");
    let caps = server.get("/_matrix/client/v3/capabilities", Some(&token)).await.ok();
    assert_eq!(caps["capabilities"]["m.room_versions"]["default"], "10");
    server.stop().await;
}

#[tokio::test]
async fn missing_fields_are_reported() {
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" } }))
        .await
        .err(400, "M_MISSING_PARAM");
    let room = server.create_room(&token, json!({})).await;
    server
        .post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), Some(&token), json!({}))
        .await
        .err(400, "M_BAD_JSON");
    server.stop().await;
}

/// Messages sent to a room at the same moment share transactions (rooms/batch.rs): each is
/// stored once, retries of a transaction id get the first event, a sender who may not send
/// gets their error without failing the others, and the room's history stays one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_to_one_room() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let (_, mallory) = server.register("mallory").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&bob), json!({})).await.ok();

    let mut tasks = Vec::new();
    for n in 0..40 {
        let token = if n % 2 == 0 { alice.clone() } else { bob.clone() };
        // Every tenth send is a retry of the one before it (same txn id, same user).
        let txn = if n % 10 == 9 { n - 2 } else { n };
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/c{txn}", enc(&room));
        let base = server.base.clone();
        tasks.push(tokio::spawn(async move {
            let reply = reqwest::Client::new()
                .put(format!("{base}{path}"))
                .bearer_auth(&token)
                .json(&json!({ "msgtype": "m.text", "body": format!("c{txn}") }))
                .send()
                .await
                .unwrap();
            (txn, reply.status().as_u16(), reply.json::<Value>().await.unwrap())
        }));
    }
    let outsider = server
        .put(&format!("/_matrix/client/v3/rooms/{}/send/m.room.message/x", enc(&room)), Some(&mallory), json!({ "msgtype": "m.text", "body": "no" }))
        .await;
    outsider.err(403, "M_FORBIDDEN");
    let mut by_txn: std::collections::HashMap<i32, String> = std::collections::HashMap::new();
    for task in tasks {
        let (txn, status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let id = body["event_id"].as_str().unwrap().to_owned();
        if let Some(first) = by_txn.get(&txn) {
            assert_eq!(first, &id, "a retried txn id answers with the first event");
        }
        by_txn.insert(txn, id);
    }
    assert_eq!(by_txn.len(), 36);

    let history = server.messages(&alice, &room, "dir=b&limit=100").await;
    let sent: Vec<&Value> = history["chunk"].as_array().unwrap().iter().filter(|e| e["type"] == "m.room.message").collect();
    assert_eq!(sent.len(), 36, "each message stored once");
    // One line of history: a single forward extremity, and every message has exactly one
    // prev event, which no other message shares.
    let db = server.database().await;
    let extremities: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM room_forward_extremities WHERE room_id = $1").bind(&room).fetch_one(&db).await.unwrap();
    assert_eq!(extremities, 1);
    let forks: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT prev_event_id FROM event_edges e JOIN events v ON v.event_id = e.event_id \
         WHERE v.room_id = $1 GROUP BY prev_event_id HAVING COUNT(*) > 1) f",
    )
    .bind(&room)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(forks, 0, "no two events share a prev event");
    db.close().await;
    let ids: Vec<&str> = sent.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
    server.stop().await;
}

#[tokio::test]
async fn joining_again_unchanged_makes_no_new_event() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let join = |body: serde_json::Value| {
        let (server, bob, room) = (&server, bob.clone(), room.clone());
        async move { server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), body).await.ok() }
    };
    join(json!({})).await;
    let member_event = || async {
        let state = server.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)), Some(&alice)).await.ok();
        state.as_array().unwrap().iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == bob_id.as_str()).unwrap()["event_id"].clone()
    };
    let first = member_event().await;
    join(json!({})).await;
    assert_eq!(member_event().await, first, "the same join, no new event");
    // A join that changes something (a reason) is a new event.
    join(json!({ "reason": "back again" })).await;
    assert_ne!(member_event().await, first);
    server.stop().await;
}

/// Corrupt stored data is the server's fault: a 500 `M_UNKNOWN` whose message is only a
/// reference to the log, never the database's or parser's text.
#[tokio::test]
async fn corrupt_stored_events_are_a_500_that_leaks_nothing() {
    let mut server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    let room = server.create_room(&token, json!({})).await;
    let event_id = server.send_text(&token, &room, "t1", "soon corrupt").await;
    server.stop_in_place().await;
    let db = server.database().await;
    sqlx::query("UPDATE events SET json = '{not json' WHERE event_id = $1").bind(&event_id).execute(&db).await.unwrap();
    db.close().await;
    server.start_again().await;
    let reply = server.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&event_id)), Some(&token)).await;
    reply.err(500, "M_UNKNOWN");
    let message = reply.body["error"].as_str().unwrap();
    assert!(message.starts_with("Internal server error (reference "), "{message}");
    assert!(!message.contains("json") && !message.contains(&event_id), "{message}");
    server.stop().await;
}

/// Keys of a /join body beyond the spec's are kept in the member event (as Synapse keeps
/// them); those the server sets stay the server's.
#[tokio::test]
async fn join_keeps_the_clients_own_content() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat", "room_alias_name": "open" })).await;
    server
        .post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({ "foo": "bar", "membership": "leave", "reason": "hello" }))
        .await
        .ok();
    let member = server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob_id)), Some(&bob)).await.ok();
    assert_eq!(member["foo"], "bar", "{member}");
    assert_eq!(member["membership"], "join");
    assert_eq!(member["reason"], "hello");
    assert_eq!(member["displayname"], "bob");

    // By alias too.
    server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&bob), json!({})).await.ok();
    server.post("/_matrix/client/v3/join/%23open%3Alocalhost", Some(&bob), json!({ "colour": "blue" })).await.ok();
    let member = server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob_id)), Some(&bob)).await.ok();
    assert_eq!(member["colour"], "blue", "{member}");
    assert!(member.get("foo").is_none(), "a new join's content is its own");
    server.stop().await;
}

/// A history_visibility change is visible when the visibility before or after it allows
/// (the spec's rule): a member joining after a room went to `joined` sees the messages from
/// when it was `shared`, then the change, but not what was said in between.
#[tokio::test]
async fn a_history_visibility_change_is_seen_under_the_old_visibility() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.send_text(&alice, &room, "s", "shared").await;
    server
        .put(&format!("/_matrix/client/v3/rooms/{}/state/m.room.history_visibility", enc(&room)), Some(&alice), json!({ "history_visibility": "joined" }))
        .await
        .ok();
    server.send_text(&alice, &room, "p", "pre join").await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    server.send_text(&alice, &room, "q", "post join").await;
    let mut page = server.messages(&bob, &room, "dir=b&limit=4").await;
    page["chunk"].as_array_mut().unwrap().reverse();
    let seen: Vec<String> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].as_str().map(str::to_owned).unwrap_or_else(|| e["type"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(seen, vec!["shared", "m.room.history_visibility", "m.room.member", "post join"]);
    server.stop().await;
}
