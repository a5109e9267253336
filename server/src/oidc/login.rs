//! One sign-in through an OpenID Connect provider, as pure rules: what the browser is sent to
//! the provider with, what it must bring back, and who the provider's answer says it is.
//!
//! The flow (authorization code with PKCE, OpenID Connect Core §3.1, RFC 7636):
//! 1. [`Attempt::new`] makes a fresh `state` (ties the answer to this browser), `nonce` (ties the
//!    ID token to this attempt) and PKCE verifier; the attempt travels in a signed, short-lived
//!    cookie, and [`authorization_url`] is where the browser goes.
//! 2. The provider sends the browser back with `code` and `state`. [`Attempt::answer`] checks the
//!    state against the cookie's (a wrong or missing one is refused before anything is fetched).
//! 3. The server swaps the code and the verifier for tokens (a code works once: the provider
//!    refuses a replay), checks the ID token's signature, issuer, audience and times (see
//!    `super`), then [`person`] checks the nonce and the allow-lists and names the Rally user.
//!
//! A user id is derived from the provider's issuer and `sub`, which OpenID Connect promises are
//! stable and unique together: the same person gets the same Rally user id at every sign-in, and
//! two providers cannot hand out each other's users.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rally_app::model::limits::DISPLAY_NAME_MAX_CHARS;
use rally_app::model::{DisplayName, Timestamp, UserId};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// How long a started sign-in may take (the time someone has on the provider's pages).
pub const ATTEMPT_TTL_SECS: u64 = 600;
/// Longest path a sign-in returns to; longer ones return to the start page.
pub const MAX_RETURN_PATH_BYTES: usize = 512;
/// Hex characters of the issuer-and-subject hash in a user id (96 bits).
const USER_ID_HASH_HEX: usize = 24;

/// Who may sign in, beyond "the provider knows them". Each list that is set must be met.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    /// Email domains (`example.com`) whose verified addresses may sign in; empty: any.
    pub email_domains: Vec<String>,
    /// Groups of which the person must be in at least one; empty: any.
    pub groups: Vec<String>,
    /// The claim listing someone's groups (`groups` at most providers).
    pub groups_claim: String,
}

/// A sign-in in progress: what the browser's answer must match. Serialized into the signed
/// attempt cookie, so any instance can finish a sign-in another one started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub state: String,
    pub nonce: String,
    /// The PKCE code verifier (RFC 7636 §4.1): only its hash went to the browser.
    pub verifier: String,
    /// Where to go once signed in: a path on this site.
    pub return_to: String,
    /// Unix seconds after which the attempt is void.
    pub exp: u64,
}

/// Why a sign-in did not complete. Every one is the browser's to retry from the start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// No sign-in was started in this browser, or it took longer than [`ATTEMPT_TTL_SECS`].
    #[error("this sign-in was not started here or took too long")]
    NoAttempt,
    /// The answer belongs to another sign-in (a forged or replayed callback).
    #[error("this sign-in answer does not belong to the sign-in started in this browser")]
    StateMismatch,
    /// The provider said no: the person declined, or the code was already used.
    #[error("the sign-in provider refused: {0}")]
    Refused(String),
    /// The provider's ID token failed a check.
    #[error("the sign-in provider's identity token was rejected: {0}")]
    IdToken(String),
    /// The person is not on the allow-list.
    #[error("{0}")]
    NotAllowed(String),
    /// The provider could not be reached or answered nonsense (a 503: try again).
    #[error("the sign-in provider cannot be reached: {0}")]
    Unavailable(String),
}

/// Who a sign-in says the person is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub user_id: UserId,
    pub display_name: DisplayName,
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(crate::clock::random_bytes::<32>())
}

impl Attempt {
    /// A fresh attempt that returns to `return_to` (when it is a path on this site).
    pub fn new(return_to: Option<&str>, now: Timestamp) -> Attempt {
        Attempt {
            state: random_token(),
            nonce: random_token(),
            verifier: random_token(),
            return_to: local_path(return_to),
            exp: now.unix_nanos() / 1_000_000_000 + ATTEMPT_TTL_SECS,
        }
    }

