//! The campaign state machine: pure, deterministic, no I/O.
//!
//! [`CampaignCore`] holds one campaign's durable record and its recent history. Every write goes
//! through [`CampaignCore::apply`], which takes the request, the actor, the time and the event id
//! as arguments and either returns the event to persist and broadcast, or a typed rejection —
//! leaving the core untouched. The writer task around it (writer.rs) does the I/O.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rally_app::model::limits::MEMBERS_MAX;
use rally_app::model::{
    Actor, CampaignEvent, CampaignState, Change, ConfigMode, CreateCampaign, EventId, Feature,
    Idempotency, Invite, InviteId, Role, SectionName, TextChange, Timestamp, UserId, Visibility,
    Write,
};
use rally_app::protocol::campaign::SnapshotReason;
use rally_app::protocol::invites::CreateInvite;
use rally_app::protocol::{ErrorBody, ErrorCode};

use super::access::{self, Caller};
use super::invites;
use crate::store::CampaignRecord;

/// Events kept per campaign for resuming subscribers.
pub const DEFAULT_HISTORY_LEN: usize = 1000;

/// The outcome of an accepted write.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// A new version: persist and broadcast this event.
    Changed(CampaignEvent),
    /// The campaign already had the requested values; nothing to persist or broadcast.
    Unchanged { version: u64 },
}

/// A text edit, moved over the edits made since its base version.
enum Rebased {
    /// It had landed already (sent again after a reconnect), at this version.
    Landed(u64),
    /// It now applies to the current text.
    Moved(TextChange),
}

/// How to bring a subscriber from `since_version` to live.
#[derive(Debug, Clone, PartialEq)]
pub enum ResumePlan<'a> {
    Snapshot(SnapshotReason),
    /// These events, in order (possibly none).
    Events(Vec<&'a CampaignEvent>),
}

