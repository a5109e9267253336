//! `GET /api/campaigns/{id}/events`: one campaign's events as Server-Sent Events, for public
//! pages and for systems that cannot hold a WebSocket. Read-only.
//!
//! A stream is a subscription like a WebSocket's, delivered by the same [`Following`]: the same
//! frames (the `data:` of each SSE event is the envelope a WebSocket subscriber receives), the
//! same gap-free rules, the same access checks. What SSE adds is the resume point: every frame
//! that brings the reader to a version (a state event, the first snapshot, a resync) carries that
//! version as its `id:`, so a client that lost the stream reconnects with `Last-Event-ID` (the
//! browser's `EventSource` does so by itself) and gets exactly what it missed.
//!
//! The stream's own task delivers into a small channel the response body drains; frames go out
//! shared, as the WebSocket sends them, never copied per reader. A reader that takes nothing for
//! [`SLOW_CONSUMER_TIMEOUT`] loses the stream, as a WebSocket would; the campaign never waits
//! for it. A stream counts against the connection limit, ends when the
//! server shuts down or the credential it was opened with ends, and says why in a last
//! `campaign:subscription:v1:completed` frame.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, OriginalUri, Path, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use rally_app::model::CampaignId;
use rally_app::protocol::campaign::{Resume, SUBSCRIBE};
use rally_app::protocol::{ErrorBody, ErrorCode};
use tokio::sync::mpsc;

use super::connection::GatewayState;
use super::delivery::{ended, Following, Outgoing, Reader};
use super::limits::SLOW_CONSUMER_TIMEOUT;
use super::session::{SessionWatch, Verdict};
use crate::auth;
use crate::campaigns::{ConnectionId, StateManager};
use crate::clock;
use crate::frames;
use crate::http_error::ApiError;
use crate::sessions::{IdentifyError, Who};
use crate::stats::ConnectionSlot;

/// How often an idle stream sends a comment line, so proxies keep it open and a reader that
/// went away is noticed.
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);
/// How often an open stream records its session's use (which also finds a session that ended
/// while its news was lost); the record is written at most once per `TOUCH_EVERY`.
const SESSION_CHECK_EVERY: Duration = Duration::from_secs(15);
/// How long a browser waits before reconnecting a broken stream (the `retry:` field).
pub const RECONNECT_AFTER: Duration = Duration::from_secs(2);
/// Delivered batches waiting for the response body (each one socket write's worth of events,
/// sharing the frames the campaign encoded once).
const STREAM_BUFFER: usize = 4;

/// One delivered batch as the pieces of its SSE text.
type Chunk = Vec<Bytes>;

/// Answer a `GET` for a campaign's events: identify, check, subscribe, then stream.
pub async fn campaign_events(
    State(state): State<GatewayState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(campaign): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    match open(state, peer, &campaign, uri.query(), &headers).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn open(
    state: GatewayState,
    peer: SocketAddr,
    campaign: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if state.shutdown.is_triggered() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "server is shutting down",
        ));
    }
    if !state.quotas.api.take(&peer.ip(), Instant::now()) {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "more than {} API requests a minute from this address; slow down",
                state.quotas.api.per_minute_rate()
            ),
        ));
    }
    let campaign = CampaignId::parse(campaign)
        .map_err(|err| ApiError::new(ErrorCode::Invalid, err.to_string()))?;
    let since_version = resume_point(headers, query)?;
    // Listen for session ends before checking this one: an end in between is not missed.
    let ends = state.sessions.ends();
    let signed = state
        .sessions
        .identify(headers, query, clock::now())
        .await
        .map_err(|err| match err {
            IdentifyError::Rejected(_) => ApiError::new(ErrorCode::Unauthorized, err.to_string()),
            IdentifyError::Unavailable(_) => ApiError::new(ErrorCode::Unavailable, err.to_string()),
        })?;
    // A cookie goes with a browser's request from any page of the same site; only the site's own
    // pages may follow campaigns as the visitor (tokens are never attached by browsers).
    if auth::uses_cookie(headers, query) && !state.config.origins.allow(headers) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this page's origin may not use the session cookie; open the stream with ?token=",
        ));
    }
    if signed.is_none() && !state.config.allow_anonymous {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this server requires a session to read campaigns",
        ));
    }
    let watch = signed
        .as_ref()
        .map(|signed| SessionWatch::new(signed, ends));
    let who = signed.map(|signed| signed.into_who()).unwrap_or_default();
    if !who.reaches(&campaign) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("this API key does not reach campaign {campaign}"),
        ));
    }
    let slot = state.stats.try_acquire().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "connection limit reached; retry later",
        )
    })?;
    let connection = ConnectionId::next();
    // Until the stream's task owns the subscription: a reader gone mid-request leaves no viewer.
    let pending = LeaveOnDrop(Some((state.manager.clone(), campaign.clone(), connection)));
    let subscription = state
        .manager
        .subscribe(&campaign, connection, who.caller(&campaign), since_version)
        .await?;

    let mut first = Outgoing::default();
    let reply_version = match &subscription.reply.resume {
        Resume::Snapshot { campaign, .. } => Some(campaign.version),
        Resume::Events { .. } => None,
    };
    first.push_versioned(
        frames::success(&SUBSCRIBE, None, &subscription.reply),
        reply_version,
    );
    let mut following = Following::default();
    following.start(campaign.clone(), subscription, &mut first);

    let (chunks, body) = mpsc::channel::<Chunk>(STREAM_BUFFER);
    let stream = EventStream {
        state: state.clone(),
        campaign,
        connection,
        who,
        watch,
        following,
        chunks,
        _slot: slot,
    };
    let mut opening = vec![Bytes::from(format!(
        "retry: {}\n",
        RECONNECT_AFTER.as_millis()
    ))];
    write_events(&mut opening, &first);
    pending.disarm();
    state.tasks.spawn(stream.run(opening));
    metrics::counter!("rally_event_streams_total").increment(1);

    let pieces = futures_util::stream::unfold(
        (body, std::collections::VecDeque::<Bytes>::new()),
        |(mut body, mut pieces)| async move {
            loop {
                if let Some(piece) = pieces.pop_front() {
                    return Some((Ok::<_, Infallible>(piece), (body, pieces)));
                }
                pieces.extend(body.recv().await?);
            }
        },
    );
    let body = pieces;
    let mut response = Body::from_stream(body).into_response();
    let set = response.headers_mut();
    set.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    set.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Read-only, and pages of other sites cannot borrow a visitor's cookie (refused above, and
    // browsers hide credentialed answers from `*`): any page may read what its request may read.
    set.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    // nginx would otherwise hold events back to fill its buffer.
    set.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Where the reader resumes: `Last-Event-ID` (what `EventSource` sends on reconnect), else the
