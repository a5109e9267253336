//! The media relay end to end: headless `webrtc` peers signal over Rally's WebSocket, publish
//! generated VP8 and Opus RTP through the relay, and receive each other's packets.
//!
//! The publisher sends only delta frames unless someone asks it for a keyframe (PLI), so a
//! subscriber that gets a keyframe soon after joining proves the relay asked for one.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestServer;
use rally_testkit::{is_vp8_keyframe, Publisher, Signaling, Stream, Viewer};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const CAMPAIGN: &str = "live-room";

/// What a viewer received.
#[derive(Clone, Debug)]
struct Received {
    kind: RtpCodecKind,
    payload: Bytes,
    at: Instant,
    keyframe: bool,
}

/// A viewer that records every packet.
struct Watching {
    viewer: Viewer,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Watching {
    fn start(signal: Signaling, pushes: mpsc::UnboundedReceiver<Value>) -> Watching {
        let received: Arc<Mutex<Vec<Received>>> = Default::default();
        let sink = received.clone();
        let viewer = Viewer::start(
            signal,
            pushes,
            CAMPAIGN,
            Arc::new(move |kind, payload: &[u8], at| {
                sink.lock().unwrap().push(Received {
                    kind,
                    // A copy: the received packet's bytes may share a large receive buffer.
                    payload: Bytes::copy_from_slice(payload),
                    at,
                    keyframe: kind == RtpCodecKind::Video && is_vp8_keyframe(payload),
                })
            }),
        );
        Watching { viewer, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Go live, remembering every payload sent.
async fn go_live(signal: &Signaling, sent: &Arc<Mutex<HashSet<Bytes>>>) -> Publisher {
    let sent = sent.clone();
    Publisher::go_live(
        signal,
        CAMPAIGN,
        Stream::default(),
        Arc::new(move |payload: &Bytes| {
            sent.lock().unwrap().insert(payload.clone());
        }),
    )
    .await
    .expect("goes live")
}

async fn request(signal: &Signaling, event_type: &str, payload: Value) -> Value {
    signal.request(event_type, payload).await.expect("a reply")
}

async fn join(
    server: &TestServer,
    token: &str,
) -> (Signaling, mpsc::UnboundedReceiver<Value>, Value) {
    join_at(server.addr, token).await
}

async fn join_at(
    addr: std::net::SocketAddr,
    token: &str,
) -> (Signaling, mpsc::UnboundedReceiver<Value>, Value) {
    let (signal, pushes) = Signaling::connect(addr, Some(token)).await.unwrap();
    let reply = request(
        &signal,
        "media:join:v1:requested",
        json!({"campaign_id": CAMPAIGN}),
    )
    .await;
    (signal, pushes, reply)
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn media_server() -> (TestServer, String) {
    let server = TestServer::start_with(&["--media-ip", "127.0.0.1"]).await;
    let (_, owner) = server.sign_in("Ada").await;
    let mut ada = server.connect_as(&owner).await;
    ada.create_campaign(CAMPAIGN, "Live room").await;
    (server, owner)
}

/// Whether a presence push shows `name` with `live`.
fn shows_live(frame: &Value, name: &str, live: bool) -> bool {
    frame["type"] == "campaign:presence:v1:success"
        && frame["payload"]["presence"]["viewers"]
            .as_array()
            .is_some_and(|v| {
                v.iter()
                    .any(|v| v["display_name"] == name && v["live"] == live)
            })
}

/// Someone following the campaign without joining its live room learns from presence who is
/// live, and when they stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_shows_who_is_live_to_people_outside_the_room() {
    let (server, owner) = media_server().await;
    let mut follower = server.connect().await;
    follower.subscribe(CAMPAIGN, None).await;

    let (ada_signal, _ada_pushes) = Signaling::connect(server.addr, Some(&owner)).await.unwrap();
    let campaign = json!({"campaign_id": CAMPAIGN});
    let reply = request(
        &ada_signal,
        "campaign:subscribe:v1:requested",
        campaign.clone(),
    )
    .await;
    assert_eq!(reply["type"], "campaign:subscribe:v1:success", "{reply}");
    follower.recv_until(|f| shows_live(f, "Ada", false)).await;
    let reply = request(&ada_signal, "media:join:v1:requested", campaign.clone()).await;
    assert_eq!(reply["type"], "media:join:v1:success", "{reply}");
    let ada = go_live(&ada_signal, &Default::default()).await;
    follower.recv_until(|f| shows_live(f, "Ada", true)).await;

    let reply = request(&ada_signal, "media:leave:v1:requested", campaign).await;
    assert_eq!(reply["type"], "media:leave:v1:success", "{reply}");
    follower.recv_until(|f| shows_live(f, "Ada", false)).await;
    ada.stop().await;
}

/// Going live first and following the campaign afterwards shows as live too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn going_live_before_following_the_campaign_still_shows_live() {
    let (server, owner) = media_server().await;
    let mut follower = server.connect().await;
    follower.subscribe(CAMPAIGN, None).await;

    let (ada_signal, mut ada_pushes, joined) = join(&server, &owner).await;
    assert_eq!(joined["type"], "media:join:v1:success", "{joined}");
    let ada = go_live(&ada_signal, &Default::default()).await;
    // Her connection forwards the relay's "who is live" push only after noting she is live:
    // once it arrives, she is live before she follows the campaign.
    loop {
        let push = tokio::time::timeout(Duration::from_secs(5), ada_pushes.recv())
            .await
            .expect("a tracks push within 5 s")
            .expect("pushes keep coming");
        let live = push["type"] == "media:tracks:v1:success"
            && push["payload"]["publishers"].as_array().is_some_and(|p| {
                p.iter()
                    .any(|p| p["tracks"].as_array().is_some_and(|t| !t.is_empty()))
            });
        if live {
            break;
        }
    }
    let reply = request(
        &ada_signal,
        "campaign:subscribe:v1:requested",
        json!({"campaign_id": CAMPAIGN}),
    )
    .await;
    assert_eq!(reply["type"], "campaign:subscribe:v1:success", "{reply}");
    follower.recv_until(|f| shows_live(f, "Ada", true)).await;
    ada.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_reaches_two_subscribers_and_a_late_joiner_gets_a_keyframe() {
    let (server, owner) = media_server().await;
    let (_, bob_token) = server.sign_in("Bob").await;
    let (_, carol_token) = server.sign_in("Carol").await;

    // Bob watches before anyone is live.
    let (bob_signal, bob_pushes, joined) = join(&server, &bob_token).await;
    assert_eq!(joined["type"], "media:join:v1:success", "{joined}");
    assert_eq!(joined["payload"]["can_publish"], false);
    assert_eq!(joined["payload"]["publishers"], json!([]));
    let bob = Watching::start(bob_signal, bob_pushes);

    // Ada (owner) goes live.
    let (ada_signal, _ada_pushes, joined) = join(&server, &owner).await;
    assert_eq!(joined["payload"]["can_publish"], true, "{joined}");
    let ada_sent: Arc<Mutex<HashSet<Bytes>>> = Default::default();
    let ada = go_live(&ada_signal, &ada_sent).await;

    wait_until(
        "Bob to receive video and audio",
        Duration::from_secs(10),
        || {
            let got = bob.received();
            got.iter().any(|r| r.kind == RtpCodecKind::Video)
                && got.iter().any(|r| r.kind == RtpCodecKind::Audio)
        },
    )
    .await;
    let tracks = bob.viewer.last_tracks.lock().unwrap().clone();
    assert_eq!(tracks["publishers"][0]["display_name"], "Ada", "{tracks}");
    assert_eq!(
        tracks["publishers"][0]["tracks"].as_array().unwrap().len(),
        2
    );

    // A second of streaming, then Carol joins late.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let plis_before = ada.plis.load(std::sync::atomic::Ordering::Relaxed);
    let (carol_signal, carol_pushes, joined) = join(&server, &carol_token).await;
    assert_eq!(
        joined["payload"]["publishers"][0]["display_name"], "Ada",
        "a late joiner learns who is live: {joined}"
    );
    let joined_at = Instant::now();
    let carol = Watching::start(carol_signal, carol_pushes);
    wait_until(
        "Carol to receive a keyframe",
        Duration::from_secs(5),
        || carol.received().iter().any(|r| r.keyframe),
    )
    .await;
    let first_keyframe = carol.received().iter().find(|r| r.keyframe).unwrap().at;
    let connected = carol
        .viewer
        .connected_at
        .lock()
        .unwrap()
        .expect("Carol connected");
    println!(
        "late joiner: connected {:?} after join, first keyframe {:?} after connecting",
        connected - joined_at,
        first_keyframe.saturating_duration_since(connected)
    );
    assert!(
        first_keyframe.saturating_duration_since(connected) < Duration::from_secs(2),
        "the keyframe came soon after Carol connected"
    );
    assert!(
        ada.plis.load(std::sync::atomic::Ordering::Relaxed) > plis_before,
        "the relay asked the publisher for it"
    );

    // Bad input on every side disturbs nothing.
    let bad = request(
        &bob.viewer.signal,
        "media:publish:v1:requested",
        json!({"campaign_id": CAMPAIGN, "sdp": "v=0\r\n"}),
    )
    .await;
    assert_eq!(bad["type"], "media:publish:v1:failed");
    assert_eq!(bad["payload"]["code"], "invalid", "{bad}");
    let forbidden = request(
        &bob.viewer.signal,
        "media:publish:v1:requested",
        json!({"campaign_id": CAMPAIGN, "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n"}),
    )
    .await;
    assert_eq!(forbidden["payload"]["code"], "forbidden", "{forbidden}");
    let twice = request(
        &bob.viewer.signal,
        "media:join:v1:requested",
        json!({"campaign_id": CAMPAIGN}),
    )
    .await;
    assert_eq!(twice["payload"]["code"], "conflict", "{twice}");
    let garbage = request(
        &ada_signal,
        "media:publish:v1:requested",
        json!({"campaign_id": CAMPAIGN, "sdp": "v=0\r\nm=video 9 RTP/AVP 96\r\nthis is not sdp"}),
    )
    .await;
    assert_eq!(garbage["payload"]["code"], "invalid", "{garbage}");
    let candidate = request(&bob.viewer.signal, "media:candidate:v1:requested",
            json!({"campaign_id": CAMPAIGN, "transport": "publish", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"})).await;
    assert_eq!(candidate["payload"]["code"], "not_found", "{candidate}");
    let elsewhere = request(
        &bob.viewer.signal,
        "media:candidate:v1:requested",
        json!({"campaign_id": "other-room", "transport": "subscribe", "candidate": ""}),
    )
    .await;
    assert_eq!(elsewhere["payload"]["code"], "not_found", "{elsewhere}");
    let bad_candidate = request(&bob.viewer.signal, "media:candidate:v1:requested",
            json!({"campaign_id": CAMPAIGN, "transport": "subscribe", "candidate": "candidate:garbage"})).await;
    assert_eq!(
        bad_candidate["payload"]["code"], "invalid",
        "{bad_candidate}"
    );

    // Streaming went on through all of that.
    let before = bob.received().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(bob.received().len() > before + 20, "Bob still receives");

    // Every payload that arrived is one Ada sent, unchanged; nearly all of them arrived.
    let sent = ada_sent.lock().unwrap().clone();
    for viewer in [&bob, &carol] {
        let got = viewer.received();
        assert!(
            got.iter().all(|r| sent.contains(&r.payload)),
            "payloads match what was sent"
        );
        let unique: HashSet<&Bytes> = got.iter().map(|r| &r.payload).collect();
        assert_eq!(unique.len(), got.len(), "no packet arrived twice");
    }
    let bob_got = bob.received().len();
    println!(
        "sent {} packets, Bob received {bob_got}, Carol {}",
        sent.len(),
        carol.received().len()
    );

    // A refused re-offer (a media section without `a=mid`) changes nothing: the next valid
    // offer still renegotiates (an adversarial pass once left the connection stuck).
    let refused = request(
        &ada_signal,
        "media:publish:v1:requested",
        json!({"campaign_id": CAMPAIGN,
               "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}),
    )
    .await;
    assert_eq!(refused["payload"]["code"], "invalid", "{refused}");

    // Ada removes her microphone: the relay renegotiates, the others see only her camera.
    let mut ada = ada;
    ada.stop_audio(&ada_signal, CAMPAIGN).await.unwrap();
    wait_until(
        "Bob to see Ada's audio gone",
        Duration::from_secs(5),
        || {
            bob.viewer.last_tracks.lock().unwrap()["publishers"][0]["tracks"]
                .as_array()
                .is_some_and(|t| t.len() == 1 && t[0]["kind"] == "video")
        },
    )
    .await;
    let before = bob
        .received()
        .iter()
        .filter(|r| r.kind == RtpCodecKind::Video)
        .count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        bob.received()
            .iter()
            .filter(|r| r.kind == RtpCodecKind::Video)
            .count()
            > before,
        "video keeps flowing after the renegotiation"
    );

    // Ada leaves: the others learn she is no longer live.
    let left = request(
        &ada_signal,
        "media:leave:v1:requested",
        json!({"campaign_id": CAMPAIGN}),
    )
    .await;
    assert_eq!(left["type"], "media:leave:v1:success", "{left}");
    ada.stop().await;
    wait_until("Bob to see nobody live", Duration::from_secs(5), || {
        bob.viewer.last_tracks.lock().unwrap()["publishers"] == json!([])
    })
    .await;
    assert!(
        bob.viewer.offers.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "tracks removed by renegotiation"
    );
    assert!(bob.viewer.ended.lock().unwrap().is_empty());
    bob.viewer.task.abort();
    carol.viewer.task.abort();
    server.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Churn: resources come back. The server runs as its own process so its memory, sockets and
// tasks are measured alone, not mixed with the test's peers.

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// One value from the server's `/metrics`.
async fn metric(server: &common::ChildServer, name: &str) -> f64 {
    let body = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    sockets: usize,
    tasks: f64,
    participants: f64,
    tracks: f64,
    saturation: f64,
}

async fn usage(server: &common::ChildServer) -> Usage {
    let pid = server.child.id();
    Usage {
        rss_kib: rss_kib(pid),
        sockets: open_sockets(pid),
        tasks: metric(server, "rally_tokio_alive_tasks").await,
        participants: metric(server, "rally_media_participants").await,
        tracks: metric(server, "rally_media_tracks").await,
        saturation: metric(server, "rally_media_relay_saturation").await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_publish_leave_churn_returns_every_resource() {
    let dir = tempfile::tempdir().unwrap();
    // Six ports for the whole run: a port not given back would exhaust the range in a few cycles.
    let server = common::ChildServer::spawn(
        dir.path(),
        &[
            ("RALLY_MEDIA_IP", "127.0.0.1"),
            ("RALLY_MEDIA_UDP_PORTS", "41600-41605"),
        ],
    );
    let (_, owner) = common::sign_in(server.addr, "Ada").await;
    let mut ada = common::connect(server.addr, Some(&owner)).await;
    ada.create_campaign(CAMPAIGN, "Live room").await;
    let (_, viewer_token) = common::sign_in(server.addr, "Watcher").await;
    let (signal, pushes, joined) = join_at(server.addr, &viewer_token).await;
    assert_eq!(joined["type"], "media:join:v1:success");
    let watcher = Watching::start(signal, pushes);

    // One WebSocket for the publisher, reused: the cycles measure the relay, not TCP.
    let (publisher, mut publisher_pushes) =
        Signaling::connect(server.addr, Some(&owner)).await.unwrap();
    tokio::spawn(async move { while publisher_pushes.recv().await.is_some() {} });

    let cycle = |n: usize| {
        let publisher = &publisher;
        let received = watcher.received.clone();
        async move {
            let joined = request(
                publisher,
                "media:join:v1:requested",
                json!({"campaign_id": CAMPAIGN}),
            )
            .await;
            assert_eq!(
                joined["type"], "media:join:v1:success",
                "cycle {n}: {joined}"
            );
            let before = received.lock().unwrap().len();
            let live = go_live(publisher, &Default::default()).await;
            // Wait until the watcher receives this cycle's media (proves a real session).
            let deadline = Instant::now() + Duration::from_secs(10);
            while received.lock().unwrap().len() < before + 4 {
                assert!(Instant::now() < deadline, "cycle {n}: nothing forwarded");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let left = request(
                publisher,
                "media:leave:v1:requested",
                json!({"campaign_id": CAMPAIGN}),
            )
            .await;
            assert_eq!(left["type"], "media:leave:v1:success", "cycle {n}: {left}");
            live.stop().await;
            // What the watcher saw is checked; keeping it would grow the test, not the relay.
            received.lock().unwrap().clear();
        }
    };
    let settle = || tokio::time::sleep(Duration::from_millis(1500));

    for n in 0..10 {
        cycle(n).await;
    }
    settle().await;
    let baseline = usage(&server).await;
    const CYCLES: usize = 200;
    let started = Instant::now();
    for n in 0..CYCLES {
        cycle(10 + n).await;
        if (n + 1) % 50 == 0 {
            println!(
                "  after {} cycles: server RSS {} KiB",
                n + 1,
                rss_kib(server.child.id())
            );
        }
    }
    let elapsed = started.elapsed();
    settle().await;
    let after = usage(&server).await;
    println!(
        "churn: {CYCLES} join/publish/leave cycles in {elapsed:.1?} (server process)\n  \
         RSS {} KiB -> {} KiB ({:+} KiB)\n  tasks {} -> {}\n  sockets {} -> {}\n  \
         participants {} -> {}, tracks {} -> {}",
        baseline.rss_kib,
        after.rss_kib,
        after.rss_kib as i64 - baseline.rss_kib as i64,
        baseline.tasks,
        after.tasks,
        baseline.sockets,
        after.sockets,
        baseline.participants,
        after.participants,
        baseline.tracks,
        after.tracks,
    );
    assert_eq!(after.participants, 1.0, "only the watcher is left");
    assert_eq!(after.tracks, 0.0);
    assert_eq!(
        after.saturation, baseline.saturation,
        "every media port was given back"
    );
    assert!(
        after.saturation > 0.0,
        "the watcher holds one of the six ports"
    );
    assert!(after.tasks <= baseline.tasks, "tasks back to baseline");
    assert!(
        after.sockets <= baseline.sockets,
        "sockets back to baseline"
    );
    // Allocator slack, not a leak: a leaked peer connection per cycle would be megabytes.
    assert!(
        after.rss_kib < baseline.rss_kib + 4 * 1024,
        "server RSS grew {} KiB over {CYCLES} cycles",
        after.rss_kib as i64 - baseline.rss_kib as i64
    );
    watcher.viewer.task.abort();
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_session_logs_only_lifecycle_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::ChildServer::spawn(dir.path(), &[("RALLY_MEDIA_IP", "127.0.0.1")]);
    let (_, owner) = common::sign_in(server.addr, "Ada").await;
    let mut ada = common::connect(server.addr, Some(&owner)).await;
    ada.create_campaign(CAMPAIGN, "Live room").await;
    let (_, viewer_token) = common::sign_in(server.addr, "Watcher").await;
    let (signal, pushes, _) = join_at(server.addr, &viewer_token).await;
    let watcher = Watching::start(signal, pushes);
    let (publisher, _pushes, _) = join_at(server.addr, &owner).await;
    let live = go_live(&publisher, &Default::default()).await;
    wait_until("media to flow", Duration::from_secs(10), || {
        watcher.received().len() > 50
    })
    .await;
    // Routine trouble: a refused publish, a bad candidate.
    let refused = request(
        &watcher.viewer.signal,
        "media:publish:v1:requested",
        json!({"campaign_id": CAMPAIGN, "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n"}),
    )
    .await;
    assert_eq!(refused["payload"]["code"], "forbidden");
    let bad = request(
        &watcher.viewer.signal,
        "media:candidate:v1:requested",
        json!({"campaign_id": CAMPAIGN, "transport": "subscribe", "candidate": "candidate:x"}),
    )
    .await;
    assert_eq!(bad["payload"]["code"], "invalid");
    // The publisher's tab closes without leaving; then the watcher's.
    drop(publisher);
    live.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    watcher.viewer.task.abort();
    drop(watcher);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = server.log.clone();
    assert_eq!(server.terminate(), Some(0));
    let lines = common::level_and_message(log.lock().unwrap().iter());
    assert_eq!(
        lines,
        ["INFO rally started", "INFO rally shutting down", "INFO rally stopped"],
        "a media session (join, publish, forwarding, refusals, dropped connections) logs nothing at the default level"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_ip_is_what_browsers_are_told() {
    use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
    let server = TestServer::start_with(&[
        "--media-ip",
        "127.0.0.1",
        "--media-public-ip",
        "203.0.113.7",
    ])
    .await;
    let (_, owner) = server.sign_in("Ada").await;
    let mut ada = server.connect_as(&owner).await;
    ada.create_campaign(CAMPAIGN, "Live room").await;
    let (signal, _pushes, joined) = join(&server, &owner).await;
    assert_eq!(joined["payload"]["can_publish"], true);
    let mut peer = rally_testkit::Peer::new().await.unwrap();
    peer.pc
        .add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let offer = peer.pc.create_offer(None).await.unwrap();
    peer.pc.set_local_description(offer).await.unwrap();
    let sdp = peer.local_sdp().await.unwrap();
    let reply = request(
        &signal,
        "media:publish:v1:requested",
        json!({"campaign_id": CAMPAIGN, "sdp": sdp}),
    )
    .await;
    let answer = reply["payload"]["sdp"].as_str().unwrap();
    let candidates: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=candidate"))
        .collect();
    assert!(!candidates.is_empty(), "{answer}");
    assert!(
        candidates
            .iter()
            .all(|c| c.contains("203.0.113.7") && !c.contains("127.0.0.1")),
        "host candidates carry the public IP only: {candidates:?}"
    );
    let _ = peer.pc.close().await;
    server.stop().await.unwrap();
}

/// Redis mode: a campaign's media session runs on the instance that took its lease. A viewer
/// connected to another instance watches through it — signaling relayed over Redis, media
/// straight from the owner — and when the owner dies (SIGKILL: no goodbye), the viewer is told
/// and the next join starts the session on a live instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_spans_instances_and_recovers_when_an_instance_dies() {
    const SECRET: &str = "media-cluster-test-secret-of-enough-length";
    let redis = common::TestRedis::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let owner_instance = common::ChildServer::spawn(
        dir.path(),
        &[
            ("RALLY_REDIS_URL", url.as_str()),
            ("RALLY_SESSION_SECRET", SECRET),
            ("RALLY_MEDIA_IP", "127.0.0.1"),
        ],
    );
    let other = TestServer::start_with(&[
        "--redis-url",
        &url,
        "--session-secret",
        SECRET,
        "--media-ip",
        "127.0.0.1",
    ])
    .await;
    let (_, ada_token) = common::sign_in(owner_instance.addr, "Ada").await;
    let (_, bob_token) = common::sign_in(other.addr, "Bob").await;
    let mut ada = common::connect(owner_instance.addr, Some(&ada_token)).await;
    ada.create_campaign(CAMPAIGN, "Live room").await;

    // Ada joins first, on her instance: it takes the lease and runs the session.
    let (ada_signal, _ada_pushes, joined) = join_at(owner_instance.addr, &ada_token).await;
    assert_eq!(joined["type"], "media:join:v1:success", "{joined}");
    let lease = redis_get(&redis, &format!("rally:{{{CAMPAIGN}}}:media-owner"));
    assert!(lease.is_some(), "the owner holds a lease");
    let sent: Arc<Mutex<HashSet<Bytes>>> = Default::default();
    let _live = go_live(&ada_signal, &sent).await;

    // Bob joins on the other instance: his join, offer answers and candidates go to Ada's.
    let (bob_signal, bob_pushes, joined) = join_at(other.addr, &bob_token).await;
    assert_eq!(joined["type"], "media:join:v1:success", "{joined}");
    let bob = Watching::start(bob_signal, bob_pushes);
    wait_until(
        "Bob to receive Ada's video and audio",
        Duration::from_secs(10),
        || {
            let got = bob.received();
            got.iter().filter(|r| r.kind == RtpCodecKind::Video).count() > 20
                && got.iter().any(|r| r.kind == RtpCodecKind::Audio)
        },
    )
    .await;
    {
        let sent = sent.lock().unwrap();
        let got = bob.received();
        assert!(
            got.iter().all(|r| sent.contains(&r.payload)),
            "every payload Bob got is one Ada sent"
        );
    }
    // Refusals travel back typed, and disturb nothing.
    let forbidden = request(
        &bob.viewer.signal,
        "media:publish:v1:requested",
        json!({"campaign_id": CAMPAIGN, "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n"}),
    )
    .await;
    assert_eq!(forbidden["type"], "media:publish:v1:failed", "{forbidden}");
    assert_eq!(forbidden["payload"]["code"], "forbidden", "{forbidden}");
    let before = bob.received().len();
    wait_until("Bob's stream to go on", Duration::from_secs(5), || {
        bob.received().len() > before + 20
    })
    .await;
    let census = other.media.as_ref().unwrap().census();
    assert_eq!(
        (census.sessions, census.participants),
        (0, 0),
        "nothing of the session runs on Bob's instance"
    );
    assert_eq!(
        metric(&owner_instance, "rally_media_participants").await,
        2.0,
        "Ada's instance holds both participants"
    );
    println!(
        "lease {lease:?}; Bob received {} packets through the owner",
        bob.received().len()
    );

    // The owner dies without a word. Its lease runs out, and Bob's instance tells him.
    let killed = Instant::now();
    owner_instance.kill();
    wait_until(
        "Bob to learn that the session moved",
        cluster_timeout(),
        || !bob.viewer.ended.lock().unwrap().is_empty(),
    )
    .await;
    let ended = bob.viewer.ended.lock().unwrap()[0].clone();
    assert_eq!(
        ended["payload"]["reason"], "the media relay moved; join again",
        "{ended}"
    );
    println!("Bob told after {:.1} s", killed.elapsed().as_secs_f64());

    // Bob joins again: his instance takes the session over. Ada, reconnected there, goes live.
    let (bob_signal, bob_pushes, joined) = join_at(other.addr, &bob_token).await;
    assert_eq!(joined["type"], "media:join:v1:success", "{joined}");
    assert_eq!(joined["payload"]["publishers"], json!([]));
    assert_eq!(other.media.as_ref().unwrap().census().sessions, 1);
    let bob = Watching::start(bob_signal, bob_pushes);
    let (ada_signal, _ada_pushes, joined) = join_at(other.addr, &ada_token).await;
    assert_eq!(joined["type"], "media:join:v1:success", "{joined}");
    let _live = go_live(&ada_signal, &sent).await;
    wait_until("Bob to receive Ada again", Duration::from_secs(10), || {
        bob.received().iter().any(|r| r.kind == RtpCodecKind::Video)
    })
    .await;
    let lease_now = redis_get(&redis, &format!("rally:{{{CAMPAIGN}}}:media-owner"));
    assert!(
        lease_now.is_some() && lease_now != lease,
        "{lease_now:?} replaced {lease:?}"
    );

    // A viewer's instance dies (its viewer's media keeps flowing from the owner, so only the
    // instance's silence can tell): the owner lets go of that viewer.
    let third_dir = tempfile::tempdir().unwrap();
    let third = common::ChildServer::spawn(
        third_dir.path(),
        &[
            ("RALLY_REDIS_URL", url.as_str()),
            ("RALLY_SESSION_SECRET", SECRET),
            ("RALLY_MEDIA_IP", "127.0.0.1"),
        ],
    );
    let (_, carol_token) = common::sign_in(third.addr, "Carol").await;
    let (carol_signal, carol_pushes, joined) = join_at(third.addr, &carol_token).await;
    assert_eq!(joined["type"], "media:join:v1:success", "{joined}");
    let carol = Watching::start(carol_signal, carol_pushes);
    wait_until("Carol to receive Ada", Duration::from_secs(10), || {
        carol
            .received()
            .iter()
            .any(|r| r.kind == RtpCodecKind::Video)
    })
    .await;
    let relay = other.media.as_ref().unwrap();
    assert_eq!(relay.census().participants, 3);
    let killed = Instant::now();
    third.kill();
    wait_until(
        "the owner to let go of Carol",
        rally::media::cluster::VISITOR_TTL + 2 * rally::media::lease::LEASE_RENEW,
        || relay.census().participants == 2,
    )
    .await;
    println!(
        "owner let go of the dead instance's viewer after {:.1} s",
        killed.elapsed().as_secs_f64()
    );
}

/// How long a dead owner's participants may wait to be told: the lease runs out, then the next
/// check notices (plus slack for a loaded machine).
fn cluster_timeout() -> Duration {
    rally::media::lease::LEASE_TTL + 2 * rally::media::lease::LEASE_RENEW + Duration::from_secs(2)
}

fn redis_get(redis: &common::TestRedis, key: &str) -> Option<String> {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--raw", "GET", key])
        .output()
        .expect("redis-cli runs");
    let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!value.is_empty()).then_some(value)
}
