//! A success reply means the change survives `kill -9`: a child `rally` process is killed in the
//! middle of a stream of writes, restarted on the same data directory, and must hold every change
//! it acknowledged.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const RALLY: &str = env!("CARGO_BIN_EXE_rally");

fn spawn_rally(dir: &std::path::Path) -> (Child, SocketAddr) {
    let site = dir.join("site");
    std::fs::create_dir_all(site.join("pkg")).unwrap();
    let mut cmd = Command::new(RALLY);
    for (key, _) in std::env::vars() {
        if key.starts_with("RALLY_") || key.starts_with("LEPTOS_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .env("RALLY_DATA_DIR", dir.join("data"))
        .env("RALLY_SITE_ROOT", site)
        .env("RALLY_ADDR", "127.0.0.1:0")
        .env("RALLY_LOG_FORMAT", "json")
        .env("RALLY_WRITE_RATE", "100000")
        .env("RALLY_HISTORY_LEN", "100000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    match started_addr(&mut stderr) {
        Some(addr) => {
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in stderr.lines() {});
            (child, addr)
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rally did not start within 20 s");
        }
    }
}

fn started_addr(stderr: &mut impl BufRead) -> Option<SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if stderr.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let record: serde_json::Value = serde_json::from_str(&line).ok()?;
        if record["message"] == "rally started" {
            return record["addr"].as_str()?.parse().ok();
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_change_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_rally(dir.path());
    let (_, token) = common::sign_in(addr, "Writer").await;
    let mut client = common::connect(addr, Some(&token)).await;
    client.create_campaign("crash", "Before the crash").await;

    // Keep writes in flight, pipelined, and kill the server while they are.
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    });
    let mut acked: HashMap<u64, String> = HashMap::new();
    let mut sent = 0u64;
    loop {
        let title = format!("title {sent}");
        client
            .send_json(json!({"type": "campaign:update:v1:requested", "payload": {"campaign_id": "crash", "updates": {"title": title}}, "request_id": format!("w{sent}")}))
            .await;
        sent += 1;
        use futures_util::StreamExt;
        match tokio::time::timeout(Duration::from_secs(5), client.socket.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) => {
                let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(reply["type"], "campaign:update:v1:success", "{reply}");
                acked.insert(reply["payload"]["version"].as_u64().unwrap(), title);
            }
            _ => break, // the server is gone
        }
    }
    killer.await.unwrap();
    assert!(
        acked.len() > 20,
        "only {} writes were acknowledged before the kill",
        acked.len()
    );

    let (mut child, addr) = spawn_rally(dir.path());
    let mut client = common::connect(addr, Some(&token)).await;
    let reply = client.subscribe("crash", Some(1)).await;
    let to_version = reply["payload"]["resume"]["to_version"].as_u64().unwrap();
    let highest_acked = *acked.keys().max().unwrap();
    assert!(
        to_version >= highest_acked,
        "acknowledged up to v{highest_acked}, restarted at v{to_version}"
    );
    let mut replayed = HashMap::new();
    for version in 2..=to_version {
        let event = client.next_state_event().await;
        assert_eq!(event["payload"]["version"], version);
        replayed.insert(
            version,
            event["payload"]["change"]["updates"]["title"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for (version, title) in &acked {
        assert_eq!(
            replayed.get(version),
            Some(title),
            "acknowledged v{version} was lost or changed"
        );
    }
    eprintln!("acknowledged {} writes before SIGKILL; all {} present after restart (store at v{to_version})", acked.len(), acked.len());
    child.kill().unwrap();
    child.wait().unwrap();
}
