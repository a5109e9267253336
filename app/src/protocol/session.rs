//! Payloads of `/api/session`: signing in with a display name, and what the server answers.

use serde::{Deserialize, Serialize};

use crate::model::{Actor, DisplayName};

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
