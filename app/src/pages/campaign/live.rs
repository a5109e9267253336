//! The campaign page's live model: the confirmed state from the server, the user's edits laid
//! over it until confirmed (optimistic), and what the page shows about both.

use leptos::prelude::*;
use serde_json::Value;

use crate::client::{Connection, Output};
use crate::model::{
    describe_change, describe_event, CampaignId, CampaignState, Presence, Role, Write,
};
use crate::protocol::campaign::{Resume, WriteAck};
use crate::protocol::{ClientRequest, ErrorBody};

/// How a notice names a write that was refused: "Your change to title and status".
fn describe_write(write: &Write) -> String {
    match write {
        Write::Update(w) => {
            let u = &w.updates;
            let fields: Vec<&str> = [
                u.title.is_some().then_some("title"),
                u.description.is_some().then_some("description"),
                u.status.is_some().then_some("status"),
            ]
            .into_iter()
            .flatten()
            .collect();
            format!("Your change to {}", fields.join(" and "))
        }
        Write::Feature(_) => "Your feature change".into(),
        Write::Config(w) => format!("Your change to config {}", w.section),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PendingEdit {
    pub local_id: u64,
    pub write: Write,
    /// Set when the server acknowledged it: the version that includes it.
    pub confirmed_at: Option<u64>,
}

/// One line of the event timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    pub key: String,
    /// `HH:MM:SS` (UTC).
    pub time: String,
    pub text: String,
    pub version: Option<u64>,
}

/// A visible message about something the server refused or changed under the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub key: u64,
    pub text: String,
}

/// Everything the campaign page shows, as signals.
#[derive(Clone, Copy)]
pub struct CampaignModel {
    pub id: StoredValue<CampaignId>,
    pub confirmed: RwSignal<CampaignState>,
    pub role: RwSignal<Role>,
    pub presence: RwSignal<Option<Presence>>,
    pub timeline: RwSignal<Vec<TimelineEntry>>,
    pub pending: RwSignal<Vec<PendingEdit>>,
    pub notices: RwSignal<Vec<Notice>>,
    /// Subscribed and receiving live events.
    pub live: RwSignal<bool>,
    /// None while writable; otherwise why the campaign is read-only right now.
    pub read_only: RwSignal<Option<String>>,
    /// Bumped whenever a write is refused, so fields show the saved value again even when the
    /// shown state did not change (a refused write never changed it).
    pub refusals: RwSignal<u64>,
    next_key: StoredValue<u64>,
    /// What is shown: confirmed state with pending edits laid over it.
    pub shown: Memo<CampaignState>,
}

const TIMELINE_LEN: usize = 50;

fn clock_time(ts: crate::model::Timestamp) -> String {
    ts.to_string().get(11..19).unwrap_or_default().to_owned()
}

impl CampaignModel {
    pub fn new(state: CampaignState, role: Role) -> Self {
        let confirmed = RwSignal::new(state.clone());
        let pending: RwSignal<Vec<PendingEdit>> = RwSignal::new(Vec::new());
        let shown = Memo::new(move |_| {
            let mut state = confirmed.get();
            pending.with(|edits| {
                // The server's rule: a write it would refuse shows as no change.
                for p in edits {
                    if let Ok(Some(change)) = p.write.effect(&state) {
                        let _ = state.apply_change(&change);
                    }
                }
            });
            state
        });
        CampaignModel {
            id: StoredValue::new(state.id.clone()),
            confirmed,
            role: RwSignal::new(role),
            presence: RwSignal::new(None),
            timeline: RwSignal::new(Vec::new()),
            pending,
            notices: RwSignal::new(Vec::new()),
            live: RwSignal::new(false),
            read_only: RwSignal::new(None),
            refusals: RwSignal::new(0),
            next_key: StoredValue::new(1),
            shown,
        }
    }

    fn key(&self) -> u64 {
        let key = self.next_key.get_value();
        self.next_key.set_value(key + 1);
        key
    }

