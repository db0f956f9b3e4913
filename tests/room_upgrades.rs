//! Room upgrades over HTTP (`POST /rooms/{roomId}/upgrade`): the replacement room and what
//! it inherits, the tombstoned and restricted old room, moved aliases and directory entry,
//! the permission checks, and upgrades into and out of room version 12.

mod common;

use common::{enc, eventually, federating_server, Reply, TestServer};
use serde_json::{json, Value};

async fn upgrade(server: &TestServer, token: &str, room: &str, body: Value) -> Reply {
    server.post(&format!("/_matrix/client/v3/rooms/{}/upgrade", enc(room)), Some(token), body).await
}

/// The replacement room's id from a successful upgrade.
async fn upgraded(server: &TestServer, token: &str, room: &str, body: Value) -> String {
    let reply = upgrade(server, token, room, body).await.ok();
    reply["replacement_room"].as_str().unwrap_or_else(|| panic!("replacement_room in {reply}")).to_owned()
}

async fn state(server: &TestServer, token: &str, room: &str) -> Vec<Value> {
    server.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room)), Some(token)).await.ok().as_array().unwrap().clone()
}

/// The whole state event (type, state key) from a room's state, panicking if missing.
fn event<'a>(state: &'a [Value], kind: &str, key: &str) -> &'a Value {
    state.iter().find(|e| e["type"] == kind && e["state_key"] == key).unwrap_or_else(|| panic!("{kind}/{key} in state"))
}

fn content<'a>(state: &'a [Value], kind: &str, key: &str) -> &'a Value {
    &event(state, kind, key)["content"]
}

fn has(state: &[Value], kind: &str, key: &str) -> bool {
    state.iter().any(|e| e["type"] == kind && e["state_key"] == key)
}

async fn put_state(server: &TestServer, token: &str, room: &str, kind: &str, key: &str, body: Value) -> Reply {
    server.put(&format!("/_matrix/client/v3/rooms/{}/state/{kind}/{}", enc(room), enc(key)), Some(token), body).await
}

async fn join(server: &TestServer, token: &str, room: &str) -> Reply {
    server.post(&format!("/_matrix/client/v3/join/{}", enc(room)), Some(token), json!({})).await
}

