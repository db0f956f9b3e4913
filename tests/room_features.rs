//! Redaction, context, timestamp lookup, relations and threads, aliases, the public room
//! directory, space hierarchies, account data, tags and reports — over HTTP.

mod common;

use common::{bodies, enc, TestServer};
use serde_json::{json, Value};

async fn send(server: &TestServer, token: &str, room: &str, txn: &str, content: Value) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
    server.put(&path, Some(token), content).await.ok()["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn redaction() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    for version in ["10", "11", "12"] {
        let room = server.create_room(&alice, json!({ "preset": "public_chat", "room_version": version })).await;
        let base = format!("/_matrix/client/v3/rooms/{}", enc(&room));
        server.post(&format!("{base}/join"), Some(&bob), json!({})).await.ok();
        let bob_msg = server.send_text(&bob, &room, "b1", "bob's secret").await;
        let alice_msg = server.send_text(&alice, &room, "a1", "alice's words").await;

        // Bob (power 0) may redact his own event, not alice's.
        server
            .put(&format!("{base}/redact/{}/r1", enc(&alice_msg)), Some(&bob), json!({}))
            .await
            .err(403, "M_FORBIDDEN");
        // Nor may alice redact, through this room, an event of another room.
        let elsewhere = server.create_room(&alice, json!({ "room_version": version })).await;
        let other_msg = server.send_text(&alice, &elsewhere, "e1", "elsewhere").await;
        server
            .put(&format!("{base}/redact/{}/r0", enc(&other_msg)), Some(&alice), json!({}))
            .await
            .err(400, "M_INVALID_PARAM");
        let redaction = server
            .put(&format!("{base}/redact/{}/r2", enc(&bob_msg)), Some(&bob), json!({ "reason": "oops" }))
            .await
            .ok()["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        // Idempotent per transaction.
        let again = server.put(&format!("{base}/redact/{}/r2", enc(&bob_msg)), Some(&bob), json!({ "reason": "oops" })).await.ok();
        assert_eq!(again["event_id"], redaction);

        let event = server.get(&format!("{base}/event/{}", enc(&bob_msg)), Some(&alice)).await.ok();
        assert_eq!(event["content"], json!({}), "v{version}: content is gone");
        assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redaction);
        assert_eq!(event["unsigned"]["redacted_by"], redaction);
        assert_eq!(event["unsigned"]["redacted_because"]["content"]["reason"], "oops");
        let redaction_event = server.get(&format!("{base}/event/{}", enc(&redaction)), Some(&alice)).await.ok();
        assert_eq!(redaction_event["redacts"], bob_msg, "v{version}: redacts is visible to clients");

        // Alice (power 100) may redact bob's events.
        let bob_msg2 = server.send_text(&bob, &room, "b2", "another").await;
        server.put(&format!("{base}/redact/{}/r3", enc(&bob_msg2)), Some(&alice), json!({})).await.ok();
        let page = server.messages(&alice, &room, "dir=b&limit=20").await;
        assert_eq!(bodies(&page), vec!["alice's words"]);
        let _ = &bob_id;
    }
    server.stop().await;
}

