//! One campaign's media session: a task that owns the [`ForwardingTable`] and every peer
//! connection, track and forwarding task of the campaign's participants, and carries out what
//! the table decides.
//!
//! Everything that changes the session — requests from participants and events from WebRTC —
//! arrives as a [`Command`] on one channel and is handled in order, so no two changes race. The
//! per-packet path does not go through here: each published track has its own forwarding task
//! that reads the publisher's RTP and writes it to the current list of receiving tracks.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rally_app::model::CampaignId;
use rally_app::protocol::media::{
    IceCandidate, IceServer, MediaEnded, MediaJoined, MediaKind, MediaTracks, SessionDescription,
    Transport, CANDIDATE_MAX_BYTES, ENDED_EVENT, OFFER_EVENT, TRACKS_EVENT,
    TRACKS_PER_PARTICIPANT_MAX,
};
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{RTCIceCandidateInit, RTCPeerConnectionState, RTCSessionDescription};
use webrtc::rtp_transceiver::RtpSender;

use super::call::ParticipantId;
use super::call::{Call, CallReply, Joining, MediaError};
use super::census::Share;
use super::forward::{ForwardingTable, TrackId};
use super::peer::{PeerEvent, PeerEvents, PeerFactory, PeerLink};
use super::sdp;
use super::track::{relay_feedback, Downstream, Targets, TrackEvent, TrackEvents};
use crate::registry::{Generation, Registry};
use crate::shutdown::ShutdownSignal;
use crate::stats::OpsCounters;

/// A running session's queue, as the relay's registry knows it.
pub type SessionHandle = mpsc::UnboundedSender<Command>;

pub enum Command {
    Join {
        joining: Joining,
        reply: oneshot::Sender<Result<MediaJoined, MediaError>>,
    },
    /// A participant's request after joining (from this instance or, relayed, from another).
    Call {
        call: Call,
        reply: oneshot::Sender<Result<CallReply, MediaError>>,
    },
    /// End everyone's participation (the session moved to another instance).
    EndAll { reason: &'static str },
    /// From a peer connection.
    Peer(PeerEvent),
    /// From the packet path.
    Track(TrackEvent),
}

/// What a session is started with.
pub struct SessionSetup {
    pub campaign: CampaignId,
    pub registry: Arc<Registry<CampaignId, SessionHandle>>,
    pub generation: Generation,
    pub factory: Arc<PeerFactory>,
    pub ice_servers: Arc<[IceServer]>,
    pub census: Share,
    pub ops: Arc<OpsCounters>,
    pub shutdown: ShutdownSignal,
}

pub(super) struct UpTrack {
    pub(super) publisher: ParticipantId,
    pub(super) remote: Arc<dyn TrackRemote>,
    pub(super) media_ssrc: u32,
    pub(super) codec: RTCRtpCodec,
    pub(super) kind: MediaKind,
    pub(super) name: String,
    pub(super) targets: Targets,
    pub(super) task: AbortHandle,
}

pub(super) struct DownTrack {
    pub(super) target: Arc<Downstream>,
    pub(super) sender: Arc<dyn RtpSender>,
    pub(super) mime_type: String,
    /// The payload type from the last answer (0: not negotiated yet).
    pub(super) negotiated: u8,
    pub(super) feedback: Option<AbortHandle>,
}

pub(super) struct Peer {
    pub(super) pushes: mpsc::Sender<Utf8Bytes>,
    pub(super) publish: Option<PeerLink>,
    pub(super) subscribe: Option<PeerLink>,
    pub(super) down: BTreeMap<TrackId, DownTrack>,
    /// An offer went out on the subscribe connection and is not answered yet.
    pub(super) offer_out: bool,
    /// Tracks changed while an offer was out: offer again after the answer.
    pub(super) renegotiate: bool,
    /// Tracks added since the last answer (they get a keyframe once negotiated).
    pub(super) fresh: Vec<TrackId>,
    /// The subscribe connection is up (DTLS done): negotiated tracks may send.
    pub(super) receiving: bool,
}

impl Peer {
    /// Let every negotiated track send, once the subscribe connection is up.
    pub(super) fn open_tracks(&self) {
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
    pub(super) campaign: CampaignId,
    pub(super) table: ForwardingTable,
    pub(super) peers: HashMap<ParticipantId, Peer>,
    pub(super) up: HashMap<TrackId, UpTrack>,
    pub(super) registry: Arc<Registry<CampaignId, SessionHandle>>,
    pub(super) generation: Generation,
    pub(super) factory: Arc<PeerFactory>,
    pub(super) ice_servers: Arc<[IceServer]>,
    /// Peer connections' events go into the session's own queue.
    pub(super) peer_events: PeerEvents,
    /// The packet path's events too.
    pub(super) track_events: TrackEvents,
    /// This session's share of the relay's participant and track counts.
    pub(super) census: Share,
    pub(super) ops: Arc<OpsCounters>,
}

impl Session {
    /// Start a session task; the registry calls this under its lock.
    pub fn spawn(setup: SessionSetup) -> SessionHandle {
        let (queue, commands) = mpsc::unbounded_channel();
        let to_queue = queue.clone();
        let peer_events: PeerEvents = Arc::new(move |event| {
            let _ = to_queue.send(Command::Peer(event));
        });
        let to_queue = queue.clone();
        let track_events: TrackEvents = Arc::new(move |event| {
            let _ = to_queue.send(Command::Track(event));
        });
        let session = Session {
            campaign: setup.campaign,
            table: ForwardingTable::new(),
            peers: HashMap::new(),
            up: HashMap::new(),
            registry: setup.registry,
            generation: setup.generation,
            factory: setup.factory,
            ice_servers: setup.ice_servers,
            peer_events,
            track_events,
            census: setup.census,
            ops: setup.ops,
        };
        tokio::spawn(session.run(commands, setup.shutdown));
        queue
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
            self.census
                .set(self.table.participants(), self.table.track_count());
            if self.table.is_empty()
                && self
                    .registry
                    .retire(&self.campaign, self.generation, || commands.is_empty())
            {
                break;
            }
        }
        // A session that ends for any other reason leaves the registry too.
        self.registry.forget(&self.campaign, self.generation);
        tracing::debug!(campaign = %self.campaign, "media session ended");
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Join { joining, reply } => {
                let _ = reply.send(self.join(joining).await);
            }
            Command::Call { call, reply } => {
                let _ = reply.send(self.call(call).await);
            }
            Command::EndAll { reason } => self.end_all(reason).await,
            Command::Peer(PeerEvent::TrackArrived {
                participant,
                remote,
            }) => self.track_arrived(participant, remote).await,
            Command::Peer(PeerEvent::State {
                participant,
                transport,
                state,
            }) => self.peer_state(participant, transport, state).await,
            Command::Track(TrackEvent::Ended(track)) => {
                let actions = self.table.unpublish(track);
                self.drop_up_track(track);
                self.apply(actions).await;
            }
            Command::Track(TrackEvent::KeyframeWanted(track)) => {
                let actions = self.table.keyframe_requested(track, Instant::now());
                self.apply(actions).await;
            }
        }
    }

