//! A connection's place in a media session: at most one at a time.
//!
//! Joining needs the same permission as watching the campaign; whether the participant may go
//! live follows from its role (and `--media-publishers`). After joining, every `media:*` request
//! of the connection is a [`Call`] sent to the relay at once — wherever the session runs — so the
//! session sees the connection's requests in the order they were made. The relay's pushes for
//! the participant (offers, who is live, the end) arrive on a channel the connection reads.

use std::future::Future;

use rally_app::model::CampaignId;
use rally_app::protocol::media::{MediaEnded, MediaJoined, MediaTracks, ENDED_EVENT, TRACKS_EVENT};
use rally_app::protocol::ErrorBody;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::campaigns::StateManager;
use crate::media::{Call, CallReply, Joining, MediaError, MediaRelay, ParticipantId, PUSH_BUFFER};
use crate::sessions::Who;

/// A connection's membership in one campaign's media session.
struct Membership {
    campaign: CampaignId,
    participant: ParticipantId,
    /// Offers, track lists and endings from the relay; closed when the relay lets go.
    pushes: mpsc::Receiver<Utf8Bytes>,
    /// The relay's last track list had tracks of this participant.
    live: bool,
}

/// The part of a `media:tracks` push that says who is live.
#[derive(serde::Deserialize)]
struct TracksPush {
    payload: MediaTracks,
}

/// Where a connection is in media: nowhere, or in one session.
#[derive(Default)]
pub struct MediaPlace(Option<Box<Membership>>);

impl MediaPlace {
    pub fn is_in(&self) -> bool {
        self.0.is_some()
    }

    /// The relay's next push (only polled while in a session); `None`: the relay let go.
    pub async fn next_push(&mut self) -> Option<Utf8Bytes> {
        match &mut self.0 {
            Some(member) => member.pushes.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Whether `push` (from [`Self::next_push`]) changed this participant's being live: the
    /// campaign and the new state. Presence shows it to everyone following the campaign,
    /// including people who have not joined the live room.
    pub fn observe(&mut self, push: &str) -> Option<(CampaignId, bool)> {
        let member = self.0.as_mut()?;
        // Signaling pushes are few (a handful per change in the room): decoding is cheap here.
        if !push.contains(&*TRACKS_EVENT.to_string()) {
            return None;
        }
        let tracks = serde_json::from_str::<TracksPush>(push).ok()?.payload;
        let me = member.participant.to_string();
        let live = tracks
            .publishers
            .iter()
            .any(|p| p.participant_id == me && !p.tracks.is_empty());
        (live != member.live).then(|| {
            member.live = live;
            (member.campaign.clone(), live)
        })
    }

    /// The campaign this connection is live in, if it is.
    pub fn live_in(&self) -> Option<&CampaignId> {
        self.0.as_ref().filter(|m| m.live).map(|m| &m.campaign)
    }

    /// The relay ended this participant (it said why in its last push).
    pub fn ended(&mut self) {
        self.0 = None;
    }

    /// This connection's participant id in `campaign`'s media session.
    fn member(&self, campaign: &CampaignId) -> Result<ParticipantId, MediaError> {
        match &self.0 {
            Some(member) if member.campaign == *campaign => Ok(member.participant),
            _ => Err(MediaError::NotJoined),
        }
    }

    /// Join `campaign`'s media session as `who`.
    pub async fn join(
        &mut self,
        relay: &MediaRelay,
        manager: &StateManager,
        who: &Who,
        campaign: CampaignId,
    ) -> Result<MediaJoined, ErrorBody> {
        let identity = who.actor.as_ref();
        if let Some(member) = &self.0 {
            return Err(if member.campaign == campaign {
                MediaError::AlreadyJoined
            } else {
                MediaError::InAnotherSession(member.campaign.clone())
            }
            .into());
        }
        // The same read permission as watching the campaign; the role decides publishing.
        let snapshot = manager.snapshot(&campaign, who.caller(&campaign)).await?;
        let participant = relay.next_participant();
        let (sender, pushes) = mpsc::channel(PUSH_BUFFER);
        let joining = Joining {
            participant,
            display_name: identity
                .map_or_else(|| "Anonymous".to_owned(), |a| a.display_name.clone()),
            can_publish: identity.is_some() && relay.may_publish(snapshot.role),
            pushes: sender,
        };
        let joined = relay.join(&campaign, joining).await?;
        self.0 = Some(Box::new(Membership {
            campaign,
            participant,
            pushes,
            live: false,
        }));
        Ok(joined)
    }

    /// Send a call of this connection's participant in `campaign` to the relay now; the
    /// returned future waits for its reply. Not in that session: `not_found` at once.
    pub fn call(
        &self,
        relay: &MediaRelay,
        campaign: &CampaignId,
        call: impl FnOnce(ParticipantId) -> Call,
    ) -> impl Future<Output = Result<CallReply, MediaError>> + Send + 'static {
        let sent = self
            .member(campaign)
            .map(|participant| relay.request(campaign, call(participant)));
        async move { sent?.await }
    }

    /// Leave `campaign`'s session: this connection is out at once, the relay lets go.
    pub async fn leave(
        &mut self,
        relay: &MediaRelay,
        campaign: &CampaignId,
    ) -> Result<(), MediaError> {
        let participant = self.member(campaign)?;
        self.0 = None;
        relay
            .request(campaign, Call::Leave { participant })
            .await
            .and_then(CallReply::done)
    }

    /// The campaign this connection is in the media session of, if any.
    pub fn campaign(&self) -> Option<&CampaignId> {
        self.0.as_ref().map(|m| &m.campaign)
    }

    /// The person may no longer see `campaign`: take them out of its session at once and tell
    /// them why (`media:session:v1:completed`). Returns that frame, or None if they were not in
    /// it. The caller clears their being live.
    pub fn expel(&mut self, relay: &MediaRelay, campaign: &CampaignId) -> Option<Utf8Bytes> {
        if self.campaign() != Some(campaign) {
            return None;
        }
        self.forget(relay);
        let ended = MediaEnded {
            campaign_id: campaign.clone(),
            reason: format!("campaign {campaign} does not exist"),
        };
        Some(crate::frames::push(ENDED_EVENT, &ended, crate::clock::now()).text)
    }

    /// The connection is gone: leave without waiting.
    pub fn forget(&mut self, relay: &MediaRelay) {
        if let Some(member) = self.0.take() {
            relay.forget(&member.campaign, member.participant);
        }
    }
}