    /// The PKCE challenge sent to the provider: `BASE64URL(SHA256(verifier))` (method `S256`).
    pub fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }

    /// Check the provider's redirect: its `state` must be the attempt's (the one this browser
    /// carries, if any), and the attempt still current. Returns the attempt and the
    /// authorization code.
    pub fn answer<'a>(
        attempt: Option<&'a Attempt>,
        callback: &'a Callback,
        now: Timestamp,
    ) -> Result<(&'a Attempt, &'a str), LoginError> {
        let attempt = attempt
            .filter(|a| a.exp > now.unix_nanos() / 1_000_000_000)
            .ok_or(LoginError::NoAttempt)?;
        let same_state = callback.state.as_deref().is_some_and(|state| {
            state.len() == attempt.state.len()
                && state
                    .bytes()
                    .zip(attempt.state.bytes())
                    .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                    == 0
        });
        if !same_state {
            return Err(LoginError::StateMismatch);
        }
        if let Some(error) = &callback.error {
            let detail = callback.error_description.as_deref().unwrap_or(error);
            return Err(LoginError::Refused(detail.chars().take(200).collect()));
        }
        let code = callback
            .code
            .as_deref()
            .filter(|code| !code.is_empty())
            .ok_or_else(|| LoginError::Refused("the answer carries no code".into()))?;
        Ok((attempt, code))
    }
}

/// The query of the provider's redirect back to Rally.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// What the client asks the provider for.
#[derive(Debug, Clone)]
pub struct Client<'a> {
    pub client_id: &'a str,
    pub redirect_url: &'a str,
    pub scopes: &'a str,
}

/// Where to send the browser: the provider's authorization endpoint with the attempt's
/// parameters.
pub fn authorization_url(endpoint: &Url, client: &Client<'_>, attempt: &Attempt) -> Url {
    let mut url = endpoint.clone();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client.client_id)
        .append_pair("redirect_uri", client.redirect_url)
        .append_pair("scope", client.scopes)
        .append_pair("state", &attempt.state)
        .append_pair("nonce", &attempt.nonce)
        .append_pair("code_challenge", &attempt.challenge())
        .append_pair("code_challenge_method", "S256");
    url
}

