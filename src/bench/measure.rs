//! What the load tool records: latency percentiles, and the CPU and memory of the server
//! process and of the tool itself (from /proc, so a bottleneck in the tool shows).

use std::time::{Duration, Instant};

use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(samples: &mut [Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |p: f64| {
            let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1].as_secs_f64() * 1000.0
        };
        Some(Self { p50_ms: at(0.50), p95_ms: at(0.95), p99_ms: at(0.99), max_ms: at(1.0) })
    }
}

/// CPU time (user + system) and resident memory of one process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    cpu: Duration,
    pub rss_kb: u64,
}

/// Reads /proc/<pid>/stat and /status (Linux). None when the process is gone or unreadable.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ProcSample { cpu: Duration::from_millis(ticks * 10), rss_kb })
}

/// Waits until the server is quiet (under 5% of a core over a quarter second, at most 15 s)
/// so one scenario's aftermath (e.g. thousands of connections closing) is not measured as
/// part of the next. Without a pid to watch, waits one second.
pub async fn settle(server_pid: Option<u32>) {
    let Some(pid) = server_pid else {
        tokio::time::sleep(Duration::from_secs(1)).await;
        return;
    };
    let window = Duration::from_millis(250);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let Some(before) = sample(pid) else { return };
        tokio::time::sleep(window).await;
        let Some(after) = sample(pid) else { return };
        if after.cpu.saturating_sub(before.cpu).as_secs_f64() < window.as_secs_f64() * 0.05 {
            return;
        }
    }
}

/// CPU use of the server and of the tool over one scenario, in percent of one core.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUse {
    pub server_cpu_pct: Option<f64>,
    pub tool_cpu_pct: Option<f64>,
    pub server_rss_kb: Option<u64>,
}

/// Started at the beginning of a scenario; `finish` gives its CPU use.
pub struct CpuMeter {
    server_pid: Option<u32>,
    started: Instant,
    server: Option<ProcSample>,
    tool: Option<ProcSample>,
}

impl CpuMeter {
    pub fn start(server_pid: Option<u32>) -> Self {
        Self { server_pid, started: Instant::now(), server: server_pid.and_then(sample), tool: sample(std::process::id()) }
    }

    pub fn finish(&self) -> CpuUse {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let pct = |before: Option<ProcSample>, after: Option<ProcSample>| {
            Some((after?.cpu.saturating_sub(before?.cpu)).as_secs_f64() / wall * 100.0)
        };
        let server_now = self.server_pid.and_then(sample);
        CpuUse {
            server_cpu_pct: pct(self.server, server_now),
            tool_cpu_pct: pct(self.tool, sample(std::process::id())),
            server_rss_kb: server_now.map(|s| s.rss_kb),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut samples).unwrap();
        assert_eq!((p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms), (50.0, 95.0, 99.0, 100.0));
        assert!(Percentiles::of(&mut []).is_none());
    }

    #[test]
    fn samples_this_process() {
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_kb > 0);
    }
}
