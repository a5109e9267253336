//! Payloads of the `media` service: going live in a campaign through Rally's media relay.
//!
//! Each participant has up to two WebRTC peer connections with the relay, each with one fixed
//! offerer so offers never collide ("glare"):
//! - the **publish** connection carries the participant's camera and microphone *to* the relay;
//!   the browser offers (`media:publish`), the relay answers;
//! - the **subscribe** connection carries everyone else's tracks *from* the relay; the relay
//!   offers (`media:offer` push) whenever the set of tracks changes, the browser answers
//!   (`media:answer`).
//!
//! The relay's SDP already holds its ICE candidates; the browser trickles its own with
//! `media:candidate`. docs/protocol.md shows every message as JSON.

use serde::{Deserialize, Serialize};

use super::{EventState, EventType};
use crate::model::CampaignId;

pub const JOIN: EventType = EventType::new("media", "join", 1, EventState::Requested);
pub const PUBLISH: EventType = EventType::new("media", "publish", 1, EventState::Requested);
pub const ANSWER: EventType = EventType::new("media", "answer", 1, EventState::Requested);
pub const CANDIDATE: EventType = EventType::new("media", "candidate", 1, EventState::Requested);
pub const LEAVE: EventType = EventType::new("media", "leave", 1, EventState::Requested);
/// Pushed with the relay's offer for the subscribe connection; payload [`SessionDescription`].
pub const OFFER_EVENT: EventType = EventType::new("media", "offer", 1, EventState::Success);
/// Pushed whenever publishers or their tracks change; payload [`MediaTracks`].
pub const TRACKS_EVENT: EventType = EventType::new("media", "tracks", 1, EventState::Success);
/// Pushed when the relay ends a participant's media session on its own (the peer connection
/// failed, the server shuts down); payload [`MediaEnded`].
pub const ENDED_EVENT: EventType = EventType::new("media", "session", 1, EventState::Completed);

/// Largest SDP accepted from a client, in bytes.
pub const SDP_MAX_BYTES: usize = 32 * 1024;
/// Longest ICE candidate line accepted from a client, in bytes.
pub const CANDIDATE_MAX_BYTES: usize = 512;
/// Most tracks one participant may publish at once (e.g. camera, microphone, screen + audio).
pub const TRACKS_PER_PARTICIPANT_MAX: usize = 4;
/// Most participants in one campaign's media session.
pub const PARTICIPANTS_MAX: usize = 500;
/// Of those, kept for participants who may go live: watchers alone cannot fill a session.
pub const PUBLISHER_SLOTS: usize = 20;

/// `media:join:v1:requested`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaJoin {
    pub campaign_id: CampaignId,
}

/// `media:join:v1:success`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaJoined {
    pub campaign_id: CampaignId,
    /// This participant's id; remote streams carry their publisher's id as their stream id.
    pub participant_id: String,
    /// Whether this participant may publish (owners and editors by default).
    pub can_publish: bool,
    /// STUN/TURN servers for the browser's `RTCPeerConnection` configuration.
    pub ice_servers: Vec<IceServer>,
    /// Who is live right now.
    pub publishers: Vec<Publisher>,
}

/// One STUN or TURN server, shaped like the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// An SDP offer or answer: `media:publish` (request: offer, reply: answer), `media:offer` (push:
/// offer), `media:answer` (request: answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionDescription {
    pub campaign_id: CampaignId,
    pub sdp: String,
}

/// Which of a participant's two peer connections a candidate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Publish,
    Subscribe,
}

/// `media:candidate:v1:requested`: one trickled ICE candidate from the browser, as its
/// `RTCIceCandidate.toJSON()` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceCandidate {
    pub campaign_id: CampaignId,
    pub transport: Transport,
    pub candidate: String,
    #[serde(default, rename = "sdpMid")]
    pub sdp_mid: Option<String>,
    #[serde(default, rename = "sdpMLineIndex")]
    pub sdp_m_line_index: Option<u16>,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Audio,
    Video,
}

/// One published track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedTrack {
    pub track_id: String,
    pub kind: MediaKind,
}

/// Someone who is live, and what they publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publisher {
    pub participant_id: String,
    pub display_name: String,
    pub tracks: Vec<PublishedTrack>,
}

/// `media:tracks:v1:success`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaTracks {
    pub campaign_id: CampaignId,
    pub publishers: Vec<Publisher>,
}

/// `media:session:v1:completed`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaEnded {
    pub campaign_id: CampaignId,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_use_the_browsers_field_names() {
        let json = r#"{"campaign_id":"c1","transport":"publish",
            "candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host",
            "sdpMid":"0","sdpMLineIndex":0}"#;
        let candidate: IceCandidate = serde_json::from_str(json).unwrap();
        assert_eq!(candidate.transport, Transport::Publish);
        assert_eq!(candidate.sdp_mid.as_deref(), Some("0"));
        assert_eq!(candidate.sdp_m_line_index, Some(0));
        let back = serde_json::to_value(&candidate).unwrap();
        assert_eq!(back["sdpMLineIndex"], 0);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let json = r#"{"campaign_id":"c1","sdp":"v=0","extra":1}"#;
        assert!(serde_json::from_str::<SessionDescription>(json).is_err());
    }
}
