//! `GET /v1/sync/status` (admin): how far this node's writes are from
//! PostgreSQL.

use axum::{Json, extract::State};
use jiff::Timestamp;
use serde::Serialize;
use std::sync::atomic::Ordering;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    extract::Auth,
    schemas::{Problem, V1Errors},
};
use crate::{
    App,
    domain::time::{micros, now},
    error::AppError,
};

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(status))
}

/// How far this node's writes are from PostgreSQL.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncStatus {
    /// Whether PostgreSQL is configured.
    pub enabled: bool,
    /// Outbox rows not yet sent.
    pub pending: i64,
    /// Age of the oldest outbox row; `null` when the outbox is empty.
    #[schema(required = true)]
    pub oldest_pending_age_ms: Option<i64>,
    #[schema(required = true)]
    pub last_success_at: Option<Timestamp>,
    #[schema(required = true)]
    pub last_error: Option<String>,
    pub consecutive_failures: u64,
    /// Rows PostgreSQL refused for good.
    pub dead_letters: i64,
    pub batches_sent: u64,
    pub rows_sent: u64,
}

#[utoipa::path(
    get,
    path = "/v1/sync/status",
    tag = "sync",
    operation_id = "getSyncStatus",
    summary = "Sync status (admin)",
    description = "How far this node's local writes are from PostgreSQL: the outbox backlog, the last success and error, and totals.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The sync status.", body = SyncStatus),
        (status = 403, description = "The caller is not an admin (`forbidden`).", body = Problem, content_type = "application/problem+json"),
        V1Errors,
    )
)]
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
