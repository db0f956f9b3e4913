//! The spec's administration endpoints through HTTP: whois, and account moderation (lock,
//! suspend) with what each stops and what it leaves open.

mod common;

use common::{enc, TestServer};
use serde_json::json;

#[tokio::test]
async fn whois_is_for_admins_and_the_user_themself() {
    let server = TestServer::start().await;
    let (_, admin) = server.register_admin("root").await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let path = format!("/_matrix/client/v3/admin/whois/{}", enc(&alice_id));
    server.get(&path, Some(&bob)).await.err(403, "M_FORBIDDEN");
    let own = server.get(&path, Some(&alice)).await.ok();
    assert_eq!(own["user_id"], alice_id);
    // Requests mark the device seen, in the background.
    common::eventually(std::time::Duration::from_secs(5), || async {
        let by_admin = server.get(&path, Some(&admin)).await.ok();
        by_admin["devices"].as_object().and_then(|d| d.values().next()).is_some_and(|d| d["sessions"][0]["connections"][0]["ip"].is_string())
    })
    .await;
    let by_admin = server.get(&path, Some(&admin)).await.ok();
    let devices = by_admin["devices"].as_object().unwrap();
    assert_eq!(devices.len(), 1, "{by_admin}");
    let connection = &devices.values().next().unwrap()["sessions"][0]["connections"][0];
    assert_eq!(connection["ip"], "127.0.0.1", "{by_admin}");
    assert!(connection["last_seen"].as_u64().is_some(), "{by_admin}");
    server.get("/_matrix/client/v3/admin/whois/%40nobody%3Alocalhost", Some(&admin)).await.err(404, "M_NOT_FOUND");
    server.get("/_matrix/client/v3/admin/whois/%40x%3Aelsewhere.example", Some(&admin)).await.err(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn a_locked_account_can_only_log_out_until_unlocked() {
    let server = TestServer::start().await;
    let (_, admin) = server.register_admin("root").await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let lock = format!("/_matrix/client/v1/admin/lock/{}", enc(&alice_id));

    // Only admins, checked before the lookup; never another admin or oneself.
    server.get(&lock, Some(&bob)).await.err(403, "M_FORBIDDEN");
    server.get("/_matrix/client/v1/admin/lock/%40nobody%3Alocalhost", Some(&bob)).await.err(403, "M_FORBIDDEN");
    server.get("/_matrix/client/v1/admin/lock/%40nobody%3Alocalhost", Some(&admin)).await.err(404, "M_NOT_FOUND");
    server.put("/_matrix/client/v1/admin/lock/%40root%3Alocalhost", Some(&admin), json!({ "locked": true })).await.err(403, "M_FORBIDDEN");
    server.put("/_matrix/client/v1/admin/lock/%40x%3Aelsewhere.example", Some(&admin), json!({ "locked": true })).await.err(400, "M_INVALID_PARAM");
    assert_eq!(server.get(&lock, Some(&admin)).await.ok()["locked"], false);
    let capabilities = server.get("/_matrix/client/v3/capabilities", Some(&admin)).await.ok();
    assert_eq!(capabilities["capabilities"]["m.account_moderation"], json!({ "lock": true, "suspend": true }));
    let capabilities = server.get("/_matrix/client/v3/capabilities", Some(&bob)).await.ok();
    assert_eq!(capabilities["capabilities"]["m.account_moderation"], json!({ "lock": false, "suspend": false }));

    assert_eq!(server.put(&lock, Some(&admin), json!({ "locked": true })).await.ok()["locked"], true);
    assert_eq!(server.get(&lock, Some(&admin)).await.ok()["locked"], true);
    let refused = server.get("/_matrix/client/v3/sync?timeout=0", Some(&alice)).await;
    refused.err(401, "M_USER_LOCKED");
    assert_eq!(refused.body["soft_logout"], true);
    server.get("/_matrix/client/v3/account/whoami", Some(&alice)).await.err(401, "M_USER_LOCKED");
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "password" });
    server.post("/_matrix/client/v3/login", None, login.clone()).await.err(401, "M_USER_LOCKED");

    // The session survives the lock: unlocked, the same token works again.
    server.put(&lock, Some(&admin), json!({ "locked": false })).await.ok();
    server.get("/_matrix/client/v3/account/whoami", Some(&alice)).await.ok();
    let second = server.post("/_matrix/client/v3/login", None, login).await.ok();
    let second = second["access_token"].as_str().unwrap().to_owned();

    // Logging out stays open while locked.
    server.put(&lock, Some(&admin), json!({ "locked": true })).await.ok();
    server.post("/_matrix/client/v3/logout", Some(&second), json!({})).await.ok();
    server.put(&lock, Some(&admin), json!({ "locked": false })).await.ok();
    server.get("/_matrix/client/v3/account/whoami", Some(&second)).await.err(401, "M_UNKNOWN_TOKEN");
    server.stop().await;
}

