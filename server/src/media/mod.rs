//! The media relay: an SFU that forwards each publisher's RTP to everyone else in the campaign,
//! without transcoding.
//!
//! - [`call`]: the vocabulary — settings, calls and their replies, refusals.
//! - [`forward`]: the forwarding table, sans-IO — who receives what, when to ask for keyframes.
//! - `relay`: [`MediaRelay`], which routes each request to its campaign's session.
//! - `session`: one task per campaign with participants, owning their peer connections and
//!   carrying out the table's decisions (signaling).
//! - `routing`: which tracks each subscriber receives (the session, continued).
//! - `track`: the packet path — one forwarding task per published track.
//! - `peer`: how the relay's peer connections are built (codecs, interceptors, ports, NAT).
//! - [`feedback`]: the interceptor that lets keyframe requests through to the relay.
//! - `sdp`: checks on a browser's SDP before WebRTC parses it.
//! - `census`: how many participants and tracks the sessions hold.
//! - [`lease`]: Redis mode — which instance runs a campaign's session.
//! - [`cluster`]: Redis mode — signaling relayed to the session's instance from the others.
//!
//! Signaling arrives on the WebSocket (`media:*` requests, see docs/protocol.md); the gateway
//! calls [`MediaRelay`].

pub mod call;
mod census;
pub mod cluster;
pub mod feedback;
pub mod forward;
pub mod lease;
mod peer;
mod relay;
mod routing;
pub mod sdp;
mod session;
mod track;

pub use call::{
    Call, CallReply, Joining, MediaConfig, MediaError, ParticipantId, Publishers, PUSH_BUFFER,
};
pub use census::Census;

pub use relay::MediaRelay;
