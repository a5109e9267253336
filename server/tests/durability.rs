//! A success reply means the change survives `kill -9`: a child `rally` process is killed in the
//! middle of a stream of writes, restarted on the same data directory, and must hold every change
//! it acknowledged.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_change_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::ChildServer::spawn(
        dir.path(),
        &[
            ("RALLY_WRITE_RATE", "100000"),
            ("RALLY_HISTORY_LEN", "100000"),
        ],
    );
    let addr = server.addr;
    let (_, token) = common::sign_in(addr, "Writer").await;
    let mut client = common::connect(addr, Some(&token)).await;
    client.create_campaign("crash", "Before the crash").await;

    // Keep writes in flight, pipelined, and kill the server while they are.
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.kill(); // SIGKILL
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

    let server = common::ChildServer::spawn(dir.path(), &[("RALLY_HISTORY_LEN", "100000")]);
    let addr = server.addr;
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
    server.kill();
}
