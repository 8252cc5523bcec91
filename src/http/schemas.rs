//! Documentation-only types for the OpenAPI description.
//!
//! Request bodies are read by hand from `serde_json::Value` (see
//! `domain::validation`) so that a 422 can list every bad field; these structs
//! mirror exactly what those parsers accept (names, types, bounds, defaults,
//! required vs optional, unknown fields rejected) and what the handlers send,
//! so the generated schemas describe the wire format. They are never built at
//! run time. The integration tests compare them with real responses.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::{
    IntoResponses, ToSchema,
    openapi::{
        ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, RefOr, ResponseBuilder, Type,
        response::Response, schema::SchemaType,
    },
};
use uuid::Uuid;

use super::error::PROBLEM_JSON;

/// An RFC 9457 problem document: every error the service answers with, sent
/// as `application/problem+json`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:reservoir:problem:validation",
    "title": "Invalid Request",
    "status": 422,
    "detail": "2 fields are invalid",
    "errors": [
        {"field": "party_size", "message": "must be an integer from 1 to 1000000"},
        {"field": "colour", "message": "unknown field"}
    ]
}))]
pub struct Problem {
    /// `urn:reservoir:problem:<kind>`; kinds: `unauthorized`, `forbidden`,
    /// `not-found`, `method-not-allowed`, `malformed-json`,
    /// `unsupported-media-type`, `payload-too-large`, `validation`,
    /// `capacity-exceeded`, `conflict`, `precondition-failed`,
    /// `idempotency-key-reused`, `rate-limited`, `unavailable`, `internal`.
    #[serde(rename = "type")]
    #[schema(format = "uri", example = "urn:reservoir:problem:not-found")]
    pub kind: String,
    /// A short, fixed summary of the kind, e.g. `Not Found`.
    pub title: String,
    /// The HTTP status code, repeated.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong with this request, for humans. Server errors never
    /// carry internal details.
    pub detail: String,
    /// Only on `validation` problems (422): every offending field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub errors: Option<Vec<FieldError>>,
}

/// One offending field of a validation problem.
#[derive(Serialize, ToSchema)]
pub struct FieldError {
    /// JSON field name (nested: `opening_hours[1].close`, in a batch:
    /// `reservations[3].party_size`), query parameter name, or header name
    /// (`Idempotency-Key`).
    #[schema(example = "party_size")]
    pub field: String,
    #[schema(example = "must be an integer from 1 to 1000000")]
    pub message: String,
}

// ---------------------------------------------------------------------------
// Keys

/// Role of an API key.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Acts only as its own user.
    User,
    /// Can do everything.
    Admin,
}

/// `POST /v1/keys` body.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user_id": "alice", "role": "user"}))]
pub struct NewKey {
    /// Who the key acts as: 1 to 128 characters, no control characters, no
    /// leading or trailing whitespace.
    #[schema(min_length = 1, max_length = 128)]
    pub user_id: String,
    /// Defaults to `user`.
    #[schema(default = "user")]
    pub role: Option<Role>,
}

/// A freshly issued key. The key itself is shown only in this response; the
/// service stores its SHA-256 hash.
#[derive(Serialize, ToSchema)]
pub struct IssuedKey {
    /// `rsv_` followed by 43 base64url characters.
    #[schema(pattern = "^rsv_[A-Za-z0-9_-]{43}$")]
    pub key: String,
    pub user_id: String,
    pub role: Role,
}

// ---------------------------------------------------------------------------
// Resources

/// Day of the week of an opening period.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// One opening period, in the resource's local wall-clock time. A period
/// whose `close` is not after `open` runs past midnight into the next day
/// (`"18:00"`–`"02:00"`); `close` equal to `open` is invalid; `"24:00"` closes
/// at midnight.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"weekday": "mon", "open": "09:00", "close": "17:00"}))]
pub struct OpeningPeriod {
    pub weekday: Weekday,
    /// `HH:MM`, 00:00 to 23:59.
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$", example = "09:00")]
    pub open: String,
    /// `HH:MM`, 00:00 to 24:00.
    #[schema(pattern = "^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$", example = "17:00")]
    pub close: String,
}

