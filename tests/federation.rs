//! Federation between two weft servers on loopback: keys and the notary, X-Matrix request
//! signing and verification, profile and directory queries.

mod common;

use common::{enc, eventually, federating_server};
use std::time::Duration;

use serde_json::{json, Value};

fn insecure_client() -> reqwest::Client {
    reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap()
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn keys_are_served_and_notarised() {
    let a = federating_server().await;
    let b = federating_server().await;
    let http = insecure_client();
    let keys = get_json(&http, &format!("https://{}/_matrix/key/v2/server", a.server_name())).await;
    assert_eq!(keys["server_name"], a.server_name());
    let key_id = keys["verify_keys"].as_object().unwrap().keys().next().unwrap().clone();
    assert!(key_id.starts_with("ed25519:"));
    assert!(keys["signatures"][a.server_name()][&key_id].is_string());
    assert!(keys["valid_until_ts"].as_i64().unwrap() > 0);

    // B as a notary: A's keys, counter-signed by B.
    let notarised = b.get(&format!("/_matrix/key/v2/query/{}", a.server_name()), None).await.ok();
    let entry = &notarised["server_keys"][0];
    assert_eq!(entry["server_name"], a.server_name());
    assert!(entry["signatures"][a.server_name()].is_object());
    assert!(entry["signatures"][b.server_name()].is_object());
    let batch = b
        .post("/_matrix/key/v2/query", None, json!({ "server_keys": { a.server_name(): {} } }))
        .await
        .ok();
    assert_eq!(batch["server_keys"][0]["server_name"], a.server_name());

    // The older forms with a key id in the path (SyTest and older servers use them): the
    // same answers, whatever the key id.
    let by_key_id = get_json(&http, &format!("https://{}/_matrix/key/v2/server/{}", a.server_name(), enc(&key_id))).await;
    assert_eq!(by_key_id["verify_keys"], keys["verify_keys"]);
    let old_notary = b.get(&format!("/_matrix/key/v2/query/{}/{}", a.server_name(), enc(&key_id)), None).await.ok();
    assert_eq!(old_notary["server_keys"][0]["server_name"], a.server_name());
    b.get("/_matrix/key/v2/query/not%20a%20server/ed25519:x", None).await.err(400, "M_INVALID_PARAM");

    let version = get_json(&http, &format!("https://{}/_matrix/federation/v1/version", a.server_name())).await;
    assert_eq!(version["server"]["name"], "weft");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn profiles_and_aliases_across_servers() {
    let a = federating_server().await;
    let b = federating_server().await;
    let (alice, alice_token) = a.register("alice").await;
    let (_, bob_token) = b.register("bob").await;
    a.put(&format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice)), Some(&alice_token), json!({ "displayname": "Alice A." }))
        .await
        .ok();
    let profile = b.get(&format!("/_matrix/client/v3/profile/{}", enc(&alice)), Some(&bob_token)).await.ok();
    assert_eq!(profile["displayname"], "Alice A.");
    let name = b.get(&format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice)), Some(&bob_token)).await.ok();
    assert_eq!(name["displayname"], "Alice A.");
    let missing = format!("@nobody:{}", a.server_name());
    b.get(&format!("/_matrix/client/v3/profile/{}", enc(&missing)), Some(&bob_token)).await.err(404, "M_NOT_FOUND");

    let room = a.create_room(&alice_token, json!({ "room_alias_name": "lobby", "preset": "public_chat" })).await;
    let alias = format!("#lobby:{}", a.server_name());
    let resolved = b.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&alias)), Some(&bob_token)).await.ok();
    assert_eq!(resolved["room_id"], room);
    assert_eq!(resolved["servers"], json!([a.server_name()]));
    let unknown = format!("#nope:{}", a.server_name());
    b.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&unknown)), Some(&bob_token)).await.err(404, "M_NOT_FOUND");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn unsigned_and_forged_requests_are_refused() {
    let a = federating_server().await;
    let b = federating_server().await;
    let http = insecure_client();
    let (alice, _) = a.register("alice").await;
    let url = format!("https://{}/_matrix/federation/v1/query/profile?user_id={}", a.server_name(), enc(&alice));
    let unsigned = http.get(&url).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let body: Value = unsigned.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");

    // A signature that claims to be B's but is not made with B's key.
    let forged = format!(
        "X-Matrix origin=\"{}\",destination=\"{}\",key=\"ed25519:a_forged\",sig=\"{}\"",
        b.server_name(),
        a.server_name(),
        "A".repeat(86)
    );
    let response = http.get(&url).header("authorization", forged).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");
    a.stop().await;
    b.stop().await;
}

