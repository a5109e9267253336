//! A headless participant for Rally's media relay: signaling over the WebSocket protocol and
//! `webrtc` peer connections on loopback. The relay's integration tests and `rally-bench media`
//! drive the server through it, as a browser would. Its own crate: the server binary does not
//! contain it.
//!
//! Generated media: VP8-shaped video (RFC 7741 payload descriptor; a keyframe only at the start
//! and when the relay asks with a PLI) and Opus-shaped audio. Every payload carries its frame
//! number and send time (nanoseconds since the Unix epoch), so receivers can match payloads and
//! measure latency.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpSendParameters,
    RtpCodecKind,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
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

use rally::media::feedback::{is_keyframe_request, FeedbackInterceptor, SLOT};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// One WebSocket, owned by a task that matches replies to requests and hands pushes out.
pub struct Signaling {
    requests: mpsc::UnboundedSender<(Value, oneshot::Sender<Value>)>,
}

impl Signaling {
    /// Connect to `ws://{addr}/ws` (with a session token) and start the task.
    pub async fn connect(
        addr: std::net::SocketAddr,
        token: Option<&str>,
    ) -> Result<(Signaling, mpsc::UnboundedReceiver<Value>), Error> {
        let mut request = format!("ws://{addr}/ws").into_client_request()?;
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
        }
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
        let (requests, mut incoming) = mpsc::unbounded_channel::<(Value, oneshot::Sender<Value>)>();
        let (pushes_tx, pushes) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut pending: HashMap<String, oneshot::Sender<Value>> = HashMap::new();
            loop {
                tokio::select! {
                    request = incoming.recv() => {
                        let Some((frame, reply)) = request else { return };
                        let id = frame["request_id"].as_str().unwrap_or_default().to_owned();
                        pending.insert(id, reply);
                        if socket.send(Message::text(frame.to_string())).await.is_err() {
                            return;
                        }
                    }
                    message = socket.next() => {
                        let Some(Ok(Message::Text(text))) = message else { return };
                        let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                        match frame["request_id"].as_str().and_then(|id| pending.remove(id)) {
                            Some(reply) => { let _ = reply.send(frame); }
                            None => { let _ = pushes_tx.send(frame); }
                        }
                    }
                }
            }
        });
        Ok((Signaling { requests }, pushes))
    }

    /// Send a request; its reply (either state), or an error after 10 s.
    pub async fn request(&self, event_type: &str, payload: Value) -> Result<Value, Error> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = format!("m{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let (reply, answer) = oneshot::channel();
        self.requests.send((
            json!({"type": event_type, "payload": payload, "request_id": id}),
            reply,
        ))?;
        Ok(tokio::time::timeout(Duration::from_secs(10), answer).await??)
    }
}

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

/// A peer connection on loopback, with its events as channels.
pub struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    pub connected: watch::Receiver<bool>,
    tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
}

impl Peer {
    pub async fn new() -> Result<Peer, Error> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        let registry = register_default_interceptors(Registry::new(), &mut media)?
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
            .await?;
        Ok(Peer {
            pc: Arc::new(pc),
            gathered,
            connected,
            tracks,
        })
    }

    /// The local description with every candidate in it.
    pub async fn local_sdp(&mut self) -> Result<String, Error> {
        tokio::time::timeout(Duration::from_secs(5), self.gathered.wait_for(|g| *g)).await??;
        Ok(self
            .pc
            .local_description()
            .await
            .ok_or("no local description")?
            .sdp)
    }

    /// Offer what this connection sends to the relay (`media:publish`) and apply its answer:
    /// the first time, or again after the tracks changed.
    pub async fn publish(&mut self, signal: &Signaling, campaign: &str) -> Result<(), Error> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        let sdp = self.local_sdp().await?;
        let reply = signal
            .request(
                "media:publish:v1:requested",
                json!({"campaign_id": campaign, "sdp": sdp}),
            )
            .await?;
        if reply["type"] != "media:publish:v1:success" {
            return Err(format!("publish refused: {reply}").into());
        }
        let answer = reply["payload"]["sdp"].as_str().unwrap_or_default();
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer.to_owned())?)
            .await?;
        Ok(())
    }

    pub async fn wait_connected(&mut self) -> Result<(), Error> {
        tokio::time::timeout(Duration::from_secs(10), self.connected.wait_for(|c| *c)).await??;
        Ok(())
    }
}

/// Called for every RTP packet a viewer receives: kind, payload, arrival.
pub type PacketSink = Arc<dyn Fn(RtpCodecKind, &[u8], Instant) + Send + Sync>;

