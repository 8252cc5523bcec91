//! Several nodes on one PostgreSQL and one Redis (the change-feed issue):
//! each node answers from its own SQLite, sends its writes up (the sync) and
//! pulls the others' down (the change feed), so a booking made on one node
//! shows on every node, the same last seat is never confirmed twice, and a
//! node that lost PostgreSQL for a while catches up on its return.
//!
//! Every test has its own database and nodes with their own data
//! directories and node ids. Waits poll with a deadline; the only timing
//! asserted is the "within 1 s", measured from the acknowledgement
//! of the write on the first node.
//!
//! The tests that assert that bound, and the watermark test, run on a
//! PostgreSQL cluster of their own ([`PrivateDatabase`]): the feed only reads
//! transactions older than the oldest one still running anywhere on the
//! server (`pg_snapshot_xmin` is cluster-wide), so another test's slow
//! `CREATE DATABASE` on the shared server (seen taking over a second under
//! load) holds back every feed of every database there, and the watermark
//! test holds a transaction open on purpose.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use serde_json::{Value, json};
use sqlx::{PgPool, Row, postgres::PgPoolOptions};
use uuid::Uuid;

use reservoir::Config;

use crate::{
    helpers::{Reply, TestApp, id_of, reservation_body, spawn_app_on_with, spawn_app_with},
    support::{
        postgres::{TestDatabase, ThrowawayPostgres, test_database, test_database_at},
        proxy::TcpProxy,
        redis::shared_redis,
    },
};

/// The bound: a write acknowledged on one node is visible on the
/// others within this.
const WITHIN: Duration = Duration::from_secs(1);
/// Upper bound of every other wait (convergence after an outage and such).
const CONVERGE: Duration = Duration::from_secs(60);
/// How often waits poll.
const POLL: Duration = Duration::from_millis(25);
/// 2030-01-01T00:00:00Z.
const BASE_SECOND: i64 = 1_893_456_000;

// ---------------------------------------------------------------------------
// Nodes

/// A node id unique to this run (the shared Redis carries every test's
/// invalidations; ids keep the nodes of different tests apart).
fn node_name(role: &str) -> String {
    format!("{role}-{}", &Uuid::new_v4().simple().to_string()[..8])
}

/// The cluster settings: PostgreSQL (sync and feed), Redis, a node id (or
/// none: generated and kept in the data directory), quick sync and feed.
fn cluster_config(config: &mut Config, postgres: &str, redis: Option<&str>, node: Option<&str>) {
    config.postgres_url = Some(postgres.to_owned());
    config.redis_url = redis.map(str::to_owned);
    config.node_id = node.map(str::to_owned);
    config.sync_interval_ms = 20;
    config.sync_backoff_min_ms = 20;
    config.sync_backoff_max_ms = 500;
    // LISTEN/NOTIFY wakes the feed at once; the timer is the fallback.
    config.feed_interval_ms = 200;
    config.shutdown_grace_ms = 5_000;
}

/// A node on `postgres` and `redis` named `node`.
async fn spawn_node(postgres: &str, redis: Option<&str>, node: &str) -> TestApp {
    spawn_app_with(|config| cluster_config(config, postgres, redis, Some(node))).await
}

/// A fresh database on a PostgreSQL cluster of the test's own (see the
/// module notes). The database is dropped before the cluster stops.
struct PrivateDatabase {
    db: TestDatabase,
    cluster: ThrowawayPostgres,
}

async fn private_database() -> PrivateDatabase {
    let cluster = ThrowawayPostgres::start().await;
    let db = test_database_at(&cluster.url()).await;
    PrivateDatabase { db, cluster }
}

/// An always-open UTC resource with hourly slots.
fn room(capacity: u32) -> Value {
    json!({
        "name": format!("room-{}", Uuid::new_v4()),
        "capacity": capacity,
        "slot_minutes": 60,
    })
}

/// The `i`-th hour after [`BASE_SECOND`], as RFC 3339.
fn hour(i: i64) -> String {
    Timestamp::from_second(BASE_SECOND + 3600 * i)
        .unwrap()
        .to_string()
}

/// Microseconds since the epoch of the `i`-th hour (how instants travel to
/// `reservoir_apply_batch`).
fn hour_micros(i: i64) -> i64 {
    (BASE_SECOND + 3600 * i) * 1_000_000
}

/// A booking of the `i`-th hour.
fn in_hour(resource: &str, i: i64) -> Value {
    reservation_body(resource, &hour(i), &hour(i + 1))
}

// ---------------------------------------------------------------------------
// Waiting

/// Polls `probe` until it returns `Ok`, which must come by `deadline`.
/// `Err` says what was seen instead, for the failure message.
async fn wait_until<T, F, Fut>(deadline: Instant, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let outcome = probe().await;
        // The observation counts when it was complete by the deadline.
        let now = Instant::now();
        match outcome {
            Ok(value) if now <= deadline => {
                eprintln!("{what}: after {:?}", now - started);
                return value;
            }
            Ok(_) => panic!(
                "{what}: only after {:?}, {:?} past the deadline",
                now - started,
                now - deadline
            ),
            Err(seen) if now > deadline => {
                panic!("{what}: not after {:?}; last seen: {seen}", now - started)
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

fn soon() -> Instant {
    Instant::now() + CONVERGE
}

// ---------------------------------------------------------------------------
// What a node shows

async fn sync_status(node: &TestApp) -> Value {
    node.get("/v1/sync/status", &node.admin_token)
        .await
        .assert_status(200)
        .clone()
}

/// Every reservation `node` lists (of `resource`, or all), by id. The list
/// reads the node's SQLite alone, so it shows what the feed delivered
/// (`GET /v1/reservations/{id}` of an id the node has never seen asks
/// PostgreSQL and stores the answer, which would bypass the feed). Panics on
/// an id listed twice.
async fn try_list(
    node: &TestApp,
    resource: Option<&str>,
) -> Result<BTreeMap<String, Value>, String> {
    let mut items = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "200".to_owned())];
        if let Some(resource) = resource {
            query.push(("resource_id", resource.to_owned()));
        }
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = node
            .get_query("/v1/reservations", &node.admin_token, &query)
            .await;
        if reply.status != 200 {
            return Err(format!(
                "the list answered {}: {}",
                reply.status, reply.text
            ));
        }
        for item in reply.body["items"].as_array().expect("items") {
            let id = id_of(item);
            assert!(
                items.insert(id.clone(), item.clone()).is_none(),
                "{id} listed twice by {}",
                node.address
            );
        }
        match reply.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(items),
        }
    }
}

async fn list(node: &TestApp, resource: Option<&str>) -> BTreeMap<String, Value> {
    try_list(node, resource)
        .await
        .unwrap_or_else(|e| panic!("listing on {}: {e}", node.address))
}

