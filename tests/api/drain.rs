//! The drain path to PostgreSQL (issue 6): `reservoir_apply_rows` (migration
//! 0003) finds overlapping holds through a btree bounded by each resource's
//! longest hold and (0004) stores a batch of new rows with a plain INSERT
//! and checks each reservation's resource once per statement, and the change
//! feed leaves a node's own rows out in SQL
//! while its cursor still moves past them.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use reservoir::{
    store::postgres::{FeedCursor, Postgres, ReservationRow},
    sync::payload::reservation_row,
};

use crate::support::postgres::{TestDatabase, test_database};

/// 2030-01-01T00:00:00Z.
const BASE_SECOND: i64 = 1_893_456_000;

fn micros(hour: i64) -> i64 {
    (BASE_SECOND + 3600 * hour) * 1_000_000
}

fn room(id: Uuid, capacity: u32) -> Value {
    json!({
        "id": id, "name": "room", "capacity": capacity, "timezone": "UTC", "slot_minutes": 60,
        "opening_hours": null, "version": 1, "created_at": micros(0), "updated_at": micros(0)
    })
}

fn booking(resource: Uuid, from: i64, to: i64) -> ReservationRow {
    ReservationRow {
        id: Uuid::now_v7(),
        resource_id: resource,
        user_id: "drain".into(),
        starts_at: micros(from),
        ends_at: micros(to),
        party_size: 1,
        status: "confirmed",
        version: 1,
        notes: None,
        metadata: Some(r#"{"k":"v"}"#.into()),
        request_hash: "h".into(),
        created_at: micros(0),
        updated_at: micros(0),
    }
}

/// A fresh database holding the PostgreSQL schema.
pub(crate) async fn migrated() -> (TestDatabase, Postgres) {
    let db = test_database().await;
    let postgres = Postgres::new(&db.url).expect("a PostgreSQL URL");
    postgres.migrate().await.expect("migrate");
    (db, postgres)
}

/// Applies `rows` as `node` and returns each row's (status, version).
async fn apply(
    postgres: &Postgres,
    node: &str,
    resources: &[Value],
    rows: &[ReservationRow],
) -> Vec<(String, i64)> {
    let applied = postgres
        .apply_batch(node, resources, rows)
        .await
        .expect("apply a batch");
    assert_eq!(
        applied.iter().map(|a| a.id).collect::<Vec<_>>(),
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        "one outcome per row, in batch order"
    );
    applied.into_iter().map(|a| (a.status, a.version)).collect()
}

/// A hold longer than any seen before on its resource, however it was
/// written (a batch, a hand-written INSERT, a hand-written UPDATE that
/// stretches a row), still blocks a short booking that starts long after the
/// hold starts: the btree probe looks back as far as the longest hold.
#[tokio::test]
async fn a_long_hold_blocks_a_short_booking_inside_it_however_it_was_written() {
    let (db, postgres) = migrated().await;
    let rooms: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let resources: Vec<Value> = rooms.iter().map(|id| room(*id, 1)).collect();
    // Every room first gets a one-hour booking far away: its longest hold
    // is one hour.
    let short: Vec<ReservationRow> = rooms.iter().map(|r| booking(*r, 500, 501)).collect();
    let stored = apply(&postgres, "node-x", &resources, &short).await;
    assert!(stored.iter().all(|(s, _)| s == "confirmed"), "{stored:?}");

    // Room 0: a three-day hold through a batch.
    let long = booking(rooms[0], 0, 72);
    assert_eq!(
        apply(&postgres, "node-x", &[], std::slice::from_ref(&long)).await,
        [("confirmed".to_owned(), 1)]
    );
    // Room 1: the same hold written by hand.
    sqlx::query(
        "INSERT INTO reservations (id, resource_id, user_id, starts_at, ends_at, party_size, status,
             version, origin_node, created_at, updated_at)
         VALUES ($1, $2, 'hand', reservoir_instant($3), reservoir_instant($4), 1, 'confirmed', 1,
                 'hand', now(), now())",
    )
    .bind(Uuid::now_v7())
    .bind(rooms[1])
    .bind(micros(0))
    .bind(micros(72))
    .execute(&db.pool)
    .await
    .expect("insert by hand");
    // Room 2: its one-hour booking stretched by hand to three days.
    sqlx::query(
        "UPDATE reservations SET starts_at = reservoir_instant($2), ends_at = reservoir_instant($3)
         WHERE id = $1",
    )
    .bind(short[2].id)
    .bind(micros(0))
    .bind(micros(72))
    .execute(&db.pool)
    .await
    .expect("update by hand");

    // Another node books an hour on the third day of each hold: no seat is
    // free. An hour after the holds end is.
    let inside: Vec<ReservationRow> = rooms.iter().map(|r| booking(*r, 60, 61)).collect();
    let after: Vec<ReservationRow> = rooms.iter().map(|r| booking(*r, 72, 73)).collect();
    let rows: Vec<ReservationRow> = inside.iter().chain(&after).cloned().collect();
    let outcome = apply(&postgres, "node-y", &[], &rows).await;
    assert_eq!(
        outcome,
        [
            ("rejected".to_owned(), 2),
            ("rejected".to_owned(), 2),
            ("rejected".to_owned(), 2),
            ("confirmed".to_owned(), 1),
            ("confirmed".to_owned(), 1),
            ("confirmed".to_owned(), 1),
        ]
    );

    // What Postgres holds never exceeds the one seat in any hour.
    let overbooked: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT r.id, h.hour FROM unnest($1::uuid[]) AS r(id)
         CROSS JOIN generate_series(0, 80) AS h(hour)
         WHERE (SELECT count(*) FROM reservations AS s
                WHERE s.resource_id = r.id AND s.status = 'confirmed'
                  AND s.starts_at < reservoir_instant($2 + (h.hour + 1) * 3600000000)
                  AND s.ends_at > reservoir_instant($2 + h.hour * 3600000000)) > 1",
    )
    .bind(&rooms)
    .bind(micros(0))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(overbooked.is_empty(), "overbooked: {overbooked:?}");

    // Each room's longest hold is the three days, so later probes stay
    // bounded (with no span at all a probe would scan the whole history).
    let spans: Vec<i64> = sqlx::query_scalar(
        "SELECT longest FROM unnest($1::uuid[]) WITH ORDINALITY AS r(id, n)
         JOIN reservoir_spans AS s ON s.resource_id = r.id ORDER BY r.n",
    )
    .bind(&rooms)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(spans, [72 * 3_600_000_000_i64; 3]);
    db.cleanup().await;
}

