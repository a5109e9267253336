//! The campaign page's panels. Each reads the [`CampaignModel`] and sends edits through
//! `submit`; none talks to the network itself (except the owner's invite button, over HTTP).

use leptos::prelude::*;
use serde_json::{Map, Value};

use super::live::CampaignModel;
use crate::client::SharedIo;
use crate::data::decode_response;
use crate::model::{
    CampaignStatus, ConfigChange, ConfigMode, Feature, FeatureChange, FeatureOp, FieldUpdates,
    Role, SectionName, UpdateFields, Write,
};

#[component]
pub fn Notices(model: CampaignModel) -> impl IntoView {
    view! {
        <div class="notices" aria-live="polite">
            {move || model.read_only.get().map(|reason| view! { <p class="notice read-only">"Read-only for now: " {reason}</p> })}
            <For each=move || model.notices.get() key=|n| n.key let:notice>
                <p class="notice rollback">
                    {notice.text}
                    <button
                        class="notice-close"
                        aria-label="Dismiss"
                        on:click=move |_| model.notices.update(|n| n.retain(|x| x.key != notice.key))
                    >
                        "×"
                    </button>
                </p>
            </For>
        </div>
    }
    .into_any()
}

#[component]
pub fn Details(model: CampaignModel, submit: Callback<Write>) -> impl IntoView {
    let readonly = move || !model.can_edit();
    let fields = move |updates: FieldUpdates| {
        submit.run(Write::Update(UpdateFields {
            campaign_id: model.id.get_value(),
            updates,
            base_version: None,
        }))
    };
    view! {
        <section class="panel details">
            <input
                class="title-input"
                aria-label="Title"
                prop:value=move || {
                    model.refusals.track();
                    model.shown.with(|s| s.title.clone())
                }
                readonly=readonly
                on:change=move |ev| {
                    let title = event_target_value(&ev);
                    if title != model.shown.with_untracked(|s| s.title.clone()) {
                        fields(FieldUpdates { title: Some(title), ..Default::default() });
                    }
                }
            />
            <div class="meta-row">
                <label class="status-field">
                    "Status "
                    <select
                        class="status-select"
                        disabled=readonly
                        prop:value=move || model.shown.with(|s| s.status.as_str())
                        on:change=move |ev| {
                            if let Some(status) = CampaignStatus::parse(&event_target_value(&ev)) {
                                fields(FieldUpdates { status: Some(status), ..Default::default() });
                            }
                        }
                    >
                        {CampaignStatus::ALL
                            .into_iter()
                            .map(|status| {
                                view! {
                                    <option
                                        value=status.as_str()
                                        selected=move || model.shown.with(|s| s.status == status)
                                    >
                                        {status.as_str()}
                                    </option>
                                }
                            })
                            .collect_view()}
                    </select>
                </label>
                <span class="version">"v" {move || model.confirmed.with(|s| s.version)}</span>
                <span class="role-badge">{move || model.role.get().as_str()}</span>
                <Show when=move || !model.pending.with(|p| p.is_empty())>
                    <span class="saving">"saving…"</span>
                </Show>
            </div>
            <textarea
                class="description-input"
                aria-label="Description"
                placeholder=move || if model.can_edit() { "Describe the campaign" } else { "" }
                prop:value=move || {
                    model.refusals.track();
                    model.shown.with(|s| s.description.clone())
                }
                readonly=readonly
                on:change=move |ev| {
                    let description = event_target_value(&ev);
                    if description != model.shown.with_untracked(|s| s.description.clone()) {
                        fields(FieldUpdates { description: Some(description), ..Default::default() });
                    }
                }
            ></textarea>
        </section>
    }
    .into_any()
}