/// `(starts_at, remaining)` of every slot `node` offers for `resource` in
/// `[from, to)`.
async fn try_slots(
    node: &TestApp,
    resource: &str,
    from: &str,
    to: &str,
) -> Result<Vec<(String, i64)>, String> {
    let reply = node
        .availability(resource, &[("from", from), ("to", to)])
        .await;
    if reply.status != 200 {
        return Err(format!(
            "availability answered {}: {}",
            reply.status, reply.text
        ));
    }
    Ok(reply.body["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .map(|slot| {
            (
                slot["starts_at"].as_str().expect("starts_at").to_owned(),
                slot["remaining"].as_i64().expect("remaining"),
            )
        })
        .collect())
}

async fn get(node: &TestApp, id: &str) -> Reply {
    node.get_reservation(&node.admin_token, id).await
}

/// Waits until the resource is in `node`'s SQLite (it came through the
/// feed). `GET /v1/resources/{id}` is no proof: it may be answered from the
/// shared Redis cache, which the creating node filled, while a booking
/// checks the node's own SQLite; the resource list reads SQLite.
async fn wait_for_resource(node: &TestApp, resource: &str) {
    wait_until(soon(), "the resource reaches the node", || async {
        let listed = node
            .list_all("/v1/resources", &node.admin_token, &[("limit", "200")])
            .await;
        match listed.iter().any(|r| r["id"] == resource) {
            true => Ok(()),
            false => Err(format!("the node lists {listed:?}")),
        }
    })
    .await
}

/// Everything of a reservation but its node-local `sync_state`.
fn content(reservation: &Value) -> Value {
    let mut content = reservation.clone();
    content
        .as_object_mut()
        .expect("a reservation object")
        .remove("sync_state");
    content
}

/// The `sync_state` a node shows for a reservation PostgreSQL settled.
fn settled_state(status: &str) -> &'static str {
    if status == "rejected" {
        "conflict"
    } else {
        "synced"
    }
}

// ---------------------------------------------------------------------------
// What PostgreSQL holds

/// One row of the PostgreSQL `reservations` table.
#[derive(Debug, Clone, PartialEq)]
struct PgRow {
    resource_id: String,
    status: String,
    version: i64,
    reject_reason: Option<String>,
    notes: Option<String>,
    starts_at: i64,
    /// Microseconds since the epoch.
    updated_at: i64,
    origin_node: String,
}

/// The PostgreSQL reservations (of `resource`, or all), by id.
async fn pg_rows(pool: &PgPool, resource: Option<&str>) -> BTreeMap<String, PgRow> {
    let rows = sqlx::query(
        "SELECT id::text AS id, resource_id::text AS resource_id, status, version, reject_reason,
                notes, extract(epoch FROM starts_at)::bigint AS starts_at,
                (extract(epoch FROM updated_at) * 1000000)::bigint AS updated_at, origin_node
         FROM reservations WHERE $1::text IS NULL OR resource_id = $1::text::uuid",
    )
    .bind(resource)
    .fetch_all(pool)
    .await
    .expect("read the PostgreSQL reservations");
    rows.iter()
        .map(|row| {
            (
                row.get::<String, _>("id"),
                PgRow {
                    resource_id: row.get("resource_id"),
                    status: row.get("status"),
                    version: row.get("version"),
                    reject_reason: row.get("reject_reason"),
                    notes: row.get("notes"),
                    starts_at: row.get("starts_at"),
                    updated_at: row.get("updated_at"),
                    origin_node: row.get("origin_node"),
                },
            )
        })
        .collect()
}

/// `(count(*), count(DISTINCT id))` of the PostgreSQL reservations.
async fn pg_counts(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT id) FROM reservations")
        .fetch_one(pool)
        .await
        .expect("count the PostgreSQL reservations")
}

/// How far the `nodes` are from PostgreSQL's reservations of `resource`:
/// `Ok` once every node has sent everything and lists exactly PostgreSQL's
/// rows, at PostgreSQL's status and version, settled.
async fn converged(
    nodes: &[&TestApp],
    pool: &PgPool,
    resource: &str,
) -> Result<BTreeMap<String, PgRow>, String> {
    for node in nodes {
        let status = sync_status(node).await;
        if status["pending"] != 0 {
            return Err(format!(
                "{} has not sent everything: {status}",
                node.address
            ));
        }
    }
    let pg = pg_rows(pool, Some(resource)).await;
    for node in nodes {
        let listed = try_list(node, Some(resource)).await?;
        let ids: BTreeSet<&String> = listed.keys().collect();
        if ids != pg.keys().collect() {
            return Err(format!(
                "{} lists {ids:?}, PostgreSQL holds {:?}",
                node.address,
                pg.keys().collect::<Vec<_>>()
            ));
        }
        for (id, row) in &pg {
            let local = &listed[id];
            if local["status"] != row.status.as_str()
                || local["version"] != row.version
                || local["sync_state"] != settled_state(&row.status)
            {
                return Err(format!(
                    "{} lists {local}, PostgreSQL holds {row:?}",
                    node.address
                ));
            }
        }
    }
    Ok(pg)
}

/// Microseconds since the epoch of an RFC 3339 instant.
fn micros_of(value: &Value) -> i64 {
    let instant: Timestamp = value
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("not an instant: {value}"));
    instant.as_microsecond()
}

/// After convergence: every node lists the same reservations of `resource`
/// with the same content (`sync_state` aside), and that content is
/// PostgreSQL's (checked on `updated_at`, the field a node sets on its own).
/// Reports every difference at once.
async fn assert_same_everywhere(nodes: &[&TestApp], pool: &PgPool, resource: &str) {
    compare_everywhere(nodes, pool, resource, true).await;
}

