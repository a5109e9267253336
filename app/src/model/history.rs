//! History: the content fields a revert can restore, the change a revert makes, and the rule that
//! turns "put version N back" into that change.
//!
//! A revert never rewrites the log. It reads the campaign as it was at `to_version` and lands, like
//! any write, as one new version whose change ([`Change::Revert`]) carries the restored values of
//! the fields that differ. Only content is restored — title, description, status, features and
//! config sections. Who may see the campaign (visibility, members, ownership, invite links) is not
//! content: reverting to a version from before someone was removed does not let them back in.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::limits::CONFIG_SECTIONS_MAX;
use super::{CampaignId, CampaignState, CampaignStatus, Feature, SectionName, TextField};
use crate::protocol::{ErrorBody, ErrorCode};

/// A field of a campaign's content, as history and reverts name it: `title`, `description`,
/// `status`, `features` or `config.<section>` (the names [`super::Change::touched_fields`] uses).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContentField {
    Title,
    Description,
    Status,
    Features,
    Config(SectionName),
}

impl ContentField {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "title" => Ok(ContentField::Title),
            "description" => Ok(ContentField::Description),
            "status" => Ok(ContentField::Status),
            "features" => Ok(ContentField::Features),
            _ => match text.strip_prefix("config.") {
                Some(section) => SectionName::parse(section).map(ContentField::Config),
                None => Err(format!(
                    "unknown field {text:?}: expected title, description, status, features or config.<section>"
                )),
            },
        }
    }

    /// Whether `touched`, a name from [`super::Change::touched_fields`], is this field.
    fn is(&self, touched: &str) -> bool {
        match self {
            ContentField::Config(section) => touched
                .strip_prefix("config.")
                .is_some_and(|name| name == section.as_str()),
            other => other.to_string() == touched,
        }
    }
}

impl fmt::Display for ContentField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentField::Title => f.write_str("title"),
            ContentField::Description => f.write_str("description"),
            ContentField::Status => f.write_str("status"),
            ContentField::Features => f.write_str("features"),
            ContentField::Config(section) => write!(f, "config.{section}"),
        }
    }
}

impl Serialize for ContentField {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        ContentField::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// What a revert puts back: each field present gets the value it had at the reverted-to version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct Restored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CampaignStatus>,
    /// The whole feature set, sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<Feature>>,
    /// Config sections, each with its whole content; `null`: the section did not exist then, and
    /// goes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<SectionName, Option<Map<String, Value>>>,
}

impl Restored {
    pub fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.description.is_none()
            && self.status.is_none()
            && self.features.is_none()
            && self.config.is_empty()
    }

    /// The fields `then` would restore in `now`: those of `fields` (empty: every content field)
    /// whose value differs.
    pub fn between(then: &CampaignState, now: &CampaignState, fields: &[ContentField]) -> Self {
        let wanted = |field: &ContentField| fields.is_empty() || fields.contains(field);
        let differs = |field: ContentField, a, b| (wanted(&field) && a != b).then_some(());
        let mut restored = Restored {
            title: differs(ContentField::Title, &then.title, &now.title)
                .map(|()| then.title.clone()),
            description: differs(
                ContentField::Description,
                &then.description,
                &now.description,
            )
            .map(|()| then.description.clone()),
            status: (wanted(&ContentField::Status) && then.status != now.status)
                .then_some(then.status),
            features: (wanted(&ContentField::Features) && then.features != now.features)
                .then(|| then.features.iter().cloned().collect()),
            config: BTreeMap::new(),
        };
        let sections: BTreeSet<&SectionName> =
            then.config.keys().chain(now.config.keys()).collect();
        for section in sections {
            let (before, after) = (then.config.get(section), now.config.get(section));
            if wanted(&ContentField::Config(section.clone())) && before != after {
                restored.config.insert(section.clone(), before.cloned());
            }
        }
        restored
    }

    /// The names of the fields it sets (see [`super::Change::touched_fields`]).
    pub fn touched_fields(&self) -> Vec<String> {
        let mut fields = Vec::new();
        for (set, name) in [
            (self.title.is_some(), "title"),
            (self.description.is_some(), "description"),
            (self.status.is_some(), "status"),
            (self.features.is_some(), "features"),
        ] {
            if set {
                fields.push(name.to_owned());
            }
        }
        fields.extend(
            self.config
                .keys()
                .map(|section| format!("config.{section}")),
        );
        fields
    }

    /// The whole new text of `field`, if it restores it.
    pub fn text(&self, field: TextField) -> Option<&str> {
        match field {
            TextField::Title => self.title.as_deref(),
            TextField::Description => self.description.as_deref(),
        }
    }

    pub fn apply_to(&self, state: &mut CampaignState) {
        if let Some(title) = &self.title {
            state.title.clone_from(title);
        }
        if let Some(description) = &self.description {
            state.description.clone_from(description);
        }
        if let Some(status) = self.status {
            state.status = status;
        }
        if let Some(features) = &self.features {
            state.features = features.iter().cloned().collect();
        }
        for (section, values) in &self.config {
            match values {
                Some(values) => drop(state.config.insert(section.clone(), values.clone())),
                None => drop(state.config.remove(section)),
            }
        }
    }
}

