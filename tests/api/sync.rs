//! Background sync to PostgreSQL (issue 3): every local write reaches
//! PostgreSQL exactly once in effect, whatever PostgreSQL does meanwhile, while
//! requests are answered from SQLite alone.
//!
//! The plain cases use a fresh database on the shared server; the outage cases
//! a throwaway cluster of their own that they stop and start. Waiting loops
//! poll `GET /v1/sync/status` up to a generous bound; nothing asserts timing.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use jiff::Timestamp;
use reqwest::Client;
use serde_json::{Value, json};
use sqlx::{PgPool, Row};
use tokio::sync::watch;
use uuid::Uuid;

use reservoir::Config;

use crate::{
    cache::{delta, stats},
    helpers::{
        ADMIN_TOKEN, Reply, TestApp, at, id_of, reservation_body, send, spawn_app_with, with,
    },
    support::{
        postgres::{ThrowawayPostgres, pool_to, test_database, test_database_at, with_database},
        proxy::TcpProxy,
    },
};

/// Upper bound of every wait for the sync to converge.
const CONVERGE: Duration = Duration::from_secs(120);
/// 2030-01-01T00:00:00Z.
const BASE_SECOND: i64 = 1_893_456_000;

/// `[start, end)` of the `i`-th hour after [`BASE_SECOND`], as RFC 3339.
fn hour_slot(i: i64) -> (String, String) {
    let at = |hour: i64| {
        Timestamp::from_second(BASE_SECOND + 3600 * hour)
            .unwrap()
            .to_string()
    };
    (at(i), at(i + 1))
}

/// A reservation body in the `i`-th hour.
fn in_hour(resource: &str, i: i64) -> Value {
    let (starts_at, ends_at) = hour_slot(i);
    reservation_body(resource, &starts_at, &ends_at)
}

/// Quick sync settings, so tests converge in well under a second.
fn sync_to(config: &mut Config, url: &str, node: &str) {
    config.postgres_url = Some(url.to_owned());
    config.node_id = Some(node.to_owned());
    config.sync_interval_ms = 50;
    config.sync_backoff_min_ms = 20;
    config.sync_backoff_max_ms = 500;
    config.shutdown_grace_ms = 5_000;
}

/// An in-process server syncing to `url` as node `node`.
async fn spawn_syncing(url: &str, node: &str) -> TestApp {
    spawn_app_with(|config| sync_to(config, url, node)).await
}

/// [`spawn_syncing`] with large batches applied in `lanes` lanes.
async fn spawn_in_lanes(url: &str, node: &str, lanes: u32) -> TestApp {
    spawn_app_with(|config| {
        sync_to(config, url, node);
        config.sync_lanes = lanes;
    })
    .await
}

/// How many PostgreSQL transactions wrote the reservations `filter` picks.
async fn writing_transactions(pool: &PgPool, filter: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(DISTINCT change_txid) FROM reservations WHERE {filter}"
    ))
    .fetch_one(pool)
    .await
    .expect("count the writing transactions")
}

/// The same settings as flags of the binary; `overrides` replace the value
/// of a flag (`("--shutdown-grace-ms", "2000")`) or add one.
fn sync_args(url: &str, node: &str, overrides: &[(&str, &str)]) -> Vec<String> {
    let mut flags = vec![
        ("--postgres-url", url),
        ("--node-id", node),
        ("--sync-interval-ms", "50"),
        ("--sync-backoff-min-ms", "20"),
        ("--sync-backoff-max-ms", "500"),
        ("--shutdown-grace-ms", "5000"),
    ];
    for &(flag, value) in overrides {
        match flags.iter_mut().find(|(name, _)| *name == flag) {
            Some(entry) => entry.1 = value,
            None => flags.push((flag, value)),
        }
    }
    flags
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value.to_owned()])
        .collect()
}

// ---------------------------------------------------------------------------
// Sync status

