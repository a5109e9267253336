//! Outgoing frames, serialized once. A broadcast event is encoded a single time and the same bytes
//! (reference-counted) go to every subscriber.

use rally_app::model::{CampaignEvent, RequestId, Timestamp};
use rally_app::protocol::{Envelope, ErrorBody, EventState, EventType, Metadata, RejectedFrame};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// What a campaign broadcasts: one commit's state events in version order (however many writes
/// the commit carried), or one push. A subscriber takes a whole commit in one receive and writes
/// it in one batch, so a channel slot holds a commit, not an event.
pub type Batch = std::sync::Arc<[Frame]>;

/// A batch of one (a push, or a single event).
pub fn single(frame: Frame) -> Batch {
    std::sync::Arc::from([frame])
}

/// One encoded frame for subscribers; `version` is set for state events (ordering and gap checks).
#[derive(Debug, Clone)]
pub struct Frame {
    pub version: Option<u64>,
    pub text: Utf8Bytes,
    /// When a live state event became durable (for the delivery-latency metric); None for
    /// replays and pushes.
    pub durable_at: Option<std::time::Instant>,
    /// The event changed who may see the campaign: a connection checks its access before
    /// delivering it.
    pub changes_access: bool,
}

/// Any envelope, stamped with `timestamp` (and the event id, for state events).
pub fn encode<P: Serialize>(
    event_type: EventType,
    payload: &P,
    request_id: Option<RequestId>,
    metadata: Metadata,
) -> Utf8Bytes {
    let envelope = Envelope::new(event_type, payload)
        .with_request_id(request_id)
        .with_metadata(metadata);
    serde_json::to_string(&envelope)
        .expect("protocol types always serialize")
        .into()
}

/// A reply to a request, stamped with the server's time.
pub fn reply<P: Serialize>(
    event_type: EventType,
    payload: &P,
    request_id: Option<RequestId>,
) -> Utf8Bytes {
    encode(
        event_type,
        payload,
        request_id,
        Metadata {
            event_id: None,
            timestamp: Some(crate::clock::now()),
        },
    )
}

/// The `success` reply to a request of type `requested`.
pub fn success<P: Serialize>(
    requested: &EventType,
    request_id: Option<RequestId>,
    payload: &P,
) -> Utf8Bytes {
    reply(
        requested.with_state(EventState::Success),
        payload,
        request_id,
    )
}

/// The `failed` reply to a request of type `requested`.
pub fn failure(
    requested: &EventType,
    request_id: Option<RequestId>,
    error: &ErrorBody,
) -> Utf8Bytes {
    reply(requested.with_state(EventState::Failed), error, request_id)
}

/// The reply to a request of type `requested`, whichever way it went.
pub fn outcome<P: Serialize>(
    requested: &EventType,
    request_id: Option<RequestId>,
    result: Result<P, ErrorBody>,
) -> Utf8Bytes {
    match result {
        Ok(payload) => success(requested, request_id, &payload),
        Err(error) => failure(requested, request_id, &error),
    }
}

/// The reply to a frame that did not decode into a request.
pub fn rejection(rejected: RejectedFrame) -> Utf8Bytes {
    reply(rejected.reply_type, &rejected.error, rejected.request_id)
}

/// `campaign:state:v1:success` for one applied change.
pub fn state_event(event: &CampaignEvent) -> Frame {
    let text = encode(
        rally_app::protocol::campaign::STATE_EVENT,
        event,
        None,
        Metadata {
            event_id: Some(event.event_id),
            timestamp: Some(event.changed_at),
        },
    );
    Frame {
        version: Some(event.version),
        text,
        durable_at: None,
        changes_access: event.change.changes_access(),
    }
}

/// An unversioned push (presence, subscription ended).
pub fn push<P: Serialize>(event_type: EventType, payload: &P, at: Timestamp) -> Frame {
    Frame {
        version: None,
        durable_at: None,
        changes_access: false,
        text: encode(
            event_type,
            payload,
            None,
            Metadata {
                event_id: None,
                timestamp: Some(at),
            },
        ),
    }
}
