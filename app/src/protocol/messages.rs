//! Typed requests a client sends and the payloads the server answers with.
//!
//! [`decode_request`] turns one text frame into a [`Request`] or a [`RejectedFrame`] that already
//! says how to answer: which type the `failed` reply carries, the request id to echo, and the error.
//! The server never has to guess how to reply to garbage.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::campaign::{self, CampaignRef, Subscribe};
use super::history::{self, HistoryQuery, RevertCampaign, VersionQuery};
use super::media::{self, IceCandidate, MediaJoin, SessionDescription};
use super::ops::OPS_SUBSCRIBE;
use super::{Envelope, ErrorBody, ErrorCode, EventState, EventType};
use crate::model::{CreateCampaign, RequestId, Timestamp, Write};

/// The reply type for frames that cannot be attributed to any operation (not JSON, no valid
/// `type`): `system:frame:v1:failed`.
pub const FRAME_FAILED: EventType = EventType::new("system", "frame", 1, EventState::Failed);
/// `system:ping:v1:requested`: liveness check and round-trip measurement.
pub const PING_REQUESTED: EventType = EventType::new("system", "ping", 1, EventState::Requested);

/// A decoded client request: what to do, and the id to echo on its reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub event_type: EventType,
    pub request_id: Option<RequestId>,
    pub body: ClientRequest,
}

/// Every operation a client can request, with its typed payload. The server decodes frames
/// into these ([`decode_request`]); the browser builds them and sends [`ClientRequest::to_frame`].
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    Ping(Empty),
    Create(CreateCampaign),
    Subscribe(Subscribe),
    Unsubscribe(CampaignRef),
    Snapshot(CampaignRef),
    /// `campaign:update`, `campaign:feature`, `campaign:config` and `campaign:text`.
    Write(Write),
    OpsSubscribe(Empty),
    MediaJoin(MediaJoin),
    MediaPublish(SessionDescription),
    MediaAnswer(SessionDescription),
    MediaCandidate(IceCandidate),
    MediaLeave(CampaignRef),
    History(HistoryQuery),
    Version(VersionQuery),
    Revert(RevertCampaign),
}

impl ClientRequest {
    /// The `requested` type this request travels as.
    pub fn event_type(&self) -> EventType {
        match self {
            ClientRequest::Ping(_) => PING_REQUESTED,
            ClientRequest::Create(_) => campaign::CREATE,
            ClientRequest::Subscribe(_) => campaign::SUBSCRIBE,
            ClientRequest::Unsubscribe(_) => campaign::UNSUBSCRIBE,
            ClientRequest::Snapshot(_) => campaign::SNAPSHOT,
            ClientRequest::Write(Write::Update(_)) => campaign::UPDATE,
            ClientRequest::Write(Write::Feature(_)) => campaign::FEATURE,
            ClientRequest::Write(Write::Config(_)) => campaign::CONFIG,
            ClientRequest::Write(Write::Text(_)) => campaign::TEXT,
            ClientRequest::Write(Write::Member(_)) => campaign::MEMBER,
            ClientRequest::Write(Write::Handover(_)) => campaign::HANDOVER,
            ClientRequest::Write(Write::Revert(_)) => history::REVERT,
            ClientRequest::OpsSubscribe(_) => OPS_SUBSCRIBE,
            ClientRequest::MediaJoin(_) => media::JOIN,
            ClientRequest::MediaPublish(_) => media::PUBLISH,
            ClientRequest::MediaAnswer(_) => media::ANSWER,
            ClientRequest::MediaCandidate(_) => media::CANDIDATE,
            ClientRequest::MediaLeave(_) => media::LEAVE,
            ClientRequest::History(_) => history::HISTORY,
            ClientRequest::Version(_) => history::VERSION,
            ClientRequest::Revert(_) => history::REVERT,
        }
    }

