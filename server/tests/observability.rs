//! Metrics, readiness and log discipline of a real `rally` process.

mod common;

use std::time::Duration;

use common::ChildServer;
use serde_json::{json, Value};

/// The value of one series (exact line prefix match, e.g. `rally_changes_applied_total`).
fn series(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok()).flatten()
        })
}

async fn scrape(server: &ChildServer) -> String {
    let response = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_a_scripted_session_did() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn(
        dir.path(),
        &[
            ("RALLY_WRITE_RATE", "1000"),
            ("RALLY_METRICS_CAMPAIGNS", "true"),
        ],
    );
    let (_, token) = common::sign_in(server.addr, "Metrics").await;
    let mut owner = common::connect(server.addr, Some(&token)).await;
    owner.create_campaign("observed", "Observed").await;
    let mut viewers = Vec::new();
    for _ in 0..3 {
        let mut viewer = common::connect(server.addr, None).await;
        viewer.subscribe("observed", None).await;
        viewers.push(viewer);
    }
    for n in 0..10 {
        let updates = if n % 2 == 0 {
            json!({"title": format!("t{n}")})
        } else {
            json!({"title": format!("t{n}"), "status": "active", "description": format!("d{n}")})
        };
        let reply = owner.update("observed", updates, &format!("u{n}")).await;
        assert_eq!(reply["type"], "campaign:update:v1:success");
    }
    let refused = owner.update("observed", json!({"title": ""}), "bad").await;
    assert_eq!(refused["payload"]["code"], "invalid");
    for viewer in &mut viewers {
        for _ in 0..10 {
            viewer.next_state_event().await;
        }
    }

    let metrics = scrape(&server).await;
    assert_eq!(
        series(&metrics, "rally_websocket_connections_total"),
        Some(4.0)
    );
    assert_eq!(
        series(&metrics, "rally_websocket_connections_open"),
        Some(4.0)
    );
    assert_eq!(series(&metrics, "rally_changes_applied_total"), Some(10.0));
    assert_eq!(series(&metrics, "rally_update_fields_count"), Some(10.0));
    assert_eq!(
        series(&metrics, "rally_update_fields_sum"),
        Some(5.0 * 1.0 + 5.0 * 3.0)
    );
    assert_eq!(
        series(&metrics, "rally_write_ack_seconds_count"),
        Some(10.0)
    );
    assert_eq!(
        series(
            &metrics,
            "rally_campaign_subscribers{campaign=\"observed\"}"
        ),
        Some(3.0)
    );
    assert_eq!(series(&metrics, "rally_campaigns_loaded"), Some(1.0));
    let delivered = series(&metrics, "rally_delivery_seconds_count").unwrap();
    assert!(
        (1.0..=30.0).contains(&delivered),
        "delivery latency sampled per batch: {delivered}"
    );
    assert!(series(&metrics, "rally_subscriber_buffer_used_count").unwrap() >= 1.0);
    assert!(metrics.contains("# TYPE rally_write_ack_seconds histogram"));
    assert!(metrics.contains("rally_write_ack_seconds_bucket{le=\"0.005\"}"));

    // Three leave politely (close handshake), one just drops its TCP connection.
    for mut viewer in viewers {
        viewer.socket.close(None).await.unwrap();
    }
    drop(owner);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = scrape(&server).await;
    assert_eq!(
        series(
            &metrics,
            "rally_websocket_disconnects_total{reason=\"broken\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        series(
            &metrics,
            "rally_websocket_disconnects_total{reason=\"client_left\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        series(&metrics, "rally_websocket_connections_open"),
        Some(0.0)
    );
    assert_eq!(
        series(
            &metrics,
            "rally_campaign_subscribers{campaign=\"observed\"}"
        ),
        Some(0.0)
    );
    println!("--- /metrics after the scripted session (excerpt) ---");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("rally_") && !l.contains("_bucket"))
    {
        println!("{line}");
    }
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_lifecycle_lines_are_logged_during_a_busy_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn(dir.path(), &[("RALLY_WRITE_RATE", "10000")]);
    let (_, token) = common::sign_in(server.addr, "Chatty").await;
    let mut owner = common::connect(server.addr, Some(&token)).await;
    owner.create_campaign("quiet", "Quiet").await;
    for round in 0..5 {
        let mut viewers = Vec::new();
        for _ in 0..4 {
            let mut viewer = common::connect(server.addr, None).await;
            viewer.subscribe("quiet", None).await;
            viewers.push(viewer);
        }
        for n in 0..60 {
            owner
                .update(
                    "quiet",
                    json!({"title": format!("r{round} n{n}")}),
                    &format!("u{round}-{n}"),
                )
                .await;
        }
        let reply = viewers[0]
            .request(
                "campaign:unsubscribe:v1:requested",
                json!({"campaign_id": "quiet"}),
                "un",
            )
            .await;
        assert_eq!(reply["type"], "campaign:unsubscribe:v1:success");
        owner.update("quiet", json!({"title": ""}), "refused").await; // a refusal is routine too
        owner.send_text("not json").await; // and so is garbage from a client
        owner
            .recv_until(|f| f["type"] == "system:frame:v1:failed")
            .await;
        drop(viewers);
    }
    let _ = reqwest::get(server.url("/readyz")).await.unwrap();
    let _ = reqwest::get(server.url("/metrics")).await.unwrap();
    drop(owner);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.log.clone();
    assert_eq!(server.terminate(), Some(0));
    let lines = common::level_and_message(log.lock().unwrap().iter());
    assert_eq!(lines, ["INFO rally started", "INFO rally shutting down", "INFO rally stopped"], "300+ updates, 20 connects, subscribes, unsubscribes and refusals must log nothing at the default level");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_redis_bus_down_and_back() {
    let redis_dir = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let start_redis = || {
        std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(redis_dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/setup test)")
    };
    let mut redis = start_redis();
    let url = format!("redis://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn(dir.path(), &[("RALLY_REDIS_URL", &url)]);
    let ready = |expect: u16| {
        let url = server.url("/readyz");
        async move {
            for _ in 0..50 {
                let response = reqwest::get(&url).await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                if status == expect {
                    return body;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("/readyz never answered {expect}");
        }
    };
    let body = ready(200).await;
    let bus = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "event_bus")
        .unwrap()
        .clone();
    assert_eq!(bus["status"], "ok", "{body}");

    redis.kill().unwrap();
    redis.wait().unwrap();
    let body = ready(503).await;
    let bus = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "event_bus")
        .unwrap()
        .clone();
    assert_eq!(bus["status"], "failing");
    assert_eq!(body["status"], "not_ready");

    let mut redis = start_redis();
    ready(200).await;
    assert_eq!(server.terminate(), Some(0));
    redis.kill().unwrap();
    redis.wait().unwrap();
}

#[tokio::test]
async fn the_ops_feed_is_for_admins_and_streams_samples() {
    // Sign in first, then restart as configured with the admin's id (sessions are kept).
    let dir = tempfile::tempdir().unwrap();
    let first = common::TestServer::start_in(&dir, &[]).await;
    let (admin_id, admin_token) = first.sign_in("Admin").await;
    let (_, other_token) = first.sign_in("Someone").await;
    first.stop().await.unwrap();

    let server = common::TestServer::start_in(&dir, &["--admins", &admin_id]).await;
    let mut anonymous = server.connect().await;
    let reply = anonymous
        .request("ops:subscribe:v1:requested", json!({}), "o1")
        .await;
    assert_eq!(reply["payload"]["code"], "forbidden");
    let mut other = server.connect_as(&other_token).await;
    let reply = other
        .request("ops:subscribe:v1:requested", json!({}), "o2")
        .await;
    assert_eq!(reply["payload"]["code"], "forbidden");
    assert!(reply["payload"]["message"]
        .as_str()
        .unwrap()
        .contains("RALLY_ADMINS"));

    let mut admin = server.connect_as(&admin_token).await;
    let reply = admin
        .request("ops:subscribe:v1:requested", json!({}), "o3")
        .await;
    assert_eq!(reply["type"], "ops:subscribe:v1:success", "{reply}");
    assert!(reply["payload"]["samples"].is_array());
    let sample = admin
        .recv_until(|f| f["type"] == "ops:sample:v1:success")
        .await
        .pop()
        .unwrap();
    assert_eq!(sample["payload"]["bus"]["kind"], "in_process");
    assert!(sample["payload"]["connections"].as_u64().unwrap() >= 3);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_logged_at_debug_with_an_id_its_lines_carry_and_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn(dir.path(), &[("RUST_LOG", "rally=debug")]);
    let client = reqwest::Client::new();
    let signed = client
        .post(server.url("/api/session"))
        .json(&serde_json::json!({"display_name": "Ada"}))
        .send()
        .await
        .unwrap();
    let id = signed.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let token = signed.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // A token in a header and one in a query, an invite token in a path: none reaches the log.
    let missing = client
        .get(server.url("/api/campaigns/nope?token=query-secret-123"))
        .bearer_auth(&token)
        .header("x-request-id", "proxy-id-7")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["x-request-id"],
        "proxy-id-7",
        "a proxy's id is kept"
    );
    client
        .get(server.url("/api/invites/invite-secret-456"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let raw = server.log.lock().unwrap().clone();
    let lines: Vec<Value> = raw
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let answered = |id: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "request answered" && l["span"]["request_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no access line for {id}: {raw:#?}"))
    };
    let sign_in = answered(&id);
    assert_eq!(
        (
            &sign_in["level"],
            &sign_in["method"],
            &sign_in["path"],
            &sign_in["status"]
        ),
        (
            &json_str("DEBUG"),
            &json_str("POST"),
            &json_str("/api/session"),
            &Value::from(200)
        ),
        "{sign_in}"
    );
    assert!(sign_in["duration_ms"].as_f64().is_some(), "{sign_in}");
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "session started" && l["span"]["request_id"] == id.as_str()),
        "a line the request caused carries its id"
    );
    let miss = answered("proxy-id-7");
    assert_eq!(
        (&miss["path"], &miss["status"]),
        (&json_str("/api/campaigns/nope"), &Value::from(404))
    );
    assert!(lines
        .iter()
        .any(|l| l["message"] == "request answered" && l["path"] == "/api/invites/…"));
    let all = raw.join("\n");
    for secret in [token.as_str(), "query-secret-123", "invite-secret-456"] {
        assert!(!all.contains(secret), "{secret} reached the log");
    }
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_default_level_a_line_a_request_causes_carries_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn(dir.path(), &[]);
    let client = reqwest::Client::new();
    let signed: Value = client
        .post(server.url("/api/session"))
        .json(&serde_json::json!({"display_name": "Ada"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = signed["token"].as_str().unwrap();
    let created = client
        .post(server.url("/api/campaigns"))
        .bearer_auth(token)
        .json(&serde_json::json!({"campaign_id": "spring", "title": "Spring"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // Making a key is a lifecycle line (Info): written at the default level, inside the request.
    let made = client
        .post(server.url("/api/keys"))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": "Report", "access": "read", "campaigns": ["spring"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let raw = server.log.lock().unwrap().clone();
    let lines: Vec<Value> = raw
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let key_made = lines
        .iter()
        .find(|l| l["message"] == "API key made")
        .unwrap_or_else(|| panic!("no line for the key: {raw:#?}"));
    assert_eq!(key_made["level"], "INFO", "{key_made}");
    assert_eq!(key_made["span"]["request_id"], id.as_str(), "{key_made}");
    assert!(
        !lines.iter().any(|l| l["message"] == "request answered"),
        "access lines are Debug, not written by default"
    );
    server.kill();
}

fn json_str(text: &str) -> Value {
    Value::String(text.to_owned())
}
