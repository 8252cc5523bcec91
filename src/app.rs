//! Wiring: opens the store, starts the writer and background tasks, serves the
//! router, and shuts everything down in order. Tests and the binary both go
//! through [`launch`], so they run the same code.

use std::{
    future::Future, io::Write, os::unix::fs::OpenOptionsExt, path::Path, sync::Arc, time::Duration,
};

use anyhow::Context;
use sqlx::query_scalar;
use tokio::{
    net::TcpListener,
    sync::{Notify, watch},
    task::JoinHandle,
};
use uuid::Uuid;

use crate::{
    cache::{Cache, CacheSettings, Cached, remote::Remote},
    config::Config,
    domain::{
        auth::{ADMIN_USER, KeyHash, Principal, Role, UserId, generate_key, hash_key},
        quota::QuotaLimits,
        reservation::Reservation,
        resource::Resource,
        time::{micros, now},
    },
    error::AppResult,
    http,
    http::{layers::HttpSettings, rate_limit::KeyRateLimit},
    store::{
        postgres::Postgres,
        sqlite::{
            self, Reads, Writer,
            writer::{Idempotency, Op, WriterConfig},
        },
    },
    sync::{self, SyncHandle, SyncSettings, batch_size::ClientActivity, feed::FeedSettings},
};

/// File the generated node id is kept in, inside the data dir.
pub const NODE_ID_FILE: &str = "node-id";
/// File the generated admin key is written to, inside the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// How long an Idempotency-Key is remembered.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often forgotten Idempotency-Keys are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Longest a read waits for PostgreSQL when asked for an id unknown here.
const POSTGRES_LOOKUP: Duration = Duration::from_millis(500);
/// How long a resolved key is trusted without asking SQLite again.
const KEY_CACHE_TTL: Duration = Duration::from_secs(300);

/// Shared state of a running service; cheap to clone.
#[derive(Clone)]
pub struct App(Arc<AppState>);

pub struct AppState {
    pub reads: Reads,
    pub writer: Writer,
    /// Present when PostgreSQL is configured.
    pub sync: Option<SyncHandle>,
    pub cache: Arc<Cache>,
    /// Recorded as `origin_node` on the rows this node creates.
    pub node_id: String,
    pub started: std::time::Instant,
    /// When a client last called the API; the sync sizes its batches by it.
    pub activity: Arc<ClientActivity>,
    /// HTTP settings the middleware reads.
    pub http: HttpSettings,
    /// Hash of `RESERVOIR_ADMIN_TOKEN`, when configured.
    admin_hash: Option<KeyHash>,
    /// Resolved keys, so authentication costs no query on the hot path.
    keys: moka::future::Cache<KeyHash, Principal>,
    /// Requests per second per non-admin key.
    key_rate: Option<KeyRateLimit>,
    /// Hashes PostgreSQL did not know either, recently.
    unknown_keys: moka::future::Cache<KeyHash, ()>,
}

impl std::ops::Deref for App {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.0
    }
}

impl App {
    /// Hands a write to the writer and answers with its result once committed.
    pub async fn write(
        &self,
        op: Op,
        idempotency: Option<Idempotency>,
    ) -> axum::response::Response {
        http::render::respond(self.writer.submit(op, idempotency).await)
    }

    /// Shares a new key with PostgreSQL at once, so the other nodes accept it
    /// right away; when PostgreSQL is away the sync task shares it later.
    pub async fn share_key(&self, hash: KeyHash, user_id: &str, role: Role) {
        let Some(sync) = &self.sync else { return };
        let key = vec![(hash.to_vec(), user_id.to_owned(), role.as_str().to_owned())];
        let shared = tokio::time::timeout(
            POSTGRES_LOOKUP,
            sync.postgres.push_keys(&self.node_id, &key),
        )
        .await;
        if matches!(shared, Ok(Ok(()))) {
            let _ = self
                .writer
                .submit(Op::KeysShared(vec![hash.to_vec()]), None)
                .await;
        }
    }

