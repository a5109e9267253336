//! Registering, listing and removing endpoints, and asking for a change to be sent again — what
//! the API does with webhooks (who may is the API's question).

use std::collections::BTreeMap;
use std::sync::Arc;

use rally_app::model::{Actor, CampaignId, Timestamp};
use rally_app::protocol::webhooks::{CreateWebhook, NewWebhook};
use rally_app::protocol::ErrorBody;

use super::address;
use super::deliverer::{update, WebhookSettings};
use super::signing;
use crate::auth;
use crate::clock;
use crate::store::webhooks::{WebhookRecord, WebhookStore, MAX_PENDING_REDELIVERIES, MAX_WEBHOOKS};
use crate::store::{Store, StoreError};

/// Why an endpoint could not be registered, or a redelivery asked for.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The request itself (its address, its kinds): 400.
    #[error("{}", .0.message)]
    Invalid(ErrorBody),
    #[error("this server keeps at most {MAX_WEBHOOKS} webhook endpoints")]
    TooMany,
    #[error("you have {MAX_WEBHOOKS_PER_MAKER} webhook endpoints, the most one person may add; remove some first")]
    TooManyOfYours,
    #[error("at most {MAX_PENDING_REDELIVERIES} redeliveries may wait at once")]
    TooManyWaiting,
    #[error("no such endpoint")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Most endpoints one person (not an admin) may register.
pub const MAX_WEBHOOKS_PER_MAKER: usize = 20;

/// Webhook endpoints, for the API. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    store: Arc<dyn Store>,
    hooks: Arc<dyn WebhookStore>,
    settings: WebhookSettings,
}

impl Webhooks {
    pub fn new(
        store: Arc<dyn Store>,
        hooks: Arc<dyn WebhookStore>,
        settings: WebhookSettings,
    ) -> Self {
        Webhooks {
            store,
            hooks,
            settings,
        }
    }

    /// Register an endpoint; it and its secret (shown this once). It is sent the changes made
    /// from now on: each campaign it follows starts at its current version.
    pub async fn register(
        &self,
        asked: CreateWebhook,
        created_by: Actor,
        now: Timestamp,
    ) -> Result<NewWebhook, EndpointError> {
        asked.check().map_err(EndpointError::Invalid)?;
        let invalid = |message: String| {
            EndpointError::Invalid(ErrorBody::new(
                rally_app::protocol::ErrorCode::Invalid,
                message,
            ))
        };
        let target = address::parse(&asked.url).map_err(|e| invalid(format!("url: {e}")))?;
        address::resolve(&target, &self.settings.allow_hosts)
            .await
            .map_err(|e| invalid(format!("url: {e}")))?;
        let existing = self.hooks.webhooks().await?;
        if existing.len() >= MAX_WEBHOOKS {
            return Err(EndpointError::TooMany);
        }
        let admin = self
            .settings
            .admins
            .iter()
            .any(|id| id == created_by.user_id.as_str());
        let theirs = existing
            .iter()
            .filter(|hook| hook.created_by.user_id == created_by.user_id)
            .count();
        if !admin && theirs >= MAX_WEBHOOKS_PER_MAKER {
            return Err(EndpointError::TooManyOfYours);
        }
        let mut sent_up_to = BTreeMap::new();
        match &asked.campaign {
            Some(campaign) => {
                let version = self.store.version(campaign).await?.unwrap_or(0);
                sent_up_to.insert(campaign.clone(), version);
            }
            None => {
                for record in self.store.list().await? {
                    sent_up_to.insert(record.state.id.clone(), record.state.version);
                }
            }
        }
        let secret = signing::new_secret();
        let record = WebhookRecord {
            id: auth::hex(&clock::random_bytes::<6>()),
            url: asked.url,
            secret: secret.clone(),
            campaign: asked.campaign,
            events: asked.events.into_iter().collect(),
            created_by,
            created_at: now,
            sent_up_to,
            log: Default::default(),
            redeliver: Vec::new(),
            revision: 0,
        };
        self.hooks.insert_webhook(record.clone()).await?;
        tracing::info!(webhook = %record.id, "webhook endpoint registered");
        Ok(NewWebhook {
            webhook: record.summary(),
            secret,
        })
    }

    pub async fn all(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        self.hooks.webhooks().await
    }

    pub async fn get(&self, id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        self.hooks.webhook(id).await
    }

    /// Remove an endpoint: nothing more is sent to it (an attempt under way may finish).
    pub async fn remove(&self, id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        let removed = self.hooks.delete_webhook(id).await?;
        if removed.is_some() {
            tracing::info!(webhook = %id, "webhook endpoint removed");
        }
        Ok(removed)
    }

    /// Ask for `version` of `campaign` to be sent again (once, soon, with its original
    /// `webhook-id`).
    pub async fn redeliver(
        &self,
        id: &str,
        campaign: CampaignId,
        version: u64,
    ) -> Result<(), EndpointError> {
        let record = self
            .hooks
            .webhook(id)
            .await?
            .ok_or(EndpointError::NotFound)?;
        if record.campaign.as_ref().is_some_and(|c| *c != campaign) {
            return Err(EndpointError::Invalid(ErrorBody::new(
                rally_app::protocol::ErrorCode::Invalid,
                format!(
                    "this endpoint follows {}, not {campaign}",
                    record.campaign.unwrap()
                ),
            )));
        }
        let sent = record.sent_up_to.get(&campaign).copied().unwrap_or(0);
        if version == 0 || version > sent {
            return Err(EndpointError::Invalid(ErrorBody::new(
                rally_app::protocol::ErrorCode::Invalid,
                format!("version {version} of {campaign} has not been sent to this endpoint (it is at {sent})"),
            )));
        }
        let asked = (campaign, version);
        let mut full = false;
        update(&*self.hooks, id, |r| {
            full = r.redeliver.len() >= MAX_PENDING_REDELIVERIES;
            if !full && !r.redeliver.contains(&asked) {
                r.redeliver.push(asked.clone());
            }
        })
        .await?
        .ok_or(EndpointError::NotFound)?;
        if full {
            return Err(EndpointError::TooManyWaiting);
        }
        Ok(())
    }
}
