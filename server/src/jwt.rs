//! Tokens minted by the integrator's backend: a JWT says who someone is and, optionally, what
//! role they have on which campaigns — the way LiveKit and Centrifugo tokens work. Rally never
//! stores them; each request carrying one is checked on its own.
//!
//! Accepted: HS256 with a shared secret (`--jwt-secret`), RS256 and ES256 with the keys of a JWKS
//! URL (`--jwt-jwks-url`, fetched when first needed, again at most every
//! [`JWKS_REFRESH_MIN`] when a token names a key it does not hold — key rotation — and every
//! [`JWKS_MAX_AGE`] anyway). Each family only ever verifies with its own keys, so a token cannot
//! pick a weaker check (`alg: none`, or HS256 signed with a public key).
//!
//! Claims: `sub` (the Rally user id: 1-40 of `A-Z a-z 0-9 _ -`), `aud` (must equal
//! `--jwt-audience`), `exp` (required), `nbf` (checked when present), `iss` (checked when
//! `--jwt-issuer` is set), `name` (display name; `sub` when absent) and `campaigns` (optional
//! grants, `{"spring-launch": "editor"}`). Clock skew of `--jwt-leeway-secs` is allowed on `exp`
//! and `nbf`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rally_app::model::{Actor, CampaignId, DisplayName, Role, Timestamp, UserId};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::auth::TokenError;

/// A token naming a key the cached set lacks refetches the set at most this often.
pub const JWKS_REFRESH_MIN: Duration = Duration::from_secs(10);
/// The cached key set is refetched when older than this.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// Longest JWKS document read.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most campaign grants one token may carry.
pub const MAX_GRANTS: usize = 256;

/// How backend-minted tokens are checked.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// Where the RS256/ES256 public keys are published.
    pub jwks_url: Option<String>,
    pub audience: String,
    pub issuer: Option<String>,
    pub leeway: Duration,
}

/// Who a verified token says the bearer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    pub actor: Actor,
    /// Roles granted on campaigns by this token (on top of stored memberships).
    pub grants: BTreeMap<CampaignId, Role>,
    /// When the token stops being accepted: its `exp` plus the allowed clock skew.
    pub expires_at: Timestamp,
}

/// Defaults only so that a missing `sub` or `exp` reaches the validation that names it.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    exp: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    campaigns: BTreeMap<String, Role>,
}

/// Checks backend-minted JWTs. Cheap to clone.
#[derive(Clone)]
pub struct JwtVerifier {
    settings: Arc<JwtSettings>,
    secret: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
}

/// The JWKS URL's keys, cached (also the OpenID Connect provider's, see [`crate::oidc`]).
pub(crate) struct Jwks {
    url: String,
    http: reqwest::Client,
    cached: Mutex<KeyCache>,
}

#[derive(Default)]
struct KeyCache {
    /// The last set fetched, and when.
    keys: Option<(JwkSet, Instant)>,
    /// The last fetch attempt (successful or not): attempts are at least
    /// [`JWKS_REFRESH_MIN`] apart, so a failing endpoint is not hammered.
    attempted: Option<Instant>,
}

impl JwtVerifier {
    pub fn new(settings: JwtSettings) -> Self {
        let secret = settings
            .secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.as_bytes()));
        let jwks = settings
            .jwks_url
            .clone()
            .map(|url| Arc::new(Jwks::new(url, http_client())));
        JwtVerifier {
            settings: Arc::new(settings),
            secret,
            jwks,
        }
    }

    /// Check a JWT: signature (by its family's keys), audience, issuer, time, claims.
    pub async fn verify(&self, token: &str) -> Result<TokenIdentity, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let key = match header.alg {
            Algorithm::HS256 => self.secret.clone().ok_or(TokenError::UnknownKey)?,
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self.jwks.as_ref().ok_or(TokenError::UnknownKey)?;
                jwks.key(header.kid.as_deref(), header.alg).await?
            }
            _ => return Err(TokenError::Algorithm),
        };
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.settings.audience]);
        if let Some(issuer) = &self.settings.issuer {
            validation.set_issuer(&[issuer]);
        }
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.settings.leeway.as_secs();
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(rejection)?;
        identity(data.claims, self.settings.leeway)
    }
}

