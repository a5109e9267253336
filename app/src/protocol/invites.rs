//! Payloads of the invite requests: making a link (`POST /api/campaigns/{id}/invites`), listing
//! and withdrawing a campaign's links (owners), and reading what a link offers
//! (`GET /api/invites/{token}`).

use serde::{Deserialize, Serialize};

use crate::model::limits::{INVITE_DEFAULT_LIFETIME_SECS, INVITE_LIFETIME_SECS, MEMBERS_MAX};
use crate::model::{CampaignId, Invite, InviteId, InviteStatus, InviteTerms, Role, Timestamp};
use crate::protocol::{ErrorBody, ErrorCode};

/// `POST /api/campaigns/{id}/invites` body (optional): the role the link gives, how long it
/// works, and how many people may use it (defaults: editor, 7 days, anyone with the link).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateInvite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
    /// 1 for a link only one person can use; at most a campaign's member limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
}

impl CreateInvite {
    /// The terms of the link this asks for, made at `now`, or why they are not allowed.
    pub fn terms(&self, id: InviteId, now: Timestamp) -> Result<InviteTerms, ErrorBody> {
        let lifetime = self.expires_in_secs.unwrap_or(INVITE_DEFAULT_LIFETIME_SECS);
        if !INVITE_LIFETIME_SECS.contains(&lifetime) {
            return Err(ErrorBody::new(
                ErrorCode::Invalid,
                format!(
                    "expires_in_secs must be {}-{} (5 minutes to 30 days)",
                    INVITE_LIFETIME_SECS.start(),
                    INVITE_LIFETIME_SECS.end()
                ),
            ));
        }
        if let Some(max_uses) = self.max_uses {
            if max_uses == 0 || max_uses as usize > MEMBERS_MAX {
                return Err(ErrorBody::new(
                    ErrorCode::Invalid,
                    format!("max_uses must be 1-{MEMBERS_MAX}, or left out for no count limit"),
                ));
            }
        }
        Ok(InviteTerms {
            id,
            role: self.role.unwrap_or(Role::Editor),
            max_uses: self.max_uses,
            expires_at: Timestamp::from_unix_nanos(
                now.unix_nanos()
                    .saturating_add(lifetime.saturating_mul(1_000_000_000)),
            ),
        })
    }
}

/// An invite link, for its campaign's owners: `POST /api/campaigns/{id}/invites` answers the one
/// it made, `GET /api/campaigns/{id}/invites` lists them all (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct InviteLinkInfo {
    pub campaign_id: CampaignId,
    #[serde(flatten)]
    pub invite: Invite,
    pub status: InviteStatus,
    /// The link's token (accept it with `POST /api/invites/{token}/accept`).
    pub token: String,
    /// Path of the page that accepts it in a browser.
    pub path: String,
}

/// `POST /api/invites/{token}/accept` answer: the campaign you joined and the role you have in it
/// now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct InviteAccepted {
    pub campaign_id: CampaignId,
    pub role: Role,
}

/// `GET /api/invites/{token}`: what an invite link offers, for the page that accepts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct InviteDetails {
    pub campaign_id: CampaignId,
    /// The campaign's title now.
    pub title: String,
    /// The display name of the owner who made the link.
    pub invited_by: String,
    pub role: Role,
    pub expires_at: Timestamp,
    /// How many more people may use it (absent: no count limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_left: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_keep_to_the_limits() {
        let id = || InviteId::parse("01").unwrap();
        let now = Timestamp::from_unix_nanos(1_000_000_000);
        let terms = CreateInvite::default().terms(id(), now).unwrap();
        assert_eq!(terms.role, Role::Editor);
        assert_eq!(terms.max_uses, None);
        assert_eq!(
            terms.expires_at,
            Timestamp::from_unix_nanos((1 + INVITE_DEFAULT_LIFETIME_SECS) * 1_000_000_000)
        );
        let ask = |expires_in_secs, max_uses| CreateInvite {
            role: Some(Role::Viewer),
            expires_in_secs,
            max_uses,
        };
        for (expires, uses, ok) in [
            (Some(300), Some(1), true),
            (Some(299), Some(1), false),
            (Some(30 * 24 * 3600), Some(MEMBERS_MAX as u32), true),
            (Some(30 * 24 * 3600 + 1), None, false),
            (None, Some(0), false),
            (None, Some(MEMBERS_MAX as u32 + 1), false),
            (Some(u64::MAX), None, false),
        ] {
            let result = ask(expires, uses).terms(id(), now);
            assert_eq!(result.is_ok(), ok, "{expires:?} {uses:?}: {result:?}");
            if let Err(error) = result {
                assert_eq!(error.code, ErrorCode::Invalid);
            }
        }
    }
}
