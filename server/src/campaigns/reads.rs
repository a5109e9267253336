//! What a writer answers from the state it holds, changing nothing: snapshots, backfills and
//! roles. Each asks first whether the caller may see the campaign; one who may not gets the
//! same `not_found` as for a campaign that does not exist.

use rally_app::model::{Invite, InviteId, Role};
use rally_app::protocol::campaign::CampaignSnapshot;
use rally_app::protocol::ErrorBody;

use super::access::Caller;
use super::command::Backfill;
use super::core::{CampaignCore, ResumePlan};
use super::writer::{not_found, Writer};
use crate::clock;

impl Writer {
    /// The campaign, if it exists and `caller` may see it.
    fn seen_by(&self, caller: Option<&Caller>) -> Result<&CampaignCore, ErrorBody> {
        let core = self.core.as_ref().ok_or_else(|| not_found(&self.id))?;
        core.visible_to(caller)?;
        Ok(core)
    }

    pub(super) fn snapshot(&self, caller: Option<&Caller>) -> Result<CampaignSnapshot, ErrorBody> {
        let core = self.seen_by(caller)?;
        Ok(CampaignSnapshot {
            campaign: core.state().clone(),
            role: core.role_for(caller),
        })
    }

    /// The campaign's invite links, for its owners.
    pub(super) fn invites(&self, caller: Option<&Caller>) -> Result<Vec<Invite>, ErrorBody> {
        let core = self.core.as_ref().ok_or_else(|| not_found(&self.id))?;
        core.invites(caller)
    }

    /// What the invite link `id` offers anyone holding it, and the campaign's title. Whoever
    /// holds a working link may read this much, even of a private campaign.
    pub(super) fn invite_offer(&self, id: &InviteId) -> Result<(Invite, String), ErrorBody> {
        let core = self.core.as_ref().ok_or_else(|| not_found(&self.id))?;
        let invite = core.admit(id, clock::now())?;
        Ok((invite.clone(), core.state().title.clone()))
    }

    /// The caller's role (a snapshot's answer without copying the state).
    pub(super) fn role(&self, caller: Option<&Caller>) -> Result<Role, ErrorBody> {
        Ok(self.seen_by(caller)?.role_for(caller))
    }

    /// What a subscriber missed after `since_version`: the events, or a snapshot when history
    /// no longer reaches back.
    pub(super) fn backfill(
        &self,
        since_version: u64,
        caller: Option<&Caller>,
    ) -> Result<Backfill, ErrorBody> {
        let core = self.seen_by(caller)?;
        Ok(match core.resume(Some(since_version)) {
            ResumePlan::Events(missed) => {
                Backfill::Events(missed.into_iter().map(|e| self.encoded_frame(e)).collect())
            }
            ResumePlan::Snapshot(_) => Backfill::Snapshot(Box::new(CampaignSnapshot {
                campaign: core.state().clone(),
                role: core.role_for(caller),
            })),
        })
    }
}
