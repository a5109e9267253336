//! Sign-in through the organization's OpenID Connect provider (authorization code + PKCE).
//!
//! [`login`] holds the rules of one sign-in; this file talks to the provider: discovery
//! (`{issuer}/.well-known/openid-configuration`, fetched when first needed and again after
//! [`DISCOVERY_MAX_AGE`]), the token request, the ID token's signature through the provider's
//! JWKS (the same key cache as backend-minted tokens, so key rotation works the same way), and
//! the userinfo request for profile claims the ID token leaves out. Nothing is stored between
//! the two halves of a sign-in but the signed attempt cookie the browser carries.

pub mod login;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Validation};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::auth::{Keys, TokenError};
use crate::jwt::{self, Jwks};
pub use login::{AllowList, Attempt, Callback, LoginError, Person};
use rally_app::model::Timestamp;

/// The provider's configuration document is fetched again when older than this.
pub const DISCOVERY_MAX_AGE: Duration = Duration::from_secs(3600);
/// After a failed fetch of the configuration, sign-ins fail at once for this long instead of
/// each waiting on a provider that is down.
pub const DISCOVERY_RETRY: Duration = Duration::from_secs(10);
/// Longest answer read from the provider (configuration, tokens, userinfo).
pub const MAX_PROVIDER_ANSWER_BYTES: usize = 64 * 1024;
/// The cookie carrying a sign-in in progress.
pub const ATTEMPT_COOKIE: &str = "rally_signin";
/// Where the attempt cookie is sent: only to the sign-in routes.
pub const ATTEMPT_COOKIE_PATH: &str = "/auth/oidc";

/// How Rally signs people in through the provider. (Not `Debug`: it holds the client secret.)
#[derive(Clone)]
pub struct OidcSettings {
    /// The provider's issuer URL, exactly as its ID tokens name it.
    pub issuer: String,
    pub client_id: String,
    /// Sent with HTTP Basic authentication on the token request; None for a public client
    /// (PKCE alone).
    pub client_secret: Option<String>,
    /// Rally's callback (`https://rally.example/auth/oidc/callback`), registered with the
    /// provider.
    pub redirect_url: String,
    pub scopes: String,
    /// What the sign-in button calls the provider ("Acme accounts").
    pub provider_name: String,
    pub allow: AllowList,
    /// Clock skew allowed on the ID token's times.
    pub leeway: Duration,
}

/// What the provider's discovery document says (OpenID Connect Discovery §3).
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    userinfo_endpoint: Option<String>,
}

/// The discovered provider.
struct Provider {
    authorization: Url,
    token: Url,
    userinfo: Option<Url>,
    jwks: Arc<Jwks>,
    fetched: Instant,
}

/// Talks to the OpenID Connect provider. Cheap to clone.
#[derive(Clone)]
pub struct Oidc {
    settings: Arc<OidcSettings>,
    http: reqwest::Client,
    provider: Arc<Mutex<Discovered>>,
}

/// What discovery found, and when it last failed.
#[derive(Default)]
struct Discovered {
    provider: Option<Arc<Provider>>,
    failed: Option<(Instant, LoginError)>,
}

/// The token endpoint's answer (RFC 6749 §5.1), or its error (§5.2).
#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The attempt cookie's signed content: the attempt, marked so no other signed token passes
/// for one.
#[derive(Serialize, Deserialize)]
struct AttemptClaims {
    kind: String,
    #[serde(flatten)]
    attempt: Attempt,
}

const ATTEMPT_KIND: &str = "o";

/// The attempt cookie's value.
pub fn seal_attempt(keys: &Keys, attempt: &Attempt) -> String {
    keys.sign(&AttemptClaims {
        kind: ATTEMPT_KIND.into(),
        attempt: attempt.clone(),
    })
}

