//! Turns the writer's results into HTTP responses. The same function renders
//! a live answer and the copy remembered for an Idempotency-Key, so a replay is
//! byte-for-byte the first answer.

use axum::{
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::json;

use super::error::PROBLEM_JSON;
use crate::{
    cache::Cached,
    domain::{reservation::Reservation, resource::Resource, version::etag},
    store::sqlite::writer::{Change, OpResult, Outcome, StoredResponse},
};

pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The answer to a write.
pub fn respond(result: OpResult) -> Response {
    match result {
        Ok(Outcome::Replay(stored)) => into_response(stored, true),
        Ok(Outcome::Reservation(reservation, Change::Replayed)) => {
            into_response(reservation_response(&reservation, Change::Replayed), true)
        }
        Ok(outcome) => into_response(render(&outcome), false),
        Err(error) => error.into_response(),
    }
}

/// What an Idempotency-Key remembers: everything but server errors, which a
/// retry should be allowed to get past.
pub fn remember(result: &OpResult) -> Option<StoredResponse> {
    match result {
        Ok(outcome) => Some(render(outcome)),
        Err(error) if error.is_server_error() => None,
        Err(error) => Some(StoredResponse {
            status: error.status(),
            location: None,
            etag: None,
            body: serde_json::to_vec(&error.problem()).unwrap_or_default(),
        }),
    }
}

fn render(outcome: &Outcome) -> StoredResponse {
    match outcome {
        Outcome::Done => StoredResponse {
            status: 204,
            location: None,
            etag: None,
            body: Vec::new(),
        },
        Outcome::Resource(resource, change) => resource_response(resource, *change),
        Outcome::Reservation(reservation, change) => reservation_response(reservation, *change),
        Outcome::Reservations(items) => {
            let results: Vec<_> = items
                .iter()
                .map(|item| match item {
                    Ok((reservation, change)) => json!({
                        "status": status_of(*change),
                        "reservation": reservation,
                    }),
                    Err(error) => json!({"status": error.status(), "error": error.problem()}),
                })
                .collect();
            json_response(200, &json!({ "results": results }), None, None)
        }
        Outcome::Replay(stored) => stored.clone(),
    }
}

fn status_of(change: Change) -> u16 {
    match change {
        Change::Created => 201,
        Change::Updated | Change::Unchanged | Change::Replayed => 200,
    }
}

pub fn reservation_response(reservation: &Reservation, change: Change) -> StoredResponse {
    let location = (change == Change::Created || change == Change::Replayed)
        .then(|| format!("/v1/reservations/{}", reservation.id));
    json_response(
        status_of(change),
        reservation,
        location,
        Some(etag(reservation.version)),
    )
}

pub fn resource_response(resource: &Resource, change: Change) -> StoredResponse {
    let location = (change == Change::Created).then(|| format!("/v1/resources/{}", resource.id));
    json_response(
        status_of(change),
        resource,
        location,
        Some(etag(resource.version)),
    )
}

fn json_response(
    status: u16,
    body: &impl Serialize,
    location: Option<String>,
    etag: Option<String>,
) -> StoredResponse {
    StoredResponse {
        status,
        location,
        etag,
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}

/// Sends a rendered (or remembered) response.
pub fn into_response(stored: StoredResponse, replayed: bool) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = if stored.body.is_empty() {
        status.into_response()
    } else {
        let content_type = if status.is_client_error() || status.is_server_error() {
            PROBLEM_JSON
        } else {
            "application/json"
        };
        (status, [(header::CONTENT_TYPE, content_type)], stored.body).into_response()
    };
    let headers = response.headers_mut();
    if let Some(location) = stored.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    if let Some(etag) = stored.etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        headers.insert(header::ETAG, etag);
    }
    if replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// A read answer: JSON with its entity tag.
pub fn entity(body: &impl Serialize, version: i64) -> Response {
    into_response(json_response(200, body, None, Some(etag(version))), false)
}

/// A read answer from L1: the body and entity tag rendered when the entity
/// entered the cache, the same bytes and headers as [`entity`] would send.
pub fn cached<T>(entity: &Cached<T>) -> Response {
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        entity.body(),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::ETAG, entity.etag().clone());
    response
}

/// `304 Not Modified` with the entity tag, from L1.
pub fn cached_not_modified<T>(entity: &Cached<T>) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    response
        .headers_mut()
        .insert(header::ETAG, entity.etag().clone());
    response
}

/// A JSON answer already rendered (a cached availability answer or list
/// page).
pub fn json_bytes(body: axum::body::Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// `304 Not Modified` with the entity tag.
pub fn not_modified(version: i64) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(value) = HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}
