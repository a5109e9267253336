//! The relay's forwarding table: who is in a campaign's media session, what each publishes, which
//! tracks go to whom, and when to ask a publisher for a keyframe.
//!
//! Sans-IO: it owns no sockets, tasks or peer connections. The session shell
//! ([`super::session`]) feeds it what happened (joins, tracks, keyframe requests, the time) and
//! carries out the [`Action`]s it returns, so every rule here is tested without WebRTC.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rally_app::protocol::media::{
    MediaKind, PublishedTrack, Publisher, PARTICIPANTS_MAX, PUBLISHER_SLOTS,
    TRACKS_PER_PARTICIPANT_MAX,
};

use super::call::{MediaError, ParticipantId};

/// A published track, numbered by the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrackId(pub u64);

/// Least time between two keyframe requests sent to one publisher track. Keyframes are large;
/// a burst of subscribers joining (or a lossy one asking repeatedly) must not make the publisher
/// send nothing else. A request inside the interval is kept and sent when it ends.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start sending `track` to `subscriber` (add it to the subscribe connection, renegotiate).
    AddDownTrack {
        subscriber: ParticipantId,
        track: TrackId,
    },
    /// Stop sending `track` to `subscriber`.
    RemoveDownTrack {
        subscriber: ParticipantId,
        track: TrackId,
    },
    /// Ask the publisher of `track` for a keyframe (PLI upstream).
    RequestKeyframe { track: TrackId },
    /// Publishers or their tracks changed: tell every participant.
    AnnounceTracks,
}

#[derive(Debug)]
struct Participant {
    display_name: String,
    can_publish: bool,
    /// Tracks being sent to this participant.
    receiving: BTreeSet<TrackId>,
    /// Whether its subscribe connection is up (keyframes are only useful once it is).
    receiving_connected: bool,
}

#[derive(Debug)]
struct Track {
    publisher: ParticipantId,
    /// The publisher's own id for the track (from its SDP), shown to others.
    name: String,
    kind: MediaKind,
    last_keyframe_request: Option<Instant>,
    keyframe_pending: bool,
}

/// One campaign's media session, as data.
#[derive(Debug, Default)]
pub struct ForwardingTable {
    participants: BTreeMap<ParticipantId, Participant>,
    tracks: BTreeMap<TrackId, Track>,
    next_track: u64,
}

