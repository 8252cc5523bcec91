//! `POST /v1/keys`: admins issue API keys. The key is shown once, in the
//! response; only its hash is stored.

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde_json::{Value, json};

use super::extract::{Auth, JsonBody};
use crate::{
    App,
    domain::{
        auth::{Role, UserId, generate_key, hash_key},
        validation::Fields,
    },
    error::AppError,
    store::sqlite::writer::Op,
};

pub fn router() -> Router<App> {
    Router::new().route("/v1/keys", post(create_key))
}

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
    app.writer
        .submit(
            Op::CreateKey {
                hash: hash_key(&key),
                user_id: user_id.as_str().to_owned(),
                role,
                bootstrap: false,
            },
            None,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"key": key, "user_id": user_id, "role": role})),
    ))
}
