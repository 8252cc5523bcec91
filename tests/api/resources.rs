use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{id_of, ids, resource_body, spawn_app, with};

#[tokio::test]
async fn create_resource_applies_defaults_and_sets_location_and_etag() {
    let app = spawn_app().await;

    let reply = app
        .post_json(
            "/v1/resources",
            &app.admin_token,
            &json!({"name": "Room A"}),
        )
        .await;

    let body = reply.assert_status(201);
    let id = id_of(body);
    uuid::Uuid::parse_str(&id).expect("server-generated id is a UUID");
    assert_eq!(
        reply.header("location"),
        Some(format!("/v1/resources/{id}").as_str())
    );
    assert_eq!(reply.etag(), Some("\"1\""));
    assert_eq!(body["name"], "Room A");
    assert_eq!(body["capacity"], 1);
    assert_eq!(body["timezone"], "UTC");
    assert_eq!(body["slot_minutes"], 30);
    assert_eq!(body["opening_hours"], Value::Null);
    assert_eq!(body["version"], 1);
    assert!(body["created_at"].is_string(), "{body}");
    assert!(body["updated_at"].is_string(), "{body}");
}

#[tokio::test]
async fn create_resource_with_every_field_keeps_them() {
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4().to_string();
    let hours = json!([
        {"weekday": "mon", "open": "09:00", "close": "17:00"},
        {"weekday": "sat", "open": "22:00", "close": "02:00"},
        {"weekday": "sun", "open": "00:00", "close": "24:00"}
    ]);

    let body = app
        .create_resource(json!({
            "id": id,
            "name": "Court 1",
            "capacity": 4,
            "timezone": "Europe/Berlin",
            "slot_minutes": 15,
            "opening_hours": hours
        }))
        .await;

    assert_eq!(body["id"], id);
    assert_eq!(body["name"], "Court 1");
    assert_eq!(body["capacity"], 4);
    assert_eq!(body["timezone"], "Europe/Berlin");
    assert_eq!(body["slot_minutes"], 15);
    assert_eq!(body["opening_hours"], hours);
}

#[tokio::test]
async fn get_resource_returns_what_was_created_with_etag() {
    let app = spawn_app().await;
    let created = app.create_resource(resource_body(2)).await;
    let path = format!("/v1/resources/{}", id_of(&created));

    let reply = app.get(&path, &app.admin_token).await;

    assert_eq!(reply.assert_status(200), &created);
    assert_eq!(reply.etag(), Some("\"1\""));
}

#[tokio::test]
async fn get_resource_with_matching_if_none_match_is_304() {
    let app = spawn_app().await;
    let path = format!("/v1/resources/{}", app.new_resource(1).await);

    let reply = app
        .call(
            Method::GET,
            &path,
            &app.admin_token,
            None,
            &[("if-none-match", "\"1\"")],
        )
        .await;
    reply.assert_status(304);
    assert!(reply.text.is_empty(), "{}", reply.text);

    let reply = app
        .call(
            Method::GET,
            &path,
            &app.admin_token,
            None,
            &[("if-none-match", "\"7\"")],
        )
        .await;
    reply.assert_status(200);
}

#[tokio::test]
async fn unknown_resource_is_404() {
    let app = spawn_app().await;

    let reply = app
        .get(
            &format!("/v1/resources/{}", uuid::Uuid::new_v4()),
            &app.admin_token,
        )
        .await;

    reply.assert_problem(404, "not-found");
}

#[tokio::test]
async fn invalid_timezone_slot_minutes_and_capacity_are_all_listed() {
    let app = spawn_app().await;

    let reply = app
        .post_json(
            "/v1/resources",
            &app.admin_token,
            &json!({"name": "x", "timezone": "Mars/Olympus_Mons", "slot_minutes": 4, "capacity": 0}),
        )
        .await;

    reply.assert_invalid_fields(&["timezone", "slot_minutes", "capacity"]);
}

#[tokio::test]
async fn slot_minutes_range_is_5_to_1440() {
    let app = spawn_app().await;

    for bad in [4, 1441, 0, -30] {
        let body = with(resource_body(1), "slot_minutes", json!(bad));
        let reply = app
            .post_json("/v1/resources", &app.admin_token, &body)
            .await;
        assert_eq!(reply.status, 422, "slot_minutes {bad}: {}", reply.text);
        reply.assert_invalid_fields(&["slot_minutes"]);
    }
    for good in [5, 1440] {
        let body = with(resource_body(1), "slot_minutes", json!(good));
        let created = app.create_resource(body).await;
        assert_eq!(created["slot_minutes"], good);
    }
}

#[tokio::test]
async fn resource_name_must_not_be_blank_or_too_long() {
    let app = spawn_app().await;

    for name in [json!("   "), json!("n".repeat(201)), json!(null)] {
        let reply = app
            .post_json("/v1/resources", &app.admin_token, &json!({"name": name}))
            .await;
        reply.assert_invalid_fields(&["name"]);
    }
    let created = app.create_resource(json!({"name": "n".repeat(200)})).await;
    assert_eq!(created["name"].as_str().unwrap().len(), 200);
}