/// A stored row, column by column.
type Stored = (
    Uuid,
    String,
    i64,
    i64,
    i32,
    String,
    i64,
    Option<String>,
    Option<Value>,
    Option<String>,
    String,
);

/// The typed-array call stores every column as sent, and the jsonb form
/// (for callers on an older build) goes through the same function.
#[tokio::test]
async fn typed_rows_store_every_column_and_the_jsonb_form_still_works() {
    let (db, postgres) = migrated().await;
    let id = Uuid::now_v7();
    let mut row = booking(id, 1, 2);
    row.resource_id = id;
    row.id = Uuid::now_v7();
    row.notes = Some("window seat".into());
    row.party_size = 2;
    apply(
        &postgres,
        "node-x",
        &[room(id, 4)],
        std::slice::from_ref(&row),
    )
    .await;
    let stored: Stored = sqlx::query_as(
        "SELECT resource_id, user_id, (extract(epoch FROM starts_at) * 1000000)::bigint,
                    (extract(epoch FROM ends_at) * 1000000)::bigint, party_size, status, version,
                    notes, metadata, request_hash, changed_by
             FROM reservations WHERE id = $1",
    )
    .bind(row.id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        (
            id,
            "drain".to_owned(),
            micros(1),
            micros(2),
            2,
            "confirmed".to_owned(),
            1,
            Some("window seat".to_owned()),
            Some(json!({"k": "v"})),
            Some("h".to_owned()),
            "node-x".to_owned()
        )
    );

    let other = Uuid::now_v7();
    let doc = json!([{
        "id": other, "resource_id": id, "user_id": "old", "starts_at": micros(1),
        "ends_at": micros(2), "party_size": 3, "status": "confirmed", "version": 1,
        "notes": null, "metadata": null, "request_hash": "h2",
        "created_at": micros(0), "updated_at": micros(0)
    }]);
    // Two of four seats are taken: three more do not fit.
    let old: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT id, status, version FROM reservoir_apply_batch('node-old', '[]', $1::text::jsonb)",
    )
    .bind(doc.to_string())
    .fetch_all(&db.pool)
    .await
    .expect("the jsonb form");
    assert_eq!(old, [(other, "rejected".to_owned(), 2)]);

    // Column arrays of different lengths are refused for good.
    let mismatched = sqlx::query(
        "SELECT * FROM reservoir_apply_rows('node-x', '[]', ARRAY[$1]::uuid[], '{}', '{}', '{}', '{}',
             '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
    )
    .bind(Uuid::now_v7())
    .execute(&db.pool)
    .await;
    assert!(
        matches!(
            mismatched.map_err(reservoir::store::postgres::classify),
            Err(reservoir::store::postgres::SyncError::Permanent(_))
        ),
        "a malformed call is a permanent error"
    );
    db.cleanup().await;
}

