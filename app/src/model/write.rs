//! Writes: the requests that change a campaign, their checks, and the change each makes.
//!
//! One rule, two callers. The server's campaign core turns an accepted [`Write`] into an event
//! with [`Write::effect`] and applies it with [`CampaignState::apply_event`]; the browser lays its
//! not yet confirmed writes over the confirmed state with the same [`Write::effect`] and
//! [`CampaignState::apply_change`]. What a person sees while waiting is therefore exactly what the
//! server will make of the write, and a write the server would refuse as invalid or too large
//! shows as no change at all.
//!
//! [`Write::effect`] checks only what the write itself decides (its shape and every size limit,
//! including the limits of the result: a merge patch may be small and still make a section too
//! large). Who may write and whether `base_version` is stale are the server's questions: the
//! core answers them, after these checks.
//!
//! Writes based on an older version meet changes that landed since. Two rules decide what happens,
//! both here so the server and the browser agree on them:
//! - [`Write::clashes_with`]: whether a landed change decided something the write would silently
//!   undo — the same scalar field, the same feature name, overlapping config paths. Only a clash
//!   is a `conflict`; adding `polls` while someone added `qa` is not.
//! - [`TextChange::rebase`]: text edits never clash with other text edits; they are transformed
//!   over them ([`TextEdit::transform`]), so both people keep what they typed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::limits::*;
use super::{
    json_depth, merge_patch, Actor, CampaignId, CampaignState, CampaignStatus, Change, ConfigMode,
    EditId, Feature, FieldUpdates, Revert, Role, SectionName, TextEdit, TextField, UserId,
    Visibility,
};
use crate::protocol::{ErrorBody, ErrorCode};

/// `campaign:create:v1:requested`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateCampaign {
    pub campaign_id: CampaignId,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub status: CampaignStatus,
    #[serde(default)]
    pub features: Vec<Feature>,
    #[serde(default)]
    pub config: BTreeMap<SectionName, Map<String, Value>>,
    /// Absent: the server's default (`--default-visibility`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
}

impl CreateCampaign {
    /// Every limit a new campaign must respect.
    pub fn check(&self) -> Result<(), ErrorBody> {
        check_title(&self.title)?;
        check_description(&self.description)?;
        let features: BTreeSet<&Feature> = self.features.iter().collect();
        check_feature_count(features.len())?;
        check_section_count(self.config.len())?;
        for (section, values) in &self.config {
            check_section(section, values)?;
        }
        Ok(())
    }
}

/// `campaign:update:v1:requested`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateFields {
    pub campaign_id: CampaignId,
    pub updates: FieldUpdates,
    /// The version the client's edit was based on. If any field this update touches changed
    /// after it, the update is refused with `conflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum FeatureOp {
    Add,
    Remove,
    Set,
}

/// `campaign:feature:v1:requested`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FeatureChange {
    pub campaign_id: CampaignId,
    pub op: FeatureOp,
    pub features: Vec<Feature>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<u64>,
}

/// `campaign:config:v1:requested`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ConfigChange {
    pub campaign_id: CampaignId,
    pub section: SectionName,
    pub values: Map<String, Value>,
    #[serde(default)]
    pub mode: ConfigMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<u64>,
}

/// `campaign:text:v1:requested`: part of the title or description, as someone types it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TextChange {
    pub campaign_id: CampaignId,
    pub field: TextField,
    /// Made on the field's text at `base_version`.
    pub edit: TextEdit,
    pub base_version: u64,
    pub edit_id: EditId,
}

