//! The single writer: one OS thread owns the only SQLite write connection and
//! applies every write in the service.
//!
//! Why one writer: SQLite allows one writer at a time anyway, and owning it in
//! one thread turns the capacity check into plain sequential code that cannot
//! race (no overbooking, no retry loops on `SQLITE_BUSY`).
//!
//! Why group commit: requests queue on a channel; the writer takes everything
//! queued (up to [`MAX_GROUP`]) and applies it in one transaction, so the
//! commit (and its fsync with `synchronous=full`) is paid once per group, not
//! once per request. A request is answered only after the commit that holds
//! its write.
//!
//! Why a thread of its own with a synchronous (rusqlite) connection: a group
//! is a few dozen small statements, each a few microseconds of SQLite work.
//! Through an async driver every one of them was a round trip to another
//! thread and back to a busy tokio worker, and those hand-offs, not SQLite,
//! set the pace of creates. Here the whole transaction runs straight through
//! on one thread with cached prepared statements; the async side only queues
//! jobs and awaits replies.
//!
//! If a statement fails (disk full, I/O error), the group's transaction is
//! rolled back and its jobs are re-run one transaction each, so one bad write
//! cannot fail its neighbours.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::{
    runtime::Handle,
    sync::{
        Notify,
        mpsc::{self, error::TryRecvError},
        oneshot, watch,
    },
    task::JoinHandle,
};
use uuid::Uuid;

use crate::{
    domain::{
        auth::{KeyHash, Principal, Role, UserId},
        quota::{BookingQuotas, QuotaLimits},
        reservation::{NewReservation, Reservation, ReservationPatch},
        resource::{NewResource, Resource, ResourcePatch},
        schedule::is_open_for,
        time::{micros, now},
        version::VersionMatch,
    },
    error::AppError,
    store::{
        postgres::{FeedCursor, RemoteReservation},
        sqlite::checkpoint::{Checkpointer, WRITER_BACKSTOP_PAGES},
    },
};

mod reservations;
mod resources;
mod sync;

#[cfg(test)]
pub(super) use sync::{ACK_SYNCED, LOCAL_VERSIONS};
pub use sync::{DeadLetter, EntityKind, FEED_CURSOR, Rejection, SyncReport};

/// Most jobs committed in one transaction.
pub const MAX_GROUP: usize = 512;
/// Jobs waiting for the writer before `submit` applies back-pressure.
const QUEUE: usize = 8192;
/// Resources kept in the writer's memory (they are read on every create).
pub(super) const RESOURCE_CACHE: usize = 10_000;

/// A reservation to create on behalf of `user_id` (already authorised).
#[derive(Debug, Clone)]
pub struct Booking {
    pub new: NewReservation,
    pub user_id: UserId,
    /// Made with an admin key: not subject to booking quotas.
    pub exempt: bool,
    /// Hex digest of the request ([`NewReservation::fingerprint`]), computed
    /// by the caller so the hashing stays off the writer thread.
    fingerprint: String,
}

impl Booking {
    pub fn new(new: NewReservation, user_id: UserId, exempt: bool) -> Booking {
        // `hex::encode`, not `format!` per byte: that cost about 8,000
        // instructions per create (callgrind), 4 % of the whole request.
        let fingerprint = hex::encode(new.fingerprint(user_id.as_str()));
        Booking {
            new,
            user_id,
            exempt,
            fingerprint,
        }
    }
}

/// A committed change, handed to the commit hook (the caches) after the
/// commit and before any reply, so no reader on this node can see an older
/// version after the write is acknowledged.
#[derive(Debug, Clone)]
pub enum Changed {
    Reservation {
        reservation: Reservation,
        /// [start, end) ranges (microseconds) whose availability changed: the
        /// old and the new span of a moved reservation.
        spans: Vec<(i64, i64)>,
        /// The row is new to this node: no earlier version of it exists here,
        /// so none can be cached, and L1 is left to fill on its first read.
        fresh: bool,
    },
    Resource(Resource),
    /// PostgreSQL acknowledged `version` of a reservation, and only its sync
    /// state moved (pending to synced). Copies already cached are updated;
    /// nothing is cached for it otherwise: a drain acknowledges rows nobody
    /// has read, and rendering each into L1 would push out the hot ones.
    Synced {
        id: Uuid,
        version: i64,
        resource_id: Uuid,
        user_id: String,
    },
}

