//! Payloads of `/api/webhooks`: endpoints that receive every change of a campaign (or of every
//! campaign) as a signed HTTP POST, and the log of what was sent to them.

use serde::{Deserialize, Serialize};

use crate::model::{Actor, CampaignId, EventId, Timestamp};
use crate::protocol::{ErrorBody, ErrorCode};

/// Longest endpoint URL, in bytes.
pub const MAX_WEBHOOK_URL_BYTES: usize = 2048;
/// The kinds of change an endpoint may ask for (a change's `kind`; all of them when none named).
pub const CHANGE_KINDS: [&str; 10] = [
    "created",
    "fields",
    "features",
    "config",
    "text",
    "member",
    "handover",
    "invite",
    "invite_withdrawn",
    "revert",
];

/// `POST /api/webhooks` body: where to send, for which campaign (none: every campaign, admins
/// only), and which kinds of change (none: all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `https://…` (or `http://…`), at most 2048 bytes.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<CampaignId>,
    /// Kinds of change to send (see [`CHANGE_KINDS`]); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

impl CreateWebhook {
    /// Why the request cannot be an endpoint, if it cannot (the address's reachability is the
    /// server's to check).
    pub fn check(&self) -> Result<(), ErrorBody> {
        let invalid = |message: String| ErrorBody::new(ErrorCode::Invalid, message);
        if self.url.len() > MAX_WEBHOOK_URL_BYTES {
            return Err(invalid(format!(
                "url is over {MAX_WEBHOOK_URL_BYTES} bytes"
            )));
        }
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return Err(invalid("url must start with https:// or http://".into()));
        }
        if let Some(unknown) = self
            .events
            .iter()
            .find(|kind| !CHANGE_KINDS.contains(&kind.as_str()))
        {
            return Err(invalid(format!(
                "unknown event {unknown:?}: expected one of {}",
                CHANGE_KINDS.join(", ")
            )));
        }
        Ok(())
    }
}

/// Where one delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// The endpoint answered 2xx.
    Delivered,
    /// It failed; it will be tried again at `next_attempt_at`.
    Retrying,
    /// It kept failing for longer than the server retries; later changes went on.
    Failed,
    /// The change was no longer kept when it was due (the endpoint was behind by more than the
    /// campaign's kept history).
    Skipped,
    /// Nothing is sent: the person who registered the endpoint no longer owns the campaign (or,
    /// for every campaign, is no longer an admin). It goes on if they are again.
    Paused,
}

/// One change sent (or being sent) to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct Delivery {
    pub campaign_id: CampaignId,
    pub version: u64,
    /// The `webhook-id` it is sent with (the change's event id); the same on every attempt.
    pub event_id: Option<EventId>,
    pub state: DeliveryState,
    pub attempts: u32,
    /// The endpoint's HTTP status on the last attempt, if it answered.
    pub last_status: Option<u16>,
    /// Why the last attempt failed, in a few words.
    pub last_error: Option<String>,
    pub last_attempt_at: Timestamp,
    pub next_attempt_at: Option<Timestamp>,
    /// When its first attempt failed (retries end `--webhook-retry-secs` after it).
    pub first_failed_at: Option<Timestamp>,
}

/// An endpoint as `GET /api/webhooks` lists it: everything but its secret, with its latest
/// deliveries (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct WebhookSummary {
    /// Removes it: `DELETE /api/webhooks/{id}`.
    pub id: String,
    pub url: String,
    /// None: every campaign.
    pub campaign: Option<CampaignId>,
    /// Kinds of change sent (empty: all).
    pub events: Vec<String>,
    pub created_by: Actor,
    pub created_at: Timestamp,
    pub deliveries: Vec<Delivery>,
}

/// `POST /api/webhooks` answer: the endpoint and its signing secret, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct NewWebhook {
    pub webhook: WebhookSummary,
    /// `whsec_…`: verify each delivery's `webhook-signature` with it (Standard Webhooks).
    pub secret: String,
}

/// `POST /api/webhooks/{id}/redeliver` body: send this change again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Redeliver {
    pub campaign_id: CampaignId,
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_names_a_web_address_and_known_kinds() {
        let ask = |url: &str, events: &[&str]| CreateWebhook {
            url: url.into(),
            campaign: None,
            events: events.iter().map(|e| e.to_string()).collect(),
        };
        // (url, events) → accepted
        let cases: [(&str, &[&str], bool); 7] = [
            ("https://hooks.example/rally", &[], true),
            ("http://127.0.0.1:9000/in", &["config", "fields"], true),
            ("ftp://example", &[], false),
            ("hooks.example", &[], false),
            ("https://hooks.example", &["config", "everything"], false),
            ("", &[], false),
            ("https://x.example/a", &["invite_withdrawn"], true),
        ];
        for (url, events, accepted) in cases {
            assert_eq!(
                ask(url, events).check().is_ok(),
                accepted,
                "{url} {events:?}"
            );
        }
        let long = format!("https://x.example/{}", "a".repeat(MAX_WEBHOOK_URL_BYTES));
        assert!(ask(&long, &[]).check().is_err());
    }
}