/// A published v9 room with everything an upgrade carries over, upgraded to v10.
#[tokio::test]
async fn upgrade_replaces_the_room_and_carries_its_state() {
    let server = TestServer::start().await;
    let (alice, alice_token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let (carol, _) = server.register("carol").await;
    let old = server
        .create_room(
            &alice_token,
            json!({
                "room_version": "9",
                "preset": "public_chat",
                "visibility": "public",
                "room_alias_name": "lobby",
                "name": "The Lobby",
                "topic": "Say hi",
                "creation_content": { "m.federate": false },
                "initial_state": [
                    { "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "world_readable" } },
                    { "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } },
                    { "type": "m.room.avatar", "state_key": "", "content": { "url": "mxc://localhost/avatar" } },
                    { "type": "m.room.guest_access", "state_key": "", "content": { "guest_access": "forbidden" } }
                ],
                // Before v10 levels may be strings; the new room must get integers.
                "power_level_content_override": { "users": { alice.as_str(): 100, bob.as_str(): "42" }, "ban": "60" }
            }),
        )
        .await;
    join(&server, &bob_token, &old).await.ok();
    server.post(&format!("/_matrix/client/v3/rooms/{}/ban", enc(&old)), Some(&alice_token), json!({ "user_id": carol, "reason": "spam" })).await.ok();
    server.put("/_matrix/client/v3/directory/room/%23alt%3Alocalhost", Some(&alice_token), json!({ "room_id": old })).await.ok();
    put_state(&server, &alice_token, &old, "m.room.canonical_alias", "", json!({ "alias": "#lobby:localhost", "alt_aliases": ["#alt:localhost"] }))
        .await
        .ok();
    server
        .put(&format!("/_matrix/client/v3/user/{}/rooms/{}/tags/m.favourite", enc(&bob), enc(&old)), Some(&bob_token), json!({ "order": 0.5 }))
        .await
        .ok();
    server.put(&format!("/_matrix/client/v3/user/{}/account_data/m.direct", enc(&alice)), Some(&alice_token), json!({ bob.as_str(): [old] })).await.ok();
    // Bob's own rules for the room: a room rule and an override on its id.
    server.put(&format!("/_matrix/client/v3/pushrules/global/room/{}", enc(&old)), Some(&bob_token), json!({ "actions": ["notify"] })).await.ok();
    let lobby_calls = json!({
        "actions": ["notify", { "set_tweak": "sound", "value": "ring" }],
        "conditions": [
            { "kind": "event_match", "key": "room_id", "pattern": old },
            { "kind": "event_match", "key": "type", "pattern": "m.call.invite" }
        ]
    });
    server.put("/_matrix/client/v3/pushrules/global/override/lobby-calls", Some(&bob_token), lobby_calls).await.ok();
    server.send_text(&bob_token, &old, "before", "bob may speak before").await;

    let new = upgraded(&server, &alice_token, &old, json!({ "new_version": "10" })).await;
    assert_ne!(new, old);

    // The old room: tombstoned by alice, pointing at the new room.
    let old_state = state(&server, &alice_token, &old).await;
    let tombstone = event(&old_state, "m.room.tombstone", "");
    assert_eq!(tombstone["sender"], alice);
    assert_eq!(tombstone["content"], json!({ "body": "This room has been replaced", "replacement_room": new }));

    // The new room: version, predecessor (the tombstone, before v12), creator, federation.
    let new_state = state(&server, &alice_token, &new).await;
    let create = event(&new_state, "m.room.create", "");
    assert_eq!(create["sender"], alice);
    assert_eq!(create["content"]["room_version"], "10");
    assert_eq!(create["content"]["creator"], alice);
    assert_eq!(create["content"]["predecessor"], json!({ "room_id": old, "event_id": tombstone["event_id"] }));
    assert_eq!(create["content"]["m.federate"], false);
    assert!(create["content"].get("type").is_none(), "no room type to copy: {create}");

    // Copied state.
    assert_eq!(content(&new_state, "m.room.name", "")["name"], "The Lobby");
    assert_eq!(content(&new_state, "m.room.topic", "")["topic"], "Say hi");
    assert_eq!(content(&new_state, "m.room.join_rules", "")["join_rule"], "public");
    assert_eq!(content(&new_state, "m.room.history_visibility", "")["history_visibility"], "world_readable");
    assert_eq!(content(&new_state, "m.room.encryption", "")["algorithm"], "m.megolm.v1.aes-sha2");
    assert_eq!(content(&new_state, "m.room.avatar", "")["url"], "mxc://localhost/avatar");
    assert_eq!(content(&new_state, "m.room.guest_access", "")["guest_access"], "forbidden", "the old room's, not the preset's");
    let power = content(&new_state, "m.room.power_levels", "");
    assert_eq!(power["users"], json!({ alice.as_str(): 100, bob.as_str(): 42 }), "{power}");
    assert_eq!(power["ban"], 60);
    assert_eq!(power["events"]["m.room.tombstone"], 100);
    assert_eq!(content(&new_state, "m.room.member", &carol)["membership"], "ban");
    assert_eq!(content(&new_state, "m.room.member", &carol)["reason"], "spam");
    assert_eq!(event(&new_state, "m.room.member", &carol)["sender"], alice);
    // Nobody but the upgrader is moved in: members join themselves.
    let members = server.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&new)), Some(&alice_token)).await.ok();
    assert_eq!(members["joined"].as_object().unwrap().keys().collect::<Vec<_>>(), vec![&alice]);

    // The old room is shut for ordinary members (raised to 50), its levels otherwise kept.
    let old_power = content(&old_state, "m.room.power_levels", "");
    assert_eq!(old_power["events_default"], 50);
    assert_eq!(old_power["invite"], 50);
    assert_eq!(old_power["users"][&bob], 42);
    server
        .put(&format!("/_matrix/client/v3/rooms/{}/send/m.room.message/after", enc(&old)), Some(&bob_token), json!({ "msgtype": "m.text", "body": "no" }))
        .await
        .err(403, "M_FORBIDDEN");

    // Aliases point at the new room; the canonical alias moved with them.
    let resolved = server.get("/_matrix/client/v3/directory/room/%23lobby%3Alocalhost", None).await.ok();
    assert_eq!(resolved["room_id"], new);
    let resolved = server.get("/_matrix/client/v3/directory/room/%23alt%3Alocalhost", None).await.ok();
    assert_eq!(resolved["room_id"], new);
    assert_eq!(content(&new_state, "m.room.canonical_alias", ""), &json!({ "alias": "#lobby:localhost", "alt_aliases": ["#alt:localhost"] }));
    assert_eq!(content(&old_state, "m.room.canonical_alias", ""), &json!({}));

    // The directory lists the new room instead of the old one.
    let visibility = |room: String| {
        let server = &server;
        async move { server.get(&format!("/_matrix/client/v3/directory/list/room/{}", enc(&room)), None).await.ok()["visibility"].clone() }
    };
    assert_eq!(visibility(new.clone()).await, "public");
    assert_eq!(visibility(old.clone()).await, "private");
    let listed = server.get("/_matrix/client/v3/publicRooms", None).await.ok();
    let listed: Vec<&str> = listed["chunk"].as_array().unwrap().iter().filter_map(|r| r["room_id"].as_str()).collect();
    assert_eq!(listed, vec![new.as_str()]);

    // Tags and DMs follow the room.
    let tags = server.get(&format!("/_matrix/client/v3/user/{}/rooms/{}/tags", enc(&bob), enc(&new)), Some(&bob_token)).await.ok();
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.5);
    let room_rule = server.get(&format!("/_matrix/client/v3/pushrules/global/room/{}", enc(&new)), Some(&bob_token)).await.ok();
    assert_eq!(room_rule["actions"], json!(["notify"]));
    let copied = server.get(&format!("/_matrix/client/v3/pushrules/global/override/{}", enc(&new)), Some(&bob_token)).await.ok();
    assert_eq!(copied["conditions"][0]["pattern"], new.as_str(), "{copied}");
    assert_eq!(copied["conditions"][1]["pattern"], "m.call.invite");
    assert_eq!(copied["actions"][1]["value"], "ring");
    let original = server.get("/_matrix/client/v3/pushrules/global/override/lobby-calls", Some(&bob_token)).await.ok();
    assert_eq!(original["conditions"][0]["pattern"], old.as_str(), "the old room's rule stays");
    let direct = server.get(&format!("/_matrix/client/v3/user/{}/account_data/m.direct", enc(&alice)), Some(&alice_token)).await.ok();
    assert_eq!(direct[&bob], json!([old, new]));

    // A member of the old room follows the tombstone into the public new room.
    join(&server, &bob_token, &new).await.ok();
    let message = server.send_text(&bob_token, &new, "after", "hello new room").await;
    assert!(message.starts_with('$'));
    server.stop().await;
}

