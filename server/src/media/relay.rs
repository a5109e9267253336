//! [`MediaRelay`]: routes each media request to its campaign's session — here, or, in Redis
//! mode, on the instance that runs it — and starts a session on the first join of a campaign
//! nobody runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::FutureExt;
use rally_app::model::{CampaignId, Role};
use rally_app::protocol::media::{IceServer, MediaJoined};
use tokio::sync::{mpsc, oneshot};

use super::call::ParticipantId;
use super::call::{Call, CallReply, Joining, MediaConfig, MediaError, Publishers};
use super::census::{Census, Counts};
use super::cluster::{MediaCluster, Visit};
use super::lease::{Lease, Location};
use super::peer::PeerFactory;
use super::session::{Command, Session, SessionHandle, SessionSetup};
use crate::redis::RedisLink;
use crate::registry::Registry;
use crate::shutdown::ShutdownSignal;
use crate::stats::OpsCounters;

/// How a join reaches its session when none runs here.
enum Start {
    /// Only a running session: the sender must have joined already.
    No,
    /// Start one (single-instance mode: nobody else could run it).
    Here,
    /// Start one that holds this lease (Redis mode).
    WithLease(Lease),
}

/// The relay: routes media requests to per-campaign sessions, starting them on first join.
#[derive(Clone)]
pub struct MediaRelay {
    inner: Arc<Inner>,
}

struct Inner {
    config: MediaConfig,
    ice_servers: Arc<[IceServer]>,
    factory: Arc<PeerFactory>,
    sessions: Arc<Registry<CampaignId, SessionHandle>>,
    /// Redis mode: sessions may run on other instances.
    cluster: Option<Arc<MediaCluster>>,
    shutdown: ShutdownSignal,
    counts: Counts,
    /// Forwarded packets are counted here for `/ops` too.
    ops: Arc<OpsCounters>,
    /// This instance's number in the high half, a counter in the low half.
    next_participant: AtomicU64,
}

/// A request's reply, to wait for.
pub type CallFuture<T> = Pin<Box<dyn Future<Output = Result<T, MediaError>> + Send>>;

impl MediaRelay {
    /// A relay for this instance (`instance`: its event-id number). With `redis`, sessions
    /// are shared with the other instances of that Redis (see the cluster module).
    pub fn new(
        config: MediaConfig,
        instance: u32,
        redis: Option<RedisLink>,
        shutdown: ShutdownSignal,
        ops: Arc<OpsCounters>,
    ) -> Self {
        let cluster = redis.map(|link| MediaCluster::start(link, instance, shutdown.clone()));
        let relay = MediaRelay {
            inner: Arc::new(Inner {
                factory: Arc::new(PeerFactory::new(&config)),
                ice_servers: Arc::from(config.ice_servers.clone()),
                config,
                sessions: Arc::default(),
                cluster: cluster.as_ref().map(|(cluster, _)| cluster.clone()),
                shutdown,
                counts: Counts::default(),
                ops,
                next_participant: AtomicU64::new((u64::from(instance) << 32) + 1),
            }),
        };
        if let Some((cluster, visits)) = cluster {
            tokio::spawn(relay.clone().host(cluster, visits));
        }
        relay
    }

