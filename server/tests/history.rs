//! A campaign's history, as a client uses it: every past version read back equals what a
//! subscriber held at that version (embedded and Redis mode, 10,000 writes each), reverts land as
//! new versions that every subscriber sees, pages and filters of the log, diffs, the NDJSON
//! export, and the bad inputs (out of range, stale base, viewers, campaigns one may not see).

mod common;

use std::collections::BTreeMap;

use common::{TestRedis, TestServer, WsClient};
use rally_app::model::{CampaignEvent, CampaignState};
use serde_json::{json, Value};

const WRITES: u64 = 10_000;
/// Requests in flight at once over all writers: enough to pipeline, few enough that the last of
/// a window is answered well inside the server's 5 s bound on a busy 2-core machine (at 200, two
/// instances contending for one campaign on Redis sometimes answered "did not answer within 5 s").
const WINDOW: u64 = 50;

/// The `n`th write of the mixed workload: every kind of content change, and now and then a
/// revert to an earlier version (as a client would send them, without base versions).
fn nth_write(campaign: &str, n: u64) -> (&'static str, Value) {
    match n % 10 {
        0 | 5 => (
            "campaign:update:v1:requested",
            json!({"campaign_id": campaign, "updates": {"title": format!("Title {n}")}}),
        ),
        1 => {
            let status = ["draft", "active", "paused"][(n / 10 % 3) as usize];
            (
                "campaign:update:v1:requested",
                json!({"campaign_id": campaign, "updates": {
                    "status": status,
                    "description": format!("About {n}"),
                }}),
            )
        }
        2 => (
            "campaign:feature:v1:requested",
            json!({"campaign_id": campaign, "op": if n % 20 == 2 { "add" } else { "remove" },
                   "features": [format!("f{}", n / 20 % 7)]}),
        ),
        3 | 6 => (
            "campaign:config:v1:requested",
            json!({"campaign_id": campaign, "section": "ui_content",
                   "values": {format!("k{}", n % 13): n, "hero": format!("Hero {n}")}}),
        ),
        4 => (
            "campaign:config:v1:requested",
            json!({"campaign_id": campaign, "section": format!("s{}", n / 10 % 4),
                   "values": {}, "mode": if n % 20 == 4 { "replace" } else { "remove" }}),
        ),
        7 => (
            "campaign:feature:v1:requested",
            json!({"campaign_id": campaign, "op": "add", "features": [format!("g{}", n % 5)]}),
        ),
        8 => (
            "campaign:update:v1:requested",
            json!({"campaign_id": campaign, "updates": {"description": format!("Now {n}")}}),
        ),
        _ => {
            // Every version up to n/5 exists: at least two writes in ten change something.
            let to_version = 1 + (n * 7919) % (n / 5);
            let fields = match n % 20 {
                9 => json!([]),
                _ => json!(["title", "config.ui_content"]),
            };
            (
                "campaign:revert:v1:requested",
                json!({"campaign_id": campaign, "to_version": to_version, "fields": fields}),
            )
        }
    }
}

/// The title of the last write, which tells the watcher it has seen everything.
const LAST_TITLE: &str = "The end";

/// Send `WRITES` writes through `writers` in turn, pipelined; every one must succeed.
async fn write_all(writers: &mut [WsClient], campaign: &str) {
    let mut n = 0;
    while n < WRITES {
        let end = (n + WINDOW).min(WRITES);
        for i in n..end {
            let (kind, payload) = nth_write(campaign, i);
            let writer = &mut writers[(i % writers.len() as u64) as usize];
            writer
                .send_json(json!({"type": kind, "payload": payload, "request_id": format!("w{i}")}))
                .await;
        }
        for i in n..end {
            let writer = &mut writers[(i % writers.len() as u64) as usize];
            let id = format!("w{i}");
            let reply = writer
                .recv_until(|f| f["request_id"] == id.as_str())
                .await
                .pop()
                .unwrap();
            assert!(
                reply["type"].as_str().unwrap().ends_with(":success"),
                "write {i}: {reply}"
            );
        }
        n = end;
    }
    let last = writers[0]
        .update(campaign, json!({"title": LAST_TITLE}), "last")
        .await;
    assert_eq!(last["type"], "campaign:update:v1:success", "{last}");
}

/// Follow a campaign from its snapshot until the last write, keeping the state after every event.
async fn states_seen(watcher: &mut WsClient, start: CampaignState) -> Vec<CampaignState> {
    let mut state = start;
    let mut seen = vec![state.clone()];
    while state.title != LAST_TITLE {
        let frame = watcher.next_state_event().await;
        let event: CampaignEvent = serde_json::from_value(frame["payload"].clone()).unwrap();
        state.apply_event(&event).expect("events arrive in order");
        seen.push(state.clone());
    }
    seen
}