#[tokio::test]
async fn context_and_timestamp_lookup() {
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    let room = server.create_room(&token, json!({})).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(server.send_text(&token, &room, &format!("t{i}"), &format!("m{i}")).await);
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let base = format!("/_matrix/client/v3/rooms/{}", enc(&room));
    let context = server.get(&format!("{base}/context/{}?limit=4", enc(&ids[5])), Some(&token)).await.ok();
    assert_eq!(context["event"]["content"]["body"], "m5");
    let before: Vec<&str> = context["events_before"].as_array().unwrap().iter().map(|e| e["content"]["body"].as_str().unwrap()).collect();
    let after: Vec<&str> = context["events_after"].as_array().unwrap().iter().map(|e| e["content"]["body"].as_str().unwrap()).collect();
    assert_eq!(before, vec!["m4", "m3"]);
    assert_eq!(after, vec!["m6", "m7"]);
    assert!(context["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"));
    // The tokens continue the timeline in both directions.
    let older = server.messages(&token, &room, &format!("dir=b&limit=1&from={}", context["start"].as_str().unwrap())).await;
    assert_eq!(bodies(&older), vec!["m2"]);
    let newer = server.messages(&token, &room, &format!("dir=f&limit=1&from={}", context["end"].as_str().unwrap())).await;
    assert_eq!(bodies(&newer), vec!["m8"]);
    server.get(&format!("{base}/context/%24nope"), Some(&token)).await.err(404, "M_NOT_FOUND");

    let event = server.get(&format!("{base}/event/{}", enc(&ids[3])), Some(&token)).await.ok();
    let ts = event["origin_server_ts"].as_u64().unwrap();
    let found = server.get(&format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir=f", enc(&room)), Some(&token)).await.ok();
    assert_eq!(found["event_id"], ids[3]);
    let found = server.get(&format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={}&dir=b", enc(&room), ts + 1), Some(&token)).await.ok();
    assert_eq!(found["event_id"], ids[3]);
    server
        .get(&format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts=1&dir=b", enc(&room)), Some(&token))
        .await
        .err(404, "M_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn relations_threads_and_bundles() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    let root = server.send_text(&alice, &room, "root", "thread root").await;

    let edit = send(&server, &alice, &room, "e1", json!({
        "msgtype": "m.text", "body": "* edited",
        "m.new_content": { "msgtype": "m.text", "body": "edited" },
        "m.relates_to": { "rel_type": "m.replace", "event_id": root }
    })).await;
    let reaction_path = format!("/_matrix/client/v3/rooms/{}/send/m.reaction/re1", enc(&room));
    server.put(&reaction_path, Some(&bob), json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": root, "key": "👍" } })).await.ok();
    let reply1 = send(&server, &bob, &room, "th1", json!({ "msgtype": "m.text", "body": "in thread 1", "m.relates_to": { "rel_type": "m.thread", "event_id": root } })).await;
    let reply2 = send(&server, &alice, &room, "th2", json!({ "msgtype": "m.text", "body": "in thread 2", "m.relates_to": { "rel_type": "m.thread", "event_id": root } })).await;
    // An edit of a thread reply: found with recurse.
    send(&server, &alice, &room, "e2", json!({
        "msgtype": "m.text", "body": "* fixed", "m.new_content": { "msgtype": "m.text", "body": "fixed" },
        "m.relates_to": { "rel_type": "m.replace", "event_id": reply2 }
    })).await;

    let base = format!("/_matrix/client/v1/rooms/{}/relations/{}", enc(&room), enc(&root));
    let all = server.get(&base, Some(&alice)).await.ok();
    assert_eq!(all["chunk"].as_array().unwrap().len(), 4);
    assert_eq!(all["chunk"][0]["event_id"], reply2, "newest first");
    let threads_only = server.get(&format!("{base}/m.thread"), Some(&alice)).await.ok();
    let ids: Vec<&str> = threads_only["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![reply2.as_str(), reply1.as_str()]);
    let reactions = server.get(&format!("{base}/m.annotation/m.reaction"), Some(&alice)).await.ok();
    assert_eq!(reactions["chunk"].as_array().unwrap().len(), 1);
    // Pagination.
    let first = server.get(&format!("{base}?limit=2"), Some(&alice)).await.ok();
    assert_eq!(first["chunk"].as_array().unwrap().len(), 2);
    let next = first["next_batch"].as_str().unwrap();
    let second = server.get(&format!("{base}?limit=2&from={next}"), Some(&alice)).await.ok();
    assert_eq!(second["chunk"].as_array().unwrap().len(), 2);
    assert!(second.get("next_batch").is_none());
    let forward = server.get(&format!("{base}?dir=f"), Some(&alice)).await.ok();
    assert_eq!(forward["chunk"][0]["event_id"], edit);
    let recursed = server.get(&format!("{base}?recurse=true"), Some(&alice)).await.ok();
    assert_eq!(recursed["chunk"].as_array().unwrap().len(), 5);
    assert!(recursed["recursion_depth"].as_u64().is_some());

    // The root carries bundled aggregations.
    let event = server.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&root)), Some(&bob)).await.ok();
    let bundle = &event["unsigned"]["m.relations"];
    assert_eq!(bundle["m.thread"]["count"], 2);
    assert_eq!(bundle["m.thread"]["latest_event"]["event_id"], reply2);
    assert_eq!(bundle["m.thread"]["current_user_participated"], true);
    assert_eq!(bundle["m.replace"]["event_id"], edit);
    // The same bundles on the paths that look relations up once per page: /messages and /sync.
    let page = server.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(&room)), Some(&bob)).await.ok();
    let in_page = |id: &str| page["chunk"].as_array().unwrap().iter().find(|e| e["event_id"] == id).cloned().unwrap();
    assert_eq!(in_page(&root)["unsigned"]["m.relations"]["m.thread"]["count"], 2);
    assert_eq!(in_page(&root)["unsigned"]["m.relations"]["m.replace"]["event_id"], edit);
    assert!(in_page(&reply1)["unsigned"].get("m.relations").is_none(), "reply1 has no relations");
    let filter = enc(r#"{"room":{"timeline":{"limit":50}}}"#);
    let sync = server.get(&format!("/_matrix/client/v3/sync?filter={filter}"), Some(&bob)).await.ok();
    let timeline = sync["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().clone();
    let root_in_sync = timeline.iter().find(|e| e["event_id"] == root).unwrap();
    assert_eq!(root_in_sync["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"], reply2);

    // /threads lists the root; participated filters by the viewer.
    let threads = server.get(&format!("/_matrix/client/v1/rooms/{}/threads", enc(&room)), Some(&bob)).await.ok();
    assert_eq!(threads["chunk"][0]["event_id"], root);
    let (_, carol) = server.register("carol").await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&carol), json!({})).await.ok();
    let mine = server.get(&format!("/_matrix/client/v1/rooms/{}/threads?include=participated", enc(&room)), Some(&carol)).await.ok();
    assert_eq!(mine["chunk"].as_array().unwrap().len(), 0);
    let _ = alice_id;
    server.stop().await;
}

#[tokio::test]
async fn aliases() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let path = "/_matrix/client/v3/directory/room/%23team%3Alocalhost";
    server.put(path, Some(&alice), json!({ "room_id": room })).await.ok();
    server.put(path, Some(&alice), json!({ "room_id": room })).await.err(409, "M_UNKNOWN");
    let resolved = server.get(path, None).await.ok();
    assert_eq!(resolved["room_id"], room);
    assert_eq!(resolved["servers"], json!(["localhost"]));
    server.get("/_matrix/client/v3/directory/room/%23nope%3Alocalhost", None).await.err(404, "M_NOT_FOUND");
    server.put("/_matrix/client/v3/directory/room/%23x%3Aelsewhere.org", Some(&alice), json!({ "room_id": room })).await.err(400, "M_INVALID_PARAM");
    // Bob is not in the room: cannot add aliases to it.
    server.put("/_matrix/client/v3/directory/room/%23bobs%3Alocalhost", Some(&bob), json!({ "room_id": room })).await.err(403, "M_FORBIDDEN");

    // Canonical alias pointing at it, then the alias list.
    server
        .put(&format!("/_matrix/client/v3/rooms/{}/state/m.room.canonical_alias", enc(&room)), Some(&alice), json!({ "alias": "#team:localhost" }))
        .await
        .ok();
    let list = server.get(&format!("/_matrix/client/v3/rooms/{}/aliases", enc(&room)), Some(&alice)).await.ok();
    assert_eq!(list["aliases"], json!(["#team:localhost"]));

    // Bob joins (power 0): he cannot delete alice's alias.
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    server.delete(path, Some(&bob), json!({})).await.err(403, "M_FORBIDDEN");
    server.delete(path, Some(&alice), json!({})).await.ok();
    server.get(path, None).await.err(404, "M_NOT_FOUND");
    // ...and the canonical alias no longer names it.
    let canonical = server
        .get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.canonical_alias", enc(&room)), Some(&alice))
        .await
        .ok();
    assert!(canonical.get("alias").is_none(), "{canonical}");
    server.stop().await;
}

