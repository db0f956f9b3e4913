//! The measured scenarios. Each is bounded in count and in time and reports, beside its
//! figures, whether it ran correctly (every send acknowledged, every message delivered,
//! every long-poll held), which is what the CI smoke run checks.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::Notify,
};

use super::{
    client::{enc, timeline_bodies, Client, User},
    measure::{CpuMeter, CpuUse, Percentiles},
};

/// The outcome of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: &'static str,
    pub description: String,
    pub operations: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Operations per second, in `unit`.
    pub rate: f64,
    pub unit: &'static str,
    pub latency: Option<Percentiles>,
    /// Scenario-specific figures (delivery until the last receiver, memory per connection...).
    pub extra: Map<String, Value>,
    pub cpu: CpuUse,
    /// Why the run was not correct; None when it was.
    pub failure: Option<String>,
}

impl ScenarioReport {
    pub(super) fn new(name: &'static str, description: String, unit: &'static str) -> Self {
        Self {
            name,
            description,
            operations: 0,
            errors: 0,
            seconds: 0.0,
            rate: 0.0,
            unit,
            latency: None,
            extra: Map::new(),
            cpu: CpuUse::default(),
            failure: None,
        }
    }

    pub(super) fn finish(mut self, started: Instant, meter: &CpuMeter) -> Self {
        self.seconds = started.elapsed().as_secs_f64();
        self.rate = self.operations as f64 / self.seconds.max(1e-9);
        self.cpu = meter.finish();
        self
    }
}

/// What every scenario needs: the server, its process (for CPU and RSS), and limits.
pub struct Ctx {
    pub client: Client,
    pub server_pid: Option<u32>,
    pub run_id: String,
    pub password: String,
    pub max_duration: Duration,
    /// Concurrent registrations (password hashing is CPU-bound on the server).
    pub register_concurrency: usize,
}

impl Ctx {
    /// Registers `count` users named `<prefix><n>` (concurrently, within the hashing budget).
    pub async fn users(&self, prefix: &str, count: usize) -> Result<Vec<User>> {
        let mut users = Vec::with_capacity(count);
        for chunk in (0..count).collect::<Vec<_>>().chunks(self.register_concurrency.max(1)) {
            let tasks: Vec<_> = chunk
                .iter()
                .map(|n| {
                    let client = self.client.clone();
                    let name = format!("{}{prefix}{n}", self.run_id);
                    let password = self.password.clone();
                    tokio::spawn(async move { client.register(&name, &password).await })
                })
                .collect();
            for task in tasks {
                users.push(task.await??);
            }
        }
        Ok(users)
    }

    /// A public room made by `owner` with every user of `members` joined.
    pub async fn shared_room(&self, owner: &User, members: &[User]) -> Result<String> {
        let room = self.client.create_room(owner, json!({ "preset": "public_chat", "name": "weft bench" })).await?;
        let joins: Vec<_> = members
            .iter()
            .filter(|m| m.user_id != owner.user_id)
            .map(|member| {
                let (client, member, room) = (self.client.clone(), member.clone(), room.clone());
                tokio::spawn(async move { client.join(&member, &room).await })
            })
            .collect();
        for join in joins {
            join.await??;
        }
        Ok(room)
    }
}