#[tokio::test]
async fn upgrade_is_refused_without_permission_or_support() {
    let server = TestServer::start().await;
    let (_, alice_token) = server.register("alice").await;
    let (_, bob_token) = server.register("bob").await;
    let (_, carol_token) = server.register("carol").await;
    let room = server.create_room(&alice_token, json!({ "room_version": "11", "preset": "public_chat" })).await;
    join(&server, &bob_token, &room).await.ok();

    upgrade(&server, &alice_token, &room, json!({ "new_version": "99" })).await.err(400, "M_UNSUPPORTED_ROOM_VERSION");
    // Not even a version id: still an unsupported version (Synapse's answer), also for createRoom.
    upgrade(&server, &alice_token, &room, json!({ "new_version": "my_bad_version" })).await.err(400, "M_UNSUPPORTED_ROOM_VERSION");
    server
        .post("/_matrix/client/v3/createRoom", Some(&alice_token), json!({ "room_version": "Not A Version!" }))
        .await
        .err(400, "M_UNSUPPORTED_ROOM_VERSION");
    // Bob is joined but has level 0; m.room.tombstone needs 100.
    upgrade(&server, &bob_token, &room, json!({ "new_version": "12" })).await.err(403, "M_FORBIDDEN");
    // Carol is not in the room.
    upgrade(&server, &carol_token, &room, json!({ "new_version": "12" })).await.err(403, "M_FORBIDDEN");
    upgrade(&server, &alice_token, "!unknown:localhost", json!({ "new_version": "12" })).await.err(404, "M_NOT_FOUND");
    upgrade(&server, &alice_token, &room, json!({})).await.err(400, "M_MISSING_PARAM");

    // None of that touched the room.
    server
        .get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.tombstone", enc(&room)), Some(&alice_token))
        .await
        .err(404, "M_NOT_FOUND");
    for token in [&alice_token, &bob_token] {
        let joined = server.get("/_matrix/client/v3/joined_rooms", Some(token)).await.ok();
        assert_eq!(joined["joined_rooms"], json!([room]), "no replacement room was made");
    }
    let joined = server.get("/_matrix/client/v3/joined_rooms", Some(&carol_token)).await.ok();
    assert_eq!(joined["joined_rooms"], json!([]));

    // With the level, bob may upgrade.
    put_state(&server, &alice_token, &room, "m.room.power_levels", "", {
        let mut power = server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels", enc(&room)), Some(&alice_token)).await.ok();
        power["events"]["m.room.tombstone"] = json!(0);
        power
    })
    .await
    .ok();
    let new = upgraded(&server, &bob_token, &room, json!({ "new_version": "12" })).await;
    let create = server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.create", enc(&new)), Some(&bob_token)).await.ok();
    assert_eq!(create["room_version"], "12");
    server.stop().await;
}

