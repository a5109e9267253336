//! The task that owns one loaded campaign: the async shell around [`CampaignCore`].
//!
//! Every command for the campaign arrives in this task's mailbox, so there is exactly one writer
//! per campaign per instance and no locks around its state. Consecutive writes are applied to the
//! core, then committed to the store together (one durable commit), then acknowledged, then
//! broadcast — in that order, so a success reply always means "durable", and subscribers never see
//! a change that could still be lost. How writes become durable, including the race between
//! instances in Redis mode, is in commit.rs (the same type, continued); this file has the loop and
//! one method per command.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rally_app::model::{Actor, CampaignId, CreateCampaign, Role, UserId, Viewer, Visibility};
use rally_app::protocol::campaign::{
    CampaignSnapshot, PresenceChanged, Resume, SubscribeReply, Writable, PRESENCE_EVENT, WRITABLE,
};
use rally_app::protocol::{ErrorBody, ErrorCode};
use tokio::sync::{broadcast, mpsc};
use tokio_util::task::TaskTracker;

use super::access::Caller;
use super::command::{CampaignGauges, Command, Happening, Reply, Subscription, WriterError};
use super::core::{CampaignCore, ResumePlan, DEFAULT_HISTORY_LEN};
use super::history::{EncodedHistory, HistoryLimits};
use super::presence::{self, ConnectionId, LocalViewers, PresenceAnnouncer};
use crate::bus::{BusNote, EventBus, PRESENCE_HEARTBEAT};
use crate::clock::{self, EventIds};
use crate::frames::{self, Frame};
use crate::registry::{Generation, Registry};
use crate::stats::OpsCounters;
use crate::store::{Store, StoreError};

/// Commits (each a [`frames::Batch`] of up to [`MAX_BATCH`] events) and pushes buffered per
/// subscriber (the broadcast channel's capacity): a subscriber more than this many behind is
/// lagging and catches up from history.
pub const SUBSCRIBER_BUFFER: usize = 32;
/// Commands taken from the mailbox in one batch (one durable commit for the writes among them).
pub(super) const MAX_BATCH: usize = 64;
/// Commands that may queue for one campaign before senders wait.
pub(super) const MAILBOX: usize = 1024;

/// How campaigns are kept in memory.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Events kept per campaign for resuming subscribers.
    pub history_len: usize,
    /// Encoded bytes of those events kept, at most.
    pub history_bytes: usize,
    /// How long a campaign with no subscribers stays loaded.
    pub idle_unload: Duration,
    /// Who may see a new campaign whose creator did not say.
    pub default_visibility: Visibility,
    /// Campaigns one user may own at once.
    pub max_campaigns_per_user: usize,
    /// Open invite links one user may have made, across campaigns.
    pub max_invites_per_user: usize,
}

impl WriterConfig {
    pub(super) fn history(&self) -> HistoryLimits {
        HistoryLimits {
            events: self.history_len,
            bytes: self.history_bytes,
        }
    }
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            history_len: DEFAULT_HISTORY_LEN,
            history_bytes: 4 * 1024 * 1024,
            idle_unload: Duration::from_secs(30),
            default_visibility: Visibility::Private,
            max_campaigns_per_user: 1000,
            max_invites_per_user: 100,
        }
    }
}

/// What every writer of this instance shares.
pub(super) struct WriterContext {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    pub config: WriterConfig,
    pub event_ids: EventIds,
    pub ops: Arc<OpsCounters>,
    /// False while the shared store is unreachable (always true with the embedded store).
    pub writable: tokio::sync::watch::Receiver<bool>,
    /// The running writers, by campaign.
    pub registry: Registry<CampaignId, WriterHandle>,
    /// Every writer task, so shutdown can wait for them.
    pub tasks: TaskTracker,
}

/// A running writer, as the registry knows it.
#[derive(Clone)]
pub(super) struct WriterHandle {
    pub mailbox: mpsc::Sender<Command>,
    pub happenings: mpsc::UnboundedSender<Happening>,
    pub gauges: Arc<CampaignGauges>,
}

