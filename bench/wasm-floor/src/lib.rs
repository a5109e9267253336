//! The smallest page with what a live campaign page needs from its framework: a router, signals,
//! an input bound to state, a keyed list, and JSON from a WebSocket.
use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;
use serde::Deserialize;
use wasm_bindgen::prelude::*;

#[derive(Clone, Deserialize)]
struct State {
    title: String,
    status: String,
    features: Vec<String>,
    version: u64,
}

#[component]
fn Campaign() -> impl IntoView {
    let (state, set_state) = signal(None::<State>);
    let (draft, set_draft) = signal(String::new());
    let socket = web_sys::WebSocket::new("ws://localhost/ws").unwrap();
    let on_message =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
            if let Some(text) = e.data().as_string() {
                if let Ok(s) = serde_json::from_str::<State>(&text) {
                    set_state.set(Some(s));
                }
            }
        });
    socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    view! {
        <h1>{move || state.with(|s| s.as_ref().map(|s| s.title.clone()).unwrap_or_default())}</h1>
        <p>{move || state.with(|s| s.as_ref().map(|s| format!("{} v{}", s.status, s.version)))}</p>
        <input prop:value=draft on:input=move |ev| set_draft.set(event_target_value(&ev))/>
        <ul>
            <For each=move || state.with(|s| s.as_ref().map(|s| s.features.clone()).unwrap_or_default())
                key=|f| f.clone() let:f>
                <li>{f}</li>
            </For>
        </ul>
    }
}

#[component]
fn App() -> impl IntoView {
    view! {
        <Router>
            <Routes fallback=|| "Not found">
                <Route path=path!("/c/:id") view=Campaign/>
            </Routes>
        </Router>
    }
}

#[wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
}
