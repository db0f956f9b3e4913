//! The application-service scenario: how fast the server turns room messages into
//! transactions for a bridge. The tool runs the bridge end itself (a sink that records when
//! each message arrives); the server must have a registration pointing at it, which
//! `registration_yaml` writes (`scripts/bench.sh` gives it to both weft and Synapse).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{any, put},
    Json, Router,
};
use serde_json::{json, Value};

use super::{
    client::{enc, User},
    measure::{CpuMeter, Percentiles},
    scenarios::{Ctx, ScenarioReport},
};

/// The bench's bridge: the users it owns are `@bench_...`.
pub struct BridgeSettings {
    pub port: u16,
    pub as_token: String,
    pub hs_token: String,
}

impl BridgeSettings {
    /// The bench's fixed tokens (the registration is the bench's own, on loopback).
    pub fn on_port(port: u16) -> Self {
        Self { port, as_token: "weft-bench-bridge-as-token".into(), hs_token: "weft-bench-bridge-hs-token".into() }
    }
}

/// The registration file for the bench's bridge, in Synapse's format.
pub fn registration_yaml(settings: &BridgeSettings) -> String {
    format!(
        "id: weft-bench\nurl: \"http://127.0.0.1:{}\"\nas_token: {}\nhs_token: {}\nsender_localpart: bench_bridge\nrate_limited: false\n\
         namespaces:\n  users:\n    - exclusive: true\n      regex: \"@bench_.*\"\n  aliases: []\n  rooms: []\n",
        settings.port, settings.as_token, settings.hs_token
    )
}

#[derive(Default)]
struct Sink {
    hs_token: String,
    /// When each message body arrived.
    arrivals: Mutex<HashMap<String, Instant>>,
    /// Events per transaction received.
    transactions: Mutex<Vec<usize>>,
    seen_txn_ids: Mutex<std::collections::HashSet<String>>,
    unauthorised: std::sync::atomic::AtomicU64,
}

async fn transaction(State(sink): State<Arc<Sink>>, Path(txn_id): Path<String>, headers: HeaderMap, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let now = Instant::now();
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {}", sink.hs_token)) {
        sink.unauthorised.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return (StatusCode::FORBIDDEN, Json(json!({ "errcode": "M_FORBIDDEN" })));
    }
    // A repeat of an acknowledged transaction changes nothing.
    if sink.seen_txn_ids.lock().unwrap_or_else(|e| e.into_inner()).insert(txn_id) {
        let events = body["events"].as_array().cloned().unwrap_or_default();
        sink.transactions.lock().unwrap_or_else(|e| e.into_inner()).push(events.len());
        let mut arrivals = sink.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        for event in &events {
            if let Some(text) = event["content"]["body"].as_str() {
                arrivals.entry(text.to_owned()).or_insert(now);
            }
        }
    }
    (StatusCode::OK, Json(json!({})))
}

/// Everything else a server may ask a bridge (ping, user and alias queries): known to
/// nobody but answered.
async fn other() -> (StatusCode, Json<Value>) {
    (StatusCode::NOT_FOUND, Json(json!({ "errcode": "M_NOT_FOUND" })))
}

/// `senders` users send `messages` in all into one room with one of the bridge's users in
/// it; measured until the bridge has received every one.
pub async fn bridge_delivery(ctx: &Ctx, settings: &BridgeSettings, senders: usize, messages: usize) -> Result<ScenarioReport> {
    let sink = Arc::new(Sink { hs_token: settings.hs_token.clone(), ..Sink::default() });
    let app = Router::new()
        .route("/_matrix/app/v1/transactions/{txn_id}", put(transaction))
        .fallback(any(other))
        .with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port)).await.context("binding the bench bridge's port")?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // The bridge's puppet, registered the bridge's way, in a room with the senders.
    let puppet_localpart = format!("bench_{}", ctx.run_id);
    let registered = ctx
        .client
        .post(
            "/_matrix/client/v3/register",
            Some(&settings.as_token),
            &json!({ "type": "m.login.application_service", "username": puppet_localpart, "inhibit_login": true }),
        )
        .await
        .context("registering the bridge's user (is the bench registration configured on the server?)")?;
    let puppet = registered["user_id"].as_str().context("registration answered no user_id")?.to_owned();
    let users = ctx.users("as", senders.max(1)).await?;
    let room = ctx.shared_room(&users[0], &users).await?;
    let path = format!("/_matrix/client/v3/join/{}?user_id={}", enc(&room), enc(&puppet));
    ctx.client.post(&path, Some(&settings.as_token), &json!({})).await.context("the bridge's user joins")?;

    let meter = CpuMeter::start(ctx.server_pid);
    let started = Instant::now();
    let deadline = started + ctx.max_duration;
    let per_sender = messages.div_ceil(users.len());
    let tasks: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, sender)| {
            let (client, sender, room, run_id): (_, User, String, String) = (ctx.client.clone(), sender.clone(), room.clone(), ctx.run_id.clone());
            tokio::spawn(async move {
                let mut acked = Vec::with_capacity(per_sender);
                let mut errors = 0u64;
                for n in 0..per_sender {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let body = format!("{run_id} bridge {i} {n}");
                    match client.send_text(&sender, &room, &format!("{run_id}as{i}t{n}"), &body).await {
                        Ok(_) => acked.push((body, Instant::now())),
                        Err(error) => {
                            errors += 1;
                            tracing::warn!(%error, "send failed");
                        }
                    }
                }
                (acked, errors)
            })
        })
        .collect();
    let mut acked = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mut sent, failed) = task.await?;
        acked.append(&mut sent);
        errors += failed;
    }
    // Until every acknowledged message reached the bridge (or the time is up).
    let everything_arrived = || {
        let arrivals = sink.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        acked.iter().all(|(body, _)| arrivals.contains_key(body))
    };
    while !everything_arrived() && Instant::now() < deadline + Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut report = ScenarioReport::new(
        "appservice",
        format!("{} senders, {} messages into a room with a bridge's user, until the bridge has every one", users.len(), acked.len()),
        "events/s",
    );
    let arrivals = sink.arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut latencies: Vec<Duration> = acked.iter().filter_map(|(body, at)| arrivals.get(body).map(|arrived| arrived.saturating_duration_since(*at))).collect();
    let last_arrival = acked.iter().filter_map(|(body, _)| arrivals.get(body)).max().copied().unwrap_or(started);
    report.operations = latencies.len() as u64;
    report.errors = errors;
    report.latency = Percentiles::of(&mut latencies);
    let transactions = sink.transactions.lock().unwrap_or_else(|e| e.into_inner()).clone();
    report.extra.insert("transactions".into(), transactions.len().into());
    report.extra.insert("largest_transaction".into(), transactions.iter().max().copied().unwrap_or(0).into());
    report.extra.insert("latency_is".into(), "send acknowledged -> transaction received".into());
    let mut report = report.finish(started, &meter);
    // The rate is over the time until the last message arrived.
    report.seconds = last_arrival.saturating_duration_since(started).as_secs_f64();
    report.rate = report.operations as f64 / report.seconds.max(1e-9);
    if errors > 0 {
        report.failure = Some(format!("{errors} sends failed"));
    } else if report.operations < acked.len() as u64 {
        report.failure = Some(format!("{} of {} messages never reached the bridge", acked.len() as u64 - report.operations, acked.len()));
    } else if sink.unauthorised.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        report.failure = Some("transactions without the hs_token".into());
    }
    server.abort();
    Ok(report)
}
