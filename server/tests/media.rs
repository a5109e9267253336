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
use common::{TestServer, WsClient};
use futures_util::{SinkExt, StreamExt};
use rally::media::feedback::{is_keyframe_request, FeedbackInterceptor, SLOT};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};

const CAMPAIGN: &str = "live-room";

// ---------------------------------------------------------------------------------------------
// Signaling: one task owns the WebSocket, matches replies to requests, hands pushes out.

struct Signal {
    requests: mpsc::UnboundedSender<(Value, oneshot::Sender<Value>)>,
}

impl Signal {
    fn start(client: WsClient) -> (Signal, mpsc::UnboundedReceiver<Value>) {
        let (requests, mut incoming) = mpsc::unbounded_channel::<(Value, oneshot::Sender<Value>)>();
        let (pushes_tx, pushes) = mpsc::unbounded_channel();
        let mut socket = client.socket;
        tokio::spawn(async move {
            let mut pending: std::collections::HashMap<String, oneshot::Sender<Value>> =
                Default::default();
            loop {
                tokio::select! {
                    request = incoming.recv() => {
                        let Some((frame, reply)) = request else { return };
                        pending.insert(frame["request_id"].as_str().unwrap().to_owned(), reply);
                        if socket.send(Message::text(frame.to_string())).await.is_err() {
                            return;
                        }
                    }
                    message = socket.next() => {
                        let Some(Ok(Message::Text(text))) = message else { return };
                        let frame: Value = serde_json::from_str(&text).unwrap();
                        match frame["request_id"].as_str().and_then(|id| pending.remove(id)) {
                            Some(reply) => { let _ = reply.send(frame); }
                            None => { let _ = pushes_tx.send(frame); }
                        }
                    }
                }
            }
        });
        (Signal { requests }, pushes)
    }

    async fn request(&self, event_type: &str, payload: Value) -> Value {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = format!(
            "m{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((
                json!({"type": event_type, "payload": payload, "request_id": id}),
                reply,
            ))
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("a reply within 10 s")
            .expect("signaling task alive")
    }
}

// ---------------------------------------------------------------------------------------------
// Headless peers.

#[derive(Clone)]
struct Handler {
    gathered: watch::Sender<bool>,
    connected: watch::Sender<bool>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            let _ = self.connected.send(true);
        }
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

struct Peer {
    pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    connected: watch::Receiver<bool>,
    tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
}

async fn new_peer() -> Peer {
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut media)
        .unwrap()
        .with(SLOT.into(), FeedbackInterceptor::default());
    let (gathered_tx, gathered) = watch::channel(false);
    let (connected_tx, connected) = watch::channel(false);
    let (tracks_tx, tracks) = mpsc::unbounded_channel();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_include_loopback_candidate(true)
                .build(),
        )
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            gathered: gathered_tx,
            connected: connected_tx,
            tracks: tracks_tx,
        }))
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .unwrap();
    Peer {
        pc: Arc::new(pc),
        gathered,
        connected,
        tracks,
    }
}

impl Peer {
    async fn local_sdp(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(5), self.gathered.wait_for(|g| *g))
            .await
            .expect("ICE gathering completes")
            .unwrap();
        self.pc.local_description().await.unwrap().sdp
    }

    async fn wait_connected(&mut self) {
        tokio::time::timeout(Duration::from_secs(10), self.connected.wait_for(|c| *c))
            .await
            .expect("peer connection connects within 10 s")
            .unwrap();
    }
}

/// What a subscriber received: (publisher's stream id, kind, payload, when, is a VP8 keyframe).
#[derive(Clone, Debug)]
struct Received {
    kind: RtpCodecKind,
    payload: Bytes,
    at: Instant,
    keyframe: bool,
}