/// Called with every commit's changes; awaited before the replies go out.
pub type CommitHook =
    Arc<dyn Fn(Vec<Changed>) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// How the writer is set up.
#[derive(Clone, Default)]
pub struct WriterConfig {
    /// PostgreSQL is configured: every write also queues an outbox row, and
    /// this is notified after each commit that queued one.
    pub sync: Option<Arc<Notify>>,
    /// Booking quotas per user.
    pub quotas: QuotaLimits,
    pub on_commit: Option<CommitHook>,
}

/// A write the service can make.
#[derive(Debug, Clone)]
pub enum Op {
    CreateKey {
        hash: KeyHash,
        user_id: String,
        role: Role,
        bootstrap: bool,
    },
    CreateResource(NewResource),
    UpdateResource {
        id: Uuid,
        patch: ResourcePatch,
        if_match: Option<VersionMatch>,
    },
    CreateReservation(Booking),
    /// Items that failed validation before reaching the writer keep their
    /// error, so results stay in input order.
    CreateReservations(Vec<Result<Booking, AppError>>),
    UpdateReservation {
        principal: Principal,
        id: Uuid,
        patch: ReservationPatch,
        if_match: Option<VersionMatch>,
    },
    CancelReservation {
        principal: Principal,
        id: Uuid,
        if_match: Option<VersionMatch>,
    },
    /// Forget idempotency records older than this instant (microseconds).
    PurgeIdempotency {
        before: i64,
    },
    /// Apply what PostgreSQL answered for one sync batch.
    SyncApplied(SyncReport),
    /// Queue rows written before PostgreSQL was configured (once).
    QueueUnsynced,
    /// Marks keys as known to PostgreSQL.
    KeysShared(Vec<Vec<u8>>),
    /// Stores a key issued on another node, found in PostgreSQL.
    StoreSharedKey {
        hash: KeyHash,
        user_id: String,
        role: Role,
    },
    /// Parks the writer outside any transaction: see [`Writer::hold`].
    Hold(HoldGate),
    /// Store rows as PostgreSQL holds them (written by other nodes); only
    /// versions newer than the local ones are applied, and nothing is queued.
    ApplyRemote {
        resources: Vec<Resource>,
        reservations: Vec<RemoteReservation>,
        /// The change-feed position after these rows, stored with them.
        cursor: Option<FeedCursor>,
    },
}

/// The two sides of [`Op::Hold`] the writer sees.
#[derive(Debug, Clone)]
pub struct HoldGate {
    /// Notified once the writer has parked.
    parked: Arc<Notify>,
    /// The writer stays parked until this turns true.
    open: watch::Receiver<bool>,
}

/// A parked writer; [`Held::release`] lets it go.
pub struct Held {
    open: watch::Sender<bool>,
    reply: JoinHandle<OpResult>,
}

impl Held {
    /// Lets the writer go: everything queued meanwhile reaches it at once.
    pub async fn release(self) {
        let _ = self.open.send(true);
        let _ = self.reply.await;
    }
}

/// What a write did.
#[derive(Debug, Clone)]
pub enum Outcome {
    Done,
    Resource(Resource, Change),
    Reservation(Reservation, Change),
    Reservations(Vec<Result<(Reservation, Change), AppError>>),
    /// The stored answer to an earlier request with the same Idempotency-Key.
    Replay(StoredResponse),
}

/// How a returned row relates to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    /// Nothing changed (a repeated cancel, a no-op patch).
    Unchanged,
    /// A retried create with the same client id and content.
    Replayed,
}

pub type OpResult = Result<Outcome, AppError>;

/// An HTTP response as remembered for an Idempotency-Key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub body: Vec<u8>,
}

/// The Idempotency-Key context of a write. `render` turns the write's result
/// into the response to remember (None: do not remember, e.g. a 5xx), so the
/// record is stored in the same transaction as the write itself.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub scope: String,
    pub key: String,
    pub request_hash: [u8; 32],
    pub render: fn(&OpResult) -> Option<StoredResponse>,
}

