//! API keys work on every node: a key issued on one node is shared through
//! PostgreSQL, and a node that does not know a key asks PostgreSQL.

use crate::{
    helpers::spawn_app_with,
    support::postgres::{ThrowawayPostgres, test_database},
};

fn node(config: &mut reservoir::Config, url: &str, id: &str) {
    config.postgres_url = Some(url.to_owned());
    config.node_id = Some(id.to_owned());
    config.sync_interval_ms = 50;
    config.sync_backoff_min_ms = 20;
    config.sync_backoff_max_ms = 300;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_issued_on_one_node_works_on_another_at_once() {
    let db = test_database().await;
    let a = spawn_app_with(|c| node(c, &db.url, "keys-a")).await;
    let b = spawn_app_with(|c| node(c, &db.url, "keys-b")).await;
    // Let node A create the schema before it issues keys.
    a.get("/v1/sync/status", &a.admin_token)
        .await
        .assert_status(200);
    for _ in 0..100 {
        if a.get("/v1/sync/status", &a.admin_token).await.body["last_success_at"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let key = a.create_user_key("roaming").await;

    b.get("/v1/resources", &key).await.assert_status(200);
    let unknown = b.get("/v1/resources", "rsv_not-a-key-anywhere").await;
    unknown.assert_problem(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_issued_while_postgres_is_down_is_shared_when_it_returns() {
    let mut postgres = ThrowawayPostgres::start().await;
    let url = postgres.url();
    postgres.stop().await;
    let a = spawn_app_with(|c| node(c, &url, "keys-down-a")).await;
    let b = spawn_app_with(|c| node(c, &url, "keys-down-b")).await;

    let key = a.create_user_key("patient").await;
    a.get("/v1/resources", &key).await.assert_status(200);
    b.get("/v1/resources", &key)
        .await
        .assert_problem(401, "unauthorized");

    postgres.start_again().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if b.get("/v1/resources", &key).await.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the key never reached node B"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
