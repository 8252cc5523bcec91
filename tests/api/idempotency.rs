use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, at, id_of, reservation_body, spawn_app, with};

/// `POST /v1/reservations` with an `Idempotency-Key`.
async fn create_with_key(app: &TestApp, token: &str, key: &str, body: &Value) -> Reply {
    app.call(
        Method::POST,
        "/v1/reservations",
        token,
        Some(body),
        &[("idempotency-key", key)],
    )
    .await
}

async fn count_reservations(app: &TestApp, resource: &str) -> usize {
    app.list_all(
        "/v1/reservations",
        &app.admin_token,
        &[("resource_id", resource)],
    )
    .await
    .len()
}

#[tokio::test]
async fn retried_create_with_same_client_id_returns_200_and_the_same_reservation() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let body = with(
        reservation_body(&resource, &at("10:00"), &at("11:00")),
        "id",
        json!(uuid::Uuid::now_v7().to_string()),
    );

    let first = app.create_reservation(&app.admin_token, &body).await;
    let first_body = first.assert_status(201).clone();

    let retry = app.create_reservation(&app.admin_token, &body).await;

    assert_eq!(retry.assert_status(200), &first_body);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(count_reservations(&app, &resource).await, 1);
}

#[tokio::test]
async fn same_client_id_with_different_content_is_409_conflict() {
    let app = spawn_app().await;
    let resource = app.new_resource(2).await;
    let id = uuid::Uuid::now_v7().to_string();
    let body = with(
        reservation_body(&resource, &at("10:00"), &at("11:00")),
        "id",
        json!(id),
    );
    let created = app.create_reservation(&app.admin_token, &body).await;
    let created = created.assert_status(201).clone();

    let different = app
        .create_reservation(&app.admin_token, &with(body, "party_size", json!(2)))
        .await;

    different.assert_problem(409, "conflict");
    let stored = app.get_reservation(&app.admin_token, &id).await;
    assert_eq!(stored.assert_status(200), &created);
}

#[tokio::test]
async fn idempotency_key_replay_returns_first_status_body_and_headers() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let body = reservation_body(&resource, &at("10:00"), &at("11:00"));

    let first = create_with_key(&app, &app.admin_token, "create-1", &body).await;
    first.assert_status(201);
    assert_eq!(first.header("idempotent-replayed"), None);

    let replay = create_with_key(&app, &app.admin_token, "create-1", &body).await;

    replay.assert_status(201);
    assert_eq!(replay.body, first.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.header("location"), first.header("location"));
    assert_eq!(replay.etag(), first.etag());
    assert_eq!(count_reservations(&app, &resource).await, 1);
}

#[tokio::test]
async fn idempotency_key_replays_a_stored_conflict_even_after_the_slot_frees() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let blocker = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    let body = reservation_body(&resource, &at("10:00"), &at("11:00"));

    let first = create_with_key(&app, &app.admin_token, "try-once", &body).await;
    first.assert_problem(409, "capacity-exceeded");
    app.cancel_reservation(&app.admin_token, &id_of(&blocker))
        .await
        .assert_status(200);

    let replay = create_with_key(&app, &app.admin_token, "try-once", &body).await;

    replay.assert_problem(409, "capacity-exceeded");
    assert_eq!(replay.body, first.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn validation_errors_are_not_stored_under_the_idempotency_key() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let invalid = with(
        reservation_body(&resource, &at("10:00"), &at("11:00")),
        "party_size",
        json!(0),
    );
    let valid = reservation_body(&resource, &at("10:00"), &at("11:00"));

    create_with_key(&app, &app.admin_token, "fix-and-retry", &invalid)
        .await
        .assert_invalid_fields(&["party_size"]);
    let retry = create_with_key(&app, &app.admin_token, "fix-and-retry", &valid).await;

    retry.assert_status(201);
    assert_eq!(retry.header("idempotent-replayed"), None);
}

#[tokio::test]
async fn same_idempotency_key_with_a_different_body_is_422() {
    let app = spawn_app().await;
    let resource = app.new_resource(2).await;
    let body = reservation_body(&resource, &at("10:00"), &at("11:00"));
    create_with_key(&app, &app.admin_token, "k-1", &body)
        .await
        .assert_status(201);

    let reused = create_with_key(
        &app,
        &app.admin_token,
        "k-1",
        &with(body, "party_size", json!(2)),
    )
    .await;

    reused.assert_problem(422, "idempotency-key-reused");
    assert_eq!(count_reservations(&app, &resource).await, 1);
}

