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
use std::time::Instant;

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use rally_app::model::CampaignId;
use rally_app::protocol::{ErrorBody, ErrorCode, RejectedFrame, FRAME_FAILED};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_util::task::TaskTracker;

use super::delivery::{Delivery, Following, Outgoing, Reader};
use super::limits::{
    GatewayConfig, Liveness, LivenessCheck, CLOSE_GRACE, CLOSE_IDLE, CLOSE_SESSION_ENDED,
    CLOSE_SLOW_CONSUMER, CLOSE_UNRESPONSIVE, MAX_PIPELINE, SLOW_CONSUMER_TIMEOUT, STALL_THRESHOLD,
};
use super::media::MediaPlace;
use super::session::{End, SessionWatch, Verdict};
use super::websocket::{rest_of_frame, send_close, send_texts, Socket};
use crate::campaigns::{ConnectionId, StateManager};
use crate::clock;
use crate::frames::{self, Frame};
use crate::media::MediaRelay;
use crate::ops::OpsFeed;
use crate::quota::{Budget, Quotas};
use crate::sessions::{SessionNews, Sessions, Signed, Who};
use crate::shutdown::ShutdownSignal;
use crate::stats::{GatewayStats, OpsCounters};

/// What the gateway needs from the rest of the server (an axum sub-state of the app's state).
#[derive(Clone)]
pub struct GatewayState {
    pub config: Arc<GatewayConfig>,
    pub sessions: Sessions,
    pub manager: StateManager,
    pub relay: MediaRelay,
    pub stats: GatewayStats,
    pub ops: Arc<OpsCounters>,
    pub ops_feed: OpsFeed,
    pub shutdown: ShutdownSignal,
    /// Tasks that outlive their HTTP request (upgraded WebSockets); shutdown waits for them.
    pub tasks: TaskTracker,
    /// What one person may do across connections (campaigns created).
    pub quotas: Arc<Quotas>,
}

/// Why a connection ended; decides the close frame, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The client's TCP stream ended.
    ClientLeft,
    /// The client sent a close frame with this code (echoed, as RFC 6455 asks).
    ClientClosed(u16),
    ServerShutdown,
    Broken,
    TooBig,
    /// A text frame that is not UTF-8.
    NotUtf8,
    /// Not the WebSocket protocol (unmasked client frames, bad opcodes, …).
    ProtocolViolation,
    SlowConsumer,
    Unresponsive,
    Idle,
    /// The connection's session ended (signed out, revoked, expired).
    SessionEnded,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::ClientLeft | Ending::ClientClosed(_) => "client_left",
            Ending::ServerShutdown => "server_shutdown",
            Ending::Broken => "broken",
            Ending::TooBig => "frame_too_big",
            Ending::NotUtf8 => "not_utf8",
            Ending::ProtocolViolation => "protocol_violation",
            Ending::SlowConsumer => "slow_consumer",
            Ending::Unresponsive => "unresponsive",
            Ending::Idle => "idle",
            Ending::SessionEnded => "session_ended",
        }
    }

    /// The close frame's code and reason, if one is sent.
    fn close_frame(self) -> Option<(u16, &'static str)> {
        Some(match self {
            Ending::ClientClosed(code) => (code, ""),
            Ending::ServerShutdown => (1001, "server shutting down"),
            Ending::TooBig => (1009, "frame over 65536 bytes"),
            Ending::NotUtf8 => (1007, "text frame is not UTF-8"),
            Ending::ProtocolViolation => (1002, "WebSocket protocol violation"),
            Ending::SlowConsumer => (CLOSE_SLOW_CONSUMER, "slow_consumer"),
            Ending::Unresponsive => (CLOSE_UNRESPONSIVE, "no answer to ping"),
            Ending::Idle => (CLOSE_IDLE, "idle"),
            Ending::SessionEnded => (CLOSE_SESSION_ENDED, "session ended"),
            Ending::ClientLeft | Ending::Broken => return None,
        })
    }

    /// What a read error means.
    fn of_read_error(err: &tungstenite::Error) -> Ending {
        match err {
            tungstenite::Error::Capacity(_) => Ending::TooBig,
            tungstenite::Error::Utf8(_) => Ending::NotUtf8,
            // The peer went away without a close frame: gone, not misbehaving.
            tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                Ending::Broken
            }
            tungstenite::Error::Protocol(_) => Ending::ProtocolViolation,
            _ => Ending::Broken,
        }
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
    /// Time to check the client's liveness.
    Check,
    Reply(Utf8Bytes),
    Delivery(usize, Delivery),
    Ops(Result<Frame, broadcast::error::RecvError>),
    Media(Option<Utf8Bytes>),
    SessionEnd(End),
}

