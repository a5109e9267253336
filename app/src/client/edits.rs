//! One person's writes to one campaign, from the moment they make them until the server answers:
//! a pure state machine, like [`super::live`]. (Typing in the title and description goes through
//! [`super::shared_text`] instead: text merges, it never waits.)
//!
//! The rules:
//! - Every write shows at once: [`EditQueue::overlay`] lays the writes not yet in the confirmed
//!   state over it, with the server's own rule ([`Write::effect`]).
//! - A write is based on the newest version this page has fully seen: the confirmed state's
//!   version, extended by the versions of its own acknowledged writes that follow it without a
//!   gap ([`EditQueue::base`]). A page's own writes count as seen, so a person alone never
//!   conflicts with themselves, however fast they click.
//! - A write that clashes with an earlier write of the same page ([`Write::clashes_with`]: same
//!   field, same feature name, overlapping config paths) waits until the earlier one is answered
//!   and covered by the base, then goes out based on it. Writes that do not clash — features of
//!   different names — go out at once.
//! - A write whose `base_version` the caller set (the config editor: the version the person began
//!   editing at) keeps it; the others get [`EditQueue::base`] when they are sent.
//! - An acknowledged write stays laid over the confirmed state until the confirmed state reaches
//!   its version; a refused one is dropped and handed back to the caller to explain.

use crate::model::{CampaignState, Change, Write};
use crate::protocol::ErrorBody;

/// The page's number for one write, to match the server's answer to it.
pub type EditNumber = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Held back by an earlier write it clashes with.
    Waiting,
    Sent,
    /// Accepted at this version.
    Accepted(u64),
}

#[derive(Debug, Clone, PartialEq)]
struct Edit {
    number: EditNumber,
    write: Write,
    stage: Stage,
}

/// A write to send now.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub number: EditNumber,
    pub write: Write,
}

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EditQueue {
    next: EditNumber,
    edits: Vec<Edit>,
}

impl EditQueue {
    /// Take a new write made on what the page shows. Returns its number and what to send now
    /// (nothing if it waits), or the error the server would refuse it with.
    pub fn submit(
        &mut self,
        write: Write,
        confirmed: &CampaignState,
    ) -> Result<(EditNumber, Vec<Outgoing>), ErrorBody> {
        write.effect(&self.overlay(confirmed))?;
        self.next += 1;
        let number = self.next;
        self.edits.push(Edit {
            number,
            write,
            stage: Stage::Waiting,
        });
        Ok((number, self.release(confirmed)))
    }

    /// The server accepted write `number` at `version` (`unchanged`: it changed nothing).
    pub fn accepted(
        &mut self,
        number: EditNumber,
        version: u64,
        unchanged: bool,
        confirmed: &CampaignState,
    ) -> Vec<Outgoing> {
        if unchanged || version <= confirmed.version {
            self.edits.retain(|e| e.number != number);
        } else if let Some(edit) = self.edits.iter_mut().find(|e| e.number == number) {
            edit.stage = Stage::Accepted(version);
        }
        self.release(confirmed)
    }

    /// The server refused write `number`: it is dropped and returned, to say what was lost.
    pub fn refused(
        &mut self,
        number: EditNumber,
        confirmed: &CampaignState,
    ) -> (Option<Write>, Vec<Outgoing>) {
        let position = self.edits.iter().position(|e| e.number == number);
        let write = position.map(|i| self.edits.remove(i).write);
        (write, self.release(confirmed))
    }

    /// The confirmed state moved on (an event, a snapshot): writes it now includes are done, and
    /// waiting writes it unblocks go out.
    pub fn confirmed(&mut self, confirmed: &CampaignState) -> Vec<Outgoing> {
        self.edits
            .retain(|e| !matches!(e.stage, Stage::Accepted(v) if v <= confirmed.version));
        self.release(confirmed)
    }

    /// The newest version this page has fully seen; see the module documentation.
    pub fn base(&self, confirmed: &CampaignState) -> u64 {
        let mut base = confirmed.version;
        while self
            .edits
            .iter()
            .any(|e| e.stage == Stage::Accepted(base + 1))
        {
            base += 1;
        }
        base
    }

    /// `confirmed` with every write not yet in it laid over, in order.
    pub fn overlay(&self, confirmed: &CampaignState) -> CampaignState {
        let mut state = confirmed.clone();
        for edit in &self.edits {
            if let Ok(Some(change)) = edit.write.effect(&state) {
                let _ = state.apply_change(&change);
            }
        }
        state
    }

