//! Health endpoints for load balancers and ops. `/health` is liveness and
//! touches nothing; `/health/detailed` measures each dependency. Only a
//! failing SQLite makes the node `down`: without Postgres or Redis it still
//! answers every request, so those only make it `degraded`.

use std::time::{Duration, Instant};

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde::Serialize;
use serde_json::{Value, json};

use super::sync::sync_status;
use crate::App;

/// Longest a dependency check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

pub fn router() -> Router<App> {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/health/detailed", get(detailed))
}

#[derive(Debug, Serialize)]
struct Check {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

impl Check {
    fn disabled() -> Check {
        Check {
            status: "disabled",
            rtt_ms: None,
            error: None,
            target: None,
        }
    }

    /// Runs `probe` with a deadline and reports `ok` or `unreachable`.
    async fn run<E: std::fmt::Display>(
        probe: impl std::future::Future<Output = Result<(), E>>,
    ) -> Check {
        let started = Instant::now();
        let outcome = tokio::time::timeout(CHECK_TIMEOUT, probe).await;
        let rtt_ms = Some((started.elapsed().as_secs_f64() * 1e6).round() / 1e3);
        match outcome {
            Ok(Ok(())) => Check {
                status: "ok",
                rtt_ms,
                error: None,
                target: None,
            },
            Ok(Err(error)) => Check {
                status: "unreachable",
                rtt_ms,
                error: Some(error.to_string()),
                target: None,
            },
            Err(_) => Check {
                status: "unreachable",
                rtt_ms,
                error: Some(format!("no answer within {CHECK_TIMEOUT:?}")),
                target: None,
            },
        }
    }
}

async fn detailed(State(app): State<App>) -> (StatusCode, Json<Value>) {
    let sqlite = Check::run(app.reads.ping());
    let postgres = async {
        match &app.sync {
            None => Check::disabled(),
            Some(sync) => Check {
                target: Some(sync.postgres.display().to_owned()),
                ..Check::run(sync.postgres.ping()).await
            },
        }
    };
    let redis = async {
        match app.cache.remote() {
            None => Check::disabled(),
            Some(remote) => Check {
                target: Some(remote.display()),
                ..Check::run(remote.ping()).await
            },
        }
    };
    let (sqlite, postgres, redis) = tokio::join!(sqlite, postgres, redis);
    let sync = match sync_status(&app).await {
        Ok(status) => {
            json!({"pending": status.pending, "oldest_pending_age_ms": status.oldest_pending_age_ms})
        }
        Err(_) => json!({"pending": null, "oldest_pending_age_ms": null}),
    };
    let (status, code) = if sqlite.status != "ok" {
        ("down", StatusCode::SERVICE_UNAVAILABLE)
    } else if [&postgres, &redis]
        .iter()
        .any(|c| c.status == "unreachable")
    {
        ("degraded", StatusCode::OK)
    } else {
        ("ok", StatusCode::OK)
    };
    let body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": app.node_id,
        "uptime_s": app.started.elapsed().as_secs(),
        "checks": {"sqlite": sqlite, "postgres": postgres, "redis": redis, "sync": sync},
    });
    (code, Json(body))
}
