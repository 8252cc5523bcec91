//! The OpenAPI document (`/openapi.json`) and the docs page (`/docs`): the
//! document is well formed, every route the service serves is in it and every
//! operation in it is served, errors are documented as problem+json, the
//! documented schemas match what the service really sends, and the docs page
//! is self-contained.

use std::{collections::BTreeSet, path::Path};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, at, id_of, send, spawn_app};

/// Every (method, path) the service serves. Maintained by hand on purpose:
/// `every_registered_route_is_in_the_list` fails when a route is added to
/// `src/http` without being added here, and `every_served_route_is_documented`
/// then fails until it is documented.
const SERVED: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/health/detailed"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("POST", "/v1/keys"),
    ("GET", "/v1/resources"),
    ("POST", "/v1/resources"),
    ("GET", "/v1/resources/{id}"),
    ("PATCH", "/v1/resources/{id}"),
    ("GET", "/v1/resources/{id}/availability"),
    ("GET", "/v1/reservations"),
    ("POST", "/v1/reservations"),
    ("POST", "/v1/reservations/batch"),
    ("GET", "/v1/reservations/{id}"),
    ("PATCH", "/v1/reservations/{id}"),
    ("POST", "/v1/reservations/{id}/cancel"),
    ("GET", "/v1/sync/status"),
    ("GET", "/v1/cache/stats"),
];

/// Operations only an admin key may call.
const ADMIN_ONLY: &[&str] = &[
    "createKey",
    "createResource",
    "updateResource",
    "getSyncStatus",
    "getCacheStats",
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(app: &TestApp) -> Value {
    let reply = send(app.request(Method::GET, "/openapi.json", None)).await;
    reply.assert_status(200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "content type {:?}",
        reply.header("content-type")
    );
    serde_json::from_str(&reply.text).expect("/openapi.json is JSON")
}

/// Every (METHOD, path, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths object") {
        for method in METHODS {
            if let Some(op) = item.get(*method) {
                found.push((method.to_uppercase(), path.clone(), op.clone()));
            }
        }
    }
    found
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("non-local $ref {reference}"));
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {reference}")),
            )
        }
        None => value,
    }
}

