//! Redis mode: one instance runs a campaign's media session, the others relay signaling to it.
//!
//! A session's peer connections, tracks and forwarding tasks live on one instance, the
//! *owner*. It holds a lease in Redis, `rally:{<campaign>}:media-owner` = `<instance>:<nonce>`,
//! which expires after [`LEASE_TTL`] unless the owner renews it (every [`LEASE_RENEW`]). The
//! first instance to get a join for a campaign nobody owns takes the lease and starts the
//! session. Participants connected to other instances are *away*: their requests travel to the
//! owner over Redis pub/sub (every instance listens on `rally:media:<instance>`), as
//! [`Note::Call`], and come back as [`Note::Reply`]; the session's pushes for them (offers, track
//! lists, endings) travel back as [`Note::Push`], then [`Note::Closed`] when the session lets go.
//! Media itself does not cross instances: the browser's ICE goes straight to the owner, whose
//! addresses are in the SDP it wrote.
//!
//! Everything an instance sends goes out through one queue in order, so a participant's calls
//! reach the owner's session in the order the participant made them, and an away participant's
//! pushes arrive in the order the session wrote them.
//!
//! When something dies:
//! - the owner: its lease expires. Every instance checks the leases of its away participants
//!   every [`LEASE_RENEW`] and ends their membership ("the media relay moved; join again") once
//!   the lease is gone or another instance's; the next join takes the lease. (Instance numbers
//!   are drawn anew at each start, so a restarted owner is another instance.)
//! - an instance with away participants: it confirms them to their owners every
//!   [`LEASE_RENEW`] ([`Note::Alive`]); an owner lets go of visitors not confirmed for
//!   [`VISITOR_TTL`].
//! - the owner's lease, while it still runs the session (it expired during a Redis outage and
//!   another instance took it): the session ends for everyone, who then join the new owner.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rally_app::model::CampaignId;
use rally_app::protocol::media::{IceCandidate, MediaEnded, MediaJoined, ENDED_EVENT};
use rally_app::protocol::ErrorBody;
use redis::Script;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::forward::ParticipantId;
use super::session::{Command, PUSH_BUFFER};
use super::{Joining, MediaError, MediaRelay};
use crate::redis_link::{Heard, RedisLink};
use crate::shutdown::ShutdownSignal;

/// How long a lease lasts without renewal: how long a dead owner's campaign waits before
/// another instance may take its media session over.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often owners renew leases, and instances check the leases of their away participants
/// and confirm those participants to the owners.
pub const LEASE_RENEW: Duration = Duration::from_secs(3);
/// How long an owner keeps a visitor its instance stopped confirming.
pub const VISITOR_TTL: Duration = Duration::from_secs(10);
/// How long a call to the owner may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Why away participants' sessions end when the owner goes away.
pub const MOVED: &str = "the media relay moved; join again";

pub fn lease_key(campaign: &CampaignId) -> String {
    format!("rally:{{{campaign}}}:media-owner")
}

fn channel(instance: u32) -> String {
    format!("rally:media:{instance:08x}")
}

/// Who holds a campaign's media session: `<instance hex>:<nonce>`. The nonce tells two
/// sessions of one instance apart, so a session that ended cannot release its successor's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease(String);

impl Lease {
    pub fn owner(&self) -> Option<u32> {
        let (instance, _) = self.0.split_once(':')?;
        u32::from_str_radix(instance, 16).ok()
    }
}

/// A joined participant's media request, for the session wherever it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    /// A publisher's offer; answered with the relay's SDP answer.
    Publish {
        participant: ParticipantId,
        sdp: String,
    },
    /// A subscriber's answer to the relay's latest offer.
    Answer {
        participant: ParticipantId,
        sdp: String,
    },
    Candidate {
        participant: ParticipantId,
        candidate: IceCandidate,
    },
    Leave {
        participant: ParticipantId,
    },
}

impl Call {
    pub fn participant(&self) -> ParticipantId {
        match self {
            Call::Publish { participant, .. }
            | Call::Answer { participant, .. }
            | Call::Candidate { participant, .. }
            | Call::Leave { participant } => *participant,
        }
    }
}

/// The owner's answer to a [`Call`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", content = "value", rename_all = "snake_case")]
pub enum Answer {
    Joined(MediaJoined),
    Sdp(String),
    Done,
}

impl Answer {
    pub fn joined(self) -> Result<MediaJoined, MediaError> {
        match self {
            Answer::Joined(joined) => Ok(joined),
            other => Err(unexpected(&other)),
        }
    }

