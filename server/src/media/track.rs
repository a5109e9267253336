//! The packet path: one forwarding task per published track reads the publisher's RTP and writes
//! it to the current list of receiving tracks, and one task per received track passes the
//! subscriber's keyframe requests to the session. The session changes who receives what by
//! swapping the list ([`Targets`]); it never touches packets itself.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::feedback::is_keyframe_request;
use super::forward::TrackId;
use crate::stats::OpsCounters;

/// What the packet path tells its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackEvent {
    /// A publisher's track ended (its forwarding task stopped).
    Ended(TrackId),
    /// A subscriber asked for a keyframe of a track it receives.
    KeyframeWanted(TrackId),
}

/// Where the packet path's events go.
pub type TrackEvents = Arc<dyn Fn(TrackEvent) + Send + Sync>;

/// Where a forwarding task writes one track for one subscriber.
pub struct Downstream {
    pub local: Arc<TrackLocalStaticRTP>,
    pub ssrc: u32,
    /// The payload type negotiated for this codec on the subscriber's connection; 0 until the
    /// subscriber answered and its connection is up (nothing is sent before: there is no SRTP
    /// context to send with).
    pub payload_type: AtomicU8,
}

pub type Targets = Arc<RwLock<Arc<[Arc<Downstream>]>>>;

/// The per-packet path: read the publisher's RTP and write it to every current subscriber.
pub async fn forward(
    remote: Arc<dyn TrackRemote>,
    targets: Targets,
    track: TrackId,
    events: TrackEvents,
    ops: Arc<OpsCounters>,
) {
    let received = metrics::counter!("rally_media_rtp_packets_received_total");
    let forwarded = metrics::counter!("rally_media_rtp_packets_forwarded_total");
    let forwarded_bytes = metrics::counter!("rally_media_rtp_bytes_forwarded_total");
    while let Some(event) = remote.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(mut packet) => {
                received.increment(1);
                // Header extension ids are negotiated per connection; the publisher's would mean
                // something else (or nothing) on a subscriber's, so none are forwarded.
                packet.header.extension = false;
                packet.header.extensions.clear();
                packet.header.extension_profile = 0;
                let list = targets.read().expect("targets lock").clone();
                let size = packet.payload.len() as u64 + 12;
                for target in list.iter() {
                    let payload_type = target.payload_type.load(Ordering::Relaxed);
                    if payload_type == 0 {
                        continue;
                    }
                    let mut copy = packet.clone();
                    copy.header.ssrc = target.ssrc;
                    copy.header.payload_type = payload_type;
                    if target.local.write_rtp(copy).await.is_ok() {
                        forwarded.increment(1);
                        forwarded_bytes.increment(size);
                        ops.media_packets.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => break,
            _ => {}
        }
    }
    events(TrackEvent::Ended(track));
}

/// Pass a subscriber's keyframe requests for one track to its session.
pub async fn relay_feedback(local: Arc<TrackLocalStaticRTP>, track: TrackId, events: TrackEvents) {
    while let Some(event) = local.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
            events(TrackEvent::KeyframeWanted(track));
        }
    }
}
