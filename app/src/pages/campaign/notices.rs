//! What the page says when something was not saved: next to the field it concerns, in plain
//! words, naming the value that was lost, with one click to try it again. Notices dismiss
//! themselves (see `CampaignModel::notice`).

use std::collections::BTreeMap;

use leptos::prelude::*;

use super::live::CampaignModel;
use crate::model::{CampaignState, FeatureOp, Write};
use crate::pages::erase::Erase;
use crate::protocol::campaign::Overruled;
use crate::protocol::{ErrorBody, ErrorCode};

/// Where a notice shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// At the top of the page: about the page as a whole.
    Page,
    /// Next to a field: `title`, `description`, `status`, `visibility`, `features`,
    /// `config.<section>`.
    Field(String),
}

impl Place {
    fn field(name: impl Into<String>) -> Self {
        Place::Field(name.into())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub key: u64,
    pub place: Place,
    pub text: String,
    /// A button label and the write it makes again.
    pub restore: Option<(String, Write)>,
}

/// `text` cut to `max` characters with an ellipsis.
pub fn ellipsize(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// What the person whose change was kept is told when someone else's change to the same thing
/// was refused: where (next to the field) and in which words.
/// `shown` names the member a `members.<user id>` change was about.
pub fn kept_notice(overruled: &Overruled, shown: &CampaignState) -> (Place, String) {
    let field = overruled.field.as_str();
    let (place, what) = if let Some(section) = field.strip_prefix("config.") {
        (Place::field(field), format!("the {section} settings"))
    } else if let Some(user) = field.strip_prefix("members.") {
        let name = shown
            .members
            .iter()
            .find(|(id, _)| id.as_str() == user)
            .map_or_else(|| "a member".to_owned(), |(_, m)| m.display_name.clone());
        (Place::field("members"), format!("{name}'s role"))
    } else if field == "owner" {
        (Place::field("members"), "who owns it".to_owned())
    } else if field == "visibility" {
        (Place::field(field), "who can see it".to_owned())
    } else {
        (Place::field(field), format!("the {field}"))
    };
    let who = &overruled.refused.display_name;
    (
        place,
        format!("{who} tried to change {what} too, but yours came first and stands."),
    )
}

/// Why the server did not save something, in words for a person (no codes, no versions).
pub fn plain_reason(error: &ErrorBody) -> String {
    match error.code {
        ErrorCode::Conflict => "someone else changed it at the same time".into(),
        ErrorCode::Forbidden | ErrorCode::Unauthorized => {
            "you can no longer edit this campaign".into()
        }
        ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::RateLimited => {
            "the server could not save it just now".into()
        }
        ErrorCode::NotFound => "this campaign no longer exists".into(),
        ErrorCode::Invalid | ErrorCode::TooLarge | ErrorCode::LimitExceeded => {
            error.message.clone()
        }
    }
}

/// Where a refused write's notice goes, what it says, and how to try again.
pub fn explain_refusal(
    write: &Write,
    error: &ErrorBody,
    shown: &CampaignState,
    changed_by: &BTreeMap<String, String>,
) -> (Place, String, Option<(String, Write)>) {
    let first = |field: &str| {
        changed_by
            .get(field)
            .cloned()
            .unwrap_or_else(|| "someone else".into())
    };
    let conflict = error.code == ErrorCode::Conflict;
    let (place, text) = match write {
        Write::Update(w) => {
            let u = &w.updates;
            if u.visibility.is_some() {
                let why = if conflict {
                    format!("{} changed it first", first("visibility"))
                } else {
                    plain_reason(error)
                };
                (
                    Place::field("visibility"),
                    format!("Who can see the campaign was not changed: {why}."),
                )
            } else if let Some(status) = u.status {
                let why = if conflict {
                    format!("{} set it to “{}” first", first("status"), shown.status)
                } else {
                    plain_reason(error)
                };
                (
                    Place::field("status"),
                    format!("Your status “{status}” was not saved: {why}."),
                )
            } else if let Some(title) = &u.title {
                let why = if conflict {
                    format!("{} changed it first", first("title"))
                } else {
                    plain_reason(error)
                };
                (
                    Place::field("title"),
                    format!(
                        "Your title “{}” was not saved: {why}.",
                        ellipsize(title, 60)
                    ),
                )
            } else {
                let why = if conflict {
                    format!("{} changed it first", first("description"))
                } else {
                    plain_reason(error)
                };
                (
                    Place::field("description"),
                    format!("Your description was not saved: {why}."),
                )
            }
        }
        Write::Feature(w) => {
            let names = w
                .features
                .iter()
                .map(|f| format!("“{f}”"))
                .collect::<Vec<_>>()
                .join(", ");
            let why = if conflict {
                format!("{} changed it first", first("features"))
            } else {
                plain_reason(error)
            };
            let text = match w.op {
                FeatureOp::Add => format!("{names} was not added: {why}."),
                FeatureOp::Remove => format!("{names} was not removed: {why}."),
                FeatureOp::Set => format!("Your feature list was not saved: {why}."),
            };
            (Place::field("features"), text)
        }
        Write::Config(w) => {
            let key = format!("config.{}", w.section);
            let why = if conflict {
                format!("{} changed the same settings first", first(&key))
            } else {
                plain_reason(error)
            };
            (
                Place::Field(key),
                format!("Your change to {} was not saved: {why}.", w.section),
            )
        }
        Write::Member(w) => {
            let name = shown
                .members
                .get(&w.user_id)
                .map_or_else(|| w.user_id.to_string(), |m| m.display_name.clone());
            let what = match w.role {
                Some(role) => format!("Making {name} {}", role.with_article()),
                None => format!("Removing {name}"),
            };
            let why = if conflict {
                format!(
                    "{} changed their role first",
                    first(&format!("members.{}", w.user_id))
                )
            } else {
                plain_reason(error)
            };
            (
                Place::field("members"),
                format!("{what} did not work: {why}."),
            )
        }
        Write::Handover(w) => {
            let name = shown
                .members
                .get(&w.user_id)
                .map_or_else(|| w.user_id.to_string(), |m| m.display_name.clone());
            let why = if conflict {
                format!(
                    "{} changed their role or who owns the campaign first",
                    first(&format!("members.{}", w.user_id))
                )
            } else {
                plain_reason(error)
            };
            (
                Place::field("members"),
                format!("Handing the campaign over to {name} did not work: {why}."),
            )
        }
        // The page sends reverts over HTTP from the history panel, which says itself.
        Write::Revert(w) => (
            Place::field("history"),
            format!(
                "Restoring version {} did not work: {}.",
                w.request.to_version,
                plain_reason(error)
            ),
        ),
        Write::Text(w) => (
            Place::field(w.field.as_str()),
            format!(
                "Your typing in the {} was not saved: {}.",
                w.field,
                plain_reason(error)
            ),
        ),
    };
    let restore = match error.code {
        ErrorCode::Conflict => Some("Use mine"),
        ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::RateLimited => Some("Try again"),
        _ => None,
    }
    .filter(|_| !matches!(write, Write::Text(_)))
    .map(|label| (label.to_owned(), write.clone().based_on(None)));
    (place, text, restore)
}

/// The notices for one place.
#[component]
pub fn Notices(model: CampaignModel, place: Place) -> impl IntoView {
    let here = {
        let place = place.clone();
        move || {
            model
                .notices
                .get()
                .into_iter()
                .filter(|n| n.place == place)
                .collect::<Vec<_>>()
        }
    };
    let class = match place {
        Place::Page => "notices page-notices",
        Place::Field(_) => "notices field-notices",
    };
    view! {
        <div class=class role="status" aria-live="polite">
            {(place == Place::Page).then(|| move || {
                model.read_only.get().map(|reason| view! {
                    <p class="notice read-only">"Changes are paused: " {reason}</p>
                })
            })}
            <For each=here key=|n| n.key let:notice>
                <p class="notice">
                    <span>{notice.text.clone()}</span>
                    {notice.restore.clone().map(|(label, write)| {
                        let key = notice.key;
                        view! {
                            <button
                                class="button small notice-restore"
                                on:click=move |_| {
                                    model.dismiss(key);
                                    model.submit(write.clone());
                                }
                            >
                                {label}
                            </button>
                        }
                    })}
                    <button
                        class="notice-close"
                        aria-label="Dismiss"
                        on:click={
                            let key = notice.key;
                            move |_| model.dismiss(key)
                        }
                    >
                        "×"
                    </button>
                </p>
            </For>
        </div>
    }
    .erase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Actor, CampaignId, CampaignStatus, Timestamp, UserId};
    use serde_json::json;

    #[test]
    fn the_person_whose_change_was_kept_is_told_next_to_the_field() {
        let person = |name: &str| Actor {
            user_id: UserId::parse(&name.to_lowercase()).unwrap(),
            display_name: name.into(),
        };
        let cases = [
            (
                "title",
                Place::field("title"),
                "Bob tried to change the title too, but yours came first and stands.",
            ),
            (
                "config.ui_content",
                Place::field("config.ui_content"),
                "Bob tried to change the ui_content settings too, but yours came first and stands.",
            ),
            (
                "members.u2",
                Place::field("members"),
                "Bob tried to change Cy's role too, but yours came first and stands.",
            ),
            (
                "members.u9",
                Place::field("members"),
                "Bob tried to change a member's role too, but yours came first and stands.",
            ),
            (
                "visibility",
                Place::field("visibility"),
                "Bob tried to change who can see it too, but yours came first and stands.",
            ),
        ];
        let mut shown = state();
        shown.members.insert(
            UserId::parse("u2").unwrap(),
            crate::model::Member {
                display_name: "Cy".into(),
                role: crate::model::Role::Editor,
            },
        );
        for (field, place, text) in cases {
            let overruled = Overruled {
                campaign_id: CampaignId::parse("c").unwrap(),
                field: field.into(),
                kept: person("Ada"),
                version: 5,
                refused: person("Bob"),
            };
            assert_eq!(
                kept_notice(&overruled, &shown),
                (place, text.to_owned()),
                "{field}"
            );
        }
    }

    fn state() -> CampaignState {
        let actor = Actor {
            user_id: UserId::parse("u1").unwrap(),
            display_name: "Ada".into(),
        };
        CampaignState {
            id: CampaignId::parse("c").unwrap(),
            title: "Launch".into(),
            description: String::new(),
            status: CampaignStatus::Active,
            visibility: crate::model::Visibility::Private,
            features: Default::default(),
            config: Default::default(),
            handed_to: None,
            members: Default::default(),
            version: 4,
            created_at: Timestamp::from_unix_nanos(1),
            created_by: actor.clone(),
            updated_at: Timestamp::from_unix_nanos(1),
            updated_by: actor,
        }
    }

    /// Each row: a refused write and its error, and what the person reads — never a code or a
    /// version number.
    #[test]
    fn refusals_read_plainly_and_name_the_lost_value() {
        let by: BTreeMap<String, String> = [("status".to_owned(), "Bob".to_owned())].into();
        let w = |kind: &str, v: serde_json::Value| match kind {
            "update" => Write::Update(serde_json::from_value(v).unwrap()),
            "feature" => Write::Feature(serde_json::from_value(v).unwrap()),
            _ => Write::Config(serde_json::from_value(v).unwrap()),
        };
        let conflict = ErrorBody::new(
            ErrorCode::Conflict,
            "status changed at version 5, after base_version 4",
        );
        let rows = [
            (
                w(
                    "update",
                    json!({"campaign_id": "c", "updates": {"status": "paused"}, "base_version": 4}),
                ),
                conflict.clone(),
                "Your status “paused” was not saved: Bob set it to “active” first.",
                Some("Use mine"),
            ),
            (
                w(
                    "feature",
                    json!({"campaign_id": "c", "op": "add", "features": ["polls"]}),
                ),
                conflict.clone(),
                "“polls” was not added: someone else changed it first.",
                Some("Use mine"),
            ),
            (
                w(
                    "config",
                    json!({"campaign_id": "c", "section": "ui", "values": {"a": 1}}),
                ),
                ErrorBody::new(ErrorCode::Unavailable, "store down"),
                "Your change to ui was not saved: the server could not save it just now.",
                Some("Try again"),
            ),
            (
                w(
                    "update",
                    json!({"campaign_id": "c", "updates": {"title": "x"}}),
                ),
                ErrorBody::new(ErrorCode::Forbidden, "a viewer can watch"),
                "Your title “x” was not saved: you can no longer edit this campaign.",
                None,
            ),
        ];
        for (write, error, text, label) in rows {
            let (_, said, restore) = explain_refusal(&write, &error, &state(), &by);
            assert_eq!(said, text);
            assert!(
                !said.contains("version") && !said.contains("conflict"),
                "{said}"
            );
            assert_eq!(restore.as_ref().map(|(l, _)| l.as_str()), label);
            if let Some((_, again)) = restore {
                assert_eq!(again.base_version(), None, "tried again on a fresh base");
            }
        }
    }
}
