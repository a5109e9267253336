//! Redis mode: one instance runs a campaign's media session, the others relay signaling to it.
//!
//! A session's peer connections, tracks and forwarding tasks live on one instance, the
//! *owner*, which holds the campaign's lease (see [`super::lease`]). The first instance to get
//! a join for a campaign nobody owns takes the lease and starts the session. Participants
//! connected to other instances are *away*: their requests travel to the owner over Redis
//! pub/sub (every instance listens on `rally:media:<instance>`), as [`MediaNote::Call`], and come
//! back as [`MediaNote::Reply`]; the session's pushes for them (offers, track lists, endings)
//! travel back as [`MediaNote::Push`], then [`MediaNote::Closed`] when the session lets go. On the
//! owner, what visitors ask arrives at the relay as [`Visit`]s, through a channel the relay
//! drains.
//! Media itself does not cross instances: the browser's ICE goes straight to the owner, whose
//! addresses are in the SDP it wrote.
//!
//! Everything an instance sends goes out through one queue in order, so a participant's calls
//! reach the owner's session in the order the participant made them, and an away participant's
//! pushes arrive in the order the session wrote them.
//!
//! When something dies:
//! - the owner: its lease expires. Every instance checks the leases of its away participants
//!   every [`LEASE_RENEW`](super::lease::LEASE_RENEW) and ends their membership ("the media relay moved; join again") once
//!   the lease is gone or another instance's; the next join takes the lease. (Instance numbers
//!   are drawn anew at each start, so a restarted owner is another instance.)
//! - an instance with away participants: it confirms them to their owners every
//!   [`LEASE_RENEW`](super::lease::LEASE_RENEW) ([`MediaNote::Alive`]); an owner lets go of visitors not confirmed for
//!   [`VISITOR_TTL`].
//! - the owner's lease, while it still runs the session (it expired during a Redis outage and
//!   another instance took it): the session ends for everyone, who then join the new owner.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rally_app::model::CampaignId;
use rally_app::protocol::media::{MediaEnded, MediaJoined, ENDED_EVENT};
use rally_app::protocol::ErrorBody;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::call::{Call, CallReply, Joining, MediaError, ParticipantId, MOVED, PUSH_BUFFER};
use super::lease::{Holder, Lease, Leases, LEASE_RENEW};
use super::session::{Command, SessionHandle};
use crate::redis::{keys, Heard, RedisLink};
use crate::shutdown::ShutdownSignal;

/// How long an owner keeps a visitor its instance stopped confirming.
pub const VISITOR_TTL: Duration = Duration::from_secs(10);
/// How long a call to the owner may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What instances tell each other on their `rally:media:<instance>` channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum MediaNote {
    /// A participant of `from` joins the session here.
    Join {
        from: u32,
        id: u64,
        campaign: CampaignId,
        participant: ParticipantId,
        display_name: String,
        can_publish: bool,
    },
    /// A request for the owner; `id` 0 wants no reply.
    Call {
        from: u32,
        id: u64,
        campaign: CampaignId,
        call: Call,
    },
    Reply {
        id: u64,
        result: Result<CallReply, ErrorBody>,
    },
    /// A frame for an away participant's WebSocket.
    Push {
        participant: ParticipantId,
        frame: String,
    },
    /// The session let go of an away participant.
    Closed { participant: ParticipantId },
    /// These away participants of `from` are still connected.
    Alive {
        from: u32,
        participants: Vec<ParticipantId>,
    },
}

/// Replies awaited, by call id.
type Waiters = HashMap<u64, oneshot::Sender<Result<CallReply, ErrorBody>>>;

/// A participant connected here whose session runs on another instance.
struct Away {
    campaign: CampaignId,
    /// The instance running the session (from its lease when the participant joined).
    owner: u32,
    pushes: mpsc::Sender<Utf8Bytes>,
}

/// A participant of a session here, connected to another instance.
struct Visitor {
    campaign: CampaignId,
    origin: u32,
    confirmed: Instant,
}