/// Waits until a session of this test's database waits for a lock.
async fn wait_for_a_lock_wait(db: &TestDatabase, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "never waited: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The SQLSTATE a statement fails with, `None` if it succeeds.
async fn sqlstate<'e, E>(executor: E, sql: &str, binds: &[Uuid]) -> Option<String>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let mut query = sqlx::query(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    let error = query.execute(executor).await.err()?;
    Some(
        error
            .as_database_error()
            .and_then(|e| e.code())
            .unwrap_or_else(|| panic!("not a database error: {error}"))
            .into_owned(),
    )
}

/// A reservation written by hand for resource `$2`, outside the apply
/// function: the triggers must hold for such rows too.
const HAND_INSERT: &str = "INSERT INTO reservations (id, resource_id, user_id, starts_at, ends_at,
         party_size, status, version, origin_node, created_at, updated_at)
     VALUES ($1, $2, 'hand', now(), now() + interval '1 hour', 1, 'confirmed', 1, 'hand', now(), now())";

/// A batch of new, distinct ids is stored by migration 0004's plain INSERT:
/// its outcome, rejections and stamps are those of the general statement. An
/// id that another transaction stores while the batch waits for it is
/// settled in the same call (migration 0006): the INSERT is undone and the
/// general statement, which sees the stored row, stores the rest. Before,
/// the batch failed with a retryable error; never a permanent one, which
/// would dead-letter good rows.
#[tokio::test]
async fn new_rows_take_the_fast_path_and_a_racing_insert_is_settled_in_the_same_call() {
    let (db, postgres) = migrated().await;
    let resource = Uuid::now_v7();
    // Two seats at 05-06. Of the three confirmed rows the third does not fit;
    // a cancelled row and a row rejected on its node take no seat and are
    // stored as sent.
    let mut cancelled = booking(resource, 5, 6);
    cancelled.status = "cancelled";
    let mut rejected_locally = booking(resource, 5, 6);
    rejected_locally.status = "rejected";
    rejected_locally.version = 2;
    let rows = vec![
        booking(resource, 5, 6),
        cancelled,
        booking(resource, 5, 6),
        booking(resource, 5, 6),
        rejected_locally,
    ];
    let outcome = apply(&postgres, "node-x", &[room(resource, 2)], &rows).await;
    let expected = [
        ("confirmed", 1),
        ("cancelled", 1),
        ("confirmed", 1),
        ("rejected", 2),
        ("rejected", 2),
    ]
    .map(|(s, v)| (s.to_owned(), v));
    assert_eq!(outcome, expected);
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let stamps: Vec<(i64, i64, String, Option<String>)> = sqlx::query_as(
        "SELECT r.change_txid, r.change_seq, r.changed_by, r.reject_reason
         FROM unnest($1::uuid[]) WITH ORDINALITY AS b(id, n) JOIN reservations AS r ON r.id = b.id
         ORDER BY b.n",
    )
    .bind(&ids)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(stamps.len(), rows.len(), "every row is stored");
    assert!(
        stamps.iter().all(|s| s.0 == stamps[0].0 && s.2 == "node-x"),
        "one transaction, stamped with the node: {stamps:?}"
    );
    assert!(
        stamps.windows(2).all(|w| w[0].1 < w[1].1),
        "sequence numbers follow the batch order: {stamps:?}"
    );
    let reason = stamps[3].3.as_deref().unwrap_or_default();
    assert!(reason.contains("capacity 2"), "{reason}");
    assert_eq!(
        stamps[4].3, None,
        "a row rejected on its node is stored as sent"
    );

    // Sent again, the same rows are all known: the general statement answers
    // with what is stored and writes nothing.
    assert_eq!(apply(&postgres, "node-x", &[], &rows).await, expected);
    assert_eq!(last_stamp(&db).await, (stamps[0].0, stamps[4].1));

    // Another transaction stores `raced` while a batch holding it is on its
    // way: the batch, first versions only, goes straight to the INSERT and
    // waits on the uncommitted row.
    let (fresh, raced) = (booking(resource, 20, 21), booking(resource, 22, 23));
    let mut other = db.pool.begin().await.unwrap();
    assert_eq!(
        sqlstate(&mut *other, HAND_INSERT, &[raced.id, resource]).await,
        None
    );
    let batch = vec![fresh.clone(), raced.clone()];
    let racing = {
        let (postgres, batch) = (postgres.clone(), batch.clone());
        tokio::spawn(async move { postgres.apply_batch("node-x", &[], &batch).await })
    };
    wait_for_a_lock_wait(&db, "the batch on the uncommitted row").await;
    other.commit().await.unwrap();
    let settled = racing
        .await
        .unwrap()
        .expect("the batch is settled in the same call");
    assert_eq!(
        settled
            .into_iter()
            .map(|a| (a.id, a.status, a.version))
            .collect::<Vec<_>>(),
        [
            (fresh.id, "confirmed".to_owned(), 1),
            (raced.id, "confirmed".to_owned(), 1)
        ]
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations WHERE id = ANY ($1)")
        .bind([fresh.id, raced.id])
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 2, "one row each");
    let origins: Vec<String> = sqlx::query_scalar(
        "SELECT origin_node FROM unnest($1::uuid[]) WITH ORDINALITY AS b(id, n)
         JOIN reservations AS r ON r.id = b.id ORDER BY b.n",
    )
    .bind([fresh.id, raced.id])
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(origins, ["node-x", "hand"], "the stored version is kept");
    db.cleanup().await;
}