    /// Writes the server has not accepted yet (what would be lost if the page closed now).
    pub fn unsaved(&self) -> usize {
        self.edits
            .iter()
            .filter(|e| !matches!(e.stage, Stage::Accepted(_)))
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Send every waiting write that no earlier unsettled write clashes with.
    fn release(&mut self, confirmed: &CampaignState) -> Vec<Outgoing> {
        let base = self.base(confirmed);
        let mut state = confirmed.clone();
        // The changes of earlier writes the base does not cover yet: a later write that clashes
        // with one of them must wait.
        let mut unsettled: Vec<Change> = Vec::new();
        let mut out = Vec::new();
        for edit in &mut self.edits {
            let change = edit.write.effect(&state).ok().flatten();
            if edit.stage == Stage::Waiting && !unsettled.iter().any(|c| edit.write.clashes_with(c))
            {
                edit.stage = Stage::Sent;
                if edit.write.base_version().is_none() {
                    edit.write = edit.write.clone().based_on(Some(base));
                }
                out.push(Outgoing {
                    number: edit.number,
                    write: edit.write.clone(),
                });
            }
            let settled = matches!(edit.stage, Stage::Accepted(v) if v <= base);
            if let Some(change) = change {
                let _ = state.apply_change(&change);
                if !settled {
                    unsettled.push(change);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Actor, CampaignId, CampaignStatus, Timestamp, UserId};
    use serde_json::json;

    fn state(version: u64) -> CampaignState {
        let actor = Actor {
            user_id: UserId::parse("u1").unwrap(),
            display_name: "Ada".into(),
        };
        CampaignState {
            id: CampaignId::parse("c").unwrap(),
            title: "Launch".into(),
            description: String::new(),
            status: CampaignStatus::Draft,
            visibility: crate::model::Visibility::Private,
            features: Default::default(),
            config: Default::default(),
            handed_to: None,
            members: Default::default(),
            version,
            created_at: Timestamp::from_unix_nanos(1),
            created_by: actor.clone(),
            updated_at: Timestamp::from_unix_nanos(1),
            updated_by: actor,
        }
    }

    fn add(feature: &str) -> Write {
        Write::Feature(
            serde_json::from_value(json!({"campaign_id": "c", "op": "add", "features": [feature]}))
                .unwrap(),
        )
    }

    fn status(status: &str) -> Write {
        Write::Update(
            serde_json::from_value(json!({"campaign_id": "c", "updates": {"status": status}}))
                .unwrap(),
        )
    }

    fn sent(out: &[Outgoing]) -> Vec<(EditNumber, Option<u64>)> {
        out.iter()
            .map(|o| (o.number, o.write.base_version()))
            .collect()
    }

    #[test]
    fn features_of_different_names_go_out_at_once_on_the_same_base() {
        let mut q = EditQueue::default();
        let s = state(5);
        let (_, a) = q.submit(add("live_chat"), &s).unwrap();
        let (_, b) = q.submit(add("polls"), &s).unwrap();
        let (_, c) = q.submit(add("qa"), &s).unwrap();
        assert_eq!(
            [sent(&a), sent(&b), sent(&c)].concat(),
            vec![(1, Some(5)), (2, Some(5)), (3, Some(5))]
        );
        let shown = q.overlay(&s);
        assert_eq!(shown.features.len(), 3);
        assert_eq!(q.unsaved(), 3);
    }

    #[test]
    fn own_accepted_versions_advance_the_base() {
        let mut q = EditQueue::default();
        let s = state(5);
        q.submit(add("live_chat"), &s).unwrap();
        // Accepted as v6 before the broadcast of v6 arrived: the next write is based on 6.
        q.accepted(1, 6, false, &s);
        assert_eq!(q.base(&s), 6);
        let (_, out) = q.submit(status("active"), &s).unwrap();
        assert_eq!(sent(&out), vec![(2, Some(6))]);
        // Someone else's v7 is not seen yet; own v8 does not extend the base over the gap.
        q.accepted(2, 8, false, &s);
        assert_eq!(q.base(&s), 6);
        // The broadcasts arrive: accepted writes the state now includes are done.
        q.confirmed(&state(8));
        assert!(q.is_empty());
    }

    #[test]
    fn a_write_that_clashes_with_an_unsettled_one_waits_for_it() {
        let mut q = EditQueue::default();
        let s = state(5);
        let (_, first) = q.submit(status("active"), &s).unwrap();
        assert_eq!(sent(&first), vec![(1, Some(5))]);
        let (_, second) = q.submit(status("paused"), &s).unwrap();
        assert_eq!(sent(&second), vec![], "same field: waits");
        let (_, other) = q.submit(add("qa"), &s).unwrap();
        assert_eq!(sent(&other), vec![(3, Some(5))], "no clash: goes at once");
        assert_eq!(q.overlay(&s).status, CampaignStatus::Paused);
        // Accepted at v7 while v6 (someone else's) is unseen: still waits, or it would be
        // based on 5 and clash with its own v7.
        assert_eq!(q.accepted(1, 7, false, &s), vec![]);
        let out = q.confirmed(&state(6));
        assert_eq!(sent(&out), vec![(2, Some(7))]);
    }

    #[test]
    fn a_refused_write_is_handed_back_and_unblocks_the_next() {
        let mut q = EditQueue::default();
        let s = state(5);
        q.submit(status("active"), &s).unwrap();
        q.submit(status("paused"), &s).unwrap();
        let (lost, out) = q.refused(1, &s);
        assert_eq!(lost, Some(status("active").based_on(Some(5))));
        assert_eq!(sent(&out), vec![(2, Some(5))]);
        assert_eq!(q.refused(99, &s).0, None);
    }

    #[test]
    fn local_checks_refuse_without_a_round_trip() {
        let mut q = EditQueue::default();
        let long = Write::Update(
            serde_json::from_value(
                json!({"campaign_id": "c", "updates": {"title": "x".repeat(201)}}),
            )
            .unwrap(),
        );
        let err = q.submit(long, &state(5)).unwrap_err();
        assert_eq!(err.code, crate::protocol::ErrorCode::TooLarge);
        assert!(q.is_empty());
    }

    #[test]
    fn an_explicit_base_is_kept() {
        let mut q = EditQueue::default();
        let w = add("qa").based_on(Some(3));
        let (_, out) = q.submit(w, &state(5)).unwrap();
        assert_eq!(sent(&out), vec![(1, Some(3))]);
    }
}
