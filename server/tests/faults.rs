//! The fault suite: what a hostile or broken crowd does to a server process, measured on the
//! process itself (its memory, its sockets, its answers). Each test prints its numbers.
//!
//! The rest of the fault suite lives beside the features it protects: `kill -9` under write
//! load in durability.rs (every acknowledged write present after restart), Redis killed and
//! restarted under load with two instances in multi_instance.rs, slow consumers in campaigns.rs
//! and hardening.rs.

mod common;

use std::time::{Duration, Instant};

use common::ChildServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn metric(server: &ChildServer, name: &str) -> f64 {
    let body = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// 40,000 snapshots of campaigns that do not exist, over 8 anonymous sockets: nothing stays
/// loaded, and the process's memory stays within 20 MB of where it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_missing_campaigns_leave_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn(dir.path(), &[]);
    let pid = server.child.id();
    // Warm up allocator and code paths, then take the baseline.
    let mut warm = common::connect(server.addr, None).await;
    for n in 0..200 {
        warm.request(
            "campaign:snapshot:v1:requested",
            json!({"campaign_id": format!("warm-{n}")}),
            &format!("w{n}"),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let started = Instant::now();
    let mut readers = Vec::new();
    for socket in 0..8 {
        let addr = server.addr;
        readers.push(tokio::spawn(async move {
            let mut client = common::connect(addr, None).await;
            // Pipelined: 5,000 requests, then 5,000 replies.
            for n in 0..5_000 {
                let request = json!({
                    "type": "campaign:snapshot:v1:requested",
                    "payload": {"campaign_id": format!("missing-{socket}-{n}")},
                    "request_id": format!("r{n}"),
                });
                client
                    .socket
                    .feed(Message::text(request.to_string()))
                    .await
                    .unwrap();
            }
            client.socket.flush().await.unwrap();
            let mut not_found = 0;
            while not_found < 5_000 {
                let reply = client.recv_json().await;
                if reply["payload"]["code"] == "not_found" {
                    not_found += 1;
                }
            }
            not_found
        }));
    }
    let mut answered = 0;
    for reader in readers {
        answered += reader.await.unwrap();
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = metric(&server, "rally_campaigns_loaded").await;
    let after = rss_kib(pid);
    let grew = after.saturating_sub(before);
    println!(
        "{answered} snapshots of missing campaigns in {:.1} s; RSS {} → {} KiB (+{grew} KiB); {loaded} campaigns loaded",
        took.as_secs_f64(),
        before,
        after
    );
    assert_eq!(answered, 40_000);
    assert_eq!(loaded, 0.0);
    assert!(grew <= 20 * 1024, "RSS grew by {grew} KiB");
    assert_eq!(server.terminate(), Some(0));
}

/// 10,000 WebSockets that do nothing: each costs the server at most 8 KiB, and the idle rule
/// closes every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_are_cheap_and_reaped() {
    const SOCKETS: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn(
        dir.path(),
        &[
            ("RALLY_MAX_CONNECTIONS", "20000"),
            ("RALLY_WS_IDLE_SECS", "45"),
        ],
    );
    let pid = server.child.id();
    // One connection first, so per-connection numbers exclude first-use costs.
    let first = common::connect(server.addr, None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);
    let opening = Instant::now();
    let mut sockets = Vec::with_capacity(SOCKETS);
    for chunk in 0..(SOCKETS / 500) {
        let mut batch = Vec::new();
        for _ in 0..500 {
            let url = format!("ws://{}/ws", server.addr);
            batch.push(tokio::spawn(async move {
                tokio_tungstenite::connect_async(url).await.map(|(s, _)| s)
            }));
        }
        for opening in batch {
            sockets.push(
                opening
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("socket in batch {chunk}: {e}")),
            );
        }
    }
    let opened = opening.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open = metric(&server, "rally_websocket_connections_open").await;
    let after = rss_kib(pid);
    let per_socket = (after.saturating_sub(before)) as f64 / SOCKETS as f64;
    println!(
        "{SOCKETS} idle sockets opened in {:.1} s; RSS {before} → {after} KiB: {per_socket:.2} KiB each; {open} open",
        opened.as_secs_f64()
    );
    assert_eq!(open as usize, SOCKETS + 1);
    assert!(per_socket <= 8.0, "{per_socket:.2} KiB per idle socket");

    // The idle rule: every one is closed with 4010 (reading them lets tungstenite answer pings).
    let reaping = Instant::now();
    let mut reaped = 0;
    let mut readers = Vec::new();
    for socket in sockets.into_iter().chain(std::iter::once(first.socket)) {
        readers.push(tokio::spawn(async move {
            let mut socket = socket;
            loop {
                match tokio::time::timeout(Duration::from_secs(60), socket.next()).await {
                    Ok(Some(Ok(Message::Close(frame)))) => {
                        return frame.map(|f| u16::from(f.code));
                    }
                    Ok(Some(Ok(_))) => continue,
                    _ => return None,
                }
            }
        }));
    }
    for reader in readers {
        if reader.await.unwrap() == Some(4010) {
            reaped += 1;
        }
    }
    println!(
        "{reaped} closed as idle (4010) within {:.1} s",
        reaping.elapsed().as_secs_f64()
    );
    assert_eq!(reaped, SOCKETS + 1);
    assert_eq!(
        metric(&server, "rally_websocket_connections_open").await,
        0.0
    );
    assert_eq!(server.terminate(), Some(0));
}

/// Slowloris: 1,000 connections that dribble their headers do not keep the server from
/// answering, and all are closed by the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off() {
    const CONNECTIONS: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn(dir.path(), &[("RALLY_HEADER_READ_TIMEOUT_SECS", "2")]);
    let mut slow = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Keep dribbling one header line a second; the server still answers others at once.
    let started = Instant::now();
    let healthy = reqwest::get(server.url("/healthz")).await.unwrap();
    let answered_in = started.elapsed();
    assert_eq!(healthy.status(), 200);
    let mut closed = 0;
    let deadline = Instant::now() + Duration::from_secs(6);
    for stream in &mut slow {
        let _ = stream.write_all(b"X-Slow: 1\r\n").await;
    }
    for stream in &mut slow {
        let mut buf = [0u8; 256];
        let left = deadline.saturating_duration_since(Instant::now());
        loop {
            match tokio::time::timeout(left, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed += 1;
                    break;
                }
                Ok(Ok(_)) => continue, // a 408 or similar before the close
                Err(_) => break,
            }
        }
    }
    println!(
        "{CONNECTIONS} slow-header connections: /healthz answered in {:.1} ms, {closed} closed by the header timeout within {:.1} s",
        answered_in.as_secs_f64() * 1000.0,
        started.elapsed().as_secs_f64()
    );
    assert!(answered_in < Duration::from_millis(500));
    assert_eq!(closed, CONNECTIONS);
    assert_eq!(server.terminate(), Some(0));
}
