//! What one connection may do, and how fast: the gateway's limits, checked before anything
//! reaches campaign state. docs/protocol.md lists each with its default.

use std::time::{Duration, Instant};

use rally_app::protocol::close;

use crate::auth::Origins;

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
pub const CLOSE_SLOW_CONSUMER: u16 = close::SLOW_CONSUMER;
/// Close code for a connection that did not answer a ping within a ping interval.
pub const CLOSE_UNRESPONSIVE: u16 = close::UNRESPONSIVE;
/// Close code for a connection that followed nothing and asked nothing for the idle timeout.
/// A client should not reconnect until it needs the server again.
pub const CLOSE_IDLE: u16 = close::IDLE;
/// Close code for a connection whose session ended (signed out, revoked, expired).
pub const CLOSE_SESSION_ENDED: u16 = close::SESSION_ENDED;
/// How long a closing connection may take to get its close frame out: a slow consumer that
/// reads again has this long to drain its backlog and see why it was cut.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
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
    /// Sustained reads (subscribe, snapshot, media join) per second per connection.
    pub read_rate: f64,
    /// Reads a connection may burst above the sustained rate.
    pub read_burst: f64,
    /// Whether visitors without a session may subscribe and read.
    pub allow_anonymous: bool,
    /// Which browser pages may open WebSockets.
    pub origins: Origins,
    /// Anyone may watch `/ops`; otherwise only `admins`.
    pub ops_public: bool,
    /// User ids allowed to watch `/ops`.
    pub admins: Vec<String>,
    /// A connection the client has sent nothing on for this long gets a ping; one that then
    /// stays silent as long again is closed ([`CLOSE_UNRESPONSIVE`]).
    pub ping_interval: Duration,
    /// A connection that follows no campaign, is in no live room and watches no ops view, and
    /// has sent no request for this long, is closed ([`CLOSE_IDLE`]).
    pub idle_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_connections: 10_000,
            max_subscriptions: 16,
            write_rate: 20.0,
            write_burst: 40.0,
            read_rate: 50.0,
            read_burst: 100.0,
            allow_anonymous: true,
            origins: Origins::default(),
            ops_public: false,
            admins: Vec::new(),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Where a connection stands with its client's liveness, from what the client sent and when:
/// pure, time passed in.
#[derive(Debug)]
pub struct Liveness {
    ping_interval: Duration,
    idle_timeout: Duration,
    /// Any frame from the client (a pong included).
    last_heard: Instant,
    /// A request from the client.
    last_request: Instant,
    ping_sent: Option<Instant>,
}

/// What to do when a liveness check comes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessCheck {
    Fine,
    SendPing,
    /// A ping went unanswered for a whole interval.
    Unresponsive,
    /// Nothing to do here for the idle timeout.
    Idle,
}

impl Liveness {
    pub fn new(ping_interval: Duration, idle_timeout: Duration, now: Instant) -> Self {
        Liveness {
            ping_interval,
            idle_timeout,
            last_heard: now,
            last_request: now,
            ping_sent: None,
        }
    }

    /// How often [`Liveness::check`] should run.
    pub fn period(&self) -> Duration {
        (self.ping_interval.min(self.idle_timeout) / 2).max(Duration::from_millis(50))
    }

    /// The client sent a frame; `request` when it was a request (a text frame).
    pub fn heard(&mut self, now: Instant, request: bool) {
        self.last_heard = now;
        self.ping_sent = None;
        if request {
            self.last_request = now;
        }
    }

    /// `busy`: the connection follows something, is in a live room or has replies pending.
    pub fn check(&mut self, now: Instant, busy: bool) -> LivenessCheck {
        if !busy && now.saturating_duration_since(self.last_request) >= self.idle_timeout {
            return LivenessCheck::Idle;
        }
        match self.ping_sent {
            Some(sent) if now.saturating_duration_since(sent) >= self.ping_interval => {
                LivenessCheck::Unresponsive
            }
            Some(_) => LivenessCheck::Fine,
            None if now.saturating_duration_since(self.last_heard) >= self.ping_interval => {
                self.ping_sent = Some(now);
                LivenessCheck::SendPing
            }
            None => LivenessCheck::Fine,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_table() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut live = Liveness::new(Duration::from_secs(30), Duration::from_secs(300), t0);
        assert_eq!(live.period(), Duration::from_secs(15));
        assert_eq!(live.check(s(10), true), LivenessCheck::Fine);
        assert_eq!(live.check(s(30), true), LivenessCheck::SendPing);
        assert_eq!(
            live.check(s(45), true),
            LivenessCheck::Fine,
            "waiting for the pong"
        );
        live.heard(s(50), false); // the pong
        assert_eq!(live.check(s(60), true), LivenessCheck::Fine);
        assert_eq!(live.check(s(80), true), LivenessCheck::SendPing);
        assert_eq!(live.check(s(110), true), LivenessCheck::Unresponsive);

        let mut quiet = Liveness::new(Duration::from_secs(30), Duration::from_secs(300), t0);
        quiet.heard(s(290), false); // pongs keep it alive but do not make it busy
        assert_eq!(quiet.check(s(299), false), LivenessCheck::Fine);
        assert_eq!(
            quiet.check(s(300), true),
            LivenessCheck::Fine,
            "following something"
        );
        assert_eq!(quiet.check(s(300), false), LivenessCheck::Idle);
        quiet.heard(s(301), true);
        assert_eq!(
            quiet.check(s(302), false),
            LivenessCheck::Fine,
            "a request resets it"
        );
    }
}