/// Work for the sessions on this instance that arrives from other instances. The cluster hands
/// it to the relay in arrival order (the relay drains a channel), so it never calls the relay
/// itself.
pub enum Visit {
    /// A participant connected to instance `from` joins a session here; reply to `id` there.
    Join {
        from: u32,
        id: u64,
        campaign: CampaignId,
        joining: Joining,
    },
    /// A visitor's call for a session here (`id` 0: nobody waits for the reply).
    Call {
        from: u32,
        id: u64,
        campaign: CampaignId,
        call: Call,
    },
    /// A visitor whose instance stopped confirming it: let it go.
    LetGo {
        campaign: CampaignId,
        participant: ParticipantId,
    },
}

/// This instance's side of the media cluster.
pub struct MediaCluster {
    link: RedisLink,
    instance: u32,
    next_id: AtomicU64,
    outbox: mpsc::UnboundedSender<(u32, MediaNote)>,
    /// Work for the relay, from other instances.
    visits: mpsc::UnboundedSender<Visit>,
    /// Calls waiting for their reply (shared with the waiting futures, which give up after
    /// [`CALL_TIMEOUT`]).
    calls: Arc<Mutex<Waiters>>,
    away: Mutex<HashMap<ParticipantId, Away>>,
    visitors: Mutex<HashMap<ParticipantId, Visitor>>,
    /// Who runs which campaign's session.
    pub(super) leases: Leases,
}

impl MediaCluster {
    /// Join the cluster: listen on this instance's channel, send the outbox, and check leases
    /// and visitors, until shutdown. What other instances ask of this one's sessions comes out
    /// of the returned channel, for the relay.
    pub fn start(
        link: RedisLink,
        instance: u32,
        shutdown: ShutdownSignal,
    ) -> (Arc<MediaCluster>, mpsc::UnboundedReceiver<Visit>) {
        let (outbox, queue) = mpsc::unbounded_channel();
        let (visits, visiting) = mpsc::unbounded_channel();
        let cluster = Arc::new(MediaCluster {
            link: link.clone(),
            instance,
            next_id: AtomicU64::new(1),
            outbox,
            visits,
            calls: Default::default(),
            away: Mutex::new(HashMap::new()),
            visitors: Mutex::new(HashMap::new()),
            leases: Leases::new(link.clone(), instance),
        });
        let listener = cluster.clone();
        cluster.link.listen(
            keys::media_channel(instance),
            shutdown.clone(),
            move |heard| {
                if let Heard::Message(payload) = heard {
                    metrics::counter!("rally_media_cluster_notes_total", "direction" => "received")
                        .increment(1);
                    match serde_json::from_str::<MediaNote>(&payload) {
                        Ok(note) => listener.heard(note),
                        Err(_) => metrics::counter!("rally_bus_errors_total").increment(1),
                    }
                }
            },
        );
        tokio::spawn(cluster.clone().send_outbox(queue, shutdown.clone()));
        tokio::spawn(cluster.clone().check(shutdown));
        (cluster, visiting)
    }

    /// Publish queued notes one at a time, in order. At shutdown, what the ending sessions
    /// queue (their goodbyes to away participants) still goes out, for up to a second.
    async fn send_outbox(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<(u32, MediaNote)>,
        mut shutdown: ShutdownSignal,
    ) {
        const DRAIN: Duration = Duration::from_secs(1);
        let mut until: Option<tokio::time::Instant> = None;
        loop {
            let next = match until {
                None => tokio::select! {
                    _ = shutdown.recv() => {
                        until = Some(tokio::time::Instant::now() + DRAIN);
                        continue;
                    }
                    next = queue.recv() => next,
                },
                Some(until) => tokio::time::timeout_at(until, queue.recv())
                    .await
                    .ok()
                    .flatten(),
            };
            let Some((to, note)) = next else { return };
            let payload = serde_json::to_string(&note).expect("notes serialize");
            let receivers = self.link.publish(&keys::media_channel(to), &payload).await;
            let delivered = matches!(receivers, Ok(Ok(n)) if n > 0);
            let direction = if delivered { "sent" } else { "undelivered" };
            metrics::counter!("rally_media_cluster_notes_total", "direction" => direction)
                .increment(1);
            if !delivered {
                tracing::debug!(to, "media note not delivered");
                // Nobody listens there: a call waiting for its reply fails now, not in 5 s.
                if let MediaNote::Call { id, .. } | MediaNote::Join { id, .. } = note {
                    if let Some(waiter) = self.calls.lock().expect("calls lock").remove(&id) {
                        let _ = waiter.send(Err(MediaError::OwnerUnreachable.into()));
                    }
                }
            }
        }
    }

