//! The task that owns one loaded campaign: the thin async shell around [`CampaignCore`].
//!
//! Every command for the campaign arrives in this task's mailbox, so there is exactly one writer
//! per campaign per instance and no locks around its state. Consecutive writes are applied to the
//! core, then committed to the store together (one durable commit), then acknowledged, then
//! broadcast — in that order, so a success reply always means "durable", and subscribers never see
//! a change that could still be lost.
//!
//! With a shared store (Redis mode) several instances may hold a writer for the same campaign.
//! The store's version check serializes them: a writer that lost the race catches up on the other
//! instance's events (broadcasting them to its own subscribers, in order), re-applies its pending
//! writes on top — re-validating each, so `base_version` conflicts stay exact — and commits again.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rally_app::model::{
    Actor, CampaignEvent, CampaignId, Presence, Role, UserId, Viewer, PRESENCE_LIST_MAX,
};
use rally_app::protocol::campaign::{
    CampaignSnapshot, CreateCampaign, PresenceChanged, PresencePerson, Resume, SubscribeReply,
    Writable, WriteAck, PRESENCE_EVENT, WRITABLE,
};
use rally_app::protocol::{ErrorBody, ErrorCode};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::core::{Applied, CampaignCore, ResumePlan, Write};
use super::{CampaignGauges, ConnectionId, ManagerShared};
use crate::bus::redis::PRESENCE_HEARTBEAT;
use crate::bus::{merge_viewers, BusNote};
use crate::clock;
use crate::frames::{self, Frame};
use crate::store::{Commit, StoreError};

/// Commits (each a [`frames::Batch`] of up to [`MAX_BATCH`] events) and pushes buffered per
/// subscriber (the broadcast channel's capacity): a subscriber more than this many behind is
/// lagging and catches up from history.
pub const SUBSCRIBER_BUFFER: usize = 32;
/// Commands taken from the mailbox in one batch (one durable commit for the writes among them).
const MAX_BATCH: usize = 64;
/// How long a batch keeps retrying when other instances keep winning the race for the same
/// campaign (well inside the 5 s a request waits for its answer).
const COMMIT_PATIENCE: Duration = Duration::from_secs(3);
/// Attempts at granting a role under the same contention.
const MAX_COMMIT_ATTEMPTS: usize = 24;
/// Events fetched per catch-up read.
const CATCH_UP_BATCH: usize = 10_000;

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
    /// The campaign's recent events, encoded (to catch up without asking the campaign task).
    pub history: EncodedHistory,
    /// The campaign's live counters (how far ahead of this subscriber it is).
    pub gauges: Arc<CampaignGauges>,
    /// Missed events to deliver, in order, before anything from `events`.
    pub backlog: Vec<Frame>,
    pub events: broadcast::Receiver<frames::Batch>,
}

/// A campaign's recent events as encoded frames, oldest first, contiguous in version. Written only
/// by the campaign's task; read by connections catching up.
#[derive(Clone, Default)]
pub struct EncodedHistory {
    frames: Arc<std::sync::RwLock<std::collections::VecDeque<Frame>>>,
}

impl EncodedHistory {
    fn replace(&self, frames: std::collections::VecDeque<Frame>) {
        *self.frames.write().expect("history lock") = frames;
    }

    fn push(&self, frame: Frame, limit: usize) {
        let mut frames = self.frames.write().expect("history lock");
        while frames.len() >= limit {
            frames.pop_front();
        }
        frames.push_back(frame);
    }

    fn newest(&self) -> Option<Frame> {
        self.frames.read().expect("history lock").back().cloned()
    }

    fn get(&self, version: u64) -> Option<Frame> {
        let frames = self.frames.read().expect("history lock");
        let first = frames.front()?.version?;
        let frame = frames.get(version.checked_sub(first)? as usize)?;
        (frame.version == Some(version)).then(|| frame.clone())
    }

