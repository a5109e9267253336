//! A campaign's live state and the changes that move it from one version to the next.
//!
//! [`CampaignState::apply_event`] is the one way state changes, on the server (after validation)
//! and in the browser (for every broadcast event), so both hold byte-identical state at each
//! version.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::limits::*;
use super::{
    CampaignId, EditId, EventId, IdempotencyKey, InviteId, InviteTerms, LengthMismatch, Member,
    Restored, Role, TextEdit, Timestamp, UserId,
};

/// Where a campaign is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    #[default]
    Draft,
    Active,
    Paused,
    Ended,
}

impl CampaignStatus {
    pub const ALL: [CampaignStatus; 4] = [
        CampaignStatus::Draft,
        CampaignStatus::Active,
        CampaignStatus::Paused,
        CampaignStatus::Ended,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Draft => "draft",
            CampaignStatus::Active => "active",
            CampaignStatus::Paused => "paused",
            CampaignStatus::Ended => "ended",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for CampaignStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may see a campaign. Owners choose; a new campaign gets the server's default
/// (`--default-visibility`, `private` unless configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Only its members (the owner, people with a role, holders of a token granting one). To
    /// everyone else it answers exactly as a campaign that does not exist.
    Private,
    /// Anyone with its address may watch; it is listed only to its members.
    Unlisted,
    /// Anyone may watch, and it is listed to everyone.
    Public,
}

impl Visibility {
    pub const ALL: [Visibility; 3] = [
        Visibility::Private,
        Visibility::Unlisted,
        Visibility::Public,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Unlisted => "unlisted",
            Visibility::Public => "public",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == text)
    }

    /// Campaigns stored before visibility existed were readable by anyone: they stay public.
    fn stored_before_visibility() -> Self {
        Visibility::Public
    }
}

impl fmt::Display for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Validated short names: features (`live_chat`, `q-and-a`) and config sections (`ui_content`).
macro_rules! short_name {
    ($(#[$doc:meta])* $name:ident, $max:expr, $what:literal, $allowed:literal, $valid:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(text: &str) -> Result<Self, String> {
                let valid: fn(&str) -> bool = $valid;
                if !text.is_empty() && text.len() <= $max && valid(text) {
                    Ok($name(text.to_owned()))
                } else {
                    Err(format!(
                        concat!("invalid ", $what, " {:?}: expected 1-{} characters of ", $allowed),
                        text, $max
                    ))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

short_name!(
    /// A feature flag's name: lowercase letters, digits, `_` and `-`, starting with a letter or digit.
    Feature,
    FEATURE_NAME_MAX,
    "feature name",
    "a-z, 0-9, '_' and '-', starting with a letter or digit",
    |s| s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
);

short_name!(
    /// A config section's name, like `ui_content`: lowercase letters, digits and `_`, starting with a letter.
    SectionName,
    SECTION_NAME_MAX,
    "section name",
    "a-z, 0-9 and '_', starting with a letter",
    |s| s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
);

/// Who did something: a stable user id and the display name they had at the time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct Actor {
    pub user_id: UserId,
    pub display_name: String,
}

/// Everything a viewer sees of a campaign at one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct CampaignState {
    pub id: CampaignId,
    pub title: String,
    pub description: String,
    pub status: CampaignStatus,
    /// Who may see it; only owners change it.
    #[serde(default = "Visibility::stored_before_visibility")]
    pub visibility: Visibility,
    pub features: BTreeSet<Feature>,
    pub config: BTreeMap<SectionName, Map<String, Value>>,
    /// Everyone with a role besides the owner, at most
    /// [`MEMBERS_MAX`](super::limits::MEMBERS_MAX).
    #[serde(default)]
    pub members: BTreeMap<UserId, Member>,
    /// Who owns it once it was handed over (absent: its creator still does). See
    /// [`CampaignState::owner`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_to: Option<Actor>,
    /// +1 for every applied change; 1 after creation.
    pub version: u64,
    pub created_at: Timestamp,
    /// Who created it (its owner until they hand it over).
    pub created_by: Actor,
    pub updated_at: Timestamp,
    pub updated_by: Actor,
}

/// The scalar fields an update can set. At least one must be present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FieldUpdates {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CampaignStatus>,
    /// Only owners may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
}

impl FieldUpdates {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many fields this update sets (a metric and a sanity bound).
    pub fn len(&self) -> usize {
        usize::from(self.title.is_some())
            + usize::from(self.description.is_some())
            + usize::from(self.status.is_some())
            + usize::from(self.visibility.is_some())
    }
}

/// The fields people type into together, with [`TextEdit`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum TextField {
    Title,
    Description,
}

