//! Server-side search (`POST /search`) through HTTP: ranking, scripts, visibility, redaction,
//! filters, paging, context, state and groupings.

mod common;

use common::{enc, TestServer};
use serde_json::{json, Value};

async fn search(server: &TestServer, token: &str, criteria: Value) -> Value {
    search_page(server, token, criteria, None).await
}

async fn search_page(server: &TestServer, token: &str, criteria: Value, next_batch: Option<&str>) -> Value {
    let path = match next_batch {
        Some(batch) => format!("/_matrix/client/v3/search?next_batch={}", enc(batch)),
        None => "/_matrix/client/v3/search".to_owned(),
    };
    let reply = server.post(&path, Some(token), json!({ "search_categories": { "room_events": criteria } })).await.ok();
    reply["search_categories"]["room_events"].clone()
}

fn bodies(result: &Value) -> Vec<String> {
    // An empty `results` may be left out.
    result["results"].as_array().map(Vec::as_slice).unwrap_or_default().iter().map(|r| r["result"]["content"]["body"].as_str().unwrap_or("").to_owned()).collect()
}

#[tokio::test]
async fn ranks_matches_and_reports_count_and_highlights() {
    let server = TestServer::start().await;
    let (_alice, token) = server.register("alice").await;
    let room = server.create_room(&token, json!({})).await;
    server.send_text(&token, &room, "t1", "a cat sat on the mat next to a dog and a bird and a fish").await;
    server.send_text(&token, &room, "t2", "cat cat cat").await;
    server.send_text(&token, &room, "t3", "only dogs here").await;

    let result = search(&server, &token, json!({ "search_term": "cat" })).await;
    assert_eq!(bodies(&result), vec!["cat cat cat", "a cat sat on the mat next to a dog and a bird and a fish"], "best match first");
    assert_eq!(result["count"], 2);
    assert_eq!(result["highlights"], json!(["cat"]));
    let ranks: Vec<f64> = result["results"].as_array().unwrap().iter().map(|r| r["rank"].as_f64().unwrap()).collect();
    assert!(ranks[0] > ranks[1], "ranks {ranks:?}");

    // Every word must match; phrases, exclusions and alternatives as web search has them.
    assert_eq!(bodies(&search(&server, &token, json!({ "search_term": "cat fish" })).await).len(), 1);
    assert_eq!(bodies(&search(&server, &token, json!({ "search_term": "\"mat next\"" })).await).len(), 1);
    assert_eq!(bodies(&search(&server, &token, json!({ "search_term": "\"next mat\"" })).await).len(), 0);
    assert_eq!(bodies(&search(&server, &token, json!({ "search_term": "cat -fish" })).await), vec!["cat cat cat"]);
    assert_eq!(bodies(&search(&server, &token, json!({ "search_term": "fish OR dogs" })).await).len(), 2);
    assert_eq!(bodies(&search(&server, &token, json!({ "search_term": "do*" })).await).len(), 2, "prefix: dog, dogs");

    // By recency instead.
    let recent = search(&server, &token, json!({ "search_term": "cat", "order_by": "recent" })).await;
    assert_eq!(bodies(&recent), vec!["cat cat cat", "a cat sat on the mat next to a dog and a bird and a fish"]);
    let recent = search(&server, &token, json!({ "search_term": "dog OR dogs", "order_by": "recent" })).await;
    assert_eq!(bodies(&recent)[0], "only dogs here");
}

#[tokio::test]
async fn words_match_across_case_diacritics_and_scripts() {
    let server = TestServer::start().await;
    let (_alice, token) = server.register("alice").await;
    let room = server.create_room(&token, json!({})).await;
    server.send_text(&token, &room, "t1", "Café Crème at NOON").await;
    server.send_text(&token, &room, "t2", "Привет, мир!").await;
    server.send_text(&token, &room, "t3", "東京タワーに行きました").await;
    server.send_text(&token, &room, "t4", "Γειά σου Κόσμε").await;

    for (term, expected) in [
        ("cafe creme", "Café Crème at NOON"),
        ("CAFÉ noon", "Café Crème at NOON"),
        ("привет", "Привет, мир!"),
        ("МИР", "Привет, мир!"),
        ("東京", "東京タワーに行きました"),
        ("タワー", "東京タワーに行きました"),
        ("κοσμε", "Γειά σου Κόσμε"),
    ] {
        let result = search(&server, &token, json!({ "search_term": term })).await;
        assert_eq!(bodies(&result), vec![expected], "searching {term}");
    }
    // CJK words are phrases of their characters, in order.
    assert_eq!(bodies(&search(&server, &token, json!({ "search_term": "京東" })).await).len(), 0);
    // Nothing searchable: no results, not an error.
    assert_eq!(bodies(&search(&server, &token, json!({ "search_term": "!!!" })).await).len(), 0);
}

#[tokio::test]
async fn never_finds_what_the_user_may_not_see() {
    let server = TestServer::start().await;
    let (alice, alice_token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let (_eve, eve_token) = server.register("eve").await;
    let room = server
        .create_room(
            &alice_token,
            json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } }] }),
        )
        .await;
    server.send_text(&alice_token, &room, "t1", "secret before bob joined").await;
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&bob_token), json!({})).await.ok();
    server.send_text(&alice_token, &room, "t2", "secret after bob joined").await;
    let redacted = server.send_text(&alice_token, &room, "t3", "secret then redacted").await;
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&room), enc(&redacted));
    server.put(&path, Some(&alice_token), json!({})).await.ok();

    assert_eq!(
        bodies(&search(&server, &alice_token, json!({ "search_term": "secret", "order_by": "recent" })).await),
        vec!["secret after bob joined", "secret before bob joined"],
        "the redacted message is gone from the index"
    );
    assert_eq!(bodies(&search(&server, &bob_token, json!({ "search_term": "secret" })).await), vec!["secret after bob joined"]);
    assert_eq!(bodies(&search(&server, &eve_token, json!({ "search_term": "secret" })).await).len(), 0, "not a member");

    // Rooms left are not searched.
    server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&bob_token), json!({})).await.ok();
    assert_eq!(bodies(&search(&server, &bob_token, json!({ "search_term": "secret" })).await).len(), 0);
    let _ = (alice, bob);
}