#[tokio::test]
async fn a_suspended_account_reads_and_leaves_but_does_not_act() {
    let server = TestServer::start().await;
    let (_, admin) = server.register_admin("root").await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&bob, json!({ "preset": "public_chat" })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&alice), json!({})).await.ok();
    let own = server.send_text(&alice, &room, "before", "before the suspension").await;
    let bobs = server.send_text(&bob, &room, "b1", "bob speaks").await;
    let other = server.create_room(&bob, json!({ "preset": "public_chat" })).await;

    let suspend = format!("/_matrix/client/v1/admin/suspend/{}", enc(&alice_id));
    server.put(&suspend, Some(&bob), json!({ "suspended": true })).await.err(403, "M_FORBIDDEN");
    assert_eq!(server.put(&suspend, Some(&admin), json!({ "suspended": true })).await.ok()["suspended"], true);
    assert_eq!(server.get(&suspend, Some(&admin)).await.ok()["suspended"], true);

    // Acting is refused.
    let send = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t2", enc(&room));
    server.put(&send, Some(&alice), json!({ "msgtype": "m.text", "body": "no" })).await.err(403, "M_USER_SUSPENDED");
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&other)), Some(&alice), json!({})).await.err(403, "M_USER_SUSPENDED");
    server.post("/_matrix/client/v3/createRoom", Some(&alice), json!({})).await.err(403, "M_USER_SUSPENDED");
    server
        .put(&format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice_id)), Some(&alice), json!({ "displayname": "A" }))
        .await
        .err(403, "M_USER_SUSPENDED");
    server
        .post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), Some(&alice), json!({ "user_id": bob_id }))
        .await
        .err(403, "M_USER_SUSPENDED");
    // Reading, redacting their own event and leaving are not.
    let history = server.messages(&alice, &room, "dir=b&limit=10").await;
    assert!(common::bodies(&history).contains(&"bob speaks".to_owned()));
    server.get("/_matrix/client/v3/sync?timeout=0", Some(&alice)).await.ok();
    server
        .put(&format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&room), enc(&own)), Some(&alice), json!({}))
        .await
        .ok();
    // ... but not someone else's.
    server
        .put(&format!("/_matrix/client/v3/rooms/{}/redact/{}/r2", enc(&room), enc(&bobs)), Some(&alice), json!({}))
        .await
        .err(403, "M_USER_SUSPENDED");
    server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&alice), json!({})).await.ok();

    // Lifted, everything works again.
    server.put(&suspend, Some(&admin), json!({ "suspended": false })).await.ok();
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&other)), Some(&alice), json!({})).await.ok();
    server.stop().await;
}