/// A bookable thing: a chair, a table, a room, the seats of an event.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0190f1f2-0000-7000-8000-000000000001",
    "name": "Chair 1",
    "capacity": 1,
    "timezone": "Europe/Berlin",
    "slot_minutes": 30,
    "opening_hours": [{"weekday": "mon", "open": "09:00", "close": "17:00"}],
    "version": 1,
    "created_at": "2030-01-01T08:00:00Z",
    "updated_at": "2030-01-01T08:00:00Z"
}))]
pub struct Resource {
    pub id: Uuid,
    pub name: String,
    /// Seats that can be booked at the same instant.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub capacity: u32,
    /// IANA time zone name; opening hours and the slot grid are in this zone.
    pub timezone: String,
    /// Length of an availability slot, and its grid from local midnight.
    #[schema(minimum = 5, maximum = 1440)]
    pub slot_minutes: u16,
    /// `null`: always open.
    #[schema(required = true)]
    pub opening_hours: Option<Vec<OpeningPeriod>>,
    /// Starts at 1, incremented by every change; also sent as the `ETag`.
    #[schema(minimum = 1)]
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `POST /v1/resources` body. Only `name` is required.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Chair 1", "capacity": 1, "timezone": "Europe/Berlin", "slot_minutes": 30,
    "opening_hours": [{"weekday": "mon", "open": "09:00", "close": "17:00"},
                      {"weekday": "sat", "open": "10:00", "close": "14:00"}]
}))]
pub struct NewResource {
    /// Client-chosen id; generated when absent. An id that already exists is
    /// `409 conflict`.
    pub id: Option<Uuid>,
    /// 1 to 200 characters after trimming whitespace.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(minimum = 1, maximum = 1_000_000, default = 1)]
    pub capacity: Option<u32>,
    /// IANA time zone name, e.g. `Europe/Berlin`.
    #[schema(default = "UTC", example = "Europe/Berlin")]
    pub timezone: Option<String>,
    #[schema(minimum = 5, maximum = 1440, default = 30)]
    pub slot_minutes: Option<u16>,
    /// Absent, `null` or `[]`: always open.
    #[schema(max_items = 100)]
    pub opening_hours: Option<Vec<OpeningPeriod>>,
}

/// `PATCH /v1/resources/{id}` body: any field of the create body except `id`.
/// Absent fields stay as they are; only `opening_hours` may be `null` (or
/// `[]`), which clears them (always open).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"capacity": 2}))]
pub struct ResourcePatch {
    #[schema(nullable = false, min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(nullable = false, minimum = 1, maximum = 1_000_000)]
    pub capacity: Option<u32>,
    #[schema(nullable = false)]
    pub timezone: Option<String>,
    #[schema(nullable = false, minimum = 5, maximum = 1440)]
    pub slot_minutes: Option<u16>,
    #[schema(max_items = 100)]
    pub opening_hours: Option<Vec<OpeningPeriod>>,
}

/// One page of resources, ordered by id.
#[derive(Serialize, ToSchema)]
pub struct ResourcePage {
    pub items: Vec<Resource>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------------------
// Reservations

/// Status of a reservation.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReservationStatus {
    /// Holds capacity.
    Confirmed,
    /// Cancelled by a client; frees its capacity.
    Cancelled,
    /// Refused by PostgreSQL because it would overbook across nodes.
    Rejected,
}

/// Where a reservation stands relative to PostgreSQL.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    /// No PostgreSQL is configured.
    Local,
    /// The current version has not reached PostgreSQL yet.
    Pending,
    /// PostgreSQL has the current version.
    Synced,
    /// PostgreSQL rejected it (status `rejected`).
    Conflict,
}