/// The attempt in a cookie value, if it is one this server signed.
pub fn open_attempt(keys: &Keys, value: &str) -> Option<Attempt> {
    let claims: AttemptClaims = keys.verify(value).ok()?;
    (claims.kind == ATTEMPT_KIND).then_some(claims.attempt)
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Oidc {
        Oidc {
            settings: Arc::new(settings),
            http: jwt::http_client(),
            provider: Arc::default(),
        }
    }

    pub fn provider_name(&self) -> &str {
        &self.settings.provider_name
    }

    /// Start a sign-in that returns to `return_to`: where to send the browser, and the attempt
    /// it must bring back.
    pub async fn begin(
        &self,
        return_to: Option<&str>,
        now: Timestamp,
    ) -> Result<(Url, Attempt), LoginError> {
        let provider = self.provider().await?;
        let attempt = Attempt::new(return_to, now);
        let client = login::Client {
            client_id: &self.settings.client_id,
            redirect_url: &self.settings.redirect_url,
            scopes: &self.settings.scopes,
        };
        let url = login::authorization_url(&provider.authorization, &client, &attempt);
        Ok((url, attempt))
    }

    /// Finish a sign-in: check the provider's answer against the attempt, swap the code for
    /// tokens, check the ID token, read the profile, and say who signed in.
    pub async fn finish(
        &self,
        attempt: Option<&Attempt>,
        callback: &Callback,
        now: Timestamp,
    ) -> Result<Person, LoginError> {
        let (attempt, code) = Attempt::answer(attempt, callback, now)?;
        let provider = self.provider().await?;
        let tokens = self.redeem(&provider, code, attempt).await?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| LoginError::IdToken("the provider sent no ID token".into()))?;
        let claims = self.check_id_token(&provider, &id_token).await?;
        login::check_nonce(&claims, attempt)?;
        let userinfo = match (&provider.userinfo, &tokens.access_token) {
            (Some(url), Some(access)) => Some(self.userinfo(url, access).await?),
            _ => None,
        };
        login::person(
            &self.settings.issuer,
            &claims,
            userinfo.as_ref(),
            &self.settings.allow,
        )
    }

    /// The discovered provider, fetching its configuration when none is held or it is older
    /// than [`DISCOVERY_MAX_AGE`] (a failed refetch keeps the one held; without one, a failure
    /// is the answer for [`DISCOVERY_RETRY`]).
    async fn provider(&self) -> Result<Arc<Provider>, LoginError> {
        let mut found = self.provider.lock().await;
        if let Some(provider) = found
            .provider
            .as_ref()
            .filter(|p| p.fetched.elapsed() < DISCOVERY_MAX_AGE)
        {
            return Ok(provider.clone());
        }
        if let Some((at, err)) = &found.failed {
            if at.elapsed() < DISCOVERY_RETRY {
                return match &found.provider {
                    Some(stale) => Ok(stale.clone()),
                    None => Err(err.clone()),
                };
            }
        }
        match self.discover(found.provider.as_deref()).await {
            Ok(provider) => {
                let provider = Arc::new(provider);
                *found = Discovered {
                    provider: Some(provider.clone()),
                    failed: None,
                };
                Ok(provider)
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot fetch the sign-in provider's configuration");
                found.failed = Some((Instant::now(), err.clone()));
                found.provider.clone().ok_or(err)
            }
        }
    }

    async fn discover(&self, held: Option<&Provider>) -> Result<Provider, LoginError> {
        let issuer = self.settings.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let response = self.http.get(&url).send().await.map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(LoginError::Unavailable(format!(
                "its configuration answered HTTP {}",
                response.status()
            )));
        }
        let body = read_bounded(response).await?;
        let found: Discovery = serde_json::from_slice(&body)
            .map_err(|err| LoginError::Unavailable(format!("its configuration: {err}")))?;
        // Discovery §4.3: the document must be the configured issuer's own.
        if found.issuer != self.settings.issuer {
            return Err(LoginError::Unavailable(format!(
                "its configuration names issuer {:?}, not {:?}",
                found.issuer, self.settings.issuer
            )));
        }
        let endpoint = |name: &str, url: &str| {
            Url::parse(url).map_err(|err| {
                LoginError::Unavailable(format!("its configuration's {name} {url:?}: {err}"))
            })
        };
        let authorization = endpoint("authorization_endpoint", &found.authorization_endpoint)?;
        let token = endpoint("token_endpoint", &found.token_endpoint)?;
        let userinfo = match &found.userinfo_endpoint {
            Some(url) => Some(endpoint("userinfo_endpoint", url)?),
            None => None,
        };
        let jwks = match held {
            Some(old) if old.jwks.url() == found.jwks_uri => old.jwks.clone(),
            _ => Arc::new(Jwks::new(found.jwks_uri, self.http.clone())),
        };
        tracing::debug!(issuer = %self.settings.issuer, "sign-in provider discovered");
        Ok(Provider {
            authorization,
            token,
            userinfo,
            jwks,
            fetched: Instant::now(),
        })
    }

    /// Swap the code (and the PKCE verifier) for tokens. A code works once: a replay is the
    /// provider's `invalid_grant`.
    async fn redeem(
        &self,
        provider: &Provider,
        code: &str,
        attempt: &Attempt,
    ) -> Result<TokenAnswer, LoginError> {
        let settings = &self.settings;
        let mut request = self.http.post(provider.token.clone()).form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &settings.redirect_url),
            ("code_verifier", &attempt.verifier),
            ("client_id", &settings.client_id),
        ]);
        if let Some(secret) = &settings.client_secret {
            // RFC 6749 §2.3.1: both are form-encoded before Basic authentication.
            let encode =
                |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            request = request.basic_auth(encode(&settings.client_id), Some(encode(secret)));
        }
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if status.is_server_error() {
            return Err(LoginError::Unavailable(format!(
                "its token endpoint answered HTTP {status}"
            )));
        }
        let body = read_bounded(response).await?;
        let answer: TokenAnswer = match serde_json::from_slice(&body) {
            Ok(answer) => answer,
            Err(_) if !status.is_success() => {
                return Err(LoginError::Refused(format!("HTTP {status}")))
            }
            Err(err) => return Err(LoginError::Unavailable(format!("its token answer: {err}"))),
        };
        if !status.is_success() || answer.error.is_some() {
            let error = answer.error.unwrap_or_else(|| format!("HTTP {status}"));
            let detail = match answer.error_description {
                Some(description) => format!("{error} ({description})"),
                None => error,
            };
            return Err(LoginError::Refused(detail.chars().take(200).collect()));
        }
        Ok(answer)
    }

    /// The ID token's claims once its signature (by the provider's keys), issuer, audience and
    /// times check out (OpenID Connect Core §3.1.3.7). The nonce is [`login::check_nonce`]'s.
    async fn check_id_token(
        &self,
        provider: &Provider,
        token: &str,
    ) -> Result<Map<String, Value>, LoginError> {
        let rejected = |err: TokenError| match err {
            TokenError::KeysUnavailable => LoginError::Unavailable(err.to_string()),
            other => LoginError::IdToken(other.to_string()),
        };
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| rejected(TokenError::Malformed))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(rejected(TokenError::Algorithm));
        }
        let key = provider
            .jwks
            .key(header.kid.as_deref(), header.alg)
            .await
            .map_err(rejected)?;
        let settings = &self.settings;
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&settings.client_id]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = settings.leeway.as_secs();
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|err| rejected(jwt::rejection(err)))?
            .claims;
        if !claims.get("iat").is_some_and(Value::is_number) {
            return Err(rejected(TokenError::Claim("iat is missing".into())));
        }
        // Core §3.1.3.7 (4, 5): a token for several audiences must say it was issued to us.
        let audiences = claims
            .get("aud")
            .and_then(Value::as_array)
            .map_or(1, Vec::len);
        let azp = claims.get("azp").and_then(Value::as_str);
        if (audiences > 1 || azp.is_some()) && azp != Some(settings.client_id.as_str()) {
            return Err(rejected(TokenError::WrongAudience));
        }
        Ok(claims)
    }

    async fn userinfo(
        &self,
        url: &Url,
        access_token: &str,
    ) -> Result<Map<String, Value>, LoginError> {
        let response = self
            .http
            .get(url.clone())
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(LoginError::Unavailable(format!(
                "its userinfo endpoint answered HTTP {}",
                response.status()
            )));
        }
        let body = read_bounded(response).await?;
        serde_json::from_slice(&body)
            .map_err(|err| LoginError::Unavailable(format!("its userinfo answer: {err}")))
    }
}

fn unreachable(err: reqwest::Error) -> LoginError {
    LoginError::Unavailable(err.without_url().to_string())
}

/// The answer's body, refusing one over [`MAX_PROVIDER_ANSWER_BYTES`] as it arrives.
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, LoginError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > MAX_PROVIDER_ANSWER_BYTES {
            return Err(LoginError::Unavailable(format!(
                "an answer over {MAX_PROVIDER_ANSWER_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_attempt_cookies_open_as_attempts() {
        let keys = Keys::new(b"a key for the test");
        let attempt = Attempt::new(Some("/campaigns/x"), Timestamp::from_unix_nanos(0));
        let sealed = seal_attempt(&keys, &attempt);
        assert_eq!(open_attempt(&keys, &sealed), Some(attempt));
        assert_eq!(open_attempt(&Keys::new(b"another key"), &sealed), None);
        // Other tokens the same key signs are not attempts.
        let session = keys.session_token("s1", Timestamp::from_unix_nanos(u64::MAX / 2));
        assert_eq!(open_attempt(&keys, &session), None);
        assert_eq!(open_attempt(&keys, "garbage"), None);
    }
}
