//! Durable campaign storage behind one trait, so the state manager does not care where state lives.
//!
//! The embedded backend (redb, a file under the data directory) is the default; the Redis backend
//! (for several instances) implements the same trait. A `commit` that returns `Ok` is durable:
//! the writer replies success only after it.
//!
//! Each campaign's log is complete: every committed event is kept (what a resuming client may
//! replay is the writer's bounded in-memory history, not the log). Every [`SNAPSHOT_EVERY`]
//! versions a commit also stores the whole state, so reading an old version replays at most that
//! many events (see `campaigns::changelog`); retention forgets the log down to a snapshot (see
//! `campaigns::retention`).

pub mod api_keys;
pub mod embedded;
pub mod migrate;
pub mod redis;
mod redis_integrations;
pub mod sessions;
pub mod webhooks;

use std::future::Future;
use std::pin::Pin;

use std::collections::BTreeMap;

use rally_app::model::{
    CampaignEvent, CampaignId, CampaignState, Invite, InviteId, Member, Role, Timestamp, UserId,
};
use serde::{Deserialize, Serialize};

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
    /// Another instance that kept losing the race holds the turn: wait, catch up, retry.
    #[error("another instance has the turn to commit")]
    NotYourTurn,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<crate::redis::Outage> for StoreError {
    fn from(outage: crate::redis::Outage) -> Self {
        StoreError::Unavailable(outage.to_string())
    }
}

/// What the store keeps for a campaign: the public state plus what only the server needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignRecord {
    pub state: CampaignState,
    /// For each field (`title`, `features`, `config.ui_content`, …) the version that last changed
    /// it: the basis of `base_version` conflict checks.
    pub field_versions: BTreeMap<String, u64>,
    /// Roles granted before members became part of the state (`state.members`): read from old
    /// records, moved into the state by [`CampaignRecord::migrated`], never written again.
    #[serde(default, rename = "members", skip_serializing)]
    pub legacy_members: BTreeMap<UserId, Role>,
    /// Invite links made before this moment no longer work: set when a member is removed or
    /// loses a role, so a link they kept cannot bring them back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invites_valid_from: Option<Timestamp>,
    /// The version of the latest removal of a config section: the changed-at version of any
    /// `config.<section>` without its own entry in `field_versions` (a removed section's entry
    /// goes, so removing sections under new names cannot grow the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_removed_at: Option<u64>,
    /// The campaign's invite links (terms and who used them; never the links themselves), for
    /// its owners. Kept up to date by the events that make, use and withdraw them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub invites: BTreeMap<InviteId, Invite>,
}

impl CampaignRecord {
    /// The record with roles stored before members were part of the state moved into
    /// `state.members` (known by user id until their next change).
    pub fn migrated(mut self) -> Self {
        for (user, role) in std::mem::take(&mut self.legacy_members) {
            let display_name = user.to_string();
            self.state
                .members
                .entry(user)
                .or_insert(Member { display_name, role });
        }
        self
    }
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
    /// The committing instance (for turn-taking under contention).
    pub instance: u32,
}

/// A commit that reaches a multiple of this version stores a snapshot of the state.
pub const SNAPSHOT_EVERY: u64 = 100;

impl Commit {
    /// Whether this commit stores a snapshot of its record's state: it crosses a multiple of
    /// [`SNAPSHOT_EVERY`] (a batch may cross one without landing on it; the snapshot is then of
    /// its last version).
    pub fn takes_snapshot(&self) -> bool {
        self.record.state.version / SNAPSHOT_EVERY > self.expected_version / SNAPSHOT_EVERY
    }
}

pub trait Store: Send + Sync + 'static {
    /// The campaign and at most `history_len` of its latest events, or None if it does not exist.
    fn load(&self, id: &CampaignId, history_len: usize) -> StoreFuture<'_, Option<Loaded>>;

    /// Store a new campaign with its creation event. `AlreadyExists` if the id is taken.
    fn create(&self, record: CampaignRecord, event: CampaignEvent) -> StoreFuture<'_, ()>;

    /// Apply one commit atomically and durably, checking `expected_version`.
    fn commit(&self, commit: Commit) -> StoreFuture<'_, ()>;

    /// Claim the next commit of a campaign for `instance` for a moment: an instance that keeps
    /// losing the version race to busier ones claims the turn, so it cannot starve. Other
    /// instances' commits answer [`StoreError::NotYourTurn`] until it commits (or the claim
    /// expires). A single-instance store has no races and ignores this.
    fn claim_turn(&self, id: &CampaignId, instance: u32) -> StoreFuture<'_, ()>;

    /// The events after `after_version`, ascending, at most `max`; `None` when the kept history
    /// no longer reaches back to `after_version + 1` (the caller must reload instead).
    fn events_since(
        &self,
        id: &CampaignId,
        after_version: u64,
        max: usize,
    ) -> StoreFuture<'_, Option<Vec<CampaignEvent>>>;

    /// The newest stored snapshot at or before `version`: the campaign's whole state at the
    /// snapshot's own version. None when there is none that old (replay from the creation event).
    fn snapshot_at_or_before(
        &self,
        id: &CampaignId,
        version: u64,
    ) -> StoreFuture<'_, Option<CampaignState>>;

    /// At most `limit` events with versions below `before`, newest first (empty for a campaign
    /// that does not exist).
    fn events_before(
        &self,
        id: &CampaignId,
        before: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<CampaignEvent>>;

    /// The oldest version whose event the log still keeps (None: no such campaign).
    fn oldest_event(&self, id: &CampaignId) -> StoreFuture<'_, Option<u64>>;

    /// Forget the log up to `version`, a version with a stored snapshot: its events up to and
    /// including it and the snapshots before it go; the snapshot at `version` stays, so every
    /// version from it on can still be read. Idempotent.
    fn forget_before(&self, id: &CampaignId, version: u64) -> StoreFuture<'_, ()>;

    /// The stored version of a campaign, or None if it does not exist.
    fn version(&self, id: &CampaignId) -> StoreFuture<'_, Option<u64>>;

    /// Every campaign's record, for listings, ordered by id (who sees which is the caller's
    /// question).
    fn list(&self) -> StoreFuture<'_, Vec<CampaignRecord>>;

    /// A named secret (session signing key), created with `generate` on first use.
    fn secret(&self, name: &str, generate: fn() -> Vec<u8>) -> StoreFuture<'_, Vec<u8>>;

    /// Cheap round trip for readiness checks.
    fn check(&self) -> StoreFuture<'_, ()>;

    /// Finish queued writes and stop accepting new ones (graceful shutdown).
    fn close(&self) -> StoreFuture<'_, ()>;
}
