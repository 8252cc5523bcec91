use reqwest::Method;
use serde_json::json;

use crate::helpers::{at, id_of, reservation_body, resource_body, send, spawn_app, with};

#[tokio::test]
async fn missing_authorization_is_401_problem_with_www_authenticate() {
    let app = spawn_app().await;

    let reply = send(app.request(Method::GET, "/v1/resources", None)).await;

    reply.assert_problem(401, "unauthorized");
    let challenge = reply
        .header("www-authenticate")
        .expect("WWW-Authenticate header");
    assert!(challenge.starts_with("Bearer"), "{challenge}");
}

#[tokio::test]
async fn unknown_bearer_key_is_401() {
    let app = spawn_app().await;
    let unknown = format!("rsv_{}", "A".repeat(43));

    let reply = app.get("/v1/resources", &unknown).await;

    reply.assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn malformed_authorization_headers_are_401() {
    let app = spawn_app().await;

    for header in [
        "Basic dGVzdDp0ZXN0",
        "Bearer",
        "Bearer ",
        "test-admin-token",
        "Token test-admin-token",
    ] {
        let request = app
            .request(Method::GET, "/v1/resources", None)
            .header("authorization", header);
        let reply = send(request).await;
        assert_eq!(
            reply.status, 401,
            "Authorization: {header:?} -> {}",
            reply.text
        );
        reply.assert_problem(401, "unauthorized");
    }
}

#[tokio::test]
async fn admin_token_from_config_is_accepted() {
    let app = spawn_app().await;

    let reply = app.get("/v1/resources", &app.admin_token).await;

    reply.assert_status(200);
}

#[tokio::test]
async fn admin_creates_a_user_key_that_authenticates() {
    let app = spawn_app().await;

    let reply = app
        .post_json(
            "/v1/keys",
            &app.admin_token,
            &json!({"user_id": "alice", "role": "user"}),
        )
        .await;

    let body = reply.assert_status(201);
    assert_eq!(body["user_id"], "alice");
    assert_eq!(body["role"], "user");
    let key = body["key"].as_str().expect("key");
    assert!(key.starts_with("rsv_"), "{key}");
    assert_eq!(key.len(), 4 + 43, "{key}");
    assert!(
        key[4..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{key}"
    );
    app.get("/v1/resources", key).await.assert_status(200);
}

#[tokio::test]
async fn every_created_key_is_distinct() {
    let app = spawn_app().await;

    let first = app.create_user_key("alice").await;
    let second = app.create_user_key("alice").await;

    assert_ne!(first, second);
    app.get("/v1/resources", &first).await.assert_status(200);
    app.get("/v1/resources", &second).await.assert_status(200);
}

#[tokio::test]
async fn created_admin_key_can_do_admin_things() {
    let app = spawn_app().await;
    let admin2 = app.create_key("ops", "admin").await;

    let reply = app
        .post_json("/v1/resources", &admin2, &resource_body(1))
        .await;
    reply.assert_status(201);
    let reply = app
        .post_json(
            "/v1/keys",
            &admin2,
            &json!({"user_id": "bob", "role": "user"}),
        )
        .await;
    reply.assert_status(201);
}

#[tokio::test]
async fn user_key_cannot_create_keys() {
    let app = spawn_app().await;
    let alice = app.create_user_key("alice").await;

    let reply = app
        .post_json(
            "/v1/keys",
            &alice,
            &json!({"user_id": "alice", "role": "admin"}),
        )
        .await;

    reply.assert_problem(403, "forbidden");
}

#[tokio::test]
async fn key_creation_validates_role_and_user_id() {
    let app = spawn_app().await;

    let reply = app
        .post_json(
            "/v1/keys",
            &app.admin_token,
            &json!({"user_id": "", "role": "root"}),
        )
        .await;
    reply.assert_invalid_fields(&["user_id", "role"]);

    let reply = app
        .post_json(
            "/v1/keys",
            &app.admin_token,
            &json!({"user_id": "x".repeat(129), "role": "user"}),
        )
        .await;
    reply.assert_invalid_fields(&["user_id"]);

    let reply = app
        .post_json(
            "/v1/keys",
            &app.admin_token,
            &json!({"user_id": "tab\there", "role": "user"}),
        )
        .await;
    reply.assert_invalid_fields(&["user_id"]);
}

#[tokio::test]
async fn user_key_cannot_create_or_change_resources() {
    let app = spawn_app().await;
    let alice = app.create_user_key("alice").await;
    let resource = app.new_resource(1).await;

    app.post_json("/v1/resources", &alice, &resource_body(1))
        .await
        .assert_problem(403, "forbidden");
    app.patch_json(
        &format!("/v1/resources/{resource}"),
        &alice,
        &json!({"name": "mine now"}),
    )
    .await
    .assert_problem(403, "forbidden");

    let unchanged = app.get(&format!("/v1/resources/{resource}"), &alice).await;
    assert_ne!(unchanged.assert_status(200)["name"], "mine now");
}

#[tokio::test]
async fn any_key_can_read_resources() {
    let app = spawn_app().await;
    let alice = app.create_user_key("alice").await;
    let resource = app.create_resource(resource_body(3)).await;

    let one = app
        .get(&format!("/v1/resources/{}", id_of(&resource)), &alice)
        .await;
    assert_eq!(one.assert_status(200), &resource);

    let list = app.get("/v1/resources", &alice).await;
    let items = list.assert_status(200)["items"].as_array().unwrap().clone();
    assert_eq!(items, vec![resource]);
}

#[tokio::test]
async fn user_reservation_defaults_to_the_key_user() {
    let app = spawn_app().await;
    let alice = app.create_user_key("alice").await;
    let resource = app.new_resource(1).await;

    let reservation = app
        .book(&alice, &resource, &at("10:00"), &at("11:00"))
        .await;

    assert_eq!(reservation["user_id"], "alice");
}

#[tokio::test]
async fn user_may_name_itself_as_user_id() {
    let app = spawn_app().await;
    let alice = app.create_user_key("alice").await;
    let resource = app.new_resource(1).await;
    let body = with(
        reservation_body(&resource, &at("10:00"), &at("11:00")),
        "user_id",
        json!("alice"),
    );

    let reply = app.create_reservation(&alice, &body).await;

    assert_eq!(reply.assert_status(201)["user_id"], "alice");
}

#[tokio::test]
async fn user_cannot_book_for_another_user() {
    let app = spawn_app().await;
    let alice = app.create_user_key("alice").await;
    let resource = app.new_resource(1).await;
    let body = with(
        reservation_body(&resource, &at("10:00"), &at("11:00")),
        "user_id",
        json!("bob"),
    );

    let reply = app.create_reservation(&alice, &body).await;

    reply.assert_problem(403, "forbidden");
    let left = app
        .list_reservations(&app.admin_token, &[("resource_id", &resource)])
        .await;
    assert_eq!(left.assert_status(200)["items"], json!([]));
}

#[tokio::test]
async fn admin_books_for_any_user_and_defaults_to_admin() {
    let app = spawn_app().await;
    let resource = app.new_resource(2).await;

    let for_bob = with(
        reservation_body(&resource, &at("10:00"), &at("11:00")),
        "user_id",
        json!("bob"),
    );
    let reply = app.create_reservation(&app.admin_token, &for_bob).await;
    assert_eq!(reply.assert_status(201)["user_id"], "bob");

    let own = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    assert_eq!(own["user_id"], "admin");
}

#[tokio::test]
async fn other_users_reservations_are_not_found() {
    let app = spawn_app().await;
    let alice = app.create_user_key("alice").await;
    let bob = app.create_user_key("bob").await;
    let resource = app.new_resource(1).await;
    let reservation = app
        .book(&alice, &resource, &at("10:00"), &at("11:00"))
        .await;
    let id = id_of(&reservation);

    app.get_reservation(&bob, &id)
        .await
        .assert_problem(404, "not-found");
    app.patch_reservation(&bob, &id, &json!({"party_size": 1, "notes": "hijack"}))
        .await
        .assert_problem(404, "not-found");
    app.cancel_reservation(&bob, &id)
        .await
        .assert_problem(404, "not-found");

    let still = app.get_reservation(&alice, &id).await;
    assert_eq!(still.assert_status(200), &reservation);
}

#[tokio::test]
async fn admin_sees_changes_and_cancels_any_reservation() {
    let app = spawn_app().await;
    let alice = app.create_user_key("alice").await;
    let resource = app.new_resource(1).await;
    let reservation = app
        .book(&alice, &resource, &at("10:00"), &at("11:00"))
        .await;
    let id = id_of(&reservation);

    let seen = app.get_reservation(&app.admin_token, &id).await;
    assert_eq!(seen.assert_status(200), &reservation);

    let patched = app
        .patch_reservation(&app.admin_token, &id, &json!({"notes": "by admin"}))
        .await;
    assert_eq!(patched.assert_status(200)["notes"], "by admin");

    let cancelled = app.cancel_reservation(&app.admin_token, &id).await;
    assert_eq!(cancelled.assert_status(200)["status"], "cancelled");
    assert_eq!(cancelled.body["user_id"], "alice");
}

#[tokio::test]
async fn authentication_is_checked_before_the_body_on_every_v1_route() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let reservation = id_of(
        &app.book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
            .await,
    );

    for (method, path) in [
        (Method::GET, "/v1/resources".to_owned()),
        (Method::POST, "/v1/resources".to_owned()),
        (Method::GET, format!("/v1/resources/{resource}")),
        (Method::PATCH, format!("/v1/resources/{resource}")),
        (
            Method::GET,
            format!("/v1/resources/{resource}/availability"),
        ),
        (Method::POST, "/v1/keys".to_owned()),
        (Method::GET, "/v1/reservations".to_owned()),
        (Method::POST, "/v1/reservations".to_owned()),
        (Method::POST, "/v1/reservations/batch".to_owned()),
        (Method::GET, format!("/v1/reservations/{reservation}")),
        (Method::PATCH, format!("/v1/reservations/{reservation}")),
        (
            Method::POST,
            format!("/v1/reservations/{reservation}/cancel"),
        ),
    ] {
        let request = app
            .request(method.clone(), &path, None)
            .header("content-type", "application/json")
            .body("{not json");
        let reply = send(request).await;
        assert_eq!(reply.status, 401, "{method} {path}: {}", reply.text);
        reply.assert_problem(401, "unauthorized");
    }
    let still = app.get_reservation(&app.admin_token, &reservation).await;
    assert_eq!(still.assert_status(200)["status"], "confirmed");
}
