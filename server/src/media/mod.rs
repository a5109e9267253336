//! The media relay: an SFU that forwards each publisher's RTP to everyone else in the campaign,
//! without transcoding.
//!
//! - [`forward`]: the forwarding table, sans-IO — who receives what, when to ask for keyframes.
//! - [`session`]: one task per campaign with participants, owning their peer connections and
//!   carrying out the table's decisions; one forwarding task per published track.
//! - [`peer`]: how the relay's peer connections are built (codecs, interceptors, ports, NAT).
//! - [`feedback`]: the interceptor that lets keyframe requests through to the relay.
//! - [`sdp`]: checks on a browser's SDP before WebRTC parses it.
//! - [`cluster`]: Redis mode — which instance runs a campaign's session, and signaling relayed
//!   to it from the others.
//! - `client` (feature `media-client`): a headless participant for tests and the load tool.
//!
//! Signaling arrives on the WebSocket (`media:*` requests, see docs/protocol.md); the gateway
//! calls [`MediaRelay`], which routes each request to its campaign's session, here or on the
//! instance that runs it.

#[cfg(feature = "media-client")]
pub mod client;
pub mod cluster;
pub mod feedback;
pub mod forward;
pub mod peer;
pub mod sdp;
pub mod session;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use rally_app::model::{CampaignId, Role};
use rally_app::protocol::media::{IceServer, MediaJoined, Transport, PARTICIPANTS_MAX};
use rally_app::protocol::{ErrorBody, ErrorCode};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use self::cluster::{Answer, Call, Lease, Location, MediaCluster};
use self::forward::ParticipantId;
use self::peer::PeerFactory;
use self::session::{Command, Session};
use crate::redis_link::RedisLink;
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
    #[error("{}", cluster::MOVED)]
    Moved,
    #[error("the instance running this media session does not answer; join again shortly")]
    OwnerUnreachable,
    #[error("cannot tell which instance runs this media session: {0}")]
    Unavailable(String),
    /// The instance running the session refused (its reason, as the client should see it).
    #[error("{}", .0.message)]
    Remote(ErrorBody),
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
            MediaError::Closed
            | MediaError::Moved
            | MediaError::OwnerUnreachable
            | MediaError::Unavailable(_) => ErrorCode::Unavailable,
            MediaError::Remote(body) => return body.clone(),
        };
        ErrorBody::new(code, err.to_string())
    }
}

/// Someone joining a media session.
pub struct Joining {
    pub participant: ParticipantId,
    pub display_name: String,
    pub can_publish: bool,
    /// Where the session's pushes for this participant go (offers, track lists, the end).
    pub pushes: mpsc::Sender<Utf8Bytes>,
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
    /// Redis mode: sessions may run on other instances.
    cluster: Option<Arc<MediaCluster>>,
    shutdown: ShutdownSignal,
    participants: AtomicUsize,
    tracks: AtomicUsize,
    /// Forwarded packets are counted here for `/ops` too.
    ops: Arc<crate::ops::OpsCounters>,
    /// This instance's number in the high half, a counter in the low half.
    next_participant: AtomicU64,
}

/// How much the relay holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Census {
    pub sessions: usize,
    pub participants: usize,
    pub tracks: usize,
}

/// A request's reply, to wait for.
pub type Reply<T> = Pin<Box<dyn Future<Output = Result<T, MediaError>> + Send>>;

