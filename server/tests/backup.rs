//! Moving a store as an operator does, with the real `rally` binary: a backup taken while the
//! server runs and writes, the data directory wiped, the backup restored — and the embedded
//! store moved into a real Redis. Both round trips carry 1,000 campaigns, and each campaign's
//! state and whole history read back over HTTP must equal what they were.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::{ChildServer, TestRedis};
use serde_json::{json, Value};

const CAMPAIGNS: usize = 1_000;
/// Writes to the one long campaign: past two snapshots.
const LONG_WRITES: u64 = 250;

const SERVER_ENV: [(&str, &str); 2] = [
    ("RALLY_MAX_CAMPAIGNS_PER_USER", "100000"),
    ("RALLY_WRITE_RATE", "1000000"),
];

/// Run `rally <args>` on the data directory in `dir`; exit code, stdout, stderr.
fn rally(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rally"));
    for (key, _) in std::env::vars() {
        if key.starts_with("RALLY_") || key.starts_with("LEPTOS_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .env("RALLY_DATA_DIR", dir.join("data"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn signed_in(server: &ChildServer) -> Client {
        let http = reqwest::Client::new();
        let base = server.url("");
        let body: Value = http
            .post(format!("{base}/api/session"))
            .json(&json!({"display_name": "Ada"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = body["token"].as_str().expect("a session token").to_owned();
        Client { http, base, token }
    }

    /// The same person on another server (after a restore or a move).
    fn on(&self, server: &ChildServer) -> Client {
        Client {
            http: self.http.clone(),
            base: server.url(""),
            token: self.token.clone(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn write(&self, method: reqwest::Method, path: &str, body: Value) {
        let (status, text) = self.send(method, path, Some(body)).await;
        assert!(status == 200 || status == 201, "{path}: {status} {text}");
    }

    /// A campaign as anyone reading it over HTTP sees it: its state and its whole history.
    async fn read(&self, id: &str) -> (Value, String) {
        let (status, state) = self
            .send(reqwest::Method::GET, &format!("/api/campaigns/{id}"), None)
            .await;
        assert_eq!(status, 200, "{id}: {state}");
        let (status, log) = self
            .send(
                reqwest::Method::GET,
                &format!("/api/campaigns/{id}/history/export"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{id}: {log}");
        (serde_json::from_str(&state).unwrap(), log)
    }
}

/// An API key that reads campaign `c0001` (its token), made by Ada.
async fn read_key(ada: &Client) -> String {
    let (status, body) = ada
        .send(
            reqwest::Method::POST,
            "/api/keys",
            Some(json!({"name": "Report", "access": "read", "campaigns": ["c0001"]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// What a key sees of `c0001`: 200 and its state, or the refusal.
async fn read_with_key(server: &ChildServer, token: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(server.url("/api/campaigns/c0001"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The listing everyone sees.
async fn listing(ada: &Client) -> String {
    let (status, body) = ada.send(reqwest::Method::GET, "/api/campaigns", None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// How many campaigns a listing names.
fn listed_count(listing: &str) -> usize {
    let listing: Value = serde_json::from_str(listing).unwrap();
    listing
        .as_array()
        .or(listing["campaigns"].as_array())
        .expect("a list of campaigns")
        .len()
}

fn id(n: usize) -> String {
    format!("c{n:04}")
}

/// 1,000 campaigns with a few changes each, and one long one with snapshots.
async fn fill(ada: &Client) {
    for n in 0..CAMPAIGNS {
        let id = id(n);
        ada.write(
            reqwest::Method::POST,
            "/api/campaigns",
            json!({"campaign_id": id, "title": format!("Campaign {n}")}),
        )
        .await;
        ada.write(
            reqwest::Method::PATCH,
            &format!("/api/campaigns/{id}"),
            json!({"updates": {"status": "active", "description": format!("About {n}")}}),
        )
        .await;
    }
    ada.write(
        reqwest::Method::POST,
        "/api/campaigns",
        json!({"campaign_id": "long", "title": "Long"}),
    )
    .await;
    for n in 0..LONG_WRITES {
        ada.write(
            reqwest::Method::PATCH,
            "/api/campaigns/long",
            json!({"updates": {"title": format!("Long {n}")}}),
        )
        .await;
    }
}

/// Every campaign as read over HTTP.
async fn read_all(ada: &Client) -> BTreeMap<String, (Value, String)> {
    let mut all = BTreeMap::new();
    for id in (0..CAMPAIGNS).map(id).chain(["long".to_owned()]) {
        let read = ada.read(&id).await;
        all.insert(id, read);
    }
    all
}

/// The versions an NDJSON history export lists, in order.
fn versions(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|entry| entry["version"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writing_restores_every_campaign_and_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn(dir.path(), &SERVER_ENV);
    let ada = Client::signed_in(&server).await;
    fill(&ada).await;
    let key = read_key(&ada).await;
    let before = read_all(&ada).await;
    let listed = listing(&ada).await;
    let long_log = &before["long"].1;
    assert_eq!(
        versions(long_log).len() as u64,
        LONG_WRITES + 1,
        "the long campaign's whole log"
    );

    // The backup is taken while someone keeps writing to another campaign.
    ada.write(
        reqwest::Method::POST,
        "/api/campaigns",
        json!({"campaign_id": "busy", "title": "Busy"}),
    )
    .await;
    let writing = Arc::new(AtomicBool::new(true));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (writing, written, busy) = (writing.clone(), written.clone(), ada.on(&server));
        tokio::spawn(async move {
            let mut n = 0u64;
            while writing.load(Ordering::Relaxed) {
                busy.write(
                    reqwest::Method::PATCH,
                    "/api/campaigns/busy",
                    json!({"updates": {"title": format!("Busy {n}")}}),
                )
                .await;
                n += 1;
                written.store(n, Ordering::Relaxed);
            }
            n
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let backup = dir.path().join("rally.backup");
    let backup_arg = backup.display().to_string();
    let written_before = written.load(Ordering::Relaxed);
    let taken = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        let arg = backup_arg.clone();
        move || rally(&dir, &["backup", "--to", &arg])
    })
    .await
    .unwrap();
    let written_during = written.load(Ordering::Relaxed) - written_before;
    writing.store(false, Ordering::Relaxed);
    let busy_writes = writer.await.unwrap();
    let (code, out, err) = taken;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("from the running server"), "{out}");
    assert!(
        out.contains(&format!("{} campaigns", CAMPAIGNS + 2)),
        "{out}"
    );
    // How many depends on how long the backup takes on a loaded machine (2 in one CI run):
    // one is enough to show that writing went on while the backup read.
    assert!(
        written_during >= 1,
        "writes landed while the backup was taken ({written_during})"
    );
    assert!(
        busy_writes > 10,
        "the server kept writing during the backup ({busy_writes} writes)"
    );
    assert_eq!(server.terminate(), Some(0));

    // Wipe, restore, and read everything back.
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    let (code, out, err) = rally(dir.path(), &["restore", "--from", &backup_arg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!("Restored {} campaigns", CAMPAIGNS + 2)),
        "{out}"
    );
    // A restored store backs up to the same bytes (the server is stopped: read from the file).
    let again = dir.path().join("again.backup");
    let (code, out, err) = rally(
        dir.path(),
        &["backup", "--to", &again.display().to_string()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("from the store"), "{out}");
    assert!(
        std::fs::read(&backup).unwrap() == std::fs::read(&again).unwrap(),
        "same bytes"
    );
    // Restoring over a store is refused; the store is untouched.
    let (code, _, err) = rally(dir.path(), &["restore", "--from", &backup_arg]);
    assert_eq!(code, 1);
    assert!(err.contains("already holds a store"), "{err}");

    let server = ChildServer::spawn(dir.path(), &SERVER_ENV);
    let ada = ada.on(&server);
    let after = read_all(&ada).await;
    for (id, read) in &before {
        assert!(after[id] == *read, "{id} differs after the restore");
    }
    // Ada's session and her API key came back with the store.
    assert_eq!(read_with_key(&server, &key).await.0, 200);
    let (status, _) = read_with_key(&server, "rk_000000000000_0000").await;
    assert_eq!(status, 401, "a made-up key is still refused");
    assert_eq!(listed_count(&listed), CAMPAIGNS + 1);
    assert_eq!(
        listed_count(&listing(&ada).await),
        CAMPAIGNS + 2,
        "busy listed too"
    );
    // The campaign written during the backup is whole at the moment it was taken: its state's
    // version is its last event's, and its log has every version up to it.
    let (state, log) = ada.read("busy").await;
    let logged = versions(&log);
    let version = state["campaign"]["version"].as_u64().unwrap();
    assert_eq!(
        logged,
        (1..=version).collect::<Vec<_>>(),
        "busy: every version, nothing more"
    );
    assert!(
        version > 1 && version <= busy_writes + 1,
        "busy at {version} of {busy_writes}"
    );
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_moves_into_redis_whole_and_only_once() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn(dir.path(), &SERVER_ENV);
    let ada = Client::signed_in(&server).await;
    fill(&ada).await;
    let key = read_key(&ada).await;
    let before = read_all(&ada).await;
    let listed = listing(&ada).await;
    // A running server holds the store: migrate says so instead of waiting.
    let url = redis.url();
    let (code, _, err) = rally(dir.path(), &["migrate", "--to-redis", &url]);
    assert_eq!(code, 1);
    assert!(err.contains("is the server running?"), "{err}");
    assert_eq!(server.terminate(), Some(0));

    let (code, out, err) = rally(dir.path(), &["migrate", "--to-redis", &url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!(
            "Moved {} campaigns ({} events, 2 snapshots)",
            CAMPAIGNS + 1,
            2 * CAMPAIGNS + LONG_WRITES as usize + 1
        )),
        "{out}"
    );
    // Run again as it is: nothing to move, everything compared, success.
    let (code, out, err) = rally(dir.path(), &["migrate", "--to-redis", &url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!(
            "Moved 0 campaigns (0 events, 0 snapshots) into Redis, each read back and compared; {} campaigns were there already and compared equal",
            CAMPAIGNS + 1
        )),
        "{out}"
    );

    // Redis mode reads the same campaigns and histories; Ada's session came along.
    let mut env = SERVER_ENV.to_vec();
    env.push(("RALLY_REDIS_URL", &url));
    let server = ChildServer::spawn(dir.path(), &env);
    let ada = ada.on(&server);
    let (status, who) = ada.send(reqwest::Method::GET, "/api/session", None).await;
    assert_eq!(status, 200, "the session moved: {who}");
    let after = read_all(&ada).await;
    for (id, read) in &before {
        assert!(after[id] == *read, "{id} differs in Redis");
    }
    assert_eq!(listing(&ada).await, listed, "the same listing");
    assert_eq!(
        read_with_key(&server, &key).await.0,
        200,
        "the API key moved"
    );
    // A change in Redis mode; then the move again: everything is there, one campaign moved on.
    ada.write(
        reqwest::Method::PATCH,
        "/api/campaigns/c0007",
        json!({"updates": {"title": "Changed in Redis"}}),
    )
    .await;
    assert_eq!(server.terminate(), Some(0));
    // A move cut short after c0003's log but before its record and listing: the next run
    // finishes it.
    for command in [
        vec!["DEL", "rally:{c0003}:campaign"],
        vec!["SREM", "rally:campaigns", "c0003"],
    ] {
        let status = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string()])
            .args(&command)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let (code, out, err) = rally(dir.path(), &["migrate", "--to-redis", &url]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("Moved 1 campaigns (2 events, 0 snapshots) into Redis, each read back and compared; {} campaigns were there already and compared equal; 0 sessions", CAMPAIGNS - 1)),
        "{err}"
    );
    assert!(
        err.contains("c0007: Redis holds version 3, the embedded store version 2"),
        "{err}"
    );
    let server = ChildServer::spawn(dir.path(), &env);
    let ada = ada.on(&server);
    assert!(
        ada.read("c0003").await == before["c0003"],
        "c0003 whole again"
    );
    assert!(listing(&ada).await.contains("\"c0003\""), "and listed");
    assert_eq!(server.terminate(), Some(0));
}