/// A participant that only watches: answers the relay's offers and records every packet.
struct Viewer {
    signal: Arc<Signal>,
    received: Arc<Mutex<Vec<Received>>>,
    connected_at: Arc<Mutex<Option<Instant>>>,
    offers: Arc<std::sync::atomic::AtomicUsize>,
    last_tracks: Arc<Mutex<Value>>,
    ended: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Viewer {
    fn start(signal: Signal, mut pushes: mpsc::UnboundedReceiver<Value>) -> Viewer {
        let signal = Arc::new(signal);
        let received: Arc<Mutex<Vec<Received>>> = Default::default();
        let connected_at: Arc<Mutex<Option<Instant>>> = Default::default();
        let offers: Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let last_tracks: Arc<Mutex<Value>> = Default::default();
        let ended: Arc<Mutex<Vec<Value>>> = Default::default();
        let task = {
            let (signal, received, connected_at, offers, last_tracks, ended) = (
                signal.clone(),
                received.clone(),
                connected_at.clone(),
                offers.clone(),
                last_tracks.clone(),
                ended.clone(),
            );
            tokio::spawn(async move {
                let mut peer: Option<Peer> = None;
                // Readers by publisher (the stream id): stopped when the publisher leaves, as a
                // browser removes the publisher's tile.
                let mut readers: Vec<(String, tokio::task::JoinHandle<()>)> = Vec::new();
                loop {
                    let push = tokio::select! {
                        push = pushes.recv() => push,
                        Some(track) = async {
                            match peer.as_mut() { Some(p) => p.tracks.recv().await, None => std::future::pending().await }
                        } => {
                            let publisher = track.stream_id().await.to_string();
                            readers.push((publisher, tokio::spawn(read_track(track, received.clone()))));
                            continue;
                        }
                    };
                    let Some(push) = push else { break };
                    match push["type"].as_str().unwrap() {
                        "media:offer:v1:success" => {
                            offers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if peer.is_none() {
                                let p = new_peer().await;
                                let mut connected = p.connected.clone();
                                let connected_at = connected_at.clone();
                                tokio::spawn(async move {
                                    if connected.wait_for(|c| *c).await.is_ok() {
                                        *connected_at.lock().unwrap() = Some(Instant::now());
                                    }
                                });
                                peer = Some(p);
                            }
                            let p = peer.as_mut().unwrap();
                            let offer = push["payload"]["sdp"].as_str().unwrap().to_owned();
                            p.pc.set_remote_description(
                                RTCSessionDescription::offer(offer).unwrap(),
                            )
                            .await
                            .unwrap();
                            let answer = p.pc.create_answer(None).await.unwrap();
                            p.pc.set_local_description(answer).await.unwrap();
                            let sdp = p.local_sdp().await;
                            let reply = signal
                                .request(
                                    "media:answer:v1:requested",
                                    json!({"campaign_id": CAMPAIGN, "sdp": sdp}),
                                )
                                .await;
                            assert_eq!(reply["type"], "media:answer:v1:success", "{reply}");
                        }
                        "media:tracks:v1:success" => {
                            let live: HashSet<String> = push["payload"]["publishers"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|p| p["participant_id"].as_str().unwrap().to_owned())
                                .collect();
                            readers.retain(|(publisher, reader)| {
                                let keep = live.contains(publisher);
                                if !keep {
                                    reader.abort();
                                }
                                keep
                            });
                            *last_tracks.lock().unwrap() = push["payload"].clone();
                        }
                        "media:session:v1:completed" => ended.lock().unwrap().push(push),
                        _ => {}
                    }
                }
                for (_, reader) in readers {
                    reader.abort();
                }
                if let Some(p) = peer {
                    let _ = p.pc.close().await;
                }
            })
        };
        Viewer {
            signal,
            received,
            connected_at,
            offers,
            last_tracks,
            ended,
            task,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn read_track(track: Arc<dyn TrackRemote>, received: Arc<Mutex<Vec<Received>>>) {
    let kind = track.kind().await;
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(packet) => {
                let keyframe = kind == RtpCodecKind::Video && is_vp8_keyframe(&packet.payload);
                received.lock().unwrap().push(Received {
                    kind,
                    // A copy: the received packet's bytes may share a large receive buffer.
                    payload: Bytes::copy_from_slice(&packet.payload),
                    at: Instant::now(),
                    keyframe,
                });
            }
            // The relay removed the track (its publisher left).
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

/// VP8 payload descriptor (RFC 7741): first byte `0x10` (start of partition 0, no extensions),
/// then the VP8 frame header whose lowest bit is 0 for a keyframe.
fn is_vp8_keyframe(payload: &[u8]) -> bool {
    payload.len() > 1 && payload[0] & 0x10 != 0 && payload[1] & 0x01 == 0
}

fn vp8_payload(frame: u32, keyframe: bool) -> Bytes {
    let mut payload = vec![0x10, if keyframe { 0x00 } else { 0x01 }];
    payload.extend_from_slice(&frame.to_be_bytes());
    payload.extend_from_slice(&[0xAB; 100]);
    Bytes::from(payload)
}

fn opus_payload(frame: u32) -> Bytes {
    let mut payload = vec![0xFC];
    payload.extend_from_slice(&frame.to_be_bytes());
    payload.extend_from_slice(&[0x11; 60]);
    Bytes::from(payload)
}

/// A participant that goes live with a generated VP8 video and Opus audio track.
struct Publisher {
    peer: Peer,
    sent: Arc<Mutex<HashSet<Bytes>>>,
    plis: Arc<std::sync::atomic::AtomicUsize>,
    sender: tokio::task::JoinHandle<()>,
}

fn local_track(kind: RtpCodecKind, id: &str, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    let codec = match kind {
        RtpCodecKind::Audio => RTCRtpCodec {
            mime_type: "audio/opus".into(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
            rtcp_feedback: vec![],
        },
        _ => RTCRtpCodec {
            mime_type: "video/VP8".into(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    };
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "publisher".into(),
        id.into(),
        id.into(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )))
}

async fn go_live(signal: &Signal) -> Publisher {
    let mut peer = new_peer().await;
    let video = local_track(RtpCodecKind::Video, "camera", 1111);
    let audio = local_track(RtpCodecKind::Audio, "microphone", 2222);
    let video_sender = peer
        .pc
        .add_track(video.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let audio_sender = peer
        .pc
        .add_track(audio.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let offer = peer.pc.create_offer(None).await.unwrap();
    peer.pc.set_local_description(offer).await.unwrap();
    let sdp = peer.local_sdp().await;
    let reply = signal
        .request(
            "media:publish:v1:requested",
            json!({"campaign_id": CAMPAIGN, "sdp": sdp}),
        )
        .await;
    assert_eq!(reply["type"], "media:publish:v1:success", "{reply}");
    let answer = reply["payload"]["sdp"].as_str().unwrap().to_owned();
    peer.pc
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    peer.wait_connected().await;

    let payload_type = |parameters: rtc::rtp_transceiver::rtp_sender::RTCRtpSendParameters,
                        mime: &str| {
        parameters
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
            .expect("codec negotiated")
            .payload_type
    };
    let video_pt = payload_type(video_sender.get_parameters().await.unwrap(), "video/VP8");
    let audio_pt = payload_type(audio_sender.get_parameters().await.unwrap(), "audio/opus");

    // Keyframe requests from the relay set a flag the sender reads.
    let plis = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let want_keyframe = Arc::new(std::sync::atomic::AtomicBool::new(true));
    {
        let (video, plis, want) = (video.clone(), plis.clone(), want_keyframe.clone());
        tokio::spawn(async move {
            while let Some(event) = video.poll().await {
                let TrackLocalEvent::OnRtcpPacket(packets) = event else {
                    continue;
                };
                if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                    plis.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    want.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }
    let sent: Arc<Mutex<HashSet<Bytes>>> = Default::default();
    let sender = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut frame: u32 = 0;
            let mut interval = tokio::time::interval(Duration::from_millis(20));
            loop {
                interval.tick().await;
                frame += 1;
                let keyframe = want_keyframe.swap(false, std::sync::atomic::Ordering::Relaxed);
                let v = vp8_payload(frame, keyframe);
                let a = opus_payload(frame);
                sent.lock().unwrap().extend([v.clone(), a.clone()]);
                let packet = |pt, ssrc, payload, ts| rtp::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        marker: true,
                        payload_type: pt,
                        sequence_number: frame as u16,
                        timestamp: ts,
                        ssrc,
                        ..Default::default()
                    },
                    payload,
                };
                let _ = video
                    .write_rtp(packet(video_pt, 1111, v, frame.wrapping_mul(3000)))
                    .await;
                let _ = audio
                    .write_rtp(packet(audio_pt, 2222, a, frame.wrapping_mul(960)))
                    .await;
            }
        })
    };
    Publisher {
        peer,
        sent,
        plis,
        sender,
    }
}

impl Publisher {
    async fn stop(self) {
        self.sender.abort();
        let _ = self.peer.pc.close().await;
    }
}

async fn join(server: &TestServer, token: &str) -> (Signal, mpsc::UnboundedReceiver<Value>, Value) {
    join_at(server.addr, token).await
}

async fn join_at(
    addr: std::net::SocketAddr,
    token: &str,
) -> (Signal, mpsc::UnboundedReceiver<Value>, Value) {
    let client = common::connect(addr, Some(token)).await;
    let (signal, pushes) = Signal::start(client);
    let reply = signal
        .request("media:join:v1:requested", json!({"campaign_id": CAMPAIGN}))
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
    let bob = Viewer::start(bob_signal, bob_pushes);

    // Ada (owner) goes live.
    let (ada_signal, _ada_pushes, joined) = join(&server, &owner).await;
    assert_eq!(joined["payload"]["can_publish"], true, "{joined}");
    let ada = go_live(&ada_signal).await;

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
    let tracks = bob.last_tracks.lock().unwrap().clone();
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
    let carol = Viewer::start(carol_signal, carol_pushes);
    wait_until(
        "Carol to receive a keyframe",
        Duration::from_secs(5),
        || carol.received().iter().any(|r| r.keyframe),
    )
    .await;
    let first_keyframe = carol.received().iter().find(|r| r.keyframe).unwrap().at;
    let connected = carol.connected_at.lock().unwrap().expect("Carol connected");
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
    let bad = bob
        .signal
        .request(
            "media:publish:v1:requested",
            json!({"campaign_id": CAMPAIGN, "sdp": "v=0\r\n"}),
        )
        .await;
    assert_eq!(bad["type"], "media:publish:v1:failed");
    assert_eq!(bad["payload"]["code"], "invalid", "{bad}");
    let forbidden = bob
        .signal
        .request(
            "media:publish:v1:requested",
            json!({"campaign_id": CAMPAIGN, "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}),
        )
        .await;
    assert_eq!(forbidden["payload"]["code"], "forbidden", "{forbidden}");
    let twice = bob
        .signal
        .request("media:join:v1:requested", json!({"campaign_id": CAMPAIGN}))
        .await;
    assert_eq!(twice["payload"]["code"], "conflict", "{twice}");
    let garbage = ada_signal
        .request(
            "media:publish:v1:requested",
            json!({"campaign_id": CAMPAIGN, "sdp": "v=0\r\nm=video 9 RTP/AVP 96\r\nthis is not sdp"}),
        )
        .await;
    assert_eq!(garbage["payload"]["code"], "invalid", "{garbage}");
    let candidate = bob
        .signal
        .request(
            "media:candidate:v1:requested",
            json!({"campaign_id": CAMPAIGN, "transport": "publish", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}),
        )
        .await;
    assert_eq!(candidate["payload"]["code"], "not_found", "{candidate}");
    let elsewhere = bob
        .signal
        .request(
            "media:candidate:v1:requested",
            json!({"campaign_id": "other-room", "transport": "subscribe", "candidate": ""}),
        )
        .await;
    assert_eq!(elsewhere["payload"]["code"], "not_found", "{elsewhere}");
    let bad_candidate = bob
        .signal
        .request(
            "media:candidate:v1:requested",
            json!({"campaign_id": CAMPAIGN, "transport": "subscribe", "candidate": "candidate:garbage"}),
        )
        .await;
    assert_eq!(
        bad_candidate["payload"]["code"], "invalid",
        "{bad_candidate}"
    );

    // Streaming went on through all of that.
    let before = bob.received().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(bob.received().len() > before + 20, "Bob still receives");

    // Every payload that arrived is one Ada sent, unchanged; nearly all of them arrived.
    let sent = ada.sent.lock().unwrap().clone();
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

    // Ada leaves: the others learn she is no longer live.
    let left = ada_signal
        .request("media:leave:v1:requested", json!({"campaign_id": CAMPAIGN}))
        .await;
    assert_eq!(left["type"], "media:leave:v1:success", "{left}");
    ada.stop().await;
    wait_until("Bob to see nobody live", Duration::from_secs(5), || {
        bob.last_tracks.lock().unwrap()["publishers"] == json!([])
    })
    .await;
    assert!(
        bob.offers.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "tracks removed by renegotiation"
    );
    assert!(bob.ended.lock().unwrap().is_empty());
    bob.task.abort();
    carol.task.abort();
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
}

async fn usage(server: &common::ChildServer) -> Usage {
    let pid = server.child.id();
    Usage {
        rss_kib: rss_kib(pid),
        sockets: open_sockets(pid),
        tasks: metric(server, "rally_tokio_alive_tasks").await,
        participants: metric(server, "rally_media_participants").await,
        tracks: metric(server, "rally_media_tracks").await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_publish_leave_churn_returns_every_resource() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::ChildServer::spawn(dir.path(), &[("RALLY_MEDIA_IP", "127.0.0.1")]);
    let (_, owner) = common::sign_in(server.addr, "Ada").await;
    let mut ada = common::connect(server.addr, Some(&owner)).await;
    ada.create_campaign(CAMPAIGN, "Live room").await;
    let (_, viewer_token) = common::sign_in(server.addr, "Watcher").await;
    let (signal, pushes, joined) = join_at(server.addr, &viewer_token).await;
    assert_eq!(joined["type"], "media:join:v1:success");
    let watcher = Viewer::start(signal, pushes);

    // One WebSocket for the publisher, reused: the cycles measure the relay, not TCP.
    let client = common::connect(server.addr, Some(&owner)).await;
    let (publisher, mut publisher_pushes) = Signal::start(client);
    tokio::spawn(async move { while publisher_pushes.recv().await.is_some() {} });

    let cycle = |n: usize| {
        let publisher = &publisher;
        let received = watcher.received.clone();
        async move {
            let joined = publisher
                .request("media:join:v1:requested", json!({"campaign_id": CAMPAIGN}))
                .await;
            assert_eq!(
                joined["type"], "media:join:v1:success",
                "cycle {n}: {joined}"
            );
            let before = received.lock().unwrap().len();
            let live = go_live(publisher).await;
            // Wait until the watcher receives this cycle's media (proves a real session).
            let deadline = Instant::now() + Duration::from_secs(10);
            while received.lock().unwrap().len() < before + 4 {
                assert!(Instant::now() < deadline, "cycle {n}: nothing forwarded");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let left = publisher
                .request("media:leave:v1:requested", json!({"campaign_id": CAMPAIGN}))
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
    watcher.task.abort();
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
    let watcher = Viewer::start(signal, pushes);
    let (publisher, _pushes, _) = join_at(server.addr, &owner).await;
    let live = go_live(&publisher).await;
    wait_until("media to flow", Duration::from_secs(10), || {
        watcher.received().len() > 50
    })
    .await;
    // Routine trouble: a refused publish, a bad candidate.
    let refused = watcher
        .signal
        .request(
            "media:publish:v1:requested",
            json!({"campaign_id": CAMPAIGN, "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}),
        )
        .await;
    assert_eq!(refused["payload"]["code"], "forbidden");
    let bad = watcher
        .signal
        .request(
            "media:candidate:v1:requested",
            json!({"campaign_id": CAMPAIGN, "transport": "subscribe", "candidate": "candidate:x"}),
        )
        .await;
    assert_eq!(bad["payload"]["code"], "invalid");
    // The publisher's tab closes without leaving; then the watcher's.
    drop(publisher);
    live.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    watcher.task.abort();
    drop(watcher);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = server.log.clone();
    assert_eq!(server.terminate(), Some(0));
    let lines: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|l| {
            let record: Value = serde_json::from_str(l).expect("json log line");
            format!(
                "{} {}",
                record["level"].as_str().unwrap_or("?"),
                record["message"].as_str().unwrap_or(l)
            )
        })
        .collect();
    assert_eq!(
        lines,
        ["INFO rally started", "INFO rally shutting down", "INFO rally stopped"],
        "a media session (join, publish, forwarding, refusals, dropped connections) logs nothing at the default level"
    );
}