#[tokio::test]
async fn public_room_directory() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let mut public = Vec::new();
    for i in 0..5 {
        public.push(server.create_room(&alice, json!({ "visibility": "public", "name": format!("Public {i}"), "topic": if i == 3 { "rust talk" } else { "chat" } })).await);
    }
    let private = server.create_room(&alice, json!({ "name": "Secret" })).await;
    let listed = server.get("/_matrix/client/v3/publicRooms", None).await.ok();
    assert_eq!(listed["chunk"].as_array().unwrap().len(), 5);
    assert_eq!(listed["total_room_count_estimate"], 5);
    assert!(listed["chunk"].as_array().unwrap().iter().all(|r| r["name"] != "Secret"));
    // join_rule may be omitted when public (the spec's default).
    assert!(matches!(listed["chunk"][0]["join_rule"].as_str(), None | Some("public")));
    assert_eq!(listed["chunk"][0]["num_joined_members"], 1);

    // Pagination.
    let page1 = server.get("/_matrix/client/v3/publicRooms?limit=2", None).await.ok();
    assert_eq!(page1["chunk"].as_array().unwrap().len(), 2);
    let since = page1["next_batch"].as_str().unwrap();
    let page2 = server.post("/_matrix/client/v3/publicRooms", Some(&bob), json!({ "limit": 2, "since": since })).await.ok();
    assert_eq!(page2["chunk"].as_array().unwrap().len(), 2);
    assert!(page2["prev_batch"].is_string());
    // Search.
    let found = server.post("/_matrix/client/v3/publicRooms", Some(&bob), json!({ "filter": { "generic_search_term": "RUST" } })).await.ok();
    assert_eq!(found["chunk"].as_array().unwrap().len(), 1);
    assert_eq!(found["chunk"][0]["room_id"], public[3]);

    // Visibility get/put.
    let vis = format!("/_matrix/client/v3/directory/list/room/{}", enc(&private));
    assert_eq!(server.get(&vis, None).await.ok()["visibility"], "private");
    server.put(&vis, Some(&bob), json!({ "visibility": "public" })).await.err(403, "M_FORBIDDEN");
    server.put(&vis, Some(&alice), json!({ "visibility": "public" })).await.ok();
    assert_eq!(server.get(&vis, None).await.ok()["visibility"], "public");
    let listed = server.get("/_matrix/client/v3/publicRooms", None).await.ok();
    assert_eq!(listed["chunk"].as_array().unwrap().len(), 6);
    server.get("/_matrix/client/v3/directory/list/room/!unknown:localhost", None).await.err(404, "M_NOT_FOUND");
    server.get("/_matrix/client/v3/publicRooms?since=garbage", None).await.err(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn account_data_and_tags() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({})).await;
    let global = format!("/_matrix/client/v3/user/{}/account_data/org.example.settings", enc(&alice_id));
    server.get(&global, Some(&alice)).await.err(404, "M_NOT_FOUND");
    server.put(&global, Some(&alice), json!({ "theme": "dark" })).await.ok();
    assert_eq!(server.get(&global, Some(&alice)).await.ok()["theme"], "dark");
    server.put(&global, Some(&alice), json!({ "theme": "light" })).await.ok();
    assert_eq!(server.get(&global, Some(&alice)).await.ok()["theme"], "light");
    server.get(&global, Some(&bob)).await.err(403, "M_FORBIDDEN");
    server.put(&global, Some(&alice), json!([1, 2])).await.err(400, "M_BAD_JSON");

    let per_room = format!("/_matrix/client/v3/user/{}/rooms/{}/account_data/org.example.draft", enc(&alice_id), enc(&room));
    server.put(&per_room, Some(&alice), json!({ "text": "unsent" })).await.ok();
    assert_eq!(server.get(&per_room, Some(&alice)).await.ok()["text"], "unsent");
    let fully_read = format!("/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read", enc(&alice_id), enc(&room));
    let refused = server.put(&fully_read, Some(&alice), json!({ "event_id": "$x" })).await;
    assert_eq!(refused.status, 405);

    let tags = format!("/_matrix/client/v3/user/{}/rooms/{}/tags", enc(&alice_id), enc(&room));
    assert_eq!(server.get(&tags, Some(&alice)).await.ok()["tags"], json!({}));
    server.put(&format!("{tags}/m.favourite"), Some(&alice), json!({ "order": 0.5 })).await.ok();
    server.put(&format!("{tags}/u.work"), Some(&alice), json!({})).await.ok();
    let listed = server.get(&tags, Some(&alice)).await.ok();
    assert_eq!(listed["tags"]["m.favourite"]["order"], 0.5);
    assert!(listed["tags"]["u.work"].is_object());
    server.delete(&format!("{tags}/u.work"), Some(&alice), json!({})).await.ok();
    let listed = server.get(&tags, Some(&alice)).await.ok();
    assert!(listed["tags"].get("u.work").is_none());
    server.get(&tags, Some(&bob)).await.err(403, "M_FORBIDDEN");
    server.stop().await;
}

