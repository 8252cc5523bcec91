//! The central PostgreSQL: a lazily connected pool (the service must start
//! and serve while Postgres is down), its migrations, and the one call the
//! sync task makes per batch.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use serde_json::Value;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
    query_as,
    types::Json,
};
use uuid::Uuid;

pub use crate::sync::payload::ReservationRow;

/// Longest a batch call may take before it counts as a (transient) failure.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Postgres {
    pool: PgPool,
    /// Host, port and database only: safe to log and report.
    display: String,
}

/// The stored outcome of one reservation of a batch.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Applied {
    pub kind: String,
    pub id: Uuid,
    pub status: String,
    pub version: i64,
    pub reason: Option<String>,
}

/// Why a batch failed, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Postgres rejected the data itself (a constraint, a bad value): retrying
    /// the same rows can never succeed.
    #[error("{0}")]
    Permanent(String),
    /// Anything else (refused, timed out, serialization failure): retry.
    #[error("{0}")]
    Transient(String),
}

impl Postgres {
    /// Validates the URL and prepares a pool without connecting.
    pub fn new(url: &str) -> anyhow::Result<Postgres> {
        let options = PgConnectOptions::from_str(url)
            .context("RESERVOIR_POSTGRES_URL is not a valid PostgreSQL URL")?;
        let display = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        let pool = PgPoolOptions::new()
            // The sync task's lanes and its key sharing, the change feed,
            // its LISTEN connection, health.
            .max_connections(4 + crate::sync::MAX_LANES)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options.options([("statement_timeout", "30s")]));
        Ok(Postgres { pool, display })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// `host:port/database`, without credentials.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Applies migrations/postgres. Several nodes may start together: sqlx
    /// serialises them with an advisory lock.
    pub async fn migrate(&self) -> Result<(), SyncError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|error| {
                SyncError::Transient(format!("applying PostgreSQL migrations: {error}"))
            })
    }

    /// Sends one batch in one round trip; see `reservoir_apply_rows` in the
    /// migrations for what Postgres does with it.
    pub async fn apply_batch(
        &self,
        node: &str,
        resources: &[Value],
        reservations: &[ReservationRow],
    ) -> Result<Vec<Applied>, SyncError> {
        let resources: Vec<&Value> = resources.iter().collect();
        let reservations: Vec<&ReservationRow> = reservations.iter().collect();
        self.apply_rows(node, &resources, &reservations).await
    }

    /// As [`Postgres::apply_batch`], with borrowed rows: the sync task
    /// bisects a batch by slicing it. Resources (few) travel as one jsonb
    /// array; reservations as one typed array per column, in binary, so
    /// Postgres parses no JSON for them.
    pub async fn apply_rows(
        &self,
        node: &str,
        resources: &[&Value],
        reservations: &[&ReservationRow],
    ) -> Result<Vec<Applied>, SyncError> {
        let column =
            |f: fn(&ReservationRow) -> i64| reservations.iter().map(|r| f(r)).collect::<Vec<i64>>();
        let call = query_as::<_, Applied>(
            "SELECT kind, id, status, version, reason FROM reservoir_apply_rows($1, $2, $3, $4, $5, \
             $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(node)
        .bind(Json(resources))
        .bind(reservations.iter().map(|r| r.id).collect::<Vec<Uuid>>())
        .bind(reservations.iter().map(|r| r.resource_id).collect::<Vec<Uuid>>())
        .bind(reservations.iter().map(|r| r.user_id.as_str()).collect::<Vec<&str>>())
        .bind(column(|r| r.starts_at))
        .bind(column(|r| r.ends_at))
        .bind(reservations.iter().map(|r| r.party_size).collect::<Vec<i32>>())
        .bind(reservations.iter().map(|r| r.status).collect::<Vec<&str>>())
        .bind(column(|r| r.version))
        .bind(reservations.iter().map(|r| r.notes.as_deref()).collect::<Vec<Option<&str>>>())
        .bind(reservations.iter().map(|r| r.metadata.as_deref()).collect::<Vec<Option<&str>>>())
        .bind(reservations.iter().map(|r| r.request_hash.as_str()).collect::<Vec<&str>>())
        .bind(column(|r| r.created_at))
        .bind(column(|r| r.updated_at))
        .fetch_all(&self.pool);
        bounded(CALL_TIMEOUT, call).await
    }

    pub async fn ping(&self) -> Result<(), SyncError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

/// Runs one database call with a deadline; a call that does not answer in
/// time is a transient failure like a refused connection.
async fn bounded<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = sqlx::Result<T>>,
) -> Result<T, SyncError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(result) => result.map_err(classify),
        Err(_) => Err(SyncError::Transient(format!(
            "PostgreSQL did not answer within {deadline:?}"
        ))),
    }
}

