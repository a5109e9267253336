//! Webhooks against real HTTP receivers the tests start: every change arrives signed, once per
//! `webhook-id`, in version order — after 1,000 writes, beside a receiver that answers 500 and one
//! that never answers, and across a `kill -9` of the server mid-run; redelivery on request; who
//! may register what; private addresses refused unless allowed.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{ChildServer, TestServer};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Value,
    raw: Bytes,
}

impl Received {
    fn version(&self) -> u64 {
        self.body["data"]["version"].as_u64().unwrap()
    }
}

/// A webhook receiver on a port of its own: records every request, answers `answer` (0: never)
/// after `delay_ms`.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    answer: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU16>,
    url: String,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, raw: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    receiver.got.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        raw,
    });
    let delay = receiver.delay_ms.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(u64::from(delay))).await;
    match receiver.answer.load(Ordering::SeqCst) {
        0 => std::future::pending().await,
        code => StatusCode::from_u16(code).unwrap(),
    }
}

async fn receiver(answer: u16) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = Receiver {
        url: format!("http://{}/hook", listener.local_addr().unwrap()),
        ..Receiver::default()
    };
    receiver.answer.store(answer, Ordering::SeqCst);
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    receiver
}

impl Receiver {
    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Wait until `version` of the campaign has arrived.
    async fn wait_for(&self, version: u64, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.got();
            if got.iter().any(|r| r.version() == version) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "version {version} did not arrive within {within:?}; last: {:?}",
                got.last().map(Received::version)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Every delivery verifies with `secret`, as a Standard Webhooks receiver checks it.
fn verify(secret: &str, received: &Received) {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", received.id, received.timestamp).as_bytes());
    mac.update(&received.raw);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(received.signature, expected, "the signature verifies");
    assert_eq!(received.body["type"], "campaign:state:v1:success");
    assert_eq!(
        received.body["data"]["event_id"].as_str(),
        Some(received.id.as_str()),
        "webhook-id is the change's event id"
    );
}

/// The versions in the order they first arrived, and how many arrived more than once.
fn first_arrivals(got: &[Received]) -> (Vec<u64>, usize) {
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    let mut again = 0;
    for received in got {
        if seen.insert(received.id.clone()) {
            order.push(received.version());
        } else {
            again += 1;
        }
    }
    (order, again)
}

async fn post(base: &str, token: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(base: &str, token: &str, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn write_titles(base: &str, token: &str, campaign: &str, range: std::ops::Range<u32>) {
    let client = reqwest::Client::new();
    for i in range {
        let response = client
            .patch(format!("{base}/api/campaigns/{campaign}"))
            .bearer_auth(token)
            .json(&json!({"updates": {"title": format!("Title {i}")}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "write {i}");
    }
}

const ALLOW_LOOPBACK: [&str; 2] = ["--webhook-allow-hosts", "127.0.0.1"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_changes_arrive_signed_once_and_in_order_beside_failing_receivers() {
    let server =
        TestServer::start_with(&[&ALLOW_LOOPBACK[..], &["--webhook-timeout-secs", "1"]].concat())
            .await;
    let base = server.url("");
    let (_, token) = server.sign_in("Ann").await;
    let (status, _) = post(
        &base,
        &token,
        "/api/campaigns",
        json!({"campaign_id": "hooked", "title": "H"}),
    )
    .await;
    assert_eq!(status, 201);
    let (good, failing, hanging) = (receiver(204).await, receiver(500).await, receiver(0).await);
    let mut secret = String::new();
    let mut ids = Vec::new();
    for target in [&good, &failing, &hanging] {
        let (status, made) = post(
            &base,
            &token,
            "/api/webhooks",
            json!({"url": target.url, "campaign": "hooked"}),
        )
        .await;
        assert_eq!(status, 201, "{made}");
        assert!(made["secret"].as_str().unwrap().starts_with("whsec_"));
        if secret.is_empty() {
            secret = made["secret"].as_str().unwrap().to_owned();
        }
        ids.push(made["webhook"]["id"].as_str().unwrap().to_owned());
    }

    let started = Instant::now();
    write_titles(&base, &token, "hooked", 0..1000).await;
    let writing = started.elapsed();
    let got = good.wait_for(1001, Duration::from_secs(60)).await;
    println!(
        "1000 writes in {writing:?}; the last delivered {:?} after the first write",
        started.elapsed()
    );
    let (order, again) = first_arrivals(&got);
    assert_eq!(
        order,
        (2..=1001).collect::<Vec<_>>(),
        "every change, in version order"
    );
    assert_eq!(again, 0, "nothing was sent twice");
    for received in &got {
        verify(&secret, received);
    }

    // The failing receivers were tried, are being retried, and held nobody up.
    let (_, hooks) = get(&base, &token, "/api/webhooks?campaign=hooked").await;
    let log = |id: &str| {
        hooks
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == id)
            .unwrap()["deliveries"][0]
            .clone()
    };
    let refused = log(&ids[1]);
    assert_eq!(refused["state"], "retrying", "{refused}");
    assert_eq!(refused["last_status"], 500);
    assert_eq!(refused["version"], 2, "later changes wait for the first");
    let silent = log(&ids[2]);
    assert_eq!(silent["state"], "retrying", "{silent}");
    assert_eq!(silent["last_error"], "no answer within 1 s");
    assert!(failing.got().iter().all(|r| r.version() == 2));

    // The failing one recovers: it gets everything, in order.
    failing.answer.store(200, Ordering::SeqCst);
    let recovered = failing.wait_for(1001, Duration::from_secs(120)).await;
    let (order, _) = first_arrivals(&recovered);
    assert_eq!(order, (2..=1001).collect::<Vec<_>>());

    // Sent again on request, with its first webhook-id.
    let before = good.got().len();
    let (status, answer) = post(
        &base,
        &token,
        &format!("/api/webhooks/{}/redeliver", ids[0]),
        json!({"campaign_id": "hooked", "version": 7}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while good.got().len() == before {
        assert!(Instant::now() < deadline, "the redelivery did not arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = good.got()[before].clone();
    assert_eq!(again.version(), 7);
    assert_eq!(again.id, got[5].id);

    // Removed: nothing more arrives.
    let removed = reqwest::Client::new()
        .delete(format!("{base}/api/webhooks/{}", ids[0]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    // An attempt already under way may finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = good.got().len();
    write_titles(&base, &token, "hooked", 1000..1003).await;
    failing.wait_for(1004, Duration::from_secs(10)).await;
    assert_eq!(good.got().len(), after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_due_at_a_kill_9_arrive_after_the_restart_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("RALLY_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")];
    let server = ChildServer::spawn(dir.path(), &env);
    let base = server.url("");
    let (_, token) = common::sign_in(server.addr, "Ann").await;
    let (status, _) = post(
        &base,
        &token,
        "/api/campaigns",
        json!({"campaign_id": "durable", "title": "D"}),
    )
    .await;
    assert_eq!(status, 201);
    let target = receiver(200).await;
    // A slow receiver: deliveries are still under way when the writes are done.
    target.delay_ms.store(10, Ordering::SeqCst);
    let (status, made) = post(
        &base,
        &token,
        "/api/webhooks",
        json!({"url": target.url, "campaign": "durable"}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let secret = made["secret"].as_str().unwrap().to_owned();

    // Killed while changes are still being sent.
    write_titles(&base, &token, "durable", 0..500).await;
    target.wait_for(100, Duration::from_secs(30)).await;
    server.kill();
    let at_kill = target.got().len();
    let server = ChildServer::spawn(dir.path(), &env);
    let base = server.url("");
    write_titles(&base, &token, "durable", 500..1000).await;
    let got = target.wait_for(1001, Duration::from_secs(60)).await;
    let (order, again) = first_arrivals(&got);
    println!("{at_kill} delivered before the kill; {again} sent again after it (same webhook-id)");
    assert!(
        at_kill < 500,
        "the kill came mid-run: {at_kill} of 500 had arrived"
    );
    assert_eq!(
        order,
        (2..=1001).collect::<Vec<_>>(),
        "every change, in version order"
    );
    assert!(
        again <= 1,
        "at most the delivery cut by the kill is sent again: {again}"
    );
    for received in &got {
        verify(&secret, received);
    }
    server.kill();
}

#[tokio::test]
async fn only_owners_and_admins_register_and_private_addresses_need_allowing() {
    let strict = TestServer::start().await;
    let base = strict.url("");
    let (_, ann) = strict.sign_in("Ann").await;
    let (_, bob) = strict.sign_in("Bob").await;
    post(
        &base,
        &ann,
        "/api/campaigns",
        json!({"campaign_id": "mine", "title": "M"}),
    )
    .await;
    let target = receiver(200).await;
    let (status, body) = post(
        &base,
        &ann,
        "/api/webhooks",
        json!({"url": target.url, "campaign": "mine"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a public address"),
        "{body}"
    );
    for (url, events) in [
        ("ftp://x.example", json!([])),
        ("https://x.example", json!(["everything"])),
    ] {
        let (status, body) = post(
            &base,
            &ann,
            "/api/webhooks",
            json!({"url": url, "campaign": "mine", "events": events}),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid")),
            "{body}"
        );
    }

    let open = TestServer::start_with(&ALLOW_LOOPBACK).await;
    let base = open.url("");
    let (_, ann) = open.sign_in("Ann").await;
    let (_, bob_token) = open.sign_in("Bob").await;
    post(
        &base,
        &ann,
        "/api/campaigns",
        json!({"campaign_id": "mine", "title": "M"}),
    )
    .await;
    let (status, _) = post(
        &base,
        &bob_token,
        "/api/webhooks",
        json!({"url": target.url, "campaign": "mine"}),
    )
    .await;
    assert_eq!(status, 403, "only an owner");
    let (status, _) = post(&base, &ann, "/api/webhooks", json!({"url": target.url})).await;
    assert_eq!(status, 403, "every campaign: admins only");
    let (status, made) = post(
        &base,
        &ann,
        "/api/webhooks",
        json!({"url": target.url, "campaign": "mine", "events": ["config"]}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["webhook"]["id"].as_str().unwrap();
    assert_eq!(get(&base, &bob_token, "/api/webhooks").await.1, json!([]));
    let (status, _) = post(
        &base,
        &bob_token,
        &format!("/api/webhooks/{id}/redeliver"),
        json!({"campaign_id": "mine", "version": 1}),
    )
    .await;
    assert_eq!(status, 404, "not Bob's");
    // Only the kinds asked for: a title change is not sent, a config change is.
    write_titles(&base, &ann, "mine", 0..3).await;
    let (status, _) = post(
        &base,
        &ann,
        "/api/campaigns/mine/config",
        json!({"section": "ui_content", "values": {"headline": "Hi"}}),
    )
    .await;
    assert_eq!(status, 200);
    let got = target.wait_for(5, Duration::from_secs(10)).await;
    assert_eq!(got.iter().map(Received::version).collect::<Vec<_>>(), [5]);

    // Ann hands the campaign over; Bob makes her an editor: her endpoint pauses.
    let (bob_id, _) = (
        get(&base, &bob_token, "/api/session").await.1["user"]["user_id"]
            .as_str()
            .unwrap()
            .to_owned(),
        (),
    );
    let (_, invite) = post(
        &base,
        &ann,
        "/api/campaigns/mine/invites",
        json!({"role": "owner"}),
    )
    .await;
    let accept = format!("/api/invites/{}/accept", invite["token"].as_str().unwrap());
    assert_eq!(post(&base, &bob_token, &accept, json!({})).await.0, 200);
    assert_eq!(
        post(
            &base,
            &ann,
            "/api/campaigns/mine/handover",
            json!({"user_id": bob_id})
        )
        .await
        .0,
        200
    );
    let ann_id = get(&base, &ann, "/api/session").await.1["user"]["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = post(
        &base,
        &bob_token,
        "/api/campaigns/mine/members",
        json!({"user_id": ann_id, "role": "editor"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = post(
        &base,
        &bob_token,
        "/api/campaigns/mine/config",
        json!({"section": "ui_content", "values": {"headline": "Bob's"}}),
    )
    .await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, hooks) = get(&base, &bob_token, "/api/webhooks?campaign=mine").await;
        if hooks[0]["deliveries"][0]["state"] == "paused" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the endpoint did not pause: {hooks}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        target.got().len(),
        1,
        "nothing more was sent to Ann's address"
    );
    let (status, _) = post(
        &base,
        &ann,
        &format!("/api/webhooks/{id}/redeliver"),
        json!({"campaign_id": "mine", "version": 5}),
    )
    .await;
    assert_eq!(status, 404, "nor can she have it sent again");
    drop(bob);
}