fn err(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

/// What every path answers for a campaign that does not exist, or that the caller may not see.
pub fn not_found(id: &rally_app::model::CampaignId) -> ErrorBody {
    err(ErrorCode::NotFound, format!("campaign {id} does not exist"))
}

/// One campaign's state machine.
#[derive(Debug, Clone)]
pub struct CampaignCore {
    record: CampaignRecord,
    history: VecDeque<CampaignEvent>,
    history_len: usize,
}

impl CampaignCore {
    /// Validate a creation request and build the new campaign at version 1.
    pub fn create(
        request: CreateCampaign,
        actor: &Actor,
        now: Timestamp,
        event_id: EventId,
        history_len: usize,
    ) -> Result<(CampaignCore, CampaignEvent), ErrorBody> {
        request.check()?;
        let features: BTreeSet<Feature> = request.features.into_iter().collect();
        let state = CampaignState {
            id: request.campaign_id.clone(),
            title: request.title,
            description: request.description,
            status: request.status,
            visibility: request.visibility.unwrap_or(Visibility::Private),
            features,
            config: request.config,
            handed_to: None,
            members: Default::default(),
            version: 1,
            created_at: now,
            created_by: actor.clone(),
            updated_at: now,
            updated_by: actor.clone(),
        };
        let event = CampaignEvent {
            campaign_id: request.campaign_id,
            version: 1,
            event_id,
            changed_by: actor.clone(),
            changed_at: now,
            change: Change::Created {
                state: Box::new(state.clone()),
            },
            idempotency: None,
        };
        let mut core = CampaignCore {
            record: CampaignRecord {
                state,
                field_versions: BTreeMap::new(),
                legacy_members: BTreeMap::new(),
                invites_valid_from: None,
                config_removed_at: None,
                invites: BTreeMap::new(),
            },
            history: VecDeque::new(),
            history_len,
        };
        core.remember(event.clone());
        Ok((core, event))
    }

    /// Rebuild from what the store holds. Keeps the longest run of `history` (ascending) that
    /// ends exactly at the record's version, so a damaged or partial history can shorten what
    /// resuming subscribers get (they fall back to a snapshot), never make it wrong.
    pub fn restore(
        mut record: CampaignRecord,
        history: Vec<CampaignEvent>,
        history_len: usize,
    ) -> Self {
        // Roles granted before members were part of the state become members, stored so with
        // the next commit.
        record = record.migrated();
        let mut expected = record.state.version;
        let mut tail = Vec::new();
        for event in history.into_iter().rev() {
            if event.version > expected {
                continue;
            }
            if event.version != expected || tail.len() == history_len {
                break;
            }
            tail.push(event);
            expected -= 1;
        }
        tail.reverse();
        CampaignCore {
            record,
            history: tail.into(),
            history_len,
        }
    }

    pub fn state(&self) -> &CampaignState {
        &self.record.state
    }

    pub fn record(&self) -> &CampaignRecord {
        &self.record
    }

    pub fn version(&self) -> u64 {
        self.record.state.version
    }

    pub fn history(&self) -> impl Iterator<Item = &CampaignEvent> {
        self.history.iter()
    }

    /// The role of someone asking (None: anonymous): the higher of their stored role and the
    /// one their credential grants.
    pub fn role_for(&self, caller: Option<&Caller>) -> Role {
        access::role(&self.record.state, caller)
    }

    /// The caller may know this campaign exists; otherwise it answers `not_found` exactly as a
    /// missing one does (see [`access`]).
    pub fn visible_to(&self, caller: Option<&Caller>) -> Result<(), ErrorBody> {
        if access::sees(&self.record.state, caller) {
            Ok(())
        } else {
            Err(not_found(&self.record.state.id))
        }
    }

    /// The stored role of a user (None: anonymous) in this campaign.
    pub fn role_of(&self, user: Option<&UserId>) -> Role {
        access::stored_role(&self.record.state, user).unwrap_or(Role::Viewer)
    }

    /// Apply an event another instance made durable (read back from the shared store). It must
    /// be exactly the next version; nothing is re-validated, the store already holds it.
    pub fn apply_remote(
        &mut self,
        event: &CampaignEvent,
    ) -> Result<(), rally_app::model::ApplyError> {
        if matches!(event.change, Change::Created { .. }) {
            return Err(rally_app::model::ApplyError::UnexpectedCreate);
        }
        let before = self.member_role(&event.change);
        self.record.state.apply_event(event)?;
        self.note_applied(event, before);
        Ok(())
    }

    /// For a membership change, the member's stored role before it.
    fn member_role(&self, change: &Change) -> Option<Role> {
        match change {
            Change::Member { member, .. } => self
                .record
                .state
                .members
                .get(&member.user_id)
                .map(|m| m.role),
            _ => None,
        }
    }

    /// Bookkeeping after an event was applied: the versions of the fields it touched (a removed
    /// member's entry goes, so the record stays bounded), and for a member who was removed or
    /// lost a role (`before`), the end of every older invite link (so a link they kept cannot
    /// bring them back; the owners' list shows those links withdrawn).
    fn note_applied(&mut self, event: &CampaignEvent, before: Option<Role>) {
        for field in event.change.touched_fields() {
            self.record.field_versions.insert(field, event.version);
        }
        // A removed section's entry goes (so sections under ever new names cannot grow the
        // record); `config_removed_at` answers for it instead.
        let removed: Vec<&SectionName> = match &event.change {
            Change::Config {
                section,
                mode: ConfigMode::Remove,
                ..
            } => vec![section],
            Change::Revert { restored, .. } => restored
                .config
                .iter()
                .filter(|(_, values)| values.is_none())
                .map(|(section, _)| section)
                .collect(),
            _ => vec![],
        };
        for section in &removed {
            self.record
                .field_versions
                .remove(&format!("config.{section}"));
            self.record.config_removed_at = Some(event.version);
        }
        if let Change::Member { member, role, .. } = &event.change {
            if role.is_none() {
                let field = format!("members.{}", member.user_id);
                self.record.field_versions.remove(&field);
            }
            if *role < before {
                self.record.invites_valid_from = Some(event.changed_at);
                invites::end_older(&mut self.record.invites, event.changed_at);
            }
        }
        invites::note(&mut self.record.invites, event);
        self.remember(event.clone());
    }

    /// `person` joins through the invite link `invite_id`: the event to persist (a membership
    /// change that counts as one of the link's uses), or None if they already have its role or
    /// a higher one (whatever became of the link since: accepting again changes nothing). Never
    /// demotes and never touches the owner; a campaign has at most [`MEMBERS_MAX`] members. See
    /// [`invites::admit`] for the links that let nobody in.
    pub fn join(
        &mut self,
        person: &Actor,
        invite_id: &InviteId,
        now: Timestamp,
        event_id: EventId,
    ) -> Result<Option<CampaignEvent>, ErrorBody> {
        // A stored role, not the viewer role everyone has: a viewer invite makes a member.
        let stored = access::stored_role(&self.record.state, Some(&person.user_id));
        let offered = self.record.invites.get(invite_id).map(|i| i.terms.role);
        // Someone who belongs already, through a link the campaign has since forgotten: as
        // accepting it again, nothing changes.
        if stored.is_some() && (offered.is_none() || stored >= offered) {
            return Ok(None);
        }
        let role = self.admit(invite_id, now)?.terms.role;
        let members = &self.record.state.members;
        if !members.contains_key(&person.user_id) && members.len() >= MEMBERS_MAX {
            return Err(err(
                ErrorCode::LimitExceeded,
                format!("a campaign has at most {MEMBERS_MAX} members"),
            ));
        }
        let change = Change::Member {
            member: person.clone(),
            role: Some(role),
            invite: Some(invite_id.clone()),
        };
        Ok(Some(self.record_event(person, change, now, event_id, None)))
    }

    /// The invite link `id` if it lets people in now.
    pub fn admit(&self, id: &InviteId, now: Timestamp) -> Result<&Invite, ErrorBody> {
        let record = &self.record;
        invites::admit(
            &record.invites,
            &record.state,
            record.invites_valid_from,
            id,
            now,
        )
    }

    /// An owner makes an invite link on the terms `asked` (the link's id is `invite_id`).
    pub fn make_invite(
        &mut self,
        caller: Option<&Caller>,
        asked: &CreateInvite,
        invite_id: InviteId,
        now: Timestamp,
        event_id: EventId,
    ) -> Result<CampaignEvent, ErrorBody> {
        self.visible_to(caller)?;
        let terms = asked.terms(invite_id, now)?;
        let actor = self.owner_for_invites(caller)?;
        // A link works while its maker is an owner in the campaign itself (see invites::admit):
        // a token's grant, which ends with the token, is not enough to make one.
        if access::stored_role(&self.record.state, Some(&actor.user_id)) != Some(Role::Owner) {
            return Err(err(
                ErrorCode::Forbidden,
                "only owners who belong to the campaign can make invite links; a token's grant is not enough",
            ));
        }
        invites::room_for_one_more(&self.record.invites, now)?;
        let change = Change::Invite { terms };
        Ok(self.record_event(actor, change, now, event_id, None))
    }

    /// An owner withdraws the invite link `id`: the event, or None if it was withdrawn already.
    pub fn withdraw_invite(
        &mut self,
        caller: Option<&Caller>,
        id: &InviteId,
        now: Timestamp,
        event_id: EventId,
    ) -> Result<Option<CampaignEvent>, ErrorBody> {
        self.visible_to(caller)?;
        let actor = self.owner_for_invites(caller)?;
        let Some(invite) = self.record.invites.get(id) else {
            return Err(err(
                ErrorCode::NotFound,
                format!("this campaign keeps no invite link {id} (links that no longer work are forgotten after a while)"),
            ));
        };
        if invite.withdrawn_at.is_some() {
            return Ok(None);
        }
        let change = Change::InviteWithdrawn { id: id.clone() };
        Ok(Some(self.record_event(actor, change, now, event_id, None)))
    }

    /// The campaign's invite links, newest first, for its owners.
    pub fn invites(&self, caller: Option<&Caller>) -> Result<Vec<Invite>, ErrorBody> {
        self.visible_to(caller)?;
        self.owner_for_invites(caller)?;
        Ok(invites::newest_first(&self.record.invites))
    }

    fn owner_for_invites<'a>(&self, caller: Option<&'a Caller>) -> Result<&'a Actor, ErrorBody> {
        match caller {
            Some(caller) if self.role_for(Some(caller)) == Role::Owner => Ok(&caller.actor),
            _ => Err(err(
                ErrorCode::Forbidden,
                "only the campaign's owners can invite people and see or withdraw invite links",
            )),
        }
    }

    /// Validate, authorize, check for conflicts, and apply one write.
    ///
    /// Order matters and is part of the contract: a campaign the caller may not see is
    /// `not_found`, as if it did not exist; a malformed request is `invalid`/`too_large`
    /// whoever sends it; a well-formed one from a viewer is `forbidden`; a permitted one that
    /// clashes with a change made after its `base_version` is `conflict`
    /// ([`Write::clashes_with`]). A text edit is authorized first, because whether it fits is a
    /// question about the text at its base version: it is moved over the edits made since
    /// ([`TextChange::rebase`]), and one that already landed (sent again after a reconnect) is
    /// acknowledged with the version it landed at.
    pub fn apply(
        &mut self,
        write: &Write,
        caller: Option<&Caller>,
        now: Timestamp,
        event_id: EventId,
    ) -> Result<Applied, ErrorBody> {
        self.apply_named(write, caller, None, now, event_id)
    }

    /// [`Self::apply`] for a write its sender named (`named`): if their write of that name is
    /// still in the history, it landed already and is answered with that version (unchanged),
    /// whoever changed what since; the event of a new one keeps the name. Checked right after
    /// visibility, so a retry is answered as the first try was, even if its sender lost the
    /// right to write meanwhile.
    pub fn apply_named(
        &mut self,
        write: &Write,
        caller: Option<&Caller>,
        named: Option<&Idempotency>,
        now: Timestamp,
        event_id: EventId,
    ) -> Result<Applied, ErrorBody> {
        self.visible_to(caller)?;
        let actor = caller.map(|c| &c.actor);
        if let (Some(named), Some(actor)) = (named, actor) {
            if let Some(version) = self.landed(named, actor)? {
                return Ok(Applied::Unchanged { version });
            }
        }
        let rebased;
        let write = match write {
            Write::Text(text) => {
                self.editor(caller)?;
                match self.rebase_text(text, actor)? {
                    Rebased::Landed(version) => return Ok(Applied::Unchanged { version }),
                    Rebased::Moved(text) => {
                        rebased = Write::Text(text);
                        &rebased
                    }
                }
            }
            other => other,
        };
        let change = write.effect(&self.record.state)?;
        let actor = self.editor(caller)?;
        if self.role_for(caller) != Role::Owner {
            if matches!(&change, Some(Change::Fields { updates }) if updates.visibility.is_some()) {
                return Err(err(
                    ErrorCode::Forbidden,
                    "only an owner can change who may see the campaign",
                ));
            }
            if matches!(write, Write::Member(_)) {
                return Err(err(
                    ErrorCode::Forbidden,
                    "only an owner can change or remove members",
                ));
            }
            if matches!(write, Write::Handover(_)) {
                return Err(err(
                    ErrorCode::Forbidden,
                    "only the campaign's owner can hand it over",
                ));
            }
        }
        // A handover that already happened (sent again after a reconnect) changes nothing and
        // is acknowledged as such, though its sender no longer owns the campaign.
        if matches!(write, Write::Handover(_))
            && change.is_some()
            && actor.user_id != self.record.state.owner().user_id
        {
            return Err(err(
                ErrorCode::Forbidden,
                "only the campaign's owner can hand it over",
            ));
        }
        if matches!(write, Write::Member(w) if w.user_id == actor.user_id) {
            return Err(err(
                ErrorCode::Invalid,
                "you cannot change your own role; another owner can",
            ));
        }
        let Some(change) = change else {
            return Ok(Applied::Unchanged {
                version: self.version(),
            });
        };
        if let Some(base) = write.base_version() {
            self.check_conflict(base, write, &change)?;
        }
        Ok(Applied::Changed(self.record_event(
            actor,
            change,
            now,
            event_id,
            named.cloned(),
        )))
    }

    /// The version `named` landed at, if its sender's write of that name is in the history;
    /// `invalid` if that name was given to another write.
    fn landed(&self, named: &Idempotency, actor: &Actor) -> Result<Option<u64>, ErrorBody> {
        let earlier = self.history.iter().rev().find(|event| {
            event.changed_by.user_id == actor.user_id
                && event
                    .idempotency
                    .as_ref()
                    .is_some_and(|given| given.key == named.key)
        });
        match earlier {
            None => Ok(None),
            Some(event) if event.idempotency.as_ref() == Some(named) => Ok(Some(event.version)),
            Some(event) => Err(err(
                ErrorCode::Invalid,
                format!(
                    "Idempotency-Key {} named another change (version {}); use a new key for a new change",
                    named.key.as_str(),
                    event.version
                ),
            )),
        }
    }

    /// Make a validated change the next version: apply it, note the fields it touched, keep it.
    fn record_event(
        &mut self,
        actor: &Actor,
        change: Change,
        now: Timestamp,
        event_id: EventId,
        idempotency: Option<Idempotency>,
    ) -> CampaignEvent {
        let before = self.member_role(&change);
        let event = CampaignEvent {
            campaign_id: self.record.state.id.clone(),
            version: self.version() + 1,
            event_id,
            changed_by: actor.clone(),
            changed_at: now,
            change,
            idempotency,
        };
        self.record
            .state
            .apply_event(&event)
            .expect("a validated change applies to the state it was validated against");
        self.note_applied(&event, before);
        event
    }

    /// The caller's person, if they may edit this campaign.
    fn editor<'a>(&self, caller: Option<&'a Caller>) -> Result<&'a Actor, ErrorBody> {
        let Some(caller) = caller else {
            return Err(err(
                ErrorCode::Forbidden,
                "anonymous visitors can watch but not edit; sign in",
            ));
        };
        let role = self.role_for(Some(caller));
        if !role.can_edit() {
            return Err(err(
                ErrorCode::Forbidden,
                format!("a {role} can watch but not edit this campaign"),
            ));
        }
        Ok(&caller.actor)
    }

    /// The events after `base`, if history still holds all of them.
    fn events_since(&self, base: u64) -> Option<impl Iterator<Item = &CampaignEvent>> {
        let reaches =
            base >= self.version() || self.history.front().is_some_and(|e| e.version <= base + 1);
        reaches.then(|| self.history.iter().filter(move |e| e.version > base))
    }

    fn rebase_text(&self, text: &TextChange, actor: Option<&Actor>) -> Result<Rebased, ErrorBody> {
        let (base, version) = (text.base_version, self.version());
        if base > version {
            return Err(err(
                ErrorCode::Invalid,
                format!("base_version {base} is ahead of the campaign's version {version}"),
            ));
        }
        let Some(since) = self.events_since(base) else {
            return Err(err(
                ErrorCode::Conflict,
                format!("base_version {base} is older than the history this server keeps; the current version is {version}"),
            ));
        };
        let since: Vec<&CampaignEvent> = since.collect();
        let own = |e: &&&CampaignEvent| {
            matches!(&e.change, Change::Text { edit_id, .. } if *edit_id == text.edit_id)
                && actor.is_some_and(|a| a.user_id == e.changed_by.user_id)
        };
        if let Some(landed) = since.iter().find(own) {
            return Ok(Rebased::Landed(landed.version));
        }
        let edit = text.rebase(since.iter().map(|e| &e.change))?;
        Ok(Rebased::Moved(TextChange {
            edit,
            base_version: version,
            ..text.clone()
        }))
    }

    /// Refuse `write` if a change made after `base` clashes with it. Field versions answer the
    /// common case at once (nothing it touches changed since); otherwise the history decides, and
    /// where history no longer reaches back, the write is refused rather than guessed about.
    fn check_conflict(&self, base: u64, write: &Write, change: &Change) -> Result<(), ErrorBody> {
        let version = self.version();
        if base > version {
            return Err(err(
                ErrorCode::Invalid,
                format!("base_version {base} is ahead of the campaign's version {version}"),
            ));
        }
        let touched = change.touched_fields();
        let stale = touched
            .iter()
            .find(|field| self.field_version(field) > base);
        let Some(stale) = stale else {
            return Ok(());
        };
        let Some(mut since) = self.events_since(base) else {
            let changed_at = self.field_version(stale);
            return Err(err(
                ErrorCode::Conflict,
                format!("{stale} changed at version {changed_at}, after base_version {base}; current version is {version}"),
            ));
        };
        match since.find(|e| write.clashes_with(&e.change)) {
            Some(clash) => {
                let field = clash
                    .change
                    .touched_fields()
                    .into_iter()
                    .find(|f| touched.contains(f))
                    .unwrap_or_else(|| stale.clone());
                Err(err(
                    ErrorCode::Conflict,
                    format!("{field} changed at version {}, after base_version {base}; current version is {version}", clash.version),
                ))
            }
            None => Ok(()),
        }
    }

    /// The version that last changed `field` (1: none since the campaign was made).
    fn field_version(&self, field: &str) -> u64 {
        let unchanged = match field.starts_with("config.") {
            true => self.record.config_removed_at.unwrap_or(1),
            false => 1,
        };
        self.record
            .field_versions
            .get(field)
            .copied()
            .unwrap_or(unchanged)
    }

    /// For a write `by` someone refused as a conflict: the first change another person made
    /// since its `base_version` that it clashed with, and a field both touched (None when
    /// history no longer reaches back, or only their own changes clashed).
    pub fn overruled_by(&self, write: &Write, by: &UserId) -> Option<(&CampaignEvent, String)> {
        let base = write.base_version()?;
        let mine = match write {
            Write::Text(text) => vec![text.field.as_str().to_owned()],
            other => other
                .effect(self.state())
                .ok()
                .flatten()
                .map(|change| change.touched_fields())
                .unwrap_or_default(),
        };
        let clash = self
            .events_since(base)?
            .find(|e| e.changed_by.user_id != *by && write.clashes_with(&e.change))?;
        let field = clash
            .change
            .touched_fields()
            .into_iter()
            .find(|field| mine.contains(field))?;
        Some((clash, field))
    }

    /// Keep history only from `version` on (the writer keeps it within bytes as well as events).
    pub fn forget_history_before(&mut self, version: u64) {
        while self.history.front().is_some_and(|e| e.version < version) {
            self.history.pop_front();
        }
    }

    fn remember(&mut self, event: CampaignEvent) {
        if self.history_len == 0 {
            return;
        }
        while self.history.len() >= self.history_len {
            self.history.pop_front();
        }
        self.history.push_back(event);
    }

    /// What a subscriber holding `since_version` needs: the missed events when history reaches
    /// back far enough, otherwise a snapshot with the reason.
    pub fn resume(&self, since_version: Option<u64>) -> ResumePlan<'_> {
        let version = self.version();
        let Some(since) = since_version else {
            return ResumePlan::Snapshot(SnapshotReason::Initial);
        };
        if since > version {
            return ResumePlan::Snapshot(SnapshotReason::Ahead);
        }
        if since == version {
            return ResumePlan::Events(Vec::new());
        }
        match self.history.front() {
            Some(oldest) if oldest.version <= since + 1 => {
                let skip = (since + 1 - oldest.version) as usize;
                ResumePlan::Events(self.history.iter().skip(skip).collect())
            }
            _ => ResumePlan::Snapshot(SnapshotReason::HistoryTruncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rally_app::model::limits::*;
    use rally_app::model::{CampaignId, CampaignStatus};
    use rally_app::model::{SectionName, UpdateFields};
    use serde_json::json;

    fn actor(id: &str) -> Actor {
        Actor {
            user_id: UserId::parse(id).unwrap(),
            display_name: id.to_uppercase(),
        }
    }

    fn caller(id: &str) -> Caller {
        Caller::person(actor(id))
    }

    /// The open invite link for `role` that every test campaign starts with (see [`new_core`]).
    fn invited(role: Role) -> InviteId {
        InviteId::parse(&format!("{}", role as u8 + 1)).unwrap()
    }

    /// Put an open link for `role`, made by the owner at `made_at`, in the record (without an
    /// event: these tests count versions).
    fn keep_link(core: &mut CampaignCore, role: Role, made_at: Timestamp) -> InviteId {
        let id = invited(role);
        let terms = rally_app::model::InviteTerms {
            id: id.clone(),
            role,
            max_uses: None,
            expires_at: Timestamp::from_unix_nanos(u64::MAX),
        };
        let invite = Invite {
            terms,
            made_by: actor("owner"),
            made_at,
            used: 0,
            uses: vec![],
            withdrawn_at: None,
        };
        core.record.invites.insert(id.clone(), invite);
        id
    }

    fn t(n: u64) -> Timestamp {
        Timestamp::from_unix_nanos(n)
    }

    fn eid(n: u32) -> EventId {
        EventId::new(0, 0, n)
    }

    fn new_core(history_len: usize) -> CampaignCore {
        let request = CreateCampaign {
            campaign_id: CampaignId::parse("launch").unwrap(),
            title: "Launch".into(),
            description: String::new(),
            status: CampaignStatus::Draft,
            features: vec![],
            config: BTreeMap::new(),
            // Public: these tests are about who may edit; who may see is tested below.
            visibility: Some(Visibility::Public),
        };
        let mut core = CampaignCore::create(request, &actor("owner"), t(1), eid(1), history_len)
            .unwrap()
            .0;
        for role in [Role::Viewer, Role::Editor, Role::Owner] {
            keep_link(&mut core, role, t(0));
        }
        core
    }

    fn update(json: serde_json::Value) -> Write {
        Write::Update(serde_json::from_value(json).unwrap())
    }

    fn features(op: &str, list: &[&str]) -> Write {
        Write::Feature(
            serde_json::from_value(json!({"campaign_id": "launch", "op": op, "features": list}))
                .unwrap(),
        )
    }

    fn config(section: &str, mode: &str, values: serde_json::Value) -> Write {
        Write::Config(
            serde_json::from_value(json!({"campaign_id": "launch", "section": section, "mode": mode, "values": values}))
                .unwrap(),
        )
    }

    fn apply(core: &mut CampaignCore, write: &Write) -> Result<Applied, ErrorBody> {
        let next = core.version() as u32 + 1;
        core.apply(write, Some(&caller("owner")), t(next as u64), eid(next))
    }

    fn code(result: Result<Applied, ErrorBody>) -> ErrorCode {
        result.expect_err("expected a rejection").code
    }

    #[test]
    fn a_named_write_lands_once_per_name_and_sender() {
        let named = |key: &str, digest: &str| Idempotency {
            key: rally_app::model::IdempotencyKey::parse(key).unwrap(),
            digest: digest.into(),
        };
        let mut core = new_core(3);
        // (who, write's title, name, expected: Ok(version the answer names, changed?) or a code)
        let cases: &[(
            &str,
            &str,
            Option<(&str, &str)>,
            Result<(u64, bool), ErrorCode>,
        )] = &[
            ("owner", "A", Some(("k1", "d1")), Ok((2, true))),
            // Sent again: answered with the version it landed at, even after other changes.
            ("owner", "A", Some(("k1", "d1")), Ok((2, false))),
            ("owner", "B", None, Ok((3, true))),
            ("owner", "A", Some(("k1", "d1")), Ok((2, false))),
            // The same name for another write is refused.
            ("owner", "C", Some(("k1", "d2")), Err(ErrorCode::Invalid)),
            // Names are per sender.
            ("editor", "D", Some(("k1", "d1")), Ok((4, true))),
            ("owner", "E", None, Ok((5, true))),
            ("owner", "F", None, Ok((6, true))),
            // Past the history (3 events here), a name is forgotten: the write applies again.
            ("owner", "A", Some(("k1", "d1")), Ok((7, true))),
        ];
        core.record.state.members.insert(
            actor("editor").user_id,
            rally_app::model::Member {
                display_name: "EDITOR".into(),
                role: Role::Editor,
            },
        );
        for (at, (who, title, name, expected)) in cases.iter().enumerate() {
            let write = update(json!({"campaign_id": "launch", "updates": {"title": title}}));
            let name = name.map(|(key, digest)| named(key, digest));
            let next = core.version() as u32 + 1;
            let got = core
                .apply_named(
                    &write,
                    Some(&caller(who)),
                    name.as_ref(),
                    t(next as u64),
                    eid(next),
                )
                .map(|applied| match applied {
                    Applied::Changed(event) => {
                        assert_eq!(event.idempotency, name, "the event keeps its name");
                        (event.version, true)
                    }
                    Applied::Unchanged { version } => (version, false),
                })
                .map_err(|error| error.code);
            assert_eq!(&got, expected, "case {at}: {who} {title} {name:?}");
        }
    }

    #[test]
    fn validation_table() {
        let mut core = new_core(10);
        let long_title = "t".repeat(TITLE_MAX_CHARS + 1);
        let long_description = "d".repeat(DESCRIPTION_MAX_CHARS + 1);
        let too_many: Vec<String> = (0..=FEATURES_MAX).map(|i| format!("f{i}")).collect();
        let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
        let mut deep = json!("leaf");
        for _ in 0..=CONFIG_MAX_DEPTH {
            deep = json!({ "x": deep });
        }
        let big = json!({ "blob": "x".repeat(CONFIG_SECTION_MAX_BYTES) });
        let cases: Vec<(&str, Write, ErrorCode)> = vec![
            (
                "no fields",
                update(json!({"campaign_id": "launch", "updates": {}})),
                ErrorCode::Invalid,
            ),
            (
                "empty title",
                update(json!({"campaign_id": "launch", "updates": {"title": "  "}})),
                ErrorCode::Invalid,
            ),
            (
                "control char",
                update(json!({"campaign_id": "launch", "updates": {"title": "a\u{7}"}})),
                ErrorCode::Invalid,
            ),
            (
                "long title",
                update(json!({"campaign_id": "launch", "updates": {"title": long_title}})),
                ErrorCode::TooLarge,
            ),
            (
                "long description",
                update(
                    json!({"campaign_id": "launch", "updates": {"description": long_description}}),
                ),
                ErrorCode::TooLarge,
            ),
            (
                "too many features",
                features("set", &too_many),
                ErrorCode::TooLarge,
            ),
            (
                "too deep config",
                config("ui_content", "merge", deep),
                ErrorCode::TooLarge,
            ),
            (
                "too big config",
                config("ui_content", "replace", big),
                ErrorCode::TooLarge,
            ),
        ];
        for (name, write, expected) in cases {
            assert_eq!(code(apply(&mut core, &write)), expected, "{name}");
        }
        assert_eq!(core.version(), 1, "no rejected write changed the version");
        assert_eq!(core.history().count(), 1);
    }

    #[test]
    fn too_many_sections_are_refused() {
        let mut core = new_core(10);
        for i in 0..CONFIG_SECTIONS_MAX {
            apply(
                &mut core,
                &config(&format!("s{i}"), "merge", json!({"k": i})),
            )
            .unwrap();
        }
        assert_eq!(
            code(apply(
                &mut core,
                &config("one_more", "merge", json!({"k": 1}))
            )),
            ErrorCode::TooLarge
        );
        // Changing an existing section is still fine.
        assert!(apply(&mut core, &config("s0", "merge", json!({"k": "new"}))).is_ok());
    }

    #[test]
    fn serde_level_errors_are_caught_before_the_core() {
        // Wrong types and unknown fields never reach apply(): the protocol types refuse them.
        let bad = [
            json!({"campaign_id": "launch", "updates": {"title": 5}}),
            json!({"campaign_id": "launch", "updates": {"colour": "red"}}),
            json!({"campaign_id": "launch", "updates": {"status": "archived"}}),
            json!({"campaign_id": "Bad Id", "updates": {"title": "x"}}),
        ];
        for value in bad {
            assert!(
                serde_json::from_value::<UpdateFields>(value.clone()).is_err(),
                "{value}"
            );
        }
    }

    #[test]
    fn versions_advance_by_one_per_change_and_events_describe_the_change() {
        let mut core = new_core(10);
        let Applied::Changed(event) = apply(
            &mut core,
            &update(
                json!({"campaign_id": "launch", "updates": {"title": "New", "status": "active"}}),
            ),
        )
        .unwrap() else {
            panic!("expected a change")
        };
        assert_eq!((event.version, core.version()), (2, 2));
        assert_eq!(event.changed_by, actor("owner"));
        assert_eq!(core.state().title, "New");
        assert_eq!(core.state().status, CampaignStatus::Active);

        let Applied::Changed(event) =
            apply(&mut core, &features("add", &["chat", "polls"])).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            event.change,
            Change::Features {
                added: vec![
                    Feature::parse("chat").unwrap(),
                    Feature::parse("polls").unwrap()
                ],
                removed: vec![]
            }
        );
        let Applied::Changed(event) = apply(&mut core, &features("set", &["polls", "qa"])).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            event.change,
            Change::Features {
                added: vec![Feature::parse("qa").unwrap()],
                removed: vec![Feature::parse("chat").unwrap()]
            }
        );
        assert_eq!(core.version(), 4);

        // Writing what is already there is not a change.
        assert_eq!(
            apply(&mut core, &features("add", &["qa"])).unwrap(),
            Applied::Unchanged { version: 4 }
        );
        assert_eq!(
            apply(
                &mut core,
                &update(json!({"campaign_id": "launch", "updates": {"title": "New"}}))
            )
            .unwrap(),
            Applied::Unchanged { version: 4 }
        );
    }

    #[test]
    fn replaying_events_on_an_old_state_reproduces_the_new_one() {
        let mut core = new_core(100);
        let start = core.state().clone();
        apply(
            &mut core,
            &config(
                "ui_content",
                "merge",
                json!({"hero": {"title": "Hi", "color": "red"}}),
            ),
        )
        .unwrap();
        apply(
            &mut core,
            &config(
                "ui_content",
                "merge",
                json!({"hero": {"color": null}, "footer": "f"}),
            ),
        )
        .unwrap();
        apply(&mut core, &config("scripts", "replace", json!({"a": 1}))).unwrap();
        apply(
            &mut core,
            &update(json!({"campaign_id": "launch", "updates": {"description": "d"}})),
        )
        .unwrap();
        apply(&mut core, &features("add", &["x"])).unwrap();
        let mut replayed = start;
        for event in core.history().skip(1) {
            replayed.apply_event(event).unwrap();
        }
        assert_eq!(&replayed, core.state());
        assert_eq!(
            core.state().config[&SectionName::parse("ui_content").unwrap()],
            *json!({"hero": {"title": "Hi"}, "footer": "f"})
                .as_object()
                .unwrap()
        );
    }

    #[test]
    fn a_private_campaign_is_not_found_before_anything_else_and_only_the_owner_sets_visibility() {
        let mut core = new_core(10);
        core.join(&actor("editor"), &invited(Role::Editor), t(1), eid(9))
            .unwrap();
        let private =
            update(json!({"campaign_id": "launch", "updates": {"visibility": "private"}}));
        assert_eq!(
            core.apply(&private, Some(&caller("editor")), t(2), eid(2))
                .unwrap_err()
                .code,
            ErrorCode::Forbidden,
            "an editor cannot change who may see it"
        );
        assert!(core
            .apply(&private, Some(&caller("owner")), t(2), eid(2))
            .is_ok());
        let garbage = update(json!({"campaign_id": "launch", "updates": {}}));
        for (who, asker) in [("stranger", Some(caller("viewer"))), ("anonymous", None)] {
            // Not found even for a malformed write: its shape says nothing about the campaign.
            for write in [&garbage, &private] {
                let error = core.apply(write, asker.as_ref(), t(3), eid(3)).unwrap_err();
                assert_eq!(
                    error,
                    not_found(&CampaignId::parse("launch").unwrap()),
                    "{who}"
                );
            }
            assert!(core.visible_to(asker.as_ref()).is_err(), "{who}");
        }
        assert!(core.visible_to(Some(&caller("editor"))).is_ok());
        assert_eq!(
            core.version(),
            3,
            "the join and the change; nothing refused counted"
        );
    }

    #[test]
    fn the_owner_hands_the_campaign_over_to_a_member_and_stays_an_owner() {
        let mut core = new_core(10);
        core.join(&actor("bob"), &invited(Role::Editor), t(2), eid(2))
            .unwrap();
        core.join(&actor("carol"), &invited(Role::Owner), t(2), eid(3))
            .unwrap();
        let handover = |user: &str| {
            Write::Handover(
                serde_json::from_value(json!({"campaign_id": "launch", "user_id": user})).unwrap(),
            )
        };
        let member = |user: &str, role: Option<&str>| {
            Write::Member(
                serde_json::from_value(
                    json!({"campaign_id": "launch", "user_id": user, "role": role}),
                )
                .unwrap(),
            )
        };
        let code = |core: &mut CampaignCore, write: &Write, by: &str| {
            core.apply(write, Some(&caller(by)), t(4), eid(4))
                .map(|_| ())
                .map_err(|e| e.code)
        };
        // Invalid before forbidden: not a member, whoever asks.
        assert_eq!(
            code(&mut core, &handover("stranger"), "bob"),
            Err(ErrorCode::Invalid)
        );
        // Another owner (carol) or an editor cannot; nor can a granted owner.
        assert_eq!(
            code(&mut core, &handover("bob"), "carol"),
            Err(ErrorCode::Forbidden)
        );
        assert_eq!(
            code(&mut core, &handover("bob"), "bob"),
            Err(ErrorCode::Forbidden)
        );
        let granted = Caller {
            granted: Some(Role::Owner),
            key: None,
            ..caller("dave")
        };
        assert_eq!(
            core.apply(&handover("bob"), Some(&granted), t(4), eid(4))
                .map(|_| ())
                .map_err(|e| e.code),
            Err(ErrorCode::Forbidden)
        );
        // The owner can; bob owns it now, the old owner is an owner among the members.
        assert_eq!(code(&mut core, &handover("bob"), "owner"), Ok(()));
        let state = core.state();
        assert_eq!(state.owner().user_id.as_str(), "bob");
        assert_eq!(state.created_by.user_id.as_str(), "owner", "history stays");
        assert!(!state.members.contains_key(&actor("bob").user_id));
        assert_eq!(state.members[&actor("owner").user_id].role, Role::Owner);
        assert_eq!(core.role_for(Some(&caller("bob"))), Role::Owner);
        // The new owner's role is fixed; the old owner's can change now, by the new owner.
        assert_eq!(
            code(&mut core, &member("bob", Some("viewer")), "carol"),
            Err(ErrorCode::Invalid)
        );
        assert_eq!(code(&mut core, &member("owner", None), "bob"), Ok(()));
        assert_eq!(core.role_for(Some(&caller("owner"))), Role::Viewer);
        // Handing it to the owner changes nothing: the same request sent again by the previous
        // owner (after a reconnect) is acknowledged, not refused.
        let before = core.version();
        assert_eq!(code(&mut core, &handover("bob"), "bob"), Ok(()));
        assert_eq!(code(&mut core, &handover("bob"), "carol"), Ok(()));
        assert_eq!(core.version(), before);
    }

    #[test]
    fn removing_or_demoting_a_member_ends_older_invite_links_and_nobody_changes_their_own_role() {
        let mut core = new_core(10);
        let bob = actor("bob");
        core.join(&bob, &invited(Role::Editor), t(2), eid(2))
            .unwrap();
        core.join(&actor("carol"), &invited(Role::Owner), t(2), eid(3))
            .unwrap();
        let member = |user: &str, role: Option<&str>| {
            Write::Member(
                serde_json::from_value(
                    json!({"campaign_id": "launch", "user_id": user, "role": role}),
                )
                .unwrap(),
            )
        };
        assert_eq!(
            core.apply(
                &member("carol", Some("viewer")),
                Some(&caller("carol")),
                t(4),
                eid(4)
            )
            .unwrap_err()
            .code,
            ErrorCode::Invalid,
            "not your own role"
        );
        // A promotion leaves links alone; a removal ends those made before it.
        core.apply(
            &member("bob", Some("owner")),
            Some(&caller("carol")),
            t(5),
            eid(5),
        )
        .unwrap();
        assert!(core.record().invites_valid_from.is_none());
        core.apply(&member("bob", None), Some(&caller("carol")), t(6), eid(6))
            .unwrap();
        assert_eq!(core.record().invites_valid_from, Some(t(6)));
        let kept = &core.record().invites[&invited(Role::Viewer)];
        assert_eq!(
            kept.withdrawn_at,
            Some(t(6)),
            "older links are listed as withdrawn"
        );
        assert!(
            !core.record().field_versions.contains_key("members.bob"),
            "a removed member leaves no entry behind"
        );
        let old_link = keep_link(&mut core, Role::Editor, t(5));
        assert_eq!(
            core.join(&bob, &old_link, t(7), eid(7)).unwrap_err().code,
            ErrorCode::Invalid
        );
        let new_link = keep_link(&mut core, Role::Editor, t(6));
        assert!(core.join(&bob, &new_link, t(7), eid(7)).unwrap().is_some());
    }

    #[test]
    fn a_removed_section_leaves_no_entry_but_still_refuses_writes_from_before_it() {
        let mut core = new_core(10);
        apply(&mut core, &config("ui", "merge", json!({"a": 1}))).unwrap(); // v2
        apply(&mut core, &config("ui", "remove", json!({}))).unwrap(); // v3
        assert!(!core.record().field_versions.contains_key("config.ui"));
        assert_eq!(core.record().config_removed_at, Some(3));
        let from_before = Write::Config(
            serde_json::from_value(json!({"campaign_id": "launch", "section": "ui",
                "values": {"a": 2}, "base_version": 2}))
            .unwrap(),
        );
        let refused = core.apply(&from_before, Some(&caller("owner")), t(4), eid(4));
        assert_eq!(refused.unwrap_err().code, ErrorCode::Conflict);
        let after = from_before.clone().based_on(Some(3));
        assert!(core
            .apply(&after, Some(&caller("owner")), t(4), eid(4))
            .is_ok());
    }

    #[test]
    fn owners_make_list_and_withdraw_links_and_a_single_use_link_lets_one_person_in() {
        let mut core = new_core(10);
        core.record.invites.clear();
        let once = CreateInvite {
            max_uses: Some(1),
            ..CreateInvite::default()
        };
        let link = InviteId::parse("0b").unwrap();
        for (who, code) in [("viewer", ErrorCode::Forbidden)] {
            let refused = core.make_invite(Some(&caller(who)), &once, link.clone(), t(2), eid(2));
            assert_eq!(refused.unwrap_err().code, code, "{who}");
            assert_eq!(core.invites(Some(&caller(who))).unwrap_err().code, code);
        }
        // An owner only by a token's grant sees the links but makes none (they would not work).
        let granted = Caller {
            actor: actor("granted"),
            granted: Some(Role::Owner),
            key: None,
        };
        let refused = core.make_invite(Some(&granted), &once, link.clone(), t(2), eid(2));
        assert!(refused.unwrap_err().message.contains("grant is not enough"));
        assert!(core.invites(Some(&granted)).is_ok());
        let too_long = CreateInvite {
            expires_in_secs: Some(u64::MAX),
            ..CreateInvite::default()
        };
        let refused = core.make_invite(
            Some(&caller("owner")),
            &too_long,
            link.clone(),
            t(2),
            eid(2),
        );
        assert_eq!(
            refused.unwrap_err().code,
            ErrorCode::Invalid,
            "invalid before forbidden"
        );
        let made = core
            .make_invite(Some(&caller("owner")), &once, link.clone(), t(2), eid(2))
            .unwrap();
        assert_eq!(made.version, 2);
        assert!(matches!(made.change, Change::Invite { ref terms } if terms.max_uses == Some(1)));

        let bob = actor("bob");
        assert!(core.join(&bob, &link, t(3), eid(3)).unwrap().is_some());
        assert!(
            core.join(&bob, &link, t(4), eid(4)).unwrap().is_none(),
            "its user may come back"
        );
        let refused = core.join(&actor("cy"), &link, t(4), eid(4)).unwrap_err();
        assert!(
            refused.message.contains("used as many times"),
            "{}",
            refused.message
        );
        let listed = core.invites(Some(&caller("owner"))).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].uses[0].user_id, bob.user_id);
        assert_eq!(listed[0].made_by, actor("owner"));

        let open = InviteId::parse("0c").unwrap();
        core.make_invite(
            Some(&caller("owner")),
            &CreateInvite::default(),
            open.clone(),
            t(5),
            eid(5),
        )
        .unwrap();
        let withdrawn = core
            .withdraw_invite(Some(&caller("owner")), &open, t(6), eid(6))
            .unwrap()
            .expect("an event");
        assert_eq!(
            withdrawn.change,
            Change::InviteWithdrawn { id: open.clone() }
        );
        assert!(core
            .withdraw_invite(Some(&caller("owner")), &open, t(7), eid(7))
            .unwrap()
            .is_none());
        let unknown = InviteId::parse("ff").unwrap();
        let refused = core.withdraw_invite(Some(&caller("owner")), &unknown, t(7), eid(7));
        assert_eq!(refused.unwrap_err().code, ErrorCode::NotFound);
        let refused = core.join(&actor("cy"), &open, t(8), eid(8)).unwrap_err();
        assert!(refused.message.contains("withdrawn"), "{}", refused.message);
        assert_eq!(core.version(), 5, "made, joined, made, withdrawn");
    }

    #[test]
    fn roles_stored_before_members_were_state_become_members_on_load() {
        let core = new_core(10);
        let mut record = core.record().clone();
        record
            .legacy_members
            .insert(actor("old-editor").user_id, Role::Editor);
        let text = serde_json::to_string(&record).unwrap();
        assert!(!text.contains("old-editor"), "never written again");
        let mut stored: serde_json::Value = serde_json::from_str(&text).unwrap();
        stored["members"] = json!({"old-editor": "editor"});
        let record: CampaignRecord = serde_json::from_value(stored).unwrap();
        let core = CampaignCore::restore(record, vec![], 10);
        assert_eq!(
            core.role_of(Some(&actor("old-editor").user_id)),
            Role::Editor
        );
        assert_eq!(
            core.state().members[&actor("old-editor").user_id].display_name,
            "old-editor"
        );
    }

    #[test]
    fn viewers_and_anonymous_visitors_are_forbidden_editors_allowed() {
        let mut core = new_core(10);
        let write = update(json!({"campaign_id": "launch", "updates": {"title": "X"}}));
        let viewer = caller("viewer");
        assert_eq!(
            core.apply(&write, Some(&viewer), t(2), eid(2))
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
        assert_eq!(
            core.apply(&write, None, t(2), eid(2)).unwrap_err().code,
            ErrorCode::Forbidden
        );
        // Validation comes first: garbage from a viewer is invalid, not forbidden.
        let garbage = update(json!({"campaign_id": "launch", "updates": {}}));
        assert_eq!(
            core.apply(&garbage, Some(&viewer), t(2), eid(2))
                .unwrap_err()
                .code,
            ErrorCode::Invalid
        );

        // A credential's grant lets a viewer edit, for as long as it is presented.
        let granted = Caller {
            granted: Some(Role::Editor),
            key: None,
            ..viewer.clone()
        };
        assert!(core.apply(&write, Some(&granted), t(2), eid(2)).is_ok());
        assert_eq!(core.role_for(Some(&granted)), Role::Editor);
        assert_eq!(
            core.role_for(Some(&viewer)),
            Role::Viewer,
            "nothing was stored"
        );
        let owner_granted_less = Caller {
            granted: Some(Role::Viewer),
            key: None,
            ..caller("owner")
        };
        assert_eq!(
            core.role_for(Some(&owner_granted_less)),
            Role::Owner,
            "a grant never lowers a stored role"
        );

        let joined = core
            .join(&viewer.actor, &invited(Role::Editor), t(2), eid(2))
            .unwrap()
            .expect("a new member");
        assert_eq!(
            joined.change,
            Change::Member {
                member: viewer.actor.clone(),
                role: Some(Role::Editor),
                invite: Some(invited(Role::Editor)),
            }
        );
        assert_eq!(joined.changed_by, viewer.actor, "they joined themselves");
        assert!(
            core.join(&viewer.actor, &invited(Role::Viewer), t(2), eid(2))
                .unwrap()
                .is_none(),
            "never demotes"
        );
        let watcher = actor("watcher");
        assert!(
            core.join(&watcher, &invited(Role::Viewer), t(2), eid(2))
                .unwrap()
                .is_some(),
            "a viewer invite makes a member (of a private campaign, too)"
        );
        assert_eq!(core.state().members[&watcher.user_id].role, Role::Viewer);
        assert!(
            core.join(&actor("owner"), &invited(Role::Editor), t(2), eid(2))
                .unwrap()
                .is_none(),
            "owner stays owner"
        );
        for n in core.state().members.len()..MEMBERS_MAX {
            core.join(
                &actor(&format!("m{n}")),
                &invited(Role::Editor),
                t(2),
                eid(2),
            )
            .unwrap();
        }
        assert_eq!(
            core.join(&actor("one-more"), &invited(Role::Editor), t(2), eid(2))
                .map_err(|e| e.code),
            Err(ErrorCode::LimitExceeded),
            "members are bounded"
        );
        assert!(core.apply(&write, Some(&viewer), t(2), eid(2)).is_ok());
        assert_eq!(core.role_of(Some(&actor("owner").user_id)), Role::Owner);
    }

    #[test]
    fn base_version_conflicts_only_on_fields_changed_since() {
        let mut core = new_core(10);
        apply(
            &mut core,
            &update(json!({"campaign_id": "launch", "updates": {"title": "A"}})),
        )
        .unwrap(); // v2 title
        apply(&mut core, &config("ui_content", "merge", json!({"k": 1}))).unwrap(); // v3 config.ui_content

        // Based on v1: title changed at v2 → conflict; description untouched since → fine.
        let stale_title =
            update(json!({"campaign_id": "launch", "updates": {"title": "B"}, "base_version": 1}));
        let error = apply(&mut core, &stale_title).unwrap_err();
        assert_eq!(error.code, ErrorCode::Conflict);
        assert!(
            error.message.contains("title changed at version 2"),
            "{}",
            error.message
        );
        let fresh_field = update(
            json!({"campaign_id": "launch", "updates": {"description": "D"}, "base_version": 1}),
        );
        assert!(apply(&mut core, &fresh_field).is_ok()); // v4

        let stale_section = Write::Config(serde_json::from_value(json!({"campaign_id": "launch", "section": "ui_content", "values": {"k": 2}, "base_version": 2})).unwrap());
        assert_eq!(code(apply(&mut core, &stale_section)), ErrorCode::Conflict);
        let other_section = Write::Config(serde_json::from_value(json!({"campaign_id": "launch", "section": "scripts", "values": {"k": 2}, "base_version": 2})).unwrap());
        assert!(apply(&mut core, &other_section).is_ok());

        let future =
            update(json!({"campaign_id": "launch", "updates": {"title": "Z"}, "base_version": 99}));
        assert_eq!(code(apply(&mut core, &future)), ErrorCode::Invalid);
        let current = update(
            json!({"campaign_id": "launch", "updates": {"title": "Z"}, "base_version": core.version()}),
        );
        assert!(apply(&mut core, &current).is_ok());
    }

    fn based(write: Write, base: u64) -> Write {
        write.based_on(Some(base))
    }

    /// Each row: writes made one after another, all based on the version before the first;
    /// whether the last one lands or is refused with `conflict`.
    #[test]
    fn only_clashing_writes_conflict() {
        let rows: Vec<(&str, Vec<Write>, bool)> = vec![
            (
                "features of different names merge",
                vec![features("add", &["live_chat"]), features("add", &["polls"])],
                true,
            ),
            (
                "a remove of another name merges",
                vec![
                    features("add", &["live_chat"]),
                    features("remove", &["chat"]),
                ],
                true,
            ),
            (
                "adding a feature someone just removed clashes",
                vec![features("remove", &["chat"]), features("add", &["chat"])],
                false,
            ),
            (
                "set stays checked",
                vec![features("add", &["qa"]), features("set", &["polls"])],
                false,
            ),
            (
                "disjoint paths of one section merge",
                vec![
                    config("ui", "merge", json!({"hero": {"title": "A"}})),
                    config("ui", "merge", json!({"hero": {"image": "b.png"}})),
                ],
                true,
            ),
            (
                "the same path clashes",
                vec![
                    config("ui", "merge", json!({"hero": {"title": "A"}})),
                    config("ui", "merge", json!({"hero": {"title": "B"}})),
                ],
                false,
            ),
            (
                "deleting a parent clashes with a child",
                vec![
                    config("ui", "merge", json!({"hero": {"title": "A"}})),
                    config("ui", "merge", json!({"hero": null})),
                ],
                false,
            ),
            (
                "a replace clashes with any change to the section",
                vec![
                    config("ui", "merge", json!({"a": 1})),
                    config("ui", "replace", json!({"b": 2})),
                ],
                false,
            ),
            (
                "other fields merge",
                vec![
                    update(json!({"campaign_id": "launch", "updates": {"title": "T"}})),
                    update(json!({"campaign_id": "launch", "updates": {"status": "active"}})),
                ],
                true,
            ),
        ];
        for (what, writes, lands) in rows {
            let mut core = new_core(10);
            apply(&mut core, &features("add", &["chat"])).unwrap();
            apply(
                &mut core,
                &config("ui", "merge", json!({"hero": {"title": "0"}})),
            )
            .unwrap();
            let base = core.version();
            let (last, earlier) = writes.split_last().unwrap();
            for write in earlier {
                apply(&mut core, &based(write.clone(), base)).unwrap();
            }
            let outcome = apply(&mut core, &based(last.clone(), base));
            assert_eq!(outcome.is_ok(), lands, "{what}: {outcome:?}");
            if !lands {
                assert_eq!(code(outcome), ErrorCode::Conflict, "{what}");
            }
        }
    }

    #[test]
    fn a_clash_older_than_the_history_is_refused_not_guessed() {
        let mut core = new_core(2);
        apply(&mut core, &features("add", &["a"])).unwrap(); // v2
        for n in 0..3 {
            apply(
                &mut core,
                &update(json!({"campaign_id": "launch", "updates": {"title": format!("t{n}")}})),
            )
            .unwrap(); // v3..v5; history keeps v4, v5
        }
        let error = apply(&mut core, &based(features("add", &["b"]), 1)).unwrap_err();
        assert_eq!(error.code, ErrorCode::Conflict, "{}", error.message);
        assert!(apply(&mut core, &based(features("add", &["b"]), 3)).is_ok());
        // Base 0 predates every version: a section never written counts as made at creation,
        // which history no longer reaches — refused, not a panic.
        let new_section = based(config("new_section", "merge", json!({"a": 1})), 0);
        let error = apply(&mut core, &new_section).unwrap_err();
        assert_eq!(error.code, ErrorCode::Conflict, "{}", error.message);
    }

    fn text(field: &str, edit: serde_json::Value, base: u64, id: &str) -> Write {
        Write::Text(
            serde_json::from_value(json!({"campaign_id": "launch", "field": field, "edit": edit, "base_version": base, "edit_id": id}))
                .unwrap(),
        )
    }

    #[test]
    fn concurrent_text_edits_are_transformed_and_both_kept() {
        let mut core = new_core(10);
        let base = core.version(); // "Launch"
        apply(&mut core, &text("title", json!(["Big ", 6]), base, "a1")).unwrap();
        // Made on "Launch" too, without seeing "Big ": lands after it, moved over it.
        let Applied::Changed(event) =
            apply(&mut core, &text("title", json!([6, " day"]), base, "b1")).unwrap()
        else {
            panic!("a change")
        };
        assert_eq!(core.state().title, "Big Launch day");
        // The event carries the edit as it applies at its version.
        let Change::Text { edit, .. } = &event.change else {
            panic!("a text change")
        };
        assert_eq!(edit.to_string(), r#"[10," day"]"#);
        // Sent again after a reconnect: acknowledged, not applied twice.
        let again = apply(&mut core, &text("title", json!([6, " day"]), base, "b1")).unwrap();
        assert_eq!(
            again,
            Applied::Unchanged {
                version: event.version
            }
        );
        assert_eq!(core.state().title, "Big Launch day");
    }

    #[test]
    fn text_edits_are_refused_where_they_cannot_merge() {
        let mut core = new_core(10);
        let base = core.version();
        apply(
            &mut core,
            &update(json!({"campaign_id": "launch", "updates": {"title": "New"}})),
        )
        .unwrap();
        let rows = [
            (
                "replaced since its base",
                text("title", json!([6, "!"]), base, "x1"),
                ErrorCode::Conflict,
            ),
            (
                "made on another length",
                text("title", json!([2, "!"]), core.version(), "x2"),
                ErrorCode::Invalid,
            ),
            (
                "a result over the limit",
                text("title", json!([3, "x".repeat(200)]), core.version(), "x3"),
                ErrorCode::TooLarge,
            ),
            (
                "a base from the future",
                text("title", json!([3]), 99, "x4"),
                ErrorCode::Invalid,
            ),
        ];
        for (what, write, expected) in rows {
            assert_eq!(code(apply(&mut core, &write)), expected, "{what}");
        }
        let viewer = core.apply(
            &text("title", json!([3, "!"]), 1, "v1"),
            Some(&caller("stranger")),
            t(9),
            eid(9),
        );
        assert_eq!(
            code(viewer),
            ErrorCode::Forbidden,
            "authorized before anything else"
        );
    }

    #[test]
    fn history_window_and_snapshot_fallback() {
        let mut core = new_core(5);
        for i in 0..10 {
            apply(
                &mut core,
                &update(json!({"campaign_id": "launch", "updates": {"title": format!("T{i}")}})),
            )
            .unwrap();
        }
        assert_eq!(core.version(), 11);
        let versions: Vec<u64> = core.history().map(|e| e.version).collect();
        assert_eq!(versions, [7, 8, 9, 10, 11]);

        assert_eq!(
            core.resume(None),
            ResumePlan::Snapshot(SnapshotReason::Initial)
        );
        assert_eq!(
            core.resume(Some(12)),
            ResumePlan::Snapshot(SnapshotReason::Ahead)
        );
        assert_eq!(core.resume(Some(11)), ResumePlan::Events(vec![]));
        let ResumePlan::Events(missed) = core.resume(Some(8)) else {
            panic!()
        };
        assert_eq!(
            missed.iter().map(|e| e.version).collect::<Vec<_>>(),
            [9, 10, 11]
        );
        let ResumePlan::Events(missed) = core.resume(Some(6)) else {
            panic!()
        };
        assert_eq!(
            missed.iter().map(|e| e.version).collect::<Vec<_>>(),
            [7, 8, 9, 10, 11]
        );
        assert_eq!(
            core.resume(Some(5)),
            ResumePlan::Snapshot(SnapshotReason::HistoryTruncated)
        );
    }

    #[test]
    fn restore_keeps_only_a_contiguous_tail_ending_at_the_version() {
        let mut core = new_core(100);
        for i in 0..6 {
            apply(
                &mut core,
                &update(json!({"campaign_id": "launch", "updates": {"title": format!("T{i}")}})),
            )
            .unwrap();
        }
        let all: Vec<CampaignEvent> = core.history().cloned().collect();
        let restored = CampaignCore::restore(core.record().clone(), all.clone(), 3);
        assert_eq!(
            restored.history().map(|e| e.version).collect::<Vec<_>>(),
            [5, 6, 7]
        );

        let mut holey = all.clone();
        holey.remove(4); // version 5 missing
        let restored = CampaignCore::restore(core.record().clone(), holey, 100);
        assert_eq!(
            restored.history().map(|e| e.version).collect::<Vec<_>>(),
            [6, 7]
        );
        assert_eq!(
            restored.resume(Some(4)),
            ResumePlan::Snapshot(SnapshotReason::HistoryTruncated)
        );

        let restored = CampaignCore::restore(core.record().clone(), all[..5].to_vec(), 100);
        assert_eq!(
            restored.history().count(),
            0,
            "history not reaching the version is unusable"
        );
    }
}