/// `GET /v1/sync/status` as admin.
async fn sync_status_at(client: &Client, address: &str) -> Value {
    let reply = send(
        client
            .get(format!("{address}/v1/sync/status"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    reply.assert_status(200).clone()
}

async fn sync_status(app: &TestApp) -> Value {
    sync_status_at(&app.client, &app.address).await
}

/// Polls the sync status until `done` holds; panics with the last status
/// after [`CONVERGE`].
async fn wait_for_status_at(
    client: &Client,
    address: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let status = sync_status_at(client, address).await;
        if done(&status) {
            return status;
        }
        if Instant::now() > deadline {
            panic!("waited {CONVERGE:?} for {what}; the last sync status was {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_status(app: &TestApp, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    wait_for_status_at(&app.client, &app.address, what, done).await
}

/// Waits until the outbox is empty: every write so far has reached
/// PostgreSQL (or the dead letters). Returns the status.
async fn wait_until_synced_at(client: &Client, address: &str) -> Value {
    let status = wait_for_status_at(client, address, "an empty outbox (pending == 0)", |s| {
        s["pending"] == 0
    })
    .await;
    assert_eq!(status["enabled"], true, "sync status {status}");
    assert!(
        status["oldest_pending_age_ms"].is_null(),
        "oldest_pending_age_ms with nothing pending: {status}"
    );
    status
}

async fn wait_until_synced(app: &TestApp) -> Value {
    wait_until_synced_at(&app.client, &app.address).await
}

fn counter(status: &Value, name: &str) -> u64 {
    status[name]
        .as_u64()
        .unwrap_or_else(|| panic!("`{name}` is not a count in the sync status {status}"))
}

// ---------------------------------------------------------------------------
// What PostgreSQL and the node hold

/// One row of the PostgreSQL `reservations` table.
#[derive(Debug, Clone, PartialEq)]
struct PgReservation {
    resource_id: String,
    status: String,
    version: i64,
    reject_reason: Option<String>,
    party_size: i32,
    notes: Option<String>,
    starts_at: i64,
    ends_at: i64,
    origin_node: String,
}

/// Every reservation in PostgreSQL by id.
async fn pg_reservations(pool: &PgPool) -> BTreeMap<String, PgReservation> {
    let rows = sqlx::query(
        "SELECT id::text AS id, resource_id::text AS resource_id, status, version, reject_reason,
                party_size, notes, extract(epoch FROM starts_at)::bigint AS starts_at,
                extract(epoch FROM ends_at)::bigint AS ends_at, origin_node
         FROM reservations",
    )
    .fetch_all(pool)
    .await
    .expect("read the PostgreSQL reservations");
    rows.iter()
        .map(|row| {
            (
                row.get::<String, _>("id"),
                PgReservation {
                    resource_id: row.get("resource_id"),
                    status: row.get("status"),
                    version: row.get("version"),
                    reject_reason: row.get("reject_reason"),
                    party_size: row.get("party_size"),
                    notes: row.get("notes"),
                    starts_at: row.get("starts_at"),
                    ends_at: row.get("ends_at"),
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

fn second_of(value: &Value) -> i64 {
    value
        .as_str()
        .and_then(|text| text.parse::<Timestamp>().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {value}"))
        .as_second()
}

/// Every reservation the node holds, by id, through the list endpoint.
async fn local_reservations(app: &TestApp) -> BTreeMap<String, Value> {
    app.list_all("/v1/reservations", &app.admin_token, &[("limit", "200")])
        .await
        .into_iter()
        .map(|item| (id_of(&item), item))
        .collect()
}

/// Every reservation id a server at `address` holds, through the list
/// endpoint (for the binary, which has no [`TestApp`]).
async fn local_ids_at(client: &Client, address: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "200".to_owned())];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let reply = send(
            client
                .get(format!("{address}/v1/reservations"))
                .bearer_auth(ADMIN_TOKEN)
                .query(&query),
        )
        .await;
        let page = reply.assert_status(200);
        ids.extend(page["items"].as_array().expect("items").iter().map(id_of));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}

/// Polls `GET /v1/reservations/{id}` until `done` holds; returns the
/// reservation.
async fn wait_for_reservation(
    app: &TestApp,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let reply = app.get_reservation(&app.admin_token, id).await;
        let reservation = reply.assert_status(200).clone();
        if done(&reservation) {
            return reservation;
        }
        if Instant::now() > deadline {
            panic!("waited {CONVERGE:?} for reservation {id} to be {what}; it is {reservation}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// The real binary, for SIGKILL and SIGTERM

/// The `reservoir` binary as a child process; killed when dropped.
struct Binary {
    child: Child,
    address: String,
    log: PathBuf,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    /// Starts the binary on a free port with the test admin token and `args`;
    /// its output goes to `<log_dir>/run-<run>.log`.
    fn start(data_dir: &Path, log_dir: &Path, run: u32, args: &[String]) -> Binary {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = log_dir.join(format!("run-{run}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_reservoir"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RESERVOIR_") {
                command.env_remove(name);
            }
        }
        // These tests book in bulk as admin: no rate limits or booking quotas.
        for limit in [
            "RESERVOIR_RATE_PER_KEY",
            "RESERVOIR_LIMIT_USER_PER_HOUR",
            "RESERVOIR_LIMIT_USER_PER_DAY",
            "RESERVOIR_LIMIT_USER_RESOURCE_PER_DAY",
        ] {
            command.env(limit, "0");
        }
        let child = command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--admin-token")
            .arg(ADMIN_TOKEN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start the reservoir binary");
        Binary {
            child,
            address: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `GET /v1/sync/status` answers 200.
    async fn wait_ready(&mut self, client: &Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("reservoir exited early with {status}:\n{}", self.log());
            }
            let probe = client
                .get(format!("{}/v1/sync/status", self.address))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await;
            if let Ok(response) = probe
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("reservoir never became ready:\n{}", self.log());
    }

    /// Sends a signal (`-KILL`, `-TERM`) with kill(1).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed: {status}");
    }

    /// Waits for the process to exit, at most `bound`.
    async fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "reservoir did not exit within {bound:?} of the signal:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn post(&self, client: &Client, path: &str, body: &Value) -> Reply {
        send(
            client
                .post(format!("{}{path}", self.address))
                .bearer_auth(ADMIN_TOKEN)
                .json(body),
        )
        .await
    }

    /// `POST /v1/resources` with the given capacity, expecting 201; the id.
    async fn new_resource(&self, client: &Client, capacity: u32) -> String {
        let body = json!({"name": format!("room-{}", Uuid::new_v4()), "capacity": capacity});
        id_of(
            self.post(client, "/v1/resources", &body)
                .await
                .assert_status(201),
        )
    }
}

fn http_client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build HTTP client")
}

// ---------------------------------------------------------------------------
// The infrastructure itself

#[tokio::test]
async fn postgres_tests_fail_with_a_hint_when_postgres_is_unreachable() {
    let outcome = tokio::spawn(test_database_at("postgres://postgres@127.0.0.1:1/postgres")).await;
    let panic = outcome.expect_err("connecting to a closed port must fail the test");
    let message = match panic.into_panic().downcast::<String>() {
        Ok(message) => *message,
        Err(other) => format!("{:?}", other.downcast_ref::<&str>()),
    };
    assert!(
        message.starts_with(
            "PostgreSQL is not reachable at postgres://postgres@127.0.0.1:1/postgres: start it with \
             `pg_ctlcluster --skip-systemctl-redirect 15 main start` (or set RESERVOIR_TEST_POSTGRES_URL)"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn throwaway_postgres_keeps_its_data_across_a_stop() {
    let mut postgres = ThrowawayPostgres::start().await;
    let pool = pool_to(&postgres.url()).await;
    sqlx::raw_sql("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    postgres.stop().await;
    assert!(
        sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            .connect(&postgres.url())
            .await
            .is_err(),
        "a stopped cluster accepted a connection"
    );
    postgres.start_again().await;

    let pool = pool_to(&postgres.url()).await;
    let kept: i32 = sqlx::query_scalar("SELECT n FROM kept")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, 7);
    assert_eq!(
        with_database(&postgres.url(), "other"),
        postgres.url_for("other")
    );
}

// ---------------------------------------------------------------------------
// The sync

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_creates_reach_postgres_once_with_their_final_versions() {
    let db = test_database().await;
    let app = spawn_syncing(&db.url, "node-10k").await;
    let mut created = Vec::new();
    for _ in 0..20 {
        let resource = app.new_resource(2).await;
        let items: Vec<Value> = (0..500).map(|i| in_hour(&resource, i)).collect();
        created.extend(app.book_all(items).await);
    }
    assert_eq!(created.len(), 10_000);

    // Changes and cancels while the creates are still on their way.
    for id in &created[..100] {
        let reply = app
            .patch_reservation(&app.admin_token, id, &json!({"notes": "changed"}))
            .await;
        assert_eq!(reply.assert_status(200)["version"], 2);
    }
    for id in &created[..50] {
        let reply = app
            .patch_reservation(&app.admin_token, id, &json!({"party_size": 2}))
            .await;
        assert_eq!(reply.assert_status(200)["version"], 3);
    }
    for id in created[100..200].iter().chain(&created[..20]) {
        app.cancel_reservation(&app.admin_token, id)
            .await
            .assert_status(200);
    }

    let status = wait_until_synced(&app).await;

    assert_eq!(pg_counts(&db.pool).await, (10_000, 10_000));
    assert_eq!(counter(&status, "dead_letters"), 0, "{status}");
    assert!(counter(&status, "rows_sent") >= 10_000, "{status}");
    assert!(counter(&status, "batches_sent") >= 1, "{status}");
    let local = local_reservations(&app).await;
    assert_eq!(local.len(), 10_000);
    let pg = pg_reservations(&db.pool).await;
    assert_eq!(
        pg.keys().collect::<Vec<_>>(),
        local.keys().collect::<Vec<_>>(),
        "the ids in PostgreSQL are not the node's"
    );
    for (id, mine) in &local {
        let theirs = &pg[id];
        let expected = PgReservation {
            resource_id: mine["resource_id"].as_str().unwrap().to_owned(),
            status: mine["status"].as_str().unwrap().to_owned(),
            version: mine["version"].as_i64().unwrap(),
            reject_reason: None,
            party_size: mine["party_size"].as_i64().unwrap() as i32,
            notes: mine["notes"].as_str().map(str::to_owned),
            starts_at: second_of(&mine["starts_at"]),
            ends_at: second_of(&mine["ends_at"]),
            origin_node: "node-10k".to_owned(),
        };
        assert_eq!(theirs, &expected, "reservation {id}: local {mine}");
        assert_eq!(mine["sync_state"], "synced", "{mine}");
    }
    // The spot checks the loop above covers, spelled out.
    assert_eq!(
        (pg[&created[0]].status.as_str(), pg[&created[0]].version),
        ("cancelled", 4)
    );
    assert_eq!(
        (pg[&created[30]].status.as_str(), pg[&created[30]].version),
        ("confirmed", 3)
    );
    assert_eq!(pg[&created[30]].party_size, 2);
    assert_eq!(
        (pg[&created[80]].notes.as_deref(), pg[&created[80]].version),
        (Some("changed"), 2)
    );
    assert_eq!(
        (pg[&created[150]].status.as_str(), pg[&created[150]].version),
        ("cancelled", 2)
    );
    assert_eq!(pg[&created[9_999]].version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_load_loses_no_request_and_no_write() {
    const CLIENTS: i64 = 20;
    const EACH: i64 = 50;
    let mut postgres = ThrowawayPostgres::start().await;
    let app = spawn_syncing(&postgres.url(), "node-outage").await;
    let resource = app.new_resource(1).await;
    wait_until_synced(&app).await;

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let (stopped_tx, stopped_rx) = watch::channel(false);
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (client, address) = (app.client.clone(), app.address.clone());
        let (resource, acknowledged) = (resource.clone(), acknowledged.clone());
        let mut stopped = stopped_rx.clone();
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EACH {
                if i == EACH / 2 {
                    // The second half runs while PostgreSQL is down.
                    stopped.wait_for(|down| *down).await.unwrap();
                }
                let reply = send(
                    client
                        .post(format!("{address}/v1/reservations"))
                        .bearer_auth(ADMIN_TOKEN)
                        .json(&in_hour(&resource, c * EACH + i)),
                )
                .await;
                ids.push(id_of(reply.assert_status(201)));
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            ids
        }));
    }
    let deadline = Instant::now() + CONVERGE;
    while acknowledged.load(Ordering::SeqCst) < 200 {
        assert!(Instant::now() < deadline, "the load never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    postgres.stop().await;
    stopped_tx.send(true).unwrap();
    let mut ids = BTreeSet::new();
    for client in clients {
        ids.extend(client.await.expect("a load client panicked"));
    }
    assert_eq!(ids.len(), (CLIENTS * EACH) as usize);
    let down = wait_for_status(&app, "a failed sync while PostgreSQL is down", |s| {
        s["consecutive_failures"].as_u64().is_some_and(|n| n > 0) && s["last_error"].is_string()
    })
    .await;
    assert!(counter(&down, "pending") > 0, "{down}");
    assert!(down["oldest_pending_age_ms"].is_u64(), "{down}");
    // Reads are served from SQLite alone meanwhile.
    let some = ids.iter().next().unwrap();
    app.get_reservation(&app.admin_token, some)
        .await
        .assert_status(200);

    postgres.start_again().await;
    let status = wait_until_synced(&app).await;

    assert_eq!(counter(&status, "consecutive_failures"), 0, "{status}");
    assert!(status["last_success_at"].is_string(), "{status}");
    let pool = pool_to(&postgres.url()).await;
    assert_eq!(pg_counts(&pool).await, (1_000, 1_000));
    let pg = pg_reservations(&pool).await;
    assert_eq!(pg.keys().cloned().collect::<BTreeSet<_>>(), ids);
    assert!(
        pg.values()
            .all(|r| r.status == "confirmed" && r.version == 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_syncing_then_restart_delivers_every_acknowledged_write_once() {
    let db = test_database().await;
    let data_dir = tempfile::tempdir().unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let client = http_client();
    // Small batches: the sync needs many round trips, so the kill lands
    // while it is under way.
    let args = sync_args(&db.url, "node-kill", &[("--sync-batch", "50")]);
    let mut first = Binary::start(data_dir.path(), log_dir.path(), 1, &args);
    first.wait_ready(&client).await;
    let resource = first.new_resource(&client, 1).await;
    let address = first.address.clone();

    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let mut burst = Vec::new();
    for c in 0..8_i64 {
        let (client, address, resource) = (client.clone(), address.clone(), resource.clone());
        let acknowledged = acknowledged.clone();
        burst.push(tokio::spawn(async move {
            for i in 0..60 {
                let reply = send(
                    client
                        .post(format!("{address}/v1/reservations"))
                        .bearer_auth(ADMIN_TOKEN)
                        .json(&in_hour(&resource, c * 100 + i)),
                )
                .await;
                let id = id_of(reply.assert_status(201));
                acknowledged.lock().unwrap().push(id);
            }
        }));
    }
    for b in 0..2_i64 {
        let (client, address, resource) = (client.clone(), address.clone(), resource.clone());
        let acknowledged = acknowledged.clone();
        burst.push(tokio::spawn(async move {
            let items: Vec<Value> = (0..500)
                .map(|i| in_hour(&resource, 1_000 + b * 500 + i))
                .collect();
            let reply = send(
                client
                    .post(format!("{address}/v1/reservations/batch"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({ "reservations": items })),
            )
            .await;
            for result in reply.assert_status(200)["results"].as_array().unwrap() {
                assert_eq!(result["status"], 201, "{result}");
                acknowledged
                    .lock()
                    .unwrap()
                    .push(id_of(&result["reservation"]));
            }
        }));
    }
    for task in burst {
        task.await.expect("a burst client panicked");
    }
    let before = sync_status_at(&client, &address).await;
    first.signal("-KILL");
    let _ = first.wait_exit(Duration::from_secs(30)).await;
    eprintln!("killed the node with this sync status: {before}");
    let acknowledged: BTreeSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    assert_eq!(acknowledged.len(), 8 * 60 + 1_000);

    let mut second = Binary::start(data_dir.path(), log_dir.path(), 2, &args);
    second.wait_ready(&client).await;
    wait_until_synced_at(&client, &second.address).await;

    let pg = pg_reservations(&db.pool).await;
    let (count, distinct) = pg_counts(&db.pool).await;
    assert_eq!(
        (count, distinct),
        (acknowledged.len() as i64, acknowledged.len() as i64)
    );
    let in_pg: BTreeSet<String> = pg.keys().cloned().collect();
    let missing: Vec<_> = acknowledged.difference(&in_pg).collect();
    let unknown: Vec<_> = in_pg.difference(&acknowledged).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "missing in PostgreSQL: {missing:?}; not acknowledged: {unknown:?}"
    );
    assert!(
        pg.values()
            .all(|r| r.version == 1 && r.status == "confirmed")
    );
    assert_eq!(local_ids_at(&client, &second.address).await, acknowledged);
}

#[tokio::test]
async fn a_change_arrives_after_its_create_and_an_old_version_never_rolls_back() {
    let db = test_database().await;
    let app = spawn_syncing(&db.url, "node-order").await;
    let resource = app.new_resource(2).await;

    // Create, change, change, cancel in quick succession.
    let quick = id_of(
        &app.book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
            .await,
    );
    app.patch_reservation(&app.admin_token, &quick, &json!({"notes": "second"}))
        .await
        .assert_status(200);
    app.patch_reservation(&app.admin_token, &quick, &json!({"party_size": 2}))
        .await
        .assert_status(200);
    app.cancel_reservation(&app.admin_token, &quick)
        .await
        .assert_status(200);
    // Create, sync, change, sync, cancel, sync.
    let slow = id_of(
        &app.book(&app.admin_token, &resource, &at("12:00"), &at("13:00"))
            .await,
    );
    wait_until_synced(&app).await;
    assert_eq!(pg_reservations(&db.pool).await[&slow].version, 1);
    app.patch_reservation(&app.admin_token, &slow, &json!({"notes": "changed"}))
        .await
        .assert_status(200);
    wait_until_synced(&app).await;
    let changed = &pg_reservations(&db.pool).await[&slow];
    assert_eq!(
        (changed.version, changed.notes.as_deref()),
        (2, Some("changed"))
    );
    app.cancel_reservation(&app.admin_token, &slow)
        .await
        .assert_status(200);
    wait_until_synced(&app).await;

    let pg = pg_reservations(&db.pool).await;
    let quick_pg = &pg[&quick];
    assert_eq!(
        (
            quick_pg.status.as_str(),
            quick_pg.version,
            quick_pg.party_size,
            quick_pg.notes.as_deref()
        ),
        ("cancelled", 4, 2, Some("second"))
    );
    let slow_pg = &pg[&slow];
    assert_eq!(
        (
            slow_pg.status.as_str(),
            slow_pg.version,
            slow_pg.notes.as_deref()
        ),
        ("cancelled", 3, Some("changed"))
    );
    for id in [&quick, &slow] {
        let local = app.get_reservation(&app.admin_token, id).await;
        let local = local.assert_status(200);
        assert_eq!(local["sync_state"], "synced", "{local}");
        assert_eq!(local["version"], pg[id].version, "{local}");
    }

    // Re-sent old batches, straight to the function the nodes call.
    let room = Uuid::new_v4().to_string();
    let booking = Uuid::new_v4().to_string();
    let micros = |hour: i64| (BASE_SECOND + 3600 * hour) * 1_000_000;
    let resource_row = |version: i64, name: &str| {
        json!([{
            "id": room, "name": name, "capacity": 1, "timezone": "UTC", "slot_minutes": 30,
            "opening_hours": null, "version": version,
            "created_at": micros(0), "updated_at": micros(version)
        }])
    };
    let reservation_row = |version: i64, notes: &str| {
        json!([{
            "id": booking, "resource_id": room, "user_id": "direct",
            "starts_at": micros(10), "ends_at": micros(11), "party_size": 1,
            "status": "confirmed", "version": version, "notes": notes,
            "metadata": {"v": version}, "created_at": micros(0), "updated_at": micros(version)
        }])
    };
    let apply = |resources: Value, reservations: Value| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, String, String, i64, Option<String>)>(
                "SELECT kind, id::text, status, version, reason
                 FROM reservoir_apply_batch($1, $2::text::jsonb, $3::text::jsonb)",
            )
            .bind("direct-node")
            .bind(resources.to_string())
            .bind(reservations.to_string())
            .fetch_all(&pool)
            .await
            .expect("call reservoir_apply_batch")
        }
    };
    let stored = || {
        let pool = db.pool.clone();
        let (room, booking) = (room.clone(), booking.clone());
        async move {
            let reservation: (i64, String, Option<String>) = sqlx::query_as(
                "SELECT version, status, notes FROM reservations WHERE id = $1::text::uuid",
            )
            .bind(&booking)
            .fetch_one(&pool)
            .await
            .unwrap();
            let resource: (i64, String) =
                sqlx::query_as("SELECT version, name FROM resources WHERE id = $1::text::uuid")
                    .bind(&room)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (reservation, resource)
        }
    };
    let first = apply(resource_row(1, "first"), reservation_row(1, "v1")).await;
    assert_eq!(
        first,
        [(
            "reservation".to_owned(),
            booking.clone(),
            "confirmed".to_owned(),
            1,
            None
        )]
    );
    apply(resource_row(2, "renamed"), reservation_row(2, "v2")).await;
    let v2 = stored().await;
    assert_eq!(
        v2,
        (
            (2, "confirmed".to_owned(), Some("v2".to_owned())),
            (2, "renamed".to_owned())
        )
    );

    let resent = apply(resource_row(1, "first"), reservation_row(1, "v1")).await;

    assert_eq!(
        resent,
        [(
            "reservation".to_owned(),
            booking.clone(),
            "confirmed".to_owned(),
            2,
            None
        )]
    );
    assert_eq!(stored().await, v2);
    // The same version again changes nothing either.
    apply(json!([]), reservation_row(2, "v2 again")).await;
    assert_eq!(stored().await, v2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_filling_the_last_seats_leave_exactly_capacity_confirmed() {
    const CAPACITY: usize = 2;
    let db = test_database().await;
    let a = spawn_syncing(&db.url, "node-a").await;
    let b = spawn_syncing(&db.url, "node-b").await;
    let resource = Uuid::new_v4().to_string();
    let body = json!({"id": resource, "name": "the last seats", "capacity": CAPACITY});
    a.create_resource(body.clone()).await;
    b.create_resource(body).await;
    let nodes = [&a, &b];

    // Five bookings of the same hour on each node at once.
    let booking = reservation_body(&resource, &at("10:00"), &at("11:00"));
    let mut attempts = Vec::new();
    for node in nodes {
        for _ in 0..5 {
            attempts.push(node.create_reservation(&node.admin_token, &booking));
        }
    }
    let replies = futures::future::join_all(attempts).await;
    let mut created: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for (index, reply) in replies.iter().enumerate() {
        match reply.status.as_u16() {
            201 => created[index / 5].push(id_of(&reply.body)),
            _ => {
                reply.assert_problem(409, "capacity-exceeded");
            }
        }
    }
    assert_eq!(
        created.each_ref().map(Vec::len),
        [CAPACITY, CAPACITY],
        "each node admits capacity locally"
    );
    for node in nodes {
        wait_until_synced(node).await;
    }

    let pg = pg_reservations(&db.pool).await;
    let on_resource: Vec<(&String, &PgReservation)> = pg
        .iter()
        .filter(|(_, r)| r.resource_id == resource)
        .collect();
    assert_eq!(on_resource.len(), 2 * CAPACITY, "{on_resource:?}");
    let confirmed = on_resource
        .iter()
        .filter(|(_, r)| r.status == "confirmed")
        .count();
    assert_eq!(confirmed, CAPACITY, "{on_resource:?}");
    for (id, row) in &on_resource {
        if row.status == "rejected" {
            assert!(
                row.reject_reason.as_deref().is_some_and(|r| !r.is_empty()),
                "{id}: {row:?}"
            );
            assert_eq!(
                row.version, 2,
                "rejected in PostgreSQL at version + 1: {row:?}"
            );
        } else {
            assert_eq!((row.status.as_str(), row.version), ("confirmed", 1));
        }
    }

    // Each node learns the outcome of its own reservations.
    let mut local_confirmed = [0_usize; 2];
    for (n, node) in nodes.iter().enumerate() {
        for id in &created[n] {
            let row = &pg[id];
            assert_eq!(
                row.origin_node,
                ["node-a", "node-b"][n],
                "origin node of {id}"
            );
            if row.status == "rejected" {
                let local = wait_for_reservation(node, id, "rejected/conflict", |r| {
                    r["status"] == "rejected" && r["sync_state"] == "conflict"
                })
                .await;
                assert_eq!(local["version"], 2, "max(local + 1, PostgreSQL): {local}");
            } else {
                local_confirmed[n] += 1;
                let local = wait_for_reservation(node, id, "confirmed/synced", |r| {
                    r["sync_state"] == "synced"
                })
                .await;
                assert_eq!(
                    (&local["status"], &local["version"]),
                    (&json!("confirmed"), &json!(1))
                );
            }
        }
    }
    assert_eq!(local_confirmed.iter().sum::<usize>(), CAPACITY);

    // A rejection frees the seat the loser held, but through the change feed
    // every node now also holds the winners' bookings: the slot is full on
    // both nodes, and a new booking there is refused up front (409), not
    // accepted locally and rejected later.
    for (n, node) in nodes.iter().enumerate() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let reply = node
                .availability(&resource, &[("from", &at("10:00")), ("to", &at("11:00"))])
                .await;
            let slots = reply.assert_status(200)["slots"]
                .as_array()
                .expect("slots")
                .clone();
            if slots.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {n} still offers the full slot: {}",
                reply.text
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        node.create_reservation(
            &node.admin_token,
            &reservation_body(&resource, &at("10:00"), &at("11:00")),
        )
        .await
        .assert_problem(409, "capacity-exceeded");
    }
    let confirmed_now: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM reservations WHERE resource_id = $1::text::uuid AND status = 'confirmed'",
    )
    .bind(&resource)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(confirmed_now, CAPACITY as i64);
}

#[tokio::test]
async fn a_poison_row_goes_to_the_dead_letters_without_blocking_the_rest() {
    let db = test_database().await;
    let app = spawn_syncing(&db.url, "node-poison").await;
    let resource = app.new_resource(10).await;
    let first = id_of(
        &app.book(&app.admin_token, &resource, &at("08:00"), &at("09:00"))
            .await,
    );
    wait_until_synced(&app).await;
    sqlx::query(
        "ALTER TABLE reservations ADD CONSTRAINT no_poison CHECK (notes IS DISTINCT FROM 'poison')",
    )
    .execute(&db.pool)
    .await
    .expect("add the poison constraint");

    let items: Vec<Value> = (0..7)
        .map(|i| {
            let notes = if i == 3 {
                "poison".to_owned()
            } else {
                format!("fine {i}")
            };
            with(in_hour(&resource, i), "notes", json!(notes))
        })
        .collect();
    let batch = app.book_all(items).await;
    let poison = batch[3].clone();
    let mut behind = Vec::new();
    for i in 10..12 {
        let reply = app
            .create_reservation(&app.admin_token, &in_hour(&resource, i))
            .await;
        behind.push(id_of(reply.assert_status(201)));
    }

    let status = wait_until_synced(&app).await;

    assert_eq!(counter(&status, "dead_letters"), 1, "{status}");
    let pg = pg_reservations(&db.pool).await;
    let expected: BTreeSet<&String> = batch
        .iter()
        .filter(|id| **id != poison)
        .chain(&behind)
        .chain([&first])
        .collect();
    assert_eq!(pg.keys().collect::<BTreeSet<_>>(), expected);
    let local = app.get_reservation(&app.admin_token, &poison).await;
    assert_eq!(local.assert_status(200)["sync_state"], "pending");
    for id in &expected {
        let local = app.get_reservation(&app.admin_token, id).await;
        assert_eq!(
            local.assert_status(200)["sync_state"],
            "synced",
            "{}",
            local.text
        );
    }
    // And the queue keeps flowing afterwards.
    let after = id_of(
        app.create_reservation(&app.admin_token, &in_hour(&resource, 20))
            .await
            .assert_status(201),
    );
    let status = wait_until_synced(&app).await;
    assert_eq!(counter(&status, "dead_letters"), 1, "{status}");
    assert!(pg_reservations(&db.pool).await.contains_key(&after));
}

/// A backlog goes in batches of `sync_quiet_batch` rows once no client has
/// called for a second, and of `sync_batch` rows while clients call, even
/// if they only read (`sync::batch_size`: a large batch holds up the
/// requests behind it). Polling the sync status does not count as a call.
#[tokio::test]
async fn a_backlog_goes_in_large_batches_only_while_no_client_calls() {
    let db = test_database().await;
    let proxy = TcpProxy::to_url(&db.url).await;
    proxy.cut();
    let url = proxy.url_for(&db.url);
    let app = spawn_app_with(|config| {
        sync_to(config, &url, "node-sizes");
        config.sync_batch = 50;
        config.sync_quiet_batch = 500;
    })
    .await;
    let resource = app.new_resource(1).await;
    for first in (0..600).step_by(200) {
        app.book_all(
            (first..first + 200)
                .map(|i| in_hour(&resource, i))
                .collect(),
        )
        .await;
    }
    // Nobody writes for longer than a second: the resource and its 600
    // reservations go in batches of 500 and 101.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.restore();
    let quiet = wait_until_synced(&app).await;
    assert_eq!(
        (
            counter(&quiet, "batches_sent"),
            counter(&quiet, "rows_sent")
        ),
        (2, 601),
        "{quiet}"
    );

    // The next backlog drains while a client keeps reading: 50 rows a call
    // at most, so at least 4 calls for its 200 rows.
    proxy.cut();
    let ids = app
        .book_all((600..800).map(|i| in_hour(&resource, i)).collect())
        .await;
    proxy.restore();
    let deadline = Instant::now() + CONVERGE;
    let busy = loop {
        app.get_reservation(&app.admin_token, &ids[0])
            .await
            .assert_status(200);
        let status = sync_status(&app).await;
        if counter(&status, "rows_sent") >= 801 {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the backlog did not go: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let batches = counter(&busy, "batches_sent") - 2;
    let rows = counter(&busy, "rows_sent") - 601;
    assert!(
        batches >= 4 && rows <= 50 * batches,
        "{rows} rows in {batches} batches while a client read: {busy}"
    );
    db.cleanup().await;
}

/// A backlog large enough to be split into lanes: each resource, with all
/// of its reservations, is stored by one PostgreSQL transaction, the lanes
/// commit separately, and when one lane fails the batch is sent again
/// without the lane that had committed being written a second time.
#[tokio::test]
async fn a_large_batch_is_applied_in_lanes_by_resource_and_a_failed_lane_is_sent_again() {
    const RESOURCES: usize = 24;
    const PER_RESOURCE: i64 = 12;
    let (db, _) = crate::drain::migrated().await;
    // The row noted `flaky` fails its first attempt as a serialization
    // failure would; the sequence counts attempts across rollbacks.
    sqlx::raw_sql(
        "CREATE SEQUENCE flaky_attempts;
         CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.notes = 'flaky' THEN
                 IF nextval('flaky_attempts') = 1 THEN
                     RAISE EXCEPTION 'a passing failure' USING ERRCODE = 'serialization_failure';
                 END IF;
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER fail_once BEFORE INSERT ON reservations
             FOR EACH ROW EXECUTE FUNCTION fail_once();",
    )
    .execute(&db.pool)
    .await
    .expect("add the failing trigger");

    let proxy = TcpProxy::to_url(&db.url).await;
    proxy.cut();
    let app = spawn_in_lanes(&proxy.url_for(&db.url), "node-lanes", 2).await;
    let mut items = Vec::new();
    for _ in 0..RESOURCES {
        let resource = app.new_resource(1).await;
        items.extend((0..PER_RESOURCE).map(|i| in_hour(&resource, i)));
    }
    items[7] = with(items[7].clone(), "notes", json!("flaky"));
    app.book_all(items).await;
    let total = RESOURCES as i64 * PER_RESOURCE;

    proxy.restore();
    let status = wait_until_synced(&app).await;

    assert_eq!(counter(&status, "dead_letters"), 0, "{status}");
    let attempts: i64 = sqlx::query_scalar("SELECT last_value FROM flaky_attempts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 2, "the flaky row is stored by its second attempt");
    assert_eq!(pg_counts(&db.pool).await, (total, total));
    let local = local_reservations(&app).await;
    assert_eq!(local.len() as i64, total);
    for (id, reservation) in &local {
        assert_eq!(reservation["sync_state"], "synced", "{id}: {reservation}");
    }
    // Two lanes, two transactions: the retry did not rewrite the lane that
    // had committed (a rewrite would stamp its rows with the retry's).
    assert_eq!(writing_transactions(&db.pool, "true").await, 2);
    // Each resource and all of its reservations were stored together.
    let split: Vec<(String,)> = sqlx::query_as(
        "SELECT s.id::text FROM resources AS s JOIN reservations AS r ON r.resource_id = s.id
         GROUP BY s.id, s.change_txid
         HAVING count(DISTINCT r.change_txid) > 1 OR min(r.change_txid) <> s.change_txid",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(split.is_empty(), "resources split across lanes: {split:?}");
    db.cleanup().await;
}

/// Two nodes book the same slots, one of them while cut off from
/// PostgreSQL; when it returns, its backlog goes in two lanes, and the
/// rejections of both lanes come back to it.
#[tokio::test]
async fn rejections_from_every_lane_reach_the_node_that_lost() {
    const RESOURCES: usize = 24;
    const PER_RESOURCE: i64 = 12;
    let db = test_database().await;
    let proxy = TcpProxy::to_url(&db.url).await;
    let a = spawn_syncing(&db.url, "node-a").await;
    let b = spawn_in_lanes(&proxy.url_for(&db.url), "node-b", 2).await;
    let mut items = Vec::new();
    for _ in 0..RESOURCES {
        let resource = Uuid::now_v7().to_string();
        let body = json!({"id": resource, "name": "one seat", "capacity": 1});
        a.create_resource(body.clone()).await;
        b.create_resource(body).await;
        items.extend((0..PER_RESOURCE).map(|i| in_hour(&resource, i)));
    }
    wait_until_synced(&b).await;
    proxy.cut();
    let won = a.book_all(items.clone()).await;
    wait_until_synced(&a).await;
    let lost = b.book_all(items).await;

    proxy.restore();
    let status = wait_until_synced(&b).await;

    assert_eq!(counter(&status, "dead_letters"), 0, "{status}");
    let pg = pg_reservations(&db.pool).await;
    for id in &won {
        assert_eq!((pg[id].status.as_str(), pg[id].version), ("confirmed", 1));
    }
    for id in &lost {
        assert_eq!(
            (pg[id].status.as_str(), pg[id].version),
            ("rejected", 2),
            "{id}"
        );
    }
    let local = local_reservations(&b).await;
    for id in &lost {
        let row = &local[id];
        assert_eq!(
            (&row["status"], &row["sync_state"], &row["version"]),
            (&json!("rejected"), &json!("conflict"), &json!(2)),
            "{id}: {row}"
        );
    }
    assert_eq!(
        writing_transactions(&db.pool, "origin_node = 'node-b'").await,
        2,
        "node-b's backlog went in two lanes"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn the_service_starts_and_serves_while_postgres_is_down_and_migrates_later() {
    let mut postgres = ThrowawayPostgres::start().await;
    postgres.stop().await;
    let app = spawn_syncing(&postgres.url(), "node-late").await;

    let resource = tokio::time::timeout(Duration::from_secs(30), app.new_resource(5))
        .await
        .expect("the service does not answer while PostgreSQL is unreachable");
    assert_eq!(sync_status(&app).await["enabled"], true);
    let mut ids = Vec::new();
    for i in 0..3 {
        let reply = app
            .create_reservation(&app.admin_token, &in_hour(&resource, i))
            .await;
        let reservation = reply.assert_status(201);
        assert_eq!(reservation["sync_state"], "pending", "{reservation}");
        ids.push(id_of(reservation));
    }
    let down = wait_for_status(&app, "a failed sync while PostgreSQL is down", |s| {
        s["consecutive_failures"].as_u64().is_some_and(|n| n > 0) && s["last_error"].is_string()
    })
    .await;
    assert_eq!(down["enabled"], true, "{down}");
    assert!(counter(&down, "pending") >= 3, "{down}");
    assert!(down["last_success_at"].is_null(), "{down}");

    postgres.start_again().await;
    let status = wait_until_synced(&app).await;

    assert_eq!(counter(&status, "consecutive_failures"), 0, "{status}");
    assert!(status["last_success_at"].is_string(), "{status}");
    let pool = pool_to(&postgres.url()).await;
    let pg = pg_reservations(&pool).await;
    assert_eq!(
        pg.keys().collect::<BTreeSet<_>>(),
        ids.iter().collect::<BTreeSet<_>>()
    );
    let resources: Vec<String> = sqlx::query_scalar("SELECT id::text FROM resources")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(resources, [resource]);
    for id in &ids {
        let local = app.get_reservation(&app.admin_token, id).await;
        assert_eq!(local.assert_status(200)["sync_state"], "synced");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_flushes_once_more_and_exits_zero() {
    let db = test_database().await;
    let data_dir = tempfile::tempdir().unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let client = http_client();
    let args = sync_args(&db.url, "node-term", &[("--shutdown-grace-ms", "10000")]);
    let mut server = Binary::start(data_dir.path(), log_dir.path(), 1, &args);
    server.wait_ready(&client).await;
    let resource = server.new_resource(&client, 1).await;
    let address = server.address.clone();
    wait_until_synced_at(&client, &address).await;
    // A slow PostgreSQL: every batch waits for this lock, so writes are still
    // queued when the signal comes (and requests must not wait for it).
    let mut slow = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE reservations IN SHARE MODE")
        .execute(&mut *slow)
        .await
        .unwrap();

    let attempted = Arc::new(Mutex::new(BTreeSet::new()));
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let mut load = Vec::new();
    for c in 0..10_i64 {
        let (client, address, resource) = (client.clone(), address.clone(), resource.clone());
        let (attempted, acknowledged) = (attempted.clone(), acknowledged.clone());
        load.push(tokio::spawn(async move {
            for i in 0..40 {
                let id = Uuid::new_v4().to_string();
                attempted.lock().unwrap().insert(id.clone());
                let body = with(in_hour(&resource, c * 40 + i), "id", json!(id));
                let sent = client
                    .post(format!("{address}/v1/reservations"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    // Refused or closed: the server has stopped accepting.
                    Err(_) => return,
                    Ok(response) => {
                        let reply = Reply::read(response).await;
                        reply.assert_status(201);
                        acknowledged.lock().unwrap().insert(id);
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + CONVERGE;
    while acknowledged.lock().unwrap().len() < 100 {
        assert!(Instant::now() < deadline, "the load never got going");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let queued = sync_status_at(&client, &address).await;
    assert!(counter(&queued, "pending") > 0, "{queued}");
    server.signal("-TERM");
    for task in load {
        task.await.expect("a load client panicked");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    slow.rollback().await.unwrap();
    let exit = server.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(
        exit.code(),
        Some(0),
        "exit status {exit}:\n{}",
        server.log()
    );

    let attempted = attempted.lock().unwrap().clone();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let in_pg: BTreeSet<String> = pg_reservations(&db.pool).await.into_keys().collect();
    let missing: Vec<_> = acknowledged.difference(&in_pg).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not flushed before the exit: {missing:?}"
    );
    assert!(in_pg.is_subset(&attempted));

    // Nothing was left behind: the next start finds an empty outbox and the
    // same reservations.
    let mut again = Binary::start(data_dir.path(), log_dir.path(), 2, &args);
    again.wait_ready(&client).await;
    let status = sync_status_at(&client, &again.address).await;
    assert_eq!(status["pending"], 0, "{status}");
    assert_eq!(local_ids_at(&client, &again.address).await, in_pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_postgres_is_down_keeps_the_outbox_for_the_next_start() {
    let mut postgres = ThrowawayPostgres::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let client = http_client();
    let args = sync_args(
        &postgres.url(),
        "node-term-down",
        &[("--shutdown-grace-ms", "2000")],
    );
    let mut server = Binary::start(data_dir.path(), log_dir.path(), 1, &args);
    server.wait_ready(&client).await;
    let resource = server.new_resource(&client, 1).await;
    wait_until_synced_at(&client, &server.address).await;

    postgres.stop().await;
    let mut ids = BTreeSet::new();
    for i in 0..20 {
        let reply = server
            .post(&client, "/v1/reservations", &in_hour(&resource, i))
            .await;
        ids.insert(id_of(reply.assert_status(201)));
    }
    server.signal("-TERM");
    let exit = server.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(
        exit.code(),
        Some(0),
        "exit status {exit}:\n{}",
        server.log()
    );

    // Still down: the writes wait in the outbox of the restarted node.
    let mut again = Binary::start(data_dir.path(), log_dir.path(), 2, &args);
    again.wait_ready(&client).await;
    let status = sync_status_at(&client, &again.address).await;
    assert_eq!(counter(&status, "pending"), 20, "{status}");

    postgres.start_again().await;
    wait_until_synced_at(&client, &again.address).await;
    let pool = pool_to(&postgres.url()).await;
    let in_pg: BTreeSet<String> = pg_reservations(&pool).await.into_keys().collect();
    assert_eq!(in_pg, ids);
    assert_eq!(pg_counts(&pool).await, (20, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_postgres_returns_flushes_what_the_backoff_held_back() {
    let mut postgres = ThrowawayPostgres::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let client = http_client();
    // After a failure the sync sleeps up to ten minutes: only the last flush
    // at shutdown can send what is queued when PostgreSQL is back.
    let args = sync_args(
        &postgres.url(),
        "node-term-back",
        &[
            ("--sync-backoff-min-ms", "600000"),
            ("--sync-backoff-max-ms", "600000"),
            ("--shutdown-grace-ms", "10000"),
        ],
    );
    let mut server = Binary::start(data_dir.path(), log_dir.path(), 1, &args);
    server.wait_ready(&client).await;
    let resource = server.new_resource(&client, 1).await;
    wait_until_synced_at(&client, &server.address).await;

    postgres.stop().await;
    let mut ids = BTreeSet::new();
    for i in 0..10 {
        let reply = server
            .post(&client, "/v1/reservations", &in_hour(&resource, i))
            .await;
        ids.insert(id_of(reply.assert_status(201)));
    }
    wait_for_status_at(&client, &server.address, "a failed sync", |s| {
        s["consecutive_failures"].as_u64().is_some_and(|n| n > 0)
    })
    .await;
    for i in 10..20 {
        let reply = server
            .post(&client, "/v1/reservations", &in_hour(&resource, i))
            .await;
        ids.insert(id_of(reply.assert_status(201)));
    }
    postgres.start_again().await;
    server.signal("-TERM");
    let exit = server.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(
        exit.code(),
        Some(0),
        "exit status {exit}:\n{}",
        server.log()
    );

    let pool = pool_to(&postgres.url()).await;
    let in_pg: BTreeSet<String> = pg_reservations(&pool).await.into_keys().collect();
    let missing: Vec<_> = ids.difference(&in_pg).collect();
    assert!(
        missing.is_empty(),
        "not flushed at shutdown although PostgreSQL was up: {missing:?}\n{}",
        server.log()
    );
    assert_eq!(in_pg, ids);
}

/// PostgreSQL's acknowledgement moves a row from `pending` to `synced`. A
/// copy already in L1 is updated (the next read is a hit and says `synced`);
/// a row nobody read is not put into L1 (its next read is a miss), so a
/// drain of many rows does not push the hot ones out of the cache.
#[tokio::test]
async fn an_acknowledged_row_is_updated_in_l1_and_nothing_unread_is_cached() {
    let db = test_database().await;
    let proxy = TcpProxy::to_url(&db.url).await;
    proxy.cut();
    let app = spawn_syncing(&proxy.url_for(&db.url), "node-ack").await;
    let resource = app.new_resource(5).await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let created = app
            .create_reservation(&app.admin_token, &in_hour(&resource, i))
            .await;
        assert_eq!(created.assert_status(201)["sync_state"], "pending");
        ids.push(id_of(created.assert_status(201)));
    }
    let (read, unread) = (&ids[0], &ids[1]);
    for _ in 0..2 {
        let pending = app.get_reservation(&app.admin_token, read).await;
        assert_eq!(pending.assert_status(200)["sync_state"], "pending");
    }

    proxy.restore();
    wait_until_synced(&app).await;
    let before = stats(&app).await;
    let cached = app.get_reservation(&app.admin_token, read).await;
    assert_eq!(cached.assert_status(200)["sync_state"], "synced");
    assert_eq!(cached.etag(), Some("\"1\""));
    let after_read = stats(&app).await;
    assert_eq!(delta(&before, &after_read, "l1", "hits"), 1, "{after_read}");
    assert_eq!(
        delta(&before, &after_read, "l1", "misses"),
        0,
        "{after_read}"
    );

    let loaded = app.get_reservation(&app.admin_token, unread).await;
    assert_eq!(loaded.assert_status(200)["sync_state"], "synced");
    let after_unread = stats(&app).await;
    assert_eq!(
        delta(&after_read, &after_unread, "l1", "misses"),
        1,
        "{after_unread}"
    );
    db.cleanup().await;
}

/// Calls `reservoir_apply_rows` on `conn` with `count` new rows on
/// `resource`, in hourly slots from `first`, at `version`.
async fn apply_new_rows(
    conn: &mut sqlx::PgConnection,
    resource: Uuid,
    first: i64,
    count: i64,
    version: i64,
) {
    sqlx::query(
        "WITH g AS (SELECT i FROM generate_series($2::bigint, $2 + $3 - 1) AS i)
         SELECT count(*) FROM reservoir_apply_rows('plans', '[]'::jsonb,
             (SELECT array_agg(gen_random_uuid() ORDER BY i) FROM g),
             (SELECT array_agg($1::uuid ORDER BY i) FROM g),
             (SELECT array_agg('someone'::text ORDER BY i) FROM g),
             (SELECT array_agg(($4 + i * 3600) * 1000000 ORDER BY i) FROM g),
             (SELECT array_agg(($4 + i * 3600 + 1800) * 1000000 ORDER BY i) FROM g),
             (SELECT array_agg(1 ORDER BY i) FROM g),
             (SELECT array_agg('confirmed'::text ORDER BY i) FROM g),
             (SELECT array_agg($5::bigint ORDER BY i) FROM g),
             (SELECT array_agg(NULL::text ORDER BY i) FROM g),
             (SELECT array_agg(NULL::text ORDER BY i) FROM g),
             (SELECT array_agg('h'::text ORDER BY i) FROM g),
             (SELECT array_agg(0::bigint ORDER BY i) FROM g),
             (SELECT array_agg(0::bigint ORDER BY i) FROM g))",
    )
    .bind(resource)
    .bind(first)
    .bind(count)
    .bind(BASE_SECOND)
    .bind(version)
    .execute(conn)
    .await
    .expect("call reservoir_apply_rows");
}

// A node's connection calls the apply from its first write on, when the
// table is empty, and keeps calling it as the table grows. With the plans
// PL/pgSQL cached on the empty table, the check that a batch holds only new
// ids scanned the whole table on every call (migration 0005). Without that
// migration this fails: the call after the table grew scans `reservations`.
// The rows are at version 2, as a batch of updates is: since migration 0006
// a batch of first versions skips that check.
#[tokio::test]
async fn the_apply_plans_for_the_table_as_it_is_not_as_it_was() {
    let (db, _) = crate::drain::migrated().await;
    let resource = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO resources (id, name, capacity, timezone, slot_minutes, version, origin_node,
                                created_at, updated_at)
         VALUES ($1, 'plans', 1, 'UTC', 30, 1, 'plans', now(), now())",
    )
    .bind(resource)
    .execute(&db.pool)
    .await
    .expect("insert the resource");
    let mut conn = db.pool.acquire().await.expect("a connection");
    for call in 0..12 {
        apply_new_rows(&mut conn, resource, call * 2, 2, 2).await;
    }
    sqlx::query(
        "INSERT INTO reservations (id, resource_id, user_id, starts_at, ends_at, party_size, status,
                                   version, origin_node, created_at, updated_at)
         SELECT gen_random_uuid(), $1, 'someone',
                to_timestamp($2 + i * 3600), to_timestamp($2 + i * 3600 + 1800),
                1, 'confirmed', 1, 'plans', now(), now()
         FROM generate_series(100, 30099) AS i",
    )
    .bind(resource)
    .bind(BASE_SECOND as f64)
    .execute(&mut *conn)
    .await
    .expect("grow the table");

    // The session's counters not yet reported (they include earlier
    // transactions'), before and after the call, in one transaction.
    let seq_reads = async |conn: &mut sqlx::PgConnection| -> (i64, i64) {
        sqlx::query_as(
            "SELECT seq_scan, seq_tup_read FROM pg_stat_xact_user_tables
             WHERE relname = 'reservations'",
        )
        .fetch_one(conn)
        .await
        .expect("this session's table counters")
    };
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    let before = seq_reads(&mut conn).await;
    apply_new_rows(&mut conn, resource, 40_000, 5, 2).await;
    let after = seq_reads(&mut conn).await;
    sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
    let (scans, rows) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(
        (scans, rows),
        (0, 0),
        "a call after the table grew to 30,024 rows scanned it {scans} time(s), {rows} rows"
    );
    drop(conn);
    db.cleanup().await;
}

/// The set-based `reservoir_apply_batch` (migration 0002), called directly as
/// a node does: competing rows in one batch are settled in batch order, only
/// the rows that do not fit are rejected, a resource is never overbooked, and
/// an id sent twice in one batch ends at its newest version.
#[tokio::test]
async fn one_batch_settles_competing_rows_in_order_and_never_overbooks() {
    let (db, _) = crate::drain::migrated().await;
    let room = Uuid::new_v4();
    let micros = |hour: i64| (BASE_SECOND + 3600 * hour) * 1_000_000;
    let resources = json!([{
        "id": room, "name": "two seats", "capacity": 2, "timezone": "UTC", "slot_minutes": 60,
        "opening_hours": null, "version": 1, "created_at": micros(0), "updated_at": micros(0)
    }]);
    let row = |id: Uuid, from: i64, to: i64, party: u32, status: &str, version: i64| {
        json!({
            "id": id, "resource_id": room, "user_id": "direct",
            "starts_at": micros(from), "ends_at": micros(to), "party_size": party,
            "status": status, "version": version, "notes": null, "metadata": null,
            "request_hash": "h", "created_at": micros(0), "updated_at": micros(version)
        })
    };
    let apply = |node: &'static str, rows: Vec<Value>| {
        let (pool, resources) = (db.pool.clone(), resources.clone());
        async move {
            sqlx::query_as::<_, (String, Uuid, String, i64, Option<String>)>(
                "SELECT kind, id, status, version, reason
                 FROM reservoir_apply_batch($1, $2::text::jsonb, $3::text::jsonb)",
            )
            .bind(node)
            .bind(resources.to_string())
            .bind(Value::Array(rows).to_string())
            .fetch_all(&pool)
            .await
            .expect("call reservoir_apply_batch")
            .into_iter()
            .map(|(kind, id, status, version, reason)| {
                assert_eq!(kind, "reservation");
                (id, status, version, reason)
            })
            .collect::<Vec<_>>()
        }
    };
    /// Each row's id, status and version, as the assertions compare them.
    fn outcome(rows: &[(Uuid, String, i64, Option<String>)]) -> Vec<(Uuid, &str, i64)> {
        rows.iter().map(|r| (r.0, r.1.as_str(), r.2)).collect()
    }
    let ids: Vec<Uuid> = (0..11).map(|_| Uuid::new_v4()).collect();
    let [a, b, c, d, e, f, g, h, i, j, k] = ids[..] else {
        unreachable!()
    };

    // Node X: A over 10-12 and B over 10-11 fit the two seats.
    let first = apply(
        "node-x",
        vec![
            row(a, 10, 12, 1, "confirmed", 1),
            row(b, 10, 11, 1, "confirmed", 1),
        ],
    )
    .await;
    assert_eq!(outcome(&first), [(a, "confirmed", 1), (b, "confirmed", 1)]);

    // Node Y: C fits 11-12 next to A; D does not fit 10-11 (A and B hold
    // it); E arrives after C and no longer fits 11-12; F (two seats at 12-13)
    // fits; G wants three seats of two.
    let second = apply(
        "node-y",
        vec![
            row(c, 11, 12, 1, "confirmed", 1),
            row(d, 10, 11, 1, "confirmed", 1),
            row(e, 11, 12, 1, "confirmed", 1),
            row(f, 12, 13, 2, "confirmed", 1),
            row(g, 8, 9, 3, "confirmed", 1),
        ],
    )
    .await;
    assert_eq!(
        outcome(&second),
        [
            (c, "confirmed", 1),
            (d, "rejected", 2),
            (e, "rejected", 2),
            (f, "confirmed", 1),
            (g, "rejected", 2),
        ]
    );
    for rejected in second.iter().filter(|r| r.1 == "rejected") {
        let reason = rejected.3.as_deref().unwrap_or_default();
        assert!(reason.contains("capacity 2"), "{reason}");
    }

    // Re-sending D's first version changes nothing: it stays rejected.
    let resent = apply("node-y", vec![row(d, 10, 11, 1, "confirmed", 1)]).await;
    assert_eq!((resent[0].1.as_str(), resent[0].2), ("rejected", 2));

    // First versions only, as a drain sends, but not all new: J is, A was
    // stored above (a batch sent again after a lost answer), K comes twice.
    // The plain INSERT tried first for such a batch fails on A after
    // storing J (migration 0006); nothing of it may remain but what the
    // general statement stores: one J, one K, A as it was.
    let mixed = apply(
        "node-y",
        vec![
            row(j, 16, 17, 1, "confirmed", 1),
            row(a, 10, 12, 1, "confirmed", 1),
            row(k, 17, 18, 2, "confirmed", 1),
            row(k, 17, 18, 2, "confirmed", 1),
        ],
    )
    .await;
    assert_eq!(
        outcome(&mixed),
        [
            (j, "confirmed", 1),
            (a, "confirmed", 1),
            (k, "confirmed", 1),
            (k, "confirmed", 1)
        ]
    );
    let stored: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, changed_by FROM reservations WHERE id = ANY ($1) ORDER BY starts_at, id",
    )
    .bind(vec![a, j, k])
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        [
            (a, "node-x".to_string()),
            (j, "node-y".to_string()),
            (k, "node-y".to_string())
        ]
    );

    // One batch moves B away from 10-11 and, before that in the batch, books
    // H there: B's old seat is free once the batch is stored, so H fits. The
    // same id twice: I's newest version (cancelled) wins, for both entries.
    let third = apply(
        "node-x",
        vec![
            row(h, 10, 11, 1, "confirmed", 1),
            row(i, 14, 15, 1, "confirmed", 1),
            row(b, 15, 16, 1, "confirmed", 2),
            row(i, 14, 15, 1, "cancelled", 2),
        ],
    )
    .await;
    assert_eq!(
        outcome(&third),
        [
            (h, "confirmed", 1),
            (i, "cancelled", 2),
            (b, "confirmed", 2),
            (i, "cancelled", 2)
        ]
    );

    // What Postgres holds never exceeds two seats in any hour.
    for hour in 0..24 {
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT sum(party_size) FROM reservations
             WHERE resource_id = $1 AND status = 'confirmed'
               AND starts_at < reservoir_instant($3) AND ends_at > reservoir_instant($2)",
        )
        .bind(room)
        .bind(micros(hour))
        .bind(micros(hour + 1))
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(held.unwrap_or(0) <= 2, "hour {hour}: {held:?} seats held");
    }
    // Every stored row carries its batch's change stamp (the change feed).
    let unstamped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM reservations WHERE change_txid = 0 OR change_seq = 0
             OR changed_by NOT IN ('node-x', 'node-y')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(unstamped, 0);
}
