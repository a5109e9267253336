//! `/campaigns/:id`: one campaign, live. Server-rendered from the snapshot; once hydrated it
//! subscribes from the snapshot's version and every change shows up as it happens. The history
//! and access panels and the settings editor load after the page is interactive (`later`).

mod config;
mod config_form;
mod history;
mod in_room;
mod invites;
mod keys;
mod later;
mod live;
mod media;
mod members;
mod notices;
mod panels;
mod text_field;
mod webhooks;

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::client::use_connection;
use crate::data::DataSource;
use crate::model::CampaignId;
use crate::protocol::campaign::CampaignSnapshot;
use crate::protocol::{ErrorBody, ErrorCode};

use crate::pages::erase::Erase;
use later::{AccessLater, HistoryLater, SettingsLater};
pub use live::CampaignModel;
use notices::{Notices, Place};
use panels::{Details, Features, PresencePanel, Timeline};

#[component]
pub fn CampaignPage() -> impl IntoView {
    let params = use_params_map();
    let source = DataSource::from_context();
    let snapshot = Resource::new(
        move || params.read().get("id").unwrap_or_default(),
        move |id| {
            let source = source.clone();
            async move {
                match CampaignId::parse(&id) {
                    Ok(id) => source.snapshot(id).await,
                    Err(err) => Err(ErrorBody::new(ErrorCode::Invalid, err.to_string())),
                }
            }
        },
    );
    view! {
        <Suspense fallback=|| view! { <p class="loading">"Loading campaign…"</p> }>
            {move || Suspend::new(async move {
                match snapshot.await {
                    Ok(snapshot) => view! { <LiveCampaign snapshot/> }.erase(),
                    Err(error) => view! { <Missing error/> }.erase(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn Missing(error: ErrorBody) -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        let status = http::StatusCode::from_u16(error.code.http_status())
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        response.set_status(status);
    }
    // A private campaign answers non-members exactly as a missing one: say both, leak neither.
    let message = if error.code == ErrorCode::NotFound {
        "There is no campaign at this address that you can see. If it is private, ask its owner \
         for an invite link."
            .to_owned()
    } else {
        error.message
    };
    view! {
        <section class="missing">
            <h1>"Campaign unavailable"</h1>
            <p class="error">{message}</p>
            <p><a href="/">"All campaigns"</a></p>
        </section>
    }
}

#[component]
fn LiveCampaign(snapshot: CampaignSnapshot) -> impl IntoView {
    let connection = use_connection();
    let model = CampaignModel::new(snapshot.campaign.clone(), snapshot.role, connection.clone());

    // Browser only: follow the campaign from the version this page was rendered at.
    if let Some(connection) = connection.clone() {
        let id = snapshot.campaign.id.clone();
        let since = snapshot.campaign.version;
        let subscriber = connection.clone();
        Effect::new(move |prev: Option<()>| {
            if prev.is_none() {
                let listener =
                    std::rc::Rc::new(move |output: &crate::client::Output| model.handle(output));
                subscriber.subscribe(id.clone(), Some(since), listener);
            }
        });
        let id = snapshot.campaign.id.clone();
        on_cleanup(move || connection.unsubscribe(&id));
    }
    let page_title = move || format!("{} — Rally", model.title.with(|t| t.saved().to_owned()));
    let history_focus = history::HistoryFocus(RwSignal::new(None));

    view! {
        <leptos_meta::Title text=page_title/>
        <article
            class="campaign"
            data-version=move || model.confirmed.with(|s| s.version)
            data-role=move || model.role.get().as_str()
            data-live=move || model.live.get().to_string()
            data-unsaved=move || model.unsaved()
        >
            <h1 class="visually-hidden">{move || model.title.with(|t| t.saved().to_owned())}</h1>
            <OfflineBanner model/>
            <Notices model place=Place::Page/>
            <Show when=move || !model.role.get().can_edit()>
                <p class="viewer-hint">"You can watch this campaign. Ask its owner for an invite link to edit it."</p>
            </Show>
            <div class="campaign-grid">
                <div class="main-column">
                    <media::LiveRoom campaign=snapshot.campaign.id.clone() presence=model.presence/>
                    <Details model/>
                    <Features model/>
                    <SettingsLater model/>
                    <HistoryLater model focus=history_focus/>
                </div>
                <aside class="side-column">
                    <PresencePanel model/>
                    <AccessLater model/>
                    <Timeline model focus=history_focus/>
                </aside>
            </div>
        </article>
    }
    .erase()
}

/// Says so at once when this page cannot reach the server, and how many changes will be sent
/// when it can.
#[component]
fn OfflineBanner(model: CampaignModel) -> impl IntoView {
    use crate::client::ConnectionStatus;
    let status = use_connection().map(|c| c.status);
    let away = move || {
        status.is_some_and(|s| {
            matches!(
                s.get(),
                ConnectionStatus::Offline | ConnectionStatus::Reconnecting { .. }
            )
        })
    };
    let message = move || {
        let waiting = model.unsaved();
        let offline = status.is_some_and(|s| s.get() == ConnectionStatus::Offline);
        let head = if offline {
            "You are offline"
        } else {
            "Cannot reach the server; trying again"
        };
        match waiting {
            0 => format!("{head}. Changes made by others will show when you are back."),
            1 => format!("{head}. Your 1 change will be saved when you are back."),
            n => format!("{head}. Your {n} changes will be saved when you are back."),
        }
    };
    let signed_out = move || status.is_some_and(|s| s.get() == ConnectionStatus::SignedOut);
    let io = StoredValue::new(use_context::<crate::client::SharedIo>());
    let reload = move |_| {
        io.with_value(|io| {
            if let Some(io) = io {
                io.reload();
            }
        })
    };
    view! {
        <Show when=away>
            <p class="offline-banner" role="status">{message}</p>
        </Show>
        <Show when=signed_out>
            <p class="offline-banner signed-out" role="alert">
                "You were signed out, on this device or another one. Changes you have not saved yet cannot be sent. "
                <button class="link-button reload" on:click=reload>"Reload the page"</button>
                " to go on watching, or sign in again."
            </p>
        </Show>
    }
}
