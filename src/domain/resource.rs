//! Resources: the bookable things (a barber's chair, a table, a room, the seats
//! of an event), with the capacity, time zone and opening hours that every
//! booking on them is checked against.

use jiff::{Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{
    schedule::OpeningHours,
    validation::{FieldError, Fields, Patch, integer, string},
};

pub const MAX_CAPACITY: i64 = 1_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "StoredResource")]
pub struct Resource {
    pub id: Uuid,
    pub name: String,
    pub capacity: u32,
    pub timezone: String,
    pub slot_minutes: u16,
    pub opening_hours: Option<OpeningHours>,
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The resolved zone, kept so slot and opening-hour arithmetic never looks
    /// the name up again.
    #[serde(skip)]
    pub tz: TimeZone,
}

/// A resource as serialized (the cache stores it so); the zone is resolved
/// again on the way back in.
#[derive(Deserialize)]
struct StoredResource {
    id: Uuid,
    name: String,
    capacity: u32,
    timezone: String,
    slot_minutes: u16,
    opening_hours: Option<OpeningHours>,
    version: i64,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl From<StoredResource> for Resource {
    fn from(s: StoredResource) -> Resource {
        Resource {
            id: s.id,
            tz: resolve_timezone(&s.timezone),
            name: s.name,
            capacity: s.capacity,
            timezone: s.timezone,
            slot_minutes: s.slot_minutes,
            opening_hours: s.opening_hours,
            version: s.version,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A validated `POST /v1/resources` body.
#[derive(Debug, Clone, PartialEq)]
pub struct NewResource {
    pub id: Option<Uuid>,
    pub name: String,
    pub capacity: u32,
    pub timezone: String,
    pub slot_minutes: u16,
    pub opening_hours: Option<OpeningHours>,
}

/// A validated `PATCH /v1/resources/{id}` body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourcePatch {
    pub name: Option<String>,
    pub capacity: Option<u32>,
    pub timezone: Option<String>,
    pub slot_minutes: Option<u16>,
    pub opening_hours: Patch<OpeningHours>,
}

impl NewResource {
    pub fn parse(body: Value) -> Result<NewResource, Vec<FieldError>> {
        let mut f = Fields::new(body, "")?;
        let id = f.optional("id", uuid);
        let name = f.required("name", name);
        let capacity = f.optional("capacity", capacity).unwrap_or(1);
        let timezone = f
            .optional("timezone", timezone)
            .unwrap_or_else(|| "UTC".to_owned());
        let slot_minutes = f.optional("slot_minutes", slot_minutes).unwrap_or(30);
        let opening_hours = f
            .optional_with("opening_hours", OpeningHours::from_json)
            .flatten();
        f.finish()?;
        Ok(NewResource {
            id,
            name: name.expect("required field is present when finish() succeeds"),
            capacity,
            timezone,
            slot_minutes,
            opening_hours,
        })
    }
}

impl ResourcePatch {
    pub fn parse(body: Value) -> Result<ResourcePatch, Vec<FieldError>> {
        let mut f = Fields::new(body, "")?;
        let patch = ResourcePatch {
            name: f.present("name", name),
            capacity: f.present("capacity", capacity),
            timezone: f.present("timezone", timezone),
            slot_minutes: f.present("slot_minutes", slot_minutes),
            opening_hours: match f.patch_with("opening_hours", OpeningHours::from_json) {
                // `[]` parses to None: the same as clearing.
                Patch::Set(None) => Patch::Null,
                Patch::Set(Some(hours)) => Patch::Set(hours),
                Patch::Null => Patch::Null,
                Patch::Absent => Patch::Absent,
            },
        };
        f.finish()?;
        Ok(patch)
    }
}

impl Resource {
    pub fn create(new: NewResource, now: Timestamp) -> Resource {
        let tz = resolve_timezone(&new.timezone);
        Resource {
            id: new.id.unwrap_or_else(Uuid::now_v7),
            name: new.name,
            capacity: new.capacity,
            timezone: new.timezone,
            slot_minutes: new.slot_minutes,
            opening_hours: new.opening_hours,
            version: 1,
            created_at: now,
            updated_at: now,
            tz,
        }
    }

    /// Applies a patch; returns whether anything changed (a no-op patch does
    /// not bump the version).
    pub fn apply(&mut self, patch: ResourcePatch, now: Timestamp) -> bool {
        let before = (
            self.name.clone(),
            self.capacity,
            self.timezone.clone(),
            self.slot_minutes,
            self.opening_hours.clone(),
        );
        if let Some(name) = patch.name {
            self.name = name;
        }
        if let Some(capacity) = patch.capacity {
            self.capacity = capacity;
        }
        if let Some(timezone) = patch.timezone {
            self.tz = resolve_timezone(&timezone);
            self.timezone = timezone;
        }
        if let Some(slot_minutes) = patch.slot_minutes {
            self.slot_minutes = slot_minutes;
        }
        match patch.opening_hours {
            Patch::Absent => {}
            Patch::Null => self.opening_hours = None,
            Patch::Set(hours) => self.opening_hours = Some(hours),
        }
        let after = (
            self.name.clone(),
            self.capacity,
            self.timezone.clone(),
            self.slot_minutes,
            self.opening_hours.clone(),
        );
        let changed = before != after;
        if changed {
            self.version += 1;
            self.updated_at = now;
        }
        changed
    }
}

/// Looks a validated zone name up; names are validated on the way in, so the
/// UTC fallback only guards against a hand-edited database.
pub fn resolve_timezone(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or(TimeZone::UTC)
}

pub fn uuid(value: &Value) -> Result<Uuid, String> {
    Uuid::try_parse(string(value)?).map_err(|_| "must be a UUID".to_owned())
}

fn name(value: &Value) -> Result<String, String> {
    let name = string(value)?.trim();
    match name.chars().count() {
        0 => Err("must not be empty".to_owned()),
        1..=200 => Ok(name.to_owned()),
        _ => Err("must be at most 200 characters".to_owned()),
    }
}

fn capacity(value: &Value) -> Result<u32, String> {
    integer(value, 1..=MAX_CAPACITY).map(|n| n as u32)
}

fn slot_minutes(value: &Value) -> Result<u16, String> {
    integer(value, 5..=1440).map(|n| n as u16)
}

fn timezone(value: &Value) -> Result<String, String> {
    let name = string(value)?;
    TimeZone::get(name)
        .map(|_| name.to_owned())
        .map_err(|_| "must be an IANA time zone name, e.g. Europe/Berlin".to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_apply() {
        let new = NewResource::parse(json!({"name": " Chair 1 "})).unwrap();
        assert_eq!(new.name, "Chair 1");
        assert_eq!((new.capacity, new.slot_minutes), (1, 30));
        assert_eq!(new.timezone, "UTC");
        assert!(new.opening_hours.is_none() && new.id.is_none());
    }

    #[test]
    fn every_bad_field_is_reported() {
        let errors = NewResource::parse(json!({
            "name": "", "capacity": 0, "timezone": "Mars/Olympus", "slot_minutes": 4, "colour": "red"
        }))
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["name", "capacity", "timezone", "slot_minutes", "colour"]
        );
        assert!(NewResource::parse(json!({"name": "x", "slot_minutes": 1441})).is_err());
        assert!(NewResource::parse(json!({"name": "x", "id": "nope"})).is_err());
    }

    #[test]
    fn patch_bumps_version_only_on_change() {
        let mut resource = Resource::create(
            NewResource::parse(json!({"name": "Room"})).unwrap(),
            Timestamp::UNIX_EPOCH,
        );
        assert!(!resource.apply(
            ResourcePatch::parse(json!({"name": "Room"})).unwrap(),
            Timestamp::now()
        ));
        assert_eq!(resource.version, 1);
        assert!(resource.apply(
            ResourcePatch::parse(json!({"capacity": 4, "timezone": "Europe/Berlin"})).unwrap(),
            Timestamp::now()
        ));
        assert_eq!((resource.version, resource.capacity), (2, 4));
        assert_eq!(resource.tz.iana_name(), Some("Europe/Berlin"));
    }
}
