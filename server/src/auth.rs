//! Signed tokens, where requests carry them, and which pages may use the session cookie.
//!
//! A session token names a server-side session (see [`crate::sessions`]):
//! `base64url(json claims) "." base64url(HMAC-SHA256(claims))` with a server secret, so a forged
//! token is refused before the store is asked, and any instance sharing the secret can check it.
//! Browsers carry it in an HttpOnly cookie; other clients send it as
//! `Authorization: Bearer <token>` (or `?token=` on the WebSocket URL).
//!
//! Invite links are signed the same way: an expiring token naming one of a campaign's invites
//! (the campaign keeps its terms and who used it; see `campaigns::invites`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rally_app::model::{CampaignId, InviteId, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "rally_session";

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies session and invite tokens.
#[derive(Clone)]
pub struct Keys {
    secret: std::sync::Arc<[u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    /// The session it names was signed out, revoked, or expired from disuse.
    #[error("session has ended")]
    Ended,
    /// An API key that was revoked, or never existed.
    #[error("API key was revoked or does not exist")]
    Revoked,
    /// An API key sent where keys are not accepted (a cookie, a query, the WebSocket).
    #[error(
        "API keys are accepted only as `Authorization: Bearer` on the HTTP API and event streams"
    )]
    KeyNotAccepted,
    /// A backend-minted token whose `nbf` is still ahead.
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token is for another audience")]
    WrongAudience,
    #[error("token is from another issuer")]
    WrongIssuer,
    /// Signed with a key this server does not hold (or JWTs of that kind are not configured).
    #[error("token is signed with an unknown key")]
    UnknownKey,
    #[error("token uses an algorithm this server does not accept")]
    Algorithm,
    /// A claim is missing or unusable.
    #[error("token claim rejected: {0}")]
    Claim(String),
    /// An invite link from before invites were kept by their campaign.
    #[error("this invite link is from an older version of Rally; ask an owner for a new one")]
    Outdated,
    /// The keys to check it could not be fetched (a 503: try again).
    #[error("the token's signing keys cannot be fetched right now")]
    KeysUnavailable,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionClaims {
    /// "s": distinguishes session tokens from invite tokens signed with the same key.
    kind: String,
    /// The session's id.
    sid: String,
    exp: u64,
}

/// What a verified session token says: which session, until when at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionToken {
    pub session_id: String,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct InviteClaims {
    kind: String,
    cid: CampaignId,
    /// Absent in links made before invites were kept: those no longer work.
    #[serde(default)]
    iid: Option<InviteId>,
    exp: u64,
}

/// What a verified invite link names; whether it still lets anyone in is the campaign's to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteLink {
    pub campaign_id: CampaignId,
    pub invite_id: InviteId,
}

fn unix_secs(at: Timestamp) -> u64 {
    at.unix_nanos() / 1_000_000_000
}

impl Keys {
    pub fn new(secret: &[u8]) -> Self {
        Keys {
            secret: secret.into(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.secret).expect("HMAC takes keys of any length")
    }

    pub(crate) fn sign<T: Serialize>(&self, claims: &T) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{body}.{signature}")
    }

    pub(crate) fn verify<T: for<'de> Deserialize<'de>>(
        &self,
        token: &str,
    ) -> Result<T, TokenError> {
        let (body, signature) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
    }

    /// The token for a session (the same session and expiry always give the same token).
    pub fn session_token(&self, session_id: &str, expires_at: Timestamp) -> String {
        self.sign(&SessionClaims {
            kind: "s".into(),
            sid: session_id.to_owned(),
            exp: unix_secs(expires_at),
        })
    }

    /// Check a session token's signature and expiry (not yet whether its session still exists).
    pub fn verify_session(&self, token: &str, now: Timestamp) -> Result<SessionToken, TokenError> {
        let claims: SessionClaims = self.verify(token)?;
        if claims.kind != "s" {
            return Err(TokenError::Malformed);
        }
        if claims.exp <= unix_secs(now) {
            return Err(TokenError::Expired);
        }
        Ok(SessionToken {
            session_id: claims.sid,
            expires_at: Timestamp::from_unix_nanos(claims.exp * 1_000_000_000),
        })
    }

