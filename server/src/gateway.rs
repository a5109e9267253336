//! The WebSocket gateway: one task per connection at `GET /ws`.
//!
//! A connection task does three things, one at a time, in a loop: read a client frame and answer
//! it; forward events from the campaigns it subscribes to; close with 1001 when the server shuts
//! down. Limits are enforced here before anything reaches campaign state (see
//! [`GatewayConfig`] and docs/protocol.md).
//!
//! Delivery is gap-free per campaign: every state event carries its version, the connection
//! remembers the last version it delivered, and when its buffer overflowed (the client reads too
//! slowly) it fetches what it missed from the campaign's history instead of skipping it. A client
//! whose socket does not accept a write for [`SLOW_CONSUMER_TIMEOUT`] is disconnected with close
//! code [`CLOSE_SLOW_CONSUMER`]; nobody else waits for it.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::websocket::{Socket, Upgrade};
use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use rally_app::model::{Actor, CampaignId, RequestId};
use rally_app::protocol::campaign::{
    CampaignRef, Resume, Resync, SnapshotReason, SubscriptionEnded, RESYNC, SUBSCRIPTION_ENDED,
};
use rally_app::protocol::ops::OpsHistory;
use rally_app::protocol::{
    decode_request, ClientRequest, ErrorBody, ErrorCode, EventState, EventType, PingReply,
    RejectedFrame, Request, FRAME_FAILED,
};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use crate::auth::{self, Source};
use crate::campaigns::core::Write;
use crate::campaigns::writer::{Backfill, EncodedHistory, SUBSCRIBER_BUFFER};
use crate::campaigns::{CampaignGauges, ConnectionId, StateManager};
use crate::clock;
use crate::frames::{self, Frame};
use crate::http::{ApiError, AppState};
use crate::media::cluster::{Answer, Call};
use crate::media::forward::ParticipantId;
use crate::media::{Joining, MediaError, MediaRelay};
use crate::ops::{OpsCounters, OpsFeed};
use crate::shutdown::ShutdownSignal;

/// Largest text frame (and message) a client may send. Larger ones close the connection with
/// 1009 (message too big): the frame cannot be read, so there is no request to answer.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Initial WebSocket read buffer per connection.
pub const READ_BUFFER_BYTES: usize = 1024;
/// A socket that accepts no write for this long belongs to a slow consumer.
pub const SLOW_CONSUMER_TIMEOUT: Duration = Duration::from_secs(5);
/// Close code sent to a slow consumer (application range 4000-4999).
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// A write pending this long marks the subscriber's channel as stuck (readiness reports it).
pub const STALL_THRESHOLD: Duration = Duration::from_secs(1);
/// Requests a connection may have in flight before it stops reading more.
pub const MAX_PIPELINE: usize = 64;
/// Ready frames gathered into one write (more only when one commit alone is larger). A
/// subscriber several commits behind catches up in few `writev` calls: 64 → 256 measured
/// +2 % delivered/s at 1,000 subscribers (BENCHMARKS.md). Each frame is two iovecs; the kernel
/// takes at most 1,024 per call and the writer loops for the rest.
const MAX_WRITE_BATCH: usize = 256;

/// Per-connection limits. Defaults are documented in docs/protocol.md.
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

/// Connection counters shared by the gateway and readiness.
#[derive(Debug, Clone)]
pub struct GatewayStats {
    inner: Arc<StatsInner>,
}

#[derive(Debug)]
struct StatsInner {
    open: AtomicUsize,
    limit: usize,
    /// Connections whose socket has refused a write for over a second right now.
    stalled: AtomicUsize,
}

impl GatewayStats {
    pub fn new(limit: usize) -> Self {
        GatewayStats {
            inner: Arc::new(StatsInner {
                open: AtomicUsize::new(0),
                limit,
                stalled: AtomicUsize::new(0),
            }),
        }
    }

    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Subscriber channels stuck full right now: sockets that have taken no data for over
    /// [`STALL_THRESHOLD`].
    pub fn stalled(&self) -> usize {
        self.inner.stalled.load(Ordering::Relaxed)
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
        if acquired {
            metrics::gauge!("rally_websocket_connections_open").increment(1.0);
        }
        acquired.then(|| ConnectionSlot(self.clone()))
    }
}

struct ConnectionSlot(GatewayStats);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.inner.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("rally_websocket_connections_open").decrement(1.0);
    }
}

/// Counts a connection as stalled while alive.
struct Stall<'a>(&'a GatewayStats);

impl<'a> Stall<'a> {
    fn begin(stats: &'a GatewayStats) -> Self {
        stats.inner.stalled.fetch_add(1, Ordering::Relaxed);
        Stall(stats)
    }
}

