//! One campaign's media session: a task that owns the [`ForwardingTable`] and every peer
//! connection, track and forwarding task of the campaign's participants, and carries out what
//! the table decides.
//!
//! Everything that changes the session — requests from participants and events from WebRTC —
//! arrives as a [`Command`] on one channel and is handled in order, so no two changes race. The
//! per-packet path does not go through here: each published track has its own forwarding task
//! that reads the publisher's RTP and writes it to the current list of receiving tracks.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use rally_app::model::CampaignId;
use rally_app::protocol::media::{
    IceCandidate, MediaEnded, MediaJoined, MediaKind, MediaTracks, SessionDescription, Transport,
    ENDED_EVENT, OFFER_EVENT, TRACKS_EVENT,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::{RTCIceCandidateInit, RTCPeerConnectionState, RTCSessionDescription};
use webrtc::rtp_transceiver::RtpSender;

use super::cluster::{Answer, Call};
use super::feedback::is_keyframe_request;
use super::forward::{Action, ForwardingTable, ParticipantId, TrackId};
use super::peer::{PeerFactory, PeerLink};
use super::{sdp, Joining, MediaError, MediaRelay};
use crate::shutdown::ShutdownSignal;

/// Signaling frames that may wait for one participant's connection before the participant is
/// considered gone (an SDP offer, a track list: a handful per change).
pub const PUSH_BUFFER: usize = 64;

pub enum Command {
    Join {
        joining: Joining,
        reply: oneshot::Sender<Result<MediaJoined, MediaError>>,
    },
    /// A participant's request after joining (from this instance or, relayed, from another).
    Call {
        call: Call,
        reply: oneshot::Sender<Result<Answer, MediaError>>,
    },
    /// End everyone's participation (the session moved to another instance).
    EndAll { reason: &'static str },
    /// A publisher's track reached the relay.
    TrackArrived {
        participant: ParticipantId,
        remote: Arc<dyn TrackRemote>,
    },
    /// A publisher's track ended (its forwarding task stopped).
    TrackEnded { track: TrackId },
    /// A subscriber asked for a keyframe of a track it receives.
    KeyframeWanted { track: TrackId },
    PeerState {
        participant: ParticipantId,
        transport: Transport,
        state: RTCPeerConnectionState,
    },
}

/// Where a forwarding task writes one track for one subscriber.
pub struct Downstream {
    local: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    /// The payload type negotiated for this codec on the subscriber's connection; 0 until the
    /// subscriber answered and its connection is up (nothing is sent before: there is no SRTP
    /// context to send with).
    payload_type: AtomicU8,
}

type Targets = Arc<RwLock<Arc<[Arc<Downstream>]>>>;

struct UpTrack {
    publisher: ParticipantId,
    remote: Arc<dyn TrackRemote>,
    media_ssrc: u32,
    codec: RTCRtpCodec,
    kind: MediaKind,
    name: String,
    targets: Targets,
    task: AbortHandle,
}

struct DownTrack {
    target: Arc<Downstream>,
    sender: Arc<dyn RtpSender>,
    mime_type: String,
    /// The payload type from the last answer (0: not negotiated yet).
    negotiated: u8,
    feedback: Option<AbortHandle>,
}

struct Peer {
    pushes: mpsc::Sender<Utf8Bytes>,
    publish: Option<PeerLink>,
    subscribe: Option<PeerLink>,
    down: BTreeMap<TrackId, DownTrack>,
    /// An offer went out on the subscribe connection and is not answered yet.
    offer_out: bool,
    /// Tracks changed while an offer was out: offer again after the answer.
    renegotiate: bool,
    /// Tracks added since the last answer (they get a keyframe once negotiated).
    fresh: Vec<TrackId>,
    /// The subscribe connection is up (DTLS done): negotiated tracks may send.
    receiving: bool,
}

impl Peer {
    /// Let every negotiated track send, once the subscribe connection is up.
    fn open_tracks(&self) {
        if !self.receiving {
            return;
        }
        for down in self.down.values() {
            if down.negotiated != 0 {
                down.target
                    .payload_type
                    .store(down.negotiated, Ordering::Relaxed);
            }
        }
    }
}

pub struct Session {
    campaign: CampaignId,
    table: ForwardingTable,
    peers: HashMap<ParticipantId, Peer>,
    up: HashMap<TrackId, UpTrack>,
    relay: MediaRelay,
    factory: Arc<PeerFactory>,
    /// Given to peer handlers and tasks; also identifies this session in the relay's map.
    events: mpsc::UnboundedSender<Command>,
    /// What this session last added to the relay's census.
    counted: (usize, usize),
}

impl Session {
    pub fn spawn(
        campaign: CampaignId,
        relay: MediaRelay,
        factory: Arc<PeerFactory>,
        shutdown: ShutdownSignal,
    ) -> mpsc::UnboundedSender<Command> {
        let (events, commands) = mpsc::unbounded_channel();
        let session = Session {
            campaign,
            table: ForwardingTable::new(),
            peers: HashMap::new(),
            up: HashMap::new(),
            relay,
            factory,
            events: events.clone(),
            counted: (0, 0),
        };
        tokio::spawn(session.run(commands, shutdown));
        events
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut shutdown: ShutdownSignal,
    ) {
        tracing::debug!(campaign = %self.campaign, "media session started");
        loop {
            let timeout = self.table.poll_timeout();
            let command = tokio::select! {
                _ = shutdown.recv() => {
                    self.end_all("the server is shutting down").await;
                    break;
                }
                _ = sleep_until(timeout) => {
                    let actions = self.table.handle_timeout(Instant::now());
                    self.apply(actions).await;
                    continue;
                }
                command = commands.recv() => command,
            };
            let Some(command) = command else { break };
            self.handle(command).await;
            self.census();
            if self.table.is_empty() && self.relay.retire(&self.campaign, &self.events, &commands) {
                break;
            }
        }
        self.census_clear();
        tracing::debug!(campaign = %self.campaign, "media session ended");
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Join { joining, reply } => {
                let _ = reply.send(self.join(joining).await);
            }
            Command::Call { call, reply } => {
                let answer = match call {
                    Call::Publish { participant, sdp } => {
                        self.publish(participant, sdp).await.map(Answer::Sdp)
                    }
                    Call::Answer { participant, sdp } => {
                        self.answer(participant, sdp).await.map(|()| Answer::Done)
                    }
                    Call::Candidate {
                        participant,
                        candidate,
                    } => self
                        .candidate(participant, candidate)
                        .await
                        .map(|()| Answer::Done),
                    Call::Leave { participant } => {
                        let known = self.peers.contains_key(&participant);
                        self.leave(participant).await;
                        if known {
                            Ok(Answer::Done)
                        } else {
                            Err(MediaError::NotJoined)
                        }
                    }
                };
                let _ = reply.send(answer);
            }
            Command::EndAll { reason } => self.end_all(reason).await,
            Command::TrackArrived {
                participant,
                remote,
            } => self.track_arrived(participant, remote).await,
            Command::TrackEnded { track } => {
                let actions = self.table.unpublish(track);
                self.drop_up_track(track);
                self.apply(actions).await;
            }
            Command::KeyframeWanted { track } => {
                let actions = self.table.keyframe_requested(track, Instant::now());
                self.apply(actions).await;
            }
            Command::PeerState {
                participant,
                transport,
                state,
            } => self.peer_state(participant, transport, state).await,
        }
    }

    async fn join(&mut self, joining: Joining) -> Result<MediaJoined, MediaError> {
        let Joining {
            participant,
            display_name,
            can_publish,
            pushes,
        } = joining;
        let actions = self.table.join(participant, display_name, can_publish)?;
        self.peers.insert(
            participant,
            Peer {
                pushes,
                publish: None,
                subscribe: None,
                down: BTreeMap::new(),
                offer_out: false,
                renegotiate: false,
                fresh: Vec::new(),
                receiving: false,
            },
        );
        let joined = MediaJoined {
            campaign_id: self.campaign.clone(),
            participant_id: participant.to_string(),
            can_publish,
            ice_servers: self.relay.ice_servers().to_vec(),
            publishers: self.table.publishers(),
        };
        // The offer for the tracks already live goes into the push queue now; the connection
        // reads that queue only after it has sent the join reply, so the client sees them in order.
        self.apply(actions).await;
        Ok(joined)
    }

    async fn publish(
        &mut self,
        participant: ParticipantId,
        offer: String,
    ) -> Result<String, MediaError> {
        let summary = sdp::check(&offer)?;
        if !self.table.can_publish(participant)? {
            return Err(MediaError::PublishForbidden);
        }
        if summary.sending > rally_app::protocol::media::TRACKS_PER_PARTICIPANT_MAX {
            return Err(MediaError::TooManyTracks {
                max: rally_app::protocol::media::TRACKS_PER_PARTICIPANT_MAX,
            });
        }
        let description = RTCSessionDescription::offer(offer)
            .map_err(|err| MediaError::InvalidSdp(err.to_string()))?;
        if self
            .peers
            .get(&participant)
            .is_some_and(|p| p.publish.is_none())
        {
            let link = self
                .factory
                .build(participant, Transport::Publish, self.events.clone())
                .await?;
            if let Some(peer) = self.peers.get_mut(&participant) {
                peer.publish = Some(link);
            }
        }
        let peer = self
            .peers
            .get_mut(&participant)
            .ok_or(MediaError::NotJoined)?;
        let link = peer.publish.as_mut().expect("made above");
        link.pc
            .set_remote_description(description)
            .await
            .map_err(|err| MediaError::InvalidSdp(err.to_string()))?;
        let answer = link
            .pc
            .create_answer(None)
            .await
            .map_err(|err| MediaError::InvalidSdp(err.to_string()))?;
        link.pc
            .set_local_description(answer)
            .await
            .map_err(|err| MediaError::Relay(err.to_string()))?;
        let answer = link.local_sdp().await?;
        // A new offer may stop tracks (the browser removed its microphone): WebRTC does not end
        // the relay's copy of a track whose sender went away, so the offer decides.
        if summary.sending_tracks.len() == summary.sending {
            let stopped: Vec<TrackId> = self
                .up
                .iter()
                .filter(|(_, up)| {
                    up.publisher == participant && !summary.sending_tracks.contains(&up.name)
                })
                .map(|(&id, _)| id)
                .collect();
            for track in stopped {
                let actions = self.table.unpublish(track);
                self.drop_up_track(track);
                self.apply(actions).await;
            }
        }
        Ok(answer)
    }

    async fn answer(
        &mut self,
        participant: ParticipantId,
        answer: String,
    ) -> Result<(), MediaError> {
        sdp::check(&answer)?;
        let peer = self
            .peers
            .get_mut(&participant)
            .ok_or(MediaError::NotJoined)?;
        let (Some(link), true) = (peer.subscribe.as_ref(), peer.offer_out) else {
            return Err(MediaError::NoOfferOut);
        };
        let description = RTCSessionDescription::answer(answer)
            .map_err(|err| MediaError::InvalidSdp(err.to_string()))?;
        link.pc
            .set_remote_description(description)
            .await
            .map_err(|err| MediaError::InvalidSdp(err.to_string()))?;
        peer.offer_out = false;
        // Now the payload types are settled and the tracks bound: start sending, and listen for
        // the subscriber's keyframe requests.
        for (&track, down) in peer.down.iter_mut() {
            if down.negotiated == 0 {
                if let Ok(parameters) = down.sender.get_parameters().await {
                    if let Some(codec) = parameters
                        .rtp_parameters
                        .codecs
                        .iter()
                        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&down.mime_type))
                    {
                        down.negotiated = codec.payload_type;
                    }
                }
            }
            if down.feedback.is_none() {
                let local = down.target.local.clone();
                let events = self.events.clone();
                down.feedback =
                    Some(tokio::spawn(relay_feedback(local, track, events)).abort_handle());
            }
        }
        peer.open_tracks();
        let fresh = std::mem::take(&mut peer.fresh);
        let again = std::mem::take(&mut peer.renegotiate);
        let actions = self
            .table
            .tracks_negotiated(participant, &fresh, Instant::now());
        self.apply(actions).await;
        if again {
            self.offer(participant).await;
        }
        Ok(())
    }

    async fn candidate(
        &mut self,
        participant: ParticipantId,
        candidate: IceCandidate,
    ) -> Result<(), MediaError> {
        if candidate.candidate.len() > rally_app::protocol::media::CANDIDATE_MAX_BYTES {
            return Err(MediaError::TooLarge {
                what: "candidate",
                max: rally_app::protocol::media::CANDIDATE_MAX_BYTES,
            });
        }
        let peer = self.peers.get(&participant).ok_or(MediaError::NotJoined)?;
        let link = match candidate.transport {
            Transport::Publish => peer.publish.as_ref(),
            Transport::Subscribe => peer.subscribe.as_ref(),
        }
        .ok_or(MediaError::NoTransport(candidate.transport))?;
        // An empty candidate marks the end of the browser's candidates.
        if candidate.candidate.is_empty() {
            return Ok(());
        }
        link.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate: candidate.candidate,
                sdp_mid: candidate.sdp_mid,
                sdp_mline_index: candidate.sdp_m_line_index,
                ..Default::default()
            })
            .await
            .map_err(|err| {
                tracing::debug!(participant = %participant, error = %err, "ICE candidate refused");
                MediaError::InvalidCandidate(err.to_string())
            })
    }

    async fn leave(&mut self, participant: ParticipantId) {
        let actions = self.table.leave(participant);
        let theirs: Vec<TrackId> = self
            .up
            .iter()
            .filter(|(_, up)| up.publisher == participant)
            .map(|(&id, _)| id)
            .collect();
        for track in theirs {
            self.drop_up_track(track);
        }
        if let Some(peer) = self.peers.remove(&participant) {
            for down in peer.down.into_values() {
                if let Some(task) = down.feedback {
                    task.abort();
                }
            }
            if let Some(link) = peer.publish {
                link.close().await;
            }
            if let Some(link) = peer.subscribe {
                link.close().await;
            }
        }
        self.apply(actions).await;
    }

    async fn end_all(&mut self, reason: &str) {
        let participants: Vec<ParticipantId> = self.peers.keys().copied().collect();
        for participant in participants {
            self.end(participant, reason).await;
        }
    }

    /// End a participant's session on the relay's initiative and tell them why.
    async fn end(&mut self, participant: ParticipantId, reason: &str) {
        if let Some(peer) = self.peers.get(&participant) {
            let frame = crate::frames::push(
                ENDED_EVENT,
                &MediaEnded {
                    campaign_id: self.campaign.clone(),
                    reason: reason.to_owned(),
                },
                crate::clock::now(),
            );
            let _ = peer.pushes.try_send(frame.text);
        }
        self.leave(participant).await;
    }

    async fn track_arrived(&mut self, participant: ParticipantId, remote: Arc<dyn TrackRemote>) {
        if !self.peers.contains_key(&participant) {
            return;
        }
        let kind = match remote.kind().await {
            RtpCodecKind::Audio => MediaKind::Audio,
            _ => MediaKind::Video,
        };
        let Some(media_ssrc) = remote.ssrcs().await.first().copied() else {
            tracing::debug!(participant = %participant, "a published track has no SSRC; ignored");
            return;
        };
        let Some(codec) = remote.codec(media_ssrc).await else {
            tracing::debug!(participant = %participant, "a published track has no codec; ignored");
            return;
        };
        let name = remote.track_id().await;
        let (track, actions) = match self.table.publish(participant, name.clone(), kind) {
            Ok(published) => published,
            Err(err) => {
                tracing::debug!(participant = %participant, error = %err, "published track refused");
                return;
            }
        };
        let targets: Targets = Arc::new(RwLock::new(Arc::from(Vec::new())));
        let task = tokio::spawn(forward(
            remote.clone(),
            targets.clone(),
            track,
            self.events.clone(),
            self.relay.ops().clone(),
        ))
        .abort_handle();
        self.up.insert(
            track,
            UpTrack {
                publisher: participant,
                remote,
                media_ssrc,
                codec,
                kind,
                name,
                targets,
                task,
            },
        );
        metrics::counter!("rally_media_tracks_published_total").increment(1);
        self.apply(actions).await;
    }

    fn drop_up_track(&mut self, track: TrackId) {
        if let Some(up) = self.up.remove(&track) {
            up.task.abort();
        }
    }

    async fn peer_state(
        &mut self,
        participant: ParticipantId,
        transport: Transport,
        state: RTCPeerConnectionState,
    ) {
        if !self.peers.contains_key(&participant) {
            return;
        }
        match state {
            RTCPeerConnectionState::Connected if transport == Transport::Subscribe => {
                if let Some(peer) = self.peers.get_mut(&participant) {
                    peer.receiving = true;
                    peer.open_tracks();
                }
                let actions = self.table.receiving_connected(participant, Instant::now());
                self.apply(actions).await;
            }
            RTCPeerConnectionState::Failed => {
                self.end(participant, "the media connection failed").await;
            }
            _ => {}
        }
    }

    /// Carry out what the forwarding table decided.
    async fn apply(&mut self, actions: Vec<Action>) {
        let mut offers = Vec::new();
        for action in actions {
            match action {
                Action::AddDownTrack { subscriber, track } => {
                    if self.add_down_track(subscriber, track).await {
                        offers.push(subscriber);
                    }
                }
                Action::RemoveDownTrack { subscriber, track } => {
                    if self.remove_down_track(subscriber, track).await {
                        offers.push(subscriber);
                    }
                }
                Action::RequestKeyframe { track } => {
                    if let Some(up) = self.up.get(&track) {
                        let pli = PictureLossIndication {
                            sender_ssrc: 0,
                            media_ssrc: up.media_ssrc,
                        };
                        if up.remote.write_rtcp(vec![Box::new(pli)]).await.is_ok() {
                            metrics::counter!("rally_media_keyframe_requests_total").increment(1);
                        }
                    }
                }
                Action::AnnounceTracks => self.announce(),
            }
        }
        offers.sort();
        offers.dedup();
        for subscriber in offers {
            self.offer(subscriber).await;
        }
    }

    /// Returns whether the subscriber needs a new offer.
    async fn add_down_track(&mut self, subscriber: ParticipantId, track: TrackId) -> bool {
        let Some(up) = self.up.get(&track) else {
            return false;
        };
        let Some(peer) = self.peers.get_mut(&subscriber) else {
            return false;
        };
        if peer.subscribe.is_none() {
            match self
                .factory
                .build(subscriber, Transport::Subscribe, self.events.clone())
                .await
            {
                Ok(link) => peer.subscribe = Some(link),
                Err(err) => {
                    tracing::warn!(campaign = %self.campaign, error = %err, "cannot open a subscriber connection");
                    return false;
                }
            }
        }
        let link = peer.subscribe.as_ref().expect("made above");
        let ssrc = u32::from_le_bytes(crate::clock::random_bytes());
        let kind = match up.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            up.publisher.to_string(),
            format!("{}-{}", up.publisher, track.0),
            up.name.clone(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: up.codec.clone(),
                ..Default::default()
            }],
        )));
        let sender = match link
            .pc
            .add_track(local.clone() as Arc<dyn TrackLocal>)
            .await
        {
            Ok(sender) => sender,
            Err(err) => {
                tracing::warn!(campaign = %self.campaign, error = %err, "cannot add a track for a subscriber");
                return false;
            }
        };
        let target = Arc::new(Downstream {
            local,
            ssrc,
            payload_type: AtomicU8::new(0),
        });
        {
            let mut targets = up.targets.write().expect("targets lock");
            let mut list: Vec<Arc<Downstream>> = targets.iter().cloned().collect();
            list.push(target.clone());
            *targets = Arc::from(list);
        }
        peer.down.insert(
            track,
            DownTrack {
                target,
                sender,
                mime_type: up.codec.mime_type.clone(),
                negotiated: 0,
                feedback: None,
            },
        );
        peer.fresh.push(track);
        true
    }

    async fn remove_down_track(&mut self, subscriber: ParticipantId, track: TrackId) -> bool {
        let Some(peer) = self.peers.get_mut(&subscriber) else {
            return false;
        };
        let Some(down) = peer.down.remove(&track) else {
            return false;
        };
        if let Some(task) = down.feedback {
            task.abort();
        }
        if let Some(up) = self.up.get(&track) {
            let mut targets = up.targets.write().expect("targets lock");
            let list: Vec<Arc<Downstream>> = targets
                .iter()
                .filter(|t| !Arc::ptr_eq(t, &down.target))
                .cloned()
                .collect();
            *targets = Arc::from(list);
        }
        peer.fresh.retain(|t| *t != track);
        if let Some(link) = &peer.subscribe {
            if let Err(err) = link.pc.remove_track(&down.sender).await {
                tracing::debug!(error = %err, "removing a subscriber track failed");
            }
        }
        true
    }

    /// Send the subscriber a new offer for its receiving connection (or remember to, after the
    /// outstanding one is answered).
    async fn offer(&mut self, subscriber: ParticipantId) {
        let Some(peer) = self.peers.get_mut(&subscriber) else {
            return;
        };
        if peer.offer_out {
            peer.renegotiate = true;
            return;
        }
        let Some(link) = peer.subscribe.as_mut() else {
            return;
        };
        let sdp = async {
            let offer = link
                .pc
                .create_offer(None)
                .await
                .map_err(|e| MediaError::Relay(e.to_string()))?;
            link.pc
                .set_local_description(offer)
                .await
                .map_err(|e| MediaError::Relay(e.to_string()))?;
            link.local_sdp().await
        }
        .await;
        match sdp {
            Ok(sdp) => {
                peer.offer_out = true;
                let frame = crate::frames::push(
                    OFFER_EVENT,
                    &SessionDescription {
                        campaign_id: self.campaign.clone(),
                        sdp,
                    },
                    crate::clock::now(),
                );
                if peer.pushes.try_send(frame.text).is_err() {
                    tracing::debug!(participant = %subscriber, "offer not delivered; participant gone or stalled");
                }
            }
            Err(err) => {
                tracing::warn!(campaign = %self.campaign, error = %err, "cannot make an offer for a subscriber");
            }
        }
    }

    fn announce(&self) {
        let frame = crate::frames::push(
            TRACKS_EVENT,
            &MediaTracks {
                campaign_id: self.campaign.clone(),
                publishers: self.table.publishers(),
            },
            crate::clock::now(),
        );
        for peer in self.peers.values() {
            let _ = peer.pushes.try_send(frame.text.clone());
        }
    }

    /// Keep the relay-wide participant and track counts current.
    fn census(&mut self) {
        let now = (self.table.participants(), self.table.track_count());
        self.relay.recount(self.counted, now);
        self.counted = now;
    }

    fn census_clear(&mut self) {
        self.relay.recount(self.counted, (0, 0));
        self.counted = (0, 0);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// The per-packet path: read the publisher's RTP and write it to every current subscriber.
async fn forward(
    remote: Arc<dyn TrackRemote>,
    targets: Targets,
    track: TrackId,
    events: mpsc::UnboundedSender<Command>,
    ops: Arc<crate::ops::OpsCounters>,
) {
    let received = metrics::counter!("rally_media_rtp_packets_received_total");
    let forwarded = metrics::counter!("rally_media_rtp_packets_forwarded_total");
    let forwarded_bytes = metrics::counter!("rally_media_rtp_bytes_forwarded_total");
    while let Some(event) = remote.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(mut packet) => {
                received.increment(1);
                // Header extension ids are negotiated per connection; the publisher's would mean
                // something else (or nothing) on a subscriber's, so none are forwarded.
                packet.header.extension = false;
                packet.header.extensions.clear();
                packet.header.extension_profile = 0;
                let list = targets.read().expect("targets lock").clone();
                let size = packet.payload.len() as u64 + 12;
                for target in list.iter() {
                    let payload_type = target.payload_type.load(Ordering::Relaxed);
                    if payload_type == 0 {
                        continue;
                    }
                    let mut copy = packet.clone();
                    copy.header.ssrc = target.ssrc;
                    copy.header.payload_type = payload_type;
                    if target.local.write_rtp(copy).await.is_ok() {
                        forwarded.increment(1);
                        forwarded_bytes.increment(size);
                        ops.media_packets.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => break,
            _ => {}
        }
    }
    let _ = events.send(Command::TrackEnded { track });
}

/// Pass a subscriber's keyframe requests for one track to its session.
async fn relay_feedback(
    local: Arc<TrackLocalStaticRTP>,
    track: TrackId,
    events: mpsc::UnboundedSender<Command>,
) {
    while let Some(event) = local.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
            let _ = events.send(Command::KeyframeWanted { track });
        }
    }
}
