//! The panels a person reaches for after reading and editing — the history, and who and what
//! has access (members, invite links, keys for other systems, webhooks) — and the settings
//! editor load once the page is interactive. Reading a campaign or editing its fields needs none
//! of their code, so in a site built with `cargo leptos build --split` each is WebAssembly of its
//! own, fetched after the page has hydrated: the download that stands between a person and
//! editing is smaller (BENCHMARKS.md, "The campaign page's panels load after it", "Ready within
//! 3 s").
//!
//! The settings are part of what a campaign is, so the page shows them from the start, read
//! only ([`SettingsPreview`], a few lines of code), and the editor takes their place when its
//! code arrives (it adds its controls below them: what follows moves down once). The history
//! and access panels are not in the server-rendered page at all. Hydrating needs a view's code
//! at hand: a `Suspend` still waiting for its code when the page hydrates would build fresh
//! nodes beside the server's. Each waits inside a `<Suspense>` of its own: without one, the
//! wait would count against the page's `<Suspense>`, which would swap the whole campaign for
//! its fallback until the code arrived. The history and access panels come last in their
//! columns, so only what is below them moves when they arrive: the Activity list (empty on a
//! fresh page), and on a narrow screen, where the columns stack, the side column. The
//! client-side-only build (trunk, which cannot split) runs the same functions as plain async
//! ones.
//!
//! If the code cannot be fetched (the connection dropped at that moment, a deploy replaced the
//! files), the panel says so in its place (below the read-only settings) with a button to try
//! again; the rest of the page goes on working ([`loaded_later!`](crate::loaded_later)).

use std::future::Future;
use std::sync::Arc;

use leptos::either::Either;
use leptos::prelude::*;
use send_wrapper::SendWrapper;

use super::config::{ConfigEditor, SettingsPreview};
use super::history::{HistoryFocus, HistoryPanel};
use super::invites::InvitePanel;
use super::keys::KeysPanel;
use super::live::CampaignModel;
use super::members::MembersPanel;
use super::webhooks::WebhooksPanel;
use crate::client::later_code::CodeNotLoaded;
use crate::client::SharedIo;
use crate::pages::erase::Erase;

/// The history panel, once the page is interactive and its code has arrived.
#[component]
pub fn HistoryLater(model: CampaignModel, focus: HistoryFocus) -> impl IntoView {
    view! { <Later what="history" label="The history" load=move || history_panel(model, focus)/> }
}

/// The settings editor once the page is interactive and its code has arrived; the settings,
/// read only, until then.
#[component]
pub fn SettingsLater(model: CampaignModel) -> impl IntoView {
    view! {
        <Later
            what="settings"
            label="The settings editor"
            load=move || settings_editor(model)
            placeholder=move || view! { <SettingsPreview model/> }.erase()
        />
    }
}

/// Members, invite links, keys and webhooks, once the page is interactive and their code has
/// arrived.
#[component]
pub fn AccessLater(model: CampaignModel) -> impl IntoView {
    view! {
        <Later what="access" label="Members, invite links, keys and webhooks" load=move || access_panels(model)/>
    }
}

/// Shows what `load` brings once the page is interactive — `placeholder` before that (also in
/// the server-rendered page) and while the code is on its way; if the code did not arrive, says
/// so below the placeholder (`label` names what is missing, `what` is for tests), with a button
/// that loads it again.
#[component]
fn Later<L, F>(
    what: &'static str,
    label: &'static str,
    load: L,
    #[prop(optional, into)] placeholder: ViewFn,
) -> impl IntoView
where
    L: Fn() -> F + Send + Sync + 'static,
    F: Future<Output = Result<AnyView, CodeNotLoaded>> + 'static,
{
    let settled = page_settled();
    let attempt = RwSignal::new(0u32);
    let load = Arc::new(load);
    let waiting = placeholder.clone();
    view! {
        <Suspense fallback=move || waiting.run()>
            {move || {
                attempt.track();
                if !settled.get() {
                    return Either::Left(placeholder.run());
                }
                let load = Arc::clone(&load);
                let placeholder = placeholder.clone();
                Either::Right(Suspend::new(async move {
                    match SendWrapper::new(load()).await {
                        Ok(view) => view,
                        Err(CodeNotLoaded) => view! {
                            {placeholder.run()}
                            <p class="panel load-failed" data-part=what role="alert">
                                {label} " did not load (the connection may have dropped). "
                                <button class="button small secondary load-again" on:click=move |_| attempt.update(|n| *n += 1)>
                                    "Try again"
                                </button>
                            </p>
                        }
                        .erase(),
                    }
                }))
            }}
        </Suspense>
    }
}

/// False in the server-rendered page; true one task after this part of the page hydrated.
/// Starting to fetch code takes the main thread a while on a slow phone (tens of requests for
/// the split files and the pieces they share): waiting one task lets the page finish hydrating
/// and take a first keystroke before that.
fn page_settled() -> Signal<bool> {
    let settled = RwSignal::new(false);
    let io = use_context::<SharedIo>();
    Effect::new(move |_| match &io {
        Some(io) => io.set_timeout(0, Box::new(move || _ = settled.try_set(true))),
        None => settled.set(true),
    });
    settled.into()
}

crate::loaded_later! {
    history_panel: fn history_panel(model: CampaignModel, focus: HistoryFocus) -> AnyView {
        Ok(view! { <HistoryPanel model focus/> }.erase())
    }
}

crate::loaded_later! {
    settings_editor: fn settings_editor(model: CampaignModel) -> AnyView {
        Ok(view! { <ConfigEditor model/> }.erase())
    }
}

crate::loaded_later! {
    access_panels: fn access_panels(model: CampaignModel) -> AnyView {
        Ok(view! {
            <MembersPanel model/>
            <InvitePanel model/>
            <KeysPanel model/>
            <WebhooksPanel model/>
        }
        .erase())
    }
}
