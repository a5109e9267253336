//! The live ops view: a once-a-second sampler that turns the counters of [`crate::stats`] into
//! [`OpsSample`]s, and the channel `/ops` pages subscribe to.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rally_app::protocol::ops::{BusStatus, OpsSample, OPS_SAMPLE};
use tokio::sync::broadcast;

use crate::campaigns::StateManager;
use crate::clock;
use crate::frames::{self, Frame};
use crate::shutdown::ShutdownSignal;
use crate::stats::{quantile_ms, GatewayStats, OpsCounters};

/// Samples kept for pages that subscribe (two minutes).
pub const HISTORY: usize = 120;

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
    counters: Arc<OpsCounters>,
    manager: StateManager,
    gateway: GatewayStats,
    bus: impl Fn() -> BusStatus + Send + 'static,
    mut shutdown: ShutdownSignal,
) {
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
            .filter(|(_, _, public)| *public)
            .map(|(id, n, _)| (id, n as u32))
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
