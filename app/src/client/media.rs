//! What the browser must provide for going live: cameras and microphones, and the two WebRTC peer
//! connections of a participant (see `protocol::media`). The `frontend` crate implements
//! [`MediaEngine`] with web-sys; the campaign page drives it and does the signaling.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use super::later_code::CodeNotLoaded;
use crate::protocol::media::{IceServer, MediaKind, Transport};

pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// A camera or microphone the browser offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDevice {
    pub kind: MediaKind,
    pub id: String,
    /// Empty until the user has granted access once (browsers hide labels before).
    pub label: String,
}

/// Why the browser gave no camera or microphone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceError {
    /// The user (or a policy) refused access.
    Denied,
    /// No such device, or none at all.
    NotFound,
    /// The device exists but another program holds it.
    InUse,
    Other(String),
}

impl DeviceError {
    /// What to tell the user.
    pub fn message(&self) -> String {
        match self {
            DeviceError::Denied => "The browser did not allow the camera or microphone. Allow them for this site (the icon in the address bar) and try again.".into(),
            DeviceError::NotFound => "No camera or microphone was found. Connect one, or pick another below.".into(),
            DeviceError::InUse => "The camera or microphone is in use by another program.".into(),
            DeviceError::Other(detail) => format!("The camera or microphone could not be opened: {detail}"),
        }
    }
}

/// One ICE candidate the browser found, to trickle with `media:candidate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCandidate {
    pub transport: Transport,
    pub candidate: String,
    pub sdp_mid: Option<String>,
    pub sdp_m_line_index: Option<u16>,
}

pub type CandidateSink = Rc<dyn Fn(LocalCandidate)>;

/// Cumulative numbers from `getStats()` over both connections.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MediaStats {
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    /// Current round trip on the selected candidate pair, in milliseconds.
    pub round_trip_ms: Option<f64>,
}

/// A one-word verdict on the connection for the user, from two consecutive [`MediaStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Good,
    Fair,
    Poor,
    /// Nothing to judge yet (no media flowing).
    Unknown,
}

impl Quality {
    /// Loss over the interval and the round trip decide: under 2 % and 150 ms is good, under 8 %
    /// and 400 ms fair, anything worse poor.
    pub fn judge(before: &MediaStats, now: &MediaStats) -> Quality {
        let received = now.packets_received.saturating_sub(before.packets_received);
        let lost = now.packets_lost.saturating_sub(before.packets_lost);
        if received + lost == 0 && now.round_trip_ms.is_none() {
            return Quality::Unknown;
        }
        let loss = if received + lost == 0 {
            0.0
        } else {
            lost as f64 / (received + lost) as f64
        };
        let rtt = now.round_trip_ms.unwrap_or(0.0);
        if loss < 0.02 && rtt < 150.0 {
            Quality::Good
        } else if loss < 0.08 && rtt < 400.0 {
            Quality::Fair
        } else {
            Quality::Poor
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Fair => "fair",
            Quality::Poor => "poor",
            Quality::Unknown => "unknown",
        }
    }
}

/// The browser's media devices and peer connections.
pub trait MediaEngine {
    fn devices(&self) -> LocalFuture<Vec<MediaDevice>>;
    /// Open a camera and a microphone (`None`: the default one) and show them in
    /// `<video id="local-preview">`.
    fn open_local(
        &self,
        camera: Option<String>,
        microphone: Option<String>,
    ) -> LocalFuture<Result<(), DeviceError>>;
    /// Mute or unmute the local track of `kind` (it keeps flowing, as silence or black).
    fn set_enabled(&self, kind: MediaKind, enabled: bool);
    /// A new publish connection carrying the local tracks; returns its offer.
    fn publish_offer(
        &self,
        ice_servers: Vec<IceServer>,
        candidates: CandidateSink,
    ) -> LocalFuture<Result<String, String>>;
    fn publish_answer(&self, sdp: String) -> LocalFuture<Result<(), String>>;
    /// Apply the relay's offer to the subscribe connection (made on first use); returns the
    /// answer.
    fn subscribe_offer(
        &self,
        ice_servers: Vec<IceServer>,
        sdp: String,
        candidates: CandidateSink,
    ) -> LocalFuture<Result<String, String>>;
    /// Show publisher `participant_id`'s stream in `<video id="remote-{participant_id}">`, now
    /// or as soon as both exist.
    fn attach_remote(&self, participant_id: &str);
    fn stats(&self) -> LocalFuture<MediaStats>;
    /// Stop the local tracks and close the publish connection.
    fn stop_publishing(&self);
    /// Close everything: local tracks and both connections.
    fn close(&self);
}

/// How pages get the media engine: by loading it, on first use. Its code (WebRTC, cameras) is
/// WebAssembly of its own in a `cargo leptos build --split` site, which a person who never joins
/// a live room never downloads (see [`super::later_code`]). See [`super::SharedIo`] for why the
/// wrapper.
pub type MediaLoader = send_wrapper::SendWrapper<
    Rc<dyn Fn() -> LocalFuture<Result<Rc<dyn MediaEngine>, CodeNotLoaded>>>,
>;

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(received: u64, lost: u64, rtt: Option<f64>) -> MediaStats {
        MediaStats {
            packets_received: received,
            packets_lost: lost,
            round_trip_ms: rtt,
            ..Default::default()
        }
    }

    #[test]
    fn quality_follows_loss_and_round_trip() {
        let zero = MediaStats::default();
        assert_eq!(Quality::judge(&zero, &zero), Quality::Unknown);
        assert_eq!(
            Quality::judge(&zero, &stats(1000, 5, Some(20.0))),
            Quality::Good
        );
        assert_eq!(
            Quality::judge(&zero, &stats(1000, 50, Some(20.0))),
            Quality::Fair
        );
        assert_eq!(
            Quality::judge(&zero, &stats(1000, 200, Some(20.0))),
            Quality::Poor
        );
        assert_eq!(
            Quality::judge(&zero, &stats(1000, 0, Some(250.0))),
            Quality::Fair
        );
        // Only the interval counts: old losses are forgiven.
        assert_eq!(
            Quality::judge(&stats(1000, 200, None), &stats(2000, 201, Some(10.0))),
            Quality::Good
        );
    }
}
