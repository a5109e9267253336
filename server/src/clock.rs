//! The server's sources of time and unique ids. Pure cores take both as arguments; shells call
//! these.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rally_app::model::{EventId, Timestamp};

pub fn now() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Timestamp::from_unix_nanos(nanos)
}

/// Random bytes from the OS. Failing to get them means the OS is broken; there is no sane fallback.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    bytes
}

/// Issues [`EventId`]s: nanosecond time, this instance's random id, and a sequence number, so ids
/// are unique across instances (random 32-bit instance ids) and within one instance even when the
/// clock stands still or steps back (the sequence).
#[derive(Debug)]
pub struct EventIds {
    instance: u32,
    sequence: AtomicU32,
}

impl EventIds {
    pub fn new() -> Self {
        EventIds {
            instance: u32::from_le_bytes(random_bytes()),
            sequence: AtomicU32::new(0),
        }
    }

    pub fn instance(&self) -> u32 {
        self.instance
    }

    pub fn next(&self, at: Timestamp) -> EventId {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        EventId::new(at.unix_nanos(), self.instance, sequence)
    }
}

impl Default for EventIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_even_at_the_same_instant_and_across_instances() {
        let (a, b) = (EventIds::new(), EventIds::new());
        let at = Timestamp::from_unix_nanos(42);
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(a.next(at)));
            assert!(seen.insert(b.next(at)));
        }
    }
}
