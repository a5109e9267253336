//! The media relay's vocabulary: who may publish, what a joined participant asks of its session
//! ([`Call`]) and what comes back ([`CallReply`]), how a refusal reads ([`MediaError`]). Shared by
//! the gateway, the relay, the sessions and the cluster, and by the wire form between instances.

use std::net::IpAddr;

use rally_app::model::CampaignId;
use rally_app::protocol::media::{
    IceCandidate, IceServer, MediaJoined, Transport, PARTICIPANTS_MAX,
};
use rally_app::protocol::{ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A participant in one campaign's media session: unique across instances (the instance number
/// is its high half), since in Redis mode a session holds participants of several instances.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct ParticipantId(pub u64);

impl std::fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// Signaling frames that may wait for one participant's connection before the participant is
/// considered gone (an SDP offer, a track list: a handful per change).
pub const PUSH_BUFFER: usize = 64;
/// Why a session's participants are let go when it moves to another instance.
pub const MOVED: &str = "the media relay moved; join again";

/// Who may go live in a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Publishers {
    /// Owners and editors.
    Editors,
    /// Everyone who may watch the campaign.
    Everyone,
}

/// The relay's settings (from `--media-*` and `--ice-servers`).
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Address the relay's UDP sockets bind to; `0.0.0.0` means every non-loopback interface.
    pub bind_ip: IpAddr,
    /// Address announced instead of the bound one, for a relay behind 1:1 NAT.
    pub public_ip: Option<IpAddr>,
    /// Inclusive UDP port range; each peer connection takes one. `None`: ephemeral ports.
    pub udp_ports: Option<(u16, u16)>,
    /// STUN/TURN servers handed to browsers.
    pub ice_servers: Vec<IceServer>,
    pub publishers: Publishers,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind_ip: IpAddr::from([0, 0, 0, 0]),
            public_ip: None,
            udp_ports: None,
            ice_servers: Vec::new(),
            publishers: Publishers::Editors,
        }
    }
}

/// Why a media request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("join this campaign's media session first (media:join)")]
    NotJoined,
    #[error("this connection is already in this campaign's media session")]
    AlreadyJoined,
    #[error("this connection is in the media session of campaign {0}; leave it first")]
    InAnotherSession(CampaignId),
    #[error("the media session is full ({PARTICIPANTS_MAX} participants)")]
    SessionFull,
    #[error("you may watch but not go live in this campaign")]
    PublishForbidden,
    #[error("at most {max} published tracks per participant")]
    TooManyTracks { max: usize },
    #[error("the {what} is larger than {max} bytes")]
    TooLarge { what: &'static str, max: usize },
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    #[error("there is no {0:?} connection yet for this candidate")]
    NoTransport(Transport),
    #[error("no offer is waiting for an answer")]
    NoOfferOut,
    #[error("the media relay failed: {0}")]
    Relay(String),
    #[error("the media relay is shutting down")]
    Closed,
    #[error("{}", MOVED)]
    Moved,
    #[error("the instance running this media session does not answer; join again shortly")]
    OwnerUnreachable,
    #[error("cannot tell which instance runs this media session: {0}")]
    Unavailable(String),
    /// The instance running the session refused (its reason, as the client should see it).
    #[error("{}", .0.message)]
    Remote(ErrorBody),
}

impl From<MediaError> for ErrorBody {
    fn from(err: MediaError) -> Self {
        let code = match &err {
            MediaError::NotJoined | MediaError::NoTransport(_) => ErrorCode::NotFound,
            MediaError::AlreadyJoined
            | MediaError::InAnotherSession(_)
            | MediaError::NoOfferOut => ErrorCode::Conflict,
            MediaError::SessionFull | MediaError::TooManyTracks { .. } => ErrorCode::LimitExceeded,
            MediaError::PublishForbidden => ErrorCode::Forbidden,
            MediaError::TooLarge { .. } => ErrorCode::TooLarge,
            MediaError::InvalidSdp(_) | MediaError::InvalidCandidate(_) => ErrorCode::Invalid,
            MediaError::Relay(_) => ErrorCode::Internal,
            MediaError::Closed
            | MediaError::Moved
            | MediaError::OwnerUnreachable
            | MediaError::Unavailable(_) => ErrorCode::Unavailable,
            MediaError::Remote(body) => return body.clone(),
        };
        ErrorBody::new(code, err.to_string())
    }
}

/// Someone joining a media session.
pub struct Joining {
    pub participant: ParticipantId,
    pub display_name: String,
    pub can_publish: bool,
    /// Where the session's pushes for this participant go (offers, track lists, the end).
    pub pushes: mpsc::Sender<Utf8Bytes>,
}

/// A joined participant's media request, for the session wherever it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    /// A publisher's offer; answered with the relay's SDP answer.
    Publish {
        participant: ParticipantId,
        sdp: String,
    },
    /// A subscriber's answer to the relay's latest offer.
    Answer {
        participant: ParticipantId,
        sdp: String,
    },
    Candidate {
        participant: ParticipantId,
        candidate: IceCandidate,
    },
    Leave {
        participant: ParticipantId,
    },
}

impl Call {
    pub fn participant(&self) -> ParticipantId {
        match self {
            Call::Publish { participant, .. }
            | Call::Answer { participant, .. }
            | Call::Candidate { participant, .. }
            | Call::Leave { participant } => *participant,
        }
    }
}

/// What a [`Call`] returns, from the session wherever it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", content = "value", rename_all = "snake_case")]
pub enum CallReply {
    Joined(MediaJoined),
    Sdp(String),
    Done,
}

impl CallReply {
    pub fn joined(self) -> Result<MediaJoined, MediaError> {
        match self {
            CallReply::Joined(joined) => Ok(joined),
            other => Err(unexpected(&other)),
        }
    }

    pub fn sdp(self) -> Result<String, MediaError> {
        match self {
            CallReply::Sdp(sdp) => Ok(sdp),
            other => Err(unexpected(&other)),
        }
    }

    pub fn done(self) -> Result<(), MediaError> {
        match self {
            CallReply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(answer: &CallReply) -> MediaError {
    MediaError::Relay(format!("the media session replied out of turn: {answer:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_from_the_owner_keeps_its_code() {
        let body = ErrorBody::from(MediaError::Remote(MediaError::PublishForbidden.into()));
        assert_eq!(body, ErrorBody::from(MediaError::PublishForbidden));
    }

    #[test]
    fn a_reply_of_the_wrong_kind_is_a_relay_error() {
        assert_eq!(CallReply::Done.done(), Ok(()));
        assert!(matches!(CallReply::Done.sdp(), Err(MediaError::Relay(_))));
    }
}
