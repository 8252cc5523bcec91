//! The HTTP surface: one module per resource, each exporting `router()`,
//! merged here; `layers` wraps them in what every request goes through.

pub mod error;
pub mod extract;
pub mod keys;
pub mod layers;
pub mod pagination;
pub mod render;
pub mod reservations;
pub mod resources;
pub mod sync;

use axum::Router;

use crate::App;

/// Largest request body accepted (a full batch of 500 fits comfortably).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The `/v1` API routes.
pub fn api() -> Router<App> {
    Router::new()
        .merge(keys::router())
        .merge(resources::router())
        .merge(reservations::router())
        .merge(sync::router())
}

pub fn router(app: App) -> Router {
    let routes = api()
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed);
    layers::apply(routes, &app).with_state(app)
}
