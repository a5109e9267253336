//! Payloads of the `campaign` service: what clients request and what the server answers and pushes.
//! docs/protocol.md shows each as JSON.

use serde::{Deserialize, Serialize};

use super::{ErrorBody, EventState, EventType};
use crate::model::{
    required, CampaignId, CampaignState, CampaignStatus, EventId, Presence, Role, UserId,
};
pub use crate::model::{
    ConfigChange, CreateCampaign, FeatureChange, FeatureOp, TextChange, UpdateFields,
};

pub const CREATE: EventType = EventType::new("campaign", "create", 1, EventState::Requested);
pub const SUBSCRIBE: EventType = EventType::new("campaign", "subscribe", 1, EventState::Requested);
pub const UNSUBSCRIBE: EventType =
    EventType::new("campaign", "unsubscribe", 1, EventState::Requested);
pub const SNAPSHOT: EventType = EventType::new("campaign", "snapshot", 1, EventState::Requested);
pub const UPDATE: EventType = EventType::new("campaign", "update", 1, EventState::Requested);
pub const FEATURE: EventType = EventType::new("campaign", "feature", 1, EventState::Requested);
pub const CONFIG: EventType = EventType::new("campaign", "config", 1, EventState::Requested);
pub const TEXT: EventType = EventType::new("campaign", "text", 1, EventState::Requested);
pub const MEMBER: EventType = EventType::new("campaign", "member", 1, EventState::Requested);
pub const HANDOVER: EventType = EventType::new("campaign", "handover", 1, EventState::Requested);
/// Pushed for every applied change; payload [`crate::model::CampaignEvent`].
pub const STATE_EVENT: EventType = EventType::new("campaign", "state", 1, EventState::Success);
/// Pushed when someone joins or leaves; payload [`PresenceChanged`].
pub const PRESENCE_EVENT: EventType =
    EventType::new("campaign", "presence", 1, EventState::Success);
/// Pushed when a subscriber fell so far behind that history no longer covers what it missed;
/// payload [`Resync`]. The client replaces its state with the snapshot.
pub const RESYNC: EventType = EventType::new("campaign", "resync", 1, EventState::Success);
/// Pushed when the campaign becomes read-only (its store is unreachable) or writable again;
/// payload [`Writable`].
pub const WRITABLE: EventType = EventType::new("campaign", "writable", 1, EventState::Success);
/// Pushed to everyone following a campaign when a write was refused as a conflict with a change
/// someone else had made first; payload [`Overruled`]. The page of the person whose change was
/// kept tells them (the refused person already had the `conflict` answer).
pub const OVERRULED: EventType = EventType::new("campaign", "overruled", 1, EventState::Completed);
/// Pushed when the server ends a subscription the client did not cancel; payload
/// [`SubscriptionEnded`]. The client resubscribes with `since_version` to continue.
pub const SUBSCRIPTION_ENDED: EventType =
    EventType::new("campaign", "subscription", 1, EventState::Completed);

/// `campaign:subscribe:v1:requested`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    pub campaign_id: CampaignId,
    /// The last version the client holds; omit for a fresh snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_version: Option<u64>,
}

/// `campaign:unsubscribe:v1:requested` and `campaign:snapshot:v1:requested`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CampaignRef {
    pub campaign_id: CampaignId,
}

/// Success payload of create and snapshot: the whole state, and the requester's role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct CampaignSnapshot {
    pub campaign: CampaignState,
    pub role: Role,
}

/// Success payload of update, feature and config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct WriteAck {
    pub campaign_id: CampaignId,
    /// The campaign's version after this write.
    pub version: u64,
    /// The event the write produced; absent when it changed nothing (`unchanged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<EventId>,
    /// True when the campaign already had the requested values: no new version, no event.
    pub unchanged: bool,
}

impl WriteAck {
    /// The write made `event`.
    pub fn changed(event: &crate::model::CampaignEvent) -> Self {
        WriteAck {
            campaign_id: event.campaign_id.clone(),
            version: event.version,
            event_id: Some(event.event_id),
            unchanged: false,
        }
    }

    /// The campaign, at `version`, already had what the write asked for.
    pub fn unchanged(campaign_id: CampaignId, version: u64) -> Self {
        WriteAck {
            campaign_id,
            version,
            event_id: None,
            unchanged: true,
        }
    }
}

/// Why a subscription starts from a snapshot instead of replayed events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SnapshotReason {
    /// No `since_version` was given.
    Initial,
    /// `since_version` is older than the retained history; events in between are gone.
    HistoryTruncated,
    /// `since_version` is newer than the campaign (the client holds state the server does not):
    /// replace local state with the snapshot.
    Ahead,
}

/// How the client gets from what it has to live.
// Deserialize is below, read in one pass as a Change is (model/change_read.rs).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resume {
    /// Replace local state with `campaign`; live events follow from `campaign.version + 1`.
    Snapshot {
        reason: SnapshotReason,
        campaign: Box<CampaignState>,
    },
    /// Events `from_version..=to_version` follow this reply as `campaign:state:v1:success`
    /// frames, in order, then live events. `from_version > to_version` means none were missed.
    Events { from_version: u64, to_version: u64 },
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ResumeKind {
    Snapshot,
    Events,
}

/// Both kinds' fields (their names differ).
#[derive(Deserialize)]
#[serde(expecting = "a resume: an object with a \"kind\"")]
struct AnyResume {
    kind: ResumeKind,
    reason: Option<SnapshotReason>,
    campaign: Option<Box<CampaignState>>,
    from_version: Option<u64>,
    to_version: Option<u64>,
}

