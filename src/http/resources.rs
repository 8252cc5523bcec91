//! Resources and their availability: `/v1/resources...`.

use axum::{Json, Router, extract::State, http::HeaderMap, response::Response, routing::get};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{
    extract::{Auth, JsonBody, PathId, Query, WriteRequest, not_modified},
    pagination::{Page, encode_id_cursor, id_cursor, limit},
    render,
};
use crate::{
    App,
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

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/resources", get(list).post(create))
        .route("/v1/resources/{id}", get(read).patch(update))
        .route("/v1/resources/{id}/availability", get(availability))
}

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

async fn read(
    State(app): State<App>,
    _: Auth,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let resource = find(&app, id).await?;
    if not_modified(&headers, resource.version) {
        return Ok(render::not_modified(resource.version));
    }
    Ok(render::entity(&resource, resource.version))
}

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

#[derive(Debug, Serialize)]
struct Availability {
    resource_id: Uuid,
    timezone: String,
    slot_minutes: u16,
    slots: Vec<Slot>,
}

#[derive(Debug, Serialize)]
struct Slot {
    starts_at: Timestamp,
    ends_at: Timestamp,
    remaining: u32,
}

async fn availability(
    State(app): State<App>,
    _: Auth,
    PathId(id): PathId,
    Query(mut query): Query,
) -> Result<Json<Availability>, AppError> {
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
    Ok(Json(Availability {
        resource_id: resource.id,
        timezone: resource.timezone,
        slot_minutes: resource.slot_minutes,
        slots,
    }))
}

async fn find(app: &App, id: Uuid) -> Result<Resource, AppError> {
    app.reads
        .resource(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("resource {id} not found")))
}
