//! `weft bench`: a load generator that drives any homeserver (weft, Synapse, ...) through
//! the standard Client-Server API only, and reports JSON plus a table. Every scenario is
//! bounded in count and time, targets loopback, and records the server's and the tool's own
//! CPU so a bottleneck in the tool shows. `scripts/bench.sh` runs it side by side against
//! weft and Synapse; `tests/bench_smoke.rs` runs a small version for correctness only.

pub mod appservice;
pub mod client;
pub mod measure;
pub mod scenarios;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use self::{client::Client, scenarios::ScenarioReport};

/// The scenarios, by name (for `--only`).
pub const SCENARIOS: &[&str] = &["register", "send_one_room", "send_direct_rooms", "delivery", "idle_long_polls", "pagination", "sliding_sync", "search", "appservice"];

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Client-Server API of the server under test.
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    pub url: String,
    /// Start the server with this shell command (measuring start-up time to /versions) and
    /// stop it at the end; its process is sampled for CPU and memory.
    #[arg(long)]
    pub spawn: Option<String>,
    /// The server's process id, to sample its CPU and memory (when not spawned here).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// A name for this run in the report (e.g. "weft" or "synapse").
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Registrations and logins measured.
    #[arg(long, default_value_t = 10)]
    pub registrations: usize,
    /// Registrations (and logins) in flight at once.
    #[arg(long, default_value_t = 2)]
    pub register_concurrency: usize,
    /// Senders in the send scenarios.
    #[arg(long, default_value_t = 20)]
    pub senders: usize,
    /// Messages each sender sends.
    #[arg(long, default_value_t = 250)]
    pub messages: usize,
    /// Receivers long-polling in the delivery scenario.
    #[arg(long, default_value_t = 50)]
    pub receivers: usize,
    /// Messages sent in the delivery scenario.
    #[arg(long, default_value_t = 100)]
    pub deliveries: usize,
    /// Long-polls held open at once in the idle scenario.
    #[arg(long, default_value_t = 1000)]
    pub idle: usize,
    /// Passes over the room in the pagination scenario.
    #[arg(long, default_value_t = 10)]
    pub passes: usize,
    /// Rooms the sliding sync scenario's user is in.
    #[arg(long, default_value_t = 1000)]
    pub sliding_rooms: usize,
    /// Requests measured in each sliding sync phase.
    #[arg(long, default_value_t = 100)]
    pub sliding_rounds: usize,
    /// Messages the search scenario fills its rooms with before querying.
    #[arg(long, default_value_t = 20_000)]
    pub search_messages: usize,
    /// Queries of each kind (common, medium, rare word) in the search scenario.
    #[arg(long, default_value_t = 100)]
    pub search_rounds: usize,
    /// Upper bound on each scenario's measured phase, in seconds.
    #[arg(long, default_value_t = 60)]
    pub max_seconds: u64,
    /// Port for the bench's own bridge (application service); the `appservice` scenario runs
    /// only with it, against a server whose registration points there (written by
    /// `--appservice-registration`).
    #[arg(long)]
    pub appservice_port: Option<u16>,
    /// Write the bench bridge's registration file here (before `--spawn` starts the server).
    #[arg(long)]
    pub appservice_registration: Option<PathBuf>,
    /// Messages sent in the appservice scenario.
    #[arg(long, default_value_t = 2000)]
    pub appservice_messages: usize,
    /// Run only these scenarios (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub label: String,
    pub url: String,
    pub startup_ms: Option<f64>,
    pub idle_rss_kb: Option<u64>,
    pub peak_rss_kb: Option<u64>,
    pub scenarios: Vec<ScenarioReport>,
}

impl Report {
    /// Scenarios that did not run correctly, with why.
    pub fn failures(&self) -> Vec<String> {
        self.scenarios.iter().filter_map(|s| s.failure.as_ref().map(|f| format!("{}: {f}", s.name))).collect()
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!("weft bench — {} at {}\n", self.label, self.url);
        if let Some(ms) = self.startup_ms {
            out.push_str(&format!("start-up to /versions: {ms:.0} ms\n"));
        }
        if let Some(kb) = self.idle_rss_kb {
            out.push_str(&format!("server RSS idle: {:.1} MB, peak seen: {:.1} MB\n", kb as f64 / 1024.0, self.peak_rss_kb.unwrap_or(kb) as f64 / 1024.0));
        }
        out.push_str(&format!(
            "{:<18} {:>12} {:<16} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}  {}\n",
            "scenario", "rate", "unit", "p50 ms", "p95 ms", "p99 ms", "max ms", "srv cpu", "tool cpu", "result"
        ));
        for s in &self.scenarios {
            let l = s.latency.clone().unwrap_or_default();
            let pct = |v: Option<f64>| v.map(|v| format!("{v:.0}%")).unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "{:<18} {:>12.1} {:<16} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>8}  {}\n",
                s.name,
                s.rate,
                s.unit,
                l.p50_ms,
                l.p95_ms,
                l.p99_ms,
                l.max_ms,
                pct(s.cpu.server_cpu_pct),
                pct(s.cpu.tool_cpu_pct),
                s.failure.clone().unwrap_or_else(|| "ok".into())
            ));
            if !s.extra.is_empty() {
                out.push_str(&format!("{:<18} {}\n", "", serde_json::Value::Object(s.extra.clone())));
            }
        }
        out
    }
}