/// A participant that watches: answers the relay's offers, reads every track it gets, and
/// stops reading a publisher's tracks when `media:tracks` no longer lists them (as a browser
/// removes the tile).
pub struct Viewer {
    pub signal: Arc<Signaling>,
    pub connected_at: Arc<Mutex<Option<Instant>>>,
    pub offers: Arc<AtomicUsize>,
    /// The latest `media:tracks` payload.
    pub last_tracks: Arc<Mutex<Value>>,
    /// `media:session:v1:completed` pushes received.
    pub ended: Arc<Mutex<Vec<Value>>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Viewer {
    pub fn start(
        signal: Signaling,
        mut pushes: mpsc::UnboundedReceiver<Value>,
        campaign: &str,
        on_packet: PacketSink,
    ) -> Viewer {
        let signal = Arc::new(signal);
        let connected_at: Arc<Mutex<Option<Instant>>> = Default::default();
        let offers: Arc<AtomicUsize> = Default::default();
        let last_tracks: Arc<Mutex<Value>> = Default::default();
        let ended: Arc<Mutex<Vec<Value>>> = Default::default();
        let campaign = campaign.to_owned();
        let task = {
            let (signal, connected_at, offers, last_tracks, ended) = (
                signal.clone(),
                connected_at.clone(),
                offers.clone(),
                last_tracks.clone(),
                ended.clone(),
            );
            tokio::spawn(async move {
                let mut peer: Option<Peer> = None;
                let mut readers: Vec<(String, tokio::task::JoinHandle<()>)> = Vec::new();
                loop {
                    let push = tokio::select! {
                        push = pushes.recv() => push,
                        Some(track) = async {
                            match peer.as_mut() { Some(p) => p.tracks.recv().await, None => std::future::pending().await }
                        } => {
                            let publisher = track.stream_id().await.to_string();
                            readers.push((publisher, tokio::spawn(read_track(track, on_packet.clone()))));
                            continue;
                        }
                    };
                    let Some(push) = push else { break };
                    match push["type"].as_str().unwrap_or_default() {
                        "media:offer:v1:success" => {
                            offers.fetch_add(1, Ordering::Relaxed);
                            if peer.is_none() {
                                let Ok(p) = Peer::new().await else { break };
                                let mut connected = p.connected.clone();
                                let connected_at = connected_at.clone();
                                tokio::spawn(async move {
                                    if connected.wait_for(|c| *c).await.is_ok() {
                                        *connected_at.lock().expect("lock") = Some(Instant::now());
                                    }
                                });
                                peer = Some(p);
                            }
                            let Some(p) = peer.as_mut() else { break };
                            let offer = push["payload"]["sdp"].as_str().unwrap_or_default();
                            if answer(p, offer, &signal, &campaign).await.is_err() {
                                break;
                            }
                        }
                        "media:tracks:v1:success" => {
                            let live: HashSet<String> = push["payload"]["publishers"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|p| p["participant_id"].as_str().map(str::to_owned))
                                .collect();
                            readers.retain(|(publisher, reader)| {
                                let keep = live.contains(publisher);
                                if !keep {
                                    reader.abort();
                                }
                                keep
                            });
                            *last_tracks.lock().expect("lock") = push["payload"].clone();
                        }
                        "media:session:v1:completed" => ended.lock().expect("lock").push(push),
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
            connected_at,
            offers,
            last_tracks,
            ended,
            task,
        }
    }
}

async fn answer(
    peer: &mut Peer,
    offer: &str,
    signal: &Signaling,
    campaign: &str,
) -> Result<(), Error> {
    peer.pc
        .set_remote_description(RTCSessionDescription::offer(offer.to_owned())?)
        .await?;
    let answer = peer.pc.create_answer(None).await?;
    peer.pc.set_local_description(answer).await?;
    let sdp = peer.local_sdp().await?;
    let reply = signal
        .request(
            "media:answer:v1:requested",
            json!({"campaign_id": campaign, "sdp": sdp}),
        )
        .await?;
    if reply["type"] != "media:answer:v1:success" {
        return Err(format!("answer refused: {reply}").into());
    }
    Ok(())
}

async fn read_track(track: Arc<dyn TrackRemote>, on_packet: PacketSink) {
    let kind = track.kind().await;
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(packet) => {
                on_packet(kind, &packet.payload, Instant::now())
            }
            // The relay removed the track (its publisher left).
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

/// VP8 payload descriptor (RFC 7741): first byte `0x10` (start of partition 0, no extensions),
/// then the VP8 frame header whose lowest bit is 0 for a keyframe.
pub fn is_vp8_keyframe(payload: &[u8]) -> bool {
    payload.len() > 1 && payload[0] & 0x10 != 0 && payload[1] & 0x01 == 0
}

/// When a generated payload was sent (nanoseconds since the Unix epoch).
pub fn sent_at_ns(kind: RtpCodecKind, payload: &[u8]) -> Option<u64> {
    let offset = if kind == RtpCodecKind::Video { 6 } else { 5 };
    let bytes = payload.get(offset..offset + 8)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn video_payload(frame: u32, keyframe: bool, size: usize) -> Bytes {
    let mut payload = vec![0x10, if keyframe { 0x00 } else { 0x01 }];
    payload.extend_from_slice(&frame.to_be_bytes());
    payload.extend_from_slice(&now_ns().to_be_bytes());
    payload.resize(size.max(payload.len()), 0xAB);
    Bytes::from(payload)
}

fn audio_payload(frame: u32) -> Bytes {
    let mut payload = vec![0xFC];
    payload.extend_from_slice(&frame.to_be_bytes());
    payload.extend_from_slice(&now_ns().to_be_bytes());
    payload.resize(70, 0x11);
    Bytes::from(payload)
}

/// What a publisher sends: every 20 ms, `video_per_frame` video packets of `video_bytes` and one
/// audio packet.
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    pub video_per_frame: usize,
    pub video_bytes: usize,
}

impl Default for Stream {
    /// About 50 kbit/s of video: plenty for tests.
    fn default() -> Self {
        Stream {
            video_per_frame: 1,
            video_bytes: 120,
        }
    }
}

/// Called with every payload a publisher sends.
pub type SentSink = Arc<dyn Fn(&Bytes) + Send + Sync>;

/// A participant that went live with a generated video and audio track.
pub struct Publisher {
    pub peer: Peer,
    /// The further connections of a [`Publisher::direct`] mesh.
    mesh: Vec<Peer>,
    /// Keyframe requests (PLI/FIR) that reached the publisher.
    pub plis: Arc<AtomicUsize>,
    sender: tokio::task::JoinHandle<()>,
    audio_sender: Option<Arc<dyn webrtc::rtp_transceiver::RtpSender>>,
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

fn payload_type(parameters: &RTCRtpSendParameters, mime: &str) -> Result<u8, Error> {
    Ok(parameters
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .ok_or("codec not negotiated")?
        .payload_type)
}

/// The publisher's two tracks on its peer connection.
struct LocalTracks {
    video: Arc<TrackLocalStaticRTP>,
    audio: Arc<TrackLocalStaticRTP>,
    video_sender: Arc<dyn webrtc::rtp_transceiver::RtpSender>,
    audio_sender: Arc<dyn webrtc::rtp_transceiver::RtpSender>,
}

impl LocalTracks {
    async fn add_to(peer: &Peer) -> Result<LocalTracks, Error> {
        let video = local_track(RtpCodecKind::Video, "camera", 1111);
        let audio = local_track(RtpCodecKind::Audio, "microphone", 2222);
        let video_sender = peer
            .pc
            .add_track(video.clone() as Arc<dyn TrackLocal>)
            .await?;
        let audio_sender = peer
            .pc
            .add_track(audio.clone() as Arc<dyn TrackLocal>)
            .await?;
        Ok(LocalTracks {
            video,
            audio,
            video_sender,
            audio_sender,
        })
    }
}

impl Publisher {
    /// Publish in `campaign` (joined already on `signal`) and start sending.
    pub async fn go_live(
        signal: &Signaling,
        campaign: &str,
        stream: Stream,
        on_sent: SentSink,
    ) -> Result<Publisher, Error> {
        let mut peer = Peer::new().await?;
        let tracks = LocalTracks::add_to(&peer).await?;
        peer.publish(signal, campaign).await?;
        peer.wait_connected().await?;
        Self::start(vec![(peer, tracks)], stream, on_sent).await
    }

    /// Publish straight to `receivers` receiving peers in this process, without the relay (a
    /// mesh: the publisher sends every packet to each receiver itself): the baseline that shows
    /// what the relay adds. Returns the publisher and the receiving peers (keep them alive).
    pub async fn direct(
        stream: Stream,
        on_sent: SentSink,
        on_packet: PacketSink,
        receivers: usize,
    ) -> Result<(Publisher, Vec<Peer>), Error> {
        let mut links = Vec::with_capacity(receivers);
        let mut viewers = Vec::with_capacity(receivers);
        for _ in 0..receivers.max(1) {
            let mut peer = Peer::new().await?;
            let tracks = LocalTracks::add_to(&peer).await?;
            let mut viewer = Peer::new().await?;
            let offer = peer.pc.create_offer(None).await?;
            peer.pc.set_local_description(offer).await?;
            let offer = peer.local_sdp().await?;
            viewer
                .pc
                .set_remote_description(RTCSessionDescription::offer(offer)?)
                .await?;
            let answer = viewer.pc.create_answer(None).await?;
            viewer.pc.set_local_description(answer).await?;
            let answer = viewer.local_sdp().await?;
            peer.pc
                .set_remote_description(RTCSessionDescription::answer(answer)?)
                .await?;
            let mut arriving = std::mem::replace(&mut viewer.tracks, mpsc::unbounded_channel().1);
            let on_packet = on_packet.clone();
            tokio::spawn(async move {
                while let Some(track) = arriving.recv().await {
                    tokio::spawn(read_track(track, on_packet.clone()));
                }
            });
            peer.wait_connected().await?;
            links.push((peer, tracks));
            viewers.push(viewer);
        }
        Ok((Self::start(links, stream, on_sent).await?, viewers))
    }

    /// Send `stream` on every link's tracks: each packet is made once and written to each.
    async fn start(
        links: Vec<(Peer, LocalTracks)>,
        stream: Stream,
        on_sent: SentSink,
    ) -> Result<Publisher, Error> {
        // Keyframe requests from any receiver set a flag the sender reads.
        let plis = Arc::new(AtomicUsize::new(0));
        let want_keyframe = Arc::new(AtomicBool::new(true));
        let mut outputs = Vec::with_capacity(links.len());
        let mut peers = Vec::with_capacity(links.len());
        for (peer, tracks) in links {
            let LocalTracks {
                video,
                audio,
                video_sender,
                audio_sender,
            } = tracks;
            let video_pt = payload_type(&video_sender.get_parameters().await?, "video/VP8")?;
            let audio_pt = payload_type(&audio_sender.get_parameters().await?, "audio/opus")?;
            let (track, plis, want) = (video.clone(), plis.clone(), want_keyframe.clone());
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    let TrackLocalEvent::OnRtcpPacket(packets) = event else {
                        continue;
                    };
                    if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                        plis.fetch_add(1, Ordering::Relaxed);
                        want.store(true, Ordering::Relaxed);
                    }
                }
            });
            outputs.push((video, video_pt, audio, audio_pt));
            peers.push((peer, audio_sender));
        }
        let sender = tokio::spawn(async move {
            let mut frame: u32 = 0;
            let mut sequence: u16 = 0;
            let mut interval = tokio::time::interval(Duration::from_millis(20));
            loop {
                interval.tick().await;
                frame += 1;
                let keyframe = want_keyframe.swap(false, Ordering::Relaxed);
                for n in 0..stream.video_per_frame {
                    sequence = sequence.wrapping_add(1);
                    let payload = video_payload(frame, keyframe && n == 0, stream.video_bytes);
                    on_sent(&payload);
                    for (video, video_pt, _, _) in &outputs {
                        let packet = packet(
                            *video_pt,
                            1111,
                            sequence,
                            frame.wrapping_mul(1800),
                            n + 1 == stream.video_per_frame,
                            payload.clone(),
                        );
                        let _ = video.write_rtp(packet).await;
                    }
                }
                let payload = audio_payload(frame);
                on_sent(&payload);
                for (_, _, audio, audio_pt) in &outputs {
                    let packet = packet(
                        *audio_pt,
                        2222,
                        frame as u16,
                        frame.wrapping_mul(960),
                        true,
                        payload.clone(),
                    );
                    let _ = audio.write_rtp(packet).await;
                }
            }
        });
        let mut peers = peers.into_iter();
        let (peer, audio_sender) = peers.next().ok_or("a publisher needs a connection")?;
        Ok(Publisher {
            peer,
            mesh: peers.map(|(peer, _)| peer).collect(),
            plis,
            sender,
            audio_sender: Some(audio_sender),
        })
    }

    /// Stop sending audio: remove the track and renegotiate the publish connection through the
    /// relay (`media:publish` with a new offer), as a browser does when the microphone is removed.
    pub async fn stop_audio(&mut self, signal: &Signaling, campaign: &str) -> Result<(), Error> {
        let sender = self.audio_sender.take().ok_or("audio already stopped")?;
        self.peer.pc.remove_track(&sender).await?;
        self.peer.publish(signal, campaign).await
    }

    pub async fn stop(self) {
        self.sender.abort();
        let _ = self.peer.pc.close().await;
        for peer in self.mesh {
            let _ = peer.pc.close().await;
        }
    }
}

fn packet(
    payload_type: u8,
    ssrc: u32,
    sequence_number: u16,
    timestamp: u32,
    marker: bool,
    payload: Bytes,
) -> rtp::Packet {
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            marker,
            payload_type,
            sequence_number,
            timestamp,
            ssrc,
            ..Default::default()
        },
        payload,
    }
}
