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

/// Who you are, with a menu to change your name or sign out of this browser; or a way to sign in.
#[component]
pub fn UserBadge(user: Option<Actor>) -> impl IntoView {
    let Some(user) = user else {
        return view! { <a class="sign-in-link" href="/">"Sign in"</a> }.into_any();
    };
    {
        let name = user.display_name.to_string();
        view! {
            <details class="user-menu">
                <summary class="user" data-user-id=user.user_id.to_string()>{name.clone()}</summary>
                <div class="user-menu-panel">
                    <NameForm initial=name label="Change your name" button="Save name" form_class="rename"/>
                    <SignOut/>
                </div>
            </details>
        }
        .into_any()
    }
}

/// Forget the session on this browser (the cookie), then reload.
#[component]
fn SignOut() -> impl IntoView {
    let io = use_context::<SharedIo>();
    let error = RwSignal::new(None::<String>);
    let sign_out = move |_| {
        let Some(io) = io.clone() else { return };
        let io = (*io).clone();
        leptos::task::spawn_local(async move {
            match io.http("DELETE", "/api/session", None).await {
                Ok((status, _)) if status < 300 => io.reload(),
                Ok((status, text)) => {
                    let message = decode_response::<serde_json::Value>(status, &text)
                        .err()
                        .map(|e| e.message)
                        .unwrap_or_default();
                    error.set(Some(format!("Could not sign out: {message}")))
                }
                Err(_) => error.set(Some(
                    "Could not sign out: the server cannot be reached.".into(),
                )),
            }
        });
    };
    view! {
        <button class="button small secondary sign-out" on:click=sign_out>"Sign out"</button>
        {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
    }
}

/// Pick a display name and get a session (cookie), then reload so the live connection carries it.
#[component]
pub fn SignIn() -> impl IntoView {
    view! {
        <NameForm
            initial=String::new()
            label="Your name, as others will see it"
            button="Sign in"
            form_class="panel sign-in"
        />
    }
}

/// A display name sent to `/api/session`: signs in, or renames the person signed in (same
/// account, new name), then reloads so the live connection carries it.
#[component]
fn NameForm(
    initial: String,
    label: &'static str,
    button: &'static str,
    form_class: &'static str,
) -> impl IntoView {
    let io = use_context::<SharedIo>();
    let name = RwSignal::new(initial);
    let input_id = if form_class.contains("sign-in") {
        "display-name"
    } else {
        "new-display-name"
    };
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
        <form class=form_class on:submit=submit>
            <label for=input_id>{label}</label>
            <input
                id=input_id
                placeholder="Ada Lovelace"
                autocomplete="nickname"
                prop:value=move || name.get()
                on:input=move |ev| name.set(event_target_value(&ev))
            />
            <button class="button" type="submit">{button}</button>
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        </form>
    }
}
