//! Reads from the read-only pool. These never wait for the writer: WAL gives
//! each read a consistent snapshot of the last commit.

use jiff::Timestamp;
use sqlx::{QueryBuilder, Sqlite, SqlitePool, query_as, query_scalar};
use uuid::Uuid;

pub use super::outbox::OutboxBatch;
use super::{
    outbox::OutboxReader,
    queries,
    rows::{RESERVATION_COLUMNS, RESOURCE_COLUMNS, ReservationRow, ResourceRow},
};
use crate::{
    domain::{
        auth::{KeyHash, Role},
        capacity::Hold,
        reservation::{Reservation, Status},
        resource::Resource,
        time::{MAX_RESERVATION_MICROS, micros},
    },
    error::AppResult,
};

#[derive(Clone)]
pub struct Reads {
    pool: SqlitePool,
    outbox: OutboxReader,
}

/// Filters of `GET /v1/reservations`; `from`/`to` select overlap.
#[derive(Debug, Clone, Default)]
pub struct ReservationFilter {
    pub resource_id: Option<Uuid>,
    pub user_id: Option<String>,
    pub status: Option<Status>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

/// Keyset position: the last row seen, by (starts_at, id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationCursor {
    pub starts_at: i64,
    pub id: Uuid,
}

impl Reads {
    pub fn new(pool: SqlitePool, outbox: OutboxReader) -> Self {
        Reads { pool, outbox }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn ping(&self) -> AppResult<()> {
        query_scalar::<_, i64>("SELECT 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn reservation(&self, id: Uuid) -> AppResult<Option<Reservation>> {
        Ok(queries::reservation(&self.pool, id).await?)
    }

    pub async fn resource(&self, id: Uuid) -> AppResult<Option<Resource>> {
        Ok(queries::resource(&self.pool, id).await?)
    }

    pub async fn holds(&self, resource_id: Uuid, start: i64, end: i64) -> AppResult<Vec<Hold>> {
        Ok(queries::holds(&self.pool, resource_id, start, end, None).await?)
    }

    pub async fn api_key(&self, hash: &KeyHash) -> AppResult<Option<(String, Role)>> {
        let row: Option<(String, String)> =
            query_as("SELECT user_id, role FROM api_keys WHERE hash = ?1")
                .bind(&hash[..])
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|(user, role)| Role::parse(&role).map(|role| (user, role))))
    }

    /// One page in (starts_at, id) order, strictly after `after`.
    pub async fn list_reservations(
        &self,
        filter: &ReservationFilter,
        after: Option<&ReservationCursor>,
        limit: u32,
    ) -> AppResult<Vec<Reservation>> {
        let rows: Vec<ReservationRow> = list_query("", filter, after, limit)
            .build_query_as()
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(Reservation::try_from)
            .collect::<Result<_, _>>()?)
    }

    /// One page of resources in id order (UUIDv7 ids: creation order).
    pub async fn list_resources(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> AppResult<Vec<Resource>> {
        let rows: Vec<ResourceRow> = query_as(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))
        .bind(
            after
                .map(|id| id.hyphenated().to_string())
                .unwrap_or_default(),
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(Resource::try_from)
            .collect::<Result<_, _>>()?)
    }
}

/// Numbers for `GET /v1/sync/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutboxStats {
    pub pending: i64,
    /// `created_at` of the oldest queued row, in microseconds.
    pub oldest: Option<i64>,
    pub dead_letters: i64,
}

impl Reads {
    /// The next `limit` outbox rows after sequence number `after` (0: from the
    /// start), read by [`OutboxReader`]. The sync task reads the batch after
    /// the one Postgres is still applying, so it passes that batch's
    /// `upto_seq`.
    pub async fn outbox_batch(&self, after: i64, limit: u32) -> AppResult<OutboxBatch> {
        Ok(self.outbox.batch(after, limit).await?)
    }

