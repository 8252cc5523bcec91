//! Test harness: an in-process server per test on its own temporary data
//! directory, plus small typed request helpers shared by every module.

use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use reservoir::Config;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A day far in the future; 2030-01-07 is a Monday.
pub const DAY: &str = "2030-01-07";

/// `"2030-01-07THH:MM:00Z"` for an `"HH:MM"` time on [`DAY`].
pub fn at(hm: &str) -> String {
    format!("{DAY}T{hm}:00Z")
}

/// A running in-process server.
pub struct TestApp {
    pub address: String,
    pub admin_token: String,
    pub client: Client,
    pub data_dir: TempDir,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<anyhow::Result<()>>,
}

/// A fresh server on a fresh data directory.
pub async fn spawn_app() -> TestApp {
    let data_dir = tempfile::tempdir().expect("create temp data dir");
    spawn_app_on(data_dir).await
}

/// A server on an existing data directory (e.g. one kept by [`TestApp::stop`]).
pub async fn spawn_app_on(data_dir: TempDir) -> TestApp {
    // Quotas and request rates would trip the many bookings tests make;
    // the rate-limit tests turn them back on.
    let mut config = Config::with_data_dir(data_dir.path()).without_limits();
    config.admin_token = Some(ADMIN_TOKEN.to_owned());
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind listener");
    let port = listener.local_addr().unwrap().port();
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(reservoir::launch(config, listener, async move {
        let _ = stopped.await;
    }));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        admin_token: ADMIN_TOKEN.to_owned(),
        client: Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("build HTTP client"),
        data_dir,
        shutdown,
        server,
    }
}

/// A response read to the end, so status, headers and body can all be checked.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    /// The body parsed as JSON, `Value::Null` when empty or not JSON.
    pub body: Value,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("read response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    pub fn etag(&self) -> Option<&str> {
        self.header("etag")
    }

    /// Panics with the whole response when the status is not `expected`.
    #[track_caller]
    pub fn assert_status(&self, expected: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            expected,
            "unexpected status; headers {:?}; body {}",
            self.headers,
            self.text
        );
        &self.body
    }

    /// Checks an RFC 9457 problem with the given status and
    /// `urn:reservoir:problem:<slug>` type; returns the problem.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, slug: &str) -> &Value {
        self.assert_status(status);
        assert_problem_shape(&self.body, status, &self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "problem content type; body {}",
            self.text
        );
        assert_eq!(
            self.body["type"],
            format!("urn:reservoir:problem:{slug}"),
            "{}",
            self.text
        );
        &self.body
    }

    /// Checks a 422 validation problem whose `errors` name at least `fields`;
    /// returns every field named.
    #[track_caller]
    pub fn assert_invalid_fields(&self, fields: &[&str]) -> Vec<String> {
        self.assert_problem(422, "validation");
        let named = error_fields(&self.body);
        for field in fields {
            assert!(
                named.iter().any(|n| n == field),
                "expected `{field}` among the error fields {named:?}; body {}",
                self.text
            );
        }
        named
    }
}

/// The `type`, `title`, `status`, `detail` members of a problem document.
#[track_caller]
pub fn assert_problem_shape(problem: &Value, status: u16, context: &str) {
    assert!(
        problem["type"].as_str().is_some_and(|t| !t.is_empty()),
        "problem type: {context}"
    );
    assert!(
        problem["title"].as_str().is_some_and(|t| !t.is_empty()),
        "problem title: {context}"
    );
    assert_eq!(problem["status"], status, "problem status: {context}");
    assert!(problem["detail"].is_string(), "problem detail: {context}");
}

/// The `field` of every entry of a validation problem's `errors`.
#[track_caller]
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("problem without an `errors` array: {problem}"))
        .iter()
        .map(|e| e["field"].as_str().expect("error field").to_owned())
        .collect()
}

/// A resource body with a unique name and the given capacity, always open.
pub fn resource_body(capacity: u32) -> Value {
    json!({ "name": format!("room-{}", uuid::Uuid::new_v4()), "capacity": capacity })
}

/// A reservation body for `resource_id` over `[starts_at, ends_at)`.
pub fn reservation_body(resource_id: &str, starts_at: &str, ends_at: &str) -> Value {
    json!({ "resource_id": resource_id, "starts_at": starts_at, "ends_at": ends_at })
}

/// Adds or replaces `key` in a JSON object.
pub fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

/// The id of a JSON object.
#[track_caller]
pub fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an `id` string").to_owned()
}