#[tokio::test]
async fn document_is_openapi_3_1_with_schemas_security_and_resolvable_refs() {
    let app = spawn_app().await;
    let doc = document(&app).await;

    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "openapi version {}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert!(!doc["paths"].as_object().expect("paths").is_empty());
    let schemas = doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    for name in [
        "Problem",
        "FieldError",
        "Reservation",
        "Resource",
        "NewReservation",
        "NewResource",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    let bearer = doc["components"]["securitySchemes"]
        .as_object()
        .expect("securitySchemes")
        .values()
        .find(|s| {
            s["type"] == "http"
                && s["scheme"].as_str().map(str::to_lowercase) == Some("bearer".into())
        })
        .expect("an HTTP bearer security scheme");
    assert!(bearer.is_object());

    // Every $ref resolves to something in this document.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 20, "suspiciously few $refs: {refs:?}");
    for reference in refs {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {reference}"));
        assert!(
            pointer.starts_with("/components/") && doc.pointer(pointer).is_some(),
            "$ref {reference} does not resolve"
        );
    }

    // Operation ids are unique (clients generate method names from them).
    let ids: Vec<String> = operations(&doc)
        .iter()
        .map(|(m, p, op)| {
            op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{m} {p} has no operationId"))
                .to_owned()
        })
        .collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate operationIds: {ids:?}");
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("$ref", Value::String(target)) => refs.push(target.clone()),
                    _ => collect_refs(item, refs),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, refs)),
        _ => {}
    }
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let mut missing = Vec::new();
    for (method, path, _) in operations(&doc) {
        let concrete: String = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    uuid::Uuid::new_v4().to_string()
                } else {
                    segment.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = app.request(method.clone(), &concrete, Some(&app.admin_token));
        if method == Method::POST || method == Method::PATCH {
            request = request.json(&json!({}));
        }
        let reply = send(request).await;
        let no_route = reply.status.as_u16() == 404 && reply.body["detail"] == "no such route";
        if no_route || reply.status.as_u16() == 405 {
            missing.push(format!(
                "{method} {path} -> {} {}",
                reply.status, reply.text
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "documented but not served:\n{}",
        missing.join("\n")
    );
}

#[tokio::test]
async fn every_served_route_is_documented() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let served: BTreeSet<(String, String)> = SERVED
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    let unknown: Vec<_> = documented.difference(&served).collect();
    assert!(
        unknown.is_empty(),
        "documented but missing from SERVED in this test: {unknown:?}"
    );
}

/// Guards the hand-written [`SERVED`] list: scans the HTTP sources for route
/// registrations (`.route(...)` with its method routers, `#[utoipa::path]`
/// handlers collected by `routes!`, nested routers and services) and fails on
/// any the list does not name.
#[test]
fn every_registered_route_is_in_the_list() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    collect_rust_files(&root.join("src/http"), &mut files);
    files.push(root.join("src/app.rs"));
    let listed: BTreeSet<(String, String)> = SERVED
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();

    let mut registered = BTreeSet::new();
    for file in &files {
        let Ok(source) = std::fs::read_to_string(file) else {
            continue;
        };
        let source = strip_tests_and_comments(&source);
        for (method, path) in registrations(&source) {
            registered.insert((method, path, file.display().to_string()));
        }
    }
    // The scan itself must keep finding the routes it is meant to guard.
    for expected in [
        ("POST", "/v1/keys"),
        ("GET", "/v1/reservations/{id}"),
        ("GET", "/docs"),
    ] {
        assert!(
            registered
                .iter()
                .any(|(m, p, _)| (m.as_str(), p.as_str()) == expected),
            "the source scan no longer finds {expected:?}; found {registered:?}"
        );
    }
    let unlisted: Vec<String> = registered
        .iter()
        .filter(|(method, path, _)| !listed.contains(&(method.clone(), path.clone())))
        .map(|(method, path, file)| format!("{method} {path} (registered in {file})"))
        .collect();
    assert!(
        unlisted.is_empty(),
        "routes registered in the source but not in SERVED (add them there and document them):\n{}",
        unlisted.join("\n")
    );
}

fn collect_rust_files(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/http").flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Drops `#[cfg(test)]` modules (test-only routers) and line comments.
fn strip_tests_and_comments(source: &str) -> String {
    let code = match source.find("#[cfg(test)]") {
        Some(at) => &source[..at],
        None => source,
    };
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// (METHOD, path) of every route registration found in one source file.
/// Unknown shapes are reported as method `ANY`/`?` so they fail the check.
fn registrations(source: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    // `#[utoipa::path(get, path = "/x", ...)]`: a handler that `routes!` serves.
    let mut rest = source;
    while let Some(at) = rest.find("#[utoipa::path(") {
        let args = balanced(&rest[at + "#[utoipa::path".len()..]);
        let method = args
            .trim_start_matches('(')
            .split(|c: char| c == ',' || c.is_whitespace())
            .find(|s| !s.is_empty())
            .unwrap_or("?")
            .to_uppercase();
        let path = args
            .find("path =")
            .or_else(|| args.find("path="))
            .and_then(|p| string_literal(&args[p..]))
            .unwrap_or_else(|| "?".to_owned());
        found.push((method, path));
        rest = &rest[at + 1..];
    }
    // `.route("/x", get(a).post(b))` and friends.
    for call in [".route(", ".route_service(", ".nest(", ".nest_service("] {
        let mut rest = source;
        while let Some(at) = rest.find(call) {
            let args = balanced(&rest[at + call.len() - 1..]);
            let path = if args.trim_start_matches('(').trim_start().starts_with('"') {
                string_literal(&args)
            } else {
                const_path(source, &args)
            }
            .unwrap_or_else(|| format!("? ({args})"));
            if call == ".route(" {
                let methods = method_calls(&args);
                if methods.is_empty() {
                    found.push(("ANY".to_owned(), path.clone()));
                }
                for method in methods {
                    found.push((method, path.clone()));
                }
            } else {
                found.push(("ANY".to_owned(), path));
            }
            rest = &rest[at + 1..];
        }
    }
    found
}

/// The text of the parenthesised group `text` starts with.
fn balanced(text: &str) -> String {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' => depth += 1,
            ')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return text[..=i].to_owned();
                }
            }
            _ => {}
        }
    }
    text.to_owned()
}

