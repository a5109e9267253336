//! The browser side of Rally's protocol.
//!
//! [`live`] is the connection logic as a pure state machine (compiled and tested everywhere);
//! [`connection`] drives it with Leptos signals and a [`BrowserIo`] that the WASM crate
//! (`frontend/`) provides with web-sys. On the server no `BrowserIo` exists and pages render from
//! the snapshot alone.

pub mod connection;
pub mod edits;
pub mod io;
pub mod later_code;
pub mod live;
pub mod media;
pub mod shared_text;

pub use connection::{use_connection, Connection};
pub use io::{BrowserIo, SharedIo, SocketEvents, SocketHandle};
pub use live::{Backoff, ConnectionStatus, LiveClient, MediaPush, Output, ReplyPayload};
pub use media::{MediaEngine, MediaLoader};
