//! Rows as `reservoir_apply_batch` reads them (see migrations/postgres):
//! instants as integer microseconds, metadata and opening hours as JSON.

use serde_json::{Value, json};

use crate::domain::{reservation::Reservation, resource::Resource, time::micros};

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
