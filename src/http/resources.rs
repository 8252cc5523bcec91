//! Resources and their availability: `/v1/resources...`.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, Uri},
    response::Response,
};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    extract::{Auth, JsonBody, PathId, Query, WriteRequest, not_modified},
    pagination::{Page, encode_id_cursor, id_cursor, limit},
    render,
    schemas::{
        JsonBodyErrors, NewResource as NewResourceBody, Problem, Resource as ResourceSchema,
        ResourcePage, ResourcePatch as ResourcePatchBody, V1Errors,
    },
};
use crate::{
    App,
    cache::Cached,
    domain::{
        capacity::LoadProfile,
        resource::{NewResource, Resource, ResourcePatch},
        schedule::slots,
        time::{instant_str, micros},
        validation::{integer, string},
    },
    error::AppError,
    store::sqlite::writer::Op,
};

/// Longest availability window.
const MAX_WINDOW: SignedDuration = SignedDuration::from_hours(31 * 24);

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, update))
        .routes(routes!(availability))
}

#[utoipa::path(
    post,
    path = "/v1/resources",
    tag = "resources",
    operation_id = "createResource",
    summary = "Create a resource (admin)",
    description = "Only `name` is required; `capacity` defaults to 1, `timezone` to `UTC`, `slot_minutes` to 30. Without `opening_hours` the resource is always open.",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, description = "Makes a retry replay the first answer (1 to 255 visible ASCII characters; kept 24 hours)."),
    ),
    request_body(content = NewResourceBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created. A replay by `Idempotency-Key` answers the same, with `Idempotent-Replayed: true`.", body = ResourceSchema,
            headers(
                ("Location" = String, description = "`/v1/resources/{id}`"),
                ("ETag" = String, description = "`\"<version>\"`"),
                ("Idempotent-Replayed" = String, description = "`true` when this answer is a replay of an earlier request with the same `Idempotency-Key`."),
            )),
        (status = 403, description = "The caller is not an admin (`forbidden`).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A resource with this `id` already exists (`conflict`).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown fields, a malformed `Idempotency-Key` (`validation`), or the key reused for a different request (`idempotency-key-reused`).", body = Problem, content_type = "application/problem+json"),
        JsonBodyErrors,
        V1Errors,
    )
)]
async fn create(
    State(app): State<App>,
    write: WriteRequest,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    write.require_admin()?;
    let idem = write.idempotency(Some(&body))?;
    let new = NewResource::parse(body)?;
    Ok(app.write(Op::CreateResource(new), idem).await)
}

#[utoipa::path(
    patch,
    path = "/v1/resources/{id}",
    tag = "resources",
    operation_id = "updateResource",
    summary = "Change a resource (admin)",
    description = "Changes any field of the create body except `id`; `\"opening_hours\": null` (or `[]`) makes it always open. Lowering the capacity does not cancel existing bookings; it limits new ones. A change that changes nothing answers 200 without a new version.",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Resource id."),
        ("If-Match" = Option<String>, Header, nullable = false, description = "`\"<version>\"`, a list of them, or `*`: change only if the current version matches (412 otherwise)."),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, description = "Makes a retry replay the first answer (1 to 255 visible ASCII characters; kept 24 hours)."),
    ),
    request_body(content = ResourcePatchBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The resource after the change.", body = ResourceSchema,
            headers(
                ("ETag" = String, description = "`\"<version>\"`"),
                ("Idempotent-Replayed" = String, description = "`true` when this answer is a replay of an earlier request with the same `Idempotency-Key`."),
            )),
        (status = 403, description = "The caller is not an admin (`forbidden`).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No resource with this id (`not-found`).", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` does not match the current version (`precondition-failed`).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown fields, a malformed `Idempotency-Key` (`validation`), or the key reused for a different request (`idempotency-key-reused`).", body = Problem, content_type = "application/problem+json"),
        JsonBodyErrors,
        V1Errors,
    )
)]
async fn update(
    State(app): State<App>,
    write: WriteRequest,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    write.require_admin()?;
    let idem = write.idempotency(Some(&body))?;
    let op = Op::UpdateResource {
        id,
        patch: ResourcePatch::parse(body)?,
        if_match: write.if_match(),
    };
    Ok(app.write(op, idem).await)
}

#[utoipa::path(
    get,
    path = "/v1/resources/{id}",
    tag = "resources",
    operation_id = "getResource",
    summary = "Get a resource",
    description = "Any key can read resources.",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Resource id."),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "`\"<version>\"` (weak allowed), a list of them, or `*`: answer 304 when one matches."),
    ),
    responses(
        (status = 200, description = "The resource.", body = ResourceSchema,
            headers(("ETag" = String, description = "`\"<version>\"`"))),
        (status = 304, description = "`If-None-Match` matches the current version; no body.",
            headers(("ETag" = String, description = "`\"<version>\"`"))),
        (status = 404, description = "No resource with this id (`not-found`).", body = Problem, content_type = "application/problem+json"),
        V1Errors,
    )
)]
async fn read(
    State(app): State<App>,
    _: Auth,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let resource = find(&app, id).await?;
    if not_modified(&headers, resource.version) {
        return Ok(render::cached_not_modified(&resource));
    }
    Ok(render::cached(&resource))
}