impl ForwardingTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    pub fn participants(&self) -> usize {
        self.participants.len()
    }

    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    pub fn contains(&self, participant: ParticipantId) -> bool {
        self.participants.contains_key(&participant)
    }

    pub fn can_publish(&self, participant: ParticipantId) -> Result<bool, MediaError> {
        self.participants
            .get(&participant)
            .map(|p| p.can_publish)
            .ok_or(MediaError::NotJoined)
    }

    /// Someone joins; they will receive every track already published.
    pub fn join(
        &mut self,
        participant: ParticipantId,
        display_name: String,
        can_publish: bool,
    ) -> Result<Vec<Action>, MediaError> {
        if self.participants.contains_key(&participant) {
            return Err(MediaError::AlreadyJoined);
        }
        if self.participants.len() >= PARTICIPANTS_MAX {
            return Err(MediaError::SessionFull);
        }
        // Watchers (anonymous visitors among them) leave room for those who may go live.
        let watchers = self
            .participants
            .values()
            .filter(|p| !p.can_publish)
            .count();
        if !can_publish && watchers >= PARTICIPANTS_MAX - PUBLISHER_SLOTS {
            return Err(MediaError::SessionFull);
        }
        let receiving: BTreeSet<TrackId> = self.tracks.keys().copied().collect();
        let actions = receiving
            .iter()
            .map(|&track| Action::AddDownTrack {
                subscriber: participant,
                track,
            })
            .collect();
        self.participants.insert(
            participant,
            Participant {
                display_name,
                can_publish,
                receiving,
                receiving_connected: false,
            },
        );
        Ok(actions)
    }

    /// Someone leaves: their tracks stop everywhere, nothing is sent to them any more.
    pub fn leave(&mut self, participant: ParticipantId) -> Vec<Action> {
        if self.participants.remove(&participant).is_none() {
            return Vec::new();
        }
        let theirs: Vec<TrackId> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.publisher == participant)
            .map(|(&id, _)| id)
            .collect();
        let mut actions = Vec::new();
        for track in &theirs {
            actions.extend(self.unpublish(*track));
        }
        actions.dedup();
        actions
    }

    /// Whether `participant` may publish `count` more tracks.
    pub fn check_publish(
        &self,
        participant: ParticipantId,
        count: usize,
    ) -> Result<(), MediaError> {
        let p = self
            .participants
            .get(&participant)
            .ok_or(MediaError::NotJoined)?;
        if !p.can_publish {
            return Err(MediaError::PublishForbidden);
        }
        let already = self
            .tracks
            .values()
            .filter(|t| t.publisher == participant)
            .count();
        if already + count > TRACKS_PER_PARTICIPANT_MAX {
            return Err(MediaError::TooManyTracks {
                max: TRACKS_PER_PARTICIPANT_MAX,
            });
        }
        Ok(())
    }

    /// A publisher's track arrived at the relay: forward it to everyone else.
    pub fn publish(
        &mut self,
        publisher: ParticipantId,
        name: String,
        kind: MediaKind,
    ) -> Result<(TrackId, Vec<Action>), MediaError> {
        self.check_publish(publisher, 1)?;
        let id = TrackId(self.next_track);
        self.next_track += 1;
        self.tracks.insert(
            id,
            Track {
                publisher,
                name,
                kind,
                last_keyframe_request: None,
                keyframe_pending: false,
            },
        );
        let mut actions = Vec::new();
        for (&pid, p) in self.participants.iter_mut() {
            if pid != publisher {
                p.receiving.insert(id);
                actions.push(Action::AddDownTrack {
                    subscriber: pid,
                    track: id,
                });
            }
        }
        actions.push(Action::AnnounceTracks);
        Ok((id, actions))
    }

    /// A track ended (the publisher stopped it, or left).
    pub fn unpublish(&mut self, track: TrackId) -> Vec<Action> {
        if self.tracks.remove(&track).is_none() {
            return Vec::new();
        }
        let mut actions = Vec::new();
        for (&pid, p) in self.participants.iter_mut() {
            if p.receiving.remove(&track) {
                actions.push(Action::RemoveDownTrack {
                    subscriber: pid,
                    track,
                });
            }
        }
        actions.push(Action::AnnounceTracks);
        actions
    }

    /// A subscriber's receiving connection came up: it needs a keyframe of every video track.
    pub fn receiving_connected(&mut self, subscriber: ParticipantId, now: Instant) -> Vec<Action> {
        let Some(p) = self.participants.get_mut(&subscriber) else {
            return Vec::new();
        };
        p.receiving_connected = true;
        let tracks: Vec<TrackId> = p.receiving.iter().copied().collect();
        self.keyframes_for(&tracks, now)
    }

    /// New tracks were negotiated on a subscriber's (already connected) receiving connection.
    pub fn tracks_negotiated(
        &mut self,
        subscriber: ParticipantId,
        tracks: &[TrackId],
        now: Instant,
    ) -> Vec<Action> {
        match self.participants.get(&subscriber) {
            Some(p) if p.receiving_connected => self.keyframes_for(tracks, now),
            _ => Vec::new(),
        }
    }

    fn keyframes_for(&mut self, tracks: &[TrackId], now: Instant) -> Vec<Action> {
        let video: Vec<TrackId> = tracks
            .iter()
            .copied()
            .filter(|t| {
                self.tracks
                    .get(t)
                    .is_some_and(|t| t.kind == MediaKind::Video)
            })
            .collect();
        video
            .into_iter()
            .flat_map(|t| self.keyframe_requested(t, now))
            .collect()
    }

    /// A subscriber (or the relay itself) wants a keyframe of `track`; rate limited per track.
    pub fn keyframe_requested(&mut self, track: TrackId, now: Instant) -> Vec<Action> {
        let Some(t) = self.tracks.get_mut(&track) else {
            return Vec::new();
        };
        match t.last_keyframe_request {
            Some(last) if now < last + KEYFRAME_INTERVAL => {
                t.keyframe_pending = true;
                Vec::new()
            }
            _ => {
                t.last_keyframe_request = Some(now);
                t.keyframe_pending = false;
                vec![Action::RequestKeyframe { track }]
            }
        }
    }

    /// When [`Self::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tracks
            .values()
            .filter(|t| t.keyframe_pending)
            .filter_map(|t| t.last_keyframe_request.map(|l| l + KEYFRAME_INTERVAL))
            .min()
    }

    /// Send the keyframe requests that waited for their interval.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        let due: Vec<TrackId> = self
            .tracks
            .iter()
            .filter(|(_, t)| {
                t.keyframe_pending
                    && t.last_keyframe_request
                        .is_none_or(|l| now >= l + KEYFRAME_INTERVAL)
            })
            .map(|(&id, _)| id)
            .collect();
        due.into_iter()
            .flat_map(|t| self.keyframe_requested(t, now))
            .collect()
    }

    /// The publisher of a track.
    pub fn publisher_of(&self, track: TrackId) -> Option<ParticipantId> {
        self.tracks.get(&track).map(|t| t.publisher)
    }

    /// Who is live and what they publish, for `media:tracks` and `media:join`.
    pub fn publishers(&self) -> Vec<Publisher> {
        let mut by_publisher: BTreeMap<ParticipantId, Vec<PublishedTrack>> = BTreeMap::new();
        for t in self.tracks.values() {
            by_publisher
                .entry(t.publisher)
                .or_default()
                .push(PublishedTrack {
                    track_id: t.name.clone(),
                    kind: t.kind,
                });
        }
        by_publisher
            .into_iter()
            .filter_map(|(pid, tracks)| {
                let p = self.participants.get(&pid)?;
                Some(Publisher {
                    participant_id: pid.to_string(),
                    display_name: p.display_name.clone(),
                    tracks,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ParticipantId = ParticipantId(1);
    const B: ParticipantId = ParticipantId(2);
    const C: ParticipantId = ParticipantId(3);

    fn table_with(ps: &[(ParticipantId, bool)]) -> ForwardingTable {
        let mut table = ForwardingTable::new();
        for &(p, can) in ps {
            table.join(p, format!("{p}"), can).unwrap();
        }
        table
    }

    #[test]
    fn a_published_track_goes_to_everyone_else_and_late_joiners() {
        let mut table = table_with(&[(A, true), (B, false)]);
        let (video, actions) = table.publish(A, "cam".into(), MediaKind::Video).unwrap();
        assert_eq!(
            actions,
            vec![
                Action::AddDownTrack {
                    subscriber: B,
                    track: video
                },
                Action::AnnounceTracks
            ]
        );
        let actions = table.join(C, "C".into(), false).unwrap();
        assert_eq!(
            actions,
            vec![Action::AddDownTrack {
                subscriber: C,
                track: video
            }]
        );
        assert_eq!(table.publishers().len(), 1);
        assert_eq!(table.publishers()[0].participant_id, "p1");
    }

    #[test]
    fn leaving_stops_every_track_of_the_leaver() {
        let mut table = table_with(&[(A, true), (B, true)]);
        let (audio, _) = table.publish(A, "mic".into(), MediaKind::Audio).unwrap();
        let (video, _) = table.publish(A, "cam".into(), MediaKind::Video).unwrap();
        let actions = table.leave(A);
        assert!(actions.contains(&Action::RemoveDownTrack {
            subscriber: B,
            track: audio
        }));
        assert!(actions.contains(&Action::RemoveDownTrack {
            subscriber: B,
            track: video
        }));
        assert_eq!(table.track_count(), 0);
        assert!(table.leave(A).is_empty(), "leaving twice does nothing");
    }

    #[test]
    fn bad_requests_are_typed_errors() {
        let mut table = table_with(&[(A, true), (B, false)]);
        assert_eq!(
            table.join(A, "again".into(), true),
            Err(MediaError::AlreadyJoined)
        );
        assert_eq!(
            table
                .publish(B, "cam".into(), MediaKind::Video)
                .unwrap_err(),
            MediaError::PublishForbidden
        );
        assert_eq!(
            table
                .publish(C, "cam".into(), MediaKind::Video)
                .unwrap_err(),
            MediaError::NotJoined
        );
        for i in 0..TRACKS_PER_PARTICIPANT_MAX {
            table.publish(A, format!("t{i}"), MediaKind::Audio).unwrap();
        }
        assert_eq!(
            table.check_publish(A, 1),
            Err(MediaError::TooManyTracks {
                max: TRACKS_PER_PARTICIPANT_MAX
            })
        );
        let mut full = ForwardingTable::new();
        for i in 0..(PARTICIPANTS_MAX - PUBLISHER_SLOTS) as u64 {
            full.join(ParticipantId(100 + i), "x".into(), false)
                .unwrap();
        }
        assert_eq!(
            full.join(ParticipantId(1), "late watcher".into(), false),
            Err(MediaError::SessionFull),
            "watchers cannot take the publishers' slots"
        );
        for i in 0..PUBLISHER_SLOTS as u64 {
            full.join(ParticipantId(10_000 + i), "editor".into(), true)
                .unwrap();
        }
        assert_eq!(
            full.join(ParticipantId(2), "late editor".into(), true),
            Err(MediaError::SessionFull)
        );
    }

    #[test]
    fn a_connected_subscriber_gets_a_keyframe_of_video_only() {
        let mut table = table_with(&[(A, true), (B, false)]);
        let (audio, _) = table.publish(A, "mic".into(), MediaKind::Audio).unwrap();
        let (video, _) = table.publish(A, "cam".into(), MediaKind::Video).unwrap();
        let now = Instant::now();
        assert!(
            table.tracks_negotiated(B, &[audio, video], now).is_empty(),
            "not connected yet: a keyframe now would be lost"
        );
        assert_eq!(
            table.receiving_connected(B, now),
            vec![Action::RequestKeyframe { track: video }]
        );
    }

    #[test]
    fn keyframe_requests_are_rate_limited_but_never_dropped() {
        let mut table = table_with(&[(A, true), (B, false)]);
        let (video, _) = table.publish(A, "cam".into(), MediaKind::Video).unwrap();
        let t0 = Instant::now();
        assert_eq!(
            table.keyframe_requested(video, t0),
            vec![Action::RequestKeyframe { track: video }]
        );
        assert!(table
            .keyframe_requested(video, t0 + Duration::from_millis(10))
            .is_empty());
        assert!(table
            .keyframe_requested(video, t0 + Duration::from_millis(20))
            .is_empty());
        assert_eq!(table.poll_timeout(), Some(t0 + KEYFRAME_INTERVAL));
        assert!(table
            .handle_timeout(t0 + Duration::from_millis(100))
            .is_empty());
        assert_eq!(
            table.handle_timeout(t0 + KEYFRAME_INTERVAL),
            vec![Action::RequestKeyframe { track: video }],
            "the coalesced request goes out once"
        );
        assert_eq!(table.poll_timeout(), None);
    }
}