    fn send(&self, to: u32, note: MediaNote) {
        let _ = self.outbox.send((to, note));
    }

    /// Keep `lease` while `session` runs; end the session if the lease went to someone else;
    /// release it when the session ends.
    pub fn keep(self: &Arc<Self>, campaign: CampaignId, lease: Lease, session: SessionHandle) {
        let cluster = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = session.closed() => break,
                    _ = tokio::time::sleep(LEASE_RENEW) => {}
                }
                // Redis unreachable: keep serving (media does not need Redis); retry next round.
                if let Ok(false) = cluster.leases.renew(&campaign, &lease).await {
                    tracing::warn!(%campaign, "media lease taken by another instance; ending the session here");
                    let _ = session.send(Command::EndAll { reason: MOVED });
                }
            }
            cluster.leases.release(&campaign, &lease).await;
        });
    }

    /// The instance running the session of this away participant.
    pub fn owner_of(&self, participant: ParticipantId) -> Option<u32> {
        let away = self.away.lock().expect("away lock");
        away.get(&participant).map(|a| a.owner)
    }

    /// Join the session another instance runs.
    pub async fn join_away(
        &self,
        lease: Lease,
        campaign: &CampaignId,
        joining: Joining,
    ) -> Result<MediaJoined, MediaError> {
        let owner = lease
            .owner()
            .ok_or_else(|| MediaError::Relay(format!("unreadable media lease {lease:?}")))?;
        let participant = joining.participant;
        // Registered before the call: the session's first pushes may overtake its reply.
        self.away.lock().expect("away lock").insert(
            participant,
            Away {
                campaign: campaign.clone(),
                owner,
                pushes: joining.pushes,
            },
        );
        let joined = self
            .ask(owner, |from, id| MediaNote::Join {
                from,
                id,
                campaign: campaign.clone(),
                participant,
                display_name: joining.display_name,
                can_publish: joining.can_publish,
            })
            .await
            .and_then(CallReply::joined);
        if joined.is_err() {
            self.away.lock().expect("away lock").remove(&participant);
        }
        joined
    }

    /// Send `call` to `owner` now (in order with this instance's other calls); the future
    /// waits for the reply.
    pub fn call(
        &self,
        owner: u32,
        campaign: &CampaignId,
        call: Call,
    ) -> impl Future<Output = Result<CallReply, MediaError>> + Send + 'static {
        let campaign = campaign.clone();
        self.ask(owner, move |from, id| MediaNote::Call {
            from,
            id,
            campaign,
            call,
        })
    }

    /// Send the note `note(from, id)` to `owner` now; the future waits for the reply to `id`.
    fn ask(
        &self,
        owner: u32,
        note: impl FnOnce(u32, u64) -> MediaNote,
    ) -> impl Future<Output = Result<CallReply, MediaError>> + Send + 'static {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (waiter, reply) = oneshot::channel();
        self.calls.lock().expect("calls lock").insert(id, waiter);
        self.send(owner, note(self.instance, id));
        let calls = self.calls.clone();
        async move {
            match tokio::time::timeout(CALL_TIMEOUT, reply).await {
                Ok(Ok(Ok(answer))) => Ok(answer),
                Ok(Ok(Err(body))) => Err(MediaError::Remote(body)),
                _ => {
                    calls.lock().expect("calls lock").remove(&id);
                    Err(MediaError::OwnerUnreachable)
                }
            }
        }
    }

    /// Leave the away session: the member goes now, the owner is told.
    pub fn leave_away(
        &self,
        participant: ParticipantId,
    ) -> Option<impl Future<Output = Result<(), MediaError>> + Send + 'static> {
        let away = self.away.lock().expect("away lock").remove(&participant)?;
        let reply = self.call(away.owner, &away.campaign, Call::Leave { participant });
        Some(async move { reply.await.and_then(CallReply::done) })
    }

    /// Leave without waiting (the connection is gone).
    pub fn forget_away(&self, participant: ParticipantId) -> bool {
        let Some(away) = self.away.lock().expect("away lock").remove(&participant) else {
            return false;
        };
        self.send(
            away.owner,
            MediaNote::Call {
                from: self.instance,
                id: 0,
                campaign: away.campaign,
                call: Call::Leave { participant },
            },
        );
        true
    }

    /// Handle a note from another instance (on the listener task, in arrival order).
    fn heard(self: &Arc<Self>, note: MediaNote) {
        match note {
            MediaNote::Join {
                from,
                id,
                campaign,
                participant,
                display_name,
                can_publish,
            } => {
                let (pushes, frames) = mpsc::channel(PUSH_BUFFER);
                self.visitors.lock().expect("visitors lock").insert(
                    participant,
                    Visitor {
                        campaign: campaign.clone(),
                        origin: from,
                        confirmed: Instant::now(),
                    },
                );
                tokio::spawn(self.clone().forward_pushes(from, participant, frames));
                let joining = Joining {
                    participant,
                    display_name,
                    can_publish,
                    pushes,
                };
                let _ = self.visits.send(Visit::Join {
                    from,
                    id,
                    campaign,
                    joining,
                });
            }
            MediaNote::Call {
                from,
                id,
                campaign,
                call,
            } => {
                if let Call::Leave { participant } = &call {
                    self.visitors
                        .lock()
                        .expect("visitors lock")
                        .remove(participant);
                }
                // Into the relay's queue before the next note is read, so one participant's
                // calls keep their order.
                let _ = self.visits.send(Visit::Call {
                    from,
                    id,
                    campaign,
                    call,
                });
            }
            MediaNote::Reply { id, result } => {
                if let Some(waiter) = self.calls.lock().expect("calls lock").remove(&id) {
                    let _ = waiter.send(result);
                }
            }
            MediaNote::Push { participant, frame } => {
                let away = self.away.lock().expect("away lock");
                let full = match away.get(&participant) {
                    Some(member) => member.pushes.try_send(frame.into()).is_err(),
                    None => false,
                };
                if full {
                    // The connection does not read its pushes: it is gone, as in a local session.
                    drop(away);
                    self.forget_away(participant);
                }
            }
            MediaNote::Closed { participant } => {
                self.away.lock().expect("away lock").remove(&participant);
            }
            MediaNote::Alive { from, participants } => {
                let now = Instant::now();
                let mut visitors = self.visitors.lock().expect("visitors lock");
                for participant in participants {
                    if let Some(visitor) = visitors.get_mut(&participant) {
                        if visitor.origin == from {
                            visitor.confirmed = now;
                        }
                    }
                }
            }
        }
    }

    /// Send `answer` back to `to` when it is ready (`id` 0: nobody waits for it).
    pub fn reply(
        self: &Arc<Self>,
        to: u32,
        id: u64,
        answer: impl Future<Output = Result<CallReply, MediaError>> + Send + 'static,
    ) {
        let cluster = self.clone();
        tokio::spawn(async move {
            let result = answer.await.map_err(ErrorBody::from);
            if id != 0 {
                cluster.send(to, MediaNote::Reply { id, result });
            }
        });
    }

    /// Carry a visitor's pushes to its instance until the session lets go of it.
    async fn forward_pushes(
        self: Arc<Self>,
        origin: u32,
        participant: ParticipantId,
        mut frames: mpsc::Receiver<Utf8Bytes>,
    ) {
        while let Some(frame) = frames.recv().await {
            self.send(
                origin,
                MediaNote::Push {
                    participant,
                    frame: frame.as_str().to_owned(),
                },
            );
        }
        self.visitors
            .lock()
            .expect("visitors lock")
            .remove(&participant);
        self.send(origin, MediaNote::Closed { participant });
    }

    /// Every [`LEASE_RENEW`](super::lease::LEASE_RENEW): end away members whose owner lost its lease, confirm the others to
    /// their owners, and let go of visitors nobody confirms.
    async fn check(self: Arc<Self>, mut shutdown: ShutdownSignal) {
        loop {
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = tokio::time::sleep(LEASE_RENEW) => {}
            }
            // Away members, by campaign.
            let mut campaigns: HashMap<CampaignId, Vec<(ParticipantId, u32)>> = HashMap::new();
            for (&participant, away) in self.away.lock().expect("away lock").iter() {
                campaigns
                    .entry(away.campaign.clone())
                    .or_default()
                    .push((participant, away.owner));
            }
            let mut alive: HashMap<u32, Vec<ParticipantId>> = HashMap::new();
            for (campaign, members) in campaigns {
                let holder = match self.leases.holder(&campaign).await {
                    Holder::Instance(instance) => Some(instance),
                    Holder::Nobody => None,
                    // Redis unreachable: nothing is known; ask again next round.
                    Holder::Unknown => continue,
                };
                for (participant, owner) in members {
                    if holder == Some(owner) {
                        alive.entry(owner).or_default().push(participant);
                    } else {
                        self.moved(&campaign, participant);
                    }
                }
            }
            for (owner, participants) in alive {
                self.send(
                    owner,
                    MediaNote::Alive {
                        from: self.instance,
                        participants,
                    },
                );
            }
            let stale: Vec<(ParticipantId, CampaignId)> = {
                let visitors = self.visitors.lock().expect("visitors lock");
                visitors
                    .iter()
                    .filter(|(_, v)| v.confirmed.elapsed() > VISITOR_TTL)
                    .map(|(&p, v)| (p, v.campaign.clone()))
                    .collect()
            };
            for (participant, campaign) in stale {
                tracing::debug!(%campaign, "media visitor's instance stopped confirming it; letting go");
                self.visitors
                    .lock()
                    .expect("visitors lock")
                    .remove(&participant);
                let _ = self.visits.send(Visit::LetGo {
                    campaign,
                    participant,
                });
            }
        }
    }

    /// The owner of an away member's session is gone: tell the member, and let go.
    fn moved(&self, campaign: &CampaignId, participant: ParticipantId) {
        let Some(away) = self.away.lock().expect("away lock").remove(&participant) else {
            return;
        };
        tracing::debug!(%campaign, "media session owner gone; ending an away membership");
        let frame = crate::frames::push(
            ENDED_EVENT,
            &MediaEnded {
                campaign_id: campaign.clone(),
                reason: MOVED.to_owned(),
            },
            crate::clock::now(),
        );
        let _ = away.pushes.try_send(frame.text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_survive_the_wire() {
        let notes = [
            MediaNote::Join {
                from: 7,
                id: 1,
                campaign: CampaignId::parse("c").unwrap(),
                participant: ParticipantId(7 << 32 | 1),
                display_name: "Ada".into(),
                can_publish: true,
            },
            MediaNote::Call {
                from: 7,
                id: 0,
                campaign: CampaignId::parse("c").unwrap(),
                call: Call::Answer {
                    participant: ParticipantId(3),
                    sdp: "v=0\r\n".into(),
                },
            },
            MediaNote::Reply {
                id: 2,
                result: Err(MediaError::PublishForbidden.into()),
            },
            MediaNote::Reply {
                id: 3,
                result: Ok(CallReply::Sdp("v=0\r\n".into())),
            },
            MediaNote::Push {
                participant: ParticipantId(3),
                frame: r#"{"type":"media:offer:v1:success"}"#.into(),
            },
            MediaNote::Closed {
                participant: ParticipantId(3),
            },
            MediaNote::Alive {
                from: 7,
                participants: vec![ParticipantId(3)],
            },
        ];
        for note in notes {
            let json = serde_json::to_string(&note).unwrap();
            assert_eq!(
                serde_json::from_str::<MediaNote>(&json).unwrap(),
                note,
                "{json}"
            );
        }
    }
}
