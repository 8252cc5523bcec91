//! Reservations: `/v1/reservations...`. Handlers parse and authorise; every
//! write is decided by the writer task, every read comes from the read pool.

use axum::{body::Bytes, extract::State, response::Response};
use serde_json::Value;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    extract::{Auth, IfNoneMatch, JsonBody, PathId, Query, WriteRequest},
    pagination::{Page, encode_reservation_cursor, limit, reservation_cursor},
    render,
    schemas::{
        BatchRequest, BatchResponse, JsonBodyErrors, NewReservation as NewReservationBody, Problem,
        Reservation as ReservationSchema, ReservationPage,
        ReservationPatch as ReservationPatchBody, ReservationStatus, V1Errors,
    },
};
use crate::{
    App,
    cache::ListKey,
    domain::{
        auth::{Principal, UserId},
        reservation::{NewReservation, Reservation, ReservationPatch, Status},
        resource::uuid,
        time::{instant_str, micros},
        validation::{Fields, json_kind},
    },
    error::AppError,
    store::sqlite::{
        reads::{ReservationCursor, ReservationFilter},
        writer::{Booking, Op},
    },
};

/// Most items in one batch request.
pub const MAX_BATCH: usize = 500;

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(batch))
        .routes(routes!(read, update))
        .routes(routes!(cancel))
}

#[utoipa::path(
    post,
    path = "/v1/reservations",
    tag = "reservations",
    operation_id = "createReservation",
    summary = "Book a reservation",
    description = "Books `party_size` (default 1) seats over `[starts_at, ends_at)` (at most 7 days). It succeeds only if at every instant of that range the confirmed bookings plus this one fit the capacity (409 otherwise) and, when the resource has opening hours, lies within them (422). `user_id` defaults to the caller's; a user key naming another user is 403. Sending the same client `id` with the same content again answers 200 with the stored reservation.",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, description = "Makes a retry replay the first answer (1 to 255 visible ASCII characters; kept 24 hours)."),
    ),
    request_body(content = NewReservationBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Booked.", body = ReservationSchema,
            headers(
                ("Location" = String, description = "`/v1/reservations/{id}`"),
                ("ETag" = String, description = "`\"<version>\"`"),
                ("Idempotent-Replayed" = String, description = "`true` when this answer is a replay of an earlier request (same `Idempotency-Key`, or for a create the same client `id` and content)."),
            )),
        (status = 200, description = "A retry with the same client `id` and content: the stored reservation, with `Idempotent-Replayed: true`.", body = ReservationSchema,
            headers(
                ("Location" = String, description = "`/v1/reservations/{id}`"),
                ("ETag" = String, description = "`\"<version>\"`"),
                ("Idempotent-Replayed" = String, description = "`true` when this answer is a replay of an earlier request (same `Idempotency-Key`, or for a create the same client `id` and content)."),
            )),
        (status = 403, description = "A user key booking for another user (`forbidden`).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enough capacity (`capacity-exceeded`), or the client `id` reused with other content (`conflict`).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown fields, an unknown `resource_id`, outside opening hours (`validation`), a malformed `Idempotency-Key`, or the key reused for a different request (`idempotency-key-reused`).", body = Problem, content_type = "application/problem+json"),
        JsonBodyErrors,
        V1Errors,
    )
)]
async fn create(
    State(app): State<App>,
    write: WriteRequest,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    let idem = write.idempotency(Some(&body))?;
    let booking = authorize(&write.principal, NewReservation::parse(body, "")?)?;
    Ok(app.write(Op::CreateReservation(booking), idem).await)
}

#[utoipa::path(
    post,
    path = "/v1/reservations/batch",
    tag = "reservations",
    operation_id = "createReservations",
    summary = "Book many reservations",
    description = "Takes up to 500 reservations; each succeeds or fails on its own, and the answer has one result per input, in order, with the status that item would have answered alone. All successful items are committed before the reply.",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, description = "Makes a retry replay the first answer (1 to 255 visible ASCII characters; kept 24 hours)."),
    ),
    request_body(content = BatchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One result per item, in order.", body = BatchResponse,
            headers(("Idempotent-Replayed" = String, description = "`true` when this answer is a replay of an earlier request (same `Idempotency-Key`, or for a create the same client `id` and content)."))),
        (status = 422, description = "`reservations` missing, not an array or over 500 items, unknown fields, a malformed `Idempotency-Key` (`validation`), or the key reused for a different request (`idempotency-key-reused`). Problems with single items are reported in their results instead.", body = Problem, content_type = "application/problem+json"),
        JsonBodyErrors,
        V1Errors,
    )
)]
async fn batch(
    State(app): State<App>,
    write: WriteRequest,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    let idem = write.idempotency(Some(&body))?;
    let mut f = Fields::new(body, "")?;
    let items = f.required("reservations", |value| match value {
        Value::Array(items) if items.len() <= MAX_BATCH => Ok(items.clone()),
        Value::Array(_) => Err(format!("must hold at most {MAX_BATCH} reservations")),
        other => Err(format!("must be an array, not {}", json_kind(other))),
    });
    f.finish()?;
    let bookings = items
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            NewReservation::parse(item, &format!("reservations[{i}]"))
                .map_err(AppError::Validation)
                .and_then(|new| authorize(&write.principal, new))
        })
        .collect();
    Ok(app.write(Op::CreateReservations(bookings), idem).await)
}

