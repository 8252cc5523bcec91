//! The middleware every request goes through. As a request sees them,
//! outermost first: panic catching, request id, tracing span, per-route
//! metrics, CORS, compression, timeout, body limit, then the route.

use std::{any::Any, time::Duration, time::Instant};

use anyhow::Context;
use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderName, HeaderValue, Method, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tower_http::{
    catch_panic::CatchPanicLayer,
    compression::{
        CompressionLayer,
        predicate::{NotForContentType, Predicate, SizeAbove},
    },
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};
use tracing::{Span, field::Empty};

use super::BODY_LIMIT;
use crate::{App, config::Config, error::AppError};

/// Bodies smaller than this are sent uncompressed: compressing them costs
/// more than it saves.
const COMPRESS_ABOVE: u16 = 1024;

/// What the middleware needs from the configuration, validated at start.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub request_timeout: Duration,
    /// `None`: no CORS headers at all.
    pub cors: Option<AllowOrigin>,
}

impl HttpSettings {
    pub fn from_config(config: &Config) -> anyhow::Result<HttpSettings> {
        let origins: Vec<&str> = config
            .cors_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .collect();
        let cors = if origins.is_empty() {
            None
        } else if origins.contains(&"*") {
            Some(AllowOrigin::any())
        } else {
            let list = origins
                .iter()
                .map(|o| {
                    HeaderValue::from_str(o)
                        .with_context(|| format!("RESERVOIR_CORS_ORIGINS: invalid origin {o:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Some(AllowOrigin::list(list))
        };
        Ok(HttpSettings {
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            cors,
        })
    }
}

pub fn apply(routes: Router<App>, app: &App) -> Router<App> {
    let settings = &app.http;
    let timeout = settings.request_timeout;
    let mut router = routes
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(
            move |request: Request, next: Next| async move {
                match tokio::time::timeout(timeout, next.run(request)).await {
                    Ok(response) => response,
                    Err(_) => AppError::Unavailable(format!(
                        "the request did not complete within {timeout:?}"
                    ))
                    .into_response(),
                }
            },
        ))
        .layer(
            CompressionLayer::new().compress_when(
                SizeAbove::new(COMPRESS_ABOVE)
                    .and(NotForContentType::GRPC)
                    .and(NotForContentType::IMAGES)
                    .and(NotForContentType::SSE),
            ),
        );
    if let Some(origins) = &settings.cors {
        router = router.layer(cors(origins.clone()));
    }
    let x_request_id = HeaderName::from_static("x-request-id");
    router
        .layer(middleware::from_fn(record_metrics))
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(|response: &Response, latency: Duration, span: &Span| {
                    span.record("status", response.status().as_u16());
                    span.record("latency_ms", latency.as_secs_f64() * 1e3);
                    tracing::info!("response");
                }),
        )
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
        .layer(CatchPanicLayer::custom(panic_response))
}

/// One span per request: its id (the client's `x-request-id` or a fresh
/// UUID), method, route template, and, once answered, status and latency.
fn request_span(request: &Request) -> Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        request_id = id,
        method = %request.method(),
        route = route(request),
        status = Empty,
        latency_ms = Empty,
    )
}

/// The route template (`/v1/reservations/{id}`), never the raw path, so
/// metrics and logs keep a bounded set of names.
fn route(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned())
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = route(&request);
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("reservoir_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("reservoir_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

fn cors(origins: AllowOrigin) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("idempotent-replayed"),
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(3600))
}

/// A panic is a bug: answer a plain 500 problem and keep its text out of the
/// response (the panic hook logs it).
fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    AppError::from(anyhow::anyhow!("a request handler panicked")).into_response()
}

#[cfg(test)]
mod tests {
    use axum::{body::to_bytes, routing::get};
    use tower::ServiceExt;

    use super::*;

    async fn boom() -> &'static str {
        panic!("secret internals")
    }

    #[tokio::test]
    async fn a_panic_is_a_500_problem_without_its_message() {
        let router: Router = Router::new()
            .route("/boom", get(boom))
            .layer(CatchPanicLayer::custom(panic_response));

        let response = router
            .oneshot(
                Request::builder()
                    .uri("/boom")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();

        assert_eq!(response.status(), 500);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body = to_bytes(response.into_body(), 10_000).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("urn:reservoir:problem:internal"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
