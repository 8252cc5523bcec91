use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_problem_shape, at, error_fields, id_of, reservation_body, spawn_app, with,
};

/// A resource open only Monday 09:00-17:00 local time in `timezone`.
async fn weekday_resource(app: &TestApp, timezone: &str) -> String {
    let body = json!({
        "name": format!("office-{}", uuid::Uuid::new_v4()),
        "capacity": 1,
        "timezone": timezone,
        "opening_hours": [{"weekday": "mon", "open": "09:00", "close": "17:00"}]
    });
    id_of(&app.create_resource(body).await)
}

#[tokio::test]
async fn create_reservation_returns_201_location_etag_and_full_body() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;

    let reply = app
        .create_reservation(
            &app.admin_token,
            &reservation_body(
                &resource,
                "2030-01-07T10:00:00+01:00",
                "2030-01-07T11:30:00+01:00",
            ),
        )
        .await;

    let body = reply.assert_status(201);
    let id = id_of(body);
    uuid::Uuid::parse_str(&id).expect("server-generated id is a UUID");
    assert_eq!(
        reply.header("location"),
        Some(format!("/v1/reservations/{id}").as_str())
    );
    assert_eq!(reply.etag(), Some("\"1\""));
    assert_eq!(body["resource_id"], resource);
    assert_eq!(body["user_id"], "admin");
    assert_eq!(body["starts_at"], "2030-01-07T09:00:00Z");
    assert_eq!(body["ends_at"], "2030-01-07T10:30:00Z");
    assert_eq!(body["party_size"], 1);
    assert_eq!(body["status"], "confirmed");
    assert_eq!(body["version"], 1);
    assert_eq!(body["sync_state"], "local");
    assert_eq!(body["notes"], Value::Null);
    assert_eq!(body["metadata"], Value::Null);
    for stamp in ["created_at", "updated_at"] {
        let text = body[stamp].as_str().expect(stamp);
        assert!(text.ends_with('Z'), "{stamp} {text}");
        text.parse::<jiff::Timestamp>().expect(stamp);
    }
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "ends_at",
            "id",
            "metadata",
            "notes",
            "party_size",
            "resource_id",
            "starts_at",
            "status",
            "sync_state",
            "updated_at",
            "user_id",
            "version"
        ]
    );
}

#[tokio::test]
async fn create_reservation_keeps_client_id_notes_metadata_and_party_size() {
    let app = spawn_app().await;
    let resource = app.new_resource(4).await;
    let id = uuid::Uuid::now_v7().to_string();
    let body = json!({
        "id": id,
        "resource_id": resource,
        "starts_at": at("10:00"),
        "ends_at": at("11:00"),
        "party_size": 3,
        "notes": "window seat ☀",
        "metadata": {"source": "kiosk", "tags": ["a", "b"], "n": 1}
    });

    let reply = app.create_reservation(&app.admin_token, &body).await;

    let created = reply.assert_status(201);
    assert_eq!(created["id"], id);
    assert_eq!(created["party_size"], 3);
    assert_eq!(created["notes"], "window seat ☀");
    assert_eq!(created["metadata"], body["metadata"]);
}

#[tokio::test]
async fn get_reservation_returns_it_with_etag_and_304_when_unchanged() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let created = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    let path = format!("/v1/reservations/{}", id_of(&created));

    let reply = app.get(&path, &app.admin_token).await;
    assert_eq!(reply.assert_status(200), &created);
    assert_eq!(reply.etag(), Some("\"1\""));

    for matching in ["\"1\"", "W/\"1\"", "\"9\", \"1\"", "*"] {
        let reply = app
            .call(
                Method::GET,
                &path,
                &app.admin_token,
                None,
                &[("if-none-match", matching)],
            )
            .await;
        assert_eq!(
            reply.status, 304,
            "If-None-Match: {matching}: {}",
            reply.text
        );
    }
    let reply = app
        .call(
            Method::GET,
            &path,
            &app.admin_token,
            None,
            &[("if-none-match", "\"2\"")],
        )
        .await;
    reply.assert_status(200);
}

