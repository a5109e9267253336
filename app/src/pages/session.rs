//! Who you are and whether you are connected: the top bar's badges and the sign-in card.

use leptos::prelude::*;

use super::before_hydration::{interactive, keep_typed};
use crate::client::{use_connection, ConnectionStatus, SharedIo};
use crate::data::decode_response;
use crate::model::{Actor, DisplayName, Timestamp};
use crate::pages::erase::Erase;
use crate::protocol::session::{SessionSummary, SignInOptions};

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
        ConnectionStatus::SignedOut => "Signed out",
    };
    let kind = move || match state() {
        ConnectionStatus::Connecting => "connecting",
        ConnectionStatus::Connected => "connected",
        ConnectionStatus::Reconnecting { .. } => "reconnecting",
        ConnectionStatus::Offline => "offline",
        ConnectionStatus::Resting => "resting",
        ConnectionStatus::SignedOut => "signed-out",
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

/// The page's path and query, to come back to after signing in through the provider.
fn here() -> String {
    let location = leptos_router::hooks::use_location();
    let (path, query) = (
        location.pathname.get_untracked(),
        location.search.get_untracked(),
    );
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

/// Who you are, with a menu to change your name or sign out of this browser; or a way to sign in
/// (straight to the organization's provider when there is one, else the start page's card).
#[component]
pub fn UserBadge(user: Option<Actor>, options: SignInOptions) -> impl IntoView {
    let Some(user) = user else {
        // rel="external": the provider's start is a server route, not a page of the app's router.
        let (href, rel) = match options.provider {
            Some(_) => (SignInOptions::provider_start(&here()), Some("external")),
            None => ("/".to_owned(), None),
        };
        return view! { <a class="sign-in-link" href=href rel=rel>"Sign in"</a> }.erase();
    };
    {
        let name = user.display_name.to_string();
        view! {
            <details class="user-menu">
                <summary class="user" data-user-id=user.user_id.to_string()>{name.clone()}</summary>
                <div class="user-menu-panel">
                    <NameForm initial=name label="Change your name" button="Save name" form_class="rename"/>
                    <Devices/>
                    <SignOut/>
                </div>
            </details>
        }
        .erase()
    }
}

/// How long ago `then` was, in plain words ("just now", "5 minutes ago", "3 days ago").
pub fn time_ago(then: Timestamp, now_ms: u64) -> String {
    let minutes = now_ms.saturating_sub(then.unix_millis()) / 60_000;
    let plural = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match minutes {
        0 => "just now".into(),
        1..=59 => plural(minutes, "minute"),
        60..=2879 => plural(minutes / 60, "hour"),
        _ => plural(minutes / 1440, "day"),
    }
}

/// The devices signed in as you (`GET /api/sessions`), each with a way to sign it out — a lost
/// phone, a shared computer. Loaded when asked for: most visits never need it.
#[component]
fn Devices() -> impl IntoView {
    let io = use_context::<SharedIo>();
    let devices = RwSignal::new(None::<Result<Vec<SessionSummary>, String>>);
    let load = {
        let io = io.clone();
        move || {
            let Some(io) = io.clone() else { return };
            let io = (*io).clone();
            leptos::task::spawn_local(async move {
                let answer = match io.http("GET", "/api/sessions", None).await {
                    Ok((status, text)) => {
                        decode_response::<Vec<SessionSummary>>(status, &text).map_err(|e| e.message)
                    }
                    Err(_) => Err("the server cannot be reached".into()),
                };
                devices.set(Some(answer));
            });
        }
    };
    let end = {
        let (io, load) = (io.clone(), load.clone());
        move |id: String| {
            let Some(io) = io.clone() else { return };
            let io = (*io).clone();
            let load = load.clone();
            leptos::task::spawn_local(async move {
                let path = format!("/api/sessions/{id}");
                match io.http("DELETE", &path, None).await {
                    Ok((status, _)) if status < 300 => load(),
                    Ok((status, text)) => {
                        devices.set(Some(Err(decode_response::<serde_json::Value>(
                            status, &text,
                        )
                        .err()
                        .map(|e| e.message)
                        .unwrap_or_default())))
                    }
                    Err(_) => devices.set(Some(Err("the server cannot be reached".into()))),
                }
            });
        }
    };
    let everywhere = {
        let io = io.clone();
        move || {
            let Some(io) = io.clone() else { return };
            let io = (*io).clone();
            leptos::task::spawn_local(async move {
                match io.http("DELETE", "/api/sessions", None).await {
                    Ok((status, _)) if status < 300 => io.reload(),
                    _ => devices.set(Some(Err("could not sign out everywhere".into()))),
                }
            });
        }
    };
    let now_ms = move || io.as_ref().map(|io| io.now_ms() as u64).unwrap_or(0);
    let show = load.clone();
    view! {
        <section class="devices" aria-label="Signed-in devices">
            {move || match devices.get() {
                None => {
                    let show = show.clone();
                    view! {
                        <button class="button small secondary show-devices" on:click=move |_| show()>
                            "Where you are signed in"
                        </button>
                    }
                    .erase()
                }
                Some(Err(message)) => {
                    view! { <p class="error">{format!("Could not list your devices: {message}")}</p> }
                        .erase()
                }
                Some(Ok(list)) => {
                    let now = now_ms();
                    let end = end.clone();
                    let list_len = list.len();
                    let everywhere = everywhere.clone();
                    view! {
                        <h2 class="devices-title">"Signed in on"</h2>
                        <ul class="device-list">
                            {list
                                .into_iter()
                                .map(|device| {
                                    let end = end.clone();
                                    let id = device.id.clone();
                                    let seen = time_ago(device.last_seen_at, now);
                                    let label = format!("Sign out {}", device.device);
                                    view! {
                                        <li class="device" data-session-id=device.id.clone()>
                                            <span class="device-name">{device.device.clone()}</span>
                                            <span class="device-seen">
                                                {if device.current {
                                                    "This device".to_owned()
                                                } else {
                                                    format!("Last used {seen}")
                                                }}
                                            </span>
                                            {(!device.current)
                                                .then(|| {
                                                    view! {
                                                        <button
                                                            class="button small secondary end-device"
                                                            aria-label=label
                                                            on:click=move |_| end(id.clone())
                                                        >
                                                            "Sign out"
                                                        </button>
                                                    }
                                                })}
                                        </li>
                                    }
                                })
                                .collect_view()}
                        </ul>
                        {(list_len > 1).then(|| view! {
                            <button
                                class="button small secondary sign-out-everywhere"
                                on:click=move |_| everywhere()
                            >
                                "Sign out everywhere"
                            </button>
                        })}
                    }
                    .erase()
                }
            }}
        </section>
    }
}

/// End this browser's session (everywhere it is open) and forget the cookie, then reload.
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

/// The ways to sign in this server offers: through the organization's provider, and/or by
/// picking a display name (a guest session), then back to this page.
#[component]
pub fn SignIn() -> impl IntoView {
    let choices = use_context::<crate::app::SignInChoices>();
    let return_to = here();
    view! {
        <Suspense fallback=|| ()>
            {
                let return_to = return_to.clone();
                move || {
                    let return_to = return_to.clone();
                    Suspend::new(async move {
                        let options = match choices {
                            Some(choices) => choices.0.await,
                            None => SignInOptions::default(),
                        };
                        sign_in_card(options, &return_to)
                    })
                }
            }
        </Suspense>
    }
}

fn sign_in_card(options: SignInOptions, return_to: &str) -> AnyView {
    let provider = options.provider.map(|name| {
        let href = SignInOptions::provider_start(return_to);
        view! {
            <div class="panel sign-in-provider">
                <a class="button" href=href rel="external">{format!("Sign in with {name}")}</a>
            </div>
        }
    });
    let guests = options.guests.then(|| {
        view! {
            <NameForm
                initial=String::new()
                label="Your name, as others will see it"
                button="Sign in"
                form_class="panel sign-in"
            />
        }
    });
    let neither = (provider.is_none() && guests.is_none()).then(|| {
        view! {
            <p class="panel sign-in-elsewhere">
                "To take part, open Rally from your organization's app: it signs you in."
            </p>
        }
    });
    view! { {provider} {guests} {neither} }.erase()
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
    let field = NodeRef::new();
    keep_typed(field, name);
    let ready = interactive();
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
                value=name.get_untracked()
                node_ref=field
                on:input=move |ev| name.set(event_target_value(&ev))
            />
            <button class="button" type="submit" disabled=move || !ready.get()>{button}</button>
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        </form>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_ago_read_plainly() {
        let at = |ms: u64| Timestamp::from_unix_nanos(ms * 1_000_000);
        let minute = 60_000;
        let cases = [
            (0, "just now"),
            (59_999, "just now"),
            (minute, "1 minute ago"),
            (59 * minute, "59 minutes ago"),
            (60 * minute, "1 hour ago"),
            (47 * 60 * minute, "47 hours ago"),
            (48 * 60 * minute, "2 days ago"),
        ];
        for (elapsed, expected) in cases {
            assert_eq!(
                time_ago(at(1_000_000_000), 1_000_000_000 + elapsed),
                expected
            );
        }
        assert_eq!(
            time_ago(at(5_000), 1_000),
            "just now",
            "a clock behind the server's"
        );
    }
}
