//! `/campaigns/:id`: one campaign, live. Server-rendered from the snapshot; once hydrated it
//! subscribes from the snapshot's version and every change shows up as it happens.

mod live;
mod media;
mod panels;

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::client::use_connection;
use crate::data::DataSource;
use crate::model::CampaignId;
use crate::protocol::campaign::CampaignSnapshot;
use crate::protocol::{ErrorBody, ErrorCode};

pub use live::CampaignModel;
use panels::{ConfigEditor, Details, Features, InvitePanel, Notices, PresencePanel, Timeline};

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
                    Ok(snapshot) => view! { <LiveCampaign snapshot/> }.into_any(),
                    Err(error) => view! { <Missing error/> }.into_any(),
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
    view! {
        <section class="missing">
            <h1>"Campaign unavailable"</h1>
            <p class="error">{error.message}</p>
            <p><a href="/">"All campaigns"</a></p>
        </section>
    }
}

#[component]
fn LiveCampaign(snapshot: CampaignSnapshot) -> impl IntoView {
    let model = CampaignModel::new(snapshot.campaign.clone(), snapshot.role);
    model
        .timeline
        .set(vec![live::initial_entry(&snapshot.campaign)]);
    let connection = use_connection();

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
        let connection = connection.clone();
        let id = snapshot.campaign.id.clone();
        on_cleanup(move || connection.unsubscribe(&id));
    }
    let connection = StoredValue::new(connection.map(send_wrapper::SendWrapper::new));
    let submit = move |write: crate::model::Write| {
        connection.with_value(|c| {
            if let Some(c) = c {
                model.submit(c, write);
            }
        })
    };
    let submit = Callback::new(submit);

    view! {
        <article
            class="campaign"
            data-version=move || model.confirmed.with(|s| s.version)
            data-role=move || model.role.get().as_str()
            data-live=move || model.live.get().to_string()
        >
            <Notices model/>
            <div class="campaign-grid">
                <div class="main-column">
                    <media::LiveRoom campaign=snapshot.campaign.id.clone()/>
                    <Details model submit/>
                    <Features model submit/>
                    <ConfigEditor model submit/>
                </div>
                <aside class="side-column">
                    <PresencePanel model/>
                    <InvitePanel model/>
                    <Timeline model/>
                </aside>
            </div>
        </article>
    }
    .into_any()
}
