use reqwest::Method;
use serde_json::json;

use crate::helpers::{Reply, TestApp, assert_problem_shape, at, id_of, send, spawn_app};

/// A raw request: any method, path, content type and body bytes.
async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Reply {
    let mut builder = app.request(method, path, Some(&app.admin_token)).body(body);
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    send(builder).await
}

#[tokio::test]
async fn validation_problem_lists_every_bad_and_unknown_field() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;

    let reply = app
        .create_reservation(
            &app.admin_token,
            &json!({
                "resource_id": resource,
                "starts_at": "next tuesday",
                "party_size": 0,
                "notes": 17,
                "metadata": "not an object",
                "colour": "red",
                "extra": {"nested": true}
            }),
        )
        .await;

    let fields = reply.assert_invalid_fields(&[
        "starts_at",
        "ends_at",
        "party_size",
        "notes",
        "metadata",
        "colour",
        "extra",
    ]);
    assert!(!fields.contains(&"resource_id".to_owned()), "{fields:?}");
    for error in reply.body["errors"].as_array().unwrap() {
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
    }
    assert_eq!(reply.body["title"].as_str().map(str::is_empty), Some(false));
}

#[tokio::test]
async fn missing_required_fields_are_422() {
    let app = spawn_app().await;

    let reply = app.create_reservation(&app.admin_token, &json!({})).await;

    reply.assert_invalid_fields(&["resource_id", "starts_at", "ends_at"]);
}

#[tokio::test]
async fn wrong_json_types_are_422() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;

    let reply = app
        .create_reservation(
            &app.admin_token,
            &json!({
                "id": 5,
                "resource_id": resource,
                "user_id": ["alice"],
                "starts_at": 1_893_974_400,
                "ends_at": true,
                "party_size": "2"
            }),
        )
        .await;

    reply.assert_invalid_fields(&["id", "user_id", "starts_at", "ends_at", "party_size"]);
}

#[tokio::test]
async fn non_object_bodies_are_422() {
    let app = spawn_app().await;

    for body in [json!([]), json!("text"), json!(3), json!(null)] {
        let reply = app.create_reservation(&app.admin_token, &body).await;
        assert_eq!(reply.status, 422, "body {body}: {}", reply.text);
        reply.assert_problem(422, "validation");
    }
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;

    for body in [
        "{\"name\": ",
        "{name: 'x'}",
        "",
        "{\"name\": \"x\"} trailing",
    ] {
        let reply = raw(
            &app,
            Method::POST,
            "/v1/resources",
            Some("application/json"),
            body,
        )
        .await;
        assert_eq!(reply.status, 400, "body {body:?}: {}", reply.text);
        reply.assert_problem(400, "malformed-json");
    }
}

#[tokio::test]
async fn non_json_content_type_is_415() {
    let app = spawn_app().await;

    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let reply = raw(
            &app,
            Method::POST,
            "/v1/resources",
            Some(content_type),
            r#"{"name": "x"}"#,
        )
        .await;
        assert_eq!(reply.status, 415, "{content_type}: {}", reply.text);
        reply.assert_problem(415, "unsupported-media-type");
    }
}

#[tokio::test]
async fn json_content_type_with_charset_is_accepted() {
    let app = spawn_app().await;

    let reply = raw(
        &app,
        Method::POST,
        "/v1/resources",
        Some("application/json; charset=utf-8"),
        r#"{"name": "x"}"#,
    )
    .await;

    reply.assert_status(201);
}

#[tokio::test]
async fn body_over_one_mebibyte_is_413() {
    let app = spawn_app().await;
    let body = json!({"name": "x".repeat(1024 * 1024 + 10)}).to_string();

    let reply = raw(
        &app,
        Method::POST,
        "/v1/resources",
        Some("application/json"),
        body,
    )
    .await;

    reply.assert_problem(413, "payload-too-large");
}

#[tokio::test]
async fn unknown_route_is_404_problem() {
    let app = spawn_app().await;

    for path in [
        "/v1/nothing-here",
        "/nope",
        "/v2/resources",
        "/v1/reservations/x/y/z",
    ] {
        let reply = app.get(path, &app.admin_token).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.text);
        reply.assert_problem(404, "not-found");
    }
}