    /// The link to the campaign's invite `invite_id`, which expires at `expires_at`. The same
    /// arguments make the same link, so an owner can copy it again from the list of invites.
    pub fn invite_link(
        &self,
        campaign_id: &CampaignId,
        invite_id: &InviteId,
        expires_at: Timestamp,
    ) -> String {
        self.sign(&InviteClaims {
            kind: "i".into(),
            cid: campaign_id.clone(),
            iid: Some(invite_id.clone()),
            exp: unix_secs(expires_at),
        })
    }

    pub fn verify_invite(&self, token: &str, now: Timestamp) -> Result<InviteLink, TokenError> {
        let claims: InviteClaims = self.verify(token)?;
        if claims.kind != "i" {
            return Err(TokenError::Malformed);
        }
        if claims.exp <= unix_secs(now) {
            return Err(TokenError::Expired);
        }
        let invite_id = claims.iid.ok_or(TokenError::Outdated)?;
        Ok(InviteLink {
            campaign_id: claims.cid,
            invite_id,
        })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a request's credentials come from, in order of precedence.
pub fn token_from_request<'a>(
    headers: &'a axum::http::HeaderMap,
    query: Option<&'a str>,
) -> Option<(&'a str, Source)> {
    if let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = value.strip_prefix("Bearer ") {
            return Some((token.trim(), Source::Header));
        }
    }
    if let Some(query) = query {
        for pair in query.split('&') {
            if let Some(token) = pair.strip_prefix("token=") {
                return Some((token, Source::Query));
            }
        }
    }
    cookie(headers, COOKIE_NAME).map(|token| (token, Source::Cookie))
}

/// The value of the request's cookie `name`, if it carries one.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// Where a token was found. An explicit bad token (header, query) is an error; a stale cookie is
/// just treated as no session, so an expired cookie never locks a browser out of watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    Query,
    Cookie,
}

/// Which browser pages may use a visitor's cookie: the site itself, and configured extras.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// The site's own origin (`https://rally.example.com`). Unset: the origin whose host is the
    /// request's `Host`, over `https` with secure cookies and `http` without.
    pub public: Option<String>,
    /// Served over HTTPS (secure cookies): the scheme same-site pages use when `public` is unset.
    pub secure: bool,
    /// More origins whose pages may connect (in addition to the site itself).
    pub extra: Vec<String>,
}

impl Origins {
    /// Browsers send `Origin`; only the site itself (or a configured origin) may open a socket
    /// or make a request that carries the user's cookie. Requests without `Origin` (not
    /// browsers) pass: they authenticate by token.
    pub fn allow(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) else {
            return true;
        };
        if self.extra.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
            return true;
        }
        match &self.public {
            Some(public) => public.trim_end_matches('/').eq_ignore_ascii_case(origin),
            None => {
                let scheme = if self.secure { "https" } else { "http" };
                let host = headers.get("host").and_then(|v| v.to_str().ok());
                let same = origin
                    .split_once("://")
                    .filter(|(s, _)| s.eq_ignore_ascii_case(scheme))
                    .map(|(_, rest)| rest);
                matches!((host, same), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
            }
        }
    }
}

/// Whether the request's credential is the session cookie (which browsers attach on their own,
/// so a cross-site page could make the request: check [`Origins::allow`]).
pub fn uses_cookie(headers: &axum::http::HeaderMap, query: Option<&str>) -> bool {
    matches!(
        token_from_request(headers, query),
        Some((_, Source::Cookie))
    )
}

/// `Set-Cookie` value for a session token that lasts `max_age_secs` (`secure` when served over
/// HTTPS).
pub fn session_cookie(token: &str, max_age_secs: u64, secure: bool) -> String {
    set_cookie(COOKIE_NAME, token, "/", max_age_secs, secure)
}

pub fn clear_cookie(secure: bool) -> String {
    set_cookie(COOKIE_NAME, "", "/", 0, secure)
}

