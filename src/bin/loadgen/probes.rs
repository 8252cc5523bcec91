//! What is watched beside the load: the server's resident memory (from
//! /proc, given its pid) and its sync outbox (from `GET /v1/sync/status`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hyper::Method;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::client::{Conn, Target};

/// `VmRSS` or `VmHWM` of a process, in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Samples a process's resident set every 100 ms.
pub struct RssProbe {
    pid: u32,
    max: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RssReport {
    pub pid: u32,
    /// Largest VmRSS sampled during the run.
    pub max_rss_kib: u64,
    /// VmRSS at the end of the run.
    pub end_rss_kib: u64,
    /// VmHWM: the process's peak since it started (all earlier phases too).
    pub hwm_kib: u64,
}

impl RssProbe {
    pub fn start(pid: u32) -> anyhow::Result<RssProbe> {
        anyhow::ensure!(
            proc_status_kib(pid, "VmRSS:").is_some(),
            "cannot read /proc/{pid}/status"
        );
        let max = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let max = max.clone();
            async move {
                loop {
                    if let Some(rss) = proc_status_kib(pid, "VmRSS:") {
                        max.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Ok(RssProbe { pid, max, task })
    }

    pub fn finish(self) -> RssReport {
        self.task.abort();
        let end = proc_status_kib(self.pid, "VmRSS:").unwrap_or(0);
        RssReport {
            pid: self.pid,
            max_rss_kib: self.max.load(Ordering::Relaxed).max(end),
            end_rss_kib: end,
            hwm_kib: proc_status_kib(self.pid, "VmHWM:").unwrap_or(0),
        }
    }
}

/// One reading of `GET /v1/sync/status`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SyncSample {
    pub at_s: f64,
    pub pending: u64,
    pub rows_sent: u64,
    pub consecutive_failures: u64,
}

pub async fn sync_status(conn: &mut Conn) -> anyhow::Result<SyncSample> {
    let (status, body) = conn.json(Method::GET, "/v1/sync/status", None).await?;
    anyhow::ensure!(status.is_success(), "sync status answered {status}: {body}");
    anyhow::ensure!(
        body["enabled"] == true,
        "sync is not enabled on the target (no RESERVOIR_POSTGRES_URL)"
    );
    let n = |field: &str| body[field].as_u64().unwrap_or(0);
    Ok(SyncSample {
        at_s: 0.0,
        pending: n("pending"),
        rows_sent: n("rows_sent"),
        consecutive_failures: n("consecutive_failures"),
    })
}

/// Polls the outbox once a second during a run.
pub struct SyncProbe {
    stop: Arc<AtomicBool>,
    task: JoinHandle<anyhow::Result<Vec<SyncSample>>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub max_pending: u64,
    pub end_pending: u64,
    pub rows_sent: u64,
    pub samples: Vec<SyncSample>,
}

impl SyncProbe {
    pub async fn start(target: &Target) -> anyhow::Result<SyncProbe> {
        let mut conn = Conn::open(target).await?;
        sync_status(&mut conn).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let started = Instant::now();
                let mut samples = Vec::new();
                loop {
                    let mut sample = sync_status(&mut conn).await?;
                    sample.at_s = started.elapsed().as_secs_f64();
                    samples.push(sample);
                    if stop.load(Ordering::Relaxed) {
                        return Ok(samples);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        Ok(SyncProbe { stop, task })
    }

    pub async fn finish(self) -> anyhow::Result<SyncReport> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.task.await??;
        let first = samples.first().copied().unwrap_or_default();
        let last = samples.last().copied().unwrap_or_default();
        Ok(SyncReport {
            max_pending: samples.iter().map(|s| s.pending).max().unwrap_or(0),
            end_pending: last.pending,
            rows_sent: last.rows_sent.saturating_sub(first.rows_sent),
            samples,
        })
    }
}
