//! The browser's connection logic as a pure state machine: no sockets, no timers, no clock.
//!
//! [`LiveClient`] takes inputs (socket opened, frame received, socket closed, retry timer fired,
//! the user wants to send something) and returns [`Output`]s for a thin shell to carry out (send
//! this text, open a socket, wake me in N ms, show this status, deliver this event). That keeps the
//! rules testable natively and deterministically:
//!
//! - reconnect with exponential backoff and jitter, forever, resetting after a successful open —
//!   except after an idle close (4010) while nothing is followed: then rest, and connect again
//!   when a subscription or request needs the server; and never after the session ended (4011:
//!   signed out here or on another device): the page must be reloaded to go on, signed out;
//! - queue requests while disconnected and send them, in order, after reconnecting; requests that
//!   were in flight when the socket dropped are sent again (every Rally write is idempotent: it
//!   sets values, so applying it twice equals applying it once);
//! - resubscribe to every campaign with `since_version` = the last version delivered, so the
//!   server replays exactly what was missed;
//! - deliver state events strictly in version order: duplicates are dropped, and a gap triggers a
//!   resubscribe instead of a wrong state;
//! - trust the browser's `offline` event at once (the status says offline even while a socket
//!   is still open: it may be dead), and distrust a socket that may have died quietly: when the
//!   network comes back, or a request gets no reply for [`REPLY_PATIENCE_MS`], send a ping
//!   (the probe) and give the socket up if no pong arrives within [`PROBE_MS`].

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::model::{CampaignEvent, CampaignId, RequestId};
use crate::protocol::campaign::{
    CampaignRef, Overruled, PresenceChanged, Resume, Resync, Subscribe, SubscribeReply,
    SubscriptionEnded, Writable, OVERRULED, PRESENCE_EVENT, RESYNC, STATE_EVENT,
    SUBSCRIPTION_ENDED, WRITABLE,
};
use crate::protocol::media::{
    MediaEnded, MediaTracks, SessionDescription, ENDED_EVENT, OFFER_EVENT, TRACKS_EVENT,
};
use crate::protocol::ops::{OpsHistory, OpsSample, OPS_SAMPLE};
use crate::protocol::{ClientRequest, Empty, Envelope, ErrorBody, ErrorCode, EventState};

/// How long a request may go unanswered before the socket is probed (the shell's timer calls
/// [`LiveClient::overdue`]).
pub const REPLY_PATIENCE_MS: u64 = 4_000;
/// How long the probe waits for its pong.
pub const PROBE_MS: u64 = 2_500;

/// What the connection indicator shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStatus {
    Connecting,
    Connected,
    /// Waiting to retry; `attempt` counts failures since the last successful open.
    Reconnecting {
        attempt: u32,
        retry_in_ms: u64,
    },
    /// The browser says it has no network; retrying resumes when it comes back.
    Offline,
    /// Closed by the server because nothing here needed it (close code 4010); the next
    /// subscription or request connects again.
    Resting,
    /// The session this page was opened with ended (close code 4011): nothing reconnects.
    SignedOut,
}

/// Exponential backoff with "equal jitter": half the delay is fixed, half random, so a crowd of
/// clients that lost the same server does not come back in lockstep.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base_ms: 250,
            max_ms: 15_000,
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (1-based), given a random number in [0, 1).
    pub fn delay_ms(&self, attempt: u32, random: f64) -> u64 {
        let exp = self
            .base_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
            .min(self.max_ms);
        let half = exp / 2;
        half + (random.clamp(0.0, 1.0) * (exp - half) as f64) as u64
    }
}

/// Something the shell must do or show.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this text frame on the open socket.
    Send(String),
    /// Open a new socket (none is open).
    OpenSocket,
    /// Call [`LiveClient::retry`] after this many milliseconds.
    RetryIn(u64),
    Status(ConnectionStatus),
    /// The answer to a request made with [`LiveClient::request`].
    Reply {
        request_id: String,
        result: Result<ReplyPayload, ErrorBody>,
    },
    /// A subscription (re)started: replace or confirm local state per `resume`.
    Subscribed(Box<SubscribeReply>),
    /// The next state event of a subscribed campaign, in version order.
    State(Box<CampaignEvent>),
    Presence(Box<PresenceChanged>),
    /// History did not reach back: replace local state.
    Resync(Box<Resync>),
    /// Subscribing failed (e.g. the campaign does not exist).
    SubscribeFailed {
        campaign_id: CampaignId,
        error: ErrorBody,
    },
    /// The campaign became read-only or writable again.
    Writable(Box<Writable>),
    /// Someone's write was refused because another person changed the same thing first.
    Overruled(Box<Overruled>),
    /// The ops view's recent history (or why it was refused).
    OpsHistory(Result<OpsHistory, ErrorBody>),
    /// The next ops sample.
    OpsSample(Box<OpsSample>),
    /// A push from the media relay for this connection's media session.
    Media(Box<MediaPush>),
    /// Call [`LiveClient::probe_expired`] with this request id after `ms` milliseconds.
    ProbeDeadline {
        request_id: String,
        ms: u64,
    },
    /// Give the socket up without waiting for it to close (it is presumed dead); the state
    /// machine already treats it as closed.
    DropSocket,
}