struct Job {
    op: Op,
    idempotency: Option<Idempotency>,
    reply: oneshot::Sender<OpResult>,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
}

/// Running totals of the writer, for tests and metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Jobs answered (in any way).
    pub jobs: AtomicU64,
    /// Groups whose transaction failed and were re-run job by job.
    pub split_groups: AtomicU64,
}

impl Writer {
    /// Starts the writer thread on `conn`. It stops once `shutdown` turns true
    /// and the jobs already queued are committed; the returned task finishes
    /// when the thread has closed the connection. Must be called inside a
    /// tokio runtime, which the thread uses to wait for jobs and to run the
    /// commit hook.
    pub fn spawn(
        conn: Connection,
        shutdown: watch::Receiver<bool>,
        config: WriterConfig,
    ) -> (Writer, JoinHandle<()>) {
        let WriterConfig {
            sync,
            quotas,
            on_commit,
        } = config;
        let (jobs, queue) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let task = WriterTask {
            conn,
            runtime: Handle::current(),
            resources: HashMap::new(),
            longest: HashMap::new(),
            stats: stats.clone(),
            sync_enabled: sync.is_some(),
            outbox: Vec::new(),
            outbox_written: false,
            sync_notify: sync,
            quotas: BookingQuotas::new(quotas),
            changes: Vec::new(),
            on_commit,
        };
        let (finished, done) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("reservoir-writer".into())
            .spawn(move || {
                // Dropped when the thread ends, even by a panic: the task
                // below then completes and shutdown does not hang.
                let _finished = finished;
                task.run(queue, shutdown);
            })
            .expect("cannot start the writer thread");
        let handle = tokio::spawn(async move {
            let _ = done.await;
        });
        (Writer { jobs, stats }, handle)
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Jobs waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        QUEUE - self.jobs.capacity()
    }

    /// Parks the writer between transactions until [`Held::release`], so that
    /// what is queued meanwhile with [`Writer::submit_now`] is committed as
    /// one group (up to [`MAX_GROUP`]). For tests and benches that need exact
    /// groups; the service never holds its writer.
    pub async fn hold(&self) -> Held {
        let (open, gate) = watch::channel(false);
        let parked = Arc::new(Notify::new());
        let writer = self.clone();
        let op = Op::Hold(HoldGate {
            parked: parked.clone(),
            open: gate,
        });
        let reply = tokio::spawn(async move { writer.submit(op, None).await });
        parked.notified().await;
        Held { open, reply }
    }

    /// Queues `op` at once, or fails if the queue is full, and returns the
    /// future of its result. Unlike [`Writer::submit`], the job is in the
    /// queue when this returns, which is what exact groups behind
    /// [`Writer::hold`] need.
    pub fn submit_now(
        &self,
        op: Op,
        idempotency: Option<Idempotency>,
    ) -> Result<impl Future<Output = OpResult> + use<>, AppError> {
        let (job, answer) = Job::new(op, idempotency);
        self.jobs.try_send(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => {
                AppError::Unavailable("the write queue is full".into())
            }
            mpsc::error::TrySendError::Closed(_) => shutting_down(),
        })?;
        Ok(answer)
    }

    /// Applies `op` and waits for the commit that holds it.
    pub async fn submit(&self, op: Op, idempotency: Option<Idempotency>) -> OpResult {
        let (job, answer) = Job::new(op, idempotency);
        self.jobs.send(job).await.map_err(|_| shutting_down())?;
        answer.await
    }
}

impl Job {
    /// A job and the future of its reply.
    fn new(
        op: Op,
        idempotency: Option<Idempotency>,
    ) -> (Job, impl Future<Output = OpResult> + use<>) {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            op,
            idempotency,
            reply,
        };
        (
            job,
            async move { answer.await.map_err(|_| shutting_down())? },
        )
    }
}

/// Why a job got no answer: the writer has stopped taking them.
fn shutting_down() -> AppError {
    AppError::Unavailable("the service is shutting down".into())
}

/// What the writer thread does next.
// Lives only from `next()` to the match on it; boxing the job would cost an
// allocation per write on the hot path.
#[allow(clippy::large_enum_variant)]
enum Next {
    Job(Job),
    /// Shutdown was requested: commit what is queued, then stop.
    Stop,
    /// No job can arrive any more.
    Closed,
}