#[tokio::test]
async fn wrong_method_is_405_problem() {
    let app = spawn_app().await;
    let resource = app.new_resource(1).await;

    for (method, path) in [
        (Method::DELETE, "/v1/resources".to_owned()),
        (Method::PUT, format!("/v1/resources/{resource}")),
        (Method::GET, "/v1/reservations/batch".to_owned()),
        (Method::DELETE, "/v1/keys".to_owned()),
    ] {
        let reply = send(app.request(method.clone(), &path, Some(&app.admin_token))).await;
        assert_eq!(reply.status, 405, "{method} {path}: {}", reply.text);
        reply.assert_problem(405, "method-not-allowed");
    }
}

#[tokio::test]
async fn invalid_uuid_in_path_is_a_client_error() {
    let app = spawn_app().await;

    for path in [
        "/v1/reservations/not-a-uuid",
        "/v1/resources/1234",
        "/v1/resources/zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz/availability?from=2030-01-01T00:00:00Z&to=2030-01-02T00:00:00Z",
    ] {
        let reply = app.get(path, &app.admin_token).await;
        assert!(
            matches!(reply.status.as_u16(), 400 | 404 | 422),
            "{path}: {} {}",
            reply.status,
            reply.text
        );
        assert_problem_shape(&reply.body, reply.status.as_u16(), &reply.text);
    }
}