/// A successful reply's payload, still as the server's JSON text: whoever asked knows its type
/// and reads it with [`ReplyPayload::read`].
///
/// Payloads stay text until their type is known: every type is decoded one way
/// (`serde_json::from_str`, as the server-rendered page's data is), without building a
/// `serde_json::Value` tree per frame first (BENCHMARKS.md, "Ready within 3 s").
#[derive(Debug, Clone)]
pub struct ReplyPayload(Box<RawValue>);

impl ReplyPayload {
    /// Read the payload as a `T`; a payload that is not one is the server's fault.
    pub fn read<T: DeserializeOwned>(&self) -> Result<T, ErrorBody> {
        decode(&self.0).map_err(|err| ErrorBody::new(ErrorCode::Internal, err.to_string()))
    }
}

impl PartialEq for ReplyPayload {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

fn decode<T: DeserializeOwned>(payload: &RawValue) -> serde_json::Result<T> {
    serde_json::from_str(payload.get())
}

/// What the media relay pushes to a participant.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaPush {
    /// The relay's offer for the subscribe connection.
    Offer(SessionDescription),
    /// Who is live now.
    Tracks(MediaTracks),
    /// The relay ended this participant's media session.
    Ended(MediaEnded),
}

/// See the module documentation.
pub struct LiveClient {
    backoff: Backoff,
    status: ConnectionStatus,
    open: bool,
    offline: bool,
    attempt: u32,
    next_request: u64,
    /// Campaign → last version delivered (None until the first subscribe reply).
    subscriptions: BTreeMap<CampaignId, Option<u64>>,
    /// Requests not yet sent, in order.
    outbox: VecDeque<(String, ClientRequest)>,
    /// Sent, awaiting their reply.
    in_flight: HashMap<String, ClientRequest>,
    /// Order in which in-flight requests were sent (to re-send in the same order).
    in_flight_order: Vec<String>,
    /// Following the ops view (re-requested after every reconnect).
    ops: bool,
    /// The ping in flight to test the socket, if any.
    probe: Option<String>,
}

impl Default for LiveClient {
    fn default() -> Self {
        Self::new(Backoff::default())
    }
}

fn frame(request: &ClientRequest, request_id: &str) -> String {
    let id = RequestId::parse(request_id).expect("the client's request ids are valid");
    request.to_frame(&id)
}

/// Media requests belong to the connection's media session, which ends with the connection.
fn is_media(request: &ClientRequest) -> bool {
    matches!(
        request,
        ClientRequest::MediaJoin(_)
            | ClientRequest::MediaPublish(_)
            | ClientRequest::MediaAnswer(_)
            | ClientRequest::MediaCandidate(_)
            | ClientRequest::MediaLeave(_)
    )
}

impl LiveClient {
    pub fn new(backoff: Backoff) -> Self {
        LiveClient {
            backoff,
            status: ConnectionStatus::Connecting,
            open: false,
            offline: false,
            attempt: 0,
            next_request: 1,
            subscriptions: BTreeMap::new(),
            outbox: VecDeque::new(),
            in_flight: HashMap::new(),
            in_flight_order: Vec::new(),
            ops: false,
            probe: None,
        }
    }

    pub fn status(&self) -> ConnectionStatus {
        self.status
    }

    /// Begin: open the first socket.
    pub fn start(&mut self) -> Vec<Output> {
        self.status = ConnectionStatus::Connecting;
        vec![Output::Status(self.status), Output::OpenSocket]
    }