    /// A key issued on another node, from PostgreSQL (stored here once
    /// found). Unknown hashes are remembered briefly so that random tokens
    /// cannot make every request wait on PostgreSQL.
    async fn shared_key(&self, hash: KeyHash) -> AppResult<Option<(String, Role)>> {
        let Some(sync) = &self.sync else {
            return Ok(None);
        };
        if self.unknown_keys.contains_key(&hash) {
            return Ok(None);
        }
        let found = match sync.postgres.find_key(&hash, POSTGRES_LOOKUP).await {
            Ok(found) => found.and_then(|(user, role)| Role::parse(&role).map(|role| (user, role))),
            Err(error) => {
                tracing::debug!(%error, "PostgreSQL lookup of an unknown key failed");
                None
            }
        };
        match &found {
            Some((user_id, role)) => {
                let store = Op::StoreSharedKey {
                    hash,
                    user_id: user_id.clone(),
                    role: *role,
                };
                self.writer.submit(store, None).await?;
            }
            None => self.unknown_keys.insert(hash, ()).await,
        }
        Ok(found)
    }

    /// A reservation by id: cache, local SQLite, then (for ids this node has
    /// never seen) PostgreSQL, storing what it finds so the next read is local.
    pub async fn reservation(&self, id: Uuid) -> AppResult<Option<Arc<Cached<Reservation>>>> {
        self.cache
            .reservation(id, || self.load_reservation(id))
            .await
    }

    async fn load_reservation(&self, id: Uuid) -> AppResult<Option<Reservation>> {
        if let Some(found) = self.reads.reservation(id).await? {
            return Ok(Some(found));
        }
        let Some(sync) = &self.sync else {
            return Ok(None);
        };
        match sync.postgres.fetch(id, POSTGRES_LOOKUP).await {
            Ok(Some((remote, resource))) => {
                let found = remote.reservation.clone();
                let store = Op::ApplyRemote {
                    resources: vec![resource],
                    reservations: vec![remote],
                    cursor: None,
                };
                self.writer.submit(store, None).await?;
                Ok(Some(found))
            }
            Ok(None) => Ok(None),
            Err(error) => {
                tracing::debug!(%error, %id, "PostgreSQL lookup of an unknown reservation failed");
                Ok(None)
            }
        }
    }

    /// A resource by id: cache, then local SQLite.
    pub async fn resource(&self, id: Uuid) -> AppResult<Option<Arc<Cached<Resource>>>> {
        self.cache.resource(id, || self.reads.resource(id)).await
    }

    /// Resolves a bearer key to its principal (`None` for unknown keys) and
    /// applies the per-key request rate, from which admin keys are exempt.
    pub async fn authenticate(&self, token: &str) -> AppResult<Option<Principal>> {
        let hash = hash_key(token);
        if self.admin_hash == Some(hash) {
            return Ok(Some(Principal::admin()));
        }
        let principal = match self.keys.get(&hash).await {
            Some(principal) => principal,
            None => match self.lookup_key(hash).await? {
                Some(principal) => principal,
                None => return Ok(None),
            },
        };
        if !principal.is_admin()
            && let Some(limit) = &self.key_rate
        {
            limit.check(&hash)?;
        }
        Ok(Some(principal))
    }

    async fn lookup_key(&self, hash: KeyHash) -> AppResult<Option<Principal>> {
        let (user_id, role) = match self.reads.api_key(&hash).await? {
            Some(found) => found,
            None => match self.shared_key(hash).await? {
                Some(found) => found,
                None => return Ok(None),
            },
        };
        let principal = Principal {
            user_id: UserId::parse(&user_id)
                .map_err(|e| anyhow::anyhow!("stored user id {user_id:?}: {e}"))?,
            role,
        };
        self.keys.insert(hash, principal.clone()).await;
        Ok(Some(principal))
    }
}