    /// Keys issued here that PostgreSQL does not have yet.
    pub async fn unshared_keys(&self, limit: u32) -> AppResult<Vec<(Vec<u8>, String, String)>> {
        Ok(
            query_as("SELECT hash, user_id, role FROM api_keys WHERE synced = 0 LIMIT ?1")
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Cheap at any backlog: two ends of the primary key, not a count. The
    /// outbox's sequence numbers have no gaps: `AUTOINCREMENT` numbers rows
    /// in the writer's transactions (a rolled-back one gives its numbers back
    /// with it), and rows leave only as a prefix (`seq <= upto_seq`). So the
    /// rows pending are `last - first + 1`, and the oldest is the first.
    pub async fn outbox_stats(&self) -> AppResult<OutboxStats> {
        let (pending, oldest): (Option<i64>, Option<i64>) = query_as(
            "SELECT (SELECT max(seq) FROM outbox) - first.seq + 1, first.created_at \
             FROM (SELECT NULL) LEFT JOIN (SELECT seq, created_at FROM outbox ORDER BY seq LIMIT 1) AS first",
        )
        .fetch_one(&self.pool)
        .await?;
        let pending = pending.unwrap_or(0);
        let dead_letters: i64 = query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(&self.pool)
            .await?;
        Ok(OutboxStats {
            pending,
            oldest,
            dead_letters,
        })
    }
}

/// The list query; every filter combination is a range scan of one of the
/// `reservations_by_*` indexes (checked by the query-plan tests). `prefix` lets
/// those tests prepend `EXPLAIN QUERY PLAN`.
pub(crate) fn list_query<'a>(
    prefix: &str,
    filter: &'a ReservationFilter,
    after: Option<&ReservationCursor>,
    limit: u32,
) -> QueryBuilder<'a, Sqlite> {
    // The index is named, not left to the planner, whose choice followed the
    // statistics versions up to 2026-12-01 stored at shutdown (the service
    // keeps none now) and was close here. A page for a user of a table where
    // one user holds nearly every row: with the statistics ANALYZE stored for
    // such a table (60,000 rows) it used `reservations_by_user`; with
    // slightly different ones (667 rather than 1,000 rows per start time) it
    // walked `reservations_by_start` from the cursor and filtered by user,
    // reading the rest of the table for a page of another user: 10.6 ms
    // against 0.02 ms.
    let index = if filter.resource_id.is_some() {
        "reservations_by_resource"
    } else if filter.user_id.is_some() {
        "reservations_by_user"
    } else {
        "reservations_by_start"
    };
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
        "{prefix}SELECT {RESERVATION_COLUMNS} FROM reservations INDEXED BY {index} WHERE 1=1"
    ));
    if let Some(resource_id) = filter.resource_id {
        q.push(" AND resource_id = ")
            .push_bind(resource_id.hyphenated().to_string());
    }
    if let Some(user_id) = &filter.user_id {
        q.push(" AND user_id = ").push_bind(user_id.as_str());
    }
    if let Some(status) = filter.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(from) = filter.from {
        // Overlap means ends_at > from.
        q.push(" AND ends_at > ").push_bind(micros(from));
    }
    // One lower bound on starts_at for the index seek: no reservation that
    // overlaps `from` starts a week or more before it (none is longer), and a
    // later page starts at its cursor.
    let lower = [
        filter
            .from
            .map(|from| micros(from) - MAX_RESERVATION_MICROS + 1),
        after.map(|cursor| cursor.starts_at),
    ]
    .into_iter()
    .flatten()
    .max();
    if let Some(lower) = lower {
        q.push(" AND starts_at >= ").push_bind(lower);
    }
    if let Some(to) = filter.to {
        q.push(" AND starts_at < ").push_bind(micros(to));
    }
    if let Some(cursor) = after {
        q.push(" AND (starts_at, id) > (")
            .push_bind(cursor.starts_at)
            .push(", ")
            .push_bind(cursor.id.hyphenated().to_string())
            .push(")");
    }
    q.push(" ORDER BY starts_at, id LIMIT ")
        .push_bind(i64::from(limit));
    q
}