#[tokio::test]
async fn unknown_reservation_is_404() {
    let app = spawn_app().await;

    let reply = app
        .get_reservation(&app.admin_token, &uuid::Uuid::new_v4().to_string())
        .await;

    reply.assert_problem(404, "not-found");
}

#[tokio::test]
async fn overlapping_reservations_fit_while_never_simultaneously_over_capacity() {
    let app = spawn_app().await;
    let resource = app.new_resource(2).await;
    let admin = &app.admin_token;

    app.book(admin, &resource, &at("10:00"), &at("12:00")).await;
    app.book(admin, &resource, &at("11:00"), &at("13:00")).await;

    // 11:30-11:45 would be the third at once.
    let third = app
        .create_reservation(
            admin,
            &reservation_body(&resource, &at("11:30"), &at("11:45")),
        )
        .await;
    third.assert_problem(409, "capacity-exceeded");

    // Half-open intervals: 12:00-13:00 only meets the 11:00-13:00 booking.
    app.book(admin, &resource, &at("12:00"), &at("13:00")).await;
    // 10:00-10:30 only meets the 10:00-12:00 booking.
    app.book(admin, &resource, &at("10:00"), &at("10:30")).await;
    // ...but 12:30-12:45 now meets two.
    let full = app
        .create_reservation(
            admin,
            &reservation_body(&resource, &at("12:30"), &at("12:45")),
        )
        .await;
    full.assert_problem(409, "capacity-exceeded");
}

#[tokio::test]
async fn adjacent_reservations_do_not_conflict_on_capacity_one() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;

    app.book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    app.book(&app.admin_token, &resource, &at("11:00"), &at("12:00"))
        .await;
    app.book(&app.admin_token, &resource, &at("09:00"), &at("10:00"))
        .await;

    let overlapping = app
        .create_reservation(
            &app.admin_token,
            &reservation_body(&resource, &at("10:59"), &at("11:01")),
        )
        .await;
    overlapping.assert_problem(409, "capacity-exceeded");
}

#[tokio::test]
async fn party_sizes_add_up_against_capacity() {
    let app = spawn_app().await;
    let resource = app.new_resource(3).await;
    let body = |party: u32| {
        with(
            reservation_body(&resource, &at("10:00"), &at("11:00")),
            "party_size",
            json!(party),
        )
    };

    app.create_reservation(&app.admin_token, &body(2))
        .await
        .assert_status(201);
    app.create_reservation(&app.admin_token, &body(2))
        .await
        .assert_problem(409, "capacity-exceeded");
    app.create_reservation(&app.admin_token, &body(1))
        .await
        .assert_status(201);
    app.create_reservation(&app.admin_token, &body(1))
        .await
        .assert_problem(409, "capacity-exceeded");
}

#[tokio::test]
async fn party_larger_than_capacity_is_409() {
    let app = spawn_app().await;
    let resource = app.new_resource(2).await;

    let reply = app
        .create_reservation(
            &app.admin_token,
            &with(
                reservation_body(&resource, &at("10:00"), &at("11:00")),
                "party_size",
                json!(3),
            ),
        )
        .await;

    reply.assert_problem(409, "capacity-exceeded");
}

#[tokio::test]
async fn party_size_below_one_is_422() {
    let app = spawn_app().await;
    let resource = app.new_resource(2).await;

    for party in [0, -1] {
        let reply = app
            .create_reservation(
                &app.admin_token,
                &with(
                    reservation_body(&resource, &at("10:00"), &at("11:00")),
                    "party_size",
                    json!(party),
                ),
            )
            .await;
        reply.assert_invalid_fields(&["party_size"]);
    }
}

#[tokio::test]
async fn ends_at_not_after_starts_at_is_422_on_ends_at() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;

    for (start, end) in [(at("10:00"), at("10:00")), (at("10:00"), at("09:00"))] {
        let reply = app
            .create_reservation(&app.admin_token, &reservation_body(&resource, &start, &end))
            .await;
        reply.assert_invalid_fields(&["ends_at"]);
    }
}

