//! API keys: credentials for other systems (a CMS, a scheduler, a public page's backend) on the
//! HTTP API and event streams, where a person would use their session.
//!
//! - A key's token is `rk_<id>_<secret>`: the id (48 random bits, hex) finds the record, the
//!   secret (256 random bits, hex) proves it. Only the SHA-256 of the secret is stored, so the
//!   store's contents cannot be replayed; a plain hash is enough because the secret is random
//!   and long, not a password (no dictionary to try), and it keeps every request one hash away.
//! - Every request made with a key reads its record, so a revoked key is refused at once on every
//!   instance; an open event stream re-checks its key when it records the key's use (at least
//!   every [`USE_RECORDED_EVERY`]) and ends if it was revoked.
//! - A key acts as itself (`apikey-<id>`, named by the key's name in events and presence), never
//!   as the person who made it. On the campaigns it covers it has the role its access gives
//!   ([`KeyScope::role_on`]) and no other (see `campaigns::access`); elsewhere the API refuses it
//!   (403) before looking anything up. A key an owner made works only while they own the
//!   campaign.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rally_app::model::{Actor, CampaignId, Role, Timestamp, UserId};
use rally_app::protocol::api_keys::MAX_KEY_NAME_CHARS;
use rally_app::protocol::api_keys::{KeyAccess, KeyReach, NewApiKey};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{self, TokenError};
use crate::clock;
use crate::store::api_keys::{ApiKeyRecord, ApiKeyStore, MAX_API_KEYS};
use crate::store::StoreError;

/// What every key token starts with, so a server (and a secret scanner) can tell one at a glance.
pub const TOKEN_PREFIX: &str = "rk_";
/// A key's use is written down at most this often (its last use is to the minute).
pub const USE_RECORDED_EVERY: Duration = Duration::from_secs(60);
/// Most keys one person may have made (admins: see [`MAX_API_KEYS`]).
pub const MAX_KEYS_PER_CREATOR: usize = 100;
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

/// Where a key works and what it may do there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScope {
    /// The key's id (an open stream re-checks that it still exists).
    pub key_id: String,
    pub access: KeyAccess,
    /// None: every campaign.
    pub campaigns: Option<Arc<BTreeSet<CampaignId>>>,
    /// The owner the key rests on (see [`ApiKeyRecord::made_by_owner`]).
    pub made_by_owner: Option<UserId>,
}

impl KeyScope {
    /// Whether the key works on `campaign` at all.
    pub fn covers(&self, campaign: &CampaignId) -> bool {
        self.campaigns
            .as_ref()
            .is_none_or(|campaigns| campaigns.contains(campaign))
    }

    /// The role the key has on `campaign`: an editor's to write, a viewer's to read (which makes
    /// it a member, so it sees private campaigns it covers); none where it does not work.
    pub fn role_on(&self, campaign: &CampaignId) -> Option<Role> {
        self.covers(campaign).then_some(match self.access {
            KeyAccess::Read => Role::Viewer,
            KeyAccess::Write => Role::Editor,
        })
    }

    pub fn may_write(&self) -> bool {
        self.access == KeyAccess::Write
    }
}

