//! The panels a person reaches for after reading and editing — the history, and who and what
//! has access (members, invite links, keys for other systems, webhooks) — load once the page is
//! interactive. Reading or editing a campaign needs none of their code, so in a site built with
//! `cargo leptos build --split` each group is WebAssembly of its own, fetched after the page has
//! hydrated: the download that stands between a person and editing is smaller (BENCHMARKS.md,
//! "The campaign page's panels load after it").
//!
//! So they are not in the server-rendered page. Hydrating needs a view's code at hand: a
//! `Suspend` still waiting for its code when the page hydrates would build fresh nodes beside
//! the server's. Each waits inside a `<Suspense>` of its own: without one, the wait would count
//! against the page's `<Suspense>`, which would swap the whole campaign for its fallback until
//! the code arrived. They come last in their columns, so only what is below them moves when they
//! arrive: the Activity list (empty on a fresh page), and on a narrow screen, where the columns
//! stack, the side column. The client-side-only build (trunk, which cannot split) runs the same
//! functions as plain async ones.
//!
//! If the code cannot be fetched (the connection dropped at that moment, a deploy replaced the
//! files), the split loader panics, and a panic stops the page's WebAssembly: the page then
//! needs a reload. `#[lazy]` in Leptos 0.8 offers no fallible variant; the window is the second
//! or so after the page becomes interactive.

use leptos::prelude::*;

use super::history::{HistoryFocus, HistoryPanel};
use super::invites::InvitePanel;
use super::keys::KeysPanel;
use super::live::CampaignModel;
use super::members::MembersPanel;
use super::webhooks::WebhooksPanel;
use crate::pages::before_hydration::interactive;

/// The history panel, once the page is interactive and its code has arrived.
#[component]
pub fn HistoryLater(model: CampaignModel, focus: HistoryFocus) -> impl IntoView {
    let hydrated = interactive();
    view! {
        <Suspense fallback=|| ()>
            {move || {
                hydrated
                    .get()
                    .then(|| Suspend::new(async move { history_panel(model, focus).await }))
            }}
        </Suspense>
    }
}

/// Members, invite links, keys and webhooks, once the page is interactive and their code has
/// arrived.
#[component]
pub fn AccessLater(model: CampaignModel) -> impl IntoView {
    let hydrated = interactive();
    view! {
        <Suspense fallback=|| ()>
            {move || {
                hydrated
                    .get()
                    .then(|| Suspend::new(async move { access_panels(model).await }))
            }}
        </Suspense>
    }
}

#[cfg_attr(not(feature = "csr"), lazy)]
async fn history_panel(model: CampaignModel, focus: HistoryFocus) -> AnyView {
    view! { <HistoryPanel model focus/> }.into_any()
}

#[cfg_attr(not(feature = "csr"), lazy)]
async fn access_panels(model: CampaignModel) -> AnyView {
    view! {
        <MembersPanel model/>
        <InvitePanel model/>
        <KeysPanel model/>
        <WebhooksPanel model/>
    }
    .into_any()
}
