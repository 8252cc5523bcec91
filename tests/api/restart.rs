use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use crate::helpers::{TestApp, at, id_of, reservation_body, spawn_app, spawn_app_on};

/// Every reservation and resource by path, with its ETag.
async fn snapshot(app: &TestApp, paths: &[String]) -> Vec<(Value, Option<String>)> {
    let mut out = Vec::new();
    for path in paths {
        let reply = app.get(path, &app.admin_token).await;
        out.push((
            reply.assert_status(200).clone(),
            reply.etag().map(str::to_owned),
        ));
    }
    out
}

#[tokio::test]
async fn data_versions_and_keys_survive_a_restart() {
    let app = spawn_app().await;
    let alice = app.create_user_key("alice").await;
    let resource = app.new_resource(1).await;
    let resource_path = format!("/v1/resources/{resource}");
    app.patch_json(
        &resource_path,
        &app.admin_token,
        &json!({"name": "renamed"}),
    )
    .await
    .assert_status(200);
    let changed = id_of(
        &app.book(&alice, &resource, &at("10:00"), &at("11:00"))
            .await,
    );
    app.patch_reservation(
        &alice,
        &changed,
        &json!({"notes": "changed", "metadata": {"n": 1}}),
    )
    .await
    .assert_status(200);
    let cancelled = id_of(
        &app.book(&alice, &resource, &at("12:00"), &at("13:00"))
            .await,
    );
    app.cancel_reservation(&alice, &cancelled)
        .await
        .assert_status(200);
    let untouched = id_of(
        &app.book(&app.admin_token, &resource, &at("14:00"), &at("15:00"))
            .await,
    );
    let paths = vec![
        resource_path.clone(),
        format!("/v1/reservations/{changed}"),
        format!("/v1/reservations/{cancelled}"),
        format!("/v1/reservations/{untouched}"),
    ];
    let before = snapshot(&app, &paths).await;
    let versions: Vec<&Value> = before.iter().map(|(body, _)| &body["version"]).collect();
    assert_eq!(versions, [&json!(2), &json!(2), &json!(2), &json!(1)]);

    let data_dir = app.stop().await;
    let app = spawn_app_on(data_dir).await;

    assert_eq!(snapshot(&app, &paths).await, before);
    let mine = app.list_all("/v1/reservations", &alice, &[]).await;
    let mut mine: Vec<String> = mine.iter().map(id_of).collect();
    mine.sort();
    let mut expected = vec![changed.clone(), cancelled.clone()];
    expected.sort();
    assert_eq!(mine, expected);
    // The capacity state survived as well.
    app.create_reservation(
        &app.admin_token,
        &reservation_body(&resource, &at("10:30"), &at("11:30")),
    )
    .await
    .assert_problem(409, "capacity-exceeded");
    app.book(&alice, &resource, &at("12:00"), &at("13:00"))
        .await;
    app.stop().await;
}

#[tokio::test]
async fn writes_after_a_restart_continue_the_version_sequence() {
    let app = spawn_app().await;
    let resource = app.new_resource(2).await;
    let id = id_of(
        &app.book(&app.admin_token, &resource, &at("10:00"), &at("11:00"))
            .await,
    );
    let app = spawn_app_on(app.stop().await).await;

    let reply = app
        .patch_reservation(&app.admin_token, &id, &json!({"party_size": 2}))
        .await;

    assert_eq!(reply.assert_status(200)["version"], 2);
    assert_eq!(reply.etag(), Some("\"2\""));
    let again = app
        .patch_reservation(&app.admin_token, &id, &json!({"notes": "third"}))
        .await;
    assert_eq!(again.assert_status(200)["version"], 3);
    assert_eq!(again.etag(), Some("\"3\""));
    app.stop().await;
}

/// The real binary as a child process, killed when dropped.
struct Server {
    child: Child,
    address: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary with no admin token on a free port.
    fn start(data_dir: &Path, log_dir: &Path, run: u32) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = log_dir.join(format!("run-{run}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_reservoir"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("RESERVOIR_ADMIN_TOKEN")
            .env_remove("RESERVOIR_LISTEN")
            .env_remove("RESERVOIR_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start the reservoir binary");
        Server {
            child,
            address: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Waits until the token file exists and the token is accepted; returns it.
    async fn wait_for_admin_token(
        &mut self,
        client: &reqwest::Client,
        token_file: &Path,
    ) -> String {
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "reservoir exited early with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok(token) = std::fs::read_to_string(token_file) {
                let token = token.trim().to_owned();
                let probe = client
                    .get(format!("{}/v1/resources", self.address))
                    .bearer_auth(&token)
                    .send()
                    .await;
                if let Ok(response) = probe
                    && response.status() == 200
                {
                    return token;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "reservoir never became ready: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

#[tokio::test]
async fn binary_generates_a_private_admin_token_and_keeps_it_across_restarts() {
    let data_dir = tempfile::tempdir().unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let token_file = data_dir.path().join("admin-token");
    let client = reqwest::Client::new();

    let mut first = Server::start(data_dir.path(), log_dir.path(), 1);
    let token = first.wait_for_admin_token(&client, &token_file).await;
    assert!(!token.is_empty());
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "admin-token mode {mode:o}");
    let file_before = std::fs::read(&token_file).unwrap();

    let created = client
        .post(format!("{}/v1/resources", first.address))
        .bearer_auth(&token)
        .json(&json!({"name": "binary room"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let resource: Value = created.json().await.unwrap();
    let rejected = client
        .get(format!("{}/v1/resources", first.address))
        .bearer_auth(format!("{token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 401);
    drop(first);

    let mut second = Server::start(data_dir.path(), log_dir.path(), 2);
    let token_again = second.wait_for_admin_token(&client, &token_file).await;

    assert_eq!(token_again, token);
    assert_eq!(std::fs::read(&token_file).unwrap(), file_before);
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "admin-token mode {mode:o}");
    let fetched = client
        .get(format!(
            "{}/v1/resources/{}",
            second.address,
            id_of(&resource)
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.json::<Value>().await.unwrap(), resource);
}