/// `since_version` query parameter, else nowhere (a snapshot first).
fn resume_point(headers: &HeaderMap, query: Option<&str>) -> Result<Option<u64>, ApiError> {
    let invalid = |what: &str, value: &str| {
        ApiError::new(
            ErrorCode::Invalid,
            format!("{what} must be a campaign version (a whole number), not {value:?}"),
        )
    };
    if let Some(last) = headers.get("last-event-id") {
        let text = last.to_str().unwrap_or("").trim();
        return text
            .parse::<u64>()
            .map(Some)
            .map_err(|_| invalid("Last-Event-ID", text));
    }
    let since = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(key, _)| key == "since_version")
        .map(|(_, value)| value.into_owned());
    match since {
        Some(value) => value
            .parse::<u64>()
            .map(Some)
            .map_err(|_| invalid("since_version", &value)),
        None => Ok(None),
    }
}

/// Append `out`'s frames as SSE events: `id:` where a frame brings the reader to a version,
/// then the envelope as one `data:` line (compact JSON has no line breaks).
fn write_events(chunk: &mut Chunk, out: &Outgoing) {
    for (text, version) in out.versioned() {
        debug_assert!(!text.as_str().contains('\n'), "frames are one line");
        match version {
            Some(version) => chunk.push(Bytes::from(format!("id: {version}\ndata: "))),
            None => chunk.push(Bytes::from_static(b"data: ")),
        }
        chunk.push(Bytes::from(text));
        chunk.push(Bytes::from_static(b"\n\n"));
    }
}

/// Tells the campaign a reader left, unless disarmed once the stream's task took over.
struct LeaveOnDrop(Option<(StateManager, CampaignId, ConnectionId)>);

impl LeaveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if let Some((manager, campaign, connection)) = self.0.take() {
            manager.leave(&campaign, connection);
        }
    }
}

/// One open stream: its subscription and the channel to its response body.
struct EventStream {
    state: GatewayState,
    campaign: CampaignId,
    connection: ConnectionId,
    who: Who,
    watch: Option<SessionWatch>,
    following: Following,
    chunks: mpsc::Sender<Chunk>,
    _slot: ConnectionSlot,
}

/// Why a stream ended (the `reason` label of `rally_event_stream_endings_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    ReaderLeft,
    SlowReader,
    ServerShutdown,
    SessionEnded,
    /// The subscription ended (lost access, campaign restarted): its last frame says why.
    SubscriptionEnded,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Ending::ReaderLeft => "reader_left",
            Ending::SlowReader => "slow_reader",
            Ending::ServerShutdown => "server_shutdown",
            Ending::SessionEnded => "session_ended",
            Ending::SubscriptionEnded => "subscription_ended",
        }
    }
}

impl EventStream {
    async fn run(mut self, opening: Chunk) {
        let ending = self.deliver_until_end(opening).await;
        if self.following.follows(&self.campaign) {
            self.state.manager.leave(&self.campaign, self.connection);
        }
        metrics::counter!("rally_event_stream_endings_total", "reason" => ending.as_str())
            .increment(1);
    }

