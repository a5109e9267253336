//! Logging set-up and policy.
//!
//! Policy (from the source design, enforced by tests): at the default level a running server writes
//! only lifecycle lines — startup and shutdown at Info. Routine work (connects, state updates, event
//! publish and receive, ICE failures, ordinary disconnects) is Debug; non-critical trouble is Warn;
//! critical failures are Error. Payloads are never logged, only their sizes and ids.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Used when `RUST_LOG` is not set: Rally's own lifecycle lines, and only trouble from libraries.
/// The WebRTC stack (`webrtc`, and `rtc`, which as a target prefix covers every `rtc_*` crate) warns
/// about routine events of every media session — ICE checks before candidates arrive, packets
/// before DTLS finished, peers that went away — which the policy puts at Debug; only its errors
/// pass by default.
pub const DEFAULT_FILTER: &str = "warn,rally=info,webrtc=error,rtc=error";

/// Install the global subscriber. `RUST_LOG`, when set, replaces the default filter entirely.
/// Returns an error if `RUST_LOG` does not parse, so a typo is not silently ignored.
pub fn init(format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|err| format!("rally: invalid value {directives:?} for RUST_LOG: {err}"))?,
        _ => EnvFilter::new(DEFAULT_FILTER),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            // The request a line belongs to (`span.request_id`, see `access_log`).
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}