/// Every odd input gets a 4xx problem (or a success), never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_inputs_never_yield_a_server_error() {
    let app = spawn_app().await;
    let resource = app.new_resource(2).await;
    let reservation = id_of(
        &app.book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
            .await,
    );
    let deep_array = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000));
    let huge_number = format!("1{}", "0".repeat(400));
    let booking = |extra: &str| {
        format!(
            r#"{{"resource_id":"{resource}","starts_at":"{}","ends_at":"{}"{extra}}}"#,
            at("12:00"),
            at("13:00")
        )
    };

    let json_bodies: Vec<(&str, String)> = vec![
        ("/v1/resources", r#"{"name":"x","capacity":1e308}"#.into()),
        ("/v1/resources", r#"{"name":"x","capacity":-9223372036854775809}"#.into()),
        ("/v1/resources", format!(r#"{{"name":"x","capacity":{huge_number}}}"#)),
        ("/v1/resources", r#"{"name":"x","capacity":18446744073709551616}"#.into()),
        ("/v1/resources", r#"{"name":"x","slot_minutes":2.5}"#.into()),
        ("/v1/resources", r#"{"name":"🦀\u0000\u202e","timezone":"../../etc/passwd"}"#.into()),
        ("/v1/resources", format!(r#"{{"name":"x","timezone":"{}"}}"#, "A/".repeat(5000))),
        ("/v1/resources", r#"{"name":"x","timezone":""}"#.into()),
        ("/v1/resources", r#"{"name":"x","opening_hours":"always"}"#.into()),
        ("/v1/resources", r#"{"name":"x","opening_hours":[[[]]]}"#.into()),
        ("/v1/resources", r#"{"name":"x","opening_hours":[{"weekday":"mon","open":"9","close":"-1:00"}]}"#.into()),
        ("/v1/resources", r#"{"name":"x","opening_hours":[{"weekday":"MON","open":"23:59:59","close":"24:01"}]}"#.into()),
        ("/v1/resources", r#"{"id":"not-a-uuid","name":"x"}"#.into()),
        ("/v1/resources", r#"{"id":"00000000-0000-0000-0000-000000000000","name":"nil"}"#.into()),
        ("/v1/resources", format!(r#"{{"name":{deep_array}}}"#)),
        ("/v1/resources", deep_array.clone()),
        ("/v1/resources", deep_object.clone()),
        ("/v1/resources", r#"{"name":"x","name":"y"}"#.into()),
        ("/v1/resources", "\u{feff}{\"name\":\"bom\"}".into()),
        ("/v1/resources", r#"{"name":"\ud800"}"#.into()),
        ("/v1/reservations", booking(r#","party_size":1e10"#)),
        ("/v1/reservations", booking(r#","party_size":-5"#)),
        ("/v1/reservations", booking(r#","party_size":2.5"#)),
        ("/v1/reservations", booking(&format!(r#","party_size":{huge_number}"#))),
        ("/v1/reservations", booking(r#","notes":"😀😀😀😀😀","metadata":{"":{"":[null,{"🦀":1e308}]}}"#)),
        ("/v1/reservations", booking(&format!(r#","metadata":{deep_object}"#))),
        ("/v1/reservations", booking(r#","user_id":"\u0007bell""#)),
        ("/v1/reservations", booking(&format!(r#","user_id":"{}""#, "u".repeat(100_000)))),
        ("/v1/reservations", booking(r#","id":"123e4567-e89b-12d3-a456-42661417400G""#)),
        ("/v1/reservations", r#"{"resource_id":"x","starts_at":"2030-13-45T25:61:00Z","ends_at":"2030-02-30T00:00:00Z"}"#.into()),
        ("/v1/reservations", format!(r#"{{"resource_id":"{resource}","starts_at":"9999-12-31T23:59:59Z","ends_at":"9999-12-31T23:59:59.999999999Z"}}"#)),
        ("/v1/reservations", format!(r#"{{"resource_id":"{resource}","starts_at":"-0001-01-01T00:00:00Z","ends_at":"0000-01-01T00:00:00Z"}}"#)),
        ("/v1/reservations", format!(r#"{{"resource_id":"{resource}","starts_at":"1970-01-01T00:00:00+25:00","ends_at":"2030-01-01T00:00:00-00:00"}}"#)),
        ("/v1/reservations", format!(r#"{{"resource_id":"{resource}","starts_at":"2030-01-07T10:00:00Z","ends_at":"+002030-01-07T11:00:00Z"}}"#)),
        ("/v1/reservations/batch", r#"{"reservations":[null,1,"x",[],{}]}"#.into()),
        ("/v1/reservations/batch", format!(r#"{{"reservations":[{}]}}"#, booking(r#","party_size":-1"#))),
        ("/v1/reservations/batch", r#"{"reservations":null}"#.into()),
        ("/v1/keys", r#"{"user_id":"🦀","role":"admin "}"#.into()),
        ("/v1/keys", format!(r#"{{"user_id":"{}","role":"user"}}"#, "x".repeat(10_000))),
        ("/v1/keys", r#"{"user_id":null,"role":null}"#.into()),
    ];
    let patch_path = format!("/v1/reservations/{reservation}");
    let resource_path = format!("/v1/resources/{resource}");
    let mut patches: Vec<(String, String)> = [
        r#"{"party_size":null}"#,
        r#"{"starts_at":null,"ends_at":null}"#,
        r#"{"party_size":1e400}"#,
        r#"{"ends_at":"2030-01-07T10:00:00Z"}"#,
        r#"{"status":"cancelled","version":99,"id":"x"}"#,
        "[]",
        "null",
        "42",
        "\"\"",
    ]
    .iter()
    .map(|b| (patch_path.clone(), (*b).to_owned()))
    .collect();
    patches.push((
        resource_path.clone(),
        r#"{"capacity":null,"timezone":7}"#.into(),
    ));
    patches.push((
        resource_path.clone(),
        r#"{"opening_hours":[{"weekday":"sun","open":"00:00","close":"00:00"}]}"#.into(),
    ));

    let mut cases: Vec<(Method, String, Option<&str>, String)> = Vec::new();
    for (path, body) in json_bodies {
        cases.push((
            Method::POST,
            path.to_owned(),
            Some("application/json"),
            body,
        ));
    }
    for (path, body) in patches {
        cases.push((Method::PATCH, path, Some("application/json"), body));
    }
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/xml"),
        Some("application/json-seq"),
        Some("multipart/form-data; boundary=x"),
        Some("application/json; charset=latin1"),
    ] {
        cases.push((
            Method::POST,
            "/v1/reservations".into(),
            content_type,
            booking(""),
        ));
    }
    let availability = format!("/v1/resources/{resource}/availability");
    for path in [
        "/v1/reservations/not-a-uuid".to_owned(),
        "/v1/reservations/%00".to_owned(),
        "/v1/reservations/%F0%9F%A6%80".to_owned(),
        "/v1/reservations/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/v1/resources/00000000-0000-0000-0000-000000000000".to_owned(),
        "/v1/resources/%ZZ".to_owned(),
        format!("/v1/reservations/{}", "a".repeat(5000)),
        format!("/v1/reservations/{reservation}/cancel/extra"),
        "/v1/reservations?limit=-1".to_owned(),
        "/v1/reservations?limit=99999999999999999999999".to_owned(),
        "/v1/reservations?limit=1&limit=2".to_owned(),
        "/v1/reservations?cursor=!!!".to_owned(),
        "/v1/reservations?cursor=".to_owned(),
        "/v1/reservations?cursor=eyJzIjoiMjAzMCIsImlkIjoieCJ9".to_owned(),
        "/v1/reservations?status=bogus&status=confirmed".to_owned(),
        "/v1/reservations?from=2030-01-02T00:00:00Z&to=2020-01-01T00:00:00Z".to_owned(),
        "/v1/reservations?from=%ZZ".to_owned(),
        "/v1/reservations?&&&=&=".to_owned(),
        "/v1/reservations?resource_id[]=1".to_owned(),
        "/v1/resources?limit=1e3".to_owned(),
        "/v1/resources?cursor=%FF%FE".to_owned(),
        format!("{availability}?from=garbage&to=garbage"),
        format!("{availability}?from=2030-01-01T00:00:00Z&to=2030-01-02T00:00:00Z&party_size=0"),
        format!("{availability}?from=2030-01-01T00:00:00Z&to=2030-01-02T00:00:00Z&party_size=-3"),
        format!(
            "{availability}?from=2030-01-01T00:00:00Z&to=2030-01-02T00:00:00Z&party_size=99999999999999999999"
        ),
        format!("{availability}?from=2030-01-01T00:00:00Z&to=2030-01-02T00:00:00Z&party_size=1000"),
        format!("{availability}?from=-9999-01-01T00:00:00Z&to=9999-01-01T00:00:00Z"),
        format!("{availability}?from=9999-12-31T00:00:00Z&to=9999-12-31T23:59:59Z"),
        format!("{availability}?from=2030-01-01T00:00:00Z&to=2030-01-02T00:00:00Z&bogus=1"),
    ] {
        cases.push((Method::GET, path, None, String::new()));
    }
    for path in ["/v1/reservations", "/v1/resources", "/v1/keys", "/"] {
        for method in [
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::from_bytes(b"BREW").unwrap(),
        ] {
            cases.push((method, path.to_owned(), None, String::new()));
        }
    }

    for (method, path, content_type, body) in cases {
        let reply = raw(&app, method.clone(), &path, content_type, body.clone()).await;
        let status = reply.status.as_u16();
        let shown: String = body.chars().take(120).collect();
        assert!(
            status < 500,
            "{method} {path} ({content_type:?}) {shown} -> {status} {}",
            reply.text
        );
        if status >= 400 {
            assert_eq!(
                reply.header("content-type"),
                Some("application/problem+json"),
                "{method} {path} {shown} -> {status} {}",
                reply.text
            );
            assert_problem_shape(&reply.body, status, &format!("{method} {path} {shown}"));
        }
    }

    // Odd headers on an otherwise valid request.
    let long_key = "k".repeat(10_000);
    let long_bearer = format!("Bearer {}", "x".repeat(10_000));
    for (name, value) in [
        ("idempotency-key", long_key.as_str()),
        ("idempotency-key", "\t"),
        ("if-match", "not-an-etag"),
        ("if-match", "\"\""),
        ("if-none-match", "\"99999999999999999999999\""),
        ("authorization", long_bearer.as_str()),
        ("authorization", "bearer test-admin-token"),
        ("content-length", "abc"),
    ] {
        let mut builder = app
            .request(Method::PATCH, &patch_path, Some(&app.admin_token))
            .header("content-type", "application/json")
            .body(r#"{"notes":"header fuzz"}"#);
        builder = builder.header(name, value);
        let Ok(response) = builder.send().await else {
            continue; // reqwest refused to send it: nothing reached the server.
        };
        let reply = Reply::read(response).await;
        assert!(
            reply.status.as_u16() < 500,
            "{name}: {value:.40} -> {} {}",
            reply.status,
            reply.text
        );
    }

    // The server is still healthy after all of that.
    app.get_reservation(&app.admin_token, &reservation)
        .await
        .assert_status(200);
}
