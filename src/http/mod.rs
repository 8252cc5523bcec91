//! The HTTP surface: one module per resource, each exporting `router()`,
//! merged here; `layers` wraps them in what every request goes through.

pub mod cache;
pub mod docs;
pub mod error;
pub mod extract;
pub mod health;
pub mod keys;
pub mod layers;
pub mod metrics;
pub mod openapi;
pub mod pagination;
pub mod rate_limit;
pub mod render;
pub mod reservations;
pub mod resources;
pub mod schemas;
pub mod sync;

use axum::Router;
use utoipa_axum::router::OpenApiRouter;

use crate::App;

/// Largest request body accepted (a full batch of 500 fits comfortably).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The `/v1` API routes plus `/openapi.json` and `/docs`, and the OpenAPI
/// document describing them. Each module registers its handlers with
/// `utoipa_axum::routes!`, which adds a route and its documented operation in
/// one step, so the two cannot drift apart.
pub fn api() -> (Router<App>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(keys::router())
        .merge(resources::router())
        .merge(reservations::router())
        .merge(sync::router())
        .merge(cache::router())
        .merge(docs::router())
        .split_for_parts()
}

pub fn router(app: App) -> Router {
    let (routes, _) = api();
    let routes = routes
        .merge(health::router())
        .merge(metrics::router())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed);
    layers::apply(routes, &app).with_state(app)
}