/// Why a key token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum KeyRefused {
    /// Malformed, revoked, or not the key's secret: 401.
    #[error(transparent)]
    Rejected(#[from] TokenError),
    /// The store could not be reached: 503, try again.
    #[error("cannot check the API key: {0}")]
    Unavailable(#[from] StoreError),
}

/// A key that checked out: who it acts as, and where.
#[derive(Debug, Clone)]
pub struct VerifiedKey {
    pub actor: Actor,
    pub scope: KeyScope,
}

/// In what right someone makes a key: an owner's key rests on their ownership and counts against
/// the limits; an admin's and the operator's rest on nothing and are not limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MadeAs {
    Owner,
    Admin,
    Operator,
}

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
    #[error("{0}")]
    TooMany(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The user id keys made from the command line are made by.
pub const OPERATOR_ID: &str = "operator";
/// What every key's user id starts with.
const KEY_USER_PREFIX: &str = "apikey-";

/// Whether `user` is an id Rally gives keys and the operator, which no person may have (a
/// backend's token naming one is refused).
pub fn is_reserved(user: &UserId) -> bool {
    user.as_str() == OPERATOR_ID || user.as_str().starts_with(KEY_USER_PREFIX)
}

/// Whether a bearer token is an API key's (rather than a session's or a backend's).
pub fn is_key_token(token: &str) -> bool {
    token.starts_with(TOKEN_PREFIX)
}

/// The id and secret a key token carries.
fn parse_token(token: &str) -> Result<(&str, &str), TokenError> {
    let rest = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(TokenError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(TokenError::Malformed)?;
    let hex = |text: &str, bytes: usize| {
        text.len() == bytes * 2 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if hex(id, ID_BYTES) && hex(secret, SECRET_BYTES) {
        Ok((id, secret))
    } else {
        Err(TokenError::Malformed)
    }
}

fn secret_hash(secret: &str) -> String {
    auth::hex(&Sha256::digest(secret.as_bytes()))
}

/// Who a key acts as.
pub fn key_actor(record: &ApiKeyRecord) -> Actor {
    Actor {
        user_id: UserId::parse(&format!("{KEY_USER_PREFIX}{}", record.id))
            .expect("key ids are hex"),
        display_name: record.name.clone(),
    }
}

/// API keys: make, check, list, revoke. Cheap to clone.
#[derive(Clone)]
pub struct ApiKeys {
    store: Arc<dyn ApiKeyStore>,
}

impl ApiKeys {
    pub fn new(store: Arc<dyn ApiKeyStore>) -> Self {
        ApiKeys { store }
    }

    /// Make a key named `name` for `reach`, by `created_by`; the key and its token (which is
    /// not kept: this is the only time anyone sees it). Whether `created_by` may make it is the
    /// caller's to check.
    pub async fn create(
        &self,
        name: String,
        access: KeyAccess,
        reach: KeyReach,
        (created_by, made_as): (Actor, MadeAs),
        now: Timestamp,
    ) -> Result<NewApiKey, CreateKeyError> {
        if made_as == MadeAs::Owner {
            let existing = self.store.api_keys().await?;
            if existing.len() >= MAX_API_KEYS {
                return Err(CreateKeyError::TooMany(format!(
                    "this server keeps at most {MAX_API_KEYS} API keys; ask an admin to revoke some"
                )));
            }
            let mine = existing
                .iter()
                .filter(|key| key.created_by.user_id == created_by.user_id)
                .count();
            if mine >= MAX_KEYS_PER_CREATOR {
                return Err(CreateKeyError::TooMany(format!(
                    "you have {MAX_KEYS_PER_CREATOR} API keys, the most one person may make; revoke some first"
                )));
            }
        }
        debug_assert!(name.chars().count() <= MAX_KEY_NAME_CHARS);
        let id = auth::hex(&clock::random_bytes::<ID_BYTES>());
        let secret = auth::hex(&clock::random_bytes::<SECRET_BYTES>());
        let record = ApiKeyRecord {
            id: id.clone(),
            name,
            secret_sha256: secret_hash(&secret),
            access,
            campaigns: match reach {
                KeyReach::All => None,
                KeyReach::Campaigns(campaigns) => Some(campaigns),
            },
            made_by_owner: (made_as == MadeAs::Owner).then(|| created_by.user_id.clone()),
            created_by,
            created_at: now,
            last_used_at: None,
        };
        self.store.insert_api_key(record.clone()).await?;
        tracing::info!(key = %id, "API key made");
        Ok(NewApiKey {
            key: record.summary(),
            token: format!("{TOKEN_PREFIX}{id}_{secret}"),
        })
    }

    /// What a key token grants, if the key exists and the secret is its own; the use is
    /// recorded (at most once per [`USE_RECORDED_EVERY`], off the request's path).
    pub async fn verify(&self, token: &str, now: Timestamp) -> Result<VerifiedKey, KeyRefused> {
        let (id, secret) = parse_token(token)?;
        let record = self.store.api_key(id).await?.ok_or(TokenError::Revoked)?;
        let matches: bool = secret_hash(secret)
            .as_bytes()
            .ct_eq(record.secret_sha256.as_bytes())
            .into();
        if !matches {
            return Err(TokenError::BadSignature.into());
        }
        let stale = record
            .last_used_at
            .is_none_or(|at| Duration::from_nanos(now.nanos_since(at)) >= USE_RECORDED_EVERY);
        if stale {
            let (keys, id) = (self.clone(), record.id.clone());
            tokio::spawn(async move {
                if let Err(error) = keys.touch(&id, now).await {
                    tracing::debug!(%error, "cannot record an API key's use");
                }
            });
        }
        Ok(VerifiedKey {
            actor: key_actor(&record),
            scope: KeyScope {
                key_id: record.id.clone(),
                access: record.access,
                campaigns: record.campaigns.map(Arc::new),
                made_by_owner: record.made_by_owner,
            },
        })
    }

    /// Record a use of the key; false once it was revoked.
    pub async fn touch(&self, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        self.store.touch_api_key(id, now).await
    }

    /// Every key.
    pub async fn all(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.store.api_keys().await
    }

    pub async fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.store.api_key(id).await
    }

    /// Revoke a key: refused from now on, everywhere. Its record if it existed.
    pub async fn revoke(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let revoked = self.store.delete_api_key(id).await?;
        if revoked.is_some() {
            tracing::info!(key = %id, "API key revoked");
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    fn id(text: &str) -> CampaignId {
        CampaignId::parse(text).unwrap()
    }

    #[test]
    fn a_scope_covers_its_campaigns_with_the_role_its_access_gives() {
        let listed = Some(Arc::new(BTreeSet::from([id("launch")])));
        // (access, campaigns, asked about) → role
        let cases = [
            (
                KeyAccess::Read,
                listed.clone(),
                "launch",
                Some(Role::Viewer),
            ),
            (
                KeyAccess::Write,
                listed.clone(),
                "launch",
                Some(Role::Editor),
            ),
            (KeyAccess::Write, listed.clone(), "sale", None),
            (KeyAccess::Read, None, "sale", Some(Role::Viewer)),
            (KeyAccess::Write, None, "anything", Some(Role::Editor)),
        ];
        for (access, campaigns, asked, role) in cases {
            let scope = KeyScope {
                key_id: "k".into(),
                access,
                campaigns,
                made_by_owner: None,
            };
            assert_eq!(scope.role_on(&id(asked)), role, "{scope:?} on {asked}");
            assert_eq!(scope.covers(&id(asked)), role.is_some());
        }
    }

    #[test]
    fn only_well_formed_tokens_are_looked_up() {
        let (good_id, good_secret) = ("0a1b2c3d4e5f", "ab".repeat(SECRET_BYTES));
        let good = format!("rk_{good_id}_{good_secret}");
        assert_eq!(parse_token(&good).unwrap(), (good_id, good_secret.as_str()));
        for bad in [
            "rk_".to_owned(),
            format!("rk_{good_id}"),
            format!("rk_{good_id}_{}", &good_secret[1..]),
            format!("rk_{}_{good_secret}", "0A1B2C3D4E5F"),
            format!("rk_{good_id}_{good_secret}x"),
            format!("rk_{good_id}__{good_secret}"),
            format!("xx_{good_id}_{good_secret}"),
        ] {
            assert!(parse_token(&bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_key_works_until_revoked_and_only_with_its_own_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let keys = ApiKeys::new(Arc::new(store));
        let ada = Actor {
            user_id: UserId::parse("ada").unwrap(),
            display_name: "Ada".into(),
        };
        let now = clock::now();
        let made = keys
            .create(
                "CMS".into(),
                KeyAccess::Write,
                KeyReach::Campaigns(BTreeSet::from([id("launch")])),
                (ada.clone(), MadeAs::Owner),
                now,
            )
            .await
            .unwrap();
        assert!(made.token.starts_with("rk_"));
        let stored = keys.get(&made.key.id).await.unwrap().unwrap();
        assert!(
            !stored.secret_sha256.is_empty() && !made.token.contains(&stored.secret_sha256),
            "only a hash of the secret is kept"
        );

        let verified = keys.verify(&made.token, now).await.unwrap();
        assert_eq!(verified.actor.display_name, "CMS");
        assert_eq!(
            verified.actor.user_id.as_str(),
            format!("apikey-{}", made.key.id)
        );
        let scope = verified.scope;
        assert_eq!(scope.made_by_owner, Some(ada.user_id.clone()));
        assert_eq!(scope.role_on(&id("launch")), Some(Role::Editor));
        assert_eq!(scope.role_on(&id("sale")), None);

        // The first use is recorded (off the request's path).
        for _ in 0..100 {
            if keys.get(&made.key.id).await.unwrap().unwrap().last_used_at == Some(now) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            keys.get(&made.key.id).await.unwrap().unwrap().last_used_at,
            Some(now)
        );

        let forged = format!("{}{}", &made.token[..made.token.len() - 1], {
            if made.token.ends_with('0') {
                '1'
            } else {
                '0'
            }
        });
        assert!(matches!(
            keys.verify(&forged, now).await,
            Err(KeyRefused::Rejected(TokenError::BadSignature))
        ));

        assert!(keys.revoke(&made.key.id).await.unwrap().is_some());
        assert!(matches!(
            keys.verify(&made.token, now).await,
            Err(KeyRefused::Rejected(TokenError::Revoked))
        ));
        assert!(
            !keys.touch(&made.key.id, now).await.unwrap(),
            "a use never brings a revoked key back"
        );
        assert!(keys.get(&made.key.id).await.unwrap().is_none());
        assert!(keys.revoke(&made.key.id).await.unwrap().is_none());
    }
}
