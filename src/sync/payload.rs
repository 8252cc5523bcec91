//! Rows as `reservoir_apply_rows` and `reservoir_apply_batch` read them (see
//! migrations/postgres): instants as integer microseconds, metadata and
//! opening hours as JSON.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::domain::{reservation::Reservation, resource::Resource, time::micros};

/// One reservation as `reservoir_apply_rows` takes it: each field goes into
/// its own typed array (binary on the wire; Postgres parses no JSON for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRow {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub user_id: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub party_size: i32,
    pub status: &'static str,
    pub version: i64,
    pub notes: Option<String>,
    /// JSON text.
    pub metadata: Option<String>,
    pub request_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub fn reservation_row(r: &Reservation, request_hash: &str) -> ReservationRow {
    ReservationRow {
        id: r.id,
        resource_id: r.resource_id,
        user_id: r.user_id.clone(),
        starts_at: micros(r.starts_at),
        ends_at: micros(r.ends_at),
        // Out of range only by a bug; Postgres then refuses the row for good.
        party_size: i32::try_from(r.party_size).unwrap_or(i32::MAX),
        status: r.status.as_str(),
        version: r.version,
        notes: r.notes.clone(),
        metadata: r
            .metadata
            .as_ref()
            .map(|m| serde_json::to_string(m).unwrap_or_else(|_| "{}".to_owned())),
        request_hash: request_hash.to_owned(),
        created_at: micros(r.created_at),
        updated_at: micros(r.updated_at),
    }
}

pub fn reservation(r: &Reservation, request_hash: &str) -> Value {
    json!({
        "id": r.id,
        "resource_id": r.resource_id,
        "user_id": r.user_id,
        "starts_at": micros(r.starts_at),
        "ends_at": micros(r.ends_at),
        "party_size": r.party_size,
        "status": r.status.as_str(),
        "version": r.version,
        "notes": r.notes,
        "metadata": r.metadata,
        "request_hash": request_hash,
        "created_at": micros(r.created_at),
        "updated_at": micros(r.updated_at),
    })
}

pub fn resource(r: &Resource) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "capacity": r.capacity,
        "timezone": r.timezone,
        "slot_minutes": r.slot_minutes,
        "opening_hours": r.opening_hours,
        "version": r.version,
        "created_at": micros(r.created_at),
        "updated_at": micros(r.updated_at),
    })
}
