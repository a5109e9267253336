//! Rally's wire protocol: everything that crosses the WebSocket or the HTTP API is defined here
//! once and compiled into both the server and the browser, so they cannot disagree.

pub mod api_keys;
pub mod campaign;
pub mod close;
mod envelope;
mod error;
mod event_type;
pub mod history;
pub mod invites;
pub mod media;
mod messages;
pub mod ops;
pub mod session;
pub mod webhooks;

pub use envelope::{Envelope, Metadata};
pub use error::{ErrorBody, ErrorCode, ErrorResponse};
pub use event_type::{EventState, EventType, EventTypeError, MAX_EVENT_TYPE_LEN, MAX_NAME_LEN};
pub use messages::{
    decode_request, ClientRequest, Empty, PingReply, RejectedFrame, Request, FRAME_FAILED,
    PING_REQUESTED,
};