/// `campaign:revert:v1:requested`: put the campaign's content back as it was at `to_version`,
/// as a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RevertCampaign {
    pub campaign_id: CampaignId,
    pub to_version: u64,
    /// Restore only these fields; absent or empty: every content field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<ContentField>,
    /// The version the person looked at when they chose to revert: if a field the revert
    /// restores changed after it, the revert is refused with `conflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<u64>,
}

/// A revert ready to apply: the request and the campaign as it was at `to_version` (the server
/// reads it from the log before the write reaches the campaign's writer).
#[derive(Debug, Clone, PartialEq)]
pub struct Revert {
    pub request: RevertCampaign,
    pub then: Box<CampaignState>,
}

impl Revert {
    /// Whether a change touching `touched` (a field name) concerns a field this revert restores.
    pub fn covers(&self, touched: &str) -> bool {
        let fields = &self.request.fields;
        if fields.is_empty() {
            return ["title", "description", "status", "features"].contains(&touched)
                || touched.starts_with("config.");
        }
        fields.iter().any(|field| field.is(touched))
    }

    /// The restoring change for `now`, or None when nothing differs.
    pub fn restored(&self, now: &CampaignState) -> Result<Option<Restored>, ErrorBody> {
        if self.then.version != self.request.to_version {
            return Err(ErrorBody::new(
                ErrorCode::Internal,
                "the state read for a revert is not at the version asked for",
            ));
        }
        let restored = Restored::between(&self.then, now, &self.request.fields);
        let mut sections = now.config.len();
        for (section, values) in &restored.config {
            match (values.is_some(), now.config.contains_key(section)) {
                (true, false) => sections += 1,
                (false, true) => sections -= 1,
                _ => {}
            }
        }
        if sections > CONFIG_SECTIONS_MAX {
            return Err(ErrorBody::new(
                ErrorCode::LimitExceeded,
                format!("restoring would leave {sections} config sections; a campaign may have {CONFIG_SECTIONS_MAX}"),
            ));
        }
        Ok((!restored.is_empty()).then_some(restored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_round_trip_and_bad_ones_are_refused() {
        for name in [
            "title",
            "description",
            "status",
            "features",
            "config.ui_content",
        ] {
            assert_eq!(ContentField::parse(name).unwrap().to_string(), name);
        }
        for bad in [
            "",
            "Title",
            "config.",
            "config.UI",
            "visibility",
            "members.ada",
            "owner",
        ] {
            assert!(ContentField::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_field_covers_only_its_own_touched_name() {
        let revert = |fields: Vec<ContentField>| Revert {
            request: RevertCampaign {
                campaign_id: CampaignId::parse("c").unwrap(),
                to_version: 1,
                fields,
                base_version: None,
            },
            then: Box::new(
                serde_json::from_value(serde_json::json!({
                    "id": "c", "title": "", "description": "", "status": "draft", "features": [],
                    "config": {}, "version": 1, "created_at": "2026-01-01T00:00:00Z",
                    "created_by": {"user_id": "a", "display_name": "A"},
                    "updated_at": "2026-01-01T00:00:00Z",
                    "updated_by": {"user_id": "a", "display_name": "A"}
                }))
                .unwrap(),
            ),
        };
        let all = revert(vec![]);
        let ui = revert(vec![ContentField::parse("config.ui_content").unwrap()]);
        let table = [
            ("title", true, false),
            ("features", true, false),
            ("config.ui_content", true, true),
            ("config.ui", true, false),
            ("config.ui_content_x", true, false),
            ("visibility", false, false),
            ("members.ada", false, false),
            ("owner", false, false),
        ];
        for (touched, by_all, by_ui) in table {
            assert_eq!(all.covers(touched), by_all, "all covers {touched}");
            assert_eq!(ui.covers(touched), by_ui, "ui covers {touched}");
        }
    }
}