#[tokio::test]
async fn reservations_longer_than_seven_days_are_422() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;

    let too_long = app
        .create_reservation(
            &app.admin_token,
            &reservation_body(&resource, "2030-01-07T10:00:00Z", "2030-01-14T10:00:01Z"),
        )
        .await;
    too_long.assert_invalid_fields(&["ends_at"]);

    let seven_days = app
        .create_reservation(
            &app.admin_token,
            &reservation_body(&resource, "2030-01-07T10:00:00Z", "2030-01-14T10:00:00Z"),
        )
        .await;
    seven_days.assert_status(201);
}

#[tokio::test]
async fn timestamps_without_offset_are_422() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;

    let reply = app
        .create_reservation(
            &app.admin_token,
            &reservation_body(&resource, "2030-01-07T10:00:00", "2030-01-07 11:00"),
        )
        .await;

    reply.assert_invalid_fields(&["starts_at", "ends_at"]);
}

#[tokio::test]
async fn timestamps_are_returned_in_utc_truncated_to_microseconds() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;

    let created = app
        .book(
            &app.admin_token,
            &resource,
            "2030-01-07T10:00:00.5-05:00",
            "2030-01-07T11:00:00.123456789-05:00",
        )
        .await;

    let instant = |field: &str| -> jiff::Timestamp {
        let text = created[field].as_str().expect(field);
        assert!(text.ends_with('Z'), "{field}: {text}");
        text.parse().expect(field)
    };
    assert_eq!(
        instant("starts_at"),
        "2030-01-07T15:00:00.5Z".parse::<jiff::Timestamp>().unwrap()
    );
    assert_eq!(
        instant("ends_at"),
        "2030-01-07T16:00:00.123456Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
    );
}

#[tokio::test]
async fn unknown_resource_id_is_422_on_resource_id() {
    let app = spawn_app().await;

    let reply = app
        .create_reservation(
            &app.admin_token,
            &reservation_body(
                &uuid::Uuid::new_v4().to_string(),
                &at("10:00"),
                &at("11:00"),
            ),
        )
        .await;

    reply.assert_invalid_fields(&["resource_id"]);
}

#[tokio::test]
async fn outside_opening_hours_is_422_on_starts_at() {
    let app = spawn_app().await;
    let resource = weekday_resource(&app, "UTC").await;

    for (start, end) in [
        (at("16:30"), at("17:30")),
        (at("08:30"), at("09:30")),
        (at("07:00"), at("08:00")),
        // 2030-01-08 is a Tuesday.
        (
            "2030-01-08T10:00:00Z".to_owned(),
            "2030-01-08T11:00:00Z".to_owned(),
        ),
    ] {
        let reply = app
            .create_reservation(&app.admin_token, &reservation_body(&resource, &start, &end))
            .await;
        assert_eq!(reply.status, 422, "{start}..{end}: {}", reply.text);
        reply.assert_invalid_fields(&["starts_at"]);
    }

    app.book(&app.admin_token, &resource, &at("09:00"), &at("10:00"))
        .await;
    app.book(&app.admin_token, &resource, &at("16:00"), &at("17:00"))
        .await;
}

#[tokio::test]
async fn patch_outside_opening_hours_is_422_on_starts_at() {
    let app = spawn_app().await;
    let resource = weekday_resource(&app, "UTC").await;
    let created = app
        .book(&app.admin_token, &resource, &at("09:00"), &at("10:00"))
        .await;

    let reply = app
        .patch_reservation(
            &app.admin_token,
            &id_of(&created),
            &json!({"starts_at": at("16:30"), "ends_at": at("17:30")}),
        )
        .await;

    reply.assert_invalid_fields(&["starts_at"]);
    let unchanged = app
        .get_reservation(&app.admin_token, &id_of(&created))
        .await;
    assert_eq!(unchanged.assert_status(200), &created);
}

