//! One WebSocket connection: a task that, one thing at a time, reads a client frame and answers
//! it (requests.rs), forwards what its campaigns broadcast (delivery.rs) and what the media relay
//! pushes (media.rs), and closes with 1001 when the server shuts down.
//!
//! Replies keep request order through a pipeline: a write waits for its commit while the
//! connection goes on reading, so one client's burst shares commits instead of paying one each.
//! Everything ready at once goes to the socket in one vectored write. A client whose socket takes
//! no write for [`SLOW_CONSUMER_TIMEOUT`] is disconnected with close code [`CLOSE_SLOW_CONSUMER`];
//! nobody else waits for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use rally_app::model::Actor;
use rally_app::protocol::{ErrorBody, ErrorCode, RejectedFrame, FRAME_FAILED};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_util::task::TaskTracker;

use super::delivery::{Delivery, Following, Outgoing, Reader};
use super::limits::{
    GatewayConfig, WriteBudget, CLOSE_SLOW_CONSUMER, MAX_PIPELINE, SLOW_CONSUMER_TIMEOUT,
    STALL_THRESHOLD,
};
use super::media::MediaPlace;
use super::websocket::{send_texts, Socket};
use crate::auth::Keys;
use crate::campaigns::{ConnectionId, StateManager};
use crate::frames::{self, Frame};
use crate::media::MediaRelay;
use crate::ops::OpsFeed;
use crate::shutdown::ShutdownSignal;
use crate::stats::{GatewayStats, OpsCounters};

/// What the gateway needs from the rest of the server (an axum sub-state of the app's state).
#[derive(Clone)]
pub struct GatewayState {
    pub config: Arc<GatewayConfig>,
    pub keys: Keys,
    pub manager: StateManager,
    pub relay: MediaRelay,
    pub stats: GatewayStats,
    pub ops: Arc<OpsCounters>,
    pub ops_feed: OpsFeed,
    pub shutdown: ShutdownSignal,
    /// Tasks that outlive their HTTP request (upgraded WebSockets); shutdown waits for them.
    pub tasks: TaskTracker,
}

/// Why a connection ended; decides the close frame, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    ClientLeft,
    ServerShutdown,
    Broken,
    TooBig,
    SlowConsumer,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::ClientLeft => "client_left",
            Ending::ServerShutdown => "server_shutdown",
            Ending::Broken => "broken",
            Ending::TooBig => "frame_too_big",
            Ending::SlowConsumer => "slow_consumer",
        }
    }

    fn close_frame(self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            Ending::ServerShutdown => (CloseCode::Away, "server shutting down"),
            Ending::TooBig => (CloseCode::Size, "frame over 65536 bytes"),
            Ending::SlowConsumer => (CloseCode::from(CLOSE_SLOW_CONSUMER), "slow_consumer"),
            Ending::ClientLeft | Ending::Broken => return None,
        };
        Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })
    }
}

/// A reply that will be ready later (a write waiting for its commit).
type PendingReply = Pin<Box<dyn Future<Output = Utf8Bytes> + Send>>;

/// Replies to requests still being answered, in request order.
#[derive(Default)]
pub(super) struct Pipeline(FuturesOrdered<PendingReply>);

impl Pipeline {
    /// Queue a reply behind the ones still pending.
    pub fn push(&mut self, reply: impl Future<Output = Utf8Bytes> + Send + 'static) {
        self.0.push_back(Box::pin(reply));
    }

    /// Queue a reply that is ready now (it still waits for the ones before it).
    pub fn push_ready(&mut self, reply: Utf8Bytes) {
        self.push(std::future::ready(reply));
    }

    /// Wait for every pending reply (before a request that changes this connection's state).
    pub async fn drain(&mut self, out: &mut Outgoing) {
        while let Some(reply) = self.0.next().await {
            out.push(reply);
        }
    }

