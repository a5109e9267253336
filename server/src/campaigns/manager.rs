//! [`StateManager`]: the front door to campaign state.
//!
//! Callers (the WebSocket gateway, the HTTP API, server-rendered pages) talk only to the manager.
//! It routes each request to the campaign's single writer, starting one (which loads the campaign
//! from the store) when none is running, and waits a bounded time for the answer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rally_app::model::{
    Actor, CampaignId, CreateCampaign, Idempotency, Invite, InviteId, InviteStatus, Role,
    Timestamp, UserId, Write,
};
use rally_app::protocol::campaign::{CampaignSnapshot, CampaignSummary, WriteAck};
use rally_app::protocol::invites::CreateInvite;
use rally_app::protocol::{ErrorBody, ErrorCode};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use super::access::{self, Caller};
use super::command::{Backfill, Command, Happening, Subscription, WriterError};
use super::presence::ConnectionId;
use super::writer::{self, WriterConfig, WriterContext, WriterHandle};
use crate::bus::{EventBus, Incoming};
use crate::clock::{self, EventIds};
use crate::registry::Registry;
use crate::stats::OpsCounters;
use crate::store::{CampaignRecord, Store};

/// What one person holds across every campaign (see [`StateManager::holdings`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Holdings {
    /// Campaigns they own (created, or were handed).
    pub campaigns_owned: usize,
    /// Invite links they made that still let people in.
    pub open_invites: usize,
}