/// Synapse's admin API for accounts, as admin tools call it.
#[tokio::test]
async fn synapse_admin_api_manages_accounts() {
    let server = TestServer::start().await;
    let (admin_id, admin) = server.register_admin("root").await;
    let (alice_id, alice) = server.register("alice").await;
    for name in ["bob", "carol", "dave"] {
        server.register(name).await;
    }
    let version = server.get("/_synapse/admin/v1/server_version", None).await.ok();
    assert!(version["server_version"].as_str().unwrap().starts_with("weft "), "{version}");
    server.get("/_synapse/admin/v2/users", Some(&alice)).await.err(403, "M_FORBIDDEN");
    server.get("/_synapse/admin/v2/users", None).await.err(401, "M_MISSING_TOKEN");

    // Listing: paging with next_token, total, filters, order.
    let page = server.get("/_synapse/admin/v2/users?limit=2", Some(&admin)).await.ok();
    assert_eq!(page["total"], 5);
    let names: Vec<&str> = page["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["@alice:localhost", "@bob:localhost"]);
    assert_eq!(page["next_token"], "2");
    let last = server.get("/_synapse/admin/v2/users?limit=2&from=4", Some(&admin)).await.ok();
    assert_eq!(last["users"].as_array().unwrap().len(), 1);
    assert!(last.get("next_token").is_none(), "{last}");
    let backwards = server.get("/_synapse/admin/v2/users?limit=1&dir=b", Some(&admin)).await.ok();
    assert_eq!(backwards["users"][0]["name"], "@root:localhost");
    let admins = server.get("/_synapse/admin/v2/users?admins=true", Some(&admin)).await.ok();
    assert_eq!(admins["total"], 1);
    assert_eq!(admins["users"][0]["admin"], true);
    let named = server.get("/_synapse/admin/v2/users?name=CAR", Some(&admin)).await.ok();
    assert_eq!(named["users"][0]["name"], "@carol:localhost", "{named}");
    assert_eq!(named["total"], 1);
    server.get("/_synapse/admin/v2/users?dir=x", Some(&admin)).await.err(400, "M_INVALID_PARAM");
    server.get("/_synapse/admin/v2/users?order_by=nonsense", Some(&admin)).await.err(400, "M_INVALID_PARAM");
    server.get("/_synapse/admin/v2/users?from=-1", Some(&admin)).await.err(400, "M_INVALID_PARAM");

    // Query one.
    let alice_path = format!("/_synapse/admin/v2/users/{}", enc(&alice_id));
    let queried = server.get(&alice_path, Some(&admin)).await.ok();
    assert_eq!(queried["name"], alice_id);
    assert_eq!(queried["displayname"], "alice");
    assert_eq!(queried["admin"], false);
    assert_eq!(queried["deactivated"], false);
    assert!(queried["creation_ts"].as_i64().unwrap() > 1_600_000_000_000, "milliseconds: {queried}");
    server.get("/_synapse/admin/v2/users/%40ghost%3Alocalhost", Some(&admin)).await.err(404, "M_NOT_FOUND");
    server.get("/_synapse/admin/v2/users/%40x%3Aelsewhere.example", Some(&admin)).await.err(400, "M_INVALID_PARAM");

    // Create (201), then modify (200): the new account logs in with its password.
    let created = server
        .raw(
            reqwest::Method::PUT,
            "/_synapse/admin/v2/users/%40erin%3Alocalhost",
            Some(&admin),
            Some(json!({ "password": "erin-pw", "displayname": "Erin", "admin": false }).to_string().into_bytes()),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["displayname"], "Erin");
    let login = |user: &str, password: &str| json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password });
    server.post("/_matrix/client/v3/login", None, login("erin", "erin-pw")).await.ok();
    let modified = server.raw(reqwest::Method::PUT, &alice_path, Some(&admin), Some(json!({ "displayname": "Alice A.", "admin": true }).to_string().into_bytes())).await;
    assert_eq!(modified.status, 200, "{}", modified.body);
    assert_eq!(modified.body["displayname"], "Alice A.");
    assert_eq!(modified.body["admin"], true);
    let profile = server.get(&format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice_id)), None).await.ok();
    assert_eq!(profile["displayname"], "Alice A.");
    server.put(&format!("/_synapse/admin/v2/users/{}", enc(&admin_id)), Some(&admin), json!({ "admin": false })).await.err(400, "M_INVALID_PARAM");

    // Devices, whois, joined rooms.
    let room = server.create_room(&alice, json!({})).await;
    // Admins see any room's aliases (admin tools show rooms by alias); others must be in it.
    let (_, outsider) = server.register("outsider").await;
    let aliases = format!("/_matrix/client/v3/rooms/{}/aliases", enc(&room));
    server.get(&aliases, Some(&outsider)).await.err(403, "M_FORBIDDEN");
    assert_eq!(server.get(&aliases, Some(&admin)).await.ok(), json!({ "aliases": [] }));
    let devices = server.get(&format!("/_synapse/admin/v2/users/{}/devices", enc(&alice_id)), Some(&admin)).await.ok();
    assert_eq!(devices["total"], 1);
    assert_eq!(devices["devices"][0]["user_id"], alice_id);
    let whois = server.get(&format!("/_synapse/admin/v1/whois/{}", enc(&alice_id)), Some(&admin)).await.ok();
    assert_eq!(whois["user_id"], alice_id);
    let joined = server.get(&format!("/_synapse/admin/v1/users/{}/joined_rooms", enc(&alice_id)), Some(&admin)).await.ok();
    assert_eq!(joined, json!({ "joined_rooms": [room], "total": 1 }));

    // Reset the password: the old one stops working and devices are logged out.
    server
        .post(&format!("/_synapse/admin/v1/reset_password/{}", enc(&alice_id)), Some(&admin), json!({ "new_password": "fresh" }))
        .await
        .ok();
    server.get("/_matrix/client/v3/account/whoami", Some(&alice)).await.err(401, "M_UNKNOWN_TOKEN");
    server.post("/_matrix/client/v3/login", None, login("alice", "password")).await.err(403, "M_FORBIDDEN");
    let alice = server.post("/_matrix/client/v3/login", None, login("alice", "fresh")).await.ok()["access_token"].as_str().unwrap().to_owned();

    // Deactivate: the user leaves their rooms and is listed only with deactivated=true.
    let deactivated = server.post(&format!("/_synapse/admin/v1/deactivate/{}", enc(&alice_id)), Some(&admin), json!({ "erase": false })).await.ok();
    assert_eq!(deactivated["id_server_unbind_result"], "success");
    server.get("/_matrix/client/v3/account/whoami", Some(&alice)).await.err(401, "M_UNKNOWN_TOKEN");
    let joined = server.get(&format!("/_synapse/admin/v1/users/{}/joined_rooms", enc(&alice_id)), Some(&admin)).await.ok();
    assert_eq!(joined["total"], 0);
    let listed = server.get("/_synapse/admin/v2/users", Some(&admin)).await.ok();
    assert!(!listed["users"].as_array().unwrap().iter().any(|u| u["name"] == alice_id));
    let with_deactivated = server.get("/_synapse/admin/v2/users?deactivated=true", Some(&admin)).await.ok();
    assert!(with_deactivated["users"].as_array().unwrap().iter().any(|u| u["name"] == alice_id && u["deactivated"] == true));
    // Reactivating needs a password.
    server.put(&alice_path, Some(&admin), json!({ "deactivated": false })).await.err(400, "M_INVALID_PARAM");
    server.put(&alice_path, Some(&admin), json!({ "deactivated": false, "password": "back" })).await.ok();
    server.post("/_matrix/client/v3/login", None, login("alice", "back")).await.ok();
    server.stop().await;
}

