//! Invite links as a campaign keeps them: their terms, who used them, and whether they still
//! work. The link itself (a signed token) is never stored nor broadcast: only its terms are, in
//! the campaign's events, so every instance and every follower sees who invited whom.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use super::access::Role;
use super::campaign::Actor;
use super::ids::UserId;
use super::timestamp::Timestamp;

/// Longest an invite id is (the server makes 16 hex digits).
pub const MAX_INVITE_ID_LEN: usize = 32;

/// An invite link's id within its campaign: 1–32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct InviteId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an invite id is 1-{MAX_INVITE_ID_LEN} lowercase hex digits")]
pub struct InviteIdError;

impl InviteId {
    pub fn parse(text: &str) -> Result<Self, InviteIdError> {
        let valid = !text.is_empty()
            && text.len() <= MAX_INVITE_ID_LEN
            && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(InviteId(text.to_owned()))
        } else {
            Err(InviteIdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InviteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for InviteId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        InviteId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// What an invite link offers, fixed when it is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct InviteTerms {
    pub id: InviteId,
    /// The role whoever accepts it gets.
    pub role: Role,
    /// How many people may accept it; `None`: anyone with the link, until it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
    pub expires_at: Timestamp,
}

/// Someone who joined (or got a higher role) through an invite link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct InviteUse {
    pub user_id: UserId,
    pub display_name: String,
    pub at: Timestamp,
}

/// An invite link as the campaign keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct Invite {
    #[serde(flatten)]
    pub terms: InviteTerms,
    pub made_by: Actor,
    pub made_at: Timestamp,
    /// How many people used it.
    #[serde(default)]
    pub used: u32,
    /// The latest of them (at most [`INVITE_USES_LISTED`](super::limits::INVITE_USES_LISTED)),
    /// oldest first.
    #[serde(default)]
    pub uses: Vec<InviteUse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn_at: Option<Timestamp>,
}

/// Whether an invite link still lets people in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum InviteStatus {
    Open,
    /// As many people as it allowed have used it.
    UsedUp,
    Expired,
    /// An owner withdrew it.
    Withdrawn,
}

impl Invite {
    /// Withdrawn before expired before used up: the answer names what an owner did first.
    pub fn status(&self, now: Timestamp) -> InviteStatus {
        if self.withdrawn_at.is_some() {
            InviteStatus::Withdrawn
        } else if now >= self.terms.expires_at {
            InviteStatus::Expired
        } else if self.uses_left() == Some(0) {
            InviteStatus::UsedUp
        } else {
            InviteStatus::Open
        }
    }

    /// How many more people may use it (`None`: no count limit).
    pub fn uses_left(&self) -> Option<u32> {
        self.terms.max_uses.map(|max| max.saturating_sub(self.used))
    }
}

impl InviteStatus {
    /// Why a link in this state lets nobody in, for the person holding it (None: it is open).
    pub fn refusal(self) -> Option<&'static str> {
        match self {
            InviteStatus::Open => None,
            InviteStatus::UsedUp => {
                Some("this invite link has been used as many times as it allows; ask an owner for a new one")
            }
            InviteStatus::Expired => Some("this invite link has expired; ask an owner for a new one"),
            InviteStatus::Withdrawn => {
                Some("this invite link was withdrawn by an owner; ask them for a new one")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(max_uses: Option<u32>, uses: usize, withdrawn: bool) -> Invite {
        let ada = Actor {
            user_id: UserId::parse("u-ada").unwrap(),
            display_name: "Ada".into(),
        };
        Invite {
            terms: InviteTerms {
                id: InviteId::parse("0a1b").unwrap(),
                role: Role::Editor,
                max_uses,
                expires_at: Timestamp::from_unix_nanos(100),
            },
            made_by: ada,
            made_at: Timestamp::from_unix_nanos(1),
            used: uses as u32,
            uses: (0..uses.min(3))
                .map(|n| InviteUse {
                    user_id: UserId::parse(&format!("u-{n}")).unwrap(),
                    display_name: format!("P{n}"),
                    at: Timestamp::from_unix_nanos(2),
                })
                .collect(),
            withdrawn_at: withdrawn.then(|| Timestamp::from_unix_nanos(3)),
        }
    }

    #[test]
    fn status_names_what_stops_a_link_first() {
        let early = Timestamp::from_unix_nanos(50);
        let late = Timestamp::from_unix_nanos(100);
        let cases = [
            (invite(None, 0, false), early, InviteStatus::Open),
            (invite(None, 900, false), early, InviteStatus::Open),
            (invite(Some(1), 0, false), early, InviteStatus::Open),
            (invite(Some(1), 1, false), early, InviteStatus::UsedUp),
            (invite(Some(5), 4, false), early, InviteStatus::Open),
            (invite(Some(5), 4, false), late, InviteStatus::Expired),
            (invite(Some(1), 1, false), late, InviteStatus::Expired),
            (invite(Some(1), 1, true), late, InviteStatus::Withdrawn),
            (invite(None, 0, true), early, InviteStatus::Withdrawn),
        ];
        for (n, (invite, now, expected)) in cases.into_iter().enumerate() {
            assert_eq!(invite.status(now), expected, "case {n}");
            assert_eq!(expected.refusal().is_none(), expected == InviteStatus::Open);
        }
    }

    #[test]
    fn ids_are_short_lowercase_hex() {
        assert!(InviteId::parse("00ff").is_ok());
        for bad in ["", "00FF", "xyz", &"a".repeat(33), "0a 1b"] {
            assert_eq!(InviteId::parse(bad), Err(InviteIdError), "{bad:?}");
        }
        assert!(serde_json::from_str::<InviteId>("\"../x\"").is_err());
    }

    #[test]
    fn an_invite_round_trips_with_its_terms_flat() {
        let invite = invite(Some(3), 1, false);
        let json = serde_json::to_value(&invite).unwrap();
        assert_eq!(json["role"], "editor");
        assert_eq!(json["max_uses"], 3);
        assert_eq!(serde_json::from_value::<Invite>(json).unwrap(), invite);
    }
}
