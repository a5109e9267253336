//! The task that owns one loaded campaign: the thin async shell around [`CampaignCore`].
//!
//! Every command for the campaign arrives in this task's mailbox, so there is exactly one writer
//! per campaign and no locks around its state. Consecutive writes are applied to the core, then
//! committed to the store together (one durable commit), then acknowledged, then broadcast — in
//! that order, so a success reply always means "durable", and subscribers never see a change that
//! could still be lost.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rally_app::model::{Actor, CampaignId, Presence, Role, UserId, Viewer};
use rally_app::protocol::campaign::{
    CampaignSnapshot, CreateCampaign, PresenceChanged, PresencePerson, Resume, SubscribeReply,
    WriteAck, PRESENCE_EVENT,
};
use rally_app::protocol::{ErrorBody, ErrorCode};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::core::{Applied, CampaignCore, ResumePlan, Write};
use super::{CampaignGauges, ConnectionId, ManagerShared};
use crate::clock;
use crate::frames::{self, Frame};
use crate::store::{Commit, StoreError};

/// Events buffered per subscriber (the broadcast channel's capacity): a subscriber more than this
/// many events behind is lagging and catches up from history.
pub const SUBSCRIBER_BUFFER: usize = 32;
/// Commands taken from the mailbox in one batch (one durable commit for the writes among them).
const MAX_BATCH: usize = 64;

/// Why a command was not answered by this writer.
#[derive(Debug)]
pub enum WriterError {
    Rejected(ErrorBody),
    /// This writer was retiring and did not process the command; resolve a fresh writer and
    /// send again (nothing was applied).
    Retry,
}

impl From<ErrorBody> for WriterError {
    fn from(error: ErrorBody) -> Self {
        WriterError::Rejected(error)
    }
}

type Reply<T> = oneshot::Sender<Result<T, WriterError>>;

/// A live subscription handed to a connection.
pub struct Subscription {
    pub reply: SubscribeReply,
    /// The campaign's live counters (how far ahead of this subscriber it is).
    pub gauges: Arc<CampaignGauges>,
    /// Missed events to deliver, in order, before anything from `events`.
    pub backlog: Vec<Frame>,
    pub events: broadcast::Receiver<Frame>,
}

/// Events a lagging subscriber missed, or the snapshot it needs instead.
pub enum Backfill {
    Events(Vec<Frame>),
    Snapshot(Box<CampaignSnapshot>),
}

pub enum Command {
    Create {
        request: CreateCampaign,
        actor: Actor,
        reply: Reply<CampaignSnapshot>,
    },
    Write {
        write: Write,
        actor: Option<Actor>,
        reply: Reply<WriteAck>,
    },
    Subscribe {
        connection: ConnectionId,
        viewer: Option<Actor>,
        since_version: Option<u64>,
        reply: Reply<Subscription>,
    },
    Backfill {
        since_version: u64,
        user: Option<UserId>,
        reply: Reply<Backfill>,
    },
    Snapshot {
        user: Option<UserId>,
        reply: Reply<CampaignSnapshot>,
    },
    Grant {
        user: UserId,
        role: Role,
        reply: Reply<Role>,
    },
    /// Test-only: panic inside the core-handling code path.
    #[cfg(feature = "fault-injection")]
    Panic { reply: Reply<()> },
}

impl Command {
    fn reject(self, error: WriterError) {
        match self {
            Command::Create { reply, .. } => drop(reply.send(Err(error))),
            Command::Write { reply, .. } => drop(reply.send(Err(error))),
            Command::Subscribe { reply, .. } => drop(reply.send(Err(error))),
            Command::Backfill { reply, .. } => drop(reply.send(Err(error))),
            Command::Snapshot { reply, .. } => drop(reply.send(Err(error))),
            Command::Grant { reply, .. } => drop(reply.send(Err(error))),
            #[cfg(feature = "fault-injection")]
            Command::Panic { reply } => drop(reply.send(Err(error))),
        }
    }
}

/// A write applied to the core but not yet durable.
struct Pending {
    event: rally_app::model::CampaignEvent,
    reply: Reply<WriteAck>,
}