/// [`assert_same_everywhere`], but with `strict` false the `updated_at` of
/// rejected reservations is left out: it differs between the losing node
/// and the others, a known server bug that
/// `a_rejection_reads_the_same_on_every_node` tracks on its own, so that the
/// tests about convergence check everything else.
async fn compare_everywhere(nodes: &[&TestApp], pool: &PgPool, resource: &str, strict: bool) {
    let pg = pg_rows(pool, Some(resource)).await;
    let mut listed = Vec::new();
    for node in nodes {
        listed.push(list(node, Some(resource)).await);
    }
    let mut differences = Vec::new();
    let comparable = |reservation: &Value| {
        let mut content = content(reservation);
        if !strict && reservation["status"] == "rejected" {
            content.as_object_mut().unwrap().remove("updated_at");
        }
        content
    };
    for (id, row) in &pg {
        let first = listed[0].get(id).map(comparable);
        for (n, node) in nodes.iter().enumerate() {
            let Some(local) = listed[n].get(id) else {
                differences.push(format!("{id}: missing on {}", node.address));
                continue;
            };
            if Some(comparable(local)) != first {
                differences.push(format!(
                    "{id}: node {n} lists {local}, node 0 lists {:?}",
                    first
                ));
            }
            let checked = strict || row.status != "rejected";
            if checked && micros_of(&local["updated_at"]) != row.updated_at {
                differences.push(format!(
                    "{id} ({} v{}): node {n} ({}) has updated_at {}, PostgreSQL {} µs",
                    row.status, row.version, node.address, local["updated_at"], row.updated_at
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "the nodes converged on status and version but not on content:\n{}",
        differences.join("\n")
    );
}

async fn wait_converged(
    nodes: &[&TestApp],
    pool: &PgPool,
    resource: &str,
) -> BTreeMap<String, PgRow> {
    wait_until(soon(), "the nodes converge with PostgreSQL", || {
        converged(nodes, pool, resource)
    })
    .await
}

// ---------------------------------------------------------------------------
// Both nodes online

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_on_a_shows_on_b_within_a_second() {
    let redis = shared_redis().await;
    let private = private_database().await;
    let db = &private.db;
    let a = spawn_node(&db.url, Some(&redis), &node_name("a")).await;
    let b = spawn_node(&db.url, Some(&redis), &node_name("b")).await;
    // Created on A only: the resource reaches B through the feed too. Once
    // it has, both nodes are up and B's feed is listening.
    let resource = id_of(&a.create_resource(room(1)).await);
    wait_for_resource(&b, &resource).await;

    let reply = a
        .create_reservation(&a.admin_token, &in_hour(&resource, 10))
        .await;
    let acknowledged = Instant::now();
    let booked = reply.assert_status(201).clone();
    let id = id_of(&booked);
    let deadline = acknowledged + WITHIN;
    let (from, to) = (hour(9), hour(12));
    let offered_on_a = try_slots(&a, &resource, &from, &to).await.unwrap();
    assert_eq!(
        offered_on_a,
        [(hour(9), 1), (hour(11), 1)],
        "A no longer offers the booked hour"
    );

    // List and availability first: they read B's SQLite alone.
    wait_until(
        deadline,
        "B lists A's booking and offers what A offers, within 1 s",
        || async {
            let listed = try_list(&b, Some(&resource)).await?;
            match listed.get(&id) {
                Some(item) if listed.len() == 1 && content(item) == content(&booked) => {}
                _ => return Err(format!("B lists {listed:?}")),
            }
            let offered = try_slots(&b, &resource, &from, &to).await?;
            if offered != offered_on_a {
                return Err(format!("B offers {offered:?}, A offers {offered_on_a:?}"));
            }
            Ok(())
        },
    )
    .await;
    let on_b = wait_until(deadline, "B reads A's booking, within 1 s", || async {
        let reply = get(&b, &id).await;
        match reply.status.as_u16() {
            200 if content(&reply.body) == content(&booked) => Ok(reply.body),
            _ => Err(format!("{} {}", reply.status, reply.text)),
        }
    })
    .await;
    assert_eq!(on_b["sync_state"], "synced", "{on_b}");

    // B refuses the seat A filled, up front.
    b.create_reservation(&b.admin_token, &in_hour(&resource, 10))
        .await
        .assert_problem(409, "capacity-exceeded");
    // And still takes the free hour next to it.
    b.create_reservation(&b.admin_token, &in_hour(&resource, 11))
        .await
        .assert_status(201);
    let pg = wait_converged(&[&a, &b], &db.pool, &resource).await;
    assert_eq!(pg.len(), 2, "{pg:?}");
    assert!(pg.values().all(|r| r.status == "confirmed"), "{pg:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_a_reaches_b_and_its_cache() {
    let redis = shared_redis().await;
    let private = private_database().await;
    let db = &private.db;
    let a = spawn_node(&db.url, Some(&redis), &node_name("a")).await;
    let b = spawn_node(&db.url, Some(&redis), &node_name("b")).await;
    // No Redis, so no pub/sub: only what the feed applies can refresh C's
    // in-memory cache.
    let c = spawn_node(&db.url, None, &node_name("c")).await;
    let readers = [&b, &c];
    let resource = id_of(&a.create_resource(room(2)).await);
    let id = id_of(
        a.create_reservation(&a.admin_token, &in_hour(&resource, 10))
            .await
            .assert_status(201),
    );
    for node in readers {
        wait_until(soon(), "the booking reaches the node", || async {
            match try_list(node, Some(&resource)).await?.get(&id) {
                Some(item) if item["sync_state"] == "synced" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    let (from, to) = (hour(10), hour(11));
    // Warm the caches: the reservation (L1, and L2 on B) and availability.
    for node in readers {
        for _ in 0..2 {
            let reply = get(node, &id).await;
            assert_eq!(reply.assert_status(200)["version"], 1, "{}", reply.text);
            assert_eq!(
                try_slots(node, &resource, &from, &to).await.unwrap(),
                [(hour(10), 1)]
            );
        }
    }

    let reply = a
        .patch_reservation(
            &a.admin_token,
            &id,
            &json!({"notes": "by the window", "party_size": 2}),
        )
        .await;
    let acknowledged = Instant::now();
    let changed = reply.assert_status(200).clone();
    assert_eq!(changed["version"], 2);
    wait_until(
        acknowledged + WITHIN,
        "B and C read, list and offer the change, within 1 s",
        || async {
            for node in readers {
                let reply = get(node, &id).await;
                if reply.status != 200 || content(&reply.body) != content(&changed) {
                    return Err(format!("{} reads {}", node.address, reply.text));
                }
                let listed = try_list(node, Some(&resource)).await?;
                if listed.get(&id).map(content) != Some(content(&changed)) {
                    return Err(format!("{} lists {listed:?}", node.address));
                }
                let offered = try_slots(node, &resource, &from, &to).await?;
                if !offered.is_empty() {
                    return Err(format!("{} still offers {offered:?}", node.address));
                }
            }
            Ok(())
        },
    )
    .await;

    // Warm again, then cancel on A: the seats come back everywhere.
    for node in readers {
        assert_eq!(get(node, &id).await.assert_status(200)["version"], 2);
        assert!(
            try_slots(node, &resource, &from, &to)
                .await
                .unwrap()
                .is_empty()
        );
    }
    let reply = a.cancel_reservation(&a.admin_token, &id).await;
    let acknowledged = Instant::now();
    let cancelled = reply.assert_status(200).clone();
    assert_eq!(
        (&cancelled["status"], &cancelled["version"]),
        (&json!("cancelled"), &json!(3))
    );
    wait_until(
        acknowledged + WITHIN,
        "B and C read the cancellation and offer the seats again, within 1 s",
        || async {
            for node in readers {
                let reply = get(node, &id).await;
                if reply.status != 200 || content(&reply.body) != content(&cancelled) {
                    return Err(format!("{} reads {}", node.address, reply.text));
                }
                let offered = try_slots(node, &resource, &from, &to).await?;
                if offered != [(hour(10), 2)] {
                    return Err(format!("{} offers {offered:?}", node.address));
                }
            }
            Ok(())
        },
    )
    .await;
    wait_converged(&[&a, &b, &c], &db.pool, &resource).await;
}

/// One booking attempt of a race.
#[derive(Debug)]
struct Attempt {
    node: usize,
    slot: i64,
    /// The id when the node acknowledged it (201).
    id: Option<String>,
}

/// Books `[slot, slot + 1)` on each node `per_node` times, all at once;
/// refusals must be `capacity-exceeded`.
async fn race(nodes: [&TestApp; 2], resource: &str, slot: i64, per_node: usize) -> Vec<Attempt> {
    let body = in_hour(resource, slot);
    let tries: Vec<usize> = (0..per_node).flat_map(|_| [0, 1]).collect();
    let replies = futures::future::join_all(
        tries
            .iter()
            .map(|&n| nodes[n].create_reservation(&nodes[n].admin_token, &body)),
    )
    .await;
    tries
        .into_iter()
        .zip(replies)
        .map(|(node, reply)| {
            let id = match reply.status.as_u16() {
                201 => Some(id_of(&reply.body)),
                _ => {
                    reply.assert_problem(409, "capacity-exceeded");
                    None
                }
            };
            Attempt { node, slot, id }
        })
        .collect()
}

/// Checks a finished race on `resource` against PostgreSQL and both nodes:
/// exactly `capacity` confirmed per slot, every other acknowledged booking
/// rejected (in PostgreSQL, and on both nodes as `rejected`/`conflict`).
async fn check_races(
    nodes: [&TestApp; 2],
    pool: &PgPool,
    resource: &str,
    capacity: usize,
    attempts: &[Attempt],
) {
    let pg = wait_converged(&nodes, pool, resource).await;
    let acknowledged: BTreeSet<&String> = attempts.iter().filter_map(|a| a.id.as_ref()).collect();
    assert_eq!(
        pg.keys().collect::<BTreeSet<_>>(),
        acknowledged,
        "PostgreSQL holds exactly the acknowledged bookings"
    );
    let slots: BTreeSet<i64> = attempts.iter().map(|a| a.slot).collect();
    for slot in slots {
        let ids: Vec<&String> = attempts
            .iter()
            .filter(|a| a.slot == slot)
            .filter_map(|a| a.id.as_ref())
            .collect();
        assert!(
            ids.len() >= capacity,
            "slot {slot}: fewer acknowledged than seats: {attempts:?}"
        );
        for node in 0..2 {
            let admitted = attempts
                .iter()
                .filter(|a| a.slot == slot && a.node == node && a.id.is_some())
                .count();
            assert!(
                admitted <= capacity,
                "slot {slot}: node {node} alone admitted more than the seats: {attempts:?}"
            );
        }
        let confirmed = ids
            .iter()
            .filter(|id| pg[**id].status == "confirmed")
            .count();
        assert_eq!(confirmed, capacity, "slot {slot}: {pg:?}");
        for id in ids {
            let row = &pg[id];
            assert_eq!(row.starts_at, BASE_SECOND + 3600 * slot);
            let expected = if row.status == "confirmed" {
                (1, "synced")
            } else {
                assert_eq!(row.status, "rejected", "{id}: {row:?}");
                assert!(
                    row.reject_reason.as_deref().is_some_and(|r| !r.is_empty()),
                    "{id}: {row:?}"
                );
                (2, "conflict")
            };
            assert_eq!(row.version, expected.0, "{id}: {row:?}");
            // Through the cache as well as the list.
            for node in nodes {
                assert_read_settled(node, id, &row.status, expected.0, expected.1).await;
            }
        }
    }
}

/// Asserts that `GET /v1/reservations/{id}` on `node` (through its caches)
/// shows what its list (SQLite) already shows. On a mismatch, watches a few
/// seconds longer so the failure says whether the cache was stale for a
/// moment or for good.
async fn assert_read_settled(node: &TestApp, id: &str, status: &str, version: i64, state: &str) {
    let expected = (json!(status), json!(version), json!(state));
    let seen = |r: &Value| {
        (
            r["status"].clone(),
            r["version"].clone(),
            r["sync_state"].clone(),
        )
    };
    let first = get(node, id).await;
    if seen(first.assert_status(200)) == expected {
        return;
    }
    let listed = list(node, None).await.remove(id);
    let since = Instant::now();
    let healed = loop {
        let again = get(node, id).await;
        if seen(&again.body) == expected {
            break format!("the read showed it {:?} later", since.elapsed());
        }
        if since.elapsed() > Duration::from_secs(5) {
            break format!("still {} 5 s later", again.text);
        }
        tokio::time::sleep(POLL).await;
    };
    panic!(
        "{id} on {}: the read shows {}, the list {listed:?}, PostgreSQL settled it as \
         {expected:?}; {healed}",
        node.address, first.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_seat_booked_on_both_nodes_many_times_leaves_exactly_capacity() {
    const SINGLE_ROUNDS: i64 = 10;
    const PAIR_ROUNDS: i64 = 4;
    let redis = shared_redis().await;
    let db = test_database().await;
    let a = spawn_node(&db.url, Some(&redis), &node_name("a")).await;
    let b = spawn_node(&db.url, Some(&redis), &node_name("b")).await;
    let nodes = [&a, &b];
    let single = id_of(&a.create_resource(room(1)).await);
    let pair = id_of(&a.create_resource(room(2)).await);
    wait_for_resource(&b, &single).await;
    wait_for_resource(&b, &pair).await;

    // One seat, one attempt per node, ten times over.
    let mut single_attempts = Vec::new();
    for slot in 0..SINGLE_ROUNDS {
        single_attempts.extend(race(nodes, &single, slot, 1).await);
    }
    // Two seats, three attempts per node.
    let mut pair_attempts = Vec::new();
    for slot in 0..PAIR_ROUNDS {
        pair_attempts.extend(race(nodes, &pair, slot, 3).await);
    }
    let contested = (0..SINGLE_ROUNDS)
        .filter(|slot| {
            single_attempts
                .iter()
                .filter(|a| a.slot == *slot && a.id.is_some())
                .count()
                == 2
        })
        .count();
    eprintln!("{contested} of {SINGLE_ROUNDS} one-seat rounds were admitted on both nodes");
    assert!(
        contested > 0,
        "no round was a real race (both nodes admitting the seat): {single_attempts:?}"
    );

    check_races(nodes, &db.pool, &single, 1, &single_attempts).await;
    check_races(nodes, &db.pool, &pair, 2, &pair_attempts).await;
    compare_everywhere(&nodes, &db.pool, &single, false).await;
    compare_everywhere(&nodes, &db.pool, &pair, false).await;

    // Every slot is full everywhere: nothing offered, a new booking refused.
    for node in nodes {
        let offered = try_slots(node, &single, &hour(0), &hour(SINGLE_ROUNDS))
            .await
            .unwrap();
        assert!(offered.is_empty(), "{} offers {offered:?}", node.address);
        let offered = try_slots(node, &pair, &hour(0), &hour(PAIR_ROUNDS))
            .await
            .unwrap();
        assert!(offered.is_empty(), "{} offers {offered:?}", node.address);
        node.create_reservation(&node.admin_token, &in_hour(&single, 3))
            .await
            .assert_problem(409, "capacity-exceeded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_reads_the_same_on_every_node() {
    // PostgreSQL settles the race: the loser is stored `rejected` at version
    // 2. Every node must then hold the same version 2, whether it learned the
    // outcome from its own sync (the loser's node) or from the feed (the
    // others): one version, one content.
    let redis = shared_redis().await;
    let db = test_database().await;
    let a = spawn_node(&db.url, Some(&redis), &node_name("a")).await;
    let b = spawn_node(&db.url, Some(&redis), &node_name("b")).await;
    let nodes = [&a, &b];
    let resource = id_of(&a.create_resource(room(1)).await);
    wait_for_resource(&b, &resource).await;
    let mut attempts = Vec::new();
    for slot in 0..3 {
        attempts.extend(race(nodes, &resource, slot, 1).await);
    }
    check_races(nodes, &db.pool, &resource, 1, &attempts).await;
    assert_same_everywhere(&nodes, &db.pool, &resource).await;
}

// ---------------------------------------------------------------------------
// A node cut off from PostgreSQL

/// Books the `slot`-th hour on `node`, expecting 201; the id.
async fn book(node: &TestApp, resource: &str, slot: i64) -> String {
    let reply = node
        .create_reservation(&node.admin_token, &in_hour(resource, slot))
        .await;
    assert_eq!(reply.status, 201, "{}: {}", node.address, reply.text);
    id_of(&reply.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_b_cut_off_from_postgres_keeps_booking_and_converges() {
    let redis = shared_redis().await;
    let db = test_database().await;
    let proxy = TcpProxy::to_url(&db.url).await;
    let (a_name, b_name) = (node_name("a"), node_name("b"));
    let a = spawn_node(&db.url, Some(&redis), &a_name).await;
    let b = spawn_node(&proxy.url_for(&db.url), Some(&redis), &b_name).await;
    let resource = id_of(&a.create_resource(room(1)).await);
    wait_for_resource(&b, &resource).await;
    let mut on_a = BTreeSet::new();
    let mut on_b = BTreeSet::new();
    let book = |node, slot| book(node, &resource, slot);
    on_a.insert(book(&a, 0).await);
    on_b.insert(book(&b, 1).await);
    wait_converged(&[&a, &b], &db.pool, &resource).await;

    proxy.cut();
    // B on its own: new hours, a change and a cancellation of its own.
    let mut b_own = Vec::new();
    for slot in 10..16 {
        b_own.push(book(&b, slot).await);
    }
    let changed = b
        .patch_reservation(
            &b.admin_token,
            &b_own[0],
            &json!({"notes": "written offline"}),
        )
        .await;
    assert_eq!(changed.assert_status(200)["version"], 2);
    let cancelled = b.cancel_reservation(&b.admin_token, &b_own[1]).await;
    assert_eq!(cancelled.assert_status(200)["status"], "cancelled");
    // A too.
    let mut a_own = Vec::new();
    for slot in 20..24 {
        a_own.push(book(&a, slot).await);
    }
    // The same last seat on both: neither can see the other's.
    let mut contested = Vec::new();
    for slot in 30..34 {
        let (at_a, at_b) = tokio::join!(book(&a, slot), book(&b, slot));
        contested.push((slot, at_a, at_b));
    }
    let down = wait_until(
        soon(),
        "B notices that PostgreSQL is unreachable",
        || async {
            let status = sync_status(&b).await;
            match status["consecutive_failures"].as_u64() {
                Some(n) if n > 0 && status["pending"].as_i64().is_some_and(|p| p > 0) => Ok(status),
                _ => Err(status.to_string()),
            }
        },
    )
    .await;
    assert!(down["last_error"].is_string(), "{down}");
    // B keeps answering while it fails: one more booking.
    b_own.push(book(&b, 16).await);
    on_a.extend(a_own.iter().cloned());
    on_b.extend(b_own.iter().cloned());
    for (_, at_a, at_b) in &contested {
        on_a.insert(at_a.clone());
        on_b.insert(at_b.clone());
    }
    // The cut lasts a while: until every booking of A's is in PostgreSQL
    // (so A is first to every contested seat) and B has failed a few times.
    wait_until(
        soon(),
        "A's bookings reach PostgreSQL while B keeps failing",
        || async {
            let (status_a, status_b) = (sync_status(&a).await, sync_status(&b).await);
            let pg = pg_rows(&db.pool, Some(&resource)).await;
            let missing = on_a.iter().filter(|id| !pg.contains_key(*id)).count();
            let failures = status_b["consecutive_failures"].as_u64().unwrap_or(0);
            match (status_a["pending"].as_i64(), missing, failures) {
                (Some(0), 0, 3..) => Ok(()),
                _ => Err(format!(
                    "A {status_a}; B {status_b}; {missing} of A's missing"
                )),
            }
        },
    )
    .await;
    // Nothing of B's has reached PostgreSQL or A, nor anything of A's B.
    let pg = pg_rows(&db.pool, Some(&resource)).await;
    let (listed_on_a, listed_on_b) = (
        list(&a, Some(&resource)).await,
        list(&b, Some(&resource)).await,
    );
    for id in b_own.iter().chain(contested.iter().map(|(_, _, b)| b)) {
        assert!(
            !pg.contains_key(id),
            "{id} reached PostgreSQL through the cut"
        );
        assert!(
            !listed_on_a.contains_key(id),
            "{id} reached A through the cut"
        );
    }
    for id in a_own.iter().chain(contested.iter().map(|(_, a, _)| a)) {
        assert!(
            !listed_on_b.contains_key(id),
            "{id} reached B through the cut"
        );
    }
    assert!(proxy.dropped() > 0, "B never tried to reconnect");

    proxy.restore();
    let pg = wait_converged(&[&a, &b], &db.pool, &resource).await;

    // Every acknowledged booking, once.
    let acknowledged: BTreeSet<&String> = on_a.iter().chain(&on_b).collect();
    assert_eq!(acknowledged.len(), on_a.len() + on_b.len());
    assert_eq!(pg.keys().collect::<BTreeSet<_>>(), acknowledged);
    assert_eq!(
        pg_counts(&db.pool).await,
        (acknowledged.len() as i64, acknowledged.len() as i64)
    );
    for (ids, origin) in [(&on_a, &a_name), (&on_b, &b_name)] {
        for id in ids {
            assert_eq!(&pg[id].origin_node, origin, "{id}");
        }
    }
    // A's bookings reached PostgreSQL while B could not: A won every
    // contested seat, B's copies were rejected there and on both nodes.
    for (slot, at_a, at_b) in &contested {
        assert_eq!(
            (pg[at_a].status.as_str(), pg[at_a].version),
            ("confirmed", 1),
            "slot {slot}"
        );
        assert_eq!(
            (pg[at_b].status.as_str(), pg[at_b].version),
            ("rejected", 2),
            "slot {slot}"
        );
        for node in [&a, &b] {
            assert_read_settled(node, at_a, "confirmed", 1, "synced").await;
            assert_read_settled(node, at_b, "rejected", 2, "conflict").await;
        }
    }
    let confirmed_per_slot = pg.values().filter(|r| r.status == "confirmed").fold(
        BTreeMap::<i64, usize>::new(),
        |mut m, r| {
            *m.entry(r.starts_at).or_default() += 1;
            m
        },
    );
    assert!(confirmed_per_slot.values().all(|n| *n == 1), "{pg:?}");
    // B's offline writes, at their last versions.
    assert_eq!(
        (pg[&b_own[0]].notes.as_deref(), pg[&b_own[0]].version),
        (Some("written offline"), 2)
    );
    assert_eq!(
        (pg[&b_own[1]].status.as_str(), pg[&b_own[1]].version),
        ("cancelled", 2)
    );
    for id in b_own.iter().skip(2).chain(&a_own) {
        assert_eq!((pg[id].status.as_str(), pg[id].version), ("confirmed", 1));
    }
    // Both nodes list the same rows, content and all.
    compare_everywhere(&[&a, &b], &db.pool, &resource, false).await;
}

// ---------------------------------------------------------------------------
// The change feed itself

/// How a pair of transactions interleaves in the watermark test. In each,
/// T1 takes the lower `change_seq` and commits last.
#[derive(Debug, Clone, Copy)]
enum Interleaving {
    /// T1 writes, T2 writes and commits, T1 commits.
    Plain,
    /// T2 takes its transaction id first, so T1 has the higher id but the
    /// lower sequence number: T2's row is readable while T1 is open.
    LaterId,
    /// As `Plain`, but T1 writes a second row after T2 committed.
    WritesOnAfter,
    /// As `Plain`, with three short transactions committing meanwhile.
    ManyOvertake,
    /// As `Plain` with plain INSERTs: no `reservoir_apply_batch`, hence no
    /// NOTIFY, so only the feed's timer finds them.
    ByHand,
}

/// A reservation row as a node sends it to `reservoir_apply_batch`.
fn batch_row(id: Uuid, resource: &str, slot: i64) -> Value {
    json!([{
        "id": id, "resource_id": resource, "user_id": "watermark",
        "starts_at": hour_micros(slot), "ends_at": hour_micros(slot + 1), "party_size": 1,
        "status": "confirmed", "version": 1, "notes": null, "metadata": null, "request_hash": null,
        "created_at": hour_micros(0), "updated_at": hour_micros(0),
    }])
}

/// Writes one reservation in `tx` (as another node's batch, or by hand);
/// returns the `(change_txid, change_seq)` the trigger stamped on it.
async fn write_in(
    tx: &mut sqlx::PgConnection,
    by_hand: bool,
    id: Uuid,
    resource: &str,
    slot: i64,
) -> (i64, i64) {
    if by_hand {
        sqlx::query(
            "INSERT INTO reservations (id, resource_id, user_id, starts_at, ends_at, party_size,
                 status, version, origin_node, created_at, updated_at)
             VALUES ($1, $2::text::uuid, 'watermark', reservoir_instant($3), reservoir_instant($4),
                 1, 'confirmed', 1, 'by-hand', now(), now())",
        )
        .bind(id)
        .bind(resource)
        .bind(hour_micros(slot))
        .bind(hour_micros(slot + 1))
        .execute(&mut *tx)
        .await
        .expect("insert a reservation by hand");
    } else {
        let applied: Vec<(String,)> = sqlx::query_as(
            "SELECT status FROM reservoir_apply_batch('other-node', '[]'::jsonb, $1::text::jsonb)",
        )
        .bind(batch_row(id, resource, slot).to_string())
        .fetch_all(&mut *tx)
        .await
        .expect("call reservoir_apply_batch");
        assert_eq!(applied, [("confirmed".to_owned(),)]);
    }
    sqlx::query_as("SELECT change_txid, change_seq FROM reservations WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .expect("read the change stamp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_does_not_miss_a_late_committing_transaction() {
    // Why a plain `change_seq > cursor` feed loses rows: sequence numbers are
    // taken when a row is written, but rows become visible when their
    // transaction commits. T1 takes seq 10 and stays open; T2 takes seq 11
    // and commits. A feed that reads now sees 11 and moves its cursor to 11;
    // when T1 commits, its row (10) is behind the cursor and never read. The
    // same holds for timestamps and bigserial ids. This feed orders by
    // (change_txid, change_seq) and only reads transactions below the oldest
    // one still running (pg_snapshot_xmin), so nothing can commit behind its
    // cursor. Each interleaving below builds exactly that gap (and checks
    // that a naive cursor would have passed T1's row) before T1 commits.
    //
    // A cluster of its own: holding T1 open holds back the feed of every
    // database on the server, which would slow the other tests down.
    let private = private_database().await;
    let db = &private.db;
    let redis = shared_redis().await;
    let b = spawn_app_with(|config| {
        cluster_config(config, &db.url, Some(&redis), Some(&node_name("b")));
        config.feed_interval_ms = 100;
    })
    .await;
    let first = id_of(&b.create_resource(room(10)).await);
    let second = id_of(&b.create_resource(room(10)).await);
    // Once B has synced, the schema and both resources are in PostgreSQL.
    wait_until(soon(), "B syncs its resources", || async {
        let status = sync_status(&b).await;
        let known: i64 = sqlx::query_scalar("SELECT count(*) FROM resources")
            .fetch_one(&db.pool)
            .await
            .unwrap_or(0);
        match (status["pending"].as_i64(), known) {
            (Some(0), 2) => Ok(()),
            _ => Err(format!("{status}; {known} resources in PostgreSQL")),
        }
    })
    .await;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&db.url)
        .await
        .expect("a pool to the test database");

    let interleavings = [
        Interleaving::Plain,
        Interleaving::LaterId,
        Interleaving::WritesOnAfter,
        Interleaving::ManyOvertake,
        Interleaving::ByHand,
    ];
    let mut all = BTreeSet::new();
    for (k, interleaving) in interleavings.into_iter().enumerate() {
        let slot = 10 * k as i64;
        let by_hand = matches!(interleaving, Interleaving::ByHand);
        let mut t1 = pool.begin().await.unwrap();
        let mut t2 = pool.begin().await.unwrap();
        if let Interleaving::LaterId = interleaving {
            sqlx::query("SELECT pg_current_xact_id()")
                .execute(&mut *t2)
                .await
                .unwrap();
        }
        let late = Uuid::new_v4();
        let (t1_txid, t1_seq) = write_in(&mut t1, by_hand, late, &first, slot).await;
        let early = Uuid::new_v4();
        let (t2_txid, t2_seq) = write_in(&mut t2, by_hand, early, &second, slot).await;
        assert!(
            t1_seq < t2_seq,
            "{interleaving:?}: T1 must take the lower sequence number"
        );
        if let Interleaving::LaterId = interleaving {
            assert!(t2_txid < t1_txid, "{interleaving:?}");
        } else {
            assert!(t1_txid < t2_txid, "{interleaving:?}");
        }
        t2.commit().await.unwrap();
        let mut late_ids = vec![late];
        let mut early_ids = vec![early];
        if let Interleaving::ManyOvertake = interleaving {
            for n in 1..=3 {
                let id = Uuid::new_v4();
                let mut tx = pool.begin().await.unwrap();
                write_in(&mut tx, false, id, &second, slot + n).await;
                tx.commit().await.unwrap();
                early_ids.push(id);
            }
        }
        if let Interleaving::WritesOnAfter = interleaving {
            let id = Uuid::new_v4();
            let (_, seq) = write_in(&mut t1, false, id, &first, slot + 1).await;
            assert!(seq > t2_seq);
            late_ids.push(id);
        }
        // Where a `change_seq > cursor` feed would stand now: past T1's row.
        let naive_cursor: i64 =
            sqlx::query_scalar("SELECT coalesce(max(change_seq), 0) FROM reservations")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(naive_cursor > t1_seq, "{interleaving:?}: no gap was built");

        // Hold T1 open while B's feed runs many times (T2's NOTIFY wakes it,
        // its timer runs every 100 ms).
        let hold_until = Instant::now() + Duration::from_millis(1_000);
        if let Interleaving::LaterId = interleaving {
            // T2's transaction is older than every running one: B gets its
            // row now, with T1 still open, and moves its cursor past
            // T2's sequence number, which is above T1's.
            wait_until(soon(), "B gets T2's row while T1 is open", || async {
                let listed = try_list(&b, None).await?;
                match early_ids
                    .iter()
                    .all(|id| listed.contains_key(&id.to_string()))
                {
                    true => Ok(()),
                    false => Err(format!("B lists {:?}", listed.keys())),
                }
            })
            .await;
        }
        tokio::time::sleep_until(hold_until.into()).await;
        let listed = list(&b, None).await;
        for id in &late_ids {
            assert!(
                !listed.contains_key(&id.to_string()),
                "uncommitted {id} on B"
            );
        }
        t1.commit().await.unwrap();

        let expected: Vec<String> = late_ids
            .iter()
            .chain(&early_ids)
            .map(Uuid::to_string)
            .collect();
        wait_until(
            Instant::now() + Duration::from_secs(10),
            &format!("{interleaving:?}: B gets both transactions' rows"),
            || async {
                let listed = try_list(&b, None).await?;
                let missing: Vec<&String> = expected
                    .iter()
                    .filter(|id| !listed.contains_key(*id))
                    .collect();
                match missing.is_empty() {
                    true => Ok(()),
                    false => Err(format!("missing {missing:?}")),
                }
            },
        )
        .await;
        all.extend(expected);
    }

    let pg = pg_rows(&pool, None).await;
    assert_eq!(pg.keys().cloned().collect::<BTreeSet<_>>(), all);
    let listed = list(&b, None).await;
    assert_eq!(listed.keys().cloned().collect::<BTreeSet<_>>(), all);
    for (id, row) in &pg {
        let local = &listed[id];
        assert_eq!(
            (&local["status"], &local["version"], &local["sync_state"]),
            (&json!(row.status), &json!(row.version), &json!("synced")),
            "{id}"
        );
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_transaction_in_another_database_does_not_hold_back_the_feed() {
    // The feed only reads transactions below the oldest one still running
    // on the whole server, so an open write transaction in an unrelated
    // database (another application sharing the server, an operator's
    // session) holds back every node's feed for as long as it stays open.
    let redis = shared_redis().await;
    let private = private_database().await;
    let db = &private.db;
    let a = spawn_node(&db.url, Some(&redis), &node_name("a")).await;
    let b = spawn_node(&db.url, Some(&redis), &node_name("b")).await;
    let resource = id_of(&a.create_resource(room(1)).await);
    wait_for_resource(&b, &resource).await;

    let other = PgPoolOptions::new()
        .max_connections(1)
        .connect(&private.cluster.url())
        .await
        .expect("connect to the maintenance database");
    let mut unrelated = other.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *unrelated)
        .await
        .unwrap();

    let reply = a
        .create_reservation(&a.admin_token, &in_hour(&resource, 10))
        .await;
    let acknowledged = Instant::now();
    let id = id_of(reply.assert_status(201));
    // Watch (without panicking, so the transaction is ended either way).
    let mut seen_after = None;
    while acknowledged.elapsed() < Duration::from_secs(3) {
        if list(&b, Some(&resource)).await.contains_key(&id) {
            seen_after = Some(acknowledged.elapsed());
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let held = acknowledged.elapsed();
    unrelated.rollback().await.unwrap();
    match seen_after {
        Some(after) => assert!(after <= WITHIN, "B listed A's booking only after {after:?}"),
        None => panic!(
            "B did not list A's booking in {held:?}, while a transaction in another \
             database stayed open"
        ),
    }
}

/// Writes a booking on `node` and waits until `other` lists it: every change
/// committed to PostgreSQL before it has then been applied by `other`'s feed
/// (the feed applies in commit order).
async fn feed_barrier(node: &TestApp, other: &TestApp, resource: &str, slot: i64) -> String {
    let id = id_of(
        node.create_reservation(&node.admin_token, &in_hour(resource, slot))
            .await
            .assert_status(201),
    );
    wait_until(
        soon(),
        "the barrier booking reaches the other node",
        || async {
            match try_list(other, Some(resource)).await?.get(&id) {
                Some(_) => Ok(()),
                None => Err("not yet".to_owned()),
            }
        },
    )
    .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_the_feed_is_idempotent_and_version_ordered() {
    let redis = shared_redis().await;
    let db = test_database().await;
    let (a_name, b_name) = (node_name("a"), node_name("b"));
    let a = spawn_node(&db.url, Some(&redis), &a_name).await;
    let b = spawn_node(&db.url, Some(&redis), &b_name).await;
    let resource = id_of(&a.create_resource(room(5)).await);
    wait_for_resource(&b, &resource).await;
    let mine = id_of(
        a.create_reservation(&a.admin_token, &in_hour(&resource, 1))
            .await
            .assert_status(201),
    );
    for notes in ["second", "third"] {
        a.patch_reservation(&a.admin_token, &mine, &json!({ "notes": notes }))
            .await
            .assert_status(200);
    }
    let theirs = id_of(
        b.create_reservation(&b.admin_token, &in_hour(&resource, 2))
            .await
            .assert_status(201),
    );
    let pg = wait_converged(&[&a, &b], &db.pool, &resource).await;
    assert_eq!(pg[&mine].version, 3);
    let before_a = list(&a, Some(&resource)).await;
    let before_b = list(&b, Some(&resource)).await;
    assert_eq!(
        before_a.values().map(content).collect::<Vec<_>>(),
        before_b.values().map(content).collect::<Vec<_>>()
    );

    // The nodes' own rows come back: touched by hand, the rows are stamped
    // anew (by no node), so both feeds read them, their own included.
    sqlx::query("UPDATE reservations SET synced_at = now() WHERE resource_id = $1::text::uuid")
        .bind(&resource)
        .execute(&db.pool)
        .await
        .unwrap();
    // An older version of A's reservation, written over the newer one.
    sqlx::query("UPDATE reservations SET version = 1, notes = 'stale' WHERE id = $1::text::uuid")
        .bind(&mine)
        .execute(&db.pool)
        .await
        .unwrap();
    let barrier_on_a = feed_barrier(&b, &a, &resource, 10).await;
    let barrier_on_b = feed_barrier(&a, &b, &resource, 11).await;

    for (node, before) in [(&a, &before_a), (&b, &before_b)] {
        let mut now = list(node, Some(&resource)).await;
        now.remove(&barrier_on_a);
        now.remove(&barrier_on_b);
        assert_eq!(
            &now, before,
            "{}: the feed changed rows it must not",
            node.address
        );
        for id in [&mine, &theirs] {
            let reply = get(node, id).await;
            assert_eq!(reply.assert_status(200), &before[id], "{}", node.address);
        }
    }

    // A newer version written by hand is taken everywhere: the feed did read
    // the rows above and left them alone on purpose.
    sqlx::query(
        "UPDATE reservations SET version = 10, notes = 'newer by hand' WHERE id = $1::text::uuid",
    )
    .bind(&mine)
    .execute(&db.pool)
    .await
    .unwrap();
    for node in [&a, &b] {
        wait_until(soon(), "the newer version reaches the node", || async {
            // The list too: another node's feed may have put it into this
            // node's cache (through Redis) before this node's feed stored it.
            let listed = try_list(node, Some(&resource)).await?;
            let reply = get(node, &mine).await;
            for seen in [&listed[&mine], &reply.body] {
                if seen["version"] != 10 || seen["notes"] != "newer by hand" {
                    return Err(seen.to_string());
                }
            }
            Ok(())
        })
        .await;
    }
    let before_a = list(&a, Some(&resource)).await;

    // Replaying the whole feed changes nothing: A forgets its cursor and
    // reads every change again.
    let data_dir = a.stop().await;
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(data_dir.path().join("reservoir.db"));
        let sqlite = sqlx::SqlitePool::connect_with(options)
            .await
            .expect("open A's SQLite");
        let forgotten = sqlx::query("DELETE FROM meta WHERE key = 'feed_cursor'")
            .execute(&sqlite)
            .await
            .expect("forget the feed cursor")
            .rows_affected();
        assert_eq!(forgotten, 1, "A had no feed cursor");
        sqlite.close().await;
    }
    let a = spawn_app_on_with(data_dir, |config| {
        cluster_config(config, &db.url, Some(&redis), Some(&a_name))
    })
    .await;
    let barrier = feed_barrier(&b, &a, &resource, 12).await;
    let mut now = list(&a, Some(&resource)).await;
    now.remove(&barrier);
    assert_eq!(now, before_a, "replaying the feed changed rows");
    wait_converged(&[&a, &b], &db.pool, &resource).await;
}

// ---------------------------------------------------------------------------
// Node identity

/// `origin_node` of every PostgreSQL resource and reservation, by id.
async fn origins(pool: &PgPool) -> BTreeMap<String, String> {
    sqlx::query_as(
        "SELECT id::text, origin_node FROM resources
         UNION ALL SELECT id::text, origin_node FROM reservations",
    )
    .fetch_all(pool)
    .await
    .expect("read origin_node")
    .into_iter()
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_id_is_recorded_as_origin() {
    let redis = shared_redis().await;

    // Explicit ids.
    let db = test_database().await;
    let (a_name, b_name) = (node_name("alpha"), node_name("beta"));
    let a = spawn_node(&db.url, Some(&redis), &a_name).await;
    let b = spawn_node(&db.url, Some(&redis), &b_name).await;
    let from_a = id_of(&a.create_resource(room(3)).await);
    let from_b = id_of(&b.create_resource(room(3)).await);
    wait_for_resource(&a, &from_b).await;
    let booked_on_a = id_of(
        a.create_reservation(&a.admin_token, &in_hour(&from_b, 1))
            .await
            .assert_status(201),
    );
    wait_for_resource(&b, &from_a).await;
    let booked_on_b = id_of(
        b.create_reservation(&b.admin_token, &in_hour(&from_a, 1))
            .await
            .assert_status(201),
    );
    // A change made on the other node keeps the origin.
    wait_until(soon(), "B's booking reaches A", || async {
        match try_list(&a, Some(&from_a))
            .await?
            .contains_key(&booked_on_b)
        {
            true => Ok(()),
            false => Err("not yet".to_owned()),
        }
    })
    .await;
    a.patch_reservation(
        &a.admin_token,
        &booked_on_b,
        &json!({"notes": "changed on A"}),
    )
    .await
    .assert_status(200);
    wait_converged(&[&a, &b], &db.pool, &from_a).await;
    wait_converged(&[&a, &b], &db.pool, &from_b).await;
    let expected: BTreeMap<String, String> = [
        (from_a, a_name.clone()),
        (from_b, b_name.clone()),
        (booked_on_a, a_name),
        (booked_on_b.clone(), b_name),
    ]
    .into_iter()
    .collect();
    assert_eq!(origins(&db.pool).await, expected);
    assert_eq!(
        pg_rows(&db.pool, None).await[&booked_on_b].notes.as_deref(),
        Some("changed on A")
    );

    // No id configured: one is generated, kept in the data directory and
    // used again after a restart.
    let db = test_database().await;
    let generated = |config: &mut Config| cluster_config(config, &db.url, Some(&redis), None);
    let node = spawn_app_with(generated).await;
    let resource = id_of(&node.create_resource(room(3)).await);
    let first = id_of(
        node.create_reservation(&node.admin_token, &in_hour(&resource, 1))
            .await
            .assert_status(201),
    );
    let id_file = node.data_dir.path().join("node-id");
    let id = std::fs::read_to_string(&id_file)
        .unwrap_or_else(|e| panic!("{}: {e}", id_file.display()))
        .trim()
        .to_owned();
    assert!(!id.is_empty());
    wait_converged(&[&node], &db.pool, &resource).await;
    let data_dir = node.stop().await;
    let node = spawn_app_on_with(data_dir, generated).await;
    let second = id_of(
        node.create_reservation(&node.admin_token, &in_hour(&resource, 2))
            .await
            .assert_status(201),
    );
    wait_converged(&[&node], &db.pool, &resource).await;
    assert_eq!(
        std::fs::read_to_string(&id_file).unwrap().trim(),
        id,
        "the node id changed across a restart"
    );
    let expected: BTreeMap<String, String> = [resource, first, second]
        .into_iter()
        .map(|row| (row, id.clone()))
        .collect();
    assert_eq!(origins(&db.pool).await, expected);
    // The restarted node did not take its own rows for another node's.
    let listed = list(&node, None).await;
    assert!(
        listed.values().all(|r| r["sync_state"] == "synced"),
        "{listed:?}"
    );
}