/// Migration 0004 replaced the foreign key from reservations to resources
/// with triggers that check it once per statement. The reference holds as
/// before: a batch or a hand-written row naming an unknown resource is
/// refused with 23503 (for good, to a node: nothing of the batch is stored),
/// a reservation cannot be moved to an unknown resource, and a resource that
/// reservations refer to cannot be deleted, re-keyed or truncated away, even
/// by a transaction racing the one that stores the reservation.
#[tokio::test]
async fn every_reservation_keeps_its_resource() {
    let (db, postgres) = migrated().await;
    let (kept, spare, gone, unknown) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let row = booking(kept, 1, 2);
    let rooms = [room(kept, 1), room(spare, 1), room(gone, 1)];
    apply(&postgres, "node-x", &rooms, std::slice::from_ref(&row)).await;

    let batch = vec![booking(kept, 3, 4), booking(unknown, 3, 4)];
    match postgres.apply_batch("node-x", &[], &batch).await {
        Err(reservoir::store::postgres::SyncError::Permanent(message)) => {
            assert!(message.contains("violates the reference"), "{message}")
        }
        result => panic!("expected a permanent error, got {result:?}"),
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1, "nothing of the refused batch is kept");

    let refused = Some("23503".to_owned());
    let pool = &db.pool;
    let (r, id) = (row.id, Uuid::now_v7());
    let move_to = "UPDATE reservations SET resource_id = $2 WHERE id = $1";
    assert_eq!(sqlstate(pool, HAND_INSERT, &[id, unknown]).await, refused);
    assert_eq!(sqlstate(pool, move_to, &[r, unknown]).await, refused);
    assert_eq!(sqlstate(pool, move_to, &[r, spare]).await, None);
    assert_eq!(sqlstate(pool, move_to, &[r, kept]).await, None);
    let delete = "DELETE FROM resources WHERE id = $1";
    assert_eq!(sqlstate(pool, delete, &[kept]).await, refused);
    let rekey = "UPDATE resources SET id = $2 WHERE id = $1";
    assert_eq!(sqlstate(pool, rekey, &[kept, unknown]).await, refused);
    let rename = "UPDATE resources SET name = 'renamed' WHERE id = $1";
    assert_eq!(sqlstate(pool, rename, &[kept]).await, None);
    assert_eq!(sqlstate(pool, "TRUNCATE resources", &[]).await, refused);

    // A reservation stored while a delete of its resource waits: the delete
    // is refused once the reservation commits.
    let mut storing = db.pool.begin().await.unwrap();
    assert_eq!(
        sqlstate(&mut *storing, HAND_INSERT, &[id, spare]).await,
        None
    );
    let deleting = {
        let pool = db.pool.clone();
        tokio::spawn(async move { sqlstate(&pool, delete, &[spare]).await })
    };
    wait_for_a_lock_wait(&db, "the delete on the stored reservation").await;
    storing.commit().await.unwrap();
    assert_eq!(deleting.await.unwrap(), refused);

    // A resource deleted while a reservation for it waits: the reservation
    // is refused once the delete commits.
    let mut deleting = db.pool.begin().await.unwrap();
    assert_eq!(sqlstate(&mut *deleting, delete, &[gone]).await, None);
    let storing = {
        let pool = db.pool.clone();
        tokio::spawn(async move { sqlstate(&pool, HAND_INSERT, &[Uuid::now_v7(), gone]).await })
    };
    wait_for_a_lock_wait(&db, "the reservation on the deleted resource").await;
    deleting.commit().await.unwrap();
    assert_eq!(storing.await.unwrap(), refused);

    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM reservations AS r
         WHERE NOT EXISTS (SELECT FROM resources AS s WHERE s.id = r.resource_id)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(orphans, 0);
    db.cleanup().await;
}

