//! The central PostgreSQL: a lazily connected pool (the service must start
//! and serve while Postgres is down), its migrations, and the one call the
//! sync task makes per batch.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use serde_json::Value;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
    query_as,
};
use uuid::Uuid;

/// Longest a batch call may take before it counts as a (transient) failure.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Postgres {
    pool: PgPool,
    /// Host, port and database only: safe to log and report.
    display: String,
}

/// The stored outcome of one reservation of a batch.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Applied {
    pub kind: String,
    pub id: Uuid,
    pub status: String,
    pub version: i64,
    pub reason: Option<String>,
}

/// Why a batch failed, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Postgres rejected the data itself (a constraint, a bad value): retrying
    /// the same rows can never succeed.
    #[error("{0}")]
    Permanent(String),
    /// Anything else (refused, timed out, serialization failure): retry.
    #[error("{0}")]
    Transient(String),
}

impl Postgres {
    /// Validates the URL and prepares a pool without connecting.
    pub fn new(url: &str) -> anyhow::Result<Postgres> {
        let options = PgConnectOptions::from_str(url)
            .context("RESERVOIR_POSTGRES_URL is not a valid PostgreSQL URL")?;
        let display = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options.options([("statement_timeout", "30s")]));
        Ok(Postgres { pool, display })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// `host:port/database`, without credentials.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Applies migrations/postgres. Several nodes may start together: sqlx
    /// serialises them with an advisory lock.
    pub async fn migrate(&self) -> Result<(), SyncError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|error| {
                SyncError::Transient(format!("applying PostgreSQL migrations: {error}"))
            })
    }

    /// Sends one batch in one round trip; see `reservoir_apply_batch` in the
    /// migrations for what Postgres does with it.
    pub async fn apply_batch(
        &self,
        node: &str,
        resources: &[Value],
        reservations: &[Value],
    ) -> Result<Vec<Applied>, SyncError> {
        let call = query_as::<_, Applied>(
            "SELECT kind, id, status, version, reason FROM reservoir_apply_batch($1, $2, $3)",
        )
        .bind(node)
        .bind(Value::Array(resources.to_vec()))
        .bind(Value::Array(reservations.to_vec()))
        .fetch_all(&self.pool);
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(error)) => Err(classify(error)),
            Err(_) => Err(SyncError::Transient(format!(
                "PostgreSQL did not answer within {CALL_TIMEOUT:?}"
            ))),
        }
    }

    pub async fn ping(&self) -> Result<(), SyncError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

/// SQLSTATE classes 22 (data exception) and 23 (integrity constraint), and
/// errors raised by our own PL/pgSQL, are about the rows; everything else is
/// about the connection or the server's state, and worth retrying.
pub fn classify(error: sqlx::Error) -> SyncError {
    let message = error.to_string();
    match &error {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(code) if code.starts_with("22") || code.starts_with("23") || code == "P0001" => {
                SyncError::Permanent(message)
            }
            _ => SyncError::Transient(message),
        },
        _ => SyncError::Transient(message),
    }
}
