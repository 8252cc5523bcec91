//! Background sync of local writes to PostgreSQL, the shared system of record.
//!
//! Requests never wait for Postgres: the writer commits each write with an
//! outbox row, and this task sends the outbox in batches (one round trip per
//! batch), woken by new writes and by a timer. Failures are retried forever
//! with full-jitter exponential backoff; rows Postgres refuses for good are
//! isolated by bisecting the batch and moved to the dead letters, so they never
//! block the rows behind them. Outbox rows are deleted only after Postgres
//! committed them, in the same SQLite transaction that records the outcome, so
//! a crash at any instant re-sends at worst (and re-sending changes nothing).

pub mod backoff;
pub mod feed;
pub mod payload;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use jiff::Timestamp;
use serde_json::Value;
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
    time::MissedTickBehavior,
};
use uuid::Uuid;

use crate::{
    config::Config,
    domain::{reservation::Status, time::now},
    shutdown,
    store::{
        postgres::{Applied, Postgres, SyncError},
        sqlite::{
            Reads, Writer,
            writer::{DeadLetter, EntityKind, Op, Rejection, SyncReport},
        },
    },
};
use backoff::Backoff;

/// Least time between the end of a caught-up drain and the next one.
const LINGER: Duration = Duration::from_millis(20);

/// Settings of the sync task, from the configuration.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub batch: u32,
    pub interval: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Bound on the last flush at shutdown.
    pub grace: Duration,
    pub node_id: String,
}

impl SyncSettings {
    pub fn from_config(config: &Config, node_id: String) -> SyncSettings {
        SyncSettings {
            batch: config.sync_batch,
            interval: Duration::from_millis(config.sync_interval_ms),
            backoff_min: Duration::from_millis(config.sync_backoff_min_ms),
            backoff_max: Duration::from_millis(config.sync_backoff_max_ms),
            grace: Duration::from_millis(config.shutdown_grace_ms),
            node_id,
        }
    }
}

/// What the sync task has done so far, for `/v1/sync/status` and metrics.
#[derive(Debug, Default)]
pub struct SyncStats {
    pub consecutive_failures: AtomicU64,
    pub batches_sent: AtomicU64,
    pub rows_sent: AtomicU64,
    pub retries: AtomicU64,
    pub conflicts: AtomicU64,
    pub dead_letters_written: AtomicU64,
    last_success_at: Mutex<Option<Timestamp>>,
    last_error: Mutex<Option<String>>,
}

