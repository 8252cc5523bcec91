//! Queries shared by the writer (inside its transaction) and the read pool, so
//! that the capacity check and the availability answer read holds identically.

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
