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
pub mod batch_size;
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
use batch_size::{ClientActivity, batch_size};

/// Least time between the end of a caught-up drain and the next one.
const LINGER_MIN: Duration = Duration::from_millis(20);
/// Most time a caught-up drain waits for more rows: how much later than
/// necessary a write may reach PostgreSQL under a light, steady stream.
const LINGER_MAX: Duration = Duration::from_millis(100);
/// The batch the linger aims for. A call costs PostgreSQL milliseconds of
/// CPU whatever its size (3.1-3.7 ms for 10 rows in psql), plus about 30 us
/// per row: at 400 creates/s, batches of 12 rows made that 460 us per row
/// (BENCHMARKS.md, 2026-12-01 from 20:11 UTC).
const LINGER_TARGET_ROWS: u32 = 256;

/// How long to wait for more rows after a drain that caught up, given the
/// rows it sent and the time since the previous one caught up: long enough
/// for about [`LINGER_TARGET_ROWS`] at the rate seen, within
/// [`LINGER_MIN`]..=[`LINGER_MAX`]. A fast stream keeps the short wait (its
/// batches are large anyway, and a longer one only held more rows back);
/// a slow one waits longer so each call carries more rows. The first write
/// after a quiet spell is sent at once: the wait comes after a drain.
fn linger(sent: usize, since_previous: Duration) -> Duration {
    match u32::try_from(sent) {
        Ok(sent) if sent > 0 => {
            (since_previous.saturating_mul(LINGER_TARGET_ROWS) / sent).clamp(LINGER_MIN, LINGER_MAX)
        }
        // Nothing sent (woken for nothing), or more rows than a u32 holds.
        _ => LINGER_MIN,
    }
}

/// Most lanes `RESERVOIR_SYNC_LANES` accepts (the PostgreSQL pool is sized
/// for them).
pub const MAX_LANES: u32 = 4;

/// A batch with fewer rows than this goes in one call: under a steady stream
/// of creates batches are small, and splitting them would only add calls.
const LANE_MIN_ROWS: usize = 256;

/// Settings of the sync task, from the configuration.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Rows per call while clients call the API.
    pub batch: u32,
    /// Rows per call once they have not for a while (see `batch_size`).
    pub quiet_batch: u32,
    /// Connections that apply one large batch together (see `Prepared`).
    pub lanes: u32,
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
            quiet_batch: config.sync_quiet_batch,
            lanes: config.sync_lanes,
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
    activity: Arc<ClientActivity>,
    migrated: bool,
    /// When the current failure streak started.
    failing_since: Option<Instant>,
}