/// Synapse's admin API for rooms: list with search, order and paging; details; members;
/// state.
#[tokio::test]
async fn synapse_admin_api_shows_rooms() {
    let server = TestServer::start().await;
    let (_, admin) = server.register_admin("root").await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let big = server
        .create_room(&alice, json!({ "name": "Big room", "topic": "all of us", "preset": "public_chat", "room_alias_name": "big", "visibility": "public" }))
        .await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&big)), Some(&bob), json!({})).await.ok();
    let secret = server
        .create_room(&alice, json!({ "name": "Another", "initial_state": [{ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }] }))
        .await;
    let unnamed = server.create_room(&bob, json!({})).await;

    server.get("/_synapse/admin/v1/rooms", Some(&alice)).await.err(403, "M_FORBIDDEN");
    let listed = server.get("/_synapse/admin/v1/rooms", Some(&admin)).await.ok();
    assert_eq!(listed["total_rooms"], 3);
    let ids: Vec<&str> = listed["rooms"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [secret.as_str(), big.as_str(), unnamed.as_str()], "by name, unnamed last: {listed}");
    let first = &listed["rooms"][1];
    assert_eq!(first["name"], "Big room");
    assert_eq!(first["canonical_alias"], "#big:localhost");
    assert_eq!(first["joined_members"], 2);
    assert_eq!(first["joined_local_members"], 2);
    assert_eq!(first["public"], true);
    assert_eq!(first["join_rules"], "public");
    assert_eq!(first["creator"], alice_id);
    assert!(first["state_events"].as_i64().unwrap() >= 6, "{first}");
    assert_eq!(listed["rooms"][0]["encryption"], "m.megolm.v1.aes-sha2");

    let by_size = server.get("/_synapse/admin/v1/rooms?order_by=joined_members&limit=1", Some(&admin)).await.ok();
    assert_eq!(by_size["rooms"][0]["room_id"], big);
    assert_eq!(by_size["next_batch"], 1);
    let second = server.get("/_synapse/admin/v1/rooms?order_by=joined_members&limit=1&from=1", Some(&admin)).await.ok();
    assert_eq!(second["offset"], 1);
    assert_eq!(second["prev_batch"], 0);
    let searched = server.get("/_synapse/admin/v1/rooms?search_term=BIG", Some(&admin)).await.ok();
    assert_eq!(searched["total_rooms"], 1);
    assert_eq!(searched["rooms"][0]["room_id"], big);
    server.get("/_synapse/admin/v1/rooms?order_by=nonsense", Some(&admin)).await.err(400, "M_INVALID_PARAM");

    let details = server.get(&format!("/_synapse/admin/v1/rooms/{}", enc(&big)), Some(&admin)).await.ok();
    assert_eq!(details["topic"], "all of us");
    assert_eq!(details["name"], "Big room");
    server.get("/_synapse/admin/v1/rooms/%21nope%3Alocalhost", Some(&admin)).await.err(404, "M_NOT_FOUND");
    let members = server.get(&format!("/_synapse/admin/v1/rooms/{}/members", enc(&big)), Some(&admin)).await.ok();
    assert_eq!(members, json!({ "members": [alice_id, bob_id], "total": 2 }));
    // The state, though the admin is not in the room.
    let state = server.get(&format!("/_synapse/admin/v1/rooms/{}/state", enc(&big)), Some(&admin)).await.ok();
    let types: Vec<&str> = state["state"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"m.room.create") && types.contains(&"m.room.topic"), "{types:?}");
    assert_eq!(types.len() as i64, details["state_events"].as_i64().unwrap());
    server.stop().await;
}