    /// The text frame that carries this request with `request_id`.
    pub fn to_frame(&self, request_id: &RequestId) -> String {
        fn frame<P: Serialize>(event_type: EventType, payload: &P, id: &RequestId) -> String {
            let envelope = Envelope::new(event_type, payload).with_request_id(Some(id.clone()));
            serde_json::to_string(&envelope).expect("protocol types always serialize")
        }
        let event_type = self.event_type();
        match self {
            ClientRequest::Ping(p) | ClientRequest::OpsSubscribe(p) => {
                frame(event_type, p, request_id)
            }
            ClientRequest::Create(p) => frame(event_type, p, request_id),
            ClientRequest::Subscribe(p) => frame(event_type, p, request_id),
            ClientRequest::Unsubscribe(p)
            | ClientRequest::Snapshot(p)
            | ClientRequest::MediaLeave(p) => frame(event_type, p, request_id),
            ClientRequest::Write(Write::Update(p)) => frame(event_type, p, request_id),
            ClientRequest::Write(Write::Feature(p)) => frame(event_type, p, request_id),
            ClientRequest::Write(Write::Config(p)) => frame(event_type, p, request_id),
            ClientRequest::Write(Write::Text(p)) => frame(event_type, p, request_id),
            ClientRequest::Write(Write::Member(p)) => frame(event_type, p, request_id),
            ClientRequest::Write(Write::Handover(p)) => frame(event_type, p, request_id),
            ClientRequest::MediaJoin(p) => frame(event_type, p, request_id),
            ClientRequest::MediaPublish(p) | ClientRequest::MediaAnswer(p) => {
                frame(event_type, p, request_id)
            }
            ClientRequest::MediaCandidate(p) => frame(event_type, p, request_id),
            ClientRequest::History(p) => frame(event_type, p, request_id),
            ClientRequest::Version(p) => frame(event_type, p, request_id),
            ClientRequest::Revert(p) => frame(event_type, p, request_id),
            ClientRequest::Write(Write::Revert(p)) => frame(event_type, &p.request, request_id),
        }
    }
}

impl From<Write> for ClientRequest {
    fn from(write: Write) -> Self {
        ClientRequest::Write(write)
    }
}

/// A payload with no fields, `{}` (`system:ping`, `ops:subscribe`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `system:ping:v1:success` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingReply {
    pub server_time: Timestamp,
}

/// A frame the server will not act on, with everything needed to answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedFrame {
    /// The `failed` type to reply with: the request's own operation when it could be read,
    /// [`FRAME_FAILED`] otherwise.
    pub reply_type: EventType,
    pub request_id: Option<RequestId>,
    pub error: ErrorBody,
}

impl RejectedFrame {
    fn unattributed(request_id: Option<RequestId>, message: String) -> Self {
        RejectedFrame {
            reply_type: FRAME_FAILED,
            request_id,
            error: ErrorBody::new(ErrorCode::Invalid, message),
        }
    }
}

/// The part of an envelope readable even when the rest is wrong, to attribute the error.
#[derive(Deserialize)]
struct Lenient {
    #[serde(rename = "type")]
    event_type: Option<serde_json::Value>,
    request_id: Option<serde_json::Value>,
}

/// Decode one text frame from a client.
pub fn decode_request(text: &str) -> Result<Request, RejectedFrame> {
    let envelope: Envelope = match serde_json::from_str(text) {
        Ok(envelope) => envelope,
        Err(err) => return Err(explain_bad_envelope(text, err)),
    };
    let Envelope {
        event_type,
        payload,
        request_id,
        ..
    } = envelope;
    let reject = |code, message: String| RejectedFrame {
        reply_type: event_type.with_state(EventState::Failed),
        request_id: request_id.clone(),
        error: ErrorBody::new(code, message),
    };
    if event_type.state() != EventState::Requested {
        return Err(reject(
            ErrorCode::Invalid,
            format!("clients may only send `requested` events, got `{event_type}`"),
        ));
    }
    let invalid = |message| reject(ErrorCode::Invalid, message);
    let body = match (
        event_type.service(),
        event_type.action(),
        event_type.version(),
    ) {
        ("system", "ping", 1) => typed_payload(payload).map(ClientRequest::Ping),
        ("campaign", "create", 1) => typed_payload(payload).map(ClientRequest::Create),
        ("campaign", "subscribe", 1) => typed_payload(payload).map(ClientRequest::Subscribe),
        ("campaign", "unsubscribe", 1) => typed_payload(payload).map(ClientRequest::Unsubscribe),
        ("campaign", "snapshot", 1) => typed_payload(payload).map(ClientRequest::Snapshot),
        ("campaign", "update", 1) => {
            typed_payload(payload).map(|w| ClientRequest::Write(Write::Update(w)))
        }
        ("campaign", "feature", 1) => {
            typed_payload(payload).map(|w| ClientRequest::Write(Write::Feature(w)))
        }
        ("campaign", "config", 1) => {
            typed_payload(payload).map(|w| ClientRequest::Write(Write::Config(w)))
        }
        ("campaign", "text", 1) => {
            typed_payload(payload).map(|w| ClientRequest::Write(Write::Text(w)))
        }
        ("campaign", "member", 1) => {
            typed_payload(payload).map(|w| ClientRequest::Write(Write::Member(w)))
        }
        ("campaign", "handover", 1) => {
            typed_payload(payload).map(|w| ClientRequest::Write(Write::Handover(w)))
        }
        ("ops", "subscribe", 1) => typed_payload(payload).map(ClientRequest::OpsSubscribe),
        ("media", "join", 1) => typed_payload(payload).map(ClientRequest::MediaJoin),
        ("media", "publish", 1) => typed_payload(payload).map(ClientRequest::MediaPublish),
        ("media", "answer", 1) => typed_payload(payload).map(ClientRequest::MediaAnswer),
        ("media", "candidate", 1) => typed_payload(payload).map(ClientRequest::MediaCandidate),
        ("media", "leave", 1) => typed_payload(payload).map(ClientRequest::MediaLeave),
        ("campaign", "history", 1) => typed_payload(payload).map(ClientRequest::History),
        ("campaign", "version", 1) => typed_payload(payload).map(ClientRequest::Version),
        ("campaign", "revert", 1) => typed_payload(payload).map(ClientRequest::Revert),
        _ => {
            return Err(reject(
                ErrorCode::Invalid,
                format!("unknown message type `{event_type}`"),
            ))
        }
    }
    .map_err(invalid)?;
    Ok(Request {
        event_type,
        request_id,
        body,
    })
}