#[tokio::test]
async fn opening_hours_are_in_the_resource_timezone() {
    let app = spawn_app().await;
    // 09:00-17:00 in Berlin is 08:00-16:00 UTC in January.
    let resource = weekday_resource(&app, "Europe/Berlin").await;

    app.book(&app.admin_token, &resource, &at("08:00"), &at("09:00"))
        .await;
    let too_late = app
        .create_reservation(
            &app.admin_token,
            &reservation_body(&resource, &at("15:30"), &at("16:30")),
        )
        .await;
    too_late.assert_invalid_fields(&["starts_at"]);
    let too_early = app
        .create_reservation(
            &app.admin_token,
            &reservation_body(&resource, &at("07:30"), &at("08:30")),
        )
        .await;
    too_early.assert_invalid_fields(&["starts_at"]);
}

#[tokio::test]
async fn notes_are_limited_to_2000_characters() {
    let app = spawn_app().await;
    let resource = app.new_resource(2).await;
    let base = reservation_body(&resource, &at("10:00"), &at("11:00"));

    let ok = app
        .create_reservation(
            &app.admin_token,
            &with(base.clone(), "notes", json!("é".repeat(2000))),
        )
        .await;
    ok.assert_status(201);

    let too_long = app
        .create_reservation(
            &app.admin_token,
            &with(base, "notes", json!("n".repeat(2001))),
        )
        .await;
    too_long.assert_invalid_fields(&["notes"]);
}

#[tokio::test]
async fn metadata_must_be_an_object_of_at_most_16_kib() {
    let app = spawn_app().await;
    let resource = app.new_resource(3).await;
    let base = reservation_body(&resource, &at("10:00"), &at("11:00"));

    for bad in [json!([1, 2]), json!("text"), json!(5)] {
        let reply = app
            .create_reservation(&app.admin_token, &with(base.clone(), "metadata", bad))
            .await;
        reply.assert_invalid_fields(&["metadata"]);
    }

    let big = json!({"blob": "x".repeat(17 * 1024)});
    let reply = app
        .create_reservation(&app.admin_token, &with(base.clone(), "metadata", big))
        .await;
    reply.assert_invalid_fields(&["metadata"]);

    let fits = json!({"blob": "x".repeat(15 * 1024)});
    let reply = app
        .create_reservation(&app.admin_token, &with(base, "metadata", fits.clone()))
        .await;
    assert_eq!(reply.assert_status(201)["metadata"], fits);
}

#[tokio::test]
async fn patch_changes_fields_bumps_version_and_etag() {
    let app = spawn_app().await;
    let resource = app.new_resource(4).await;
    let created = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    let id = id_of(&created);

    let reply = app
        .patch_reservation(
            &app.admin_token,
            &id,
            &json!({
                "starts_at": "2030-01-07T12:00:00+02:00",
                "ends_at": at("11:30"),
                "party_size": 2,
                "notes": "moved",
                "metadata": {"k": "v"}
            }),
        )
        .await;

    let patched = reply.assert_status(200).clone();
    assert_eq!(reply.etag(), Some("\"2\""));
    assert_eq!(patched["version"], 2);
    assert_eq!(patched["starts_at"], at("10:00"));
    assert_eq!(patched["ends_at"], at("11:30"));
    assert_eq!(patched["party_size"], 2);
    assert_eq!(patched["notes"], "moved");
    assert_eq!(patched["metadata"], json!({"k": "v"}));
    assert_eq!(patched["created_at"], created["created_at"]);
    assert_eq!(patched["id"], created["id"]);

    let fetched = app.get_reservation(&app.admin_token, &id).await;
    assert_eq!(fetched.assert_status(200), &patched);
    assert_eq!(fetched.etag(), Some("\"2\""));
}