/// A started service without its HTTP listener: the store, the writer and the
/// background tasks. [`launch`] serves its router on a socket; benches call the
/// router in-process. `shutdown` stops the tasks.
pub struct Service {
    app: App,
    /// Stopped first: the sync task's last flush still needs the writer.
    sync_tasks: Vec<JoinHandle<()>>,
    stop_sync: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Service {
    pub async fn start(config: &Config) -> anyhow::Result<Service> {
        crate::telemetry::prometheus();
        let postgres = config
            .postgres_url
            .as_deref()
            .map(Postgres::new)
            .transpose()?;
        let (reads, write_conn) = sqlite::open(config).await?;
        let node_id = node_id(config)?;
        let (stop, stopped) = watch::channel(false);
        let (stop_sync, sync_stopped) = watch::channel(false);
        let wake = postgres.as_ref().map(|_| Arc::new(Notify::new()));
        let quotas = QuotaLimits {
            per_hour: config.limit_user_per_hour,
            per_day: config.limit_user_per_day,
            per_resource_day: config.limit_user_resource_per_day,
        };
        let remote = config
            .redis_url
            .as_deref()
            .map(|url| {
                Remote::new(
                    url,
                    Duration::from_millis(config.redis_timeout_ms),
                    Duration::from_millis(config.redis_ttl_ms),
                )
            })
            .transpose()?;
        let cache_settings = CacheSettings {
            max_bytes: config.cache_max_bytes(),
            ttl: Duration::from_millis(config.cache_ttl_ms),
            node_id: node_id.clone(),
        };
        let (cache, cache_tasks) = Cache::start(cache_settings, remote, stopped.clone());
        let hook_cache = cache.clone();
        let writer_config = WriterConfig {
            sync: wake.clone(),
            quotas,
            on_commit: Some(Arc::new(move |changes| {
                let cache = hook_cache.clone();
                Box::pin(async move { cache.committed(&changes).await })
            })),
        };
        let (writer, writer_task) = Writer::spawn(write_conn, stopped.clone(), writer_config);
        if postgres.is_some() {
            // Before anything can read: rows written before PostgreSQL was
            // configured change their sync state here, and a read served
            // earlier would cache the old one (this is not a change the
            // commit hook hears about row by row).
            writer
                .submit(Op::QueueUnsynced, None)
                .await
                .context("queueing rows written before PostgreSQL was configured")?;
        }
        let activity = Arc::new(ClientActivity::default());
        let (sync, sync_tasks) = match (postgres, wake) {
            (Some(postgres), Some(wake)) => {
                let settings = SyncSettings::from_config(config, node_id.clone());
                let feed_settings = FeedSettings {
                    node_id: node_id.clone(),
                    interval: Duration::from_millis(config.feed_interval_ms),
                    backoff_min: settings.backoff_min,
                    backoff_max: settings.backoff_max,
                };
                let mut tasks = sync::feed::spawn(
                    postgres.clone(),
                    reads.clone(),
                    writer.clone(),
                    feed_settings,
                    sync_stopped.clone(),
                );
                let (handle, task) = sync::spawn(
                    postgres,
                    reads.clone(),
                    writer.clone(),
                    wake,
                    settings,
                    activity.clone(),
                    sync_stopped,
                );
                tasks.push(task);
                (Some(handle), tasks)
            }
            _ => (None, Vec::new()),
        };
        let admin_hash = config.admin_token.as_deref().map(hash_key);
        let app = App(Arc::new(AppState {
            reads,
            writer,
            sync,
            cache,
            node_id,
            started: std::time::Instant::now(),
            activity,
            http: HttpSettings::from_config(config)?,
            admin_hash,
            keys: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(KEY_CACHE_TTL)
                .build(),
            key_rate: KeyRateLimit::new(config.rate_per_key, config.rate_burst),
            unknown_keys: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(2))
                .build(),
        }));
        if admin_hash.is_none() {
            bootstrap_admin_key(&app, &config.data_dir).await?;
        }
        let upkeep = tokio::spawn(housekeeping(app.clone(), stopped));
        Ok(Service {
            app,
            sync_tasks,
            stop_sync,
            tasks: std::iter::once(upkeep)
                .chain(std::iter::once(writer_task))
                .chain(cache_tasks)
                .collect(),
            stop,
        })
    }

    /// The HTTP router over this service.
    pub fn router(&self) -> axum::Router {
        http::router(self.app.clone())
    }

    /// Stops the background tasks: first the sync (one last flush, bounded by
    /// the grace period), then the writer, which commits what it already
    /// accepted before it exits.
    pub async fn shutdown(self) {
        let _ = self.stop_sync.send(true);
        for task in self.sync_tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "a sync task failed");
            }
        }
        let _ = self.stop.send(true);
        let reads = self.app.reads.clone();
        drop(self.app);
        for task in self.tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "a background task failed");
            }
        }
        reads.close().await;
    }
}