/// The first string literal in `text`.
fn string_literal(text: &str) -> Option<String> {
    let start = text.find('"')? + 1;
    let end = start + text[start..].find('"')?;
    Some(text[start..end].to_owned())
}

/// `.route(SOME_CONST, ...)`: the value of `const SOME_CONST: &str = "..."`.
fn const_path(source: &str, args: &str) -> Option<String> {
    let name: String = args
        .trim_start_matches('(')
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let name = name.rsplit("::").next()?;
    if name.is_empty() {
        return None;
    }
    let declaration = source.find(&format!("const {name}: &str"))?;
    string_literal(&source[declaration..])
}

/// The HTTP methods of a method-router expression: `get(a).post(b)`,
/// `routing::patch(c)`, `on(MethodFilter::PUT, d)`; `any(...)` is `ANY`.
fn method_calls(expression: &str) -> Vec<String> {
    let mut methods = Vec::new();
    let bytes = expression.as_bytes();
    for name in [
        "get", "post", "put", "patch", "delete", "head", "options", "trace", "any",
    ] {
        for suffix in ["(", "_service("] {
            let needle = format!("{name}{suffix}");
            let mut from = 0;
            while let Some(at) = expression[from..].find(&needle) {
                let start = from + at;
                let before = start.checked_sub(1).map(|i| bytes[i] as char);
                if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                    methods.push(name.to_uppercase());
                }
                from = start + needle.len();
            }
        }
    }
    let mut from = 0;
    while let Some(at) = expression[from..].find("MethodFilter::") {
        let start = from + at + "MethodFilter::".len();
        let name: String = expression[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        methods.push(name.to_uppercase());
        from = start;
    }
    methods
}

