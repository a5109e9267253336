//! The config editor: one section at a time, as a form ([`ConfigForm`]) or as JSON; and the
//! settings read only ([`SettingsPreview`]), shown until the editor's code arrives (`later`).
//!
//! While nobody edits, the text follows the section live. Once the person starts typing, the
//! text is theirs: remote changes no longer replace it, and if the section changes underneath,
//! the editor says who changed it and lets them keep theirs or take the new one. Saving sends
//! only what they changed ([`merge_patch_between`] the section as it was when they began and
//! their text), based on the version they began at, so edits of different settings merge and
//! edits of the same setting are caught as a clash.

use leptos::prelude::*;
use serde_json::{Map, Value};

use super::config_form::{self, ConfigForm};
use super::live::CampaignModel;
use super::notices::{Notices, Place};
use crate::model::{merge_patch_between, ConfigChange, ConfigMode, SectionName, Write};
use crate::pages::erase::Erase;

/// The draft text of a section (`{}` when it does not exist yet).
fn pretty(values: Option<&Map<String, Value>>) -> String {
    config_form::pretty(values.unwrap_or(&Map::new()))
}

/// The section the editor opens on: the first there is, else `ui_content`.
fn first_section(model: &CampaignModel) -> String {
    model
        .shown
        .with_untracked(|s| s.config.keys().next().map(|k| k.to_string()))
        .unwrap_or_else(|| "ui_content".into())
}

/// The settings as the editor first shows them, read only: the server renders this, and the
/// page shows it until the editor's code has arrived. It is laid out as the editor is (the
/// sections, the first one's settings one per line), so the editor takes its place with little
/// movement (the editor adds its controls below).
#[component]
pub fn SettingsPreview(model: CampaignModel) -> impl IntoView {
    let first = first_section(&model);
    // Only a change of the settings redraws this, not every keystroke elsewhere.
    let config = Memo::new(move |_| model.shown.with(|s| s.config.clone()));
    let tabs = {
        let first = first.clone();
        move || {
            config.with(|config| {
                config
                    .keys()
                    .map(|name| {
                        let active = name.as_str() == first;
                        view! {
                            <span class="preview-tab" class:active=active aria-current=active.then_some("true")>
                                {name.to_string()}
                            </span>
                        }
                    })
                    .collect_view()
            })
        }
    };
    let lines = {
        let first = first.clone();
        move || {
            config.with(|config| {
                let section = SectionName::parse(&first)
                    .ok()
                    .and_then(|name| config.get(&name).cloned())
                    .unwrap_or_default();
                config_form::rows(&section)
                    .into_iter()
                    .map(|row| {
                        let value = match config_form::value_at(&section, &row.path) {
                            // A group's settings follow it, one level deeper.
                            Some(Value::Object(_)) | None => None,
                            Some(Value::String(text)) if text.is_empty() => Some("(empty)".into()),
                            Some(Value::String(text)) => Some(text.clone()),
                            Some(Value::Bool(true)) => Some("on".into()),
                            Some(Value::Bool(false)) => Some("off".into()),
                            Some(other) => Some(other.to_string()),
                        };
                        (row.depth(), row.label(), value)
                    })
                    .collect::<Vec<_>>()
            })
        }
    };
    view! {
        <section class="panel config settings-preview" aria-labelledby="config-heading">
            <h2 id="config-heading">"Settings"</h2>
            <div class="sections" role="group" aria-label="Sections">{tabs}</div>
            <h3 class="section-name">{first}</h3>
            {move || {
                let lines = lines();
                if lines.is_empty() {
                    return view! { <p class="empty">"No settings in this section yet."</p> }.erase();
                }
                view! {
                    <dl class="config-form">
                        {lines
                            .into_iter()
                            .map(|(depth, label, value)| match value {
                                Some(value) => view! {
                                    <div class="setting" style=format!("--depth:{depth}")>
                                        <dt class="setting-label">{label}</dt>
                                        <dd class="setting-value">{value}</dd>
                                    </div>
                                }
                                .erase(),
                                None => view! {
                                    <div class="setting" style=format!("--depth:{depth}")>
                                        <dt class="setting-group">{label}</dt>
                                        <dd class="visually-hidden">"the settings that follow"</dd>
                                    </div>
                                }
                                .erase(),
                            })
                            .collect_view()}
                    </dl>
                }
                .erase()
            }}
        </section>
    }
}