impl MediaRelay {
    /// A relay for this instance (`instance`: its event-id number). With `redis`, sessions
    /// are shared with the other instances of that Redis (see [`cluster`]).
    pub fn new(
        config: MediaConfig,
        instance: u32,
        redis: Option<RedisLink>,
        shutdown: ShutdownSignal,
        ops: Arc<crate::ops::OpsCounters>,
    ) -> Self {
        let cluster = redis.map(|link| MediaCluster::new(link, instance));
        let relay = MediaRelay {
            inner: Arc::new(Inner {
                factory: Arc::new(PeerFactory::new(&config)),
                config,
                sessions: Mutex::new(HashMap::new()),
                cluster: cluster.as_ref().map(|(cluster, _)| cluster.clone()),
                shutdown: shutdown.clone(),
                participants: AtomicUsize::new(0),
                tracks: AtomicUsize::new(0),
                ops,
                next_participant: AtomicU64::new((u64::from(instance) << 32) + 1),
            }),
        };
        if let Some((cluster, outbox)) = cluster {
            cluster.start(relay.clone(), outbox, shutdown);
        }
        relay
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

    /// Sessions, participants and tracks running on this instance.
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

    /// Join `campaign`'s media session, wherever it runs (in Redis mode, the first join of a
    /// campaign nobody runs starts its session here).
    pub async fn join(
        &self,
        campaign: &CampaignId,
        joining: Joining,
    ) -> Result<MediaJoined, MediaError> {
        self.join_at(campaign, joining, true).await
    }

    /// Join a session that runs here, or starts here: for participants of other instances,
    /// which sent the join here because this instance holds the lease.
    pub(crate) async fn join_here(
        &self,
        campaign: &CampaignId,
        joining: Joining,
    ) -> Result<MediaJoined, MediaError> {
        self.join_at(campaign, joining, false).await
    }

    async fn join_at(
        &self,
        campaign: &CampaignId,
        joining: Joining,
        may_go_away: bool,
    ) -> Result<MediaJoined, MediaError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Join { joining, reply };
        match &self.inner.cluster {
            None => self.send(campaign, Some(None), command)?,
            Some(cluster) => {
                let _claiming = cluster.claiming.lock().await;
                let Err(command) = self.send_if_running(campaign, command) else {
                    return answer.await.map_err(|_| MediaError::Closed)?;
                };
                match cluster.claim(campaign).await? {
                    Location::Here(lease) => self.send(campaign, Some(Some(lease)), command)?,
                    Location::Away(lease) if may_go_away => {
                        let Command::Join { joining, .. } = command else {
                            unreachable!("built as a join above")
                        };
                        return cluster.join_away(lease, campaign, joining).await;
                    }
                    Location::Away(_) => return Err(MediaError::Moved),
                }
            }
        }
        answer.await.map_err(|_| MediaError::Closed)?
    }

    /// Send a joined participant's request to its session now, wherever the session runs (so
    /// requests keep their order); the reply is to be awaited.
    pub fn request(&self, campaign: &CampaignId, call: Call) -> Reply<Answer> {
        if let Some(cluster) = &self.inner.cluster {
            if let Some(owner) = cluster.owner_of(call.participant()) {
                if let Call::Leave { participant } = call {
                    return match cluster.leave_away(participant) {
                        Some(left) => Box::pin(left.map(|r| r.map(|()| Answer::Done))),
                        None => Box::pin(std::future::ready(Err(MediaError::NotJoined))),
                    };
                }
                return Box::pin(cluster.call(owner, campaign, call));
            }
        }
        let (reply, answer) = oneshot::channel();
        let sent = self.send(campaign, None, Command::Call { call, reply });
        Box::pin(async move {
            sent?;
            answer.await.map_err(|_| MediaError::Closed)?
        })
    }

    /// Leave without waiting (the connection is gone).
    pub fn forget(&self, campaign: &CampaignId, participant: ParticipantId) {
        if let Some(cluster) = &self.inner.cluster {
            if cluster.forget_away(participant) {
                return;
            }
        }
        let (reply, _) = oneshot::channel();
        let _ = self.send(
            campaign,
            None,
            Command::Call {
                call: Call::Leave { participant },
                reply,
            },
        );
    }

    /// Send to the campaign's session if one runs here; the command back if not.
    fn send_if_running(&self, campaign: &CampaignId, command: Command) -> Result<(), Command> {
        let sessions = self.inner.sessions.lock().expect("sessions lock");
        match sessions.get(campaign) {
            Some(session) => {
                // A session whose task ended drops the command (and its reply: `Closed`).
                let _ = session.send(command);
                Ok(())
            }
            None => Err(command),
        }
    }

    /// Send to the campaign's session. None runs here: `start` says whether to start one (and,
    /// in Redis mode, with which lease); otherwise the sender has not joined.
    fn send(
        &self,
        campaign: &CampaignId,
        start: Option<Option<Lease>>,
        command: Command,
    ) -> Result<(), MediaError> {
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        if let Some(session) = sessions.get(campaign) {
            return session.send(command).map_err(|_| MediaError::Closed);
        }
        let Some(lease) = start else {
            return Err(MediaError::NotJoined);
        };
        if self.inner.shutdown.is_triggered() {
            return Err(MediaError::Closed);
        }
        let session = Session::spawn(
            campaign.clone(),
            self.clone(),
            self.inner.factory.clone(),
            self.inner.shutdown.clone(),
        );
        if let (Some(cluster), Some(lease)) = (&self.inner.cluster, lease) {
            cluster.keep(campaign.clone(), lease, session.clone());
        }
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