/// `path` when it is a path on this site (`/campaigns/x?y`), else `/`: a sign-in never sends
/// anyone to another site (`//evil.example` and `/\evil.example` are other sites to browsers).
pub fn local_path(path: Option<&str>) -> String {
    match path {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && p.len() <= MAX_RETURN_PATH_BYTES
                && !p.chars().any(|c| c.is_control() || c == '\\') =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// The Rally user id of `subject` at `issuer`: `o` and a hash of both (stable across sign-ins,
/// distinct between providers, and no longer than a user id may be).
pub fn user_id(issuer: &str, subject: &str) -> UserId {
    let mut hash = Sha256::new();
    hash.update(issuer.as_bytes());
    hash.update([0]);
    hash.update(subject.as_bytes());
    let hex = crate::auth::hex(&hash.finalize());
    UserId::parse(&format!("o{}", &hex[..USER_ID_HASH_HEX])).expect("hex ids are valid user ids")
}

/// The ID token's `nonce` must be the attempt's: the token was issued for this sign-in (checked
/// before anything else is asked of the provider).
pub fn check_nonce(claims: &Map<String, Value>, attempt: &Attempt) -> Result<(), LoginError> {
    if claims.get("nonce").and_then(Value::as_str) != Some(attempt.nonce.as_str()) {
        return Err(LoginError::IdToken(
            "nonce does not match this sign-in".into(),
        ));
    }
    Ok(())
}

/// Who the checked ID token's `claims` (and the provider's userinfo answer, when fetched) say
/// the person is: the userinfo must be about the same subject, and the allow-lists must pass.
pub fn person(
    issuer: &str,
    claims: &Map<String, Value>,
    userinfo: Option<&Map<String, Value>>,
    allow: &AllowList,
) -> Result<Person, LoginError> {
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| LoginError::IdToken("sub is missing".into()))?;
    if let Some(info) = userinfo {
        if info.get("sub").and_then(Value::as_str) != Some(subject) {
            return Err(LoginError::Refused(
                "its userinfo answer is about another person".into(),
            ));
        }
    }
    // Profile claims: userinfo's when it has them (OpenID Connect Core §5.3), else the token's.
    let claim = |name: &str| {
        userinfo
            .and_then(|info| info.get(name))
            .or_else(|| claims.get(name))
    };
    let text = |name: &str| claim(name).and_then(Value::as_str).map(str::trim);
    let email = text("email").filter(|e| !e.is_empty());

    if !allow.email_domains.is_empty() {
        // The address and whether it was verified come from the same answer, and only an
        // explicit `true` counts: some providers let people type any address and say nothing.
        let source = match userinfo {
            Some(info) if info.contains_key("email") => info,
            _ => claims,
        };
        let verified = matches!(source.get("email_verified"), Some(Value::Bool(true)))
            || source.get("email_verified").and_then(Value::as_str) == Some("true");
        let domain = source
            .get("email")
            .and_then(Value::as_str)
            .filter(|_| verified)
            .and_then(|e| e.trim().rsplit_once('@'))
            .map(|(_, domain)| domain);
        if !domain.is_some_and(|d| {
            allow
                .email_domains
                .iter()
                .any(|a| a.eq_ignore_ascii_case(d))
        }) {
            return Err(LoginError::NotAllowed(
                "your account's email address may not sign in to this Rally".into(),
            ));
        }
    }
    if !allow.groups.is_empty() {
        let groups: Vec<&str> = match claim(&allow.groups_claim) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(one)) => vec![one.as_str()],
            _ => Vec::new(),
        };
        if !groups.iter().any(|g| allow.groups.iter().any(|a| a == g)) {
            return Err(LoginError::NotAllowed(
                "your account is not in a group that may sign in to this Rally".into(),
            ));
        }
    }

    let name = ["name", "preferred_username", "nickname"]
        .into_iter()
        .filter_map(text)
        .chain(email.and_then(|e| e.split('@').next()))
        .find_map(fitted_name)
        .unwrap_or_else(|| DisplayName::parse("Member").expect("a valid name"));
    Ok(Person {
        user_id: user_id(issuer, subject),
        display_name: name,
    })
}

