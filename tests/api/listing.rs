use std::collections::{HashMap, HashSet};

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{TestApp, at, id_of, ids, reservation_body, spawn_app, with};

/// `[start, end)` as whole hours from 2030-01-01T00:00:00Z.
fn hours(start: i64, end: i64) -> (String, String) {
    let base = 1_893_456_000; // 2030-01-01T00:00:00Z
    let stamp = |h: i64| {
        jiff::Timestamp::from_second(base + 3600 * h)
            .unwrap()
            .to_string()
    };
    (stamp(start), stamp(end))
}

/// Books `count` one-hour reservations at scattered start times on a roomy
/// resource; returns them.
async fn scattered(app: &TestApp, resource: &str, count: i64) -> Vec<Value> {
    let mut created = Vec::new();
    for i in 0..count {
        // A permutation of 0..count, so creation order differs from time order.
        let h = (i * 7) % count;
        let (start, end) = hours(h, h + 1);
        created.push(app.book(&app.admin_token, resource, &start, &end).await);
    }
    created
}

fn sort_key(reservation: &Value) -> (String, String) {
    (
        reservation["starts_at"].as_str().unwrap().to_owned(),
        id_of(reservation),
    )
}

#[tokio::test]
async fn list_is_ordered_by_starts_at_then_id() {
    let app = spawn_app().await;
    let resource = app.new_resource(10).await;
    let mut created = scattered(&app, &resource, 10).await;
    // Same start time several times: the id breaks the tie.
    for _ in 0..4 {
        let (start, end) = hours(3, 5);
        created.push(app.book(&app.admin_token, &resource, &start, &end).await);
    }

    let reply = app
        .list_reservations(&app.admin_token, &[("resource_id", &resource)])
        .await;

    let items = reply.assert_status(200)["items"]
        .as_array()
        .unwrap()
        .clone();
    assert!(reply.body["next_cursor"].is_null(), "{}", reply.text);
    created.sort_by_key(sort_key);
    assert_eq!(ids(&items), ids(&created));
}

#[tokio::test]
async fn limit_defaults_to_50_and_accepts_1_to_200() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    scattered(&app, &resource, 55).await;

    let default = app
        .list_reservations(&app.admin_token, &[("resource_id", &resource)])
        .await;
    let body = default.assert_status(200);
    assert_eq!(body["items"].as_array().unwrap().len(), 50);
    assert!(body["next_cursor"].is_string(), "{}", default.text);

    let one = app
        .list_reservations(
            &app.admin_token,
            &[("resource_id", &resource), ("limit", "1")],
        )
        .await;
    assert_eq!(one.assert_status(200)["items"].as_array().unwrap().len(), 1);

    let max = app
        .list_reservations(
            &app.admin_token,
            &[("resource_id", &resource), ("limit", "200")],
        )
        .await;
    let body = max.assert_status(200);
    assert_eq!(body["items"].as_array().unwrap().len(), 55);
    assert!(body["next_cursor"].is_null(), "{}", max.text);
}

#[tokio::test]
async fn limit_outside_1_to_200_is_422() {
    let app = spawn_app().await;

    for limit in ["0", "201", "-1", "ten"] {
        let reply = app
            .list_reservations(&app.admin_token, &[("limit", limit)])
            .await;
        assert_eq!(reply.status, 422, "limit={limit}: {}", reply.text);
        reply.assert_invalid_fields(&["limit"]);
    }
}

#[tokio::test]
async fn unknown_or_invalid_query_parameters_are_422() {
    let app = spawn_app().await;

    let cases = [
        ("colour", "red"),
        ("status", "bogus"),
        ("resource_id", "not-a-uuid"),
        ("from", "yesterday"),
        ("to", "2030-01-07T10:00:00"),
    ];
    for (name, value) in cases {
        let reply = app
            .list_reservations(&app.admin_token, &[(name, value)])
            .await;
        assert_eq!(reply.status, 422, "{name}={value}: {}", reply.text);
        reply.assert_invalid_fields(&[name]);
    }
}