#[test]
fn the_route_scanner_reads_the_registration_shapes() {
    let source = r#"
        const READY: &str = "/ready";
        Router::new()
            .route("/a", get(a).post(b))
            .route(READY, routing::patch(c))
            .route("/c", on(MethodFilter::PUT, d))
            .route("/d", any(e))
            .nest("/e", other)
        #[utoipa::path(delete, path = "/f", responses((status = 204)))]
    "#;
    let found: BTreeSet<(String, String)> = registrations(source).into_iter().collect();
    let expected: BTreeSet<(String, String)> = [
        ("GET", "/a"),
        ("POST", "/a"),
        ("PATCH", "/ready"),
        ("PUT", "/c"),
        ("ANY", "/d"),
        ("ANY", "/e"),
        ("DELETE", "/f"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(found, expected);
}

#[tokio::test]
async fn v1_operations_document_auth_and_problem_errors() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let bearer_scheme = doc["components"]["securitySchemes"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, s)| s["scheme"].as_str().map(str::to_lowercase) == Some("bearer".into()))
        .map(|(name, _)| name.clone())
        .unwrap();

    let mut v1 = 0;
    for (method, path, op) in operations(&doc) {
        let name = format!("{method} {path}");
        let responses = op["responses"].as_object().expect("responses");
        let has = |status: &str| responses.contains_key(status);
        let params: Vec<&Value> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| resolve(&doc, p))
            .collect();

        // Every problem response is application/problem+json with a Problem.
        for (status, response) in responses {
            let response = resolve(&doc, response);
            assert!(
                response["description"].is_string(),
                "{name} {status}: no description"
            );
            if status.starts_with('4') || status.starts_with('5') {
                let content = response["content"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{name} {status}: no content"));
                let types: Vec<&String> = content.keys().collect();
                // /health/detailed describes its parts as JSON even on 503.
                if path.starts_with("/v1") {
                    assert_eq!(types, ["application/problem+json"], "{name} {status}");
                    let schema = resolve(&doc, &content["application/problem+json"]["schema"]);
                    assert!(
                        schema["properties"]["type"].is_object()
                            && schema["properties"]["errors"].is_object(),
                        "{name} {status}: schema is not Problem"
                    );
                }
            }
        }
        if !path.starts_with("/v1/") {
            assert!(
                op["security"].as_array().is_none_or(|list| list
                    .iter()
                    .all(|s| s.as_object().is_some_and(|s| s.is_empty()))),
                "{name} needs no key"
            );
            continue;
        }
        v1 += 1;
        assert!(
            op["security"]
                .as_array()
                .is_some_and(|list| list.iter().any(|s| s.get(&bearer_scheme).is_some())),
            "{name}: bearer security"
        );
        for status in ["401", "429", "500", "503"] {
            assert!(has(status), "{name}: no {status}");
        }
        let retry_after = &resolve(&doc, &responses["429"])["headers"]["Retry-After"];
        assert!(retry_after.is_object(), "{name}: 429 without Retry-After");

        let has_body = op.get("requestBody").is_some();
        let has_query = params.iter().any(|p| p["in"] == "query");
        if has_body || has_query {
            assert!(has("422"), "{name}: takes a body or query but no 422");
        }
        if has_body {
            for status in ["400", "413", "415"] {
                assert!(has(status), "{name}: takes a body but no {status}");
            }
            let content = &resolve(&doc, &op["requestBody"])["content"];
            assert!(
                content["application/json"]["schema"].is_object(),
                "{name}: body is not application/json"
            );
        }
        if path.contains("{id}") {
            assert!(has("404"), "{name}: has an id but no 404");
            assert!(
                params
                    .iter()
                    .any(|p| p["in"] == "path" && p["name"] == "id"),
                "{name}: path parameter id"
            );
        }
        if params
            .iter()
            .any(|p| p["in"] == "header" && p["name"] == "If-Match")
        {
            assert!(has("412"), "{name}: If-Match but no 412");
        }
        if params
            .iter()
            .any(|p| p["in"] == "header" && p["name"] == "If-None-Match")
        {
            assert!(has("304"), "{name}: If-None-Match but no 304");
        }
        let id = op["operationId"].as_str().unwrap_or("");
        if ADMIN_ONLY.contains(&id) {
            assert!(has("403"), "{name}: admin-only but no 403");
        }
        // Success responses say what they return.
        let success: Vec<&String> = responses.keys().filter(|s| s.starts_with('2')).collect();
        assert!(!success.is_empty(), "{name}: no success response");
        for status in success {
            let response = resolve(&doc, &responses[status]);
            assert!(
                response["content"]["application/json"]["schema"].is_object(),
                "{name} {status}: no JSON schema"
            );
        }
    }
    assert_eq!(
        v1,
        SERVED
            .iter()
            .filter(|(_, path)| path.starts_with("/v1/"))
            .count(),
        "number of /v1 operations"
    );

    // Headers that clients rely on are documented.
    let header = |path: &str, method: &str, status: &str, name: &str| {
        let response = resolve(&doc, &doc["paths"][path][method]["responses"][status]);
        assert!(
            response["headers"][name].is_object(),
            "{method} {path} {status}: header {name}"
        );
    };
    header("/v1/reservations", "post", "201", "Location");
    header("/v1/reservations", "post", "201", "ETag");
    header("/v1/reservations", "post", "200", "Idempotent-Replayed");
    header("/v1/resources", "post", "201", "Location");
    header("/v1/reservations/{id}", "get", "200", "ETag");
    header("/v1/reservations/{id}", "patch", "200", "ETag");
    header("/v1/resources/{id}", "get", "304", "ETag");
    header("/v1/reservations/{id}/cancel", "post", "200", "ETag");
}

