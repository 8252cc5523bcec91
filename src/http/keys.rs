//! `POST /v1/keys`: admins issue API keys. The key is shown once, in the
//! response; only its hash is stored.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    extract::{Auth, JsonBody},
    schemas::{IssuedKey, JsonBodyErrors, NewKey, Problem, V1Errors},
};
use crate::{
    App,
    domain::{
        auth::{Role, UserId, generate_key, hash_key},
        validation::Fields,
    },
    error::AppError,
    store::sqlite::writer::Op,
};

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(create_key))
}

#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    operation_id = "createKey",
    summary = "Issue an API key (admin)",
    description = "Issues a key for `user_id` with `role` (default `user`). The key is shown only in this response; only its SHA-256 hash is stored.",
    security(("bearer" = [])),
    request_body(content = NewKey, content_type = "application/json"),
    responses(
        (status = 201, description = "The new key.", body = IssuedKey),
        (status = 403, description = "The caller is not an admin (`forbidden`).", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid or unknown fields (`validation`).", body = Problem, content_type = "application/problem+json"),
        JsonBodyErrors,
        V1Errors,
    )
)]
async fn create_key(
    State(app): State<App>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), AppError> {
    auth.require_admin()?;
    let mut f = Fields::new(body, "")?;
    let user_id = f.required("user_id", UserId::from_json);
    let role = f.optional("role", Role::from_json).unwrap_or(Role::User);
    f.finish()?;
    let user_id = user_id.expect("required field is present when finish() succeeds");
    let key = generate_key()?;
    let hash = hash_key(&key);
    app.writer
        .submit(
            Op::CreateKey {
                hash,
                user_id: user_id.as_str().to_owned(),
                role,
                bootstrap: false,
            },
            None,
        )
        .await?;
    app.share_key(hash, user_id.as_str(), role).await;
    Ok((
        StatusCode::CREATED,
        Json(json!({"key": key, "user_id": user_id, "role": role})),
    ))
}
