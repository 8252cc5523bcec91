//! The local SQLite store: one write connection owned by the [`writer`] task,
//! and a pool of read-only connections for everything else. WAL mode lets the
//! readers run while the writer commits.

mod plans;
pub mod queries;
pub mod reads;
pub mod rows;
pub mod writer;

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    ConnectOptions, Connection,
    sqlite::{
        SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions,
        SqliteSynchronous,
    },
};

use crate::config::{Config, Synchronous};

pub use reads::Reads;
pub use writer::Writer;

pub const DB_FILE: &str = "reservoir.db";

/// Opens (creating if needed) the database under the data dir, applies the
/// embedded migrations, and returns the read pool and the write connection.
pub async fn open(config: &Config) -> anyhow::Result<(Reads, SqliteConnection)> {
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

    let write_options = base
        .clone()
        .create_if_missing(true)
        // A bigger page cache for the one connection that walks the indexes on
        // every insert; readers keep SQLite's default.
        .pragma("cache_size", "-16384");
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
    migrations.close().await;
    let mut write = write_options.connect().await?;
    write.ping().await?;

    let pool = SqlitePoolOptions::new()
        .max_connections(config.read_connections)
        .min_connections(1)
        .connect_with(base.read_only(true))
        .await
        .context("cannot open the read pool")?;
    Ok((Reads::new(pool), write))
}
