//! `weft migrate-db`: a server filled through the API on SQLite, moved to PostgreSQL by the
//! real binary, started again on PostgreSQL, serves the same accounts, history, search,
//! media and keys, and goes on writing. Runs when the suite has a PostgreSQL cluster
//! (scripts/with-postgres.sh); on a SQLite-only run it checks nothing and says so.

mod common;

use std::process::Command;

use common::{enc, TestServer};
use reqwest::Method;
use serde_json::json;

fn migrate(from: &str, to: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weft")).args(["migrate-db", "--from", from, "--to", to]).output().expect("weft runs")
}

#[tokio::test]
async fn a_sqlite_server_moves_to_postgres_whole() {
    let Some(target) = common::test_postgres_database().await else {
        eprintln!("no WEFT_TEST_POSTGRES: the migration to PostgreSQL is tested in the PostgreSQL run");
        return;
    };
    let mut server = TestServer::start_with(|c| c.database.url = format!("sqlite://{}", c.data_dir.join("weft.db").display())).await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "name": "Moving day", "preset": "public_chat" })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    for i in 0..30 {
        server.send_text(&alice, &room, &format!("m{i}"), &format!("message {i} about walruses")).await;
    }
    let upload = server
        .raw_typed(Method::POST, "/_matrix/media/v3/upload?filename=a.txt", Some(&alice), Some(b"moved bytes".to_vec()), "text/plain")
        .await
        .ok();
    let content_uri = upload["content_uri"].as_str().unwrap().to_owned();
    server
        .post("/_matrix/client/v3/keys/upload", Some(&bob), json!({ "one_time_keys": { "signed_curve25519:AAAA": { "key": "k", "signatures": {} } } }))
        .await
        .ok();
    let before = server.get("/_matrix/client/v3/sync", Some(&bob)).await.ok();
    let since = before["next_batch"].as_str().unwrap().to_owned();
    server.stop_in_place().await;

    let output = migrate(&server.database_url(), &target);
    assert!(output.status.success(), "migrate-db failed: {}", String::from_utf8_lossy(&output.stderr));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains("row counts verified"), "{report}");
    // A second run finds the target filled and changes nothing.
    let again = migrate(&server.database_url(), &target);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"), "{}", String::from_utf8_lossy(&again.stderr));

    server.set_database_url(&target);
    server.start_again().await;
    // Passwords, tokens and devices came along.
    let login = server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "password" }))
        .await
        .ok();
    assert_eq!(login["user_id"], alice_id);
    let whoami = server.get("/_matrix/client/v3/account/whoami", Some(&bob)).await.ok();
    assert_eq!(whoami["user_id"], bob_id);
    // History, in order, and the search index rebuilt for PostgreSQL.
    let history = server.messages(&bob, &room, "dir=b&limit=50").await;
    let bodies = common::bodies(&history);
    assert_eq!(bodies.len(), 30);
    assert_eq!(bodies[0], "message 29 about walruses");
    let search = server.post("/_matrix/client/v3/search", Some(&bob), json!({ "search_categories": { "room_events": { "search_term": "walruses" } } })).await.ok();
    assert_eq!(search["search_categories"]["room_events"]["count"], 30, "{search}");
    // Media metadata (the bytes stay in the data dir).
    let media_path = content_uri.trim_start_matches("mxc://");
    let download = server.get(&format!("/_matrix/client/v1/media/download/{media_path}"), Some(&bob)).await;
    assert_eq!(download.status, 200);
    assert_eq!(download.body, json!("moved bytes"));
    let counts = server.post("/_matrix/client/v3/keys/upload", Some(&bob), json!({})).await.ok();
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 1);
    // New writes continue after the copied positions: the old sync token sees exactly them.
    let new_event = server.send_text(&alice, &room, "after", "written on PostgreSQL").await;
    let after = server.get(&format!("/_matrix/client/v3/sync?since={}&timeout=0", enc(&since)), Some(&bob)).await.ok();
    let timeline: Vec<&str> = after["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(timeline, vec![new_event.as_str()]);
    server.stop().await;
}