#[tokio::test]
async fn reports() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let event = server.send_text(&alice, &room, "t", "offensive").await;
    // Bob is not in the room: the event looks absent (spec v1.8: 404).
    let path = format!("/_matrix/client/v3/rooms/{}/report/{}", enc(&room), enc(&event));
    server.post(&path, Some(&bob), json!({ "reason": "spam" })).await.err(404, "M_NOT_FOUND");
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    server.post(&path, Some(&bob), json!({ "reason": "spam", "score": -100 })).await.ok();
    server
        .post(&format!("/_matrix/client/v3/rooms/{}/report/%24missing", enc(&room)), Some(&bob), json!({ "reason": "x" }))
        .await
        .err(404, "M_NOT_FOUND");
    server.post(&format!("/_matrix/client/v3/rooms/{}/report", enc(&room)), Some(&bob), json!({ "reason": "bad room" })).await.ok();
    server.post("/_matrix/client/v3/rooms/!nope:localhost/report", Some(&bob), json!({ "reason": "x" })).await.err(404, "M_NOT_FOUND");
    server.stop().await;
}

/// Room ids of a `/hierarchy` answer, in order.
fn hierarchy_ids(answer: &Value) -> Vec<String> {
    answer["rooms"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn space_hierarchy() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, charlie) = server.register("charlie").await;
    let space_body = json!({ "preset": "public_chat", "name": "Space", "creation_content": { "type": "m.space" } });
    let space = server.create_room(&alice, space_body.clone()).await;
    let public = server.create_room(&alice, json!({ "preset": "public_chat", "name": "Public" })).await;
    let restricted = server
        .create_room(&alice, json!({ "preset": "private_chat", "initial_state": [{ "type": "m.room.join_rules", "state_key": "",
            "content": { "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] } }] }))
        .await;
    let private = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let sub = server.create_room(&alice, space_body).await;
    let grandchild = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let link = |parent: &str, child: &str, extra: Value| {
        let mut content = json!({ "via": ["localhost"] });
        content.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.space.child/{}", enc(parent), enc(child));
        let server = &server;
        let alice = alice.clone();
        async move { server.put(&path, Some(&alice), content).await.ok() }
    };
    link(&space, &public, json!({ "order": "b", "suggested": true })).await;
    link(&space, &restricted, json!({ "order": "a" })).await;
    link(&space, &private, json!({})).await;
    link(&space, &sub, json!({})).await;
    link(&sub, &grandchild, json!({})).await;
    // A link without `via` is no link.
    let unlinked = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server
        .put(&format!("/_matrix/client/v3/rooms/{}/state/m.space.child/{}", enc(&space), enc(&unlinked)), Some(&alice), json!({}))
        .await
        .ok();

    let path = format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&space));
    let everything = server.get(&path, Some(&alice)).await.ok();
    assert_eq!(hierarchy_ids(&everything), [space.as_str(), restricted.as_str(), public.as_str(), private.as_str(), sub.as_str(), grandchild.as_str()], "{everything}");
    let root = &everything["rooms"][0];
    assert_eq!(root["room_type"], "m.space");
    assert_eq!(root["children_state"].as_array().unwrap().len(), 4);
    assert!(root["children_state"][0]["origin_server_ts"].is_u64());
    assert_eq!(everything["rooms"][1]["allowed_room_ids"], json!([space]));
    assert!(everything.get("next_batch").is_none());

    // Charlie sees only what he could join or peek; joining the space opens the restricted room.
    let outside = server.get(&path, Some(&charlie)).await.ok();
    assert_eq!(hierarchy_ids(&outside), [space.as_str(), public.as_str(), sub.as_str(), grandchild.as_str()]);
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&space)), Some(&charlie), json!({})).await.ok();
    let inside = server.get(&path, Some(&charlie)).await.ok();
    assert_eq!(hierarchy_ids(&inside), [space.as_str(), restricted.as_str(), public.as_str(), sub.as_str(), grandchild.as_str()]);

    let shallow = server.get(&format!("{path}?max_depth=1"), Some(&alice)).await.ok();
    assert_eq!(hierarchy_ids(&shallow), [space.as_str(), restricted.as_str(), public.as_str(), private.as_str(), sub.as_str()]);
    let suggested = server.get(&format!("{path}?suggested_only=true"), Some(&alice)).await.ok();
    assert_eq!(hierarchy_ids(&suggested), [space.as_str(), public.as_str()]);

    // Pages of two, until there is no next_batch.
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..3 {
        let query = match &from {
            Some(token) => format!("{path}?limit=2&from={token}"),
            None => format!("{path}?limit=2"),
        };
        let page = server.get(&query, Some(&alice)).await.ok();
        assert_eq!(page["rooms"].as_array().unwrap().len(), 2);
        seen.extend(hierarchy_ids(&page));
        from = page["next_batch"].as_str().map(str::to_owned);
    }
    assert!(from.is_none(), "the third page is the last");
    assert_eq!(seen, hierarchy_ids(&everything));

    let first = server.get(&format!("{path}?limit=2"), Some(&alice)).await.ok();
    let token = first["next_batch"].as_str().unwrap();
    server.get(&format!("{path}?limit=2&from={token}&max_depth=1"), Some(&alice)).await.err(400, "M_INVALID_PARAM");
    server.get(&format!("{path}?from=nonsense"), Some(&alice)).await.err(400, "M_INVALID_PARAM");
    server.get(&format!("{path}?limit=0"), Some(&alice)).await.err(400, "M_INVALID_PARAM");
    let hidden = format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&private));
    server.get(&hidden, Some(&charlie)).await.err(403, "M_FORBIDDEN");
    server.stop().await;
}