/// What the person began editing from.
#[derive(Debug, Clone, PartialEq)]
struct Editing {
    section: String,
    /// The section's values when they began (or last chose to keep theirs).
    began_with: Map<String, Value>,
    base_version: u64,
}

#[component]
pub fn ConfigEditor(model: CampaignModel) -> impl IntoView {
    let selected = RwSignal::new(first_section(&model));
    let section_value = Memo::new(move |_| {
        let name = selected.get();
        model.shown.with(|s| {
            SectionName::parse(&name)
                .ok()
                .and_then(|n| s.config.get(&n).cloned())
        })
    });
    let text = RwSignal::new(pretty(section_value.get_untracked().as_ref()));
    let editing = RwSignal::new(None::<Editing>);
    let problem = RwSignal::new(None::<String>);
    // Follow the section live unless the person is editing it.
    Effect::new(move |_| {
        let value = section_value.get();
        if editing.with_untracked(Option::is_none) {
            text.set(pretty(value.as_ref()));
        }
    });
    let begin = move || {
        if editing.with_untracked(Option::is_none) {
            let base_version = model
                .queue
                .with_untracked(|q| model.confirmed.with_untracked(|c| q.base(c)));
            editing.set(Some(Editing {
                section: selected.get_untracked(),
                began_with: section_value.get_untracked().unwrap_or_default(),
                base_version,
            }));
        }
    };
    // Someone else changed the section since the person began.
    let changed_under = Memo::new(move |_| {
        editing.with(|e| {
            e.as_ref().is_some_and(|e| {
                section_value.with(|v| v.clone().unwrap_or_default() != e.began_with)
            })
        })
    });
    let keep_mine = move |_| {
        let base_version = model
            .queue
            .with_untracked(|q| model.confirmed.with_untracked(|c| q.base(c)));
        editing.update(|e| {
            if let Some(e) = e {
                e.began_with = section_value.get_untracked().unwrap_or_default();
                e.base_version = base_version;
            }
        });
    };
    let use_theirs = move |_| {
        editing.set(None);
        problem.set(None);
        text.set(pretty(section_value.get_untracked().as_ref()));
    };
    let save = move |_| {
        let Some(began) = editing.get_untracked() else {
            return;
        };
        let section = match SectionName::parse(&began.section) {
            Ok(section) => section,
            Err(message) => return problem.set(Some(message)),
        };
        match serde_json::from_str::<Value>(&text.get_untracked()) {
            Ok(Value::Object(mine)) => {
                problem.set(None);
                editing.set(None);
                let values = merge_patch_between(&began.began_with, &mine);
                let is_new = section_value.with_untracked(Option::is_none);
                if values.is_empty() && !is_new {
                    return;
                }
                model.submit(Write::Config(ConfigChange {
                    campaign_id: model.id.get_value(),
                    section,
                    values,
                    mode: ConfigMode::Merge,
                    base_version: Some(began.base_version),
                }));
            }
            Ok(_) => problem.set(Some(
                "Settings must be an object: put them between { and }.".into(),
            )),
            Err(err) => problem.set(Some(format!("This is not valid JSON yet: {err}."))),
        }
    };
    // Removing a section asks once more first (about the section it was asked for, whatever tab
    // is chosen meanwhile): everyone loses its settings. The tab stays, so a refusal shows.
    let confirming_removal = RwSignal::new(None::<String>);
    let exists = move || section_value.with(Option::is_some);
    let asking = move || {
        confirming_removal.with(|asked| asked.as_deref() == Some(selected.get().as_str()))
            && exists()
    };
    let remove = move |_| {
        let Some(asked) = confirming_removal.get_untracked() else {
            return;
        };
        confirming_removal.set(None);
        let Ok(section) = SectionName::parse(&asked) else {
            return;
        };
        editing.set(None);
        problem.set(None);
        model.submit(Write::Config(ConfigChange {
            campaign_id: model.id.get_value(),
            section,
            values: Default::default(),
            mode: ConfigMode::Remove,
            base_version: None,
        }));
    };
    let new_section = RwSignal::new(String::new());
    // The form is the default; JSON is for lists, empty values and pasting whole sections.
    let as_json = RwSignal::new(false);
    let sections = move || {
        model
            .shown
            .with(|s| s.config.keys().map(|k| k.to_string()).collect::<Vec<_>>())
    };
    view! {
        <section class="panel config" aria-labelledby="config-heading">
            <h2 id="config-heading">"Settings"</h2>
            <div class="sections" role="group" aria-label="Sections">
                <For each=sections key=|k| k.clone() let:name>
                    <button
                        class="section-tab"
                        aria-pressed={
                            let name = name.clone();
                            move || (selected.get() == name).to_string()
                        }
                        class:active={
                            let name = name.clone();
                            move || selected.get() == name
                        }
                        on:click={
                            let name = name.clone();
                            move |_| {
                                editing.set(None);
                                problem.set(None);
                                selected.set(name.clone());
                            }
                        }
                    >
                        {name.clone()}
                    </button>
                </For>
                <Show when=move || model.can_edit()>
                    <form
                        class="new-section"
                        on:submit=move |ev| {
                            ev.prevent_default();
                            let name = new_section.get_untracked().trim().to_owned();
                            match SectionName::parse(&name) {
                                Ok(_) => {
                                    selected.set(name);
                                    editing.set(None);
                                    text.set("{}".into());
                                    begin();
                                    new_section.set(String::new());
                                    problem.set(None);
                                }
                                Err(_) => problem.set(Some(format!(
                                    "“{name}” cannot be a section name: use lowercase letters, digits and “_”, starting with a letter."
                                ))),
                            }
                        }
                    >
                        <label class="visually-hidden" for="new-section">"New section"</label>
                        <input
                            id="new-section"
                            class="section-input"
                            placeholder="new_section"
                            prop:value=move || new_section.get()
                            on:input=move |ev| new_section.set(event_target_value(&ev))
                        />
                    </form>
                </Show>
            </div>
            <Show
                when=move || as_json.get()
                fallback=move || view! {
                    <h3 class="section-name">{move || selected.get()}</h3>
                    <ConfigForm
                        text
                        edited=Callback::new(move |()| begin())
                        editable=Signal::derive(move || model.can_edit())
                    />
                }.erase()
            >
                <label class="section-name" for="config-json">{move || selected.get()}</label>
                <textarea
                    id="config-json"
                    class="config-input"
                    spellcheck="false"
                    prop:value=move || text.get()
                    readonly=move || !model.can_edit()
                    aria-readonly=move || (!model.can_edit()).to_string()
                    on:input=move |ev| {
                        begin();
                        text.set(event_target_value(&ev));
                    }
                ></textarea>
            </Show>
            <button class="link-button config-mode" on:click=move |_| as_json.update(|j| *j = !*j)>
                {move || match (as_json.get(), model.can_edit()) {
                    (false, true) => "Edit as JSON",
                    (false, false) => "Show as JSON",
                    (true, _) => "Show as a form",
                }}
            </button>
            <Show when=move || changed_under.get()>
                <div class="notice hold diverged">
                    <p>
                        {move || {
                            let who = model
                                .changed_by
                                .with(|m| m.get(&format!("config.{}", selected.get())).cloned())
                                .unwrap_or_else(|| "Someone else".into());
                            if exists() {
                                format!("{who} changed this section while you were editing it.")
                            } else {
                                format!("{who} removed this section while you were editing it.")
                            }
                        }}
                    </p>
                    <button class="button small keep-mine" on:click=keep_mine>"Keep mine"</button>
                    <button class="button small secondary use-theirs" on:click=use_theirs>"Use theirs"</button>
                </div>
            </Show>
            {move || problem.get().map(|p| view! { <p class="notice hold">{p}</p> })}
            <Show when=move || model.can_edit()>
                <div class="config-actions">
                    <button
                        class="button small save-config"
                        disabled=move || editing.with(Option::is_none) || changed_under.get()
                        on:click=save
                    >
                        "Save"
                    </button>
                    <button
                        class="button small secondary remove-section"
                        disabled=move || !exists()
                        on:click=move |_| confirming_removal.set(Some(selected.get_untracked()))
                    >
                        "Remove section"
                    </button>
                </div>
            </Show>
            <Show when=asking>
                <div class="notice hold confirm-remove-section" role="group" aria-label="Remove section">
                    <p>{move || format!("Remove the {} settings for everyone?", selected.get())}</p>
                    <button class="button small confirm" on:click=remove>"Remove"</button>
                    <button class="button small secondary" on:click=move |_| confirming_removal.set(None)>"Cancel"</button>
                </div>
            </Show>
            {move || view! { <Notices model place=Place::Field(format!("config.{}", selected.get()))/> }}
        </section>
    }
    .erase()
}
