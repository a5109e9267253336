//! Payloads of `/api/session`: signing in with a display name, and what the server answers.

use serde::{Deserialize, Serialize};

use crate::model::{Actor, CampaignId, DisplayName, Role, Timestamp};

/// `POST /api/session` body: sign in, or rename (an existing session keeps its user id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub display_name: DisplayName,
}

/// `POST /api/session` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub user: Actor,
    /// For non-browser clients: send as `Authorization: Bearer <token>`. Browsers use the cookie.
    pub token: String,
}

/// `GET /api/invites/{token}`: what an invite link offers, for the page that accepts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteDetails {
    pub campaign_id: CampaignId,
    /// The campaign's title now.
    pub title: String,
    /// The display name of the owner who made the link (empty for links made before it was
    /// recorded).
    pub invited_by: String,
    pub role: Role,
    pub expires_at: Timestamp,
}