/// Deleting a room: local members leave, aliases go, the room can be blocked, and a purge
/// leaves nothing of it in the database.
#[tokio::test]
async fn deleting_a_room_purges_it_and_blocks_rejoining() {
    let server = TestServer::start().await;
    let (_, admin) = server.register_admin("root").await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (carol_id, _) = server.register("carol").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat", "room_alias_name": "doomed", "visibility": "public" })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    server.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), Some(&alice), json!({ "user_id": carol_id })).await.ok();
    for i in 0..5 {
        server.send_text(&alice, &room, &format!("m{i}"), &format!("zanzibar {i}")).await;
    }
    server.post(&format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&server.send_text(&bob, &room, "b", "bye").await)), Some(&bob), json!({})).await.ok();
    let keeper = server.create_room(&alice, json!({})).await;

    server.delete(&format!("/_synapse/admin/v2/rooms/{}", enc(&room)), Some(&alice), json!({})).await.err(403, "M_FORBIDDEN");
    server
        .delete(&format!("/_synapse/admin/v2/rooms/{}", enc(&room)), Some(&admin), json!({ "new_room_user_id": alice_id }))
        .await
        .err(400, "M_INVALID_PARAM");
    let deleted = server.delete(&format!("/_synapse/admin/v2/rooms/{}", enc(&room)), Some(&admin), json!({ "block": true, "purge": true })).await.ok();
    let delete_id = deleted["delete_id"].as_str().unwrap().to_owned();
    let status = server.get(&format!("/_synapse/admin/v2/rooms/delete_status/{}", enc(&delete_id)), Some(&admin)).await.ok();
    assert_eq!(status["status"], "complete", "{status}");
    let mut kicked: Vec<String> = status["shutdown_room"]["kicked_users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_owned()).collect();
    kicked.sort();
    assert_eq!(kicked, vec![alice_id.clone(), bob_id.clone(), carol_id.clone()]);
    assert_eq!(status["shutdown_room"]["local_aliases"], json!(["#doomed:localhost"]));
    let by_room = server.get(&format!("/_synapse/admin/v2/rooms/{}/delete_status", enc(&room)), Some(&admin)).await.ok();
    assert_eq!(by_room["results"][0]["delete_id"], delete_id);

    // Nothing of the room is left in the database.
    let db = server.database().await;
    for table in ["events", "current_state", "room_memberships", "state_groups", "receipts", "event_push_actions", "room_aliases", "rooms", "event_relations", "invite_states"] {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE room_id = $1")).bind(&room).fetch_one(&db).await.unwrap();
        assert_eq!(rows, 0, "rows of the room left in {table}");
    }
    let keeper_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE room_id = $1").bind(&keeper).fetch_one(&db).await.unwrap();
    assert!(keeper_rows > 0, "other rooms keep their events");
    db.close().await;
    // ... nor in what the API serves.
    let joined = server.get("/_matrix/client/v3/joined_rooms", Some(&alice)).await.ok();
    assert_eq!(joined["joined_rooms"], json!([keeper]));
    let search = server.post("/_matrix/client/v3/search", Some(&alice), json!({ "search_categories": { "room_events": { "search_term": "zanzibar" } } })).await.ok();
    assert_eq!(search["search_categories"]["room_events"]["count"], 0, "{search}");
    server.get("/_matrix/client/v3/directory/room/%23doomed%3Alocalhost", None).await.err(404, "M_NOT_FOUND");
    server.get(&format!("/_synapse/admin/v1/rooms/{}", enc(&room)), Some(&admin)).await.err(404, "M_NOT_FOUND");
    let public = server.get("/_matrix/client/v3/publicRooms", None).await.ok();
    assert_eq!(public["chunk"], json!([]));

    // Blocked: nobody here may join it again, until unblocked.
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&bob), json!({})).await.err(403, "M_FORBIDDEN");
    let block = format!("/_synapse/admin/v1/rooms/{}/block", enc(&room));
    assert_eq!(server.get(&block, Some(&admin)).await.ok(), json!({ "block": true, "user_id": "@root:localhost" }));
    assert_eq!(server.put(&block, Some(&admin), json!({ "block": false })).await.ok(), json!({ "block": false }));
    assert_eq!(server.get(&block, Some(&admin)).await.ok(), json!({ "block": false }));

    // v1 without purge: members leave, the room stays.
    let second = server.create_room(&alice, json!({})).await;
    let shutdown = server.delete(&format!("/_synapse/admin/v1/rooms/{}", enc(&second)), Some(&admin), json!({ "purge": false })).await.ok();
    assert_eq!(shutdown["kicked_users"], json!([alice_id]));
    let details = server.get(&format!("/_synapse/admin/v1/rooms/{}", enc(&second)), Some(&admin)).await.ok();
    assert_eq!(details["joined_members"], 0);
    server.stop().await;
}