impl TextChange {
    /// The edit moved over `landed`, the changes made since `base_version` (oldest first), so it
    /// applies to the text they produced. Refused with `conflict` if one of them replaced the
    /// whole field (`campaign:update`): there is nothing to merge into.
    pub fn rebase<'a>(
        &self,
        landed: impl IntoIterator<Item = &'a Change>,
    ) -> Result<TextEdit, ErrorBody> {
        let mut edit = self.edit.clone();
        for change in landed {
            match change {
                Change::Text {
                    field: other,
                    edit: theirs,
                    ..
                } if *other == self.field => {
                    edit = edit.transform(theirs).map_err(|e| self.misfit(e))?.0;
                }
                replaced if replaced.replaced_text(self.field).is_some() => {
                    return Err(ErrorBody::new(
                        ErrorCode::Conflict,
                        format!(
                            "the {} was replaced after base_version {}; this edit cannot be merged into it",
                            self.field, self.base_version
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(edit)
    }

    fn misfit(&self, error: super::LengthMismatch) -> ErrorBody {
        invalid(format!(
            "the edit does not fit the {} at base_version {}: {error}",
            self.field, self.base_version
        ))
    }
}

/// `campaign:member:v1:requested`: an owner changes a member's role, or removes them (`role`
/// absent). People become members by accepting an invite, not through this request; the
/// campaign's owner's role never changes (they hand the campaign over instead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MemberChange {
    pub campaign_id: CampaignId,
    pub user_id: UserId,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<u64>,
}

/// `campaign:handover:v1:requested`: the owner hands the campaign over to a member, who becomes
/// its owner; the previous owner stays an owner among the members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Handover {
    pub campaign_id: CampaignId,
    /// The member who takes it over.
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<u64>,
}

/// A request that changes an existing campaign.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Update(UpdateFields),
    Feature(FeatureChange),
    Config(ConfigChange),
    Text(TextChange),
    Member(MemberChange),
    Handover(Handover),
    /// `campaign:revert`: never sent as such by the browser; the server makes it from a
    /// [`super::RevertCampaign`] and the state it reads from the log.
    Revert(Revert),
}

impl Write {
    pub fn campaign_id(&self) -> &CampaignId {
        match self {
            Write::Update(w) => &w.campaign_id,
            Write::Feature(w) => &w.campaign_id,
            Write::Config(w) => &w.campaign_id,
            Write::Text(w) => &w.campaign_id,
            Write::Member(w) => &w.campaign_id,
            Write::Handover(w) => &w.campaign_id,
            Write::Revert(w) => &w.request.campaign_id,
        }
    }

    pub fn base_version(&self) -> Option<u64> {
        match self {
            Write::Update(w) => w.base_version,
            Write::Feature(w) => w.base_version,
            Write::Config(w) => w.base_version,
            Write::Text(w) => Some(w.base_version),
            Write::Member(w) => w.base_version,
            Write::Handover(w) => w.base_version,
            Write::Revert(w) => w.request.base_version,
        }
    }

    /// The same write based on `base_version` (a text edit always has one; `None` keeps it).
    pub fn based_on(mut self, base_version: Option<u64>) -> Self {
        match &mut self {
            Write::Update(w) => w.base_version = base_version,
            Write::Feature(w) => w.base_version = base_version,
            Write::Config(w) => w.base_version = base_version,
            Write::Text(w) => w.base_version = base_version.unwrap_or(w.base_version),
            Write::Member(w) => w.base_version = base_version,
            Write::Handover(w) => w.base_version = base_version,
            Write::Revert(w) => w.request.base_version = base_version,
        }
        self
    }

    /// Fields the write sets (for the update-field-count metric).
    pub fn field_count(&self) -> usize {
        match self {
            Write::Update(w) => w.updates.len(),
            Write::Feature(_)
            | Write::Config(_)
            | Write::Text(_)
            | Write::Member(_)
            | Write::Handover(_)
            | Write::Revert(_) => 1,
        }
    }

    /// Whether `landed`, a change made after this write's base version, decided something this
    /// write would silently undo: the same scalar field; the same feature name (or any feature,
    /// for `set`); overlapping paths of one config section (or any, for `replace` and `remove`); a text field
    /// replaced under a text edit. Everything else merges.
    pub fn clashes_with(&self, landed: &Change) -> bool {
        match (self, landed) {
            (_, Change::Created { .. }) => true,
            (Write::Update(w), Change::Fields { updates }) => {
                let u = &w.updates;
                (u.title.is_some() && updates.title.is_some())
                    || (u.description.is_some() && updates.description.is_some())
                    || (u.status.is_some() && updates.status.is_some())
                    || (u.visibility.is_some() && updates.visibility.is_some())
            }
            (Write::Update(w), Change::Text { field, .. }) => w.updates.sets(*field),
            (Write::Update(w), Change::Revert { restored, .. }) => {
                let u = &w.updates;
                (u.title.is_some() && restored.title.is_some())
                    || (u.description.is_some() && restored.description.is_some())
                    || (u.status.is_some() && restored.status.is_some())
            }
            (Write::Text(w), landed) => landed.replaced_text(w.field).is_some(),
            // A revert puts back whole fields: anything that changed one of them since is
            // something the person did not see when they chose to revert.
            (Write::Revert(w), landed) => landed.touched_fields().iter().any(|f| w.covers(f)),
            (Write::Feature(_), Change::Revert { restored, .. }) => restored.features.is_some(),
            (Write::Config(w), Change::Revert { restored, .. }) => {
                restored.config.contains_key(&w.section)
            }
            (Write::Member(w), Change::Member { member, .. }) => member.user_id == w.user_id,
            // Who owns it, or the roles of the people involved, moved under the request.
            (Write::Member(w), Change::Handover { from, to }) => {
                w.user_id == from.user_id || w.user_id == to.user_id
            }
            (Write::Handover(_), Change::Handover { .. }) => true,
            (Write::Handover(w), Change::Member { member, .. }) => member.user_id == w.user_id,
            (Write::Feature(w), Change::Features { added, removed }) => match w.op {
                FeatureOp::Set => true,
                FeatureOp::Add | FeatureOp::Remove => added
                    .iter()
                    .chain(removed)
                    .any(|feature| w.features.contains(feature)),
            },
            (
                Write::Config(w),
                Change::Config {
                    section,
                    mode,
                    values,
                },
            ) => {
                *section == w.section
                    && (w.mode != ConfigMode::Merge
                        || *mode != ConfigMode::Merge
                        || patches_overlap(&w.values, values))
            }
            _ => false,
        }
    }

    /// Check the write's limits against `state` and reduce it to the change it makes there:
    /// `None` when `state` already has what the write asks for.
    pub fn effect(&self, state: &CampaignState) -> Result<Option<Change>, ErrorBody> {
        match self {
            Write::Update(request) => {
                let u = &request.updates;
                if u.is_empty() {
                    return Err(invalid(
                        "updates must set at least one of title, description, status, visibility",
                    ));
                }
                if let Some(title) = &u.title {
                    check_title(title)?;
                }
                if let Some(description) = &u.description {
                    check_description(description)?;
                }
                let effective = FieldUpdates {
                    title: u.title.clone().filter(|t| *t != state.title),
                    description: u.description.clone().filter(|d| *d != state.description),
                    status: u.status.filter(|s| *s != state.status),
                    visibility: u.visibility.filter(|v| *v != state.visibility),
                };
                Ok((!effective.is_empty()).then_some(Change::Fields { updates: effective }))
            }
            Write::Feature(request) => {
                let requested: BTreeSet<Feature> = request.features.iter().cloned().collect();
                check_feature_count(requested.len())?;
                let target: BTreeSet<Feature> = match request.op {
                    FeatureOp::Add => state.features.union(&requested).cloned().collect(),
                    FeatureOp::Remove => state.features.difference(&requested).cloned().collect(),
                    FeatureOp::Set => requested,
                };
                check_feature_count(target.len())?;
                let added: Vec<Feature> = target.difference(&state.features).cloned().collect();
                let removed: Vec<Feature> = state.features.difference(&target).cloned().collect();
                Ok((!added.is_empty() || !removed.is_empty())
                    .then_some(Change::Features { added, removed }))
            }
            Write::Config(request) => {
                check_section(&request.section, &request.values)?;
                let current = state.config.get(&request.section);
                // The section as the write leaves it (None: gone).
                let result = match request.mode {
                    ConfigMode::Remove if !request.values.is_empty() => {
                        return Err(invalid("values must be {} when removing a section"));
                    }
                    ConfigMode::Remove => None,
                    ConfigMode::Replace => Some(request.values.clone()),
                    ConfigMode::Merge => {
                        let mut result = current.cloned().unwrap_or_default();
                        merge_patch(&mut result, &request.values);
                        Some(result)
                    }
                };
                let Some(result) = result else {
                    return Ok(current.is_some().then(|| Change::Config {
                        section: request.section.clone(),
                        mode: ConfigMode::Remove,
                        values: Map::new(),
                    }));
                };
                if current.is_none() {
                    check_section_count(state.config.len() + 1)?;
                }
                // The merged result must respect the limits too, not only the patch.
                check_section(&request.section, &result)?;
                let unchanged = current.is_some_and(|c| *c == result);
                Ok((!unchanged).then(|| Change::Config {
                    section: request.section.clone(),
                    mode: request.mode,
                    values: request.values.clone(),
                }))
            }
            Write::Revert(revert) => Ok(revert.restored(state)?.map(|restored| Change::Revert {
                to_version: revert.request.to_version,
                restored,
            })),
            Write::Handover(request) => {
                let owner = state.owner();
                if request.user_id == owner.user_id {
                    return Ok(None);
                }
                let Some(member) = state.members.get(&request.user_id) else {
                    return Err(invalid(format!(
                        "{} is not a member of this campaign; hand it over to a member",
                        request.user_id
                    )));
                };
                Ok(Some(Change::Handover {
                    from: owner.clone(),
                    to: Actor {
                        user_id: request.user_id.clone(),
                        display_name: member.display_name.clone(),
                    },
                }))
            }
            Write::Member(request) => {
                if request.user_id == state.owner().user_id {
                    return Err(invalid(
                        "the campaign's owner always owns it; their role cannot change until they hand it over",
                    ));
                }
                let Some(member) = state.members.get(&request.user_id) else {
                    return Err(invalid(format!(
                        "{} is not a member of this campaign; people join through invites",
                        request.user_id
                    )));
                };
                if request.role == Some(member.role) {
                    return Ok(None);
                }
                Ok(Some(Change::Member {
                    member: Actor {
                        user_id: request.user_id.clone(),
                        display_name: member.display_name.clone(),
                    },
                    role: request.role,
                    invite: None,
                }))
            }
            // The edit must already be made on `state`'s text: the server rebases it first
            // (TextChange::rebase), the browser sends it on the text it shows.
            Write::Text(request) => {
                let current = state.text(request.field);
                let text = request.edit.apply(current).map_err(|e| request.misfit(e))?;
                check_text(request.field, &text)?;
                Ok((text != current).then(|| Change::Text {
                    field: request.field,
                    edit: request.edit.clone(),
                    edit_id: request.edit_id.clone(),
                }))
            }
        }
    }
}

/// The paths a JSON merge patch decides: each key down to a value that is not a non-empty object
/// (a scalar, an array, `null` for delete, `{}`).
fn patch_paths<'a>(
    patch: &'a Map<String, Value>,
    prefix: &mut Vec<&'a str>,
    out: &mut BTreeSet<Vec<&'a str>>,
) {
    for (key, value) in patch {
        prefix.push(key);
        match value {
            Value::Object(inner) if !inner.is_empty() => patch_paths(inner, prefix, out),
            _ => {
                out.insert(prefix.clone());
            }
        }
        prefix.pop();
    }
}

/// Whether two merge patches of one section decide overlapping paths: one path equal to or inside
/// another. `{"hero": {"title": …}}` and `{"hero": {"image": …}}` do not; `{"hero": null}` overlaps
/// both. Costs O(n log n) in the patches' sizes, whatever their shapes.
fn patches_overlap(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    let (mut mine, mut theirs) = (BTreeSet::new(), BTreeSet::new());
    patch_paths(a, &mut Vec::new(), &mut mine);
    patch_paths(b, &mut Vec::new(), &mut theirs);
    theirs.iter().any(|path| {
        // One of mine is this path or contains it...
        (1..=path.len()).any(|n| mine.contains(&path[..n]))
            // ...or lies inside it: such paths sort right after it.
            || mine
                .range::<[&str], _>((std::ops::Bound::Excluded(&path[..]), std::ops::Bound::Unbounded))
                .next()
                .is_some_and(|next| next.starts_with(path))
    })
}

fn invalid(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::Invalid, message)
}