    /// Replies already answered, in order (stops at the first still pending).
    fn take_ready(&mut self, out: &mut Outgoing) {
        while !self.0.is_empty() {
            match self.0.next().now_or_never() {
                Some(Some(reply)) => out.push(reply),
                _ => break,
            }
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    async fn next(&mut self) -> Option<Utf8Bytes> {
        self.0.next().await
    }
}

enum Input {
    Frame(Option<Result<Message, tungstenite::Error>>),
    Reply(Utf8Bytes),
    Delivery(usize, Delivery),
    Ops(Result<Frame, broadcast::error::RecvError>),
    Media(Option<Utf8Bytes>),
}

pub(super) struct Connection {
    pub(super) id: ConnectionId,
    socket: Socket,
    pub(super) identity: Option<Actor>,
    pub(super) state: GatewayState,
    pub(super) following: Following,
    pub(super) budget: WriteBudget,
    /// `/ops` samples, once subscribed.
    pub(super) ops_events: Option<broadcast::Receiver<Frame>>,
    pub(super) pipeline: Pipeline,
    pub(super) media: MediaPlace,
}

/// The next `/ops` sample (only polled while subscribed).
async fn next_ops(
    events: &mut Option<broadcast::Receiver<Frame>>,
) -> Result<Frame, broadcast::error::RecvError> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

impl Connection {
    pub(super) fn new(socket: Socket, identity: Option<Actor>, state: GatewayState) -> Self {
        let budget = WriteBudget::new(
            state.config.write_rate,
            state.config.write_burst,
            Instant::now(),
        );
        Connection {
            id: ConnectionId::next(),
            socket,
            identity,
            state,
            following: Following::default(),
            budget,
            ops_events: None,
            pipeline: Pipeline::default(),
            media: MediaPlace::default(),
        }
    }

    pub(super) async fn run(mut self) -> Ending {
        tracing::debug!(connection = ?self.id, signed_in = self.identity.is_some(), "websocket connected");
        let ending = self.serve().await;
        for campaign in self.following.campaigns() {
            self.state.manager.leave(campaign, self.id);
        }
        self.media.forget(&self.state.relay);
        if let Some(frame) = ending.close_frame() {
            // Best effort: a slow consumer may not take even this.
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                self.socket.send(Message::Close(Some(frame))),
            )
            .await;
        }
        tracing::debug!(connection = ?self.id, reason = ending.as_str(), "websocket disconnected");
        ending
    }

    async fn serve(&mut self) -> Ending {
        let mut shutdown = self.state.shutdown.clone();
        loop {
            let following = !self.following.is_empty();
            let input = tokio::select! {
                biased;
                _ = shutdown.recv() => return Ending::ServerShutdown,
                Some(reply) = self.pipeline.next(), if self.pipeline.len() > 0 => Input::Reply(reply),
                frame = self.socket.next(), if self.pipeline.len() < MAX_PIPELINE => Input::Frame(frame),
                (slot, delivery) = self.following.next(), if following => Input::Delivery(slot, delivery),
                sample = next_ops(&mut self.ops_events), if self.ops_events.is_some() => Input::Ops(sample),
                push = self.media.next_push(), if self.media.is_in() => Input::Media(push),
            };
            let mut out = Outgoing::default();
            match input {
                Input::Frame(None | Some(Ok(Message::Close(_)))) => return Ending::ClientLeft,
                Input::Frame(Some(Err(err))) => {
                    return if matches!(err, tungstenite::Error::Capacity(_)) {
                        Ending::TooBig
                    } else {
                        tracing::debug!(connection = ?self.id, error = %err, "websocket read failed");
                        Ending::Broken
                    };
                }
                Input::Frame(Some(Ok(Message::Text(text)))) => {
                    // Boxed: handling nests the whole request path's state; keeping it out of
                    // this loop's future keeps an idle connection small.
                    Box::pin(self.handle_request(&text, &mut out)).await;
                    self.pipeline.take_ready(&mut out);
                }
                Input::Reply(reply) => {
                    out.push(reply);
                    self.pipeline.take_ready(&mut out);
                }
                Input::Frame(Some(Ok(Message::Binary(_)))) => {
                    let rejected = RejectedFrame {
                        reply_type: FRAME_FAILED,
                        request_id: None,
                        error: ErrorBody::new(
                            ErrorCode::Invalid,
                            "binary frames are not supported; send JSON text",
                        ),
                    };
                    out.push(frames::rejection(rejected));
                }
                // Pings are answered by the WebSocket layer itself; raw frames are only written.
                Input::Frame(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {
                    continue
                }
                Input::Ops(Ok(frame)) => out.push(frame.text),
                // Missed a sample: the next one is complete anyway.
                Input::Ops(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Input::Ops(Err(broadcast::error::RecvError::Closed)) => self.ops_events = None,
                Input::Media(Some(push)) => out.push(push),
                Input::Media(None) => self.media.ended(),
                Input::Delivery(slot, delivery) => {
                    let user = self.identity.as_ref().map(|a| &a.user_id);
                    let reader = Reader {
                        manager: &self.state.manager,
                        connection: self.id,
                        user,
                    };
                    self.following
                        .deliver_ready(slot, delivery, &reader, &mut out)
                        .await;
                }
            }
            if let Err(ending) = self.send(out).await {
                return ending;
            }
            self.following.record_delivery(&self.state.ops);
        }
    }

    /// Write `out` to the socket. Most writes finish at once and never touch a timer; only a
    /// slow one is timed, counted as stalled after [`STALL_THRESHOLD`] and cut at
    /// [`SLOW_CONSUMER_TIMEOUT`].
    async fn send(&mut self, out: Outgoing) -> Result<(), Ending> {
        if out.is_empty() {
            return Ok(());
        }
        let texts = out.texts();
        let sending = send_texts(&mut self.socket, &texts);
        tokio::pin!(sending);
        let sent = match sending.as_mut().now_or_never() {
            Some(result) => Ok(result),
            None => match tokio::time::timeout(STALL_THRESHOLD, &mut sending).await {
                Ok(result) => Ok(result),
                Err(_) => {
                    let _stall = self.state.stats.stall();
                    tokio::time::timeout(SLOW_CONSUMER_TIMEOUT - STALL_THRESHOLD, &mut sending)
                        .await
                }
            },
        };
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::Broken),
            Err(_) => {
                metrics::counter!("rally_slow_consumer_disconnects_total").increment(1);
                self.state
                    .ops
                    .slow_consumers
                    .fetch_add(1, Ordering::Relaxed);
                Err(Ending::SlowConsumer)
            }
        }
    }
}
