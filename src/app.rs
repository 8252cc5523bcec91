//! Wiring: opens the store, starts the writer and background tasks, serves the
//! router, and shuts everything down in order. Tests and the binary both go
//! through [`launch`], so they run the same code.

use std::{
    future::Future, io::Write, os::unix::fs::OpenOptionsExt, path::Path, sync::Arc, time::Duration,
};

use anyhow::Context;
use moka::future::Cache;
use sqlx::query_scalar;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    config::Config,
    domain::{
        auth::{ADMIN_USER, KeyHash, Principal, Role, UserId, generate_key, hash_key},
        time::{micros, now},
    },
    error::AppResult,
    http,
    store::sqlite::{
        self, Reads, Writer,
        writer::{Idempotency, Op},
    },
};

/// File the generated admin key is written to, inside the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// How long an Idempotency-Key is remembered.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often forgotten Idempotency-Keys are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// How long a resolved key is trusted without asking SQLite again.
const KEY_CACHE_TTL: Duration = Duration::from_secs(300);

/// Shared state of a running service; cheap to clone.
#[derive(Clone)]
pub struct App(Arc<AppState>);

pub struct AppState {
    pub reads: Reads,
    pub writer: Writer,
    /// Hash of `RESERVOIR_ADMIN_TOKEN`, when configured.
    admin_hash: Option<KeyHash>,
    /// Resolved keys, so authentication costs no query on the hot path.
    keys: Cache<KeyHash, Principal>,
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

    /// Resolves a bearer key to its principal; `None` for unknown keys.
    pub async fn authenticate(&self, token: &str) -> AppResult<Option<Principal>> {
        let hash = hash_key(token);
        if self.admin_hash == Some(hash) {
            return Ok(Some(Principal::admin()));
        }
        if let Some(principal) = self.keys.get(&hash).await {
            return Ok(Some(principal));
        }
        let Some((user_id, role)) = self.reads.api_key(&hash).await? else {
            return Ok(None);
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
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Service {
    pub async fn start(config: &Config) -> anyhow::Result<Service> {
        let (reads, write_conn) = sqlite::open(config).await?;
        let (stop, stopped) = watch::channel(false);
        let (writer, writer_task) = Writer::spawn(write_conn, stopped.clone());
        let admin_hash = config.admin_token.as_deref().map(hash_key);
        let app = App(Arc::new(AppState {
            reads,
            writer,
            admin_hash,
            keys: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(KEY_CACHE_TTL)
                .build(),
        }));
        if admin_hash.is_none() {
            bootstrap_admin_key(&app, &config.data_dir).await?;
        }
        let purge = tokio::spawn(purge_idempotency_keys(app.clone(), stopped));
        Ok(Service {
            app,
            tasks: vec![purge, writer_task],
            stop,
        })
    }

    /// The HTTP router over this service.
    pub fn router(&self) -> axum::Router {
        http::router(self.app.clone())
    }

    /// Stops the background tasks; the writer commits what it already
    /// accepted before it exits.
    pub async fn shutdown(self) {
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
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
    tracing::info!("stopped accepting requests; finishing writes");
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

/// Forgets Idempotency-Key answers older than a day, hourly.
async fn purge_idempotency_keys(app: App, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    loop {
        tokio::select! {
            _ = crate::shutdown::requested(&mut stopped) => return,
            _ = tick.tick() => {
                let before = micros(now()) - IDEMPOTENCY_TTL.as_micros() as i64;
                if let Err(error) = app.writer.submit(Op::PurgeIdempotency { before }, None).await {
                    tracing::warn!(%error, "purging old idempotency keys failed");
                }
            }
        }
    }
}
