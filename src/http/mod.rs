//! The HTTP surface: one module per resource, each exporting `router()`,
//! merged here with the layers every request goes through.

pub mod error;
pub mod extract;
pub mod keys;
pub mod pagination;
pub mod render;
pub mod reservations;
pub mod resources;
pub mod sync;

use std::any::Any;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    response::{IntoResponse, Response},
};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

use crate::{App, error::AppError};

/// Largest request body accepted (a full batch of 500 fits comfortably).
pub const BODY_LIMIT: usize = 1024 * 1024;

pub fn router(app: App) -> Router {
    Router::new()
        .merge(keys::router())
        .merge(resources::router())
        .merge(reservations::router())
        .merge(sync::router())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

/// A panic is a bug: answer a plain 500 problem and keep its text out of the
/// response (it is logged by the panic hook).
fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    AppError::from(anyhow::anyhow!("a request handler panicked")).into_response()
}
