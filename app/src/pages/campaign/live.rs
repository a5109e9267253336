//! The campaign page's live model: the confirmed state from the server, the person's writes laid
//! over it until confirmed ([`EditQueue`]), the text they are typing ([`SharedText`]), and what
//! the page says about all of it. The rules live in those two state machines; this is the shell
//! that connects them to signals, the connection and timers.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use leptos::prelude::*;
use send_wrapper::SendWrapper;

use super::notices::{explain_refusal, kept_notice, Notice, Place};
use crate::client::edits::{EditNumber, EditQueue, Outgoing};
use crate::client::shared_text::SharedText;
use crate::client::{Connection, Output, ReplyPayload};
use crate::model::{
    describe_change, describe_event, CampaignId, CampaignState, CampaignStatus, Change, EditId,
    Feature, Presence, Role, TextEdit, TextField, Visibility, Write,
};
use crate::protocol::campaign::{CampaignRef, CampaignSnapshot, Resume, WriteAck};
use crate::protocol::{ClientRequest, ErrorBody, ErrorCode};

/// One line of the activity list.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    pub key: String,
    /// `HH:MM:SS` (UTC).
    pub time: String,
    pub text: String,
    pub version: Option<u64>,
}

/// Least time between two text edits of one field: edits flow while someone types, and a fast
/// typist stays well inside the write rate limit (two fields at once: ~17 writes/s of 20).
const TYPING_FLUSH_MS: u64 = 120;
/// How long "<name> is typing…" and their caret stay after their last edit arrived.
const TYPING_SHOWN_MS: u64 = 3_000;
/// How long a notice stays before it dismisses itself.
const NOTICE_MS: u64 = 12_000;
const TIMELINE_LEN: usize = 50;
/// How far back in the activity list a typing line is found and continued.
const TYPING_LINES_MERGED: usize = 6;

/// Puts someone else's edit on screen without disturbing the caret (the field component
/// registers one; nothing is registered while rendering on the server).
pub type ShowEdit = Rc<dyn Fn(&TextEdit, &str)>;

/// Everything the campaign page shows, as signals. `Copy`: every field is a handle.
#[derive(Clone, Copy)]
pub struct CampaignModel {
    pub id: StoredValue<CampaignId>,
    pub confirmed: RwSignal<CampaignState>,
    pub role: RwSignal<Role>,
    pub presence: RwSignal<Option<Presence>>,
    pub timeline: RwSignal<Vec<TimelineEntry>>,
    pub queue: RwSignal<EditQueue>,
    pub title: RwSignal<SharedText>,
    pub description: RwSignal<SharedText>,
    pub notices: RwSignal<Vec<Notice>>,
    /// Subscribed and receiving live events.
    pub live: RwSignal<bool>,
    /// None while writable; otherwise why the campaign is read-only right now.
    pub read_only: RwSignal<Option<String>>,
    /// Who else is typing into each text field (their edits arrived in the last few seconds),
    /// by field and display name, with the key of the timer that forgets them.
    pub typing: RwSignal<BTreeMap<(TextField, String), u64>>,
    /// Who last changed each field (`title`, `status`, `features`, `config.<section>`).
    pub changed_by: RwSignal<BTreeMap<String, String>>,
    /// Notified when an invite link was made, used or withdrawn (owners read the list again).
    pub invites_changed: Trigger,
    /// Who is signed in on this page (to know which decided conflicts are theirs).
    me: Option<crate::app::SignedInUser>,
    /// What is shown: the confirmed state with the writes not yet in it laid over.
    pub shown: Memo<CampaignState>,
    pub status: Memo<CampaignStatus>,
    pub visibility: Memo<Visibility>,
    pub features: Memo<Vec<Feature>>,
    next_key: StoredValue<u64>,
    connection: StoredValue<Option<Connection>>,
    edit_prefix: StoredValue<String>,
    show_edit: StoredValue<BTreeMap<TextField, SendWrapper<ShowEdit>>>,
    /// Fields with a timer set to send their typing.
    flushing: StoredValue<BTreeSet<TextField>>,
    /// When each field last sent an edit (`SharedIo::now_ms`).
    last_sent: StoredValue<BTreeMap<TextField, f64>>,
    /// Text edits acknowledged as changing nothing at a version this page has not reached yet.
    settling: StoredValue<Vec<(TextField, EditId, u64)>>,
}

fn clock_time(ts: crate::model::Timestamp) -> String {
    ts.to_string().get(11..19).unwrap_or_default().to_owned()
}