#[tokio::test]
async fn walking_next_cursor_visits_every_row_once() {
    let app = spawn_app().await;
    let resource = app.new_resource(5).await;
    let mut created = scattered(&app, &resource, 23).await;
    for _ in 0..3 {
        let (start, end) = hours(10, 11);
        created.push(app.book(&app.admin_token, &resource, &start, &end).await);
    }

    for limit in ["1", "4", "7"] {
        let seen = app
            .list_all(
                "/v1/reservations",
                &app.admin_token,
                &[("resource_id", &resource), ("limit", limit)],
            )
            .await;
        let mut expected = created.clone();
        expected.sort_by_key(sort_key);
        assert_eq!(ids(&seen), ids(&expected), "limit {limit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walking_next_cursor_during_inserts_sees_every_existing_row_once() {
    let app = spawn_app().await;
    let resource = app.new_resource(200).await;
    let before = scattered(&app, &resource, 40).await;

    let query = [("resource_id", resource.as_str()), ("limit", "3")];
    let walk = app.list_all("/v1/reservations", &app.admin_token, &query);
    let inserts = async {
        let mut added = Vec::new();
        for i in 0..40 {
            // Alternate between rows before and after the cursor position.
            let h = if i % 2 == 0 { (i * 3) % 40 } else { 40 - i };
            let (start, end) = hours(h, h + 2);
            added.push(app.book(&app.admin_token, &resource, &start, &end).await);
            tokio::task::yield_now().await;
        }
        added
    };
    let (seen, added) = tokio::join!(walk, inserts);

    let seen_ids = ids(&seen);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &seen_ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let duplicates: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
    for reservation in &before {
        assert!(
            counts.contains_key(id_of(reservation).as_str()),
            "pre-existing {reservation} was skipped"
        );
    }
    let mut sorted = seen.clone();
    sorted.sort_by_key(sort_key);
    assert_eq!(
        ids(&sorted),
        seen_ids,
        "pages stay in (starts_at, id) order"
    );
    let known: HashSet<String> = ids(&before).into_iter().chain(ids(&added)).collect();
    assert!(seen_ids.iter().all(|id| known.contains(id)));
}

#[tokio::test]
async fn from_and_to_select_reservations_overlapping_the_window() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;
    let admin = &app.admin_token;
    let a = id_of(&app.book(admin, &resource, &at("10:00"), &at("11:00")).await);
    let b = id_of(&app.book(admin, &resource, &at("11:00"), &at("12:00")).await);
    let c = id_of(&app.book(admin, &resource, &at("12:00"), &at("13:00")).await);

    let window = |from: Option<String>, to: Option<String>| {
        let app = &app;
        let resource = resource.clone();
        async move {
            let mut query = vec![("resource_id", resource)];
            if let Some(from) = from {
                query.push(("from", from));
            }
            if let Some(to) = to {
                query.push(("to", to));
            }
            let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            ids(&app
                .list_all("/v1/reservations", &app.admin_token, &query)
                .await)
        }
    };

    assert_eq!(
        window(Some(at("11:00")), Some(at("12:00"))).await,
        vec![b.clone()]
    );
    assert_eq!(
        window(Some(at("10:30")), Some(at("11:30"))).await,
        [a.clone(), b.clone()]
    );
    assert_eq!(
        window(Some("2030-01-07T12:30:00+01:00".into()), Some(at("12:01"))).await,
        [b.clone(), c.clone()]
    );
    assert_eq!(window(Some(at("12:00")), None).await, vec![c.clone()]);
    assert_eq!(window(None, Some(at("11:00"))).await, vec![a.clone()]);
    assert_eq!(
        window(Some(at("13:00")), Some(at("14:00"))).await,
        Vec::<String>::new()
    );
    assert_eq!(window(None, None).await, [a, b, c]);
}

#[tokio::test]
async fn filters_by_resource_user_and_status() {
    let app = spawn_app().await;
    let admin = &app.admin_token;
    let first = app.new_resource(5).await;
    let second = app.new_resource(5).await;
    let book_for = |resource: &str, user: &str| {
        with(
            reservation_body(resource, &at("10:00"), &at("11:00")),
            "user_id",
            json!(user),
        )
    };
    let mut made = HashMap::new();
    for (name, resource, user) in [
        ("r1-alice", &first, "alice"),
        ("r1-bob", &first, "bob"),
        ("r2-alice", &second, "alice"),
        ("r2-carol", &second, "carol"),
    ] {
        let reply = app
            .create_reservation(admin, &book_for(resource, user))
            .await;
        made.insert(name, id_of(reply.assert_status(201)));
    }
    app.cancel_reservation(admin, &made["r2-alice"])
        .await
        .assert_status(200);

    let listed = |query: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut found = ids(&app
                .list_all("/v1/reservations", &app.admin_token, &query)
                .await);
            found.sort();
            found
        }
    };
    let expect = |names: &[&str]| {
        let mut ids: Vec<String> = names.iter().map(|n| made[n].clone()).collect();
        ids.sort();
        ids
    };

    assert_eq!(
        listed(vec![("resource_id", first.clone())]).await,
        expect(&["r1-alice", "r1-bob"])
    );
    assert_eq!(
        listed(vec![("user_id", "alice".into())]).await,
        expect(&["r1-alice", "r2-alice"])
    );
    assert_eq!(
        listed(vec![("status", "cancelled".into())]).await,
        expect(&["r2-alice"])
    );
    assert_eq!(
        listed(vec![("status", "confirmed".into())]).await,
        expect(&["r1-alice", "r1-bob", "r2-carol"])
    );
    assert_eq!(
        listed(vec![
            ("resource_id", second.clone()),
            ("user_id", "alice".into()),
            ("status", "confirmed".into())
        ])
        .await,
        expect(&[])
    );
}