/// The change stamp of the last reservation row in Postgres.
async fn last_stamp(db: &TestDatabase) -> (i64, i64) {
    sqlx::query_as(
        "SELECT change_txid, change_seq FROM reservations ORDER BY change_txid DESC, change_seq DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// Reads the feed as `node` until its cursor reaches `until` (the feed may
/// lag while a transaction elsewhere on the server is open), collecting ids.
async fn read_feed(
    postgres: &Postgres,
    node: &str,
    mut cursor: FeedCursor,
    limit: u32,
    until: (i64, i64),
) -> (Vec<Uuid>, FeedCursor, Vec<usize>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ids = Vec::new();
    let mut pages = Vec::new();
    while cursor.reservations < until {
        assert!(Instant::now() < deadline, "the feed stalled at {cursor:?}");
        let page = postgres.feed(node, cursor, limit).await.expect("feed");
        if page.cursor == cursor {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        pages.push(page.reservations.len());
        ids.extend(page.reservations.iter().map(|r| r.reservation.id));
        assert!(page.read <= limit as usize);
        cursor = page.cursor;
    }
    (ids, cursor, pages)
}

/// A node's feed returns only other nodes' rows (and rows written by hand),
/// and its cursor moves past its own rows even when no other row follows
/// them, so they are not scanned again on every poll. A full page stops at
/// its last row.
#[tokio::test]
async fn the_feed_leaves_out_own_rows_and_moves_past_them() {
    let (db, postgres) = migrated().await;
    let resource = Uuid::now_v7();
    let resources = [room(resource, 100)];
    let own_first: Vec<ReservationRow> = (0..5).map(|i| booking(resource, i, i + 1)).collect();
    let others: Vec<ReservationRow> = (0..4).map(|i| booking(resource, i, i + 1)).collect();
    let own_last: Vec<ReservationRow> = (0..6).map(|i| booking(resource, i, i + 1)).collect();
    apply(&postgres, "node-a", &resources, &own_first).await;
    apply(&postgres, "node-b", &[], &others).await;
    apply(&postgres, "node-a", &[], &own_last).await;
    let last = last_stamp(&db).await;

    // Node A sees B's four rows only, and its cursor ends on its own last row.
    let (seen, cursor, _) = read_feed(&postgres, "node-a", FeedCursor::default(), 1000, last).await;
    assert_eq!(seen, others.iter().map(|r| r.id).collect::<Vec<_>>());
    assert_eq!(cursor.reservations, last);
    // Nothing new: the cursor stays.
    let again = postgres.feed("node-a", cursor, 1000).await.unwrap();
    assert!(again.reservations.is_empty());
    assert_eq!(again.cursor, cursor);

    // Node B, three rows a page: A's eleven rows in order, in full pages of
    // three and a last one of two; B's own rows in between are passed.
    let (seen, cursor, pages) =
        read_feed(&postgres, "node-b", FeedCursor::default(), 3, last).await;
    let expected: Vec<Uuid> = own_first.iter().chain(&own_last).map(|r| r.id).collect();
    assert_eq!(seen, expected);
    assert_eq!(pages, [3, 3, 3, 2]);
    assert_eq!(cursor.reservations, last);

    // Only A's own rows after the cursor: an empty page that still moves it.
    let more: Vec<ReservationRow> = (0..3).map(|i| booking(resource, i, i + 1)).collect();
    apply(&postgres, "node-a", &[], &more).await;
    let last = last_stamp(&db).await;
    let before = cursor;
    let (seen, cursor, _) = read_feed(&postgres, "node-a", before, 1000, last).await;
    assert!(seen.is_empty());
    assert_eq!(cursor.reservations, last);
    // ... and B sees them.
    let (seen, _, _) = read_feed(&postgres, "node-b", before, 1000, last).await;
    assert_eq!(seen, more.iter().map(|r| r.id).collect::<Vec<_>>());
    db.cleanup().await;
}

/// What a node sends is built from the local row, field for field.
#[test]
fn a_reservation_becomes_one_typed_row() {
    use reservoir::domain::reservation::{Reservation, Status, SyncState};
    let at = jiff::Timestamp::from_second(BASE_SECOND).unwrap();
    let mut metadata = serde_json::Map::new();
    metadata.insert("k".into(), json!("v"));
    let reservation = Reservation {
        id: Uuid::now_v7(),
        resource_id: Uuid::now_v7(),
        user_id: "u".into(),
        starts_at: at,
        ends_at: at + jiff::SignedDuration::from_hours(1),
        party_size: 3,
        status: Status::Cancelled,
        version: 4,
        sync_state: SyncState::Pending,
        notes: Some("n".into()),
        metadata: Some(metadata),
        created_at: at,
        updated_at: at + jiff::SignedDuration::from_secs(5),
    };
    let row = reservation_row(&reservation, "hash");
    assert_eq!(
        row,
        ReservationRow {
            id: reservation.id,
            resource_id: reservation.resource_id,
            user_id: "u".into(),
            starts_at: micros(0),
            ends_at: micros(1),
            party_size: 3,
            status: "cancelled",
            version: 4,
            notes: Some("n".into()),
            metadata: Some(r#"{"k":"v"}"#.into()),
            request_hash: "hash".into(),
            created_at: micros(0),
            updated_at: micros(0) + 5_000_000,
        }
    );
}

/// `pending` in the sync status is read from the two ends of the outbox's
/// sequence (no count of the whole table): with PostgreSQL unreachable,
/// every queued row is pending, the resource's and each booking's, and the
/// status says how old the oldest one is.
#[tokio::test]
async fn pending_counts_every_queued_row_while_postgres_is_unreachable() {
    let app = crate::helpers::spawn_app_with(|config| {
        config.postgres_url = Some("postgres://postgres@127.0.0.1:1/unreachable".into());
        config.node_id = Some("node-offline".into());
        config.sync_interval_ms = 50;
        config.sync_backoff_min_ms = 20;
        config.sync_backoff_max_ms = 200;
    })
    .await;
    let resource = app.new_resource(100).await;
    for hour in 0..7 {
        let (from, to) = (
            jiff::Timestamp::from_second(BASE_SECOND + 3600 * hour).unwrap(),
            jiff::Timestamp::from_second(BASE_SECOND + 3600 * (hour + 1)).unwrap(),
        );
        app.create_reservation(
            &app.admin_token,
            &crate::helpers::reservation_body(&resource, &from.to_string(), &to.to_string()),
        )
        .await
        .assert_status(201);
    }
    let status = app
        .get("/v1/sync/status", &app.admin_token)
        .await
        .assert_status(200)
        .clone();
    assert_eq!(status["pending"], 8, "{status}");
    assert!(status["oldest_pending_age_ms"].is_u64(), "{status}");
}