impl TestApp {
    /// Triggers the graceful shutdown, waits for it and hands the data
    /// directory back for a restart.
    pub async fn stop(self) -> TempDir {
        let TestApp {
            client,
            data_dir,
            shutdown,
            server,
            ..
        } = self;
        drop(client);
        let _ = shutdown.send(());
        server
            .await
            .expect("server task panicked")
            .expect("server returned an error");
        data_dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A request with an optional bearer token.
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a request, with extra headers and an optional JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut builder = self.request(method, path, Some(token));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if let Some(body) = body {
            builder = builder.json(body);
        }
        send(builder).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, token, None, &[]).await
    }

    pub async fn get_query(&self, path: &str, token: &str, query: &[(&str, &str)]) -> Reply {
        send(self.request(Method::GET, path, Some(token)).query(query)).await
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.call(Method::POST, path, token, Some(body), &[]).await
    }

    /// Books `items` through the batch endpoint as admin, each of which must
    /// succeed; their ids, in order.
    pub async fn book_all(&self, items: Vec<Value>) -> Vec<String> {
        let reply = self
            .post_json(
                "/v1/reservations/batch",
                &self.admin_token,
                &json!({ "reservations": items }),
            )
            .await;
        reply.assert_status(200)["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|result| {
                assert_eq!(result["status"], 201, "{result}");
                id_of(&result["reservation"])
            })
            .collect()
    }

    pub async fn patch_json(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.call(Method::PATCH, path, token, Some(body), &[]).await
    }

    /// `POST /v1/keys` as admin; returns the new key.
    pub async fn create_key(&self, user_id: &str, role: &str) -> String {
        let reply = self
            .post_json(
                "/v1/keys",
                &self.admin_token,
                &json!({ "user_id": user_id, "role": role }),
            )
            .await;
        reply.assert_status(201)["key"]
            .as_str()
            .expect("key string")
            .to_owned()
    }

    pub async fn create_user_key(&self, user_id: &str) -> String {
        self.create_key(user_id, "user").await
    }

    /// `POST /v1/resources` as admin, expecting 201; returns the resource.
    pub async fn create_resource(&self, body: Value) -> Value {
        let reply = self
            .post_json("/v1/resources", &self.admin_token, &body)
            .await;
        reply.assert_status(201).clone()
    }

    /// A new always-open UTC resource with the given capacity; returns its id.
    pub async fn new_resource(&self, capacity: u32) -> String {
        id_of(&self.create_resource(resource_body(capacity)).await)
    }

    pub async fn create_reservation(&self, token: &str, body: &Value) -> Reply {
        self.post_json("/v1/reservations", token, body).await
    }

    /// Books `[starts_at, ends_at)` as `token`, expecting 201; returns the reservation.
    pub async fn book(
        &self,
        token: &str,
        resource_id: &str,
        starts_at: &str,
        ends_at: &str,
    ) -> Value {
        let reply = self
            .create_reservation(token, &reservation_body(resource_id, starts_at, ends_at))
            .await;
        reply.assert_status(201).clone()
    }

    pub async fn get_reservation(&self, token: &str, id: &str) -> Reply {
        self.get(&format!("/v1/reservations/{id}"), token).await
    }

    pub async fn patch_reservation(&self, token: &str, id: &str, body: &Value) -> Reply {
        self.patch_json(&format!("/v1/reservations/{id}"), token, body)
            .await
    }

    pub async fn cancel_reservation(&self, token: &str, id: &str) -> Reply {
        self.call(
            Method::POST,
            &format!("/v1/reservations/{id}/cancel"),
            token,
            None,
            &[],
        )
        .await
    }

    pub async fn list_reservations(&self, token: &str, query: &[(&str, &str)]) -> Reply {
        self.get_query("/v1/reservations", token, query).await
    }

    /// Follows `next_cursor` from the first page to the last; returns every
    /// item in the order seen.
    pub async fn list_all(&self, path: &str, token: &str, query: &[(&str, &str)]) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut params = query.to_vec();
            if let Some(cursor) = &cursor {
                params.push(("cursor", cursor));
            }
            let reply = self.get_query(path, token, &params).await;
            let page = reply.assert_status(200);
            items.extend(
                page["items"]
                    .as_array()
                    .expect("items array")
                    .iter()
                    .cloned(),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => {
                    assert!(page["next_cursor"].is_null(), "next_cursor: {}", reply.text);
                    return items;
                }
            }
        }
        panic!("pagination of {path} never ended");
    }

    pub async fn availability(&self, resource_id: &str, query: &[(&str, &str)]) -> Reply {
        self.get_query(
            &format!("/v1/resources/{resource_id}/availability"),
            &self.admin_token,
            query,
        )
        .await
    }
}

pub async fn send(builder: RequestBuilder) -> Reply {
    Reply::read(builder.send().await.expect("request failed")).await
}

/// The ids of a list of JSON objects.
pub fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(id_of).collect()
}

/// A fresh server on a fresh data directory, with `configure` applied to the
/// test configuration (admin token set) before it starts.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("create temp data dir");
    spawn_app_on_with(data_dir, configure).await
}

/// [`spawn_app_on`] with `configure` applied to the configuration.
pub async fn spawn_app_on_with(data_dir: TempDir, configure: impl FnOnce(&mut Config)) -> TestApp {
    // Quotas and request rates would trip the many bookings tests make;
    // the rate-limit tests turn them back on.
    let mut config = Config::with_data_dir(data_dir.path()).without_limits();
    config.admin_token = Some(ADMIN_TOKEN.to_owned());
    configure(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind listener");
    let port = listener.local_addr().unwrap().port();
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(reservoir::launch(config, listener, async move {
        let _ = stopped.await;
    }));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        admin_token: ADMIN_TOKEN.to_owned(),
        client: Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("build HTTP client"),
        data_dir,
        shutdown,
        server,
    }
}