impl Drop for Stall<'_> {
    fn drop(&mut self) {
        self.0.inner.stalled.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Browsers send `Origin`; only the site itself (or configured origins) may open a socket that
/// carries the user's cookie. Clients without `Origin` (not browsers) authenticate by token.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if !allowed.is_empty() {
        return allowed.iter().any(|a| a.eq_ignore_ascii_case(origin));
    }
    let host = headers.get("host").and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// `GET /ws`: check origin and credentials, then upgrade, unless shutting down or full.
pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    upgrade: Upgrade,
) -> Response {
    if state.shutdown.is_triggered() {
        return ApiError::new(ErrorCode::Unavailable, "server is shutting down").into_response();
    }
    if !origin_allowed(&headers, &state.gateway_config.allowed_origins) {
        return ApiError::new(ErrorCode::Forbidden, "WebSocket origin not allowed").into_response();
    }
    let identity = match auth::token_from_request(&headers, uri.query()) {
        None => None,
        Some((token, source)) => match state.keys.verify_session(token, clock::now()) {
            Ok(actor) => Some(actor),
            Err(_) if source == Source::Cookie => None,
            Err(err) => {
                return ApiError::new(
                    ErrorCode::Unauthorized,
                    format!("session token rejected: {err}"),
                )
                .into_response()
            }
        },
    };
    let Some(slot) = state.gateway.try_acquire() else {
        return ApiError::new(
            ErrorCode::Unavailable,
            "connection limit reached; retry later",
        )
        .into_response();
    };
    let tasks = state.tasks.clone();
    // tungstenite reserves its whole read buffer up front (128 KiB by default): most of an
    // idle connection's memory. Frames are small; the buffer grows when one is not.
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .read_buffer_size(READ_BUFFER_BYTES);
    upgrade.accept(config, move |socket| {
        tasks.track_future(async move {
            let _slot = slot;
            metrics::counter!("rally_websocket_connections_total").increment(1);
            let connection = Connection::new(socket, identity, &state);
            // Everything the connection needs is in it; keep no second copy alive.
            drop(state);
            let ending = connection.run().await;
            metrics::counter!("rally_websocket_disconnects_total", "reason" => ending.as_str())
                .increment(1);
        })
    })
}

/// What a followed campaign's channel yields.
enum Delivery {
    /// A commit's events, or a push.
    Batch(frames::Batch),
    /// The subscriber fell more than the buffer behind; catch up from history.
    Lagged,
    /// The campaign's task went away (it failed, or the server is stopping).
    Ended,
}

impl From<Result<frames::Batch, broadcast::error::RecvError>> for Delivery {
    fn from(received: Result<frames::Batch, broadcast::error::RecvError>) -> Self {
        match received {
            Ok(batch) => Delivery::Batch(batch),
            Err(broadcast::error::RecvError::Lagged(_)) => Delivery::Lagged,
            Err(broadcast::error::RecvError::Closed) => Delivery::Ended,
        }
    }
}

/// Wait for the next delivery of any followed campaign. Most connections follow one campaign,
/// and then this is a plain `recv` on its channel; several are raced.
async fn next_delivery(follows: &mut [Option<Follow>]) -> (usize, Delivery) {
    let mut waiting: Vec<_> = follows
        .iter_mut()
        .enumerate()
        .filter_map(|(slot, follow)| follow.as_mut().map(|f| (slot, &mut f.events)))
        .collect();
    match waiting.len() {
        0 => std::future::pending().await,
        1 => {
            let (slot, events) = waiting.pop().expect("one follow");
            (slot, events.recv().await.into())
        }
        _ => {
            let races = waiting
                .into_iter()
                .map(|(slot, events)| Box::pin(async move { (slot, events.recv().await) }));
            let ((slot, received), _, _) = futures_util::future::select_all(races).await;
            (slot, received.into())
        }
    }
}

/// Why a connection ended; decides the close frame, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    ClientLeft,
    ServerShutdown,
    Broken,
    TooBig,
    SlowConsumer,
}

