//! Inside the live room: joining, watching whoever is live, going live with camera and
//! microphone, muting, stopping, leaving — the signaling over the page's WebSocket and what a
//! person sees meanwhile. It loads when someone first joins (see [`super::media`]): [`in_room`]
//! is, in a `cargo leptos build --split` site, the door to WebAssembly of its own, and it loads
//! the browser's media engine the same way before the first join (`client::later_code`).

use std::rc::Rc;

use leptos::prelude::*;
use send_wrapper::SendWrapper;

use super::media::{Live, Phase, Room};
use crate::client::media::{CandidateSink, LocalCandidate, Quality};
use crate::client::{BrowserIo, Connection, ConnectionStatus, MediaEngine, MediaPush, Output};
use crate::pages::erase::Erase;
use crate::protocol::campaign::CampaignRef;
use crate::protocol::media::{
    IceCandidate, MediaJoin, MediaJoined, MediaKind, Publisher, SessionDescription,
};
use crate::protocol::{ClientRequest, ErrorBody};

crate::loaded_later! {
    /// The room from inside, once its code has arrived: loads the media engine on the first
    /// join, then joins.
    in_room: pub(super) fn in_room(room: Room) -> AnyView {
        if room.engine.with_value(Option::is_none) {
            let load_engine = room
                .browser
                .with_value(|b| b.as_ref().map(|b| Rc::clone(&b.load_engine)));
            if let Some(load_engine) = load_engine {
                let engine = load_engine().await?;
                room.engine.set_value(Some(SendWrapper::new(engine)));
            }
        }
        Ok(view! { <InRoom room/> }.erase())
    }
}

#[component]
fn InRoom(room: Room) -> impl IntoView {
    room.join();
    // A media session ends with its connection.
    let status = room
        .browser
        .with_value(|b| b.as_ref().map(|b| b.connection.status));
    if let Some(status) = status {
        Effect::new(move |_| {
            let connected = matches!(status.get(), ConnectionStatus::Connected);
            if !connected && room.phase.get_untracked() != Phase::Out {
                room.teardown();
                room.error.set(Some(
                    "The connection to the server dropped; join the live room again.".into(),
                ));
            }
        });
    }
    // Show each publisher's stream once its tile exists.
    Effect::new(move |_| {
        let ids: Vec<String> = room
            .publishers
            .with(|ps| ps.iter().map(|p| p.participant_id.clone()).collect());
        if let Some(h) = room.handles() {
            for id in ids {
                h.engine.attach_remote(&id);
            }
        }
    });
    on_cleanup(move || {
        if room.phase.get_untracked() != Phase::Out {
            room.leave();
        }
    });
    let joining =
        || view! { <p class="live-now joining" role="status">"Joining the live room…"</p> };
    view! {
        <Show when=move || room.phase.get() == Phase::In fallback=joining>
            {tiles(room)}
            <Show when=move || room.can_publish.get()>{publish_controls(room)}</Show>
            <Show when=move || room.quality.get() != Quality::Unknown>
                <p class="quality">"Connection: " <span>{move || room.quality.get().as_str()}</span></p>
            </Show>
            <button class="button small leave-live" on:click=move |_| room.leave()>"Leave the live room"</button>
        </Show>
    }
}

/// What the room's methods use of the browser.
struct Handles {
    connection: Connection,
    engine: Rc<dyn MediaEngine>,
    io: Rc<dyn BrowserIo>,
}

impl Room {
    /// The connection, the engine and the browser's timers: once the engine is loaded.
    fn handles(&self) -> Option<Handles> {
        let engine = self
            .engine
            .with_value(|e| e.as_ref().map(|e| Rc::clone(e)))?;
        self.browser.with_value(|b| {
            b.as_ref().map(|b| Handles {
                connection: b.connection.clone(),
                engine,
                io: b.io.clone(),
            })
        })
    }

    fn fail(&self, what: &str, error: ErrorBody) {
        self.error.set(Some(format!("{what}: {}", error.message)));
    }

    fn candidates(&self) -> CandidateSink {
        let room = *self;
        Rc::new(move |c: LocalCandidate| {
            let Some(h) = room.handles() else { return };
            let candidate = IceCandidate {
                campaign_id: room.campaign.get_value(),
                transport: c.transport,
                candidate: c.candidate,
                sdp_mid: c.sdp_mid,
                sdp_m_line_index: c.sdp_m_line_index,
            };
            // A refused candidate only means that path will not be tried.
            h.connection
                .request(ClientRequest::MediaCandidate(candidate), |_| {});
        })
    }

