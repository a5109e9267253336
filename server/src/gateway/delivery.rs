//! Gap-free delivery of the campaigns one connection follows.
//!
//! Every state event carries its version; [`Following`] remembers, per campaign, the last
//! version it delivered. A commit's events are delivered in order and only if they continue that
//! version; anything older was already delivered (by a backfill), and a gap — the connection's
//! 32-commit buffer overflowed because the client reads too slowly, or the campaign reloaded —
//! is filled from the campaign's encoded history, or from its task, before going on. A client
//! that fell further behind than the history reaches gets a resync snapshot instead.
//!
//! What is ready goes into an [`Outgoing`] batch, which the connection writes to the socket in
//! one vectored write: broadcast frames stay in the commit they came in (one reference per run
//! of a commit, not one per event per subscriber).

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use rally_app::model::CampaignId;
use rally_app::protocol::campaign::{
    Resume, Resync, SnapshotReason, SubscriptionEnded, RESYNC, SUBSCRIPTION_ENDED,
};
use rally_app::protocol::{ErrorBody, ErrorCode};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::limits::MAX_WRITE_BATCH;
use crate::campaigns::{
    Backfill, CampaignGauges, ConnectionId, EncodedHistory, StateManager, Subscription,
    SUBSCRIBER_BUFFER,
};
use crate::clock;
use crate::frames::{self, Batch};
use crate::sessions::Who;
use crate::stats::OpsCounters;

/// Frames for the next socket write, in order: texts of their own (replies, pushes), and runs of
/// a broadcast batch's frames, which stay in the batch.
#[derive(Default)]
pub struct Outgoing {
    parts: Vec<Part>,
    frames: usize,
    /// The version each `Text` frame that brings the reader to one (a replayed state event, a
    /// snapshot) carries, by frame index: readers that resume by version (SSE) need it. Live
    /// events carry theirs in their batch, so the live path never touches this.
    text_versions: Vec<(usize, u64)>,
}

enum Part {
    Text(Utf8Bytes),
    Run(Batch, Range<usize>),
}

impl Outgoing {
    /// A reply or a push.
    pub fn push(&mut self, text: Utf8Bytes) {
        self.parts.push(Part::Text(text));
        self.frames += 1;
    }

    /// A frame that brings the reader to `version` (a state event, a snapshot), if it has one.
    pub(super) fn push_versioned(&mut self, text: Utf8Bytes, version: Option<u64>) {
        if let Some(version) = version {
            self.text_versions.push((self.frames, version));
        }
        self.push(text);
    }

    /// Frame `index` of `batch`; extends the last run when it continues it.
    fn push_shared(&mut self, batch: &Batch, index: usize) {
        self.frames += 1;
        if let Some(Part::Run(last, run)) = self.parts.last_mut() {
            if run.end == index && Arc::ptr_eq(last, batch) {
                run.end += 1;
                return;
            }
        }
        self.parts.push(Part::Run(batch.clone(), index..index + 1));
    }

    pub fn len(&self) -> usize {
        self.frames
    }

    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Every frame's bytes, in order.
    pub fn texts(&self) -> Vec<&[u8]> {
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

    /// Every frame (shared, not copied) with the version it brings the reader to (state events,
    /// snapshots), in order.
    pub fn versioned(&self) -> Vec<(Utf8Bytes, Option<u64>)> {
        let mut frames = Vec::with_capacity(self.frames);
        let mut text_versions = self.text_versions.iter().peekable();
        for part in &self.parts {
            match part {
                Part::Text(text) => {
                    let index = frames.len();
                    let version = text_versions
                        .next_if(|(at, _)| *at == index)
                        .map(|(_, version)| *version);
                    frames.push((text.clone(), version));
                }
                Part::Run(batch, run) => frames.extend(
                    batch[run.clone()]
                        .iter()
                        .map(|f| (f.text.clone(), f.version)),
                ),
            }
        }
        frames
    }
}

/// What a followed campaign's channel yields.
pub enum Delivery {
    /// A commit's events, or a push.
    Batch(Batch),
    /// The subscriber fell more than the buffer behind; catch up from history.
    Lagged,
    /// The campaign's task went away (it failed, or the server is stopping).
    Ended,
}

impl From<Result<Batch, RecvError>> for Delivery {
    fn from(received: Result<Batch, RecvError>) -> Self {
        match received {
            Ok(batch) => Delivery::Batch(batch),
            Err(RecvError::Lagged(_)) => Delivery::Lagged,
            Err(RecvError::Closed) => Delivery::Ended,
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
    /// Its live channel (the 32-commit buffer).
    events: Receiver<Batch>,
}

/// Metric handles used per delivery batch, resolved once instead of looked up by name each time.
struct HotMetrics {
    delivery_seconds: metrics::Histogram,
    buffer_used: metrics::Histogram,
}

fn hot_metrics() -> &'static HotMetrics {
    static HOT: OnceLock<HotMetrics> = OnceLock::new();
    HOT.get_or_init(|| HotMetrics {
        delivery_seconds: metrics::histogram!("rally_delivery_seconds"),
        buffer_used: metrics::histogram!("rally_subscriber_buffer_used"),
    })
}

/// Who is reading: what a backfill from the campaign's task needs to know.
pub struct Reader<'a> {
    pub manager: &'a StateManager,
    pub connection: ConnectionId,
    /// Who the connection is, with the grants of its credential (for a resync's role).
    pub who: &'a Who,
}

/// The campaigns one connection follows, by slot. Slots are small numbers, so the hot path
/// neither hashes nor clones campaign ids.
#[derive(Default)]
pub struct Following {
    follows: Vec<Option<Follow>>,
    /// State events in the batch being written, and the first one's (slot, version, durable
    /// time) for the latency and buffer samples.
    batch_states: u64,
    batch_first: Option<(usize, u64, Option<Instant>)>,
    /// Campaigns whose access check failed with `not_found` (see [`Self::take_lost`]).
    lost: Vec<CampaignId>,
}

impl Following {
    pub fn is_empty(&self) -> bool {
        self.follows.iter().all(Option::is_none)
    }

