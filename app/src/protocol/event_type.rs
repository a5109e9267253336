//! Canonical event types: `{service}:{action}:v{N}:{state}`.
//!
//! Every message on Rally's wire carries one of these in its `type` field. The grammar is strict so
//! that a type has exactly one spelling: parsing and printing round-trip, and anything that would not
//! print back identically (upper case, `v01`, `v0`, extra or missing parts) is rejected with a typed
//! [`EventTypeError`] instead of being "normalized". Clients can therefore compare types as strings.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest service or action name accepted. Keeps types short on the wire and in metric labels.
pub const MAX_NAME_LEN: usize = 32;
/// Longest whole event type accepted, checked before any other parsing work.
pub const MAX_EVENT_TYPE_LEN: usize = 2 * MAX_NAME_LEN + 24;

/// Where an event is in its life: a client *requests*, the server may report it *started*, and it
/// ends as *success* or *failed*; *completed* closes long-running work (a media session, a stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventState {
    Requested,
    Started,
    Success,
    Failed,
    Completed,
}

impl EventState {
    pub const ALL: [EventState; 5] = [
        EventState::Requested,
        EventState::Started,
        EventState::Success,
        EventState::Failed,
        EventState::Completed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventState::Requested => "requested",
            EventState::Started => "started",
            EventState::Success => "success",
            EventState::Failed => "failed",
            EventState::Completed => "completed",
        }
    }
}

impl fmt::Display for EventState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventState {
    type Err = EventTypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| EventTypeError::UnknownState(s.to_owned()))
    }
}

/// Why a string is not a canonical event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventTypeError {
    #[error("event type is longer than {MAX_EVENT_TYPE_LEN} bytes")]
    TooLong,
    #[error("event type must have 4 parts `service:action:vN:state`, found {0}")]
    PartCount(usize),
    #[error("invalid {part} name {name:?}: expected 1-{MAX_NAME_LEN} chars of a-z, 0-9 and '_', starting with a letter")]
    InvalidName { part: &'static str, name: String },
    #[error(
        "invalid version {0:?}: expected `v` followed by a number from 1 without leading zeros"
    )]
    InvalidVersion(String),
    #[error("unknown state {0:?}: expected one of requested, started, success, failed, completed")]
    UnknownState(String),
}

/// A canonical event type. Build known types with [`EventType::new`] (const, no allocation) and
/// parse received ones with [`str::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventType {
    service: Cow<'static, str>,
    action: Cow<'static, str>,
    version: u32,
    state: EventState,
}