/// The typed refusal for a JWT that failed `jsonwebtoken`'s checks.
pub(crate) fn rejection(err: jsonwebtoken::errors::Error) -> TokenError {
    match err.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
        ErrorKind::MissingRequiredClaim(claim) => TokenError::Claim(format!("{claim} is missing")),
        _ => TokenError::Malformed,
    }
}

/// What the claims say, checked.
fn identity(claims: Claims, leeway: Duration) -> Result<TokenIdentity, TokenError> {
    let user_id =
        UserId::parse(&claims.sub).map_err(|err| TokenError::Claim(format!("sub: {err}")))?;
    if crate::api_keys::is_reserved(&user_id) {
        return Err(TokenError::Claim(format!(
            "sub: {user_id} is reserved for API keys and the server's operator"
        )));
    }
    let name = claims.name.as_deref().unwrap_or(&claims.sub);
    let display_name =
        DisplayName::parse(name).map_err(|err| TokenError::Claim(format!("name: {err}")))?;
    if claims.campaigns.len() > MAX_GRANTS {
        return Err(TokenError::Claim(format!(
            "campaigns: at most {MAX_GRANTS} grants"
        )));
    }
    let mut grants = BTreeMap::new();
    for (id, role) in claims.campaigns {
        let id =
            CampaignId::parse(&id).map_err(|err| TokenError::Claim(format!("campaigns: {err}")))?;
        grants.insert(id, role);
    }
    Ok(TokenIdentity {
        actor: Actor {
            user_id,
            display_name: display_name.as_str().to_owned(),
        },
        grants,
        expires_at: Timestamp::from_unix_nanos(
            claims
                .exp
                .saturating_add(leeway.as_secs())
                .saturating_mul(1_000_000_000),
        ),
    })
}

/// The client for fetching keys and talking to providers: every request gives up after 5 s.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client with default TLS builds")
}

impl Jwks {
    pub(crate) fn new(url: String, http: reqwest::Client) -> Jwks {
        Jwks {
            url,
            http,
            cached: Mutex::new(KeyCache::default()),
        }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The key `kid` names (or the only key of the family, when the token names none). Keys
    /// are fetched when none are held, when they are older than [`JWKS_MAX_AGE`], or when the
    /// token names a key the set lacks (rotation) — at most every [`JWKS_REFRESH_MIN`]. A failed
    /// fetch keeps the keys already held.
    pub(crate) async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, TokenError> {
        let mut cache = self.cached.lock().await;
        let found = |cache: &KeyCache| cache.keys.as_ref().and_then(|(set, _)| find(set, kid, alg));
        let stale = cache
            .keys
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() >= JWKS_MAX_AGE);
        let may_fetch = cache
            .attempted
            .is_none_or(|at| at.elapsed() >= JWKS_REFRESH_MIN);
        if (stale || found(&cache).is_none()) && may_fetch {
            cache.attempted = Some(Instant::now());
            match self.fetch().await {
                Ok(set) => cache.keys = Some((set, Instant::now())),
                Err(err) if cache.keys.is_none() => return Err(err),
                Err(_) => {} // keep serving the keys we have
            }
        }
        match found(&cache) {
            Some(key) => key,
            None if cache.keys.is_none() => Err(TokenError::KeysUnavailable),
            None => Err(TokenError::UnknownKey),
        }
    }

    async fn fetch(&self) -> Result<JwkSet, TokenError> {
        let unavailable = |err: String| {
            tracing::warn!(url = %self.url, error = %err, "cannot fetch the JWKS");
            TokenError::KeysUnavailable
        };
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status())));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(unavailable(format!("over {MAX_JWKS_BYTES} bytes")));
        }
        serde_json::from_slice(&body).map_err(|e| unavailable(e.to_string()))
    }
}