impl CampaignModel {
    pub fn new(state: CampaignState, role: Role, connection: Option<Connection>) -> Self {
        let confirmed = RwSignal::new(state.clone());
        let queue = RwSignal::new(EditQueue::default());
        let shown = Memo::new(move |_| queue.with(|q| confirmed.with(|c| q.overlay(c))));
        let edit_prefix = connection
            .as_ref()
            .map(|c| format!("{:08x}", (c.io().random() * f64::from(u32::MAX)) as u32))
            .unwrap_or_default();
        CampaignModel {
            id: StoredValue::new(state.id.clone()),
            confirmed,
            role: RwSignal::new(role),
            presence: RwSignal::new(None),
            timeline: RwSignal::new(vec![initial_entry(&state)]),
            queue,
            title: RwSignal::new(SharedText::new(TextField::Title, &state.title)),
            description: RwSignal::new(SharedText::new(TextField::Description, &state.description)),
            notices: RwSignal::new(Vec::new()),
            live: RwSignal::new(false),
            read_only: RwSignal::new(None),
            changed_by: RwSignal::new(BTreeMap::new()),
            invites_changed: Trigger::new(),
            me: use_context::<crate::app::SignedInUser>(),
            typing: RwSignal::new(BTreeMap::new()),
            shown,
            status: Memo::new(move |_| shown.with(|s| s.status)),
            visibility: Memo::new(move |_| shown.with(|s| s.visibility)),
            features: Memo::new(move |_| shown.with(|s| s.features.iter().cloned().collect())),
            next_key: StoredValue::new(1),
            connection: StoredValue::new(connection),
            edit_prefix: StoredValue::new(edit_prefix),
            show_edit: StoredValue::new(BTreeMap::new()),
            flushing: StoredValue::new(BTreeSet::new()),
            last_sent: StoredValue::new(BTreeMap::new()),
            settling: StoredValue::new(Vec::new()),
        }
    }

    pub fn text(&self, field: TextField) -> RwSignal<SharedText> {
        match field {
            TextField::Title => self.title,
            TextField::Description => self.description,
        }
    }

    fn key(&self) -> u64 {
        let key = self.next_key.get_value();
        self.next_key.set_value(key + 1);
        key
    }

    /// Show a notice at `place`; it dismisses itself after a while.
    pub fn notice(&self, place: Place, text: String, restore: Option<(String, Write)>) {
        let key = self.key();
        self.notices.update(|n| {
            n.retain(|x| x.place != place || x.restore.is_none() != restore.is_none());
            n.push(Notice {
                key,
                place,
                text,
                restore,
            });
            if n.len() > 8 {
                n.remove(0);
            }
        });
        let notices = self.notices;
        self.after(NOTICE_MS, move || {
            notices.update(|n| n.retain(|x| x.key != key));
        });
    }

    pub fn dismiss(&self, key: u64) {
        self.notices.update(|n| n.retain(|x| x.key != key));
    }

    fn after(&self, ms: u64, f: impl FnOnce() + 'static) {
        self.connection.with_value(|c| {
            if let Some(c) = c {
                c.io().set_timeout(ms, Box::new(f));
            }
        });
    }

    fn log(&self, time: String, text: String, version: Option<u64>) {
        let key = format!("{}-{}", version.unwrap_or(0), self.key());
        self.timeline.update(|t| {
            t.insert(
                0,
                TimelineEntry {
                    key,
                    time,
                    text,
                    version,
                },
            );
            t.truncate(TIMELINE_LEN);
        });
    }