/// Waits (long-polling /sync) until `user`'s timeline in `room` has a message `body`.
async fn wait_for_message(server: &common::TestServer, token: &str, room: &str, body: &str) -> Value {
    let mut since: Option<String> = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let path = match &since {
            Some(since) => format!("/_matrix/client/v3/sync?since={since}&timeout=5000"),
            None => "/_matrix/client/v3/sync".to_owned(),
        };
        let response = server.get(&path, Some(token)).await.ok();
        if let Some(events) = response["rooms"]["join"][room]["timeline"]["events"].as_array() {
            if let Some(event) = events.iter().find(|e| e["content"]["body"] == body) {
                return event.clone();
            }
        }
        if std::env::var("DEBUG_SYNC").is_ok() {
            eprintln!("sync: {}", serde_json::to_string(&response).unwrap().chars().take(600).collect::<String>());
        }
        since = response["next_batch"].as_str().map(str::to_owned);
    }
    panic!("{body:?} never reached {room} on {}", server.server_name());
}

#[tokio::test]
async fn join_over_federation_and_message_both_ways() {
    let a = federating_server().await;
    let b = federating_server().await;
    let (alice, alice_token) = a.register("alice").await;
    let (bob, bob_token) = b.register("bob").await;
    let room = a.create_room(&alice_token, json!({ "preset": "public_chat", "room_alias_name": "town", "name": "Town square" })).await;
    a.send_text(&alice_token, &room, "before", "history from before bob").await;

    // Bob joins from his own server, by alias.
    let alias = format!("#town:{}", a.server_name());
    let joined = b.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), Some(&bob_token), json!({})).await.ok();
    assert_eq!(joined["room_id"], room);

    // B has the room's state: its name and both members.
    let name = b.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.name", enc(&room)), Some(&bob_token)).await.ok();
    assert_eq!(name["name"], "Town square");
    let members = b.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)), Some(&bob_token)).await.ok();
    assert!(members["joined"].get(&alice).is_some() && members["joined"].get(&bob).is_some(), "{members}");

    // And so does bob's first /sync: the room's state before his join, alice's membership
    // among it (a client shows the room's name and members from there).
    let synced = b.get("/_matrix/client/v3/sync", Some(&bob_token)).await.ok();
    let joined_room = &synced["rooms"]["join"][&room];
    let state: Vec<&Value> = joined_room["state"]["events"].as_array().into_iter().flatten().chain(joined_room["timeline"]["events"].as_array().into_iter().flatten()).collect();
    assert!(state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Town square"), "{joined_room}");
    assert!(state.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == alice.as_str()), "{joined_room}");

    // A sees bob's join.
    let a_members = a.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)), Some(&alice_token)).await.ok();
    assert!(a_members["joined"].get(&bob).is_some(), "{a_members}");

    // History from before the join is backfilled from A.
    let history = b.messages(&bob_token, &room, "dir=b&limit=50").await;
    assert!(common::bodies(&history).contains(&"history from before bob".to_owned()), "{history}");
    let create = history["chunk"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create");
    assert!(create, "backfill reaches the room's start");

    // Messages both ways, seen through /sync.
    a.send_text(&alice_token, &room, "a1", "hello from A").await;
    let seen = wait_for_message(&b, &bob_token, &room, "hello from A").await;
    assert_eq!(seen["sender"], alice);
    b.send_text(&bob_token, &room, "b1", "hello from B").await;
    let seen = wait_for_message(&a, &alice_token, &room, "hello from B").await;
    assert_eq!(seen["sender"], bob);
    a.stop().await;
    b.stop().await;
}

