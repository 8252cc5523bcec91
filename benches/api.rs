//! Criterion benchmarks, run with `cargo bench` (one group: `cargo bench --bench
//! api -- availability`). See BENCHMARKS.md for the figures and how they
//! relate to the load generator's.
//!
//! - `create`: a create through the full router in-process (no sockets):
//!   validation → writer queue → group commit → reply; one at a time, and 64
//!   at once (what group commit is for).
//! - `get`: get by id through the router, the same id again and again (an L1
//!   hit once the cache holds it), distinct ids after a restart (nothing
//!   cached: SQLite), and `Reads::reservation` alone (the read pool query).
//! - `availability`: 1-day and 7-day windows on a resource holding 1,000
//!   reservations.
//! - `list`: a page of 50 of that resource's reservations.
//! - `writer`: the writer's group commit with exactly 1, 16 and 256 creates
//!   per transaction (current-thread runtime: every submit is queued before
//!   the writer runs, so each iteration is one group).
//! - `sync`: one `reservoir_apply_rows` call with 1,000 new reservations into
//!   PostgreSQL (`RESERVOIR_BENCH_POSTGRES_URL`, default
//!   `postgres://postgres@127.0.0.1:5432/postgres`; a throwaway database is
//!   created beside it and dropped). Skipped with a notice when no PostgreSQL
//!   answers: this is a benchmark, not a test.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use axum::{
    body::{Body, to_bytes},
    http::{Request, StatusCode, header},
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use futures::future::join_all;
use reservoir::{
    Config, Service,
    domain::{
        auth::UserId,
        reservation::{NewReservation, Reservation, Status, SyncState},
    },
    store::{
        postgres::Postgres,
        sqlite::{
            self,
            writer::{Booking, Op, Writer, WriterConfig},
        },
    },
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, postgres::PgConnection};
use tokio::runtime::Runtime;
use tower::ServiceExt;
use uuid::Uuid;

const TOKEN: &str = "bench-admin-token";
/// 2040-01-01T00:00:00Z: far from "now", so nothing is in the past.
const EPOCH_2040: i64 = 2_208_988_800;
const DAY: i64 = 86_400;

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

fn instant(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds).unwrap().to_string()
}

fn booking(resource_id: &str, start: i64, end: i64) -> Value {
    json!({"resource_id": resource_id, "starts_at": instant(start), "ends_at": instant(end)})
}

fn multi_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::with_data_dir(dir).without_limits();
    config.admin_token = Some(TOKEN.into());
    config
}