    /// Apply one output of the live connection for this campaign.
    pub fn handle(&self, output: &Output) {
        match output {
            Output::Subscribed(reply) => {
                self.role.set(reply.role);
                self.presence.set(Some(reply.presence.clone()));
                self.read_only.set(
                    (!reply.writable)
                        .then(|| "the server cannot save right now; changes will wait".to_owned()),
                );
                if let Resume::Snapshot { campaign, .. } = &reply.resume {
                    if self.confirmed.with_untracked(|s| s.version) != campaign.version {
                        self.replace_state((**campaign).clone());
                    }
                }
                self.live.set(true);
                self.confirmed_moved();
            }
            Output::State(event) => {
                let applied = self
                    .confirmed
                    .try_update(|s| s.apply_event(event).is_ok())
                    .unwrap_or(false);
                if !applied {
                    return;
                }
                let by = event.changed_by.display_name.clone();
                self.changed_by.update(|m| {
                    for field in event.change.touched_fields() {
                        m.insert(field, by.clone());
                    }
                });
                let touched = event.change.touched_fields();
                for field in TextField::ALL {
                    if !touched.iter().any(|f| f == field.as_str()) {
                        continue;
                    }
                    let on_screen = self
                        .text(field)
                        .try_update(|t| t.received(&event.change, &by));
                    if let Some(Some(edit)) = on_screen {
                        self.show(field, &edit);
                        if matches!(event.change, Change::Text { .. }) {
                            self.typing_now(field, &by);
                        }
                    }
                }
                self.log_event(event);
                self.confirmed_moved();
                if matches!(
                    event.change,
                    Change::Member { .. } | Change::Handover { .. }
                ) {
                    self.refresh_role();
                }
                // Members joining, removed or demoted change what the links let in.
                if matches!(
                    event.change,
                    Change::Invite { .. } | Change::InviteWithdrawn { .. } | Change::Member { .. }
                ) {
                    self.invites_changed.notify();
                }
            }
            Output::Presence(change) => {
                let live = |p: &Presence| -> Vec<String> {
                    p.viewers
                        .iter()
                        .filter(|v| v.live)
                        .map(|v| v.display_name.clone())
                        .collect()
                };
                let before = self.presence.with_untracked(|p| p.as_ref().map(live));
                let after = live(&change.presence);
                if let Some(before) = before {
                    for name in after.iter().filter(|n| !before.contains(n)) {
                        self.log(String::new(), format!("{name} went live"), None);
                    }
                    for name in before.iter().filter(|n| !after.contains(n)) {
                        self.log(String::new(), format!("{name} stopped being live"), None);
                    }
                }
                self.presence.set(Some(change.presence.clone()));
                for person in &change.joined {
                    self.log(
                        String::new(),
                        format!("{} joined", person.display_name),
                        None,
                    );
                }
                for person in &change.left {
                    self.log(String::new(), format!("{} left", person.display_name), None);
                }
            }
            Output::Resync(resync) => {
                self.replace_state(resync.campaign.clone());
                self.role.set(resync.role);
                self.notice(
                    Place::Page,
                    "This page was away too long to catch up change by change, so it now shows the latest version.".into(),
                    None,
                );
                self.confirmed_moved();
            }
            Output::Overruled(overruled) => {
                let me = self
                    .me
                    .and_then(|me| me.0.get_untracked().flatten())
                    .map(|me| me.user_id);
                if me.as_ref() == Some(&overruled.kept.user_id) {
                    let (place, text) = self.shown.with_untracked(|s| kept_notice(&overruled, s));
                    self.notice(place, text, None);
                }
            }
            Output::Writable(status) => {
                self.read_only.set(if status.writable {
                    None
                } else {
                    Some(
                        status
                            .reason
                            .clone()
                            .unwrap_or_else(|| "changes are paused".into()),
                    )
                });
            }
            Output::SubscribeFailed { error, .. } => {
                self.live.set(false);
                let text = if error.code == ErrorCode::NotFound {
                    "You can no longer see this campaign: its owner made it members-only, or it \
                     was removed. Changes here are no longer shown."
                        .to_owned()
                } else {
                    format!("This page cannot follow the campaign: {}", error.message)
                };
                self.notice(Place::Page, text, None);
            }
            _ => {}
        }
    }

    /// `name`'s edit of `field` arrived: say they are typing there, and show their caret, until
    /// they pause.
    fn typing_now(&self, field: TextField, name: &str) {
        let key = self.key();
        let who = (field, name.to_owned());
        self.typing.update(|t| {
            t.insert(who.clone(), key);
        });
        let (typing, text) = (self.typing, self.text(field));
        self.after(TYPING_SHOWN_MS, move || {
            let paused = typing
                .try_update(|t| {
                    let paused = t.get(&who) == Some(&key);
                    if paused {
                        t.remove(&who);
                    }
                    paused
                })
                .unwrap_or(false);
            if paused {
                text.update(|t| t.forget_caret(&who.1));
            }
        });
    }