/// A reservation: `party_size` seats of a resource over `[starts_at, ends_at)`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0190f1f2-0000-7000-8000-00000000000a",
    "resource_id": "0190f1f2-0000-7000-8000-000000000001",
    "user_id": "admin",
    "starts_at": "2030-01-07T09:00:00Z",
    "ends_at": "2030-01-07T09:30:00Z",
    "party_size": 1,
    "status": "confirmed",
    "version": 1,
    "sync_state": "local",
    "notes": "beard trim",
    "metadata": null,
    "created_at": "2030-01-01T08:00:00Z",
    "updated_at": "2030-01-01T08:00:00Z"
}))]
pub struct Reservation {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub user_id: String,
    /// UTC; fractional seconds only when non-zero.
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub party_size: u32,
    pub status: ReservationStatus,
    /// Starts at 1, incremented by every change; also sent as the `ETag`.
    #[schema(minimum = 1)]
    pub version: i64,
    pub sync_state: SyncState,
    #[schema(required = true, max_length = 2000)]
    pub notes: Option<String>,
    /// Any JSON object the client attached.
    #[schema(required = true, value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `POST /v1/reservations` body (and each item of a batch). Times are RFC 3339
/// with an offset (`Z` or `+01:00`); a time without an offset is 422.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "resource_id": "0190f1f2-0000-7000-8000-000000000001",
    "starts_at": "2030-01-07T10:00:00+01:00",
    "ends_at": "2030-01-07T10:30:00+01:00",
    "party_size": 1,
    "notes": "beard trim"
}))]
pub struct NewReservation {
    /// Client-generated id for safe retries: the same id with the same content
    /// again answers 200 with the stored reservation; with other content 409.
    pub id: Option<Uuid>,
    /// An unknown resource is 422 on this field.
    pub resource_id: Uuid,
    /// Defaults to the caller's user; a user key naming another user is 403.
    #[schema(min_length = 1, max_length = 128)]
    pub user_id: Option<String>,
    /// Must lie within the resource's opening hours (422 otherwise).
    pub starts_at: Timestamp,
    /// After `starts_at`, by at most 7 days.
    pub ends_at: Timestamp,
    #[schema(minimum = 1, maximum = 1_000_000, default = 1)]
    pub party_size: Option<u32>,
    #[schema(max_length = 2000)]
    pub notes: Option<String>,
    /// Any JSON object, at most 16 KiB as JSON.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// `PATCH /v1/reservations/{id}` body. Absent fields stay as they are;
/// `notes` and `metadata` may be `null` to clear them; the times and
/// `party_size` may not be `null`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ends_at": "2030-01-07T11:00:00+01:00"}))]
pub struct ReservationPatch {
    #[schema(nullable = false)]
    pub starts_at: Option<Timestamp>,
    #[schema(nullable = false)]
    pub ends_at: Option<Timestamp>,
    #[schema(nullable = false, minimum = 1, maximum = 1_000_000)]
    pub party_size: Option<u32>,
    #[schema(max_length = 2000)]
    pub notes: Option<String>,
    /// Any JSON object, at most 16 KiB as JSON.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// One page of reservations, in `(starts_at, id)` order.
#[derive(Serialize, ToSchema)]
pub struct ReservationPage {
    pub items: Vec<Reservation>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// `POST /v1/reservations/batch` body.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 0 to 500 reservations; each succeeds or fails on its own.
    #[schema(max_items = 500)]
    pub reservations: Vec<NewReservation>,
}

/// The answer to a batch: one result per input item, in order.
#[derive(Serialize, ToSchema)]
pub struct BatchResponse {
    pub results: Vec<BatchItemResult>,
}

/// The outcome of one batch item.
#[derive(Serialize, ToSchema)]
pub struct BatchItemResult {
    /// What the item would have answered on its own: 201 created, 200
    /// replayed (same id, same content), 403, 409, 422 or 429 (booking quota).
    #[schema(schema_with = batch_item_status)]
    pub status: u16,
    /// Present on 200 and 201.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reservation: Option<Reservation>,
    /// Present on errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<Problem>,
}

fn batch_item_status() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Integer))
        .enum_values(Some([201, 200, 403, 409, 422, 429]))
}