impl SyncStats {
    pub fn last_success_at(&self) -> Option<Timestamp> {
        *self
            .last_success_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The running sync, as the rest of the service sees it.
#[derive(Clone)]
pub struct SyncHandle {
    pub stats: Arc<SyncStats>,
    pub postgres: Postgres,
}

struct Syncer {
    postgres: Postgres,
    reads: Reads,
    writer: Writer,
    wake: Arc<Notify>,
    stats: Arc<SyncStats>,
    settings: SyncSettings,
    migrated: bool,
    /// When the current failure streak started.
    failing_since: Option<Instant>,
}

/// Starts the sync task. `wake` is what the writer notifies after commits
/// that queued outbox rows; `stop` asks for a last flush and exit.
pub fn spawn(
    postgres: Postgres,
    reads: Reads,
    writer: Writer,
    wake: Arc<Notify>,
    settings: SyncSettings,
    stop: watch::Receiver<bool>,
) -> (SyncHandle, JoinHandle<()>) {
    let stats = Arc::new(SyncStats::default());
    let handle = SyncHandle {
        stats: stats.clone(),
        postgres: postgres.clone(),
    };
    let syncer = Syncer {
        postgres,
        reads,
        writer,
        wake,
        stats,
        settings,
        migrated: false,
        failing_since: None,
    };
    (handle, tokio::spawn(syncer.run(stop)))
}

impl Syncer {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        tracing::info!(postgres = self.postgres.display(), node = %self.settings.node_id, "sync to PostgreSQL started");
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut backoff: Option<Backoff> = None;
        'wait: loop {
            tokio::select! {
                _ = shutdown::requested(&mut stop) => break 'wait,
                _ = self.wake.notified() => {}
                _ = tick.tick() => {}
            }
            // Drain until a batch comes back short; a long backlog must not
            // keep shutdown waiting: `drain` returns between batches once
            // stop is set, and the final flush takes over, bounded by the
            // grace period.
            loop {
                if *stop.borrow() {
                    break 'wait;
                }
                match self.drain(Some(&stop)).await {
                    Ok(()) => {
                        backoff = None;
                        // Caught up. Let the next writes gather before
                        // draining again: under a steady stream of creates
                        // every commit wakes this task, and batches of a
                        // handful of rows paid the per-batch costs (outbox
                        // read, the call, the writer's commit) per handful.
                        // Wake-ups meanwhile are kept by the Notify.
                        tokio::select! {
                            _ = shutdown::requested(&mut stop) => break 'wait,
                            _ = tokio::time::sleep(LINGER) => {}
                        }
                        break;
                    }
                    Err(error) => {
                        self.failed(&error);
                        let delay = backoff
                            .get_or_insert_with(|| {
                                Backoff::new(self.settings.backoff_min, self.settings.backoff_max)
                            })
                            .next_delay();
                        tokio::select! {
                            _ = shutdown::requested(&mut stop) => break 'wait,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        self.final_flush().await;
    }

    /// One bounded attempt to send what is left; the rest stays queued for the
    /// next start.
    async fn final_flush(&mut self) {
        let grace = self.settings.grace;
        let flushed = tokio::time::timeout(grace, async {
            match self.drain(None).await {
                Ok(()) => true,
                Err(error) => {
                    self.failed(&error);
                    false
                }
            }
        })
        .await;
        match flushed {
            Ok(true) => tracing::info!("outbox flushed to PostgreSQL"),
            _ => tracing::warn!(
                ?grace,
                "outbox not fully flushed at shutdown; the rest is sent on the next start"
            ),
        }
    }

    /// Sends the outbox, batch after batch, until a batch comes back short
    /// (the outbox is caught up) or `stop` is set.
    ///
    /// The three steps of a batch use different resources: reading the
    /// outbox (a SQLite read connection), applying it (PostgreSQL) and
    /// recording the outcome (the SQLite writer). They are pipelined, so a
    /// backlog drains at the pace of the slowest step rather than of their
    /// sum: while Postgres applies batch N, the outcome of batch N - 1 is
    /// recorded and batch N + 1 is read. What stays strictly in order:
    ///
    /// - Postgres applies one batch at a time, in outbox order (first come,
    ///   first served for competing bookings);
    /// - the writer records outcomes in the same order, and the outcome of a
    ///   batch only after Postgres committed it, so outbox rows are deleted
    ///   only once Postgres has them;
    /// - batch N + 1 starts after batch N's last outbox row. It may carry an
    ///   entity that changed after batch N was read: its newer version is
    ///   sent again, which is what happens when a write lands while a batch
    ///   is in flight, and the version guard makes it harmless.
    ///
    /// On any error the batches in flight are dropped, not acknowledged: their
    /// outbox rows stay and are sent again (re-sending changes nothing).
    async fn drain(&mut self, stop: Option<&watch::Receiver<bool>>) -> Result<(), SyncError> {
        if !self.migrated {
            self.postgres.migrate().await?;
            self.migrated = true;
            tracing::info!("PostgreSQL schema is up to date");
        }
        let full = self.settings.batch as usize;
        let stopping = || stop.is_some_and(|stop| *stop.borrow());
        self.share_keys().await?;
        let mut next = self.prepare(0).await?;
        // The outcome of the batch Postgres committed last, not recorded yet.
        let mut unrecorded: Option<SyncReport> = None;
        while next.entries > 0 {
            let batch = next;
            let more = batch.entries >= full && !stopping();
            let started = Instant::now();
            let ((sent, apply_time), (read, read_time), (recorded, record_time)) = tokio::join!(
                timed(started, self.apply(&batch)),
                timed(started, async {
                    if more {
                        // Keys issued meanwhile are shared between batches,
                        // not only once the backlog is gone.
                        self.share_keys().await?;
                        self.prepare(batch.upto_seq).await.map(Some)
                    } else {
                        Ok(None)
                    }
                }),
                timed(started, self.record_outcome(unrecorded.take())),
            );
            tracing::debug!(
                rows = batch.items.len(),
                ?apply_time,
                ?read_time,
                ?record_time,
                "sync batch"
            );
            recorded?;
            let report = sent?;
            // Counted once Postgres has the rows, before the outbox rows go:
            // a reader that sees the outbox empty also sees these counters
            // moved.
            let stats = &self.stats;
            stats.batches_sent.fetch_add(1, Ordering::Relaxed);
            stats
                .rows_sent
                .fetch_add(batch.items.len() as u64, Ordering::Relaxed);
            stats
                .conflicts
                .fetch_add(report.rejected.len() as u64, Ordering::Relaxed);
            stats
                .dead_letters_written
                .fetch_add(report.dead.len() as u64, Ordering::Relaxed);
            unrecorded = Some(report);
            self.succeeded();
            match read {
                Ok(Some(batch)) => next = batch,
                Ok(None) => break,
                Err(error) => {
                    // Postgres has this batch: record it before giving up.
                    self.record_outcome(unrecorded.take()).await?;
                    return Err(error);
                }
            }
        }
        self.record_outcome(unrecorded.take()).await?;
        self.succeeded();
        Ok(())
    }

    /// Reads the outbox rows after `after` and turns them into the rows sent.
    async fn prepare(&self, after: i64) -> Result<Prepared, SyncError> {
        let batch = self
            .reads
            .outbox_batch(after, self.settings.batch)
            .await
            .map_err(|e| SyncError::Transient(format!("reading the outbox: {e}")))?;
        let mut items: Vec<Item> = batch
            .resources
            .iter()
            .map(|r| Item {
                kind: EntityKind::Resource,
                id: r.id,
                version: r.version,
                rejected_locally: false,
                payload: Payload::Resource(payload::resource(r)),
            })
            .collect();
        items.extend(batch.reservations.iter().map(|(r, request_hash)| Item {
            kind: EntityKind::Reservation,
            id: r.id,
            version: r.version,
            rejected_locally: r.status == Status::Rejected,
            payload: Payload::Reservation(payload::reservation_row(r, request_hash)),
        }));
        Ok(Prepared {
            upto_seq: batch.upto_seq,
            entries: batch.entries,
            items,
        })
    }

    /// Sends one prepared batch; the report says what to record locally.
    async fn apply(&self, batch: &Prepared) -> Result<SyncReport, SyncError> {
        let mut report = SyncReport {
            upto_seq: batch.upto_seq,
            ..SyncReport::default()
        };
        self.send(&batch.items, &mut report).await?;
        Ok(report)
    }

    /// Records a batch's outcome locally (deletes its outbox rows).
    async fn record_outcome(&self, report: Option<SyncReport>) -> Result<(), SyncError> {
        let Some(report) = report else {
            return Ok(());
        };
        self.writer
            .submit(Op::SyncApplied(report), None)
            .await
            .map_err(|e| {
                SyncError::Transient(format!("recording the sync outcome locally: {e}"))
            })?;
        Ok(())
    }

    /// Shares API keys issued here, so they work on every node.
    async fn share_keys(&self) -> Result<(), SyncError> {
        let keys = self
            .reads
            .unshared_keys(1000)
            .await
            .map_err(|e| SyncError::Transient(format!("reading unshared keys: {e}")))?;
        if keys.is_empty() {
            return Ok(());
        }
        self.postgres
            .push_keys(&self.settings.node_id, &keys)
            .await?;
        let hashes = keys.into_iter().map(|(hash, _, _)| hash).collect();
        self.writer
            .submit(Op::KeysShared(hashes), None)
            .await
            .map_err(|e| SyncError::Transient(format!("marking keys shared: {e}")))?;
        Ok(())
    }

    /// Sends `items` in one call; on a permanent error, splits them in halves
    /// until the offending row stands alone and dead-letters it.
    fn send<'a>(
        &'a self,
        items: &'a [Item],
        report: &'a mut SyncReport,
    ) -> Pin<Box<dyn Future<Output = Result<(), SyncError>> + Send + 'a>> {
        Box::pin(async move {
            let mut resources: Vec<&Value> = Vec::new();
            let mut reservations: Vec<&payload::ReservationRow> = Vec::with_capacity(items.len());
            for item in items {
                match &item.payload {
                    Payload::Resource(doc) => resources.push(doc),
                    Payload::Reservation(row) => reservations.push(row),
                }
            }
            match self
                .postgres
                .apply_rows(&self.settings.node_id, &resources, &reservations)
                .await
            {
                Ok(applied) => {
                    record(items, applied, report);
                    Ok(())
                }
                Err(SyncError::Permanent(error)) if items.len() == 1 => {
                    let item = &items[0];
                    tracing::error!(kind = item.kind.as_str(), id = %item.id, version = item.version, %error,
                        "PostgreSQL refused a row for good; moved to the dead letters");
                    report.dead.push(DeadLetter {
                        kind: item.kind,
                        id: item.id,
                        version: item.version,
                        error,
                    });
                    Ok(())
                }
                Err(SyncError::Permanent(_)) => {
                    let (left, right) = items.split_at(items.len() / 2);
                    self.send(left, report).await?;
                    self.send(right, report).await
                }
                Err(transient) => Err(transient),
            }
        })
    }

    fn succeeded(&mut self) {
        *self
            .stats
            .last_success_at
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(now());
        let failures = self.stats.consecutive_failures.swap(0, Ordering::Relaxed);
        if let Some(since) = self.failing_since.take() {
            tracing::info!(failures, after = ?since.elapsed(), "sync to PostgreSQL recovered");
        }
    }

    /// Logs once per failure streak, not once per retry.
    fn failed(&mut self, error: &SyncError) {
        let failures = self
            .stats
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        *self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
        if self.failing_since.is_none() {
            self.failing_since = Some(Instant::now());
            tracing::warn!(%error, failures, "sync to PostgreSQL is failing; retrying with backoff");
        }
    }
}

/// Runs `step` and says when it finished, counted from `started`: the debug
/// log of each batch shows which pipelined step sets the pace.
async fn timed<T>(started: Instant, step: impl Future<Output = T>) -> (T, Duration) {
    let output = step.await;
    (output, started.elapsed())
}

/// One outbox batch, read and turned into the rows sent.
struct Prepared {
    /// Outbox rows up to here are covered.
    upto_seq: i64,
    /// Outbox rows read (a full batch means there may be more).
    entries: usize,
    items: Vec<Item>,
}

/// One entity of a batch, ready to send.
struct Item {
    kind: EntityKind,
    id: Uuid,
    version: i64,
    rejected_locally: bool,
    payload: Payload,
}

/// What is sent for an item.
enum Payload {
    /// A resource document (few per batch: they travel as jsonb).
    Resource(Value),
    /// A reservation, as one element of each column array.
    Reservation(payload::ReservationRow),
}

/// Turns Postgres's per-reservation outcomes into the local report.
fn record(items: &[Item], applied: Vec<Applied>, report: &mut SyncReport) {
    for outcome in applied {
        if outcome.status == Status::Rejected.as_str() {
            let known = items
                .iter()
                .any(|i| i.id == outcome.id && i.rejected_locally);
            if !known {
                report.rejected.push(Rejection {
                    id: outcome.id,
                    version: outcome.version,
                    reason: outcome.reason,
                });
                continue;
            }
        }
        report.synced.push((outcome.id, outcome.version));
    }
}