/// Into v12: the upgrader and the additional creators are creators, with no power levels entry.
#[tokio::test]
async fn upgrade_to_v12_makes_creators() {
    let server = TestServer::start().await;
    let (alice, alice_token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let (dave, _) = server.register("dave").await;
    let old = server
        .create_room(
            &alice_token,
            json!({
                "room_version": "11",
                "preset": "public_chat",
                "power_level_content_override": { "users": { alice.as_str(): 100, bob.as_str(): 50, dave.as_str(): 75 } }
            }),
        )
        .await;
    let new = upgraded(&server, &alice_token, &old, json!({ "new_version": "12", "additional_creators": [bob] })).await;
    assert!(!new.contains(':'), "a v12 room id is the create event's hash: {new}");

    let new_state = state(&server, &alice_token, &new).await;
    let create = event(&new_state, "m.room.create", "");
    assert_eq!(create["sender"], alice);
    assert_eq!(create["content"]["room_version"], "12");
    assert_eq!(create["content"]["additional_creators"], json!([bob]));
    // The new room's id is its create event's, so the tombstone comes after it: no event id.
    assert_eq!(create["content"]["predecessor"], json!({ "room_id": old }));
    assert!(create["content"].get("creator").is_none());
    assert_eq!(content(&new_state, "m.room.power_levels", "")["users"], json!({ dave.as_str(): 75 }), "creators have no entry");

    let old_state = state(&server, &alice_token, &old).await;
    assert_eq!(content(&old_state, "m.room.tombstone", "")["replacement_room"], new);

    // Bob, an additional creator, outranks everyone: he may demote dave (75 > his old 50).
    join(&server, &bob_token, &new).await.ok();
    let mut power = content(&new_state, "m.room.power_levels", "").clone();
    power["users"][&dave] = json!(10);
    put_state(&server, &bob_token, &new, "m.room.power_levels", "", power).await.ok();
    server.stop().await;
}

/// Out of v12: creators had no power levels entry, and get the top level in the new room.
#[tokio::test]
async fn upgrade_from_v12_gives_creators_levels() {
    let server = TestServer::start().await;
    let (alice, alice_token) = server.register("alice").await;
    let (bob, _) = server.register("bob").await;
    let (dave, dave_token) = server.register("dave").await;
    let old = server
        .create_room(
            &alice_token,
            json!({
                "room_version": "12",
                "preset": "public_chat",
                "creation_content": { "additional_creators": [bob] },
                "power_level_content_override": { "users": { dave.as_str(): 50 } }
            }),
        )
        .await;
    join(&server, &dave_token, &old).await.ok();
    let new = upgraded(&server, &alice_token, &old, json!({ "new_version": "11", "additional_creators": [dave] })).await;
    assert!(new.ends_with(":localhost"), "{new}");

    let old_state = state(&server, &alice_token, &old).await;
    let tombstone = event(&old_state, "m.room.tombstone", "");
    assert_eq!(tombstone["content"]["replacement_room"], new);
    let new_state = state(&server, &alice_token, &new).await;
    let create = content(&new_state, "m.room.create", "");
    assert_eq!(create["room_version"], "11");
    assert_eq!(create["predecessor"], json!({ "room_id": old, "event_id": tombstone["event_id"] }));
    assert!(create.get("additional_creators").is_none(), "v11 has no additional creators: {create}");
    let power = content(&new_state, "m.room.power_levels", "");
    assert_eq!(power["users"], json!({ alice.as_str(): 100, bob.as_str(): 100, dave.as_str(): 50 }), "{power}");

    // Alice holds the power she needs in the new room; the old room is shut for dave.
    put_state(&server, &alice_token, &new, "m.room.name", "", json!({ "name": "renamed" })).await.ok();
    assert_eq!(content(&old_state, "m.room.power_levels", "")["events_default"], 50);
    join(&server, &dave_token, &new).await.ok();
    server.stop().await;
}

/// The old room's default level is above 50: the old room is shut one above it.
#[tokio::test]
async fn old_room_is_shut_above_the_default_level() {
    let server = TestServer::start().await;
    let (alice, alice_token) = server.register("alice").await;
    let (_, bob_token) = server.register("bob").await;
    let old = server
        .create_room(
            &alice_token,
            json!({ "room_version": "11", "preset": "public_chat", "power_level_content_override": { "users_default": 60, "users": { alice.as_str(): 100 } } }),
        )
        .await;
    join(&server, &bob_token, &old).await.ok();
    server.send_text(&bob_token, &old, "before", "at 60 bob may speak").await;
    upgraded(&server, &alice_token, &old, json!({ "new_version": "12" })).await;
    let power = server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels", enc(&old)), Some(&alice_token)).await.ok();
    assert_eq!(power["events_default"], 61);
    assert_eq!(power["invite"], 61);
    server
        .put(&format!("/_matrix/client/v3/rooms/{}/send/m.room.message/after", enc(&old)), Some(&bob_token), json!({ "msgtype": "m.text", "body": "no" }))
        .await
        .err(403, "M_FORBIDDEN");
    server.stop().await;
}

/// As Synapse: members of an invite-only room are not invited to its replacement.
#[tokio::test]
async fn invite_only_room_members_need_an_invite() {
    let server = TestServer::start().await;
    let (_, alice_token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let old = server.create_room(&alice_token, json!({ "room_version": "11", "preset": "private_chat", "invite": [bob] })).await;
    join(&server, &bob_token, &old).await.ok();
    let new = upgraded(&server, &alice_token, &old, json!({ "new_version": "12" })).await;
    let rules = server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.join_rules", enc(&new)), Some(&alice_token)).await.ok();
    assert_eq!(rules["join_rule"], "invite");
    join(&server, &bob_token, &new).await.err(403, "M_FORBIDDEN");
    server.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&new)), Some(&alice_token), json!({ "user_id": bob })).await.ok();
    join(&server, &bob_token, &new).await.ok();
    server.stop().await;
}