    fn join(&self) {
        let Some(h) = self.handles() else {
            self.teardown();
            self.error.set(Some(
                "Live video needs the page's script; reload the page.".into(),
            ));
            return;
        };
        let room = *self;
        self.error.set(None);
        self.phase.set(Phase::Joining);
        self.generation.update_value(|g| *g += 1);
        h.connection
            .set_media_listener(Some(Rc::new(move |output: &Output| room.on_push(output))));
        let join = ClientRequest::MediaJoin(MediaJoin {
            campaign_id: self.campaign.get_value(),
        });
        let generation = self.generation.get_value();
        h.connection.request(join, move |result| {
            // The room was closed, or the page left, while the reply was on its way (reading a
            // signal of a page that is gone would panic).
            if room.generation.try_get_value() != Some(generation) {
                return;
            }
            let joined = result.and_then(|payload| payload.read::<MediaJoined>());
            match joined {
                Ok(joined) => {
                    room.me.set(Some(joined.participant_id.clone()));
                    room.can_publish.set(joined.can_publish);
                    room.ice_servers.set_value(joined.ice_servers);
                    room.set_publishers(joined.publishers);
                    room.phase.set(Phase::In);
                    room.watch_stats();
                    if joined.can_publish {
                        room.refresh_devices();
                    }
                }
                Err(error) => {
                    room.teardown();
                    room.fail("Could not join the live room", error);
                }
            }
        });
    }

    fn set_publishers(&self, publishers: Vec<Publisher>) {
        let me = self.me.get_untracked();
        self.publishers.set(
            publishers
                .into_iter()
                .filter(|p| Some(&p.participant_id) != me.as_ref())
                .collect(),
        );
    }

    fn on_push(&self, output: &Output) {
        let Output::Media(push) = output else { return };
        let room = *self;
        match &**push {
            MediaPush::Offer(offer) => {
                let Some(h) = self.handles() else { return };
                let sdp = offer.sdp.clone();
                let ice = self.ice_servers.get_value();
                let sink = self.candidates();
                leptos::task::spawn_local(async move {
                    match h.engine.subscribe_offer(ice, sdp, sink).await {
                        Ok(answer) => {
                            let answer = ClientRequest::MediaAnswer(SessionDescription {
                                campaign_id: room.campaign.get_value(),
                                sdp: answer,
                            });
                            h.connection.request(answer, move |result| {
                                if let Err(error) = result {
                                    room.fail("Receiving video failed", error);
                                }
                            });
                        }
                        Err(err) => room
                            .error
                            .set(Some(format!("Receiving video failed: {err}"))),
                    }
                });
            }
            MediaPush::Tracks(tracks) => self.set_publishers(tracks.publishers.clone()),
            MediaPush::Ended(ended) => {
                self.teardown();
                self.error
                    .set(Some(format!("The live room ended: {}", ended.reason)));
            }
        }
    }

    fn refresh_devices(&self) {
        let Some(h) = self.handles() else { return };
        let room = *self;
        leptos::task::spawn_local(async move {
            let devices = h.engine.devices().await;
            room.devices.set(devices);
        });
    }

    fn go_live(&self) {
        let Some(h) = self.handles() else { return };
        let room = *self;
        self.error.set(None);
        self.live.set(Live::Starting);
        let camera = self.camera.get_untracked();
        let microphone = self.microphone.get_untracked();
        leptos::task::spawn_local(async move {
            if let Err(error) = h.engine.open_local(camera, microphone).await {
                room.live.set(Live::Off);
                room.error.set(Some(error.message()));
                return;
            }
            room.audio_on.set(true);
            room.video_on.set(true);
            room.refresh_devices(); // labels are visible once access was granted
            let offer = match h
                .engine
                .publish_offer(room.ice_servers.get_value(), room.candidates())
                .await
            {
                Ok(offer) => offer,
                Err(err) => {
                    h.engine.stop_publishing();
                    room.live.set(Live::Off);
                    room.error.set(Some(format!("Could not go live: {err}")));
                    return;
                }
            };
            let publish = ClientRequest::MediaPublish(SessionDescription {
                campaign_id: room.campaign.get_value(),
                sdp: offer,
            });
            let engine = h.engine.clone();
            h.connection.request(publish, move |result| {
                let answer = result
                    .and_then(|payload| payload.read::<SessionDescription>())
                    .map(|description| description.sdp);
                leptos::task::spawn_local(async move {
                    match answer {
                        Ok(sdp) => match engine.publish_answer(sdp).await {
                            Ok(()) => room.live.set(Live::On),
                            Err(err) => {
                                engine.stop_publishing();
                                room.live.set(Live::Off);
                                room.error.set(Some(format!("Could not go live: {err}")));
                            }
                        },
                        Err(error) => {
                            engine.stop_publishing();
                            room.live.set(Live::Off);
                            room.fail("Could not go live", error);
                        }
                    }
                });
            });
        });
    }

    /// Stop publishing but keep watching: the relay releases everything of this participant on
    /// leave, so leave and join again.
    fn stop_live(&self) {
        self.leave();
        self.join();
    }

    fn leave(&self) {
        if let Some(h) = self.handles() {
            let leave = ClientRequest::MediaLeave(CampaignRef {
                campaign_id: self.campaign.get_value(),
            });
            h.connection.request(leave, |_| {});
        }
        self.teardown();
    }

    /// Forget the session locally (the relay already did, or will on leave).
    fn teardown(&self) {
        if let Some(h) = self.handles() {
            h.connection.set_media_listener(None);
            h.engine.close();
        }
        self.generation.update_value(|g| *g += 1);
        self.phase.set(Phase::Out);
        self.live.set(Live::Off);
        self.publishers.set(Vec::new());
        self.me.set(None);
        self.quality.set(Quality::Unknown);
    }