#[tokio::test]
async fn patch_with_null_clears_notes_and_metadata() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let body = json!({
        "resource_id": resource,
        "starts_at": at("10:00"),
        "ends_at": at("11:00"),
        "notes": "n",
        "metadata": {"a": 1}
    });
    let created = app.create_reservation(&app.admin_token, &body).await;
    let id = id_of(created.assert_status(201));

    let reply = app
        .patch_reservation(
            &app.admin_token,
            &id,
            &json!({"notes": null, "metadata": null}),
        )
        .await;

    let patched = reply.assert_status(200);
    assert_eq!(patched["notes"], Value::Null);
    assert_eq!(patched["metadata"], Value::Null);
    assert_eq!(patched["version"], 2);
}

#[tokio::test]
async fn patch_with_null_for_a_required_field_is_422() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let created = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;

    let reply = app
        .patch_reservation(
            &app.admin_token,
            &id_of(&created),
            &json!({"party_size": null, "starts_at": null, "ends_at": null}),
        )
        .await;

    reply.assert_invalid_fields(&["party_size", "starts_at", "ends_at"]);
    let current = app
        .get_reservation(&app.admin_token, &id_of(&created))
        .await;
    assert_eq!(current.assert_status(200), &created);
}

#[tokio::test]
async fn patch_that_changes_nothing_keeps_the_version() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let created = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;

    let reply = app
        .patch_reservation(
            &app.admin_token,
            &id_of(&created),
            &json!({"party_size": 1, "starts_at": "2030-01-07T11:00:00+01:00"}),
        )
        .await;

    assert_eq!(reply.assert_status(200), &created);
    assert_eq!(reply.etag(), Some("\"1\""));
}

#[tokio::test]
async fn moving_within_its_own_slot_on_capacity_one_succeeds() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let created = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("12:00"))
        .await;

    let reply = app
        .patch_reservation(
            &app.admin_token,
            &id_of(&created),
            &json!({"starts_at": at("10:30"), "ends_at": at("11:30")}),
        )
        .await;

    let moved = reply.assert_status(200);
    assert_eq!(moved["starts_at"], at("10:30"));
    assert_eq!(moved["ends_at"], at("11:30"));
    assert_eq!(moved["version"], 2);
}

#[tokio::test]
async fn patch_into_a_full_slot_is_409_and_leaves_it_unchanged() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    app.book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    let other = app
        .book(&app.admin_token, &resource, &at("12:00"), &at("13:00"))
        .await;

    let reply = app
        .patch_reservation(
            &app.admin_token,
            &id_of(&other),
            &json!({"starts_at": at("10:30"), "ends_at": at("11:30")}),
        )
        .await;
    reply.assert_problem(409, "capacity-exceeded");

    let reply = app
        .patch_reservation(&app.admin_token, &id_of(&other), &json!({"party_size": 2}))
        .await;
    reply.assert_problem(409, "capacity-exceeded");

    let unchanged = app.get_reservation(&app.admin_token, &id_of(&other)).await;
    assert_eq!(unchanged.assert_status(200), &other);
}

#[tokio::test]
async fn patch_validates_the_resulting_interval_and_fields() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let created = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    let id = id_of(&created);

    // Only starts_at given, but it lands after the stored ends_at.
    let reply = app
        .patch_reservation(&app.admin_token, &id, &json!({"starts_at": at("11:30")}))
        .await;
    reply.assert_invalid_fields(&["ends_at"]);

    let reply = app
        .patch_reservation(
            &app.admin_token,
            &id,
            &json!({"party_size": 0, "resource_id": resource, "colour": 1}),
        )
        .await;
    reply.assert_invalid_fields(&["party_size", "colour"]);

    let unchanged = app.get_reservation(&app.admin_token, &id).await;
    assert_eq!(unchanged.assert_status(200), &created);
}

