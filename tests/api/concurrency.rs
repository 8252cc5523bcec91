use futures::future::join_all;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{at, id_of, reservation_body, spawn_app, with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_bookings_of_capacity_three_admit_exactly_three() {
    let app = spawn_app().await;
    let resource = app.new_resource(3).await;

    let replies = join_all((0..200).map(|i| {
        let body = with(
            reservation_body(&resource, &at("10:00"), &at("11:00")),
            "user_id",
            json!(format!("user-{i}")),
        );
        let app = &app;
        async move { app.create_reservation(&app.admin_token, &body).await }
    }))
    .await;

    let created: Vec<_> = replies.iter().filter(|r| r.status == 201).collect();
    let conflicts = replies.iter().filter(|r| r.status == 409).count();
    let others: Vec<_> = replies
        .iter()
        .filter(|r| r.status != 201 && r.status != 409)
        .map(|r| (r.status, r.text.clone()))
        .collect();
    assert_eq!(others, vec![], "only 201 and 409 are expected");
    assert_eq!(created.len(), 3);
    assert_eq!(conflicts, 197);
    for reply in replies.iter().filter(|r| r.status == 409) {
        reply.assert_problem(409, "capacity-exceeded");
    }

    let confirmed = app
        .list_all(
            "/v1/reservations",
            &app.admin_token,
            &[("resource_id", &resource), ("status", "confirmed")],
        )
        .await;
    let mut listed = crate::helpers::ids(&confirmed);
    listed.sort();
    let mut admitted: Vec<String> = created.iter().map(|r| id_of(&r.body)).collect();
    admitted.sort();
    assert_eq!(listed, admitted);

    let everything = app
        .list_all(
            "/v1/reservations",
            &app.admin_token,
            &[("resource_id", &resource)],
        )
        .await;
    assert_eq!(
        everything.len(),
        3,
        "no rejected rows are visible as reservations"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bookings_from_distinct_user_keys_respect_capacity() {
    let app = spawn_app().await;
    let resource = app.new_resource(2).await;
    let mut keys = Vec::new();
    for i in 0..20 {
        keys.push(app.create_user_key(&format!("member-{i}")).await);
    }

    let replies = join_all(keys.iter().map(|key| {
        let body = reservation_body(&resource, &at("14:00"), &at("15:00"));
        let app = &app;
        async move { app.create_reservation(key, &body).await }
    }))
    .await;

    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        18,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_moves_into_the_same_slot_admit_one() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let mut ids = Vec::new();
    for hour in ["08", "09", "10", "11", "12", "13", "14", "15"] {
        let reservation = app
            .book(
                &app.admin_token,
                &resource,
                &at(&format!("{hour}:00")),
                &at(&format!("{hour}:30")),
            )
            .await;
        ids.push(id_of(&reservation));
    }

    let target = json!({"starts_at": at("17:00"), "ends_at": at("17:30")});
    let replies = join_all(
        ids.iter()
            .map(|id| app.patch_reservation(&app.admin_token, id, &target)),
    )
    .await;

    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        7,
        "{statuses:?}"
    );
    let in_target = app
        .list_reservations(
            &app.admin_token,
            &[
                ("resource_id", &resource),
                ("from", &at("17:00")),
                ("to", &at("17:30")),
            ],
        )
        .await;
    assert_eq!(
        in_target.assert_status(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conditional_patches_let_exactly_one_win() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let created = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    let path = format!("/v1/reservations/{}", id_of(&created));

    let replies = join_all((0..10).map(|i| {
        let body = json!({ "notes": format!("writer {i}") });
        let (app, path) = (&app, &path);
        async move {
            app.call(
                Method::PATCH,
                path,
                &app.admin_token,
                Some(&body),
                &[("if-match", "\"1\"")],
            )
            .await
        }
    }))
    .await;

    let winners: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(winners.len(), 1);
    assert_eq!(replies.iter().filter(|r| r.status == 412).count(), 9);
    let current = app.get(&path, &app.admin_token).await;
    let current = current.assert_status(200);
    assert_eq!(current["version"], 2);
    assert_eq!(current["notes"], winners[0].body["notes"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cancels_bump_the_version_once() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let created = app
        .book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;
    let id = id_of(&created);

    let replies = join_all((0..10).map(|_| app.cancel_reservation(&app.admin_token, &id))).await;

    for reply in &replies {
        let body = reply.assert_status(200);
        assert_eq!(body["status"], "cancelled");
        assert_eq!(body["version"], 2);
    }
}
