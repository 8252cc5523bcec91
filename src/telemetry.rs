//! Logs and metrics setup. Logs: `RUST_LOG` filters, `RESERVOIR_LOG_FORMAT`
//! picks human-readable or one JSON object per line. Metrics: one Prometheus
//! recorder per process (the `metrics` facade is global), rendered by
//! `GET /metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = fmt().with_env_filter(filter);
    let result = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    // A second init (tests launching several servers) keeps the first one.
    let _ = result;
}

/// Latency buckets from 100 µs to 10 s, fine enough to read p50/p95/p99.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1,
    0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
];
const GROUP_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("reservoir_writer_group_size".into()),
                    GROUP_SIZE_BUCKETS,
                )
            })
            .expect("bucket lists are non-empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "reservoir_http_requests_total",
        "HTTP requests by route template, method and status"
    );
    describe_histogram!(
        "reservoir_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by route"
    );
    describe_histogram!(
        "reservoir_writer_group_size",
        "Writes committed per SQLite transaction"
    );
    describe_histogram!(
        "reservoir_writer_commit_seconds",
        Unit::Seconds,
        "Time to apply and commit one group"
    );
    describe_histogram!(
        "reservoir_sqlite_wal_restart_seconds",
        Unit::Seconds,
        "Time the writer spent starting the WAL over (a RESTART checkpoint), writes waiting"
    );
    describe_histogram!(
        "reservoir_sqlite_checkpoint_flush_seconds",
        Unit::Seconds,
        "Time the background checkpointer spent flushing copied pages to the database file"
    );
    describe_gauge!(
        "reservoir_writer_queue_depth",
        "Writes waiting for the writer task"
    );
    describe_counter!(
        "reservoir_writer_commits_total",
        "SQLite transactions committed by the writer"
    );
    describe_counter!(
        "reservoir_rate_limited_total",
        "Requests refused by a rate limit or booking quota"
    );
    describe_gauge!(
        "reservoir_sync_pending",
        "Outbox rows not yet in PostgreSQL"
    );
    describe_gauge!(
        "reservoir_sync_oldest_pending_age_seconds",
        Unit::Seconds,
        "Age of the oldest outbox row"
    );
    describe_gauge!(
        "reservoir_sync_consecutive_failures",
        "Current streak of failed sync attempts"
    );
    describe_gauge!(
        "reservoir_sync_dead_letters",
        "Rows PostgreSQL refused for good"
    );
    describe_counter!("reservoir_sync_batches_total", "Batches sent to PostgreSQL");
    describe_counter!("reservoir_sync_rows_total", "Rows sent to PostgreSQL");
    describe_counter!(
        "reservoir_sync_retries_total",
        "Sync retries after a failure"
    );
    describe_counter!(
        "reservoir_sync_conflicts_total",
        "Reservations PostgreSQL rejected (capacity taken elsewhere)"
    );
}