    pub fn notice(&self, text: String) {
        let key = self.key();
        self.notices.update(|n| {
            n.push(Notice { key, text });
            if n.len() > 5 {
                n.remove(0);
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

    /// Drop pending edits the confirmed state now includes.
    fn settle(&self) {
        let version = self.confirmed.with_untracked(|s| s.version);
        self.pending
            .update(|p| p.retain(|e| e.confirmed_at.is_none_or(|v| v > version)));
    }

    /// Apply one output of the live connection for this campaign.
    pub fn handle(&self, output: &Output) {
        match output {
            Output::Subscribed(reply) => {
                self.role.set(reply.role);
                self.presence.set(Some(reply.presence.clone()));
                self.read_only.set(
                    (!reply.writable).then(|| {
                        "the campaign's store is unreachable; changes are paused".to_owned()
                    }),
                );
                if let Resume::Snapshot { campaign, .. } = &reply.resume {
                    if self.confirmed.with_untracked(|s| s.version) != campaign.version {
                        self.confirmed.set((**campaign).clone());
                    }
                }
                self.live.set(true);
                self.settle();
            }
            Output::State(event) => {
                let applied = self
                    .confirmed
                    .try_update(|s| s.apply_event(event).is_ok())
                    .unwrap_or(false);
                if applied {
                    self.log(
                        clock_time(event.changed_at),
                        describe_event(event),
                        Some(event.version),
                    );
                    self.settle();
                }
            }
            Output::Presence(change) => {
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
                self.confirmed.set(resync.campaign.clone());
                self.role.set(resync.role);
                self.notice(
                    "This page fell too far behind and was reloaded with the current state.".into(),
                );
                self.settle();
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
                self.notice(format!("Cannot follow this campaign: {}", error.message));
            }
            _ => {}
        }
    }

    /// Show `edit` at once and send it; roll it back visibly if the server refuses.
    pub fn submit(&self, connection: &Connection, write: Write) {
        let model = *self;
        let local_id = self.key();
        let base = self.confirmed.with_untracked(|s| s.version);
        let write = write.based_on(Some(base));
        let described = describe_write(&write);
        // The server's own checks: a write it would refuse is refused here, without a round trip.
        if let Err(error) = self.shown.with_untracked(|state| write.effect(state)) {
            self.refused(&described, &error);
            return;
        }
        self.pending.update(|p| {
            p.push(PendingEdit {
                local_id,
                write: write.clone(),
                confirmed_at: None,
            })
        });
        connection.request(
            ClientRequest::Write(write),
            move |result: Result<Value, ErrorBody>| match result.and_then(|v| {
                serde_json::from_value::<WriteAck>(v).map_err(|e| {
                    ErrorBody::new(crate::protocol::ErrorCode::Internal, e.to_string())
                })
            }) {
                Ok(ack) if ack.unchanged => {
                    model
                        .pending
                        .update(|p| p.retain(|e| e.local_id != local_id));
                }
                Ok(ack) => {
                    model.pending.update(|p| {
                        if let Some(e) = p.iter_mut().find(|e| e.local_id == local_id) {
                            e.confirmed_at = Some(ack.version);
                        }
                    });
                    model.settle();
                }
                Err(error) => {
                    model
                        .pending
                        .update(|p| p.retain(|e| e.local_id != local_id));
                    model.refused(&described, &error);
                }
            },
        );
    }

    /// Say why a write did not happen, and show the saved values again.
    fn refused(&self, described: &str, error: &ErrorBody) {
        self.notice(format!(
            "{described} was undone: {} ({})",
            error.message, error.code
        ));
        self.refusals.update(|n| *n += 1);
    }

    /// The user's role allows editing and the campaign is not read-only right now.
    pub fn can_edit(&self) -> bool {
        self.role.get().can_edit() && self.read_only.with(Option::is_none)
    }
}

/// Timeline text for a change, exposed for the page's initial entries.
pub fn initial_entry(state: &CampaignState) -> TimelineEntry {
    TimelineEntry {
        key: format!("{}-0", state.version),
        time: clock_time(state.updated_at),
        text: format!(
            "{} — version {}",
            if state.version == 1 {
                describe_change(&crate::model::Change::Created {
                    state: Box::new(state.clone()),
                })
            } else {
                format!("last changed by {}", state.updated_by.display_name)
            },
            state.version
        ),
        version: Some(state.version),
    }
}