/// The POST forms of send and redact without a transaction id (deprecated; Synapse serves
/// them and SyTest sends them): each request is a new event, never deduplicated.
#[tokio::test]
async fn send_and_redact_without_transaction_id() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let base = format!("/_matrix/client/v3/rooms/{}", enc(&room));
    let first = server.post(&format!("{base}/send/m.room.message"), Some(&alice), json!({ "msgtype": "m.text", "body": "one" })).await.ok();
    let second = server.post(&format!("{base}/send/m.room.message"), Some(&alice), json!({ "msgtype": "m.text", "body": "one" })).await.ok();
    let (first, second) = (first["event_id"].as_str().unwrap(), second["event_id"].as_str().unwrap());
    assert_ne!(first, second, "the same body twice is two events");
    let messages = server.messages(&alice, &room, "dir=b&limit=5").await;
    assert_eq!(common::bodies(&messages)[..2], ["one".to_owned(), "one".to_owned()]);

    let redaction = server.post(&format!("{base}/redact/{}", enc(first)), Some(&alice), json!({ "reason": "dup" })).await.ok();
    assert!(redaction["event_id"].as_str().unwrap().starts_with('$'));
    let redacted = server.get(&format!("{base}/event/{}", enc(first)), Some(&alice)).await.ok();
    assert_eq!(redacted["content"], json!({}));
    assert_eq!(redacted["unsigned"]["redacted_because"]["content"]["reason"], "dup");

    // Errors are the PUT form's.
    server.post(&format!("{base}/send/m.room.message"), None, json!({})).await.err(401, "M_MISSING_TOKEN");
    server.post(&format!("{base}/redact/{}", enc(second)), None, json!({})).await.err(401, "M_MISSING_TOKEN");
    let (_, bob) = server.register("bob").await;
    server.post(&format!("{base}/send/m.room.message"), Some(&bob), json!({ "body": "not in" })).await.err(403, "M_FORBIDDEN");
    server.stop().await;
}
