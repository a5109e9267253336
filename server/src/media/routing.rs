//! Which tracks each subscriber receives: the rest of [`Session`], carrying out what the
//! forwarding table decides — a publisher's track arriving or ending, a track added to or
//! removed from a subscriber's connection (then a new offer), a keyframe request sent upstream.

use std::sync::atomic::AtomicU8;
use std::sync::{Arc, RwLock};

use rally_app::protocol::media::{MediaKind, Transport};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::media_stream::MediaStreamTrack;

use super::call::ParticipantId;
use super::forward::{Action, TrackId};
use super::session::{DownTrack, Session, UpTrack};
use super::track::{forward, Downstream, Targets};

impl Session {
    pub(super) async fn track_arrived(
        &mut self,
        participant: ParticipantId,
        remote: Arc<dyn TrackRemote>,
    ) {
        if !self.peers.contains_key(&participant) {
            return;
        }
        let kind = match remote.kind().await {
            RtpCodecKind::Audio => MediaKind::Audio,
            _ => MediaKind::Video,
        };
        let Some(media_ssrc) = remote.ssrcs().await.first().copied() else {
            tracing::debug!(participant = %participant, "a published track has no SSRC; ignored");
            return;
        };
        let Some(codec) = remote.codec(media_ssrc).await else {
            tracing::debug!(participant = %participant, "a published track has no codec; ignored");
            return;
        };
        let name = remote.track_id().await;
        let (track, actions) = match self.table.publish(participant, name.clone(), kind) {
            Ok(published) => published,
            Err(err) => {
                tracing::debug!(participant = %participant, error = %err, "published track refused");
                return;
            }
        };
        let targets: Targets = Arc::new(RwLock::new(Arc::from(Vec::new())));
        let task = tokio::spawn(forward(
            remote.clone(),
            targets.clone(),
            track,
            self.track_events.clone(),
            self.ops.clone(),
        ))
        .abort_handle();
        self.up.insert(
            track,
            UpTrack {
                publisher: participant,
                remote,
                media_ssrc,
                codec,
                kind,
                name,
                targets,
                task,
            },
        );
        metrics::counter!("rally_media_tracks_published_total").increment(1);
        self.apply(actions).await;
    }

    pub(super) fn drop_up_track(&mut self, track: TrackId) {
        if let Some(up) = self.up.remove(&track) {
            up.task.abort();
        }
    }

    /// Carry out what the forwarding table decided.
    pub(super) async fn apply(&mut self, actions: Vec<Action>) {
        let mut offers = Vec::new();
        for action in actions {
            match action {
                Action::AddDownTrack { subscriber, track } => {
                    if self.add_down_track(subscriber, track).await {
                        offers.push(subscriber);
                    }
                }
                Action::RemoveDownTrack { subscriber, track } => {
                    if self.remove_down_track(subscriber, track).await {
                        offers.push(subscriber);
                    }
                }
                Action::RequestKeyframe { track } => {
                    if let Some(up) = self.up.get(&track) {
                        let pli = PictureLossIndication {
                            sender_ssrc: 0,
                            media_ssrc: up.media_ssrc,
                        };
                        if up.remote.write_rtcp(vec![Box::new(pli)]).await.is_ok() {
                            metrics::counter!("rally_media_keyframe_requests_total").increment(1);
                        }
                    }
                }
                Action::AnnounceTracks => self.announce(),
            }
        }
        offers.sort();
        offers.dedup();
        for subscriber in offers {
            self.offer(subscriber).await;
        }
    }

    /// Returns whether the subscriber needs a new offer.
    pub(super) async fn add_down_track(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
    ) -> bool {
        let Some(up) = self.up.get(&track) else {
            return false;
        };
        let Some(peer) = self.peers.get_mut(&subscriber) else {
            return false;
        };
        if peer.subscribe.is_none() {
            match self
                .factory
                .build(subscriber, Transport::Subscribe, self.peer_events.clone())
                .await
            {
                Ok(link) => peer.subscribe = Some(link),
                Err(err) => {
                    tracing::warn!(campaign = %self.campaign, error = %err, "cannot open a subscriber connection");
                    return false;
                }
            }
        }
        let link = peer.subscribe.as_ref().expect("made above");
        let ssrc = u32::from_le_bytes(crate::clock::random_bytes());
        let kind = match up.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            up.publisher.to_string(),
            format!("{}-{}", up.publisher, track.0),
            up.name.clone(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: up.codec.clone(),
                ..Default::default()
            }],
        )));
        let sender = match link
            .pc
            .add_track(local.clone() as Arc<dyn TrackLocal>)
            .await
        {
            Ok(sender) => sender,
            Err(err) => {
                tracing::warn!(campaign = %self.campaign, error = %err, "cannot add a track for a subscriber");
                return false;
            }
        };
        let target = Arc::new(Downstream {
            local,
            ssrc,
            payload_type: AtomicU8::new(0),
        });
        {
            let mut targets = up.targets.write().expect("targets lock");
            let mut list: Vec<Arc<Downstream>> = targets.iter().cloned().collect();
            list.push(target.clone());
            *targets = Arc::from(list);
        }
        peer.down.insert(
            track,
            DownTrack {
                target,
                sender,
                mime_type: up.codec.mime_type.clone(),
                negotiated: 0,
                feedback: None,
            },
        );
        peer.fresh.push(track);
        true
    }

    pub(super) async fn remove_down_track(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
    ) -> bool {
        let Some(peer) = self.peers.get_mut(&subscriber) else {
            return false;
        };
        let Some(down) = peer.down.remove(&track) else {
            return false;
        };
        if let Some(task) = down.feedback {
            task.abort();
        }
        if let Some(up) = self.up.get(&track) {
            let mut targets = up.targets.write().expect("targets lock");
            let list: Vec<Arc<Downstream>> = targets
                .iter()
                .filter(|t| !Arc::ptr_eq(t, &down.target))
                .cloned()
                .collect();
            *targets = Arc::from(list);
        }
        peer.fresh.retain(|t| *t != track);
        if let Some(link) = &peer.subscribe {
            if let Err(err) = link.pc.remove_track(&down.sender).await {
                tracing::debug!(error = %err, "removing a subscriber track failed");
            }
        }
        true
    }
}
