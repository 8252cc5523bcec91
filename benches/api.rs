//! Request-path benchmarks through the full router, in-process (no sockets):
//! create (validation → writer → group commit → reply) and get by id.
//! Run with `cargo bench`.

use axum::{
    body::{Body, to_bytes},
    http::{Request, StatusCode, header},
};
use criterion::{Criterion, criterion_group, criterion_main};
use reservoir::{Config, Service};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "bench-admin-token";

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let body = body
        .map(|b| Body::from(b.to_string()))
        .unwrap_or_else(Body::empty);
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::with_data_dir(dir.path());
    config.admin_token = Some(TOKEN.into());
    let service = runtime.block_on(Service::start(&config)).unwrap();
    let router = service.router();

    let (status, resource) = runtime.block_on(call(
        &router,
        "POST",
        "/v1/resources",
        Some(json!({"name": "bench", "capacity": 1_000_000})),
    ));
    assert_eq!(status, StatusCode::CREATED);
    let resource_id = resource["id"].as_str().unwrap().to_owned();

    let mut minute = 0i64;
    c.bench_function("create reservation (router, sequential)", |b| {
        b.to_async(&runtime).iter(|| {
            minute += 1;
            let start = jiff::Timestamp::from_second(1_900_000_000 + minute * 60).unwrap();
            let end = jiff::Timestamp::from_second(1_900_000_000 + minute * 60 + 1800).unwrap();
            let body = json!({"resource_id": resource_id, "starts_at": start.to_string(), "ends_at": end.to_string()});
            let router = router.clone();
            async move {
                let (status, _) = call(&router, "POST", "/v1/reservations", Some(body)).await;
                assert_eq!(status, StatusCode::CREATED);
            }
        })
    });

    let (_, created) = runtime.block_on(call(
        &router,
        "POST",
        "/v1/reservations",
        Some(json!({"resource_id": resource_id, "starts_at": "2031-01-01T10:00:00Z", "ends_at": "2031-01-01T11:00:00Z"})),
    ));
    let uri = format!("/v1/reservations/{}", created["id"].as_str().unwrap());
    c.bench_function("get reservation by id (router)", |b| {
        b.to_async(&runtime).iter(|| {
            let router = router.clone();
            let uri = uri.clone();
            async move {
                let (status, _) = call(&router, "GET", &uri, None).await;
                assert_eq!(status, StatusCode::OK);
            }
        })
    });

    runtime.block_on(service.shutdown());
}

criterion_group!(api, benches);
criterion_main!(api);