    pub fn sdp(self) -> Result<String, MediaError> {
        match self {
            Answer::Sdp(sdp) => Ok(sdp),
            other => Err(unexpected(&other)),
        }
    }

    pub fn done(self) -> Result<(), MediaError> {
        match self {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(answer: &Answer) -> MediaError {
    MediaError::Relay(format!(
        "the owning instance answered out of turn: {answer:?}"
    ))
}

/// What instances tell each other on their `rally:media:<instance>` channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Note {
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
        result: Result<Answer, ErrorBody>,
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
type Waiters = HashMap<u64, oneshot::Sender<Result<Answer, ErrorBody>>>;

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

/// Where a join goes.
pub enum Location {
    /// This instance just took the lease: start the session with it.
    Here(Lease),
    /// Another instance does.
    Away(Lease),
}

/// This instance's side of the media cluster.
pub struct MediaCluster {
    link: RedisLink,
    instance: u32,
    next_id: AtomicU64,
    outbox: mpsc::UnboundedSender<(u32, Note)>,
    /// Calls waiting for their reply (shared with the waiting futures, which give up after
    /// [`CALL_TIMEOUT`]).
    calls: Arc<Mutex<Waiters>>,
    away: Mutex<HashMap<ParticipantId, Away>>,
    visitors: Mutex<HashMap<ParticipantId, Visitor>>,
    /// Claims run one at a time: two joins for an unowned campaign must not both start a
    /// session here.
    pub(super) claiming: tokio::sync::Mutex<()>,
}

/// Set the lease if free (`OK`), or return who holds it; an instance's own stale lease (its
/// session ended without releasing it) is replaced.
fn claim_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        Script::new(
            r"local held = redis.call('GET', KEYS[1])
if (not held) or string.sub(held, 1, string.len(ARGV[3])) == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return held",
        )
    })
}

/// Extend our lease, or take it back if it lapsed and nobody took it: 1; someone else's: 0.
fn renew_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        Script::new(
            r"local held = redis.call('GET', KEYS[1])
if (not held) or held == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0",
        )
    })
}

/// Delete our lease, and only ours.
fn release_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        Script::new(
            r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
        )
    })
}

impl MediaCluster {
    pub fn new(link: RedisLink, instance: u32) -> (Arc<MediaCluster>, Outbox) {
        let (outbox, queue) = mpsc::unbounded_channel();
        let cluster = Arc::new(MediaCluster {
            link,
            instance,
            next_id: AtomicU64::new(1),
            outbox,
            calls: Default::default(),
            away: Mutex::new(HashMap::new()),
            visitors: Mutex::new(HashMap::new()),
            claiming: tokio::sync::Mutex::new(()),
        });
        (cluster, Outbox(queue))
    }

    /// Listen on this instance's channel, send the outbox, and check leases and visitors, until
    /// shutdown.
    pub fn start(self: &Arc<Self>, relay: MediaRelay, outbox: Outbox, shutdown: ShutdownSignal) {
        let cluster = self.clone();
        let listener_relay = relay.clone();
        self.link
            .listen(channel(self.instance), shutdown.clone(), move |heard| {
                if let Heard::Message(payload) = heard {
                    metrics::counter!("rally_media_cluster_notes_total", "direction" => "received")
                        .increment(1);
                    match serde_json::from_str::<Note>(&payload) {
                        Ok(note) => cluster.heard(&listener_relay, note),
                        Err(_) => metrics::counter!("rally_bus_errors_total").increment(1),
                    }
                }
            });
        tokio::spawn(self.clone().send_outbox(outbox, shutdown.clone()));
        tokio::spawn(self.clone().check(relay, shutdown));
    }