pub(super) struct Connection {
    pub(super) id: ConnectionId,
    socket: Socket,
    /// Who is connected (and what their credential grants).
    pub(super) who: Who,
    /// The session the connection was opened with, watched for its end.
    session: Option<SessionWatch>,
    pub(super) state: GatewayState,
    pub(super) following: Following,
    /// Writes and reads this connection may still make (token buckets).
    pub(super) writes: Budget,
    pub(super) reads: Budget,
    /// `/ops` samples, once subscribed.
    pub(super) ops_events: Option<broadcast::Receiver<Frame>>,
    pub(super) pipeline: Pipeline,
    pub(super) media: MediaPlace,
    liveness: Liveness,
    /// After a slow consumer's write timed out inside a frame: the rest of that frame, to send
    /// before the close frame.
    unfinished: Vec<u8>,
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
    /// `ends` was subscribed before `signed` was verified (see [`SessionWatch::new`]).
    pub(super) fn new(
        socket: Socket,
        signed: Option<Signed>,
        ends: broadcast::Receiver<SessionNews>,
        state: GatewayState,
    ) -> Self {
        let now = Instant::now();
        let config = state.config.clone();
        let writes = Budget::new(config.write_rate, config.write_burst, now);
        let reads = Budget::new(config.read_rate, config.read_burst, now);
        let session = signed
            .as_ref()
            .map(|signed| SessionWatch::new(signed, ends));
        Connection {
            id: ConnectionId::next(),
            socket,
            who: signed.map(Signed::into_who).unwrap_or_default(),
            session,
            state,
            following: Following::default(),
            writes,
            reads,
            ops_events: None,
            pipeline: Pipeline::default(),
            media: MediaPlace::default(),
            liveness: Liveness::new(config.ping_interval, config.idle_timeout, now),
            unfinished: Vec::new(),
        }
    }

    pub(super) async fn run(mut self) -> Ending {
        tracing::debug!(connection = ?self.id, signed_in = self.who.actor.is_some(), "websocket connected");
        let ending = self.serve().await;
        for campaign in self.following.campaigns() {
            self.state.manager.leave(campaign, self.id);
        }
        self.media.forget(&self.state.relay);
        if let Some((code, reason)) = ending.close_frame() {
            // Best effort, bounded: a slow consumer may not take even this.
            let rest = std::mem::take(&mut self.unfinished);
            let closing = send_close(&mut self.socket, &rest, code, reason);
            let _ = tokio::time::timeout(CLOSE_GRACE, closing).await;
        }
        tracing::debug!(connection = ?self.id, reason = ending.as_str(), "websocket disconnected");
        ending
    }

