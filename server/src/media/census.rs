//! How much the relay holds on this instance: sessions report their participants and tracks
//! here as they change, and metrics, readiness and tests read the totals.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::peer::PortPool;

/// Sessions, participants and tracks running on this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Census {
    pub sessions: usize,
    pub participants: usize,
    pub tracks: usize,
}

/// The relay-wide totals. Cheap to clone.
#[derive(Clone, Default)]
pub struct Counts {
    inner: Arc<Totals>,
}

#[derive(Default)]
struct Totals {
    participants: AtomicUsize,
    tracks: AtomicUsize,
}

/// One session's share of the totals; it reports changes and gives its share back when
/// dropped.
pub struct Share {
    counts: Counts,
    ports: Option<PortPool>,
    counted: (usize, usize),
}

impl Counts {
    pub fn participants(&self) -> usize {
        self.inner.participants.load(Ordering::Relaxed)
    }

    pub fn tracks(&self) -> usize {
        self.inner.tracks.load(Ordering::Relaxed)
    }

    /// A new session's share, starting at zero. `ports` is the relay's port pool, whose use
    /// is reported with the counts.
    pub fn share(&self, ports: Option<PortPool>) -> Share {
        Share {
            counts: self.clone(),
            ports,
            counted: (0, 0),
        }
    }
}

impl Share {
    /// The session now has `participants` and `tracks`.
    pub fn set(&mut self, participants: usize, tracks: usize) {
        let totals = &self.counts.inner;
        let adjust = |counter: &AtomicUsize, before: usize, after: usize| {
            if after >= before {
                counter.fetch_add(after - before, Ordering::Relaxed);
            } else {
                counter.fetch_sub(before - after, Ordering::Relaxed);
            }
        };
        adjust(&totals.participants, self.counted.0, participants);
        adjust(&totals.tracks, self.counted.1, tracks);
        self.counted = (participants, tracks);
        metrics::gauge!("rally_media_participants").set(self.counts.participants() as f64);
        metrics::gauge!("rally_media_tracks").set(self.counts.tracks() as f64);
        if let Some(ports) = &self.ports {
            let used = ports.total() - ports.free();
            metrics::gauge!("rally_media_relay_saturation").set(used as f64 / ports.total() as f64);
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.set(0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_give_back_when_dropped() {
        let counts = Counts::default();
        let mut a = counts.share(None);
        let mut b = counts.share(None);
        a.set(3, 2);
        b.set(1, 0);
        a.set(2, 1);
        assert_eq!((counts.participants(), counts.tracks()), (3, 1));
        drop(a);
        assert_eq!((counts.participants(), counts.tracks()), (1, 0));
    }
}
