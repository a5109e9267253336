//! The deliverer: sends every endpoint the changes it asked for, in version order per campaign.
//!
//! - **The outbox is the campaign's history.** A change is durable before anyone hears of it
//!   (the store commits it first); each endpoint's record keeps, per campaign, the last version it
//!   was sent. After a crash the deliverer starts from there: a change that was due is sent after
//!   the restart. An endpoint can fall behind by at most what the campaign keeps
//!   (`--history-len`); beyond that its log says which change was skipped.
//! - **At least once, named.** The cursor moves only after the endpoint answered 2xx; a delivery
//!   cut by a crash is sent again with the same `webhook-id` (the change's event id), which is how
//!   a receiver keeps each change exactly once (as Standard Webhooks asks receivers to).
//! - **One endpoint never slows another, nor the campaign.** Each endpoint has its own task that
//!   reads committed history; a slow or failing endpoint waits alone (requests time out after
//!   `--webhook-timeout-secs`, retries back off, see `retry`). An endpoint's changes go one at a
//!   time: while one is retried, the endpoint's later changes wait (for an endpoint that follows
//!   every campaign, those of every campaign; campaigns take turns otherwise).
//! - **Once across instances.** In Redis mode an endpoint's task runs on the one instance that
//!   holds its lease, renewed before every attempt and lasting longer than two attempts' deadline;
//!   another instance takes over when it lapses. Retry state (attempts, first failure, next
//!   attempt) is kept in the endpoint's log, so a restart or a takeover continues the backoff.
//! - **Only while its maker may.** An endpoint sends a campaign's changes while the person who
//!   registered it owns the campaign (or, for every campaign, is an admin); otherwise it pauses
//!   and its log says why.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rally_app::model::{CampaignEvent, CampaignId, Role, Timestamp};
use rally_app::protocol::webhooks::{Delivery, DeliveryState};
use serde_json::json;
use tokio::task::JoinHandle;

use super::address::{self, AddressError};
use super::retry::{self, Next};
use super::signing;
use crate::campaigns::access;
use crate::clock;
use crate::shutdown::ShutdownSignal;
use crate::store::webhooks::{WebhookRecord, WebhookStore};
use crate::store::{Store, StoreError};

/// How often the deliverer looks for new endpoints.
const POLL_ENDPOINTS: Duration = Duration::from_secs(1);
/// How often an idle endpoint looks for new changes.
const POLL: Duration = Duration::from_millis(200);
/// How long a lease lasts at least unless renewed (each attempt renews it; see
/// [`Deliverer::lease_ms`]).
const LEASE_MIN_MS: u64 = 15_000;
/// Changes read from a campaign's history at once.
const BATCH: usize = 64;
/// A global endpoint's list of campaigns is read again at most this often.
const CAMPAIGNS_EVERY: Duration = Duration::from_secs(2);
/// The resolved addresses (and the client bound to them) are reused for this long.
const RESOLVE_EVERY: Duration = Duration::from_secs(60);

/// How webhooks are delivered (from the command line).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Hosts that may receive webhooks although their addresses are not public.
    pub allow_hosts: Arc<[String]>,
    /// A failing delivery is retried for this long after its first failure.
    pub retry_for: Duration,
    /// Each request's deadline.
    pub timeout: Duration,
    /// User ids of the server's admins (an endpoint for every campaign sends while its maker is
    /// one).
    pub admins: Arc<[String]>,
}

#[derive(Clone)]
pub struct Deliverer {
    store: Arc<dyn Store>,
    hooks: Arc<dyn WebhookStore>,
    settings: WebhookSettings,
    /// Names this instance in leases.
    holder: String,
}

/// Why one attempt failed.
struct Failure {
    status: Option<u16>,
    error: String,
}

/// What one pass over an endpoint did.
enum Pass {
    Worked,
    Idle,
    Gone,
}

/// An endpoint's task's memory between passes.
#[derive(Default)]
struct EndpointState {
    campaigns: Vec<CampaignId>,
    campaigns_read: Option<Instant>,
    /// Where the next pass starts in `campaigns` (they take turns).
    next: usize,
    client: Option<(String, Vec<SocketAddr>, Instant, reqwest::Client)>,
}

