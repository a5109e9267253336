//! How a campaign's writes become durable: the rest of [`Writer`], for the commit protocol.
//!
//! Writes of one batch are applied to the core one by one ([`Writer::apply_write`]), then
//! committed together ([`Writer::flush`]): acknowledged only once the store holds them, then
//! broadcast.
//!
//! With a shared store (Redis mode) several instances may hold a writer for the same campaign.
//! The store's version check serializes them: a writer that lost the race goes back to its
//! state before the batch, catches up on the other instance's events (broadcasting them to its
//! own subscribers, in order), re-applies its pending writes on top — re-validating each, so
//! `base_version` conflicts stay exact — and commits again. When to retry and when to give up is
//! [`CommitRace`], a pure rule with time and randomness passed in.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rally_app::model::{
    Actor, CampaignEvent, EventId, Idempotency, Invite, InviteId, Role, Timestamp, Visibility,
    Write,
};
use rally_app::protocol::campaign::{Overruled, WriteAck, OVERRULED};
use rally_app::protocol::invites::CreateInvite;
use rally_app::protocol::{ErrorBody, ErrorCode};

use super::access::Caller;
use super::command::{Reply, WriterError};
use super::core::{Applied, CampaignCore};
use super::writer::{not_found, read_only, unavailable, Writer};
use crate::bus::BusNote;
use crate::clock;
use crate::frames::{self, Frame};
use crate::store::{Commit, StoreError};

/// How long a batch keeps retrying when other instances keep winning the race for the same
/// campaign (well inside the 5 s a request waits for its answer).
pub const COMMIT_PATIENCE: Duration = Duration::from_secs(3);
/// Events fetched per catch-up read (each may be tens of KiB).
const CATCH_UP_BATCH: usize = 256;

/// A write applied to the core but not yet durable.
pub(super) struct Pending {
    write: Write,
    caller: Option<Caller>,
    event: CampaignEvent,
    reply: Reply<WriteAck>,
}

/// When a batch that lost the version race tries again.
#[derive(Debug)]
pub struct CommitRace {
    deadline: Instant,
    losses: u32,
}

/// The next attempt after a lost race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Wait this long first, so instances retrying together do not collide in step.
    pub wait: Duration,
    /// Claim the campaign's next commit: this instance lost twice in a row, and busier ones
    /// must not starve it.
    pub claim_turn: bool,
}

impl CommitRace {
    pub fn new(now: Instant) -> Self {
        CommitRace {
            deadline: now + COMMIT_PATIENCE,
            losses: 0,
        }
    }

    /// The race was lost at `now`: retry, or `None` once [`COMMIT_PATIENCE`] is spent. `random`
    /// picks the wait, uniformly in [0, 2^losses ms) capped at 20 ms.
    pub fn lost(&mut self, now: Instant, random: u32) -> Option<Retry> {
        if now >= self.deadline {
            return None;
        }
        self.losses += 1;
        let cap_ms = (1u64 << self.losses.min(5)).min(20);
        Some(Retry {
            wait: Duration::from_micros(u64::from(random) % (cap_ms * 1000)),
            claim_turn: self.losses >= 2,
        })
    }
}

impl Writer {
    /// The commit of `events` (and the core's record) on top of the durable version.
    fn commit_of(&self, events: Vec<CampaignEvent>) -> Option<Commit> {
        let core = self.core.as_ref()?;
        Some(Commit {
            campaign_id: self.id.clone(),
            expected_version: self.durable_version,
            record: core.record().clone(),
            events,
            instance: self.context.event_ids.instance(),
        })
    }