/// `Set-Cookie` value of an `HttpOnly`, `SameSite=Lax` cookie sent to `path` for
/// `max_age_secs` (0: delete it).
pub fn set_cookie(name: &str, value: &str, path: &str, max_age_secs: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_nanos(secs * 1_000_000_000)
    }

    #[test]
    fn session_tokens_verify_and_resist_tampering_and_expire() {
        let keys = Keys::new(b"test secret");
        let token = keys.session_token("abc", at(2000));
        let verified = keys.verify_session(&token, at(1001)).unwrap();
        assert_eq!(verified.session_id, "abc");
        assert_eq!(verified.expires_at, at(2000));
        assert_eq!(token, keys.session_token("abc", at(2000)), "deterministic");

        let other = Keys::new(b"another secret");
        assert_eq!(
            other.verify_session(&token, at(1001)),
            Err(TokenError::BadSignature)
        );
        let (body, sig) = token.split_once('.').unwrap();
        let forged_body =
            URL_SAFE_NO_PAD.encode(br#"{"kind":"s","sid":"other","exp":99999999999}"#);
        assert_eq!(
            keys.verify_session(&format!("{forged_body}.{sig}"), at(1001)),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            keys.verify_session(body, at(1001)),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            keys.verify_session(&token, at(2000)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn invite_links_are_not_sessions_and_expire() {
        let keys = Keys::new(b"k");
        let campaign_id = CampaignId::parse("c").unwrap();
        let invite_id = InviteId::parse("0f").unwrap();
        let token = keys.invite_link(&campaign_id, &invite_id, at(1000));
        assert_eq!(token, keys.invite_link(&campaign_id, &invite_id, at(1000)));
        assert_eq!(
            keys.verify_invite(&token, at(11)).unwrap(),
            InviteLink {
                campaign_id: campaign_id.clone(),
                invite_id
            }
        );
        assert_eq!(
            keys.verify_session(&token, at(11)),
            Err(TokenError::Malformed)
        );
        let session = keys.session_token("s1", at(100));
        assert_eq!(
            keys.verify_invite(&session, at(11)),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            keys.verify_invite(&token, at(1000)),
            Err(TokenError::Expired)
        );
        let before_invites_were_kept = keys.sign(&serde_json::json!({
            "kind": "i", "cid": "c", "role": "editor", "exp": 2000, "by": "Ada"
        }));
        assert_eq!(
            keys.verify_invite(&before_invites_were_kept, at(11)),
            Err(TokenError::Outdated)
        );
    }

    fn headers(pairs: &[(&str, &str)]) -> axum::http::HeaderMap {
        let mut map = axum::http::HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn origin_rules() {
        let same_host = Origins::default();
        let h = |origin: &str| headers(&[("host", "a:3000"), ("origin", origin)]);
        assert!(
            same_host.allow(&headers(&[("host", "a:3000")])),
            "no Origin: not a browser"
        );
        assert!(same_host.allow(&h("http://a:3000")));
        assert!(!same_host.allow(&h("https://a:3000")), "the scheme counts");
        assert!(!same_host.allow(&h("http://evil:3000")));
        let extra = Origins {
            extra: vec!["http://127.0.0.1:8080".into()],
            ..Origins::default()
        };
        assert!(extra.allow(&h("http://127.0.0.1:8080")));
        assert!(
            extra.allow(&h("http://a:3000")),
            "extras add to the site itself"
        );
        let public = Origins {
            public: Some("https://rally.example.com".into()),
            secure: true,
            extra: Vec::new(),
        };
        let spoofed = headers(&[("host", "evil.example"), ("origin", "https://evil.example")]);
        assert!(
            !public.allow(&spoofed),
            "Host is not trusted once the site's origin is known"
        );
        let real = headers(&[
            ("host", "evil.example"),
            ("origin", "https://rally.example.com"),
        ]);
        assert!(public.allow(&real));
    }

    #[test]
    fn finds_tokens_in_header_query_and_cookie() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("cookie", "a=b; rally_session=CK; c=d".parse().unwrap());
        assert_eq!(
            token_from_request(&headers, None),
            Some(("CK", Source::Cookie))
        );
        assert_eq!(
            token_from_request(&headers, Some("x=1&token=QT")),
            Some(("QT", Source::Query))
        );
        headers.insert("authorization", "Bearer HD".parse().unwrap());
        assert_eq!(
            token_from_request(&headers, Some("token=QT")),
            Some(("HD", Source::Header))
        );
    }
}
