//! The gateway: `GET /ws`, one task per WebSocket connection, and campaign event streams.
//!
//! - [`upgrade`] (here): origin and credentials, the connection limit, then the upgrade.
//! - `connection`: the connection's task — its loop, the reply pipeline, writing to the socket.
//! - `requests`: one method per request group, with the permission rules named.
//! - `delivery`: gap-free delivery of followed campaigns, backfill, the outgoing batch.
//! - `media`: the connection's place in a media session.
//! - `session`: the connection's session, watched for its end.
//! - [`limits`]: every per-connection limit, and the write budget.
//! - `websocket`: Rally's own upgrade and text-frame writer.
//! - `event_stream`: the same subscriptions as Server-Sent Events (`GET /api/campaigns/{id}/events`).

mod connection;
mod delivery;
mod event_stream;
pub mod limits;
mod media;
mod requests;
mod session;
mod websocket;

use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use rally_app::protocol::ErrorCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use self::connection::Connection;
pub use self::connection::GatewayState;
pub use self::event_stream::campaign_events;
pub use self::limits::GatewayConfig;
use self::limits::{MAX_FRAME_BYTES, READ_BUFFER_BYTES};
pub use self::websocket::Upgrade;
use crate::clock;
use crate::http_error::ApiError;
use crate::sessions::IdentifyError;

/// `GET /ws`: check origin and credentials, then upgrade, unless shutting down or full.
pub async fn upgrade(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    upgrade: Upgrade,
) -> Response {
    if state.shutdown.is_triggered() {
        return ApiError::new(ErrorCode::Unavailable, "server is shutting down").into_response();
    }
    if !state.config.origins.allow(&headers) {
        return ApiError::new(ErrorCode::Forbidden, "WebSocket origin not allowed").into_response();
    }
    // Listen for session ends before checking this one: an end in between is not missed.
    let ends = state.sessions.ends();
    let signed = match state
        .sessions
        .identify(&headers, uri.query(), clock::now())
        .await
    {
        Ok(Some(signed)) if signed.scope.is_some() => {
            let refused = crate::auth::TokenError::KeyNotAccepted;
            return ApiError::new(ErrorCode::Unauthorized, refused.to_string()).into_response();
        }
        Ok(signed) => signed,
        Err(err @ IdentifyError::Rejected(_)) => {
            return ApiError::new(ErrorCode::Unauthorized, err.to_string()).into_response();
        }
        Err(err @ IdentifyError::Unavailable(_)) => {
            return ApiError::new(ErrorCode::Unavailable, err.to_string()).into_response();
        }
    };
    let Some(slot) = state.stats.try_acquire() else {
        return ApiError::new(
            ErrorCode::Unavailable,
            "connection limit reached; retry later",
        )
        .into_response();
    };
    let tasks = state.tasks.clone();
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .read_buffer_size(READ_BUFFER_BYTES);
    upgrade.accept(config, move |socket| {
        tasks.track_future(async move {
            let _slot = slot;
            metrics::counter!("rally_websocket_connections_total").increment(1);
            // Everything the connection needs moves into it; no second copy stays alive.
            let ending = Connection::new(socket, signed, ends, state).run().await;
            metrics::counter!("rally_websocket_disconnects_total", "reason" => ending.as_str())
                .increment(1);
        })
    })
}
