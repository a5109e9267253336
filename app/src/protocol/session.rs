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

/// `GET /api/sessions`: one of your sessions (a browser or client signed in as you).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// Ends it: `DELETE /api/sessions/{id}`.
    pub id: String,
    /// What signed in, in a few words ("Firefox on Linux").
    pub device: String,
    pub started_at: Timestamp,
    pub last_seen_at: Timestamp,
    /// When it ends unless used again (the earlier of its lifetime and its idle expiry).
    pub expires_at: Timestamp,
    /// The session this request was made with.
    pub current: bool,
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