#[tokio::test]
async fn documented_schemas_match_what_the_service_sends() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let schema = |name: &str| doc["components"]["schemas"][name].clone();

    // The documented request examples are accepted.
    let example = schema("NewResource")["example"].clone();
    let reply = app
        .post_json("/v1/resources", &app.admin_token, &example)
        .await;
    let resource = reply.assert_status(201).clone();
    conforms(&doc, &schema("Resource"), &resource, "Resource");
    let resource_id = id_of(&resource);

    let reply = app
        .post_json("/v1/keys", &app.admin_token, &schema("NewKey")["example"])
        .await;
    conforms(
        &doc,
        &schema("IssuedKey"),
        reply.assert_status(201),
        "IssuedKey",
    );

    let mut booking = schema("NewReservation")["example"].clone();
    booking["resource_id"] = json!(resource_id);
    let reply = app.create_reservation(&app.admin_token, &booking).await;
    let reservation = reply.assert_status(201).clone();
    conforms(&doc, &schema("Reservation"), &reservation, "Reservation");
    let with_metadata = app
        .create_reservation(
            &app.admin_token,
            &json!({
                "resource_id": resource_id,
                "starts_at": "2030-01-07T11:00:00+01:00",
                "ends_at": "2030-01-07T11:30:00+01:00",
                "metadata": {"source": "kiosk"}
            }),
        )
        .await;
    conforms(
        &doc,
        &schema("Reservation"),
        with_metadata.assert_status(201),
        "Reservation with metadata",
    );

    let list = app.get("/v1/resources", &app.admin_token).await;
    conforms(
        &doc,
        &schema("ResourcePage"),
        list.assert_status(200),
        "ResourcePage",
    );
    let list = app
        .list_reservations(&app.admin_token, &[("limit", "1")])
        .await;
    let page = list.assert_status(200);
    assert!(page["next_cursor"].is_string());
    conforms(&doc, &schema("ReservationPage"), page, "ReservationPage");

    let reply = app
        .availability(
            &resource_id,
            &[
                ("from", "2030-01-07T00:00:00+01:00"),
                ("to", "2030-01-08T00:00:00+01:00"),
            ],
        )
        .await;
    let availability = reply.assert_status(200);
    assert!(!availability["slots"].as_array().unwrap().is_empty());
    conforms(&doc, &schema("Availability"), availability, "Availability");

    let reply = app
        .post_json(
            "/v1/reservations/batch",
            &app.admin_token,
            &json!({"reservations": [
                {"resource_id": resource_id, "starts_at": at("08:00"), "ends_at": at("08:30")},
                {"resource_id": resource_id, "starts_at": at("08:00"), "ends_at": at("08:30")},
                {"resource_id": resource_id, "starts_at": "soon"},
            ]}),
        )
        .await;
    let batch = reply.assert_status(200);
    let statuses: Vec<&Value> = batch["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["status"])
        .collect();
    assert_eq!(statuses, [&json!(201), &json!(409), &json!(422)]);
    conforms(&doc, &schema("BatchResponse"), batch, "BatchResponse");

    let status = app.get("/v1/sync/status", &app.admin_token).await;
    conforms(
        &doc,
        &schema("SyncStatus"),
        status.assert_status(200),
        "SyncStatus",
    );

    // Operations endpoints.
    let health = send(app.request(Method::GET, "/health", None)).await;
    conforms(&doc, &schema("Health"), health.assert_status(200), "Health");
    let detailed = send(app.request(Method::GET, "/health/detailed", None)).await;
    conforms(
        &doc,
        &schema("HealthReport"),
        detailed.assert_status(200),
        "HealthReport",
    );
    let metrics = send(app.request(Method::GET, "/metrics", None)).await;
    metrics.assert_status(200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "metrics content type {:?}",
        metrics.header("content-type")
    );

    // Problems, with and without `errors`.
    let invalid = app
        .create_reservation(&app.admin_token, &json!({"party_size": 0, "colour": "red"}))
        .await;
    invalid.assert_problem(422, "validation");
    conforms(
        &doc,
        &schema("Problem"),
        &invalid.body,
        "validation Problem",
    );
    let missing = app
        .get(
            &format!("/v1/reservations/{}", uuid::Uuid::new_v4()),
            &app.admin_token,
        )
        .await;
    missing.assert_problem(404, "not-found");
    conforms(&doc, &schema("Problem"), &missing.body, "404 Problem");
}

