//! Several Rally instances sharing one real Redis (each test starts its own `redis-server` on a
//! free port, with an fsync-always append-only file so a restart keeps what it acknowledged).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::{TestRedis, TestServer, WsClient};
use serde_json::{json, Value};

const SECRET: &str = "multi-instance-test-secret-of-enough-length";

async fn instance(redis: &TestRedis, extra: &[&str]) -> TestServer {
    let url = redis.url();
    let mut args = vec![
        "--redis-url",
        &url,
        "--session-secret",
        SECRET,
        "--write-rate",
        "100000",
    ];
    args.extend_from_slice(extra);
    TestServer::start_with(&args).await
}

/// Read state events until `version` arrives; returns (version, title, event_id) in order.
async fn events_until(client: &mut WsClient, version: u64) -> Vec<(u64, String, String)> {
    let mut seen = Vec::new();
    loop {
        let event = client.next_state_event().await;
        let payload = &event["payload"];
        let v = payload["version"].as_u64().unwrap();
        let title = payload["change"]["updates"]["title"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        seen.push((v, title, payload["event_id"].as_str().unwrap().to_owned()));
        if v >= version {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_edits_in_one_order_and_agree_on_presence() {
    let redis = TestRedis::start();
    let a = instance(&redis, &[]).await;
    let b = instance(&redis, &[]).await;
    let (_, token) = a.sign_in("Ada").await;
    let mut on_a = a.connect_as(&token).await;
    on_a.create_campaign("shared", "Shared").await;
    let mut on_b = b.connect_as(&token).await; // the same session works on both instances
    let duplicate = on_b.create_campaign_raw("shared").await;
    assert_eq!(
        duplicate["payload"]["code"], "conflict",
        "ids are unique across instances"
    );

    let (_, viewer_token) = b.sign_in("Vic").await;
    let mut watcher_a = a.connect().await;
    let mut watcher_b = b.connect_as(&viewer_token).await;
    watcher_a.subscribe("shared", None).await;
    let reply = watcher_b.subscribe("shared", None).await;
    assert_eq!(reply["payload"]["writable"], true);

    for n in 0..20 {
        let client = if n % 2 == 0 { &mut on_a } else { &mut on_b };
        let reply = client
            .update(
                "shared",
                json!({"title": format!("t{n}")}),
                &format!("u{n}"),
            )
            .await;
        assert_eq!(reply["type"], "campaign:update:v1:success", "{reply}");
        assert_eq!(
            reply["payload"]["version"],
            n + 2,
            "versions are global across instances"
        );
    }
    let seen_a = events_until(&mut watcher_a, 21).await;
    let seen_b = events_until(&mut watcher_b, 21).await;
    assert_eq!(
        seen_a, seen_b,
        "both instances deliver the same events in the same order"
    );
    assert_eq!(
        seen_a.iter().map(|e| e.0).collect::<Vec<_>>(),
        (2..=21).collect::<Vec<_>>()
    );

    // Presence: an anonymous watcher on A and Vic on B; both instances agree.
    on_a.subscribe("shared", None).await; // and Ada on A
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pa = on_a
            .request(
                "campaign:subscribe:v1:requested",
                json!({"campaign_id": "shared"}),
                "pa",
            )
            .await;
        let pb = watcher_b
            .request(
                "campaign:subscribe:v1:requested",
                json!({"campaign_id": "shared"}),
                "pb",
            )
            .await;
        let names = |r: &Value| -> Vec<String> {
            r["payload"]["presence"]["viewers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["display_name"].as_str().unwrap().to_owned())
                .collect()
        };
        if names(&pa) == ["Ada", "Vic", "Anonymous"] && names(&pb) == names(&pa) {
            assert_eq!(pa["payload"]["presence"]["count"], 3);
            assert_eq!(pb["payload"]["presence"]["count"], 3);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "presence never agreed: A {:?}, B {:?}",
            names(&pa),
            names(&pb)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_both_instances_converge_with_every_version_once() {
    let redis = TestRedis::start();
    let a = instance(&redis, &["--history-len", "100000"]).await;
    let b = instance(&redis, &["--history-len", "100000"]).await;
    let (_, token) = a.sign_in("Writer").await;
    let mut setup = a.connect_as(&token).await;
    setup.create_campaign("busy", "Busy").await;
    let mut observer_a = a.connect().await;
    let mut observer_b = b.connect().await;
    observer_a.subscribe("busy", None).await;
    observer_b.subscribe("busy", None).await;

    // Four writers, two per instance, each sending 500 randomized writes.
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let addr = if w % 2 == 0 { a.addr } else { b.addr };
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = common::connect(addr, Some(&token)).await;
            let mut acked = Vec::new();
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (w + 1);
            for n in 0..500u64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let status = ["draft", "active", "paused"][(seed % 3) as usize];
                let (ty, payload) = match seed % 4 {
                    0 => ("campaign:update:v1:requested", json!({"campaign_id": "busy", "updates": {"title": format!("w{w} n{n}")}})),
                    1 => ("campaign:update:v1:requested", json!({"campaign_id": "busy", "updates": {"description": format!("d{w}-{n}"), "status": status}})),
                    2 => ("campaign:feature:v1:requested", json!({"campaign_id": "busy", "op": if seed.is_multiple_of(2) { "add" } else { "remove" }, "features": [format!("f{}", seed % 5)]})),
                    _ => ("campaign:config:v1:requested", json!({"campaign_id": "busy", "section": "ui_content", "values": {format!("k{}", seed % 7): n}})),
                };
                let reply = client.request(ty, payload, &format!("w{w}-{n}")).await;
                assert!(reply["type"].as_str().unwrap().ends_with(":success"), "{reply}");
                if reply["payload"]["unchanged"] == false {
                    acked.push((
                        reply["payload"]["version"].as_u64().unwrap(),
                        reply["payload"]["event_id"].as_str().unwrap().to_owned(),
                    ));
                }
            }
            acked
        }));
    }
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    for task in tasks {
        for (version, event_id) in task.await.unwrap() {
            assert!(
                acked.insert(version, event_id).is_none(),
                "version {version} acknowledged twice"
            );
        }
    }
    let last = *acked.keys().max().unwrap();
    let seen_a = events_until(&mut observer_a, last).await;
    let seen_b = events_until(&mut observer_b, last).await;
    let versions: Vec<u64> = seen_a.iter().map(|e| e.0).collect();
    assert_eq!(
        versions,
        (2..=last).collect::<Vec<_>>(),
        "every version exactly once, in order"
    );
    assert_eq!(seen_a, seen_b, "both instances delivered identical streams");
    let by_version: HashMap<u64, &String> = seen_a.iter().map(|e| (e.0, &e.2)).collect();
    for (version, event_id) in &acked {
        assert_eq!(
            by_version.get(version),
            Some(&event_id),
            "acknowledged v{version} missing or different"
        );
    }
    let snapshot = json!({"campaign_id": "busy"});
    let state_a = observer_a
        .request("campaign:snapshot:v1:requested", snapshot.clone(), "sa")
        .await["payload"]["campaign"]
        .clone();
    let state_b = observer_b
        .request("campaign:snapshot:v1:requested", snapshot, "sb")
        .await["payload"]["campaign"]
        .clone();
    assert_eq!(state_a, state_b, "identical final state");
    assert_eq!(state_a["version"], last);
    eprintln!(
        "{} writes changed the campaign; final version {last}",
        acked.len()
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_traffic_loses_nothing_acknowledged() {
    let mut redis = TestRedis::start();
    let a = instance(&redis, &["--history-len", "100000"]).await;
    let b = instance(&redis, &["--history-len", "100000"]).await;
    let (_, token) = a.sign_in("Writer").await;
    let mut writer = a.connect_as(&token).await;
    writer.create_campaign("outage", "Outage").await;
    let mut observer_b = b.connect().await;
    observer_b.subscribe("outage", None).await;

    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut refused = 0;
    let mut saw_read_only = false;
    let mut killed_at = None;
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(8) {
        if n == 100 {
            redis.kill();
            killed_at = Some(Instant::now());
        }
        if killed_at.is_some_and(|t| t.elapsed() > Duration::from_millis(1500))
            && redis.child.is_none()
        {
            redis.resume();
        }
        let title = format!("n{n}");
        let reply = writer
            .update("outage", json!({"title": title}), &format!("u{n}"))
            .await;
        match reply["type"].as_str().unwrap() {
            "campaign:update:v1:success" => {
                acked.insert(reply["payload"]["version"].as_u64().unwrap(), title);
            }
            "campaign:update:v1:failed" => {
                assert_eq!(reply["payload"]["code"], "unavailable", "{reply}");
                refused += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("unexpected reply {other}"),
        }
        n += 1;
    }
    assert!(refused > 0, "the outage was noticed");
    assert!(
        acked.len() > 150,
        "writes resumed after Redis returned ({} acknowledged)",
        acked.len()
    );
    // The observer on B was told the campaign went read-only, then writable again, and its stream
    // has every acknowledged write, in order, once.
    let last = *acked.keys().max().unwrap();
    let mut versions = Vec::new();
    let mut writable_states = Vec::new();
    while versions.last().copied().unwrap_or(0) < last {
        let frame = observer_b.recv_json().await;
        match frame["type"].as_str().unwrap() {
            "campaign:state:v1:success" => {
                let payload = &frame["payload"];
                let version = payload["version"].as_u64().unwrap();
                if let Some(title) = acked.get(&version) {
                    assert_eq!(payload["change"]["updates"]["title"], *title);
                }
                versions.push(version);
            }
            "campaign:writable:v1:success" => {
                saw_read_only |= frame["payload"]["writable"] == false;
                writable_states.push(frame["payload"]["writable"].as_bool().unwrap());
            }
            _ => {}
        }
    }
    assert_eq!(
        versions,
        (2..=last).collect::<Vec<_>>(),
        "no lost or duplicated events"
    );
    assert!(saw_read_only, "subscribers were told: {writable_states:?}");
    assert_eq!(writable_states.last(), Some(&true));
    // Both instances hold the same state afterwards.
    let mut check_a = a.connect().await;
    let state_a = check_a
        .request(
            "campaign:snapshot:v1:requested",
            json!({"campaign_id": "outage"}),
            "s",
        )
        .await;
    let state_b = observer_b
        .request(
            "campaign:snapshot:v1:requested",
            json!({"campaign_id": "outage"}),
            "s",
        )
        .await;
    assert_eq!(
        state_a["payload"]["campaign"],
        state_b["payload"]["campaign"]
    );
    eprintln!(
        "{} acknowledged, {refused} refused while Redis was down",
        acked.len()
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_instance_resume_on_the_other_without_a_gap() {
    let redis = TestRedis::start();
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let url = redis.url();
    let env = [
        ("RALLY_REDIS_URL", url.as_str()),
        ("RALLY_SESSION_SECRET", SECRET),
        ("RALLY_WRITE_RATE", "100000"),
    ];
    let a = common::ChildServer::spawn(dir_a.path(), &env);
    let b = common::ChildServer::spawn(dir_b.path(), &env);
    let (_, token) = common::sign_in(b.addr, "Writer").await;
    let mut writer = common::connect(b.addr, Some(&token)).await;
    writer.create_campaign("failover", "Failover").await;

    let mut client = common::connect(a.addr, None).await;
    client.subscribe("failover", None).await;
    for n in 0..10 {
        writer
            .update(
                "failover",
                json!({"title": format!("before {n}")}),
                &format!("b{n}"),
            )
            .await;
    }
    let seen = events_until(&mut client, 11).await;
    let last_seen = seen.last().unwrap().0;
    a.kill(); // SIGKILL: its clients lose their connection without a goodbye

    for n in 0..15 {
        writer
            .update(
                "failover",
                json!({"title": format!("after {n}")}),
                &format!("a{n}"),
            )
            .await;
    }
    // The client reconnects to the surviving instance and resumes from what it had.
    let mut client = common::connect(b.addr, None).await;
    let reply = client.subscribe("failover", Some(last_seen)).await;
    assert_eq!(
        reply["payload"]["resume"],
        json!({"kind": "events", "from_version": last_seen + 1, "to_version": 26})
    );
    let resumed = events_until(&mut client, 26).await;
    assert_eq!(
        resumed.iter().map(|e| e.0).collect::<Vec<_>>(),
        (last_seen + 1..=26).collect::<Vec<_>>()
    );
    assert_eq!(resumed.last().unwrap().1, "after 14");
    assert_eq!(b.terminate(), Some(0));
}

/// Two people type into one description through different instances, every edit based on the
/// same old version: the version-checked commit orders them, each instance transforms what it
/// commits over what landed since, and both keep every character, the same text everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_text_edits_on_two_instances_keep_every_character() {
    let redis = TestRedis::start();
    let a = instance(&redis, &[]).await;
    let b = instance(&redis, &[]).await;
    let (_, token) = a.sign_in("Ada").await;
    let mut setup = a.connect_as(&token).await;
    setup.create_campaign("typing", "Typing").await;
    let reply = setup
        .update("typing", json!({"description": "Top.Bottom."}), "d")
        .await;
    let base = reply["payload"]["version"].as_u64().unwrap();
    const EDITS: usize = 25;

    // A inserts before "Top.", B after "Bottom." — each edit made on the text at `base`.
    let mut typists = Vec::new();
    for (side, addr) in [("a", a.addr), ("b", b.addr)] {
        let token = token.clone();
        typists.push(tokio::spawn(async move {
            let mut client = common::connect(addr, Some(&token)).await;
            for n in 0..EDITS {
                let piece = format!("{side}{n:02};");
                let edit = if side == "a" {
                    json!([piece, 11])
                } else {
                    json!([11, piece])
                };
                let reply = client
                    .request(
                        "campaign:text:v1:requested",
                        json!({"campaign_id": "typing", "field": "description", "edit": edit,
                               "base_version": base, "edit_id": format!("{side}-{n}")}),
                        &format!("{side}{n}"),
                    )
                    .await;
                assert_eq!(reply["type"], "campaign:text:v1:success", "{reply}");
            }
        }));
    }
    for typist in typists {
        typist.await.unwrap();
    }

    let mut texts = Vec::new();
    for server in [&a, &b] {
        let mut reader = server.connect().await;
        let reply = reader.subscribe("typing", None).await;
        let campaign = &reply["payload"]["resume"]["campaign"];
        assert_eq!(campaign["version"], base + 2 * EDITS as u64, "{reply}");
        texts.push(campaign["description"].as_str().unwrap().to_owned());
    }
    assert_eq!(texts[0], texts[1], "one text on both instances");
    let text = &texts[0];
    let (before, after) = text
        .split_once("Top.Bottom.")
        .expect("the base text is intact");
    for n in 0..EDITS {
        assert!(before.contains(&format!("a{n:02};")), "{text}");
        assert!(after.contains(&format!("b{n:02};")), "{text}");
    }
    assert_eq!(
        text.chars().count(),
        11 + 2 * EDITS * 4,
        "nothing else: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_on_one_instance_loses_a_private_campaign_on_the_other_within_a_second() {
    let redis = TestRedis::start();
    let a = instance(&redis, &["--default-visibility", "private"]).await;
    let b = instance(&redis, &["--default-visibility", "private"]).await;
    let (_, owner_token) = a.sign_in("Olga").await;
    let mut owner = a.connect_as(&owner_token).await;
    owner.create_campaign("vault", "Vault").await;
    let http = reqwest::Client::new();
    let invite: Value = http
        .post(a.url("/api/campaigns/vault/invites"))
        .bearer_auth(&owner_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let link = invite["token"].as_str().unwrap().to_owned();
    // Bob joins through instance B and follows the campaign there.
    let (bob_id, bob_token) = b.sign_in("Bob").await;
    let accept = |server: &TestServer| {
        http.post(server.url(&format!("/api/invites/{link}/accept")))
            .bearer_auth(&bob_token)
            .send()
    };
    assert_eq!(accept(&b).await.unwrap().status(), 200);
    let mut bob = b.connect_as(&bob_token).await;
    bob.subscribe("vault", None).await;

    // Removed on A: on B his subscription ends within a second and his write is refused.
    let started = Instant::now();
    let reply = owner
        .request(
            "campaign:member:v1:requested",
            json!({"campaign_id": "vault", "user_id": bob_id, "role": null}),
            "rm",
        )
        .await;
    assert_eq!(reply["type"], "campaign:member:v1:success", "{reply}");
    let frames = bob
        .recv_until(|f| f["type"] == "campaign:subscription:v1:completed")
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        frames.last().unwrap()["payload"]["reason"]["code"],
        "not_found"
    );
    let write = bob.update("vault", json!({"title": "Mine"}), "w").await;
    assert_eq!(write["payload"]["code"], "not_found", "{write}");
    // The link he kept does not bring him back, on either instance.
    for server in [&a, &b] {
        let again = accept(server).await.unwrap();
        assert_eq!(again.status(), 400);
    }
}

/// A link for one person, accepted at the same moment through two instances: one person gets
/// in, the other is told the link is used up, and both instances list the one use (the second
/// join lost the version race, caught up, and was checked again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_for_one_person_lets_one_in_when_two_accept_it_at_once_on_two_instances() {
    let redis = TestRedis::start();
    let a = instance(&redis, &[]).await;
    let b = instance(&redis, &[]).await;
    let (_, owner_token) = a.sign_in("Olga").await;
    let mut owner = a.connect_as(&owner_token).await;
    owner.create_campaign("seat", "One seat").await;
    let http = reqwest::Client::new();
    let mut results = Vec::new();
    for round in 0..5 {
        let invite: Value = http
            .post(a.url("/api/campaigns/seat/invites"))
            .bearer_auth(&owner_token)
            .json(&json!({"max_uses": 1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let link = invite["token"].as_str().unwrap().to_owned();
        let (_, bob) = a.sign_in(&format!("Bob{round}")).await;
        let (_, cy) = b.sign_in(&format!("Cy{round}")).await;
        let accept = |server: &TestServer, token: &str| {
            http.post(server.url(&format!("/api/invites/{link}/accept")))
                .bearer_auth(token)
                .send()
        };
        let (on_a, on_b) = tokio::join!(accept(&a, &bob), accept(&b, &cy));
        let mut statuses = [
            on_a.unwrap().status().as_u16(),
            on_b.unwrap().status().as_u16(),
        ];
        statuses.sort();
        assert_eq!(statuses, [200, 400], "round {round}: exactly one gets in");
        results.push(invite["id"].as_str().unwrap().to_owned());
    }
    for server in [&a, &b] {
        let listed: Value = http
            .get(server.url("/api/campaigns/seat/invites"))
            .bearer_auth(&owner_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for link in listed.as_array().unwrap() {
            assert_eq!(link["uses"].as_array().unwrap().len(), 1, "{link}");
            assert_eq!(link["status"], "used_up");
        }
        assert_eq!(listed.as_array().unwrap().len(), results.len());
    }
}

/// A write refused on one instance because of a change made through the other: the person whose
/// change was kept hears of it on their instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_person_hears_of_a_refused_write_made_on_another_instance() {
    let redis = TestRedis::start();
    let a = instance(&redis, &["--default-visibility", "public"]).await;
    let b = instance(&redis, &["--default-visibility", "public"]).await;
    let (_, ada_token) = a.sign_in("Ada").await;
    let mut ada = a.connect_as(&ada_token).await;
    ada.create_campaign("kept", "Kept").await;
    ada.subscribe("kept", None).await;
    let http = reqwest::Client::new();
    let invite: Value = http
        .post(a.url("/api/campaigns/kept/invites"))
        .bearer_auth(&ada_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, bob_token) = b.sign_in("Bob").await;
    let accept = format!("/api/invites/{}/accept", invite["token"].as_str().unwrap());
    let accepted = http
        .post(b.url(&accept))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let mut bob = b.connect_as(&bob_token).await;
    bob.subscribe("kept", None).await;
    let reply = ada.update("kept", json!({"title": "Ada's"}), "a").await;
    assert_eq!(reply["type"], "campaign:update:v1:success", "{reply}");
    let stale = json!({"campaign_id": "kept", "updates": {"title": "Bob's"}, "base_version": 3});
    let reply = bob
        .request("campaign:update:v1:requested", stale, "b")
        .await;
    assert_eq!(reply["payload"]["code"], "conflict", "{reply}");
    let frames = ada
        .recv_until(|f| f["type"] == "campaign:overruled:v1:completed")
        .await;
    let pushed = &frames.last().unwrap()["payload"];
    assert_eq!(pushed["kept"]["display_name"], "Ada", "{pushed}");
    assert_eq!(pushed["refused"]["display_name"], "Bob");
}

/// A named HTTP write sent again to another instance lands once there too: the name travels with
/// the event, so the other instance knows it once it has the event — and one that has not caught
/// up yet loses the commit race, catches up, and finds the name then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_http_write_sent_again_to_another_instance_lands_once() {
    let redis = TestRedis::start();
    let a = instance(&redis, &[]).await;
    let b = instance(&redis, &[]).await;
    let (_, token) = a.sign_in("Ada").await;
    let mut on_a = a.connect_as(&token).await;
    on_a.create_campaign("named", "Named").await;
    let http = reqwest::Client::new();
    let patch = |server: &TestServer, title: String, key: Option<String>| {
        let mut request = http
            .patch(server.url("/api/campaigns/named"))
            .bearer_auth(&token)
            .json(&json!({"updates": {"title": title}}));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    for round in 0..10 {
        let key = format!("round-{round}");
        let first = patch(&a, format!("Named {round}"), Some(key.clone())).await;
        assert_eq!(first["unchanged"], false, "{first}");
        // Someone else changes it in between: on `b` (which then has the named event), or on
        // `a` (so `b` may still be behind when the retry reaches it).
        let between = if round % 2 == 0 { &b } else { &a };
        let other = patch(between, format!("Other {round}"), None).await;
        assert_eq!(other["unchanged"], false, "{other}");
        // The first write's answer was lost; it is sent again, to the other instance.
        let again = patch(&b, format!("Named {round}"), Some(key)).await;
        assert_eq!(again["version"], first["version"], "round {round}: {again}");
        assert_eq!(again["unchanged"], true);
    }
    // Both instances end at the same state (b may take a moment to hear a's last change).
    for server in [&a, &b] {
        let started = Instant::now();
        let read = loop {
            let read: Value = http
                .get(server.url("/api/campaigns/named"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if read["campaign"]["version"] == 21 || started.elapsed() > Duration::from_secs(5) {
                break read;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            read["campaign"]["version"], 21,
            "two changes a round, none repeated"
        );
        assert_eq!(read["campaign"]["title"], "Other 9");
    }
}

/// An event stream on one instance carries what is written on the other, gap-free, and resumes
/// there from its last id after the connection drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_on_one_instance_follows_writes_on_the_other() {
    let redis = TestRedis::start();
    let a = instance(&redis, &[]).await;
    let b = instance(&redis, &[]).await;
    let (_, token) = a.sign_in("Ada").await;
    let mut on_a = a.connect_as(&token).await;
    on_a.create_campaign("streamed", "Streamed").await;

    let mut reader = common::EventReader::open(&b, "streamed", &[]).await;
    let first = reader.next().await.unwrap();
    let mut last = first.id.expect("the snapshot's version");
    for round in 0..3 {
        for i in 0..10 {
            let reply = on_a
                .update(
                    "streamed",
                    json!({"title": format!("T{round}-{i}")}),
                    &format!("t{round}-{i}"),
                )
                .await;
            assert_eq!(reply["type"], "campaign:update:v1:success", "{reply}");
        }
        for _ in 0..5 {
            let event = reader.next_state().await;
            assert_eq!(
                event.id,
                Some(last + 1),
                "round {round}: gap-free, in order"
            );
            last += 1;
        }
        // The stream drops halfway through the round; it resumes on the same instance.
        let resume_from = last.to_string();
        reader =
            common::EventReader::open(&b, "streamed", &[("last-event-id", &resume_from)]).await;
        let reply = reader.next().await.unwrap();
        assert_eq!(
            reply.data["payload"]["resume"]["kind"], "events",
            "{:?}",
            reply.data
        );
        for _ in 0..5 {
            let event = reader.next_state().await;
            assert_eq!(
                event.id,
                Some(last + 1),
                "round {round}: resumed without gap or repeat"
            );
            last += 1;
        }
    }
    assert_eq!(last, 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_made_on_one_instance_works_on_the_other_until_revoked_there() {
    let redis = TestRedis::start();
    let a = instance(&redis, &[]).await;
    let b = instance(&redis, &[]).await;
    let (_, token) = a.sign_in("Ada").await;
    let http = reqwest::Client::new();
    let created = http
        .post(a.url("/api/campaigns"))
        .bearer_auth(&token)
        .json(&json!({"campaign_id": "keyed", "title": "Keyed", "visibility": "private"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let made: Value = http
        .post(a.url("/api/keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "CMS", "access": "write", "campaigns": ["keyed"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = made["token"].as_str().unwrap();
    let key_id = made["key"]["id"].as_str().unwrap();

    let write = |server: &TestServer, title: &str| {
        http.patch(server.url("/api/campaigns/keyed"))
            .bearer_auth(key)
            .json(&json!({"updates": {"title": title}}))
            .send()
    };
    assert_eq!(write(&b, "From B").await.unwrap().status(), 200);
    // Its use, recorded on B, is in Ada's list on A.
    let mut listed = Value::Null;
    for _ in 0..50 {
        listed = http
            .get(a.url("/api/keys"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if listed[0]["last_used_at"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(listed[0]["last_used_at"].is_string(), "{listed}");

    let revoked = http
        .delete(a.url(&format!("/api/keys/{key_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(
        write(&b, "Too late").await.unwrap().status(),
        401,
        "revoked on A, refused on B at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_send_each_change_once_across_two_instances() {
    use std::sync::{Arc, Mutex};
    let redis = TestRedis::start();
    let allow = ["--webhook-allow-hosts", "127.0.0.1"];
    let a = instance(&redis, &allow).await;
    let b = instance(&redis, &allow).await;
    let (_, token) = a.sign_in("Ada").await;
    let http = reqwest::Client::new();
    let created = http
        .post(a.url("/api/campaigns"))
        .bearer_auth(&token)
        .json(&json!({"campaign_id": "hooked", "title": "H"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // A receiver that records each request's version.
    let got: Arc<Mutex<Vec<u64>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let recorded = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let recorded = recorded.clone();
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap();
                recorded
                    .lock()
                    .unwrap()
                    .push(body["data"]["version"].as_u64().unwrap());
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let registered = http
        .post(a.url("/api/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": url, "campaign": "hooked"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);

    // Writes on both instances; both run a deliverer; the endpoint hears each change once.
    for i in 0..100 {
        let server = if i % 2 == 0 { &a } else { &b };
        let written = http
            .patch(server.url("/api/campaigns/hooked"))
            .bearer_auth(&token)
            .json(&json!({"updates": {"title": format!("T{i}")}}))
            .send()
            .await
            .unwrap();
        assert_eq!(written.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !got.lock().unwrap().contains(&101) {
        assert!(
            Instant::now() < deadline,
            "not all arrived: {:?}",
            got.lock().unwrap().last()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        *got.lock().unwrap(),
        (2..=101).collect::<Vec<_>>(),
        "each change once, in order, from whichever instance holds the lease"
    );
}
