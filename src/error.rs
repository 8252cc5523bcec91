//! The one error type every layer returns. Each variant knows its HTTP status
//! and renders as an RFC 9457 problem; 5xx details are logged, never sent.

use serde::Serialize;

use crate::domain::validation::FieldError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    #[error("a valid `Authorization: Bearer <key>` header is required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the HTTP method is not allowed on this route")]
    MethodNotAllowed,
    #[error("{0}")]
    MalformedJson(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    CapacityExceeded(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("{detail}")]
    RateLimited {
        detail: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    Unavailable(String),
    /// Shared so that one storage failure can be reported to every request it
    /// affected.
    #[error(transparent)]
    Internal(std::sync::Arc<anyhow::Error>),
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

impl AppError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> u16 {
        self.descriptor().0
    }

    pub fn is_server_error(&self) -> bool {
        self.status() >= 500
    }

    /// (status, type slug, title)
    fn descriptor(&self) -> (u16, &'static str, &'static str) {
        match self {
            AppError::Unauthorized => (401, "unauthorized", "Unauthorized"),
            AppError::Forbidden(_) => (403, "forbidden", "Forbidden"),
            AppError::NotFound(_) => (404, "not-found", "Not Found"),
            AppError::MethodNotAllowed => (405, "method-not-allowed", "Method Not Allowed"),
            AppError::MalformedJson(_) => (400, "malformed-json", "Malformed JSON"),
            AppError::UnsupportedMediaType(_) => {
                (415, "unsupported-media-type", "Unsupported Media Type")
            }
            AppError::PayloadTooLarge(_) => (413, "payload-too-large", "Payload Too Large"),
            AppError::Validation(_) => (422, "validation", "Invalid Request"),
            AppError::CapacityExceeded(_) => (409, "capacity-exceeded", "Capacity Exceeded"),
            AppError::Conflict(_) => (409, "conflict", "Conflict"),
            AppError::PreconditionFailed(_) => (412, "precondition-failed", "Precondition Failed"),
            AppError::IdempotencyKeyReused => {
                (422, "idempotency-key-reused", "Idempotency Key Reused")
            }
            AppError::RateLimited { .. } => (429, "rate-limited", "Too Many Requests"),
            AppError::Unavailable(_) => (503, "unavailable", "Service Unavailable"),
            AppError::Internal(_) => (500, "internal", "Internal Server Error"),
        }
    }

    pub fn problem(&self) -> Problem {
        let (status, slug, title) = self.descriptor();
        let detail = match self {
            // Never leak internals to clients; the cause is logged instead.
            AppError::Internal(_) => "an unexpected error occurred; it has been logged".to_owned(),
            AppError::Validation(errors) => match errors.as_slice() {
                [one] => format!("{}: {}", one.field, one.message),
                many => format!("{} fields are invalid", many.len()),
            },
            other => other.to_string(),
        };
        Problem {
            kind: format!("urn:reservoir:problem:{slug}"),
            title,
            status,
            detail,
            errors: match self {
                AppError::Validation(errors) => Some(errors.clone()),
                _ => None,
            },
        }
    }
}

impl From<anyhow::Error> for AppError {
    fn from(error: anyhow::Error) -> Self {
        AppError::Internal(std::sync::Arc::new(error))
    }
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        AppError::from(anyhow::Error::from(error))
    }
}

impl From<Vec<FieldError>> for AppError {
    fn from(errors: Vec<FieldError>) -> Self {
        AppError::Validation(errors)
    }
}

pub type AppResult<T> = Result<T, AppError>;