#[tokio::test]
async fn user_key_lists_only_its_own_reservations() {
    let app = spawn_app().await;
    let alice = app.create_user_key("alice").await;
    let bob = app.create_user_key("bob").await;
    let resource = app.new_resource(5).await;
    let mine = app
        .book(&alice, &resource, &at("10:00"), &at("11:00"))
        .await;
    app.book(&bob, &resource, &at("10:00"), &at("11:00")).await;
    app.book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
        .await;

    let own = app.list_all("/v1/reservations", &alice, &[]).await;
    assert_eq!(own, vec![mine]);

    let others = app
        .list_all("/v1/reservations", &alice, &[("user_id", "bob")])
        .await;
    assert_eq!(others, Vec::<Value>::new());

    let all = app
        .list_all("/v1/reservations", &app.admin_token, &[])
        .await;
    assert_eq!(all.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_many_pages_concurrently_is_consistent() {
    let app = spawn_app().await;
    let resource = app.new_resource(2).await;
    let created = scattered(&app, &resource, 30).await;

    let query = [("resource_id", resource.as_str()), ("limit", "4")];
    let walks =
        join_all((0..4).map(|_| app.list_all("/v1/reservations", &app.admin_token, &query))).await;

    let mut expected = created.clone();
    expected.sort_by_key(sort_key);
    for walk in walks {
        assert_eq!(ids(&walk), ids(&expected));
    }
}

/// List pages are cached in memory; a page served again must be the same
/// bytes, and no page served after a write was acknowledged may miss it:
/// not by resource, not by user, not unfiltered.
#[tokio::test]
async fn cached_pages_never_hide_an_acknowledged_write() {
    let app = spawn_app().await;
    let resource = app.new_resource(10).await;
    let other = app.new_resource(10).await;
    let alice = app.create_user_key("alice").await;
    let by_resource = [("resource_id", resource.as_str())];
    let first = app.list_reservations(&app.admin_token, &by_resource).await;
    first.assert_status(200);
    let again = app.list_reservations(&app.admin_token, &by_resource).await;
    assert_eq!(again.text, first.text, "a page served twice");
    let mine = app.list_reservations(&alice, &[]).await;
    assert_eq!(mine.assert_status(200)["items"], json!([]));
    let everything = app.list_reservations(&app.admin_token, &[]).await;
    assert_eq!(everything.assert_status(200)["items"], json!([]));

    // A booking by alice on the listed resource shows in all three.
    let (start, end) = hours(1, 2);
    let booked = app.book(&alice, &resource, &start, &end).await;
    let id = id_of(&booked);
    let page = app.list_reservations(&app.admin_token, &by_resource).await;
    assert_eq!(
        ids(page.assert_status(200)["items"].as_array().unwrap()),
        vec![id.clone()]
    );
    let page = app.list_reservations(&alice, &[]).await;
    assert_eq!(
        ids(page.assert_status(200)["items"].as_array().unwrap()),
        vec![id.clone()]
    );
    let page = app.list_reservations(&app.admin_token, &[]).await;
    assert_eq!(
        ids(page.assert_status(200)["items"].as_array().unwrap()),
        vec![id.clone()]
    );

    // A booking elsewhere by alice: her own list shows it at once.
    let (start, end) = hours(3, 4);
    let elsewhere = id_of(&app.book(&alice, &other, &start, &end).await);
    let page = app.list_reservations(&alice, &[]).await;
    assert_eq!(
        ids(page.assert_status(200)["items"].as_array().unwrap()),
        [id.clone(), elsewhere]
    );

    // A change and a cancellation show at their new version.
    let (start, end) = hours(5, 6);
    app.patch_reservation(
        &alice,
        &id,
        &json!({"starts_at": start, "ends_at": end, "notes": "moved"}),
    )
    .await
    .assert_status(200);
    let page = app.list_reservations(&app.admin_token, &by_resource).await;
    let items = page.assert_status(200)["items"].clone();
    assert_eq!(items[0]["notes"], "moved", "{}", page.text);
    assert_eq!(items[0]["starts_at"], start.as_str(), "{}", page.text);
    let (from, _) = hours(4, 5);
    let windowed = [("resource_id", resource.as_str()), ("from", from.as_str())];
    let before = app.list_reservations(&app.admin_token, &windowed).await;
    assert_eq!(before.assert_status(200)["items"][0]["status"], "confirmed");
    app.cancel_reservation(&alice, &id).await.assert_status(200);
    let after = app.list_reservations(&app.admin_token, &windowed).await;
    assert_eq!(
        after.assert_status(200)["items"][0]["status"],
        "cancelled",
        "{}",
        after.text
    );
    let page = app.list_reservations(&alice, &[]).await;
    let cancelled: Vec<&Value> = page.assert_status(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"] == id.as_str())
        .collect();
    assert_eq!(cancelled.len(), 1, "{}", page.text);
    assert_eq!(cancelled[0]["status"], "cancelled", "{}", page.text);
}
