//! The campaign's history panel: who changed what and when, grouped by person and minute; each
//! entry opens to what it changed; any version can be looked at as it was (read only, clearly
//! marked) and put back — whole, or one field — after a confirmation that shows what will change.
//!
//! Everything comes over HTTP (`/api/campaigns/{id}/history`, `/diff`, `/versions/{v}`,
//! `/revert`), read when the panel is opened and again shortly after the campaign changes while
//! it is open. A restore is an ordinary write: everyone following sees it as a new version.

use leptos::prelude::*;

use super::live::CampaignModel;
use crate::client::SharedIo;
use crate::data::decode_response;
use crate::model::{CampaignState, ContentField, RevertCampaign};
use crate::pages::erase::Erase;
use crate::protocol::campaign::WriteAck;
use crate::protocol::history::{FieldDiff, HistoryEntry, HistoryPage, TextPieceKind, VersionDiff};
use crate::protocol::ErrorCode;

/// The version the Activity list asked the panel to show (its link sets it).
#[derive(Clone, Copy)]
pub struct HistoryFocus(pub RwSignal<Option<u64>>);

/// A restore waiting for the person to confirm it: what it would change, seen at `base`.
#[derive(Clone)]
struct PendingRestore {
    to_version: u64,
    fields: Vec<ContentField>,
    base: u64,
    changes: Vec<FieldDiff>,
}

/// Why something the panel asked for did not happen, in plain words.
fn plain_failure(what: &str, error: &crate::protocol::ErrorBody) -> String {
    let why = match error.code {
        ErrorCode::NotFound => "that version is no longer kept",
        ErrorCode::Forbidden => "you can look at the history but not restore it",
        ErrorCode::RateLimited => "too many requests just now; try again in a moment",
        ErrorCode::LimitExceeded => "the campaign would have more settings sections than allowed",
        _ => "the server could not do it just now; try again in a moment",
    };
    format!("Could not {what}: {why}.")
}

/// A field's name in plain words.
fn field_label(field: &str) -> String {
    match field {
        "title" => "Title".into(),
        "description" => "Description".into(),
        "status" => "Status".into(),
        "visibility" => "Who can see it".into(),
        "features" => "Features".into(),
        other => match other.strip_prefix("config.") {
            Some(section) => format!("{section} settings"),
            None => other.replace('.', " "),
        },
    }
}