fn too_large(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::TooLarge, message)
}

/// Every limit of a text field's content (what [`Write::effect`] checks of the result).
pub fn check_text(field: TextField, text: &str) -> Result<(), ErrorBody> {
    match field {
        TextField::Title => check_title(text),
        TextField::Description => check_description(text),
    }
}

fn check_title(title: &str) -> Result<(), ErrorBody> {
    let chars = title.chars().count();
    if title.trim().is_empty() {
        return Err(invalid("title must not be empty"));
    }
    if chars > TITLE_MAX_CHARS {
        return Err(too_large(format!(
            "title is {chars} characters; at most {TITLE_MAX_CHARS} are allowed"
        )));
    }
    if title.chars().any(char::is_control) {
        return Err(invalid("title must not contain control characters"));
    }
    Ok(())
}

fn check_description(description: &str) -> Result<(), ErrorBody> {
    let chars = description.chars().count();
    if chars > DESCRIPTION_MAX_CHARS {
        return Err(too_large(format!(
            "description is {chars} characters; at most {DESCRIPTION_MAX_CHARS} are allowed"
        )));
    }
    // Line breaks and tabs are text; other control characters are not (and each would cost six
    // bytes of JSON escape in every copy of the event). A line break is `\n` alone: browsers turn
    // `\r\n` into `\n` in every text box, so a stored `\r` would make every edit there rewrite
    // the text around it.
    if description.contains('\r') {
        return Err(invalid(
            "description line breaks must be \\n alone (no \\r)",
        ));
    }
    if description
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        return Err(invalid(
            "description must not contain control characters other than line breaks and tabs",
        ));
    }
    Ok(())
}