pub(super) struct WriterTask {
    conn: Connection,
    /// The service's runtime: the thread blocks on it to wait for jobs and to
    /// run the (async) commit hook.
    runtime: Handle,
    /// Resources by id: read on every create, changed only by this thread.
    resources: HashMap<Uuid, Resource>,
    /// Per resource, no confirmed hold is longer than this (microseconds):
    /// how far back the capacity check must look. Loaded once per resource,
    /// then raised by every write; it never shrinks, so a rolled-back write
    /// leaves it conservative, never wrong.
    longest: HashMap<Uuid, i64>,
    stats: Arc<WriterStats>,
    /// Whether writes are queued for PostgreSQL.
    sync_enabled: bool,
    /// Outbox rows of the open transaction, flushed in one statement.
    outbox: Vec<sync::OutboxEntry>,
    /// Whether the open transaction queued anything (to wake the sync task).
    outbox_written: bool,
    sync_notify: Option<Arc<Notify>>,
    quotas: BookingQuotas,
    /// What the open transaction changed, for the commit hook.
    changes: Vec<Changed>,
    on_commit: Option<CommitHook>,
}

impl WriterTask {
    fn run(mut self, mut queue: mpsc::Receiver<Job>, mut shutdown: watch::Receiver<bool>) {
        let checkpointer = self.start_checkpointer();
        loop {
            let first = match self.next(&mut queue, &mut shutdown) {
                Next::Job(job) => job,
                Next::Closed => break,
                Next::Stop => {
                    // Commit what was accepted before the signal, then stop.
                    queue.close();
                    let mut rest = Vec::new();
                    while let Some(job) = self.runtime.block_on(queue.recv()) {
                        rest.push(job);
                    }
                    while !rest.is_empty() {
                        let tail = rest.split_off(rest.len().min(MAX_GROUP));
                        self.commit_group(std::mem::replace(&mut rest, tail));
                    }
                    break;
                }
            };
            if let Op::Hold(gate) = &first.op {
                let mut open = gate.open.clone();
                gate.parked.notify_one();
                let _ = self.runtime.block_on(open.wait_for(|open| *open));
                let _ = first.reply.send(Ok(Outcome::Done));
                continue;
            }
            let mut group = Vec::with_capacity(16);
            group.push(first);
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
            if let Some(checkpointer) = &checkpointer {
                checkpointer.after_commit(&self.conn);
            }
        }
        drop(checkpointer);
        if let Err((_, error)) = self.conn.close() {
            tracing::warn!(%error, "closing the SQLite write connection failed");
        }
    }

    /// Waits for the next job or the stop signal. Under load the next job is
    /// already queued and is taken without parking; the signal is checked
    /// first, so a busy queue cannot hold shutdown off.
    fn next(&self, queue: &mut mpsc::Receiver<Job>, shutdown: &mut watch::Receiver<bool>) -> Next {
        if *shutdown.borrow() {
            return Next::Stop;
        }
        match queue.try_recv() {
            Ok(job) => Next::Job(job),
            Err(TryRecvError::Disconnected) => Next::Closed,
            Err(TryRecvError::Empty) => self.runtime.block_on(async {
                tokio::select! {
                    biased;
                    job = queue.recv() => job.map_or(Next::Closed, Next::Job),
                    // Also resolves when the signal's sender is gone unsent:
                    // that stops the writer as a closed queue does.
                    _ = crate::shutdown::requested(shutdown) => {
                        if *shutdown.borrow() { Next::Stop } else { Next::Closed }
                    }
                }
            }),
        }
    }

