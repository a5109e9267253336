//! Short human descriptions of changes, for the event timeline.

use super::{CampaignEvent, Change, ConfigMode};

/// One line for the timeline: "set title to “Spring”", "added chat, polls".
pub fn describe_change(change: &Change) -> String {
    match change {
        Change::Created { .. } => "created the campaign".into(),
        Change::Fields { updates } => {
            let mut parts = Vec::new();
            if let Some(title) = &updates.title {
                parts.push(format!("set title to “{}”", ellipsize(title, 60)));
            }
            if updates.description.is_some() {
                parts.push("edited the description".into());
            }
            if let Some(status) = updates.status {
                parts.push(format!("set status to {status}"));
            }
            if let Some(visibility) = updates.visibility {
                parts.push(
                    match visibility {
                        super::Visibility::Private => "made the campaign private (members only)",
                        super::Visibility::Unlisted => {
                            "made the campaign unlisted (anyone with the link)"
                        }
                        super::Visibility::Public => "made the campaign public",
                    }
                    .into(),
                );
            }
            parts.join(", ")
        }
        Change::Features { added, removed } => {
            let list =
                |v: &[super::Feature]| v.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ");
            match (added.is_empty(), removed.is_empty()) {
                (false, true) => format!("added {}", list(added)),
                (true, false) => format!("removed {}", list(removed)),
                _ => format!("added {}; removed {}", list(added), list(removed)),
            }
        }
        Change::Config { section, mode, .. } => match mode {
            ConfigMode::Merge => format!("changed the {section} settings"),
            ConfigMode::Replace => format!("replaced the {section} settings"),
            ConfigMode::Remove => format!("removed the {section} settings"),
        },
        Change::Text { field, .. } => format!("edited the {field}"),
        Change::Member { member, role, .. } => match role {
            Some(role) => format!("made {} {}", member.display_name, role.with_article()),
            None => format!("removed {}", member.display_name),
        },
        Change::Handover { to, .. } => format!("handed the campaign over to {}", to.display_name),
        Change::Invite { terms } => format!(
            "made an invite link to join as {} ({})",
            terms.role.with_article(),
            match terms.max_uses {
                Some(1) => "one person".to_owned(),
                Some(n) => format!("up to {n} people"),
                None => "anyone with the link".to_owned(),
            }
        ),
        Change::InviteWithdrawn { .. } => "withdrew an invite link".to_owned(),
        Change::Revert {
            to_version,
            restored,
        } => {
            let fields: Vec<String> = restored
                .touched_fields()
                .iter()
                .map(|field| match field.strip_prefix("config.") {
                    Some(section) => format!("the {section} settings"),
                    None => format!("the {field}"),
                })
                .collect();
            format!(
                "restored {} as of version {to_version}",
                join_plainly(&fields)
            )
        }
    }
}

/// "Ada set title to “Spring”"
pub fn describe_event(event: &CampaignEvent) -> String {
    if let Change::Member { member, role, .. } = &event.change {
        if member.user_id == event.changed_by.user_id {
            return match role {
                Some(role) => format!(
                    "{} accepted an invite as {}",
                    member.display_name,
                    role.with_article()
                ),
                None => format!("{} left", member.display_name),
            };
        }
    }
    format!(
        "{} {}",
        event.changed_by.display_name,
        describe_change(&event.change)
    )
}

fn ellipsize(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

/// "a", "a and b", "a, b and c"
fn join_plainly(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}
