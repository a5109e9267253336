//! The envelope every WebSocket frame is, in both directions (the source design's shape):
//!
//! ```json
//! {"type": "system:ping:v1:requested", "payload": {}, "metadata": {}, "request_id": "r1"}
//! ```

use serde::{Deserialize, Serialize};

use super::EventType;
use crate::model::{EventId, RequestId, Timestamp};

/// One frame. `P` is the payload: `serde_json::Value` while the type is still unknown, a typed
/// struct once it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<P = serde_json::Value> {
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub payload: P,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
}

/// Facts about a frame rather than its content. The server sets `event_id` and `timestamp` on
/// everything it sends; on frames from clients both are optional and unknown keys are ignored, so
/// clients may add their own tracing fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<EventId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

impl<P> Envelope<P> {
    pub fn new(event_type: EventType, payload: P) -> Self {
        Envelope {
            event_type,
            payload,
            metadata: Metadata::default(),
            request_id: None,
        }
    }

    pub fn with_request_id(mut self, request_id: Option<RequestId>) -> Self {
        self.request_id = request_id;
        self
    }

    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EventState;
    use proptest::prelude::*;

    #[test]
    fn matches_the_documented_shape() {
        let envelope = Envelope::new(
            EventType::new("system", "ping", 1, EventState::Success),
            serde_json::json!({"ok": true}),
        )
        .with_request_id(Some(RequestId::parse("r1").unwrap()))
        .with_metadata(Metadata {
            event_id: Some(EventId::new(1, 2, 3)),
            timestamp: Some(Timestamp::from_unix_nanos(1_500_000_000)),
        });
        let json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "system:ping:v1:success",
                "payload": {"ok": true},
                "metadata": {
                    "event_id": "0000000000000001-00000002-00000003",
                    "timestamp": "1970-01-01T00:00:01.500000000Z"
                },
                "request_id": "r1"
            })
        );
    }

    #[test]
    fn rejects_unknown_top_level_fields_but_not_unknown_metadata() {
        let extra = r#"{"type":"system:ping:v1:requested","payload":{},"typo":1}"#;
        assert!(serde_json::from_str::<Envelope>(extra).is_err());
        let trace = r#"{"type":"system:ping:v1:requested","payload":{},"metadata":{"trace":"x"}}"#;
        assert!(serde_json::from_str::<Envelope>(trace).is_ok());
    }

    fn envelope() -> impl Strategy<Value = Envelope> {
        (
            "[a-z][a-z0-9_]{0,10}",
            "[a-z][a-z0-9_]{0,10}",
            1u32..1000,
            proptest::sample::select(EventState::ALL.to_vec()),
            proptest::option::of("[!-~]{1,64}"),
            proptest::option::of(any::<(u64, u32, u32)>()),
            proptest::option::of(0u64..=u64::MAX / 2),
            proptest::collection::btree_map("[a-z]{1,8}", any::<i64>(), 0..4),
        )
            .prop_map(
                |(service, action, version, state, request_id, event_id, ts, payload)| {
                    let event_type = format!("{service}:{action}:v{version}:{state}")
                        .parse()
                        .unwrap();
                    Envelope {
                        event_type,
                        payload: serde_json::to_value(payload).unwrap(),
                        metadata: Metadata {
                            event_id: event_id.map(|(n, i, s)| EventId::new(n, i, s)),
                            timestamp: ts.map(Timestamp::from_unix_nanos),
                        },
                        request_id: request_id.map(|r| RequestId::parse(&r).unwrap()),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn serde_round_trips(envelope in envelope()) {
            let json = serde_json::to_string(&envelope).unwrap();
            prop_assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), envelope);
        }
    }
}
