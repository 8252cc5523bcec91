//! Running it like a production service: health, metrics, request ids,
//! compression, CORS, rate limits, timeouts and graceful shutdown, all
//! through HTTP against the real server.

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{at, reservation_body, send, spawn_app, spawn_app_on, spawn_app_with, with};

#[tokio::test]
async fn liveness_touches_nothing_and_needs_no_key() {
    let app = spawn_app().await;

    let reply = send(app.request(Method::GET, "/health", None)).await;

    assert_eq!(reply.assert_status(200), &json!({"status": "ok"}));
}

#[tokio::test]
async fn detailed_health_without_postgres_or_redis_reports_them_disabled() {
    let app = spawn_app().await;

    let reply = send(app.request(Method::GET, "/health/detailed", None)).await;

    let body = reply.assert_status(200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["node_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(body["uptime_s"].is_u64());
    assert_eq!(body["checks"]["sqlite"]["status"], "ok");
    assert!(body["checks"]["sqlite"]["rtt_ms"].is_number());
    assert_eq!(body["checks"]["postgres"]["status"], "disabled");
    assert_eq!(body["checks"]["redis"]["status"], "disabled");
    assert_eq!(body["checks"]["sync"]["pending"], 0);
}

#[tokio::test]
async fn detailed_health_is_degraded_not_down_when_postgres_is_unreachable() {
    // Nothing listens on this port once the listener is dropped.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(|config| {
        config.postgres_url = Some(format!(
            "postgres://reservoir:hunter2@127.0.0.1:{port}/reservoir"
        ));
    })
    .await;

    let reply = send(app.request(Method::GET, "/health/detailed", None)).await;

    let body = reply.assert_status(200);
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["postgres"]["status"], "unreachable");
    assert_eq!(body["checks"]["sqlite"]["status"], "ok");
    assert!(
        !reply.text.contains("hunter2"),
        "no secrets in health: {}",
        reply.text
    );
    assert!(
        !reply.text.contains("postgres://"),
        "no URLs in health: {}",
        reply.text
    );
    // Requests are still served while Postgres is away.
    let resource = app.new_resource(1).await;
    app.create_reservation(
        &app.admin_token,
        &reservation_body(&resource, &at("10:00"), &at("11:00")),
    )
    .await
    .assert_status(201);
}

#[tokio::test]
async fn detailed_health_is_ok_with_a_reachable_postgres() {
    let database = crate::support::postgres::test_database().await;
    let app = spawn_app_with(|config| config.postgres_url = Some(database.url.clone())).await;

    let reply = send(app.request(Method::GET, "/health/detailed", None)).await;

    let body = reply.assert_status(200);
    assert_eq!(body["checks"]["postgres"]["status"], "ok", "{}", reply.text);
    assert_eq!(body["status"], "ok");
}

/// The value of one Prometheus sample line, or 0 when absent.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_are_exposed_by_route_template_and_move_with_traffic() {
    let app = spawn_app().await;
    let resource = app.new_resource(5).await;
    let path = format!("/v1/resources/{resource}");
    let labels = [
        ("route", "/v1/resources/{id}"),
        ("method", "GET"),
        ("status", "200"),
    ];

    let before = send(app.request(Method::GET, "/metrics", None)).await;
    for _ in 0..3 {
        app.get(&path, &app.admin_token).await.assert_status(200);
    }
    let after = send(app.request(Method::GET, "/metrics", None)).await;

    assert_eq!(after.status, 200);
    assert!(
        after
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let moved = sample(&after.text, "reservoir_http_requests_total", &labels)
        - sample(&before.text, "reservoir_http_requests_total", &labels);
    assert!(moved >= 3.0, "request counter moved by {moved}");
    assert!(
        !after.text.contains(&resource),
        "raw ids must not become labels"
    );
    for name in [
        "reservoir_http_request_duration_seconds_bucket",
        "reservoir_writer_group_size_bucket",
        "reservoir_writer_commit_seconds_bucket",
        "reservoir_writer_queue_depth",
        "reservoir_writer_commits_total",
    ] {
        assert!(after.text.contains(name), "{name} missing from /metrics");
    }
    // Buckets reach down to 100 µs.
    assert!(after.text.contains("le=\"0.0001\""));
}

