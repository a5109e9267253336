//! The media relay: an SFU that forwards each publisher's RTP to everyone else in the campaign,
//! without transcoding.
//!
//! - [`forward`]: the forwarding table, sans-IO — who receives what, when to ask for keyframes.
//! - [`session`]: one task per campaign with participants, owning their peer connections and
//!   carrying out the table's decisions; one forwarding task per published track.
//! - [`peer`]: how the relay's peer connections are built (codecs, interceptors, ports, NAT).
//! - [`feedback`]: the interceptor that lets keyframe requests through to the relay.
//! - [`sdp`]: checks on a browser's SDP before WebRTC parses it.
//! - `client` (feature `media-client`): a headless participant for tests and the load tool.
//!
//! Signaling arrives on the WebSocket (`media:*` requests, see docs/protocol.md); the gateway
//! calls [`MediaRelay`], which routes each request to its campaign's session.

#[cfg(feature = "media-client")]
pub mod client;
pub mod feedback;
pub mod forward;
pub mod peer;
pub mod sdp;
pub mod session;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use rally_app::model::{CampaignId, Role};
use rally_app::protocol::media::{
    IceCandidate, IceServer, MediaJoined, Transport, PARTICIPANTS_MAX,
};
use rally_app::protocol::{ErrorBody, ErrorCode};
use tokio::sync::{mpsc, oneshot};

use self::forward::ParticipantId;
use self::peer::PeerFactory;
use self::session::{Command, Session};
use crate::shutdown::ShutdownSignal;

/// Who may go live in a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Publishers {
    /// Owners and editors.
    Editors,
    /// Everyone who may watch the campaign.
    Everyone,
}

/// The relay's settings (from `--media-*` and `--ice-servers`).
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Address the relay's UDP sockets bind to; `0.0.0.0` means every non-loopback interface.
    pub bind_ip: IpAddr,
    /// Address announced instead of the bound one, for a relay behind 1:1 NAT.
    pub public_ip: Option<IpAddr>,
    /// Inclusive UDP port range; each peer connection takes one. `None`: ephemeral ports.
    pub udp_ports: Option<(u16, u16)>,
    /// STUN/TURN servers handed to browsers.
    pub ice_servers: Vec<IceServer>,
    pub publishers: Publishers,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind_ip: IpAddr::from([0, 0, 0, 0]),
            public_ip: None,
            udp_ports: None,
            ice_servers: Vec::new(),
            publishers: Publishers::Editors,
        }
    }
}

/// Why a media request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("join this campaign's media session first (media:join)")]
    NotJoined,
    #[error("this connection is already in this campaign's media session")]
    AlreadyJoined,
    #[error("this connection is in the media session of campaign {0}; leave it first")]
    InAnotherSession(CampaignId),
    #[error("the media session is full ({PARTICIPANTS_MAX} participants)")]
    SessionFull,
    #[error("you may watch but not go live in this campaign")]
    PublishForbidden,
    #[error("at most {max} published tracks per participant")]
    TooManyTracks { max: usize },
    #[error("the {what} is larger than {max} bytes")]
    TooLarge { what: &'static str, max: usize },
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    #[error("there is no {0:?} connection yet for this candidate")]
    NoTransport(Transport),
    #[error("no offer is waiting for an answer")]
    NoOfferOut,
    #[error("the media relay failed: {0}")]
    Relay(String),
    #[error("the media relay is shutting down")]
    Closed,
}

impl From<MediaError> for ErrorBody {
    fn from(err: MediaError) -> Self {
        let code = match &err {
            MediaError::NotJoined | MediaError::NoTransport(_) => ErrorCode::NotFound,
            MediaError::AlreadyJoined
            | MediaError::InAnotherSession(_)
            | MediaError::NoOfferOut => ErrorCode::Conflict,
            MediaError::SessionFull | MediaError::TooManyTracks { .. } => ErrorCode::LimitExceeded,
            MediaError::PublishForbidden => ErrorCode::Forbidden,
            MediaError::TooLarge { .. } => ErrorCode::TooLarge,
            MediaError::InvalidSdp(_) | MediaError::InvalidCandidate(_) => ErrorCode::Invalid,
            MediaError::Relay(_) => ErrorCode::Internal,
            MediaError::Closed => ErrorCode::Unavailable,
        };
        ErrorBody::new(code, err.to_string())
    }
}

/// The relay: routes media requests to per-campaign sessions, starting them on first join.
#[derive(Clone)]
pub struct MediaRelay {
    inner: Arc<Inner>,
}

struct Inner {
    config: MediaConfig,
    factory: Arc<PeerFactory>,
    sessions: Mutex<HashMap<CampaignId, mpsc::UnboundedSender<Command>>>,
    shutdown: ShutdownSignal,
    participants: AtomicUsize,
    tracks: AtomicUsize,
    /// Forwarded packets are counted here for `/ops` too.
    ops: Arc<crate::ops::OpsCounters>,
    next_participant: std::sync::atomic::AtomicU64,
}

/// How much the relay holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Census {
    pub sessions: usize,
    pub participants: usize,
    pub tracks: usize,
}

impl MediaRelay {
    pub fn new(
        config: MediaConfig,
        shutdown: ShutdownSignal,
        ops: Arc<crate::ops::OpsCounters>,
    ) -> Self {
        MediaRelay {
            inner: Arc::new(Inner {
                factory: Arc::new(PeerFactory::new(&config)),
                config,
                sessions: Mutex::new(HashMap::new()),
                shutdown,
                participants: AtomicUsize::new(0),
                tracks: AtomicUsize::new(0),
                ops,
                next_participant: std::sync::atomic::AtomicU64::new(1),
            }),
        }
    }