/// A space keeps its type and its children (not the removed ones).
#[tokio::test]
async fn space_upgrade_keeps_children() {
    let server = TestServer::start().await;
    let (_, alice_token) = server.register("alice").await;
    let child = server.create_room(&alice_token, json!({})).await;
    let space = server
        .create_room(
            &alice_token,
            json!({
                "room_version": "11",
                "creation_content": { "type": "m.space" },
                "initial_state": [
                    { "type": "m.space.child", "state_key": child, "content": { "via": ["localhost"], "suggested": true } },
                    { "type": "m.space.child", "state_key": "!gone:localhost", "content": {} }
                ]
            }),
        )
        .await;
    let new = upgraded(&server, &alice_token, &space, json!({ "new_version": "12" })).await;
    let new_state = state(&server, &alice_token, &new).await;
    assert_eq!(content(&new_state, "m.room.create", "")["type"], "m.space");
    assert_eq!(content(&new_state, "m.space.child", &child), &json!({ "via": ["localhost"], "suggested": true }));
    assert!(!has(&new_state, "m.space.child", "!gone:localhost"), "removed children stay behind");
    server.stop().await;
}

#[tokio::test]
async fn other_servers_move_their_aliases_and_listing_when_they_join_the_new_room() {
    let hs1 = federating_server().await;
    let hs2 = federating_server().await;
    let (_alice, alice_token) = hs1.register("alice").await;
    let (bob, bob_token) = hs2.register("bob").await;
    let old = hs1.create_room(&alice_token, json!({ "preset": "public_chat", "room_version": "10" })).await;
    let remote_join = |room: String| {
        let path = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(&hs1.server_name()));
        let (hs2, token) = (&hs2, bob_token.clone());
        async move { hs2.post(&path, Some(&token), json!({})).await }
    };
    remote_join(old.clone()).await.ok();
    // hs2's own alias for the room.
    let alias = format!("#upgraded:{}", hs2.server_name());
    hs2.put(&format!("/_matrix/client/v3/directory/room/{}", enc(&alias)), Some(&bob_token), json!({ "room_id": old })).await.ok();
    let new = upgraded(&hs1, &alice_token, &old, json!({ "new_version": "11" })).await;
    let resolve = |server: &TestServer| {
        let path = format!("/_matrix/client/v3/directory/room/{}", enc(&alias));
        let http = server.http.clone();
        let url = format!("{}{path}", server.base);
        async move { http.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(resolve(&hs2).await["room_id"], old.as_str(), "nothing moves before hs2 joins the new room");
    eventually(std::time::Duration::from_secs(10), || async { remote_join(new.clone()).await.status.is_success() }).await;
    assert_eq!(resolve(&hs2).await["room_id"], new.as_str());
    let _ = bob;
}