    async fn deliver_until_end(&mut self, opening: Chunk) -> Ending {
        if let Err(ending) = self.send(opening).await {
            return ending;
        }
        let mut shutdown = self.state.shutdown.clone();
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE_EVERY);
        keep_alive.reset();
        // Not reset by deliveries: a busy stream still records its session's use.
        let mut session_check = tokio::time::interval(SESSION_CHECK_EVERY);
        session_check.reset();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.recv() => {
                    let reason = ErrorBody::new(ErrorCode::Unavailable, "server is shutting down");
                    return self.end(reason, Ending::ServerShutdown).await;
                }
                end = SessionWatch::next_end(&mut self.watch) => {
                    let watch = self.watch.as_ref().expect("polled only while watching");
                    if watch.heard(end, &self.state.sessions, clock::now()).await == Verdict::Ended {
                        let reason = ErrorBody::new(ErrorCode::Unauthorized, "your session ended");
                        return self.end(reason, Ending::SessionEnded).await;
                    }
                }
                _ = self.chunks.closed() => return Ending::ReaderLeft,
                _ = session_check.tick(), if self.watch.is_some() => {
                    let watch = self.watch.as_mut().expect("ticks only while watching");
                    if watch.check(&self.state.sessions, clock::now()).await == Verdict::Ended {
                        let reason = ErrorBody::new(ErrorCode::Unauthorized, "your session ended");
                        return self.end(reason, Ending::SessionEnded).await;
                    }
                }
                _ = keep_alive.tick() => {
                    if let Err(ending) = self.send(vec![Bytes::from_static(b":\n\n")]).await {
                        return ending;
                    }
                }
                (slot, delivery) = self.following.next() => {
                    let mut out = Outgoing::default();
                    let reader = Reader {
                        manager: &self.state.manager,
                        connection: self.connection,
                        who: &self.who,
                    };
                    self.following.deliver_ready(slot, delivery, &reader, &mut out).await;
                    let mut chunk = Chunk::new();
                    write_events(&mut chunk, &out);
                    if let Err(ending) = self.send(chunk).await {
                        return ending;
                    }
                    self.following.record_delivery(&self.state.ops);
                    if self.following.is_empty() {
                        return Ending::SubscriptionEnded;
                    }
                    keep_alive.reset();
                }
            }
        }
    }

    /// The last frame: why the stream ends.
    async fn end(&mut self, reason: ErrorBody, ending: Ending) -> Ending {
        let mut out = Outgoing::default();
        out.push(ended(self.campaign.clone(), reason));
        let mut chunk = Chunk::new();
        write_events(&mut chunk, &out);
        match self.send(chunk).await {
            Ok(()) => ending,
            Err(other) => other,
        }
    }

    async fn send(&self, chunk: Chunk) -> Result<(), Ending> {
        match tokio::time::timeout(SLOW_CONSUMER_TIMEOUT, self.chunks.send(chunk)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::ReaderLeft),
            Err(_) => Err(Ending::SlowReader),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(last_event_id: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(id) = last_event_id {
            headers.insert("last-event-id", HeaderValue::from_str(id).unwrap());
        }
        headers
    }

    #[test]
    fn resume_point_prefers_last_event_id_and_refuses_non_versions() {
        let cases: &[(Option<&str>, Option<&str>, Result<Option<u64>, ()>)] = &[
            (None, None, Ok(None)),
            (Some("7"), None, Ok(Some(7))),
            (Some(" 7 "), None, Ok(Some(7))),
            (Some("7"), Some("since_version=3"), Ok(Some(7))),
            (None, Some("since_version=3"), Ok(Some(3))),
            (None, Some("token=abc&since_version=0"), Ok(Some(0))),
            (None, Some("token=abc"), Ok(None)),
            (Some("seven"), None, Err(())),
            (Some("-1"), None, Err(())),
            (Some(""), None, Err(())),
            (None, Some("since_version=x"), Err(())),
            (None, Some("since_version=18446744073709551616"), Err(())),
        ];
        for (last, query, expected) in cases {
            let got = resume_point(&headers(*last), *query).map_err(|err| {
                assert_eq!(err.code(), ErrorCode::Invalid);
            });
            assert_eq!(&got, expected, "Last-Event-ID {last:?}, query {query:?}");
        }
    }

    #[test]
    fn versions_become_ids_and_each_frame_is_one_event() {
        let mut out = Outgoing::default();
        out.push_versioned(r#"{"type":"a"}"#.into(), Some(4));
        out.push(r#"{"type":"b"}"#.into());
        let mut chunk = Chunk::new();
        write_events(&mut chunk, &out);
        assert_eq!(
            chunk.concat(),
            b"id: 4\ndata: {\"type\":\"a\"}\n\ndata: {\"type\":\"b\"}\n\n"
        );
    }
}