#[tokio::test]
async fn same_idempotency_key_on_a_different_path_is_422() {
    let app = spawn_app().await;
    let resource = app.new_resource(2).await;
    let created = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    let body = json!({"notes": "x"});
    app.call(
        Method::PATCH,
        &format!("/v1/reservations/{}", id_of(&created)),
        &app.admin_token,
        Some(&body),
        &[("idempotency-key", "shared")],
    )
    .await
    .assert_status(200);

    let reply = app
        .call(
            Method::POST,
            "/v1/resources",
            &app.admin_token,
            Some(&json!({"name": "x"})),
            &[("idempotency-key", "shared")],
        )
        .await;

    reply.assert_problem(422, "idempotency-key-reused");
}

#[tokio::test]
async fn idempotency_keys_are_scoped_to_the_key_holder() {
    let app = spawn_app().await;
    let alice = app.create_user_key("alice").await;
    let bob = app.create_user_key("bob").await;
    let resource = app.new_resource(3).await;
    let body = reservation_body(&resource, &at("10:00"), &at("11:00"));

    let for_alice = create_with_key(&app, &alice, "same-string", &body).await;
    let for_bob = create_with_key(&app, &bob, "same-string", &body).await;
    let for_bob_other = create_with_key(
        &app,
        &bob,
        "same-string-2",
        &reservation_body(&resource, &at("12:00"), &at("13:00")),
    )
    .await;
    let alice_reused = create_with_key(
        &app,
        &alice,
        "same-string-2",
        &reservation_body(&resource, &at("14:00"), &at("15:00")),
    )
    .await;

    assert_eq!(for_alice.assert_status(201)["user_id"], "alice");
    assert_eq!(for_bob.assert_status(201)["user_id"], "bob");
    assert_eq!(for_bob.header("idempotent-replayed"), None);
    assert_ne!(for_alice.body["id"], for_bob.body["id"]);
    assert_eq!(for_bob_other.assert_status(201)["user_id"], "bob");
    assert_eq!(alice_reused.assert_status(201)["user_id"], "alice");
    assert_eq!(count_reservations(&app, &resource).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_requests_with_one_idempotency_key_create_one_reservation() {
    let app = spawn_app().await;
    let resource = app.new_resource(50).await;
    let body = reservation_body(&resource, &at("10:00"), &at("11:00"));

    let replies =
        join_all((0..20).map(|_| create_with_key(&app, &app.admin_token, "burst", &body))).await;

    // The writer serialises requests with one key: the first creates, every
    // other one replays that same answer.
    let first = &replies[0];
    let first_body = first.assert_status(201);
    for reply in &replies {
        assert_eq!(
            reply.assert_status(201),
            first_body,
            "every reply is the first answer"
        );
    }
    let replayed = replies
        .iter()
        .filter(|r| r.header("idempotent-replayed") == Some("true"))
        .count();
    assert_eq!(replayed, 19, "all but one request are replays");
    assert_eq!(count_reservations(&app, &resource).await, 1);
}

#[tokio::test]
async fn patch_replay_does_not_apply_twice() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let created = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    let path = format!("/v1/reservations/{}", id_of(&created));
    let body = json!({"notes": "once"});
    let patch = || {
        app.call(
            Method::PATCH,
            &path,
            &app.admin_token,
            Some(&body),
            &[("idempotency-key", "patch-1")],
        )
    };

    let first = patch().await;
    assert_eq!(first.assert_status(200)["version"], 2);
    // A different change in between; the replay must not undo or repeat anything.
    app.patch_json(&path, &app.admin_token, &json!({"notes": "later"}))
        .await
        .assert_status(200);

    let replay = patch().await;

    assert_eq!(replay.assert_status(200), &first.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let current = app.get(&path, &app.admin_token).await;
    let current = current.assert_status(200);
    assert_eq!(current["notes"], "later");
    assert_eq!(current["version"], 3);
}

#[tokio::test]
async fn malformed_idempotency_keys_are_422() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let body = reservation_body(&resource, &at("10:00"), &at("11:00"));

    for key in ["", &"k".repeat(256), "tab\there"] {
        let reply = create_with_key(&app, &app.admin_token, key, &body).await;
        assert_eq!(reply.status, 422, "Idempotency-Key {key:?}: {}", reply.text);
        reply.assert_invalid_fields(&["Idempotency-Key"]);
    }
    create_with_key(&app, &app.admin_token, &"k".repeat(255), &body)
        .await
        .assert_status(201);
}

/// The contract allows only visible ASCII (0x21..=0x7e); a space is not one.
#[tokio::test]
async fn idempotency_key_with_a_space_is_422() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let body = reservation_body(&resource, &at("10:00"), &at("11:00"));

    let reply = create_with_key(&app, &app.admin_token, "has space", &body).await;

    reply.assert_invalid_fields(&["Idempotency-Key"]);
}
