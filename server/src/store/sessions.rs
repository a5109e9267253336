//! Where server-side sessions are kept: one record per signed-in browser or client, found by its
//! id (every authenticated request) and by its user (the account's list of sessions).
//!
//! Both stores implement [`SessionStore`]: the embedded one in its redb file, the Redis one as a
//! key per session that Redis expires at the session's end (so nothing needs sweeping there).

use rally_app::model::{Timestamp, UserId};
use serde::{Deserialize, Serialize};

use super::StoreFuture;

/// One session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Random, 128 bits, hex. Tokens name it; it is shown to its owner to tell sessions apart.
    pub id: String,
    pub user_id: UserId,
    pub display_name: String,
    /// What signed in, in a few words ("Chrome on Linux"), from the `User-Agent`.
    pub device: String,
    pub started_at: Timestamp,
    /// When the session was last used (updated at most once a minute).
    pub last_seen_at: Timestamp,
    /// The session's end however active it is (its lifetime).
    pub expires_at: Timestamp,
    /// The session's end if it is not used again (last use + the idle expiry).
    pub idle_until: Timestamp,
}

impl SessionRecord {
    /// When the session ends unless it is used again: the earlier of its two limits.
    pub fn ends_at(&self) -> Timestamp {
        self.expires_at.min(self.idle_until)
    }
}

/// Durable session records. A session that is deleted is gone for good: nothing may bring it back
/// (that is what makes signing out final).
pub trait SessionStore: Send + Sync + 'static {
    /// Keep a new session.
    fn insert_session(&self, record: SessionRecord) -> StoreFuture<'_, ()>;

    /// Replace the record of a session that still exists and say so; a session deleted meanwhile
    /// stays deleted (`false`).
    fn update_session(&self, record: SessionRecord) -> StoreFuture<'_, bool>;

    /// The session's record, or None once it was deleted. A record past its
    /// [`SessionRecord::ends_at`] may still be returned until swept: callers check the time.
    fn session(&self, id: &str) -> StoreFuture<'_, Option<SessionRecord>>;

    /// Delete a session; its record if it existed.
    fn delete_session(&self, id: &str) -> StoreFuture<'_, Option<SessionRecord>>;

    /// The user's sessions, in no particular order (ended ones may be included until swept).
    fn user_sessions(&self, user: &UserId) -> StoreFuture<'_, Vec<SessionRecord>>;

    /// Delete every session that ended before `now`; how many were deleted.
    fn sweep_sessions(&self, now: Timestamp) -> StoreFuture<'_, usize>;
}
