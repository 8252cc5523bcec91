//! The sync's read of the outbox: the next batch of queued changes with the
//! current rows they name, on a read-only rusqlite connection of its own.
//!
//! Why not the sqlx read pool: sqlx hands every result row from its worker
//! thread to the async side separately, so the read used to build one JSON
//! document per batch in SQLite and parse it back in the sync task. That
//! JSON round trip cost the node about 8 µs of CPU per synced row, on the
//! same two cores the requests and PostgreSQL need (BENCHMARKS.md,
//! 2026-12-02). Here the rows are decoded straight from SQLite's columns on
//! a blocking thread, as the writer reads them.

use std::{
    path::Path,
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use anyhow::Context;
use rusqlite::{Connection, OpenFlags, params};

use super::rows::{HashedReservationRow, RESERVATION_COLUMNS, RESOURCE_COLUMNS, ResourceRow};
use crate::domain::{reservation::Reservation, resource::Resource};

/// The next outbox rows to send, with the *current* state of the entities
/// they name (several queued versions of one row are sent once, at the latest).
#[derive(Debug, Default)]
pub struct OutboxBatch {
    /// Outbox rows up to here are covered by this batch.
    pub upto_seq: i64,
    /// Rows read from the outbox (before merging duplicates).
    pub entries: usize,
    /// In outbox order.
    pub resources: Vec<Resource>,
    /// In outbox order, each with its create fingerprint.
    pub reservations: Vec<(Reservation, String)>,
}

/// Where the batch ends: `?1` is `after`, `?2` the limit.
const OUTBOX_BATCH_END: &str = "SELECT max(seq), count(*) FROM \
     (SELECT seq FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2)";

/// The entities a batch `(?1, ?2]` names, each once, in the order it was
/// first queued (PostgreSQL settles competing bookings first come, first
/// served). `CROSS JOIN` fixes the join order: the batch's distinct ids
/// outside, each looked up by primary key. Left to choose, SQLite's planner
/// once scanned the whole table per batch (BENCHMARKS.md, 2026-12-01
/// 15:08 UTC); `plans.rs` checks the plan.
fn batch_rows(table: &str, columns: &str, kind: &str, extra: &str) -> String {
    let columns = columns
        .split(", ")
        .map(|column| format!("e.{column}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT {columns}{extra} FROM \
             (SELECT entity_id, min(seq) AS first FROM outbox \
              WHERE seq > ?1 AND seq <= ?2 AND kind = '{kind}' GROUP BY entity_id) AS f \
         CROSS JOIN {table} AS e ON e.id = f.entity_id \
         ORDER BY f.first"
    )
}

/// The reservations of a batch, each followed by its create fingerprint.
pub(crate) static OUTBOX_RESERVATIONS: LazyLock<String> = LazyLock::new(|| {
    batch_rows(
        "reservations",
        RESERVATION_COLUMNS,
        "reservation",
        ", e.request_hash",
    )
});

static OUTBOX_RESOURCES: LazyLock<String> =
    LazyLock::new(|| batch_rows("resources", RESOURCE_COLUMNS, "resource", ""));

/// The one connection the sync reads the outbox with. Only the sync task
/// reads through it, one batch at a time; the mutex only makes that safe to
/// share.
#[derive(Clone)]
pub struct OutboxReader {
    conn: Arc<Mutex<Connection>>,
}

impl OutboxReader {
    pub fn open(path: &Path) -> rusqlite::Result<OutboxReader> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // The GROUP BY and ORDER BY of a batch of up to 10,000 rows sort in
        // memory, as the read pool's do.
        conn.pragma_update(None, "temp_store", "memory")?;
        Ok(OutboxReader {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The next `limit` outbox rows after sequence number `after` (0: from
    /// the start), read in one transaction: the batch's end and its rows come
    /// from the same snapshot.
    pub async fn batch(&self, after: i64, limit: u32) -> anyhow::Result<OutboxBatch> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn
                .lock()
                .map_err(|_| anyhow::anyhow!("the outbox reader panicked earlier"))?;
            read_batch(&mut conn, after, limit)
        })
        .await
        .context("the outbox read did not finish")?
    }
}

fn read_batch(conn: &mut Connection, after: i64, limit: u32) -> anyhow::Result<OutboxBatch> {
    let snapshot = conn.transaction()?;
    let (upto_seq, entries): (Option<i64>, i64) = snapshot
        .prepare_cached(OUTBOX_BATCH_END)?
        .query_row(params![after, i64::from(limit)], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    let Some(upto_seq) = upto_seq else {
        return Ok(OutboxBatch::default());
    };
    let resources = snapshot
        .prepare_cached(&OUTBOX_RESOURCES)?
        .query_map(params![after, upto_seq], ResourceRow::from_rusqlite)?
        .map(|row| Resource::try_from(row?))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let reservations = snapshot
        .prepare_cached(&OUTBOX_RESERVATIONS)?
        .query_map(
            params![after, upto_seq],
            HashedReservationRow::from_rusqlite,
        )?
        .map(|row| row?.into_reservation())
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Read only: nothing to commit, but ending the transaction now lets
    // the checkpointer restart the log without waiting for this snapshot.
    snapshot.finish()?;
    Ok(OutboxBatch {
        upto_seq,
        entries: usize::try_from(entries).unwrap_or(0),
        resources,
        reservations,
    })
}

#[cfg(test)]
mod tests {
    use rusqlite::params;
    use uuid::Uuid;

    use crate::{config::Config, store::sqlite::open};

    /// A reservation row and an outbox entry for it, written straight into
    /// the tables (the writer's bookkeeping is not what is tested here).
    fn book(write: &rusqlite::Connection, id: Uuid, resource: Uuid, version: i64, hash: &str) {
        write
            .execute(
                "INSERT INTO reservations (id, resource_id, user_id, starts_at, ends_at, party_size, status, \
                     version, sync_state, notes, metadata, request_hash, created_at, updated_at) \
                 VALUES (?1, ?2, 'u', 1000, 2000, 2, 'confirmed', ?3, 'pending', NULL, '{\"a\":1}', ?4, 5, 6) \
                 ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                params![id.to_string(), resource.to_string(), version, hash],
            )
            .unwrap();
        queue(write, "reservation", id, version);
    }

    fn queue(write: &rusqlite::Connection, kind: &str, id: Uuid, version: i64) {
        write
            .execute(
                "INSERT INTO outbox (kind, entity_id, version, created_at) VALUES (?1, ?2, ?3, 0)",
                params![kind, id.to_string(), version],
            )
            .unwrap();
    }

    #[tokio::test]
    async fn a_batch_names_each_entity_once_at_its_latest_in_first_queued_order() {
        let dir = tempfile::tempdir().unwrap();
        let (reads, write) = open(&Config::with_data_dir(dir.path())).await.unwrap();
        let resource = Uuid::now_v7();
        write
            .execute(
                "INSERT INTO resources (id, name, capacity, timezone, slot_minutes, opening_hours, version, \
                     created_at, updated_at) VALUES (?1, 'chair', 3, 'UTC', 30, NULL, 1, 1, 1)",
                [resource.to_string()],
            )
            .unwrap();
        queue(&write, "resource", resource, 1);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        book(&write, a, resource, 1, "ha");
        book(&write, b, resource, 1, "hb");
        book(&write, a, resource, 2, "ha");
        book(&write, c, resource, 1, "hc");

        // Outbox rows 1..=4: the resource, a, b, and a again.
        let first = reads.outbox_batch(0, 4).await.unwrap();
        assert_eq!((first.upto_seq, first.entries), (4, 4));
        assert_eq!(
            first.resources.iter().map(|r| r.id).collect::<Vec<_>>(),
            [resource]
        );
        let sent: Vec<_> = first
            .reservations
            .iter()
            .map(|(r, hash)| (r.id, r.version, hash.as_str()))
            .collect();
        // a once, at its latest version, where it was first queued.
        assert_eq!(sent, [(a, 2, "ha"), (b, 1, "hb")]);
        let (row, _) = &first.reservations[0];
        assert_eq!((row.resource_id, row.party_size), (resource, 2));
        assert_eq!(row.metadata.as_ref().unwrap()["a"], 1);

        let rest = reads.outbox_batch(first.upto_seq, 4).await.unwrap();
        assert_eq!((rest.upto_seq, rest.entries), (5, 1));
        assert!(rest.resources.is_empty());
        assert_eq!(rest.reservations[0].0.id, c);

        // Caught up: an empty batch. A row queued afterwards is seen, so no
        // snapshot outlives a read.
        let empty = reads.outbox_batch(rest.upto_seq, 4).await.unwrap();
        assert_eq!((empty.upto_seq, empty.entries), (0, 0));
        let d = Uuid::now_v7();
        book(&write, d, resource, 1, "hd");
        let late = reads.outbox_batch(rest.upto_seq, 4).await.unwrap();
        assert_eq!(late.reservations[0].0.id, d);
    }
}