#[component]
pub fn Features(model: CampaignModel, submit: Callback<Write>) -> impl IntoView {
    let change = move |op: FeatureOp, feature: Feature| {
        submit.run(Write::Feature(FeatureChange {
            campaign_id: model.id.get_value(),
            op,
            features: vec![feature],
            base_version: None,
        }))
    };
    let draft = RwSignal::new(String::new());
    let add = move || {
        let text = draft.get_untracked().trim().to_owned();
        if text.is_empty() {
            return;
        }
        match Feature::parse(&text) {
            Ok(feature) => {
                change(FeatureOp::Add, feature);
                draft.set(String::new());
            }
            Err(message) => model.notice(message),
        }
    };
    view! {
        <section class="panel features">
            <h2>"Features"</h2>
            <ul class="chips">
                <For
                    each=move || model.shown.with(|s| s.features.iter().cloned().collect::<Vec<_>>())
                    key=|f| f.clone()
                    children=move |feature: Feature| {
                        let name = feature.to_string();
                        let label = format!("Remove {name}");
                        let remove = move |_| {
                            change(FeatureOp::Remove, feature.clone())
                        };
                        view! {
                            <li class="chip" data-feature=name.clone()>
                                {name.clone()}
                                <Show when=move || model.can_edit()>
                                    <button class="chip-remove" aria-label=label.clone() on:click=remove.clone()>
                                        "×"
                                    </button>
                                </Show>
                            </li>
                        }
                    }
                />
            </ul>
            <Show when=move || model.can_edit()>
                <form class="add-feature" on:submit=move |ev| { ev.prevent_default(); add(); }>
                    <input
                        class="feature-input"
                        aria-label="New feature"
                        placeholder="new_feature"
                        prop:value=move || draft.get()
                        on:input=move |ev| draft.set(event_target_value(&ev))
                    />
                    <button class="button small" type="submit">"Add"</button>
                </form>
            </Show>
        </section>
    }
    .into_any()
}

fn pretty(values: Option<&Map<String, Value>>) -> String {
    serde_json::to_string_pretty(&values.cloned().unwrap_or_default()).unwrap_or_default()
}

#[component]
pub fn ConfigEditor(model: CampaignModel, submit: Callback<Write>) -> impl IntoView {
    let first = model
        .shown
        .with_untracked(|s| s.config.keys().next().map(|k| k.to_string()))
        .unwrap_or_else(|| "ui_content".into());
    let selected = RwSignal::new(first);
    let section_value = Memo::new(move |_| {
        let name = selected.get();
        model.shown.with(|s| {
            SectionName::parse(&name)
                .ok()
                .and_then(|n| s.config.get(&n).cloned())
        })
    });
    let text = RwSignal::new(pretty(section_value.get_untracked().as_ref()));
    let dirty = RwSignal::new(false);
    // Follow remote changes to the open section unless the user is editing it.
    Effect::new(move |_| {
        let value = section_value.get();
        if !dirty.get_untracked() {
            text.set(pretty(value.as_ref()));
        }
    });
    let new_section = RwSignal::new(String::new());
    let save = move |mode: ConfigMode| {
        let section = match SectionName::parse(&selected.get_untracked()) {
            Ok(section) => section,
            Err(message) => return model.notice(message),
        };
        match serde_json::from_str::<Value>(&text.get_untracked()) {
            Ok(Value::Object(values)) => {
                dirty.set(false);
                submit.run(Write::Config(ConfigChange {
                    campaign_id: model.id.get_value(),
                    section,
                    values,
                    mode,
                    base_version: None,
                }));
            }
            Ok(_) => model.notice("config values must be a JSON object".into()),
            Err(err) => model.notice(format!("config is not valid JSON: {err}")),
        }
    };
    view! {
        <section class="panel config">
            <h2>"Config"</h2>
            <div class="sections">
                <For
                    each=move || model.shown.with(|s| s.config.keys().map(|k| k.to_string()).collect::<Vec<_>>())
                    key=|k| k.clone()
                    let:name
                >
                    <button
                        class="section-tab"
                        class:active={
                            let name = name.clone();
                            move || selected.get() == name
                        }
                        on:click={
                            let name = name.clone();
                            move |_| {
                                dirty.set(false);
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
                                    text.set("{}".into());
                                    dirty.set(true);
                                    new_section.set(String::new());
                                }
                                Err(message) => model.notice(message),
                            }
                        }
                    >
                        <input
                            class="section-input"
                            aria-label="New section"
                            placeholder="new_section"
                            prop:value=move || new_section.get()
                            on:input=move |ev| new_section.set(event_target_value(&ev))
                        />
                    </form>
                </Show>
            </div>
            <p class="section-name">{move || selected.get()}</p>
            <textarea
                class="config-input"
                aria-label="Config JSON"
                spellcheck="false"
                prop:value=move || text.get()
                readonly=move || !model.can_edit()
                on:input=move |ev| {
                    text.set(event_target_value(&ev));
                    dirty.set(true);
                }
            ></textarea>
            <Show when=move || model.can_edit()>
                <div class="config-actions">
                    <button class="button small save-merge" on:click=move |_| save(ConfigMode::Merge)>"Save (merge)"</button>
                    <button class="button small secondary save-replace" on:click=move |_| save(ConfigMode::Replace)>"Replace"</button>
                </div>
            </Show>
        </section>
    }
    .into_any()
}