/// Starts the sync task. `wake` is what the writer notifies after commits
/// that queued outbox rows; `activity` is when clients last called, which
/// sizes the batches; `stop` asks for a last flush and exit.
pub fn spawn(
    postgres: Postgres,
    reads: Reads,
    writer: Writer,
    wake: Arc<Notify>,
    settings: SyncSettings,
    activity: Arc<ClientActivity>,
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
        activity,
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
        let mut caught_up = Instant::now();
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
                    Ok(sent) => {
                        backoff = None;
                        // Caught up. Let the next writes gather before
                        // draining again: under a steady stream of creates
                        // every commit wakes this task, and batches of a
                        // handful of rows paid the per-batch costs (outbox
                        // read, the call, the writer's commit) per handful.
                        // Wake-ups meanwhile are kept by the Notify.
                        let wait = linger(sent, caught_up.elapsed());
                        caught_up = Instant::now();
                        tokio::select! {
                            _ = shutdown::requested(&mut stop) => break 'wait,
                            _ = tokio::time::sleep(wait) => {}
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
                Ok(_) => true,
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
    ///
    /// Returns the outbox rows it sent.
    async fn drain(&mut self, stop: Option<&watch::Receiver<bool>>) -> Result<usize, SyncError> {
        if !self.migrated {
            self.postgres.migrate().await?;
            self.migrated = true;
            tracing::info!("PostgreSQL schema is up to date");
        }
        let stopping = || stop.is_some_and(|stop| *stop.borrow());
        self.share_keys().await?;
        let mut next = self.prepare(0, self.next_batch_size()).await?;
        // The outcome of the batch Postgres committed last, not recorded yet.
        let mut unrecorded: Option<SyncReport> = None;
        let mut sent_rows = 0;
        while next.entries > 0 {
            let batch = next;
            sent_rows += batch.entries;
            let more = batch.entries >= batch.limit && !stopping();
            let limit = self.next_batch_size();
            let started = Instant::now();
            let ((sent, apply_time), (read, read_time), (recorded, record_time)) = tokio::join!(
                timed(started, self.apply(&batch)),
                timed(started, async {
                    if more {
                        // Keys issued meanwhile are shared between batches,
                        // not only once the backlog is gone.
                        self.share_keys().await?;
                        self.prepare(batch.upto_seq, limit).await.map(Some)
                    } else {
                        Ok(None)
                    }
                }),
                timed(started, self.record_outcome(unrecorded.take())),
            );
            tracing::debug!(
                rows = batch.rows(),
                lanes = batch.lanes.len(),
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
                .fetch_add(batch.rows() as u64, Ordering::Relaxed);
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
        Ok(sent_rows)
    }

    /// How many outbox rows the next batch may take.
    fn next_batch_size(&self) -> u32 {
        batch_size(
            self.settings.batch,
            self.settings.quiet_batch,
            self.activity.since(),
        )
    }

    /// Reads at most `limit` outbox rows after `after` and turns them into
    /// the rows sent.
    async fn prepare(&self, after: i64, limit: u32) -> Result<Prepared, SyncError> {
        let batch = self
            .reads
            .outbox_batch(after, limit)
            .await
            .map_err(|e| SyncError::Transient(format!("reading the outbox: {e}")))?;
        let mut items: Vec<Item> = batch
            .resources
            .iter()
            .map(|r| Item {
                kind: EntityKind::Resource,
                id: r.id,
                resource_id: r.id,
                version: r.version,
                rejected_locally: false,
                payload: Payload::Resource(payload::resource(r)),
            })
            .collect();
        items.extend(batch.reservations.iter().map(|(r, request_hash)| Item {
            kind: EntityKind::Reservation,
            id: r.id,
            resource_id: r.resource_id,
            version: r.version,
            rejected_locally: r.status == Status::Rejected,
            payload: Payload::Reservation(payload::reservation_row(r, request_hash)),
        }));
        let lanes = if items.len() >= LANE_MIN_ROWS {
            self.settings.lanes as usize
        } else {
            1
        };
        Ok(Prepared {
            upto_seq: batch.upto_seq,
            entries: batch.entries,
            limit: limit as usize,
            lanes: split_by_resource(items, lanes),
        })
    }

    /// Sends one prepared batch, its lanes at once; the report says what to
    /// record locally. The batch succeeds only if every lane committed: if
    /// one fails, the whole batch is sent again, and the lanes that had
    /// committed change nothing the second time.
    async fn apply(&self, batch: &Prepared) -> Result<SyncReport, SyncError> {
        let lanes = futures::future::join_all(batch.lanes.iter().map(|items| async move {
            let mut report = SyncReport::default();
            self.send(items, &mut report).await.map(|()| report)
        }))
        .await;
        let mut report = SyncReport {
            upto_seq: batch.upto_seq,
            ..SyncReport::default()
        };
        for lane in lanes {
            let lane = lane?;
            report.synced.extend(lane.synced);
            report.rejected.extend(lane.rejected);
            report.dead.extend(lane.dead);
        }
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
///
/// A large batch is split into lanes by resource, and each lane is applied
/// in its own PostgreSQL transaction, all at once: one call keeps a single
/// backend busy while the other core idles, and applying is what bounds a
/// drain. Competing bookings stay first come, first served, because every
/// row of a resource (and the resource itself) is in the same lane, in
/// outbox order, and the lanes of the next batch start only once every lane
/// of this one has committed. Lanes hold different resources' advisory
/// locks, so they never wait for each other.
struct Prepared {
    /// Outbox rows up to here are covered.
    upto_seq: i64,
    /// The most rows it could have taken: with fewer, the outbox is caught
    /// up.
    limit: usize,
    /// Outbox rows read (a full batch means there may be more).
    entries: usize,
    /// The rows to send, one list per lane, none empty.
    lanes: Vec<Vec<Item>>,
}

impl Prepared {
    fn rows(&self) -> usize {
        self.lanes.iter().map(Vec::len).sum()
    }
}

/// Deals `items` into `lanes` lists (at least one) by resource, keeping
/// their order within each list; empty lists are dropped.
fn split_by_resource(items: Vec<Item>, lanes: usize) -> Vec<Vec<Item>> {
    let lanes = lanes.max(1);
    let mut split: Vec<Vec<Item>> = (0..lanes)
        .map(|_| Vec::with_capacity(items.len() / lanes + 1))
        .collect();
    for item in items {
        // Both halves of the id: a UUIDv7 keeps its random bits at the low
        // end, a hand-made id may vary only at the high end.
        let bits = item.resource_id.as_u128();
        let lane = (bits as u64 ^ (bits >> 64) as u64) % lanes as u64;
        split[lane as usize].push(item);
    }
    split.retain(|lane| !lane.is_empty());
    split
}

/// One entity of a batch, ready to send.
struct Item {
    kind: EntityKind,
    id: Uuid,
    /// The resource whose lane the item goes in: its own id for a resource.
    resource_id: Uuid,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: EntityKind, resource_id: Uuid) -> Item {
        Item {
            kind,
            id: Uuid::now_v7(),
            resource_id,
            version: 1,
            rejected_locally: false,
            payload: Payload::Resource(Value::Null),
        }
    }

    #[test]
    fn the_linger_aims_for_full_batches_within_its_bounds() {
        let ms = Duration::from_millis;
        // 12,800 rows/s and faster: batches are large without waiting.
        assert_eq!(linger(1_000, ms(50)), LINGER_MIN);
        assert_eq!(linger(256, ms(20)), LINGER_MIN);
        // 5,000 rows/s: about 51 ms gathers 256 rows.
        assert_eq!(linger(250, ms(50)), Duration::from_micros(51_200));
        // 400 rows/s (a batch of 12 every 30 ms), or one row after a quiet
        // spell: no more than LINGER_MAX.
        assert_eq!(linger(12, ms(30)), LINGER_MAX);
        assert_eq!(linger(1, Duration::from_secs(60)), LINGER_MAX);
        // Woken with nothing to send: the short wait, as before.
        assert_eq!(linger(0, ms(30)), LINGER_MIN);
    }

    #[test]
    fn lanes_keep_each_resource_together_and_in_order() {
        // Ids that differ only in their low half, and only in their high half.
        let resources: Vec<Uuid> = (0..16u128)
            .map(|k| Uuid::from_u128(if k % 2 == 0 { k } else { k << 64 }))
            .collect();
        let mut items = Vec::new();
        for round in 0..5 {
            for &resource in &resources {
                let kind = if round == 0 {
                    EntityKind::Resource
                } else {
                    EntityKind::Reservation
                };
                items.push(item(kind, resource));
            }
        }
        let order: Vec<Uuid> = items.iter().map(|i| i.id).collect();
        let lanes = split_by_resource(items, 2);

        assert_eq!(lanes.len(), 2, "both lanes hold resources");
        assert_eq!(lanes.iter().map(Vec::len).sum::<usize>(), order.len());
        for resource in &resources {
            let holding: Vec<_> = lanes
                .iter()
                .filter(|lane| lane.iter().any(|i| i.resource_id == *resource))
                .collect();
            assert_eq!(holding.len(), 1, "resource {resource} is in one lane");
            let kinds: Vec<_> = holding[0]
                .iter()
                .filter(|i| i.resource_id == *resource)
                .map(|i| i.kind)
                .collect();
            assert_eq!(kinds.len(), 5);
            assert_eq!(kinds[0], EntityKind::Resource, "the resource comes first");
        }
        for lane in &lanes {
            let positions: Vec<usize> = lane
                .iter()
                .map(|i| order.iter().position(|id| *id == i.id).unwrap())
                .collect();
            assert!(positions.is_sorted(), "a lane keeps outbox order");
        }
    }

    #[test]
    fn one_lane_or_no_rows_is_not_split() {
        assert!(split_by_resource(Vec::new(), 2).is_empty());
        let resource = Uuid::now_v7();
        let lanes = split_by_resource(
            (0..3)
                .map(|_| item(EntityKind::Reservation, resource))
                .collect(),
            1,
        );
        assert_eq!(lanes.len(), 1);
        assert_eq!(lanes[0].len(), 3);
        let lanes = split_by_resource(
            (0..3)
                .map(|_| item(EntityKind::Reservation, resource))
                .collect(),
            4,
        );
        assert_eq!(
            lanes.len(),
            1,
            "one resource, one lane; empty lanes dropped"
        );
    }
}