    /// A new participant id (one per join).
    pub fn next_participant(&self) -> ParticipantId {
        ParticipantId(self.inner.next_participant.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether someone with `role` may publish.
    pub fn may_publish(&self, role: Role) -> bool {
        match self.inner.config.publishers {
            Publishers::Editors => role.can_edit(),
            Publishers::Everyone => true,
        }
    }

    pub fn ops(&self) -> &Arc<crate::ops::OpsCounters> {
        &self.inner.ops
    }

    pub fn ice_servers(&self) -> &[IceServer] {
        &self.inner.config.ice_servers
    }

    pub fn census(&self) -> Census {
        Census {
            sessions: self.inner.sessions.lock().expect("sessions lock").len(),
            participants: self.inner.participants.load(Ordering::Relaxed),
            tracks: self.inner.tracks.load(Ordering::Relaxed),
        }
    }

    /// Free UDP ports left in the configured range (None without a range).
    pub fn free_ports(&self) -> Option<usize> {
        self.inner.factory.ports().map(|p| p.free())
    }

    pub async fn join(
        &self,
        campaign: &CampaignId,
        participant: ParticipantId,
        display_name: String,
        can_publish: bool,
        pushes: mpsc::Sender<Utf8Bytes>,
    ) -> Result<MediaJoined, MediaError> {
        self.ask(campaign, true, |reply| Command::Join {
            participant,
            display_name,
            can_publish,
            pushes,
            reply,
        })
        .await?
    }

    /// Apply a publisher's offer; returns the relay's answer.
    pub async fn publish(
        &self,
        campaign: &CampaignId,
        participant: ParticipantId,
        sdp: String,
    ) -> Result<String, MediaError> {
        self.ask(campaign, false, |reply| Command::Publish {
            participant,
            sdp,
            reply,
        })
        .await?
    }

    /// Apply a subscriber's answer to the relay's latest offer.
    pub async fn answer(
        &self,
        campaign: &CampaignId,
        participant: ParticipantId,
        sdp: String,
    ) -> Result<(), MediaError> {
        self.ask(campaign, false, |reply| Command::Answer {
            participant,
            sdp,
            reply,
        })
        .await?
    }

    pub async fn candidate(
        &self,
        campaign: &CampaignId,
        participant: ParticipantId,
        candidate: IceCandidate,
    ) -> Result<(), MediaError> {
        self.ask(campaign, false, |reply| Command::Candidate {
            participant,
            candidate,
            reply,
        })
        .await?
    }

    pub async fn leave(
        &self,
        campaign: &CampaignId,
        participant: ParticipantId,
    ) -> Result<(), MediaError> {
        self.ask(campaign, false, |reply| Command::Leave {
            participant,
            reply: Some(reply),
        })
        .await?
    }

    /// Leave without waiting (the connection is gone).
    pub fn forget(&self, campaign: &CampaignId, participant: ParticipantId) {
        let _ = self.send(
            campaign,
            false,
            Command::Leave {
                participant,
                reply: None,
            },
        );
    }

    async fn ask<T>(
        &self,
        campaign: &CampaignId,
        start: bool,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MediaError> {
        let (reply, answer) = oneshot::channel();
        self.send(campaign, start, command(reply))?;
        answer.await.map_err(|_| MediaError::Closed)
    }

    fn send(&self, campaign: &CampaignId, start: bool, command: Command) -> Result<(), MediaError> {
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        if let Some(session) = sessions.get(campaign) {
            return session.send(command).map_err(|_| MediaError::Closed);
        }
        if !start {
            return Err(MediaError::NotJoined);
        }
        if self.inner.shutdown.is_triggered() {
            return Err(MediaError::Closed);
        }
        let session = Session::spawn(
            campaign.clone(),
            self.clone(),
            self.inner.factory.clone(),
            self.inner.shutdown.clone(),
        );
        let sent = session.send(command).map_err(|_| MediaError::Closed);
        sessions.insert(campaign.clone(), session);
        sent
    }

    /// Called by an empty session: remove it unless a command is already on its way. Holding
    /// the map's lock, nobody can look the session up and send to it meanwhile, so "nothing
    /// queued" here means nothing will be.
    fn retire(
        &self,
        campaign: &CampaignId,
        own: &mpsc::UnboundedSender<Command>,
        queue: &mpsc::UnboundedReceiver<Command>,
    ) -> bool {
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        if !queue.is_empty() {
            return false;
        }
        if sessions.get(campaign).is_some_and(|s| s.same_channel(own)) {
            sessions.remove(campaign);
        }
        true
    }

    fn recount(&self, before: (usize, usize), after: (usize, usize)) {
        let adjust = |counter: &AtomicUsize, before: usize, after: usize| {
            if after >= before {
                counter.fetch_add(after - before, Ordering::Relaxed);
            } else {
                counter.fetch_sub(before - after, Ordering::Relaxed);
            }
        };
        adjust(&self.inner.participants, before.0, after.0);
        adjust(&self.inner.tracks, before.1, after.1);
        metrics::gauge!("rally_media_participants")
            .set(self.inner.participants.load(Ordering::Relaxed) as f64);
        metrics::gauge!("rally_media_tracks").set(self.inner.tracks.load(Ordering::Relaxed) as f64);
        if let Some(ports) = self.inner.factory.ports() {
            let used = ports.total() - ports.free();
            metrics::gauge!("rally_media_relay_saturation").set(used as f64 / ports.total() as f64);
        }
    }
}
