//! The live ops view: cheap counters the hot paths bump, a once-a-second sampler that turns them
//! into [`OpsSample`]s, and the channel `/ops` pages subscribe to.
//!
//! Latencies go into [`LatencyWindow`]s: lock-free log-linear histograms (four buckets per power
//! of two of microseconds, so quantiles are within 25%) that the sampler drains every second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rally_app::protocol::ops::{BusStatus, OpsSample, OPS_SAMPLE};
use tokio::sync::broadcast;

use crate::campaigns::StateManager;
use crate::clock;
use crate::frames::{self, Frame};
use crate::gateway::GatewayStats;
use crate::shutdown::ShutdownSignal;

/// Samples kept for pages that subscribe (two minutes).
pub const HISTORY: usize = 120;
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

/// What `/ops` subscribers get: recent samples and the live channel.
#[derive(Clone)]
pub struct OpsFeed {
    history: Arc<Mutex<std::collections::VecDeque<OpsSample>>>,
    live: broadcast::Sender<Frame>,
}

impl OpsFeed {
    pub fn new() -> Self {
        let (live, _) = broadcast::channel(16);
        OpsFeed {
            history: Arc::default(),
            live,
        }
    }

    pub fn history(&self) -> Vec<OpsSample> {
        self.history
            .lock()
            .expect("ops history lock")
            .iter()
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Frame> {
        self.live.subscribe()
    }

    fn publish(&self, sample: OpsSample) {
        let frame = frames::push(OPS_SAMPLE, &sample, sample.at);
        {
            let mut history = self.history.lock().expect("ops history lock");
            if history.len() >= HISTORY {
                history.pop_front();
            }
            history.push_back(sample);
        }
        let _ = self.live.send(frame);
    }
}

impl Default for OpsFeed {
    fn default() -> Self {
        Self::new()
    }
}

/// Once a second until shutdown: turn counters into a sample and publish it.
pub async fn run_sampler(
    feed: OpsFeed,
    manager: StateManager,
    gateway: GatewayStats,
    bus: impl Fn() -> BusStatus + Send + 'static,
    mut shutdown: ShutdownSignal,
) {
    let counters = manager.ops().clone();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (0u64, 0u64, 0u64, std::time::Instant::now());
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = ticker.tick() => {}
        }
        let now = std::time::Instant::now();
        let changes = counters.changes.load(Ordering::Relaxed);
        let deliveries = counters.deliveries.load(Ordering::Relaxed);
        let packets = counters.media_packets.load(Ordering::Relaxed);
        let secs = now.duration_since(last.3).as_secs_f64().max(1e-3);
        let delivery = counters.delivery_latency.drain();
        let ack = counters.ack_latency.drain();
        let mut top: Vec<_> = manager
            .subscriber_counts()
            .into_iter()
            .map(|(id, n)| (id, n as u32))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(10);
        let sample = OpsSample {
            at: clock::now(),
            connections: gateway.open() as u64,
            deliveries_per_sec: (deliveries - last.1) as f64 / secs,
            changes_per_sec: (changes - last.0) as f64 / secs,
            delivery_p50_ms: quantile_ms(&delivery, 0.5),
            delivery_p99_ms: quantile_ms(&delivery, 0.99),
            ack_p50_ms: quantile_ms(&ack, 0.5),
            ack_p99_ms: quantile_ms(&ack, 0.99),
            top_campaigns: top,
            bus: bus(),
            media_packets_per_sec: (packets - last.2) as f64 / secs,
            slow_consumers_total: counters.slow_consumers.load(Ordering::Relaxed),
        };
        last = (changes, deliveries, packets, now);
        metrics::gauge!("rally_bus_connected").set(if sample.bus.connected { 1.0 } else { 0.0 });
        feed.publish(sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
