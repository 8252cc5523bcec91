//! `GET /v1/sync/status` (admin): how far this node's writes are from
//! PostgreSQL.

use axum::{Json, Router, extract::State, routing::get};
use jiff::Timestamp;
use serde::Serialize;
use std::sync::atomic::Ordering;

use super::extract::Auth;
use crate::{
    App,
    domain::time::{micros, now},
    error::AppError,
};

pub fn router() -> Router<App> {
    Router::new().route("/v1/sync/status", get(status))
}

#[derive(Debug, Serialize)]
pub struct SyncStatus {
    pub enabled: bool,
    pub pending: i64,
    pub oldest_pending_age_ms: Option<i64>,
    pub last_success_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub consecutive_failures: u64,
    pub dead_letters: i64,
    pub batches_sent: u64,
    pub rows_sent: u64,
}

async fn status(State(app): State<App>, auth: Auth) -> Result<Json<SyncStatus>, AppError> {
    auth.require_admin()?;
    Ok(Json(sync_status(&app).await?))
}

pub async fn sync_status(app: &App) -> Result<SyncStatus, AppError> {
    let outbox = app.reads.outbox_stats().await?;
    let stats = app.sync.as_ref().map(|sync| &sync.stats);
    let counter = |pick: fn(&crate::sync::SyncStats) -> &std::sync::atomic::AtomicU64| {
        stats.map(|s| pick(s).load(Ordering::Relaxed)).unwrap_or(0)
    };
    Ok(SyncStatus {
        enabled: app.sync.is_some(),
        pending: outbox.pending,
        oldest_pending_age_ms: outbox
            .oldest
            .map(|oldest| ((micros(now()) - oldest) / 1000).max(0)),
        last_success_at: stats.and_then(|s| s.last_success_at()),
        last_error: stats.and_then(|s| s.last_error()),
        consecutive_failures: counter(|s| &s.consecutive_failures),
        dead_letters: outbox.dead_letters,
        batches_sent: counter(|s| &s.batches_sent),
        rows_sent: counter(|s| &s.rows_sent),
    })
}