/// How long any request waits for its campaign's writer before giving up with `unavailable`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Cheap to clone.
#[derive(Clone)]
pub struct StateManager {
    context: Arc<WriterContext>,
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
        ops: Arc<OpsCounters>,
        config: WriterConfig,
    ) -> Self {
        StateManager {
            context: Arc::new(WriterContext {
                store,
                bus,
                config,
                event_ids,
                ops,
                writable,
                registry: Registry::default(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.context.store
    }

    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.context.bus
    }

    /// Campaigns currently loaded in memory.
    pub fn loaded(&self) -> Vec<CampaignId> {
        let mut ids = Vec::new();
        self.context.registry.each(|id, _| ids.push(id.clone()));
        ids.sort();
        ids
    }

    /// Subscribers per loaded campaign, and whether it is public (only public campaigns may be
    /// named where campaign access does not apply).
    pub fn subscriber_counts(&self) -> Vec<(CampaignId, usize, bool)> {
        let mut counts = Vec::new();
        self.context.registry.each(|id, handle| {
            counts.push((
                id.clone(),
                handle.gauges.subscribers.load(Ordering::Relaxed),
                handle.gauges.public.load(Ordering::Relaxed),
            ))
        });
        counts
    }

    /// Do loaded campaigns agree with the store? Checks up to `limit` of them; an error names
    /// the first that does not.
    pub async fn check_consistency(&self, limit: usize) -> Result<usize, String> {
        let mut loaded: Vec<(CampaignId, u64)> = Vec::new();
        self.context.registry.each(|id, handle| {
            if loaded.len() < limit {
                let believed = handle.gauges.durable_version.load(Ordering::Acquire);
                loaded.push((id.clone(), believed));
            }
        });
        for (id, believed) in &loaded {
            if *believed == 0 {
                continue; // still loading, or a campaign being created
            }
            let stored = self
                .context
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
        self.context.registry.get_or_start(
            id,
            |handle| !handle.mailbox.is_closed(),
            |generation| writer::start(&self.context, id.clone(), generation),
        )
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

    /// A campaign that is neither loaded nor stored is `not_found` without starting anything: a
    /// visitor naming campaigns that do not exist costs one store read each, and no task.
    async fn exists(&self, id: &CampaignId) -> Result<(), ErrorBody> {
        if self.context.registry.get(id).is_some() {
            return Ok(());
        }
        match self.context.store.version(id).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(super::core::not_found(id)),
            Err(err) => Err(unavailable(&format!("cannot read the campaign: {err}"))),
        }
    }

    /// Tell the campaign's writer, if one runs, something that happened.
    fn tell(&self, id: &CampaignId, happening: Happening) {
        if let Some(handle) = self.context.registry.get(id) {
            let _ = handle.happenings.send(happening);
        }
    }

    /// Tell every loaded campaign.
    fn tell_all(&self, happening: Happening) {
        self.context.registry.each(|_, handle| {
            let _ = handle.happenings.send(happening.clone());
        });
    }

    pub async fn create(
        &self,
        request: CreateCampaign,
        actor: Actor,
    ) -> Result<CampaignSnapshot, ErrorBody> {
        let id = request.campaign_id.clone();
        let most = self.context.config.max_campaigns_per_user;
        if self
            .holdings(&actor.user_id, clock::now())
            .await?
            .campaigns_owned
            >= most
        {
            return Err(ErrorBody::new(
                ErrorCode::LimitExceeded,
                format!(
                    "you own {most} campaigns, as many as one person may; hand some over first"
                ),
            ));
        }
        self.ask(&id, |reply| Command::Create {
            request: request.clone(),
            actor: actor.clone(),
            reply,
        })
        .await
    }

    /// Apply `write` for `caller`; a `named` write lands once however often it is sent (see
    /// [`super::core::CampaignCore::apply_named`]).
    pub async fn write(
        &self,
        write: Write,
        caller: Option<Caller>,
        named: Option<Idempotency>,
    ) -> Result<WriteAck, ErrorBody> {
        let id = write.campaign_id().clone();
        self.exists(&id).await?;
        self.ask(&id, |reply| Command::Write {
            write: write.clone(),
            caller: caller.clone(),
            named: named.clone(),
            reply,
        })
        .await
    }

    pub async fn subscribe(
        &self,
        id: &CampaignId,
        connection: ConnectionId,
        viewer: Option<Caller>,
        since_version: Option<u64>,
    ) -> Result<Subscription, ErrorBody> {
        self.exists(id).await?;
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
        self.tell(id, Happening::Left(connection));
    }

    /// The connection, following `id`, started (`true`) or stopped publishing in its live room:
    /// presence shows the person as live.
    pub fn set_live(&self, id: &CampaignId, connection: ConnectionId, live: bool) {
        self.tell(id, Happening::Live(connection, live));
    }

    pub async fn backfill(
        &self,
        id: &CampaignId,
        since_version: u64,
        caller: Option<Caller>,
    ) -> Result<Backfill, ErrorBody> {
        self.ask(id, |reply| Command::Backfill {
            since_version,
            caller: caller.clone(),
            reply,
        })
        .await
    }

    pub async fn snapshot(
        &self,
        id: &CampaignId,
        caller: Option<Caller>,
    ) -> Result<CampaignSnapshot, ErrorBody> {
        self.exists(id).await?;
        self.ask(id, |reply| Command::Snapshot {
            caller: caller.clone(),
            reply,
        })
        .await
    }

    /// The caller's role in `id`, or `not_found` if they may not see it (as for a missing one).
    pub async fn role(&self, id: &CampaignId, caller: Option<Caller>) -> Result<Role, ErrorBody> {
        self.exists(id).await?;
        self.ask(id, |reply| Command::Role {
            caller: caller.clone(),
            reply,
        })
        .await
    }

    /// `person` joins `id` through its invite link `invite`; answers the role they have now.
    pub async fn join(
        &self,
        id: &CampaignId,
        person: Actor,
        invite: InviteId,
    ) -> Result<Role, ErrorBody> {
        self.exists(id).await?;
        self.ask(id, |reply| Command::Join {
            person: person.clone(),
            invite: invite.clone(),
            reply,
        })
        .await
    }

    /// An owner of `id` makes an invite link on the terms `asked`.
    pub async fn make_invite(
        &self,
        id: &CampaignId,
        caller: Caller,
        asked: CreateInvite,
    ) -> Result<Invite, ErrorBody> {
        // Who may make one is the campaign's question, asked before the quota's: a stranger
        // must learn nothing of a campaign they may not see.
        if self.role(id, Some(caller.clone())).await? != Role::Owner {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                "only the campaign's owners can invite people",
            ));
        }
        let most = self.context.config.max_invites_per_user;
        let user = &caller.actor.user_id;
        if self.holdings(user, clock::now()).await?.open_invites >= most {
            return Err(ErrorBody::new(
                ErrorCode::LimitExceeded,
                format!("you have {most} open invite links, as many as one person may; withdraw some first"),
            ));
        }
        self.ask(id, |reply| Command::MakeInvite {
            caller: Some(caller.clone()),
            asked: asked.clone(),
            reply,
        })
        .await
    }

    /// An owner of `id` withdraws its invite link `invite`.
    pub async fn withdraw_invite(
        &self,
        id: &CampaignId,
        caller: Caller,
        invite: InviteId,
    ) -> Result<(), ErrorBody> {
        self.exists(id).await?;
        self.ask(id, |reply| Command::WithdrawInvite {
            caller: Some(caller.clone()),
            id: invite.clone(),
            reply,
        })
        .await
    }

    /// The invite links of `id`, newest first, for its owners.
    pub async fn invites(&self, id: &CampaignId, caller: Caller) -> Result<Vec<Invite>, ErrorBody> {
        self.exists(id).await?;
        self.ask(id, |reply| Command::Invites {
            caller: Some(caller.clone()),
            reply,
        })
        .await
    }

    /// What the invite link `invite` of `id` offers whoever holds it, and the campaign's title.
    pub async fn invite_offer(
        &self,
        id: &CampaignId,
        invite: InviteId,
    ) -> Result<(Invite, String), ErrorBody> {
        self.exists(id).await?;
        self.ask(id, |reply| Command::InviteOffer {
            id: invite.clone(),
            reply,
        })
        .await
    }

    /// What `user` holds across every campaign, for the per-user quotas. Reads every stored
    /// record: asked only before making a campaign or an invite link.
    async fn holdings(&self, user: &UserId, now: Timestamp) -> Result<Holdings, ErrorBody> {
        let records = self.context.store.list().await.map_err(|err| {
            ErrorBody::new(
                ErrorCode::Unavailable,
                format!("cannot count your campaigns: {err}"),
            )
        })?;
        let mut holdings = Holdings::default();
        for record in records {
            if record.state.owner().user_id == *user {
                holdings.campaigns_owned += 1;
            }
            holdings.open_invites += record
                .invites
                .values()
                .filter(|invite| {
                    invite.made_by.user_id == *user && invite.status(now) == InviteStatus::Open
                })
                .count();
        }
        Ok(holdings)
    }

    /// The campaigns listed to the caller (see [`super::access::lists`]), ordered by id;
    /// `caller` says who asks of each campaign (a token's grants differ per campaign).
    pub async fn list(
        &self,
        caller: impl Fn(&CampaignId) -> Option<Caller>,
    ) -> Result<Vec<CampaignSummary>, ErrorBody> {
        let records = self.context.store.list().await.map_err(|err| {
            ErrorBody::new(
                ErrorCode::Unavailable,
                format!("cannot list campaigns: {err}"),
            )
        })?;
        Ok(records
            .into_iter()
            .map(CampaignRecord::migrated)
            .filter_map(|record| {
                let caller = caller(&record.state.id);
                let state = &record.state;
                if !access::lists(state, caller.as_ref()) {
                    return None;
                }
                let yours = access::is_member(state, caller.as_ref())
                    .then(|| access::role(state, caller.as_ref()));
                Some(CampaignSummary::of(state, yours))
            })
            .collect())
    }

    /// Route what arrives from the bus to the loaded campaigns it concerns.
    pub fn dispatch(&self, incoming: Incoming) {
        match incoming {
            Incoming::Note(note) => {
                if let Some(id) = note.campaign().cloned() {
                    self.tell(&id, Happening::Bus(note));
                }
            }
            // Sessions are not the campaigns' business (the server routes them to sessions).
            Incoming::SessionEnded(_) => {}
            Incoming::Resync => self.tell_all(Happening::Resync),
        }
    }

    /// Tell every loaded campaign the shared store went away or came back.
    pub fn set_writable(&self, writable: bool) {
        self.tell_all(Happening::Writable(writable));
    }

    /// Stop every writer after the commands already queued, and wait for them. Called once the
    /// gateway has drained; any later request starts a writer again.
    pub async fn shutdown(&self) {
        // Writers exit when their mailbox has no senders left.
        drop(self.context.registry.drain());
        self.context.tasks.close();
        self.context.tasks.wait().await;
    }

    /// Test hook: make the campaign's task panic inside its guarded section.
    #[cfg(feature = "fault-injection")]
    pub async fn inject_panic(&self, id: &CampaignId) -> Result<(), ErrorBody> {
        self.ask(id, |reply| Command::Panic { reply }).await
    }
}