    fn toggle(&self, kind: MediaKind) {
        let Some(h) = self.handles() else { return };
        let signal = match kind {
            MediaKind::Audio => self.audio_on,
            MediaKind::Video => self.video_on,
        };
        let enabled = !signal.get_untracked();
        h.engine.set_enabled(kind, enabled);
        signal.set(enabled);
    }

    /// Once a second while in the room: read `getStats()` for the quality hint.
    fn watch_stats(&self) {
        let generation = self.generation.get_value();
        self.schedule_stats(generation);
    }

    fn schedule_stats(&self, generation: u64) {
        let Some(h) = self.handles() else { return };
        let room = *self;
        h.io.set_timeout(
            1000,
            Box::new(move || {
                // Also when the page left the campaign (its signals are gone).
                if room.generation.try_get_value() != Some(generation) {
                    return;
                }
                let Some(h) = room.handles() else { return };
                leptos::task::spawn_local(async move {
                    let now = h.engine.stats().await;
                    if room.generation.try_get_value() != Some(generation) {
                        return;
                    }
                    let before = room.stats.get_untracked();
                    room.quality.set(Quality::judge(&before, &now));
                    room.stats.set(now);
                    room.schedule_stats(generation);
                });
            }),
        );
    }
}

/// One tile per remote publisher.
fn tiles(room: Room) -> AnyView {
    view! {
        <div class="tiles">
            <For each=move || room.publishers.get() key=|p| p.participant_id.clone() let:publisher>
                <figure class="tile" data-participant=publisher.participant_id.clone()>
                    <video id=format!("remote-{}", publisher.participant_id) autoplay playsinline></video>
                    <figcaption><span class="live-badge">"LIVE"</span> {publisher.display_name.clone()}</figcaption>
                </figure>
            </For>
            <Show when=move || room.publishers.with(Vec::is_empty)>
                <p class="muted nobody-live">
                    {move || if room.live.get() == Live::On {
                        "Nobody else is live right now."
                    } else {
                        "Nobody is live right now."
                    }}
                </p>
            </Show>
        </div>
    }
    .erase()
}

/// Preview, device choice, go live, mute, stop.
fn publish_controls(room: Room) -> AnyView {
    view! {
        <div class="go-live-panel">
            <figure class="tile own-tile" class:hidden=move || room.live.get() == Live::Off>
                <video
                    id="local-preview"
                    class:camera-off=move || !room.video_on.get()
                    autoplay
                    playsinline
                    muted
                ></video>
                <Show when=move || !room.video_on.get()>
                    <p class="camera-off-note">"Your camera is off"</p>
                </Show>
                <figcaption>
                    <Show when=move || room.live.get() == Live::On>
                        <span class="live-badge">"LIVE"</span>
                    </Show>
                    " You"
                    <Show when=move || !room.audio_on.get()>
                        <span class="muted-mic">" · microphone muted"</span>
                    </Show>
                </figcaption>
            </figure>
            <Show when=move || room.live.get() != Live::Off fallback=move || device_picker(room)>
                {live_controls(room)}
            </Show>
        </div>
    }
    .erase()
}

fn live_controls(room: Room) -> AnyView {
    view! {
        <button class="button small toggle-audio" on:click=move |_| room.toggle(MediaKind::Audio)>
            {move || if room.audio_on.get() { "Mute microphone" } else { "Unmute microphone" }}
        </button>
        <button class="button small toggle-video" on:click=move |_| room.toggle(MediaKind::Video)>
            {move || if room.video_on.get() { "Turn camera off" } else { "Turn camera on" }}
        </button>
        <button class="button small stop-live" on:click=move |_| room.stop_live()>"Stop"</button>
    }
    .erase()
}

fn device_picker(room: Room) -> AnyView {
    let options = move |kind: MediaKind| {
        room.devices
            .get()
            .into_iter()
            .filter(move |d| d.kind == kind)
            .enumerate()
            .map(move |(n, d)| {
                let label = if d.label.is_empty() {
                    let noun = if kind == MediaKind::Video {
                        "Camera"
                    } else {
                        "Microphone"
                    };
                    format!("{noun} {}", n + 1)
                } else {
                    d.label.clone()
                };
                view! { <option value=d.id.clone()>{label}</option> }
            })
            .collect_view()
    };
    let pick = |signal: RwSignal<Option<String>>| {
        move |ev: leptos::ev::Event| {
            let value = event_target_value(&ev);
            signal.set((!value.is_empty()).then_some(value));
        }
    };
    view! {
        <label>"Camera "
            <select class="camera-select" on:change=pick(room.camera)>
                <option value="">"Default"</option>
                {move || options(MediaKind::Video)}
            </select>
        </label>
        <label>"Microphone "
            <select class="microphone-select" on:change=pick(room.microphone)>
                <option value="">"Default"</option>
                {move || options(MediaKind::Audio)}
            </select>
        </label>
        <button class="button go-live" on:click=move |_| room.go_live()>"Go live"</button>
    }
    .erase()
}
