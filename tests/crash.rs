//! Durability: the real `weft` binary is killed with SIGKILL mid-life and restarted; every
//! send it acknowledged is still there. On PostgreSQL too when the run has a cluster
//! (scripts/with-postgres.sh).

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{free_port, wait_ready};
use serde_json::{json, Value};

/// `database`: empty for SQLite in the data dir.
fn spawn(data_dir: &std::path::Path, database: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("serve")
        .env("WEFT_DATA_DIR", data_dir)
        .env("WEFT_DATABASE__URL", database)
        .env("WEFT_LISTEN", format!("127.0.0.1:{port}"))
        .env("WEFT_REGISTRATION__ENABLED", "true")
        .env("WEFT_RATE_LIMITS__ENABLED", "false")
        .env("WEFT_FEDERATION__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("weft binary starts")
}

#[tokio::test]
async fn acknowledged_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let database = common::test_postgres_database().await.unwrap_or_default();
    let mut child = spawn(dir.path(), &database, port);
    wait_ready(&base).await;
    let register: Value = http
        .post(format!("{base}/_matrix/client/v3/register"))
        .json(&json!({ "username": "durable", "password": "pw", "auth": { "type": "m.login.dummy" } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = register["access_token"].as_str().unwrap().to_owned();
    let room: Value = http
        .post(format!("{base}/_matrix/client/v3/createRoom"))
        .bearer_auth(&token)
        .json(&json!({ "name": "durable" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    let room_path: String = room_id.replace('!', "%21").replace(':', "%3A");

    // Concurrent senders, so the kill can land while writes are in flight.
    let mut acknowledged = Vec::new();
    let mut tasks = Vec::new();
    for sender in 0..4 {
        let http = http.clone();
        let base = base.clone();
        let token = token.clone();
        let room_path = room_path.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..1000 {
                let body = format!("s{sender}-{i}");
                let result = http
                    .put(format!("{base}/_matrix/client/v3/rooms/{room_path}/send/m.room.message/s{sender}t{i}"))
                    .bearer_auth(&token)
                    .json(&json!({ "msgtype": "m.text", "body": body }))
                    .send()
                    .await;
                match result {
                    Ok(response) if response.status().is_success() => acked.push(body),
                    _ => break,
                }
            }
            acked
        }));
    }
    // Let some sends land, then kill -9 while they are still going.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let page: Value = http
            .get(format!("{base}/_matrix/client/v3/rooms/{room_path}/messages?dir=b&limit=1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let newest = page["chunk"][0]["content"]["body"].as_str().unwrap_or("").to_owned();
        let index: u32 = newest.rsplit('-').next().and_then(|i| i.parse().ok()).unwrap_or(0);
        if index >= 20 || Instant::now() > deadline {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    assert!(acknowledged.len() >= 20, "only {} sends were acknowledged", acknowledged.len());

    let mut child = spawn(dir.path(), &database, port);
    wait_ready(&base).await;
    let mut stored = std::collections::HashSet::new();
    let mut from: Option<String> = None;
    loop {
        let mut url = format!("{base}/_matrix/client/v3/rooms/{room_path}/messages?dir=b&limit=500");
        if let Some(from) = &from {
            url.push_str(&format!("&from={from}"));
        }
        let page: Value = http.get(url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        for event in page["chunk"].as_array().unwrap() {
            if let Some(body) = event["content"]["body"].as_str() {
                stored.insert(body.to_owned());
            }
        }
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    let lost: Vec<&String> = acknowledged.iter().filter(|b| !stored.contains(*b)).collect();
    assert!(lost.is_empty(), "acknowledged but lost after SIGKILL: {lost:?}");
    // The server still works after the crash.
    let after = http
        .put(format!("{base}/_matrix/client/v3/rooms/{room_path}/send/m.room.message/after"))
        .bearer_auth(&token)
        .json(&json!({ "msgtype": "m.text", "body": "after restart" }))
        .send()
        .await
        .unwrap();
    assert!(after.status().is_success());
    child.kill().unwrap();
    child.wait().unwrap();
}
