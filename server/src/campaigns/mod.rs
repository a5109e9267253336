//! Campaign state: the pure core, the per-campaign writer task around it, and the
//! [`StateManager`] that finds or starts writers.
//!
//! Callers (the WebSocket gateway, the HTTP API) talk only to the manager. It routes each request
//! to the campaign's single writer, starting one (which loads the campaign from the store) when
//! none is running. Writers with no subscribers retire after an idle period, so memory holds only
//! campaigns someone is looking at.

pub mod core;
pub mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rally_app::model::{Actor, CampaignId, Role, UserId};
use rally_app::protocol::campaign::{CampaignSnapshot, CampaignSummary, CreateCampaign, WriteAck};
use rally_app::protocol::{ErrorBody, ErrorCode};
use tokio::sync::{mpsc, oneshot};

use self::core::Write;
use self::writer::{Backfill, Command, Signal, Subscription, Writer, WriterError};
use crate::bus::{EventBus, Incoming};
use crate::clock::EventIds;
use crate::store::Store;

/// How long any request waits for its campaign's writer before giving up with `unavailable`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Commands that may queue for one campaign before senders wait.
const MAILBOX: usize = 1024;

/// Identifies one WebSocket connection across its subscriptions (for presence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(u64);

impl ConnectionId {
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnectionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Events kept per campaign for resuming subscribers.
    pub history_len: usize,
    /// How long a campaign with no subscribers stays loaded.
    pub idle_unload: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            history_len: self::core::DEFAULT_HISTORY_LEN,
            idle_unload: Duration::from_secs(30),
        }
    }
}

/// A running writer, as the registry knows it.
#[derive(Clone)]
pub struct WriterHandle {
    pub generation: u64,
    mailbox: mpsc::Sender<Command>,
    signals: mpsc::UnboundedSender<Signal>,
    gauges: Arc<CampaignGauges>,
}

/// What the manager can read about a loaded campaign without asking its task.
#[derive(Debug, Default)]
pub struct CampaignGauges {
    pub subscribers: AtomicUsize,
    /// The newest version broadcast (how far ahead of a subscriber the campaign is).
    pub latest_version: AtomicU64,
    /// The version the writer believes the store holds.
    pub durable_version: AtomicU64,
}

/// State every writer shares with the manager.
pub struct ManagerShared {
    pub store: Arc<dyn Store>,
    pub config: ManagerConfig,
    pub event_ids: EventIds,
    pub writers: Mutex<HashMap<CampaignId, WriterHandle>>,
    next_generation: AtomicU64,
    /// Every writer task, so shutdown can wait for them.
    tasks: tokio_util::task::TaskTracker,
    /// Totals for the live ops view.
    pub ops: Arc<crate::ops::OpsCounters>,
    /// How changes reach other instances.
    pub bus: Arc<dyn EventBus>,
    /// False while the shared store is unreachable (always true with the embedded store).
    pub writable: tokio::sync::watch::Receiver<bool>,
}

/// The front door to campaign state. Cheap to clone.
#[derive(Clone)]
pub struct StateManager {
    shared: Arc<ManagerShared>,
}

fn unavailable(message: &str) -> ErrorBody {
    ErrorBody::new(ErrorCode::Unavailable, message)
}