    /// The socket is open: resubscribe, then send what queued up.
    pub fn opened(&mut self) -> Vec<Output> {
        self.open = true;
        self.attempt = 0;
        self.status = ConnectionStatus::Connected;
        let mut out = vec![Output::Status(self.status)];
        let campaigns: Vec<(CampaignId, Option<u64>)> = self
            .subscriptions
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (campaign, since) in campaigns {
            out.push(self.subscribe_frame(&campaign, since));
        }
        if self.ops {
            out.push(self.ops_frame());
        }
        while let Some((id, request)) = self.outbox.pop_front() {
            out.push(Output::Send(frame(&request, &id)));
            self.in_flight_order.push(id.clone());
            self.in_flight.insert(id, request);
        }
        out
    }

    /// The socket closed with `code` (or failed to open: 1006). `random` in [0, 1) jitters the
    /// retry delay.
    pub fn closed(&mut self, code: u16, random: f64) -> Vec<Output> {
        self.open = false;
        self.probe = None;
        // In-flight requests go back to the front of the queue, in their original order; media
        // requests fail (their session ended with the connection).
        let mut failed = Vec::new();
        let order = std::mem::take(&mut self.in_flight_order);
        for id in order.into_iter().rev() {
            if let Some(pending) = self.in_flight.remove(&id) {
                if matches!(
                    pending,
                    ClientRequest::Subscribe(_)
                        | ClientRequest::OpsSubscribe(_)
                        | ClientRequest::Ping(_)
                ) {
                    continue; // subscriptions are re-made on open; a probe died with its socket
                }
                if is_media(&pending) {
                    failed.push(Output::Reply {
                        request_id: id,
                        result: Err(ErrorBody::new(
                            ErrorCode::Unavailable,
                            "the connection dropped",
                        )),
                    });
                    continue;
                }
                self.outbox.push_front((id, pending));
            }
        }
        self.in_flight.clear();
        if code == crate::protocol::close::SESSION_ENDED {
            self.status = ConnectionStatus::SignedOut;
            let mut out = vec![Output::Status(self.status)];
            out.extend(failed);
            return out;
        }
        let idle = code == crate::protocol::close::IDLE
            && self.subscriptions.is_empty()
            && !self.ops
            && self.outbox.is_empty();
        let mut out = if idle {
            self.status = ConnectionStatus::Resting;
            vec![Output::Status(self.status)]
        } else {
            self.closed_status(random)
        };
        out.extend(failed);
        out
    }

    /// Resting: connect again, because something needs the server now.
    fn wake(&mut self) -> Vec<Output> {
        if self.status != ConnectionStatus::Resting {
            return Vec::new();
        }
        self.status = ConnectionStatus::Connecting;
        vec![Output::Status(self.status), Output::OpenSocket]
    }

    fn closed_status(&mut self, random: f64) -> Vec<Output> {
        if self.offline {
            self.status = ConnectionStatus::Offline;
            return vec![Output::Status(self.status)];
        }
        self.attempt += 1;
        let delay = self.backoff.delay_ms(self.attempt, random);
        self.status = ConnectionStatus::Reconnecting {
            attempt: self.attempt,
            retry_in_ms: delay,
        };
        vec![Output::Status(self.status), Output::RetryIn(delay)]
    }

    /// The retry timer fired.
    pub fn retry(&mut self) -> Vec<Output> {
        if self.open
            || self.offline
            || matches!(
                self.status,
                ConnectionStatus::Resting | ConnectionStatus::SignedOut
            )
        {
            return Vec::new();
        }
        self.status = ConnectionStatus::Connecting;
        vec![Output::Status(self.status), Output::OpenSocket]
    }

    /// The browser went offline or came back online.
    pub fn set_offline(&mut self, offline: bool) -> Vec<Output> {
        self.offline = offline;
        if self.status == ConnectionStatus::SignedOut {
            return Vec::new();
        }
        match (offline, self.open) {
            (true, _) => {
                self.status = ConnectionStatus::Offline;
                vec![Output::Status(self.status)]
            }
            // The socket may have died while the network was away: test it.
            (false, true) => {
                self.status = ConnectionStatus::Connecting;
                let mut out = vec![Output::Status(self.status)];
                out.extend(self.probe());
                out
            }
            (false, false) => {
                self.attempt = 0;
                self.retry()
            }
        }
    }

    /// Request `request_id` has had no reply for [`REPLY_PATIENCE_MS`]: test the socket.
    pub fn overdue(&mut self, request_id: &str) -> Vec<Output> {
        if !self.open || !self.in_flight.contains_key(request_id) {
            return Vec::new();
        }
        self.probe()
    }

    fn probe(&mut self) -> Vec<Output> {
        if self.probe.is_some() || !self.open {
            return Vec::new();
        }
        let (id, send) = self.send_now(ClientRequest::Ping(Empty {}));
        self.probe = Some(id.clone());
        vec![
            send,
            Output::ProbeDeadline {
                request_id: id,
                ms: PROBE_MS,
            },
        ]
    }