/// Runs the service on `listener` until `shutdown` resolves, then stops
/// accepting connections, lets in-flight requests finish, commits what the
/// writer accepted and returns.
pub async fn launch(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let service = Service::start(&config).await?;
    let router = service.router();
    tracing::info!(address = %listener.local_addr()?, data_dir = %config.data_dir.display(), "reservoir is serving");
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let signalled = Arc::new(Notify::new());
    let serve = axum::serve(listener, router)
        .with_graceful_shutdown({
            let signalled = signalled.clone();
            async move {
                shutdown.await;
                signalled.notify_one();
            }
        })
        .into_future();
    tokio::pin!(serve);
    let served = tokio::select! {
        served = &mut serve => served,
        _ = signalled.notified() => {
            tracing::info!(?grace, "shutting down: no new connections; finishing in-flight requests");
            match tokio::time::timeout(grace, &mut serve).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::warn!(?grace, "in-flight requests did not finish within the grace period; closing them");
                    Ok(())
                }
            }
        }
    };
    tracing::info!("stopped serving; finishing writes");
    service.shutdown().await;
    served.context("the HTTP server failed")
}

/// With no `RESERVOIR_ADMIN_TOKEN`, the first start generates an admin key,
/// stores only its hash and hands the key to the operator once: in the log and
/// in `<data_dir>/admin-token` (mode 0600). Later starts find the stored hash
/// and keep using it.
async fn bootstrap_admin_key(app: &App, data_dir: &Path) -> anyhow::Result<()> {
    let exists: Option<i64> = query_scalar("SELECT 1 FROM api_keys WHERE bootstrap = 1 LIMIT 1")
        .fetch_optional(app.reads.pool())
        .await?;
    if exists.is_some() {
        return Ok(());
    }
    let key = generate_key()?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    // The file is written before the hash is stored: a crash in between leaves
    // no usable hash, and the next start simply generates a new key.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(format!("{key}\n").as_bytes())?;
    file.sync_all()?;
    app.writer
        .submit(
            Op::CreateKey {
                hash: hash_key(&key),
                user_id: ADMIN_USER.to_owned(),
                role: Role::Admin,
                bootstrap: true,
            },
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot store the admin key: {e}"))?;
    tracing::warn!(admin_token = %key, file = %path.display(), "generated an admin token; it is shown only this once");
    Ok(())
}

/// This node's id: configured, or generated once and kept in
/// `<data_dir>/node-id` so it survives restarts.
fn node_id(config: &Config) -> anyhow::Result<String> {
    if let Some(id) = &config.node_id {
        return Ok(id.clone());
    }
    let path = config.data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
    let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(node_id = %id, "generated this node's id");
    Ok(id)
}

/// How often histogram samples are drained (the exporter's own default).
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Periodic upkeep: fold recorded metric samples into their histograms
/// (every 5 s), forget Idempotency-Key answers older than a day (hourly) and
/// rate-limit state of idle keys (every minute).
async fn housekeeping(app: App, mut stopped: watch::Receiver<bool>) {
    let mut metrics = tokio::time::interval(METRICS_UPKEEP);
    let mut minute = tokio::time::interval(Duration::from_secs(60));
    let mut hour = tokio::time::interval(PURGE_EVERY);
    loop {
        tokio::select! {
            _ = crate::shutdown::requested(&mut stopped) => return,
            // The Prometheus recorder queues every histogram sample until a
            // scrape or an upkeep drains it; on a node nobody scrapes, that
            // grew resident memory by ~24 bytes per request (BENCHMARKS.md).
            _ = metrics.tick() => crate::telemetry::prometheus().run_upkeep(),
            _ = minute.tick() => {
                if let Some(limit) = &app.key_rate {
                    limit.forget_idle();
                }
            }
            _ = hour.tick() => {
                let before = micros(now()) - IDEMPOTENCY_TTL.as_micros() as i64;
                if let Err(error) = app.writer.submit(Op::PurgeIdempotency { before }, None).await {
                    tracing::warn!(%error, "purging old idempotency keys failed");
                }
            }
        }
    }
}