    pub fn count(&self) -> usize {
        self.follows.iter().flatten().count()
    }

    pub fn campaigns(&self) -> impl Iterator<Item = &CampaignId> {
        self.follows.iter().flatten().map(|f| &f.campaign)
    }

    pub fn follows(&self, campaign: &CampaignId) -> bool {
        self.slot_of(campaign).is_some()
    }

    fn slot_of(&self, campaign: &CampaignId) -> Option<usize> {
        self.follows
            .iter()
            .position(|f| f.as_ref().is_some_and(|f| f.campaign == *campaign))
    }

    /// Stop following `campaign` here (dropping its receiver releases what it buffered). The
    /// caller tells the manager. Returns whether it was followed.
    pub fn forget(&mut self, campaign: &CampaignId) -> bool {
        match self.slot_of(campaign) {
            Some(slot) => {
                self.follows[slot] = None;
                true
            }
            None => false,
        }
    }

    /// Follow a new subscription (whose reply is already in `out`): its backlog goes out
    /// first, then its live events.
    pub fn start(&mut self, campaign: CampaignId, subscription: Subscription, out: &mut Outgoing) {
        let last = match &subscription.reply.resume {
            Resume::Snapshot { campaign, .. } => campaign.version,
            Resume::Events { to_version, .. } => *to_version,
        };
        for frame in subscription.backlog {
            out.push_versioned(frame.text, frame.version);
        }
        let follow = Follow {
            campaign,
            last,
            gauges: subscription.gauges,
            history: subscription.history,
            events: subscription.events,
        };
        match self.follows.iter().position(Option::is_none) {
            Some(free) => self.follows[free] = Some(follow),
            None => self.follows.push(Some(follow)),
        }
    }

