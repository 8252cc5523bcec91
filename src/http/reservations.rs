//! Reservations: `/v1/reservations...`. Handlers parse and authorise; every
//! write is decided by the writer task, every read comes from the read pool.

use axum::{
    Json, Router,
    extract::State,
    http::HeaderMap,
    response::Response,
    routing::{get, post},
};
use serde_json::Value;

use super::{
    extract::{Auth, JsonBody, PathId, Query, WriteRequest, not_modified},
    pagination::{Page, encode_reservation_cursor, limit, reservation_cursor},
    render,
};
use crate::{
    App,
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

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/reservations", get(list).post(create))
        .route("/v1/reservations/batch", post(batch))
        .route("/v1/reservations/{id}", get(read).patch(update))
        .route("/v1/reservations/{id}/cancel", post(cancel))
}

async fn create(
    State(app): State<App>,
    write: WriteRequest,
    JsonBody(body): JsonBody,
) -> Result<Response, AppError> {
    let idem = write.idempotency(Some(&body))?;
    let booking = authorize(&write.principal, NewReservation::parse(body, "")?)?;
    Ok(app.write(Op::CreateReservation(booking), idem).await)
}

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

async fn read(
    State(app): State<App>,
    Auth(principal): Auth,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let reservation = app
        .reads
        .reservation(id)
        .await?
        .filter(|r| principal.owns(&r.user_id))
        .ok_or_else(|| AppError::NotFound(format!("reservation {id} not found")))?;
    if not_modified(&headers, reservation.version) {
        return Ok(render::not_modified(reservation.version));
    }
    Ok(render::entity(&reservation, reservation.version))
}

async fn list(
    State(app): State<App>,
    Auth(principal): Auth,
    Query(mut query): Query,
) -> Result<Json<Page<Reservation>>, AppError> {
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
                return Ok(Json(Page {
                    items: Vec::new(),
                    next_cursor: None,
                }));
            }
            _ => filter.user_id = Some(principal.user_id.as_str().to_owned()),
        }
    }
    let rows = app
        .reads
        .list_reservations(&filter, after.as_ref(), limit + 1)
        .await?;
    Ok(Json(Page::from_rows(rows, limit, |r| {
        encode_reservation_cursor(&ReservationCursor {
            starts_at: micros(r.starts_at),
            id: r.id,
        })
    })))
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
    Ok(Booking { new, user_id })
}
