//! Row types as SQLite returns them, and their conversion into domain values.
//! Kept apart from the queries so every read maps columns the same way.

use serde_json::{Map, Value};
use sqlx::FromRow;
use uuid::Uuid;

use crate::domain::{
    reservation::{Reservation, Status, SyncState},
    resource::{Resource, resolve_timezone},
    schedule::OpeningHours,
    time::from_micros,
};

/// The column list matching [`ReservationRow`].
pub const RESERVATION_COLUMNS: &str = "id, resource_id, user_id, starts_at, ends_at, party_size, status, \
     version, sync_state, notes, metadata, created_at, updated_at";
/// How many columns [`RESERVATION_COLUMNS`] names: a query that selects more
/// after them reads those from this index on.
pub const RESERVATION_COLUMN_COUNT: usize = 13;

#[derive(Debug, FromRow)]
pub struct ReservationRow {
    pub id: String,
    pub resource_id: String,
    pub user_id: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub party_size: i64,
    pub status: String,
    pub version: i64,
    pub sync_state: String,
    pub notes: Option<String>,
    pub metadata: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A reservation row with its create fingerprint, selected as
/// [`RESERVATION_COLUMNS`] followed by `request_hash`: what the sync sends,
/// and what a create carrying a client id compares with.
#[derive(Debug)]
pub struct HashedReservationRow {
    pub row: ReservationRow,
    pub request_hash: String,
}

impl HashedReservationRow {
    /// Reads such a row on a rusqlite connection, by position.
    pub fn from_rusqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<HashedReservationRow> {
        Ok(HashedReservationRow {
            row: ReservationRow::from_rusqlite(row)?,
            request_hash: row.get(RESERVATION_COLUMN_COUNT)?,
        })
    }

    pub fn into_reservation(self) -> anyhow::Result<(Reservation, String)> {
        Ok((Reservation::try_from(self.row)?, self.request_hash))
    }
}

impl TryFrom<ReservationRow> for Reservation {
    type Error = anyhow::Error;

    fn try_from(row: ReservationRow) -> anyhow::Result<Reservation> {
        Ok(Reservation {
            id: Uuid::try_parse(&row.id)?,
            resource_id: Uuid::try_parse(&row.resource_id)?,
            user_id: row.user_id,
            starts_at: from_micros(row.starts_at),
            ends_at: from_micros(row.ends_at),
            party_size: u32::try_from(row.party_size)?,
            status: Status::parse(&row.status)
                .ok_or_else(|| anyhow::anyhow!("bad status {}", row.status))?,
            version: row.version,
            sync_state: SyncState::parse(&row.sync_state)
                .ok_or_else(|| anyhow::anyhow!("bad sync_state {}", row.sync_state))?,
            notes: row.notes,
            metadata: row
                .metadata
                .map(|text| serde_json::from_str::<Map<String, Value>>(&text))
                .transpose()?,
            created_at: from_micros(row.created_at),
            updated_at: from_micros(row.updated_at),
        })
    }
}

impl ReservationRow {
    /// Reads a row selected with [`RESERVATION_COLUMNS`] on the writer's
    /// rusqlite connection, by position in that column list.
    pub fn from_rusqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<ReservationRow> {
        Ok(ReservationRow {
            id: row.get(0)?,
            resource_id: row.get(1)?,
            user_id: row.get(2)?,
            starts_at: row.get(3)?,
            ends_at: row.get(4)?,
            party_size: row.get(5)?,
            status: row.get(6)?,
            version: row.get(7)?,
            sync_state: row.get(8)?,
            notes: row.get(9)?,
            metadata: row.get(10)?,
            created_at: row.get(11)?,
            updated_at: row.get(12)?,
        })
    }
}

pub const RESOURCE_COLUMNS: &str =
    "id, name, capacity, timezone, slot_minutes, opening_hours, version, created_at, updated_at";

#[derive(Debug, FromRow)]
pub struct ResourceRow {
    pub id: String,
    pub name: String,
    pub capacity: i64,
    pub timezone: String,
    pub slot_minutes: i64,
    pub opening_hours: Option<String>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ResourceRow {
    /// Reads a row selected with [`RESOURCE_COLUMNS`], by position.
    pub fn from_rusqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<ResourceRow> {
        Ok(ResourceRow {
            id: row.get(0)?,
            name: row.get(1)?,
            capacity: row.get(2)?,
            timezone: row.get(3)?,
            slot_minutes: row.get(4)?,
            opening_hours: row.get(5)?,
            version: row.get(6)?,
            created_at: row.get(7)?,
            updated_at: row.get(8)?,
        })
    }
}

impl TryFrom<ResourceRow> for Resource {
    type Error = anyhow::Error;

    fn try_from(row: ResourceRow) -> anyhow::Result<Resource> {
        Ok(Resource {
            id: Uuid::try_parse(&row.id)?,
            tz: resolve_timezone(&row.timezone),
            name: row.name,
            capacity: u32::try_from(row.capacity)?,
            timezone: row.timezone,
            slot_minutes: u16::try_from(row.slot_minutes)?,
            opening_hours: row
                .opening_hours
                .map(|text| serde_json::from_str::<OpeningHours>(&text))
                .transpose()?,
            version: row.version,
            created_at: from_micros(row.created_at),
            updated_at: from_micros(row.updated_at),
        })
    }
}

/// A reservation as the JSON document `json_each` inserts it from: one bind
/// parameter carries a whole batch of rows.
pub fn reservation_json_with_hash(reservation: &Reservation, request_hash: &str) -> Value {
    use crate::domain::time::micros;
    serde_json::json!({
        "id": reservation.id.hyphenated().to_string(),
        "resource_id": reservation.resource_id.hyphenated().to_string(),
        "user_id": reservation.user_id,
        "starts_at": micros(reservation.starts_at),
        "ends_at": micros(reservation.ends_at),
        "party_size": reservation.party_size,
        "status": reservation.status.as_str(),
        "version": reservation.version,
        "sync_state": reservation.sync_state.as_str(),
        "notes": reservation.notes,
        "metadata": reservation.metadata.as_ref().map(|m| Value::Object(m.clone()).to_string()),
        "request_hash": request_hash,
        "created_at": micros(reservation.created_at),
        "updated_at": micros(reservation.updated_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reservation_column_count_matches_the_list() {
        assert_eq!(
            RESERVATION_COLUMNS.split(", ").count(),
            RESERVATION_COLUMN_COUNT
        );
    }
}