impl Ending {
    fn as_str(self) -> &'static str {
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

/// Token bucket for writes.
struct WriteBudget {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl WriteBudget {
    fn new(rate: f64, burst: f64) -> Self {
        WriteBudget {
            tokens: burst,
            rate,
            burst,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One campaign a connection follows.
struct Follow {
    campaign: CampaignId,
    /// Last state-event version delivered.
    last: u64,
    /// The campaign's live counters (for the buffer-use metric).
    gauges: Arc<CampaignGauges>,
    /// The campaign's recent encoded events, to catch up from without asking its task.
    history: EncodedHistory,
    /// Its live channel (the 32-event buffer).
    events: broadcast::Receiver<frames::Batch>,
}

/// Metric handles used per delivery batch, resolved once instead of looked up by name each time.
struct HotMetrics {
    delivery_seconds: metrics::Histogram,
    buffer_used: metrics::Histogram,
}

fn hot_metrics() -> &'static HotMetrics {
    static HOT: std::sync::OnceLock<HotMetrics> = std::sync::OnceLock::new();
    HOT.get_or_init(|| HotMetrics {
        delivery_seconds: metrics::histogram!("rally_delivery_seconds"),
        buffer_used: metrics::histogram!("rally_subscriber_buffer_used"),
    })
}

struct Connection {
    id: ConnectionId,
    socket: Socket,
    identity: Option<Actor>,
    manager: StateManager,
    config: Arc<GatewayConfig>,
    shutdown: ShutdownSignal,
    /// What each slot follows (`None`: free). Slots are small numbers, so the hot path neither
    /// hashes nor clones campaign ids.
    follows: Vec<Option<Follow>>,
    budget: WriteBudget,
    stats: GatewayStats,
    ops: Arc<OpsCounters>,
    ops_feed: OpsFeed,
    /// `/ops` samples, once subscribed.
    ops_events: Option<broadcast::Receiver<Frame>>,
    /// State events in the batch being written, and the first one's (campaign, version, durable
    /// time) for the latency and buffer samples.
    batch_states: u64,
    batch_first: Option<(usize, u64, Option<Instant>)>,
    /// Replies to requests still being answered, in request order. Writes are pipelined: the
    /// connection keeps reading while earlier writes wait for their commit, so one client's
    /// burst shares commits instead of paying one each.
    pipeline: FuturesOrdered<PendingReply>,
    relay: MediaRelay,
    /// The media session this connection is in (at most one), with the relay's pushes for it.
    media: Option<Box<MediaMembership>>,
}

/// A connection's place in one campaign's media session.
struct MediaMembership {
    campaign: CampaignId,
    participant: ParticipantId,
    /// Offers, track lists and endings from the relay; closed when the relay lets go.
    pushes: mpsc::Receiver<Utf8Bytes>,
}

/// Frames for the next write, in order: texts of their own (replies, pushes), and runs of a
/// broadcast batch's frames, which stay in the batch — one reference to the batch per run
/// instead of one per event.
#[derive(Default)]
struct Outgoing {
    parts: Vec<Part>,
    frames: usize,
}

enum Part {
    Text(Utf8Bytes),
    Run(frames::Batch, std::ops::Range<usize>),
}

impl Outgoing {
    fn push(&mut self, text: Utf8Bytes) {
        self.parts.push(Part::Text(text));
        self.frames += 1;
    }

    /// Frame `index` of `batch`; extends the last run when it continues it.
    fn push_shared(&mut self, batch: &frames::Batch, index: usize) {
        self.frames += 1;
        if let Some(Part::Run(last, run)) = self.parts.last_mut() {
            if run.end == index && std::sync::Arc::ptr_eq(last, batch) {
                run.end += 1;
                return;
            }
        }
        self.parts.push(Part::Run(batch.clone(), index..index + 1));
    }

    fn len(&self) -> usize {
        self.frames
    }

    fn is_empty(&self) -> bool {
        self.frames == 0
    }

    fn texts(&self) -> Vec<&[u8]> {
        let mut texts = Vec::with_capacity(self.frames);
        for part in &self.parts {
            match part {
                Part::Text(text) => texts.push(text.as_bytes()),
                Part::Run(batch, run) => {
                    texts.extend(batch[run.clone()].iter().map(|f| f.text.as_bytes()))
                }
            }
        }
        texts
    }
}

/// A reply that will be ready later (a write waiting for its commit).
type PendingReply = Pin<Box<dyn std::future::Future<Output = Utf8Bytes> + Send>>;

enum Input {
    Frame(Option<Result<Message, tungstenite::Error>>),
    Reply(Utf8Bytes),
    Delivery(usize, Delivery),
    Ops(Result<Frame, broadcast::error::RecvError>),
    Media(Option<Utf8Bytes>),
}

impl Connection {
    fn new(socket: Socket, identity: Option<Actor>, state: &AppState) -> Self {
        let config = state.gateway_config.clone();
        Connection {
            id: ConnectionId::next(),
            socket,
            identity,
            manager: state.manager.clone(),
            budget: WriteBudget::new(config.write_rate, config.write_burst),
            config,
            shutdown: state.shutdown.clone(),
            follows: Vec::new(),
            stats: state.gateway.clone(),
            ops: state.manager.ops().clone(),
            ops_feed: state.ops_feed.clone(),
            ops_events: None,
            batch_states: 0,
            batch_first: None,
            pipeline: FuturesOrdered::new(),
            relay: state.media.clone(),
            media: None,
        }
    }

    /// Queue a reply behind the ones still pending, so replies keep request order.
    fn enqueue(&mut self, reply: impl std::future::Future<Output = Utf8Bytes> + Send + 'static) {
        self.pipeline.push_back(Box::pin(reply));
    }

    /// Wait for every pending reply (before a request that changes this connection's state).
    async fn drain_pipeline(&mut self, out: &mut Outgoing) {
        while let Some(reply) = self.pipeline.next().await {
            out.push(reply);
        }
    }

    /// The slot following `campaign`, if any.
    fn slot_of(&self, campaign: &CampaignId) -> Option<usize> {
        self.follows
            .iter()
            .position(|f| f.as_ref().is_some_and(|f| f.campaign == *campaign))
    }

    /// Stop following a campaign here (the caller tells the manager if needed).
    fn forget(&mut self, campaign: &CampaignId) -> bool {
        let Some(slot) = self.slot_of(campaign) else {
            return false;
        };
        self.follows[slot] = None;
        true
    }

    fn followed(&self) -> impl Iterator<Item = &CampaignId> {
        self.follows.iter().flatten().map(|f| &f.campaign)
    }

    async fn run(mut self) -> Ending {
        tracing::debug!(connection = ?self.id, signed_in = self.identity.is_some(), "websocket connected");
        let ending = self.serve().await;
        for campaign in self.followed() {
            self.manager.leave(campaign, self.id);
        }
        if let Some(media) = self.media.take() {
            self.relay.forget(&media.campaign, media.participant);
        }
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
        loop {
            let has_follows = self.follows.iter().any(Option::is_some);
            let input = tokio::select! {
                biased;
                _ = self.shutdown.recv() => return Ending::ServerShutdown,
                Some(reply) = self.pipeline.next(), if !self.pipeline.is_empty() => Input::Reply(reply),
                frame = self.socket.next(), if self.pipeline.len() < MAX_PIPELINE => Input::Frame(frame),
                (slot, delivery) = next_delivery(&mut self.follows), if has_follows => Input::Delivery(slot, delivery),
                sample = next_ops(&mut self.ops_events), if self.ops_events.is_some() => Input::Ops(sample),
                push = next_media_push(&mut self.media), if self.media.is_some() => Input::Media(push),
            };
            let mut out = Outgoing::default();
            match input {
                Input::Frame(None | Some(Ok(Message::Close(_)))) => return Ending::ClientLeft,
                Input::Frame(Some(Err(err))) => {
                    return if is_capacity_error(&err) {
                        Ending::TooBig
                    } else {
                        tracing::debug!(connection = ?self.id, error = %err, "websocket read failed");
                        Ending::Broken
                    };
                }
                Input::Frame(Some(Ok(Message::Text(text)))) => {
                    // Boxed: answering nests the whole request path's state; keeping it out of
                    // this loop's future keeps an idle connection small (see READ_BUFFER_BYTES).
                    Box::pin(self.answer(&text, &mut out)).await;
                    self.take_ready_replies(&mut out);
                }
                Input::Reply(reply) => {
                    out.push(reply);
                    self.take_ready_replies(&mut out);
                }
                Input::Frame(Some(Ok(Message::Binary(_)))) => out.push(reject(RejectedFrame {
                    reply_type: FRAME_FAILED,
                    request_id: None,
                    error: ErrorBody::new(
                        ErrorCode::Invalid,
                        "binary frames are not supported; send JSON text",
                    ),
                })),
                // Pings are answered by the WebSocket layer itself.
                // (Raw frames are only ever written, never read.)
                Input::Frame(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {
                    continue
                }
                Input::Ops(Ok(frame)) => out.push(frame.text),
                // Missed a sample: the next one is complete anyway.
                Input::Ops(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Input::Ops(Err(broadcast::error::RecvError::Closed)) => self.ops_events = None,
                Input::Media(Some(push)) => out.push(push),
                // The relay ended this participant (it said why in its last push).
                Input::Media(None) => self.media = None,
                Input::Delivery(slot, delivery) => {
                    self.deliver(slot, delivery, &mut out).await;
                    // Take whatever else is ready now (no waiting, no futures), so one flush
                    // carries many events.
                    let mut slot = 0;
                    while out.len() < MAX_WRITE_BATCH && slot < self.follows.len() {
                        let ready = match &mut self.follows[slot] {
                            Some(follow) => match follow.events.try_recv() {
                                Ok(batch) => Some(Delivery::Batch(batch)),
                                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                    Some(Delivery::Lagged)
                                }
                                Err(broadcast::error::TryRecvError::Closed) => {
                                    Some(Delivery::Ended)
                                }
                                Err(broadcast::error::TryRecvError::Empty) => None,
                            },
                            None => None,
                        };
                        match ready {
                            Some(delivery) => self.deliver(slot, delivery, &mut out).await,
                            None => slot += 1,
                        }
                    }
                }
            }
            if let Err(ending) = self.send_all(out).await {
                return ending;
            }
            let first = self.batch_first.take();
            let states = std::mem::take(&mut self.batch_states);
            self.record_delivery(states, first);
        }
    }

    /// Replies already answered, in order (stops at the first still pending).
    fn take_ready_replies(&mut self, out: &mut Outgoing) {
        while !self.pipeline.is_empty() {
            match self.pipeline.next().now_or_never() {
                Some(Some(reply)) => out.push(reply),
                _ => break,
            }
        }
    }

    async fn send_all(&mut self, out: Outgoing) -> Result<(), Ending> {
        if out.is_empty() {
            return Ok(());
        }
        let texts = out.texts();
        let write = crate::websocket::write_texts(&mut self.socket, &texts);
        tokio::pin!(write);
        // Most writes finish at once and never touch a timer; only a slow one is timed,
        // counted as stalled after STALL_THRESHOLD and cut at SLOW_CONSUMER_TIMEOUT.
        let written = match write.as_mut().now_or_never() {
            Some(result) => Ok(result),
            None => match tokio::time::timeout(STALL_THRESHOLD, &mut write).await {
                Ok(result) => Ok(result),
                Err(_) => {
                    let _stall = Stall::begin(&self.stats);
                    tokio::time::timeout(SLOW_CONSUMER_TIMEOUT - STALL_THRESHOLD, &mut write).await
                }
            },
        };
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::Broken),
            Err(_) => {
                metrics::counter!("rally_slow_consumer_disconnects_total").increment(1);
                self.ops.slow_consumers.fetch_add(1, Ordering::Relaxed);
                Err(Ending::SlowConsumer)
            }
        }
    }

    /// After a batch reached the socket: count it, and sample latency and buffer use once.
    fn record_delivery(&self, state_events: u64, first: Option<(usize, u64, Option<Instant>)>) {
        if state_events == 0 {
            return;
        }
        self.ops
            .deliveries
            .fetch_add(state_events, Ordering::Relaxed);
        if let Some((slot, version, durable_at)) = first {
            let hot = hot_metrics();
            if let Some(durable_at) = durable_at {
                let elapsed = durable_at.elapsed();
                self.ops.delivery_latency.record(elapsed);
                hot.delivery_seconds.record(elapsed.as_secs_f64());
            }
            if let Some(Some(follow)) = self.follows.get(slot) {
                let behind = follow
                    .gauges
                    .latest_version
                    .load(Ordering::Relaxed)
                    .saturating_sub(version);
                hot.buffer_used
                    .record(behind.min(SUBSCRIBER_BUFFER as u64) as f64);
            }
        }
    }

    /// Bring one subscription's delivery to the socket, keeping versions contiguous.
    async fn deliver(&mut self, slot: usize, delivery: Delivery, out: &mut Outgoing) {
        let Some(Some(follow)) = self.follows.get(slot) else {
            return; // unsubscribed meanwhile
        };
        let last = follow.last;
        match delivery {
            Delivery::Batch(batch) => {
                for (index, frame) in batch.iter().enumerate() {
                    let Some(version) = frame.version else {
                        out.push_shared(&batch, index);
                        continue;
                    };
                    let Some(Some(follow)) = self.follows.get(slot) else {
                        return;
                    };
                    let last = follow.last;
                    if version <= last {
                        continue; // already delivered through a backfill
                    }
                    if version > last + 1 {
                        Box::pin(self.backfill(slot, last, out)).await;
                    }
                    let Some(Some(follow)) = self.follows.get_mut(slot) else {
                        return;
                    };
                    if version == follow.last + 1 {
                        follow.last = version;
                        out.push_shared(&batch, index);
                        self.batch_states += 1;
                        if self.batch_first.is_none() {
                            self.batch_first = Some((slot, version, frame.durable_at));
                        }
                    }
                }
            }
            Delivery::Lagged => {
                metrics::counter!("rally_subscriber_lagged_total").increment(1);
                Box::pin(self.backfill(slot, last, out)).await;
            }
            Delivery::Ended => {
                let Some(follow) = self.follows[slot].take() else {
                    return;
                };
                let ended = SubscriptionEnded {
                    campaign_id: follow.campaign,
                    reason: ErrorBody::new(
                        ErrorCode::Unavailable,
                        "the campaign restarted; subscribe again with since_version",
                    ),
                };
                out.push(frames::push(SUBSCRIPTION_ENDED, &ended, clock::now()).text);
            }
        }
    }

    /// Fetch what the subscriber missed after `last`: events from history, or a resync snapshot.
    async fn backfill(&mut self, slot: usize, last: u64, out: &mut Outgoing) {
        let Some(Some(follow)) = self.follows.get_mut(slot) else {
            return;
        };
        // Usually the missed events are still in the shared history: copy them from there.
        if let Some(missed) = follow.history.after(last) {
            let mut version = last;
            for frame in missed {
                if let Some(v) = frame.version.filter(|v| *v == version + 1) {
                    out.push(frame.text);
                    version = v;
                }
            }
            follow.last = version;
            return;
        }
        let campaign = follow.campaign.clone();
        let user = self.identity.as_ref().map(|a| a.user_id.clone());
        let result = self.manager.backfill(&campaign, last, user).await;
        let Some(Some(follow)) = self.follows.get_mut(slot) else {
            return;
        };
        match result {
            Ok(Backfill::Events(missed)) => {
                let mut version = last;
                for frame in missed {
                    if let Some(v) = frame.version.filter(|v| *v == version + 1) {
                        out.push(frame.text);
                        version = v;
                    }
                }
                follow.last = version;
            }
            Ok(Backfill::Snapshot(snapshot)) => {
                follow.last = snapshot.campaign.version;
                let resync = Resync {
                    campaign_id: campaign,
                    reason: SnapshotReason::HistoryTruncated,
                    campaign: snapshot.campaign,
                    role: snapshot.role,
                };
                out.push(frames::push(RESYNC, &resync, clock::now()).text);
            }
            Err(error) => {
                self.forget(&campaign);
                self.manager.leave(&campaign, self.id);
                let ended = SubscriptionEnded {
                    campaign_id: campaign,
                    reason: error,
                };
                out.push(frames::push(SUBSCRIPTION_ENDED, &ended, clock::now()).text);
            }
        }
    }

    /// Decode and answer one text frame.
    async fn answer(&mut self, text: &str, out: &mut Outgoing) {
        let request = match decode_request(text) {
            Ok(request) => request,
            Err(rejected) => {
                tracing::debug!(connection = ?self.id, code = %rejected.error.code, "request rejected at decode");
                let reply = reject(rejected);
                self.enqueue(async move { reply });
                return;
            }
        };
        let Request {
            event_type,
            request_id,
            body,
        } = request;
        tracing::debug!(connection = ?self.id, r#type = %event_type, "request");
        if body.is_write() && !self.budget.take() {
            let reply = failed(
                &event_type,
                request_id,
                ErrorBody::new(
                    ErrorCode::RateLimited,
                    format!(
                        "more than {} writes per second; slow down",
                        self.config.write_rate
                    ),
                ),
            );
            self.enqueue(async move { reply });
            return;
        }
        let reads_need_session = !self.config.allow_anonymous && self.identity.is_none();
        let unauthorized = || {
            ErrorBody::new(
                ErrorCode::Unauthorized,
                "this server requires a session to watch campaigns",
            )
        };
        match body {
            ClientRequest::Ping(_) => {
                let reply = success(
                    &event_type,
                    request_id,
                    &PingReply {
                        server_time: clock::now(),
                    },
                );
                self.enqueue(async move { reply });
            }
            ClientRequest::Create(request) => {
                let Some(actor) = self.identity.clone() else {
                    let reply = failed(
                        &event_type,
                        request_id,
                        ErrorBody::new(ErrorCode::Forbidden, "sign in to create campaigns"),
                    );
                    self.enqueue(async move { reply });
                    return;
                };
                let manager = self.manager.clone();
                self.enqueue(async move {
                    let result = manager.create(request, actor).await;
                    respond(&event_type, request_id, result)
                });
            }
            ClientRequest::OpsSubscribe(_) => {
                self.drain_pipeline(out).await;
                let allowed = self.config.ops_public
                    || self.identity.as_ref().is_some_and(|a| {
                        self.config.admins.iter().any(|id| id == a.user_id.as_str())
                    });
                if !allowed {
                    let who = match &self.identity {
                        Some(actor) => format!("user {}", actor.user_id),
                        None => "anonymous visitors".to_owned(),
                    };
                    out.push(failed(
                        &event_type,
                        request_id,
                        ErrorBody::new(
                            ErrorCode::Forbidden,
                            format!("the ops view is for admins (RALLY_ADMINS); {who} is not one"),
                        ),
                    ));
                    return;
                }
                self.ops_events = Some(self.ops_feed.subscribe());
                let history = OpsHistory {
                    samples: self.ops_feed.history(),
                };
                out.push(success(&event_type, request_id, &history));
            }
            ClientRequest::Subscribe(request) => {
                self.drain_pipeline(out).await;
                if reads_need_session {
                    out.push(failed(&event_type, request_id, unauthorized()));
                    return;
                }
                self.subscribe(
                    &event_type,
                    request_id,
                    request.campaign_id,
                    request.since_version,
                    out,
                )
                .await;
            }
            ClientRequest::Unsubscribe(CampaignRef { campaign_id }) => {
                self.drain_pipeline(out).await;
                // Dropping the stream drops the receiver: its buffered events are released.
                if self.forget(&campaign_id) {
                    self.manager.leave(&campaign_id, self.id);
                }
                out.push(success(
                    &event_type,
                    request_id,
                    &CampaignRef { campaign_id },
                ));
            }
            ClientRequest::Snapshot(CampaignRef { campaign_id }) => {
                if reads_need_session {
                    let reply = failed(&event_type, request_id, unauthorized());
                    self.enqueue(async move { reply });
                    return;
                }
                let user = self.identity.as_ref().map(|a| a.user_id.clone());
                let manager = self.manager.clone();
                self.enqueue(async move {
                    let result = manager.snapshot(&campaign_id, user).await;
                    respond(&event_type, request_id, result)
                });
            }
            ClientRequest::Update(request) => {
                let id = request.campaign_id.clone();
                self.write(event_type, request_id, id, Write::Update(request));
            }
            ClientRequest::Feature(request) => {
                let id = request.campaign_id.clone();
                self.write(event_type, request_id, id, Write::Feature(request));
            }
            ClientRequest::Config(request) => {
                let id = request.campaign_id.clone();
                self.write(event_type, request_id, id, Write::Config(request));
            }
            ClientRequest::MediaJoin(request) => {
                self.drain_pipeline(out).await;
                if reads_need_session {
                    out.push(failed(&event_type, request_id, unauthorized()));
                    return;
                }
                let reply = self.join_media(request.campaign_id).await;
                out.push(respond(&event_type, request_id, reply));
            }
            ClientRequest::MediaPublish(request) => {
                self.media_request(
                    event_type,
                    request_id,
                    request.campaign_id,
                    |participant| Call::Publish {
                        participant,
                        sdp: request.sdp,
                    },
                    |answer, campaign_id| {
                        Ok(rally_app::protocol::media::SessionDescription {
                            campaign_id,
                            sdp: answer.sdp()?,
                        })
                    },
                );
            }
            ClientRequest::MediaAnswer(request) => {
                self.media_request(
                    event_type,
                    request_id,
                    request.campaign_id,
                    |participant| Call::Answer {
                        participant,
                        sdp: request.sdp,
                    },
                    |answer, campaign_id| answer.done().map(|()| CampaignRef { campaign_id }),
                );
            }
            ClientRequest::MediaCandidate(candidate) => {
                self.media_request(
                    event_type,
                    request_id,
                    candidate.campaign_id.clone(),
                    |participant| Call::Candidate {
                        participant,
                        candidate,
                    },
                    |answer, campaign_id| answer.done().map(|()| CampaignRef { campaign_id }),
                );
            }
            ClientRequest::MediaLeave(CampaignRef { campaign_id }) => {
                // Not in the pipeline: later requests must see this connection out of the session.
                self.drain_pipeline(out).await;
                let left = self.media_member(&campaign_id).map(|participant| {
                    self.media = None;
                    self.relay
                        .request(&campaign_id, Call::Leave { participant })
                });
                let result = match left {
                    Ok(left) => left.await.and_then(Answer::done),
                    Err(err) => Err(err),
                };
                out.push(respond(
                    &event_type,
                    request_id,
                    result
                        .map(|()| CampaignRef { campaign_id })
                        .map_err(ErrorBody::from),
                ));
            }
        }
    }

    /// Send a request of this connection's media session to the relay now (so requests reach
    /// the session in order); its reply joins the pipeline. Not in `campaign`'s session →
    /// `not_found` at once.
    fn media_request<P: Serialize>(
        &mut self,
        event_type: EventType,
        request_id: Option<RequestId>,
        campaign: CampaignId,
        call: impl FnOnce(ParticipantId) -> Call,
        reply: impl FnOnce(Answer, CampaignId) -> Result<P, MediaError> + Send + 'static,
    ) {
        let answer = self
            .media_member(&campaign)
            .map(|participant| self.relay.request(&campaign, call(participant)));
        self.enqueue(async move {
            let result = match answer {
                Ok(answer) => answer.await.and_then(|answer| reply(answer, campaign)),
                Err(err) => Err(err),
            };
            respond(&event_type, request_id, result.map_err(ErrorBody::from))
        });
    }

    /// This connection's participant id in `campaign`'s media session.
    fn media_member(&self, campaign: &CampaignId) -> Result<ParticipantId, MediaError> {
        match &self.media {
            Some(media) if media.campaign == *campaign => Ok(media.participant),
            _ => Err(MediaError::NotJoined),
        }
    }

    async fn join_media(
        &mut self,
        campaign: CampaignId,
    ) -> Result<rally_app::protocol::media::MediaJoined, ErrorBody> {
        if let Some(media) = &self.media {
            return Err(if media.campaign == campaign {
                MediaError::AlreadyJoined
            } else {
                MediaError::InAnotherSession(media.campaign.clone())
            }
            .into());
        }
        // The same read permission as watching the campaign; the role decides publishing.
        let user = self.identity.as_ref().map(|a| a.user_id.clone());
        let snapshot = self.manager.snapshot(&campaign, user).await?;
        let can_publish = self.identity.is_some() && self.relay.may_publish(snapshot.role);
        let display_name = self
            .identity
            .as_ref()
            .map_or_else(|| "Anonymous".to_owned(), |a| a.display_name.clone());
        let participant = self.relay.next_participant();
        let (sender, pushes) = mpsc::channel(crate::media::session::PUSH_BUFFER);
        let joining = Joining {
            participant,
            display_name,
            can_publish,
            pushes: sender,
        };
        let joined = self.relay.join(&campaign, joining).await?;
        self.media = Some(Box::new(MediaMembership {
            campaign,
            participant,
            pushes,
        }));
        Ok(joined)
    }

    /// Send a write to its campaign without waiting: the reply joins the pipeline.
    fn write(
        &mut self,
        event_type: EventType,
        request_id: Option<RequestId>,
        campaign: CampaignId,
        write: Write,
    ) {
        let started = Instant::now();
        let manager = self.manager.clone();
        let identity = self.identity.clone();
        let ops = self.ops.clone();
        self.enqueue(async move {
            let result = manager.write(&campaign, write, identity).await;
            if result.is_ok() {
                let elapsed = started.elapsed();
                metrics::histogram!("rally_write_ack_seconds").record(elapsed.as_secs_f64());
                ops.ack_latency.record(elapsed);
            }
            respond(&event_type, request_id, result)
        });
    }

    async fn subscribe(
        &mut self,
        event_type: &EventType,
        request_id: Option<RequestId>,
        campaign: CampaignId,
        since_version: Option<u64>,
        out: &mut Outgoing,
    ) {
        let resubscribing = self.slot_of(&campaign).is_some();
        if !resubscribing && self.followed().count() >= self.config.max_subscriptions {
            out.push(failed(
                event_type,
                request_id,
                ErrorBody::new(
                    ErrorCode::LimitExceeded,
                    format!(
                        "a connection may follow at most {} campaigns; unsubscribe from one first",
                        self.config.max_subscriptions
                    ),
                ),
            ));
            return;
        }
        if resubscribing {
            // Replace, never duplicate: the old stream (and its buffer) goes first.
            self.forget(&campaign);
        }
        let subscription = match self
            .manager
            .subscribe(&campaign, self.id, self.identity.clone(), since_version)
            .await
        {
            Ok(subscription) => subscription,
            Err(error) => {
                if resubscribing {
                    self.manager.leave(&campaign, self.id);
                }
                out.push(failed(event_type, request_id, error));
                return;
            }
        };
        let version = match &subscription.reply.resume {
            Resume::Snapshot { campaign, .. } => campaign.version,
            Resume::Events { to_version, .. } => *to_version,
        };
        out.push(success(event_type, request_id, &subscription.reply));
        for frame in subscription.backlog {
            out.push(frame.text);
        }
        let follow = Follow {
            campaign,
            last: version,
            gauges: subscription.gauges,
            history: subscription.history,
            events: subscription.events,
        };
        match self.follows.iter().position(Option::is_none) {
            Some(free) => self.follows[free] = Some(follow),
            None => self.follows.push(Some(follow)),
        }
    }
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

/// The relay's next push for this connection's media session (only polled while in one).
async fn next_media_push(media: &mut Option<Box<MediaMembership>>) -> Option<Utf8Bytes> {
    match media {
        Some(media) => media.pushes.recv().await,
        None => std::future::pending().await,
    }
}

fn is_capacity_error(err: &tungstenite::Error) -> bool {
    matches!(err, tungstenite::Error::Capacity(_))
}

fn success<P: Serialize>(
    event_type: &EventType,
    request_id: Option<RequestId>,
    payload: &P,
) -> Utf8Bytes {
    frames::reply(
        event_type.with_state(EventState::Success),
        payload,
        request_id,
    )
}

fn failed(event_type: &EventType, request_id: Option<RequestId>, error: ErrorBody) -> Utf8Bytes {
    frames::reply(
        event_type.with_state(EventState::Failed),
        &error,
        request_id,
    )
}

fn respond<P: Serialize>(
    event_type: &EventType,
    request_id: Option<RequestId>,
    result: Result<P, ErrorBody>,
) -> Utf8Bytes {
    match result {
        Ok(payload) => success(event_type, request_id, &payload),
        Err(error) => failed(event_type, request_id, error),
    }
}

fn reject(rejected: RejectedFrame) -> Utf8Bytes {
    frames::reply(rejected.reply_type, &rejected.error, rejected.request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn origin_rules() {
        assert!(
            origin_allowed(&headers(&[("host", "a:3000")]), &[]),
            "no Origin: not a browser"
        );
        assert!(origin_allowed(
            &headers(&[("host", "a:3000"), ("origin", "http://a:3000")]),
            &[]
        ));
        assert!(!origin_allowed(
            &headers(&[("host", "a:3000"), ("origin", "http://evil:3000")]),
            &[]
        ));
        let allowed = vec!["http://127.0.0.1:8080".to_string()];
        assert!(origin_allowed(
            &headers(&[("host", "a:3000"), ("origin", "http://127.0.0.1:8080")]),
            &allowed
        ));
        assert!(!origin_allowed(
            &headers(&[("host", "a:3000"), ("origin", "http://a:3000")]),
            &allowed
        ));
    }

    #[test]
    fn write_budget_refills_at_its_rate() {
        let mut budget = WriteBudget::new(10.0, 2.0);
        assert!(budget.take() && budget.take());
        assert!(!budget.take());
        budget.at -= Duration::from_millis(150);
        assert!(budget.take(), "1.5 tokens refilled");
        assert!(!budget.take());
    }
}
