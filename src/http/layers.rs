//! The middleware every request goes through, outermost first as a request
//! sees it: panic catching, tracing, body limit.

use std::any::Any;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    response::{IntoResponse, Response},
};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

use super::BODY_LIMIT;
use crate::{App, error::AppError};

pub fn apply(routes: Router<App>, _app: &App) -> Router<App> {
    routes
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(panic_response))
}

/// A panic is a bug: answer a plain 500 problem and keep its text out of the
/// response (it is logged by the panic hook).
fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    AppError::from(anyhow::anyhow!("a request handler panicked")).into_response()
}
