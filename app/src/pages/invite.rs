use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_params_map};

use super::SignIn;
use crate::client::SharedIo;
use crate::data::{decode_response, DataSource};

/// `/invite/:token`: accept an owner's invite and become an editor of the campaign.
#[component]
pub fn InvitePage() -> impl IntoView {
    let params = use_params_map();
    let source = DataSource::from_context();
    let session = Resource::new(|| (), move |_| source.session());
    let io = use_context::<SharedIo>();
    let navigate = use_navigate();
    let error = RwSignal::new(None::<String>);
    let accept = move |_| {
        let token = params.read_untracked().get("token").unwrap_or_default();
        let Some(io) = io.clone() else { return };
        let io = (*io).clone();
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            match io
                .http("POST", &format!("/api/invites/{token}/accept"), None)
                .await
            {
                Ok((status, text)) => match decode_response::<serde_json::Value>(status, &text) {
                    Ok(accepted) => {
                        let id = accepted["campaign_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        navigate(&format!("/campaigns/{id}"), Default::default());
                    }
                    Err(e) => error.set(Some(e.message)),
                },
                Err(err) => error.set(Some(err)),
            }
        });
    };
    view! {
        <leptos_meta::Title text="Invitation — Rally"/>
        <section class="invite-page">
            <h1>"You are invited to edit a campaign"</h1>
            <Suspense fallback=|| ()>
                {
                    let accept = accept.clone();
                    move || {
                        let accept = accept.clone();
                        Suspend::new(async move {
                            match session.await {
                                Some(user) => view! {
                                    <p>"Signed in as " <strong>{user.display_name}</strong></p>
                                    <button class="button accept-invite" on:click=accept>"Accept and open it"</button>
                                }.into_any(),
                                None => view! { <p>"Pick a name first."</p> <SignIn/> }.into_any(),
                            }
                        })
                    }
                }
            </Suspense>
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        </section>
    }
}
