//! `GET /v1/cache/stats` (admin): hits, misses and errors per cache layer,
//! and the state of the Redis circuit breaker.

use std::sync::atomic::Ordering;

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    extract::Auth,
    schemas::{Problem, V1Errors},
};
use crate::{App, error::AppError};

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(stats))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CacheStats {
    pub l1: L1,
    pub l2: L2,
}

/// The in-memory cache of this node.
#[derive(Debug, Serialize, ToSchema)]
pub struct L1 {
    pub hits: u64,
    pub misses: u64,
    /// Reservations and resources held.
    pub entries: u64,
}

/// The Redis cache shared by all nodes.
#[derive(Debug, Serialize, ToSchema)]
pub struct L2 {
    /// Whether Redis is configured.
    pub enabled: bool,
    pub hits: u64,
    pub misses: u64,
    /// Calls that failed or timed out.
    pub errors: u64,
    /// Calls skipped because the circuit breaker was open.
    pub skipped: u64,
    /// `closed`, `open` or `half_open`; `disabled` without Redis.
    pub breaker: String,
}

#[utoipa::path(
    get,
    path = "/v1/cache/stats",
    tag = "cache",
    operation_id = "getCacheStats",
    summary = "Cache statistics (admin)",
    description = "Hits, misses and errors of the in-memory (L1) and Redis (L2) caches, and the Redis circuit breaker's state.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The cache statistics.", body = CacheStats),
        (status = 403, description = "The caller is not an admin (`forbidden`).", body = Problem, content_type = "application/problem+json"),
        V1Errors,
    )
)]
async fn stats(State(app): State<App>, auth: Auth) -> Result<Json<CacheStats>, AppError> {
    auth.require_admin()?;
    Ok(Json(cache_stats(&app).await))
}

pub async fn cache_stats(app: &App) -> CacheStats {
    let cache = &app.cache;
    let l2 = match cache.remote() {
        Some(remote) => L2 {
            enabled: true,
            hits: remote.stats.hits.load(Ordering::Relaxed),
            misses: remote.stats.misses.load(Ordering::Relaxed),
            errors: remote.stats.errors.load(Ordering::Relaxed),
            skipped: remote.stats.skipped.load(Ordering::Relaxed),
            breaker: remote.breaker_state().as_str().to_owned(),
        },
        None => L2 {
            enabled: false,
            hits: 0,
            misses: 0,
            errors: 0,
            skipped: 0,
            breaker: "disabled".to_owned(),
        },
    };
    CacheStats {
        l1: L1 {
            hits: cache.l1.hits.load(Ordering::Relaxed),
            misses: cache.l1.misses.load(Ordering::Relaxed),
            entries: cache.entries().await,
        },
        l2,
    }
}