/// Registration and login rate at the server's own password-hashing cost.
pub async fn register_and_login(ctx: &Ctx, count: usize) -> Result<Vec<ScenarioReport>> {
    let meter = CpuMeter::start(ctx.server_pid);
    let started = Instant::now();
    let mut report = ScenarioReport::new("register", format!("{count} registrations, {} at a time", ctx.register_concurrency), "registrations/s");
    let mut latencies = Vec::new();
    let mut names = Vec::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(ctx.register_concurrency.max(1)) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|n| {
                let client = ctx.client.clone();
                let name = format!("{}reg{n}", ctx.run_id);
                let password = ctx.password.clone();
                tokio::spawn(async move {
                    let t = Instant::now();
                    client.register(&name, &password).await.map(|_| (name, t.elapsed()))
                })
            })
            .collect();
        for task in tasks {
            match task.await? {
                Ok((name, took)) => {
                    report.operations += 1;
                    latencies.push(took);
                    names.push(name);
                }
                Err(error) => {
                    report.errors += 1;
                    tracing::warn!(%error, "registration failed");
                }
            }
        }
    }
    report.latency = Percentiles::of(&mut latencies);
    let register = report.finish(started, &meter);

    let meter = CpuMeter::start(ctx.server_pid);
    let started = Instant::now();
    let mut report = ScenarioReport::new("login", format!("{} password logins, {} at a time", names.len(), ctx.register_concurrency), "logins/s");
    let mut latencies = Vec::new();
    for chunk in names.chunks(ctx.register_concurrency.max(1)) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|name| {
                let (client, name, password) = (ctx.client.clone(), name.clone(), ctx.password.clone());
                tokio::spawn(async move {
                    let t = Instant::now();
                    client.login(&name, &password).await.map(|_| t.elapsed())
                })
            })
            .collect();
        for task in tasks {
            match task.await? {
                Ok(took) => {
                    report.operations += 1;
                    latencies.push(took);
                }
                Err(_) => report.errors += 1,
            }
        }
    }
    report.latency = Percentiles::of(&mut latencies);
    let login = report.finish(started, &meter);
    let mut reports = vec![register, login];
    for report in &mut reports {
        if report.errors > 0 {
            report.failure = Some(format!("{} requests failed", report.errors));
        }
    }
    Ok(reports)
}

/// `senders` users each send `per_sender` messages, one after another, into their room
/// (`rooms[i % rooms.len()]`), all senders at once. Returns the report.
async fn send_load(ctx: &Ctx, name: &'static str, description: String, senders: &[User], rooms: &[String], per_sender: usize) -> Result<ScenarioReport> {
    let meter = CpuMeter::start(ctx.server_pid);
    let started = Instant::now();
    let deadline = started + ctx.max_duration;
    let tasks: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(i, sender)| {
            let (client, sender, room) = (ctx.client.clone(), sender.clone(), rooms[i % rooms.len()].clone());
            let run_id = ctx.run_id.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_sender);
                let mut errors = 0u64;
                for n in 0..per_sender {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let t = Instant::now();
                    match client.send_text(&sender, &room, &format!("{run_id}{name}{i}t{n}"), &format!("m {i} {n}")).await {
                        Ok(_) => latencies.push(t.elapsed()),
                        Err(error) => {
                            errors += 1;
                            tracing::warn!(%error, "send failed");
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut report = ScenarioReport::new(name, description, "messages/s");
    let mut latencies = Vec::new();
    for task in tasks {
        let (mut sent, errors) = task.await?;
        report.operations += sent.len() as u64;
        report.errors += errors;
        latencies.append(&mut sent);
    }
    report.latency = Percentiles::of(&mut latencies);
    let wanted = (senders.len() * per_sender) as u64;
    report.extra.insert("requested".into(), wanted.into());
    let mut report = report.finish(started, &meter);
    if report.errors > 0 {
        report.failure = Some(format!("{} sends failed", report.errors));
    } else if report.operations < wanted {
        report.extra.insert("stopped_at_time_limit".into(), true.into());
    }
    Ok(report)
}

/// K senders into one shared room. Returns the report and the room (for pagination).
pub async fn send_one_room(ctx: &Ctx, senders: usize, per_sender: usize) -> Result<(ScenarioReport, String, User)> {
    let users = ctx.users("s", senders).await?;
    let room = ctx.shared_room(&users[0], &users).await?;
    let report = send_load(ctx, "send_one_room", format!("{senders} senders x {per_sender} messages into one room"), &users, &[room.clone()], per_sender).await?;
    Ok((report, room, users[0].clone()))
}

/// K senders, each into their own 1:1 room with a partner.
pub async fn send_direct_rooms(ctx: &Ctx, senders: usize, per_sender: usize) -> Result<ScenarioReport> {
    let users = ctx.users("d", senders * 2).await?;
    let (senders_users, partners) = users.split_at(senders);
    let mut rooms = Vec::with_capacity(senders);
    for (sender, partner) in senders_users.iter().zip(partners) {
        let room = ctx
            .client
            .create_room(sender, json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [partner.user_id] }))
            .await?;
        ctx.client.join(partner, &room).await?;
        rooms.push(room);
    }
    send_load(ctx, "send_direct_rooms", format!("{senders} senders x {per_sender} messages, each into its own 1:1 room"), senders_users, &rooms, per_sender).await
}

/// Arrival times per message and receiver, and a wake-up for whoever waits on them.
struct Arrivals {
    seen: Mutex<HashMap<usize, Vec<Option<Instant>>>>,
    changed: Notify,
}

/// Long-polls /sync for one receiver until `stop`, recording when each `d<n>` message arrives.
async fn receive(client: Client, user: User, room: String, index: usize, receivers: usize, arrivals: Arc<Arrivals>, ready: Arc<tokio::sync::Barrier>, stop: Arc<std::sync::atomic::AtomicBool>) -> Result<()> {
    let initial = client.sync(&user, None, 0).await?;
    let mut since = initial["next_batch"].as_str().context("no next_batch")?.to_owned();
    ready.wait().await;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let answer = client.sync(&user, Some(&since), 5_000).await?;
        let now = Instant::now();
        since = answer["next_batch"].as_str().context("no next_batch")?.to_owned();
        let mut seen = arrivals.seen.lock().unwrap_or_else(|p| p.into_inner());
        for body in timeline_bodies(&answer, &room) {
            if let Some(n) = body.strip_prefix('d').and_then(|n| n.parse::<usize>().ok()) {
                let slot = seen.entry(n).or_insert_with(|| vec![None; receivers]);
                slot[index].get_or_insert(now);
            }
        }
        drop(seen);
        arrivals.changed.notify_waiters();
    }
    Ok(())
}

