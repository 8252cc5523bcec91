//! `loadgen seed`: stores many reservations quickly through
//! `POST /v1/reservations/batch` (for the "N reservations stored" figures).
//! `loadgen drain`: watches `GET /v1/sync/status` until the outbox is empty
//! and reports how fast it drained.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::ensure;
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    Common,
    client::{Conn, Target},
    parse_duration,
    probes::{RssProbe, RssReport, sync_status},
    scenario::{book_batch, booking, create_resource},
};

#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub common: Common,
    /// Reservations to store.
    #[arg(long, default_value_t = 1_000_000)]
    pub reservations: u64,
    /// Resources they are spread over (round robin, consecutive half-hour
    /// slots on each: 1,000,000 over 1,000 resources is ~21 days each).
    #[arg(long, default_value_t = 1000)]
    pub resources: usize,
    /// Reservations per batch request (at most 500).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Batch requests in flight.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Report the server's resident memory (pid of `reservoir`).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct SeedReport {
    reservations: u64,
    resources: usize,
    elapsed_s: f64,
    rows_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_memory: Option<RssReport>,
}

const EPOCH_2040: i64 = 2_208_988_800;

pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let target = args.common.target().await?;
    let batch = args.batch.clamp(1, 500) as u64;
    let mut conn = Conn::open(&target).await?;
    let base = EPOCH_2040 + fastrand::i64(0..1_000_000) * 86_400;
    let mut resources = Vec::with_capacity(args.resources);
    for i in 0..args.resources.max(1) {
        resources.push(
            create_resource(
                &mut conn,
                json!({"name": format!("seed {i}"), "capacity": 1, "slot_minutes": 30}),
            )
            .await?,
        );
    }
    let resources = Arc::new(resources);
    let probe = args.server_pid.map(RssProbe::start).transpose()?;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let total = args.reservations;
    let mut workers = Vec::new();
    for _ in 0..args.connections.max(1) {
        let (target, resources, next, done) = (
            target.clone(),
            resources.clone(),
            next.clone(),
            done.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::open(&target).await?;
            let count = resources.len() as u64;
            loop {
                let from = next.fetch_add(batch, Ordering::Relaxed);
                if from >= total {
                    return anyhow::Ok(());
                }
                let items: Vec<Value> = (from..(from + batch).min(total))
                    .map(|n| {
                        let start = base + (n / count) as i64 * 1800;
                        booking(&resources[(n % count) as usize], start, start + 1800)
                    })
                    .collect();
                let booked = book_batch(&mut conn, items).await?;
                done.fetch_add(booked.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    let progress = tokio::spawn({
        let done = done.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let n = done.load(Ordering::Relaxed);
                eprintln!(
                    "seed: {n} / {total} ({:.0} rows/s)",
                    n as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
    });
    let mut failure = None;
    for worker in workers {
        if let Err(error) = worker.await? {
            failure.get_or_insert(error);
        }
    }
    progress.abort();
    if let Some(error) = failure {
        return Err(error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stored = done.load(Ordering::Relaxed);
    ensure!(stored == total, "stored {stored} of {total}");
    let report = SeedReport {
        reservations: stored,
        resources: resources.len(),
        elapsed_s: elapsed,
        rows_per_s: (stored as f64 / elapsed).round(),
        server_memory: probe.map(RssProbe::finish),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "seeded {} reservations over {} resources in {:.1}s ({:.0} rows/s)",
            report.reservations, report.resources, report.elapsed_s, report.rows_per_s
        );
        if let Some(m) = &report.server_memory {
            println!(
                "server pid {}: max RSS {:.1} MiB while seeding (peak since start {:.1} MiB)",
                m.pid,
                m.max_rss_kib as f64 / 1024.0,
                m.hwm_kib as f64 / 1024.0
            );
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub common: Common,
    /// Give up after this long.
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Wait at most this long for a backlog to appear (the server queues rows
    /// written before PostgreSQL was configured when it starts).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Report the server's resident memory (pid of `reservoir`).
    #[arg(long)]
    pub server_pid: Option<u32>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct DrainReport {
    /// Outbox rows pending at the first sample that saw a backlog.
    first_pending: u64,
    /// Largest backlog seen.
    max_pending: u64,
    /// Rows Postgres acknowledged between the first sample and the empty outbox.
    rows_sent: u64,
    elapsed_s: f64,
    rows_per_s: f64,
    drained: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_memory: Option<RssReport>,
}

/// Connects, retrying while the server starts.
async fn connect(target: &Target, wait: Duration) -> anyhow::Result<Conn> {
    let deadline = Instant::now() + wait;
    loop {
        match Conn::open(target).await {
            Ok(conn) => return Ok(conn),
            Err(error) if Instant::now() > deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub async fn drain(args: DrainArgs) -> anyhow::Result<()> {
    let target = args.common.target().await?;
    let mut conn = connect(&target, args.wait).await?;
    let probe = args.server_pid.map(RssProbe::start).transpose()?;
    let started = Instant::now();
    let mut first: Option<(Instant, u64, u64)> = None;
    let mut max_pending = 0;
    let mut last_print = Instant::now();
    let (end, rows_end, drained) = loop {
        let sample = sync_status(&mut conn).await?;
        let now = Instant::now();
        max_pending = max_pending.max(sample.pending);
        if first.is_none() && sample.pending > 0 {
            first = Some((now, sample.pending, sample.rows_sent));
        }
        if first.is_some() && sample.pending == 0 {
            break (now, sample.rows_sent, true);
        }
        if first.is_none() && started.elapsed() > args.wait {
            anyhow::bail!("no backlog appeared within {:?}", args.wait);
        }
        if started.elapsed() > args.timeout {
            break (now, sample.rows_sent, false);
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            last_print = now;
            eprintln!(
                "drain: {} pending, {} rows sent, {} consecutive failures",
                sample.pending, sample.rows_sent, sample.consecutive_failures
            );
        }
        // `/v1/sync/status` counts the outbox with a full scan, which costs
        // the server tens of milliseconds against a large backlog: polling
        // that at 10 Hz took a quarter of the server's CPU away from the
        // drain being measured. Poll once a second while the backlog is
        // large, and every 100 ms near the end, where the timing matters.
        let near_end =
            first.is_some_and(|(_, first_pending, _)| sample.pending * 20 < first_pending);
        let pause = if near_end || first.is_none() {
            100
        } else {
            1000
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    };
    let (from, first_pending, rows_start) = first.unwrap_or((end, 0, rows_end));
    let elapsed = (end - from).as_secs_f64();
    let rows_sent = rows_end.saturating_sub(rows_start);
    let report = DrainReport {
        first_pending,
        max_pending,
        rows_sent,
        elapsed_s: elapsed,
        rows_per_s: if elapsed > 0.0 {
            (rows_sent as f64 / elapsed).round()
        } else {
            0.0
        },
        drained,
        server_memory: probe.map(RssProbe::finish),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} {} rows in {:.1}s: {:.0} rows/s (backlog {} at the first sample, max {})",
            if drained { "drained" } else { "NOT drained:" },
            report.rows_sent,
            report.elapsed_s,
            report.rows_per_s,
            report.first_pending,
            report.max_pending
        );
        if let Some(m) = &report.server_memory {
            println!(
                "server pid {}: max RSS {:.1} MiB while draining (peak since start {:.1} MiB)",
                m.pid,
                m.max_rss_kib as f64 / 1024.0,
                m.hwm_kib as f64 / 1024.0
            );
        }
    }
    Ok(())
}