impl TextField {
    pub const ALL: [TextField; 2] = [TextField::Title, TextField::Description];

    pub const fn as_str(self) -> &'static str {
        match self {
            TextField::Title => "title",
            TextField::Description => "description",
        }
    }
}

impl fmt::Display for TextField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FieldUpdates {
    /// Whether this update sets `field` (replacing its whole text).
    pub fn sets(&self, field: TextField) -> bool {
        match field {
            TextField::Title => self.title.is_some(),
            TextField::Description => self.description.is_some(),
        }
    }
}

/// How a config change combines with the section's current values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConfigMode {
    /// JSON Merge Patch (RFC 7396): objects merge recursively, `null` deletes a key, anything else
    /// replaces.
    #[default]
    Merge,
    /// The section becomes exactly `values`.
    Replace,
    /// The section goes (`values` must be empty).
    Remove,
}

/// One applied change, as broadcast: enough to go from version N-1 to N without a refetch.
// Deserialize is in change_read.rs (one pass, no buffering); these doc lines are the schema's.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// The campaign came into being (version 1) with this state.
    Created { state: Box<CampaignState> },
    /// Scalar fields set to new values.
    Fields { updates: FieldUpdates },
    /// Features added to and removed from the set (each list sorted, disjoint, and effective:
    /// no feature in `added` was present before, every one in `removed` was).
    Features {
        added: Vec<Feature>,
        removed: Vec<Feature>,
    },
    /// A config section changed; `values` is what the client sent, applied with `mode`.
    Config {
        section: SectionName,
        mode: ConfigMode,
        values: Map<String, Value>,
    },
    /// Someone typed: `edit` applies to the field's text at the previous version. `edit_id` is
    /// the one the client chose, so it knows its own edit when it comes back.
    Text {
        field: TextField,
        edit: TextEdit,
        edit_id: EditId,
    },
    /// `member` now has `role` (joined, or changed by an owner); `None`: removed. `invite`: the
    /// invite link they joined through.
    Member {
        member: Actor,
        role: Option<Role>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invite: Option<InviteId>,
    },
    /// The owner handed the campaign over to `to`, a member, and stays an owner among the
    /// members (an owner may change that, as any member's role).
    Handover { from: Actor, to: Actor },
    /// An owner made an invite link with these terms (the link itself is never broadcast).
    Invite { terms: InviteTerms },
    /// An owner withdrew an invite link: nobody can join through it any more.
    InviteWithdrawn { id: InviteId },
    /// Someone put content back as it was at `to_version` (see [`super::history`]): each field in
    /// `restored` gets the value it had then. The log keeps what came between.
    Revert { to_version: u64, restored: Restored },
}

impl Change {
    /// The names of the fields this change touches, for conflict detection: `title`,
    /// `description`, `status`, `visibility`, `features`, `config.<section>`,
    /// `members.<user id>`.
    pub fn touched_fields(&self) -> Vec<String> {
        match self {
            Change::Created { .. } => vec![],
            Change::Fields { updates } => {
                let mut fields = Vec::new();
                if updates.title.is_some() {
                    fields.push("title".to_owned());
                }
                if updates.description.is_some() {
                    fields.push("description".to_owned());
                }
                if updates.status.is_some() {
                    fields.push("status".to_owned());
                }
                if updates.visibility.is_some() {
                    fields.push("visibility".to_owned());
                }
                fields
            }
            Change::Features { .. } => vec!["features".to_owned()],
            Change::Config { section, .. } => vec![format!("config.{section}")],
            Change::Text { field, .. } => vec![field.as_str().to_owned()],
            Change::Member { member, .. } => vec![format!("members.{}", member.user_id)],
            Change::Handover { from, to } => vec![
                "owner".to_owned(),
                format!("members.{}", from.user_id),
                format!("members.{}", to.user_id),
            ],
            // Invite links are not fields: nothing a write sends can clash with them.
            Change::Invite { .. } | Change::InviteWithdrawn { .. } => vec![],
            Change::Revert { restored, .. } => restored.touched_fields(),
        }
    }

    /// The whole new text of `field`, when this change replaces it (rather than editing it).
    pub fn replaced_text(&self, field: TextField) -> Option<&str> {
        match self {
            Change::Fields { updates } => match field {
                TextField::Title => updates.title.as_deref(),
                TextField::Description => updates.description.as_deref(),
            },
            Change::Revert { restored, .. } => restored.text(field),
            _ => None,
        }
    }

