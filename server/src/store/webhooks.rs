//! Where webhook endpoints are kept: one record per endpoint, holding what it is (address,
//! secret, scope), how far it has been sent (per campaign, the last version delivered or given
//! up on — the outbox is the campaign's own event history, read from there), its latest
//! deliveries and the changes someone asked to send again.
//!
//! Records change by compare-and-set on `revision`, so the API (asking for a redelivery) and the
//! deliverer (moving the cursor) never overwrite each other. In Redis mode one instance at a time
//! holds an endpoint's lease and delivers for it, so each change goes out once across instances.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rally_app::model::{Actor, CampaignId, Timestamp};
use rally_app::protocol::webhooks::{Delivery, WebhookSummary};
use serde::{Deserialize, Serialize};

use super::StoreFuture;

/// Most endpoints one server keeps.
pub const MAX_WEBHOOKS: usize = 1_000;
/// Deliveries an endpoint's log keeps (newest).
pub const DELIVERY_LOG_LEN: usize = 50;
/// Redeliveries that may wait at once per endpoint.
pub const MAX_PENDING_REDELIVERIES: usize = 20;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRecord {
    /// Random, 48 bits, hex.
    pub id: String,
    pub url: String,
    /// `whsec_…` (kept: every delivery is signed with it).
    pub secret: String,
    /// None: every campaign.
    pub campaign: Option<CampaignId>,
    /// Kinds of change to send; empty: all.
    pub events: BTreeSet<String>,
    pub created_by: Actor,
    pub created_at: Timestamp,
    /// Per campaign, the last version sent (or given up on). A campaign without an entry starts
    /// at its creation (every campaign made after the endpoint was; the others got an entry at
    /// their version then).
    pub sent_up_to: BTreeMap<CampaignId, u64>,
    /// Latest deliveries, oldest first, at most [`DELIVERY_LOG_LEN`].
    pub log: VecDeque<Delivery>,
    /// Changes to send again, oldest first.
    pub redeliver: Vec<(CampaignId, u64)>,
    /// Bumped on every change of the record.
    pub revision: u64,
}

impl WebhookRecord {
    /// The endpoint as lists show it (its latest deliveries first).
    pub fn summary(&self) -> WebhookSummary {
        WebhookSummary {
            id: self.id.clone(),
            url: self.url.clone(),
            campaign: self.campaign.clone(),
            events: self.events.iter().cloned().collect(),
            created_by: self.created_by.clone(),
            created_at: self.created_at,
            deliveries: self.log.iter().rev().cloned().collect(),
        }
    }

    /// Note `delivery` in the log as its newest entry, replacing the one for the same change
    /// (dropping the oldest past [`DELIVERY_LOG_LEN`]).
    pub fn note(&mut self, delivery: Delivery) {
        self.log
            .retain(|d| !(d.campaign_id == delivery.campaign_id && d.version == delivery.version));
        self.log.push_back(delivery);
        while self.log.len() > DELIVERY_LOG_LEN {
            self.log.pop_front();
        }
    }
}

/// Everything but the secret (records end up in test output and debug logs).
impl std::fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("campaign", &self.campaign)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

pub trait WebhookStore: Send + Sync + 'static {
    /// Keep a new endpoint (its `revision` is 0).
    fn insert_webhook(&self, record: WebhookRecord) -> StoreFuture<'_, ()>;

    /// The endpoint's record, or None once it was deleted.
    fn webhook(&self, id: &str) -> StoreFuture<'_, Option<WebhookRecord>>;

    /// Every endpoint, in no particular order.
    fn webhooks(&self) -> StoreFuture<'_, Vec<WebhookRecord>>;

    /// Replace the endpoint's record if it is still at `record.revision - 1`, and say whether it
    /// was (false: changed or deleted meanwhile — read it again).
    fn replace_webhook(&self, record: WebhookRecord) -> StoreFuture<'_, bool>;

    /// Delete an endpoint; its record if it existed.
    fn delete_webhook(&self, id: &str) -> StoreFuture<'_, Option<WebhookRecord>>;

    /// Hold the endpoint's delivery lease for `holder` for `for_ms` more milliseconds (taking it
    /// if free or expired, extending it if already `holder`'s); whether `holder` holds it now.
    /// A single-instance store has nobody to share with and always says yes.
    fn claim_webhook(&self, id: &str, holder: &str, for_ms: u64) -> StoreFuture<'_, bool>;
}
