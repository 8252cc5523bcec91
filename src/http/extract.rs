//! Extractors that turn raw requests into parsed values and reject bad ones
//! with problem+json (axum's own rejections are plain text).

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, RawPathParams, Request},
    http::{HeaderMap, HeaderValue, Method, Uri, header, request::Parts},
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    App,
    domain::{
        auth::Principal,
        digest::update_json,
        validation::{FieldError, Fields},
        version::{VersionMatch, parse_etags},
    },
    error::AppError,
    http::render::remember,
    store::sqlite::writer::Idempotency,
};

/// The authenticated caller (`Authorization: Bearer <key>`).
pub struct Auth(pub Principal);

impl FromRequestParts<App> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, AppError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty() && token.len() <= 256)
            .ok_or(AppError::Unauthorized)?;
        app.authenticate(token)
            .await?
            .map(Auth)
            .ok_or(AppError::Unauthorized)
    }
}

impl Auth {
    pub fn require_admin(&self) -> Result<(), AppError> {
        require_admin(&self.0)
    }
}

fn require_admin(principal: &Principal) -> Result<(), AppError> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "this endpoint requires an admin key".into(),
        ))
    }
}

/// A JSON request body, parsed but not yet validated.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|mime| {
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !json {
            return Err(AppError::UnsupportedMediaType(
                "the request body must be JSON with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::PayloadTooLarge(super::BODY_LIMIT)
                } else {
                    AppError::MalformedJson(format!("cannot read the request body: {rejection}"))
                }
            })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| {
                AppError::MalformedJson(format!("the request body is not valid JSON: {error}"))
            })
    }
}

/// The query string as a JSON object of strings, so the same [`Fields`]
/// reader validates it (and reports unknown parameters).
pub struct Query(pub Fields);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        Query::parse(parts.uri.query().unwrap_or(""))
    }
}

impl Query {
    /// Parses a raw query string, as the extractor does; for handlers that
    /// look at the raw string first (a cached answer is keyed by it).
    pub fn parse(raw: &str) -> Result<Query, AppError> {
        let mut map = Map::new();
        let mut errors = Vec::new();
        for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
            if map
                .insert(name.to_string(), Value::String(value.into_owned()))
                .is_some()
            {
                errors.push(FieldError::new(name, "must be given at most once"));
            }
        }
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        Ok(Query(Fields::new(Value::Object(map), "")?))
    }
}

/// The `{id}` path segment as a UUID; anything else cannot name a row, so it
/// is a 404 rather than a validation error.
pub struct PathId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::NotFound("no such route".into()))?;
        params
            .iter()
            .find(|(name, _)| *name == "id")
            .and_then(|(_, value)| Uuid::try_parse(value).ok())
            .map(PathId)
            .ok_or_else(|| AppError::NotFound("no resource with this id exists".into()))
    }
}

/// `If-None-Match`, taken alone: extracting the whole `HeaderMap` would copy
/// every header of every read.
pub struct IfNoneMatch(Option<axum::http::HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(IfNoneMatch(
            parts.headers.get(header::IF_NONE_MATCH).cloned(),
        ))
    }
}

impl IfNoneMatch {
    /// Whether it matches the current version (answer 304).
    pub fn matches(&self, version: i64) -> bool {
        self.0
            .as_ref()
            .is_some_and(|value| parse_etags(value.to_str().unwrap_or("")).matches(version))
    }
}

/// `If-Match`, when present.
fn if_match(headers: &HeaderMap) -> Option<VersionMatch> {
    headers
        .get(header::IF_MATCH)
        .map(|value| parse_etags(value.to_str().unwrap_or("")))
}

/// Whether `If-None-Match` matches the current version (answer 304).
pub fn not_modified(headers: &HeaderMap, version: i64) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|value| parse_etags(value.to_str().unwrap_or("")).matches(version))
}

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The caller and the request-level context of a write: its `If-Match`
/// precondition and its `Idempotency-Key` scope, bound to this request's own
/// method and path. Only what writes read is kept (not a copy of every
/// header): the extractor runs on every write.
pub struct WriteRequest {
    pub principal: Principal,
    if_match: Option<VersionMatch>,
    /// The `Idempotency-Key` header as sent, with the method and path of the
    /// request it binds to.
    idempotency_key: Option<(HeaderValue, Method, Uri)>,
}

impl FromRequestParts<App> for WriteRequest {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, AppError> {
        let Auth(principal) = Auth::from_request_parts(parts, app).await?;
        Ok(WriteRequest {
            principal,
            if_match: if_match(&parts.headers),
            idempotency_key: parts
                .headers
                .get(IDEMPOTENCY_KEY)
                .map(|key| (key.clone(), parts.method.clone(), parts.uri.clone())),
        })
    }
}

impl WriteRequest {
    pub fn require_admin(&self) -> Result<(), AppError> {
        require_admin(&self.principal)
    }

    pub fn if_match(&self) -> Option<VersionMatch> {
        self.if_match.clone()
    }

    /// The `Idempotency-Key` context, scoped to the caller and bound to this
    /// exact request (method, path and body).
    pub fn idempotency(&self, body: Option<&Value>) -> Result<Option<Idempotency>, AppError> {
        let Some((value, method, uri)) = &self.idempotency_key else {
            return Ok(None);
        };
        let key = value
            .to_str()
            .ok()
            .filter(|key| {
                (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or_else(|| {
                AppError::validation(
                    "Idempotency-Key",
                    "must be 1 to 255 visible ASCII characters (no spaces)",
                )
            })?;
        let mut digest = Sha256::new();
        digest.update(method.as_str().as_bytes());
        digest.update(b" ");
        digest.update(uri.path().as_bytes());
        digest.update(b"\n");
        // serde_json's map is ordered, so equal documents hash equally whatever
        // their key order or whitespace.
        if let Some(body) = body {
            update_json(&mut digest, body);
        }
        Ok(Some(Idempotency {
            scope: self.principal.user_id.as_str().to_owned(),
            key: key.to_owned(),
            request_hash: digest.finalize().into(),
            render: remember,
        }))
    }
}
