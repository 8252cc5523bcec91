//! The writer's side of the PostgreSQL sync: outbox rows committed with the
//! writes they describe (the transactional outbox), and the local effects of
//! Postgres's answers (synced, rejected, dead-lettered).

use serde_json::json;
use sqlx::{query, query_scalar};
use uuid::Uuid;

use super::{OpResult, Outcome, WriterTask};
use crate::{
    domain::{
        reservation::{Status, SyncState},
        time::{micros, now},
    },
    store::sqlite::queries,
};

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

    /// Writes the buffered outbox entries with one statement.
    pub(super) async fn flush_outbox(&mut self) -> anyhow::Result<()> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let entries: Vec<_> = self
            .outbox
            .iter()
            .map(|e| json!([e.kind.as_str(), e.id.hyphenated().to_string(), e.version]))
            .collect();
        query(
            "INSERT INTO outbox (kind, entity_id, version, created_at) \
             SELECT value ->> 0, value ->> 1, value ->> 2, ?2 FROM json_each(?1)",
        )
        .bind(serde_json::Value::Array(entries).to_string())
        .bind(micros(now()))
        .execute(&mut self.conn)
        .await?;
        self.outbox.clear();
        self.outbox_written = true;
        Ok(())
    }

    /// Applies what Postgres answered for one batch.
    pub(super) async fn apply_sync_report(
        &mut self,
        report: &SyncReport,
    ) -> anyhow::Result<OpResult> {
        query("DELETE FROM outbox WHERE seq <= ?1")
            .bind(report.upto_seq)
            .execute(&mut self.conn)
            .await?;
        if !report.synced.is_empty() {
            let synced: Vec<_> = report
                .synced
                .iter()
                .map(|(id, version)| json!([id.hyphenated().to_string(), version]))
                .collect();
            // Only rows still at the version sent: a newer local change is
            // still pending (and queued behind this batch).
            query(
                "UPDATE reservations SET sync_state = 'synced' FROM json_each(?1) AS j \
                 WHERE reservations.id = j.value ->> 0 AND reservations.version <= j.value ->> 1 \
                   AND reservations.sync_state = 'pending'",
            )
            .bind(serde_json::Value::Array(synced).to_string())
            .execute(&mut self.conn)
            .await?;
        }
        for rejection in &report.rejected {
            self.apply_rejection(rejection).await?;
        }
        for dead in &report.dead {
            query("INSERT INTO dead_letters (kind, entity_id, version, error, failed_at) VALUES (?1, ?2, ?3, ?4, ?5)")
                .bind(dead.kind.as_str())
                .bind(dead.id.hyphenated().to_string())
                .bind(dead.version)
                .bind(&dead.error)
                .bind(micros(now()))
                .execute(&mut self.conn)
                .await?;
        }
        Ok(Ok(Outcome::Done))
    }

    /// Postgres gave the seat to another node: the local copy becomes
    /// rejected (freeing its local capacity) at a version no lower than
    /// Postgres's, and if it is higher Postgres is told.
    async fn apply_rejection(&mut self, rejection: &Rejection) -> anyhow::Result<()> {
        self.flush_reservations().await?;
        let Some(local) = queries::reservation(&mut self.conn, rejection.id).await? else {
            return Ok(());
        };
        let version = if local.status == Status::Rejected {
            local.version
        } else {
            (local.version + 1).max(rejection.version)
        };
        query(
            "UPDATE reservations SET status = 'rejected', sync_state = 'conflict', version = ?2, updated_at = ?3 \
             WHERE id = ?1",
        )
        .bind(rejection.id.hyphenated().to_string())
        .bind(version)
        .bind(micros(now()))
        .execute(&mut self.conn)
        .await?;
        if version > rejection.version {
            self.enqueue(EntityKind::Reservation, rejection.id, version);
        }
        tracing::info!(
            reservation = %rejection.id,
            reason = rejection.reason.as_deref().unwrap_or(""),
            "PostgreSQL rejected a reservation; marked rejected/conflict locally"
        );
        Ok(())
    }

    /// Once, when Postgres is first configured: queue every row written while
    /// the node ran on SQLite alone.
    pub(super) async fn queue_unsynced(&mut self) -> anyhow::Result<OpResult> {
        let done: Option<String> = query_scalar("SELECT value FROM meta WHERE key = ?1")
            .bind(BACKFILLED)
            .fetch_optional(&mut self.conn)
            .await?;
        if done.is_some() {
            return Ok(Ok(Outcome::Done));
        }
        let at = micros(now());
        query(
            "INSERT INTO outbox (kind, entity_id, version, created_at) \
             SELECT 'resource', id, version, ?1 FROM resources ORDER BY created_at",
        )
        .bind(at)
        .execute(&mut self.conn)
        .await?;
        query(
            "INSERT INTO outbox (kind, entity_id, version, created_at) \
             SELECT 'reservation', id, version, ?1 FROM reservations WHERE sync_state = 'local' ORDER BY created_at",
        )
        .bind(at)
        .execute(&mut self.conn)
        .await?;
        let queued =
            query("UPDATE reservations SET sync_state = 'pending' WHERE sync_state = 'local'")
                .execute(&mut self.conn)
                .await?
                .rows_affected();
        query("INSERT INTO meta (key, value) VALUES (?1, '1')")
            .bind(BACKFILLED)
            .execute(&mut self.conn)
            .await?;
        if queued > 0 {
            tracing::info!(
                queued,
                "queued reservations written before PostgreSQL was configured"
            );
        }
        self.outbox_written = true;
        Ok(Ok(Outcome::Done))
    }
}