    /// Wait for the next delivery of any followed campaign. Most connections follow one
    /// campaign, and then this is a plain `recv` on its channel; several are raced.
    pub async fn next(&mut self) -> (usize, Delivery) {
        let mut waiting: Vec<_> = self
            .follows
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

    /// Deliver `delivery`, then whatever else is ready now (no waiting), so one socket write
    /// carries many events.
    pub async fn deliver_ready(
        &mut self,
        slot: usize,
        delivery: Delivery,
        reader: &Reader<'_>,
        out: &mut Outgoing,
    ) {
        self.deliver(slot, delivery, reader, out).await;
        let mut slot = 0;
        while out.len() < MAX_WRITE_BATCH && slot < self.follows.len() {
            let ready = match &mut self.follows[slot] {
                Some(follow) => match follow.events.try_recv() {
                    Ok(batch) => Some(Delivery::Batch(batch)),
                    Err(TryRecvError::Lagged(_)) => Some(Delivery::Lagged),
                    Err(TryRecvError::Closed) => Some(Delivery::Ended),
                    Err(TryRecvError::Empty) => None,
                },
                None => None,
            };
            match ready {
                Some(delivery) => self.deliver(slot, delivery, reader, out).await,
                None => slot += 1,
            }
        }
    }

    /// Bring one subscription's delivery to `out`, keeping versions contiguous.
    async fn deliver(
        &mut self,
        slot: usize,
        delivery: Delivery,
        reader: &Reader<'_>,
        out: &mut Outgoing,
    ) {
        match delivery {
            Delivery::Batch(batch) => {
                for (index, frame) in batch.iter().enumerate() {
                    let Some(version) = frame.version else {
                        out.push_shared(&batch, index);
                        continue;
                    };
                    let Some(last) = self.last(slot) else {
                        return; // unsubscribed meanwhile
                    };
                    if version <= last {
                        continue; // already delivered through a backfill
                    }
                    if version > last + 1 {
                        Box::pin(self.backfill(slot, reader, out)).await;
                    }
                    if frame.changes_access && !self.still_sees(slot, reader, out).await {
                        return;
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
                Box::pin(self.backfill(slot, reader, out)).await;
            }
            Delivery::Ended => {
                let Some(follow) = self.follows.get_mut(slot).and_then(Option::take) else {
                    return;
                };
                let reason = ErrorBody::new(
                    ErrorCode::Unavailable,
                    "the campaign restarted; subscribe again with since_version",
                );
                out.push(ended(follow.campaign, reason));
            }
        }
    }

    fn last(&self, slot: usize) -> Option<u64> {
        self.follows.get(slot)?.as_ref().map(|f| f.last)
    }

    /// Fetch what the subscriber missed after its last version: events from the shared
    /// history when it still holds them, otherwise from the campaign's task (events, or a
    /// resync snapshot).
    async fn backfill(&mut self, slot: usize, reader: &Reader<'_>, out: &mut Outgoing) {
        let Some(Some(follow)) = self.follows.get(slot) else {
            return;
        };
        let (campaign, last) = (follow.campaign.clone(), follow.last);
        let missed = match follow.history.after(last) {
            Some(frames) => Ok(Backfill::Events(frames)),
            None => {
                let caller = reader.who.caller(&campaign);
                reader.manager.backfill(&campaign, last, caller).await
            }
        };
        if let Ok(Backfill::Events(frames)) = &missed {
            if frames.iter().any(|f| f.changes_access) && !self.still_sees(slot, reader, out).await
            {
                return;
            }
        }
        let Some(Some(follow)) = self.follows.get_mut(slot) else {
            return;
        };
        match missed {
            Ok(Backfill::Events(frames)) => {
                for frame in frames {
                    if frame.version == Some(follow.last + 1) {
                        follow.last += 1;
                        out.push_versioned(frame.text, frame.version);
                    }
                }
            }
            Ok(Backfill::Snapshot(snapshot)) => {
                follow.last = snapshot.campaign.version;
                let resync = Resync {
                    campaign_id: campaign,
                    reason: SnapshotReason::HistoryTruncated,
                    campaign: snapshot.campaign,
                    role: snapshot.role,
                };
                let version = resync.campaign.version;
                out.push_versioned(
                    frames::push(RESYNC, &resync, clock::now()).text,
                    Some(version),
                );
            }
            Err(error) => {
                self.follows[slot] = None;
                reader.manager.leave(&campaign, reader.connection);
                if error.code == ErrorCode::NotFound {
                    self.lost.push(campaign.clone());
                }
                out.push(ended(campaign, error));
            }
        }
    }

    /// After an event that changed who may see the campaign: whether this connection still may.
    /// If not, the subscription ends here, before the event is delivered, with the answer a new
    /// subscribe would get (`not_found`; the campaign is also listed in [`Self::take_lost`]).
    /// Any other failure to check ends it too (the client subscribes again): nothing is
    /// delivered on an unanswered question.
    async fn still_sees(&mut self, slot: usize, reader: &Reader<'_>, out: &mut Outgoing) -> bool {
        let Some(Some(follow)) = self.follows.get(slot) else {
            return false;
        };
        let campaign = follow.campaign.clone();
        let caller = reader.who.caller(&campaign);
        let Err(error) = reader.manager.role(&campaign, caller).await else {
            return true;
        };
        self.follows[slot] = None;
        reader.manager.leave(&campaign, reader.connection);
        if error.code == ErrorCode::NotFound {
            self.lost.push(campaign.clone());
        }
        out.push(ended(campaign, error));
        false
    }

    /// Campaigns this connection lost access to since the last call (their subscriptions ended).
    pub fn take_lost(&mut self) -> Vec<CampaignId> {
        std::mem::take(&mut self.lost)
    }

    /// After a batch reached the socket: count it, and sample latency and buffer use once.
    pub fn record_delivery(&mut self, ops: &OpsCounters) {
        let states = std::mem::take(&mut self.batch_states);
        let first = self.batch_first.take();
        if states == 0 {
            return;
        }
        ops.deliveries.fetch_add(states, Ordering::Relaxed);
        let Some((slot, version, durable_at)) = first else {
            return;
        };
        let hot = hot_metrics();
        if let Some(durable_at) = durable_at {
            let elapsed = durable_at.elapsed();
            ops.delivery_latency.record(elapsed);
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

/// `campaign:subscription:v1:completed`: the server ended a subscription.
pub(super) fn ended(campaign_id: CampaignId, reason: ErrorBody) -> Utf8Bytes {
    let ended = SubscriptionEnded {
        campaign_id,
        reason,
    };
    frames::push(SUBSCRIPTION_ENDED, &ended, clock::now()).text
}
