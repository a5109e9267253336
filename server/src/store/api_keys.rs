//! Where API keys are kept: one record per key, found by its id (every request made with it) and
//! listed whole (the owners' and admins' lists — keys are few: see [`MAX_API_KEYS`]).
//!
//! Both stores implement [`ApiKeyStore`]: the embedded one in a redb table, the Redis one in one
//! hash, so every instance sees a key the moment it is made or revoked.

use std::collections::BTreeSet;

use rally_app::model::{Actor, CampaignId, Timestamp, UserId};
use rally_app::protocol::api_keys::{ApiKeySummary, KeyAccess};
use serde::{Deserialize, Serialize};

use super::StoreFuture;

/// Most keys one server keeps (each is under 8 KiB: a name, at most 100 campaign ids).
pub const MAX_API_KEYS: usize = 10_000;

/// One key as stored. Never its token: only a hash of the token's secret part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Random, 48 bits, hex; the token's first part, shown in lists to tell keys apart.
    pub id: String,
    pub name: String,
    /// SHA-256 of the token's secret part, hex.
    pub secret_sha256: String,
    pub access: KeyAccess,
    /// The campaigns it works on; None: all of them.
    pub campaigns: Option<BTreeSet<CampaignId>>,
    pub created_by: Actor,
    /// The owner whose ownership the key rests on: its maker, when they made it as the owner of
    /// its campaigns; it works on a campaign only while they own it. None for an admin's or the
    /// operator's key.
    #[serde(default)]
    pub made_by_owner: Option<UserId>,
    pub created_at: Timestamp,
    /// When it was last used (recorded at most once a minute).
    pub last_used_at: Option<Timestamp>,
}

impl ApiKeyRecord {
    /// The key as lists show it.
    pub fn summary(&self) -> ApiKeySummary {
        ApiKeySummary {
            id: self.id.clone(),
            name: self.name.clone(),
            access: self.access,
            campaigns: self.campaigns.iter().flatten().cloned().collect(),
            all_campaigns: self.campaigns.is_none(),
            created_by: self.created_by.clone(),
            created_at: self.created_at,
            last_used_at: self.last_used_at,
        }
    }
}

/// Durable key records. A deleted key is gone for good: nothing may bring it back (that is what
/// makes revoking final).
pub trait ApiKeyStore: Send + Sync + 'static {
    /// Keep a new key.
    fn insert_api_key(&self, record: ApiKeyRecord) -> StoreFuture<'_, ()>;

    /// The key's record, or None once it was deleted.
    fn api_key(&self, id: &str) -> StoreFuture<'_, Option<ApiKeyRecord>>;

    /// Every key, in no particular order.
    fn api_keys(&self) -> StoreFuture<'_, Vec<ApiKeyRecord>>;

    /// Record a use at `at` of a key that still exists and say so; a key deleted meanwhile
    /// stays deleted (`false`).
    fn touch_api_key(&self, id: &str, at: Timestamp) -> StoreFuture<'_, bool>;

    /// Delete a key; its record if it existed.
    fn delete_api_key(&self, id: &str) -> StoreFuture<'_, Option<ApiKeyRecord>>;
}
