//! Wall-clock instants with nanosecond precision.
//!
//! On the wire a [`Timestamp`] is an RFC 3339 string in UTC with nine fraction digits
//! (`2026-11-27T11:08:49.123456789Z`). Not a number: nanoseconds since 1970 exceed 2^53, the largest
//! integer a JavaScript client can hold exactly. The conversion is done here (Howard Hinnant's
//! civil-date algorithms) so the WASM client and the server share it without a date crate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANOS_PER_SEC: u64 = 1_000_000_000;
const SECS_PER_DAY: u64 = 86_400;

/// Nanoseconds since the Unix epoch, UTC. Instants before 1970 are not representable (none occur).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {0:?}: expected RFC 3339 UTC like 2026-11-27T11:08:49.123456789Z")]
pub struct TimestampError(String);

impl Timestamp {
    pub const fn from_unix_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    pub const fn unix_nanos(self) -> u64 {
        self.0
    }

    /// Milliseconds since the epoch, for UIs and JavaScript `Date`.
    pub const fn unix_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// Nanoseconds from `earlier` to `self`, zero if `earlier` is later.
    pub const fn nanos_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Days since 1970-01-01 → (year, month, day). Valid for every date this type can hold.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / NANOS_PER_SEC;
        let nanos = self.0 % NANOS_PER_SEC;
        let (year, month, day) = civil_from_days((secs / SECS_PER_DAY) as i64);
        let rem = secs % SECS_PER_DAY;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    /// Accepts `YYYY-MM-DDTHH:MM:SS[.fraction]Z` with 0–9 fraction digits, 1970 onwards.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TimestampError(s.chars().take(64).collect());
        let b = s.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(err());
        }
        let num = |range: std::ops::Range<usize>| -> Result<u64, TimestampError> {
            let part = &s[range];
            if part.bytes().all(|c| c.is_ascii_digit()) {
                part.parse().map_err(|_| err())
            } else {
                Err(err())
            }
        };
        let (year, month, day) = (num(0..4)? as i64, num(5..7)? as u32, num(8..10)? as u32);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if year < 1970 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month)
        {
            return Err(err());
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(err());
        }
        let rest = &s[19..];
        let fraction = match rest.strip_suffix('Z') {
            Some("") => "",
            Some(frac) => frac
                .strip_prefix('.')
                .filter(|d| (1..=9).contains(&d.len()))
                .ok_or_else(err)?,
            None => return Err(err()),
        };
        if !fraction.bytes().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        let nanos = if fraction.is_empty() {
            0
        } else {
            fraction.parse::<u64>().map_err(|_| err())? * 10u64.pow(9 - fraction.len() as u32)
        };
        let days = days_from_civil(year, month, day) as u64;
        let secs = days * SECS_PER_DAY + hour * 3600 + minute * 60 + second;
        secs.checked_mul(NANOS_PER_SEC)
            .and_then(|n| n.checked_add(nanos))
            .map(Timestamp)
            .ok_or_else(err)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29 (leap day) 12:34:56.789 UTC
        let t = Timestamp(951_827_696_789_000_000);
        assert_eq!(t.to_string(), "2000-02-29T12:34:56.789000000Z");
        assert_eq!("2000-02-29T12:34:56.789Z".parse::<Timestamp>(), Ok(t));
        assert_eq!(
            "2000-02-29T12:34:56Z"
                .parse::<Timestamp>()
                .unwrap()
                .unix_nanos(),
            951_827_696_000_000_000
        );
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "2026-11-27",
            "2026-11-27T11:08:49",
            "2026-11-27T11:08:49+01:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-11-27T11:08:49.Z",
            "2026-11-27T11:08:49.1234567890Z",
            "2026-11-27T11:08:4a.1Z",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?} was accepted");
        }
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(nanos in 0u64..=u64::MAX / 2) {
            let t = Timestamp(nanos);
            prop_assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t));
            let json = serde_json::to_string(&t).unwrap();
            prop_assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        }
    }
}