    async fn serve(&mut self) -> Ending {
        let mut shutdown = self.state.shutdown.clone();
        let mut checks = tokio::time::interval(self.liveness.period());
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        checks.reset();
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
                end = SessionWatch::next_end(&mut self.session), if self.session.is_some() => Input::SessionEnd(end),
                _ = checks.tick() => Input::Check,
            };
            if let Input::Frame(Some(Ok(message))) = &input {
                let request = matches!(message, Message::Text(_) | Message::Binary(_));
                self.liveness.heard(Instant::now(), request);
            }
            let mut out = Outgoing::default();
            match input {
                Input::SessionEnd(end) => {
                    let Some(watch) = &self.session else { continue };
                    match watch.heard(end, &self.state.sessions, clock::now()).await {
                        Verdict::Ended => return Ending::SessionEnded,
                        Verdict::Goes => continue,
                    }
                }
                Input::Check => {
                    if let Some(watch) = &mut self.session {
                        if watch.check(&self.state.sessions, clock::now()).await == Verdict::Ended {
                            return Ending::SessionEnded;
                        }
                    }
                    if let Some(campaign) = self.media_unfollowed() {
                        // In a live room without following the campaign: nothing else tells
                        // this connection it lost access, so every check asks.
                        let caller = self.who.caller(&campaign);
                        if let Err(error) = self.state.manager.role(&campaign, caller).await {
                            if error.code == ErrorCode::NotFound {
                                self.lose_media(&campaign, &mut out);
                                if let Err(ending) = self.send(out).await {
                                    return ending;
                                }
                                continue;
                            }
                        }
                    }
                    let busy = !self.following.is_empty()
                        || self.media.is_in()
                        || self.ops_events.is_some()
                        || self.pipeline.len() > 0;
                    match self.liveness.check(Instant::now(), busy) {
                        LivenessCheck::Fine => continue,
                        LivenessCheck::SendPing => {
                            if self
                                .socket
                                .send(Message::Ping(Default::default()))
                                .await
                                .is_err()
                            {
                                return Ending::Broken;
                            }
                            continue;
                        }
                        LivenessCheck::Unresponsive => return Ending::Unresponsive,
                        LivenessCheck::Idle => return Ending::Idle,
                    }
                }
                Input::Frame(None) => return Ending::ClientLeft,
                Input::Frame(Some(Ok(Message::Close(frame)))) => {
                    return Ending::ClientClosed(frame.map_or(1000, |f| u16::from(f.code)));
                }
                Input::Frame(Some(Err(err))) => {
                    let ending = Ending::of_read_error(&err);
                    tracing::debug!(connection = ?self.id, error = %err, reason = ending.as_str(), "websocket read failed");
                    return ending;
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
                // tungstenite queued the pong; send it now.
                Input::Frame(Some(Ok(Message::Ping(_)))) => {
                    if self.socket.flush().await.is_err() {
                        return Ending::Broken;
                    }
                    continue;
                }
                // A pong only counts as being heard; raw frames are only ever written.
                Input::Frame(Some(Ok(Message::Pong(_) | Message::Frame(_)))) => continue,
                Input::Ops(Ok(frame)) => out.push(frame.text),
                // Missed a sample: the next one is complete anyway.
                Input::Ops(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Input::Ops(Err(broadcast::error::RecvError::Closed)) => self.ops_events = None,
                Input::Media(Some(push)) => {
                    if let Some((campaign, live)) = self.media.observe(&push) {
                        self.state.manager.set_live(&campaign, self.id, live);
                    }
                    out.push(push);
                }
                Input::Media(None) => {
                    if let Some(campaign) = self.media.live_in() {
                        self.state.manager.set_live(campaign, self.id, false);
                    }
                    self.media.ended();
                }
                Input::Delivery(slot, delivery) => {
                    let reader = Reader {
                        manager: &self.state.manager,
                        connection: self.id,
                        who: &self.who,
                    };
                    self.following
                        .deliver_ready(slot, delivery, &reader, &mut out)
                        .await;
                    for campaign in self.following.take_lost() {
                        self.lose_media(&campaign, &mut out);
                    }
                }
            }
            if let Err(ending) = self.send(out).await {
                return ending;
            }
            self.following.record_delivery(&self.state.ops);
        }
    }

    /// The live room this connection is in, when it does not follow that campaign.
    fn media_unfollowed(&self) -> Option<CampaignId> {
        let campaign = self.media.campaign()?;
        (!self.following.follows(campaign)).then(|| campaign.clone())
    }

    /// The person may no longer see `campaign`: out of its live room, no longer shown live.
    fn lose_media(&mut self, campaign: &CampaignId, out: &mut Outgoing) {
        let was_live = self.media.live_in() == Some(campaign);
        if let Some(ended) = self.media.expel(&self.state.relay, campaign) {
            if was_live {
                self.state.manager.set_live(campaign, self.id, false);
            }
            out.push(ended);
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
        let mut progress = 0;
        let sent = {
            let sending = send_texts(&mut self.socket, &texts, &mut progress);
            tokio::pin!(sending);
            match sending.as_mut().now_or_never() {
                Some(result) => Ok(result),
                None => match tokio::time::timeout(STALL_THRESHOLD, &mut sending).await {
                    Ok(result) => Ok(result),
                    Err(_) => {
                        let _stall = self.state.stats.stall();
                        tokio::time::timeout(SLOW_CONSUMER_TIMEOUT - STALL_THRESHOLD, &mut sending)
                            .await
                    }
                },
            }
        };
        if sent.is_err() {
            self.unfinished = rest_of_frame(&texts, progress);
        }
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