fn find(
    set: &JwkSet,
    kid: Option<&str>,
    alg: Algorithm,
) -> Option<Result<DecodingKey, TokenError>> {
    let family = |jwk: &&jsonwebtoken::jwk::Jwk| {
        matches!(
            (&jwk.algorithm, alg),
            (
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_),
                Algorithm::RS256
            ) | (
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_),
                Algorithm::ES256
            )
        )
    };
    let jwk = match kid {
        Some(kid) => set.find(kid).filter(|jwk| family(jwk))?,
        None => {
            let mut candidates = set.keys.iter().filter(|jwk| family(jwk));
            let only = candidates.next()?;
            if candidates.next().is_some() {
                return None; // ambiguous: the token must say which key
            }
            only
        }
    };
    Some(DecodingKey::from_jwk(jwk).map_err(|_| TokenError::UnknownKey))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(JwtSettings {
            secret: Some("backend-secret-of-at-least-32-chars!".into()),
            jwks_url: None,
            audience: "rally".into(),
            issuer: Some("https://backend.example".into()),
            leeway: Duration::from_secs(30),
        })
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn mint(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn good() -> serde_json::Value {
        json!({"sub": "user-42", "name": "Ada", "aud": "rally", "iss": "https://backend.example",
               "exp": now() + 600, "campaigns": {"spring-launch": "editor"}})
    }

    #[tokio::test]
    async fn hs256_tokens_are_checked_claim_by_claim() {
        let v = verifier();
        let secret = "backend-secret-of-at-least-32-chars!";
        let ok = v.verify(&mint(good(), secret)).await.unwrap();
        assert_eq!(ok.actor.user_id.as_str(), "user-42");
        assert_eq!(ok.actor.display_name, "Ada");
        assert_eq!(
            ok.grants.get(&CampaignId::parse("spring-launch").unwrap()),
            Some(&Role::Editor)
        );

        let with = |key: &str, value: serde_json::Value| {
            let mut claims = good();
            claims[key] = value;
            claims
        };
        let without = |key: &str| {
            let mut claims = good();
            claims.as_object_mut().unwrap().remove(key);
            claims
        };
        let cases: Vec<(serde_json::Value, &str, TokenError)> =
            vec![
            (good(), "wrong secret", TokenError::BadSignature),
            (with("exp", json!(now() - 31)), secret, TokenError::Expired),
            (with("nbf", json!(now() + 31)), secret, TokenError::NotYetValid),
            (with("aud", json!("someone-else")), secret, TokenError::WrongAudience),
            (with("iss", json!("https://evil.example")), secret, TokenError::WrongIssuer),
            (without("exp"), secret, TokenError::Claim("exp is missing".into())),
            (without("aud"), secret, TokenError::Claim("aud is missing".into())),
            (
                with("sub", json!("has spaces")),
                secret,
                TokenError::Claim(
                    "sub: user id must be 1-40 characters of ASCII letters, digits, '_' and '-'"
                        .into(),
                ),
            ),
            (
                with("sub", json!("apikey-0a1b2c3d4e5f")),
                secret,
                TokenError::Claim(
                    "sub: apikey-0a1b2c3d4e5f is reserved for API keys and the server's operator"
                        .into(),
                ),
            ),
            (
                with("sub", json!("operator")),
                secret,
                TokenError::Claim(
                    "sub: operator is reserved for API keys and the server's operator".into(),
                ),
            ),
        ];
        for (claims, key, expected) in cases {
            let key = if key == "wrong secret" {
                "another-secret-of-at-least-32-chars!!"
            } else {
                key
            };
            assert_eq!(
                v.verify(&mint(claims.clone(), key)).await,
                Err(expected),
                "{claims}"
            );
        }
        // Skew within the leeway passes.
        assert!(v
            .verify(&mint(with("exp", json!(now() - 5)), secret))
            .await
            .is_ok());
        let unnamed = v.verify(&mint(without("name"), secret)).await.unwrap();
        assert_eq!(
            unnamed.actor.display_name, "user-42",
            "the name defaults to sub"
        );
    }

    #[tokio::test]
    async fn alg_none_and_keys_of_the_wrong_family_are_refused() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let v = verifier();
        let body = URL_SAFE_NO_PAD.encode(good().to_string());
        let none = format!(
            "{}.{body}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#)
        );
        assert_eq!(v.verify(&none).await, Err(TokenError::Malformed));
        // RS256 without a JWKS configured: no key can check it.
        let rs = format!(
            "{}.{body}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#)
        );
        assert_eq!(v.verify(&rs).await, Err(TokenError::UnknownKey));
        let hs512 = format!(
            "{}.{body}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS512"}"#)
        );
        assert_eq!(v.verify(&hs512).await, Err(TokenError::Algorithm));
        assert_eq!(v.verify("not a token").await, Err(TokenError::Malformed));
    }
}
