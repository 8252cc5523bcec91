//! The OpenAPI 3.1 description of the service, generated from the code.
//!
//! Every `/v1` handler carries a `#[utoipa::path]` attribute and is registered
//! with `utoipa_axum::routes!`, which adds the route to the router *and* its
//! operation to the document in one step (see [`super::api`]); nothing can be
//! served undocumented. This module adds what the handlers cannot say about
//! themselves: the document's info and tags, the bearer security scheme, the
//! shared schemas, and hand-written operations for the routes served outside
//! the `OpenApiRouter` (`/health`, `/health/detailed`, `/metrics`).

use std::sync::LazyLock;

use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, InfoBuilder, LicenseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use super::schemas;

/// The name of the bearer security scheme, as used in `security(...)`.
pub const BEARER: &str = "bearer";

const DESCRIPTION: &str = r#"Reservoir is an offline-first reservation service: every write is committed to a local SQLite file and answered at once; with PostgreSQL configured, writes also reach it in the background.

**Authentication.** Every `/v1` operation needs `Authorization: Bearer <key>`; a missing, malformed or unknown key is `401` with `WWW-Authenticate: Bearer`. An admin key can do everything; a user key acts only as its own user and sees only its own reservations (anyone else's answer `404`). Admin-only operations answer `403` to a user key. `/health`, `/metrics`, `/openapi.json` and `/docs` need no key.

**Bodies and times.** Request bodies are JSON (`Content-Type: application/json`, at most 1 MiB). Timestamps are RFC 3339 with an offset on input (`2030-01-07T10:00:00+01:00`; no offset is `422`) and UTC on output, at microsecond precision. Unknown body fields and unknown query parameters are `422`, one error per field.

**Retries.** `POST` and `PATCH` writes under `/v1/resources` and `/v1/reservations` (including cancel and batch) accept an `Idempotency-Key` header (1 to 255 visible ASCII characters, scoped to the key's user, kept 24 hours): a repeat replays the first status and body with `Idempotent-Replayed: true`; the same key on a different request is `422` (`idempotency-key-reused`). Reservations may also carry a client-generated `id`.

**Versions.** Resources and reservations carry a `version`, sent as `ETag: "<version>"`. `If-None-Match` on a read answers `304` when it matches; `If-Match` on `PATCH` and cancel answers `412` when it does not.

**Errors.** Every error is `application/problem+json` (RFC 9457) with `type` (`urn:reservoir:problem:<kind>`), `title`, `status` and `detail`; validation problems (`422`) add `errors: [{field, message}]` listing every offending field. A path that does not exist is `404` (`not-found`); a known path with a method not listed here is `405` (`method-not-allowed`). `/v1` operations can also answer `429` (rate limited, with `Retry-After`) and `503` (request timed out or shutting down)."#;

/// `GET /health`: liveness. Served by `http::health`.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    operation_id = "health",
    summary = "Liveness check",
    description = "Answers as long as the process serves HTTP. Needs no key.",
    responses(
        (status = 200, description = "The service is up.", body = schemas::Health),
    )
)]
#[allow(dead_code)]
async fn health() {}

/// `GET /health/detailed`: readiness of the parts. Served by `http::health`.
#[utoipa::path(
    get,
    path = "/health/detailed",
    tag = "operations",
    operation_id = "healthDetailed",
    summary = "Detailed health",
    description = "Checks each dependency (SQLite, PostgreSQL, the sync backlog) with a deadline. Only a failing SQLite makes the node `down`; without PostgreSQL it still answers every request, so that only makes it `degraded`. Needs no key.",
    responses(
        (status = 200, description = "`ok` or `degraded`.", body = schemas::HealthReport),
        (status = 503, description = "`down`: SQLite is not answering.", body = schemas::HealthReport),
    )
)]
#[allow(dead_code)]
async fn health_detailed() {}

/// `GET /metrics`: Prometheus text format. Served by `http::metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    summary = "Metrics",
    description = "Counters and gauges in the Prometheus text exposition format. Needs no key.",
    responses(
        (status = 200, description = "Metrics in Prometheus text format.", body = String, content_type = "text/plain"),
    )
)]
#[allow(dead_code)]
async fn metrics() {}

/// What the handlers do not declare themselves.
#[derive(OpenApi)]
#[openapi(
    paths(health, health_detailed, metrics),
    components(schemas(
        schemas::Problem,
        schemas::FieldError,
        schemas::Role,
        schemas::NewKey,
        schemas::IssuedKey,
        schemas::Weekday,
        schemas::OpeningPeriod,
        schemas::Resource,
        schemas::NewResource,
        schemas::ResourcePatch,
        schemas::ResourcePage,
        schemas::ReservationStatus,
        schemas::SyncState,
        schemas::Reservation,
        schemas::NewReservation,
        schemas::ReservationPatch,
        schemas::ReservationPage,
        schemas::BatchRequest,
        schemas::BatchResponse,
        schemas::BatchItemResult,
        schemas::Health,
        schemas::HealthReport,
    )),
    tags(
        (name = "resources", description = "The bookable things: capacity, time zone, slot length, opening hours."),
        (name = "availability", description = "Free slots of a resource."),
        (name = "reservations", description = "Bookings of seats of a resource over a time range."),
        (name = "keys", description = "API keys (admin)."),
        (name = "sync", description = "Background sync to PostgreSQL (admin)."),
        (name = "cache", description = "The in-memory and Redis read caches (admin)."),
        (name = "operations", description = "Health and metrics, for operators and load balancers; no key needed."),
        (name = "documentation", description = "This description, as JSON and as a page; no key needed."),
    ),
    modifiers(&Base),
)]
struct BaseDoc;

struct Base;

impl Modify for Base {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        doc.info = InfoBuilder::new()
            .title("Reservoir API")
            .version(env!("CARGO_PKG_VERSION"))
            .description(Some(DESCRIPTION))
            .license(Some(
                LicenseBuilder::new()
                    .name("MIT OR Apache-2.0")
                    .identifier(Some("MIT OR Apache-2.0"))
                    .build(),
            ))
            .build();
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                BEARER,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("rsv_<43 base64url characters>")
                        .description(Some(
                            "An API key from `POST /v1/keys`, or the admin key (`RESERVOIR_ADMIN_TOKEN` or the generated `<data_dir>/admin-token`).",
                        ))
                        .build(),
                ),
            );
    }
}

/// The document the `OpenApiRouter` starts from; the handlers' operations are
/// added to it as their routes are registered.
pub fn base() -> openapi::OpenApi {
    BaseDoc::openapi()
}

/// The complete document, built once.
pub fn document() -> &'static openapi::OpenApi {
    static DOCUMENT: LazyLock<openapi::OpenApi> = LazyLock::new(|| super::api().1);
    &DOCUMENT
}

/// The complete document as JSON, built once.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        document()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    });
    &JSON
}
