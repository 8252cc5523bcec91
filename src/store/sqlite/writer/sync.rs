//! The writer's side of the PostgreSQL sync: outbox rows committed with the
//! writes they describe (the transactional outbox), and the local effects of
//! Postgres's answers (synced, rejected, dead-lettered).

use std::fmt::Write as _;

use anyhow::Context;
use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::{Changed, OpResult, Outcome, WriterTask};
use crate::{
    domain::resource::Resource,
    domain::{
        reservation::{Reservation, Status, SyncState},
        time::{micros, now},
    },
    store::{
        postgres::{FeedCursor, RemoteReservation},
        sqlite::queries::direct as queries,
    },
};

/// Marks the reservations PostgreSQL acknowledged as synced; `?1` is a JSON
/// array of `[id, version]`. Only rows still at the version sent: a newer
/// local change is still pending (and queued behind this batch).
pub(in crate::store::sqlite) const ACK_SYNCED: &str = "UPDATE reservations SET sync_state = 'synced' FROM json_each(?1) AS j \
     WHERE reservations.id = j.value ->> 0 AND reservations.version <= j.value ->> 1 \
       AND reservations.sync_state = 'pending' \
     RETURNING reservations.id, reservations.version, reservations.resource_id, reservations.user_id";

/// The `[[id, version], ...]` list [`ACK_SYNCED`] reads, written straight
/// into one string: through `serde_json::Value`, two allocations per row and
/// the serializer took a quarter of the acknowledgement's time in a drain
/// (BENCHMARKS.md, 2026-12-02).
fn ack_list(synced: &[(Uuid, i64)]) -> String {
    // 36 characters of id, up to 20 of version, 6 of punctuation.
    let mut list = String::with_capacity(2 + synced.len() * 62);
    let mut id_text = Uuid::encode_buffer();
    list.push('[');
    for (i, (id, version)) in synced.iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        list.push_str("[\"");
        list.push_str(id.hyphenated().encode_lower(&mut id_text));
        // Writing into a String cannot fail.
        let _ = write!(list, "\",{version}]");
    }
    list.push(']');
    list
}

/// The local version and span of the reservations named in `?1` (a JSON
/// array of ids), to compare with what other nodes wrote.
pub(in crate::store::sqlite) const LOCAL_VERSIONS: &str = "SELECT id, version, starts_at, ends_at FROM reservations \
     WHERE id IN (SELECT value FROM json_each(?1))";

/// What kind of row an outbox entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    Resource,
    Reservation,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Resource => "resource",
            EntityKind::Reservation => "reservation",
        }
    }

    pub fn parse(text: &str) -> Option<EntityKind> {
        match text {
            "resource" => Some(EntityKind::Resource),
            "reservation" => Some(EntityKind::Reservation),
            _ => None,
        }
    }
}

/// One queued change, buffered until the end of the group's transaction.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub kind: EntityKind,
    pub id: Uuid,
    pub version: i64,
}

/// What one sync round learned from Postgres, applied locally by the writer.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// Outbox rows up to this sequence number were handled.
    pub upto_seq: i64,
    /// Reservations Postgres now holds at (at least) the version sent.
    pub synced: Vec<(Uuid, i64)>,
    /// Reservations Postgres stored as rejected (capacity taken elsewhere).
    pub rejected: Vec<Rejection>,
    /// Rows Postgres refused for good.
    pub dead: Vec<DeadLetter>,
}

#[derive(Debug, Clone)]
pub struct Rejection {
    pub id: Uuid,
    /// The version Postgres stored the rejection at.
    pub version: i64,
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub kind: EntityKind,
    pub id: Uuid,
    pub version: i64,
    pub error: String,
}

/// Marks, in `meta`, that rows written before Postgres was configured have
/// been queued.
const BACKFILLED: &str = "sync_backfilled";
/// The change feed's position, in `meta`.
pub const FEED_CURSOR: &str = "feed_cursor";

impl WriterTask {
    /// The sync state of a row this node just wrote.
    pub(super) fn dirty_state(&self) -> SyncState {
        if self.sync_enabled {
            SyncState::Pending
        } else {
            SyncState::Local
        }
    }

    /// Queues a change for Postgres (no-op without Postgres).
    pub(super) fn enqueue(&mut self, kind: EntityKind, id: Uuid, version: i64) {
        if self.sync_enabled {
            self.outbox.push(OutboxEntry { kind, id, version });
        }
    }