impl<'de> Deserialize<'de> for Resume {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let r = AnyResume::deserialize(deserializer)?;
        Ok(match r.kind {
            ResumeKind::Snapshot => Resume::Snapshot {
                reason: required(r.reason, "reason")?,
                campaign: required(r.campaign, "campaign")?,
            },
            ResumeKind::Events => Resume::Events {
                from_version: required(r.from_version, "from_version")?,
                to_version: required(r.to_version, "to_version")?,
            },
        })
    }
}

/// `campaign:subscribe:v1:success`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct SubscribeReply {
    pub campaign_id: CampaignId,
    pub role: Role,
    pub resume: Resume,
    pub presence: Presence,
    /// False while the campaign is read-only (its store is unreachable); see [`Writable`].
    #[serde(default = "yes")]
    pub writable: bool,
}

fn yes() -> bool {
    true
}

/// `campaign:writable:v1:success`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct Writable {
    pub campaign_id: CampaignId,
    pub writable: bool,
    /// Why it is read-only, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `campaign:overruled:v1:completed`: `refused`'s write was not applied because `kept` had
/// changed the same thing first (at `version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct Overruled {
    pub campaign_id: CampaignId,
    /// What both changed: `title`, `description`, `status`, `visibility`, `features`,
    /// `config.<section>`, `members.<user id>` or `owner`.
    pub field: String,
    /// Whose change stands.
    pub kept: crate::model::Actor,
    /// The version their change made.
    pub version: u64,
    /// Whose change was refused.
    pub refused: crate::model::Actor,
}

/// Who joined or left, in a presence event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct PresencePerson {
    pub user_id: Option<UserId>,
    pub display_name: String,
}

/// `campaign:presence:v1:success`. Changes are coalesced: one push covers everyone who joined
/// or left within a fraction of a second (the lists name at most 20 each; `presence` is always
/// complete).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct PresenceChanged {
    pub presence: Presence,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joined: Vec<PresencePerson>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<PresencePerson>,
}

/// `campaign:resync:v1:success`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct Resync {
    pub campaign_id: CampaignId,
    pub reason: SnapshotReason,
    pub campaign: CampaignState,
    pub role: Role,
}

/// `campaign:subscription:v1:completed`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct SubscriptionEnded {
    pub campaign_id: CampaignId,
    pub reason: ErrorBody,
}

/// One row of `GET /api/campaigns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct CampaignSummary {
    pub id: CampaignId,
    pub title: String,
    pub status: CampaignStatus,
    pub version: u64,
    pub updated_at: crate::model::Timestamp,
    pub owner: String,
    pub visibility: crate::model::Visibility,
    /// Your role, when you belong to the campaign (its owner, a member, or granted a role by
    /// your token); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub your_role: Option<crate::model::Role>,
}

impl CampaignSummary {
    /// The row for `state`, as seen by someone with `your_role` in it (None: not a member).
    pub fn of(state: &CampaignState, your_role: Option<crate::model::Role>) -> Self {
        CampaignSummary {
            id: state.id.clone(),
            title: state.title.clone(),
            status: state.status,
            version: state.version,
            updated_at: state.updated_at,
            owner: state.owner().display_name.clone(),
            visibility: state.visibility,
            your_role,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_resume_reads_in_any_key_order_and_names_what_is_missing() {
        let events = Resume::Events {
            from_version: 5,
            to_version: 7,
        };
        for text in [
            r#"{"kind":"events","from_version":5,"to_version":7}"#,
            r#"{"to_version":7,"from_version":5,"kind":"events"}"#,
        ] {
            assert_eq!(
                serde_json::from_str::<Resume>(text).unwrap(),
                events,
                "{text}"
            );
        }
        let wire = serde_json::to_value(&events).unwrap();
        assert_eq!(serde_json::from_value::<Resume>(wire).unwrap(), events);
        let campaign = json!({
            "id": "spring", "title": "Spring", "description": "", "status": "draft",
            "visibility": "private", "features": [], "config": {}, "version": 3,
            "created_at": "2026-11-30T00:00:00.000000000Z",
            "created_by": {"user_id": "ada", "display_name": "Ada"},
            "updated_at": "2026-11-30T00:00:01.000000000Z",
            "updated_by": {"user_id": "ada", "display_name": "Ada"},
        });
        let snapshot = json!({"campaign": campaign, "kind": "snapshot", "reason": "ahead"});
        let read: Resume = serde_json::from_str(&snapshot.to_string()).unwrap();
        assert!(
            matches!(&read, Resume::Snapshot { reason: SnapshotReason::Ahead, campaign }
            if campaign.version == 3 && campaign.title == "Spring")
        );
        let mut written = serde_json::to_value(&read).unwrap();
        written["campaign"]
            .as_object_mut()
            .unwrap()
            .remove("members");
        assert_eq!(written, snapshot);
        let cases = [
            (
                json!({"kind": "events", "from_version": 5}),
                "missing field `to_version`",
            ),
            (
                json!({"kind": "snapshot", "reason": "initial"}),
                "missing field `campaign`",
            ),
            (json!({"kind": "later"}), "unknown variant `later`"),
        ];
        for (wire, expected) in cases {
            let error = serde_json::from_str::<Resume>(&wire.to_string()).unwrap_err();
            assert!(error.to_string().contains(expected), "{wire}: {error}");
        }
    }
}