    /// The probe's deadline passed: without its pong, the socket is given up and replaced.
    pub fn probe_expired(&mut self, request_id: &str, random: f64) -> Vec<Output> {
        if self.probe.as_deref() != Some(request_id) || !self.open {
            return Vec::new();
        }
        let mut out = vec![Output::DropSocket];
        out.extend(self.closed(1006, random));
        out
    }

    /// Follow a campaign from `since_version` (None: fresh snapshot).
    pub fn subscribe(&mut self, campaign: CampaignId, since_version: Option<u64>) -> Vec<Output> {
        self.subscriptions.insert(campaign.clone(), since_version);
        if self.open {
            vec![self.subscribe_frame(&campaign, since_version)]
        } else {
            self.wake()
        }
    }

    /// Follow the ops view: its history arrives as [`Output::OpsHistory`], then a sample a second.
    pub fn subscribe_ops(&mut self) -> Vec<Output> {
        self.ops = true;
        if self.open {
            vec![self.ops_frame()]
        } else {
            self.wake()
        }
    }

    /// Stop showing ops samples (the server keeps sending until the socket closes; they are
    /// dropped here).
    pub fn unsubscribe_ops(&mut self) {
        self.ops = false;
    }

    fn ops_frame(&mut self) -> Output {
        self.send_now(ClientRequest::OpsSubscribe(Empty {})).1
    }

    fn next_id(&mut self) -> String {
        let id = format!("r{}", self.next_request);
        self.next_request += 1;
        id
    }

    /// Send on the open socket and wait for the reply.
    fn send_now(&mut self, request: ClientRequest) -> (String, Output) {
        let id = self.next_id();
        let text = frame(&request, &id);
        self.in_flight_order.push(id.clone());
        self.in_flight.insert(id.clone(), request);
        (id, Output::Send(text))
    }

    pub fn unsubscribe(&mut self, campaign: &CampaignId) -> Vec<Output> {
        if self.subscriptions.remove(campaign).is_none() {
            return Vec::new();
        }
        let (_, out) = self.request(ClientRequest::Unsubscribe(CampaignRef {
            campaign_id: campaign.clone(),
        }));
        out
    }

    fn subscribe_frame(&mut self, campaign: &CampaignId, since: Option<u64>) -> Output {
        self.send_now(ClientRequest::Subscribe(Subscribe {
            campaign_id: campaign.clone(),
            since_version: since,
        }))
        .1
    }

    /// Send a request now, or queue it until connected. Returns its request id.
    ///
    /// Media requests are the exception: a media session lives and dies with its connection, so
    /// they are never queued or replayed — without an open connection they fail at once.
    pub fn request(&mut self, request: ClientRequest) -> (String, Vec<Output>) {
        if self.open {
            let (id, out) = self.send_now(request);
            return (id, vec![out]);
        }
        let id = self.next_id();
        if !is_media(&request) {
            let wake = self.wake();
            if !wake.is_empty() {
                self.outbox.push_back((id.clone(), request));
                return (id, wake);
            }
        }
        if is_media(&request) {
            return (
                id.clone(),
                vec![Output::Reply {
                    request_id: id,
                    result: Err(ErrorBody::new(
                        ErrorCode::Unavailable,
                        "not connected to the server",
                    )),
                }],
            );
        }
        self.outbox.push_back((id.clone(), request));
        (id, Vec::new())
    }