    /// Whether it changes who may see the campaign (subscribers must be checked again): its
    /// visibility or its members.
    pub fn changes_access(&self) -> bool {
        matches!(self, Change::Fields { updates } if updates.visibility.is_some())
            || matches!(self, Change::Member { .. } | Change::Handover { .. })
    }

    /// Short name for metrics and logs (never the content).
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Created { .. } => "created",
            Change::Fields { .. } => "fields",
            Change::Features { .. } => "features",
            Change::Config { .. } => "config",
            Change::Text { .. } => "text",
            Change::Member { .. } => "member",
            Change::Handover { .. } => "handover",
            Change::Invite { .. } => "invite",
            Change::InviteWithdrawn { .. } => "invite_withdrawn",
            Change::Revert { .. } => "revert",
        }
    }
}

/// One entry of a campaign's history: `campaign:state:v1:success` carries exactly this payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct CampaignEvent {
    pub campaign_id: CampaignId,
    pub version: u64,
    pub event_id: EventId,
    pub changed_by: Actor,
    pub changed_at: Timestamp,
    pub change: Change,
    /// The name its sender gave the write, if any (see [`Idempotency`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,
}

/// A write its sender named (`Idempotency-Key`): the name, and a digest of the write, so that
/// the same name sent again with the same write lands once, and with another write is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct Idempotency {
    pub key: IdempotencyKey,
    /// 16 hex digits of the SHA-256 of the write's JSON, made by the server.
    pub digest: String,
}

/// Why an event could not be applied to a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("event for campaign {event} applied to campaign {state}")]
    WrongCampaign { state: String, event: String },
    #[error("event version {event} does not follow state version {state}")]
    Gap { state: u64, event: u64 },
    #[error("a creation event can only start a campaign")]
    UnexpectedCreate,
    #[error("a {field} edit does not fit the text: {mismatch}")]
    TextMismatch {
        field: TextField,
        mismatch: LengthMismatch,
    },
}

impl CampaignState {
    /// Move to the event's version. Fails, changing nothing, unless the event is for this campaign
    /// and exactly the next version: a client that sees [`ApplyError::Gap`] must resubscribe.
    pub fn apply_event(&mut self, event: &CampaignEvent) -> Result<(), ApplyError> {
        if event.campaign_id != self.id {
            return Err(ApplyError::WrongCampaign {
                state: self.id.to_string(),
                event: event.campaign_id.to_string(),
            });
        }
        if event.version != self.version + 1 {
            return Err(ApplyError::Gap {
                state: self.version,
                event: event.version,
            });
        }
        self.apply_change(&event.change)?;
        self.version = event.version;
        self.updated_at = event.changed_at;
        self.updated_by = event.changed_by.clone();
        Ok(())
    }

    /// Make `change` to the fields it touches; the version and the last-change stamps stay. The
    /// browser shows its unconfirmed writes with this (see [`super::write`]).
    pub fn apply_change(&mut self, change: &Change) -> Result<(), ApplyError> {
        match change {
            Change::Created { .. } => return Err(ApplyError::UnexpectedCreate),
            Change::Fields { updates } => {
                if let Some(title) = &updates.title {
                    self.title.clone_from(title);
                }
                if let Some(description) = &updates.description {
                    self.description.clone_from(description);
                }
                if let Some(status) = updates.status {
                    self.status = status;
                }
                if let Some(visibility) = updates.visibility {
                    self.visibility = visibility;
                }
            }
            Change::Features { added, removed } => {
                for feature in removed {
                    self.features.remove(feature);
                }
                self.features.extend(added.iter().cloned());
            }
            Change::Config {
                section,
                mode,
                values,
            } => match mode {
                ConfigMode::Remove => drop(self.config.remove(section)),
                ConfigMode::Replace => drop(self.config.insert(section.clone(), values.clone())),
                ConfigMode::Merge => {
                    merge_patch(self.config.entry(section.clone()).or_default(), values)
                }
            },
            Change::Member { member, role, .. } => match role {
                Some(role) => {
                    self.members.insert(
                        member.user_id.clone(),
                        Member {
                            display_name: member.display_name.clone(),
                            role: *role,
                        },
                    );
                }
                None => {
                    self.members.remove(&member.user_id);
                }
            },
            Change::Handover { from, to } => {
                self.members.remove(&to.user_id);
                self.members.insert(
                    from.user_id.clone(),
                    Member {
                        display_name: from.display_name.clone(),
                        role: Role::Owner,
                    },
                );
                self.handed_to = Some(to.clone());
            }
            // The campaign keeps its invite links beside the state, for its owners only.
            Change::Invite { .. } | Change::InviteWithdrawn { .. } => {}
            Change::Revert { restored, .. } => restored.apply_to(self),
            Change::Text { field, edit, .. } => {
                let text = self.text_mut(*field);
                *text = edit
                    .apply(text)
                    .map_err(|mismatch| ApplyError::TextMismatch {
                        field: *field,
                        mismatch,
                    })?;
            }
        }
        Ok(())
    }