/// Alice on A makes a public room with alias `town`; Bob on B joins it. Returns the room id.
async fn shared_room(a: &common::TestServer, b: &common::TestServer, alice_token: &str, bob_token: &str) -> String {
    let room = a.create_room(alice_token, json!({ "preset": "public_chat", "room_alias_name": "town" })).await;
    let alias = format!("#town:{}", a.server_name());
    b.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), Some(bob_token), json!({})).await.ok();
    room
}

async fn membership(server: &common::TestServer, token: &str, room: &str, user: &str) -> String {
    let member = server.get(&format!("/_matrix/client/v3/rooms/{}/members", enc(room)), Some(token)).await;
    if !member.status.is_success() {
        return format!("unreadable ({})", member.status);
    }
    member.body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["state_key"] == user)
        .map(|e| e["content"]["membership"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_stopped_server_catches_up_in_order() {
    let a = federating_server().await;
    let mut b = federating_server().await;
    let (_, alice_token) = a.register("alice").await;
    let (_, bob_token) = b.register("bob").await;
    let room = shared_room(&a, &b, &alice_token, &bob_token).await;

    b.stop_in_place().await;
    for i in 0..100 {
        a.send_text(&alice_token, &room, &format!("offline{i}"), &format!("m{i}")).await;
    }
    b.start_again().await;
    wait_for_message(&b, &bob_token, &room, "m99").await;
    // All 100, in A's order.
    let page = b.messages(&bob_token, &room, "dir=b&limit=200").await;
    let mut bodies = common::bodies(&page);
    bodies.reverse();
    let expected: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, expected);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn kicks_bans_and_leaves_propagate() {
    let a = federating_server().await;
    let b = federating_server().await;
    let (_, alice_token) = a.register("alice").await;
    let (bob, bob_token) = b.register("bob").await;
    let room = shared_room(&a, &b, &alice_token, &bob_token).await;

    a.post(&format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)), Some(&alice_token), json!({ "user_id": bob, "reason": "out" }))
        .await
        .ok();
    // the kick reached B.
    eventually(Duration::from_secs(5), || async { membership(&b, &bob_token, &room, &bob).await == "leave" }).await;
    // Bob can rejoin (public room), then leaves by himself; A sees it.
    let alias = format!("#town:{}", a.server_name());
    b.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), Some(&bob_token), json!({})).await.ok();
    assert_eq!(membership(&a, &alice_token, &room, &bob).await, "join");
    b.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&bob_token), json!({})).await.ok();
    // the leave reached A.
    eventually(Duration::from_secs(5), || async { membership(&a, &alice_token, &room, &bob).await == "leave" }).await;
    // A ban reaches B too, and bob cannot come back.
    a.post(&format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)), Some(&alice_token), json!({ "user_id": bob })).await.ok();
    let rejoin = b.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), Some(&bob_token), json!({})).await;
    assert!(!rejoin.status.is_success(), "a banned user cannot rejoin: {}", rejoin.body);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn concurrent_state_changes_converge() {
    let a = federating_server().await;
    let b = federating_server().await;
    let (alice, alice_token) = a.register("alice").await;
    let (bob, bob_token) = b.register("bob").await;
    let room = shared_room(&a, &b, &alice_token, &bob_token).await;
    // Give bob the power to rename.
    let power = a.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels", enc(&room)), Some(&alice_token)).await.ok();
    let mut power = power;
    power["users"][&bob] = json!(50);
    a.put(&format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels", enc(&room)), Some(&alice_token), power).await.ok();
    let levels_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels", enc(&room));
    eventually(Duration::from_secs(5), || async { b.get(&levels_path, Some(&bob_token)).await.body["users"][&bob] == 50 }).await;
    // Both rename at once.
    let name_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.name", enc(&room));
    let name_a = a.put(&name_path, Some(&alice_token), json!({ "name": "from A" }));
    let name_b = b.put(&name_path, Some(&bob_token), json!({ "name": "from B" }));
    let (ra, rb) = tokio::join!(name_a, name_b);
    ra.ok();
    rb.ok();
    // Let both events cross: the two servers' states converge.
    let state_path = format!("/_matrix/client/v3/rooms/{}/state", enc(&room));
    let ids = |state: Value| {
        let mut ids: Vec<String> = state.as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    };
    eventually(Duration::from_secs(10), || async {
        let on_a = a.get(&state_path, Some(&alice_token)).await.ok();
        let on_b = b.get(&state_path, Some(&bob_token)).await.ok();
        ids(on_a) == ids(on_b)
    })
    .await;
    let _ = alice;
    a.stop().await;
    b.stop().await;
}

/// Long-polls /sync until `check` finds what it wants in a response.
async fn wait_for_sync(server: &common::TestServer, token: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut since: Option<String> = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let path = match &since {
            Some(since) => format!("/_matrix/client/v3/sync?since={since}&timeout=5000&set_presence=offline"),
            None => "/_matrix/client/v3/sync?set_presence=offline".to_owned(),
        };
        let response = server.get(&path, Some(token)).await.ok();
        if check(&response) {
            return response;
        }
        since = response["next_batch"].as_str().map(str::to_owned);
    }
    panic!("{what} never showed up in /sync on {}", server.server_name());
}