/// Read every version in `states` back over the WebSocket (`campaign:version:v1`), pipelined.
async fn read_back(reader: &mut WsClient, campaign: &str, states: &[CampaignState]) {
    for chunk in states.chunks(WINDOW as usize) {
        for state in chunk {
            reader
                .send_json(json!({"type": "campaign:version:v1:requested",
                    "payload": {"campaign_id": campaign, "version": state.version},
                    "request_id": format!("v{}", state.version)}))
                .await;
        }
        for state in chunk {
            let id = format!("v{}", state.version);
            let reply = reader
                .recv_until(|f| f["request_id"] == id.as_str())
                .await
                .pop()
                .unwrap();
            assert_eq!(reply["type"], "campaign:version:v1:success", "{reply}");
            let read: CampaignState = serde_json::from_value(reply["payload"].clone()).unwrap();
            assert_eq!(&read, state, "version {} read back", state.version);
        }
    }
}

async fn every_version_reads_back(
    writers: &mut [WsClient],
    watcher: &mut WsClient,
    reader: &mut WsClient,
) {
    writers[0].create_campaign("long", "Long").await;
    let reply = watcher.subscribe("long", None).await;
    let start: CampaignState =
        serde_json::from_value(reply["payload"]["resume"]["campaign"].clone())
            .unwrap_or_else(|err| panic!("a snapshot in {reply}: {err}"));
    assert_eq!(start.version, 1);
    let (seen, ()) = tokio::join!(states_seen(watcher, start), write_all(writers, "long"));
    let newest = seen.last().unwrap().version;
    assert!(
        newest > WRITES / 2,
        "most writes changed something: {newest}"
    );
    let reverted = seen
        .windows(2)
        .filter(|w| w[1].title == seen[0].title)
        .count();
    assert!(reverted > 0, "some reverts went back to the first title");
    read_back(reader, "long", &seen).await;
    let beyond = reader
        .request(
            "campaign:version:v1:requested",
            json!({"campaign_id": "long", "version": newest + 1}),
            "beyond",
        )
        .await;
    assert_eq!(beyond["payload"]["code"], "not_found", "{beyond}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_versions_read_back_as_a_subscriber_held_them_embedded() {
    let server = TestServer::start_with(&["--write-rate", "1000000"]).await;
    let (_, token) = server.sign_in("Ada").await;
    let mut writers = [
        server.connect_as(&token).await,
        server.connect_as(&token).await,
    ];
    let mut watcher = server.connect().await;
    let mut reader = server.connect().await;
    every_version_reads_back(&mut writers, &mut watcher, &mut reader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_versions_read_back_as_a_subscriber_held_them_on_redis() {
    let redis = TestRedis::start();
    let url = redis.url();
    let args = [
        "--redis-url",
        &url,
        "--session-secret",
        "history-test-secret-of-enough-length",
        "--write-rate",
        "1000000",
    ];
    let a = TestServer::start_with(&args).await;
    let b = TestServer::start_with(&args).await;
    let (_, token) = a.sign_in("Ada").await;
    // Writes through both instances (the version-checked commit orders them), read from a third
    // connection on the other.
    let mut writers = [a.connect_as(&token).await, b.connect_as(&token).await];
    let mut watcher = a.connect().await;
    let mut reader = b.connect().await;
    every_version_reads_back(&mut writers, &mut watcher, &mut reader).await;
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = http().get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

async fn revert(server: &TestServer, token: &str, body: Value, base: Option<u64>) -> (u16, Value) {
    let mut request = http()
        .post(server.url("/api/campaigns/promo/revert"))
        .bearer_auth(token)
        .json(&body);
    if let Some(base) = base {
        request = request.header("If-Match", format!("\"{base}\""));
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revert_lands_as_a_new_version_every_subscriber_sees_and_the_log_tells_it() {
    let server = TestServer::start().await;
    let (ada, token) = server.sign_in("Ada").await;
    let mut owner = server.connect_as(&token).await;
    owner.create_campaign("promo", "Promo").await;
    let config = |values: Value| json!({"campaign_id": "promo", "section": "ui_content", "values": values, "mode": "replace"});
    let writes = [
        (
            "campaign:config:v1:requested",
            config(json!({"hero": "Spring sale"})),
        ), // v2
        (
            "campaign:update:v1:requested",
            json!({"campaign_id": "promo", "updates": {"title": "Promo!", "status": "active"}}),
        ), // v3
        (
            "campaign:config:v1:requested",
            config(json!({"hero": "Oops"})),
        ), // v4
        (
            "campaign:feature:v1:requested",
            json!({"campaign_id": "promo", "op": "add", "features": ["chat"]}),
        ), // v5
    ];
    for (i, (kind, payload)) in writes.into_iter().enumerate() {
        let reply = owner.request(kind, payload, &format!("w{i}")).await;
        assert!(
            reply["type"].as_str().unwrap().ends_with("success"),
            "{reply}"
        );
    }
    let mut watcher = server.connect().await;
    watcher.subscribe("promo", Some(5)).await;

    // Only ui_content, as of version 2: the title and features stay.
    let (status, ack) = revert(
        &server,
        &token,
        json!({"to_version": 2, "fields": ["config.ui_content"]}),
        Some(5),
    )
    .await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["version"], 6);
    let event = watcher.next_state_event().await;
    assert_eq!(
        event["payload"]["change"],
        json!({"kind": "revert", "to_version": 2, "restored": {"config": {"ui_content": {"hero": "Spring sale"}}}})
    );
    let (_, now) = get(&server, "/api/campaigns/promo", None).await;
    assert_eq!(
        now["campaign"]["config"]["ui_content"]["hero"],
        "Spring sale"
    );
    assert_eq!(now["campaign"]["title"], "Promo!");
    assert_eq!(now["campaign"]["features"], json!(["chat"]));

    // The whole campaign, as of version 1.
    let (status, ack) = revert(&server, &token, json!({"to_version": 1}), Some(6)).await;
    assert_eq!((status, &ack["version"]), (200, &json!(7)), "{ack}");
    let (_, v1) = get(&server, "/api/campaigns/promo/versions/1", None).await;
    let (_, v7) = get(&server, "/api/campaigns/promo/versions/7", None).await;
    for field in ["title", "description", "status", "features", "config"] {
        assert_eq!(v7[field], v1[field], "{field} restored");
    }
    assert_eq!(v7["version"], 7);
    assert_eq!(watcher.next_state_event().await["payload"]["version"], 7);
    // Nothing left to restore: acknowledged without a new version.
    let (status, ack) = revert(&server, &token, json!({"to_version": 1}), Some(7)).await;
    assert_eq!((status, &ack["version"]), (200, &json!(7)), "{ack}");

    // The log, newest first, says what happened in plain words.
    let (status, page) = get(&server, "/api/campaigns/promo/history?limit=3", None).await;
    assert_eq!(status, 200, "{page}");
    let versions: Vec<u64> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [7, 6, 5]);
    assert_eq!(page["next_before"], 5);
    assert_eq!(
        page["entries"][1]["summary"],
        "restored the ui_content settings as of version 2"
    );
    assert_eq!(page["entries"][1]["changed_by"]["user_id"], ada.as_str());
    assert_eq!(page["entries"][1]["fields"], json!(["config.ui_content"]));
    let (_, older) = get(&server, "/api/campaigns/promo/history?before=5", None).await;
    let versions: Vec<u64> = older["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [4, 3, 2, 1]);
    assert!(older.get("next_before").is_none(), "{older}");
    let (_, ui) = get(&server, "/api/campaigns/promo/history?field=config", None).await;
    let versions: Vec<u64> = ui["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [7, 6, 4, 2]);
    let (_, nobody) = get(
        &server,
        "/api/campaigns/promo/history?actor=someone-else",
        None,
    )
    .await;
    assert_eq!(nobody["entries"], json!([]));
    let (status, clamped) = get(&server, "/api/campaigns/promo/history?limit=1000000", None).await;
    assert_eq!(
        (status, clamped["entries"].as_array().unwrap().len()),
        (200, 7)
    );

    // A diff between versions, the title as words.
    let (status, diff) = get(&server, "/api/campaigns/promo/diff?from=1&to=4", None).await;
    assert_eq!(status, 200, "{diff}");
    let fields: Vec<&str> = diff["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["title", "status", "config.ui_content"]);
    assert_eq!(
        diff["fields"][0]["text"],
        json!([{"kind": "removed", "text": "Promo"}, {"kind": "added", "text": "Promo!"}])
    );

    // The export: one event per line, oldest first.
    let export = http()
        .get(server.url("/api/campaigns/promo/history/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let text = export.text().await.unwrap();
    let lines: Vec<CampaignEvent> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        lines.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reverts_and_reads_are_refused_with_their_codes() {
    let server = TestServer::start().await;
    let (_, token) = server.sign_in("Ada").await;
    let (_, viewer_token) = server.sign_in("Vic").await;
    let mut owner = server.connect_as(&token).await;
    owner.create_campaign("promo", "Promo").await;
    owner.update("promo", json!({"title": "Two"}), "u1").await;
    owner.update("promo", json!({"title": "Three"}), "u2").await;

    let code = |body: &Value| {
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // A stale base: the title changed after version 2.
    let (status, body) = revert(&server, &token, json!({"to_version": 1}), Some(2)).await;
    assert_eq!((status, code(&body)), (409, "conflict".into()), "{body}");
    // A base after which only other fields changed merges.
    owner
        .request(
            "campaign:feature:v1:requested",
            json!({"campaign_id": "promo", "op": "add", "features": ["chat"]}),
            "f1",
        )
        .await;
    let (status, body) = revert(
        &server,
        &token,
        json!({"to_version": 1, "fields": ["title"]}),
        Some(3),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Out of range, a bad field name, a viewer.
    for (to_version, expected) in [(0, 404), (99, 404)] {
        let (status, body) = revert(&server, &token, json!({"to_version": to_version}), None).await;
        assert_eq!(
            (status, code(&body)),
            (expected, "not_found".into()),
            "{body}"
        );
    }
    let (status, body) = revert(
        &server,
        &token,
        json!({"to_version": 1, "fields": ["owner"]}),
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid".into()), "{body}");
    for to_version in [1, 99] {
        // Refused before the log is read: a viewer learns nothing about which versions exist.
        let (status, body) = revert(
            &server,
            &viewer_token,
            json!({"to_version": to_version}),
            None,
        )
        .await;
        assert_eq!((status, code(&body)), (403, "forbidden".into()), "{body}");
    }
    for path in ["versions/0", "versions/100", "diff?from=1&to=100"] {
        let (status, body) = get(&server, &format!("/api/campaigns/promo/{path}"), None).await;
        assert_eq!(
            (status, code(&body)),
            (404, "not_found".into()),
            "{path}: {body}"
        );
    }
    let (status, body) = get(
        &server,
        "/api/campaigns/promo/history?field=no%20spaces",
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid".into()), "{body}");

    // A private campaign's history answers as a missing campaign to those who may not see it.
    owner
        .update("promo", json!({"visibility": "private"}), "private")
        .await;
    let mut missing: BTreeMap<&str, (u16, String)> = BTreeMap::new();
    for path in [
        "history",
        "history/export",
        "versions/1",
        "diff?from=1&to=2",
    ] {
        let (status, body) = get(
            &server,
            &format!("/api/campaigns/promo/{path}"),
            Some(&viewer_token),
        )
        .await;
        missing.insert(path, (status, code(&body)));
    }
    for (path, answer) in &missing {
        assert_eq!(answer, &(404, "not_found".to_owned()), "{path}");
    }
    let (status, body) = revert(&server, &viewer_token, json!({"to_version": 1}), None).await;
    assert_eq!((status, code(&body)), (404, "not_found".into()), "{body}");
    let mut stranger = server.connect_as(&viewer_token).await;
    let reply = stranger
        .request(
            "campaign:history:v1:requested",
            json!({"campaign_id": "promo"}),
            "h",
        )
        .await;
    assert_eq!(reply["payload"]["code"], "not_found", "{reply}");
    let reply = owner
        .request(
            "campaign:history:v1:requested",
            json!({"campaign_id": "promo", "limit": 2}),
            "h",
        )
        .await;
    assert_eq!(reply["type"], "campaign:history:v1:success", "{reply}");
    assert_eq!(reply["payload"]["entries"].as_array().unwrap().len(), 2);
}

/// Writes `count` title changes to a new campaign straight into `store`, the `n`th at `n`
/// seconds past the epoch, one commit each (so snapshots fall at every 100th version).
async fn long_log(store: &dyn rally::store::Store, id: &str, count: u64) {
    use rally::campaigns::core::{Applied, CampaignCore};
    use rally::campaigns::Caller;
    use rally_app::model::{Actor, EventId, Timestamp, UserId, Write};
    let actor = Actor {
        user_id: UserId::parse("ada").unwrap(),
        display_name: "Ada".into(),
    };
    let second = |n: u64| Timestamp::from_unix_nanos(n * 1_000_000_000);
    let request = serde_json::from_value(json!({"campaign_id": id, "title": "t1"})).unwrap();
    let (mut core, event) =
        CampaignCore::create(request, &actor, second(1), EventId::new(1, 1, 1), 10).unwrap();
    store.create(core.record().clone(), event).await.unwrap();
    for n in 2..=count {
        let write = Write::Update(
            serde_json::from_value(
                json!({"campaign_id": "kept", "updates": {"title": format!("t{n}")}}),
            )
            .unwrap(),
        );
        let caller = Caller::person(actor.clone());
        let Applied::Changed(event) = core
            .apply(
                &write,
                Some(&caller),
                second(n),
                EventId::new(n, 1, n as u32),
            )
            .unwrap()
        else {
            panic!("a change")
        };
        store
            .commit(rally::store::Commit {
                campaign_id: core.state().id.clone(),
                expected_version: n - 1,
                record: core.record().clone(),
                events: vec![event],
                instance: 1,
            })
            .await
            .unwrap();
    }
}

/// Retention on one store: forgetting what is older than version 250's time cuts the log at the
/// snapshot of version 200; versions from it on read back, older ones are gone, and a second
/// pass changes nothing.
async fn retention_cuts_at_a_snapshot(store: &dyn rally::store::Store) {
    use rally::campaigns::changelog::state_at;
    use rally::campaigns::retention::{cut_point, forget_older};
    use rally_app::model::{CampaignId, Timestamp};
    long_log(store, "kept", 350).await;
    let id = CampaignId::parse("kept").unwrap();
    let cutoff = Timestamp::from_unix_nanos(250 * 1_000_000_000);
    assert_eq!(cut_point(store, &id, cutoff).await.unwrap(), Some(200));
    assert_eq!(forget_older(store, cutoff).await.unwrap(), 1);
    assert_eq!(store.oldest_event(&id).await.unwrap(), Some(201));
    for (version, kept) in [
        (1, false),
        (199, false),
        (200, true),
        (201, true),
        (350, true),
    ] {
        let state = state_at(store, &id, version).await.unwrap();
        assert_eq!(state.is_some(), kept, "version {version}");
        if let Some(state) = state {
            assert_eq!(state.title, format!("t{version}"));
        }
    }
    assert_eq!(
        cut_point(store, &id, cutoff).await.unwrap(),
        None,
        "cut once"
    );
    assert_eq!(forget_older(store, cutoff).await.unwrap(), 0);
    let later = Timestamp::from_unix_nanos(400 * 1_000_000_000);
    assert_eq!(cut_point(store, &id, later).await.unwrap(), Some(300));
    // A campaign idle since a snapshot keeps its newest event: the cut is at the one before.
    long_log(store, "idle", 200).await;
    let idle = CampaignId::parse("idle").unwrap();
    assert_eq!(cut_point(store, &idle, later).await.unwrap(), Some(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_forgets_down_to_a_snapshot_in_both_stores() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = rally::store::embedded::EmbeddedStore::open(dir.path()).unwrap();
    retention_cuts_at_a_snapshot(&embedded).await;
    let redis = TestRedis::start();
    let link = loop {
        match rally::redis::RedisLink::connect(&redis.url()).await {
            Ok(link) => break link,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    retention_cuts_at_a_snapshot(&rally::store::redis::RedisStore::new(link)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_large_changes_stops_at_a_mebibyte() {
    let server = TestServer::start_with(&["--write-rate", "1000000"]).await;
    let (_, token) = server.sign_in("Ada").await;
    let mut owner = server.connect_as(&token).await;
    owner.create_campaign("big", "Big").await;
    let filler = "x".repeat(15_000);
    for n in 0..150 {
        let reply = owner
            .request(
                "campaign:config:v1:requested",
                json!({"campaign_id": "big", "section": "ui_content", "mode": "replace",
                       "values": {"text": format!("{n}{filler}")}}),
                &format!("c{n}"),
            )
            .await;
        assert_eq!(reply["type"], "campaign:config:v1:success", "{reply}");
    }
    let (status, page) = get(&server, "/api/campaigns/big/history?limit=200", None).await;
    assert_eq!(status, 200);
    let entries = page["entries"].as_array().unwrap();
    let bytes = serde_json::to_vec(entries).unwrap().len();
    assert!(
        (60..150).contains(&entries.len()) && bytes < (1 << 20) + 20_000,
        "{} entries, {bytes} bytes",
        entries.len()
    );
    let next = page["next_before"].as_u64().expect("more to read");
    assert_eq!(next, entries.last().unwrap()["version"].as_u64().unwrap());
}