    /// Writes the buffered outbox entries, in the order they were made.
    pub(super) fn flush_outbox(&mut self) -> anyhow::Result<()> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let at = micros(now());
        let mut statement = self.conn.prepare_cached(
            "INSERT INTO outbox (kind, entity_id, version, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for entry in &self.outbox {
            statement.execute(params![
                entry.kind.as_str(),
                entry.id.hyphenated().to_string(),
                entry.version,
                at
            ])?;
        }
        drop(statement);
        self.outbox.clear();
        self.outbox_written = true;
        Ok(())
    }

    /// Applies what Postgres answered for one batch.
    pub(super) fn apply_sync_report(&mut self, report: &SyncReport) -> anyhow::Result<OpResult> {
        self.conn
            .prepare_cached("DELETE FROM outbox WHERE seq <= ?1")?
            .execute([report.upto_seq])?;
        if !report.synced.is_empty() {
            let synced = ack_list(&report.synced);
            let updated: Vec<(String, i64, String, String)> = self
                .conn
                .prepare_cached(ACK_SYNCED)?
                .query_map([synced], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            // The caches may hold these rows as `pending`.
            for (id, version, resource_id, user_id) in updated {
                self.changes.push(Changed::Synced {
                    id: Uuid::parse_str(&id).context("a stored reservation id")?,
                    version,
                    resource_id: Uuid::parse_str(&resource_id).context("a stored resource id")?,
                    user_id,
                });
            }
        }
        for rejection in &report.rejected {
            self.apply_rejection(rejection)?;
        }
        for dead in &report.dead {
            self.conn
                .prepare_cached(
                    "INSERT INTO dead_letters (kind, entity_id, version, error, failed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    dead.kind.as_str(),
                    dead.id.hyphenated().to_string(),
                    dead.version,
                    dead.error,
                    micros(now()),
                ])?;
        }
        Ok(Ok(Outcome::Done))
    }

    /// Postgres gave the seat to another node: the local copy becomes
    /// rejected (freeing its local capacity) at a version no lower than
    /// Postgres's, and if it is higher Postgres is told.
    fn apply_rejection(&mut self, rejection: &Rejection) -> anyhow::Result<()> {
        let Some(local) = queries::reservation(&self.conn, rejection.id)? else {
            return Ok(());
        };
        let version = if local.status == Status::Rejected {
            local.version
        } else {
            (local.version + 1).max(rejection.version)
        };
        // At Postgres's version the row must read exactly as Postgres stores
        // it, which keeps the updated_at this node sent. Only a newer local
        // version (a change made meanwhile) is a new edit, sent up again.
        let updated_at = if version > rejection.version {
            now()
        } else {
            local.updated_at
        };
        self.conn
            .prepare_cached(
                "UPDATE reservations SET status = 'rejected', sync_state = 'conflict', version = ?2, updated_at = ?3 \
                 WHERE id = ?1",
            )?
            .execute(params![
                rejection.id.hyphenated().to_string(),
                version,
                micros(updated_at)
            ])?;
        if version > rejection.version {
            self.enqueue(EntityKind::Reservation, rejection.id, version);
        }
        let rejected = Reservation {
            status: Status::Rejected,
            sync_state: SyncState::Conflict,
            version,
            updated_at,
            ..local
        };
        self.changed(&rejected, &[]);
        tracing::info!(
            reservation = %rejection.id,
            reason = rejection.reason.as_deref().unwrap_or(""),
            "PostgreSQL rejected a reservation; marked rejected/conflict locally"
        );
        Ok(())
    }

    /// Once, when Postgres is first configured: queue every row written while
    /// the node ran on SQLite alone.
    pub(super) fn queue_unsynced(&mut self) -> anyhow::Result<OpResult> {
        let done: Option<String> = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([BACKFILLED], |row| row.get(0))
            .optional()?;
        if done.is_some() {
            return Ok(Ok(Outcome::Done));
        }
        let at = micros(now());
        self.conn.execute(
            "INSERT INTO outbox (kind, entity_id, version, created_at) \
             SELECT 'resource', id, version, ?1 FROM resources ORDER BY created_at",
            [at],
        )?;
        // Insertion (rowid) order is creation order and needs no sorter: a
        // backlog of millions must not be sorted in memory.
        self.conn.execute(
            "INSERT INTO outbox (kind, entity_id, version, created_at) \
             SELECT 'reservation', id, version, ?1 FROM reservations WHERE sync_state = 'local' ORDER BY rowid",
            [at],
        )?;
        let queued = self.conn.execute(
            "UPDATE reservations SET sync_state = 'pending' WHERE sync_state = 'local'",
            [],
        )?;
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, '1')",
            [BACKFILLED],
        )?;
        if queued > 0 {
            tracing::info!(
                queued,
                "queued reservations written before PostgreSQL was configured"
            );
        }
        self.outbox_written = true;
        Ok(Ok(Outcome::Done))
    }

    /// Stores rows other nodes wrote, as PostgreSQL holds them: a version
    /// newer than the local one replaces it, anything else changes nothing
    /// (so this node's own writes coming back are no-ops).
    pub(super) fn apply_remote(
        &mut self,
        resources: &[Resource],
        reservations: &[RemoteReservation],
        cursor: Option<&FeedCursor>,
    ) -> anyhow::Result<OpResult> {
        if let Some(cursor) = cursor {
            self.conn
                .prepare_cached(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![FEED_CURSOR, serde_json::to_string(cursor)?])?;
        }
        for resource in resources {
            // No outbox row: this came from PostgreSQL.
            match self.resource(resource.id)? {
                Some(local) if local.version >= resource.version => {}
                local => self.save_resource(resource, local.is_none())?,
            }
        }
        if reservations.is_empty() {
            return Ok(Ok(Outcome::Done));
        }
        let ids: Vec<String> = reservations
            .iter()
            .map(|r| r.reservation.id.hyphenated().to_string())
            .collect();
        let local: Vec<(String, i64, i64, i64)> = self
            .conn
            .prepare_cached(LOCAL_VERSIONS)?
            .query_map([serde_json::to_string(&ids)?], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let local: std::collections::HashMap<String, (i64, i64, i64)> = local
            .into_iter()
            .map(|(id, v, s, e)| (id, (v, s, e)))
            .collect();
        let mut rows = Vec::new();
        for remote in reservations {
            let r = &remote.reservation;
            let old = local.get(&r.id.hyphenated().to_string());
            if old.is_some_and(|(version, _, _)| *version >= r.version) {
                continue;
            }
            let mut spans = vec![(micros(r.starts_at), micros(r.ends_at))];
            if let Some((_, start, end)) = old {
                spans.push((*start, *end));
            }
            self.changes.push(Changed::Reservation {
                reservation: r.clone(),
                spans,
                // Not fresh even when new to SQLite: L1 may hold an older
                // copy read from L2 or published by the node that wrote it.
                fresh: false,
            });
            self.stretch(r.resource_id, micros(r.starts_at), micros(r.ends_at));
            let hash = remote.request_hash.clone().unwrap_or_default();
            rows.push(crate::store::sqlite::rows::reservation_json_with_hash(
                r, &hash,
            ));
        }
        if rows.is_empty() {
            return Ok(Ok(Outcome::Done));
        }
        self.conn.prepare_cached(
            "INSERT INTO reservations (id, resource_id, user_id, starts_at, ends_at, party_size, status, version, \
             sync_state, notes, metadata, request_hash, created_at, updated_at) \
             SELECT value ->> 'id', value ->> 'resource_id', value ->> 'user_id', value ->> 'starts_at', \
             value ->> 'ends_at', value ->> 'party_size', value ->> 'status', value ->> 'version', \
             value ->> 'sync_state', value ->> 'notes', value ->> 'metadata', value ->> 'request_hash', \
             value ->> 'created_at', value ->> 'updated_at' FROM json_each(?1) WHERE true \
             ON CONFLICT (id) DO UPDATE SET starts_at = excluded.starts_at, ends_at = excluded.ends_at, \
             party_size = excluded.party_size, status = excluded.status, version = excluded.version, \
             sync_state = excluded.sync_state, notes = excluded.notes, metadata = excluded.metadata, \
             updated_at = excluded.updated_at \
             WHERE excluded.version > reservations.version",
        )?
        .execute([serde_json::Value::Array(rows).to_string()])?;
        Ok(Ok(Outcome::Done))
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::ack_list;

    #[test]
    fn the_ack_list_is_the_json_the_statement_reads() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let list: serde_json::Value =
            serde_json::from_str(&ack_list(&[(a, 1), (b, i64::MAX)])).unwrap();
        assert_eq!(
            list,
            serde_json::json!([[a.to_string(), 1], [b.to_string(), i64::MAX]])
        );
        assert_eq!(ack_list(&[]), "[]");
    }
}
