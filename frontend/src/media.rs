//! [`MediaEngine`] on web-sys: `getUserMedia` for camera and microphone, and the participant's
//! two `RTCPeerConnection`s with the relay (publish and subscribe; see `protocol::media`).
//!
//! Dictionaries (constraints, configuration, descriptions) are built as JSON and handed to the
//! browser as plain objects, which is what the WebIDL bindings accept anyway; it keeps the list
//! of web-sys features short.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Array, Reflect};
use rally_app::client::media::{
    CandidateSink, DeviceError, LocalCandidate, LocalFuture, MediaDevice, MediaEngine, MediaStats,
};
use rally_app::protocol::media::{IceServer, MediaKind, Transport};
use serde_json::json;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MediaStream, MediaStreamConstraints, MediaStreamTrack, RtcConfiguration, RtcPeerConnection,
    RtcSessionDescriptionInit,
};

#[derive(Clone, Default)]
pub struct WebMedia(Rc<Inner>);

#[derive(Default)]
struct Inner {
    local: RefCell<Option<MediaStream>>,
    publish: RefCell<Option<Rc<Peer>>>,
    subscribe: RefCell<Option<Rc<Peer>>>,
    /// Remote streams by publisher (their stream id is the publisher's participant id).
    remote: RefCell<HashMap<String, MediaStream>>,
}

/// One peer connection and the callbacks it holds.
struct Peer {
    pc: RtcPeerConnection,
    /// Candidates found before the relay knows this connection; sent once it does.
    held: RefCell<Vec<LocalCandidate>>,
    release: Cell<bool>,
    sink: CandidateSink,
    _on_candidate: RefCell<Option<Closure<dyn FnMut(JsValue)>>>,
    _on_track: RefCell<Option<Closure<dyn FnMut(JsValue)>>>,
}

impl Peer {
    fn candidate(&self, candidate: LocalCandidate) {
        if self.release.get() {
            (self.sink)(candidate);
        } else {
            self.held.borrow_mut().push(candidate);
        }
    }

    /// The relay has this connection's description: send what was held, and everything after.
    fn release(&self) {
        self.release.set(true);
        for candidate in self.held.borrow_mut().drain(..) {
            (self.sink)(candidate);
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.pc.set_onicecandidate(None);
        self.pc.set_ontrack(None);
        self.pc.close();
    }
}

fn js_error(value: JsValue) -> String {
    Reflect::get(&value, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .or_else(|| value.as_string())
        .unwrap_or_else(|| "unknown browser error".into())
}

fn object<T: JsCast>(json: serde_json::Value) -> T {
    js_sys::JSON::parse(&json.to_string())
        .expect("serde_json writes JSON")
        .unchecked_into()
}

fn get(value: &JsValue, key: &str) -> JsValue {
    Reflect::get(value, &key.into()).unwrap_or(JsValue::UNDEFINED)
}

fn get_u64(value: &JsValue, key: &str) -> u64 {
    get(value, key).as_f64().unwrap_or(0.0).max(0.0) as u64
}

fn video_element(id: &str) -> Option<web_sys::Element> {
    web_sys::window()?.document()?.get_element_by_id(id)
}

/// Show `stream` in the `<video>` with `id` (unless it already does) and start playing.
fn show(id: &str, stream: Option<&MediaStream>) {
    let Some(element) = video_element(id) else {
        return;
    };
    let value: JsValue = stream.map_or(JsValue::NULL, |s| s.clone().into());
    if get(&element, "srcObject") == value {
        return;
    }
    let _ = Reflect::set(&element, &"srcObject".into(), &value);
    if stream.is_some() {
        if let Ok(play) = get(&element, "play").dyn_into::<js_sys::Function>() {
            // play() rejects when a newer srcObject interrupts it; that is expected, not an error.
            if let Ok(promise) = play
                .call0(&element)
                .and_then(|p| p.dyn_into::<js_sys::Promise>())
            {
                IGNORE.with(|ignore| {
                    let _ = promise.catch(ignore);
                });
            }
        }
    }
}

thread_local! {
    static IGNORE: Closure<dyn FnMut(JsValue)> = Closure::new(|_: JsValue| {});
}

fn new_peer(
    ice_servers: &[IceServer],
    transport: Transport,
    sink: CandidateSink,
) -> Result<Rc<Peer>, String> {
    let config: RtcConfiguration = object(json!({ "iceServers": ice_servers }));
    let pc = RtcPeerConnection::new_with_configuration(&config).map_err(js_error)?;
    let peer = Rc::new(Peer {
        pc,
        held: RefCell::new(Vec::new()),
        release: Cell::new(false),
        sink,
        _on_candidate: RefCell::new(None),
        _on_track: RefCell::new(None),
    });
    let weak = Rc::downgrade(&peer);
    let on_candidate = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
        let candidate = get(&event, "candidate");
        if candidate.is_null() || candidate.is_undefined() {
            return; // gathering finished
        }
        let Some(peer) = weak.upgrade() else { return };
        peer.candidate(LocalCandidate {
            transport,
            candidate: get(&candidate, "candidate").as_string().unwrap_or_default(),
            sdp_mid: get(&candidate, "sdpMid").as_string(),
            sdp_m_line_index: get(&candidate, "sdpMLineIndex").as_f64().map(|i| i as u16),
        });
    });
    peer.pc
        .set_onicecandidate(Some(on_candidate.as_ref().unchecked_ref()));
    *peer._on_candidate.borrow_mut() = Some(on_candidate);
    Ok(peer)
}

