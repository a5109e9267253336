//! The campaign page's panels. Each reads the [`CampaignModel`] and makes writes through it;
//! none talks to the network itself.

use leptos::prelude::*;

use super::history::HistoryFocus;
use super::live::CampaignModel;
use super::notices::{Notices, Place};
use super::text_field::SharedTextField;
use crate::model::{
    CampaignStatus, Feature, FeatureChange, FeatureOp, FieldUpdates, Role, TextField, UpdateFields,
    Visibility, Write,
};
use crate::pages::erase::Erase;

#[component]
pub fn Details(model: CampaignModel) -> impl IntoView {
    let set_status = move |status: CampaignStatus| {
        model.submit(Write::Update(UpdateFields {
            campaign_id: model.id.get_value(),
            updates: FieldUpdates {
                status: Some(status),
                ..Default::default()
            },
            base_version: None,
        }))
    };
    view! {
        <section class="panel details" aria-label="Campaign details">
            <SharedTextField model field=TextField::Title/>
            <div class="meta-row">
                <label class="status-field">
                    "Status "
                    <select
                        class="status-select"
                        disabled=move || !model.can_edit()
                        prop:value=move || model.status.get().as_str()
                        on:change=move |ev| {
                            if let Some(status) = CampaignStatus::parse(&event_target_value(&ev)) {
                                set_status(status);
                            }
                        }
                    >
                        {CampaignStatus::ALL
                            .into_iter()
                            .map(|status| {
                                view! {
                                    <option
                                        value=status.as_str()
                                        selected=move || model.status.get() == status
                                    >
                                        {status.as_str()}
                                    </option>
                                }
                            })
                            .collect_view()}
                    </select>
                </label>
                <VisibilityField model/>
                <span class="role-badge">{move || model.role.get().as_str()}</span>
                <Show when=move || { model.unsaved() > 0 }>
                    <span class="saving">"Saving…"</span>
                </Show>
            </div>
            <Notices model place=Place::Field("status".into())/>
            <Notices model place=Place::Field("visibility".into())/>
            <SharedTextField model field=TextField::Description/>
        </section>
    }
    .erase()
}

/// Who can see the campaign, in words: owners choose, everyone else reads it.
fn visibility_words(visibility: Visibility) -> &'static str {
    match visibility {
        Visibility::Private => "Only members",
        Visibility::Unlisted => "Anyone with the link",
        Visibility::Public => "Everyone",
    }
}

#[component]
fn VisibilityField(model: CampaignModel) -> impl IntoView {
    let set = move |visibility: Visibility| {
        model.submit(Write::Update(UpdateFields {
            campaign_id: model.id.get_value(),
            updates: FieldUpdates {
                visibility: Some(visibility),
                ..Default::default()
            },
            base_version: None,
        }))
    };
    let owner = move || model.role.get() == Role::Owner && model.can_edit();
    view! {
        <label class="visibility-field">
            "Who can see it "
            <select
                class="visibility-select"
                disabled=move || !owner()
                prop:value=move || model.visibility.get().as_str()
                on:change=move |ev| {
                    if let Some(visibility) = Visibility::parse(&event_target_value(&ev)) {
                        set(visibility);
                    }
                }
            >
                {Visibility::ALL
                    .into_iter()
                    .map(|visibility| {
                        view! {
                            <option
                                value=visibility.as_str()
                                selected=move || model.visibility.get() == visibility
                            >
                                {visibility_words(visibility)}
                            </option>
                        }
                    })
                    .collect_view()}
            </select>
        </label>
    }
}

#[component]
pub fn Features(model: CampaignModel) -> impl IntoView {
    let change = move |op: FeatureOp, feature: Feature| {
        model.submit(Write::Feature(FeatureChange {
            campaign_id: model.id.get_value(),
            op,
            features: vec![feature],
            base_version: None,
        }))
    };
    let draft = RwSignal::new(String::new());
    let problem = RwSignal::new(None::<String>);
    let add = move || {
        let text = draft.get_untracked().trim().to_owned();
        if text.is_empty() {
            return;
        }
        match Feature::parse(&text) {
            Ok(feature) => {
                problem.set(None);
                change(FeatureOp::Add, feature);
                draft.set(String::new());
            }
            Err(_) => problem.set(Some(format!(
                "“{text}” cannot be a feature name: use lowercase letters, digits, “_” and “-”."
            ))),
        }
    };
    view! {
        <section class="panel features" aria-labelledby="features-heading">
            <h2 id="features-heading">"Features"</h2>
            <ul class="chips">
                <For
                    each=move || model.features.get()
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
            <Show when=move || model.features.with(Vec::is_empty)>
                <p class="empty">"No features yet."</p>
            </Show>
            <Show when=move || model.can_edit()>
                <form class="add-feature" on:submit=move |ev| { ev.prevent_default(); add(); }>
                    <label class="visually-hidden" for="new-feature">"New feature"</label>
                    <input
                        id="new-feature"
                        class="feature-input"
                        placeholder="new_feature"
                        prop:value=move || draft.get()
                        on:input=move |ev| draft.set(event_target_value(&ev))
                    />
                    <button class="button small" type="submit">"Add"</button>
                </form>
                {move || problem.get().map(|p| view! { <p class="notice hold">{p}</p> })}
            </Show>
            <Notices model place=Place::Field("features".into())/>
        </section>
    }
    .erase()
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
                            let live = viewer.live.then(|| view! { <span class="live-badge">"LIVE"</span> });
                            view! { <li class="viewer" data-live=viewer.live.to_string()>{viewer.display_name}{tabs}" "{live}</li> }
                        })
                        .collect_view()
                }}
            </ul>
        </section>
    }
    .erase()
}

/// What happened while this page was open; each change links to its entry in the history panel.
#[component]
pub fn Timeline(model: CampaignModel, focus: HistoryFocus) -> impl IntoView {
    view! {
        <section class="panel timeline">
            <h2>"Activity"</h2>
            <ol class="events">
                <For each=move || model.timeline.get() key=|e| e.key.clone() let:entry>
                    <li class="event" data-version=entry.version.map(|v| v.to_string())>
                        <time>{entry.time}</time>
                        <span>{entry.text}</span>
                        {entry.version.map(|version| view! {
                            " "
                            <a class="in-history" href="#history" on:click=move |_| focus.0.set(Some(version))>
                                "in history"
                            </a>
                        })}
                    </li>
                </For>
            </ol>
        </section>
    }
    .erase()
}