#[utoipa::path(
    patch,
    path = "/v1/reservations/{id}",
    tag = "reservations",
    operation_id = "updateReservation",
    summary = "Change a reservation",
    description = "Changes any of `starts_at`, `ends_at`, `party_size`, `notes`, `metadata` (`null` clears notes or metadata) under the same rules as a create; the reservation's own current slot does not count against it. A change that changes nothing answers 200 without a new version. Cancelled or rejected reservations cannot be changed (409).",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Reservation id."),
        ("If-Match" = Option<String>, Header, nullable = false, description = "`\"<version>\"`, a list of them, or `*`: act only if the current version matches (412 otherwise)."),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, description = "Makes a retry replay the first answer (1 to 255 visible ASCII characters; kept 24 hours)."),
    ),
    request_body(content = ReservationPatchBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The reservation after the change.", body = ReservationSchema,
            headers(("ETag" = String, description = "`\"<version>\"`"), ("Idempotent-Replayed" = String, description = "`true` when this answer is a replay of an earlier request (same `Idempotency-Key`, or for a create the same client `id` and content)."))),
        (status = 404, description = "No reservation with this id that the caller may see (`not-found`).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enough capacity (`capacity-exceeded`), or the reservation is cancelled or rejected (`conflict`).", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` does not match the current version (`precondition-failed`).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown fields, outside opening hours (`validation`), a malformed `Idempotency-Key`, or the key reused for a different request (`idempotency-key-reused`).", body = Problem, content_type = "application/problem+json"),
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
    let idem = write.idempotency(Some(&body))?;
    let op = Op::UpdateReservation {
        patch: ReservationPatch::parse(body)?,
        if_match: write.if_match(),
        principal: write.principal,
        id,
    };
    Ok(app.write(op, idem).await)
}

#[utoipa::path(
    post,
    path = "/v1/reservations/{id}/cancel",
    tag = "reservations",
    operation_id = "cancelReservation",
    summary = "Cancel a reservation",
    description = "Sets the status to `cancelled` and frees the capacity at once. Cancelling again is a no-op 200 (no new version). Takes no body.",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Reservation id."),
        ("If-Match" = Option<String>, Header, nullable = false, description = "`\"<version>\"`, a list of them, or `*`: act only if the current version matches (412 otherwise)."),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, description = "Makes a retry replay the first answer (1 to 255 visible ASCII characters; kept 24 hours)."),
    ),
    responses(
        (status = 200, description = "The cancelled reservation.", body = ReservationSchema,
            headers(("ETag" = String, description = "`\"<version>\"`"), ("Idempotent-Replayed" = String, description = "`true` when this answer is a replay of an earlier request (same `Idempotency-Key`, or for a create the same client `id` and content)."))),
        (status = 404, description = "No reservation with this id that the caller may see (`not-found`).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The reservation was rejected (`conflict`).", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` does not match the current version (`precondition-failed`).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A malformed `Idempotency-Key` (`validation`), or the key reused for a different request (`idempotency-key-reused`).", body = Problem, content_type = "application/problem+json"),
        V1Errors,
    )
)]
async fn cancel(
    State(app): State<App>,
    write: WriteRequest,
    PathId(id): PathId,
) -> Result<Response, AppError> {
    let idem = write.idempotency(None)?;
    let op = Op::CancelReservation {
        if_match: write.if_match(),
        principal: write.principal,
        id,
    };
    Ok(app.write(op, idem).await)
}

#[utoipa::path(
    get,
    path = "/v1/reservations/{id}",
    tag = "reservations",
    operation_id = "getReservation",
    summary = "Get a reservation",
    description = "A user key sees only its own reservations; anyone else's answer 404.",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Reservation id."),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "`\"<version>\"` (weak allowed), a list of them, or `*`: answer 304 when one matches."),
    ),
    responses(
        (status = 200, description = "The reservation.", body = ReservationSchema,
            headers(("ETag" = String, description = "`\"<version>\"`"))),
        (status = 304, description = "`If-None-Match` matches the current version; no body.",
            headers(("ETag" = String, description = "`\"<version>\"`"))),
        (status = 404, description = "No reservation with this id that the caller may see (`not-found`).", body = Problem, content_type = "application/problem+json"),
        V1Errors,
    )
)]
async fn read(
    State(app): State<App>,
    Auth(principal): Auth,
    PathId(id): PathId,
    if_none_match: IfNoneMatch,
) -> Result<Response, AppError> {
    let reservation = app
        .reservation(id)
        .await?
        .filter(|r| principal.owns(&r.user_id))
        .ok_or_else(|| AppError::NotFound(format!("reservation {id} not found")))?;
    if if_none_match.matches(reservation.version) {
        return Ok(render::cached_not_modified(&reservation));
    }
    Ok(render::cached(&reservation))
}