    /// Carry out what other instances ask of the sessions here, in arrival order.
    async fn host(self, cluster: Arc<MediaCluster>, mut visits: mpsc::UnboundedReceiver<Visit>) {
        while let Some(visit) = visits.recv().await {
            match visit {
                Visit::Join {
                    from,
                    id,
                    campaign,
                    joining,
                } => {
                    let relay = self.clone();
                    cluster.reply(from, id, async move {
                        relay
                            .join_at(&campaign, joining, false)
                            .await
                            .map(CallReply::Joined)
                    });
                }
                Visit::Call {
                    from,
                    id,
                    campaign,
                    call,
                } => cluster.reply(from, id, self.request(&campaign, call)),
                Visit::LetGo {
                    campaign,
                    participant,
                } => self.forget(&campaign, participant),
            }
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

    /// Sessions, participants and tracks running on this instance.
    pub fn census(&self) -> Census {
        Census {
            sessions: self.inner.sessions.len(),
            participants: self.inner.counts.participants(),
            tracks: self.inner.counts.tracks(),
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

    /// Join here, or (`may_go_away`) on the instance that runs the session. A join that came
    /// from another instance must not travel on: it came here because this instance holds the
    /// lease.
    async fn join_at(
        &self,
        campaign: &CampaignId,
        joining: Joining,
        may_go_away: bool,
    ) -> Result<MediaJoined, MediaError> {
        let (reply, joined) = oneshot::channel();
        let command = Command::Join { joining, reply };
        match &self.inner.cluster {
            None => self
                .send(campaign, Start::Here, command)
                .map_err(|(error, _)| error)?,
            Some(cluster) => {
                let _claiming = cluster.leases.claiming.lock().await;
                let command = match self.send(campaign, Start::No, command) {
                    Ok(()) => return joined.await.map_err(|_| MediaError::Closed)?,
                    Err((_, command)) => command,
                };
                match cluster.leases.claim(campaign).await? {
                    Location::Here(lease) => self
                        .send(campaign, Start::WithLease(lease), command)
                        .map_err(|(error, _)| error)?,
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
        joined.await.map_err(|_| MediaError::Closed)?
    }

    /// Send a joined participant's call to its session now, wherever the session runs (so
    /// calls keep their order); the reply is to be awaited.
    pub fn request(&self, campaign: &CampaignId, call: Call) -> CallFuture<CallReply> {
        if let Some(cluster) = &self.inner.cluster {
            if let Some(owner) = cluster.owner_of(call.participant()) {
                if let Call::Leave { participant } = call {
                    return match cluster.leave_away(participant) {
                        Some(left) => Box::pin(left.map(|r| r.map(|()| CallReply::Done))),
                        None => Box::pin(std::future::ready(Err(MediaError::NotJoined))),
                    };
                }
                return Box::pin(cluster.call(owner, campaign, call));
            }
        }
        let (reply, replied) = oneshot::channel();
        let sent = self
            .send(campaign, Start::No, Command::Call { call, reply })
            .map_err(|(error, _)| error);
        Box::pin(async move {
            sent?;
            replied.await.map_err(|_| MediaError::Closed)?
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
        let leave = Command::Call {
            call: Call::Leave { participant },
            reply,
        };
        let _ = self.send(campaign, Start::No, leave);
    }

    /// Send to the campaign's session, starting one as `start` says when none runs here. A
    /// session whose task ended drops the command (and its reply: `Closed`). Refused: why, and
    /// the command back.
    fn send(
        &self,
        campaign: &CampaignId,
        start: Start,
        command: Command,
    ) -> Result<(), (MediaError, Command)> {
        let inner = &self.inner;
        if let Some(session) = inner.sessions.get(campaign) {
            if !session.is_closed() {
                return session
                    .send(command)
                    .map_err(|returned| (MediaError::Closed, returned.0));
            }
        }
        let lease = match start {
            Start::No => return Err((MediaError::NotJoined, command)),
            Start::Here => None,
            Start::WithLease(lease) => Some(lease),
        };
        if inner.shutdown.is_triggered() {
            return Err((MediaError::Closed, command));
        }
        let session = inner.sessions.get_or_start(
            campaign,
            |session| !session.is_closed(),
            |generation| {
                Session::spawn(SessionSetup {
                    campaign: campaign.clone(),
                    registry: inner.sessions.clone(),
                    generation,
                    factory: inner.factory.clone(),
                    ice_servers: inner.ice_servers.clone(),
                    census: inner.counts.share(inner.factory.ports().cloned()),
                    ops: inner.ops.clone(),
                    shutdown: inner.shutdown.clone(),
                })
            },
        );
        if let (Some(cluster), Some(lease)) = (&inner.cluster, lease) {
            cluster.keep(campaign.clone(), lease, session.clone());
        }
        session
            .send(command)
            .map_err(|returned| (MediaError::Closed, returned.0))
    }
}