fn check_feature_count(count: usize) -> Result<(), ErrorBody> {
    if count > FEATURES_MAX {
        return Err(too_large(format!(
            "{count} features; a campaign can have at most {FEATURES_MAX}"
        )));
    }
    Ok(())
}

fn check_section(section: &SectionName, values: &Map<String, Value>) -> Result<(), ErrorBody> {
    let depth = 1 + values.values().map(json_depth).max().unwrap_or(0);
    if depth > CONFIG_MAX_DEPTH {
        return Err(too_large(format!(
            "config section {section} is nested {depth} deep; at most {CONFIG_MAX_DEPTH} levels are allowed"
        )));
    }
    let bytes = serde_json::to_vec(values)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if bytes > CONFIG_SECTION_MAX_BYTES {
        return Err(too_large(format!(
            "config section {section} is {bytes} bytes; at most {CONFIG_SECTION_MAX_BYTES} are allowed"
        )));
    }
    Ok(())
}

fn check_section_count(count: usize) -> Result<(), ErrorBody> {
    if count > CONFIG_SECTIONS_MAX {
        return Err(too_large(format!(
            "{count} config sections; a campaign can have at most {CONFIG_SECTIONS_MAX}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Actor, Timestamp, UserId};
    use serde_json::json;

    fn state() -> CampaignState {
        let actor = Actor {
            user_id: UserId::parse("u1").unwrap(),
            display_name: "Ada".into(),
        };
        CampaignState {
            id: CampaignId::parse("c").unwrap(),
            title: "Launch".into(),
            description: String::new(),
            status: CampaignStatus::Draft,
            visibility: crate::model::Visibility::Private,
            features: [Feature::parse("chat").unwrap()].into(),
            config: BTreeMap::new(),
            handed_to: None,
            members: Default::default(),
            version: 3,
            created_at: Timestamp::from_unix_nanos(1),
            created_by: actor.clone(),
            updated_at: Timestamp::from_unix_nanos(1),
            updated_by: actor,
        }
    }

    fn write(kind: &str, payload: serde_json::Value) -> Write {
        match kind {
            "update" => Write::Update(serde_json::from_value(payload).unwrap()),
            "feature" => Write::Feature(serde_json::from_value(payload).unwrap()),
            _ => Write::Config(serde_json::from_value(payload).unwrap()),
        }
    }

    /// Each row: a write, and what it does to [`state`] — the state it shows afterwards (as the
    /// browser's overlay does) or the error code it is refused with.
    #[test]
    fn effects_table() {
        let rows: Vec<(&str, Write, Result<serde_json::Value, ErrorCode>)> = vec![
            (
                "a title change",
                write(
                    "update",
                    json!({"campaign_id": "c", "updates": {"title": "Spring"}}),
                ),
                Ok(json!({"title": "Spring"})),
            ),
            (
                "a status equal to the current one changes nothing",
                write(
                    "update",
                    json!({"campaign_id": "c", "updates": {"status": "draft"}}),
                ),
                Ok(json!({})),
            ),
            (
                "an empty update",
                write("update", json!({"campaign_id": "c", "updates": {}})),
                Err(ErrorCode::Invalid),
            ),
            (
                "a title with a newline",
                write(
                    "update",
                    json!({"campaign_id": "c", "updates": {"title": "a\nb"}}),
                ),
                Err(ErrorCode::Invalid),
            ),
            (
                "a description with a control character",
                write(
                    "update",
                    json!({"campaign_id": "c", "updates": {"description": "a\u{1}b"}}),
                ),
                Err(ErrorCode::Invalid),
            ),
            (
                "a description with line breaks and tabs",
                write(
                    "update",
                    json!({"campaign_id": "c", "updates": {"description": "a\n\tb\n"}}),
                ),
                Ok(json!({"description": "a\n\tb\n"})),
            ),
            (
                "a line break with a carriage return (text boxes drop it)",
                write(
                    "update",
                    json!({"campaign_id": "c", "updates": {"description": "a\r\nb"}}),
                ),
                Err(ErrorCode::Invalid),
            ),
            (
                "a title over the limit",
                write(
                    "update",
                    json!({"campaign_id": "c", "updates": {"title": "x".repeat(201)}}),
                ),
                Err(ErrorCode::TooLarge),
            ),
            (
                "adding a feature",
                write(
                    "feature",
                    json!({"campaign_id": "c", "op": "add", "features": ["polls"]}),
                ),
                Ok(json!({"features": ["chat", "polls"]})),
            ),
            (
                "removing one that is not there changes nothing",
                write(
                    "feature",
                    json!({"campaign_id": "c", "op": "remove", "features": ["qa"]}),
                ),
                Ok(json!({})),
            ),
            (
                "setting the list",
                write(
                    "feature",
                    json!({"campaign_id": "c", "op": "set", "features": ["qa"]}),
                ),
                Ok(json!({"features": ["qa"]})),
            ),
            (
                "a merge patch into a new section",
                write(
                    "config",
                    json!({"campaign_id": "c", "section": "ui", "values": {"a": 1}}),
                ),
                Ok(json!({"config": {"ui": {"a": 1}}})),
            ),
            (
                "a section nested too deep",
                write(
                    "config",
                    json!({"campaign_id": "c", "section": "ui",
                    "values": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}}),
                ),
                Err(ErrorCode::TooLarge),
            ),
        ];
        for (what, write, expected) in rows {
            let before = state();
            let outcome = write.effect(&before).map(|change| {
                let mut after = before.clone();
                if let Some(change) = &change {
                    after.apply_change(change).unwrap();
                }
                let mut shown = serde_json::Map::new();
                let (b, a) = (
                    serde_json::to_value(&before).unwrap(),
                    serde_json::to_value(&after).unwrap(),
                );
                for (key, value) in a.as_object().unwrap() {
                    if b[key] != *value {
                        shown.insert(key.clone(), value.clone());
                    }
                }
                serde_json::Value::Object(shown)
            });
            assert_eq!(outcome.map_err(|e| e.code), expected, "{what}");
        }
    }

    #[test]
    fn removing_a_section_takes_it_away_and_clashes_with_any_change_to_it() {
        let mut before = state();
        let ui = SectionName::parse("ui").unwrap();
        before
            .config
            .insert(ui, json!({"a": 1}).as_object().unwrap().clone());
        let config = |section: &str, mode: &str, values: serde_json::Value| {
            write(
                "config",
                json!({"campaign_id": "c", "section": section, "mode": mode, "values": values}),
            )
        };
        let remove = config("ui", "remove", json!({}));
        let removed = remove.effect(&before).unwrap().expect("a change");
        let mut after = before.clone();
        after.apply_change(&removed).unwrap();
        assert!(after.config.is_empty());
        assert_eq!(
            remove.effect(&after).unwrap(),
            None,
            "removing it again changes nothing"
        );
        let with_values = config("ui", "remove", json!({"a": null}));
        assert_eq!(
            with_values.effect(&before).unwrap_err().code,
            ErrorCode::Invalid
        );
        let merge = config("ui", "merge", json!({"b": 2}));
        let merged = merge.effect(&before).unwrap().unwrap();
        assert!(remove.clashes_with(&merged) && merge.clashes_with(&removed));
        assert!(!config("other", "merge", json!({"b": 2})).clashes_with(&removed));
    }

    #[test]
    fn a_revert_restores_what_differs_and_clashes_with_what_it_restores() {
        let mut then = state();
        then.version = 1;
        then.title = "Old".into();
        let ui = SectionName::parse("ui").unwrap();
        then.config
            .insert(ui.clone(), json!({"a": 1}).as_object().unwrap().clone());
        let mut now = state();
        now.config.insert(
            SectionName::parse("later").unwrap(),
            json!({"b": 2}).as_object().unwrap().clone(),
        );
        let revert = |fields: &[&str]| {
            Write::Revert(Revert {
                request: serde_json::from_value(
                    json!({"campaign_id": "c", "to_version": 1, "fields": fields}),
                )
                .unwrap(),
                then: Box::new(then.clone()),
            })
        };
        let whole = revert(&[]);
        let change = whole.effect(&now).unwrap().expect("a change");
        assert_eq!(
            change.touched_fields(),
            ["title", "config.later", "config.ui"],
            "the description, status and features were the same"
        );
        let mut after = now.clone();
        after.apply_change(&change).unwrap();
        assert_eq!((after.title.as_str(), &after.config), ("Old", &then.config));
        assert_eq!(
            whole.effect(&after).unwrap(),
            None,
            "nothing left to restore"
        );

        let title_only = revert(&["title"]);
        let retitle = write(
            "update",
            json!({"campaign_id": "c", "updates": {"title": "X"}}),
        );
        let restatus = write(
            "update",
            json!({"campaign_id": "c", "updates": {"status": "active"}}),
        );
        let retitled = retitle.effect(&now).unwrap().unwrap();
        let restatused = restatus.effect(&now).unwrap().unwrap();
        assert!(title_only.clashes_with(&retitled));
        assert!(!title_only.clashes_with(&restatused));
        assert!(whole.clashes_with(&restatused));
        // A landed revert counts as setting what it restored.
        let restored_title = title_only.effect(&now).unwrap().unwrap();
        assert!(retitle.clashes_with(&restored_title));
        assert!(!restatus.clashes_with(&restored_title));
        assert_eq!(
            restored_title.replaced_text(TextField::Title),
            Some("Old"),
            "a text edit under it cannot be merged"
        );
    }

    #[test]
    fn a_base_version_travels_with_the_write() {
        let w = write(
            "feature",
            json!({"campaign_id": "c", "op": "add", "features": ["x"]}),
        );
        assert_eq!(w.base_version(), None);
        assert_eq!(w.based_on(Some(7)).base_version(), Some(7));
    }
}