    /// Carry out a joined participant's call.
    async fn call(&mut self, call: Call) -> Result<CallReply, MediaError> {
        match call {
            Call::Publish { participant, sdp } => {
                self.publish(participant, sdp).await.map(CallReply::Sdp)
            }
            Call::Answer { participant, sdp } => self
                .take_answer(participant, sdp)
                .await
                .map(|()| CallReply::Done),
            Call::Candidate {
                participant,
                candidate,
            } => self
                .candidate(participant, candidate)
                .await
                .map(|()| CallReply::Done),
            Call::Leave { participant } => {
                let known = self.peers.contains_key(&participant);
                self.leave(participant).await;
                if known {
                    Ok(CallReply::Done)
                } else {
                    Err(MediaError::NotJoined)
                }
            }
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
            ice_servers: self.ice_servers.to_vec(),
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
        if summary.sending > TRACKS_PER_PARTICIPANT_MAX {
            return Err(MediaError::TooManyTracks {
                max: TRACKS_PER_PARTICIPANT_MAX,
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
                .build(participant, Transport::Publish, self.peer_events.clone())
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
        let answered = async {
            let answer = link.pc.create_answer(None).await?;
            link.pc.set_local_description(answer).await
        }
        .await;
        if let Err(err) = answered {
            // The offer was taken but cannot be answered: go back to stable, so the next
            // offer starts from a clean state.
            if let Ok(rollback) = RTCSessionDescription::rollback(None) {
                let _ = link.pc.set_remote_description(rollback).await;
            }
            return Err(MediaError::InvalidSdp(err.to_string()));
        }
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

    /// A subscriber's answer to the relay's outstanding offer.
    async fn take_answer(
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
                let events = self.track_events.clone();
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
        if candidate.candidate.len() > CANDIDATE_MAX_BYTES {
            return Err(MediaError::TooLarge {
                what: "candidate",
                max: CANDIDATE_MAX_BYTES,
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

    /// Send the subscriber a new offer for its receiving connection (or remember to, after the
    /// outstanding one is answered).
    pub(super) async fn offer(&mut self, subscriber: ParticipantId) {
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

    pub(super) fn announce(&self) {
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
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
