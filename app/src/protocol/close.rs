//! WebSocket close codes Rally sends besides the standard ones (1001 going away, 1002 protocol
//! error, 1007 not UTF-8, 1009 too big). docs/protocol.md says when each is sent.

/// The client did not read what it was sent for 5 s.
pub const SLOW_CONSUMER: u16 = 4008;
/// The client did not answer a ping within the ping interval.
pub const UNRESPONSIVE: u16 = 4009;
/// The connection followed nothing and asked nothing for the idle timeout. Reconnect when
/// there is something to follow, not at once.
pub const IDLE: u16 = 4010;
/// The connection's session ended: signed out (here or elsewhere), revoked, or past its
/// lifetime. Do not reconnect with the same token; sign in again.
pub const SESSION_ENDED: u16 = 4011;