/// Checks `value` against a JSON schema of this document: `$ref`, `type`,
/// `properties`/`required`/`additionalProperties`, `items`, `enum`, `oneOf`,
/// numeric bounds and the uuid/date-time formats. Panics with `context`.
#[track_caller]
fn conforms(doc: &Value, schema: &Value, value: &Value, context: &str) {
    if let Err(error) = check(doc, schema, value, "$") {
        panic!("{context}: {error}\nvalue: {value:#}");
    }
}

fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(options) = schema["oneOf"].as_array() {
        let matching = options
            .iter()
            .filter(|option| check(doc, option, value, at).is_ok())
            .count();
        return if matching == 1 {
            Ok(())
        } else {
            Err(format!("{at}: matches {matching} of oneOf {options:?}"))
        };
    }
    if let Some(all) = schema["allOf"].as_array() {
        for part in all {
            check(doc, part, value, at)?;
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let ok = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
        if !ok {
            return Err(format!("{at}: {actual} is not {types:?}"));
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(n) = value.as_f64() {
        if schema["minimum"].as_f64().is_some_and(|min| n < min) {
            return Err(format!("{at}: {n} below minimum"));
        }
        if schema["maximum"].as_f64().is_some_and(|max| n > max) {
            return Err(format!("{at}: {n} above maximum"));
        }
    }
    if let Some(text) = value.as_str() {
        match schema["format"].as_str() {
            Some("uuid") if uuid::Uuid::try_parse(text).is_err() => {
                return Err(format!("{at}: {text} is not a uuid"));
            }
            Some("date-time") if text.parse::<jiff::Timestamp>().is_err() => {
                return Err(format!("{at}: {text} is not a date-time"));
            }
            _ => {}
        }
    }
    if let Value::Object(object) = value {
        let properties = schema["properties"].as_object();
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or("");
            if !object.contains_key(name) {
                return Err(format!("{at}: required property {name} missing"));
            }
        }
        if let Some(properties) = properties {
            for (key, item) in object {
                match properties.get(key) {
                    Some(property) => check(doc, property, item, &format!("{at}.{key}"))?,
                    None if schema["additionalProperties"] == json!(false)
                        || !properties.is_empty() =>
                    {
                        return Err(format!("{at}: undocumented property {key}"));
                    }
                    None => {}
                }
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(doc, item_schema, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn docs_page_is_self_contained_html() {
    let app = spawn_app().await;
    let reply = send(app.request(Method::GET, "/docs", None)).await;
    reply.assert_status(200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "content type {:?}",
        reply.header("content-type")
    );
    let html = &reply.text;
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("</html>"));

    // Nothing is loaded from anywhere else: no absolute URLs at all (loopback
    // excepted), no scripts or stylesheets by reference.
    for scheme in ["http://", "https://", "//cdn", "url(//"] {
        for (at, _) in html.match_indices(scheme) {
            let rest = &html[at + scheme.len()..];
            assert!(
                rest.starts_with("127.0.0.1") || rest.starts_with("localhost"),
                "external reference {:?}",
                &html[at..(at + 80).min(html.len())]
            );
        }
    }
    assert!(!html.contains("<script src"), "external script");
    assert!(!html.contains("<link"), "external stylesheet or font");
    assert!(!html.contains("@import"), "imported stylesheet");

    // It shows every operation of the document.
    let doc = document(&app).await;
    for (method, path, op) in operations(&doc) {
        let escaped_path = path.replace('&', "&amp;");
        assert!(
            html.contains(&format!(">{escaped_path}<")),
            "{method} {path} missing from /docs"
        );
        if let Some(summary) = op["summary"].as_str() {
            assert!(html.contains(summary), "summary of {method} {path} missing");
        }
    }
    assert!(html.contains("id=\"schema-Reservation\""));
}

#[tokio::test]
async fn docs_and_document_need_no_key() {
    let app = spawn_app().await;
    for path in ["/openapi.json", "/docs"] {
        let reply = send(app.request(Method::GET, path, None)).await;
        reply.assert_status(200);
    }
    let reply = send(app.request(Method::POST, "/openapi.json", None)).await;
    reply.assert_problem(405, "method-not-allowed");
}