/// Reports: users report users, events and rooms; admins list, read and delete event
/// reports through Synapse's admin API. And the load balancer's /health.
#[tokio::test]
async fn reports_reach_the_admins() {
    let server = TestServer::start().await;
    let (_, admin) = server.register_admin("root").await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let health = server.get("/health", None).await;
    assert_eq!((health.status.as_u16(), health.body.clone()), (200, json!("OK")));

    server.post(&format!("/_matrix/client/v3/users/{}/report", enc(&bob_id)), Some(&alice), json!({ "reason": "spam" })).await.ok();
    server.post("/_matrix/client/v3/users/%40ghost%3Alocalhost/report", Some(&alice), json!({ "reason": "x" })).await.err(404, "M_NOT_FOUND");
    server.post(&format!("/_matrix/client/v3/users/{}/report", enc(&bob_id)), Some(&alice), json!({})).await.err(400, "M_MISSING_PARAM");

    let room = server.create_room(&alice, json!({ "name": "Reported", "preset": "public_chat" })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    let bad = server.send_text(&bob, &room, "b1", "something awful").await;
    server
        .post(&format!("/_matrix/client/v3/rooms/{}/report/{}", enc(&room), enc(&bad)), Some(&alice), json!({ "reason": "awful", "score": -100 }))
        .await
        .ok();
    server.post(&format!("/_matrix/client/v3/rooms/{}/report", enc(&room)), Some(&bob), json!({ "reason": "the whole room" })).await.ok();

    server.get("/_synapse/admin/v1/event_reports", Some(&alice)).await.err(403, "M_FORBIDDEN");
    let listed = server.get("/_synapse/admin/v1/event_reports", Some(&admin)).await.ok();
    assert_eq!(listed["total"], 2);
    assert_eq!(listed["event_reports"][0]["user_id"], bob_id, "newest first: {listed}");
    let event_report = &listed["event_reports"][1];
    assert_eq!(event_report["user_id"], alice_id);
    assert_eq!(event_report["event_id"], bad);
    assert_eq!(event_report["sender"], bob_id);
    assert_eq!(event_report["reason"], "awful");
    assert_eq!(event_report["name"], "Reported");
    let by_sender = server.get(&format!("/_synapse/admin/v1/event_reports?event_sender_user_id={}", enc(&bob_id)), Some(&admin)).await.ok();
    assert_eq!(by_sender["total"], 1);
    let paged = server.get("/_synapse/admin/v1/event_reports?limit=1&dir=f", Some(&admin)).await.ok();
    assert_eq!(paged["event_reports"][0]["event_id"], bad);
    assert_eq!(paged["next_token"], 1);

    let id = event_report["id"].as_i64().unwrap();
    let details = server.get(&format!("/_synapse/admin/v1/event_reports/{id}"), Some(&admin)).await.ok();
    assert_eq!(details["event_json"]["content"]["body"], "something awful", "{details}");
    server.get("/_synapse/admin/v1/event_reports/abc", Some(&admin)).await.err(400, "M_INVALID_PARAM");
    server.delete(&format!("/_synapse/admin/v1/event_reports/{id}"), Some(&admin), json!({})).await.ok();
    server.get(&format!("/_synapse/admin/v1/event_reports/{id}"), Some(&admin)).await.err(404, "M_NOT_FOUND");
    assert_eq!(server.get("/_synapse/admin/v1/event_reports", Some(&admin)).await.ok()["total"], 1);
    server.stop().await;
}