/// Start the writer of `id` (the registry calls this under its lock).
pub(super) fn start(
    context: &Arc<WriterContext>,
    id: CampaignId,
    generation: Generation,
) -> WriterHandle {
    let (mailbox, commands) = mpsc::channel(MAILBOX);
    let (happenings, happened) = mpsc::unbounded_channel();
    let gauges = Arc::new(CampaignGauges::default());
    let handle = WriterHandle {
        mailbox,
        happenings,
        gauges: gauges.clone(),
    };
    let writer = Writer::new(
        id.clone(),
        generation,
        gauges,
        commands,
        happened,
        context.clone(),
    );
    let task = context.tasks.spawn(writer.run());
    let context = context.clone();
    // Supervisor: a writer that dies by panic outside the core's guard is logged and
    // forgotten; the next request starts a fresh one from the store.
    tokio::spawn(async move {
        if let Err(join) = task.await {
            if join.is_panic() {
                tracing::error!(campaign = %id, "campaign task panicked; it will restart from the store");
                metrics::counter!("rally_panics_caught_total", "where" => "campaign_task")
                    .increment(1);
            }
            context.registry.forget(&id, generation);
        }
    });
    handle
}

pub(super) struct Writer {
    pub(super) id: CampaignId,
    generation: Generation,
    /// Counters the manager reads without asking the task (metrics, readiness).
    pub(super) gauges: Arc<CampaignGauges>,
    mailbox: mpsc::Receiver<Command>,
    happenings: mpsc::UnboundedReceiver<Happening>,
    pub(super) context: Arc<WriterContext>,
    pub(super) core: Option<CampaignCore>,
    /// The core as it was before the current batch (shared store only): what to go back to when
    /// a commit loses a race or cannot reach the store.
    pub(super) backup: Option<CampaignCore>,
    /// The version the store holds (the core may be ahead by the pending writes).
    pub(super) durable_version: u64,
    pub(super) broadcast: broadcast::Sender<frames::Batch>,
    /// The history's events, encoded once and shared with the connections.
    pub(super) encoded: EncodedHistory,
    /// Local subscribers, by connection.
    subscribers: HashMap<ConnectionId, Option<Actor>>,
    /// The same, counted per person.
    local: LocalViewers,
    /// Those of them publishing in the live room, and whose they are (kept apart from
    /// `subscribers`, so a connection that stopped following is still taken off).
    live: HashMap<ConnectionId, UserId>,
    /// Viewers other instances reported (shared store only), and how many people they are.
    remote_viewers: Vec<Viewer>,
    remote_people: u32,
    announcer: PresenceAnnouncer,
    /// False while the shared store is unreachable: the campaign is read-only.
    pub(super) writable: bool,
}

pub(super) fn unavailable(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::Unavailable, message)
}

pub(super) use super::core::not_found;

pub(super) fn read_only() -> ErrorBody {
    unavailable("the campaign is temporarily read-only: its store is unreachable; retry shortly")
}

fn already_exists(id: &CampaignId) -> ErrorBody {
    ErrorBody::new(ErrorCode::Conflict, format!("campaign {id} already exists"))
}

/// Wait for `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

