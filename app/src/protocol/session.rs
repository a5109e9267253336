//! Payloads of `/api/session`: signing in with a display name, and what the server answers.

use serde::{Deserialize, Serialize};

use crate::model::{Actor, DisplayName, Timestamp};

/// `POST /api/session` body: sign in, or rename (an existing session keeps its user id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub display_name: DisplayName,
}

/// `POST /api/session` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct SessionInfo {
    pub user: Actor,
    /// For non-browser clients: send as `Authorization: Bearer <token>`. Browsers use the cookie.
    pub token: String,
}

/// `GET /api/session` answer: who the request's credential is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct WhoAmI {
    pub user: Actor,
}

/// `DELETE /api/sessions` answer: how many of your sessions ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct SessionsEnded {
    pub ended: u64,
}

/// `GET /api/sessions`: one of your sessions (a browser or client signed in as you).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
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

/// `GET /api/sign-in`: the ways people may sign in on this server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(schemars::JsonSchema))]
pub struct SignInOptions {
    /// Anyone may sign in by picking a display name (`POST /api/session`).
    pub guests: bool,
    /// The organization's sign-in provider, by the name its button shows, when one is
    /// configured: a browser starts at [`SignInOptions::provider_start`].
    pub provider: Option<String>,
}

impl Default for SignInOptions {
    /// Guests only: Rally's embedded default.
    fn default() -> Self {
        SignInOptions {
            guests: true,
            provider: None,
        }
    }
}

impl SignInOptions {
    /// Where a browser starts signing in through the provider, coming back to `return_to` (a
    /// path on this site).
    pub fn provider_start(return_to: &str) -> String {
        format!("/auth/oidc/start?return_to={}", encode_component(return_to))
    }
}

/// Percent-encode everything but RFC 3986's unreserved characters.
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_start_carries_the_return_path_encoded() {
        assert_eq!(
            SignInOptions::provider_start("/campaigns/spring launch?x=1&y=é"),
            "/auth/oidc/start?return_to=%2Fcampaigns%2Fspring%20launch%3Fx%3D1%26y%3D%C3%A9"
        );
    }
}