async fn create_resource(router: &axum::Router, body: Value) -> String {
    let (status, resource) = call(router, "POST", "/v1/resources", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{resource}");
    resource["id"].as_str().unwrap().to_owned()
}

/// Books `items` through the batch endpoint; all must succeed.
async fn book(router: &axum::Router, items: Vec<Value>) -> Vec<String> {
    let mut ids = Vec::with_capacity(items.len());
    for chunk in items.chunks(500) {
        let (status, answer) = call(
            router,
            "POST",
            "/v1/reservations/batch",
            Some(json!({ "reservations": chunk })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        for result in answer["results"].as_array().unwrap() {
            assert_eq!(result["status"], 201, "{result}");
            ids.push(result["reservation"]["id"].as_str().unwrap().to_owned());
        }
    }
    ids
}

/// A resource (capacity 4, 30-minute slots) holding 1,000 half-hour
/// reservations over 10 days from `base`: about 2 per slot. Returns its id and
/// the reservation ids. The same shape as the load generator's fixture.
async fn fixture(router: &axum::Router, base: i64) -> (String, Vec<String>) {
    let resource_id = create_resource(
        router,
        json!({"name": "fixture", "capacity": 4, "slot_minutes": 30}),
    )
    .await;
    let items = (0..1000i64)
        .map(|i| {
            let start = base + (i % 10) * DAY + ((i / 10) % 48) * 1800;
            booking(&resource_id, start, start + 1800)
        })
        .collect();
    let ids = book(router, items).await;
    (resource_id, ids)
}

fn router_benches(c: &mut Criterion) {
    let runtime = multi_thread();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let service = runtime.block_on(Service::start(&config)).unwrap();
    let router = service.router();

    // create -----------------------------------------------------------------
    let resource_id = runtime.block_on(create_resource(
        &router,
        json!({"name": "bench", "capacity": 1_000_000}),
    ));
    let mut group = c.benchmark_group("create");
    let mut slot = 0i64;
    group.bench_function("router, one at a time", |b| {
        b.to_async(&runtime).iter(|| {
            slot += 1;
            let start = EPOCH_2040 + slot * 1800;
            let body = booking(&resource_id, start, start + 1800);
            let router = router.clone();
            async move {
                let (status, _) = call(&router, "POST", "/v1/reservations", Some(body)).await;
                assert_eq!(status, StatusCode::CREATED);
            }
        })
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("router, 64 concurrent", |b| {
        b.to_async(&runtime).iter(|| {
            let bodies: Vec<Value> = (0..64)
                .map(|_| {
                    slot += 1;
                    let start = EPOCH_2040 + slot * 1800;
                    booking(&resource_id, start, start + 1800)
                })
                .collect();
            let router = router.clone();
            async move {
                let answers = join_all(bodies.into_iter().map(|body| {
                    let router = router.clone();
                    tokio::spawn(async move {
                        call(&router, "POST", "/v1/reservations", Some(body)).await
                    })
                }))
                .await;
                for answer in answers {
                    assert_eq!(answer.unwrap().0, StatusCode::CREATED);
                }
            }
        })
    });
    group.finish();

    // reads ------------------------------------------------------------------
    let base = EPOCH_2040 + 400 * DAY;
    let (fixture_id, ids) = runtime.block_on(fixture(&router, base));

    let mut group = c.benchmark_group("get");
    let uri = format!("/v1/reservations/{}", ids[0]);
    group.bench_function("router, same id (L1 hit once cached)", |b| {
        b.to_async(&runtime).iter(|| {
            let router = router.clone();
            let uri = uri.clone();
            async move {
                let (status, _) = call(&router, "GET", &uri, None).await;
                assert_eq!(status, StatusCode::OK);
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("availability");
    for days in [1i64, 7] {
        let uri = format!(
            "/v1/resources/{fixture_id}/availability?from={}&to={}",
            instant(base + DAY),
            instant(base + (1 + days) * DAY)
        );
        group.bench_function(format!("{days}-day window, 1000 reservations"), |b| {
            b.to_async(&runtime).iter(|| {
                let router = router.clone();
                let uri = uri.clone();
                async move {
                    let (status, body) = call(&router, "GET", &uri, None).await;
                    assert_eq!(status, StatusCode::OK);
                    assert_eq!(body["slots"].as_array().unwrap().len() as i64, 48 * days);
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("list");
    let uri = format!(
        "/v1/reservations?resource_id={fixture_id}&from={}&limit=50",
        instant(base + 2 * DAY)
    );
    group.bench_function("page of 50", |b| {
        b.to_async(&runtime).iter(|| {
            let router = router.clone();
            let uri = uri.clone();
            async move {
                let (status, body) = call(&router, "GET", &uri, None).await;
                assert_eq!(status, StatusCode::OK);
                assert_eq!(body["items"].as_array().unwrap().len(), 50);
            }
        })
    });
    group.finish();

    // get by id from SQLite: distinct ids after a restart, so no cache holds
    // them. 100,000 ids; each is read once unless the bench needs more.
    let cold_base = EPOCH_2040 + 800 * DAY;
    let cold_resource = runtime.block_on(create_resource(
        &router,
        json!({"name": "cold", "capacity": 1, "slot_minutes": 30}),
    ));
    let cold_ids: Vec<Uuid> = runtime
        .block_on(book(
            &router,
            (0..100_000i64)
                .map(|i| {
                    booking(
                        &cold_resource,
                        cold_base + i * 1800,
                        cold_base + i * 1800 + 1800,
                    )
                })
                .collect(),
        ))
        .iter()
        .map(|id| id.parse().unwrap())
        .collect();
    drop(router);
    runtime.block_on(service.shutdown());
    let service = runtime.block_on(Service::start(&config)).unwrap();
    let router = service.router();
    let mut group = c.benchmark_group("get");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut next = 0usize;
    let mut wrapped = false;
    group.bench_function("router, distinct ids after restart (SQLite)", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let uris: Vec<String> = (0..iters)
                .map(|_| {
                    next += 1;
                    if next >= cold_ids.len() {
                        next = 0;
                        wrapped = true;
                    }
                    format!("/v1/reservations/{}", cold_ids[next])
                })
                .collect();
            let router = router.clone();
            async move {
                let started = Instant::now();
                for uri in uris {
                    let (status, _) = call(&router, "GET", &uri, None).await;
                    assert_eq!(status, StatusCode::OK);
                }
                started.elapsed()
            }
        })
    });
    if wrapped {
        eprintln!(
            "notice: `get/router, distinct ids after restart` read more than {} ids, so some were read twice (and may have been cached)",
            cold_ids.len()
        );
    }
    group.finish();
    drop(router);
    runtime.block_on(service.shutdown());

    // The read pool query alone, below the router.
    let (reads, write) = runtime.block_on(sqlite::open(&config)).unwrap();
    let mut group = c.benchmark_group("get");
    let mut i = 0usize;
    group.bench_function("Reads::reservation (SQLite read pool)", |b| {
        b.to_async(&runtime).iter(|| {
            i = (i + 7919) % cold_ids.len();
            let id = cold_ids[i];
            let reads = reads.clone();
            async move {
                assert!(reads.reservation(id).await.unwrap().is_some());
            }
        })
    });
    group.finish();
    drop(write);
    runtime.block_on(reads.close());
}

/// The writer alone: each iteration queues exactly `size` creates while the
/// writer is held (`Writer::hold`, `Writer::submit_now`), then times from its
/// release to the last reply, so every iteration is one group and one commit.
fn writer_benches(c: &mut Criterion) {
    let runtime = multi_thread();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (writer, task, resource_id) = runtime.block_on(async {
        let (_reads, conn) = sqlite::open(&config).await.unwrap();
        let (writer, task) = Writer::spawn(conn, stopped, WriterConfig::default());
        let new = reservoir::domain::resource::NewResource::parse(
            json!({"name": "writer bench", "capacity": 1_000_000}),
        )
        .unwrap();
        let id = match writer.submit(Op::CreateResource(new), None).await.unwrap() {
            reservoir::store::sqlite::writer::Outcome::Resource(resource, _) => resource.id,
            _ => unreachable!(),
        };
        (writer, task, id)
    });
    let user = UserId::parse("bench").unwrap();
    let mut slot = 0i64;
    let op = |slot: i64| {
        let start = EPOCH_2040 + slot * 1800;
        let new = NewReservation::parse(booking(&resource_id.to_string(), start, start + 1800), "")
            .unwrap();
        Op::CreateReservation(Booking::new(new, user.clone(), true))
    };

    let mut group = c.benchmark_group("writer group commit");
    for size in [1usize, 16, 256] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("group of {size} creates"), |b| {
            b.to_async(&runtime).iter_custom(|iterations| {
                let writer = writer.clone();
                let ops: Vec<Vec<Op>> = (0..iterations)
                    .map(|_| {
                        (0..size)
                            .map(|_| {
                                slot += 1;
                                op(slot)
                            })
                            .collect()
                    })
                    .collect();
                async move {
                    let mut total = Duration::ZERO;
                    for ops in ops {
                        let held = writer.hold().await;
                        let replies: Vec<_> = ops
                            .into_iter()
                            .map(|op| writer.submit_now(op, None).unwrap())
                            .collect();
                        let commits = writer.stats().commits.load(Ordering::Relaxed);
                        let started = Instant::now();
                        held.release().await;
                        for result in join_all(replies).await {
                            result.unwrap();
                        }
                        total += started.elapsed();
                        assert_eq!(
                            writer.stats().commits.load(Ordering::Relaxed) - commits,
                            1,
                            "{size} queued creates form one group"
                        );
                    }
                    total
                }
            })
        });
    }
    group.finish();
    stop.send(true).unwrap();
    drop(writer);
    runtime.block_on(task).unwrap();
}

/// One batch of 1,000 reservations into PostgreSQL.
fn sync_benches(c: &mut Criterion) {
    let runtime = multi_thread();
    let admin_url = std::env::var("RESERVOIR_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!("reservoir_bench_{}", std::process::id());
    let created = runtime.block_on(async {
        let mut admin =
            tokio::time::timeout(Duration::from_secs(3), PgConnection::connect(&admin_url))
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())?;
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(admin)
    });
    let mut admin = match created {
        Ok(admin) => admin,
        Err(error) => {
            eprintln!(
                "notice: skipping the sync benchmark: no PostgreSQL at {admin_url} ({error}); set RESERVOIR_BENCH_POSTGRES_URL"
            );
            return;
        }
    };
    let url = match admin_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => unreachable!("a PostgreSQL URL has a path"),
    };
    // The pool is created lazily, inside the runtime.
    let postgres = {
        let _context = runtime.enter();
        Postgres::new(&url).unwrap()
    };
    runtime.block_on(postgres.migrate()).unwrap();

    // Each batch books 1,000 half-hour slots on 10 resources of its own, sent
    // in the same call: a steady state where every resource holds about 100
    // reservations. (With the same resources in every batch, the figure
    // grows with the rows already stored: see BENCHMARKS.md, sync.)
    let at = jiff::Timestamp::now();
    let resource_doc = |id: Uuid| {
        json!({"id": id, "name": "sync bench", "capacity": 1_000_000, "timezone": "UTC",
               "slot_minutes": 30, "opening_hours": null, "version": 1,
               "created_at": at.as_microsecond(), "updated_at": at.as_microsecond()})
    };
    let mut group = c.benchmark_group("sync");
    group.sample_size(20).throughput(Throughput::Elements(1000));
    group.bench_function("batch of 1000 new reservations into PostgreSQL", |b| {
        b.to_async(&runtime).iter_batched(
            || {
                let resources: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
                let docs = (0..1000i64)
                    .map(|i| {
                        let start =
                            jiff::Timestamp::from_second(EPOCH_2040 + (i / 10) * 1800).unwrap();
                        let reservation = Reservation {
                            id: Uuid::now_v7(),
                            resource_id: resources[(i % 10) as usize],
                            user_id: "bench".into(),
                            starts_at: start,
                            ends_at: start + jiff::SignedDuration::from_mins(30),
                            party_size: 1,
                            status: Status::Confirmed,
                            version: 1,
                            sync_state: SyncState::Pending,
                            notes: None,
                            metadata: None,
                            created_at: at,
                            updated_at: at,
                        };
                        reservoir::sync::payload::reservation_row(&reservation, "")
                    })
                    .collect::<Vec<_>>();
                let resources: Vec<Value> = resources.into_iter().map(resource_doc).collect();
                (resources, docs)
            },
            |(resources, docs)| {
                let postgres = postgres.clone();
                async move {
                    let applied = postgres
                        .apply_batch("bench-node", &resources, &docs)
                        .await
                        .unwrap();
                    assert_eq!(applied.len(), 1000);
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();

    runtime.block_on(postgres.pool().close());
    if let Err(error) = runtime.block_on(
        admin.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str()),
    ) {
        eprintln!("notice: could not drop the bench database {name}: {error}");
    }
}

criterion_group!(api, router_benches, writer_benches, sync_benches);
criterion_main!(api);