    /// Every frame after `version`, if the history still holds `version + 1` (None otherwise).
    pub fn after(&self, version: u64) -> Option<Vec<Frame>> {
        let frames = self.frames.read().expect("history lock");
        let first = frames.front()?.version?;
        if first > version + 1 {
            return None;
        }
        let skip = (version + 1 - first) as usize;
        Some(frames.iter().skip(skip).cloned().collect())
    }
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

/// Things that happen to a campaign besides requests; never refused, never lost.
#[derive(Debug, Clone)]
pub enum Signal {
    /// A connection stopped following the campaign.
    Leave(ConnectionId),
    /// Another instance changed something.
    Bus(BusNote),
    /// Bus notes may have been missed: catch up from the store.
    Resync,
    /// The shared store became reachable (true) or unreachable (false).
    Writable(bool),
}

/// A write applied to the core but not yet durable.
struct Pending {
    write: Write,
    actor: Option<Actor>,
    event: CampaignEvent,
    reply: Reply<WriteAck>,
}

pub struct Writer {
    pub id: CampaignId,
    pub generation: u64,
    /// Counters the manager reads without asking the task (metrics, readiness).
    pub gauges: Arc<CampaignGauges>,
    pub mailbox: mpsc::Receiver<Command>,
    pub signals: mpsc::UnboundedReceiver<Signal>,
    pub shared: Arc<ManagerShared>,
    core: Option<CampaignCore>,
    /// The core as it was before the current batch (shared store only): what to go back to when
    /// a commit loses a race or cannot reach the store.
    backup: Option<CampaignCore>,
    /// The version the store holds (the core may be ahead by the pending writes).
    durable_version: u64,
    broadcast: broadcast::Sender<frames::Batch>,
    /// The history's events, encoded once and shared with the connections: resuming and lagging
    /// subscribers copy these bytes (reference counts) themselves, without asking this task and
    /// without re-serializing (a burst of laggards must not turn into a burst of work here).
    encoded: EncodedHistory,
    /// Local subscribers, by connection.
    subscribers: HashMap<ConnectionId, Option<Actor>>,
    /// The same, counted per person and kept sorted, so presence costs O(list) not O(viewers).
    local: LocalViewers,
    /// Viewers other instances reported (shared store only), and how many people they have.
    remote_viewers: Vec<Viewer>,
    remote_people: u32,
    /// The presence list last announced, to tell who joined or left.
    announced: Vec<Viewer>,
    /// Presence changes not announced yet: they are coalesced into one push per
    /// [`PRESENCE_DEBOUNCE`], so a crowd arriving costs a few pushes, not one per person.
    pending_presence: Option<PendingPresence>,
    last_presence: std::time::Instant,
    /// False while the shared store is unreachable: the campaign is read-only.
    writable: bool,
}

fn unavailable(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::Unavailable, message)
}

fn not_found(id: &CampaignId) -> ErrorBody {
    ErrorBody::new(ErrorCode::NotFound, format!("campaign {id} does not exist"))
}

fn read_only() -> ErrorBody {
    unavailable("the campaign is temporarily read-only: its store is unreachable; retry shortly")
}

