//! A PostgreSQL restart under a running weft: connections the restart cut are replaced,
//! requests after it succeed, and nothing acknowledged before it is lost. Runs in the
//! PostgreSQL part of the suite (scripts/with-postgres.sh gives the restart command); alone
//! in its file, so no other test's database goes away under it.

mod common;

use common::TestServer;
use serde_json::json;

#[tokio::test]
async fn weft_rides_out_a_database_restart() {
    let Ok(restart) = std::env::var("WEFT_TEST_POSTGRES_RESTART") else {
        eprintln!("no WEFT_TEST_POSTGRES_RESTART: tested in the PostgreSQL run");
        return;
    };
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    let room = server.create_room(&token, json!({})).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(server.send_text(&token, &room, &format!("before{i}"), &format!("before {i}")).await);
    }

    let status = std::process::Command::new("sh").args(["-c", &restart]).stdout(std::process::Stdio::null()).status().unwrap();
    assert!(status.success(), "the cluster restarts");

    // Every request after the restart is answered from fresh connections.
    for i in 0..5 {
        sent.push(server.send_text(&token, &room, &format!("after{i}"), &format!("after {i}")).await);
    }
    let history = server.messages(&token, &room, "dir=b&limit=20").await;
    let bodies = common::bodies(&history);
    assert_eq!(bodies, vec!["after 4", "after 3", "after 2", "after 1", "after 0", "before 4", "before 3", "before 2", "before 1", "before 0"]);
    server.stop().await;
}