    /// Takes WAL checkpoints off this thread (see [`Checkpointer`]); without
    /// one, SQLite's automatic checkpoint stays as it is.
    fn start_checkpointer(&self) -> Option<Checkpointer> {
        let path = self.conn.path().filter(|path| !path.is_empty())?;
        match Checkpointer::start(std::path::Path::new(path)) {
            Ok(checkpointer) => {
                if let Err(error) =
                    self.conn
                        .pragma_update(None, "wal_autocheckpoint", WRITER_BACKSTOP_PAGES)
                {
                    tracing::warn!(%error, "cannot raise the writer's checkpoint threshold");
                }
                Some(checkpointer)
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "no background checkpointer; the writer checkpoints itself"
                );
                None
            }
        }
    }

    fn commit_group(&mut self, group: Vec<Job>) {
        let started = Instant::now();
        self.stats
            .jobs
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        let (work, replies): (Vec<_>, Vec<_>) = group
            .into_iter()
            .map(|job| ((job.op, job.idempotency), job.reply))
            .unzip();
        let result = self.transaction(&work);
        metrics::histogram!("reservoir_writer_group_size").record(work.len() as f64);
        metrics::histogram!("reservoir_writer_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(results) => {
                tracing::trace!(size = work.len(), elapsed = ?started.elapsed(), "group committed");
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(error) if work.len() > 1 => {
                self.stats.split_groups.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    error = format!("{error:#}"),
                    size = work.len(),
                    "group commit failed; retrying its writes one by one"
                );
                for (job, reply) in work.into_iter().zip(replies) {
                    let result = match self.transaction(std::slice::from_ref(&job)) {
                        Ok(mut results) => results
                            .pop()
                            .unwrap_or_else(|| Err(anyhow::anyhow!("no result").into())),
                        Err(error) => Err(logged(error)),
                    };
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                let error = logged(error);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Applies `work` in one transaction. `Err` means the transaction was
    /// rolled back and nothing of it persisted.
    fn transaction(&mut self, work: &[(Op, Option<Idempotency>)]) -> anyhow::Result<Vec<OpResult>> {
        self.run_sql("BEGIN IMMEDIATE")?;
        let applied = self.apply_all(work);
        let changes = std::mem::take(&mut self.changes);
        if applied.is_ok()
            && !changes.is_empty()
            && let Some(hook) = &self.on_commit
        {
            self.runtime.block_on(hook(changes));
        }
        if std::mem::take(&mut self.outbox_written)
            && applied.is_ok()
            && let Some(notify) = &self.sync_notify
        {
            notify.notify_one();
        }
        if applied.is_err() {
            self.changes.clear();
            self.outbox.clear();
            // The cached resources may hold changes that were rolled back.
            self.resources.clear();
            // A failed COMMIT may already have rolled back on its own.
            if !self.conn.is_autocommit()
                && let Err(error) = self.run_sql("ROLLBACK")
            {
                tracing::error!(%error, "ROLLBACK failed");
            }
        }
        applied
    }

    /// The body of [`Self::transaction`], between BEGIN and COMMIT.
    fn apply_all(&mut self, work: &[(Op, Option<Idempotency>)]) -> anyhow::Result<Vec<OpResult>> {
        let mut results = Vec::with_capacity(work.len());
        for (op, idempotency) in work {
            results.push(self.execute(op, idempotency.as_ref())?);
        }
        self.flush_outbox()?;
        self.run_sql("COMMIT")?;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        Ok(results)
    }

    /// A parameterless statement, prepared once.
    fn run_sql(&self, sql: &str) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(sql)?.execute([])
    }

    /// One job: the idempotency check, the write, and the remembered answer.
    fn execute(&mut self, op: &Op, idempotency: Option<&Idempotency>) -> anyhow::Result<OpResult> {
        let Some(idem) = idempotency else {
            return self.apply(op);
        };
        let stored = self
            .conn
            .prepare_cached(
                "SELECT request_hash, status, location, etag, body FROM idempotency_keys WHERE scope = ?1 AND key = ?2",
            )?
            .query_row(params![idem.scope, idem.key], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, Vec<u8>>(4)?,
                ))
            })
            .optional()?;
        if let Some((hash, status, location, etag, body)) = stored {
            if hash != idem.request_hash {
                return Ok(Err(AppError::IdempotencyKeyReused));
            }
            return Ok(Ok(Outcome::Replay(StoredResponse {
                status: u16::try_from(status)?,
                location,
                etag,
                body,
            })));
        }
        let result = self.apply(op)?;
        if let Some(response) = (idem.render)(&result) {
            self.conn
                .prepare_cached(
                    "INSERT INTO idempotency_keys (scope, key, request_hash, status, location, etag, body, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    idem.scope,
                    idem.key,
                    &idem.request_hash[..],
                    i64::from(response.status),
                    response.location,
                    response.etag,
                    response.body,
                    micros(now()),
                ])?;
        }
        Ok(result)
    }

    fn apply(&mut self, op: &Op) -> anyhow::Result<OpResult> {
        match op {
            Op::CreateKey {
                hash,
                user_id,
                role,
                bootstrap,
            } => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO api_keys (hash, user_id, role, bootstrap, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![&hash[..], user_id, role.as_str(), *bootstrap, micros(now())])?;
                Ok(Ok(Outcome::Done))
            }
            Op::CreateResource(new) => self.create_resource(new),
            Op::UpdateResource {
                id,
                patch,
                if_match,
            } => self.update_resource(*id, patch, if_match.as_ref()),
            Op::CreateReservation(booking) => Ok(self
                .create_reservation(booking)?
                .map(|(reservation, change)| Outcome::Reservation(reservation, change))),
            Op::CreateReservations(items) => {
                let mut results = Vec::with_capacity(items.len());
                for item in items {
                    results.push(match item {
                        Ok(booking) => self.create_reservation(booking)?,
                        Err(error) => Err(error.clone()),
                    });
                }
                Ok(Ok(Outcome::Reservations(results)))
            }
            Op::UpdateReservation {
                principal,
                id,
                patch,
                if_match,
            } => self.update_reservation(principal, *id, patch, if_match.as_ref()),
            Op::CancelReservation {
                principal,
                id,
                if_match,
            } => self.cancel_reservation(principal, *id, if_match.as_ref()),
            Op::PurgeIdempotency { before } => {
                self.conn
                    .prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?
                    .execute([before])?;
                Ok(Ok(Outcome::Done))
            }
            // Queued behind other jobs: there is nothing left to hold back.
            Op::Hold(_) => Ok(Ok(Outcome::Done)),
            Op::SyncApplied(report) => self.apply_sync_report(report),
            Op::QueueUnsynced => self.queue_unsynced(),
            Op::KeysShared(hashes) => {
                let mut statement = self
                    .conn
                    .prepare_cached("UPDATE api_keys SET synced = 1 WHERE hash = ?1")?;
                for hash in hashes {
                    statement.execute([hash])?;
                }
                Ok(Ok(Outcome::Done))
            }
            Op::StoreSharedKey {
                hash,
                user_id,
                role,
            } => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO api_keys (hash, user_id, role, bootstrap, created_at, synced) \
                         VALUES (?1, ?2, ?3, 0, ?4, 1) ON CONFLICT (hash) DO NOTHING",
                    )?
                    .execute(params![&hash[..], user_id, role.as_str(), micros(now())])?;
                Ok(Ok(Outcome::Done))
            }
            Op::ApplyRemote {
                resources,
                reservations,
                cursor,
            } => self.apply_remote(resources, reservations, cursor.as_ref()),
        }
    }
}

