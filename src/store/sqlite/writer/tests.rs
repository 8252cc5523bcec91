//! Writer tests below HTTP: that group commit really groups, and that one
//! failing write in a group does not fail its neighbours.
//!
//! The writer runs on a thread of its own, so to know what it groups, these
//! tests park it with [`Writer::hold`] while the jobs queue.

use std::sync::atomic::Ordering;

use futures::future::join_all;
use serde_json::json;
use tokio::sync::watch;

use super::*;
use crate::{config::Config, store::sqlite::open};

async fn writer() -> (
    tempfile::TempDir,
    Writer,
    watch::Sender<bool>,
    JoinHandle<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (_reads, conn) = open(&Config::with_data_dir(dir.path())).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let (writer, task) = Writer::spawn(conn, stopped, WriterConfig::default());
    (dir, writer, stop, task)
}

/// Queues `ops` while the writer is held, so they reach it as one group.
async fn submit_while_held(writer: &Writer, ops: Vec<Op>) -> Vec<OpResult> {
    let held = writer.hold().await;
    let replies: Vec<_> = ops
        .into_iter()
        .map(|op| writer.submit_now(op, None).unwrap())
        .collect();
    held.release().await;
    join_all(replies).await
}

async fn resource(writer: &Writer, capacity: u32) -> Uuid {
    let new = NewResource::parse(json!({"name": "r", "capacity": capacity})).unwrap();
    match writer.submit(Op::CreateResource(new), None).await.unwrap() {
        Outcome::Resource(resource, Change::Created) => resource.id,
        other => panic!("unexpected {other:?}"),
    }
}

fn booking(resource_id: Uuid, hour: u32) -> Op {
    let new = NewReservation::parse(
        json!({
            "resource_id": resource_id,
            "starts_at": format!("2030-01-07T{hour:02}:00:00Z"),
            "ends_at": format!("2030-01-07T{hour:02}:30:00Z"),
        }),
        "",
    )
    .unwrap();
    Op::CreateReservation(Booking::new(new, UserId::parse("alice").unwrap(), false))
}

/// `count` creates queued while the writer is held are one commit.
async fn queued_creates_share_one_commit(count: u32) {
    let (_dir, writer, _stop, _task) = writer().await;
    let resource_id = resource(&writer, 1000).await;
    let before = writer.stats().commits.load(Ordering::Relaxed);

    let ops = (0..count).map(|i| booking(resource_id, i % 24)).collect();
    let results = submit_while_held(&writer, ops).await;

    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(Outcome::Reservation(_, Change::Created))))
    );
    let commits = writer.stats().commits.load(Ordering::Relaxed) - before;
    assert_eq!(commits, 1, "{count} queued creates are committed together");
}

#[tokio::test]
async fn concurrent_writes_share_one_commit() {
    queued_creates_share_one_commit(100).await;
}

// Senders on other worker threads: a job must be in the queue, not only
// counted, when the writer is released (Writer::submit_now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_writer_takes_a_large_queue_as_one_group() {
    queued_creates_share_one_commit(300).await;
}

#[tokio::test(flavor = "current_thread")]
async fn capacity_is_enforced_inside_a_group() {
    let (_dir, writer, _stop, _task) = writer().await;
    let resource_id = resource(&writer, 3).await;

    let results = join_all((0..50).map(|_| writer.submit(booking(resource_id, 10), None))).await;

    let created = results.iter().filter(|r| r.is_ok()).count();
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(AppError::CapacityExceeded(_))))
        .count();
    assert_eq!((created, full), (3, 47));
}

#[tokio::test]
async fn a_failing_write_does_not_fail_its_group() {
    let (_dir, writer, _stop, _task) = writer().await;
    let resource_id = resource(&writer, 100).await;
    let key = Op::CreateKey {
        hash: [7; 32],
        user_id: "bob".into(),
        role: Role::User,
        bootstrap: false,
    };
    writer.submit(key.clone(), None).await.unwrap();

    // The same key hash again violates the primary key inside the group.
    let mut ops: Vec<Op> = (0..10).map(|i| booking(resource_id, i)).collect();
    ops.insert(5, key);
    let results = submit_while_held(&writer, ops).await;

    assert!(matches!(results[5], Err(AppError::Internal(_))));
    let created = results
        .iter()
        .filter(|r| matches!(r, Ok(Outcome::Reservation(..))))
        .count();
    assert_eq!(created, 10, "the other writes of the group still commit");
    assert_eq!(writer.stats().split_groups.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_commits_what_was_queued() {
    let (dir, writer, stop, task) = writer().await;
    let resource_id = resource(&writer, 100).await;

    let pending: Vec<_> = (0..20)
        .map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.submit(booking(resource_id, i), None).await })
        })
        .collect();
    tokio::task::yield_now().await;
    stop.send(true).unwrap();
    task.await.unwrap();

    let mut acknowledged = 0;
    for handle in pending {
        if handle.await.unwrap().is_ok() {
            acknowledged += 1;
        }
    }
    let (reads, _conn) = open(&Config::with_data_dir(dir.path())).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(reads.pool())
        .await
        .unwrap();
    assert_eq!(
        stored, acknowledged,
        "every acknowledged write is stored, nothing else"
    );
    assert_eq!(
        acknowledged, 20,
        "writes queued before the signal are committed"
    );
}