#[tokio::test]
async fn patch_with_stale_if_match_is_412() {
    let app = spawn_app().await;
    let resource = app.new_resource(2).await;
    let created = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    let path = format!("/v1/reservations/{}", id_of(&created));

    let first = app
        .call(
            Method::PATCH,
            &path,
            &app.admin_token,
            Some(&json!({"notes": "first"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(first.assert_status(200)["version"], 2);
    assert_eq!(first.etag(), Some("\"2\""));

    let stale = app
        .call(
            Method::PATCH,
            &path,
            &app.admin_token,
            Some(&json!({"notes": "second"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    stale.assert_problem(412, "precondition-failed");

    let current = app.get(&path, &app.admin_token).await;
    assert_eq!(current.assert_status(200)["notes"], "first");

    let wildcard = app
        .call(
            Method::PATCH,
            &path,
            &app.admin_token,
            Some(&json!({"notes": "third"})),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(wildcard.assert_status(200)["version"], 3);
}

#[tokio::test]
async fn cancel_sets_cancelled_once_and_is_a_no_op_after() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let created = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    let id = id_of(&created);

    let first = app.cancel_reservation(&app.admin_token, &id).await;
    let cancelled = first.assert_status(200).clone();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["version"], 2);
    assert_eq!(first.etag(), Some("\"2\""));

    let again = app.cancel_reservation(&app.admin_token, &id).await;
    assert_eq!(again.assert_status(200), &cancelled);
    assert_eq!(again.etag(), Some("\"2\""));

    let fetched = app.get_reservation(&app.admin_token, &id).await;
    assert_eq!(fetched.assert_status(200), &cancelled);
}

#[tokio::test]
async fn cancel_frees_capacity_at_once() {
    let app = spawn_app().await;
    let alice = app.create_user_key("alice").await;
    let bob = app.create_user_key("bob").await;
    let resource = app.new_resource(1).await;
    let taken = app
        .book(&alice, &resource, &at("10:00"), &at("11:00"))
        .await;

    let body = reservation_body(&resource, &at("10:00"), &at("11:00"));
    app.create_reservation(&bob, &body)
        .await
        .assert_problem(409, "capacity-exceeded");

    app.cancel_reservation(&alice, &id_of(&taken))
        .await
        .assert_status(200);

    let rebooked = app.create_reservation(&bob, &body).await;
    assert_eq!(rebooked.assert_status(201)["user_id"], "bob");
}

#[tokio::test]
async fn cancel_with_stale_if_match_is_412() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let created = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    let id = id_of(&created);
    app.patch_reservation(&app.admin_token, &id, &json!({"notes": "v2"}))
        .await
        .assert_status(200);

    let reply = app
        .call(
            Method::POST,
            &format!("/v1/reservations/{id}/cancel"),
            &app.admin_token,
            None,
            &[("if-match", "\"1\"")],
        )
        .await;

    reply.assert_problem(412, "precondition-failed");
    let current = app.get_reservation(&app.admin_token, &id).await;
    assert_eq!(current.assert_status(200)["status"], "confirmed");
}

#[tokio::test]
async fn patch_of_a_cancelled_reservation_is_409() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let created = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    let id = id_of(&created);
    app.cancel_reservation(&app.admin_token, &id)
        .await
        .assert_status(200);

    let reply = app
        .patch_reservation(&app.admin_token, &id, &json!({"notes": "too late"}))
        .await;

    reply.assert_problem(409, "conflict");
}

#[tokio::test]
async fn batch_results_follow_input_order_and_stand_alone() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let existing = app
        .book(&app.admin_token, &resource, &at("08:00"), &at("09:00"))
        .await;
    let replay = json!({
        "id": existing["id"],
        "resource_id": resource,
        "starts_at": at("08:00"),
        "ends_at": at("09:00")
    });

    let reply = app
        .post_json(
            "/v1/reservations/batch",
            &app.admin_token,
            &json!({"reservations": [
                reservation_body(&resource, &at("10:00"), &at("11:00")),
                with(reservation_body(&resource, &at("12:00"), &at("13:00")), "party_size", json!(0)),
                reservation_body(&resource, &at("10:30"), &at("11:30")),
                reservation_body(&uuid::Uuid::new_v4().to_string(), &at("10:00"), &at("11:00")),
                reservation_body(&resource, &at("11:00"), &at("12:00")),
                replay
            ]}),
        )
        .await;

    let results = reply.assert_status(200)["results"]
        .as_array()
        .expect("results")
        .clone();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 422, 409, 422, 201, 200]);
    for (index, result) in results.iter().enumerate() {
        if statuses[index] >= 400 {
            assert_eq!(result.get("reservation"), None, "{result}");
            assert_problem_shape(
                &result["error"],
                statuses[index] as u16,
                &result.to_string(),
            );
        } else {
            assert_eq!(result.get("error"), None, "{result}");
        }
    }
    assert_eq!(
        results[1]["error"]["type"],
        "urn:reservoir:problem:validation"
    );
    assert!(
        error_fields(&results[1]["error"]).contains(&"reservations[1].party_size".to_owned()),
        "{}",
        results[1]
    );
    assert_eq!(
        results[2]["error"]["type"],
        "urn:reservoir:problem:capacity-exceeded"
    );
    assert_eq!(results[5]["reservation"], existing);

    for index in [0, 4] {
        let reservation = &results[index]["reservation"];
        assert_eq!(reservation["status"], "confirmed");
        assert_eq!(reservation["version"], 1);
        let fetched = app
            .get_reservation(&app.admin_token, &id_of(reservation))
            .await;
        assert_eq!(fetched.assert_status(200), reservation);
    }
    let all = app
        .list_all(
            "/v1/reservations",
            &app.admin_token,
            &[("resource_id", &resource)],
        )
        .await;
    assert_eq!(all.len(), 3);
}

#[tokio::test]
async fn batch_items_for_another_user_are_403_for_a_user_key() {
    let app = spawn_app().await;
    let alice = app.create_user_key("alice").await;
    let resource = app.new_resource(2).await;

    let reply = app
        .post_json(
            "/v1/reservations/batch",
            &alice,
            &json!({"reservations": [
                with(reservation_body(&resource, &at("10:00"), &at("11:00")), "user_id", json!("bob")),
                reservation_body(&resource, &at("10:00"), &at("11:00"))
            ]}),
        )
        .await;

    let results = &reply.assert_status(200)["results"];
    assert_eq!(results[0]["status"], 403);
    assert_eq!(results[1]["status"], 201);
    assert_eq!(results[1]["reservation"]["user_id"], "alice");
}

#[tokio::test]
async fn batch_accepts_500_items_and_rejects_501() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let items = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| {
                let start = jiff::Timestamp::from_second(1_893_456_000 + 3600 * i as i64).unwrap();
                let end =
                    jiff::Timestamp::from_second(1_893_456_000 + 3600 * (i as i64 + 1)).unwrap();
                reservation_body(&resource, &start.to_string(), &end.to_string())
            })
            .collect()
    };

    let too_many = app
        .post_json(
            "/v1/reservations/batch",
            &app.admin_token,
            &json!({"reservations": items(501)}),
        )
        .await;
    too_many.assert_invalid_fields(&["reservations"]);
    let none = app
        .list_reservations(&app.admin_token, &[("resource_id", &resource)])
        .await;
    assert_eq!(none.assert_status(200)["items"], json!([]));

    let reply = app
        .post_json(
            "/v1/reservations/batch",
            &app.admin_token,
            &json!({"reservations": items(500)}),
        )
        .await;
    let results = reply.assert_status(200)["results"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(results.len(), 500);
    assert!(results.iter().all(|r| r["status"] == 201), "{}", reply.text);
}

#[tokio::test]
async fn empty_batch_returns_no_results() {
    let app = spawn_app().await;

    let reply = app
        .post_json(
            "/v1/reservations/batch",
            &app.admin_token,
            &json!({"reservations": []}),
        )
        .await;

    assert_eq!(reply.assert_status(200), &json!({"results": []}));
}

#[tokio::test]
async fn batch_without_a_reservations_array_is_422() {
    let app = spawn_app().await;

    for body in [json!({}), json!({"reservations": {}}), json!({"items": []})] {
        let reply = app
            .post_json("/v1/reservations/batch", &app.admin_token, &body)
            .await;
        reply.assert_invalid_fields(&["reservations"]);
    }
}