    /// Apply one write to the core; a change waits in `pending` for the batch's commit, anything
    /// else is answered at once.
    pub(super) async fn apply_write(
        &mut self,
        write: Write,
        caller: Option<Caller>,
        named: Option<Idempotency>,
        reply: Reply<WriteAck>,
        pending: &mut Vec<Pending>,
    ) {
        // The same named write twice in one batch: the second is answered with the first's
        // version only once that version is durable.
        if let Some(named) = &named {
            if pending.iter().any(|p| {
                p.event
                    .idempotency
                    .as_ref()
                    .is_some_and(|n| n.key == named.key)
            }) {
                self.flush(pending).await;
            }
        }
        let hidden = match &self.core {
            None => Some(not_found(&self.id)),
            Some(core) => core.visible_to(caller.as_ref()).err(),
        };
        if let Some(hidden) = hidden {
            // Before "read-only": a campaign the caller may not see answers as a missing one.
            let _ = reply.send(Err(hidden.into()));
            return;
        }
        if !self.writable {
            let _ = reply.send(Err(read_only().into()));
            return;
        }
        if pending.is_empty() && self.context.bus.shared() {
            self.backup = self.core.clone();
        }
        let Some(core) = self.core.as_mut() else {
            return;
        };
        let now = clock::now();
        let event_id = self.context.event_ids.next(now);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            core.apply_named(&write, caller.as_ref(), named.as_ref(), now, event_id)
        }));
        match outcome {
            Ok(applied) => {
                if let Ok(Applied::Changed(_)) = &applied {
                    metrics::histogram!("rally_update_fields").record(write.field_count() as f64);
                }
                self.settle(write, caller, reply, applied, pending);
            }
            Err(panic) => {
                self.recover_from_panic(panic, pending).await;
                let _ = reply.send(Err(ErrorBody::new(
                    ErrorCode::Internal,
                    "internal error applying the change; the campaign was reloaded, nothing was applied",
                )
                .into()));
            }
        }
    }

    /// Where an applied write goes: a change into `pending`, an unchanged or refused write
    /// answered now.
    fn settle(
        &self,
        write: Write,
        caller: Option<Caller>,
        reply: Reply<WriteAck>,
        applied: Result<Applied, ErrorBody>,
        pending: &mut Vec<Pending>,
    ) {
        match applied {
            Ok(Applied::Changed(event)) => pending.push(Pending {
                write,
                caller,
                event,
                reply,
            }),
            Ok(Applied::Unchanged { version }) => {
                let _ = reply.send(Ok(WriteAck::unchanged(self.id.clone(), version)));
            }
            Err(rejection) => {
                if rejection.code == ErrorCode::Conflict {
                    self.tell_who_was_first(&write, caller.as_ref());
                }
                let _ = reply.send(Err(rejection.into()));
            }
        }
    }

    /// `write` was refused because someone else changed the same thing first: tell everyone
    /// following, here and on the other instances, so that person's page says their change was
    /// kept (the refused person has the `conflict` answer already).
    fn tell_who_was_first(&self, write: &Write, caller: Option<&Caller>) {
        let (Some(core), Some(caller)) = (&self.core, caller) else {
            return;
        };
        let Some((clash, field)) = core.overruled_by(write, &caller.actor.user_id) else {
            return;
        };
        // Only a change the store holds is "kept": one still in this batch could yet be lost.
        if clash.version > self.durable_version {
            return;
        }
        let overruled = Overruled {
            campaign_id: self.id.clone(),
            field,
            kept: clash.changed_by.clone(),
            version: clash.version,
            refused: caller.actor.clone(),
        };
        self.push_overruled(&overruled);
        self.notify(BusNote::Overruled {
            campaign: self.id.clone(),
            overruled: Box::new(overruled),
        });
    }

    /// Push a decided conflict to this instance's subscribers.
    pub(super) fn push_overruled(&self, overruled: &Overruled) {
        let frame = frames::push(OVERRULED, overruled, clock::now());
        let _ = self.broadcast.send(frames::single(frame));
    }

    /// A panic mid-apply may have left the core half-changed: drop it (and the not yet durable
    /// writes of this batch, which are answered `unavailable`), reload from the store.
    pub(super) async fn recover_from_panic(
        &mut self,
        panic: Box<dyn std::any::Any + Send>,
        pending: &mut Vec<Pending>,
    ) {
        let what = crate::panics::message(panic.as_ref());
        tracing::error!(campaign = %self.id, panic = %what, "campaign task panicked; reloading from the store");
        metrics::counter!("rally_panics_caught_total", "where" => "campaign").increment(1);
        for p in pending.drain(..) {
            let _ = p
                .reply
                .send(Err(unavailable("the campaign was reloaded; retry").into()));
        }
        if let Err(error) = self.load().await {
            tracing::error!(campaign = %self.id, %error, "cannot reload campaign after a panic");
            self.core = None;
        }
    }

    /// Go back to the state before this batch: the backup (shared store) or the store itself.
    async fn roll_back(&mut self) {
        match self.backup.take() {
            Some(backup) => self.core = Some(backup),
            None => {
                if let Err(error) = self.load().await {
                    tracing::error!(campaign = %self.id, %error, "cannot reload campaign");
                    self.core = None;
                }
            }
        }
    }

    /// Apply pending writes again on the current core (after catching up): each is re-validated,
    /// so one that now conflicts is answered with the conflict.
    fn reapply(&mut self, pending: &mut Vec<Pending>) {
        self.backup = self.core.clone();
        let mut kept = Vec::with_capacity(pending.len());
        for Pending {
            write,
            caller,
            reply,
            event,
        } in pending.drain(..)
        {
            let Some(core) = self.core.as_mut() else {
                return;
            };
            let now = clock::now();
            let event_id = self.context.event_ids.next(now);
            let named = event.idempotency.as_ref();
            let applied = core.apply_named(&write, caller.as_ref(), named, now, event_id);
            self.settle(write, caller, reply, applied, &mut kept);
        }
        *pending = kept;
    }

    /// Make pending writes durable, then acknowledge and broadcast them.
    pub(super) async fn flush(&mut self, pending: &mut Vec<Pending>) {
        let mut race = CommitRace::new(Instant::now());
        loop {
            if pending.is_empty() {
                self.backup = None;
                return;
            }
            let events = pending.iter().map(|p| p.event.clone()).collect();
            let Some(commit) = self.commit_of(events) else {
                return;
            };
            let outcome = self.context.store.commit(commit).await;
            let error = match outcome {
                Ok(()) => {
                    self.backup = None;
                    let mut events = Vec::with_capacity(pending.len());
                    for Pending { event, reply, .. } in pending.drain(..) {
                        let _ = reply.send(Ok(WriteAck::changed(&event)));
                        events.push(event);
                    }
                    self.committed(&events);
                    return;
                }
                Err(error) => error,
            };
            let lost = matches!(
                error,
                StoreError::VersionMismatch { .. } | StoreError::NotYourTurn
            );
            let retry = if lost {
                race.lost(Instant::now(), u32::from_le_bytes(clock::random_bytes()))
            } else {
                None
            };
            let Some(retry) = retry else {
                self.fail_batch(pending, &error).await;
                return;
            };
            metrics::counter!("rally_commit_retries_total").increment(1);
            self.roll_back().await;
            if retry.claim_turn {
                let _ = self
                    .context
                    .store
                    .claim_turn(&self.id, self.context.event_ids.instance())
                    .await;
            }
            tokio::time::sleep(retry.wait).await;
            self.catch_up().await;
            self.reapply(pending);
        }
    }

    /// The store did not take the batch: every pending write is answered `unavailable`.
    async fn fail_batch(&mut self, pending: &mut Vec<Pending>, error: &StoreError) {
        if self.context.bus.shared() {
            // The link logs an outage once; per-request failures are routine.
            tracing::debug!(campaign = %self.id, %error, "commit failed");
        } else {
            tracing::error!(campaign = %self.id, %error, "commit failed; reloading campaign");
        }
        for p in pending.drain(..) {
            let _ = p.reply.send(Err(unavailable(format!(
                "could not store the change: {error}"
            ))
            .into()));
        }
        self.roll_back().await;
    }

    /// `events` are durable: the store holds the core's version. Broadcast them and tell the
    /// other instances.
    fn committed(&mut self, events: &[CampaignEvent]) {
        let Some(version) = self.core.as_ref().map(|c| c.version()) else {
            return;
        };
        self.set_durable(version);
        self.publish(events);
        self.notify(BusNote::Committed {
            campaign: self.id.clone(),
            version,
        });
    }

    /// Commit the one event `make` draws from the core (None: nothing to change): durable
    /// before the answer, broadcast like any change. Used by the requests that are not writes
    /// (joining, invite links). Losing the race to another instance goes as for writes: back to
    /// the state before, catch up (broadcasting what the other instance made), and `make` again
    /// on the new state within [`COMMIT_PATIENCE`].
    pub(super) async fn commit_one(
        &mut self,
        mut make: impl FnMut(
            &mut CampaignCore,
            Timestamp,
            EventId,
        ) -> Result<Option<CampaignEvent>, ErrorBody>,
    ) -> Result<(), WriterError> {
        if !self.writable {
            return Err(read_only().into());
        }
        let mut race = CommitRace::new(Instant::now());
        loop {
            let before = self.core.clone();
            let core = self.core.as_mut().ok_or_else(|| not_found(&self.id))?;
            let now = clock::now();
            let event_id = self.context.event_ids.next(now);
            let Some(event) = make(core, now, event_id)? else {
                return Ok(());
            };
            let Some(commit) = self.commit_of(vec![event.clone()]) else {
                return Err(not_found(&self.id).into());
            };
            let error = match self.context.store.commit(commit).await {
                Ok(()) => {
                    self.committed(&[event]);
                    return Ok(());
                }
                Err(error) => error,
            };
            // Never keep a change the store did not take.
            self.core = before;
            let lost = matches!(
                error,
                StoreError::VersionMismatch { .. } | StoreError::NotYourTurn
            );
            let retry = lost
                .then(|| race.lost(Instant::now(), u32::from_le_bytes(clock::random_bytes())))
                .flatten();
            let Some(retry) = retry else {
                return Err(unavailable(format!("could not store the change: {error}")).into());
            };
            tokio::time::sleep(retry.wait).await;
            self.catch_up().await;
        }
    }

    /// Catch up from the store when the core does not know the invite link `id`: another
    /// instance may have made it a moment ago, its note still on the way.
    pub(super) async fn know_invite(&mut self, id: &InviteId) {
        let known = self
            .core
            .as_ref()
            .is_some_and(|core| core.record().invites.contains_key(id));
        if !known {
            self.catch_up().await;
        }
    }

    /// `person` joins through the invite link `invite`; answers the role they have now.
    pub(super) async fn join(
        &mut self,
        person: Actor,
        invite: InviteId,
    ) -> Result<Role, WriterError> {
        self.commit_one(|core, now, event_id| core.join(&person, &invite, now, event_id))
            .await?;
        let core = self.core.as_ref().ok_or_else(|| not_found(&self.id))?;
        Ok(core.role_of(Some(&person.user_id)))
    }

    /// An owner makes an invite link on the terms `asked`; answers it as the campaign keeps it.
    pub(super) async fn make_invite(
        &mut self,
        caller: Option<Caller>,
        asked: CreateInvite,
    ) -> Result<Invite, WriterError> {
        let id = InviteId::parse(&crate::auth::hex(&clock::random_bytes::<8>()))
            .expect("16 hex digits make an invite id");
        self.commit_one(|core, now, event_id| {
            core.make_invite(caller.as_ref(), &asked, id.clone(), now, event_id)
                .map(Some)
        })
        .await?;
        let core = self.core.as_ref().ok_or_else(|| not_found(&self.id))?;
        core.record()
            .invites
            .get(&id)
            .cloned()
            .ok_or_else(|| unavailable("the invite link was made but is gone").into())
    }

    /// An owner withdraws the invite link `id` (withdrawing it again changes nothing).
    pub(super) async fn withdraw_invite(
        &mut self,
        caller: Option<Caller>,
        id: InviteId,
    ) -> Result<(), WriterError> {
        self.commit_one(|core, now, event_id| {
            core.withdraw_invite(caller.as_ref(), &id, now, event_id)
        })
        .await
    }

    /// Take every event the store has after `durable_version` (made by other instances) and
    /// broadcast them in order. If the store's history no longer reaches back, reload and let
    /// subscribers resync.
    pub(super) async fn catch_up(&mut self) {
        if self.core.is_none() {
            let _ = self.load().await;
            return;
        }
        loop {
            let events = match self
                .context
                .store
                .events_since(&self.id, self.durable_version, CATCH_UP_BATCH)
                .await
            {
                Ok(Some(events)) => events,
                Ok(None) => {
                    tracing::debug!(campaign = %self.id, "history too short to catch up; reloading");
                    if self.load().await.is_ok() {
                        // Subscribers see a gap at the newest event and resync through backfill.
                        if let Some(last) = self.encoded.newest() {
                            let _ = self.broadcast.send(frames::single(last));
                        }
                    }
                    return;
                }
                Err(error) => {
                    tracing::debug!(campaign = %self.id, %error, "catch-up failed; will retry when the store is back");
                    return;
                }
            };
            let fetched = events.len();
            let mut applied = Vec::with_capacity(fetched);
            for event in events {
                let Some(core) = self.core.as_mut() else {
                    break;
                };
                if core.apply_remote(&event).is_err() {
                    self.publish(&applied);
                    let _ = self.load().await;
                    return;
                }
                self.set_durable(event.version);
                applied.push(event);
            }
            self.publish(&applied);
            if self.core.is_none() || fetched < CATCH_UP_BATCH {
                return;
            }
        }
    }

    /// Publish the loaded campaign's version and visibility to its gauges.
    pub(super) fn refresh_gauges(&self) {
        if let Some(core) = &self.core {
            self.gauges
                .latest_version
                .store(core.version(), Ordering::Relaxed);
            self.gauges.public.store(
                core.state().visibility == Visibility::Public,
                Ordering::Relaxed,
            );
        }
    }

    /// Remember the frames of durable events and broadcast them as one batch.
    pub(super) fn publish(&mut self, events: &[CampaignEvent]) {
        if events.is_empty() {
            return;
        }
        let durable_at = Some(Instant::now());
        let limits = self.context.config.history();
        let batch: frames::Batch = events
            .iter()
            .map(|event| {
                let frame = frames::state_event(event);
                self.encoded.push(frame.clone(), limits);
                Frame {
                    durable_at,
                    ..frame
                }
            })
            .collect();
        if let (Some(core), Some(first)) = (self.core.as_mut(), self.encoded.first_version()) {
            core.forget_history_before(first);
        }
        self.refresh_gauges();
        self.context
            .ops
            .changes
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        metrics::counter!("rally_changes_applied_total").increment(events.len() as u64);
        // Err means no subscriber right now, which is fine.
        let _ = self.broadcast.send(batch);
    }

    /// Tell other instances, without waiting (they catch up by version if a note is lost).
    pub(super) fn notify(&self, note: BusNote) {
        if self.context.bus.shared() {
            let bus = self.context.bus.clone();
            tokio::spawn(async move { bus.publish(note).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_race_is_retried_after_a_short_random_wait() {
        let t0 = Instant::now();
        let mut race = CommitRace::new(t0);
        let first = race.lost(t0, 1_999).unwrap();
        assert_eq!(first.wait, Duration::from_micros(1_999), "under 2 ms");
        assert!(!first.claim_turn, "one loss is ordinary");
        let second = race.lost(t0, 5_000).unwrap();
        assert_eq!(
            second.wait,
            Duration::from_micros(1_000),
            "5000 µs mod 4 ms"
        );
        assert!(second.claim_turn, "two losses in a row claim the turn");
        for _ in 0..10 {
            let retry = race.lost(t0, u32::MAX).unwrap();
            assert!(retry.wait < Duration::from_millis(20), "capped");
        }
    }

    #[test]
    fn a_batch_gives_up_once_its_patience_is_spent() {
        let t0 = Instant::now();
        let mut race = CommitRace::new(t0);
        assert!(race
            .lost(t0 + COMMIT_PATIENCE - Duration::from_millis(1), 0)
            .is_some());
        assert!(race.lost(t0 + COMMIT_PATIENCE, 0).is_none());
    }
}
