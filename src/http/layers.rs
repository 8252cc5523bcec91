//! The middleware every request goes through. As a request sees them,
//! outermost first: panic catching, request id, tracing span, per-route
//! metrics, CORS, compression, timeout, body limit, then the route.

use std::{
    any::Any,
    cell::RefCell,
    collections::HashMap,
    convert::Infallible,
    sync::Arc,
    task::{self, Poll},
    time::Duration,
    time::Instant,
};

use anyhow::Context;
use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath},
    http::{HeaderName, HeaderValue, Method, Request, header},
    response::{IntoResponse, Response},
};
use futures::future::BoxFuture;
use tower::{Service, ServiceBuilder, layer::layer_fn};
use tower_http::{
    catch_panic::CatchPanicLayer,
    compression::{
        CompressionLayer,
        predicate::{NotForContentType, Predicate, SizeAbove},
    },
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};
use tracing::{Span, field::Empty};

use super::BODY_LIMIT;
use crate::{App, config::Config, error::AppError, sync::batch_size::ClientActivity};

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
    let x_request_id = HeaderName::from_static("x-request-id");
    // One `Router::layer` call with the whole stack: each call boxes every
    // route again, and each box is one more clone and one more boxed future
    // per request (`clone_box` was a visible cost in the profile of cache
    // hits). `ServiceBuilder` lists the layers outermost first.
    let stack = ServiceBuilder::new()
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(SetRequestIdLayer::new(x_request_id.clone(), FastRequestId))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(on_response),
        )
        .layer(PropagateRequestIdLayer::new(x_request_id))
        .layer(layer_fn({
            let activity = app.activity.clone();
            move |inner| Metered {
                inner,
                activity: activity.clone(),
            }
        }))
        .option_layer(settings.cors.clone().map(cors))
        .layer(
            CompressionLayer::new().compress_when(
                SizeAbove::new(COMPRESS_ABOVE)
                    .and(NotForContentType::GRPC)
                    .and(NotForContentType::IMAGES)
                    .and(NotForContentType::SSE),
            ),
        )
        .layer(layer_fn({
            let limit = settings.request_timeout;
            move |inner| Deadline { inner, limit }
        }))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    routes.layer(stack)
}

/// Answers 503 (problem+json) when the request takes longer than `limit`.
#[derive(Clone)]
struct Deadline<S> {
    inner: S,
    limit: Duration,
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let limit = self.limit;
        let future = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(limit, future).await {
                Ok(response) => response,
                Err(_) => Ok(AppError::Unavailable(format!(
                    "the request did not complete within {limit:?}"
                ))
                .into_response()),
            }
        })
    }
}

/// Counts every request and records its latency, by route template, method
/// and status; notes when clients last called the API (see
/// [`ClientActivity`]).
#[derive(Clone)]
struct Metered<S> {
    inner: S,
    activity: Arc<ClientActivity>,
}

/// Routes that clients call, as opposed to those that ops and monitoring
/// poll (health, metrics, the sync status, keys, docs).
fn for_clients(route: &str) -> bool {
    route.starts_with("/v1/reservations") || route.starts_with("/v1/resources")
}

impl<S, B, R> Service<Request<B>> for Metered<S>
where
    S: Service<Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    R::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = request.method().clone();
        // `MatchedPath` is an `Arc<str>` inside: cloning it allocates nothing.
        let route = request.extensions().get::<MatchedPath>().cloned();
        if route.as_ref().is_some_and(|r| for_clients(r.as_str())) {
            self.activity.note();
        }
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
            let status = response.status().as_u16();
            let elapsed = started.elapsed().as_secs_f64();
            HTTP_METRICS.with(|handles| {
                let mut handles = handles.borrow_mut();
                let handle = handles.get(route, &method, status);
                handle.requests.increment(1);
                handle.duration.record(elapsed);
            });
            // Boxed here, as axum's `from_fn` did: the compression body
            // inside is large, and every outer layer would otherwise copy it
            // around with the response.
            Ok(response.map(axum::body::Body::new))
        })
    }
}

fn on_response<B>(response: &axum::http::Response<B>, latency: Duration, span: &Span) {
    span.record("status", response.status().as_u16());
    span.record("latency_ms", latency.as_secs_f64() * 1e3);
    tracing::info!("response");
}

/// One span per request: its id (the client's `x-request-id` or a fresh
/// UUID), method, route template, and, once answered, status and latency.
fn request_span<B>(request: &Request<B>) -> Span {
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
fn route<B>(request: &Request<B>) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned())
}

/// The counter and histogram of one (route, method, status). Registering
/// them is a lookup by name and labels in the recorder's registry, with
/// the labels built as owned strings: enough to show in the profile of the
/// cheapest requests. So each worker thread keeps the handles it has used.
struct RouteHandles {
    method: Method,
    status: u16,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

#[derive(Default)]
struct HttpMetrics {
    /// Route template → its handles; routes are a bounded set (templates,
    /// never raw paths), and a route sees few methods and statuses.
    routes: HashMap<String, Vec<RouteHandles>>,
}

impl HttpMetrics {
    fn get(&mut self, route: &str, method: &Method, status: u16) -> &RouteHandles {
        // Looked up by `&str` first: the entry API would allocate the key on
        // every request.
        let handles = if self.routes.contains_key(route) {
            self.routes.get_mut(route).expect("checked above")
        } else {
            self.routes.entry(route.to_owned()).or_default()
        };
        let found = handles
            .iter()
            .position(|h| h.status == status && h.method == method);
        let index = match found {
            Some(index) => index,
            None => {
                handles.push(RouteHandles {
                    method: method.clone(),
                    status,
                    requests: metrics::counter!(
                        "reservoir_http_requests_total",
                        "route" => route.to_owned(),
                        "method" => method.to_string(),
                        "status" => status.to_string()
                    ),
                    duration: metrics::histogram!(
                        "reservoir_http_request_duration_seconds",
                        "route" => route.to_owned(),
                        "method" => method.to_string()
                    ),
                });
                handles.len() - 1
            }
        };
        &handles[index]
    }
}

thread_local! {
    static HTTP_METRICS: RefCell<HttpMetrics> = RefCell::new(HttpMetrics::default());
}

/// Request ids in the same form as before (a random UUID v4, hyphenated),
/// from the thread's fast PRNG instead of the kernel's: a request id only
/// needs to be unique enough to correlate logs, and `getrandom` per request
/// showed in the profile. Client-sent ids are kept as they are.
#[derive(Debug, Clone, Copy, Default)]
struct FastRequestId;

impl MakeRequestId for FastRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = id.hyphenated().encode_lower(&mut text);
        HeaderValue::from_str(text).ok().map(RequestId::new)
    }
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

    #[test]
    fn client_routes_are_the_bookings_and_resources_not_the_ops_ones() {
        for route in [
            "/v1/reservations",
            "/v1/reservations/batch",
            "/v1/reservations/{id}",
            "/v1/reservations/{id}/cancel",
            "/v1/resources",
            "/v1/resources/{id}/availability",
        ] {
            assert!(for_clients(route), "{route}");
        }
        for route in [
            "/health",
            "/metrics",
            "/v1/sync/status",
            "/v1/keys",
            "/v1/cache/stats",
        ] {
            assert!(!for_clients(route), "{route}");
        }
    }

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