impl StateManager {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        writable: tokio::sync::watch::Receiver<bool>,
        event_ids: EventIds,
        config: ManagerConfig,
    ) -> Self {
        StateManager {
            shared: Arc::new(ManagerShared {
                store,
                config,
                event_ids,
                writers: Mutex::new(HashMap::new()),
                next_generation: AtomicU64::new(1),
                tasks: tokio_util::task::TaskTracker::new(),
                ops: Arc::new(crate::ops::OpsCounters::default()),
                bus,
                writable,
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// Campaigns currently loaded in memory.
    pub fn loaded(&self) -> Vec<CampaignId> {
        let writers = self.shared.writers.lock().expect("registry lock");
        let mut ids: Vec<CampaignId> = writers.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Subscribers per loaded campaign.
    pub fn subscriber_counts(&self) -> Vec<(CampaignId, usize)> {
        let writers = self.shared.writers.lock().expect("registry lock");
        writers
            .iter()
            .map(|(id, h)| (id.clone(), h.gauges.subscribers.load(Ordering::Relaxed)))
            .collect()
    }

    pub fn ops(&self) -> &Arc<crate::ops::OpsCounters> {
        &self.shared.ops
    }

    /// Do loaded campaigns agree with the store? Checks up to `limit` of them; an error names
    /// the first that does not.
    pub async fn check_consistency(&self, limit: usize) -> Result<usize, String> {
        let loaded: Vec<(CampaignId, u64)> = {
            let writers = self.shared.writers.lock().expect("registry lock");
            writers
                .iter()
                .take(limit)
                .map(|(id, h)| (id.clone(), h.gauges.durable_version.load(Ordering::Acquire)))
                .collect()
        };
        for (id, believed) in &loaded {
            if *believed == 0 {
                continue; // still loading, or a campaign being created
            }
            let stored = self
                .shared
                .store
                .version(id)
                .await
                .map_err(|err| format!("cannot read {id} from the store: {err}"))?;
            // The store may be ahead by a commit whose acknowledgement is in flight, never behind.
            match stored {
                Some(stored) if stored >= *believed => {}
                Some(stored) => {
                    return Err(format!(
                        "campaign {id}: memory has version {believed}, store has {stored}"
                    ))
                }
                None => {
                    return Err(format!(
                        "campaign {id} is loaded but missing from the store"
                    ))
                }
            }
        }
        Ok(loaded.len())
    }

    /// The writer for `id`, started if none runs.
    fn writer(&self, id: &CampaignId) -> WriterHandle {
        let mut writers = self.shared.writers.lock().expect("registry lock");
        if let Some(handle) = writers.get(id) {
            if !handle.mailbox.is_closed() {
                return handle.clone();
            }
        }
        let generation = self.shared.next_generation.fetch_add(1, Ordering::Relaxed);
        let (mailbox, commands) = mpsc::channel(MAILBOX);
        let (signals, signal_events) = mpsc::unbounded_channel();
        let gauges = Arc::new(CampaignGauges::default());
        let handle = WriterHandle {
            generation,
            mailbox,
            signals,
            gauges: gauges.clone(),
        };
        writers.insert(id.clone(), handle.clone());
        let writer = Writer::new(
            id.clone(),
            generation,
            gauges,
            commands,
            signal_events,
            self.shared.clone(),
        );
        let task = self.shared.tasks.spawn(writer.run());
        let shared = self.shared.clone();
        let id = id.clone();
        // Supervisor: a writer that dies by panic outside the core's guard is logged and
        // forgotten; the next request starts a fresh one from the store.
        tokio::spawn(async move {
            if let Err(join) = task.await {
                if join.is_panic() {
                    tracing::error!(campaign = %id, "campaign task panicked; it will restart from the store");
                    metrics::counter!("rally_panics_caught_total", "where" => "campaign_task")
                        .increment(1);
                }
                let mut writers = shared.writers.lock().expect("registry lock");
                if writers.get(&id).map(|h| h.generation) == Some(generation) {
                    writers.remove(&id);
                }
            }
        });
        handle
    }

    /// Send a command built by `make` to the campaign's writer and wait (bounded) for the answer,
    /// re-resolving the writer if the one found was retiring.
    async fn ask<T>(
        &self,
        id: &CampaignId,
        make: impl Fn(oneshot::Sender<Result<T, WriterError>>) -> Command,
    ) -> Result<T, ErrorBody> {
        for _ in 0..3 {
            let handle = self.writer(id);
            let (reply, answer) = oneshot::channel();
            let sent =
                tokio::time::timeout(REQUEST_TIMEOUT, handle.mailbox.send(make(reply))).await;
            match sent {
                Err(_) => return Err(unavailable("campaign is overloaded; retry")),
                Ok(Err(_)) => continue, // retired between lookup and send
                Ok(Ok(())) => {}
            }
            match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
                Err(_) => return Err(unavailable("campaign did not answer within 5 s; retry")),
                Ok(Err(_)) => {
                    return Err(ErrorBody::new(
                        ErrorCode::Internal,
                        "campaign task failed while handling the request; retry",
                    ))
                }
                Ok(Ok(Ok(value))) => return Ok(value),
                Ok(Ok(Err(WriterError::Rejected(error)))) => return Err(error),
                Ok(Ok(Err(WriterError::Retry))) => continue,
            }
        }
        Err(unavailable("campaign is restarting; retry"))
    }

    pub async fn create(
        &self,
        request: CreateCampaign,
        actor: Actor,
    ) -> Result<CampaignSnapshot, ErrorBody> {
        let id = request.campaign_id.clone();
        self.ask(&id, |reply| Command::Create {
            request: request.clone(),
            actor: actor.clone(),
            reply,
        })
        .await
    }

    pub async fn write(
        &self,
        id: &CampaignId,
        write: Write,
        actor: Option<Actor>,
    ) -> Result<WriteAck, ErrorBody> {
        self.ask(id, |reply| Command::Write {
            write: write.clone(),
            actor: actor.clone(),
            reply,
        })
        .await
    }

    pub async fn subscribe(
        &self,
        id: &CampaignId,
        connection: ConnectionId,
        viewer: Option<Actor>,
        since_version: Option<u64>,
    ) -> Result<Subscription, ErrorBody> {
        self.ask(id, |reply| Command::Subscribe {
            connection,
            viewer: viewer.clone(),
            since_version,
            reply,
        })
        .await
    }

    /// The connection no longer follows `id` (unsubscribed, resubscribing elsewhere, or gone).
    pub fn leave(&self, id: &CampaignId, connection: ConnectionId) {
        let writers = self.shared.writers.lock().expect("registry lock");
        if let Some(handle) = writers.get(id) {
            let _ = handle.signals.send(Signal::Leave(connection));
        }
    }

    pub async fn backfill(
        &self,
        id: &CampaignId,
        since_version: u64,
        user: Option<UserId>,
    ) -> Result<Backfill, ErrorBody> {
        self.ask(id, |reply| Command::Backfill {
            since_version,
            user: user.clone(),
            reply,
        })
        .await
    }

    pub async fn snapshot(
        &self,
        id: &CampaignId,
        user: Option<UserId>,
    ) -> Result<CampaignSnapshot, ErrorBody> {
        self.ask(id, |reply| Command::Snapshot {
            user: user.clone(),
            reply,
        })
        .await
    }

    pub async fn grant(
        &self,
        id: &CampaignId,
        user: UserId,
        role: Role,
    ) -> Result<Role, ErrorBody> {
        self.ask(id, |reply| Command::Grant {
            user: user.clone(),
            role,
            reply,
        })
        .await
    }

    pub async fn list(&self) -> Result<Vec<CampaignSummary>, ErrorBody> {
        self.shared.store.list().await.map_err(|err| {
            ErrorBody::new(
                ErrorCode::Unavailable,
                format!("cannot list campaigns: {err}"),
            )
        })
    }

    /// Route what arrives from the bus to the loaded campaigns it concerns.
    pub fn dispatch(&self, incoming: Incoming) {
        let writers = self.shared.writers.lock().expect("registry lock");
        match incoming {
            Incoming::Note(note) => {
                if let Some(handle) = writers.get(note.campaign()) {
                    let _ = handle.signals.send(Signal::Bus(note));
                }
            }
            Incoming::Resync => {
                for handle in writers.values() {
                    let _ = handle.signals.send(Signal::Resync);
                }
            }
        }
    }

    /// Tell every loaded campaign the shared store went away or came back.
    pub fn set_writable(&self, writable: bool) {
        let writers = self.shared.writers.lock().expect("registry lock");
        for handle in writers.values() {
            let _ = handle.signals.send(Signal::Writable(writable));
        }
    }

    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.shared.bus
    }

    /// Stop every writer after the commands already queued, and wait for them. Called once the
    /// gateway has drained; any later request starts a writer again.
    pub async fn shutdown(&self) {
        let handles: Vec<WriterHandle> = {
            let mut writers = self.shared.writers.lock().expect("registry lock");
            writers.drain().map(|(_, handle)| handle).collect()
        };
        // Writers exit when their mailbox has no senders left.
        drop(handles);
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }

    /// Test hook: make the campaign's task panic inside its guarded section.
    #[cfg(feature = "fault-injection")]
    pub async fn inject_panic(&self, id: &CampaignId) -> Result<(), ErrorBody> {
        self.ask(id, |reply| Command::Panic { reply }).await
    }
}
