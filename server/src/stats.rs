//! Counters the hot paths bump and everyone else reads: `/ops`, `/metrics`, readiness.
//!
//! A leaf: it knows nothing of campaigns, connections or media, so every layer can count into it
//! without importing the layers that read it. Everything here is atomics (or a mutex held for one
//! increment), never a lock on a hot path.
//!
//! Latencies go into [`LatencyWindow`]s: lock-free log-linear histograms (four buckets per power
//! of two of microseconds, so quantiles are within 25%) that the `/ops` sampler drains every
//! second.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const BUCKETS: usize = 4 * 40;

/// A histogram of durations in microseconds, drained by [`LatencyWindow::drain`].
pub struct LatencyWindow {
    buckets: Vec<AtomicU64>,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket_of(micros: u64) -> usize {
    if micros < 4 {
        return micros as usize;
    }
    let exp = 63 - micros.leading_zeros() as usize; // floor(log2)
    let sub = ((micros >> (exp - 2)) & 3) as usize;
    (4 * (exp - 1) + sub).min(BUCKETS - 1)
}

/// Upper bound (µs) of a bucket.
fn bucket_upper(index: usize) -> u64 {
    if index < 4 {
        return index as u64 + 1;
    }
    let exp = index / 4 + 1;
    let sub = (index % 4) as u64;
    (4 + sub + 1) << (exp - 2)
}

impl LatencyWindow {
    pub fn record(&self, elapsed: Duration) {
        let micros = elapsed.as_micros().min(u64::MAX as u128) as u64;
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// Take the counts recorded since the last drain.
    pub fn drain(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect()
    }
}

/// The `q` quantile (0..1) of drained counts, in milliseconds (0 when empty).
pub fn quantile_ms(counts: &[u64], q: f64) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (index, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return bucket_upper(index) as f64 / 1000.0;
        }
    }
    0.0
}

/// Totals bumped on hot paths (atomics only).
#[derive(Default)]
pub struct OpsCounters {
    pub changes: AtomicU64,
    pub deliveries: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub media_packets: AtomicU64,
    pub delivery_latency: LatencyWindow,
    pub ack_latency: LatencyWindow,
}

/// WebSocket connections: how many are open, the limit, and how many are stuck right now.
#[derive(Debug, Clone)]
pub struct GatewayStats {
    inner: Arc<GatewayCounts>,
}

#[derive(Debug)]
struct GatewayCounts {
    open: AtomicUsize,
    limit: usize,
    /// Connections whose socket has refused a write for over a second right now.
    stalled: AtomicUsize,
}

impl GatewayStats {
    pub fn new(limit: usize) -> Self {
        GatewayStats {
            inner: Arc::new(GatewayCounts {
                open: AtomicUsize::new(0),
                limit,
                stalled: AtomicUsize::new(0),
            }),
        }
    }

    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Subscriber sockets that have taken no data for over a second right now.
    pub fn stalled(&self) -> usize {
        self.inner.stalled.load(Ordering::Relaxed)
    }

    /// Reserve a connection slot, or `None` at the limit. The slot is released when the guard
    /// drops.
    pub fn try_acquire(&self) -> Option<ConnectionSlot> {
        let acquired = self
            .inner
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |open| {
                (open < self.inner.limit).then_some(open + 1)
            })
            .is_ok();
        if acquired {
            metrics::gauge!("rally_websocket_connections_open").increment(1.0);
        }
        acquired.then(|| ConnectionSlot(self.clone()))
    }

    /// Count a connection as stalled until the guard drops.
    pub fn stall(&self) -> Stall<'_> {
        self.inner.stalled.fetch_add(1, Ordering::Relaxed);
        Stall(self)
    }
}

/// One open connection's place under the limit.
pub struct ConnectionSlot(GatewayStats);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.inner.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("rally_websocket_connections_open").decrement(1.0);
    }
}

/// A connection counted as stalled while this lives.
pub struct Stall<'a>(&'a GatewayStats);

impl Drop for Stall<'_> {
    fn drop(&mut self) {
        self.0.inner.stalled.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_given_back_when_dropped() {
        let stats = GatewayStats::new(1);
        let slot = stats.try_acquire().expect("one free");
        assert!(stats.try_acquire().is_none(), "at the limit");
        drop(slot);
        assert!(stats.try_acquire().is_some());
    }

    #[test]
    fn buckets_are_monotonic_and_bound_their_values() {
        let mut previous = 0;
        for micros in (0..200_000u64).step_by(7) {
            let index = bucket_of(micros);
            assert!(index >= previous, "bucket order at {micros}");
            assert!(
                bucket_upper(index) > micros || index == BUCKETS - 1,
                "{micros} within its bucket"
            );
            previous = index;
        }
    }

    #[test]
    fn quantiles_come_from_the_recorded_distribution() {
        let window = LatencyWindow::default();
        for _ in 0..98 {
            window.record(Duration::from_micros(1000));
        }
        window.record(Duration::from_millis(50));
        window.record(Duration::from_millis(50));
        let counts = window.drain();
        let p50 = quantile_ms(&counts, 0.5);
        let p99 = quantile_ms(&counts, 0.99);
        assert!((1.0..=1.25).contains(&p50), "p50 {p50}");
        assert!((50.0..=62.5).contains(&p99), "p99 {p99}");
        assert_eq!(quantile_ms(&window.drain(), 0.5), 0.0, "drained");
    }
}
