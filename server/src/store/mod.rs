//! Durable campaign storage behind one trait, so the state manager does not care where state lives.
//!
//! The embedded backend (redb, a file under the data directory) is the default; the Redis backend
//! (for several instances) implements the same trait. A `commit` that returns `Ok` is durable:
//! the writer replies success only after it.

pub mod embedded;

use std::future::Future;
use std::pin::Pin;

use rally_app::model::{CampaignEvent, CampaignId};
use rally_app::protocol::campaign::CampaignSummary;

use crate::campaigns::core::CampaignRecord;

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("campaign already exists")]
    AlreadyExists,
    #[error("campaign not found")]
    NotFound,
    /// Someone else changed the campaign since it was loaded (another instance, in Redis mode).
    #[error("stored version is {stored}, expected {expected}")]
    VersionMismatch { expected: u64, stored: u64 },
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// A campaign as loaded: its record and the tail of its history (ascending).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub record: CampaignRecord,
    pub history: Vec<CampaignEvent>,
}

/// One atomic write of a campaign: the new record and the events that led to it.
#[derive(Debug, Clone)]
pub struct Commit {
    pub campaign_id: CampaignId,
    /// The record version the writer started from; the store refuses the commit otherwise.
    pub expected_version: u64,
    pub record: CampaignRecord,
    /// New events, ascending, ending at `record.state.version` (empty for record-only changes
    /// such as role grants).
    pub events: Vec<CampaignEvent>,
    /// Keep at most this many events for the campaign.
    pub history_len: usize,
}

pub trait Store: Send + Sync + 'static {
    /// The campaign and at most `history_len` of its latest events, or None if it does not exist.
    fn load(&self, id: &CampaignId, history_len: usize) -> StoreFuture<'_, Option<Loaded>>;

    /// Store a new campaign with its creation event. `AlreadyExists` if the id is taken.
    fn create(&self, record: CampaignRecord, event: CampaignEvent) -> StoreFuture<'_, ()>;

    /// Apply one commit atomically and durably, checking `expected_version`.
    fn commit(&self, commit: Commit) -> StoreFuture<'_, ()>;

    /// The stored version of a campaign, or None if it does not exist.
    fn version(&self, id: &CampaignId) -> StoreFuture<'_, Option<u64>>;

    /// Every campaign, for listings, ordered by id.
    fn list(&self) -> StoreFuture<'_, Vec<CampaignSummary>>;

    /// A named secret (session signing key), created with `generate` on first use.
    fn secret(&self, name: &str, generate: fn() -> Vec<u8>) -> StoreFuture<'_, Vec<u8>>;

    /// Cheap round trip for readiness checks.
    fn check(&self) -> StoreFuture<'_, ()>;

    /// Finish queued writes and stop accepting new ones (graceful shutdown).
    fn close(&self) -> StoreFuture<'_, ()>;
}
