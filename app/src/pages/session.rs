//! Who you are and whether you are connected: the top bar's badges and the sign-in card.

use leptos::prelude::*;

use crate::client::{use_connection, ConnectionStatus, SharedIo};
use crate::data::decode_response;
use crate::model::{Actor, DisplayName};

/// The connection indicator, in plain words: Connected / Connecting… / Reconnecting… / Offline, and how
/// many of your changes wait to be sent.
#[component]
pub fn ConnectionBadge() -> impl IntoView {
    let status = use_connection().map(|c| c.status);
    let queued = use_connection().map(|c| c.queued);
    let state = move || {
        status
            .map(|s| s.get())
            .unwrap_or(ConnectionStatus::Connecting)
    };
    let label = move || match state() {
        ConnectionStatus::Connecting => "Connecting…",
        ConnectionStatus::Connected => "Connected",
        ConnectionStatus::Reconnecting { .. } => "Reconnecting…",
        ConnectionStatus::Offline => "Offline",
        ConnectionStatus::Resting => "Ready",
    };
    let kind = move || match state() {
        ConnectionStatus::Connecting => "connecting",
        ConnectionStatus::Connected => "connected",
        ConnectionStatus::Reconnecting { .. } => "reconnecting",
        ConnectionStatus::Offline => "offline",
        ConnectionStatus::Resting => "resting",
    };
    let waiting = move || queued.map(|q| q.get()).unwrap_or(0);
    view! {
        <span class="connection" data-status=kind role="status">
            <span class="dot"></span>
            {label}
            <Show when=move || { waiting() > 0 }>
                <span class="queued">
                    {move || match waiting() {
                        1 => " · 1 change waiting".to_owned(),
                        n => format!(" · {n} changes waiting"),
                    }}
                </span>
            </Show>
        </span>
    }
}

#[component]
pub fn UserBadge(user: Option<Actor>) -> impl IntoView {
    user.map(|user| view! { <span class="user" data-user-id=user.user_id.to_string()>{user.display_name}</span> })
}

/// Pick a display name and get a session (cookie), then reload so the live connection carries it.
#[component]
pub fn SignIn() -> impl IntoView {
    let io = use_context::<SharedIo>();
    let name = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let display_name = match DisplayName::parse(&name.get_untracked()) {
            Ok(n) => n,
            Err(message) => return error.set(Some(message)),
        };
        let Some(io) = io.clone() else { return };
        let io = (*io).clone();
        leptos::task::spawn_local(async move {
            let body = serde_json::to_string(&crate::protocol::session::SignIn { display_name })
                .expect("a sign-in serializes");
            match io.http("POST", "/api/session", Some(body)).await {
                Ok((status, text)) => match decode_response::<serde_json::Value>(status, &text) {
                    Ok(_) => io.reload(),
                    Err(e) => error.set(Some(e.message)),
                },
                Err(err) => error.set(Some(err)),
            }
        });
    };
    view! {
        <form class="panel sign-in" on:submit=submit>
            <label for="display-name">"Your name"</label>
            <input
                id="display-name"
                placeholder="How others see you"
                autocomplete="nickname"
                prop:value=move || name.get()
                on:input=move |ev| name.set(event_target_value(&ev))
            />
            <button class="button" type="submit">"Join"</button>
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        </form>
    }
}