impl Writer {
    fn new(
        id: CampaignId,
        generation: Generation,
        gauges: Arc<CampaignGauges>,
        mailbox: mpsc::Receiver<Command>,
        happenings: mpsc::UnboundedReceiver<Happening>,
        context: Arc<WriterContext>,
    ) -> Self {
        let (broadcast, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let writable = *context.writable.borrow();
        Writer {
            id,
            generation,
            gauges,
            mailbox,
            happenings,
            context,
            core: None,
            backup: None,
            durable_version: 0,
            broadcast,
            encoded: EncodedHistory::default(),
            subscribers: HashMap::new(),
            local: LocalViewers::default(),
            live: HashMap::new(),
            remote_viewers: Vec::new(),
            remote_people: 0,
            announcer: PresenceAnnouncer::default(),
            writable,
        }
    }

    async fn run(mut self) {
        if let Err(error) = self.load().await {
            tracing::debug!(campaign = %self.id, %error, "cannot load campaign");
            self.retire(Some(unavailable(format!("cannot load campaign: {error}"))));
            return;
        }
        let mut heartbeat = tokio::time::interval(PRESENCE_HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared_bus = self.context.bus.shared();
        loop {
            let idle = self.subscribers.is_empty();
            let presence_due = self.announcer.due(Instant::now());
            let first = tokio::select! {
                biased;
                Some(happening) = self.happenings.recv() => {
                    self.happened(happening).await;
                    continue;
                }
                command = self.mailbox.recv() => command,
                _ = sleep_until(presence_due), if presence_due.is_some() => {
                    self.announce_pending().await;
                    continue;
                }
                _ = heartbeat.tick(), if shared_bus && !idle => {
                    self.share_presence().await;
                    self.refresh_remote_presence().await;
                    continue;
                }
                _ = tokio::time::sleep(self.context.config.idle_unload), if idle => {
                    if self.retire(None) {
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
            // A campaign that does not exist keeps nothing loaded: nothing a visitor names
            // outlives the request, unless it exists.
            if self.core.is_none() && self.retire(None) {
                return;
            }
        }
    }

    /// (Re)load the campaign from the store; `core` is None if it does not exist.
    pub(super) async fn load(&mut self) -> Result<(), StoreError> {
        let history_len = self.context.config.history_len;
        self.backup = None;
        if let Some(loaded) = self.context.store.load(&self.id, history_len).await? {
            let mut core = CampaignCore::restore(loaded.record, loaded.history, history_len);
            let limits = self.context.config.history();
            self.encoded
                .replace(core.history().map(frames::state_event), limits);
            if let Some(first) = self.encoded.first_version() {
                core.forget_history_before(first);
            }
            self.set_durable(core.version());
            self.core = Some(core);
            self.refresh_gauges();
        } else {
            self.core = None;
            self.durable_version = 0;
        }
        Ok(())
    }

    /// The store holds `version`.
    pub(super) fn set_durable(&mut self, version: u64) {
        self.durable_version = version;
        self.gauges
            .durable_version
            .store(version, Ordering::Relaxed);
    }

    /// Leave the registry and answer whatever is still queued with `Retry` (or `error`).
    /// Returns false if new commands arrived meanwhile (then keep serving).
    fn retire(&mut self, error: Option<ErrorBody>) -> bool {
        let mailbox = &self.mailbox;
        let failing = error.is_some();
        if !self
            .context
            .registry
            .retire(&self.id, self.generation, || failing || mailbox.is_empty())
        {
            return false;
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

    async fn happened(&mut self, happening: Happening) {
        match happening {
            Happening::Left(connection) => self.leave(connection),
            Happening::Live(connection, live) => self.set_live(connection, live),
            Happening::Bus(BusNote::Committed { version, .. }) => {
                if version > self.durable_version {
                    self.catch_up().await;
                }
            }
            Happening::Bus(BusNote::Presence { .. }) => self.refresh_remote_presence().await,
            Happening::Bus(BusNote::SessionEnded { .. }) => {}
            Happening::Bus(BusNote::Overruled { overruled, .. }) => self.push_overruled(&overruled),
            Happening::Resync => self.catch_up().await,
            Happening::Writable(writable) => self.set_writable(writable).await,
        }
    }

    async fn set_writable(&mut self, writable: bool) {
        if writable == self.writable {
            return;
        }
        self.writable = writable;
        let status = Writable {
            campaign_id: self.id.clone(),
            writable,
            reason: (!writable)
                .then(|| "the campaign's store is unreachable; changes are paused".to_owned()),
        };
        let _ = self.broadcast.send(frames::single(frames::push(
            WRITABLE,
            &status,
            clock::now(),
        )));
        if writable {
            self.catch_up().await;
            self.share_presence().await;
            self.refresh_remote_presence().await;
        }
    }

    async fn process(&mut self, batch: Vec<Command>) {
        let mut pending = Vec::new();
        for command in batch {
            match command {
                Command::Write {
                    write,
                    caller,
                    named,
                    reply,
                } => {
                    self.apply_write(write, caller, named, reply, &mut pending)
                        .await
                }
                other => {
                    // Anything that reads state or subscribes sees only durable state: flush first.
                    self.flush(&mut pending).await;
                    self.handle(other).await;
                }
            }
        }
        self.flush(&mut pending).await;
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Write { .. } => unreachable!("writes are handled in process()"),
            Command::Create {
                request,
                actor,
                reply,
            } => {
                let _ = reply.send(self.create(request, actor).await.map_err(Into::into));
            }
            Command::Subscribe {
                connection,
                viewer,
                since_version,
                reply,
            } => {
                self.subscribe(connection, viewer, since_version, reply)
                    .await
            }
            Command::Backfill {
                since_version,
                caller,
                reply,
            } => {
                let _ = reply.send(
                    self.backfill(since_version, caller.as_ref())
                        .map_err(Into::into),
                );
            }
            Command::Snapshot { caller, reply } => {
                let _ = reply.send(self.snapshot(caller.as_ref()).map_err(Into::into));
            }
            Command::Role { caller, reply } => {
                let _ = reply.send(self.role(caller.as_ref()).map_err(Into::into));
            }
            Command::Join {
                person,
                invite,
                reply,
            } => {
                self.know_invite(&invite).await;
                let _ = reply.send(self.join(person, invite).await);
            }
            Command::MakeInvite {
                caller,
                asked,
                reply,
            } => {
                let _ = reply.send(self.make_invite(caller, asked).await);
            }
            Command::WithdrawInvite { caller, id, reply } => {
                self.know_invite(&id).await;
                let _ = reply.send(self.withdraw_invite(caller, id).await);
            }
            Command::Invites { caller, reply } => {
                let _ = reply.send(self.invites(caller.as_ref()).map_err(Into::into));
            }
            Command::InviteOffer { id, reply } => {
                self.know_invite(&id).await;
                let _ = reply.send(self.invite_offer(&id).map_err(Into::into));
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

    async fn create(
        &mut self,
        request: CreateCampaign,
        actor: Actor,
    ) -> Result<CampaignSnapshot, ErrorBody> {
        if self.core.is_some() {
            return Err(already_exists(&self.id));
        }
        if !self.writable {
            return Err(read_only());
        }
        let now = clock::now();
        let event_id = self.context.event_ids.next(now);
        let history_len = self.context.config.history_len;
        let mut request = request;
        request
            .visibility
            .get_or_insert(self.context.config.default_visibility);
        let (core, event) = CampaignCore::create(request, &actor, now, event_id, history_len)?;
        match self
            .context
            .store
            .create(core.record().clone(), event)
            .await
        {
            Ok(()) => {
                let snapshot = CampaignSnapshot {
                    campaign: core.state().clone(),
                    role: Role::Owner,
                };
                self.set_durable(core.version());
                self.core = Some(core);
                self.refresh_gauges();
                Ok(snapshot)
            }
            Err(StoreError::AlreadyExists) => {
                // Created meanwhile by another instance: adopt the stored one.
                let _ = self.load().await;
                Err(already_exists(&self.id))
            }
            Err(error) => Err(unavailable(format!(
                "could not store the campaign: {error}"
            ))),
        }
    }

    async fn subscribe(
        &mut self,
        connection: ConnectionId,
        viewer: Option<Caller>,
        since_version: Option<u64>,
        reply: Reply<Subscription>,
    ) {
        let Some(core) = self.core.as_ref() else {
            let _ = reply.send(Err(not_found(&self.id).into()));
            return;
        };
        if let Err(hidden) = core.visible_to(viewer.as_ref()) {
            let _ = reply.send(Err(hidden.into()));
            return;
        }
        let role = core.role_for(viewer.as_ref());
        let viewer = viewer.map(|caller| caller.actor);
        // Subscribe to the channel and read history in the same step: nothing can be
        // broadcast in between, so backlog + live has no gap and no duplicate.
        let events = self.broadcast.subscribe();
        let (resume, backlog) = match core.resume(since_version) {
            ResumePlan::Events(missed) => (
                Resume::Events {
                    from_version: since_version.unwrap_or(0) + 1,
                    to_version: core.version(),
                },
                missed.into_iter().map(|e| self.encoded_frame(e)).collect(),
            ),
            ResumePlan::Snapshot(reason) => (
                Resume::Snapshot {
                    reason,
                    campaign: Box::new(core.state().clone()),
                },
                Vec::new(),
            ),
        };
        let first_here = self.subscribers.is_empty();
        let previous = self.subscribers.insert(connection, viewer.clone());
        if let Some(previous) = &previous {
            self.local.remove(previous);
        }
        self.local.add(&viewer);
        self.count_subscribers();
        if first_here && self.context.bus.shared() {
            // Nobody here was watching: learn who is watching elsewhere first.
            let (viewers, people) = self.context.bus.remote_presence(&self.id).await;
            self.remote_viewers = viewers;
            self.remote_people = people;
        }
        let subscription = Subscription {
            gauges: self.gauges.clone(),
            history: self.encoded.clone(),
            reply: SubscribeReply {
                campaign_id: self.id.clone(),
                role,
                resume,
                presence: self.presence(),
                writable: self.writable,
            },
            backlog,
            events,
        };
        if reply.send(Ok(subscription)).is_err() {
            // The connection went away while waiting.
            if let Some(viewer) = self.subscribers.remove(&connection) {
                self.local.remove(&viewer);
            }
            self.count_subscribers();
            return;
        }
        if previous.is_none() {
            self.announcer
                .changed(Some(presence::person(&viewer)), None);
        }
    }

    /// The encoded frame of a history event (encoding it only if the cache lacks it).
    pub(super) fn encoded_frame(&self, event: &rally_app::model::CampaignEvent) -> Frame {
        self.encoded
            .get(event.version)
            .unwrap_or_else(|| frames::state_event(event))
    }

    fn count_subscribers(&self) {
        self.gauges
            .subscribers
            .store(self.subscribers.len(), Ordering::Relaxed);
    }

    fn leave(&mut self, connection: ConnectionId) {
        self.set_live(connection, false);
        if let Some(viewer) = self.subscribers.remove(&connection) {
            self.local.remove(&viewer);
            self.count_subscribers();
            self.announcer
                .changed(None, Some(presence::person(&viewer)));
        }
    }

    /// A following connection of a signed-in person went live (a connection that does not
    /// follow the campaign is ignored), or a connection stopped being live.
    fn set_live(&mut self, connection: ConnectionId, live: bool) {
        if live {
            let Some(Some(actor)) = self.subscribers.get(&connection) else {
                return;
            };
            if self
                .live
                .insert(connection, actor.user_id.clone())
                .is_none()
            {
                self.local.set_live(&actor.user_id, true);
                self.announcer.changed(None, None);
            }
        } else if let Some(user) = self.live.remove(&connection) {
            self.local.set_live(&user, false);
            self.announcer.changed(None, None);
        }
    }

    /// Everyone watching, on every instance.
    fn presence(&self) -> rally_app::model::Presence {
        presence::presence(
            &self.id,
            &self.local,
            &self.remote_viewers,
            self.remote_people,
        )
    }

    /// Record this instance's viewers in the shared presence (shared store only).
    async fn share_presence(&self) {
        if self.context.bus.shared() {
            self.context
                .bus
                .share_presence(&self.id, self.local.listed(), self.local.people())
                .await;
        }
    }

    /// Re-read other instances' viewers and announce any difference.
    async fn refresh_remote_presence(&mut self) {
        if !self.context.bus.shared() || self.subscribers.is_empty() {
            return;
        }
        let (viewers, people) = self.context.bus.remote_presence(&self.id).await;
        self.remote_viewers = viewers;
        self.remote_people = people;
        let presence = self.presence();
        if let Some(push) = self.announcer.compare(Instant::now(), presence) {
            self.broadcast_presence(&push);
        }
    }

    /// Push the joins and leaves collected here, and tell the other instances.
    async fn announce_pending(&mut self) {
        let presence = self.presence();
        let Some(push) = self.announcer.take(Instant::now(), presence) else {
            return;
        };
        self.broadcast_presence(&push);
        self.share_presence().await;
        self.notify(BusNote::Presence {
            campaign: self.id.clone(),
        });
    }

    fn broadcast_presence(&self, push: &PresenceChanged) {
        let frame = frames::push(PRESENCE_EVENT, push, clock::now());
        let _ = self.broadcast.send(frames::single(frame));
    }
}
