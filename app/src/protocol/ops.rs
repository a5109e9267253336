//! The `ops` service: a live view of one server instance for operators (the `/ops` page).

use serde::{Deserialize, Serialize};

use super::{EventState, EventType};
use crate::model::{CampaignId, Timestamp};

/// `ops:subscribe:v1:requested`, payload `{}`: start receiving samples (admins only, unless the
/// server runs with `--ops-public`). The reply carries recent history.
pub const OPS_SUBSCRIBE: EventType = EventType::new("ops", "subscribe", 1, EventState::Requested);
/// `ops:sample:v1:success`: pushed once a second to ops subscribers; payload [`OpsSample`].
pub const OPS_SAMPLE: EventType = EventType::new("ops", "sample", 1, EventState::Success);

/// The event bus as one instance sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusStatus {
    /// `in_process` (one instance) or `redis`.
    pub kind: String,
    pub connected: bool,
}

/// One second of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpsSample {
    pub at: Timestamp,
    pub connections: u64,
    /// State events written to subscribers' sockets per second.
    pub deliveries_per_sec: f64,
    /// Changes made durable per second.
    pub changes_per_sec: f64,
    /// Change durable → on a subscriber's socket, over this second (ms).
    pub delivery_p50_ms: f64,
    pub delivery_p99_ms: f64,
    /// Write received → acknowledged durable, over this second (ms).
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    /// Busiest loaded campaigns by subscribers.
    pub top_campaigns: Vec<(CampaignId, u32)>,
    pub bus: BusStatus,
    /// RTP packets forwarded per second by the media relay (0 while nobody is live).
    pub media_packets_per_sec: f64,
    pub slow_consumers_total: u64,
}

/// `ops:subscribe:v1:success`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpsHistory {
    /// Oldest first, one per second, up to two minutes.
    pub samples: Vec<OpsSample>,
}
