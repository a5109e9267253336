//! Who may do what in a campaign, and who is there right now.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use super::limits::DISPLAY_NAME_MAX_CHARS;
use super::{CampaignId, UserId};

/// A person's role in one campaign. The campaign's owner, and members made owners, are owners;
/// editors were invited or made editors by an owner; everyone else who can open it is a viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Editor,
    Owner,
}

impl Role {
    /// Owners and editors change campaigns; viewers only watch.
    pub fn can_edit(self) -> bool {
        matches!(self, Role::Owner | Role::Editor)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name a person chose to be shown as: 1-40 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let chars = trimmed.chars().count();
        if chars == 0 {
            return Err("display name is empty".into());
        }
        if chars > DISPLAY_NAME_MAX_CHARS {
            return Err(format!(
                "display name is {chars} characters; at most {DISPLAY_NAME_MAX_CHARS} are allowed"
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err("display name contains control characters".into());
        }
        Ok(DisplayName(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DisplayName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        DisplayName::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Someone with a role in a campaign besides its owner: joined through an invite (or was the owner
/// before a handover), their role changed only by an owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct Member {
    /// Their name when they joined or their role last changed.
    pub display_name: String,
    pub role: Role,
}

impl Role {
    /// "an editor", for sentences.
    pub const fn with_article(self) -> &'static str {
        match self {
            Role::Viewer => "a viewer",
            Role::Editor => "an editor",
            Role::Owner => "an owner",
        }
    }
}

/// One person watching a campaign (over one or more connections). Anonymous visitors share one
/// entry (no user id) whose `connections` counts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct Viewer {
    pub user_id: Option<UserId>,
    pub display_name: String,
    pub connections: u32,
    /// Publishing camera or microphone in the campaign's live room right now (from any of their
    /// connections that follows the campaign).
    #[serde(default)]
    pub live: bool,
}

/// Most signed-in viewers listed by name in a [`Presence`]; `count` still counts everyone.
pub const PRESENCE_LIST_MAX: usize = 100;

/// Everyone subscribed to a campaign right now. `campaign:presence:v1:success` carries this, with
/// the change that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct Presence {
    pub campaign_id: CampaignId,
    /// Distinct people: signed-in users, plus one per anonymous connection.
    pub count: u32,
    /// Signed-in viewers sorted by display name (at most [`PRESENCE_LIST_MAX`]), then one
    /// "Anonymous" entry for all anonymous connections, if any.
    pub viewers: Vec<Viewer>,
}