/// Opening hours and the plain size limit: the checks that need no other
/// reservation.
fn check_bookable(
    resource: &Resource,
    start: jiff::Timestamp,
    end: jiff::Timestamp,
) -> Result<(), AppError> {
    if !is_open_for(resource.opening_hours.as_ref(), &resource.tz, start, end) {
        return Err(AppError::validation(
            "starts_at",
            "the reservation must lie within the resource's opening hours",
        ));
    }
    Ok(())
}

fn full(resource: &Resource, party_size: u32) -> AppError {
    AppError::CapacityExceeded(format!(
        "resource {} cannot hold {party_size} more at that time (capacity {})",
        resource.id, resource.capacity
    ))
}

fn not_found(kind: &str, id: Uuid) -> AppError {
    AppError::NotFound(format!("{kind} {id} not found"))
}

/// The `If-Match` precondition, when the request has one.
fn check_version(if_match: Option<&VersionMatch>, version: i64) -> Result<(), AppError> {
    match if_match {
        Some(expected) if !expected.matches(version) => Err(AppError::PreconditionFailed(format!(
            "If-Match does not match the current version {version}"
        ))),
        _ => Ok(()),
    }
}

fn logged(error: anyhow::Error) -> AppError {
    tracing::error!(error = format!("{error:#}"), "write failed");
    AppError::Internal(Arc::new(error))
}

#[cfg(test)]
mod tests;
