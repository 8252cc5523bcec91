//! Queries shared by the writer (inside its transaction) and the read pool, so
//! that the capacity check and the availability answer read holds identically.
//! The read pool runs them through sqlx; the writer runs the same SQL text
//! through [`direct`], synchronously on its own thread.

use sqlx::{SqliteExecutor, query_as};
use uuid::Uuid;

use super::rows::{RESERVATION_COLUMNS, RESOURCE_COLUMNS, ReservationRow, ResourceRow};
use crate::domain::{
    capacity::Hold, reservation::Reservation, resource::Resource, time::MAX_RESERVATION_MICROS,
};

pub(crate) const HOLDS: &str = "SELECT starts_at, ends_at, party_size FROM reservations \
     WHERE resource_id = ?1 AND status = 'confirmed' \
       AND starts_at < ?3 AND starts_at > ?2 - ?4 AND ends_at > ?2 \
       AND id IS NOT ?5";

/// Confirmed holds on `resource_id` overlapping [start, end), optionally
/// leaving one reservation out (the one being rescheduled). No reservation is
/// longer than a week, so only a bounded range of the index is scanned.
pub async fn holds<'e>(
    db: impl SqliteExecutor<'e>,
    resource_id: Uuid,
    start: i64,
    end: i64,
    exclude: Option<Uuid>,
) -> sqlx::Result<Vec<Hold>> {
    let rows: Vec<(i64, i64, i64)> = query_as(HOLDS)
        .bind(resource_id.hyphenated().to_string())
        .bind(start)
        .bind(end)
        .bind(MAX_RESERVATION_MICROS)
        .bind(exclude.map(|id| id.hyphenated().to_string()))
        .fetch_all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(start, end, size)| Hold {
            start,
            end,
            size: u32::try_from(size).unwrap_or(u32::MAX),
        })
        .collect())
}

pub async fn reservation<'e>(
    db: impl SqliteExecutor<'e>,
    id: Uuid,
) -> anyhow::Result<Option<Reservation>> {
    let row: Option<ReservationRow> = query_as(&format!(
        "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE id = ?1"
    ))
    .bind(id.hyphenated().to_string())
    .fetch_optional(db)
    .await?;
    row.map(Reservation::try_from).transpose()
}

pub async fn resource<'e>(
    db: impl SqliteExecutor<'e>,
    id: Uuid,
) -> anyhow::Result<Option<Resource>> {
    let row: Option<ResourceRow> = query_as(&format!(
        "SELECT {RESOURCE_COLUMNS} FROM resources WHERE id = ?1"
    ))
    .bind(id.hyphenated().to_string())
    .fetch_optional(db)
    .await?;
    row.map(Resource::try_from).transpose()
}

/// The same queries on the writer's rusqlite connection: no await, no
/// hand-off to another thread, and prepared statements kept in the
/// connection's statement cache.
pub mod direct {
    use rusqlite::{Connection, OptionalExtension, params};
    use uuid::Uuid;

    use super::{HOLDS, RESERVATION_COLUMNS, RESOURCE_COLUMNS, ReservationRow, ResourceRow};
    use crate::domain::{
        capacity::Hold, reservation::Reservation, resource::Resource, time::MAX_RESERVATION_MICROS,
    };

    /// See [`super::holds`]; `reach` is the longest a hold on this resource
    /// can be (at most [`MAX_RESERVATION_MICROS`]): holds starting earlier
    /// than `start - reach` cannot overlap, so that part of the index is
    /// never read.
    pub fn holds(
        conn: &Connection,
        resource_id: Uuid,
        start: i64,
        end: i64,
        reach: i64,
        exclude: Option<Uuid>,
    ) -> rusqlite::Result<Vec<Hold>> {
        let mut statement = conn.prepare_cached(HOLDS)?;
        let rows = statement.query_map(
            params![
                resource_id.hyphenated().to_string(),
                start,
                end,
                reach.min(MAX_RESERVATION_MICROS),
                exclude.map(|id| id.hyphenated().to_string()),
            ],
            |row| {
                Ok(Hold {
                    start: row.get(0)?,
                    end: row.get(1)?,
                    size: u32::try_from(row.get::<_, i64>(2)?).unwrap_or(u32::MAX),
                })
            },
        )?;
        rows.collect()
    }

    /// The longest confirmed hold on a resource (0 without any), read from
    /// the covering `reservations_by_resource` index.
    pub fn longest_hold(conn: &Connection, resource_id: Uuid) -> rusqlite::Result<i64> {
        conn.prepare_cached(
            "SELECT coalesce(max(ends_at - starts_at), 0) FROM reservations \
             WHERE resource_id = ?1 AND status = 'confirmed'",
        )?
        .query_row([resource_id.hyphenated().to_string()], |row| row.get(0))
    }

    pub fn reservation(conn: &Connection, id: Uuid) -> anyhow::Result<Option<Reservation>> {
        let row = conn
            .prepare_cached(&format!(
                "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE id = ?1"
            ))?
            .query_row([id.hyphenated().to_string()], ReservationRow::from_rusqlite)
            .optional()?;
        row.map(Reservation::try_from).transpose()
    }

    pub fn resource(conn: &Connection, id: Uuid) -> anyhow::Result<Option<Resource>> {
        let row = conn
            .prepare_cached(&format!(
                "SELECT {RESOURCE_COLUMNS} FROM resources WHERE id = ?1"
            ))?
            .query_row([id.hyphenated().to_string()], ResourceRow::from_rusqlite)
            .optional()?;
        row.map(Resource::try_from).transpose()
    }
}
