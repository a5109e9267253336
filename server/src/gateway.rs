//! The WebSocket gateway: one task per connection at `GET /ws`.
//!
//! A connection task reads text frames, decodes each into a typed request (or a typed rejection),
//! answers it, and on server shutdown closes the socket with 1001 (going away). Limits are enforced
//! here, before anything else sees a frame: see [`MAX_FRAME_BYTES`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use rally_app::protocol::{
    decode_request, ClientRequest, Envelope, ErrorBody, ErrorCode, EventState, Metadata, PingReply,
    RejectedFrame, Request, FRAME_FAILED,
};
use serde::Serialize;

use crate::clock;
use crate::http::{ApiError, AppState};
use crate::shutdown::ShutdownSignal;

/// Largest text frame (and message) a client may send. Larger ones close the connection with
/// 1009 (message too big): the frame cannot be read, so there is no request to answer.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Default cap on concurrently open WebSocket connections per instance.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Connection counters shared by the gateway and readiness.
#[derive(Debug, Clone)]
pub struct GatewayStats {
    inner: Arc<StatsInner>,
}

#[derive(Debug)]
struct StatsInner {
    open: AtomicUsize,
    limit: usize,
}

impl GatewayStats {
    pub fn new(limit: usize) -> Self {
        GatewayStats {
            inner: Arc::new(StatsInner {
                open: AtomicUsize::new(0),
                limit,
            }),
        }
    }

    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Reserve a slot, or `None` at the limit. The slot is released when the guard drops.
    fn try_acquire(&self) -> Option<ConnectionSlot> {
        let acquired = self
            .inner
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |open| {
                (open < self.inner.limit).then_some(open + 1)
            })
            .is_ok();
        acquired.then(|| ConnectionSlot(self.clone()))
    }
}

struct ConnectionSlot(GatewayStats);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.inner.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `GET /ws`: upgrade, unless the server is shutting down or full.
pub async fn upgrade(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    if state.shutdown.is_triggered() {
        return ApiError::new(ErrorCode::Unavailable, "server is shutting down").into_response();
    }
    let Some(slot) = state.gateway.try_acquire() else {
        return ApiError::new(
            ErrorCode::Unavailable,
            "connection limit reached; retry later",
        )
        .into_response();
    };
    let shutdown = state.shutdown.clone();
    let tasks = state.tasks.clone();
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| {
            tasks.track_future(async move {
                let _slot = slot;
                Connection { socket, shutdown }.run().await;
            })
        })
}

struct Connection {
    socket: WebSocket,
    shutdown: ShutdownSignal,
}

/// Why a connection loop ended; decides the close frame, if any.
enum Ending {
    ClientLeft,
    ServerShutdown,
    Broken,
    TooBig,
}

impl Connection {
    async fn run(mut self) {
        tracing::debug!("websocket connected");
        let ending = self.serve().await;
        let close = match ending {
            Ending::ServerShutdown => Some((close_code::AWAY, "server shutting down")),
            Ending::TooBig => Some((close_code::SIZE, "frame over 65536 bytes")),
            Ending::ClientLeft | Ending::Broken => None,
        };
        if let Some((code, reason)) = close {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let _ = self.socket.send(Message::Close(Some(frame))).await;
        }
        tracing::debug!(reason = ending.as_str(), "websocket disconnected");
    }

    async fn serve(&mut self) -> Ending {
        loop {
            let frame = tokio::select! {
                _ = self.shutdown.recv() => return Ending::ServerShutdown,
                frame = self.socket.recv() => frame,
            };
            let reply = match frame {
                None | Some(Ok(Message::Close(_))) => return Ending::ClientLeft,
                Some(Err(err)) => {
                    return if is_capacity_error(&err) {
                        Ending::TooBig
                    } else {
                        tracing::debug!(error = %err, "websocket read failed");
                        Ending::Broken
                    };
                }
                Some(Ok(Message::Text(text))) => answer(&text),
                Some(Ok(Message::Binary(_))) => reject(RejectedFrame {
                    reply_type: FRAME_FAILED,
                    request_id: None,
                    error: ErrorBody::new(
                        ErrorCode::Invalid,
                        "binary frames are not supported; send JSON text",
                    ),
                }),
                // Pings are answered by the WebSocket layer itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            };
            if self.socket.send(Message::Text(reply)).await.is_err() {
                return Ending::Broken;
            }
        }
    }
}

impl Ending {
    fn as_str(&self) -> &'static str {
        match self {
            Ending::ClientLeft => "client_left",
            Ending::ServerShutdown => "server_shutdown",
            Ending::Broken => "broken",
            Ending::TooBig => "frame_too_big",
        }
    }
}

fn is_capacity_error(err: &axum::Error) -> bool {
    use std::error::Error as _;
    matches!(
        err.source()
            .and_then(|e| e.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// Decode and answer one text frame.
fn answer(text: &str) -> Utf8Bytes {
    match decode_request(text) {
        Ok(request) => dispatch(request),
        Err(rejected) => reject(rejected),
    }
}

fn dispatch(request: Request) -> Utf8Bytes {
    let Request {
        event_type,
        request_id,
        body,
    } = request;
    match body {
        ClientRequest::Ping(_) => encode(
            Envelope::new(
                event_type.with_state(EventState::Success),
                PingReply {
                    server_time: clock::now(),
                },
            )
            .with_request_id(request_id),
        ),
    }
}

fn reject(rejected: RejectedFrame) -> Utf8Bytes {
    encode(Envelope::new(rejected.reply_type, rejected.error).with_request_id(rejected.request_id))
}

/// Serialize an outgoing envelope, stamping the server's time.
fn encode<P: Serialize>(envelope: Envelope<P>) -> Utf8Bytes {
    let envelope = envelope.with_metadata(Metadata {
        event_id: None,
        timestamp: Some(clock::now()),
    });
    serde_json::to_string(&envelope)
        .expect("protocol types always serialize")
        .into()
}
