//! The two-level read cache: moka in memory (L1) in front of Redis (L2).
//!
//! Plain cases run against the shared Redis (see [`shared_redis`]); the
//! failure cases (Redis killed, Redis paused with `SIGSTOP`) each run their
//! own [`ThrowawayRedis`]. Counters come from `GET /v1/cache/stats`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::join_all;
use serde_json::{Value, json};

use crate::{
    helpers::{
        DAY, Reply, TestApp, at, id_of, send, spawn_app, spawn_app_on, spawn_app_on_with,
        spawn_app_with,
    },
    support::redis::{ThrowawayRedis, query, shared_redis},
};

/// The Redis timeout for the plain cases that assert an L2 hit: the default
/// 25 ms includes making the connection, which a loaded machine can exceed
/// once; these tests are about the cache's logic, not about the timeout.
const PATIENT_REDIS_TIMEOUT_MS: u64 = 500;

/// `GET /v1/cache/stats` as admin.
pub(crate) async fn stats(app: &TestApp) -> Value {
    app.get("/v1/cache/stats", &app.admin_token)
        .await
        .assert_status(200)
        .clone()
}

/// One counter of a stats document, e.g. `count(&s, "l1", "hits")`.
#[track_caller]
pub(crate) fn count(stats: &Value, layer: &str, field: &str) -> u64 {
    stats[layer][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {layer}.{field} counter in {stats}"))
}

/// `after - before` for one counter.
#[track_caller]
pub(crate) fn delta(before: &Value, after: &Value, layer: &str, field: &str) -> u64 {
    count(after, layer, field) - count(before, layer, field)
}

fn breaker(stats: &Value) -> &str {
    stats["l2"]["breaker"].as_str().unwrap_or("<missing>")
}

/// Retries `attempt` every 25 ms until it succeeds; panics with the last
/// error once `within` has passed.
async fn eventually<T>(
    what: &str,
    within: Duration,
    mut attempt: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(last) if started.elapsed() >= within => {
                panic!("{what}: not within {within:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

#[track_caller]
fn version_of(reply: &Reply) -> i64 {
    reply.body["version"]
        .as_i64()
        .unwrap_or_else(|| panic!("no version in {}", reply.text))
}

/// A resource of capacity 10 and one reservation on it, booked by the admin
/// on [`DAY`] 10:00-11:00; returns `(resource id, reservation)`.
async fn resource_and_reservation(app: &TestApp) -> (String, Value) {
    let resource = app.new_resource(10).await;
    let reservation = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    (resource, reservation)
}

/// `GET /v1/reservations/{id}` until it is 200 (within `within`).
async fn found_on(app: &TestApp, id: &str, within: Duration) -> Reply {
    eventually(&format!("GET reservation {id}"), within, async || {
        let reply = app.get_reservation(&app.admin_token, id).await;
        if reply.status == 200 {
            Ok(reply)
        } else {
            Err(format!("{} {}", reply.status, reply.text))
        }
    })
    .await
}

/// `GET /v1/reservations/{id}` until it shows `version` (within `within`).
async fn version_on(app: &TestApp, id: &str, version: i64, within: Duration) -> Reply {
    eventually(
        &format!("GET reservation {id} at version {version}"),
        within,
        async || {
            let reply = app.get_reservation(&app.admin_token, id).await;
            if reply.status == 200 && reply.body["version"] == version {
                Ok(reply)
            } else {
                Err(format!("{} {}", reply.status, reply.text))
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_repeated_read_is_an_l1_hit_and_a_write_shows_at_once() {
    let app = spawn_app().await;
    let (_, created) = resource_and_reservation(&app).await;
    let id = id_of(&created);
    // A restart on the same data directory starts with an empty L1.
    let app = spawn_app_on(app.stop().await).await;

    let before = stats(&app).await;
    let first = app.get_reservation(&app.admin_token, &id).await;
    assert_eq!(first.assert_status(200), &created);
    let after_first = stats(&app).await;
    assert_eq!(
        delta(&before, &after_first, "l1", "misses"),
        1,
        "the first read misses: {after_first}"
    );
    assert_eq!(delta(&before, &after_first, "l1", "hits"), 0);

    const REPEATS: u64 = 5;
    for _ in 0..REPEATS {
        let again = app.get_reservation(&app.admin_token, &id).await;
        assert_eq!(again.assert_status(200), &created);
        assert_eq!(again.etag(), Some("\"1\""));
    }
    let after_repeats = stats(&app).await;
    assert_eq!(
        delta(&after_first, &after_repeats, "l1", "hits"),
        REPEATS,
        "every repeated read is an L1 hit: {after_repeats}"
    );
    assert_eq!(delta(&after_first, &after_repeats, "l1", "misses"), 0);

    let patched = app
        .patch_reservation(&app.admin_token, &id, &json!({"notes": "changed"}))
        .await;
    assert_eq!(patched.assert_status(200)["version"], 2);
    let read = app.get_reservation(&app.admin_token, &id).await;
    assert_eq!(read.assert_status(200), &patched.body);
    assert_eq!(read.body["notes"], "changed");
    assert_eq!(read.etag(), Some("\"2\""));
    let after_write = stats(&app).await;
    assert_eq!(
        delta(&after_repeats, &after_write, "l1", "hits"),
        1,
        "the write put the new version into L1: {after_write}"
    );
    assert_eq!(delta(&after_repeats, &after_write, "l1", "misses"), 0);
}

/// A create's row is not put into L1 by the writer when its id was made by
/// the service (nothing older of it can be cached anywhere): the first read
/// loads it, later ones hit. A client-chosen id may already be cached from
/// another node's copy, so that row is put into L1 at its commit.
#[tokio::test]
async fn a_created_row_enters_l1_on_its_first_read_unless_its_id_was_the_clients() {
    let app = spawn_app().await;
    let (resource, created) = resource_and_reservation(&app).await;
    let id = id_of(&created);

    let before = stats(&app).await;
    let first = app.get_reservation(&app.admin_token, &id).await;
    assert_eq!(first.assert_status(200), &created);
    assert_eq!(first.etag(), Some("\"1\""));
    let after_first = stats(&app).await;
    assert_eq!(
        delta(&before, &after_first, "l1", "misses"),
        1,
        "{after_first}"
    );
    let again = app.get_reservation(&app.admin_token, &id).await;
    assert_eq!(again.assert_status(200), &created);
    let after_again = stats(&app).await;
    assert_eq!(
        delta(&after_first, &after_again, "l1", "hits"),
        1,
        "{after_again}"
    );

    let client_id = "0190f1f2-0000-7000-8000-00000000c11e";
    let body = json!({"id": client_id, "resource_id": resource,
                      "starts_at": at("12:00"), "ends_at": at("13:00")});
    let booked = app.create_reservation(&app.admin_token, &body).await;
    let booked = booked.assert_status(201).clone();
    let read = app.get_reservation(&app.admin_token, client_id).await;
    assert_eq!(read.assert_status(200), &booked);
    let after_client = stats(&app).await;
    assert_eq!(
        delta(&after_again, &after_client, "l1", "hits"),
        1,
        "{after_client}"
    );
    assert_eq!(
        delta(&after_again, &after_client, "l1", "misses"),
        0,
        "{after_client}"
    );
}

#[tokio::test]
async fn stats_are_admin_only_and_report_whether_redis_is_used() {
    let app = spawn_app().await;
    let user = app.create_user_key("cache-user").await;
    app.get("/v1/cache/stats", &user)
        .await
        .assert_problem(403, "forbidden");
    let plain = stats(&app).await;
    assert_eq!(plain["l2"]["enabled"], false, "{plain}");
    assert_eq!(breaker(&plain), "disabled");
    let health = app.get("/health/detailed", &app.admin_token).await;
    assert_eq!(
        health.assert_status(200)["checks"]["redis"]["status"],
        "disabled",
        "{}",
        health.text
    );

    let url = shared_redis().await;
    let app = spawn_app_with(|c| c.redis_url = Some(url)).await;
    let with_redis = stats(&app).await;
    assert_eq!(with_redis["l2"]["enabled"], true, "{with_redis}");
    assert_eq!(breaker(&with_redis), "closed");
    let health = app.get("/health/detailed", &app.admin_token).await;
    let health = health.assert_status(200);
    assert_eq!(health["checks"]["redis"]["status"], "ok", "{health}");
    assert_eq!(health["status"], "ok", "{health}");
}

#[tokio::test]
async fn stats_count_what_l1_holds() {
    let app = spawn_app().await;
    let (_, created) = resource_and_reservation(&app).await;
    let id = id_of(&created);
    let app = spawn_app_on(app.stop().await).await;
    assert_eq!(count(&stats(&app).await, "l1", "entries"), 0);
    for _ in 0..2 {
        app.get_reservation(&app.admin_token, &id)
            .await
            .assert_status(200);
    }
    // The second read was a hit: L1 holds the reservation (and nothing
    // else is read or written meanwhile).
    eventually(
        "l1.entries counts the cached reservation",
        Duration::from_secs(1),
        async || {
            let stats = stats(&app).await;
            if count(&stats, "l1", "hits") >= 1 && count(&stats, "l1", "entries") >= 1 {
                Ok(())
            } else {
                Err(format!("{stats}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn every_availability_lookup_counts_as_a_hit_or_a_miss() {
    let app = spawn_app().await;
    let resource = app.new_resource(3).await;
    let before = stats(&app).await;
    availability(&app, &resource).await;
    let after = stats(&app).await;
    // The answer was not cached: one L1 miss (and one L1 hit for the
    // resource itself, which its creation put into L1).
    assert_eq!(
        delta(&before, &after, "l1", "misses"),
        1,
        "the first availability request is a miss: before {before}, after {after}"
    );
    availability(&app, &resource).await;
    let again = stats(&app).await;
    assert_eq!(
        (
            delta(&after, &again, "l1", "hits"),
            delta(&after, &again, "l1", "misses")
        ),
        (1, 0),
        "the second is a hit: {again}"
    );
}

/// One task PATCHes a reservation `writes - 1` times in a row while
/// `readers` tasks GET it without pause: a GET sent after a PATCH was
/// acknowledged with version `v` must show a version `>= v` (and the notes
/// written with that version). The writer waits for a few reads after each
/// acknowledgement, so every version is checked even on a loaded machine.
async fn reads_never_go_behind_an_acknowledged_write(app: &TestApp, writes: i64, readers: usize) {
    let (_, created) = resource_and_reservation(app).await;
    let id = id_of(&created);
    let url = app.url(&format!("/v1/reservations/{id}"));
    let acknowledged = Arc::new(AtomicI64::new(1));
    let checked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));

    let tasks: Vec<_> = (0..readers)
        .map(|_| {
            let (client, token) = (app.client.clone(), app.admin_token.clone());
            let (url, stats_url) = (url.clone(), app.url("/v1/cache/stats"));
            let (acknowledged, checked, done) =
                (acknowledged.clone(), checked.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::SeqCst) {
                    let floor = acknowledged.load(Ordering::SeqCst);
                    let reply = send(client.get(&url).bearer_auth(&token)).await;
                    let version = reply.body["version"].as_i64().unwrap_or(-1);
                    let notes = if version == 1 {
                        Value::Null
                    } else {
                        json!(format!("write {version}"))
                    };
                    let problem = if reply.status != 200 {
                        Some(format!("GET answered {}", reply.status))
                    } else if version < floor {
                        Some(format!(
                            "a GET sent after version {floor} was acknowledged returned \
                             version {version}"
                        ))
                    } else if reply.body["notes"] != notes {
                        Some(format!("version {version} with other notes"))
                    } else if reply.etag() != Some(format!("\"{version}\"").as_str()) {
                        Some(format!("ETag {:?} for version {version}", reply.etag()))
                    } else {
                        None
                    };
                    if let Some(problem) = problem {
                        let stats = send(client.get(&stats_url).bearer_auth(&token)).await;
                        return Err(format!(
                            "{problem}: {}; cache stats then: {}",
                            reply.text, stats.text
                        ));
                    }
                    checked.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            })
        })
        .collect();

    for expected in 2..=writes {
        let reply = app
            .patch_reservation(
                &app.admin_token,
                &id,
                &json!({"notes": format!("write {expected}")}),
            )
            .await;
        assert_eq!(reply.assert_status(200)["version"], expected);
        acknowledged.store(expected, Ordering::SeqCst);
        // Let the readers check a few GETs sent after this acknowledgement
        // (a reader that found a violation has stopped: go on).
        let target = checked.load(Ordering::SeqCst) + 2 * readers as u64;
        let deadline = Instant::now() + Duration::from_secs(10);
        while checked.load(Ordering::SeqCst) < target
            && Instant::now() < deadline
            && !tasks.iter().any(|r| r.is_finished())
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    done.store(true, Ordering::SeqCst);

    for reader in join_all(tasks).await {
        if let Err(violation) = reader.expect("reader task panicked") {
            panic!("{violation}");
        }
    }
    let reads = checked.load(Ordering::SeqCst);
    assert!(
        reads >= writes as u64,
        "the readers barely ran ({reads} reads); the test proves nothing"
    );
    let last = app.get_reservation(&app.admin_token, &id).await;
    assert_eq!(last.assert_status(200)["version"], writes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_after_write_holds_under_concurrency_without_redis() {
    let app = spawn_app().await;
    reads_never_go_behind_an_acknowledged_write(&app, 40, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_after_write_holds_under_concurrency_when_every_read_reloads() {
    // L1 entries live 1 ms: nearly every read loads from SQLite, racing the
    // commits.
    let app = spawn_app_with(|c| c.cache_ttl_ms = 1).await;
    reads_never_go_behind_an_acknowledged_write(&app, 100, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_after_write_holds_under_concurrency_with_redis() {
    let url = shared_redis().await;
    let app = spawn_app_with(|c| c.redis_url = Some(url)).await;
    reads_never_go_behind_an_acknowledged_write(&app, 40, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_after_write_holds_under_concurrency_when_every_read_goes_to_redis() {
    // L1 entries live 1 ms: nearly every read goes to L2, which the
    // background publisher updates after the write was acknowledged.
    let url = shared_redis().await;
    let app = spawn_app_with(|c| {
        c.redis_url = Some(url);
        c.cache_ttl_ms = 1;
        c.redis_timeout_ms = PATIENT_REDIS_TIMEOUT_MS;
    })
    .await;
    // Many writes and readers: the race this looks for needs a read to
    // start loading in the instant between a commit and its acknowledgement.
    reads_never_go_behind_an_acknowledged_write(&app, 300, 8).await;
    let stats = stats(&app).await;
    assert!(
        count(&stats, "l2", "hits") > 0,
        "the reads went to Redis: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_finds_a_reservation_through_redis_and_sees_its_update() {
    let url = shared_redis().await;
    let configure = |c: &mut reservoir::Config| {
        c.redis_url = Some(url.clone());
        c.redis_timeout_ms = PATIENT_REDIS_TIMEOUT_MS;
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_with(configure).await;
    let (resource, created) = resource_and_reservation(&a).await;
    let id = id_of(&created);

    // B's SQLite has never seen either: it finds them through L2 (or the
    // changes A published into B's L1).
    let before = stats(&b).await;
    let found = found_on(&b, &id, Duration::from_secs(2)).await;
    assert_eq!(found.body, created);
    assert_eq!(found.etag(), Some("\"1\""));
    let after = stats(&b).await;
    assert!(
        delta(&before, &after, "l2", "hits") + delta(&before, &after, "l1", "hits") >= 1,
        "B served it from a cache layer: {after}"
    );
    let resource_on_a = a
        .get(&format!("/v1/resources/{resource}"), &a.admin_token)
        .await;
    let resource_on_b = b
        .get(&format!("/v1/resources/{resource}"), &b.admin_token)
        .await;
    assert_eq!(
        resource_on_b.assert_status(200),
        resource_on_a.assert_status(200)
    );

    // An update on A reaches B's next read about 100 ms later.
    let patched = a
        .patch_reservation(&a.admin_token, &id, &json!({"notes": "updated on A"}))
        .await;
    assert_eq!(patched.assert_status(200)["version"], 2);
    let acknowledged = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = version_on(&b, &id, 2, Duration::from_millis(900)).await;
    eprintln!(
        "B saw the update {:?} after A acknowledged it",
        acknowledged.elapsed()
    );
    assert_eq!(seen.body, patched.body);
    assert_eq!(seen.etag(), Some("\"2\""));
    // And B keeps showing it.
    let again = b.get_reservation(&b.admin_token, &id).await;
    assert_eq!(again.assert_status(200)["version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_one_key_all_get_the_same_answer() {
    let app = spawn_app().await;
    let (_, created) = resource_and_reservation(&app).await;
    let id = id_of(&created);
    let app = spawn_app_on(app.stop().await).await;

    const READS: u64 = 50;
    let before = stats(&app).await;
    let replies = join_all((0..READS).map(|_| app.get_reservation(&app.admin_token, &id))).await;
    for reply in &replies {
        assert_eq!(reply.assert_status(200), &created);
        assert_eq!(reply.etag(), Some("\"1\""));
    }
    let after = stats(&app).await;
    let misses = delta(&before, &after, "l1", "misses");
    let hits = delta(&before, &after, "l1", "hits");
    assert!(
        (1..=READS).contains(&misses),
        "{misses} misses for {READS} reads: {after}"
    );
    assert_eq!(
        hits + misses,
        READS,
        "every read is exactly one hit or one miss: {after}"
    );
    eprintln!("{READS} concurrent reads of a cold key: {misses} misses, {hits} hits");
    // The key is cached now.
    let later = app.get_reservation(&app.admin_token, &id).await;
    assert_eq!(later.assert_status(200), &created);
    let last = stats(&app).await;
    assert_eq!(delta(&after, &last, "l1", "hits"), 1);
    assert_eq!(delta(&after, &last, "l1", "misses"), 0);
}

#[tokio::test]
async fn keys_in_redis_are_namespaced_versioned_and_expire() {
    let url = shared_redis().await;
    const TTL_MS: i64 = 120_000;
    let configure = |c: &mut reservoir::Config| {
        c.redis_url = Some(url.clone());
        c.redis_ttl_ms = TTL_MS as u64;
        c.redis_timeout_ms = PATIENT_REDIS_TIMEOUT_MS;
    };
    let app = spawn_app_with(configure).await;
    let (resource, created) = resource_and_reservation(&app).await;
    let id = id_of(&created);
    app.get_reservation(&app.admin_token, &id)
        .await
        .assert_status(200);

    for (key, entity) in [
        (format!("reservoir:v1:reservation:{id}"), &created),
        (
            format!("reservoir:v1:resource:{resource}"),
            &app.get(&format!("/v1/resources/{resource}"), &app.admin_token)
                .await
                .assert_status(200)
                .clone(),
        ),
    ] {
        let stored = eventually(
            &format!("{key} in Redis"),
            Duration::from_secs(5),
            async || match query::<Option<String>>(&url, &["GET", &key]).await {
                Some(text) => Ok(text),
                None => Err("no such key".to_owned()),
            },
        )
        .await;
        let stored: Value = serde_json::from_str(&stored)
            .unwrap_or_else(|e| panic!("{key} does not hold JSON ({e}): {stored}"));
        assert_eq!(stored["id"], entity["id"], "{key}: {stored}");
        assert_eq!(stored["version"], entity["version"], "{key}: {stored}");
        let ttl: i64 = query(&url, &["PTTL", &key]).await;
        assert!(
            0 < ttl && ttl <= TTL_MS,
            "{key} expires in {ttl} ms; expected within the configured {TTL_MS} ms"
        );
    }

    // A restarted node (empty L1) reads it from Redis.
    let app = spawn_app_on_with(app.stop().await, configure).await;
    let before = stats(&app).await;
    let read = app.get_reservation(&app.admin_token, &id).await;
    assert_eq!(read.assert_status(200), &created);
    let after = stats(&app).await;
    assert_eq!(delta(&before, &after, "l1", "misses"), 1, "{after}");
    assert_eq!(
        delta(&before, &after, "l2", "hits"),
        1,
        "served from Redis: {after}"
    );
}

#[tokio::test]
async fn metrics_expose_cache_counters_and_the_breaker_state() {
    let url = shared_redis().await;
    let app = spawn_app_with(|c| c.redis_url = Some(url)).await;
    let (_, created) = resource_and_reservation(&app).await;
    let id = id_of(&created);
    for _ in 0..2 {
        app.get_reservation(&app.admin_token, &id)
            .await
            .assert_status(200);
    }
    let metrics = app.get("/metrics", &app.admin_token).await;
    metrics.assert_status(200);
    let lines: Vec<&str> = metrics.text.lines().collect();
    let sample = |prefix: &str| -> Option<f64> {
        lines
            .iter()
            .find_map(|line| line.strip_prefix(prefix)?.trim().parse::<f64>().ok())
    };
    let hits = sample("reservoir_cache_hits_total{layer=\"l1\"} ").unwrap_or_else(|| {
        panic!(
            "no reservoir_cache_hits_total{{layer=\"l1\"}} in /metrics:\n{}",
            metrics.text
        )
    });
    assert!(hits >= 2.0, "{hits} L1 hits");
    assert_eq!(
        sample("reservoir_cache_breaker_state{state=\"closed\"} "),
        Some(1.0),
        "the breaker is closed:\n{}",
        metrics.text
    );
    assert_eq!(
        sample("reservoir_cache_breaker_state{state=\"open\"} "),
        Some(0.0),
        "{}",
        metrics.text
    );
}

/// `[from, to)` = 09:00-12:00 on [`DAY`], one person.
fn window() -> Vec<(&'static str, String)> {
    vec![
        ("from", at("09:00")),
        ("to", at("12:00")),
        ("party_size", "1".to_owned()),
    ]
}

async fn availability(app: &TestApp, resource: &str) -> Reply {
    let query = window();
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reply = app.availability(resource, &query).await;
    reply.assert_status(200);
    reply
}

/// `remaining` of the slot starting at `hm` on [`DAY`].
#[track_caller]
fn remaining_at(reply: &Reply, hm: &str) -> i64 {
    let start = at(hm);
    reply.body["slots"]
        .as_array()
        .and_then(|slots| slots.iter().find(|s| s["starts_at"] == start.as_str()))
        .and_then(|slot| slot["remaining"].as_i64())
        .unwrap_or_else(|| panic!("no slot at {start}: {}", reply.text))
}

/// Asks for the window again and checks it was served from L1, unchanged.
async fn assert_cached_answer(app: &TestApp, resource: &str, expected: &Reply, after: &str) {
    let before = stats(app).await;
    let reply = availability(app, resource).await;
    let now = stats(app).await;
    assert_eq!(
        (
            delta(&before, &now, "l1", "hits"),
            delta(&before, &now, "l1", "misses")
        ),
        (1, 0),
        "after {after}, the cached answer is served: {now}"
    );
    assert_eq!(reply.text, expected.text, "after {after}");
}

/// Asks for the window again and checks it was computed anew.
async fn assert_fresh_answer(app: &TestApp, resource: &str, after: &str) -> Reply {
    let before = stats(app).await;
    let reply = availability(app, resource).await;
    let now = stats(app).await;
    assert!(
        delta(&before, &now, "l1", "misses") >= 1,
        "after {after}, the answer is computed again: {now}"
    );
    reply
}

#[tokio::test]
async fn availability_answers_are_invalidated_by_overlapping_bookings_only() {
    let app = spawn_app().await;
    let resource = app.new_resource(3).await;
    let other = app.new_resource(3).await;

    let first = availability(&app, &resource).await;
    assert_eq!(remaining_at(&first, "10:00"), 3);
    assert_eq!(first.body["slots"].as_array().map(Vec::len), Some(6));
    assert_cached_answer(&app, &resource, &first, "a first identical request").await;

    // An overlapping booking: the next answer is recomputed and shows it.
    let booked = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    let second = assert_fresh_answer(&app, &resource, "an overlapping booking").await;
    assert_eq!(remaining_at(&second, "10:00"), 2, "{}", second.text);
    assert_eq!(remaining_at(&second, "10:30"), 2, "{}", second.text);
    assert_eq!(remaining_at(&second, "09:00"), 3, "{}", second.text);
    assert_cached_answer(&app, &resource, &second, "recomputing").await;

    // Bookings that cannot change this answer leave it cached.
    app.book(&app.admin_token, &other, &at("10:00"), &at("11:00"))
        .await;
    assert_cached_answer(&app, &resource, &second, "a booking on another resource").await;
    let next_day = "2030-01-08";
    assert_ne!(next_day, DAY);
    app.book(
        &app.admin_token,
        &resource,
        &format!("{next_day}T10:00:00Z"),
        &format!("{next_day}T11:00:00Z"),
    )
    .await;
    assert_cached_answer(&app, &resource, &second, "a booking on another day").await;
    app.book(&app.admin_token, &resource, &at("12:00"), &at("13:00"))
        .await;
    assert_cached_answer(&app, &resource, &second, "a booking right after the window").await;

    // A booking overlapping only the window's edge invalidates it.
    app.book(&app.admin_token, &resource, &at("11:30"), &at("12:30"))
        .await;
    let third = assert_fresh_answer(&app, &resource, "a booking over the window's end").await;
    assert_eq!(remaining_at(&third, "11:30"), 2, "{}", third.text);
    assert_eq!(remaining_at(&third, "10:00"), 2, "{}", third.text);

    // So do moving and cancelling an overlapping reservation.
    let id = id_of(&booked);
    app.patch_reservation(
        &app.admin_token,
        &id,
        &json!({"starts_at": at("09:00"), "ends_at": at("09:30")}),
    )
    .await
    .assert_status(200);
    let moved = assert_fresh_answer(&app, &resource, "moving a reservation").await;
    assert_eq!(remaining_at(&moved, "09:00"), 2, "{}", moved.text);
    assert_eq!(remaining_at(&moved, "10:00"), 3, "{}", moved.text);
    app.cancel_reservation(&app.admin_token, &id)
        .await
        .assert_status(200);
    let cancelled = assert_fresh_answer(&app, &resource, "a cancellation").await;
    assert_eq!(remaining_at(&cancelled, "09:00"), 3, "{}", cancelled.text);
    assert_cached_answer(&app, &resource, &cancelled, "recomputing").await;
}

/// Health and cache stats of one node.
async fn redis_health(app: &TestApp) -> (Value, Value) {
    let health = app.get("/health/detailed", &app.admin_token).await;
    (health.assert_status(200).clone(), stats(app).await)
}

/// Polls until the node's breaker is closed and its health check reaches
/// Redis (each health check is also a probe once the cool-down is over).
async fn wait_until_redis_is_used_again(app: &TestApp, within: Duration) {
    eventually("the breaker closes again", within, async || {
        let (health, stats) = redis_health(app).await;
        if breaker(&stats) == "closed"
            && health["checks"]["redis"]["status"] == "ok"
            && health["status"] == "ok"
        {
            Ok(())
        } else {
            Err(format!("health {health}; stats {stats}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_succeed_while_redis_is_killed_and_the_cache_recovers_when_it_returns() {
    let mut redis = ThrowawayRedis::start().await;
    let url = redis.url();
    let configure = |c: &mut reservoir::Config| {
        c.redis_url = Some(url.clone());
        // Failed L2 writes make a node distrust L2 for this long.
        c.redis_ttl_ms = 2_000;
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_with(configure).await;
    let resource = a.new_resource(50).await;
    let first = a
        .book(&a.admin_token, &resource, &at("08:00"), &at("09:00"))
        .await;
    let first_id = id_of(&first);
    found_on(&b, &first_id, Duration::from_secs(2)).await;

    redis.stop();
    // Every request still succeeds, on both nodes.
    let b_resource = b.new_resource(50).await;
    let mut version = 1;
    for i in 0..6 {
        let hour = format!("{:02}:00", 9 + i);
        let end = format!("{:02}:30", 9 + i);
        let booked = a
            .book(&a.admin_token, &resource, &at(&hour), &at(&end))
            .await;
        let id = id_of(&booked);
        a.get_reservation(&a.admin_token, &id)
            .await
            .assert_status(200);
        let patched = a
            .patch_reservation(
                &a.admin_token,
                &first_id,
                &json!({"notes": format!("outage {i}")}),
            )
            .await;
        version = version_of(&patched);
        a.get_reservation(&a.admin_token, &first_id)
            .await
            .assert_status(200);
        let own = b
            .book(&b.admin_token, &b_resource, &at(&hour), &at(&end))
            .await;
        b.get_reservation(&b.admin_token, &id_of(&own))
            .await
            .assert_status(200);
    }
    for node in [&a, &b] {
        eventually(
            "health reports Redis unreachable",
            Duration::from_secs(5),
            async || {
                let (health, stats) = redis_health(node).await;
                if health["checks"]["redis"]["status"] == "unreachable"
                    && health["status"] == "degraded"
                    && count(&stats, "l2", "errors") > 0
                {
                    Ok(())
                } else {
                    Err(format!("health {health}; stats {stats}"))
                }
            },
        )
        .await;
    }
    let during = stats(&a).await;
    assert_ne!(breaker(&during), "closed", "{during}");

    redis.start_again().await;
    for node in [&a, &b] {
        wait_until_redis_is_used_again(node, Duration::from_secs(20)).await;
    }
    // Both nodes subscribe to the changes again.
    eventually(
        "both nodes subscribed again",
        Duration::from_secs(10),
        async || {
            let (_, subscribers): (String, i64) =
                query(&url, &["PUBSUB", "NUMSUB", "reservoir:v1:changes"]).await;
            if subscribers >= 2 {
                Ok(())
            } else {
                Err(format!("{subscribers} subscribers"))
            }
        },
    )
    .await;

    // Updates on A reach B again: the first while B holds no copy (it
    // dropped its L1 when it resubscribed), the second while B holds the
    // first in L1, which only the published change can replace.
    for round in 0..2 {
        let patched = a
            .patch_reservation(
                &a.admin_token,
                &first_id,
                &json!({"notes": format!("after the restart {round}")}),
            )
            .await;
        let new_version = version_of(&patched);
        assert!(new_version > version);
        version = new_version;
        let seen = version_on(&b, &first_id, version, Duration::from_secs(5)).await;
        assert_eq!(seen.body, patched.body);
    }
    let created = a
        .book(&a.admin_token, &resource, &at("16:00"), &at("17:00"))
        .await;
    let created_id = id_of(&created);
    assert_eq!(
        found_on(&b, &created_id, Duration::from_secs(5)).await.body,
        created
    );

    // L2 hits resume: a new node that never saw the reservation finds it in
    // Redis.
    let key = format!("reservoir:v1:reservation:{created_id}");
    eventually(
        "the new reservation in Redis",
        Duration::from_secs(5),
        async || {
            let stored: Option<String> = query(&url, &["GET", &key]).await;
            stored.map(|_| ()).ok_or_else(|| "no such key".to_owned())
        },
    )
    .await;
    let c = spawn_app_with(|c| {
        c.redis_url = Some(url.clone());
        c.redis_timeout_ms = PATIENT_REDIS_TIMEOUT_MS;
    })
    .await;
    let before = stats(&c).await;
    let read = c.get_reservation(&c.admin_token, &created_id).await;
    assert_eq!(read.assert_status(200), &created);
    let after = stats(&c).await;
    assert_eq!(delta(&before, &after, "l2", "hits"), 1, "{after}");
}

/// The median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Sends `n` GETs round-robin over `ids`, each expected 200; returns their
/// latencies.
async fn timed_reads(app: &TestApp, ids: &[String], n: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let id = &ids[i % ids.len()];
        let started = Instant::now();
        let reply = app.get_reservation(&app.admin_token, id).await;
        latencies.push(started.elapsed());
        reply.assert_status(200);
    }
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_paused_requests_succeed_and_stop_paying_its_timeout_once_the_breaker_opens() {
    let mut redis = ThrowawayRedis::start().await;
    let url = redis.url();
    let app = spawn_app_with(|c| {
        c.redis_url = Some(url.clone());
        // L1 entries live 1 ms, so every read asks Redis (until the breaker
        // opens).
        c.cache_ttl_ms = 1;
        // Failed L2 writes make a node distrust L2 for this long.
        c.redis_ttl_ms = 2_000;
    })
    .await;
    let resource = app.new_resource(50).await;
    let mut ids = Vec::new();
    for hour in ["08:00", "09:00", "10:00", "11:00", "12:00"] {
        let end = hour.replace(":00", ":30");
        ids.push(id_of(
            &app.book(&app.admin_token, &resource, &at(hour), &at(&end))
                .await,
        ));
    }
    // Healthy: reads are served by L2.
    let healthy = median(timed_reads(&app, &ids, 30).await);
    let warm = stats(&app).await;
    assert!(count(&warm, "l2", "hits") > 0, "{warm}");

    redis.pause();
    // Every read succeeds; the first ones pay the timeout until the breaker
    // opens.
    let opened = eventually("the breaker opens", Duration::from_secs(10), async || {
        timed_reads(&app, &ids, 1).await;
        let stats = stats(&app).await;
        if breaker(&stats) == "open" {
            Ok(stats)
        } else {
            Err(format!("{stats}"))
        }
    })
    .await;
    assert!(count(&opened, "l2", "errors") >= 3, "{opened}");

    // With the breaker open, reads skip Redis: no timeout to pay.
    let paused = timed_reads(&app, &ids, 40).await;
    let slowest = *paused.iter().max().unwrap();
    let paused = median(paused);
    let skipping = stats(&app).await;
    eprintln!(
        "median GET latency: {healthy:?} with Redis answering, {paused:?} with Redis paused \
         and the breaker open (slowest {slowest:?})"
    );
    assert!(
        delta(&opened, &skipping, "l2", "skipped") > 0,
        "reads skipped Redis: {skipping}"
    );
    assert!(
        paused < Duration::from_millis(20),
        "median GET latency {paused:?} with the breaker open; the Redis timeout is 25 ms"
    );

    // Writes and the health check still answer.
    let booked = app
        .book(&app.admin_token, &resource, &at("14:00"), &at("15:00"))
        .await;
    app.patch_reservation(
        &app.admin_token,
        &id_of(&booked),
        &json!({"notes": "paused"}),
    )
    .await
    .assert_status(200);
    ids.push(id_of(&booked));
    let health = eventually(
        "health reports Redis unreachable",
        Duration::from_secs(5),
        async || {
            let (health, _) = redis_health(&app).await;
            if health["checks"]["redis"]["status"] == "unreachable"
                && health["status"] == "degraded"
            {
                Ok(health)
            } else {
                Err(format!("{health}"))
            }
        },
    )
    .await;
    assert!(health["checks"]["redis"]["error"].is_string(), "{health}");

    redis.resume();
    wait_until_redis_is_used_again(&app, Duration::from_secs(20)).await;
    let recovered = stats(&app).await;
    // L2 serves reads again (once the distrust after the failed writes is
    // over).
    eventually("L2 hits resume", Duration::from_secs(15), async || {
        timed_reads(&app, &ids, ids.len()).await;
        let now = stats(&app).await;
        if delta(&recovered, &now, "l2", "hits") > 0 {
            Ok(())
        } else {
            Err(format!("{now}"))
        }
    })
    .await;
}

/// L1 is bounded in bytes: with a budget of 64 KiB it keeps some dozens of
/// reservations however many are written through it, and the ones it had
/// to let go are still read (from SQLite) correctly.
#[tokio::test]
async fn l1_is_bounded_in_bytes() {
    let app = spawn_app_with(|c| c.cache_max_bytes = 64 * 1024).await;
    let resource = app.new_resource(1000).await;
    // Notes make each entry about 1.5 KB of JSON: 300 of them are ~450 KB.
    let notes = "n".repeat(1500);
    let items: Vec<Value> = (0..300)
        .map(|i| {
            json!({
                "resource_id": resource,
                "starts_at": format!("2030-02-01T{:02}:{:02}:00Z", i / 60, i % 60),
                "ends_at": format!("2030-02-01T{:02}:{:02}:00Z", (i + 1) / 60, (i + 1) % 60),
                "notes": notes,
            })
        })
        .collect();
    let ids = app.book_all(items).await;
    let entries = count(&stats(&app).await, "l1", "entries");
    assert!(
        entries < 60,
        "300 reservations of ~1.5 KB each in a 64 KiB L1: {entries} entries held"
    );
    for id in [&ids[0], &ids[150], &ids[299]] {
        let reply = app.get_reservation(&app.admin_token, id).await;
        assert_eq!(reply.assert_status(200)["notes"], notes.as_str());
        assert_eq!(reply.etag(), Some("\"1\""));
    }
}

/// Cached availability answers are found by the raw query string: the same
/// window spelled another way is computed on its own and gives the same
/// answer, a booking invalidates every spelling, and an invalid query is a
/// 422 that counts as neither a hit nor a miss.
#[tokio::test]
async fn availability_answers_are_keyed_by_the_exact_query_string() {
    let app = spawn_app().await;
    let resource = app.new_resource(3).await;
    let (from, to) = (at("09:00"), at("12:00"));
    let reordered = [
        ("party_size", "1"),
        ("to", to.as_str()),
        ("from", from.as_str()),
    ];
    let first = availability(&app, &resource).await;
    let before = stats(&app).await;
    let other = app.availability(&resource, &reordered).await;
    other.assert_status(200);
    assert_eq!(other.text, first.text, "the same window");
    let after = stats(&app).await;
    assert_eq!(delta(&before, &after, "l1", "misses"), 1, "{after}");
    assert_cached_answer(&app, &resource, &first, "a second spelling").await;

    app.book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    let fresh = assert_fresh_answer(&app, &resource, "an overlapping booking").await;
    assert_eq!(remaining_at(&fresh, "10:00"), 2, "{}", fresh.text);
    let other = app.availability(&resource, &reordered).await;
    other.assert_status(200);
    assert_eq!(remaining_at(&other, "10:00"), 2, "{}", other.text);

    let before = stats(&app).await;
    app.availability(&resource, &[("from", "yesterday"), ("to", to.as_str())])
        .await
        .assert_problem(422, "validation");
    let after = stats(&app).await;
    assert_eq!(
        (
            delta(&before, &after, "l1", "hits"),
            delta(&before, &after, "l1", "misses")
        ),
        (0, 0),
        "{after}"
    );
}