fn span(resource_id: Uuid, starts_at: &str, ends_at: &str) -> Op {
    let new = NewReservation::parse(
        json!({"resource_id": resource_id, "starts_at": starts_at, "ends_at": ends_at}),
        "",
    )
    .unwrap();
    Op::CreateReservation(Booking::new(new, UserId::parse("alice").unwrap(), true))
}

// The capacity check looks back only as far as the resource's longest hold:
// a long booking made after that bound was loaded must still be seen.
#[tokio::test]
async fn a_long_booking_still_blocks_the_slots_it_covers() {
    let (_dir, writer, _stop, _task) = writer().await;
    let resource_id = resource(&writer, 1).await;
    // Loads the bound (30 minutes) for this resource.
    writer.submit(booking(resource_id, 1), None).await.unwrap();
    // Two days from Jan 8 00:00.
    let long = span(resource_id, "2030-01-08T00:00:00Z", "2030-01-10T00:00:00Z");
    writer.submit(long, None).await.unwrap();

    // A short booking a day and a half into the long one.
    let inside = span(resource_id, "2030-01-09T12:00:00Z", "2030-01-09T12:30:00Z");
    let result = writer.submit(inside, None).await;
    assert!(
        matches!(result, Err(AppError::CapacityExceeded(_))),
        "overbooked: {result:?}"
    );
}

#[tokio::test]
async fn the_look_back_bound_is_reloaded_after_a_restart() {
    let (dir, writer, stop, task) = writer().await;
    let resource_id = resource(&writer, 1).await;
    let long = span(resource_id, "2030-01-08T00:00:00Z", "2030-01-11T00:00:00Z");
    writer.submit(long, None).await.unwrap();
    stop.send(true).unwrap();
    task.await.unwrap();

    let (_reads, conn) = open(&Config::with_data_dir(dir.path())).await.unwrap();
    let (_stop, stopped) = watch::channel(false);
    let (writer, _task) = Writer::spawn(conn, stopped, WriterConfig::default());
    let inside = span(resource_id, "2030-01-10T20:00:00Z", "2030-01-10T21:00:00Z");
    let result = writer.submit(inside, None).await;
    assert!(
        matches!(result, Err(AppError::CapacityExceeded(_))),
        "overbooked after restart: {result:?}"
    );
    let after = span(resource_id, "2030-01-11T00:00:00Z", "2030-01-11T01:00:00Z");
    assert!(writer.submit(after, None).await.is_ok());
}

// Checkpoints run on their own thread: committed rows reach the database file
// itself (not only the WAL) long before the writer's own, much higher,
// automatic checkpoint threshold.
#[tokio::test]
async fn committed_rows_are_checkpointed_in_the_background() {
    let (dir, writer, _stop, _task) = writer().await;
    let resource_id = resource(&writer, 100).await;
    for hour in 0..5 {
        writer
            .submit(booking(resource_id, hour), None)
            .await
            .unwrap();
    }
    // `immutable=1` reads the database file alone and ignores the WAL.
    let path = dir.path().join(crate::store::sqlite::DB_FILE);
    let uri = format!("file:{}?immutable=1", path.display());
    let in_file = || {
        let conn = rusqlite::Connection::open_with_flags(
            &uri,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap();
        conn.query_row("SELECT count(*) FROM reservations", [], |row| {
            row.get::<_, i64>(0)
        })
        .unwrap()
    };
    let mut stored = in_file();
    for _ in 0..50 {
        if stored == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        stored = in_file();
    }
    assert_eq!(stored, 5, "the rows never left the WAL");
}