#[tokio::test]
async fn typing_receipts_and_presence_cross_servers() {
    let a = federating_server().await;
    let b = federating_server().await;
    let (alice, alice_token) = a.register("alice").await;
    let (bob, bob_token) = b.register("bob").await;
    let room = shared_room(&a, &b, &alice_token, &bob_token).await;

    // Typing, both ways.
    a.put(&format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&alice)), Some(&alice_token), json!({ "typing": true, "timeout": 20000 }))
        .await
        .ok();
    wait_for_sync(&b, &bob_token, "alice typing", |r| {
        r["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["type"] == "m.typing" && e["content"]["user_ids"] == json!([alice])))
    })
    .await;
    b.put(&format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&bob)), Some(&bob_token), json!({ "typing": true, "timeout": 20000 }))
        .await
        .ok();
    wait_for_sync(&a, &alice_token, "bob typing", |r| {
        r["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["type"] == "m.typing" && e["content"]["user_ids"].as_array().is_some_and(|u| u.contains(&json!(bob)))))
    })
    .await;

    // A read receipt from B reaches A.
    let message = a.send_text(&alice_token, &room, "r1", "read me").await;
    wait_for_message(&b, &bob_token, &room, "read me").await;
    b.post(&format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&message)), Some(&bob_token), json!({}))
        .await
        .ok();
    wait_for_sync(&a, &alice_token, "bob's receipt", |r| {
        r["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["type"] == "m.receipt" && e["content"][&message]["m.read"][&bob].is_object()))
    })
    .await;

    // Presence set on A shows on B.
    a.put(&format!("/_matrix/client/v3/presence/{}/status", enc(&alice)), Some(&alice_token), json!({ "presence": "unavailable", "status_msg": "away" }))
        .await
        .ok();
    wait_for_sync(&b, &bob_token, "alice's presence", |r| {
        r["presence"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["sender"] == alice && e["content"]["presence"] == "unavailable" && e["content"]["status_msg"] == "away"))
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn invites_across_servers_accepted_and_rejected() {
    let a = federating_server().await;
    let b = federating_server().await;
    let (alice, alice_token) = a.register("alice").await;
    let (bob, bob_token) = b.register("bob").await;
    let room = a.create_room(&alice_token, json!({ "preset": "private_chat", "name": "Invite only" })).await;

    // Alice invites bob on B: bob sees the invite with the room's name.
    let next = b.get("/_matrix/client/v3/sync", Some(&bob_token)).await.ok()["next_batch"].as_str().unwrap().to_owned();
    a.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), Some(&alice_token), json!({ "user_id": bob })).await.ok();
    let invited = b.get(&format!("/_matrix/client/v3/sync?since={next}&timeout=10000"), Some(&bob_token)).await.ok();
    let state = invited["rooms"]["invite"][&room]["invite_state"]["events"].as_array().cloned().unwrap_or_default();
    assert!(state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Invite only"), "{invited}");
    assert!(state.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == bob && e["content"]["membership"] == "invite"));

    // Bob accepts by joining the room id: through alice's server.
    b.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob_token), json!({})).await.ok();
    assert_eq!(membership(&a, &alice_token, &room, &bob).await, "join");
    a.send_text(&alice_token, &room, "w", "welcome bob").await;
    wait_for_message(&b, &bob_token, &room, "welcome bob").await;

    // A second invite, to carol, is rejected from her server.
    let (carol, carol_token) = b.register("carol").await;
    a.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), Some(&alice_token), json!({ "user_id": carol })).await.ok();
    // Her client sees the invite first (B is in the room, so it comes with the room's events).
    wait_for_sync(&b, &carol_token, "carol's invite", |r| r["rooms"]["invite"].get(&room).is_some()).await;
    b.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&carol_token), json!({})).await.ok();
    // A sees carol's rejection.
    eventually(Duration::from_secs(5), || async { membership(&a, &alice_token, &room, &carol).await == "leave" }).await;
    let _ = alice;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn server_acls_shut_a_server_out() {
    let a = federating_server().await;
    let b = federating_server().await;
    let (_, alice_token) = a.register("alice").await;
    let (bob, bob_token) = b.register("bob").await;
    let room = shared_room(&a, &b, &alice_token, &bob_token).await;
    b.send_text(&bob_token, &room, "before", "before the ACL").await;
    wait_for_message(&a, &alice_token, &room, "before the ACL").await;

    // Deny B (by host: both servers are 127.0.0.1 here, so B's events are what it stops;
    // A's own events never cross its own federation boundary).
    let acl_event = a
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.server_acl", enc(&room)),
            Some(&alice_token),
            json!({ "allow": ["*"], "deny": ["127.0.0.1"], "allow_ip_literals": true }),
        )
        .await
        .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // B may no longer read the room's state or history, nor leave through A.
    let room_id: ruma::OwnedRoomId = room.as_str().try_into().unwrap();
    let event_id: ruma::OwnedEventId = acl_event.as_str().try_into().unwrap();
    let state_ids = ruma::api::federation::event::get_room_state_ids::v1::Request::new(event_id.clone(), room_id.clone());
    b.federation_request(&a, state_ids).await.err(403, "M_FORBIDDEN");
    let backfill = ruma::api::federation::backfill::get_backfill::v1::Request::new(room_id.clone(), vec![event_id], 10u32.into());
    b.federation_request(&a, backfill).await.err(403, "M_FORBIDDEN");
    let make_leave = ruma::api::federation::membership::prepare_leave_event::v1::Request::new(room_id, bob.as_str().try_into().unwrap());
    b.federation_request(&a, make_leave).await.err(403, "M_FORBIDDEN");
    // Once B has the ACL too (it arrives over federation), B's new events are refused by A.
    let acl_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.server_acl", enc(&room));
    eventually(Duration::from_secs(5), || async { b.get(&acl_path, Some(&bob_token)).await.status.is_success() }).await;
    b.send_text(&bob_token, &room, "after", "after the ACL").await;
    // What must not arrive cannot be waited for: give it the time a delivery takes here.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let page = a.messages(&alice_token, &room, "dir=b&limit=50").await;
    let bodies = common::bodies(&page);
    assert!(bodies.contains(&"before the ACL".to_owned()));
    assert!(!bodies.contains(&"after the ACL".to_owned()), "{bodies:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn remote_joins_work_in_every_room_version() {
    let a = federating_server().await;
    let b = federating_server().await;
    let (_, alice_token) = a.register("alice").await;
    let (bob, bob_token) = b.register("bob").await;
    for version in 1..=12 {
        let room = a
            .create_room(&alice_token, json!({ "preset": "public_chat", "room_version": version.to_string(), "room_alias_name": format!("v{version}") }))
            .await;
        let alias = format!("#v{version}:{}", a.server_name());
        let joined = b.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), Some(&bob_token), json!({})).await;
        assert!(joined.status.is_success(), "v{version}: {}", joined.body);
        a.send_text(&alice_token, &room, &format!("a{version}"), &format!("hello v{version}")).await;
        wait_for_message(&b, &bob_token, &room, &format!("hello v{version}")).await;
        b.send_text(&bob_token, &room, &format!("b{version}"), &format!("reply v{version}")).await;
        wait_for_message(&a, &alice_token, &room, &format!("reply v{version}")).await;
        let _ = &bob;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn knocking_across_servers() {
    let a = federating_server().await;
    let b = federating_server().await;
    let (_, alice_token) = a.register("alice").await;
    let (bob, bob_token) = b.register("bob").await;
    let room = a
        .create_room(&alice_token, json!({ "name": "Knock here", "room_alias_name": "door",
            "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }] }))
        .await;
    let alias = format!("#door:{}", a.server_name());
    let knocked = b.post(&format!("/_matrix/client/v3/knock/{}", enc(&alias)), Some(&bob_token), json!({ "reason": "please" })).await.ok();
    assert_eq!(knocked["room_id"], room);
    // Bob sees his knock with the room's stripped state; alice sees the knock in the room.
    let synced = b.get("/_matrix/client/v3/sync", Some(&bob_token)).await.ok();
    let state = synced["rooms"]["knock"][&room]["knock_state"]["events"].as_array().cloned().unwrap_or_default();
    assert!(state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knock here"), "{synced}");
    assert_eq!(membership(&a, &alice_token, &room, &bob).await, "knock");
    // Alice lets him in with an invite; he joins.
    a.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), Some(&alice_token), json!({ "user_id": bob })).await.ok();
    // The join succeeds once the invite has reached B.
    let join_path = format!("/_matrix/client/v3/rooms/{}/join", enc(&room));
    eventually(Duration::from_secs(5), || async { b.post(&join_path, Some(&bob_token), json!({})).await.status.is_success() }).await;
    assert_eq!(membership(&a, &alice_token, &room, &bob).await, "join");
    a.stop().await;
    b.stop().await;
}

/// Alice's space on A: a public room (suggested), an invite-only room, both linked.
async fn space_on(a: &common::TestServer, alice_token: &str) -> (String, String, String) {
    let space = a
        .create_room(alice_token, json!({ "preset": "public_chat", "visibility": "public", "name": "Space A", "room_version": "11",
            "creation_content": { "type": "m.space" } }))
        .await;
    let open = a.create_room(alice_token, json!({ "preset": "public_chat", "visibility": "public", "name": "Open lobby", "topic": "say hi" })).await;
    let closed = a.create_room(alice_token, json!({ "preset": "private_chat", "name": "Back office" })).await;
    for (child, suggested) in [(&open, true), (&closed, false)] {
        let link = json!({ "via": [a.server_name()], "suggested": suggested });
        a.put(&format!("/_matrix/client/v3/rooms/{}/state/m.space.child/{}", enc(&space), enc(child)), Some(alice_token), link).await.ok();
    }
    (space, open, closed)
}

#[tokio::test]
async fn public_rooms_of_another_server() {
    let a = federating_server().await;
    let b = federating_server().await;
    let closed_server = common::federating_server_with(|c| c.federation.allow_public_rooms_over_federation = false).await;
    let (_, alice_token) = a.register("alice").await;
    let (_, bob_token) = b.register("bob").await;
    let (space, open, _) = space_on(&a, &alice_token).await;

    let listed = b.get(&format!("/_matrix/client/v3/publicRooms?server={}", a.server_name()), Some(&bob_token)).await.ok();
    let ids: Vec<&str> = listed["chunk"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&open.as_str()) && ids.contains(&space.as_str()), "{listed}");
    assert_eq!(listed["total_room_count_estimate"], 2);

    let path = format!("/_matrix/client/v3/publicRooms?server={}", a.server_name());
    let searched = b.post(&path, Some(&bob_token), json!({ "filter": { "generic_search_term": "LOBBY" } })).await.ok();
    assert_eq!(searched["chunk"].as_array().unwrap().len(), 1, "{searched}");
    assert_eq!(searched["chunk"][0]["topic"], "say hi");
    let spaces = b.post(&path, Some(&bob_token), json!({ "filter": { "room_types": ["m.space"] } })).await.ok();
    assert_eq!(spaces["chunk"].as_array().unwrap().len(), 1, "{spaces}");
    assert_eq!(spaces["chunk"][0]["room_type"], "m.space");
    let paged = b.post(&path, Some(&bob_token), json!({ "limit": 1 })).await.ok();
    assert_eq!(paged["chunk"].as_array().unwrap().len(), 1);
    let next = paged["next_batch"].as_str().unwrap();
    let rest = b.post(&path, Some(&bob_token), json!({ "limit": 1, "since": next })).await.ok();
    assert_ne!(rest["chunk"][0]["room_id"], paged["chunk"][0]["room_id"]);

    // A server that keeps its directory to itself answers 403 to other servers.
    let refused = b
        .get(&format!("/_matrix/client/v3/publicRooms?server={}", closed_server.server_name()), Some(&bob_token))
        .await;
    assert!(!refused.status.is_success(), "{}", refused.body);
    let direct = b
        .federation_request(&closed_server, ruma::api::federation::directory::get_public_rooms::v1::Request::new())
        .await;
    direct.err(403, "M_FORBIDDEN");
    a.stop().await;
    b.stop().await;
    closed_server.stop().await;
}

#[tokio::test]
async fn space_hierarchy_across_servers() {
    let a = federating_server().await;
    let b = federating_server().await;
    let (_, alice_token) = a.register("alice").await;
    let (_, bob_token) = b.register("bob").await;
    let (space, open, closed) = space_on(&a, &alice_token).await;

    // B is in none of these rooms: the space (its id names A) and its children come from A.
    let tree = b.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&space)), Some(&bob_token)).await.ok();
    let rooms: Vec<&str> = tree["rooms"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
    assert_eq!(rooms, [space.as_str(), open.as_str()], "the invite-only child stays hidden: {tree}");
    assert_eq!(tree["rooms"][0]["room_type"], "m.space");
    assert_eq!(tree["rooms"][0]["children_state"].as_array().unwrap().len(), 2);
    assert_eq!(tree["rooms"][1]["name"], "Open lobby");

    // Once B is in the space, its own copy drives the walk; children still come from A.
    b.post(&format!("/_matrix/client/v3/join/{}", enc(&space)), Some(&bob_token), json!({})).await.ok();
    let tree = b.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy?suggested_only=true", enc(&space)), Some(&bob_token)).await.ok();
    let rooms: Vec<&str> = tree["rooms"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
    assert_eq!(rooms, [space.as_str(), open.as_str()], "{tree}");

    // The federation endpoint itself: A tells B which children B cannot see.
    let answer = b
        .federation_request(&a, ruma::api::federation::space::get_hierarchy::v1::Request::new(space.as_str().try_into().unwrap()))
        .await
        .ok();
    assert_eq!(answer["room"]["room_id"], space);
    assert_eq!(answer["children"][0]["room_id"], open);
    assert_eq!(answer["inaccessible_children"], json!([closed]));
    let hidden = b
        .federation_request(&a, ruma::api::federation::space::get_hierarchy::v1::Request::new(closed.as_str().try_into().unwrap()))
        .await;
    hidden.err(404, "M_NOT_FOUND");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn event_auth_is_served_to_servers_in_the_room() {
    let a = federating_server().await;
    let b = federating_server().await;
    let outsider = federating_server().await;
    let (_, alice_token) = a.register("alice").await;
    let (_, bob_token) = b.register("bob").await;
    let room = shared_room(&a, &b, &alice_token, &bob_token).await;
    let event = a.send_text(&alice_token, &room, "m1", "authorised").await;
    let request = || {
        ruma::api::federation::authorization::get_event_authorization::v1::Request::new(
            room.as_str().try_into().unwrap(),
            event.as_str().try_into().unwrap(),
        )
    };
    let chain = b.federation_request(&a, request()).await.ok();
    let types: Vec<&str> = chain["auth_chain"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    for wanted in ["m.room.create", "m.room.power_levels", "m.room.member"] {
        assert!(types.contains(&wanted), "{wanted} missing from {types:?}");
    }
    assert!(!types.contains(&"m.room.message"), "the event itself is not in its auth chain");
    outsider.federation_request(&a, request()).await.err(403, "M_FORBIDDEN");
    a.stop().await;
    b.stop().await;
    outsider.stop().await;
}

/// A PDU for a room the receiver is not in has no event id the receiver can know: it is left
/// out of the results (never keyed by a placeholder that the sender cannot parse).
#[tokio::test]
async fn send_answers_without_placeholder_keys_for_unknown_rooms() {
    let a = federating_server().await;
    let b = federating_server().await;
    let pdu = json!({
        "room_id": "!nowhere:example.org", "type": "m.room.message", "sender": "@x:example.org",
        "content": { "body": "hi" }, "origin_server_ts": 1, "depth": 3, "prev_events": [], "auth_events": [],
        "hashes": { "sha256": "AAAA" }, "signatures": {},
    });
    let no_room = json!({ "type": "m.room.message", "content": {} });
    let mut request = ruma::api::federation::transactions::send_transaction_message::v1::Request::new(
        "t1".into(),
        a.server_name().as_str().try_into().unwrap(),
        ruma::MilliSecondsSinceUnixEpoch::now(),
    );
    request.pdus = vec![
        serde_json::value::to_raw_value(&pdu).unwrap(),
        serde_json::value::to_raw_value(&no_room).unwrap(),
    ];
    let reply = a.federation_request(&b, request).await.ok();
    assert_eq!(reply["pdus"], json!({}), "no result can be keyed for these PDUs: {reply}");
    a.stop().await;
    b.stop().await;
}

/// A destination that answers a transaction with a 2xx but not the spec's body (SyTest answers
/// `{}`) has taken it: the queue moves on, the transaction is not sent again.
#[tokio::test]
async fn a_malformed_transaction_response_does_not_wedge_the_queue() {
    use std::sync::{Arc, Mutex};
    weft::federation::tls::install_crypto_provider();
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let port = common::free_port();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        certified.cert.pem().into_bytes(),
        certified.signing_key.serialize_pem().into_bytes(),
    )
    .await
    .unwrap();
    let sink = received.clone();
    let fake = axum::Router::new().route(
        "/_matrix/federation/v1/send/{txn}",
        axum::routing::put(move |axum::Json(body): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                axum::Json(json!({}))
            }
        }),
    );
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let handle = axum_server::Handle::new();
    tokio::spawn(axum_server::bind_rustls(address, tls).handle(handle.clone()).serve(fake.into_make_service()));

    let a = federating_server().await;
    let (_, token) = a.register("alice").await;
    let remote_user = format!("@bob:127.0.0.1:{port}");
    let bodies_seen = |received: &Arc<Mutex<Vec<Value>>>| -> Vec<String> {
        received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|txn| txn["edus"].as_array().cloned().unwrap_or_default())
            .filter_map(|edu| edu["content"]["messages"][&remote_user]["DEV"]["n"].as_str().map(str::to_owned))
            .collect()
    };
    for (txn, n) in [("d1", "first"), ("d2", "second")] {
        let path = format!("/_matrix/client/v3/sendToDevice/m.test/{txn}");
        a.put(&path, Some(&token), json!({ "messages": { &remote_user: { "DEV": { "n": n } } } })).await.ok();
        common::eventually(Duration::from_secs(20), || {
            let seen = bodies_seen(&received);
            async move { seen.iter().any(|b| b == n) }
        })
        .await;
    }
    // Give a wrongly retried first transaction time to show up again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(bodies_seen(&received), vec!["first".to_owned(), "second".to_owned()]);
    handle.shutdown();
    a.stop().await;
}
