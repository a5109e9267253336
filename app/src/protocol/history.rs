//! Payloads of a campaign's history: pages of its log, the campaign at a past version, diffs
//! between versions, and reverts. docs/protocol.md ("History") shows each as JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ErrorBody, ErrorCode, EventState, EventType};
use crate::model::{Actor, CampaignId, Change, EventId, Timestamp, UserId};
pub use crate::model::{ContentField, RevertCampaign};

/// `campaign:history:v1:requested`: a page of the log, newest first; payload [`HistoryQuery`],
/// answered with [`HistoryPage`].
pub const HISTORY: EventType = EventType::new("campaign", "history", 1, EventState::Requested);
/// `campaign:version:v1:requested`: the campaign as it was at a version; payload
/// [`VersionQuery`], answered with a [`crate::model::CampaignState`].
pub const VERSION: EventType = EventType::new("campaign", "version", 1, EventState::Requested);
/// `campaign:revert:v1:requested`: payload [`RevertCampaign`], answered like any write.
pub const REVERT: EventType = EventType::new("campaign", "revert", 1, EventState::Requested);

/// Entries in a page when `limit` is absent.
pub const HISTORY_PAGE_DEFAULT: u32 = 50;
/// Most entries in a page: a larger `limit` is clamped to this.
pub const HISTORY_PAGE_MAX: u32 = 200;
/// A page stops growing once its entries take this many bytes of JSON (it always holds at least
/// one): a page of large changes has fewer entries, and a `next_before` to go on from.
pub const HISTORY_PAGE_MAX_BYTES: usize = 1 << 20;
/// Most log entries one filtered page looks through: a page may come back with fewer entries
/// than asked for (even none) and a `next_before` to go on from.
pub const HISTORY_SCAN_MAX: u32 = 5_000;
/// Longest `field` filter accepted, in bytes.
pub const HISTORY_FIELD_FILTER_MAX: usize = 80;

/// `campaign:history:v1:requested`; over HTTP the same fields are query parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub campaign_id: CampaignId,
    /// Only entries older than this version (absent: from the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// Entries wanted, 1 to [`HISTORY_PAGE_MAX`] (larger is clamped); default
    /// [`HISTORY_PAGE_DEFAULT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only entries that touched this field, or a field under it: `title`, `config` (every
    /// section), `config.ui_content`, `members`, `visibility`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Only entries made by this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<UserId>,
}

impl HistoryQuery {
    /// The page size to use: the asked one, clamped to 1..=[`HISTORY_PAGE_MAX`].
    pub fn page_size(&self) -> usize {
        self.limit
            .unwrap_or(HISTORY_PAGE_DEFAULT)
            .clamp(1, HISTORY_PAGE_MAX) as usize
    }

    /// Refuse a malformed field filter.
    pub fn check(&self) -> Result<(), ErrorBody> {
        if let Some(field) = &self.field {
            let valid = !field.is_empty()
                && field.len() <= HISTORY_FIELD_FILTER_MAX
                && field
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !valid {
                return Err(ErrorBody::new(
                    ErrorCode::Invalid,
                    format!("invalid field filter {field:?}: expected 1-{HISTORY_FIELD_FILTER_MAX} characters of A-Z, a-z, 0-9, '_', '-' and '.', like title or config.ui_content"),
                ));
            }
        }
        Ok(())
    }

    /// Whether an entry that touched `fields` by `by` belongs in the page.
    pub fn matches(&self, fields: &[String], by: &UserId) -> bool {
        let field_matches = self.field.as_deref().is_none_or(|wanted| {
            fields.iter().any(|field| {
                field == wanted
                    || field
                        .strip_prefix(wanted)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
        });
        field_matches && self.actor.as_ref().is_none_or(|actor| actor == by)
    }
}

/// One entry of the log: a committed change, who made it, when, and the fields it touched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct HistoryEntry {
    pub version: u64,
    pub event_id: EventId,
    pub changed_by: Actor,
    pub changed_at: Timestamp,
    /// `title`, `description`, `status`, `visibility`, `features`, `config.<section>`,
    /// `members.<user id>`, `owner` (none for invite links).
    pub fields: Vec<String>,
    /// In plain words: "set title to “Spring”", "restored the title as of version 12".
    pub summary: String,
    pub change: Change,
}

/// `campaign:history:v1:success`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct HistoryPage {
    pub campaign_id: CampaignId,
    /// Newest first.
    pub entries: Vec<HistoryEntry>,
    /// Ask again with `before` set to this for older entries; absent: the log has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
}

/// `campaign:version:v1:requested`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    pub campaign_id: CampaignId,
    pub version: u64,
}

/// How one field differs between two versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct FieldDiff {
    /// `title`, `description`, `status`, `visibility`, `features` or `config.<section>`.
    pub field: String,
    /// The value at the older version; absent: the field (a config section) did not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The value at the newer version; absent: the section was gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// For the title and description: the words kept, removed and added, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Vec<TextPiece>>,
}

/// A run of words in a text diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct TextPiece {
    pub kind: TextPieceKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum TextPieceKind {
    Kept,
    Removed,
    Added,
}

/// `GET /api/campaigns/{id}/diff?from=&to=`: what changed from one version to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct VersionDiff {
    pub campaign_id: CampaignId,
    pub from: u64,
    pub to: u64,
    /// Only the fields that differ, in the order title, description, status, visibility,
    /// features, config sections by name.
    pub fields: Vec<FieldDiff>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_filters_match_the_field_and_what_is_under_it() {
        let query = |field: &str| HistoryQuery {
            campaign_id: CampaignId::parse("c").unwrap(),
            before: None,
            limit: None,
            field: Some(field.to_owned()),
            actor: None,
        };
        let ada = UserId::parse("ada").unwrap();
        let touched = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let table = [
            ("title", &["title"][..], true),
            ("title", &["description"][..], false),
            ("config", &["config.ui_content"][..], true),
            ("config.ui", &["config.ui_content"][..], false),
            ("config.ui_content", &["config.ui_content"][..], true),
            ("members", &["members.bob"][..], true),
            ("member", &["members.bob"][..], false),
        ];
        for (filter, fields, expected) in table {
            assert_eq!(
                query(filter).matches(&touched(fields), &ada),
                expected,
                "{filter} vs {fields:?}"
            );
        }
        assert!(query("bad filter").check().is_err());
        assert!(query("config.ui_content").check().is_ok());
    }
}