/// A payload is a JSON object: serde would also fill a struct from an array, by position.
fn typed_payload<T: DeserializeOwned>(payload: serde_json::Value) -> Result<T, String> {
    if !payload.is_object() {
        return Err("invalid payload: expected a JSON object".into());
    }
    serde_json::from_value(payload).map_err(|err| format!("invalid payload: {err}"))
}

/// Find the most specific explanation and reply type for an envelope that did not decode.
fn explain_bad_envelope(text: &str, err: serde_json::Error) -> RejectedFrame {
    let Ok(lenient) = serde_json::from_str::<Lenient>(text) else {
        return RejectedFrame::unattributed(None, format!("frame is not a JSON envelope: {err}"));
    };
    let request_id = lenient
        .request_id
        .as_ref()
        .and_then(|v| v.as_str())
        .and_then(|s| RequestId::parse(s).ok());
    let event_type = lenient
        .event_type
        .as_ref()
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<EventType>().ok());
    match event_type {
        Some(event_type) => RejectedFrame {
            reply_type: event_type.with_state(EventState::Failed),
            request_id,
            error: ErrorBody::new(ErrorCode::Invalid, format!("invalid envelope: {err}")),
        },
        None => RejectedFrame::unattributed(request_id, format!("invalid envelope: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_ping() {
        let request =
            decode_request(r#"{"type":"system:ping:v1:requested","payload":{},"request_id":"a"}"#)
                .unwrap();
        assert_eq!(request.body, ClientRequest::Ping(Empty {}));
        assert_eq!(request.request_id.unwrap().as_str(), "a");
    }

    /// What the browser sends is what the server reads back.
    #[test]
    fn every_request_survives_its_frame() {
        let c = || crate::model::CampaignId::parse("c").unwrap();
        let requests = [
            ClientRequest::Ping(Empty {}),
            ClientRequest::Create(
                serde_json::from_str(r#"{"campaign_id":"c","title":"T"}"#).unwrap(),
            ),
            ClientRequest::Subscribe(Subscribe {
                campaign_id: c(),
                since_version: Some(4),
            }),
            ClientRequest::Unsubscribe(CampaignRef { campaign_id: c() }),
            ClientRequest::Snapshot(CampaignRef { campaign_id: c() }),
            ClientRequest::Write(Write::Update(
                serde_json::from_str(
                    r#"{"campaign_id":"c","updates":{"title":"x"},"base_version":2}"#,
                )
                .unwrap(),
            )),
            ClientRequest::Write(Write::Feature(
                serde_json::from_str(r#"{"campaign_id":"c","op":"add","features":["qa"]}"#)
                    .unwrap(),
            )),
            ClientRequest::Write(Write::Config(
                serde_json::from_str(
                    r#"{"campaign_id":"c","section":"ui","values":{"a":[1]},"mode":"replace"}"#,
                )
                .unwrap(),
            )),
            ClientRequest::Write(Write::Text(
                serde_json::from_str(
                    r#"{"campaign_id":"c","field":"description","edit":[3,"ab",-2],"base_version":7,"edit_id":"e-1"}"#,
                )
                .unwrap(),
            )),
            ClientRequest::Write(Write::Member(
                serde_json::from_str(r#"{"campaign_id":"c","user_id":"u1","role":"editor"}"#)
                    .unwrap(),
            )),
            ClientRequest::Write(Write::Handover(
                serde_json::from_str(r#"{"campaign_id":"c","user_id":"u1","base_version":3}"#)
                    .unwrap(),
            )),
            ClientRequest::OpsSubscribe(Empty {}),
            ClientRequest::MediaJoin(MediaJoin { campaign_id: c() }),
            ClientRequest::MediaPublish(SessionDescription {
                campaign_id: c(),
                sdp: "v=0".into(),
            }),
            ClientRequest::MediaAnswer(SessionDescription {
                campaign_id: c(),
                sdp: "v=0".into(),
            }),
            ClientRequest::MediaCandidate(
                serde_json::from_str(
                    r#"{"campaign_id":"c","transport":"publish","candidate":"candidate:1"}"#,
                )
                .unwrap(),
            ),
            ClientRequest::MediaLeave(CampaignRef { campaign_id: c() }),
            ClientRequest::History(HistoryQuery {
                campaign_id: c(),
                before: Some(10),
                limit: Some(5),
                field: Some("config".into()),
                actor: None,
            }),
            ClientRequest::Version(VersionQuery {
                campaign_id: c(),
                version: 3,
            }),
            ClientRequest::Revert(RevertCampaign {
                campaign_id: c(),
                to_version: 3,
                fields: vec![crate::model::ContentField::Title],
                base_version: Some(7),
            }),
        ];
        let id = RequestId::parse("r1").unwrap();
        for request in requests {
            let decoded = decode_request(&request.to_frame(&id)).unwrap();
            assert_eq!(decoded.event_type, request.event_type());
            assert_eq!(decoded.request_id.as_ref(), Some(&id));
            assert_eq!(decoded.body, request);
        }
    }

    fn rejected(text: &str) -> (String, Option<String>, ErrorCode, String) {
        let r = decode_request(text).unwrap_err();
        (
            r.reply_type.to_string(),
            r.request_id.map(|id| id.as_str().to_owned()),
            r.error.code,
            r.error.message,
        )
    }

    #[test]
    fn every_bad_frame_gets_an_attributed_reply() {
        let (ty, id, code, msg) = rejected("not json");
        assert_eq!(
            (ty.as_str(), id, code),
            ("system:frame:v1:failed", None, ErrorCode::Invalid)
        );
        assert!(msg.contains("not a JSON envelope"), "{msg}");

        let (ty, id, _, msg) = rejected(r#"{"type":"Bad:type","payload":{},"request_id":"r9"}"#);
        assert_eq!(
            (ty.as_str(), id.as_deref()),
            ("system:frame:v1:failed", Some("r9"))
        );
        assert!(msg.contains("4 parts"), "{msg}");

        let (ty, id, _, msg) =
            rejected(r#"{"type":"system:ping:v1:requested","payload":{"x":1},"request_id":"r2"}"#);
        assert_eq!(
            (ty.as_str(), id.as_deref()),
            ("system:ping:v1:failed", Some("r2"))
        );
        assert!(msg.contains("unknown field `x`"), "{msg}");

        let (ty, _, _, msg) = rejected(r#"{"type":"system:ping:v1:success","payload":{}}"#);
        assert_eq!(ty, "system:ping:v1:failed");
        assert!(msg.contains("only send `requested`"), "{msg}");

        let (ty, _, _, msg) = rejected(r#"{"type":"system:ping:v9:requested","payload":{}}"#);
        assert_eq!(ty, "system:ping:v9:failed");
        assert!(msg.contains("unknown message type"), "{msg}");

        let (ty, id, _, _) = rejected(r#"{"type":"system:ping:v1:requested","request_id":"r3"}"#);
        assert_eq!(
            (ty.as_str(), id.as_deref()),
            ("system:ping:v1:failed", Some("r3"))
        );

        let (ty, _, _, msg) = rejected(
            r#"{"type":"campaign:create:v1:requested","payload":["pos","title"],"request_id":"r4"}"#,
        );
        assert_eq!(ty, "campaign:create:v1:failed");
        assert!(msg.contains("expected a JSON object"), "{msg}");

        let (ty, id, _, _) =
            rejected(r#"{"type":"system:ping:v1:requested","payload":{},"request_id":""}"#);
        assert_eq!((ty.as_str(), id), ("system:ping:v1:failed", None));
    }
}