async fn describe(
    pc: &RtcPeerConnection,
    kind: &str,
    sdp: String,
    remote: bool,
) -> Result<(), String> {
    let init: RtcSessionDescriptionInit = object(json!({ "type": kind, "sdp": sdp }));
    let promise = if remote {
        pc.set_remote_description(&init)
    } else {
        pc.set_local_description(&init)
    };
    JsFuture::from(promise).await.map(|_| ()).map_err(js_error)
}

async fn local_description(pc: &RtcPeerConnection, offer: bool) -> Result<String, String> {
    let created = JsFuture::from(if offer {
        pc.create_offer()
    } else {
        pc.create_answer()
    })
    .await
    .map_err(js_error)?;
    let sdp = get(&created, "sdp").as_string().unwrap_or_default();
    describe(
        pc,
        if offer { "offer" } else { "answer" },
        sdp.clone(),
        false,
    )
    .await?;
    Ok(pc.local_description().map(|d| d.sdp()).unwrap_or(sdp))
}

impl WebMedia {
    fn stop_local(&self) {
        if let Some(stream) = self.0.local.borrow_mut().take() {
            for track in stream.get_tracks().iter() {
                track.unchecked_into::<MediaStreamTrack>().stop();
            }
        }
        show("local-preview", None);
    }
}

impl MediaEngine for WebMedia {
    fn devices(&self) -> LocalFuture<Vec<MediaDevice>> {
        Box::pin(async move {
            let Some(devices) = web_sys::window().and_then(|w| w.navigator().media_devices().ok())
            else {
                return Vec::new();
            };
            let Ok(promise) = devices.enumerate_devices() else {
                return Vec::new();
            };
            let Ok(list) = JsFuture::from(promise).await else {
                return Vec::new();
            };
            Array::from(&list)
                .iter()
                .filter_map(|device| {
                    let kind = match get(&device, "kind").as_string()?.as_str() {
                        "videoinput" => MediaKind::Video,
                        "audioinput" => MediaKind::Audio,
                        _ => return None,
                    };
                    Some(MediaDevice {
                        kind,
                        id: get(&device, "deviceId").as_string()?,
                        label: get(&device, "label").as_string().unwrap_or_default(),
                    })
                })
                .collect()
        })
    }

    fn open_local(
        &self,
        camera: Option<String>,
        microphone: Option<String>,
    ) -> LocalFuture<Result<(), DeviceError>> {
        let this = self.clone();
        Box::pin(async move {
            let devices = web_sys::window()
                .and_then(|w| w.navigator().media_devices().ok())
                .ok_or_else(|| {
                    DeviceError::Other(
                        "this browser (or an insecure page) has no media devices".into(),
                    )
                })?;
            let pick = |id: Option<String>| match id {
                Some(id) => json!({ "deviceId": { "exact": id } }),
                None => json!(true),
            };
            let constraints: MediaStreamConstraints =
                object(json!({ "video": pick(camera), "audio": pick(microphone) }));
            let promise = devices
                .get_user_media_with_constraints(&constraints)
                .map_err(|e| DeviceError::Other(js_error(e)))?;
            let stream: MediaStream = JsFuture::from(promise)
                .await
                .map_err(|err| match get(&err, "name").as_string().as_deref() {
                    Some("NotAllowedError" | "SecurityError") => DeviceError::Denied,
                    Some("NotFoundError" | "OverconstrainedError") => DeviceError::NotFound,
                    Some("NotReadableError" | "AbortError") => DeviceError::InUse,
                    _ => DeviceError::Other(js_error(err)),
                })?
                .unchecked_into();
            this.stop_local();
            show("local-preview", Some(&stream));
            *this.0.local.borrow_mut() = Some(stream);
            Ok(())
        })
    }

    fn set_enabled(&self, kind: MediaKind, enabled: bool) {
        let wanted = match kind {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        };
        if let Some(stream) = self.0.local.borrow().as_ref() {
            for track in stream.get_tracks().iter() {
                let track: MediaStreamTrack = track.unchecked_into();
                if track.kind() == wanted {
                    track.set_enabled(enabled);
                }
            }
        }
    }