#[component]
pub fn PresencePanel(model: CampaignModel) -> impl IntoView {
    view! {
        <section class="panel presence">
            <h2>
                "Here now "
                <span class="presence-count">
                    {move || model.presence.with(|p| p.as_ref().map(|p| p.count).unwrap_or(0))}
                </span>
            </h2>
            <ul class="viewers">
                {move || {
                    model
                        .presence
                        .with(|p| p.as_ref().map(|p| p.viewers.clone()).unwrap_or_default())
                        .into_iter()
                        .map(|viewer| {
                            let tabs = (viewer.connections > 1)
                                .then(|| format!(" ({} tabs)", viewer.connections));
                            view! { <li class="viewer">{viewer.display_name}{tabs}</li> }
                        })
                        .collect_view()
                }}
            </ul>
        </section>
    }
    .into_any()
}

#[component]
pub fn InvitePanel(model: CampaignModel) -> impl IntoView {
    let io = use_context::<SharedIo>();
    let link = RwSignal::new(None::<String>);
    let create = move |_| {
        let Some(io) = io.clone() else { return };
        let io = (*io).clone();
        let id = model.id.get_value();
        leptos::task::spawn_local(async move {
            let path = format!("/api/campaigns/{id}/invites");
            match io.http("POST", &path, None).await {
                Ok((status, body)) => match decode_response::<Value>(status, &body) {
                    Ok(invite) => link.set(invite["path"].as_str().map(str::to_owned)),
                    Err(error) => {
                        model.notice(format!("Could not create an invite: {}", error.message))
                    }
                },
                Err(err) => model.notice(format!("Could not create an invite: {err}")),
            }
        });
    };
    view! {
        <Show when=move || model.role.get() == Role::Owner>
            <section class="panel invite">
                <h2>"Invite editors"</h2>
                <button class="button small create-invite" on:click=create.clone()>"Create invite link"</button>
                {move || link.get().map(|path| {
                    let label = path.clone();
                    view! { <p class="invite-link"><a href=path>{label}</a></p> }
                })}
            </section>
        </Show>
    }
    .into_any()
}

#[component]
pub fn Timeline(model: CampaignModel) -> impl IntoView {
    view! {
        <section class="panel timeline">
            <h2>"Activity"</h2>
            <ol class="events">
                <For each=move || model.timeline.get() key=|e| e.key.clone() let:entry>
                    <li class="event" data-version=entry.version.map(|v| v.to_string())>
                        <time>{entry.time}</time>
                        <span>{entry.text}</span>
                    </li>
                </For>
            </ol>
        </section>
    }
    .into_any()
}