/// SQLSTATE classes 22 (data exception) and 23 (integrity constraint), and
/// errors raised by our own PL/pgSQL, are about the rows; everything else is
/// about the connection or the server's state, and worth retrying.
pub fn classify(error: sqlx::Error) -> SyncError {
    let message = error.to_string();
    match &error {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(code) if code.starts_with("22") || code.starts_with("23") || code == "P0001" => {
                SyncError::Permanent(message)
            }
            _ => SyncError::Transient(message),
        },
        _ => SyncError::Transient(message),
    }
}

/// Reservation columns as the node reads them back: instants as integer
/// microseconds (exact: `extract(epoch ...)` is numeric).
pub const RESERVATION_SELECT: &str = "SELECT id, resource_id, user_id, \
    (extract(epoch FROM starts_at) * 1000000)::bigint AS starts_at, \
    (extract(epoch FROM ends_at) * 1000000)::bigint AS ends_at, \
    party_size, status, version, notes, metadata, request_hash, \
    (extract(epoch FROM created_at) * 1000000)::bigint AS created_at, \
    (extract(epoch FROM updated_at) * 1000000)::bigint AS updated_at \
    FROM reservations";

pub const RESOURCE_SELECT: &str = "SELECT id, name, capacity, timezone, slot_minutes, opening_hours, version, \
    (extract(epoch FROM created_at) * 1000000)::bigint AS created_at, \
    (extract(epoch FROM updated_at) * 1000000)::bigint AS updated_at \
    FROM resources";

#[derive(Debug, sqlx::FromRow)]
pub struct PgReservation {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub user_id: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub party_size: i32,
    pub status: String,
    pub version: i64,
    pub notes: Option<String>,
    pub metadata: Option<Value>,
    pub request_hash: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, sqlx::FromRow)]
pub struct PgResource {
    pub id: Uuid,
    pub name: String,
    pub capacity: i32,
    pub timezone: String,
    pub slot_minutes: i32,
    pub opening_hours: Option<Value>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A row as Postgres holds it, to be stored on this node.
#[derive(Debug, Clone)]
pub struct RemoteReservation {
    pub reservation: crate::domain::reservation::Reservation,
    pub request_hash: Option<String>,
}

impl TryFrom<PgReservation> for RemoteReservation {
    type Error = anyhow::Error;

    fn try_from(row: PgReservation) -> anyhow::Result<RemoteReservation> {
        use crate::domain::{
            reservation::{Reservation, Status, SyncState},
            time::from_micros,
        };
        let status = Status::parse(&row.status)
            .ok_or_else(|| anyhow::anyhow!("bad status {}", row.status))?;
        Ok(RemoteReservation {
            reservation: Reservation {
                id: row.id,
                resource_id: row.resource_id,
                user_id: row.user_id,
                starts_at: from_micros(row.starts_at),
                ends_at: from_micros(row.ends_at),
                party_size: u32::try_from(row.party_size)?,
                status,
                version: row.version,
                // Postgres settled it; a rejection is a conflict wherever it
                // is read.
                sync_state: if status == Status::Rejected {
                    SyncState::Conflict
                } else {
                    SyncState::Synced
                },
                notes: row.notes,
                metadata: match row.metadata {
                    Some(Value::Object(map)) => Some(map),
                    _ => None,
                },
                created_at: from_micros(row.created_at),
                updated_at: from_micros(row.updated_at),
            },
            request_hash: row.request_hash,
        })
    }
}

impl TryFrom<PgResource> for crate::domain::resource::Resource {
    type Error = anyhow::Error;