    /// Requests waiting for a connection.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// A text frame from the server.
    pub fn received(&mut self, text: &str) -> Vec<Output> {
        let Ok(envelope) = serde_json::from_str::<Envelope<Box<RawValue>>>(text) else {
            return Vec::new(); // not ours to judge; the server only sends envelopes
        };
        let Envelope {
            event_type,
            payload,
            request_id,
            ..
        } = envelope;
        if let Some(request_id) = request_id {
            if self.probe.as_deref() == Some(request_id.as_str()) {
                // The pong: the socket works.
                self.probe = None;
                self.in_flight.remove(request_id.as_str());
                self.in_flight_order.retain(|id| id != request_id.as_str());
                if self.offline || self.status == ConnectionStatus::Connected {
                    return Vec::new();
                }
                self.status = ConnectionStatus::Connected;
                return vec![Output::Status(self.status)];
            }
            if let Some(pending) = self.in_flight.remove(request_id.as_str()) {
                self.in_flight_order.retain(|id| id != request_id.as_str());
                return self.reply(request_id.as_str(), pending, &event_type, payload);
            }
            return Vec::new(); // a reply to something we no longer wait for
        }
        if event_type == STATE_EVENT {
            let Ok(event) = decode::<CampaignEvent>(&payload) else {
                return Vec::new();
            };
            return self.state_event(event);
        }
        if event_type == OPS_SAMPLE {
            if !self.ops {
                return Vec::new();
            }
            return decode::<OpsSample>(&payload)
                .map(|sample| vec![Output::OpsSample(Box::new(sample))])
                .unwrap_or_default();
        }
        if event_type == WRITABLE {
            return decode::<Writable>(&payload)
                .ok()
                .filter(|w| self.subscriptions.contains_key(&w.campaign_id))
                .map(|w| vec![Output::Writable(Box::new(w))])
                .unwrap_or_default();
        }
        if event_type == OVERRULED {
            return decode::<Overruled>(&payload)
                .ok()
                .filter(|o| self.subscriptions.contains_key(&o.campaign_id))
                .map(|o| vec![Output::Overruled(Box::new(o))])
                .unwrap_or_default();
        }
        if event_type == PRESENCE_EVENT {
            return decode::<PresenceChanged>(&payload)
                .map(|p| vec![Output::Presence(Box::new(p))])
                .unwrap_or_default();
        }
        if event_type == RESYNC {
            let Ok(resync) = decode::<Resync>(&payload) else {
                return Vec::new();
            };
            if let Some(last) = self.subscriptions.get_mut(&resync.campaign_id) {
                *last = Some(resync.campaign.version);
                return vec![Output::Resync(Box::new(resync))];
            }
            return Vec::new();
        }
        let media = if event_type == OFFER_EVENT {
            decode(&payload).ok().map(MediaPush::Offer)
        } else if event_type == TRACKS_EVENT {
            decode(&payload).ok().map(MediaPush::Tracks)
        } else if event_type == ENDED_EVENT {
            decode(&payload).ok().map(MediaPush::Ended)
        } else {
            None
        };
        if let Some(push) = media {
            return vec![Output::Media(Box::new(push))];
        }
        if event_type == SUBSCRIPTION_ENDED {
            let Ok(ended) = decode::<SubscriptionEnded>(&payload) else {
                return Vec::new();
            };
            if let Some(last) = self.subscriptions.get(&ended.campaign_id).copied() {
                if self.open {
                    return vec![self.subscribe_frame(&ended.campaign_id, last)];
                }
            }
        }
        Vec::new()
    }

    fn reply(
        &mut self,
        request_id: &str,
        pending: ClientRequest,
        event_type: &crate::protocol::EventType,
        payload: Box<RawValue>,
    ) -> Vec<Output> {
        let result = match event_type.state() {
            EventState::Failed => Err(decode::<ErrorBody>(&payload)
                .unwrap_or_else(|_| ErrorBody::new(ErrorCode::Internal, "unreadable error"))),
            _ => Ok(ReplyPayload(payload)),
        };
        if matches!(pending, ClientRequest::OpsSubscribe(_)) {
            let history = result.and_then(|payload| payload.read::<OpsHistory>());
            if history.is_err() {
                self.ops = false;
            }
            return vec![Output::OpsHistory(history)];
        }
        let ClientRequest::Subscribe(Subscribe {
            campaign_id: campaign,
            ..
        }) = pending
        else {
            return vec![Output::Reply {
                request_id: request_id.to_owned(),
                result,
            }];
        };
        match result {
            Ok(payload) => {
                let Ok(reply) = payload.read::<SubscribeReply>() else {
                    return Vec::new();
                };
                let version = match &reply.resume {
                    Resume::Snapshot { campaign, .. } => campaign.version,
                    Resume::Events { to_version, .. } => *to_version,
                };
                let Some(last) = self.subscriptions.get_mut(&campaign) else {
                    return Vec::new(); // unsubscribed meanwhile
                };
                // Replayed events follow this reply; they advance `last` one by one. Only a
                // snapshot jumps there directly.
                if matches!(reply.resume, Resume::Snapshot { .. }) || last.is_none() {
                    *last = Some(version);
                }
                vec![Output::Subscribed(Box::new(reply))]
            }
            Err(error) => {
                self.subscriptions.remove(&campaign);
                vec![Output::SubscribeFailed {
                    campaign_id: campaign,
                    error,
                }]
            }
        }
    }

