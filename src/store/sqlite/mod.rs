//! The local SQLite store: one write connection owned by the [`writer`]
//! thread, and a pool of read-only connections for everything else. WAL mode
//! lets the readers run while the writer commits.
//!
//! The write connection is a plain rusqlite connection rather than sqlx's:
//! sqlx runs every statement on a worker thread of its own and hands the
//! result back over a channel, which made thread hand-offs, not SQLite, the
//! cost of a create (BENCHMARKS.md). The writer runs its whole transaction
//! synchronously on its own thread instead.

mod checkpoint;
pub(crate) mod outbox;
mod plans;
pub mod queries;
pub mod reads;
pub mod rows;
pub mod wal_vfs;
pub mod writer;

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    ConnectOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use crate::config::{Config, Synchronous};

pub use reads::Reads;
pub use writer::Writer;

pub const DB_FILE: &str = "reservoir.db";

/// Opens (creating if needed) the database under the data dir, applies the
/// embedded migrations, and returns the read pool and the write connection.
pub async fn open(config: &Config) -> anyhow::Result<(Reads, rusqlite::Connection)> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let path = config.data_dir.join(DB_FILE);
    let base = SqliteConnectOptions::from_str("sqlite://")?
        .filename(&path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match config.sqlite_synchronous {
            Synchronous::Normal => SqliteSynchronous::Normal,
            Synchronous::Full => SqliteSynchronous::Full,
        })
        .busy_timeout(Duration::from_secs(10))
        .pragma("temp_store", "memory")
        .log_statements(tracing::log::LevelFilter::Trace);

    let write_options = base.clone().create_if_missing(true);
    // Migrations run through a one-connection pool: `Migrator::run` on a bare
    // `&mut SqliteConnection` makes the caller's future non-`Send`.
    let migrations = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(write_options.clone())
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    sqlx::migrate!("./migrations/sqlite")
        .run(&migrations)
        .await
        .context("cannot apply SQLite migrations")?;
    forget_planner_statistics(&migrations)
        .await
        .context("cannot drop SQLite's planner statistics")?;
    migrations.close().await;
    let write = open_writer(&path, config.sqlite_synchronous)
        .with_context(|| format!("cannot open {} for writing", path.display()))?;

    let pool = SqlitePoolOptions::new()
        .max_connections(config.read_connections)
        .min_connections(1)
        .connect_with(base.read_only(true))
        .await
        .context("cannot open the read pool")?;
    let outbox = outbox::OutboxReader::open(&path)
        .with_context(|| format!("cannot open {} to read the outbox", path.display()))?;
    Ok((Reads::new(pool, outbox), write))
}

/// Drops the statistics `ANALYZE` stores for SQLite's query planner, so it
/// plans every statement as it does on a new database, where each plan is
/// checked (`plans.rs`) and measured (BENCHMARKS.md).
///
/// Why not keep statistics: every hot statement is built around one index,
/// and SQLite's defaults assume large tables, which is when the choice
/// matters. Statistics only ever changed plans for the worse here, and they
/// describe the table as it was when last analyzed: versions up to
/// 2026-12-01 ran `PRAGMA optimize` at shutdown, which re-analyzes a table
/// only once it has grown tenfold, so a node stopped with 20 reservations
/// kept planning from 20 rows, until its next shutdown, while it stored
/// hundreds of thousands. The sync's acknowledgement then scanned the whole
/// table on the writer thread for every batch, and creates with sync on
/// ran at 1,100-1,800 per second against 17,600 on a new database
/// (BENCHMARKS.md, 2026-12-01 16:22 UTC).
///
/// Runs before the service's own connections open: a connection reads the
/// statistics when it loads the schema and keeps them even after the
/// tables are dropped.
async fn forget_planner_statistics(pool: &sqlx::SqlitePool) -> sqlx::Result<()> {
    // The tables exist only once ANALYZE ran; dropping them is allowed.
    sqlx::raw_sql("DROP TABLE IF EXISTS sqlite_stat1; DROP TABLE IF EXISTS sqlite_stat4;")
        .execute(pool)
        .await?;
    Ok(())
}

/// The writer's connection, set up like the pool's (WAL, busy timeout) plus a
/// bigger page cache for the one connection that walks the indexes on every
/// insert; readers keep SQLite's default.
fn open_writer(
    path: &std::path::Path,
    synchronous: Synchronous,
) -> rusqlite::Result<rusqlite::Connection> {
    // The writer is the only connection that appends to the log, so it alone
    // opens the database through the VFS that writes each frame in one call.
    wal_vfs::register()?;
    let conn = rusqlite::Connection::open_with_flags_and_vfs(
        path,
        rusqlite::OpenFlags::default(),
        wal_vfs::VFS_NAME,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let synchronous = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    // temp_store stays on disk here: the one-off backfill of a large table
    // (queue_unsynced) must not build its temporary b-trees in RAM.
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    // 8 MiB: the interior pages and current leaves of the five indexes that
    // every insert walks. More only raised resident memory (BENCHMARKS.md),
    // as pages it evicts are still in the OS page cache.
    conn.pragma_update(None, "cache_size", -8192)?;
    // After the log starts over, SQLite trims the file back to this size, so a
    // burst that grew the WAL does not keep its disk space.
    conn.pragma_update(None, "journal_size_limit", checkpoint::WAL_SIZE_LIMIT_BYTES)?;
    // Every statement of the hot path stays prepared.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}