    /// Typing would be one activity line per keystroke batch: a person's edits of one field
    /// share a line while it is among the newest few, moved to the top as they go on.
    fn log_event(&self, event: &crate::model::CampaignEvent) {
        if let Change::Text { .. } = &event.change {
            let text = describe_event(event);
            let time = clock_time(event.changed_at);
            let merged = self.timeline.try_update(|t| {
                let recent = t
                    .iter()
                    .take(TYPING_LINES_MERGED)
                    .position(|e| e.text == text);
                recent.map(|at| {
                    let mut entry = t.remove(at);
                    entry.time = time.clone();
                    entry.version = Some(event.version);
                    t.insert(0, entry);
                })
            });
            if let Some(Some(())) = merged {
                return;
            }
        }
        self.log(
            clock_time(event.changed_at),
            describe_event(event),
            Some(event.version),
        );
    }

    fn replace_state(&self, state: CampaignState) {
        for field in TextField::ALL {
            let text = state.text(field).to_owned();
            let on_screen = self
                .text(field)
                .try_update(|t| t.replaced(&text, "the page reloaded the latest version"));
            if let Some(Some(edit)) = on_screen {
                self.show(field, &edit);
            }
        }
        self.confirmed.set(state);
    }

    /// The confirmed state moved: settle writes it includes, send what that unblocks.
    fn confirmed_moved(&self) {
        // Timers and replies may arrive after the page was left: then there is nothing to do.
        let Some(confirmed) = self.confirmed.try_get_untracked() else {
            return;
        };
        let out = self
            .queue
            .try_update(|q| q.confirmed(&confirmed))
            .unwrap_or_default();
        self.send(out);
        let version = confirmed.version;
        let settled: Vec<(TextField, EditId, u64)> = self.settling.with_value(|s| {
            s.iter()
                .filter(|(_, _, v)| *v <= version)
                .cloned()
                .collect()
        });
        if !settled.is_empty() {
            self.settling
                .update_value(|s| s.retain(|(_, _, v)| *v > version));
            for (field, edit_id, _) in settled {
                self.text(field).update(|t| t.settled_unchanged(&edit_id));
            }
        }
        for field in TextField::ALL {
            self.flush(field);
        }
    }

    /// Make a write: it shows at once and goes out when nothing it clashes with is on its way.
    pub fn submit(&self, write: Write) {
        let confirmed = self.confirmed.get_untracked();
        match self
            .queue
            .try_update(|q| q.submit(write.clone(), &confirmed))
        {
            Some(Ok((_, out))) => self.send(out),
            Some(Err(error)) => self.refused(&write, &error),
            None => {}
        }
    }

    fn send(&self, out: Vec<Outgoing>) {
        let Some(Some(connection)) = self.connection.try_get_value() else {
            return;
        };
        for Outgoing { number, write } in out {
            let model = *self;
            connection.request(ClientRequest::Write(write), move |result| {
                model.answered(number, result)
            });
        }
    }

    fn answered(&self, number: EditNumber, result: Result<ReplyPayload, ErrorBody>) {
        let Some(confirmed) = self.confirmed.try_get_untracked() else {
            return; // the page was left
        };
        match result.and_then(parse_ack) {
            Ok(ack) => {
                let out = self
                    .queue
                    .try_update(|q| q.accepted(number, ack.version, ack.unchanged, &confirmed))
                    .unwrap_or_default();
                self.send(out);
            }
            Err(error) => {
                let (lost, out) = self
                    .queue
                    .try_update(|q| q.refused(number, &confirmed))
                    .unwrap_or_default();
                if let Some(write) = lost {
                    self.refused(&write, &error);
                }
                self.send(out);
            }
        }
    }

    /// Say, next to the field, what was not saved and why, with a way to try again.
    fn refused(&self, write: &Write, error: &ErrorBody) {
        let (place, text, restore) = explain_refusal(
            write,
            error,
            &self.shown.get_untracked(),
            &self.changed_by.get_untracked(),
        );
        self.notice(place, text, restore);
    }

    /// The person typed: the field now shows `text`.
    pub fn typed(&self, field: TextField, text: &str) {
        self.text(field).update(|t| t.typed(text));
        self.flush(field);
    }

