//! The HTTP surface of a real server: health, readiness, API errors, SSR pages.

mod common;

use common::TestServer;
use serde_json::Value;

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("request succeeds");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn healthz_says_alive() {
    let server = TestServer::start().await;
    let (status, body) = get(&server.url("/healthz")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "alive"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_lists_each_check() {
    let server = TestServer::start().await;
    let (status, body) = get(&server.url("/readyz")).await;
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["status"], "ready");
    let checks = report["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "websocket_gateway",
            "state_consistency",
            "event_bus",
            "subscriber_channels",
            "data_dir",
            "store"
        ]
    );
    assert!(checks.iter().all(|c| c["status"] == "ok"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_fails_when_the_data_dir_is_gone() {
    let server = TestServer::start().await;
    assert_eq!(get(&server.url("/readyz")).await.0, 200);
    std::fs::remove_dir_all(server.dir.path().join("data")).unwrap();
    let (status, body) = get(&server.url("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["status"], "not_ready");
    let data_dir = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "data_dir")
        .unwrap();
    assert_eq!(data_dir["status"], "failing");
    assert!(data_dir["detail"]
        .as_str()
        .unwrap()
        .contains("not writable"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_redis_stops_the_start_with_a_clear_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let config = common::test_config(
        dir.path(),
        &["--redis-url", &format!("redis://127.0.0.1:{port}")],
    );
    let error = rally::Rally::open(config)
        .await
        .err()
        .expect("no Redis, no start");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("cannot reach Redis at 127.0.0.1:{port}")),
        "{message}"
    );
}

#[tokio::test]
async fn readyz_pings_the_redis_bus() {
    // A real Redis (scripts/test starts one and exports its URL).
    let url =
        std::env::var("RALLY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let server = TestServer::start_with(&["--redis-url", &url]).await;
    let (status, body) = get(&server.url("/readyz")).await;
    assert_eq!(status, 200, "needs a Redis at {url}: {body}");
    assert!(body.contains("Redis PING answered PONG"), "{body}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_api_paths_get_json_404s() {
    let server = TestServer::start().await;
    let (status, body) = get(&server.url("/api/no/such/thing")).await;
    assert_eq!(status, 404);
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "not_found");
    assert_eq!(
        error["error"]["message"],
        "no API route for GET /api/no/such/thing"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn landing_page_is_server_rendered_with_hydration_scripts() {
    let server = TestServer::start().await;
    let (status, body) = get(&server.url("/")).await;
    assert_eq!(status, 200);
    assert!(body.contains("Campaign id"), "landing content missing");
    assert!(
        body.contains("data-hydrated=\"false\""),
        "server render is not yet hydrated"
    );
    assert!(
        body.contains("/pkg/rally.js"),
        "hydration script is referenced"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_pages_get_the_apps_404_page() {
    let server = TestServer::start().await;
    let (status, body) = get(&server.url("/no/such/page")).await;
    assert_eq!(status, 404);
    assert!(body.contains("Page not found"), "{body}");
    server.stop().await.unwrap();
}