    fn try_from(row: PgResource) -> anyhow::Result<Self> {
        use crate::domain::{
            resource::resolve_timezone, schedule::OpeningHours, time::from_micros,
        };
        Ok(crate::domain::resource::Resource {
            id: row.id,
            tz: resolve_timezone(&row.timezone),
            name: row.name,
            capacity: u32::try_from(row.capacity)?,
            timezone: row.timezone,
            slot_minutes: u16::try_from(row.slot_minutes)?,
            opening_hours: row
                .opening_hours
                .map(serde_json::from_value::<OpeningHours>)
                .transpose()?,
            version: row.version,
            created_at: from_micros(row.created_at),
            updated_at: from_micros(row.updated_at),
        })
    }
}

impl Postgres {
    /// One reservation and its resource by id (for ids this node has never
    /// seen), bounded by `deadline`.
    pub async fn fetch(
        &self,
        id: Uuid,
        deadline: Duration,
    ) -> Result<Option<(RemoteReservation, crate::domain::resource::Resource)>, SyncError> {
        let fetch = async {
            let Some(row) =
                query_as::<_, PgReservation>(&format!("{RESERVATION_SELECT} WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
            else {
                return Ok(None);
            };
            let resource = query_as::<_, PgResource>(&format!("{RESOURCE_SELECT} WHERE id = $1"))
                .bind(row.resource_id)
                .fetch_one(&self.pool)
                .await?;
            Ok(Some((row, resource)))
        };
        let Some((row, resource)) = bounded(deadline, fetch).await? else {
            return Ok(None);
        };
        let remote =
            RemoteReservation::try_from(row).map_err(|e| SyncError::Permanent(e.to_string()))?;
        let resource = resource
            .try_into()
            .map_err(|e: anyhow::Error| SyncError::Permanent(e.to_string()))?;
        Ok(Some((remote, resource)))
    }
}

/// Where a node's change feed stands, per table: the last (transaction id,
/// sequence number) applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeedCursor {
    pub resources: (i64, i64),
    pub reservations: (i64, i64),
}

/// One page of the change feed.
#[derive(Debug, Default)]
pub struct FeedPage {
    pub resources: Vec<crate::domain::resource::Resource>,
    pub reservations: Vec<RemoteReservation>,
    /// The cursor after this page (it also passes this node's own rows,
    /// which are not returned).
    pub cursor: FeedCursor,
    /// Other nodes' rows read: a full page means there may be more.
    pub read: usize,
}

/// The feed's horizon: the lowest transaction id still running in this
/// statement's snapshot (or, with none, the snapshot's xmax). Every row with a
/// lower `change_txid` is committed and visible now, and no row with a lower
/// one can appear later. Transactions that `pg_stat_activity` shows in *other*
/// databases on the same server are left out, so an idle session elsewhere
/// cannot stall the feed; a transaction that ended between the snapshot and
/// that look stays counted, which can only delay a page. (backend_xid is
/// 32-bit: it is compared modulo 2^32.)
const FEED_HORIZON: &str = "SELECT coalesce(min(x::text::bigint), max(pg_snapshot_xmax(s.snap)::text::bigint)) AS h \
     FROM (SELECT pg_current_snapshot() AS snap) AS s \
     LEFT JOIN LATERAL pg_snapshot_xip(s.snap) AS x ON \
       (x::text::bigint % 4294967296) NOT IN ( \
         SELECT backend_xid::text::bigint FROM pg_stat_activity \
         WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database())";

/// One page of the change feed of `table`, whose columns are `columns`, in
/// one statement (so the horizon, the page and the mark share one snapshot).
///
/// `page`: up to `$3` rows after the cursor (`$1`, `$2`) and below the
/// horizon that another node (or a hand) wrote, in feed order. This node's
/// own rows are left out in SQL: it has them already, and a draining node
/// would otherwise read every row it sent straight back. (A row of this node
/// that Postgres *rejected* is stamped with this node too; the node learns of
/// the rejection from the batch's answer, recorded in the same SQLite
/// transaction that deletes its outbox rows, or from the same answer to the
/// re-sent batch after a crash: the version guard returns the stored row.)
///
/// `mark`: the last row below the horizon, whoever wrote it, flagged `mark`.
/// When the page is not full, every row up to it has been looked at, so the
/// cursor moves there: past this node's own rows, which would otherwise be
/// scanned again on every poll.
fn feed_query(columns: &str, table: &str) -> String {
    format!(
        "WITH horizon AS MATERIALIZED ({FEED_HORIZON}), \
         page AS (SELECT {columns}, change_txid, change_seq, false AS mark FROM {table} \
           WHERE (change_txid, change_seq) > ($1, $2) AND change_txid < (SELECT h FROM horizon) \
             AND changed_by <> $4 \
           ORDER BY change_txid, change_seq LIMIT $3), \
         mark AS (SELECT {columns}, change_txid, change_seq, true AS mark FROM {table} \
           WHERE (change_txid, change_seq) > ($1, $2) AND change_txid < (SELECT h FROM horizon) \
           ORDER BY change_txid DESC, change_seq DESC LIMIT 1) \
         SELECT * FROM (SELECT * FROM page UNION ALL SELECT * FROM mark) AS rows \
         ORDER BY mark, change_txid, change_seq"
    )
}

#[derive(Debug, sqlx::FromRow)]
struct Stamp {
    change_txid: i64,
    change_seq: i64,
    /// The last row below the horizon, not a row of the page.
    mark: bool,
}

#[derive(Debug, sqlx::FromRow)]
struct FeedReservation {
    #[sqlx(flatten)]
    row: PgReservation,
    #[sqlx(flatten)]
    stamp: Stamp,
}

#[derive(Debug, sqlx::FromRow)]
struct FeedResource {
    #[sqlx(flatten)]
    row: PgResource,
    #[sqlx(flatten)]
    stamp: Stamp,
}

/// Where the cursor of one table goes after a page: to its last row if the
/// page is full (there may be more), else to the mark (everything below the
/// horizon was looked at).
fn advance<T>(cursor: &mut (i64, i64), rows: Vec<(T, Stamp)>, limit: u32) -> (Vec<T>, usize) {
    let mut page = Vec::with_capacity(rows.len());
    let mut mark = None;
    for (row, stamp) in rows {
        if stamp.mark {
            mark = Some((stamp.change_txid, stamp.change_seq));
        } else {
            *cursor = (*cursor).max((stamp.change_txid, stamp.change_seq));
            page.push(row);
        }
    }
    let read = page.len();
    if read < limit as usize
        && let Some(mark) = mark
    {
        *cursor = (*cursor).max(mark);
    }
    (page, read)
}

impl Postgres {
    /// The next page of other nodes' changes after `cursor`.
    pub async fn feed(
        &self,
        node: &str,
        cursor: FeedCursor,
        limit: u32,
    ) -> Result<FeedPage, SyncError> {
        let read = async {
            let resources: Vec<FeedResource> = query_as(&feed_query(
                RESOURCE_SELECT
                    .trim_start_matches("SELECT ")
                    .trim_end_matches(" FROM resources"),
                "resources",
            ))
            .bind(cursor.resources.0)
            .bind(cursor.resources.1)
            .bind(i64::from(limit))
            .bind(node)
            .fetch_all(&self.pool)
            .await?;
            let reservations: Vec<FeedReservation> = query_as(&feed_query(
                RESERVATION_SELECT
                    .trim_start_matches("SELECT ")
                    .trim_end_matches(" FROM reservations"),
                "reservations",
            ))
            .bind(cursor.reservations.0)
            .bind(cursor.reservations.1)
            .bind(i64::from(limit))
            .bind(node)
            .fetch_all(&self.pool)
            .await?;
            sqlx::Result::Ok((resources, reservations))
        };
        let (resources, reservations) = bounded(CALL_TIMEOUT, read).await?;
        let mut page = FeedPage {
            cursor,
            ..FeedPage::default()
        };
        let (resources, read_resources) = advance(
            &mut page.cursor.resources,
            resources.into_iter().map(|r| (r.row, r.stamp)).collect(),
            limit,
        );
        let (reservations, read_reservations) = advance(
            &mut page.cursor.reservations,
            reservations.into_iter().map(|r| (r.row, r.stamp)).collect(),
            limit,
        );
        page.read = read_resources.max(read_reservations);
        page.resources = resources
            .into_iter()
            .map(|row| row.try_into())
            .collect::<anyhow::Result<_>>()
            .map_err(|e| SyncError::Permanent(e.to_string()))?;
        page.reservations = reservations
            .into_iter()
            .map(RemoteReservation::try_from)
            .collect::<anyhow::Result<_>>()
            .map_err(|e| SyncError::Permanent(e.to_string()))?;
        Ok(page)
    }
}

impl Postgres {
    /// Shares keys issued on this node (hash, user id, role).
    pub async fn push_keys(
        &self,
        node: &str,
        keys: &[(Vec<u8>, String, String)],
    ) -> Result<(), SyncError> {
        let hashes: Vec<&[u8]> = keys.iter().map(|k| k.0.as_slice()).collect();
        let users: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        let roles: Vec<&str> = keys.iter().map(|k| k.2.as_str()).collect();
        let push = sqlx::query(
            "INSERT INTO api_keys (hash, user_id, role, origin_node) \
             SELECT h, u, r, $4 FROM UNNEST($1::bytea[], $2::text[], $3::text[]) AS k(h, u, r) \
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hashes)
        .bind(users)
        .bind(roles)
        .bind(node)
        .execute(&self.pool);
        bounded(CALL_TIMEOUT, push).await.map(|_| ())
    }

    /// A key issued on another node: (user id, role).
    pub async fn find_key(
        &self,
        hash: &[u8],
        deadline: Duration,
    ) -> Result<Option<(String, String)>, SyncError> {
        let find =
            query_as::<_, (String, String)>("SELECT user_id, role FROM api_keys WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool);
        bounded(deadline, find).await
    }
}