    /// Send what was typed in `field`, if the state machine says it may go now and the field has
    /// not sent within [`TYPING_FLUSH_MS`]; otherwise a timer sends it when that time is up. The
    /// first keystroke goes at once; a fast typist sends one edit per interval, whatever the
    /// round trip.
    fn flush(&self, field: TextField) {
        // Also runs from a timer, which may fire after the page was left.
        let Some(Some(connection)) = self.connection.try_get_value() else {
            return;
        };
        if self.flushing.with_value(|f| f.contains(&field)) {
            return; // a timer will
        }
        let now = connection.io().now_ms();
        let next = self
            .last_sent
            .with_value(|l| l.get(&field).copied())
            .unwrap_or(f64::MIN)
            + TYPING_FLUSH_MS as f64;
        if now < next {
            self.flushing.update_value(|f| {
                f.insert(field);
            });
            let model = *self;
            self.after((next - now).ceil() as u64, move || {
                model.flushing.update_value(|f| {
                    f.remove(&field);
                });
                model.flush(field);
            });
            return;
        }
        let version = self.confirmed.with_untracked(|s| s.version);
        let edit_id = EditId::parse(&format!("{}-{}", self.edit_prefix.get_value(), self.key()))
            .expect("hex and digits make a valid edit id");
        let campaign = self.id.get_value();
        let Some(Some(change)) = self
            .text(field)
            .try_update(|t| t.take_outgoing(&campaign, version, edit_id))
        else {
            return;
        };
        self.last_sent.update_value(|l| {
            l.insert(field, now);
        });
        let model = *self;
        let edit_id = change.edit_id.clone();
        connection.request(ClientRequest::Write(Write::Text(change)), move |result| {
            match result.and_then(parse_ack) {
                Ok(ack) if ack.unchanged => model.settle_later(field, edit_id, ack.version),
                Ok(_) => {} // it comes back in the confirmed stream
                Err(error) => {
                    let reason = crate::pages::campaign::notices::plain_reason(&error);
                    model.text(field).update(|t| t.refused(&edit_id, &reason));
                }
            }
        });
    }

    /// Someone's membership changed (perhaps this person's): ask the server for the role this
    /// page's person has now. A page that may no longer see the campaign learns it from its
    /// subscription ending.
    fn refresh_role(&self) {
        let Some(Some(connection)) = self.connection.try_get_value() else {
            return;
        };
        let model = *self;
        let request = ClientRequest::Snapshot(CampaignRef {
            campaign_id: self.id.get_value(),
        });
        connection.request(request, move |result| {
            if let Ok(snapshot) = result.and_then(|payload| payload.read::<CampaignSnapshot>()) {
                model.role.set(snapshot.role);
            }
        });
    }

    fn settle_later(&self, field: TextField, edit_id: EditId, version: u64) {
        self.settling
            .update_value(|s| s.push((field, edit_id, version)));
        self.confirmed_moved();
    }

    /// Keep the typed text of a field that diverged, or take the saved one.
    pub fn resolve(&self, field: TextField, keep_mine: bool) {
        if keep_mine {
            self.text(field).update(SharedText::keep_mine);
            self.flush(field);
        } else if let Some(edit) = self.text(field).try_update(SharedText::use_saved) {
            self.show(field, &edit);
        }
    }

    /// Register how `field` puts other people's edits on screen.
    pub fn on_show(&self, field: TextField, show: ShowEdit) {
        self.show_edit.update_value(|m| {
            m.insert(field, SendWrapper::new(show));
        });
    }

    fn show(&self, field: TextField, edit: &TextEdit) {
        let text = self.text(field).with_untracked(|t| t.text().to_owned());
        let show = self
            .show_edit
            .with_value(|m| m.get(&field).map(|s| (**s).clone()));
        if let Some(show) = show {
            show(edit, &text);
        }
    }

    /// Writes and typing not yet saved by the server.
    pub fn unsaved(&self) -> usize {
        self.queue.with(EditQueue::unsaved)
            + TextField::ALL
                .into_iter()
                .filter(|f| self.text(*f).with(SharedText::has_unsaved))
                .count()
    }

    /// The person's role allows editing and the campaign is not read-only right now.
    pub fn can_edit(&self) -> bool {
        self.role.get().can_edit() && self.read_only.with(Option::is_none)
    }
}

fn parse_ack(payload: ReplyPayload) -> Result<WriteAck, ErrorBody> {
    payload.read::<WriteAck>()
}

/// The activity list's first line for a page rendered at `state`.
pub fn initial_entry(state: &CampaignState) -> TimelineEntry {
    TimelineEntry {
        key: format!("{}-0", state.version),
        time: clock_time(state.updated_at),
        text: if state.version == 1 {
            format!(
                "{} {}",
                state.created_by.display_name,
                describe_change(&Change::Created {
                    state: Box::new(state.clone()),
                })
            )
        } else {
            format!("Last changed by {}", state.updated_by.display_name)
        },
        version: Some(state.version),
    }
}