#[tokio::test]
async fn filters_and_pages_through_every_result_once() {
    let server = TestServer::start().await;
    let (alice, alice_token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let room_a = server.create_room(&alice_token, json!({ "preset": "public_chat" })).await;
    let room_b = server.create_room(&alice_token, json!({ "preset": "public_chat" })).await;
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&room_a)), Some(&bob_token), json!({})).await.ok();
    for i in 0..7 {
        server.send_text(&alice_token, &room_a, &format!("a{i}"), &format!("apple number {i}")).await;
        server.send_text(&alice_token, &room_b, &format!("b{i}"), &format!("apple in b {i}")).await;
    }
    server.send_text(&bob_token, &room_a, "bob1", "apple from bob").await;

    let only_b = search(&server, &alice_token, json!({ "search_term": "apple", "filter": { "rooms": [room_b], "limit": 50 } })).await;
    assert_eq!(bodies(&only_b).len(), 7);
    assert_eq!(only_b["count"], 7);
    let from_bob = search(&server, &alice_token, json!({ "search_term": "apple", "filter": { "senders": [bob] } })).await;
    assert_eq!(bodies(&from_bob), vec!["apple from bob"]);
    let not_a = search(&server, &alice_token, json!({ "search_term": "apple", "filter": { "not_rooms": [room_a], "limit": 50 } })).await;
    assert_eq!(bodies(&not_a).len(), 7);

    for order in ["recent", "rank"] {
        let criteria = json!({ "search_term": "apple", "order_by": order, "filter": { "limit": 4 } });
        let mut seen = Vec::new();
        let mut batch: Option<String> = None;
        for _ in 0..10 {
            let page = search_page(&server, &alice_token, criteria.clone(), batch.as_deref()).await;
            assert!(bodies(&page).len() <= 4);
            seen.extend(bodies(&page));
            match page["next_batch"].as_str() {
                Some(next) => batch = Some(next.to_owned()),
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!((seen.len(), unique.len()), (15, 15), "{order}: every result exactly once: {seen:?}");
        if order == "recent" {
            assert_eq!(seen[0], "apple from bob");
        }
    }
    let _ = alice;

    server
        .post("/_matrix/client/v3/search?next_batch=garbage", Some(&alice_token), json!({ "search_categories": { "room_events": { "search_term": "apple" } } }))
        .await
        .err(400, "M_INVALID_PARAM");
    server
        .post("/_matrix/client/v3/search", Some(&alice_token), json!({ "search_categories": { "room_events": { "search_term": "apple", "keys": ["content.nope"] } } }))
        .await
        .err(400, "M_INVALID_PARAM");
    server.post("/_matrix/client/v3/search", Some(&alice_token), json!({ "search_categories": { "room_events": {} } })).await.err(400, "M_MISSING_PARAM");
    server.post("/_matrix/client/v3/search", None, json!({ "search_categories": {} })).await.err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn keys_context_profiles_state_and_groupings() {
    let server = TestServer::start().await;
    let (alice, token) = server.register("alice").await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice));
    server.put(&path, Some(&token), json!({ "displayname": "Alice Liddell" })).await.ok();
    let room = server.create_room(&token, json!({ "name": "Walrus room", "topic": "all about the walrus" })).await;
    server.send_text(&token, &room, "t1", "first").await;
    server.send_text(&token, &room, "t2", "the walrus said").await;
    server.send_text(&token, &room, "t3", "last").await;

    let names = search(&server, &token, json!({ "search_term": "walrus", "keys": ["content.name"] })).await;
    assert_eq!(names["results"].as_array().unwrap().len(), 1);
    assert_eq!(names["results"][0]["result"]["type"], "m.room.name");
    let topics = search(&server, &token, json!({ "search_term": "walrus", "keys": ["content.topic"] })).await;
    assert_eq!(topics["results"][0]["result"]["type"], "m.room.topic");
    let all = search(&server, &token, json!({ "search_term": "walrus" })).await;
    assert_eq!(all["results"].as_array().unwrap().len(), 3);
    assert!(all["results"][0].get("context").is_none(), "no context unless asked");

    let result = search(
        &server,
        &token,
        json!({
            "search_term": "walrus", "keys": ["content.body"],
            "event_context": { "before_limit": 1, "after_limit": 1, "include_profile": true },
            "include_state": true,
            "groupings": { "group_by": [{ "key": "room_id" }, { "key": "sender" }] }
        }),
    )
    .await;
    let hit = &result["results"][0];
    assert_eq!(hit["result"]["content"]["body"], "the walrus said");
    assert_eq!(hit["context"]["events_before"][0]["content"]["body"], "first");
    assert_eq!(hit["context"]["events_after"][0]["content"]["body"], "last");
    assert!(hit["context"]["start"].is_string() && hit["context"]["end"].is_string());
    assert_eq!(hit["context"]["profile_info"][&alice]["displayname"], "Alice Liddell");
    let state = result["state"][&room].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Walrus room"));
    let event_id = hit["result"]["event_id"].clone();
    assert_eq!(result["groups"]["room_id"][&room]["results"], json!([event_id]));
    assert_eq!(result["groups"]["sender"][&alice]["results"], json!([event_id]));
    assert_eq!(result["groups"]["room_id"][&room]["order"], 0);
}
