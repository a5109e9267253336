//! How a change made on one instance reaches the others.
//!
//! Within one instance, a campaign's writer broadcasts each change to that instance's
//! subscribers itself. The [`EventBus`] carries only what other instances need to know — "campaign
//! X reached version N", "the viewers of X changed", "a session ended", "a write was refused
//! because of someone's change" — and each instance then reads the events themselves from the
//! shared store (the Redis stream), in version order. A lost notification therefore cannot lose an
//! event: the next one, or the catch-up after a reconnect, fetches everything after the version
//! the instance holds. (A lost `Overruled` note is lost for good: it only tells a person their
//! change was kept, which the state already shows.)
//!
//! Two backends: [`InProcessBus`] (one instance, the default: there is nobody to tell) and
//! [`redis::RedisBus`] (Redis pub/sub for notifications, a hash per campaign for presence).

pub mod redis;

use std::future::Future;
use std::pin::Pin;

use std::time::Duration;

use rally_app::model::{CampaignId, Viewer};
use rally_app::protocol::campaign::Overruled;
use serde::{Deserialize, Serialize};

/// How often writers with viewers refresh their shared presence (well inside the time after
/// which other instances ignore it).
pub const PRESENCE_HEARTBEAT: Duration = Duration::from_secs(10);

pub type BusFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A notification between instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum BusNote {
    /// The campaign reached `version`: its new events are in the store.
    Committed { campaign: CampaignId, version: u64 },
    /// Some instance's viewers of the campaign changed.
    Presence { campaign: CampaignId },
    /// A session ended (signed out or revoked): connections using it must close.
    SessionEnded { session: String },
    /// A write was refused because someone changed the same thing first: push it to followers.
    Overruled {
        campaign: CampaignId,
        overruled: Box<Overruled>,
    },
}

impl BusNote {
    /// The campaign the note is about (none for a session's end).
    pub fn campaign(&self) -> Option<&CampaignId> {
        match self {
            BusNote::Committed { campaign, .. }
            | BusNote::Presence { campaign }
            | BusNote::Overruled { campaign, .. } => Some(campaign),
            BusNote::SessionEnded { .. } => None,
        }
    }
}

/// A note as it travels: who sent it, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentNote {
    /// The sending instance (its event-id instance number); instances ignore their own notes.
    pub from: u32,
    #[serde(flatten)]
    pub note: BusNote,
}

/// What arrives from the bus for the manager to dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A note about a campaign, for its writer.
    Note(BusNote),
    /// A session ended on another instance.
    SessionEnded(String),
    /// Notifications may have been missed (the subscription was re-established): every loaded
    /// campaign must catch up from the store.
    Resync,
}

pub trait EventBus: Send + Sync + 'static {
    /// `in_process` or `redis`, for status and metrics.
    fn kind(&self) -> &'static str;

    /// True when other instances may exist (writers then catch up, share presence, heartbeat).
    fn shared(&self) -> bool;

    /// Tell the other instances. Fire and forget: a failure is counted, and the receivers'
    /// catch-up covers what a lost note would have said.
    fn publish(&self, note: BusNote) -> BusFuture<'_, ()>;

    /// Record this instance's viewers of `campaign` (a capped list) and how many people they
    /// are (0: none) for the others to see.
    fn share_presence(
        &self,
        campaign: &CampaignId,
        viewers: Vec<Viewer>,
        people: u32,
    ) -> BusFuture<'_, ()>;

    /// The viewers other live instances have shared for `campaign`, and how many people.
    fn remote_presence(&self, campaign: &CampaignId) -> BusFuture<'_, (Vec<Viewer>, u32)>;
}

/// One instance: nothing to tell anyone.
pub struct InProcessBus;

impl EventBus for InProcessBus {
    fn kind(&self) -> &'static str {
        "in_process"
    }

    fn shared(&self) -> bool {
        false
    }

    fn publish(&self, _note: BusNote) -> BusFuture<'_, ()> {
        Box::pin(async {})
    }

    fn share_presence(
        &self,
        _campaign: &CampaignId,
        _viewers: Vec<Viewer>,
        _people: u32,
    ) -> BusFuture<'_, ()> {
        Box::pin(async {})
    }

    fn remote_presence(&self, _campaign: &CampaignId) -> BusFuture<'_, (Vec<Viewer>, u32)> {
        Box::pin(async { (Vec::new(), 0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_have_a_compact_wire_form() {
        let envelope = SentNote {
            from: 7,
            note: BusNote::Committed {
                campaign: CampaignId::parse("c").unwrap(),
                version: 12,
            },
        };
        let json = serde_json::to_string(&envelope).unwrap();
        assert_eq!(
            json,
            r#"{"from":7,"k":"committed","campaign":"c","version":12}"#
        );
        assert_eq!(serde_json::from_str::<SentNote>(&json).unwrap(), envelope);
    }
}