pub struct Writer {
    pub id: CampaignId,
    pub generation: u64,
    /// Counters the manager reads without asking the task (metrics, readiness).
    pub gauges: Arc<CampaignGauges>,
    pub mailbox: mpsc::Receiver<Command>,
    pub leaves: mpsc::UnboundedReceiver<ConnectionId>,
    pub shared: Arc<ManagerShared>,
    core: Option<CampaignCore>,
    /// The version the store holds (the core may be ahead by the pending writes).
    durable_version: u64,
    broadcast: broadcast::Sender<Frame>,
    /// The history's events, encoded once: resuming and lagging subscribers get these bytes
    /// without re-serializing (a burst of laggards must not turn into a burst of JSON work).
    encoded: std::collections::VecDeque<Frame>,
    subscribers: HashMap<ConnectionId, Option<Actor>>,
}

fn unavailable(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::Unavailable, message)
}

fn not_found(id: &CampaignId) -> ErrorBody {
    ErrorBody::new(ErrorCode::NotFound, format!("campaign {id} does not exist"))
}

impl Writer {
    pub fn new(
        id: CampaignId,
        generation: u64,
        gauges: Arc<CampaignGauges>,
        mailbox: mpsc::Receiver<Command>,
        leaves: mpsc::UnboundedReceiver<ConnectionId>,
        shared: Arc<ManagerShared>,
    ) -> Self {
        let (broadcast, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        Writer {
            id,
            generation,
            gauges,
            mailbox,
            leaves,
            shared,
            core: None,
            durable_version: 0,
            broadcast,
            encoded: std::collections::VecDeque::new(),
            subscribers: HashMap::new(),
        }
    }

    pub async fn run(mut self) {
        if let Err(error) = self.load().await {
            tracing::error!(campaign = %self.id, %error, "cannot load campaign");
            self.retire(Some(unavailable(format!("cannot load campaign: {error}"))));
            return;
        }
        loop {
            let idle = self.subscribers.is_empty();
            let first = tokio::select! {
                biased;
                Some(connection) = self.leaves.recv() => {
                    self.leave(connection);
                    continue;
                }
                command = self.mailbox.recv() => command,
                _ = tokio::time::sleep(self.shared.config.idle_unload), if idle => {
                    if self.mailbox.is_empty() && self.retire(None) {
                        return;
                    }
                    continue;
                }
            };
            let Some(first) = first else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.mailbox.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.process(batch).await;
        }
    }

    async fn load(&mut self) -> Result<(), StoreError> {
        let history_len = self.shared.config.history_len;
        if let Some(loaded) = self.shared.store.load(&self.id, history_len).await? {
            self.durable_version = loaded.record.state.version;
            self.encoded.clear();
            self.core = Some(CampaignCore::restore(
                loaded.record,
                loaded.history,
                history_len,
            ));
            if let Some(core) = &self.core {
                self.encoded = core.history().map(frames::state_event).collect();
                self.gauges
                    .latest_version
                    .store(core.version(), Ordering::Relaxed);
                self.gauges
                    .durable_version
                    .store(core.version(), Ordering::Relaxed);
            }
        } else {
            self.core = None;
            self.durable_version = 0;
        }
        Ok(())
    }

    /// Leave the registry and answer whatever is still queued with `Retry` (or `error`).
    /// Returns false if new commands arrived meanwhile (then keep serving).
    fn retire(&mut self, error: Option<ErrorBody>) -> bool {
        {
            let mut writers = self.shared.writers.lock().expect("registry lock");
            if error.is_none() && !self.mailbox.is_empty() {
                return false;
            }
            if writers.get(&self.id).map(|h| h.generation) == Some(self.generation) {
                writers.remove(&self.id);
            }
        }
        self.mailbox.close();
        while let Ok(command) = self.mailbox.try_recv() {
            command.reject(match &error {
                Some(error) => WriterError::Rejected(error.clone()),
                None => WriterError::Retry,
            });
        }
        tracing::debug!(campaign = %self.id, "campaign unloaded");
        true
    }

    async fn process(&mut self, batch: Vec<Command>) {
        let mut pending: Vec<Pending> = Vec::new();
        for command in batch {
            match command {
                Command::Write {
                    write,
                    actor,
                    reply,
                } => self.write(write, actor, reply, &mut pending).await,
                other => {
                    // Anything that reads state or subscribes sees only durable state: flush first.
                    self.flush(&mut pending).await;
                    self.handle(other).await;
                }
            }
        }
        self.flush(&mut pending).await;
    }

    async fn write(
        &mut self,
        write: Write,
        actor: Option<Actor>,
        reply: Reply<WriteAck>,
        pending: &mut Vec<Pending>,
    ) {
        let Some(core) = self.core.as_mut() else {
            let _ = reply.send(Err(not_found(&self.id).into()));
            return;
        };
        let now = clock::now();
        let event_id = self.shared.event_ids.next(now);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            core.apply(&write, actor.as_ref(), now, event_id)
        }));
        match outcome {
            Ok(Ok(Applied::Changed(event))) => {
                metrics::histogram!("rally_update_fields").record(write.field_count() as f64);
                pending.push(Pending { event, reply });
            }
            Ok(Ok(Applied::Unchanged { version })) => {
                let _ = reply.send(Ok(WriteAck {
                    campaign_id: self.id.clone(),
                    version,
                    event_id: None,
                    unchanged: true,
                }));
            }
            Ok(Err(rejection)) => {
                let _ = reply.send(Err(rejection.into()));
            }
            Err(panic) => {
                self.recover_from_panic(panic, pending).await;
                let _ = reply.send(Err(ErrorBody::new(
                    ErrorCode::Internal,
                    "internal error applying the change; the campaign was reloaded, nothing was applied",
                )
                .into()));
            }
        }
    }

    /// A panic mid-apply may have left the core half-changed: drop it (and the not yet durable
    /// writes of this batch, which are answered `unavailable`), reload from the store.
    async fn recover_from_panic(
        &mut self,
        panic: Box<dyn std::any::Any + Send>,
        pending: &mut Vec<Pending>,
    ) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into());
        tracing::error!(campaign = %self.id, panic = %what, "campaign task panicked; reloading from the store");
        metrics::counter!("rally_panics_caught_total", "where" => "campaign").increment(1);
        for p in pending.drain(..) {
            let _ = p
                .reply
                .send(Err(unavailable("the campaign was reloaded; retry").into()));
        }
        if let Err(error) = self.load().await {
            tracing::error!(campaign = %self.id, %error, "cannot reload campaign after a panic");
            self.core = None;
        }
    }

    /// Make pending writes durable, then acknowledge and broadcast them.
    async fn flush(&mut self, pending: &mut Vec<Pending>) {
        if pending.is_empty() {
            return;
        }
        let Some(core) = self.core.as_ref() else {
            return;
        };
        let commit = Commit {
            campaign_id: self.id.clone(),
            expected_version: self.durable_version,
            record: core.record().clone(),
            events: pending.iter().map(|p| p.event.clone()).collect(),
            history_len: self.shared.config.history_len,
        };
        match self.shared.store.commit(commit).await {
            Ok(()) => {
                self.durable_version = core.version();
                self.gauges
                    .durable_version
                    .store(core.version(), Ordering::Relaxed);
                for Pending { event, reply } in pending.drain(..) {
                    let _ = reply.send(Ok(WriteAck {
                        campaign_id: self.id.clone(),
                        version: event.version,
                        event_id: Some(event.event_id),
                        unchanged: false,
                    }));
                    metrics::counter!("rally_changes_applied_total").increment(1);
                    // Err means no subscriber right now, which is fine.
                    let frame = frames::state_event(&event);
                    self.remember(frame.clone());
                    self.gauges
                        .latest_version
                        .store(event.version, Ordering::Relaxed);
                    self.shared.ops.changes.fetch_add(1, Ordering::Relaxed);
                    let _ = self.broadcast.send(Frame {
                        durable_at: Some(std::time::Instant::now()),
                        ..frame
                    });
                }
            }
            Err(error) => {
                tracing::error!(campaign = %self.id, %error, "commit failed; reloading campaign");
                for p in pending.drain(..) {
                    let _ = p.reply.send(Err(unavailable(format!(
                        "could not store the change: {error}"
                    ))
                    .into()));
                }
                if let Err(error) = self.load().await {
                    tracing::error!(campaign = %self.id, %error, "cannot reload campaign");
                    self.core = None;
                }
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Write { .. } => unreachable!("writes are handled in process()"),
            Command::Create {
                request,
                actor,
                reply,
            } => {
                if self.core.is_some() {
                    let _ = reply.send(Err(ErrorBody::new(
                        ErrorCode::Conflict,
                        format!("campaign {} already exists", self.id),
                    )
                    .into()));
                    return;
                }
                let now = clock::now();
                let event_id = self.shared.event_ids.next(now);
                let (core, event) = match CampaignCore::create(
                    request,
                    &actor,
                    now,
                    event_id,
                    self.shared.config.history_len,
                ) {
                    Ok(created) => created,
                    Err(rejection) => {
                        let _ = reply.send(Err(rejection.into()));
                        return;
                    }
                };
                match self.shared.store.create(core.record().clone(), event).await {
                    Ok(()) => {
                        let snapshot = CampaignSnapshot {
                            campaign: core.state().clone(),
                            role: Role::Owner,
                        };
                        self.durable_version = core.version();
                        self.gauges
                            .durable_version
                            .store(core.version(), Ordering::Relaxed);
                        self.gauges
                            .latest_version
                            .store(core.version(), Ordering::Relaxed);
                        self.core = Some(core);
                        let _ = reply.send(Ok(snapshot));
                    }
                    Err(StoreError::AlreadyExists) => {
                        // Created meanwhile by another instance: adopt the stored one.
                        let _ = self.load().await;
                        let _ = reply.send(Err(ErrorBody::new(
                            ErrorCode::Conflict,
                            format!("campaign {} already exists", self.id),
                        )
                        .into()));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(unavailable(format!(
                            "could not store the campaign: {error}"
                        ))
                        .into()));
                    }
                }
            }
            Command::Subscribe {
                connection,
                viewer,
                since_version,
                reply,
            } => {
                let Some(core) = self.core.as_ref() else {
                    let _ = reply.send(Err(not_found(&self.id).into()));
                    return;
                };
                let role = core.role_of(viewer.as_ref().map(|a| &a.user_id));
                // Subscribe to the channel and read history in the same step: nothing can be
                // broadcast in between, so backlog + live has no gap and no duplicate.
                let events = self.broadcast.subscribe();
                let (resume, backlog) = match core.resume(since_version) {
                    ResumePlan::Events(missed) => {
                        let from = since_version.unwrap_or(0) + 1;
                        let frames: Vec<Frame> =
                            missed.into_iter().map(|e| self.encoded_frame(e)).collect();
                        (
                            Resume::Events {
                                from_version: from,
                                to_version: core.version(),
                            },
                            frames,
                        )
                    }
                    ResumePlan::Snapshot(reason) => (
                        Resume::Snapshot {
                            reason,
                            campaign: Box::new(core.state().clone()),
                        },
                        Vec::new(),
                    ),
                };
                let joined = self
                    .subscribers
                    .insert(connection, viewer.clone())
                    .is_none();
                self.gauges
                    .subscribers
                    .store(self.subscribers.len(), Ordering::Relaxed);
                let presence = self.presence();
                let subscription = Subscription {
                    gauges: self.gauges.clone(),
                    reply: SubscribeReply {
                        campaign_id: self.id.clone(),
                        role,
                        resume,
                        presence: presence.clone(),
                    },
                    backlog,
                    events,
                };
                if reply.send(Ok(subscription)).is_err() {
                    // The connection went away while waiting.
                    self.subscribers.remove(&connection);
                    self.gauges
                        .subscribers
                        .store(self.subscribers.len(), Ordering::Relaxed);
                    return;
                }
                if joined {
                    self.announce(presence, Some(person(&viewer)), None);
                }
            }
            Command::Backfill {
                since_version,
                user,
                reply,
            } => {
                let Some(core) = self.core.as_ref() else {
                    let _ = reply.send(Err(not_found(&self.id).into()));
                    return;
                };
                let backfill = match core.resume(Some(since_version)) {
                    ResumePlan::Events(missed) => Backfill::Events(
                        missed.into_iter().map(|e| self.encoded_frame(e)).collect(),
                    ),
                    ResumePlan::Snapshot(_) => Backfill::Snapshot(Box::new(CampaignSnapshot {
                        campaign: core.state().clone(),
                        role: core.role_of(user.as_ref()),
                    })),
                };
                let _ = reply.send(Ok(backfill));
            }
            Command::Snapshot { user, reply } => {
                let result = match self.core.as_ref() {
                    Some(core) => Ok(CampaignSnapshot {
                        campaign: core.state().clone(),
                        role: core.role_of(user.as_ref()),
                    }),
                    None => Err(not_found(&self.id).into()),
                };
                let _ = reply.send(result);
            }
            Command::Grant { user, role, reply } => {
                let Some(core) = self.core.as_mut() else {
                    let _ = reply.send(Err(not_found(&self.id).into()));
                    return;
                };
                if !core.grant(user.clone(), role) {
                    let _ = reply.send(Ok(core.role_of(Some(&user))));
                    return;
                }
                let commit = Commit {
                    campaign_id: self.id.clone(),
                    expected_version: self.durable_version,
                    record: core.record().clone(),
                    events: Vec::new(),
                    history_len: self.shared.config.history_len,
                };
                match self.shared.store.commit(commit).await {
                    Ok(()) => {
                        let _ = reply.send(Ok(role));
                    }
                    Err(error) => {
                        let _ = self.load().await;
                        let _ = reply.send(Err(unavailable(format!(
                            "could not store the role: {error}"
                        ))
                        .into()));
                    }
                }
            }
            #[cfg(feature = "fault-injection")]
            Command::Panic { reply } => {
                let mut pending = Vec::new();
                let outcome = std::panic::catch_unwind(|| panic!("injected fault"));
                if let Err(panic) = outcome {
                    self.recover_from_panic(panic, &mut pending).await;
                }
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Keep the encoded form of a newly broadcast event, bounded like the core's history.
    fn remember(&mut self, frame: Frame) {
        let limit = self.shared.config.history_len;
        while self.encoded.len() >= limit.max(1) {
            self.encoded.pop_front();
        }
        self.encoded.push_back(frame);
    }

    /// The encoded frame of a history event (encoding it only if the cache lacks it).
    fn encoded_frame(&self, event: &rally_app::model::CampaignEvent) -> Frame {
        let first = self.encoded.front().and_then(|f| f.version);
        let cached = first.and_then(|first| {
            let index = event.version.checked_sub(first)? as usize;
            self.encoded
                .get(index)
                .filter(|f| f.version == Some(event.version))
        });
        cached
            .cloned()
            .unwrap_or_else(|| frames::state_event(event))
    }

    fn leave(&mut self, connection: ConnectionId) {
        if let Some(viewer) = self.subscribers.remove(&connection) {
            self.gauges
                .subscribers
                .store(self.subscribers.len(), Ordering::Relaxed);
            let presence = self.presence();
            self.announce(presence, None, Some(person(&viewer)));
        }
    }

    fn announce(
        &self,
        presence: Presence,
        joined: Option<PresencePerson>,
        left: Option<PresencePerson>,
    ) {
        let payload = PresenceChanged {
            presence,
            joined,
            left,
        };
        let _ = self
            .broadcast
            .send(frames::push(PRESENCE_EVENT, &payload, clock::now()));
    }

    fn presence(&self) -> Presence {
        let mut by_user: HashMap<&UserId, Viewer> = HashMap::new();
        let mut anonymous = 0u32;
        for viewer in self.subscribers.values() {
            match viewer {
                Some(actor) => {
                    by_user
                        .entry(&actor.user_id)
                        .or_insert_with(|| Viewer {
                            user_id: Some(actor.user_id.clone()),
                            display_name: actor.display_name.clone(),
                            connections: 0,
                        })
                        .connections += 1;
                }
                None => anonymous += 1,
            }
        }
        let mut viewers: Vec<Viewer> = by_user.into_values().collect();
        viewers.extend((0..anonymous).map(|_| Viewer {
            user_id: None,
            display_name: "Anonymous".into(),
            connections: 1,
        }));
        viewers.sort_by(|a, b| {
            (a.user_id.is_none(), &a.display_name, &a.user_id).cmp(&(
                b.user_id.is_none(),
                &b.display_name,
                &b.user_id,
            ))
        });
        Presence {
            campaign_id: self.id.clone(),
            count: viewers.len() as u32,
            viewers,
        }
    }
}

fn person(viewer: &Option<Actor>) -> PresencePerson {
    match viewer {
        Some(actor) => PresencePerson {
            user_id: Some(actor.user_id.clone()),
            display_name: actor.display_name.clone(),
        },
        None => PresencePerson {
            user_id: None,
            display_name: "Anonymous".into(),
        },
    }
}