    fn state_event(&mut self, event: CampaignEvent) -> Vec<Output> {
        let Some(last) = self.subscriptions.get(&event.campaign_id).copied() else {
            return Vec::new();
        };
        let Some(last) = last else {
            return Vec::new(); // no baseline yet; the subscribe reply will bring one
        };
        if event.version <= last {
            return Vec::new(); // duplicate
        }
        if event.version > last + 1 {
            // A gap: never apply out of order; ask for exactly what is missing.
            let campaign = event.campaign_id.clone();
            return vec![self.subscribe_frame(&campaign, Some(last))];
        }
        self.subscriptions
            .insert(event.campaign_id.clone(), Some(event.version));
        vec![Output::State(Box::new(event))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Actor, Change, EventId, FieldUpdates, Timestamp, UserId};
    use serde_json::{json, Value};

    fn id(s: &str) -> CampaignId {
        CampaignId::parse(s).unwrap()
    }

    fn title(n: u32) -> ClientRequest {
        ClientRequest::Write(crate::model::Write::Update(crate::model::UpdateFields {
            campaign_id: id("c"),
            updates: FieldUpdates {
                title: Some(format!("t{n}")),
                ..Default::default()
            },
            base_version: None,
        }))
    }

    fn sent(out: &[Output]) -> Vec<Value> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send(text) => Some(serde_json::from_str(text).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn event(version: u64) -> String {
        let event = CampaignEvent {
            campaign_id: id("c"),
            version,
            event_id: EventId::new(version, 1, 1),
            changed_by: Actor {
                user_id: UserId::parse("u1").unwrap(),
                display_name: "U".into(),
            },
            changed_at: Timestamp::from_unix_nanos(version),
            change: Change::Fields {
                updates: FieldUpdates {
                    title: Some(format!("t{version}")),
                    ..Default::default()
                },
            },
            idempotency: None,
        };
        json!({"type": "campaign:state:v1:success", "payload": event, "metadata": {}}).to_string()
    }

    fn subscribe_reply(request_id: &str, from: u64, to: u64) -> String {
        json!({
            "type": "campaign:subscribe:v1:success",
            "request_id": request_id,
            "metadata": {},
            "payload": {
                "campaign_id": "c",
                "role": "editor",
                "resume": {"kind": "events", "from_version": from, "to_version": to},
                "presence": {"campaign_id": "c", "count": 1, "viewers": []}
            }
        })
        .to_string()
    }

    fn versions(out: &[Output]) -> Vec<u64> {
        out.iter()
            .filter_map(|o| match o {
                Output::State(e) => Some(e.version),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay_ms(1, 0.0), 125);
        assert_eq!(backoff.delay_ms(1, 0.999), 249);
        assert_eq!(backoff.delay_ms(3, 0.0), 500);
        assert_eq!(backoff.delay_ms(30, 0.0), 7_500);
        assert!(backoff.delay_ms(30, 0.999) <= 15_000);
    }

    #[test]
    fn queues_while_disconnected_and_sends_in_order_after_open() {
        let mut client = LiveClient::default();
        assert_eq!(
            client.start(),
            vec![
                Output::Status(ConnectionStatus::Connecting),
                Output::OpenSocket
            ]
        );
        let (a, out) = client.request(title(1));
        assert!(out.is_empty());
        let (b, _) = client.request(title(2));
        assert_eq!(client.queued(), 2);
        let out = client.opened();
        let frames = sent(&out);
        assert_eq!(
            frames
                .iter()
                .map(|f| f["request_id"].as_str().unwrap())
                .collect::<Vec<_>>(),
            [a.as_str(), b.as_str()]
        );
        assert_eq!(client.queued(), 0);
    }

    #[test]
    fn in_flight_writes_are_resent_after_a_reconnect_and_replies_resolve_them() {
        let mut client = LiveClient::default();
        client.start();
        client.opened();
        let (a, _) = client.request(title(1));
        let (b, _) = client.request(title(2));
        let out = client.closed(1006, 0.5);
        assert!(matches!(
            out[0],
            Output::Status(ConnectionStatus::Reconnecting { attempt: 1, .. })
        ));
        assert!(matches!(out[1], Output::RetryIn(_)));
        assert_eq!(
            client.retry(),
            vec![
                Output::Status(ConnectionStatus::Connecting),
                Output::OpenSocket
            ]
        );
        let frames = sent(&client.opened());
        assert_eq!(
            frames
                .iter()
                .map(|f| f["request_id"].as_str().unwrap())
                .collect::<Vec<_>>(),
            [a.as_str(), b.as_str()]
        );
        let reply = json!({"type": "campaign:update:v1:failed", "request_id": a, "metadata": {}, "payload": {"code": "conflict", "message": "m"}}).to_string();
        assert_eq!(
            client.received(&reply),
            vec![Output::Reply {
                request_id: a.clone(),
                result: Err(ErrorBody::new(ErrorCode::Conflict, "m"))
            }]
        );
        assert!(client.received(&reply).is_empty(), "a reply resolves once");
    }

    #[test]
    fn media_requests_are_never_queued_or_replayed() {
        let mut client = LiveClient::default();
        client.start();
        let (a, out) = client.request(ClientRequest::MediaJoin(
            crate::protocol::media::MediaJoin {
                campaign_id: id("c"),
            },
        ));
        assert!(
            matches!(&out[..], [Output::Reply { request_id, result: Err(e) }] if *request_id == a && e.code == ErrorCode::Unavailable),
            "{out:?}"
        );
        assert_eq!(client.queued(), 0);
        client.opened();
        let (b, _) = client.request(ClientRequest::MediaPublish(SessionDescription {
            campaign_id: id("c"),
            sdp: "v=0".into(),
        }));
        let (c, _) = client.request(title(1));
        let out = client.closed(1006, 0.5);
        assert!(
            out.iter().any(
                |o| matches!(o, Output::Reply { request_id, result: Err(_) } if *request_id == b)
            ),
            "the in-flight media request fails: {out:?}"
        );
        assert_eq!(
            client.queued(),
            1,
            "the write waits for the next connection"
        );
        client.retry();
        let frames = sent(&client.opened());
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["request_id"], c.as_str());
    }

    #[test]
    fn media_pushes_become_media_outputs() {
        let mut client = LiveClient::default();
        client.start();
        client.opened();
        let offer = json!({"type": "media:offer:v1:success", "metadata": {},
            "payload": {"campaign_id": "c", "sdp": "v=0"}})
        .to_string();
        assert!(matches!(
            &client.received(&offer)[..],
            [Output::Media(push)] if matches!(**push, MediaPush::Offer(ref d) if d.sdp == "v=0")
        ));
        let tracks = json!({"type": "media:tracks:v1:success", "metadata": {},
            "payload": {"campaign_id": "c", "publishers": []}})
        .to_string();
        assert!(matches!(
            &client.received(&tracks)[..],
            [Output::Media(push)] if matches!(**push, MediaPush::Tracks(_))
        ));
    }

    #[test]
    fn failures_back_off_further_and_a_successful_open_resets() {
        let mut client = LiveClient::default();
        client.start();
        let delays: Vec<u64> = (0..4)
            .map(|_| {
                let out = client.closed(1006, 0.0);
                client.retry();
                match out[1] {
                    Output::RetryIn(ms) => ms,
                    _ => panic!(),
                }
            })
            .collect();
        assert_eq!(delays, [125, 250, 500, 1000]);
        client.opened();
        assert!(matches!(client.closed(1006, 0.0)[1], Output::RetryIn(125)));
    }

    #[test]
    fn resubscribes_from_the_last_delivered_version_and_keeps_order() {
        let mut client = LiveClient::default();
        client.start();
        client.opened();
        let out = client.subscribe(id("c"), None);
        let sub = &sent(&out)[0];
        let rid = sub["request_id"].as_str().unwrap().to_owned();
        assert!(sub["payload"].get("since_version").is_none());
        let out = client.received(&subscribe_reply(&rid, 5, 4));
        assert!(matches!(out[0], Output::Subscribed(_)));
        assert_eq!(versions(&client.received(&event(5))), [5]);
        assert!(
            versions(&client.received(&event(5))).is_empty(),
            "duplicate dropped"
        );
        assert_eq!(versions(&client.received(&event(6))), [6]);

        // A gap is never applied: the client asks for what it missed.
        let out = client.received(&event(9));
        assert!(versions(&out).is_empty());
        assert_eq!(
            sent(&out)[0]["payload"],
            json!({"campaign_id": "c", "since_version": 6})
        );

        // After a reconnect it resumes from 6 as well.
        client.closed(1006, 0.1);
        client.retry();
        let frames = sent(&client.opened());
        assert_eq!(frames[0]["type"], "campaign:subscribe:v1:requested");
        assert_eq!(frames[0]["payload"]["since_version"], 6);
        let rid = frames[0]["request_id"].as_str().unwrap().to_owned();
        client.received(&subscribe_reply(&rid, 7, 9));
        let mut delivered = Vec::new();
        for v in 7..=9 {
            delivered.extend(versions(&client.received(&event(v))));
        }
        assert_eq!(delivered, [7, 8, 9]);
    }

    #[test]
    fn an_idle_close_rests_until_something_needs_the_server() {
        let mut client = LiveClient::default();
        client.start();
        client.opened();
        assert_eq!(
            client.closed(crate::protocol::close::IDLE, 0.5),
            vec![Output::Status(ConnectionStatus::Resting)],
            "no retry timer"
        );
        assert!(client.retry().is_empty(), "resting until needed");
        let (_, out) = client.request(title(1));
        assert_eq!(
            out,
            vec![
                Output::Status(ConnectionStatus::Connecting),
                Output::OpenSocket
            ]
        );
        assert_eq!(client.queued(), 1, "sent once open");

        let mut following = LiveClient::default();
        following.start();
        following.opened();
        following.subscribe(id("c"), None);
        assert!(
            matches!(
                following.closed(crate::protocol::close::IDLE, 0.5)[1],
                Output::RetryIn(_)
            ),
            "a page that follows something reconnects"
        );
    }

    #[test]
    fn a_session_that_ended_never_reconnects_and_keeps_what_was_queued() {
        let mut client = LiveClient::default();
        client.start();
        client.opened();
        client.subscribe(id("c"), None);
        let (_, _) = client.request(title(1));
        assert_eq!(
            client.closed(crate::protocol::close::SESSION_ENDED, 0.5),
            vec![Output::Status(ConnectionStatus::SignedOut)],
            "no retry timer"
        );
        assert!(client.retry().is_empty());
        assert!(client.set_offline(true).is_empty());
        assert!(
            client.set_offline(false).is_empty(),
            "coming back online does not reconnect"
        );
        assert_eq!(client.status(), ConnectionStatus::SignedOut);
        assert_eq!(
            client.queued(),
            1,
            "the unsent change is still held, not dropped"
        );
    }

    #[test]
    fn offline_waits_for_online_instead_of_retrying() {
        let mut client = LiveClient::default();
        client.start();
        client.opened();
        // Shown at once, even though the socket has not noticed yet.
        assert_eq!(
            client.set_offline(true),
            vec![Output::Status(ConnectionStatus::Offline)]
        );
        assert_eq!(
            client.closed(1006, 0.3),
            vec![Output::Status(ConnectionStatus::Offline)]
        );
        assert!(client.retry().is_empty());
        assert_eq!(
            client.set_offline(false),
            vec![
                Output::Status(ConnectionStatus::Connecting),
                Output::OpenSocket
            ]
        );
    }

    fn pong(request_id: &str) -> String {
        json!({"type": "system:ping:v1:success", "payload": {"server_time": "2026-11-28T00:00:00.000000000Z"}, "request_id": request_id}).to_string()
    }

    #[test]
    fn back_online_with_a_socket_open_probes_it() {
        let mut client = LiveClient::default();
        client.start();
        client.opened();
        client.set_offline(true);
        let out = client.set_offline(false);
        assert_eq!(out[0], Output::Status(ConnectionStatus::Connecting));
        assert_eq!(sent(&out)[0]["type"], "system:ping:v1:requested");
        let Output::ProbeDeadline { request_id, ms } = out[2].clone() else {
            panic!("{out:?}")
        };
        assert_eq!(ms, PROBE_MS);
        // The pong arrives: connected again; the late deadline does nothing.
        assert_eq!(
            client.received(&pong(&request_id)),
            vec![Output::Status(ConnectionStatus::Connected)]
        );
        assert!(client.probe_expired(&request_id, 0.5).is_empty());
    }

    #[test]
    fn a_probe_without_a_pong_gives_the_socket_up_and_keeps_the_writes() {
        let mut client = LiveClient::default();
        client.start();
        client.opened();
        let (write_id, _) = client.request(title(1));
        let out = client.overdue(&write_id);
        let Output::ProbeDeadline { request_id, .. } = out[1].clone() else {
            panic!("{out:?}")
        };
        assert!(client.overdue(&write_id).is_empty(), "one probe at a time");
        let out = client.probe_expired(&request_id, 0.5);
        assert_eq!(out[0], Output::DropSocket);
        assert!(matches!(
            out[1],
            Output::Status(ConnectionStatus::Reconnecting { .. })
        ));
        assert_eq!(
            client.queued(),
            1,
            "the write waits for the next socket; the ping does not"
        );
        // A reply to a request no longer waited for changes nothing.
        assert!(client.overdue(&write_id).is_empty());
    }
}