#[tokio::test]
async fn invalid_opening_hours_name_the_nested_fields() {
    let app = spawn_app().await;

    let reply = app
        .post_json(
            "/v1/resources",
            &app.admin_token,
            &json!({"name": "x", "opening_hours": [
                {"weekday": "mon", "open": "09:00", "close": "17:00"},
                {"weekday": "funday", "open": "09:00", "close": "17:00"},
                {"weekday": "tue", "open": "25:00", "close": "17:00"},
                {"weekday": "wed", "open": "10:00", "close": "10:00"}
            ]}),
        )
        .await;

    let fields =
        reply.assert_invalid_fields(&["opening_hours[1].weekday", "opening_hours[2].open"]);
    assert!(
        fields.iter().any(|f| f.starts_with("opening_hours[3]")),
        "close == open must be rejected: {fields:?}"
    );
    assert!(
        !fields.iter().any(|f| f.starts_with("opening_hours[0]")),
        "the valid period is not an error: {fields:?}"
    );
}

#[tokio::test]
async fn empty_opening_hours_are_stored_as_null() {
    let app = spawn_app().await;

    let created = app
        .create_resource(with(resource_body(1), "opening_hours", json!([])))
        .await;

    assert_eq!(created["opening_hours"], Value::Null);
}

#[tokio::test]
async fn creating_a_resource_with_an_existing_id_is_409() {
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4().to_string();
    app.create_resource(with(resource_body(1), "id", json!(id)))
        .await;

    let reply = app
        .post_json(
            "/v1/resources",
            &app.admin_token,
            &with(resource_body(2), "id", json!(id)),
        )
        .await;

    reply.assert_problem(409, "conflict");
}

#[tokio::test]
async fn patch_resource_changes_fields_and_bumps_version() {
    let app = spawn_app().await;
    let id = app.new_resource(1).await;
    let path = format!("/v1/resources/{id}");

    let reply = app
        .patch_json(
            &path,
            &app.admin_token,
            &json!({"name": "Renamed", "capacity": 5, "timezone": "Asia/Tokyo"}),
        )
        .await;

    let body = reply.assert_status(200).clone();
    assert_eq!(body["name"], "Renamed");
    assert_eq!(body["capacity"], 5);
    assert_eq!(body["timezone"], "Asia/Tokyo");
    assert_eq!(body["slot_minutes"], 30);
    assert_eq!(body["version"], 2);
    assert_eq!(reply.etag(), Some("\"2\""));

    let fetched = app.get(&path, &app.admin_token).await;
    assert_eq!(fetched.assert_status(200), &body);
    assert_eq!(fetched.etag(), Some("\"2\""));
}

#[tokio::test]
async fn patch_resource_validates_fields() {
    let app = spawn_app().await;
    let id = app.new_resource(1).await;
    let path = format!("/v1/resources/{id}");

    let reply = app
        .patch_json(
            &path,
            &app.admin_token,
            &json!({"capacity": 0, "slot_minutes": 1441, "colour": "red"}),
        )
        .await;

    reply.assert_invalid_fields(&["capacity", "slot_minutes", "colour"]);
    let unchanged = app.get(&path, &app.admin_token).await;
    assert_eq!(unchanged.assert_status(200)["version"], 1);
}

#[tokio::test]
async fn patch_unknown_resource_is_404() {
    let app = spawn_app().await;

    let reply = app
        .patch_json(
            &format!("/v1/resources/{}", uuid::Uuid::new_v4()),
            &app.admin_token,
            &json!({"name": "ghost"}),
        )
        .await;

    reply.assert_problem(404, "not-found");
}

#[tokio::test]
async fn resource_list_pages_through_every_resource_once_ordered_by_id() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(app.new_resource(1).await);
    }

    let items = app
        .list_all("/v1/resources", &app.admin_token, &[("limit", "3")])
        .await;

    let seen = ids(&items);
    let mut expected = created.clone();
    expected.sort();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn resource_list_limit_is_respected_and_validated() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.new_resource(1).await;
    }

    let page = app
        .get_query("/v1/resources", &app.admin_token, &[("limit", "2")])
        .await;
    let body = page.assert_status(200);
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
    assert!(body["next_cursor"].is_string(), "{body}");

    let all = app.get("/v1/resources", &app.admin_token).await;
    let body = all.assert_status(200);
    let distinct: HashSet<String> = ids(body["items"].as_array().unwrap()).into_iter().collect();
    assert_eq!(distinct.len(), 3);
    assert!(body["next_cursor"].is_null(), "{body}");

    for bad in ["0", "-1", "x"] {
        let reply = app
            .get_query("/v1/resources", &app.admin_token, &[("limit", bad)])
            .await;
        reply.assert_invalid_fields(&["limit"]);
    }
}