#[utoipa::path(
    get,
    path = "/v1/reservations",
    tag = "reservations",
    operation_id = "listReservations",
    summary = "List reservations",
    description = "Lists in `(starts_at, id)` order; `from`/`to` select reservations overlapping that window. Follow `next_cursor` until it is `null`: every row is seen exactly once even while others are being booked. A user key only ever sees its own reservations (naming another `user_id` finds none).",
    security(("bearer" = [])),
    params(
        ("resource_id" = Option<Uuid>, Query, nullable = false, description = "Only this resource's reservations."),
        ("user_id" = Option<String>, Query, nullable = false, min_length = 1, max_length = 128, description = "Only this user's reservations."),
        ("status" = Option<ReservationStatus>, Query, nullable = false, description = "Only reservations with this status."),
        ("from" = Option<String>, Query, nullable = false, format = DateTime, description = "Only reservations ending after this instant (RFC 3339 with an offset)."),
        ("to" = Option<String>, Query, nullable = false, format = DateTime, description = "Only reservations starting before this instant; after `from`."),
        ("limit" = Option<u32>, Query, nullable = false, minimum = 1, maximum = 200, description = "Page size, 1 to 200 (default 50)."),
        ("cursor" = Option<String>, Query, nullable = false, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "One page of reservations.", body = ReservationPage),
        (status = 422, description = "An invalid, repeated or unknown query parameter (`validation`).", body = Problem, content_type = "application/problem+json"),
        V1Errors,
    )
)]
async fn list(
    State(app): State<App>,
    Auth(principal): Auth,
    Query(mut query): Query,
) -> Result<Response, AppError> {
    let mut filter = ReservationFilter {
        resource_id: query.optional("resource_id", uuid),
        user_id: query
            .optional("user_id", UserId::from_json)
            .map(UserId::into_string),
        status: query.optional("status", Status::from_json),
        from: query.optional("from", instant_str),
        to: query.optional("to", instant_str),
    };
    let limit = limit(&mut query);
    let after = query.optional("cursor", reservation_cursor);
    if let (Some(from), Some(to)) = (filter.from, filter.to)
        && to <= from
    {
        query.error("to", "must be after from");
    }
    query.finish()?;
    if !principal.is_admin() {
        // A user only ever sees their own rows; naming another user finds none.
        match &filter.user_id {
            Some(user) if user != principal.user_id.as_str() => {
                return page_response(&Page::<Reservation> {
                    items: Vec::new(),
                    next_cursor: None,
                });
            }
            _ => filter.user_id = Some(principal.user_id.as_str().to_owned()),
        }
    }
    // Pages are cached like availability answers: the key is everything the
    // page depends on (the caller's own user id included for user keys), and
    // the stamp read before the query makes a page stored across a change in
    // its scope a miss.
    let key = ListKey {
        resource_id: filter.resource_id,
        user_id: filter.user_id.clone(),
        status: filter.status.map(Status::as_str),
        from: filter.from.map(micros),
        to: filter.to.map(micros),
        after: after.as_ref().map(|cursor| (cursor.starts_at, cursor.id)),
        limit,
    };
    if let Some(body) = app.cache.list_page(&key).await {
        return Ok(render::json_bytes(body));
    }
    let stamp = app.cache.list_stamp(&key);
    let rows = app
        .reads
        .list_reservations(&filter, after.as_ref(), limit + 1)
        .await?;
    let page = Page::from_rows(rows, limit, |r| {
        encode_reservation_cursor(&ReservationCursor {
            starts_at: micros(r.starts_at),
            id: r.id,
        })
    });
    let body = Bytes::from(serde_json::to_vec(&page).map_err(anyhow::Error::from)?);
    app.cache.store_list_page(key, stamp, body.clone()).await;
    Ok(render::json_bytes(body))
}

/// A page as `Json` would send it.
fn page_response(page: &Page<Reservation>) -> Result<Response, AppError> {
    let body = serde_json::to_vec(page).map_err(anyhow::Error::from)?;
    Ok(render::json_bytes(Bytes::from(body)))
}

/// Resolves whom a reservation is for: a user key books for itself only.
fn authorize(principal: &Principal, mut new: NewReservation) -> Result<Booking, AppError> {
    let user_id = match new.user_id.take() {
        None => principal.user_id.clone(),
        Some(user) if principal.owns(user.as_str()) => user,
        Some(_) => {
            return Err(AppError::Forbidden(
                "a user key can only create reservations for its own user".into(),
            ));
        }
    };
    Ok(Booking::new(new, user_id, principal.is_admin()))
}