impl Deliverer {
    pub fn new(
        store: Arc<dyn Store>,
        hooks: Arc<dyn WebhookStore>,
        settings: WebhookSettings,
        instance: u32,
    ) -> Self {
        Deliverer {
            store,
            hooks,
            settings,
            holder: format!("{instance:08x}"),
        }
    }

    /// How long a claim of an endpoint lasts: longer than two request deadlines, so the lease
    /// cannot lapse while an attempt is under way (another instance would send it too).
    fn lease_ms(&self) -> u64 {
        let timeout = u64::try_from(self.settings.timeout.as_millis()).unwrap_or(u64::MAX);
        timeout
            .saturating_mul(2)
            .saturating_add(5_000)
            .max(LEASE_MIN_MS)
    }

    /// Deliver until shutdown: one task per endpoint, started as endpoints appear, stopped as
    /// they go. A delivery cut by the shutdown is sent again after the restart.
    pub async fn run(self, mut shutdown: ShutdownSignal) {
        let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
        let mut tick = tokio::time::interval(POLL_ENDPOINTS);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = tick.tick() => {}
            }
            let records = match self.hooks.webhooks().await {
                Ok(records) => records,
                Err(error) => {
                    tracing::debug!(%error, "cannot read webhook endpoints");
                    continue;
                }
            };
            running.retain(|id, task| {
                let keep = !task.is_finished() && records.iter().any(|r| &r.id == id);
                if !keep {
                    task.abort();
                }
                keep
            });
            for record in records {
                if !running.contains_key(&record.id) {
                    let (deliverer, id) = (self.clone(), record.id.clone());
                    let task = tokio::spawn(async move { deliverer.serve(id).await });
                    running.insert(record.id, task);
                }
            }
        }
        for task in running.values() {
            task.abort();
        }
    }

    /// One endpoint, while this instance holds its lease.
    async fn serve(self, id: String) {
        let mut state = EndpointState::default();
        loop {
            match self
                .hooks
                .claim_webhook(&id, &self.holder, self.lease_ms())
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => {
                    tracing::debug!(%error, "cannot claim a webhook endpoint");
                    return;
                }
            }
            match self.pass(&id, &mut state).await {
                Ok(Pass::Worked) => {}
                Ok(Pass::Idle) => tokio::time::sleep(POLL).await,
                Ok(Pass::Gone) => return,
                Err(error) => {
                    tracing::debug!(%error, "webhook delivery pass failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Send what is due next: a redelivery someone asked for, else the next changes of one
    /// campaign.
    async fn pass(&self, id: &str, state: &mut EndpointState) -> Result<Pass, StoreError> {
        let Some(record) = self.hooks.webhook(id).await? else {
            return Ok(Pass::Gone);
        };
        if let Some((campaign, version)) = record.redeliver.first().cloned() {
            let delivery = match self.change(&campaign, version).await? {
                // A redelivery is one attempt: the person who asked sees how it went.
                Some(event) => {
                    self.attempt(&record, &event, (1, None, false), state)
                        .await
                        .0
                }
                None => skipped(&campaign, version, "this change is no longer kept"),
            };
            self.update(id, |r| {
                r.redeliver
                    .retain(|asked| *asked != (campaign.clone(), version));
                r.note(delivery.clone());
            })
            .await?;
            return Ok(Pass::Worked);
        }
        let campaigns = self.campaigns(&record, state).await?;
        let count = campaigns.len();
        for turn in 0..count {
            let campaign = campaigns[(state.next + turn) % count].clone();
            let from = record.sent_up_to.get(&campaign).copied().unwrap_or(0);
            let events = match self.store.events_since(&campaign, from, BATCH).await? {
                Some(events) => events,
                None => {
                    // The history no longer reaches back: say which changes were missed, and go
                    // on from the oldest one kept.
                    let oldest = self
                        .store
                        .oldest_event(&campaign)
                        .await?
                        .unwrap_or(from + 1);
                    let note = skipped(
                        &campaign,
                        from + 1,
                        &format!(
                            "versions {} to {} were no longer kept",
                            from + 1,
                            oldest.saturating_sub(1)
                        ),
                    );
                    self.update(id, |r| {
                        advance(r, &campaign, oldest.saturating_sub(1));
                        r.note(note.clone());
                    })
                    .await?;
                    return Ok(Pass::Worked);
                }
            };
            if events.is_empty() {
                continue;
            }
            state.next = (state.next + turn + 1) % count;
            if !self.maker_may_send(&record, &campaign).await? {
                if !self.paused(&record, &campaign, from + 1) {
                    let note = paused(&campaign, from + 1);
                    self.update(id, |r| r.note(note.clone())).await?;
                }
                continue;
            }
            for event in events {
                if !record.events.is_empty() && !record.events.contains(event.change.kind()) {
                    self.update(id, |r| advance(r, &campaign, event.version))
                        .await?;
                    continue;
                }
                let delivery = self.deliver(&record, &event, state).await?;
                let Some(delivery) = delivery else {
                    return Ok(Pass::Gone);
                };
                let done = self
                    .update(id, |r| {
                        advance(r, &campaign, event.version);
                        r.note(delivery.clone());
                    })
                    .await?;
                if done.is_none() {
                    return Ok(Pass::Gone);
                }
            }
            return Ok(Pass::Worked);
        }
        Ok(Pass::Idle)
    }

    /// The campaigns the endpoint follows: its one, or (read at most every [`CAMPAIGNS_EVERY`])
    /// every campaign.
    async fn campaigns(
        &self,
        record: &WebhookRecord,
        state: &mut EndpointState,
    ) -> Result<Vec<CampaignId>, StoreError> {
        if let Some(campaign) = &record.campaign {
            return Ok(vec![campaign.clone()]);
        }
        if state
            .campaigns_read
            .is_none_or(|at| at.elapsed() >= CAMPAIGNS_EVERY)
        {
            state.campaigns = self
                .store
                .list()
                .await?
                .into_iter()
                .map(|r| r.state.id)
                .collect();
            state.campaigns_read = Some(Instant::now());
        }
        Ok(state.campaigns.clone())
    }

    /// The change that made `version` of `campaign`, if it is still kept.
    async fn change(
        &self,
        campaign: &CampaignId,
        version: u64,
    ) -> Result<Option<CampaignEvent>, StoreError> {
        let events = self
            .store
            .events_since(campaign, version.saturating_sub(1), 1)
            .await?;
        Ok(events
            .and_then(|events| events.into_iter().next())
            .filter(|event| event.version == version))
    }

    /// Whether the endpoint's maker may still be sent `campaign`'s changes: they own it, or
    /// they are an admin.
    async fn maker_may_send(
        &self,
        record: &WebhookRecord,
        campaign: &CampaignId,
    ) -> Result<bool, StoreError> {
        let maker = &record.created_by.user_id;
        if self
            .settings
            .admins
            .iter()
            .any(|admin| admin == maker.as_str())
        {
            return Ok(true);
        }
        if record.campaign.is_none() {
            return Ok(false);
        }
        let Some(loaded) = self.store.load(campaign, 0).await? else {
            return Ok(false);
        };
        let state = loaded.record.migrated().state;
        Ok(access::stored_role(&state, Some(maker)) == Some(Role::Owner))
    }

    /// Whether the log already says the endpoint is paused at this change.
    fn paused(&self, record: &WebhookRecord, campaign: &CampaignId, version: u64) -> bool {
        record.log.back().is_some_and(|d| {
            d.state == DeliveryState::Paused && d.campaign_id == *campaign && d.version == version
        })
    }

    /// Send `event` until the endpoint takes it or retrying ends; the delivery as it ended
    /// (None: the lease was lost or the endpoint removed meanwhile). A retry already under way
    /// (before a restart, or on another instance) goes on where it was.
    async fn deliver(
        &self,
        record: &WebhookRecord,
        event: &CampaignEvent,
        state: &mut EndpointState,
    ) -> Result<Option<Delivery>, StoreError> {
        let resumed = record
            .log
            .iter()
            .find(|d| {
                d.campaign_id == event.campaign_id
                    && d.version == event.version
                    && d.state == DeliveryState::Retrying
            })
            .cloned();
        let mut attempts = resumed.as_ref().map_or(0, |d| d.attempts);
        let mut first_failed = resumed.as_ref().and_then(|d| d.first_failed_at);
        if let Some(next) = resumed.and_then(|d| d.next_attempt_at) {
            if !self.wait_until(&record.id, next).await? {
                return Ok(None);
            }
        }
        loop {
            if !self
                .hooks
                .claim_webhook(&record.id, &self.holder, self.lease_ms())
                .await?
            {
                return Ok(None);
            }
            attempts += 1;
            let (delivery, failed_at) = self
                .attempt(record, event, (attempts, first_failed, true), state)
                .await;
            first_failed = first_failed.or(failed_at);
            let Some(next) = delivery.next_attempt_at else {
                if delivery.state == DeliveryState::Failed {
                    tracing::warn!(webhook = %record.id, campaign = %event.campaign_id, version = event.version, "webhook delivery given up");
                }
                return Ok(Some(delivery));
            };
            // Waiting: the log says when the next attempt comes; the lease is kept meanwhile.
            if self
                .update(&record.id, |r| r.note(delivery.clone()))
                .await?
                .is_none()
            {
                return Ok(None);
            }
            if !self.wait_until(&record.id, next).await? {
                return Ok(None);
            }
        }
    }

    /// Sleep until `at`, keeping the endpoint's lease; false once it is lost.
    async fn wait_until(&self, id: &str, at: Timestamp) -> Result<bool, StoreError> {
        loop {
            let now = clock::now();
            if now >= at {
                return Ok(true);
            }
            let wait = Duration::from_nanos(at.nanos_since(now)).min(Duration::from_secs(5));
            tokio::time::sleep(wait).await;
            if !self
                .hooks
                .claim_webhook(id, &self.holder, self.lease_ms())
                .await?
            {
                return Ok(false);
            }
        }
    }

    /// One attempt (the how-many-th, when the first failed, whether a failure is retried); the
    /// delivery as it stands after it, and when it first failed (if it did).
    async fn attempt(
        &self,
        record: &WebhookRecord,
        event: &CampaignEvent,
        (attempts, first_failed, retries): (u32, Option<Timestamp>, bool),
        state: &mut EndpointState,
    ) -> (Delivery, Option<Timestamp>) {
        let started = clock::now();
        let outcome = self.send(record, event, state).await;
        // Waits count from the end of the attempt (an attempt may take its whole deadline).
        let now = clock::now();
        let label = if outcome.is_ok() {
            "delivered"
        } else {
            "failed"
        };
        metrics::counter!("rally_webhook_attempts_total", "outcome" => label).increment(1);
        let mut delivery = Delivery {
            campaign_id: event.campaign_id.clone(),
            version: event.version,
            event_id: Some(event.event_id),
            state: DeliveryState::Delivered,
            attempts,
            last_status: None,
            last_error: None,
            last_attempt_at: started,
            next_attempt_at: None,
            first_failed_at: None,
        };
        match outcome {
            Ok(status) => {
                delivery.last_status = Some(status);
                (delivery, None)
            }
            Err(failure) => {
                let first = first_failed.unwrap_or(now);
                delivery.first_failed_at = Some(first);
                delivery.last_status = failure.status;
                delivery.last_error = Some(failure.error);
                let jitter = f64::from(clock::random_bytes::<1>()[0]) / 256.0;
                match retry::after_failure(attempts, first, now, self.settings.retry_for, jitter) {
                    Next::At(_) if !retries => delivery.state = DeliveryState::Failed,
                    Next::At(at) => {
                        delivery.state = DeliveryState::Retrying;
                        delivery.next_attempt_at = Some(at);
                    }
                    Next::GiveUp => delivery.state = DeliveryState::Failed,
                }
                (delivery, Some(first))
            }
        }
    }

    /// POST the change, signed; the endpoint's status when it is 2xx.
    async fn send(
        &self,
        record: &WebhookRecord,
        event: &CampaignEvent,
        state: &mut EndpointState,
    ) -> Result<u16, Failure> {
        let failed = |error: String| Failure {
            status: None,
            error,
        };
        let target = address::parse(&record.url).map_err(|e| failed(e.to_string()))?;
        let client = self
            .client(&target, state)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let body = serde_json::to_vec(&json!({
            "type": "campaign:state:v1:success",
            "timestamp": event.changed_at,
            "data": event,
        }))
        .expect("events serialize");
        let id = event.event_id.to_string();
        let timestamp = clock::now().unix_nanos() / 1_000_000_000;
        let signature = signing::sign(&record.secret, &id, timestamp, &body);
        let answer = client
            .post(target.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
            Ok(response) => Err(Failure {
                status: Some(response.status().as_u16()),
                error: format!("answered {}", response.status()),
            }),
            Err(error) if error.is_timeout() => Err(failed(format!(
                "no answer within {} s",
                self.settings.timeout.as_secs()
            ))),
            Err(error) if error.is_connect() => Err(failed("cannot connect".into())),
            Err(_) => Err(failed("the request failed".into())),
        }
    }

    /// A client that connects only to the checked addresses of `target` (re-resolved every
    /// [`RESOLVE_EVERY`]).
    async fn client(
        &self,
        target: &address::Target,
        state: &mut EndpointState,
    ) -> Result<reqwest::Client, AddressError> {
        if let Some((host, _, at, client)) = &state.client {
            if *host == target.host && at.elapsed() < RESOLVE_EVERY {
                return Ok(client.clone());
            }
        }
        let addrs = address::resolve(target, &self.settings.allow_hosts).await?;
        let client = reqwest::Client::builder()
            .timeout(self.settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect wherever it resolves the name: only the checked addresses.
            .no_proxy()
            .user_agent("Rally-Webhooks")
            .resolve_to_addrs(&target.host, &addrs)
            .build()
            .map_err(|_| AddressError::Unresolvable(target.host.clone()))?;
        state.client = Some((target.host.clone(), addrs, Instant::now(), client.clone()));
        Ok(client)
    }

    /// Change the endpoint's record by compare-and-set (read, change, write; again if someone
    /// else wrote between); the record written, or None once the endpoint is gone.
    async fn update(
        &self,
        id: &str,
        change: impl FnMut(&mut WebhookRecord),
    ) -> Result<Option<WebhookRecord>, StoreError> {
        update(&*self.hooks, id, change).await
    }
}

/// Change an endpoint's record by compare-and-set; the record written, or None once it is gone.
pub(super) async fn update(
    hooks: &dyn WebhookStore,
    id: &str,
    mut change: impl FnMut(&mut WebhookRecord),
) -> Result<Option<WebhookRecord>, StoreError> {
    for _ in 0..16 {
        let Some(mut record) = hooks.webhook(id).await? else {
            return Ok(None);
        };
        change(&mut record);
        record.revision += 1;
        if hooks.replace_webhook(record.clone()).await? {
            return Ok(Some(record));
        }
    }
    Err(StoreError::Unavailable(
        "a webhook endpoint's record keeps changing".into(),
    ))
}

/// Move a campaign's cursor forward (never back).
fn advance(record: &mut WebhookRecord, campaign: &CampaignId, version: u64) {
    let at = record.sent_up_to.entry(campaign.clone()).or_insert(0);
    *at = (*at).max(version);
}

fn skipped(campaign: &CampaignId, version: u64, why: &str) -> Delivery {
    Delivery {
        campaign_id: campaign.clone(),
        version,
        event_id: None,
        state: DeliveryState::Skipped,
        attempts: 0,
        last_status: None,
        last_error: Some(why.to_owned()),
        last_attempt_at: clock::now(),
        next_attempt_at: None,
        first_failed_at: None,
    }
}

fn paused(campaign: &CampaignId, version: u64) -> Delivery {
    Delivery {
        state: DeliveryState::Paused,
        ..skipped(
            campaign,
            version,
            "the person who added this address no longer owns the campaign",
        )
    }
}