/// A server started by the tool; stopped (SIGTERM, then SIGKILL) when dropped.
struct Spawned(std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wanted(args: &BenchArgs, scenario: &str) -> bool {
    args.only.is_empty() || args.only.iter().any(|s| s == scenario)
}

pub async fn run(args: BenchArgs) -> Result<Report> {
    for name in &args.only {
        if !SCENARIOS.contains(&name.as_str()) {
            bail!("unknown scenario {name}; known: {}", SCENARIOS.join(", "));
        }
    }
    let bridge = args.appservice_port.map(appservice::BridgeSettings::on_port);
    if let (Some(bridge), Some(path)) = (&bridge, &args.appservice_registration) {
        std::fs::write(path, appservice::registration_yaml(bridge)).with_context(|| format!("writing {}", path.display()))?;
    }
    let client = Client::new(&args.url)?;
    let mut spawned = None;
    let mut startup_ms = None;
    let mut server_pid = args.server_pid;
    if let Some(command) = &args.spawn {
        let started = Instant::now();
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("spawning the server")?;
        server_pid = Some(child.id());
        spawned = Some(Spawned(child));
        loop {
            if client.versions().await.is_ok() {
                startup_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("the server did not answer /versions within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    } else {
        client.versions().await.context("the server does not answer /versions")?;
    }
    // Idle memory: after start-up work has settled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss_kb = server_pid.and_then(measure::sample).map(|s| s.rss_kb);

    let run_id = format!("b{}x", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() % 100_000_000);
    let ctx = scenarios::Ctx {
        client,
        server_pid,
        run_id,
        password: "bench-password-1".into(),
        max_duration: Duration::from_secs(args.max_seconds),
        register_concurrency: args.register_concurrency,
    };
    let mut reports = Vec::new();
    let mut peak = idle_rss_kb;
    let mut note_peak = |report: &ScenarioReport| {
        if let Some(rss) = report.cpu.server_rss_kb {
            peak = Some(peak.map_or(rss, |p| p.max(rss)));
        }
        tracing::info!(scenario = report.name, rate = report.rate, "scenario done");
    };
    if wanted(&args, "register") {
        for report in scenarios::register_and_login(&ctx, args.registrations).await? {
            note_peak(&report);
            reports.push(report);
        }
    }
    let mut paginate = None;
    if wanted(&args, "send_one_room") || wanted(&args, "pagination") {
        measure::settle(ctx.server_pid).await;
        let (report, room, user) = scenarios::send_one_room(&ctx, args.senders, args.messages).await?;
        let sent = report.operations as usize;
        note_peak(&report);
        if wanted(&args, "send_one_room") {
            reports.push(report);
        }
        paginate = Some((room, user, sent));
    }
    if wanted(&args, "send_direct_rooms") {
        measure::settle(ctx.server_pid).await;
        let report = scenarios::send_direct_rooms(&ctx, args.senders, args.messages).await?;
        note_peak(&report);
        reports.push(report);
    }
    if wanted(&args, "delivery") {
        measure::settle(ctx.server_pid).await;
        let report = scenarios::delivery(&ctx, args.receivers, args.deliveries).await?;
        note_peak(&report);
        reports.push(report);
    }
    if wanted(&args, "idle_long_polls") {
        measure::settle(ctx.server_pid).await;
        let report = scenarios::idle_long_polls(&ctx, args.idle, 20).await?;
        note_peak(&report);
        reports.push(report);
    }
    if let (true, Some((room, user, sent))) = (wanted(&args, "pagination"), paginate) {
        measure::settle(ctx.server_pid).await;
        let report = scenarios::pagination(&ctx, &user, &room, sent, args.passes).await?;
        note_peak(&report);
        reports.push(report);
    }
    if wanted(&args, "sliding_sync") {
        measure::settle(ctx.server_pid).await;
        let (first, incremental) = scenarios::sliding_sync(&ctx, args.sliding_rooms, args.sliding_rounds).await?;
        note_peak(&first);
        note_peak(&incremental);
        reports.push(first);
        reports.push(incremental);
    }
    if wanted(&args, "search") {
        measure::settle(ctx.server_pid).await;
        let report = scenarios::search(&ctx, args.search_messages, args.search_rounds).await?;
        note_peak(&report);
        reports.push(report);
    }
    match (&bridge, wanted(&args, "appservice")) {
        (Some(bridge), true) => {
            measure::settle(ctx.server_pid).await;
            let report = appservice::bridge_delivery(&ctx, bridge, args.senders, args.appservice_messages).await?;
            note_peak(&report);
            reports.push(report);
        }
        (None, true) if !args.only.is_empty() => bail!("the appservice scenario needs --appservice-port"),
        _ => {}
    }
    drop(spawned);
    let report = Report { label: args.label.clone(), url: args.url.clone(), startup_ms, idle_rss_kb, peak_rss_kb: peak, scenarios: reports };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}