/// A provider's name as a Rally display name: control characters dropped, cut to the longest
/// name allowed.
fn fitted_name(text: &str) -> Option<DisplayName> {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(DISPLAY_NAME_MAX_CHARS)
        .collect();
    DisplayName::parse(&cleaned).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_nanos(secs * 1_000_000_000)
    }

    fn attempt() -> Attempt {
        Attempt {
            state: "state-1".into(),
            nonce: "nonce-1".into(),
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            return_to: "/".into(),
            exp: 1000,
        }
    }

    #[test]
    fn the_pkce_challenge_is_the_rfc_7636_example() {
        // RFC 7636 Appendix B.
        assert_eq!(
            attempt().challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn answers_are_checked_against_the_attempt() {
        let callback = |code: Option<&str>, state: Option<&str>, error: Option<&str>| Callback {
            code: code.map(Into::into),
            state: state.map(Into::into),
            error: error.map(Into::into),
            error_description: None,
        };
        let a = attempt();
        let cases: Vec<(Option<&Attempt>, Callback, u64, Result<&str, LoginError>)> = vec![
            (
                Some(&a),
                callback(Some("c1"), Some("state-1"), None),
                999,
                Ok("c1"),
            ),
            (
                None,
                callback(Some("c1"), Some("state-1"), None),
                999,
                Err(LoginError::NoAttempt),
            ),
            (
                Some(&a),
                callback(Some("c1"), Some("state-1"), None),
                1000,
                Err(LoginError::NoAttempt),
            ),
            (
                Some(&a),
                callback(Some("c1"), Some("state-2"), None),
                999,
                Err(LoginError::StateMismatch),
            ),
            (
                Some(&a),
                callback(Some("c1"), Some("state-"), None),
                999,
                Err(LoginError::StateMismatch),
            ),
            (
                Some(&a),
                callback(Some("c1"), None, None),
                999,
                Err(LoginError::StateMismatch),
            ),
            (
                Some(&a),
                callback(None, Some("state-1"), Some("access_denied")),
                999,
                Err(LoginError::Refused("access_denied".into())),
            ),
            (
                Some(&a),
                callback(None, Some("state-1"), None),
                999,
                Err(LoginError::Refused("the answer carries no code".into())),
            ),
            // A forged error without the state is a mismatch, not the provider's word.
            (
                Some(&a),
                callback(None, None, Some("access_denied")),
                999,
                Err(LoginError::StateMismatch),
            ),
        ];
        for (attempt, callback, now, expected) in cases {
            assert_eq!(
                Attempt::answer(attempt, &callback, at(now)).map(|(_, code)| code),
                expected,
                "{callback:?}"
            );
        }
    }

    #[test]
    fn the_authorization_url_carries_the_attempt() {
        let endpoint = Url::parse("https://id.example/auth?tenant=7").unwrap();
        let client = Client {
            client_id: "rally",
            redirect_url: "https://rally.example/auth/oidc/callback",
            scopes: "openid profile email",
        };
        let url = authorization_url(&endpoint, &client, &attempt());
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("tenant"), Some("7"), "the endpoint's own query stays");
        assert_eq!(get("response_type"), Some("code"));
        assert_eq!(
            get("redirect_uri"),
            Some("https://rally.example/auth/oidc/callback")
        );
        assert_eq!(get("state"), Some("state-1"));
        assert_eq!(get("nonce"), Some("nonce-1"));
        assert_eq!(get("code_challenge_method"), Some("S256"));
        assert_eq!(get("code_challenge"), Some(attempt().challenge().as_str()));
        assert_eq!(get("scope"), Some("openid profile email"));
    }

    #[test]
    fn only_paths_on_this_site_are_returned_to() {
        let long = format!("/{}", "a".repeat(MAX_RETURN_PATH_BYTES));
        let cases = [
            (Some("/campaigns/spring?x=1"), "/campaigns/spring?x=1"),
            (None, "/"),
            (Some(""), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("//evil.example/"), "/"),
            (Some("/\\evil.example/"), "/"),
            (Some("/a\\b"), "/"),
            (Some("/a\nb"), "/"),
            (Some(long.as_str()), "/"),
        ];
        for (input, expected) in cases {
            assert_eq!(local_path(input), expected, "{input:?}");
        }
    }

    #[test]
    fn user_ids_are_stable_per_issuer_and_subject() {
        let a = user_id("https://id.example", "248289761001");
        assert_eq!(a, user_id("https://id.example", "248289761001"));
        assert_ne!(a, user_id("https://other.example", "248289761001"));
        assert_ne!(a, user_id("https://id.example", "248289761002"));
        assert_eq!(a.as_str().len(), 1 + USER_ID_HASH_HEX);
        assert!(a.as_str().starts_with('o'));
    }

    fn claims(value: serde_json::Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn the_person_is_named_and_checked_against_the_allow_lists() {
        let base = json!({"sub": "ada", "nonce": "nonce-1", "name": "Ada Lovelace",
                          "email": "ada@Example.com", "email_verified": true,
                          "groups": ["staff", "marketing"]});
        let with = |key: &str, value: Value| {
            let mut c = base.clone();
            if value.is_null() {
                c.as_object_mut().unwrap().remove(key);
            } else {
                c[key] = value;
            }
            claims(c)
        };
        let open = AllowList {
            groups_claim: "groups".into(),
            ..AllowList::default()
        };
        let domains = AllowList {
            email_domains: vec!["example.com".into()],
            ..open.clone()
        };
        let groups = AllowList {
            groups: vec!["marketing".into()],
            ..open.clone()
        };
        let no_email = "your account's email address may not sign in to this Rally";
        let no_group = "your account is not in a group that may sign in to this Rally";
        let cases: Vec<(Map<String, Value>, &AllowList, Result<&str, LoginError>)> = vec![
            (claims(base.clone()), &open, Ok("Ada Lovelace")),
            (
                with("sub", json!("")),
                &open,
                Err(LoginError::IdToken("sub is missing".into())),
            ),
            (claims(base.clone()), &domains, Ok("Ada Lovelace")),
            (
                with("email", json!("ada@evil.example")),
                &domains,
                Err(LoginError::NotAllowed(no_email.into())),
            ),
            (
                with("email_verified", json!(false)),
                &domains,
                Err(LoginError::NotAllowed(no_email.into())),
            ),
            (
                with("email_verified", json!("false")),
                &domains,
                Err(LoginError::NotAllowed(no_email.into())),
            ),
            (
                with("email_verified", Value::Null),
                &domains,
                Err(LoginError::NotAllowed(no_email.into())),
            ),
            (
                with("email_verified", json!("true")),
                &domains,
                Ok("Ada Lovelace"),
            ),
            (
                with("email", Value::Null),
                &domains,
                Err(LoginError::NotAllowed(no_email.into())),
            ),
            (claims(base.clone()), &groups, Ok("Ada Lovelace")),
            (
                with("groups", json!(["staff"])),
                &groups,
                Err(LoginError::NotAllowed(no_group.into())),
            ),
            (
                with("groups", json!("marketing")),
                &groups,
                Ok("Ada Lovelace"),
            ),
            (
                with("groups", Value::Null),
                &groups,
                Err(LoginError::NotAllowed(no_group.into())),
            ),
            // Names: name, then preferred_username, then the email's local part.
            (with("name", Value::Null), &open, Ok("ada")),
            (with("name", json!("  ")), &open, Ok("ada")),
            (with("name", json!("A\u{7}da")), &open, Ok("Ada")),
            (
                with("name", json!("x".repeat(200))),
                &open,
                Ok(&*"x".repeat(DISPLAY_NAME_MAX_CHARS).leak()),
            ),
        ];
        for (claims, allow, expected) in cases {
            let got = person("https://id.example", &claims, None, allow);
            assert_eq!(
                got.as_ref()
                    .map(|p| p.display_name.as_str())
                    .map_err(Clone::clone),
                expected,
                "{claims:?}"
            );
            if let Ok(p) = got {
                assert_eq!(p.user_id, user_id("https://id.example", "ada"));
            }
        }
    }

    #[test]
    fn userinfo_fills_the_profile_but_must_be_about_the_same_subject() {
        let token = claims(json!({"sub": "ada", "nonce": "nonce-1"}));
        let info = claims(
            json!({"sub": "ada", "name": "Ada L.", "email": "ada@example.com",
                                 "email_verified": true}),
        );
        let allow = AllowList {
            email_domains: vec!["example.com".into()],
            groups_claim: "groups".into(),
            ..AllowList::default()
        };
        let got = person("https://id.example", &token, Some(&info), &allow).unwrap();
        assert_eq!(got.display_name.as_str(), "Ada L.");
        let other = claims(json!({"sub": "eve", "name": "Ada L."}));
        assert_eq!(
            person("https://id.example", &token, Some(&other), &allow),
            Err(LoginError::Refused(
                "its userinfo answer is about another person".into()
            ))
        );
        // A verified address in the token does not vouch for another answer's address.
        let token =
            claims(json!({"sub": "ada", "email": "ada@example.com", "email_verified": true}));
        let unverified = claims(json!({"sub": "ada", "email": "ada@example.com"}));
        assert!(matches!(
            person("https://id.example", &token, Some(&unverified), &allow),
            Err(LoginError::NotAllowed(_))
        ));
    }

    #[test]
    fn the_id_token_must_carry_this_sign_ins_nonce() {
        let cases = [
            (json!({"nonce": "nonce-1"}), Ok(())),
            (json!({"nonce": "nonce-2"}), Err(())),
            (json!({}), Err(())),
            (json!({"nonce": 7}), Err(())),
        ];
        for (token, expected) in cases {
            assert_eq!(
                check_nonce(&claims(token.clone()), &attempt()).map_err(|_| ()),
                expected,
                "{token}"
            );
        }
    }
}