impl Writer {
    pub fn new(
        id: CampaignId,
        generation: u64,
        gauges: Arc<CampaignGauges>,
        mailbox: mpsc::Receiver<Command>,
        signals: mpsc::UnboundedReceiver<Signal>,
        shared: Arc<ManagerShared>,
    ) -> Self {
        let (broadcast, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let writable = *shared.writable.borrow();
        Writer {
            id,
            generation,
            gauges,
            mailbox,
            signals,
            shared,
            core: None,
            backup: None,
            durable_version: 0,
            broadcast,
            encoded: EncodedHistory::default(),
            subscribers: HashMap::new(),
            local: LocalViewers::default(),
            remote_viewers: Vec::new(),
            remote_people: 0,
            announced: Vec::new(),
            pending_presence: None,
            last_presence: std::time::Instant::now() - PRESENCE_DEBOUNCE,
            writable,
        }
    }

    pub async fn run(mut self) {
        if let Err(error) = self.load().await {
            tracing::debug!(campaign = %self.id, %error, "cannot load campaign");
            self.retire(Some(unavailable(format!("cannot load campaign: {error}"))));
            return;
        }
        let mut heartbeat = tokio::time::interval(PRESENCE_HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared_bus = self.shared.bus.shared();
        loop {
            let idle = self.subscribers.is_empty();
            let presence_due = self.presence_due();
            let presence_pending = self.pending_presence.is_some();
            let first = tokio::select! {
                biased;
                Some(signal) = self.signals.recv() => {
                    self.signal(signal).await;
                    continue;
                }
                command = self.mailbox.recv() => command,
                _ = tokio::time::sleep_until(presence_due), if presence_pending => {
                    self.announce_pending().await;
                    continue;
                }
                _ = heartbeat.tick(), if shared_bus && !idle => {
                    self.share_presence().await;
                    self.refresh_remote_presence().await;
                    continue;
                }
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
        self.backup = None;
        if let Some(loaded) = self.shared.store.load(&self.id, history_len).await? {
            let core = CampaignCore::restore(loaded.record, loaded.history, history_len);
            self.durable_version = core.version();
            self.encoded
                .replace(core.history().map(frames::state_event).collect());
            self.gauges
                .latest_version
                .store(core.version(), Ordering::Relaxed);
            self.gauges
                .durable_version
                .store(core.version(), Ordering::Relaxed);
            self.core = Some(core);
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

    async fn signal(&mut self, signal: Signal) {
        match signal {
            Signal::Leave(connection) => self.leave(connection).await,
            Signal::Bus(BusNote::Committed { version, .. }) => {
                if version > self.durable_version {
                    self.catch_up().await;
                }
            }
            Signal::Bus(BusNote::Record { .. }) => {
                // Roles changed elsewhere; no events to replay, just the record.
                if let Err(error) = self.load().await {
                    tracing::debug!(campaign = %self.id, %error, "cannot reload record");
                }
            }
            Signal::Bus(BusNote::Presence { .. }) => self.refresh_remote_presence().await,
            Signal::Resync => self.catch_up().await,
            Signal::Writable(writable) => {
                if writable == self.writable {
                    return;
                }
                self.writable = writable;
                let status = Writable {
                    campaign_id: self.id.clone(),
                    writable,
                    reason: (!writable).then(|| {
                        "the campaign's store is unreachable; changes are paused".to_owned()
                    }),
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
        }
    }

    /// Take every event the store has after `durable_version` (made by other instances) and
    /// broadcast them in order. If the store's history no longer reaches back, reload and let
    /// subscribers resync.
    async fn catch_up(&mut self) {
        if self.core.is_none() {
            let _ = self.load().await;
            return;
        }
        loop {
            let events = match self
                .shared
                .store
                .events_since(&self.id, self.durable_version, CATCH_UP_BATCH)
                .await
            {
                Ok(Some(events)) => events,
                Ok(None) => {
                    tracing::debug!(campaign = %self.id, "history too short to catch up; reloading");
                    if self.load().await.is_ok() {
                        // Subscribers see a gap at the newest event and resync through backfill.
                        if let Some(last) = self.encoded.newest() {
                            let _ = self.broadcast.send(frames::single(last));
                        }
                    }
                    return;
                }
                Err(error) => {
                    tracing::debug!(campaign = %self.id, %error, "catch-up failed; will retry when the store is back");
                    return;
                }
            };
            let fetched = events.len();
            let mut applied = Vec::with_capacity(fetched);
            for event in events {
                let Some(core) = self.core.as_mut() else {
                    break;
                };
                if core.apply_remote(&event).is_err() {
                    self.publish(&applied);
                    let _ = self.load().await;
                    return;
                }
                self.durable_version = event.version;
                self.gauges
                    .durable_version
                    .store(event.version, Ordering::Relaxed);
                applied.push(event);
            }
            self.publish(&applied);
            if self.core.is_none() {
                return;
            }
            if fetched < CATCH_UP_BATCH {
                return;
            }
        }
    }

    /// Remember the frames of durable events and broadcast them as one batch.
    fn publish(&mut self, events: &[CampaignEvent]) {
        let Some(newest) = events.last() else {
            return;
        };
        let durable_at = Some(std::time::Instant::now());
        let batch: frames::Batch = events
            .iter()
            .map(|event| {
                let frame = frames::state_event(event);
                self.remember(frame.clone());
                Frame {
                    durable_at,
                    ..frame
                }
            })
            .collect();
        self.gauges
            .latest_version
            .store(newest.version, Ordering::Relaxed);
        self.shared
            .ops
            .changes
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        metrics::counter!("rally_changes_applied_total").increment(events.len() as u64);
        // Err means no subscriber right now, which is fine.
        let _ = self.broadcast.send(batch);
    }

    /// Tell other instances, without waiting (they catch up by version if a note is lost).
    fn notify(&self, note: BusNote) {
        if self.shared.bus.shared() {
            let bus = self.shared.bus.clone();
            tokio::spawn(async move { bus.publish(note).await });
        }
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
        if self.core.is_none() {
            let _ = reply.send(Err(not_found(&self.id).into()));
            return;
        }
        if !self.writable {
            let _ = reply.send(Err(read_only().into()));
            return;
        }
        if pending.is_empty() && self.shared.bus.shared() {
            self.backup = self.core.clone();
        }
        let Some(core) = self.core.as_mut() else {
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
                pending.push(Pending {
                    write,
                    actor,
                    event,
                    reply,
                });
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

    /// Go back to the state before this batch: the backup (shared store) or the store itself.
    async fn roll_back(&mut self) {
        match self.backup.take() {
            Some(backup) => self.core = Some(backup),
            None => {
                if let Err(error) = self.load().await {
                    tracing::error!(campaign = %self.id, %error, "cannot reload campaign");
                    self.core = None;
                }
            }
        }
    }

    /// Apply pending writes again on the current core (after catching up): each is re-validated,
    /// so one that now conflicts is answered with the conflict.
    fn reapply(&mut self, pending: &mut Vec<Pending>) {
        self.backup = self.core.clone();
        let Some(core) = self.core.as_mut() else {
            return;
        };
        let mut kept = Vec::with_capacity(pending.len());
        for Pending {
            write,
            actor,
            reply,
            ..
        } in pending.drain(..)
        {
            let now = clock::now();
            let event_id = self.shared.event_ids.next(now);
            match core.apply(&write, actor.as_ref(), now, event_id) {
                Ok(Applied::Changed(event)) => kept.push(Pending {
                    write,
                    actor,
                    event,
                    reply,
                }),
                Ok(Applied::Unchanged { version }) => {
                    let _ = reply.send(Ok(WriteAck {
                        campaign_id: self.id.clone(),
                        version,
                        event_id: None,
                        unchanged: true,
                    }));
                }
                Err(rejection) => {
                    let _ = reply.send(Err(rejection.into()));
                }
            }
        }
        *pending = kept;
    }

    /// Make pending writes durable, then acknowledge and broadcast them.
    ///
    /// With a shared store the commit can lose the version race to another instance: then roll
    /// back, catch up on the winner's events, re-apply (re-validating) and try again. An instance
    /// that loses twice in a row claims the campaign's turn, so busy neighbours cannot starve it.
    async fn flush(&mut self, pending: &mut Vec<Pending>) {
        let deadline = std::time::Instant::now() + COMMIT_PATIENCE;
        let mut losses = 0u32;
        loop {
            if pending.is_empty() {
                self.backup = None;
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
                instance: self.shared.event_ids.instance(),
            };
            let outcome = self.shared.store.commit(commit).await;
            let lost = matches!(
                outcome,
                Err(StoreError::VersionMismatch { .. } | StoreError::NotYourTurn)
            );
            match outcome {
                Ok(()) => {
                    let version = core.version();
                    self.backup = None;
                    self.durable_version = version;
                    self.gauges
                        .durable_version
                        .store(version, Ordering::Relaxed);
                    let mut events = Vec::with_capacity(pending.len());
                    for Pending { event, reply, .. } in pending.drain(..) {
                        let _ = reply.send(Ok(WriteAck {
                            campaign_id: self.id.clone(),
                            version: event.version,
                            event_id: Some(event.event_id),
                            unchanged: false,
                        }));
                        events.push(event);
                    }
                    self.publish(&events);
                    self.notify(BusNote::Committed {
                        campaign: self.id.clone(),
                        version,
                    });
                    return;
                }
                Err(_) if lost && std::time::Instant::now() < deadline => {
                    metrics::counter!("rally_commit_retries_total").increment(1);
                    losses += 1;
                    self.roll_back().await;
                    if losses >= 2 {
                        let _ = self
                            .shared
                            .store
                            .claim_turn(&self.id, self.shared.event_ids.instance())
                            .await;
                    }
                    // Back off a random 0..2^losses ms (capped), so retries do not collide in step.
                    let cap = (1u64 << losses.min(5)).min(20);
                    let jitter =
                        u64::from(u32::from_le_bytes(clock::random_bytes())) % (cap * 1000);
                    tokio::time::sleep(Duration::from_micros(jitter)).await;
                    self.catch_up().await;
                    self.reapply(pending);
                }
                Err(error) => {
                    if self.shared.bus.shared() {
                        // The link logs an outage once; per-request failures are routine.
                        tracing::debug!(campaign = %self.id, %error, "commit failed");
                    } else {
                        tracing::error!(campaign = %self.id, %error, "commit failed; reloading campaign");
                    }
                    for p in pending.drain(..) {
                        let _ = p.reply.send(Err(unavailable(format!(
                            "could not store the change: {error}"
                        ))
                        .into()));
                    }
                    self.roll_back().await;
                    return;
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
                if !self.writable {
                    let _ = reply.send(Err(read_only().into()));
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
                let first_here = self.subscribers.is_empty();
                let previous = self.subscribers.insert(connection, viewer.clone());
                let joined = previous.is_none();
                if let Some(previous) = &previous {
                    self.local.remove(previous);
                }
                self.local.add(&viewer);
                self.gauges
                    .subscribers
                    .store(self.subscribers.len(), Ordering::Relaxed);
                if first_here && self.shared.bus.shared() {
                    // Nobody here was watching: learn who is watching elsewhere first.
                    let (viewers, people) = self.shared.bus.remote_presence(&self.id).await;
                    self.remote_viewers = viewers;
                    self.remote_people = people;
                }
                let presence = self.presence();
                let subscription = Subscription {
                    gauges: self.gauges.clone(),
                    history: self.encoded.clone(),
                    reply: SubscribeReply {
                        campaign_id: self.id.clone(),
                        role,
                        resume,
                        presence: presence.clone(),
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
                    self.gauges
                        .subscribers
                        .store(self.subscribers.len(), Ordering::Relaxed);
                    return;
                }
                if joined {
                    self.presence_changed(Some(person(&viewer)), None);
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
                if !self.writable {
                    let _ = reply.send(Err(read_only().into()));
                    return;
                }
                for _ in 0..MAX_COMMIT_ATTEMPTS {
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
                        instance: self.shared.event_ids.instance(),
                    };
                    match self.shared.store.commit(commit).await {
                        Ok(()) => {
                            self.notify(BusNote::Record {
                                campaign: self.id.clone(),
                            });
                            let _ = reply.send(Ok(role));
                            return;
                        }
                        Err(StoreError::VersionMismatch { .. } | StoreError::NotYourTurn) => {
                            // Reload (the grant is redone on the fresh record next round).
                            let _ = self.load().await;
                            self.catch_up().await;
                        }
                        Err(error) => {
                            let _ = self.load().await;
                            let _ = reply.send(Err(unavailable(format!(
                                "could not store the role: {error}"
                            ))
                            .into()));
                            return;
                        }
                    }
                }
                let _ = reply.send(Err(unavailable("the campaign is too busy; retry").into()));
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
        self.encoded
            .push(frame, self.shared.config.history_len.max(1));
    }

    /// The encoded frame of a history event (encoding it only if the cache lacks it).
    fn encoded_frame(&self, event: &CampaignEvent) -> Frame {
        self.encoded
            .get(event.version)
            .unwrap_or_else(|| frames::state_event(event))
    }

    async fn leave(&mut self, connection: ConnectionId) {
        if let Some(viewer) = self.subscribers.remove(&connection) {
            self.local.remove(&viewer);
            self.gauges
                .subscribers
                .store(self.subscribers.len(), Ordering::Relaxed);
            self.presence_changed(None, Some(person(&viewer)));
        }
    }

    /// Record this instance's viewers in the shared presence (shared store only).
    async fn share_presence(&self) {
        if self.shared.bus.shared() {
            self.shared
                .bus
                .share_presence(&self.id, self.local_viewers(), self.local.people())
                .await;
        }
    }

    /// Re-read other instances' viewers and announce any difference.
    async fn refresh_remote_presence(&mut self) {
        if !self.shared.bus.shared() || self.subscribers.is_empty() {
            return;
        }
        let (viewers, people) = self.shared.bus.remote_presence(&self.id).await;
        self.remote_viewers = viewers;
        self.remote_people = people;
        let presence = self.presence();
        if presence.viewers == self.announced {
            return;
        }
        let named = |list: &[Viewer]| -> Vec<(Option<UserId>, String)> {
            list.iter()
                .filter(|v| v.user_id.is_some())
                .map(|v| (v.user_id.clone(), v.display_name.clone()))
                .collect()
        };
        let before = named(&self.announced);
        let after = named(&presence.viewers);
        let as_person = |(user_id, display_name): &(Option<UserId>, String)| PresencePerson {
            user_id: user_id.clone(),
            display_name: display_name.clone(),
        };
        let joined = after
            .iter()
            .filter(|p| !before.contains(p))
            .map(as_person)
            .collect();
        let left = before
            .iter()
            .filter(|p| !after.contains(p))
            .map(as_person)
            .collect();
        self.broadcast_presence(presence, joined, left);
    }

    /// Someone joined or left here: announce it soon, together with whatever else changes.
    fn presence_changed(&mut self, joined: Option<PresencePerson>, left: Option<PresencePerson>) {
        let pending = self
            .pending_presence
            .get_or_insert_with(PendingPresence::default);
        if let Some(person) = joined {
            if pending.joined.len() < PRESENCE_NAMED {
                pending.joined.push(person);
            }
        }
        if let Some(person) = left {
            if pending.left.len() < PRESENCE_NAMED {
                pending.left.push(person);
            }
        }
    }

    /// When the pending presence change goes out: at once after a quiet spell, otherwise one
    /// debounce interval after the previous push.
    fn presence_due(&self) -> tokio::time::Instant {
        (self.last_presence + PRESENCE_DEBOUNCE)
            .max(std::time::Instant::now())
            .into()
    }

    async fn announce_pending(&mut self) {
        let Some(pending) = self.pending_presence.take() else {
            return;
        };
        let presence = self.presence();
        self.broadcast_presence(presence, pending.joined, pending.left);
        self.share_presence().await;
        self.notify(BusNote::Presence {
            campaign: self.id.clone(),
        });
    }

    fn broadcast_presence(
        &mut self,
        presence: Presence,
        joined: Vec<PresencePerson>,
        left: Vec<PresencePerson>,
    ) {
        self.announced = presence.viewers.clone();
        self.last_presence = std::time::Instant::now();
        let payload = PresenceChanged {
            presence,
            joined,
            left,
        };
        let _ = self.broadcast.send(frames::single(frames::push(
            PRESENCE_EVENT,
            &payload,
            clock::now(),
        )));
    }

    /// This instance's viewers as a (capped) list.
    fn local_viewers(&self) -> Vec<Viewer> {
        self.local.listed()
    }

    /// Everyone watching, on every instance.
    fn presence(&self) -> Presence {
        let viewers = merge_viewers(
            self.local
                .listed()
                .into_iter()
                .chain(self.remote_viewers.iter().cloned()),
        );
        Presence {
            campaign_id: self.id.clone(),
            count: self.local.people() + self.remote_people,
            viewers,
        }
    }
}

/// Presence changes waiting to be announced.
#[derive(Default)]
struct PendingPresence {
    joined: Vec<PresencePerson>,
    left: Vec<PresencePerson>,
}

/// People named in one presence push's joined/left lists.
const PRESENCE_NAMED: usize = 20;
/// Least time between two presence pushes for one campaign.
const PRESENCE_DEBOUNCE: Duration = Duration::from_millis(150);

/// This instance's viewers of one campaign, counted per person and kept in display order.
#[derive(Default)]
struct LocalViewers {
    users: std::collections::BTreeMap<(String, UserId), u32>,
    anonymous: u32,
}

impl LocalViewers {
    fn add(&mut self, viewer: &Option<Actor>) {
        match viewer {
            Some(actor) => {
                *self
                    .users
                    .entry((actor.display_name.clone(), actor.user_id.clone()))
                    .or_default() += 1
            }
            None => self.anonymous += 1,
        }
    }

    fn remove(&mut self, viewer: &Option<Actor>) {
        match viewer {
            Some(actor) => {
                let key = (actor.display_name.clone(), actor.user_id.clone());
                if let Some(count) = self.users.get_mut(&key) {
                    *count -= 1;
                    if *count == 0 {
                        self.users.remove(&key);
                    }
                }
            }
            None => self.anonymous = self.anonymous.saturating_sub(1),
        }
    }

    fn people(&self) -> u32 {
        self.users.len() as u32 + self.anonymous
    }

    /// At most [`PRESENCE_LIST_MAX`] signed-in viewers, then the anonymous ones as one entry.
    fn listed(&self) -> Vec<Viewer> {
        let mut viewers: Vec<Viewer> = self
            .users
            .iter()
            .take(PRESENCE_LIST_MAX)
            .map(|((name, id), connections)| Viewer {
                user_id: Some(id.clone()),
                display_name: name.clone(),
                connections: *connections,
            })
            .collect();
        if self.anonymous > 0 {
            viewers.push(Viewer {
                user_id: None,
                display_name: "Anonymous".into(),
                connections: self.anonymous,
            });
        }
        viewers
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