#[tokio::test]
async fn sync_metrics_appear_when_postgres_is_configured() {
    let database = crate::support::postgres::test_database().await;
    let app = spawn_app_with(|config| config.postgres_url = Some(database.url.clone())).await;

    let metrics = send(app.request(Method::GET, "/metrics", None)).await;

    for name in [
        "reservoir_sync_pending",
        "reservoir_sync_oldest_pending_age_seconds",
        "reservoir_sync_consecutive_failures",
        "reservoir_sync_dead_letters",
        "reservoir_sync_batches_total",
    ] {
        assert!(metrics.text.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app().await;

    let echoed = send(
        app.request(Method::GET, "/health", None)
            .header("x-request-id", "client-42"),
    )
    .await;
    let generated = send(app.request(Method::GET, "/health", None)).await;

    assert_eq!(echoed.header("x-request-id"), Some("client-42"));
    let id = generated
        .header("x-request-id")
        .expect("a generated request id");
    assert!(uuid::Uuid::try_parse(id).is_ok(), "{id}");
}

#[tokio::test]
async fn large_bodies_are_compressed_as_negotiated_and_small_ones_are_not() {
    let app = spawn_app().await;
    for i in 0..30 {
        app.create_resource(
            json!({"name": format!("Room {i} with a fairly long descriptive name"), "capacity": 2}),
        )
        .await;
    }

    for encoding in ["gzip", "br", "zstd"] {
        let reply = send(
            app.request(
                Method::GET,
                "/v1/resources?limit=200",
                Some(&app.admin_token),
            )
            .header("accept-encoding", encoding),
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-encoding"), Some(encoding));
    }
    let small = send(
        app.request(Method::GET, "/health", None)
            .header("accept-encoding", "gzip"),
    )
    .await;
    assert_eq!(small.header("content-encoding"), None);
    let plain = send(app.request(
        Method::GET,
        "/v1/resources?limit=200",
        Some(&app.admin_token),
    ))
    .await;
    assert_eq!(plain.header("content-encoding"), None);
}

#[tokio::test]
async fn cors_is_off_by_default_and_follows_configured_origins() {
    let closed = spawn_app().await;
    let open =
        spawn_app_with(|config| config.cors_origins = vec!["https://app.example.com".into()]).await;
    let preflight = |app: &crate::helpers::TestApp, origin: &str| {
        app.request(Method::OPTIONS, "/v1/reservations", None)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
    };

    let none = send(preflight(&closed, "https://app.example.com")).await;
    let allowed = send(preflight(&open, "https://app.example.com")).await;
    let other = send(preflight(&open, "https://evil.example.com")).await;

    assert_eq!(none.header("access-control-allow-origin"), None);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(
        allowed
            .header("access-control-allow-headers")
            .unwrap()
            .contains("idempotency-key")
    );
    assert_eq!(other.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn requests_over_the_per_key_rate_get_429_with_retry_after() {
    let app = spawn_app_with(|config| {
        config.rate_per_key = 1;
        config.rate_burst = 3;
    })
    .await;
    let key = app.create_user_key("hasty").await;

    let replies = join_all((0..6).map(|_| app.get("/v1/resources", &key))).await;

    let limited: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        replies.iter().filter(|r| r.status == 200).count(),
        3,
        "the burst passes"
    );
    assert_eq!(limited.len(), 3);
    for reply in limited {
        reply.assert_problem(429, "rate-limited");
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "Retry-After {retry}");
    }
    // Admin keys (back-office tools) are exempt.
    let admin = join_all((0..10).map(|_| app.get("/v1/resources", &app.admin_token))).await;
    assert!(admin.iter().all(|r| r.status == 200));
    // A limited key is counted in /metrics.
    let metrics = send(app.request(Method::GET, "/metrics", None)).await;
    assert!(
        sample(
            &metrics.text,
            "reservoir_rate_limited_total",
            &[("limit", "requests per key")]
        ) >= 3.0
    );
}

#[tokio::test]
async fn bookings_per_user_are_limited_and_refused_bookings_do_not_count() {
    let app = spawn_app_with(|config| config.limit_user_per_hour = 2).await;
    let key = app.create_user_key("busy").await;
    let resource = app.new_resource(1).await;
    let book = |from: &str, to: &str| {
        let body = reservation_body(&resource, &at(from), &at(to));
        let (app, key) = (&app, &key);
        async move { app.create_reservation(key, &body).await }
    };

    book("09:00", "10:00").await.assert_status(201);
    // A booking that fails for capacity is not counted...
    book("09:00", "10:00")
        .await
        .assert_problem(409, "capacity-exceeded");
    // ...so the second real booking still fits the quota of 2.
    book("10:00", "11:00").await.assert_status(201);
    let refused = book("11:00", "12:00").await;

    refused.assert_problem(429, "rate-limited");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (3500..=3600).contains(&retry),
        "the oldest booking frees up in about an hour: {retry}"
    );
    // Other users and admins are unaffected.
    let other = app.create_user_key("calm").await;
    app.create_reservation(
        &other,
        &reservation_body(&resource, &at("12:00"), &at("13:00")),
    )
    .await
    .assert_status(201);
    app.create_reservation(
        &app.admin_token,
        &with(
            reservation_body(&resource, &at("13:00"), &at("14:00")),
            "user_id",
            json!("busy"),
        ),
    )
    .await
    .assert_status(201);
}

#[tokio::test]
async fn bookings_per_user_and_resource_per_day_default_to_three() {
    let app = spawn_app_with(|config| {
        let defaults = reservoir::Config::with_data_dir("unused");
        config.limit_user_resource_per_day = defaults.limit_user_resource_per_day;
    })
    .await;
    let key = app.create_user_key("regular").await;
    let (first, second) = (app.new_resource(10).await, app.new_resource(10).await);

    for hour in ["09", "10", "11"] {
        let body = reservation_body(
            &first,
            &at(&format!("{hour}:00")),
            &at(&format!("{hour}:30")),
        );
        app.create_reservation(&key, &body).await.assert_status(201);
    }
    let fourth = app
        .create_reservation(&key, &reservation_body(&first, &at("12:00"), &at("12:30")))
        .await;

    fourth.assert_problem(429, "rate-limited");
    assert!(fourth.header("retry-after").is_some());
    app.create_reservation(&key, &reservation_body(&second, &at("12:00"), &at("12:30")))
        .await
        .assert_status(201);
}

#[tokio::test]
async fn a_request_over_the_timeout_is_a_503_problem() {
    // Set up on a normal server, then restart with a 1 ms timeout: far below
    // what 500 capacity checks and inserts take.
    let setup = spawn_app().await;
    let resource = setup.new_resource(1000).await;
    let data_dir = setup.stop().await;
    let app =
        crate::helpers::spawn_app_on_with(data_dir, |config| config.request_timeout_ms = 1).await;
    let items: Vec<Value> = (0..500)
        .map(|i| {
            let start = format!("2031-01-01T{:02}:{:02}:00Z", i / 60 % 24, i % 60);
            reservation_body(&resource, &start, "2031-01-02T00:00:00Z")
        })
        .collect();

    let reply = app
        .post_json(
            "/v1/reservations/batch",
            &app.admin_token,
            &json!({"reservations": items}),
        )
        .await;

    reply.assert_problem(503, "unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_a_request_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let body = reservation_body(&resource, &at("10:00"), &at("11:00")).to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut socket = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!(
        "POST /v1/reservations HTTP/1.1\r\nHost: reservoir\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{head}",
        app.admin_token,
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    // The server has the headers and half the body: the request is in flight.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the request in flight"
    );
    socket.write_all(tail.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let data_dir = stopping.await.unwrap();

    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let id = response.split("\"id\":\"").nth(1).unwrap()[..36].to_owned();
    let restarted = spawn_app_on(data_dir).await;
    restarted
        .get_reservation(&restarted.admin_token, &id)
        .await
        .assert_status(200);
}