#[utoipa::path(
    get,
    path = "/v1/resources",
    tag = "resources",
    operation_id = "listResources",
    summary = "List resources",
    description = "Ordered by id. Follow `next_cursor` until it is `null`.",
    security(("bearer" = [])),
    params(
        ("limit" = Option<u32>, Query, nullable = false, minimum = 1, maximum = 200, description = "Page size, 1 to 200 (default 50)."),
        ("cursor" = Option<String>, Query, nullable = false, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "One page of resources.", body = ResourcePage),
        (status = 422, description = "An invalid, repeated or unknown query parameter (`validation`).", body = Problem, content_type = "application/problem+json"),
        V1Errors,
    )
)]
async fn list(
    State(app): State<App>,
    _: Auth,
    Query(mut query): Query,
) -> Result<Json<Page<Resource>>, AppError> {
    let limit = limit(&mut query);
    let after = query.optional("cursor", id_cursor);
    query.finish()?;
    let rows = app.reads.list_resources(after, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |r| {
        encode_id_cursor(r.id)
    })))
}

/// The free slots of a resource in a window.
#[derive(Debug, Serialize, ToSchema)]
struct Availability {
    resource_id: Uuid,
    timezone: String,
    slot_minutes: u16,
    slots: Vec<Slot>,
}

/// One bookable slot, `[starts_at, ends_at)`, with the seats still free.
#[derive(Debug, Serialize, ToSchema)]
struct Slot {
    starts_at: Timestamp,
    ends_at: Timestamp,
    remaining: u32,
}

#[utoipa::path(
    get,
    path = "/v1/resources/{id}/availability",
    tag = "availability",
    operation_id = "getAvailability",
    summary = "Free slots of a resource",
    description = "The slots that lie inside `[from, to)` (at most 31 days) and inside opening hours, with at least `party_size` seats `remaining`. Slot starts are aligned to multiples of `slot_minutes` from local midnight, so on daylight-saving days an hourly resource has 23 or 25 slots. (`+` in a query string must be sent as `%2B`.)",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Resource id."),
        ("from" = String, Query, format = DateTime, description = "Window start, RFC 3339 with an offset."),
        ("to" = String, Query, format = DateTime, description = "Window end, after `from` by at most 31 days."),
        ("party_size" = Option<u32>, Query, nullable = false, minimum = 1, maximum = 1_000_000, description = "Seats needed (default 1)."),
    ),
    responses(
        (status = 200, description = "The free slots.", body = Availability),
        (status = 404, description = "No resource with this id (`not-found`).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A missing, invalid, repeated or unknown query parameter (`validation`).", body = Problem, content_type = "application/problem+json"),
        V1Errors,
    )
)]
async fn availability(
    State(app): State<App>,
    _: Auth,
    PathId(id): PathId,
    uri: Uri,
) -> Result<Response, AppError> {
    // Answers are found by the raw query string first: a stored answer means
    // that exact string was valid, and parsing it (JSON fields, two RFC 3339
    // instants) was a visible part of a cached answer's cost.
    let raw = uri.query().unwrap_or("");
    if let Some(body) = app.cache.availability(id, raw).await {
        return Ok(render::json_bytes(body));
    }
    let Query(mut query) = Query::parse(raw)?;
    let from = query.required("from", instant_str);
    let to = query.required("to", instant_str);
    let party_size = query
        .optional("party_size", |value| {
            let n: Value = string(value)?
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| "must be an integer".to_owned())?;
            integer(&n, 1..=1_000_000).map(|n| n as u32)
        })
        .unwrap_or(1);
    if let (Some(from), Some(to)) = (from, to) {
        if to <= from {
            query.error("to", "must be after from");
        } else if to.duration_since(from) > MAX_WINDOW {
            query.error("to", "must be at most 31 days after from");
        }
    }
    query.finish()?;
    let (Some(from), Some(to)) = (from, to) else {
        unreachable!("finish() fails when a required parameter is missing")
    };
    let window = (micros(from), micros(to), party_size);
    app.cache.availability_miss();
    // The generation is read before the resource and the holds: a change to
    // either after this point keeps the answer out of the cache.
    let (windows, generation) = app.cache.availability_generation(id).await;
    let resource = find(&app, id).await?;
    let profile = LoadProfile::new(app.reads.holds(id, micros(from), micros(to)).await?);
    let slots = slots(
        resource.opening_hours.as_ref(),
        &resource.tz,
        resource.slot_minutes,
        from,
        to,
    )
    .into_iter()
    .filter_map(|slot| {
        let taken = profile.peak(micros(slot.start), micros(slot.end));
        let remaining = resource.capacity.saturating_sub(taken);
        (remaining >= party_size).then_some(Slot {
            starts_at: slot.start,
            ends_at: slot.end,
            remaining,
        })
    })
    .collect();
    let body = axum::body::Bytes::from(
        serde_json::to_vec(&Availability {
            resource_id: resource.id,
            timezone: resource.timezone.clone(),
            slot_minutes: resource.slot_minutes,
            slots,
        })
        .map_err(anyhow::Error::from)?,
    );
    app.cache
        .store_availability(id, &windows, generation, window, raw, body.clone())
        .await;
    Ok(render::json_bytes(body))
}

async fn find(app: &App, id: Uuid) -> Result<Arc<Cached<Resource>>, AppError> {
    app.resource(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("resource {id} not found")))
}
