//! The live room of a campaign: who is live, and a button to join. Joining, watching, going live
//! and everything seen inside the room are in [`in_room`](super::in_room), whose code — with the
//! browser's WebRTC engine — loads when someone first joins: most visits to a campaign never do,
//! so in a `cargo leptos build --split` site that code is WebAssembly of its own, not part of
//! what a page needs before it can be edited (BENCHMARKS.md, "The live room loads when joined").
//!
//! The room's state lives here, as signals, so the page can say who is live and which phase the
//! room is in (`data-phase`, `data-publishing`) before and after that code arrives. Signaling runs
//! over the page's WebSocket ([`Connection`]); the browser's side of WebRTC is the
//! [`MediaEngine`] the WASM crate provides through a [`MediaLoader`].

use std::rc::Rc;

use leptos::prelude::*;
use send_wrapper::SendWrapper;

use super::in_room::in_room;
use crate::client::later_code::CodeNotLoaded;
use crate::client::media::{LocalFuture, MediaDevice, MediaStats, Quality};
use crate::client::{BrowserIo, Connection, MediaEngine, MediaLoader, SharedIo};
use crate::model::{CampaignId, Presence};
use crate::pages::erase::Erase;
use crate::protocol::media::{IceServer, Publisher};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Out,
    Joining,
    In,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Live {
    Off,
    Starting,
    On,
}

/// What the room uses of the browser: none while server-rendering.
pub(super) struct Browser {
    pub(super) connection: Connection,
    pub(super) io: Rc<dyn BrowserIo>,
    pub(super) load_engine: Rc<dyn Fn() -> LocalFuture<Result<Rc<dyn MediaEngine>, CodeNotLoaded>>>,
}

/// The live room's state, as signals; browser handles kept out of the reactive graph.
#[derive(Clone, Copy)]
pub(super) struct Room {
    pub(super) campaign: StoredValue<CampaignId>,
    pub(super) browser: StoredValue<Option<SendWrapper<Rc<Browser>>>>,
    /// Loaded when someone first joins.
    pub(super) engine: StoredValue<Option<SendWrapper<Rc<dyn MediaEngine>>>>,
    pub(super) phase: RwSignal<Phase>,
    pub(super) live: RwSignal<Live>,
    pub(super) error: RwSignal<Option<String>>,
    pub(super) me: RwSignal<Option<String>>,
    pub(super) can_publish: RwSignal<bool>,
    pub(super) ice_servers: StoredValue<Vec<IceServer>>,
    pub(super) publishers: RwSignal<Vec<Publisher>>,
    pub(super) devices: RwSignal<Vec<MediaDevice>>,
    pub(super) camera: RwSignal<Option<String>>,
    pub(super) microphone: RwSignal<Option<String>>,
    pub(super) audio_on: RwSignal<bool>,
    pub(super) video_on: RwSignal<bool>,
    pub(super) quality: RwSignal<Quality>,
    pub(super) stats: RwSignal<MediaStats>,
    /// Bumped on every join, so timers of an earlier session stop.
    pub(super) generation: StoredValue<u64>,
}

/// `presence` (the campaign's, which says who is live) lets the room say who is live before
/// joining.
#[component]
pub fn LiveRoom(campaign: CampaignId, presence: RwSignal<Option<Presence>>) -> impl IntoView {
    let connection = crate::client::use_connection();
    let io = use_context::<SharedIo>();
    let load_engine = use_context::<MediaLoader>();
    let browser = match (connection, io, load_engine) {
        (Some(connection), Some(io), Some(load_engine)) => {
            Some(SendWrapper::new(Rc::new(Browser {
                connection,
                io: (*io).clone(),
                load_engine: (*load_engine).clone(),
            })))
        }
        _ => None,
    };
    let room = Room {
        campaign: StoredValue::new(campaign),
        browser: StoredValue::new(browser),
        engine: StoredValue::new(None),
        phase: RwSignal::new(Phase::Out),
        live: RwSignal::new(Live::Off),
        error: RwSignal::new(None),
        me: RwSignal::new(None),
        can_publish: RwSignal::new(false),
        ice_servers: StoredValue::new(Vec::new()),
        publishers: RwSignal::new(Vec::new()),
        devices: RwSignal::new(Vec::new()),
        camera: RwSignal::new(None),
        microphone: RwSignal::new(None),
        audio_on: RwSignal::new(true),
        video_on: RwSignal::new(true),
        quality: RwSignal::new(Quality::Unknown),
        stats: RwSignal::new(MediaStats::default()),
        generation: StoredValue::new(0),
    };
    let joining =
        || view! { <p class="live-now joining" role="status">"Joining the live room…"</p> };
    let inside = move || {
        view! {
            <Suspense fallback=joining>
                {move || Suspend::new(async move {
                    match SendWrapper::new(in_room(room)).await {
                        Ok(inside) => inside,
                        Err(CodeNotLoaded) => {
                            room.phase.set(Phase::Out);
                            room.error.set(Some(
                                "The live room did not load (the connection may have dropped). Try again.".into(),
                            ));
                            ().erase()
                        }
                    }
                })}
            </Suspense>
        }
    };

    view! {
        <section
            class="panel live-room"
            data-phase=move || match room.phase.get() { Phase::Out => "out", Phase::Joining => "joining", Phase::In => "in" }
            data-publishing=move || match room.live.get() { Live::Off => "off", Live::Starting => "starting", Live::On => "on" }
            data-quality=move || room.quality.get().as_str()
            data-bytes-received=move || room.stats.get().bytes_received.to_string()
        >
            <h2>"Live room"</h2>
            {move || room.error.get().map(|e| view! { <p class="error media-error" role="alert">{e}</p> })}
            <Show when=move || room.phase.get() == Phase::Out fallback=inside>
                {outside(room, presence)}
            </Show>
        </section>
    }
    .erase()
}

/// Before joining: who is live (from presence), and a button that says what it does.
fn outside(room: Room, presence: RwSignal<Option<Presence>>) -> AnyView {
    let live = move || {
        presence.with(|p| {
            p.as_ref()
                .map(|p| {
                    p.viewers
                        .iter()
                        .filter(|v| v.live)
                        .map(|v| v.display_name.clone())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
    };
    let said = move || match live().as_slice() {
        [] => {
            "Nobody is live right now. Join to watch when someone goes live, or go live yourself."
                .to_owned()
        }
        [one] => format!("{one} is live."),
        [one, two] => format!("{one} and {two} are live."),
        [one, rest @ ..] => format!("{one} and {} others are live.", rest.len()),
    };
    let join = move |_| {
        if room.browser.with_value(Option::is_none) {
            room.error.set(Some(
                "Live video needs the page's script; reload the page.".into(),
            ));
            return;
        }
        room.error.set(None);
        room.phase.set(Phase::Joining);
    };
    view! {
        <p class="live-now" class:someone-live=move || !live().is_empty()>{said}</p>
        <button class="button join-live" on:click=join>
            {move || if live().is_empty() { "Join the live room" } else { "Watch" }}
        </button>
    }
    .erase()
}