    /// Publish queued notes one at a time, in order. At shutdown, what the ending sessions
    /// queue (their goodbyes to away participants) still goes out, for up to a second.
    async fn send_outbox(self: Arc<Self>, Outbox(mut queue): Outbox, mut shutdown: ShutdownSignal) {
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
            let receivers = self.link.publish(&channel(to), &payload).await;
            let delivered = matches!(receivers, Ok(Ok(n)) if n > 0);
            let direction = if delivered { "sent" } else { "undelivered" };
            metrics::counter!("rally_media_cluster_notes_total", "direction" => direction)
                .increment(1);
            if !delivered {
                tracing::debug!(to, "media note not delivered");
                // Nobody listens there: a call waiting for its reply fails now, not in 5 s.
                if let Note::Call { id, .. } | Note::Join { id, .. } = note {
                    if let Some(waiter) = self.calls.lock().expect("calls lock").remove(&id) {
                        let _ = waiter.send(Err(MediaError::OwnerUnreachable.into()));
                    }
                }
            }
        }
    }

    fn send(&self, to: u32, note: Note) {
        let _ = self.outbox.send((to, note));
    }

    /// Where `campaign`'s session runs, taking the lease if nobody holds it. The caller holds
    /// [`MediaCluster::claiming`] and has checked that no session runs here.
    pub async fn claim(&self, campaign: &CampaignId) -> Result<Location, MediaError> {
        let nonce = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mine = format!("{:08x}:{nonce}", self.instance);
        let prefix = format!("{:08x}:", self.instance);
        let key = lease_key(campaign);
        let held: String = self
            .link
            .run(|mut conn| {
                let (key, mine) = (key.clone(), mine.clone());
                async move {
                    claim_script()
                        .key(&key)
                        .arg(&mine)
                        .arg(LEASE_TTL.as_millis() as u64)
                        .arg(&prefix)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await
            .map_err(|err| MediaError::Unavailable(err.to_string()))?
            .map_err(|err| MediaError::Unavailable(err.to_string()))?;
        Ok(if held == mine {
            Location::Here(Lease(mine))
        } else {
            Location::Away(Lease(held))
        })
    }

    /// Keep `lease` while `session` runs; end the session if the lease went to someone else;
    /// release it when the session ends.
    pub fn keep(
        self: &Arc<Self>,
        campaign: CampaignId,
        lease: Lease,
        session: mpsc::UnboundedSender<Command>,
    ) {
        let cluster = self.clone();
        tokio::spawn(async move {
            let key = lease_key(&campaign);
            loop {
                tokio::select! {
                    _ = session.closed() => break,
                    _ = tokio::time::sleep(LEASE_RENEW) => {}
                }
                let renewed = cluster
                    .link
                    .run(|mut conn| {
                        let (key, lease) = (key.clone(), lease.0.clone());
                        async move {
                            renew_script()
                                .key(&key)
                                .arg(&lease)
                                .arg(LEASE_TTL.as_millis() as u64)
                                .invoke_async::<i64>(&mut conn)
                                .await
                        }
                    })
                    .await;
                // Redis unreachable: keep serving (media does not need Redis); retry next round.
                if let Ok(Ok(0)) = renewed {
                    tracing::warn!(%campaign, "media lease taken by another instance; ending the session here");
                    let _ = session.send(Command::EndAll { reason: MOVED });
                }
            }
            let _ = cluster
                .link
                .run(|mut conn| async move {
                    release_script()
                        .key(&key)
                        .arg(&lease.0)
                        .invoke_async::<i64>(&mut conn)
                        .await
                })
                .await;
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
            .ok_or_else(|| MediaError::Relay(format!("unreadable media lease {:?}", lease.0)))?;
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
            .ask(owner, |from, id| Note::Join {
                from,
                id,
                campaign: campaign.clone(),
                participant,
                display_name: joining.display_name,
                can_publish: joining.can_publish,
            })
            .await
            .and_then(Answer::joined);
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
    ) -> impl Future<Output = Result<Answer, MediaError>> + Send + 'static {
        let campaign = campaign.clone();
        self.ask(owner, move |from, id| Note::Call {
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
        note: impl FnOnce(u32, u64) -> Note,
    ) -> impl Future<Output = Result<Answer, MediaError>> + Send + 'static {
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
        Some(async move { reply.await.and_then(Answer::done) })
    }

    /// Leave without waiting (the connection is gone).
    pub fn forget_away(&self, participant: ParticipantId) -> bool {
        let Some(away) = self.away.lock().expect("away lock").remove(&participant) else {
            return false;
        };
        self.send(
            away.owner,
            Note::Call {
                from: self.instance,
                id: 0,
                campaign: away.campaign,
                call: Call::Leave { participant },
            },
        );
        true
    }

    /// Handle a note from another instance (on the listener task, in arrival order).
    fn heard(self: &Arc<Self>, relay: &MediaRelay, note: Note) {
        match note {
            Note::Join {
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
                let relay = relay.clone();
                self.reply(from, id, async move {
                    relay
                        .join_here(&campaign, joining)
                        .await
                        .map(Answer::Joined)
                });
            }
            Note::Call {
                from,
                id,
                campaign,
                call,
            } => self.serve(relay, from, id, campaign, call),
            Note::Reply { id, result } => {
                if let Some(waiter) = self.calls.lock().expect("calls lock").remove(&id) {
                    let _ = waiter.send(result);
                }
            }
            Note::Push { participant, frame } => {
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
            Note::Closed { participant } => {
                self.away.lock().expect("away lock").remove(&participant);
            }
            Note::Alive { from, participants } => {
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

    /// Carry out a call from another instance on the session here. It goes into the session's
    /// queue before the next note is read, so one participant's calls keep their order.
    fn serve(
        self: &Arc<Self>,
        relay: &MediaRelay,
        from: u32,
        id: u64,
        campaign: CampaignId,
        call: Call,
    ) {
        if let Call::Leave { participant } = &call {
            self.visitors
                .lock()
                .expect("visitors lock")
                .remove(participant);
        }
        let answer = relay.request(&campaign, call);
        self.reply(from, id, answer);
    }

    /// Send `answer` back to `to` when it is ready (`id` 0: nobody waits for it).
    fn reply(
        self: &Arc<Self>,
        to: u32,
        id: u64,
        answer: impl Future<Output = Result<Answer, MediaError>> + Send + 'static,
    ) {
        let cluster = self.clone();
        tokio::spawn(async move {
            let result = answer.await.map_err(ErrorBody::from);
            if id != 0 {
                cluster.send(to, Note::Reply { id, result });
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
                Note::Push {
                    participant,
                    frame: frame.as_str().to_owned(),
                },
            );
        }
        self.visitors
            .lock()
            .expect("visitors lock")
            .remove(&participant);
        self.send(origin, Note::Closed { participant });
    }

    /// Every [`LEASE_RENEW`]: end away members whose owner lost its lease, confirm the others to
    /// their owners, and let go of visitors nobody confirms.
    async fn check(self: Arc<Self>, relay: MediaRelay, mut shutdown: ShutdownSignal) {
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
                let held = self
                    .link
                    .run(|mut conn| {
                        let key = lease_key(&campaign);
                        async move {
                            redis::cmd("GET")
                                .arg(&key)
                                .query_async::<Option<String>>(&mut conn)
                                .await
                        }
                    })
                    .await;
                // Redis unreachable: nothing is known; ask again next round.
                let Ok(Ok(held)) = held else { continue };
                // Compared by instance, not nonce: an owner may restart a session it ran (its
                // old one ended while this join was on the way) under a new nonce.
                let holder = held.map(Lease).and_then(|held| held.owner());
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
                    Note::Alive {
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
                relay.forget(&campaign, participant);
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

/// The queue [`MediaCluster::start`] drains.
pub struct Outbox(mpsc::UnboundedReceiver<(u32, Note)>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_names_its_instance() {
        assert_eq!(Lease("004fc7de:17".into()).owner(), Some(0x004f_c7de));
        assert_eq!(Lease("garbage".into()).owner(), None);
        assert_eq!(Lease("zz:1".into()).owner(), None);
        assert_eq!(
            lease_key(&CampaignId::parse("spring").unwrap()),
            "rally:{spring}:media-owner"
        );
    }

    #[test]
    fn notes_survive_the_wire() {
        let notes = [
            Note::Join {
                from: 7,
                id: 1,
                campaign: CampaignId::parse("c").unwrap(),
                participant: ParticipantId(7 << 32 | 1),
                display_name: "Ada".into(),
                can_publish: true,
            },
            Note::Call {
                from: 7,
                id: 0,
                campaign: CampaignId::parse("c").unwrap(),
                call: Call::Answer {
                    participant: ParticipantId(3),
                    sdp: "v=0\r\n".into(),
                },
            },
            Note::Reply {
                id: 2,
                result: Err(MediaError::PublishForbidden.into()),
            },
            Note::Reply {
                id: 3,
                result: Ok(Answer::Sdp("v=0\r\n".into())),
            },
            Note::Push {
                participant: ParticipantId(3),
                frame: r#"{"type":"media:offer:v1:success"}"#.into(),
            },
            Note::Closed {
                participant: ParticipantId(3),
            },
            Note::Alive {
                from: 7,
                participants: vec![ParticipantId(3)],
            },
        ];
        for note in notes {
            let json = serde_json::to_string(&note).unwrap();
            assert_eq!(serde_json::from_str::<Note>(&json).unwrap(), note, "{json}");
        }
    }

    #[test]
    fn a_refusal_from_the_owner_keeps_its_code() {
        let body = ErrorBody::from(MediaError::Remote(MediaError::PublishForbidden.into()));
        assert_eq!(body, ErrorBody::from(MediaError::PublishForbidden));
    }
}
