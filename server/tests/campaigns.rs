//! Live campaign state through real WebSockets against a real server: fan-out, ordering, resume,
//! presence, permissions, bad input, restarts.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, WsClient};
use serde_json::{json, Value};

async fn owner_with_campaign(server: &TestServer, id: &str) -> (WsClient, String) {
    let (_, token) = server.sign_in("Owner").await;
    let mut owner = server.connect_as(&token).await;
    owner.create_campaign(id, "Spring launch").await;
    (owner, token)
}

#[tokio::test]
async fn every_subscriber_sees_every_change_in_order() {
    let server = TestServer::start_with(&["--write-rate", "1000"]).await;
    let (mut owner, _) = owner_with_campaign(&server, "fanout").await;
    let mut viewers = Vec::new();
    for i in 0..20 {
        let (_, token) = server.sign_in(&format!("Viewer {i}")).await;
        let mut viewer = server.connect_as(&token).await;
        let reply = viewer.subscribe("fanout", None).await;
        assert_eq!(reply["payload"]["resume"]["kind"], "snapshot");
        assert_eq!(reply["payload"]["resume"]["reason"], "initial");
        assert_eq!(reply["payload"]["role"], "viewer");
        viewers.push(viewer);
    }
    for n in 0..50 {
        let reply = owner
            .update(
                "fanout",
                json!({"title": format!("Title {n}")}),
                &format!("u{n}"),
            )
            .await;
        assert_eq!(reply["type"], "campaign:update:v1:success", "{reply}");
        assert_eq!(reply["payload"]["version"], n + 2);
    }
    for viewer in &mut viewers {
        for n in 0..50u64 {
            let event = viewer.next_state_event().await;
            assert_eq!(event["payload"]["version"], n + 2);
            assert_eq!(event["payload"]["change"]["kind"], "fields");
            assert_eq!(
                event["payload"]["change"]["updates"]["title"],
                format!("Title {n}")
            );
            assert_eq!(event["payload"]["changed_by"]["display_name"], "Owner");
            assert_eq!(event["metadata"]["event_id"], event["payload"]["event_id"]);
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn events_apply_to_the_snapshot_and_reproduce_the_server_state() {
    let server = TestServer::start().await;
    let (mut owner, _) = owner_with_campaign(&server, "replay").await;
    let mut viewer = server.connect().await; // anonymous visitors may watch
    let reply = viewer.subscribe("replay", None).await;
    let mut state: rally_app::model::CampaignState =
        serde_json::from_value(reply["payload"]["resume"]["campaign"].clone()).unwrap();

    owner
        .update(
            "replay",
            json!({"description": "All hands", "status": "active"}),
            "a",
        )
        .await;
    owner
        .request(
            "campaign:feature:v1:requested",
            json!({"campaign_id": "replay", "op": "add", "features": ["chat", "polls"]}),
            "b",
        )
        .await;
    owner
        .request(
            "campaign:feature:v1:requested",
            json!({"campaign_id": "replay", "op": "remove", "features": ["chat"]}),
            "c",
        )
        .await;
    owner.request("campaign:config:v1:requested", json!({"campaign_id": "replay", "section": "ui_content", "values": {"hero": {"title": "Hi", "color": "red"}}}), "d").await;
    owner.request("campaign:config:v1:requested", json!({"campaign_id": "replay", "section": "ui_content", "values": {"hero": {"color": null}}, "mode": "merge"}), "e").await;
    for _ in 0..5 {
        let event: rally_app::model::CampaignEvent =
            serde_json::from_value(viewer.next_state_event().await["payload"].clone()).unwrap();
        state.apply_event(&event).unwrap();
    }
    let snapshot = owner
        .request(
            "campaign:snapshot:v1:requested",
            json!({"campaign_id": "replay"}),
            "s",
        )
        .await;
    let server_state: rally_app::model::CampaignState =
        serde_json::from_value(snapshot["payload"]["campaign"].clone()).unwrap();
    assert_eq!(state, server_state);
    assert_eq!(server_state.version, 6);
    assert_eq!(
        server_state.config.values().next().unwrap(),
        json!({"hero": {"title": "Hi"}}).as_object().unwrap()
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn resubscribing_with_since_version_gets_exactly_the_missed_events() {
    let server = TestServer::start().await;
    let (mut owner, _) = owner_with_campaign(&server, "resume").await;
    let mut viewer = server.connect().await;
    viewer.subscribe("resume", None).await;
    owner.update("resume", json!({"title": "v2"}), "1").await;
    assert_eq!(viewer.next_state_event().await["payload"]["version"], 2);
    drop(viewer);

    for n in 3..=9 {
        owner
            .update(
                "resume",
                json!({"title": format!("v{n}")}),
                &format!("u{n}"),
            )
            .await;
    }
    let mut viewer = server.connect().await;
    let reply = viewer.subscribe("resume", Some(2)).await;
    assert_eq!(
        reply["payload"]["resume"],
        json!({"kind": "events", "from_version": 3, "to_version": 9})
    );
    for n in 3..=9u64 {
        let event = viewer.next_state_event().await;
        assert_eq!(event["payload"]["version"], n);
        assert_eq!(
            event["payload"]["change"]["updates"]["title"],
            format!("v{n}")
        );
    }
    // Then live events continue seamlessly.
    owner.update("resume", json!({"title": "v10"}), "u10").await;
    assert_eq!(viewer.next_state_event().await["payload"]["version"], 10);

    // Up to date: nothing to replay.
    let mut fresh = server.connect().await;
    let reply = fresh.subscribe("resume", Some(10)).await;
    assert_eq!(
        reply["payload"]["resume"],
        json!({"kind": "events", "from_version": 11, "to_version": 10})
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_resume_older_than_history_gets_a_marked_snapshot() {
    let server = TestServer::start_with(&["--history-len", "5"]).await;
    let (mut owner, _) = owner_with_campaign(&server, "window").await;
    for n in 0..10 {
        owner
            .update(
                "window",
                json!({"title": format!("t{n}")}),
                &format!("u{n}"),
            )
            .await;
    }
    let mut viewer = server.connect().await;
    let reply = viewer.subscribe("window", Some(3)).await;
    assert_eq!(reply["payload"]["resume"]["kind"], "snapshot");
    assert_eq!(reply["payload"]["resume"]["reason"], "history_truncated");
    assert_eq!(reply["payload"]["resume"]["campaign"]["version"], 11);
    let reply = viewer.subscribe("window", Some(6)).await;
    assert_eq!(
        reply["payload"]["resume"],
        json!({"kind": "events", "from_version": 7, "to_version": 11})
    );
    let reply = viewer.subscribe("window", Some(99)).await;
    assert_eq!(reply["payload"]["resume"]["reason"], "ahead");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_stalled_subscriber_is_cut_after_5_s_while_others_keep_their_latency() {
    let server = TestServer::start_with(&["--write-rate", "100000"]).await;
    let (mut owner, _) = owner_with_campaign(&server, "stall").await;
    let mut stalled = common::connect_small_buffer(server.addr).await;
    stalled.subscribe("stall", None).await;
    let mut healthy = server.connect().await;
    healthy.subscribe("stall", None).await;

    // ~16 KiB per event so the stalled client's socket buffers fill quickly.
    let blob = "x".repeat(15_000);
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(9) {
        let sent = Instant::now();
        let reply = owner
            .request("campaign:config:v1:requested", json!({"campaign_id": "stall", "section": "blob", "values": {"n": n, "blob": blob}, "mode": "replace"}), &format!("w{n}"))
            .await;
        assert_eq!(reply["type"], "campaign:config:v1:success", "{reply}");
        let event = healthy.next_state_event().await;
        latencies.push(sent.elapsed());
        assert_eq!(
            event["payload"]["version"],
            n + 2,
            "healthy subscriber misses nothing"
        );
        n += 1;
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(n > 200, "only {n} updates in 9 s");
    assert!(
        p99 < Duration::from_millis(250),
        "healthy subscriber's p99 was {p99:?} while another stalled"
    );

    // The server gave up on the stalled client: it no longer counts in presence (healthy + probe).
    let mut probe = server.connect().await;
    let reply = probe.subscribe("stall", None).await;
    let presence = &reply["payload"]["presence"];
    assert_eq!(presence["count"], 2, "{presence}");
    assert_eq!(
        presence["viewers"][0]["connections"], 2,
        "anonymous viewers share one entry"
    );

    // When the stalled client finally reads, it gets the events that fit, in order, and then the
    // slow-consumer close (or a reset, if even the close frame did not fit).
    use futures_util::StreamExt;
    let mut last_version = 1;
    let mut close_code = None;
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(5), stalled.socket.next()).await
    {
        match message {
            tokio_tungstenite::tungstenite::Message::Text(text) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == "campaign:state:v1:success" {
                    let version = frame["payload"]["version"].as_u64().unwrap();
                    assert_eq!(version, last_version + 1, "no gap before the cut");
                    last_version = version;
                }
            }
            tokio_tungstenite::tungstenite::Message::Close(frame) => {
                close_code = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    assert!(
        last_version < n + 1,
        "the stalled client cannot have received everything"
    );
    if let Some(code) = close_code {
        assert_eq!(code, 4008);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn presence_lists_who_is_here_and_announces_joins_and_leaves() {
    let server = TestServer::start().await;
    let (mut owner, _) = owner_with_campaign(&server, "room").await;
    let reply = owner.subscribe("room", None).await;
    assert_eq!(reply["payload"]["presence"]["count"], 1);
    assert_eq!(reply["payload"]["role"], "owner");

    let (_, token) = server.sign_in("Grace").await;
    let mut grace = server.connect_as(&token).await;
    let reply = grace.subscribe("room", None).await;
    assert_eq!(reply["payload"]["presence"]["count"], 2);
    let names: Vec<&str> = reply["payload"]["presence"]["viewers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Grace", "Owner"]);

    let frames = owner
        .recv_until(|f| {
            f["type"] == "campaign:presence:v1:success"
                && f["payload"]["joined"][0]["display_name"] == "Grace"
        })
        .await;
    let joined = frames.last().unwrap();
    assert_eq!(joined["payload"]["joined"][0]["display_name"], "Grace");
    assert_eq!(joined["payload"]["presence"]["count"], 2);

    // A second tab of the same person is one viewer with two connections.
    let mut grace2 = server.connect_as(&token).await;
    let reply = grace2.subscribe("room", None).await;
    assert_eq!(reply["payload"]["presence"]["count"], 2);

    drop(grace);
    drop(grace2);
    // Both tabs leaving may be announced in one coalesced push or two; either way Grace is
    // named as having left and the count ends at 1.
    let mut left = 0;
    loop {
        let frame = owner.recv_json().await;
        if frame["type"] != "campaign:presence:v1:success" {
            continue;
        }
        left += frame["payload"]["left"].as_array().map_or(0, |l| {
            l.iter().filter(|p| p["display_name"] == "Grace").count()
        });
        if frame["payload"]["presence"]["count"] == 1 {
            break;
        }
    }
    assert!(left >= 1, "Grace's leaving was announced");
    let snapshot = owner.subscribe("room", None).await;
    assert_eq!(
        snapshot["payload"]["presence"]["count"], 1,
        "resubscribing does not duplicate"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn viewers_cannot_write_until_invited() {
    let server = TestServer::start().await;
    let (_owner, owner_token) = owner_with_campaign(&server, "guarded").await;
    let (_, viewer_token) = server.sign_in("Viewer").await;
    let mut viewer = server.connect_as(&viewer_token).await;
    for (ty, payload) in [
        (
            "campaign:update:v1:requested",
            json!({"campaign_id": "guarded", "updates": {"title": "x"}}),
        ),
        (
            "campaign:feature:v1:requested",
            json!({"campaign_id": "guarded", "op": "add", "features": ["x"]}),
        ),
        (
            "campaign:config:v1:requested",
            json!({"campaign_id": "guarded", "section": "s", "values": {"a": 1}}),
        ),
    ] {
        let reply = viewer.request(ty, payload, "w").await;
        assert_eq!(reply["payload"]["code"], "forbidden", "{reply}");
    }
    let mut anonymous = server.connect().await;
    let reply = anonymous
        .update("guarded", json!({"title": "x"}), "anon")
        .await;
    assert_eq!(reply["payload"]["code"], "forbidden");
    let reply = anonymous.create_campaign_raw("mine").await;
    assert_eq!(reply["payload"]["code"], "forbidden");

    // The owner invites; the viewer accepts and becomes an editor.
    let http = reqwest::Client::new();
    let viewer_denied = http
        .post(server.url("/api/campaigns/guarded/invites"))
        .bearer_auth(&viewer_token)
        .send()
        .await
        .unwrap();
    assert_eq!(viewer_denied.status(), 403);
    let invite: Value = http
        .post(server.url("/api/campaigns/guarded/invites"))
        .bearer_auth(&owner_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = invite["token"].as_str().unwrap();
    assert!(invite["path"].as_str().unwrap().starts_with("/invite/"));
    // The link says what it offers and who made it, to anyone holding it.
    let details: Value = http
        .get(server.url(&format!("/api/invites/{token}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(details["campaign_id"], "guarded");
    assert_eq!(details["invited_by"], "Owner");
    assert_eq!(details["role"], "editor");
    assert!(details["title"].is_string(), "{details}");
    let bad = http
        .get(server.url("/api/invites/not.valid"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let accepted: Value = http
        .post(server.url(&format!("/api/invites/{token}/accept")))
        .bearer_auth(&viewer_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(accepted["role"], "editor");
    let reply = viewer
        .update("guarded", json!({"title": "Edited by editor"}), "w2")
        .await;
    assert_eq!(reply["type"], "campaign:update:v1:success", "{reply}");
    let forged = http
        .post(server.url("/api/invites/not.valid/accept"))
        .bearer_auth(&viewer_token)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_typed_failures_and_changes_nothing() {
    let server = TestServer::start_with(&["--max-subscriptions", "2", "--write-rate", "5"]).await;
    let (mut owner, _) = owner_with_campaign(&server, "table").await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "campaign:update:v1:requested",
            json!({"campaign_id": "table", "updates": {"title": 7}}),
            "invalid",
        ),
        (
            "campaign:update:v1:requested",
            json!({"campaign_id": "table", "updates": {"colour": "red"}}),
            "invalid",
        ),
        (
            "campaign:update:v1:requested",
            json!({"campaign_id": "table", "updates": {}}),
            "invalid",
        ),
        (
            "campaign:update:v1:requested",
            json!({"campaign_id": "Not An Id", "updates": {"title": "x"}}),
            "invalid",
        ),
        (
            "campaign:update:v1:requested",
            json!({"updates": {"title": "x"}}),
            "invalid",
        ),
        (
            "campaign:update:v1:requested",
            json!({"campaign_id": "nope", "updates": {"title": "x"}}),
            "not_found",
        ),
        (
            "campaign:update:v1:requested",
            json!({"campaign_id": "table", "updates": {"title": "t".repeat(201)}}),
            "too_large",
        ),
        (
            "campaign:feature:v1:requested",
            json!({"campaign_id": "table", "op": "toggle", "features": ["x"]}),
            "invalid",
        ),
        (
            "campaign:feature:v1:requested",
            json!({"campaign_id": "table", "op": "set", "features": (0..65).map(|i| format!("f{i}")).collect::<Vec<_>>()}),
            "too_large",
        ),
        (
            "campaign:config:v1:requested",
            json!({"campaign_id": "table", "section": "ui_content", "values": [1, 2]}),
            "invalid",
        ),
        (
            "campaign:config:v1:requested",
            json!({"campaign_id": "table", "section": "ui_content", "values": {"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":1}}}}}}}}}}),
            "too_large",
        ),
        (
            "campaign:subscribe:v1:requested",
            json!({"campaign_id": "nope"}),
            "not_found",
        ),
        (
            "campaign:snapshot:v1:requested",
            json!({"campaign_id": "nope"}),
            "not_found",
        ),
        (
            "campaign:create:v1:requested",
            json!({"campaign_id": "table", "title": "dup"}),
            "conflict",
        ),
    ];
    // Spread writes out so the write-rate limit (5/s, burst 10) is not what answers.
    for (i, (ty, payload, code)) in cases.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(210)).await;
        let reply = owner.request(ty, payload.clone(), &format!("bad{i}")).await;
        assert_eq!(
            reply["type"],
            ty.replace("requested", "failed"),
            "case {i}: {reply}"
        );
        assert_eq!(reply["payload"]["code"], *code, "case {i}: {reply}");
    }
    let snapshot = owner
        .request(
            "campaign:snapshot:v1:requested",
            json!({"campaign_id": "table"}),
            "snap",
        )
        .await;
    assert_eq!(
        snapshot["payload"]["campaign"]["version"], 1,
        "nothing changed"
    );

    // Too many subscriptions.
    owner.create_campaign("second", "2").await;
    owner.create_campaign("third", "3").await;
    owner.subscribe("table", None).await;
    owner.subscribe("second", None).await;
    owner.subscribe("second", None).await; // replacing does not count twice
    let reply = owner
        .request(
            "campaign:subscribe:v1:requested",
            json!({"campaign_id": "third"}),
            "s3",
        )
        .await;
    assert_eq!(reply["payload"]["code"], "limit_exceeded");

    // Write rate.
    let mut limited = 0;
    for n in 0..30 {
        let reply = owner
            .update("table", json!({"title": format!("r{n}")}), &format!("r{n}"))
            .await;
        if reply["payload"]["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(
        limited >= 15,
        "only {limited} of 30 rapid writes were rate limited"
    );

    // The connection survived all of it.
    let reply = owner
        .request("system:ping:v1:requested", json!({}), "alive")
        .await;
    assert_eq!(reply["type"], "system:ping:v1:success");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn stale_base_version_conflicts_and_nothing_is_applied() {
    let server = TestServer::start().await;
    let (mut owner, token) = owner_with_campaign(&server, "race").await;
    let mut other_tab = server.connect_as(&token).await;
    owner.update("race", json!({"title": "Mine"}), "a").await; // v2
    let reply = other_tab
        .request(
            "campaign:update:v1:requested",
            json!({"campaign_id": "race", "updates": {"title": "Theirs"}, "base_version": 1}),
            "b",
        )
        .await;
    assert_eq!(reply["payload"]["code"], "conflict", "{reply}");
    let reply = other_tab
        .request(
            "campaign:update:v1:requested",
            json!({"campaign_id": "race", "updates": {"description": "Theirs"}, "base_version": 1}),
            "c",
        )
        .await;
    assert_eq!(
        reply["type"], "campaign:update:v1:success",
        "a field nobody touched since does not conflict"
    );
    server.stop().await.unwrap();
}

/// When a write is refused because someone else changed the same thing first, everyone
/// following hears who was kept and who was refused (the kept person's page says so); clashing
/// with your own change, from another tab, tells nobody.
#[tokio::test]
async fn the_person_whose_change_was_kept_hears_of_the_refused_one() {
    let server = TestServer::start().await;
    let (mut ada, ada_token) = owner_with_campaign(&server, "kept").await;
    ada.subscribe("kept", None).await;
    let http = reqwest::Client::new();
    let invite: Value = http
        .post(server.url("/api/campaigns/kept/invites"))
        .bearer_auth(&ada_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, bob_token) = server.sign_in("Bob").await;
    let accept = format!("/api/invites/{}/accept", invite["token"].as_str().unwrap());
    let accepted = http
        .post(server.url(&accept))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let mut bob = server.connect_as(&bob_token).await;
    let stale = |id: &str| json!({"campaign_id": "kept", "updates": {"title": format!("From {id}")}, "base_version": 3});
    let both = json!({"title": "Ada's", "status": "active"});
    let reply = ada.update("kept", both, "a").await; // v4
    assert_eq!(reply["type"], "campaign:update:v1:success", "{reply}");
    let late_status =
        json!({"campaign_id": "kept", "updates": {"status": "paused"}, "base_version": 3});
    let reply = bob
        .request("campaign:update:v1:requested", late_status, "b")
        .await;
    assert_eq!(reply["payload"]["code"], "conflict", "{reply}");
    let frames = ada
        .recv_until(|f| f["type"] == "campaign:overruled:v1:completed")
        .await;
    let pushed = &frames.last().unwrap()["payload"];
    assert_eq!(pushed["field"], "status", "what both changed: {pushed}");
    assert_eq!(pushed["kept"]["display_name"], "Owner");
    assert_eq!(pushed["refused"]["display_name"], "Bob");
    assert_eq!(pushed["version"], 4);

    let mut other_tab = server.connect_as(&ada_token).await;
    let reply = other_tab
        .request("campaign:update:v1:requested", stale("tab"), "t")
        .await;
    assert_eq!(reply["payload"]["code"], "conflict", "{reply}");
    ada.update("kept", json!({"status": "ended"}), "s").await;
    let frames = ada
        .recv_until(|f| f["payload"]["change"]["updates"]["status"] == "ended")
        .await;
    assert!(
        frames
            .iter()
            .all(|f| f["type"] != "campaign:overruled:v1:completed"),
        "nobody is told of a clash with their own change: {frames:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unsubscribe_stops_events_and_a_panic_reloads_only_that_campaign() {
    let server = TestServer::start().await;
    let (mut owner, _) = owner_with_campaign(&server, "fragile").await;
    owner.create_campaign("sturdy", "Sturdy").await;
    let mut viewer = server.connect().await;
    viewer.subscribe("fragile", None).await;
    viewer.subscribe("sturdy", None).await;

    let reply = viewer
        .request(
            "campaign:unsubscribe:v1:requested",
            json!({"campaign_id": "sturdy"}),
            "un",
        )
        .await;
    assert_eq!(reply["type"], "campaign:unsubscribe:v1:success");
    owner
        .update("sturdy", json!({"title": "unseen"}), "x")
        .await;
    owner.update("fragile", json!({"title": "seen"}), "y").await;
    let event = viewer.next_state_event().await;
    assert_eq!(
        event["payload"]["campaign_id"], "fragile",
        "no events after unsubscribe"
    );

    // Panic inside the fragile campaign's task.
    let id = rally_app::model::CampaignId::parse("fragile").unwrap();
    server_manager(&server).inject_panic(&id).await.unwrap();
    let reply = owner
        .update("fragile", json!({"title": "after the panic"}), "z")
        .await;
    assert_eq!(
        reply["payload"]["version"], 3,
        "reloaded from the store with nothing lost: {reply}"
    );
    assert_eq!(
        viewer.next_state_event().await["payload"]["version"],
        3,
        "subscribers kept"
    );
    let reply = owner.update("sturdy", json!({"title": "fine"}), "w").await;
    assert_eq!(reply["type"], "campaign:update:v1:success");
    server.stop().await.unwrap();
}

fn server_manager(server: &TestServer) -> rally::campaigns::StateManager {
    server.manager.clone().expect("in-process server")
}

#[tokio::test]
async fn acknowledged_changes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(&dir, &[]).await;
    let (mut owner, token) = owner_with_campaign(&server, "durable").await;
    for n in 0..20 {
        let reply = owner
            .update(
                "durable",
                json!({"title": format!("t{n}")}),
                &format!("u{n}"),
            )
            .await;
        assert_eq!(reply["type"], "campaign:update:v1:success");
    }
    drop(owner);
    server.stop().await.unwrap();

    let server = TestServer::start_in(&dir, &[]).await;
    let mut owner = server.connect_as(&token).await; // the same session secret was kept
    let reply = owner.subscribe("durable", Some(15)).await;
    assert_eq!(
        reply["payload"]["role"], "owner",
        "sessions survive restarts"
    );
    assert_eq!(
        reply["payload"]["resume"],
        json!({"kind": "events", "from_version": 16, "to_version": 21})
    );
    let events = [16, 17, 18, 19, 20, 21];
    for version in events {
        assert_eq!(
            owner.next_state_event().await["payload"]["version"],
            version
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn idle_campaigns_are_unloaded_and_come_back_on_demand() {
    let server = TestServer::start_with(&["--idle-unload-secs", "1"]).await;
    let (mut owner, _) = owner_with_campaign(&server, "sleepy").await;
    let manager = server_manager(&server);
    assert_eq!(manager.loaded().len(), 1);
    let mut viewer = server.connect().await;
    viewer.subscribe("sleepy", None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        manager.loaded().len(),
        1,
        "a subscribed campaign stays loaded"
    );
    drop(viewer);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !manager.loaded().is_empty() {
        assert!(Instant::now() < deadline, "campaign never unloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = owner.update("sleepy", json!({"title": "awake"}), "w").await;
    assert_eq!(reply["payload"]["version"], 2);
    server.stop().await.unwrap();
}
