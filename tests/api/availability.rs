use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::{TestApp, at, id_of, spawn_app, with};

/// A resource with the given settings; returns its id.
async fn resource(app: &TestApp, settings: Value) -> String {
    let body = with(
        settings,
        "name",
        json!(format!("avail-{}", uuid::Uuid::new_v4())),
    );
    id_of(&app.create_resource(body).await)
}

/// `(starts_at, ends_at, remaining)` of every slot.
#[track_caller]
fn slots(body: &Value) -> Vec<(String, String, i64)> {
    body["slots"]
        .as_array()
        .unwrap_or_else(|| panic!("no slots array: {body}"))
        .iter()
        .map(|s| {
            (
                s["starts_at"].as_str().unwrap().to_owned(),
                s["ends_at"].as_str().unwrap().to_owned(),
                s["remaining"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// `(HH:MM, HH:MM, remaining)` on [`crate::helpers::DAY`] as full UTC slots.
fn day_slots(expected: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
    expected
        .iter()
        .map(|(s, e, r)| (at(s), at(e), *r))
        .collect()
}

async fn monday_slots(
    app: &TestApp,
    resource: &str,
    party_size: &str,
) -> Vec<(String, String, i64)> {
    let reply = app
        .availability(
            resource,
            &[
                ("from", &at("00:00")),
                ("to", "2030-01-08T00:00:00Z"),
                ("party_size", party_size),
            ],
        )
        .await;
    slots(reply.assert_status(200))
}

/// Checks slots are UTC, contiguous, distinct and `minutes` long; returns them.
#[track_caller]
fn assert_contiguous(body: &Value, minutes: i64) -> Vec<(String, String, i64)> {
    let slots = slots(body);
    let mut starts = HashSet::new();
    for (start, end, _) in &slots {
        assert!(start.ends_with('Z') && end.ends_with('Z'), "{start} {end}");
        assert!(starts.insert(start.clone()), "duplicate slot {start}");
        let start: jiff::Timestamp = start.parse().unwrap();
        let end: jiff::Timestamp = end.parse().unwrap();
        assert_eq!(end.as_second() - start.as_second(), minutes * 60);
    }
    for pair in slots.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "slots are contiguous");
    }
    slots
}

#[tokio::test]
async fn slots_cover_the_opening_hours_with_full_remaining() {
    let app = spawn_app().await;
    let alice = app.create_user_key("alice").await;
    let id = resource(
        &app,
        json!({"capacity": 2, "slot_minutes": 60,
               "opening_hours": [{"weekday": "mon", "open": "09:00", "close": "12:00"}]}),
    )
    .await;

    let reply = app
        .get_query(
            &format!("/v1/resources/{id}/availability"),
            &alice,
            &[("from", &at("00:00")), ("to", "2030-01-08T00:00:00Z")],
        )
        .await;

    let body = reply.assert_status(200);
    assert_eq!(body["resource_id"], id);
    assert_eq!(body["timezone"], "UTC");
    assert_eq!(body["slot_minutes"], 60);
    assert_eq!(
        slots(body),
        day_slots(&[
            ("09:00", "10:00", 2),
            ("10:00", "11:00", 2),
            ("11:00", "12:00", 2)
        ])
    );
}

#[tokio::test]
async fn bookings_reduce_remaining_and_full_slots_disappear() {
    let app = spawn_app().await;
    let id = resource(
        &app,
        json!({"capacity": 2, "slot_minutes": 60,
               "opening_hours": [{"weekday": "mon", "open": "09:00", "close": "12:00"}]}),
    )
    .await;

    app.book(&app.admin_token, &id, &at("10:00"), &at("11:00"))
        .await;
    assert_eq!(
        monday_slots(&app, &id, "1").await,
        day_slots(&[
            ("09:00", "10:00", 2),
            ("10:00", "11:00", 1),
            ("11:00", "12:00", 2)
        ])
    );

    // Straddles two slots: 10:00 is now full, 11:00 has one place left.
    app.book(&app.admin_token, &id, &at("10:30"), &at("11:30"))
        .await;
    assert_eq!(
        monday_slots(&app, &id, "1").await,
        day_slots(&[("09:00", "10:00", 2), ("11:00", "12:00", 1)])
    );
    assert_eq!(
        monday_slots(&app, &id, "2").await,
        day_slots(&[("09:00", "10:00", 2)])
    );
}

#[tokio::test]
async fn cancelling_a_booking_restores_remaining() {
    let app = spawn_app().await;
    let id = resource(
        &app,
        json!({"capacity": 1, "slot_minutes": 60,
               "opening_hours": [{"weekday": "mon", "open": "09:00", "close": "11:00"}]}),
    )
    .await;
    let booked = app
        .book(&app.admin_token, &id, &at("09:00"), &at("10:00"))
        .await;
    assert_eq!(
        monday_slots(&app, &id, "1").await,
        day_slots(&[("10:00", "11:00", 1)])
    );

    app.cancel_reservation(&app.admin_token, &id_of(&booked))
        .await
        .assert_status(200);

    assert_eq!(
        monday_slots(&app, &id, "1").await,
        day_slots(&[("09:00", "10:00", 1), ("10:00", "11:00", 1)])
    );
}

#[tokio::test]
async fn first_slot_of_an_opening_period_is_rounded_up_to_the_grid() {
    let app = spawn_app().await;
    let id = resource(
        &app,
        json!({"capacity": 1, "slot_minutes": 45,
               "opening_hours": [{"weekday": "mon", "open": "09:10", "close": "12:00"}]}),
    )
    .await;

    assert_eq!(
        monday_slots(&app, &id, "1").await,
        day_slots(&[
            ("09:45", "10:30", 1),
            ("10:30", "11:15", 1),
            ("11:15", "12:00", 1)
        ])
    );
}

#[tokio::test]
async fn slots_lie_fully_inside_the_requested_window() {
    let app = spawn_app().await;
    let id = resource(&app, json!({"capacity": 3, "slot_minutes": 30})).await;

    let reply = app
        .availability(&id, &[("from", &at("10:15")), ("to", &at("11:59"))])
        .await;

    assert_eq!(
        slots(reply.assert_status(200)),
        day_slots(&[("10:30", "11:00", 3), ("11:00", "11:30", 3)])
    );
}

#[tokio::test]
async fn opening_hours_past_midnight_continue_into_the_next_day() {
    let app = spawn_app().await;
    let id = resource(
        &app,
        json!({"capacity": 1, "slot_minutes": 60,
               "opening_hours": [{"weekday": "fri", "open": "22:00", "close": "02:00"}]}),
    )
    .await;

    // 2030-01-11 is a Friday.
    let reply = app
        .availability(
            &id,
            &[
                ("from", "2030-01-10T00:00:00Z"),
                ("to", "2030-01-13T00:00:00Z"),
            ],
        )
        .await;

    let got: Vec<String> = slots(reply.assert_status(200))
        .into_iter()
        .map(|(start, _, _)| start)
        .collect();
    assert_eq!(
        got,
        [
            "2030-01-11T22:00:00Z",
            "2030-01-11T23:00:00Z",
            "2030-01-12T00:00:00Z",
            "2030-01-12T01:00:00Z"
        ]
    );
}

#[tokio::test]
async fn opening_hours_follow_the_resource_timezone() {
    let app = spawn_app().await;
    let id = resource(
        &app,
        json!({"capacity": 1, "slot_minutes": 60, "timezone": "Europe/Berlin",
               "opening_hours": [{"weekday": "mon", "open": "09:00", "close": "11:00"}]}),
    )
    .await;

    let reply = app
        .availability(
            &id,
            &[("from", &at("00:00")), ("to", "2030-01-08T00:00:00Z")],
        )
        .await;

    let body = reply.assert_status(200);
    assert_eq!(body["timezone"], "Europe/Berlin");
    assert_eq!(
        slots(body),
        day_slots(&[("08:00", "09:00", 1), ("09:00", "10:00", 1)])
    );
}

#[tokio::test]
async fn spring_forward_day_in_berlin_has_23_hourly_slots() {
    let app = spawn_app().await;
    let id = resource(
        &app,
        json!({"capacity": 1, "slot_minutes": 60, "timezone": "Europe/Berlin"}),
    )
    .await;

    let reply = app
        .availability(
            &id,
            &[
                ("from", "2026-03-29T00:00:00+01:00"),
                ("to", "2026-03-30T00:00:00+02:00"),
            ],
        )
        .await;

    let slots = assert_contiguous(reply.assert_status(200), 60);
    assert_eq!(slots.len(), 23);
    assert_eq!(slots[0].0, "2026-03-28T23:00:00Z");
    assert_eq!(slots[22].1, "2026-03-29T22:00:00Z");
}

#[tokio::test]
async fn fall_back_day_in_new_york_has_25_hourly_slots() {
    let app = spawn_app().await;
    let id = resource(
        &app,
        json!({"capacity": 1, "slot_minutes": 60, "timezone": "America/New_York"}),
    )
    .await;

    let reply = app
        .availability(
            &id,
            &[
                ("from", "2026-11-01T00:00:00-04:00"),
                ("to", "2026-11-02T00:00:00-05:00"),
            ],
        )
        .await;

    let slots = assert_contiguous(reply.assert_status(200), 60);
    assert_eq!(slots.len(), 25);
    assert_eq!(slots[0].0, "2026-11-01T04:00:00Z");
    assert_eq!(slots[24].1, "2026-11-02T05:00:00Z");
}

#[tokio::test]
async fn window_of_31_days_is_allowed_and_longer_is_422() {
    let app = spawn_app().await;
    let id = resource(&app, json!({"capacity": 1, "slot_minutes": 1440})).await;

    let ok = app
        .availability(
            &id,
            &[
                ("from", "2030-01-01T00:00:00Z"),
                ("to", "2030-02-01T00:00:00Z"),
            ],
        )
        .await;
    assert_eq!(assert_contiguous(ok.assert_status(200), 1440).len(), 31);

    let too_long = app
        .availability(
            &id,
            &[
                ("from", "2030-01-01T00:00:00Z"),
                ("to", "2030-02-01T00:00:01Z"),
            ],
        )
        .await;
    too_long.assert_problem(422, "validation");
}

#[tokio::test]
async fn missing_or_inverted_window_is_422() {
    let app = spawn_app().await;
    let id = resource(&app, json!({"capacity": 1})).await;

    app.availability(&id, &[("to", "2030-01-02T00:00:00Z")])
        .await
        .assert_invalid_fields(&["from"]);
    app.availability(&id, &[("from", "2030-01-02T00:00:00Z")])
        .await
        .assert_invalid_fields(&["to"]);
    app.availability(&id, &[])
        .await
        .assert_invalid_fields(&["from", "to"]);
    app.availability(
        &id,
        &[
            ("from", "2030-01-02T00:00:00Z"),
            ("to", "2030-01-02T00:00:00Z"),
        ],
    )
    .await
    .assert_problem(422, "validation");
    app.availability(
        &id,
        &[
            ("from", "2030-01-02T00:00:00Z"),
            ("to", "2030-01-01T00:00:00Z"),
        ],
    )
    .await
    .assert_problem(422, "validation");
    app.availability(
        &id,
        &[("from", "2030-01-02"), ("to", "2030-01-03T00:00:00Z")],
    )
    .await
    .assert_invalid_fields(&["from"]);
}

#[tokio::test]
async fn availability_of_an_unknown_resource_is_404() {
    let app = spawn_app().await;

    let reply = app
        .availability(
            &uuid::Uuid::new_v4().to_string(),
            &[
                ("from", "2030-01-01T00:00:00Z"),
                ("to", "2030-01-02T00:00:00Z"),
            ],
        )
        .await;

    reply.assert_problem(404, "not-found");
}