impl EventType {
    /// A type from static parts. Panics at compile time (in const context) or at first use if a
    /// name is not canonical, so a typo in a constant cannot reach the wire.
    pub const fn new(
        service: &'static str,
        action: &'static str,
        version: u32,
        state: EventState,
    ) -> Self {
        assert!(is_valid_name(service), "invalid service name");
        assert!(is_valid_name(action), "invalid action name");
        assert!(version >= 1, "versions start at 1");
        EventType {
            service: Cow::Borrowed(service),
            action: Cow::Borrowed(action),
            version,
            state,
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn action(&self) -> &str {
        &self.action
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn state(&self) -> EventState {
        self.state
    }

    /// The same service, action and version in another state: how a reply is derived from its
    /// request (`campaign:update:v1:requested` → `campaign:update:v1:failed`).
    pub fn with_state(&self, state: EventState) -> Self {
        EventType {
            state,
            ..self.clone()
        }
    }

    /// True when `self` and `other` name the same operation (service, action, version).
    pub fn same_operation(&self, other: &EventType) -> bool {
        self.service == other.service
            && self.action == other.action
            && self.version == other.version
    }
}

const fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_NAME_LEN || !bytes[0].is_ascii_lowercase() {
        return false;
    }
    let mut i = 1;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

fn parse_name(part: &'static str, name: &str) -> Result<Cow<'static, str>, EventTypeError> {
    if is_valid_name(name) {
        Ok(Cow::Owned(name.to_owned()))
    } else {
        Err(EventTypeError::InvalidName {
            part,
            name: name.to_owned(),
        })
    }
}

fn parse_version(text: &str) -> Result<u32, EventTypeError> {
    let invalid = || EventTypeError::InvalidVersion(text.to_owned());
    let digits = text.strip_prefix('v').ok_or_else(invalid)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !canonical {
        return Err(invalid());
    }
    digits.parse::<u32>().map_err(|_| invalid())
}

impl FromStr for EventType {
    type Err = EventTypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_EVENT_TYPE_LEN {
            return Err(EventTypeError::TooLong);
        }
        let parts: Vec<&str> = s.split(':').collect();
        let [service, action, version, state] = parts[..] else {
            return Err(EventTypeError::PartCount(parts.len()));
        };
        Ok(EventType {
            service: parse_name("service", service)?,
            action: parse_name("action", action)?,
            version: parse_version(version)?,
            state: state.parse()?,
        })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:v{}:{}",
            self.service, self.action, self.version, self.state
        )
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints_a_canonical_type() {
        let parsed: EventType = "campaign:update:v1:requested".parse().unwrap();
        assert_eq!(
            parsed,
            EventType::new("campaign", "update", 1, EventState::Requested)
        );
        assert_eq!(parsed.to_string(), "campaign:update:v1:requested");
        assert_eq!(
            parsed.with_state(EventState::Failed).to_string(),
            "campaign:update:v1:failed"
        );
    }

    #[test]
    fn rejects_non_canonical_spellings() {
        let cases: &[(&str, EventTypeError)] = &[
            ("", EventTypeError::PartCount(1)),
            ("campaign:update:v1", EventTypeError::PartCount(3)),
            ("campaign:update:v1:success:x", EventTypeError::PartCount(5)),
            (
                "Campaign:update:v1:success",
                EventTypeError::InvalidName {
                    part: "service",
                    name: "Campaign".into(),
                },
            ),
            (
                "campaign::v1:success",
                EventTypeError::InvalidName {
                    part: "action",
                    name: "".into(),
                },
            ),
            (
                "campaign:1update:v1:success",
                EventTypeError::InvalidName {
                    part: "action",
                    name: "1update".into(),
                },
            ),
            (
                "campaign:update:1:success",
                EventTypeError::InvalidVersion("1".into()),
            ),
            (
                "campaign:update:v0:success",
                EventTypeError::InvalidVersion("v0".into()),
            ),
            (
                "campaign:update:v01:success",
                EventTypeError::InvalidVersion("v01".into()),
            ),
            (
                "campaign:update:v:success",
                EventTypeError::InvalidVersion("v".into()),
            ),
            (
                "campaign:update:v+1:success",
                EventTypeError::InvalidVersion("v+1".into()),
            ),
            (
                "campaign:update:v99999999999:success",
                EventTypeError::InvalidVersion("v99999999999".into()),
            ),
            (
                "campaign:update:v1:done",
                EventTypeError::UnknownState("done".into()),
            ),
            (
                "campaign:update:v1:SUCCESS",
                EventTypeError::UnknownState("SUCCESS".into()),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                input.parse::<EventType>().as_ref(),
                Err(expected),
                "input {input:?}"
            );
        }
        let long = format!("{}:update:v1:success", "a".repeat(100));
        assert_eq!(long.parse::<EventType>(), Err(EventTypeError::TooLong));
    }

    #[test]
    fn serde_rejects_invalid_types_with_the_parse_error() {
        let err = serde_json::from_str::<EventType>("\"campaign:update:v1:done\"").unwrap_err();
        assert!(err.to_string().contains("unknown state \"done\""), "{err}");
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_]{0,31}"
    }

    fn state() -> impl Strategy<Value = EventState> {
        proptest::sample::select(EventState::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn print_then_parse_is_identity(service in name(), action in name(), version in 1u32.., state in state()) {
            let text = format!("{service}:{action}:v{version}:{state}");
            let parsed: EventType = text.parse().unwrap();
            prop_assert_eq!(parsed.service(), service.as_str());
            prop_assert_eq!(parsed.version(), version);
            prop_assert_eq!(parsed.state(), state);
            prop_assert_eq!(parsed.to_string(), text);
        }

        #[test]
        fn parse_then_print_is_identity_for_anything_accepted(text in "[a-z0-9_:v]{0,40}") {
            if let Ok(parsed) = text.parse::<EventType>() {
                prop_assert_eq!(parsed.to_string(), text);
            }
        }

        #[test]
        fn serde_round_trips(service in name(), action in name(), version in 1u32.., state in state()) {
            let parsed: EventType = format!("{service}:{action}:v{version}:{state}").parse().unwrap();
            let json = serde_json::to_string(&parsed).unwrap();
            let back: EventType = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, parsed);
        }
    }
}
