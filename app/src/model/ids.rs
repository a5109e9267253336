//! Identifiers that cross the wire. Each validates on construction and on deserialization, so a
//! value of these types is always well formed: code that holds a `CampaignId` never re-checks it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest campaign id: fits a DNS label, a Redis key part and a URL segment without escaping.
pub const MAX_CAMPAIGN_ID_LEN: usize = 63;

/// A campaign's id: a slug of 1–63 lowercase ASCII letters, digits and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CampaignId(String);

/// Why a string is not a valid [`CampaignId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CampaignIdError {
    #[error("campaign id is empty")]
    Empty,
    #[error("campaign id is {0} characters long; at most {MAX_CAMPAIGN_ID_LEN} are allowed")]
    TooLong(usize),
    #[error("campaign id may only contain lowercase letters, digits and '-', found {0:?}")]
    InvalidChar(char),
}

impl CampaignId {
    pub fn parse(text: &str) -> Result<Self, CampaignIdError> {
        if text.is_empty() {
            return Err(CampaignIdError::Empty);
        }
        let chars = text.chars().count();
        if chars > MAX_CAMPAIGN_ID_LEN {
            return Err(CampaignIdError::TooLong(chars));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(CampaignIdError::InvalidChar(bad));
        }
        Ok(CampaignId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CampaignId {
    type Err = CampaignIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CampaignId::parse(s)
    }
}

impl fmt::Display for CampaignId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for CampaignId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for CampaignId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        CampaignId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A user's stable id, assigned by the server when a session is created: `u` and 16 hex digits.
/// Accepts 1-40 characters of ASCII letters, digits, `_` and `-` so other issuers fit too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user id must be 1-40 characters of ASCII letters, digits, '_' and '-'")]
pub struct UserIdError;

impl UserId {
    pub fn parse(text: &str) -> Result<Self, UserIdError> {
        let valid = !text.is_empty()
            && text.len() <= 40
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(UserId(text.to_owned()))
        } else {
            Err(UserIdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        UserId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A client-chosen name for one write (the HTTP API's `Idempotency-Key`). It travels into the
/// event the write becomes, so the write sent again after a lost answer lands once. 1–64 ASCII
/// letters, digits, `_`, `-`, `.` and `:` (a UUID fits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1-64 characters of ASCII letters, digits, '_', '-', '.' and ':'")]
pub struct IdempotencyKeyError;

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<Self, IdempotencyKeyError> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if valid {
            Ok(IdempotencyKey(text.to_owned()))
        } else {
            Err(IdempotencyKeyError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for IdempotencyKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        IdempotencyKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A client-chosen id for one text edit. It travels into the event the edit becomes, so a client
/// recognises its own edits in the stream, and an edit sent twice (after a reconnect) lands once.
/// 1–40 ASCII letters, digits, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EditId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("edit_id must be 1-40 characters of ASCII letters, digits, '_' and '-'")]
pub struct EditIdError;

impl EditId {
    pub fn parse(text: &str) -> Result<Self, EditIdError> {
        let valid = !text.is_empty()
            && text.len() <= 40
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(EditId(text.to_owned()))
        } else {
            Err(EditIdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EditId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EditId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        EditId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Longest request id a client may send; it is echoed on the reply and nowhere else.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// A client-chosen correlation id, echoed on the reply to the request that carried it.
/// 1–64 printable ASCII characters (no spaces), so it is safe to echo and to show.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RequestId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request_id must be 1-{MAX_REQUEST_ID_LEN} printable ASCII characters without spaces")]
pub struct RequestIdError;

impl RequestId {
    pub fn parse(text: &str) -> Result<Self, RequestIdError> {
        let valid = !text.is_empty()
            && text.len() <= MAX_REQUEST_ID_LEN
            && text.bytes().all(|b| b.is_ascii_graphic());
        if valid {
            Ok(RequestId(text.to_owned()))
        } else {
            Err(RequestIdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        RequestId::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn campaign_id_validation_table() {
        assert_eq!(
            CampaignId::parse("spring-launch-2027").unwrap().as_str(),
            "spring-launch-2027"
        );
        assert!(CampaignId::parse("a").is_ok());
        assert!(CampaignId::parse(&"a".repeat(63)).is_ok());
        assert_eq!(CampaignId::parse(""), Err(CampaignIdError::Empty));
        assert_eq!(
            CampaignId::parse(&"a".repeat(64)),
            Err(CampaignIdError::TooLong(64))
        );
        assert_eq!(
            CampaignId::parse("Spring"),
            Err(CampaignIdError::InvalidChar('S'))
        );
        assert_eq!(
            CampaignId::parse("a b"),
            Err(CampaignIdError::InvalidChar(' '))
        );
        assert_eq!(
            CampaignId::parse("a_b"),
            Err(CampaignIdError::InvalidChar('_'))
        );
        assert_eq!(
            CampaignId::parse("café"),
            Err(CampaignIdError::InvalidChar('é'))
        );
        assert_eq!(
            CampaignId::parse("a/b"),
            Err(CampaignIdError::InvalidChar('/'))
        );
    }

    #[test]
    fn serde_validates_campaign_ids() {
        assert!(serde_json::from_str::<CampaignId>("\"ok-1\"").is_ok());
        let err = serde_json::from_str::<CampaignId>("\"Not OK\"").unwrap_err();
        assert!(err.to_string().contains("lowercase"), "{err}");
        assert!(serde_json::from_str::<CampaignId>("42").is_err());
    }

    #[test]
    fn request_id_validation() {
        assert!(RequestId::parse("req-1").is_ok());
        assert!(RequestId::parse("").is_err());
        assert!(RequestId::parse("has space").is_err());
        assert!(RequestId::parse(&"x".repeat(65)).is_err());
    }

    proptest! {
        #[test]
        fn valid_campaign_ids_round_trip(text in "[a-z0-9-]{1,63}") {
            let id = CampaignId::parse(&text).unwrap();
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(&json, &format!("\"{text}\""));
            prop_assert_eq!(serde_json::from_str::<CampaignId>(&json).unwrap(), id);
        }

        #[test]
        fn anything_accepted_is_a_slug(text in "\\PC{0,70}") {
            if let Ok(id) = CampaignId::parse(&text) {
                prop_assert!(id.as_str().len() <= MAX_CAMPAIGN_ID_LEN);
                prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            }
        }
    }
}

/// The unique id of an event Rally emitted: when (nanoseconds since the epoch), which server
/// instance, and that instance's sequence number. Time first, so ids sort by issue time; instance and
/// sequence make two ids from the same nanosecond, on one instance or several, still differ.
///
/// Printed as three fixed-width hex fields, `0187b7f1c2a3d4e5-9f3a01c2-0000002a`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    unix_nanos: u64,
    instance: u32,
    sequence: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event id: expected 16-8-8 lowercase hex digits like 0187b7f1c2a3d4e5-9f3a01c2-0000002a")]
pub struct EventIdError;

impl EventId {
    pub const fn new(unix_nanos: u64, instance: u32, sequence: u32) -> Self {
        EventId {
            unix_nanos,
            instance,
            sequence,
        }
    }

    pub const fn unix_nanos(self) -> u64 {
        self.unix_nanos
    }

    pub const fn instance(self) -> u32 {
        self.instance
    }

    pub const fn sequence(self) -> u32 {
        self.sequence
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:016x}-{:08x}-{:08x}",
            self.unix_nanos, self.instance, self.sequence
        )
    }
}

impl FromStr for EventId {
    type Err = EventIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        fn hex(part: &str, width: usize) -> Result<u64, EventIdError> {
            let canonical = part.len() == width
                && part
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !canonical {
                return Err(EventIdError);
            }
            u64::from_str_radix(part, 16).map_err(|_| EventIdError)
        }
        let mut parts = s.split('-');
        let (Some(nanos), Some(instance), Some(sequence), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(EventIdError);
        };
        Ok(EventId {
            unix_nanos: hex(nanos, 16)?,
            instance: hex(instance, 8)? as u32,
            sequence: hex(sequence, 8)? as u32,
        })
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod event_id_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prints_fixed_width_hex() {
        let id = EventId::new(0x0187_b7f1_c2a3_d4e5, 0x9f3a_01c2, 42);
        assert_eq!(id.to_string(), "0187b7f1c2a3d4e5-9f3a01c2-0000002a");
        assert!("0187b7f1c2a3d4e5-9f3a01c2-0000002A"
            .parse::<EventId>()
            .is_err());
        assert!("0187b7f1c2a3d4e5-9f3a01c2".parse::<EventId>().is_err());
        assert!("0187b7f1c2a3d4e5-9f3a01c2-2a".parse::<EventId>().is_err());
    }

    proptest! {
        #[test]
        fn round_trips_and_sorts_like_its_text(a in any::<(u64, u32, u32)>(), b in any::<(u64, u32, u32)>()) {
            let (x, y) = (EventId::new(a.0, a.1, a.2), EventId::new(b.0, b.1, b.2));
            prop_assert_eq!(x.to_string().parse::<EventId>(), Ok(x));
            prop_assert_eq!(x.cmp(&y), x.to_string().cmp(&y.to_string()));
            let json = serde_json::to_string(&x).unwrap();
            prop_assert_eq!(serde_json::from_str::<EventId>(&json).unwrap(), x);
        }
    }
}
