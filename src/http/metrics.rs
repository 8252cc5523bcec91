//! `GET /metrics`: Prometheus text format. Gauges that describe state (queue
//! depth, outbox size) are read at scrape time, so they are never stale.

use std::sync::atomic::Ordering;

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::{
    App,
    domain::time::{micros, now},
    telemetry,
};

pub fn router() -> Router<App> {
    Router::new().route("/metrics", get(render))
}

async fn render(State(app): State<App>) -> impl IntoResponse {
    metrics::gauge!("reservoir_writer_queue_depth").set(app.writer.queue_depth() as f64);
    metrics::counter!("reservoir_writer_commits_total")
        .absolute(app.writer.stats().commits.load(Ordering::Relaxed));
    if let Some(remote) = app.cache.remote() {
        use crate::cache::breaker::BreakerState;
        for state in [
            BreakerState::Closed,
            BreakerState::HalfOpen,
            BreakerState::Open,
        ] {
            let value = if remote.breaker_state() == state {
                1.0
            } else {
                0.0
            };
            metrics::gauge!("reservoir_cache_breaker_state", "state" => state.as_str()).set(value);
        }
    }
    if let Some(sync) = &app.sync {
        let stats = &sync.stats;
        metrics::gauge!("reservoir_sync_consecutive_failures")
            .set(stats.consecutive_failures.load(Ordering::Relaxed) as f64);
        metrics::counter!("reservoir_sync_batches_total")
            .absolute(stats.batches_sent.load(Ordering::Relaxed));
        metrics::counter!("reservoir_sync_rows_total")
            .absolute(stats.rows_sent.load(Ordering::Relaxed));
        metrics::counter!("reservoir_sync_retries_total")
            .absolute(stats.retries.load(Ordering::Relaxed));
        metrics::counter!("reservoir_sync_conflicts_total")
            .absolute(stats.conflicts.load(Ordering::Relaxed));
        if let Ok(outbox) = app.reads.outbox_stats().await {
            metrics::gauge!("reservoir_sync_pending").set(outbox.pending as f64);
            metrics::gauge!("reservoir_sync_dead_letters").set(outbox.dead_letters as f64);
            let age = outbox
                .oldest
                .map(|oldest| (micros(now()) - oldest).max(0) as f64 / 1e6)
                .unwrap_or(0.0);
            metrics::gauge!("reservoir_sync_oldest_pending_age_seconds").set(age);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::prometheus().render(),
    )
}
