//! Payloads of `/api/keys`: API keys, which let another system (a CMS, a scheduler, a public
//! page's backend) use the HTTP API and event streams without a person's session.
//!
//! A key reads, or reads and writes, the campaigns it names or — made by an admin — every
//! campaign. Its token is shown once, when it is made; the server keeps only a hash of it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::model::{Actor, CampaignId, Timestamp};
use crate::protocol::{ErrorBody, ErrorCode};

/// Longest key name, in characters: a key's name is its display name in events and presence.
pub const MAX_KEY_NAME_CHARS: usize = crate::model::limits::DISPLAY_NAME_MAX_CHARS;
/// Most campaigns one key may name.
pub const MAX_KEY_CAMPAIGNS: usize = 100;

/// What a key may do on the campaigns it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum KeyAccess {
    /// Read campaigns and follow their events.
    Read,
    /// Also change them, as an editor would.
    Write,
}

/// `POST /api/keys` body: a key's name, what it may do, and where — the campaigns it names, or
/// every campaign (`all_campaigns`, admins only). Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// Says what uses it ("CMS", "Nightly report"): 1 to 40 characters.
    pub name: String,
    pub access: KeyAccess,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub campaigns: Vec<CampaignId>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_campaigns: bool,
}

/// Where a key works: the campaigns it names, or all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyReach {
    Campaigns(BTreeSet<CampaignId>),
    All,
}

impl CreateApiKey {
    /// The key's name (trimmed) and reach, or why the request is not a valid key.
    pub fn checked(&self) -> Result<(String, KeyReach), ErrorBody> {
        let invalid = |message: String| ErrorBody::new(ErrorCode::Invalid, message);
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > MAX_KEY_NAME_CHARS {
            return Err(invalid(format!(
                "name must be 1 to {MAX_KEY_NAME_CHARS} characters"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("name must not contain control characters".into()));
        }
        let reach = match (self.all_campaigns, self.campaigns.is_empty()) {
            (true, true) => KeyReach::All,
            (false, false) => {
                let campaigns: BTreeSet<_> = self.campaigns.iter().cloned().collect();
                if campaigns.len() > MAX_KEY_CAMPAIGNS {
                    return Err(invalid(format!(
                        "a key may name at most {MAX_KEY_CAMPAIGNS} campaigns"
                    )));
                }
                KeyReach::Campaigns(campaigns)
            }
            (true, false) => {
                return Err(invalid(
                    "send either campaigns or all_campaigns, not both".into(),
                ))
            }
            (false, true) => {
                return Err(invalid(
                    "name the campaigns the key works on (campaigns), or all_campaigns: true"
                        .into(),
                ))
            }
        };
        Ok((name.to_owned(), reach))
    }
}

/// An API key as `GET /api/keys` lists it: everything but its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct ApiKeySummary {
    /// Revokes it: `DELETE /api/keys/{id}`. Also the first part of its token.
    pub id: String,
    pub name: String,
    pub access: KeyAccess,
    /// The campaigns it works on, by id (empty when `all_campaigns`).
    pub campaigns: Vec<CampaignId>,
    pub all_campaigns: bool,
    pub created_by: Actor,
    pub created_at: Timestamp,
    /// When it was last used, to the minute (None: never).
    pub last_used_at: Option<Timestamp>,
}

/// `POST /api/keys` answer: the key, and its token — shown this once, never again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct NewApiKey {
    pub key: ApiKeySummary,
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(name: &str, campaigns: &[&str], all: bool) -> CreateApiKey {
        CreateApiKey {
            name: name.into(),
            access: KeyAccess::Read,
            campaigns: campaigns
                .iter()
                .map(|id| CampaignId::parse(id).unwrap())
                .collect(),
            all_campaigns: all,
        }
    }

    #[test]
    fn a_key_names_itself_and_where_it_works() {
        let long = "x".repeat(MAX_KEY_NAME_CHARS + 1);
        let exact = "é".repeat(MAX_KEY_NAME_CHARS);
        // (name, campaigns, all) → accepted?
        let cases: [(&str, &[&str], bool, bool); 9] = [
            ("CMS", &["launch"], false, true),
            ("  CMS  ", &["launch", "launch", "sale"], false, true),
            ("Everything", &[], true, true),
            (&exact, &["launch"], false, true),
            ("", &["launch"], false, false),
            ("   ", &["launch"], false, false),
            (&long, &["launch"], false, false),
            ("tab\there", &["launch"], false, false),
            ("Both", &["launch"], true, false),
        ];
        for (name, campaigns, all, accepted) in cases {
            let result = ask(name, campaigns, all).checked();
            assert_eq!(result.is_ok(), accepted, "{name:?} {campaigns:?} {all}");
            if let Err(error) = result {
                assert_eq!(error.code, ErrorCode::Invalid);
            }
        }
        assert!(ask("Nowhere", &[], false).checked().is_err());
        let (name, reach) = ask("  CMS  ", &["sale", "launch", "sale"], false)
            .checked()
            .unwrap();
        assert_eq!(name, "CMS");
        let KeyReach::Campaigns(campaigns) = reach else {
            panic!("a list")
        };
        assert_eq!(campaigns.len(), 2, "named twice counts once");

        let many: Vec<String> = (0..=MAX_KEY_CAMPAIGNS).map(|i| format!("c{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(ask("Many", &many, false).checked().is_err());
        assert!(ask("Many", &many[1..], false).checked().is_ok());
    }

    #[test]
    fn a_request_with_an_unknown_field_is_refused() {
        let text = r#"{"name":"CMS","access":"write","campaigns":["launch"],"role":"owner"}"#;
        assert!(serde_json::from_str::<CreateApiKey>(text).is_err());
        let text = r#"{"name":"CMS","access":"admin","campaigns":["launch"]}"#;
        assert!(serde_json::from_str::<CreateApiKey>(text).is_err());
        let text = r#"{"name":"CMS","access":"write","all_campaigns":true}"#;
        let asked: CreateApiKey = serde_json::from_str(text).unwrap();
        assert_eq!(asked.checked().unwrap().1, KeyReach::All);
    }
}
