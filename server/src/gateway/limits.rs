//! What one connection may do, and how fast: the gateway's limits, checked before anything
//! reaches campaign state. docs/protocol.md lists each with its default.

use std::time::{Duration, Instant};

/// Largest text frame (and message) a client may send. Larger ones close the connection with
/// 1009 (message too big): the frame cannot be read, so there is no request to answer.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Initial WebSocket read buffer per connection. tungstenite reserves its whole read buffer up
/// front (128 KiB by default), most of an idle connection's memory; frames are small, and the
/// buffer grows when one is not.
pub const READ_BUFFER_BYTES: usize = 1024;
/// A socket that accepts no write for this long belongs to a slow consumer.
pub const SLOW_CONSUMER_TIMEOUT: Duration = Duration::from_secs(5);
/// Close code sent to a slow consumer (application range 4000-4999).
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// A write pending this long marks the subscriber's channel as stuck (readiness reports it).
pub const STALL_THRESHOLD: Duration = Duration::from_secs(1);
/// Requests a connection may have in flight before it stops reading more.
pub const MAX_PIPELINE: usize = 64;
/// Ready frames gathered into one socket write (more only when one commit alone is larger).
/// Each frame is two iovecs; the kernel takes at most 1,024 per call and the sender loops for
/// the rest.
pub const MAX_WRITE_BATCH: usize = 256;

/// Per-connection limits and who may do what. Defaults are documented in docs/protocol.md.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Concurrently open WebSocket connections per instance.
    pub max_connections: usize,
    /// Campaigns one connection may subscribe to at once.
    pub max_subscriptions: usize,
    /// Sustained writes (create/update/feature/config) per second per connection.
    pub write_rate: f64,
    /// Writes a connection may burst above the sustained rate.
    pub write_burst: f64,
    /// Whether visitors without a session may subscribe and read.
    pub allow_anonymous: bool,
    /// Origins allowed to open WebSockets from a browser; empty means same host only.
    pub allowed_origins: Vec<String>,
    /// Anyone may watch `/ops`; otherwise only `admins`.
    pub ops_public: bool,
    /// User ids allowed to watch `/ops`.
    pub admins: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_connections: 10_000,
            max_subscriptions: 16,
            write_rate: 20.0,
            write_burst: 40.0,
            allow_anonymous: true,
            allowed_origins: Vec::new(),
            ops_public: false,
            admins: Vec::new(),
        }
    }
}

/// A token bucket for writes: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub struct WriteBudget {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl WriteBudget {
    /// A full bucket at `now`.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        WriteBudget {
            tokens: burst,
            rate,
            burst,
            at: now,
        }
    }

    /// Spend a token at `now`, if one has accrued.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_budget_table() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // (at, taken?) in order, for 10 writes/s with bursts of 2.
        let steps = [
            (0, true),
            (0, true),
            (0, false), // burst spent
            (50, false),
            (150, true), // 1.5 tokens accrued since 0
            (150, false),
            (10_000, true), // a long pause refills only up to the burst
            (10_000, true),
            (10_000, false),
            (9_000, false), // time going backwards adds nothing
        ];
        let mut budget = WriteBudget::new(10.0, 2.0, t0);
        for (i, (at, expected)) in steps.into_iter().enumerate() {
            assert_eq!(budget.take(ms(at)), expected, "step {i} at {at} ms");
        }
    }
}