/// Sends `messages` messages one at a time (each once every receiver has the previous) and
/// measures the time from sending to each receiver's /sync returning it.
async fn measure_delivery(ctx: &Ctx, sender: &User, receivers: &[User], room: &str, messages: usize, tag: &str) -> Result<(Vec<Duration>, Vec<Duration>, u64)> {
    let arrivals = Arc::new(Arrivals { seen: Mutex::default(), changed: Notify::new() });
    let ready = Arc::new(tokio::sync::Barrier::new(receivers.len() + 1));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = receivers
        .iter()
        .enumerate()
        .map(|(i, user)| {
            tokio::spawn(receive(ctx.client.clone(), user.clone(), room.to_owned(), i, receivers.len(), arrivals.clone(), ready.clone(), stop.clone()))
        })
        .collect();
    ready.wait().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut each, mut last, mut delivered) = (Vec::new(), Vec::new(), 0u64);
    let deadline = Instant::now() + ctx.max_duration;
    for n in 0..messages {
        if Instant::now() >= deadline {
            break;
        }
        let sent_at = Instant::now();
        ctx.client.send_text(sender, room, &format!("{}{tag}{n}", ctx.run_id), &format!("d{n}")).await?;
        let wait_until = Instant::now() + Duration::from_secs(10);
        loop {
            let notified = arrivals.changed.notified();
            let all = {
                let seen = arrivals.seen.lock().unwrap_or_else(|p| p.into_inner());
                seen.get(&n).map(|slot| slot.iter().all(Option::is_some)).unwrap_or(false)
            };
            if all || Instant::now() >= wait_until {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
        let seen = arrivals.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = seen.get(&n) {
            let times: Vec<Duration> = slot.iter().flatten().map(|t| t.saturating_duration_since(sent_at)).collect();
            delivered += times.len() as u64;
            if times.len() == receivers.len() {
                last.push(*times.iter().max().expect("receivers exist"));
            }
            each.extend(times);
        }
        drop(seen);
        // Let every receiver park its next long-poll.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    Ok((each, last, delivered))
}

/// One sender, `receivers` users long-polling /sync in the room.
pub async fn delivery(ctx: &Ctx, receivers: usize, messages: usize) -> Result<ScenarioReport> {
    let users = ctx.users("r", receivers + 1).await?;
    let (sender, receivers_users) = users.split_first().context("no users")?;
    let room = ctx.shared_room(sender, &users).await?;
    let meter = CpuMeter::start(ctx.server_pid);
    let started = Instant::now();
    let (mut each, mut last, delivered) = measure_delivery(ctx, sender, receivers_users, &room, messages, "dl").await?;
    let mut report = ScenarioReport::new("delivery", format!("1 sender, {receivers} receivers long-polling /sync, {messages} messages"), "deliveries/s");
    report.operations = delivered;
    report.latency = Percentiles::of(&mut each);
    if let Some(last) = Percentiles::of(&mut last) {
        report.extra.insert("until_last_receiver".into(), serde_json::to_value(last)?);
    }
    let wanted = (receivers * messages) as u64;
    report.extra.insert("expected_deliveries".into(), wanted.into());
    let mut report = report.finish(started, &meter);
    if delivered < wanted {
        report.failure = Some(format!("{delivered} of {wanted} deliveries seen"));
    }
    Ok(report)
}

/// `connections` /sync long-polls held open at once (one socket each), the server's memory
/// per connection, and a probe pair's delivery latency while they are open.
pub async fn idle_long_polls(ctx: &Ctx, connections: usize, probe_messages: usize) -> Result<ScenarioReport> {
    let pollers = ctx.users("i", connections.clamp(1, 20)).await?;
    let probe_users = ctx.users("p", 2).await?;
    let probe_room = ctx.shared_room(&probe_users[0], &probe_users).await?;
    let mut since = Vec::new();
    for user in &pollers {
        let answer = ctx.client.sync(user, None, 0).await?;
        since.push(answer["next_batch"].as_str().context("no next_batch")?.to_owned());
    }
    // Let the server settle after set-up before measuring its baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = ctx.server_pid.and_then(super::measure::sample).map(|s| s.rss_kb);
    let meter = CpuMeter::start(ctx.server_pid);
    let started = Instant::now();
    let address = ctx.client.base.strip_prefix("http://").context("the idle scenario needs an http:// URL")?.to_owned();
    let hold_ms = (ctx.max_duration.as_millis() as u64 + 60_000).max(120_000);
    let opened = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let returned_early = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let release = Arc::new(Notify::new());
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let user = &pollers[i % pollers.len()];
        let request = format!(
            "GET /_matrix/client/v3/sync?timeout={hold_ms}&since={} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\r\n",
            enc(&since[i % pollers.len()]),
            user.token
        );
        let (address, opened, returned_early, failed, release) = (address.clone(), opened.clone(), returned_early.clone(), failed.clone(), release.clone());
        tasks.push(tokio::spawn(async move {
            let connect = async {
                let mut socket = tokio::net::TcpStream::connect(&address).await?;
                socket.write_all(request.as_bytes()).await?;
                Ok::<_, std::io::Error>(socket)
            };
            let mut socket = match connect.await {
                Ok(socket) => socket,
                Err(_) => {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            };
            opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut byte = [0u8; 1];
            tokio::select! {
                _ = socket.read(&mut byte) => { returned_early.fetch_add(1, std::sync::atomic::Ordering::Relaxed); }
                _ = release.notified() => {}
            }
        }));
        // Open in waves so the listener's backlog is not the thing measured.
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let open_deadline = Instant::now() + Duration::from_secs(60);
    while opened.load(std::sync::atomic::Ordering::Relaxed) + failed.load(std::sync::atomic::Ordering::Relaxed) < connections as u64 && Instant::now() < open_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_seconds = started.elapsed().as_secs_f64();
    // Give the server time to read and park every request before sampling its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_during = ctx.server_pid.and_then(super::measure::sample).map(|s| s.rss_kb);
    let (mut each, _, delivered) = measure_delivery(ctx, &probe_users[0], &probe_users[1..], &probe_room, probe_messages, "probe").await?;
    let held = opened.load(std::sync::atomic::Ordering::Relaxed);
    let early = returned_early.load(std::sync::atomic::Ordering::Relaxed);
    let mut report = ScenarioReport::new("idle_long_polls", format!("{connections} /sync long-polls held open, then a probe pair exchanges {probe_messages} messages"), "connections");
    report.operations = held.saturating_sub(early);
    report.errors = failed.load(std::sync::atomic::Ordering::Relaxed);
    report.latency = Percentiles::of(&mut each);
    report.extra.insert("open_seconds".into(), json!(open_seconds));
    report.extra.insert("returned_early".into(), early.into());
    report.extra.insert("probe_delivered".into(), delivered.into());
    if let (Some(before), Some(during)) = (rss_before, rss_during) {
        report.extra.insert("server_rss_before_kb".into(), before.into());
        report.extra.insert("server_rss_held_kb".into(), during.into());
        report.extra.insert("rss_per_connection_kb".into(), json!(during.saturating_sub(before) as f64 / connections.max(1) as f64));
    }
    let mut report = report.finish(started, &meter);
    report.rate = report.operations as f64;
    release.notify_waiters();
    for task in tasks {
        task.abort();
    }
    if report.operations < connections as u64 {
        report.failure = Some(format!("{} of {connections} long-polls held ({} failed to open, {early} returned early)", report.operations, report.errors));
    } else if delivered < probe_messages as u64 {
        report.failure = Some(format!("probe saw {delivered} of {probe_messages} messages"));
    }
    Ok(report)
}

/// Paginates `room` backwards from its end, `limit` events a page, for `passes` passes.
pub async fn pagination(ctx: &Ctx, user: &User, room: &str, expected: usize, passes: usize) -> Result<ScenarioReport> {
    let meter = CpuMeter::start(ctx.server_pid);
    let started = Instant::now();
    let deadline = started + ctx.max_duration;
    let mut report = ScenarioReport::new("pagination", format!("/messages backwards, 100 a page, over the {expected}-message room, {passes} passes"), "events/s");
    let mut latencies = Vec::new();
    let mut messages_seen = 0usize;
    for pass in 0..passes {
        let mut from: Option<String> = None;
        let mut messages = 0usize;
        loop {
            let t = Instant::now();
            let page = ctx.client.messages(user, room, from.as_deref(), 100).await?;
            latencies.push(t.elapsed());
            let chunk = page["chunk"].as_array().map(Vec::len).unwrap_or(0);
            report.operations += chunk as u64;
            messages += page["chunk"].as_array().into_iter().flatten().filter(|e| e["type"] == "m.room.message").count();
            match page["end"].as_str() {
                Some(end) if chunk > 0 => from = Some(end.to_owned()),
                _ => break,
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        if pass == 0 {
            messages_seen = messages;
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    report.latency = Percentiles::of(&mut latencies);
    report.extra.insert("messages_in_first_pass".into(), messages_seen.into());
    let mut report = report.finish(started, &meter);
    if messages_seen < expected {
        report.failure = Some(format!("first pass saw {messages_seen} of {expected} messages"));
    }
    Ok(report)
}

const SLIDING_PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// The room list Element X asks for (matrix-sdk-ui 0.18's `all_rooms`): the first page.
fn room_list_request() -> Value {
    json!({
        "conn_id": "room-list",
        "lists": { "all_rooms": {
            "ranges": [[0, 19]],
            "timeline_limit": 1,
            "required_state": [
                ["m.room.name", ""], ["m.room.encryption", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"],
                ["m.room.topic", ""], ["m.room.avatar", ""], ["m.room.canonical_alias", ""], ["m.room.power_levels", ""],
                ["org.matrix.msc3401.call.member", "*"], ["m.room.join_rules", ""], ["m.room.tombstone", ""],
                ["m.room.create", ""], ["m.room.history_visibility", ""], ["io.element.functional_members", ""],
                ["m.space.parent", "*"], ["m.space.child", "*"], ["org.matrix.msc3672.beacon_info", "*"]
            ],
        }},
        "extensions": { "account_data": { "enabled": true }, "receipts": { "enabled": true, "rooms": ["*"] }, "typing": { "enabled": true } },
    })
}

/// Sliding sync for a user in `rooms` rooms: the first page of a new connection (20 rooms,
/// timeline_limit 1), then incremental responses carrying one new event each.
pub async fn sliding_sync(ctx: &Ctx, rooms: usize, rounds: usize) -> Result<(ScenarioReport, ScenarioReport)> {
    let user = ctx.users("ss", 1).await?.remove(0);
    let mut room_ids = Vec::with_capacity(rooms);
    for i in 0..rooms {
        let room = ctx.client.create_room(&user, json!({ "name": format!("bench room {i}") })).await?;
        ctx.client.send_text(&user, &room, &format!("{}s{i}", ctx.run_id), "hello").await?;
        room_ids.push(room);
    }
    let body = room_list_request();
    super::measure::settle(ctx.server_pid).await;

    // First pages: each request starts a new connection.
    let meter = CpuMeter::start(ctx.server_pid);
    let started = Instant::now();
    let mut first = ScenarioReport::new("sliding_sync_first_page", format!("new connection, first 20 of {rooms} rooms, timeline_limit 1"), "req/s");
    let mut latencies = Vec::new();
    let mut server_times = Vec::new();
    let mut pos = String::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let (response, server_time) = ctx.client.post_timed(&format!("{SLIDING_PATH}?timeout=0"), Some(&user.token), &body).await?;
        latencies.push(t.elapsed());
        server_times.extend(server_time);
        first.operations += 1;
        let returned = response["rooms"].as_object().map(Map::len).unwrap_or(0);
        if returned != rooms.min(20) || response["lists"]["all_rooms"]["count"] != json!(rooms) {
            first.errors += 1;
        }
        pos = response["pos"].as_str().unwrap_or_default().to_owned();
    }
    first.latency = Percentiles::of(&mut latencies);
    if let Some(server) = Percentiles::of(&mut server_times) {
        first.extra.insert("server_time".into(), serde_json::to_value(server)?);
    }
    let mut first = first.finish(started, &meter);
    if first.errors > 0 {
        first.failure = Some(format!("{} first pages without 20 rooms and the count", first.errors));
    }

    // Incremental: one new event, then the response that carries it.
    let meter = CpuMeter::start(ctx.server_pid);
    let started = Instant::now();
    let mut incremental = ScenarioReport::new("sliding_sync_incremental", format!("one new event in one of {rooms} rooms, then the next response"), "req/s");
    let mut latencies = Vec::new();
    let mut server_times = Vec::new();
    for round in 0..rounds {
        let room = &room_ids[round % room_ids.len().min(20)];
        ctx.client.send_text(&user, room, &format!("{}i{round}", ctx.run_id), "news").await?;
        let t = Instant::now();
        let url = format!("{SLIDING_PATH}?timeout=0&pos={}", enc(&pos));
        let (response, server_time) = ctx.client.post_timed(&url, Some(&user.token), &body).await?;
        latencies.push(t.elapsed());
        server_times.extend(server_time);
        incremental.operations += 1;
        let carried = response["rooms"][room.as_str()]["timeline"].as_array().is_some_and(|t| t.iter().any(|e| e["content"]["body"] == "news"));
        if !carried {
            incremental.errors += 1;
        }
        pos = response["pos"].as_str().unwrap_or_default().to_owned();
    }
    incremental.latency = Percentiles::of(&mut latencies);
    if let Some(server) = Percentiles::of(&mut server_times) {
        incremental.extra.insert("server_time".into(), serde_json::to_value(server)?);
    }
    let mut incremental = incremental.finish(started, &meter);
    if incremental.errors > 0 {
        incremental.failure = Some(format!("{} responses missed the new event", incremental.errors));
    }
    Ok((first, incremental))
}

/// Words of the search scenario's messages: `vocabulary` made-up words drawn log-uniformly,
/// so a few are in many messages and most in few, as in real text.
struct WordSource {
    state: u64,
    vocabulary: usize,
}

impl WordSource {
    fn next_f64(&mut self) -> f64 {
        // SplitMix64: deterministic across runs and servers, no dependency.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn word_rank(&mut self) -> usize {
        ((self.vocabulary as f64).powf(self.next_f64()) as usize).clamp(1, self.vocabulary)
    }

    /// A message of `words` words; `seen` counts the messages each word rank is in.
    fn message(&mut self, words: usize, seen: &mut HashMap<usize, u64>) -> String {
        let mut ranks: Vec<usize> = (0..words).map(|_| self.word_rank()).collect();
        let text = ranks.iter().map(|r| word(*r)).collect::<Vec<_>>().join(" ");
        ranks.sort_unstable();
        ranks.dedup();
        for rank in ranks {
            *seen.entry(rank).or_default() += 1;
        }
        text
    }
}

/// The made-up word of frequency rank `rank` (1 is the most frequent).
fn word(rank: usize) -> String {
    const SYLLABLES: [&str; 16] = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "be", "do", "fu", "gi", "ha", "ju", "pe", "zo"];
    let mut n = rank;
    let mut out = String::new();
    loop {
        out.push_str(SYLLABLES[n % 16]);
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out
}

/// Full-text search: `messages` messages of 12 words by 10 senders in 10 rooms (the
/// searcher is in all), then one-word `/search` queries (rank order, 10 results) for the most
/// common word, one in about 1% of the messages and one in about 10 of them. The fill is not
/// measured; the queries are.
pub async fn search(ctx: &Ctx, messages: usize, rounds: usize) -> Result<ScenarioReport> {
    let users = ctx.users("q", 10).await?;
    let mut rooms = Vec::new();
    for _ in 0..10 {
        rooms.push(ctx.shared_room(&users[0], &users).await?);
    }
    let fill_started = Instant::now();
    let per_task = messages.div_ceil(users.len());
    let tasks: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, sender)| {
            let (client, sender, rooms, run_id) = (ctx.client.clone(), sender.clone(), rooms.clone(), ctx.run_id.clone());
            let count = per_task.min(messages.saturating_sub(i * per_task));
            tokio::spawn(async move {
                let mut words = WordSource { state: i as u64 + 1, vocabulary: 20_000 };
                let mut seen = HashMap::new();
                for n in 0..count {
                    // Each sender on its own room at a time, not all in lockstep on one.
                    let room = &rooms[(n + i) % rooms.len()];
                    client.send_text(&sender, room, &format!("{run_id}q{i}t{n}"), &words.message(12, &mut seen)).await?;
                }
                anyhow::Ok(seen)
            })
        })
        .collect();
    let mut seen: HashMap<usize, u64> = HashMap::new();
    for task in tasks {
        for (rank, count) in task.await?? {
            *seen.entry(rank).or_default() += count;
        }
    }
    let fill_seconds = fill_started.elapsed().as_secs_f64();
    // The word whose message count is closest to `target`.
    let closest = |target: u64| seen.iter().min_by_key(|(rank, count)| (count.abs_diff(target), **rank)).map(|(rank, _)| word(*rank)).unwrap_or_default();
    let common = seen.iter().max_by_key(|(rank, count)| (**count, std::cmp::Reverse(**rank))).map(|(rank, _)| word(*rank)).unwrap_or_default();
    super::measure::settle(ctx.server_pid).await;

    let searcher = &users[0];
    let meter = CpuMeter::start(ctx.server_pid);
    let started = Instant::now();
    let deadline = started + ctx.max_duration;
    let mut report = ScenarioReport::new("search", format!("one-word /search, rank order, over {messages} messages in 10 rooms"), "queries/s");
    let mut latencies = Vec::new();
    let mut by_word: Vec<(&str, String, Vec<Duration>, u64)> =
        vec![("common", common, Vec::new(), 0), ("medium", closest(messages as u64 / 100), Vec::new(), 0), ("rare", closest(10), Vec::new(), 0)];
    'rounds: for _ in 0..rounds {
        for (_, term, samples, count) in by_word.iter_mut() {
            if Instant::now() >= deadline {
                break 'rounds;
            }
            let body = json!({ "search_categories": { "room_events": { "search_term": term, "order_by": "rank" } } });
            let t = Instant::now();
            let answer = ctx.client.post("/_matrix/client/v3/search", Some(&searcher.token), &body).await?;
            let elapsed = t.elapsed();
            samples.push(elapsed);
            latencies.push(elapsed);
            report.operations += 1;
            *count = answer["search_categories"]["room_events"]["count"].as_u64().unwrap_or(0);
            if answer["search_categories"]["room_events"]["results"].as_array().is_none_or(Vec::is_empty) {
                report.errors += 1;
            }
        }
    }
    report.latency = Percentiles::of(&mut latencies);
    report.extra.insert("fill_messages_per_s".into(), (messages as f64 / fill_seconds.max(1e-9)).round().into());
    for (class, term, samples, count) in by_word.iter_mut() {
        let p = Percentiles::of(samples);
        report.extra.insert(
            (*class).into(),
            json!({ "word": term, "matches": count, "p50_ms": p.as_ref().map(|p| p.p50_ms), "p99_ms": p.as_ref().map(|p| p.p99_ms) }),
        );
    }
    let mut report = report.finish(started, &meter);
    if report.errors > 0 {
        report.failure = Some(format!("{} queries found nothing", report.errors));
    }
    Ok(report)
}