    fn publish_offer(
        &self,
        ice_servers: Vec<IceServer>,
        candidates: CandidateSink,
    ) -> LocalFuture<Result<String, String>> {
        let this = self.clone();
        Box::pin(async move {
            let stream = this
                .0
                .local
                .borrow()
                .clone()
                .ok_or("the camera and microphone are not open")?;
            let peer = new_peer(&ice_servers, Transport::Publish, candidates)?;
            for track in stream.get_tracks().iter() {
                peer.pc
                    .add_track_0(&track.unchecked_into::<MediaStreamTrack>(), &stream);
            }
            *this.0.publish.borrow_mut() = Some(peer.clone());
            local_description(&peer.pc, true).await
        })
    }

    fn publish_answer(&self, sdp: String) -> LocalFuture<Result<(), String>> {
        let peer = self.0.publish.borrow().clone();
        Box::pin(async move {
            let peer = peer.ok_or("not publishing")?;
            describe(&peer.pc, "answer", sdp, true).await?;
            peer.release();
            Ok(())
        })
    }

    fn subscribe_offer(
        &self,
        ice_servers: Vec<IceServer>,
        sdp: String,
        candidates: CandidateSink,
    ) -> LocalFuture<Result<String, String>> {
        let this = self.clone();
        Box::pin(async move {
            let existing = this.0.subscribe.borrow().clone();
            let peer = match existing {
                Some(peer) => peer,
                None => {
                    let peer = new_peer(&ice_servers, Transport::Subscribe, candidates)?;
                    let weak = Rc::downgrade(&this.0);
                    let on_track = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                        let Some(inner) = weak.upgrade() else { return };
                        let streams = Array::from(&get(&event, "streams"));
                        let Ok(stream) = streams.get(0).dyn_into::<MediaStream>() else {
                            return;
                        };
                        let publisher = stream.id();
                        show(&format!("remote-{publisher}"), Some(&stream));
                        inner.remote.borrow_mut().insert(publisher, stream);
                    });
                    peer.pc.set_ontrack(Some(on_track.as_ref().unchecked_ref()));
                    *peer._on_track.borrow_mut() = Some(on_track);
                    *this.0.subscribe.borrow_mut() = Some(peer.clone());
                    peer
                }
            };
            describe(&peer.pc, "offer", sdp, true).await?;
            let answer = local_description(&peer.pc, false).await?;
            // The answer goes out right after this returns, ahead of any candidate sent now.
            peer.release();
            Ok(answer)
        })
    }

    fn attach_remote(&self, participant_id: &str) {
        let stream = self.0.remote.borrow().get(participant_id).cloned();
        if let Some(stream) = stream {
            show(&format!("remote-{participant_id}"), Some(&stream));
        }
    }

    fn stats(&self) -> LocalFuture<MediaStats> {
        let peers: Vec<Rc<Peer>> = [&self.0.publish, &self.0.subscribe]
            .iter()
            .filter_map(|p| p.borrow().clone())
            .collect();
        Box::pin(async move {
            let mut stats = MediaStats::default();
            for peer in peers {
                let Ok(report) = JsFuture::from(peer.pc.get_stats()).await else {
                    continue;
                };
                let Ok(values) = get(&report, "values").dyn_into::<js_sys::Function>() else {
                    continue;
                };
                let Ok(iterator) = values.call0(&report) else {
                    continue;
                };
                let Ok(Some(entries)) = js_sys::try_iter(&iterator) else {
                    continue;
                };
                for entry in entries.flatten() {
                    match get(&entry, "type").as_string().as_deref() {
                        Some("inbound-rtp") => {
                            stats.bytes_received += get_u64(&entry, "bytesReceived");
                            stats.packets_received += get_u64(&entry, "packetsReceived");
                            stats.packets_lost += get_u64(&entry, "packetsLost");
                        }
                        Some("outbound-rtp") => stats.bytes_sent += get_u64(&entry, "bytesSent"),
                        Some("candidate-pair")
                            if get(&entry, "nominated").as_bool() == Some(true) =>
                        {
                            if let Some(rtt) = get(&entry, "currentRoundTripTime").as_f64() {
                                let ms = rtt * 1000.0;
                                stats.round_trip_ms =
                                    Some(stats.round_trip_ms.map_or(ms, |r: f64| r.max(ms)));
                            }
                        }
                        _ => {}
                    }
                }
            }
            stats
        })
    }

    fn stop_publishing(&self) {
        self.0.publish.borrow_mut().take();
        self.stop_local();
    }

    fn close(&self) {
        self.stop_publishing();
        self.0.subscribe.borrow_mut().take();
        self.0.remote.borrow_mut().clear();
    }
}