/// A value as a short line of text.
fn shown(value: &Option<serde_json::Value>) -> String {
    match value {
        None => "(none)".into(),
        Some(serde_json::Value::String(text)) if text.is_empty() => "(empty)".into(),
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(serde_json::Value::Array(items)) if items.is_empty() => "(none)".into(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

/// Each setting of a section as `path › to › leaf` and its value.
fn leaves(
    value: &serde_json::Value,
    path: &str,
    out: &mut std::collections::BTreeMap<String, String>,
) {
    match value {
        serde_json::Value::Object(fields) if !fields.is_empty() => {
            for (key, inner) in fields {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path} › {key}")
                };
                leaves(inner, &path, out);
            }
        }
        other => {
            out.insert(path.to_owned(), shown(&Some(other.clone())));
        }
    }
}

/// The settings of a section that differ, as (path, before, after).
fn settings_changes(change: &FieldDiff) -> Vec<(String, String, String)> {
    let flat = |value: &Option<serde_json::Value>| {
        let mut out = std::collections::BTreeMap::new();
        if let Some(value) = value {
            leaves(value, "", &mut out);
        }
        out
    };
    let (before, after) = (flat(&change.before), flat(&change.after));
    let paths: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    paths
        .into_iter()
        .filter(|path| before.get(*path) != after.get(*path))
        .map(|path| {
            let value = |side: &std::collections::BTreeMap<String, String>| {
                side.get(path).cloned().unwrap_or_else(|| "(none)".into())
            };
            (path.clone(), value(&before), value(&after))
        })
        .collect()
}

/// "2026-11-27 11:08" (UTC) of an RFC 3339 time.
fn minute(at: &crate::model::Timestamp) -> String {
    let text = at.to_string();
    format!(
        "{} {}",
        text.get(..10).unwrap_or_default(),
        text.get(11..16).unwrap_or_default()
    )
}

/// Entries grouped by consecutive runs of one person within one minute.
fn grouped(entries: &[HistoryEntry]) -> Vec<(String, String, Vec<HistoryEntry>)> {
    let mut groups: Vec<(String, String, Vec<HistoryEntry>)> = Vec::new();
    for entry in entries {
        let (who, when) = (
            entry.changed_by.display_name.clone(),
            minute(&entry.changed_at),
        );
        match groups.last_mut() {
            Some((w, m, list)) if *w == who && *m == when => list.push(entry.clone()),
            _ => groups.push((who, when, vec![entry.clone()])),
        }
    }
    groups
}

#[component]
fn DiffView(changes: Vec<FieldDiff>) -> impl IntoView {
    changes
        .into_iter()
        .map(|change| {
            let body = match &change.text {
                Some(pieces) => pieces
                    .iter()
                    .map(|piece| match piece.kind {
                        TextPieceKind::Kept => view! { <span>{piece.text.clone()}</span> }.erase(),
                        TextPieceKind::Removed => view! { <del>{piece.text.clone()}</del> }.erase(),
                        TextPieceKind::Added => view! { <ins>{piece.text.clone()}</ins> }.erase(),
                    })
                    .collect_view()
                    .erase(),
                None if change.field.starts_with("config.") => settings_changes(&change)
                    .into_iter()
                    .map(|(path, before, after)| {
                        view! {
                            <span class="setting-change">
                                <span class="setting-path">{path}": "</span>
                                <del>{before}</del>" → "<ins>{after}</ins>
                            </span>
                        }
                    })
                    .collect_view()
                    .erase(),
                None => view! {
                    <del>{shown(&change.before)}</del>" → "<ins>{shown(&change.after)}</ins>
                }
                .erase(),
            };
            view! {
                <div class="diff-field" data-field=change.field.clone()>
                    <span class="diff-name">{field_label(&change.field)}": "</span>
                    <span class="diff-body">{body}</span>
                </div>
            }
        })
        .collect_view()
}

#[component]
pub fn HistoryPanel(model: CampaignModel, focus: HistoryFocus) -> impl IntoView {
    let io = use_context::<SharedIo>();
    let open = RwSignal::new(false);
    let entries = RwSignal::new(Vec::<HistoryEntry>::new());
    let older = RwSignal::new(None::<u64>);
    let expanded = RwSignal::new(std::collections::BTreeMap::<u64, Vec<FieldDiff>>::new());
    let preview = RwSignal::new(None::<CampaignState>);
    let pending = RwSignal::new(None::<PendingRestore>);
    let problem = RwSignal::new(None::<String>);
    // Older pages were added below: a refresh would take them away from the reader.
    let reading_older = RwSignal::new(false);
    let id = model.id.get_value();

    let get = {
        let io = io.clone();
        move |method: &'static str,
              path: String,
              body: Option<String>,
              done: Box<dyn Fn(u16, String)>| {
            let Some(io) = io.clone() else { return };
            let io = (*io).clone();
            leptos::task::spawn_local(async move {
                match io.http(method, &path, body).await {
                    Ok((status, body)) => done(status, body),
                    Err(_) => problem.set(Some(
                        "The server cannot be reached; try again in a moment.".into(),
                    )),
                }
            });
        }
    };
    // Only the answer to the latest read of the list is shown.
    let reads = StoredValue::new(0u64);
    let load = {
        let (get, id) = (get.clone(), id.clone());
        move |before: Option<u64>, append: bool| {
            reads.update_value(|n| *n += 1);
            let this_read = reads.get_value();
            let mut path = format!("/api/campaigns/{id}/history?limit=30");
            if let Some(before) = before {
                path.push_str(&format!("&before={before}"));
            }
            get(
                "GET",
                path,
                None,
                Box::new(move |status, body| {
                    if reads.get_value() != this_read {
                        return;
                    }
                    match decode_response::<HistoryPage>(status, &body) {
                        Ok(page) => {
                            problem.set(None);
                            older.set(page.next_before);
                            reading_older.set(append);
                            entries.update(|list| {
                                if !append {
                                    list.clear();
                                }
                                list.extend(page.entries);
                            });
                        }
                        Err(error) => problem.set(Some(plain_failure("read the history", &error))),
                    }
                }),
            );
        }
    };
    // Opened, or asked to show a version from the Activity list.
    Effect::new({
        let load = load.clone();
        move |_| {
            if let Some(version) = focus.0.get() {
                open.set(true);
                load(Some(version + 1), false);
            } else if open.get() {
                load(None, false);
            }
        }
    });
    // The campaign changed while the panel shows the newest entries: read them again once
    // changes pause for a moment (a burst of typing is one read, not one per change).
    let changes_seen = StoredValue::new(0u64);
    Effect::new({
        let (load, io) = (load.clone(), io.clone());
        move |seen: Option<u64>| {
            let version = model.confirmed.with(|c| c.version);
            let at_newest = open.get_untracked()
                && focus.0.get_untracked().is_none()
                && !reading_older.get_untracked();
            if seen.is_some_and(|seen| seen != version) && at_newest {
                changes_seen.update_value(|n| *n += 1);
                let this_change = changes_seen.get_value();
                if let Some(io) = io.clone() {
                    let load = load.clone();
                    io.set_timeout(
                        800,
                        Box::new(move || {
                            if changes_seen.get_value() == this_change {
                                load(None, false);
                            }
                        }),
                    );
                }
            }
            version
        }
    });

    let expand = {
        let (get, id) = (get.clone(), id.clone());
        move |version: u64| {
            if expanded.with(|e| e.contains_key(&version)) {
                expanded.update(|e| drop(e.remove(&version)));
                return;
            }
            let path = format!(
                "/api/campaigns/{id}/diff?from={}&to={version}",
                version.saturating_sub(1).max(1)
            );
            get(
                "GET",
                path,
                None,
                Box::new(
                    move |status, body| match decode_response::<VersionDiff>(status, &body) {
                        Ok(diff) => expanded.update(|e| drop(e.insert(version, diff.fields))),
                        Err(error) => problem.set(Some(plain_failure("show the changes", &error))),
                    },
                ),
            );
        }
    };
    let view_version = {
        let (get, id) = (get.clone(), id.clone());
        move |version: u64| {
            let path = format!("/api/campaigns/{id}/versions/{version}");
            get(
                "GET",
                path,
                None,
                Box::new(move |status, body| {
                    match decode_response::<CampaignState>(status, &body) {
                        Ok(state) => preview.set(Some(state)),
                        Err(error) => problem.set(Some(plain_failure("show that version", &error))),
                    }
                }),
            );
        }
    };
    // Ask what a restore would change now, and wait for the person to confirm.
    let propose = {
        let (get, id) = (get.clone(), id.clone());
        move |to_version: u64, fields: Vec<ContentField>| {
            let base = model.confirmed.with_untracked(|c| c.version);
            let path = format!("/api/campaigns/{id}/diff?from={base}&to={to_version}");
            get(
                "GET",
                path,
                None,
                Box::new(
                    move |status, body| match decode_response::<VersionDiff>(status, &body) {
                        Ok(diff) => {
                            let wanted = |name: &str| {
                                name != "visibility"
                                    && (fields.is_empty()
                                        || fields.iter().any(|f| f.to_string() == name))
                            };
                            let changes = diff
                                .fields
                                .into_iter()
                                .filter(|f| wanted(&f.field))
                                .collect();
                            problem.set(None);
                            pending.set(Some(PendingRestore {
                                to_version,
                                fields: fields.clone(),
                                base,
                                changes,
                            }));
                        }
                        Err(error) => {
                            problem.set(Some(plain_failure("prepare the restore", &error)))
                        }
                    },
                ),
            );
        }
    };
    let confirm = {
        let (get, id) = (get.clone(), id.clone());
        move || {
            let Some(restore) = pending.get_untracked() else {
                return;
            };
            let request = RevertCampaign {
                campaign_id: id.clone(),
                to_version: restore.to_version,
                fields: restore.fields.clone(),
                base_version: Some(restore.base),
            };
            let body = serde_json::to_string(&request).expect("a revert serializes");
            get(
                "POST",
                format!("/api/campaigns/{id}/revert"),
                Some(body),
                Box::new(
                    move |status, body| match decode_response::<WriteAck>(status, &body) {
                        Ok(_) => {
                            pending.set(None);
                            preview.set(None);
                        }
                        Err(error) if error.code == ErrorCode::Conflict => {
                            pending.set(None);
                            problem.set(Some("Someone changed this campaign while you were looking. Check what a restore would change again.".into()));
                        }
                        Err(error) => problem.set(Some(plain_failure("restore", &error))),
                    },
                ),
            );
        }
    };

    let entry_view = {
        let (expand, view_version, propose) =
            (expand.clone(), view_version.clone(), propose.clone());
        move |entry: HistoryEntry| {
            let version = entry.version;
            let (expand, view_version, propose) =
                (expand.clone(), view_version.clone(), propose.clone());
            let restore_field = propose.clone();
            let focused = move || focus.0.get() == Some(version);
            let content: Vec<ContentField> = entry
                .fields
                .iter()
                .filter_map(|f| ContentField::parse(f).ok())
                .collect();
            let restorable =
                !content.is_empty() || matches!(entry.change, crate::model::Change::Created { .. });
            view! {
                <li class="history-entry" class:focused=focused id=format!("version-{version}") data-version=version>
                    <span class="summary">{entry.summary.clone()}</span>
                    <span class="version-number">" · version "{version}</span>
                    <div class="entry-actions">
                        <button class="link-button" aria-expanded=move || expanded.with(|e| e.contains_key(&version)).to_string()
                            on:click=move |_| expand(version)>
                            {move || if expanded.with(|e| e.contains_key(&version)) { "Hide changes" } else { "Show changes" }}
                        </button>
                        <button class="link-button" on:click=move |_| view_version(version)>"View this version"</button>
                        <Show when=move || model.can_edit() && restorable>
                            <button class="link-button restore-version" on:click={
                                let propose = propose.clone();
                                move |_| propose(version, Vec::new())
                            }>"Restore this version"</button>
                        </Show>
                    </div>
                    {move || expanded.with(|e| e.get(&version).cloned()).map(|changes| {
                        let restore_field = restore_field.clone();
                        let buttons = changes.iter().filter_map(|c| ContentField::parse(&c.field).ok()).map(|field| {
                            let label = format!("Restore just the {} as it was here", field_label(&field.to_string()).to_lowercase());
                            let restore_field = restore_field.clone();
                            view! {
                                <Show when=move || model.can_edit()>
                                    <button class="link-button restore-field" on:click={
                                        let (field, restore_field) = (field.clone(), restore_field.clone());
                                        move |_| restore_field(version, vec![field.clone()])
                                    }>{label.clone()}</button>
                                </Show>
                            }
                        }).collect_view();
                        view! { <div class="entry-diff"><DiffView changes/>{buttons}</div> }
                    })}
                </li>
            }
            .erase()
        }
    };

    view! {
        <section class="panel history" id="history" aria-labelledby="history-heading">
            <h2 id="history-heading">"History"</h2>
            <Show when=move || !open.get()>
                <button class="button small" on:click=move |_| open.set(true)>"Show history"</button>
            </Show>
            {move || problem.get().map(|p| view! { <p class="notice hold" role="status">{p}</p> })}
            {move || pending.get().map(|restore| {
                let confirm = confirm.clone();
                let what = if restore.fields.is_empty() {
                    format!("Restore version {}?", restore.to_version)
                } else {
                    format!("Restore the {} as of version {}?", field_label(&restore.fields[0].to_string()).to_lowercase(), restore.to_version)
                };
                let nothing = restore.changes.is_empty();
                view! {
                    <div class="restore-confirm" role="alertdialog" aria-labelledby="restore-question">
                        <p id="restore-question"><strong>{what}</strong></p>
                        {if nothing {
                            view! { <p>"Nothing would change: the campaign already matches that version."</p> }.erase()
                        } else {
                            view! { <p>"This will change, for everyone:"</p><DiffView changes=restore.changes.clone()/> }.erase()
                        }}
                        <button class="button small confirm-restore" disabled=nothing on:click=move |_| confirm()>"Restore"</button>
                        " "
                        <button class="button small secondary" on:click=move |_| pending.set(None)>"Cancel"</button>
                    </div>
                }
                .erase()
            })}
            {move || preview.get().map(|state| view! {
                <div class="version-preview" role="region" aria-label=format!("Version {} (read only)", state.version)>
                    <p class="preview-banner">
                        "You are looking at version "{state.version}" from "{minute(&state.updated_at)}
                        " (UTC). It is read only; the campaign itself has not changed. "
                        <button class="link-button" on:click=move |_| preview.set(None)>"Back to now"</button>
                    </p>
                    <dl>
                        <dt>"Title"</dt><dd class="preview-title">{state.title.clone()}</dd>
                        <dt>"Status"</dt><dd>{state.status.as_str()}</dd>
                        <dt>"Description"</dt><dd class="preview-description">{state.description.clone()}</dd>
                        <dt>"Features"</dt><dd>{shown(&Some(serde_json::json!(state.features)))}</dd>
                        {state.config.iter().map(|(section, values)| view! {
                            <dt>{format!("{section} settings")}</dt>
                            <dd><pre class="preview-config" data-section=section.to_string()>{serde_json::to_string_pretty(values).unwrap_or_default()}</pre></dd>
                        }).collect_view()}
                    </dl>
                </div>
            }
            .erase())}
            <Show when=move || open.get()>
                <ol class="history-groups">
                    {
                        let entry_view = entry_view.clone();
                        move || grouped(&entries.get()).into_iter().map(|(who, when, list)| {
                            let entry_view = entry_view.clone();
                            view! {
                                <li class="history-group">
                                    <p class="history-who"><strong>{who}</strong>" · "<time>{when}</time></p>
                                    <ul>{list.into_iter().map(|e| entry_view(e)).collect_view()}</ul>
                                </li>
                            }
                            .erase()
                        }).collect_view()
                    }
                </ol>
                {
                    let load = load.clone();
                    move || older.get().map(|before| {
                        let load = load.clone();
                        view! { <button class="button small secondary" on:click=move |_| load(Some(before), true)>"Show older changes"</button> }
                    })
                }
                <Show when=move || focus.0.get().is_some()>
                    <button class="link-button" on:click=move |_| focus.0.set(None)>"Show the newest changes"</button>
                </Show>
            </Show>
        </section>
    }
    .erase()
}