    /// Who owns the campaign: whoever it was last handed to, else its creator. Their role
    /// cannot be changed or removed; they can hand the campaign over.
    pub fn owner(&self) -> &Actor {
        self.handed_to.as_ref().unwrap_or(&self.created_by)
    }

    pub fn text(&self, field: TextField) -> &str {
        match field {
            TextField::Title => &self.title,
            TextField::Description => &self.description,
        }
    }

    fn text_mut(&mut self, field: TextField) -> &mut String {
        match field {
            TextField::Title => &mut self.title,
            TextField::Description => &mut self.description,
        }
    }
}

/// RFC 7396 JSON Merge Patch of `patch` into the object `target`.
pub fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(existing) = slot {
                    merge_patch(existing, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// The smallest merge patch that turns `base` into `target` (when `target` holds no `null`s,
/// which a merge patch cannot store): only what changed, `null` for what was removed. A config
/// editor sends this rather than the whole section, so two people changing different settings
/// of one section do not clash.
pub fn merge_patch_between(
    base: &Map<String, Value>,
    target: &Map<String, Value>,
) -> Map<String, Value> {
    let mut patch = Map::new();
    for key in base.keys() {
        if !target.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    for (key, value) in target {
        match (base.get(key), value) {
            (Some(before), after) if before == after => {}
            (Some(Value::Object(before)), Value::Object(after)) => {
                patch.insert(
                    key.clone(),
                    Value::Object(merge_patch_between(before, after)),
                );
            }
            _ => {
                patch.insert(key.clone(), value.clone());
            }
        }
    }
    patch
}

/// Nesting depth of a JSON value: scalars 0, `{}`/`[]` 1, `{"a": {}}` 2.
pub fn json_depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // The RFC's own example.
        let mut target = obj(
            json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"}, "tags": ["example", "sample"], "content": "x"}),
        );
        merge_patch(
            &mut target,
            &obj(
                json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": null}, "tags": ["example"]}),
            ),
        );
        assert_eq!(
            Value::Object(target),
            json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"], "content": "x", "phoneNumber": "+01-123-456-7890"})
        );
    }

    #[test]
    fn the_patch_between_two_sections_changes_only_what_differs() {
        let base = obj(json!({"hero": {"title": "A", "image": "x.png"}, "footer": "f", "old": 1}));
        let target =
            obj(json!({"hero": {"title": "B", "image": "x.png"}, "footer": "f", "new": [1]}));
        let patch = merge_patch_between(&base, &target);
        assert_eq!(
            Value::Object(patch.clone()),
            json!({"hero": {"title": "B"}, "old": null, "new": [1]})
        );
        let mut applied = base.clone();
        merge_patch(&mut applied, &patch);
        assert_eq!(applied, target);
        // Emptying an object removes its keys; an empty object where there was none creates it.
        let emptied = obj(json!({"hero": {}, "footer": "f", "old": 1, "box": {}}));
        let mut applied = base.clone();
        merge_patch(&mut applied, &merge_patch_between(&base, &emptied));
        assert_eq!(applied, emptied);
    }

    #[test]
    fn short_names_validate() {
        assert!(Feature::parse("live_chat").is_ok());
        assert!(Feature::parse("q-and-a").is_ok());
        assert!(Feature::parse("2fa").is_ok());
        assert!(Feature::parse("-x").is_err());
        assert!(Feature::parse("Chat").is_err());
        assert!(Feature::parse(&"a".repeat(33)).is_err());
        assert!(SectionName::parse("ui_content").is_ok());
        assert!(SectionName::parse("ui-content").is_err());
        assert!(SectionName::parse("_x").is_err());
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!({})), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": {}}]})), 4);
    }
}