// ---------------------------------------------------------------------------
// Operations

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(schema_with = health_ok)]
    pub status: String,
}

fn health_ok() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .enum_values(Some(["ok"]))
}

/// Overall state: `down` when SQLite fails (503); `degraded` when an
/// optional dependency (PostgreSQL) is unreachable, which only delays sync.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Ok,
    Degraded,
    Down,
}

/// State of one dependency.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckState {
    Ok,
    Unreachable,
    /// Not configured.
    Disabled,
}

/// One dependency check.
#[derive(Serialize, ToSchema)]
pub struct DependencyCheck {
    pub status: CheckState,
    /// Round trip of the check, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub rtt_ms: Option<f64>,
    /// Why it is unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
    /// What was checked (PostgreSQL: host and database, no password).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub target: Option<String>,
}

/// The sync backlog (`null` when it cannot be read).
#[derive(Serialize, ToSchema)]
pub struct SyncBacklog {
    #[schema(required = true)]
    pub pending: Option<i64>,
    #[schema(required = true)]
    pub oldest_pending_age_ms: Option<i64>,
}

/// The checks of `GET /health/detailed`.
#[derive(Serialize, ToSchema)]
pub struct HealthChecks {
    pub sqlite: DependencyCheck,
    pub postgres: DependencyCheck,
    pub redis: DependencyCheck,
    pub sync: SyncBacklog,
}

/// `GET /health/detailed`.
#[derive(Serialize, ToSchema)]
pub struct HealthReport {
    pub status: HealthState,
    /// The service version.
    pub version: String,
    pub node_id: String,
    /// Seconds since the service started.
    pub uptime_s: u64,
    pub checks: HealthChecks,
}

// ---------------------------------------------------------------------------
// Responses shared by many operations

/// A problem+json response with `description`.
fn problem_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build(),
    )
}

fn string_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new().schema_type(SchemaType::new(Type::String)),
        ))
        .description(Some(description))
        .build()
}

fn responses(list: Vec<(u16, ResponseBuilder)>) -> BTreeMap<String, RefOr<Response>> {
    list.into_iter()
        .map(|(status, response)| (status.to_string(), RefOr::T(response.build())))
        .collect()
}

/// The errors every `/v1` operation can answer: 401, 429, 500, 503.
pub struct V1Errors;

impl IntoResponses for V1Errors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let unauthorized = problem_response(
            "Missing, malformed or unknown `Authorization: Bearer` key (`unauthorized`).",
        )
        .header("WWW-Authenticate", string_header("Always `Bearer`."));
        let rate_limited = problem_response(
            "Too many requests for this API key, or a booking quota of the user is used up (`rate-limited`); retry after `Retry-After`.",
        )
        .header(
            "Retry-After",
            string_header("Seconds to wait before retrying."),
        );
        responses(vec![
            (401, unauthorized),
            (429, rate_limited),
            (
                500,
                problem_response(
                    "An unexpected error (`internal`); the cause is logged, not sent.",
                ),
            ),
            (
                503,
                problem_response(
                    "The request timed out or the service is shutting down (`unavailable`); safe to retry with the same `Idempotency-Key` or client id.",
                ),
            ),
        ])
    }
}

/// The errors of reading a JSON request body: 400, 413, 415.
pub struct JsonBodyErrors;

impl IntoResponses for JsonBodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(vec![
            (
                400,
                problem_response("The body is not valid JSON (`malformed-json`)."),
            ),
            (
                413,
                problem_response("The body is over 1 MiB (`payload-too-large`)."),
            ),
            (
                415,
                problem_response("The body is not `application/json` (`unsupported-media-type`)."),
            ),
        ])
    }
}
