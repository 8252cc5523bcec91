//! Service configuration: every setting is a CLI flag with a `RESERVOIR_*`
//! environment equivalent, so the same binary is configured the same way in a
//! shell, a systemd unit or docker-compose.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "reservoir",
    version,
    about = "Offline-first reservation service"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "RESERVOIR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory holding the SQLite database and the generated admin token.
    #[arg(long, env = "RESERVOIR_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Admin bearer token. When unset, one is generated on first start and
    /// written to `<data_dir>/admin-token`.
    #[arg(long, env = "RESERVOIR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// SQLite `synchronous` pragma: `normal` survives process crashes,
    /// `full` also survives power loss at the cost of an fsync per commit.
    #[arg(long, env = "RESERVOIR_SQLITE_SYNCHRONOUS", value_enum, default_value_t = Synchronous::Normal)]
    pub sqlite_synchronous: Synchronous,

    /// Connections in the read-only SQLite pool.
    #[arg(long, env = "RESERVOIR_READ_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub read_connections: u32,

    /// PostgreSQL URL of the shared system of record. Unset: the node runs on
    /// SQLite alone and reservations stay `sync_state: local`.
    #[arg(long, env = "RESERVOIR_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,

    /// Most outbox rows sent to PostgreSQL in one round trip while clients
    /// call the API: a larger batch holds up the requests behind it (the
    /// writer records it in one job).
    #[arg(long, env = "RESERVOIR_SYNC_BATCH", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub sync_batch: u32,

    /// Most outbox rows per round trip once no client has called the
    /// reservations or resources API for a second (a backlog after an
    /// outage, with no traffic to protect): fewer, larger calls drain it
    /// faster. Never below `sync_batch`.
    #[arg(long, env = "RESERVOIR_SYNC_QUIET_BATCH", default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub sync_quiet_batch: u32,

    /// PostgreSQL connections that apply one large batch together, each
    /// taking the rows of its own share of the resources.
    #[arg(long, env = "RESERVOIR_SYNC_LANES", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::sync::MAX_LANES)))]
    pub sync_lanes: u32,

    /// How often the sync task looks for work even when no write woke it.
    #[arg(long, env = "RESERVOIR_SYNC_INTERVAL_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub sync_interval_ms: u64,

    /// First retry delay after a sync failure (full-jitter exponential backoff).
    #[arg(long, env = "RESERVOIR_SYNC_BACKOFF_MIN_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub sync_backoff_min_ms: u64,

    /// Longest retry delay after repeated sync failures.
    #[arg(long, env = "RESERVOIR_SYNC_BACKOFF_MAX_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub sync_backoff_max_ms: u64,

    /// On SIGTERM/SIGINT: how long in-flight requests and the last sync flush
    /// may take before the process exits anyway.
    #[arg(long, env = "RESERVOIR_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// How often the change feed polls PostgreSQL for other nodes' writes
    /// when no notification woke it.
    #[arg(long, env = "RESERVOIR_FEED_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub feed_interval_ms: u64,

    /// This node's id, recorded as `origin_node` on the rows it creates.
    /// Default: generated once and kept in `<data_dir>/node-id`.
    #[arg(long, env = "RESERVOIR_NODE_ID")]
    pub node_id: Option<String>,

    /// Redis shared by all nodes (L2 cache and cross-node invalidations).
    /// Unset: the in-memory cache only.
    #[arg(long, env = "RESERVOIR_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Longest any Redis call may take before it counts as failed.
    #[arg(long, env = "RESERVOIR_REDIS_TIMEOUT_MS", default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_timeout_ms: u64,

    /// Bytes the in-memory (L1) cache may hold, all kinds together
    /// (reservations, resources, availability answers, list pages). Each
    /// entry is charged its JSON size plus an estimate of its decoded copy and
    /// bookkeeping, so this bounds the cache's share of resident memory.
    #[arg(long, env = "RESERVOIR_CACHE_MAX_BYTES", default_value_t = DEFAULT_CACHE_MAX_BYTES)]
    pub cache_max_bytes: u64,

    /// Deprecated: the L1 cache is bounded in bytes (`RESERVOIR_CACHE_MAX_BYTES`).
    /// Still accepted so old deployments start; a value given here only ever
    /// lowers the byte budget, to this many entries of a typical reservation.
    #[arg(long, env = "RESERVOIR_CACHE_MAX_ENTRIES", hide = true)]
    pub cache_max_entries: Option<u64>,

    /// How long an L1 entry lives.
    #[arg(long, env = "RESERVOIR_CACHE_TTL_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_ttl_ms: u64,

    /// How long an L2 (Redis) entry lives.
    #[arg(long, env = "RESERVOIR_REDIS_TTL_MS", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_ttl_ms: u64,

    /// Longest a request may take before it is answered 503.
    #[arg(long, env = "RESERVOIR_REQUEST_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,

    /// Origins allowed by CORS, comma-separated (e.g.
    /// `https://app.example.com`), or `*`. None by default.
    #[arg(long, env = "RESERVOIR_CORS_ORIGINS", value_delimiter = ',', num_args = 0..)]
    pub cors_origins: Vec<String>,

    /// Requests per second per API key (0 = no limit). Admin keys are exempt.
    #[arg(long, env = "RESERVOIR_RATE_PER_KEY", default_value_t = 50)]
    pub rate_per_key: u32,

    /// Burst allowed above the per-key rate.
    #[arg(long, env = "RESERVOIR_RATE_BURST", default_value_t = 100)]
    pub rate_burst: u32,

    /// Bookings per user in any hour (0 = no limit).
    #[arg(long, env = "RESERVOIR_LIMIT_USER_PER_HOUR", default_value_t = 10)]
    pub limit_user_per_hour: u32,

    /// Bookings per user in any 24 hours (0 = no limit).
    #[arg(long, env = "RESERVOIR_LIMIT_USER_PER_DAY", default_value_t = 50)]
    pub limit_user_per_day: u32,

    /// Bookings per user on one resource in any 24 hours (0 = no limit).
    #[arg(
        long,
        env = "RESERVOIR_LIMIT_USER_RESOURCE_PER_DAY",
        default_value_t = 3
    )]
    pub limit_user_resource_per_day: u32,

    /// Log output format.
    #[arg(long, env = "RESERVOIR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

