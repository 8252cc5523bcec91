//! Reservations: one user's hold of `party_size` seats of a resource over
//! [starts_at, ends_at). This module parses requests into valid values; the
//! capacity rule itself lives in `capacity` and is enforced by the writer.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    auth::UserId,
    resource::uuid,
    time::{MAX_RESERVATION, instant},
    validation::{FieldError, Fields, Patch, integer, json_kind, string},
};

pub const MAX_NOTES_CHARS: usize = 2000;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_PARTY_SIZE: i64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Confirmed,
    Cancelled,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Confirmed => "confirmed",
            Status::Cancelled => "cancelled",
            Status::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "confirmed" => Some(Status::Confirmed),
            "cancelled" => Some(Status::Cancelled),
            "rejected" => Some(Status::Rejected),
            _ => None,
        }
    }

    pub fn from_json(value: &Value) -> Result<Status, String> {
        Status::parse(string(value)?)
            .ok_or_else(|| "must be one of confirmed, cancelled, rejected".to_owned())
    }
}

/// Where a reservation stands relative to the central database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    /// No central database is configured.
    Local,
    Pending,
    Synced,
    Conflict,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Local => "local",
            SyncState::Pending => "pending",
            SyncState::Synced => "synced",
            SyncState::Conflict => "conflict",
        }
    }

    pub fn parse(text: &str) -> Option<SyncState> {
        match text {
            "local" => Some(SyncState::Local),
            "pending" => Some(SyncState::Pending),
            "synced" => Some(SyncState::Synced),
            "conflict" => Some(SyncState::Conflict),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub user_id: String,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub party_size: u32,
    pub status: Status,
    pub version: i64,
    pub sync_state: SyncState,
    pub notes: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A validated create request (one `POST /v1/reservations` or batch item).
#[derive(Debug, Clone, PartialEq)]
pub struct NewReservation {
    pub id: Option<Uuid>,
    pub resource_id: Uuid,
    pub user_id: Option<UserId>,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub party_size: u32,
    pub notes: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

/// A validated `PATCH /v1/reservations/{id}` body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReservationPatch {
    pub starts_at: Option<Timestamp>,
    pub ends_at: Option<Timestamp>,
    pub party_size: Option<u32>,
    pub notes: Patch<String>,
    pub metadata: Patch<Map<String, Value>>,
}

impl NewReservation {
    /// Parses one reservation object; `prefix` names it in errors
    /// (`reservations[3]` inside a batch, empty for a single create).
    pub fn parse(body: Value, prefix: &str) -> Result<NewReservation, Vec<FieldError>> {
        let mut f = Fields::new(body, prefix)?;
        let id = f.optional("id", uuid);
        let resource_id = f.required("resource_id", uuid);
        let user_id = f.optional("user_id", UserId::from_json);
        let starts_at = f.required("starts_at", instant);
        let ends_at = f.required("ends_at", instant);
        let party_size = f.optional("party_size", party_size).unwrap_or(1);
        let notes = f.optional("notes", notes);
        let metadata = f.optional("metadata", metadata);
        if let (Some(start), Some(end)) = (starts_at, ends_at)
            && let Err(message) = check_span(start, end)
        {
            f.error("ends_at", message);
        }
        f.finish()?;
        let (Some(resource_id), Some(starts_at), Some(ends_at)) = (resource_id, starts_at, ends_at)
        else {
            unreachable!("finish() fails when a required field is missing");
        };
        Ok(NewReservation {
            id,
            resource_id,
            user_id,
            starts_at,
            ends_at,
            party_size,
            notes,
            metadata,
        })
    }

    /// A digest of what the client asked for, so a retried create with the same
    /// client id can be told apart from a different request reusing the id.
    pub fn fingerprint(&self, user_id: &str) -> [u8; 32] {
        // The canonical form is this object as compact JSON with its keys in
        // sorted order (what `json!` built before; the stored fingerprints
        // depend on it), written straight into the hasher.
        #[derive(Serialize)]
        struct Canonical<'a> {
            ends_at: Timestamp,
            metadata: &'a Option<Map<String, Value>>,
            notes: &'a Option<String>,
            party_size: u32,
            resource_id: Uuid,
            starts_at: Timestamp,
            user_id: &'a str,
        }
        let canonical = Canonical {
            ends_at: self.ends_at,
            metadata: &self.metadata,
            notes: &self.notes,
            party_size: self.party_size,
            resource_id: self.resource_id,
            starts_at: self.starts_at,
            user_id,
        };
        let mut digest = Sha256::new();
        super::digest::update_json(&mut digest, &canonical);
        digest.finalize().into()
    }
}

impl ReservationPatch {
    pub fn parse(body: Value) -> Result<ReservationPatch, Vec<FieldError>> {
        let mut f = Fields::new(body, "")?;
        let patch = ReservationPatch {
            starts_at: f.present("starts_at", instant),
            ends_at: f.present("ends_at", instant),
            party_size: f.present("party_size", party_size),
            notes: f.patch("notes", notes),
            metadata: f.patch("metadata", metadata),
        };
        if let (Some(start), Some(end)) = (patch.starts_at, patch.ends_at)
            && let Err(message) = check_span(start, end)
        {
            f.error("ends_at", message);
        }
        f.finish()?;
        Ok(patch)
    }
}

impl Reservation {
    /// Applies a patch to a copy; `Err` carries 422 field errors when the
    /// merged times are invalid. Returns `None` when nothing would change.
    pub fn patched(
        &self,
        patch: &ReservationPatch,
        now: Timestamp,
    ) -> Result<Option<Reservation>, Vec<FieldError>> {
        let mut next = self.clone();
        if let Some(start) = patch.starts_at {
            next.starts_at = start;
        }
        if let Some(end) = patch.ends_at {
            next.ends_at = end;
        }
        if let Some(size) = patch.party_size {
            next.party_size = size;
        }
        match &patch.notes {
            Patch::Absent => {}
            Patch::Null => next.notes = None,
            Patch::Set(notes) => next.notes = Some(notes.clone()),
        }
        match &patch.metadata {
            Patch::Absent => {}
            Patch::Null => next.metadata = None,
            Patch::Set(metadata) => next.metadata = Some(metadata.clone()),
        }
        check_span(next.starts_at, next.ends_at)
            .map_err(|message| vec![FieldError::new("ends_at", message)])?;
        if next == *self {
            return Ok(None);
        }
        next.version += 1;
        next.updated_at = now;
        Ok(Some(next))
    }

    /// Whether the reservation currently holds capacity.
    pub fn holds_capacity(&self) -> bool {
        self.status == Status::Confirmed
    }
}

/// `ends_at` must follow `starts_at` by at most seven days.
pub fn check_span(start: Timestamp, end: Timestamp) -> Result<(), String> {
    if end <= start {
        return Err("must be after starts_at".to_owned());
    }
    if end.duration_since(start) > MAX_RESERVATION {
        return Err("must be at most 7 days after starts_at".to_owned());
    }
    Ok(())
}

fn party_size(value: &Value) -> Result<u32, String> {
    integer(value, 1..=MAX_PARTY_SIZE).map(|n| n as u32)
}

fn notes(value: &Value) -> Result<String, String> {
    let notes = string(value)?;
    if notes.chars().count() > MAX_NOTES_CHARS {
        return Err(format!("must be at most {MAX_NOTES_CHARS} characters"));
    }
    Ok(notes.to_owned())
}

fn metadata(value: &Value) -> Result<Map<String, Value>, String> {
    match value {
        Value::Object(map) => {
            let size = serde_json::to_vec(value)
                .map(|bytes| bytes.len())
                .unwrap_or(usize::MAX);
            if size > MAX_METADATA_BYTES {
                return Err(format!(
                    "must be at most {MAX_METADATA_BYTES} bytes as JSON"
                ));
            }
            Ok(map.clone())
        }
        other => Err(format!("must be a JSON object, not {}", json_kind(other))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body() -> Value {
        json!({
            "resource_id": "0190f1f2-0000-7000-8000-000000000001",
            "starts_at": "2030-01-07T10:00:00+01:00",
            "ends_at": "2030-01-07T11:00:00+01:00",
        })
    }

    #[test]
    fn fingerprints_are_stable() {
        // Stored fingerprints are compared with retried creates' ones, and
        // Postgres holds them too: the canonical form must never change.
        let plain = NewReservation::parse(body(), "").unwrap();
        let mut full = body();
        full["party_size"] = json!(3);
        full["notes"] = json!("window seat, \"quiet\" ü");
        full["metadata"] = json!({"z": [1, 2.5, null], "a": {"b": true}});
        let full = NewReservation::parse(full, "").unwrap();
        assert_eq!(
            hex::encode(plain.fingerprint("alice")),
            "1bde99450918be557ab625de8e090cadd2033fd51e5e5585d55b6236d90ca357"
        );
        assert_eq!(
            hex::encode(full.fingerprint("bob")),
            "bd932180d9081935b2ecc8d5a66bd852555121b6cf1e388c9303e5f1c23867b6"
        );
        assert_ne!(plain.fingerprint("alice"), plain.fingerprint("bob"));
    }

    #[test]
    fn parses_with_defaults() {
        let new = NewReservation::parse(body(), "").unwrap();
        assert_eq!(new.party_size, 1);
        assert_eq!(new.starts_at.to_string(), "2030-01-07T09:00:00Z");
        assert!(new.id.is_none() && new.user_id.is_none() && new.notes.is_none());
    }

    #[test]
    fn reports_every_bad_field_with_prefix() {
        let mut bad = body();
        bad["party_size"] = json!(0);
        bad["notes"] = json!("x".repeat(2001));
        bad["metadata"] = json!([1]);
        bad["ends_at"] = json!("2030-01-07T09:00:00+01:00");
        bad["extra"] = json!(true);
        let errors = NewReservation::parse(bad, "reservations[2]").unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "reservations[2].party_size",
                "reservations[2].notes",
                "reservations[2].metadata",
                "reservations[2].ends_at",
                "reservations[2].extra"
            ]
        );
    }

    #[test]
    fn spans_are_positive_and_at_most_a_week() {
        let start: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        assert!(check_span(start, start).is_err());
        assert!(check_span(start, "2030-01-08T00:00:00Z".parse().unwrap()).is_ok());
        assert!(check_span(start, "2030-01-08T00:00:01Z".parse().unwrap()).is_err());
    }

    #[test]
    fn metadata_is_bounded() {
        let mut big = body();
        big["metadata"] = json!({"blob": "x".repeat(MAX_METADATA_BYTES)});
        assert_eq!(
            NewReservation::parse(big, "").unwrap_err()[0].field,
            "metadata"
        );
    }

    #[test]
    fn fingerprint_tells_requests_apart() {
        let a = NewReservation::parse(body(), "").unwrap();
        let mut other = body();
        other["party_size"] = json!(2);
        let b = NewReservation::parse(other, "").unwrap();
        assert_eq!(a.fingerprint("u"), a.fingerprint("u"));
        assert_ne!(a.fingerprint("u"), b.fingerprint("u"));
        assert_ne!(a.fingerprint("u"), a.fingerprint("v"));
    }

    #[test]
    fn patch_merges_and_detects_no_ops() {
        let new = NewReservation::parse(body(), "").unwrap();
        let now = Timestamp::UNIX_EPOCH;
        let reservation = Reservation {
            id: Uuid::now_v7(),
            resource_id: new.resource_id,
            user_id: "u".into(),
            starts_at: new.starts_at,
            ends_at: new.ends_at,
            party_size: 1,
            status: Status::Confirmed,
            version: 1,
            sync_state: SyncState::Local,
            notes: None,
            metadata: None,
            created_at: now,
            updated_at: now,
        };
        let same = ReservationPatch::parse(json!({"party_size": 1})).unwrap();
        assert_eq!(reservation.patched(&same, now).unwrap(), None);
        let later =
            ReservationPatch::parse(json!({"ends_at": "2030-01-07T12:00:00+01:00", "notes": "hi"}))
                .unwrap();
        let next = reservation.patched(&later, now).unwrap().unwrap();
        assert_eq!((next.version, next.notes.as_deref()), (2, Some("hi")));
        let backwards =
            ReservationPatch::parse(json!({"ends_at": "2030-01-07T08:00:00Z"})).unwrap();
        assert_eq!(
            reservation.patched(&backwards, now).unwrap_err()[0].field,
            "ends_at"
        );
    }
}