/// 8 MiB. With the SQLite page caches (16 MiB for the writer, 2 MiB per
/// reader), the runtime and allocator overhead, a server holding 1,000,000
/// reservations peaked at 64.0 MiB resident with 16 MiB here, at the limit
/// of its 64 MiB target; 8 MiB leaves headroom and still holds thousands of
/// reservations.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// What a typical reservation costs in L1 (see `cache::Cached::weight`):
/// used to turn the deprecated entry count into bytes.
const TYPICAL_ENTRY_BYTES: u64 = 1536;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Synchronous {
    Normal,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Config {
    /// The L1 byte budget: `cache_max_bytes`, lowered by the deprecated
    /// `cache_max_entries` when that is set (it used to be per kind, with
    /// reservations the bulk; it is read as a count of reservations).
    pub fn cache_max_bytes(&self) -> u64 {
        match self.cache_max_entries {
            Some(entries) => {
                tracing::warn!(
                    "RESERVOIR_CACHE_MAX_ENTRIES is deprecated; set RESERVOIR_CACHE_MAX_BYTES instead"
                );
                // Reservations get half the budget (see `cache::Budget`).
                self.cache_max_bytes.min(
                    entries
                        .saturating_mul(TYPICAL_ENTRY_BYTES)
                        .saturating_mul(2),
                )
            }
            None => self.cache_max_bytes,
        }
    }

    /// The same configuration with every rate limit and booking quota off
    /// (tests that are not about limits).
    pub fn without_limits(mut self) -> Self {
        self.rate_per_key = 0;
        self.limit_user_per_hour = 0;
        self.limit_user_per_day = 0;
        self.limit_user_resource_per_day = 0;
        self
    }

    /// A configuration with every default and the given data directory,
    /// ignoring the process environment. Used by tests and benches.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            admin_token: None,
            sqlite_synchronous: Synchronous::Normal,
            read_connections: 4,
            postgres_url: None,
            sync_batch: 1000,
            sync_quiet_batch: 4000,
            sync_lanes: 2,
            sync_interval_ms: 200,
            sync_backoff_min_ms: 100,
            sync_backoff_max_ms: 30_000,
            shutdown_grace_ms: 10_000,
            feed_interval_ms: 1000,
            node_id: None,
            redis_url: None,
            redis_timeout_ms: 25,
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
            cache_max_entries: None,
            cache_ttl_ms: 60_000,
            redis_ttl_ms: 300_000,
            request_timeout_ms: 10_000,
            cors_origins: Vec::new(),
            rate_per_key: 50,
            rate_burst: 100,
            limit_user_per_hour: 10,
            limit_user_per_day: 50,
            limit_user_resource_per_day: 3,
            log_format: LogFormat::Pretty,
        }
    }
}
