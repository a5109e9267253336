//! What a connection does with each request: the rest of [`Connection`], one method per group
//! of requests, with the permission rules named.
//!
//! Every frame gets exactly one reply, in request order (see the pipeline in connection.rs).
//! Checks run before anything reaches campaign state: the frame must decode, writes must fit the
//! connection's write budget, and then the rules below. Campaign-level permissions (who may edit
//! which campaign) are the campaign core's; the rules here are about the connection itself.
//!
//! | rule | who passes |
//! |---|---|
//! | [`Connection::may_read`] | signed in, or anyone when anonymous visitors are allowed |
//! | [`Connection::may_create`] | signed in |
//! | [`Connection::may_watch_ops`] | anyone with `--ops-public`, otherwise the `--admins` |

use std::time::Instant;

use rally_app::model::{Actor, CampaignId, CreateCampaign, RequestId, Write};
use rally_app::protocol::campaign::{CampaignRef, Subscribe};
use rally_app::protocol::media::SessionDescription;
use rally_app::protocol::ops::OpsHistory;
use rally_app::protocol::{
    decode_request, ClientRequest, ErrorBody, ErrorCode, EventType, PingReply, Request,
};

use super::connection::Connection;
use super::delivery::Outgoing;
use crate::campaigns::{Caller, StateManager};
use crate::clock;
use crate::frames::{self, failure, outcome, success};
use crate::media::{Call, CallReply, MediaError};

fn unauthorized() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Unauthorized,
        "this server requires a session to watch campaigns",
    )
}

impl Connection {
    /// Reading campaigns (subscribe, snapshot, join a live room).
    pub(super) fn may_read(&self) -> Result<(), ErrorBody> {
        match self.who.actor {
            None if !self.state.config.allow_anonymous => Err(unauthorized()),
            _ => Ok(()),
        }
    }

    /// Creating campaigns.
    fn may_create(&self) -> Result<&Actor, ErrorBody> {
        self.who
            .actor
            .as_ref()
            .ok_or_else(|| ErrorBody::new(ErrorCode::Forbidden, "sign in to create campaigns"))
    }

    /// Watching the `/ops` view.
    fn may_watch_ops(&self) -> Result<(), ErrorBody> {
        let config = &self.state.config;
        let admin = self
            .who
            .actor
            .as_ref()
            .is_some_and(|a| config.admins.iter().any(|id| id == a.user_id.as_str()));
        if config.ops_public || admin {
            return Ok(());
        }
        let who = match &self.who.actor {
            Some(actor) => format!("user {}", actor.user_id),
            None => "anonymous visitors".to_owned(),
        };
        Err(ErrorBody::new(
            ErrorCode::Forbidden,
            format!("the ops view is for admins (RALLY_ADMINS); {who} is not one"),
        ))
    }

    /// Writes and reads each have a per-connection budget (token buckets); pings, leaving and
    /// media signaling do not count.
    fn within_budget(&mut self, request: &ClientRequest) -> Result<(), ErrorBody> {
        let (budget, what) = match request {
            ClientRequest::Create(_) | ClientRequest::Write(_) | ClientRequest::Revert(_) => {
                (&mut self.writes, "writes")
            }
            ClientRequest::Subscribe(_)
            | ClientRequest::Snapshot(_)
            | ClientRequest::History(_)
            | ClientRequest::Version(_)
            | ClientRequest::MediaJoin(_) => (&mut self.reads, "reads"),
            _ => return Ok(()),
        };
        if budget.take(Instant::now()) {
            return Ok(());
        }
        Err(ErrorBody::new(
            ErrorCode::RateLimited,
            format!("more than {} {what} per second; slow down", budget.rate()),
        ))
    }

    /// Decode one text frame and handle the request it carries.
    pub(super) async fn handle_request(&mut self, text: &str, out: &mut Outgoing) {
        let request = match decode_request(text) {
            Ok(request) => request,
            Err(rejected) => {
                tracing::debug!(connection = ?self.id, code = %rejected.error.code, "request rejected at decode");
                self.pipeline.push_ready(frames::rejection(rejected));
                return;
            }
        };
        let Request {
            event_type,
            request_id,
            body,
        } = request;
        tracing::debug!(connection = ?self.id, r#type = %event_type, "request");
        if let Err(error) = self.within_budget(&body) {
            self.pipeline
                .push_ready(failure(&event_type, request_id, &error));
            return;
        }
        let (t, id) = (event_type, request_id);
        match body {
            ClientRequest::Ping(_) => {
                let pong = PingReply {
                    server_time: clock::now(),
                };
                self.pipeline.push_ready(success(&t, id, &pong));
            }
            ClientRequest::Create(request) => self.create(t, id, request),
            ClientRequest::Write(write) => self.write(t, id, write),
            ClientRequest::Snapshot(CampaignRef { campaign_id }) => {
                self.snapshot(t, id, campaign_id)
            }
            ClientRequest::Subscribe(request) => self.subscribe(t, id, request, out).await,
            ClientRequest::Unsubscribe(CampaignRef { campaign_id }) => {
                self.unsubscribe(t, id, campaign_id, out).await
            }
            ClientRequest::OpsSubscribe(_) => self.watch_ops(t, id, out).await,
            ClientRequest::MediaJoin(request) => {
                self.join_media(t, id, request.campaign_id, out).await
            }
            ClientRequest::MediaPublish(SessionDescription { campaign_id, sdp }) => {
                let answer = |participant| Call::Publish { participant, sdp };
                self.media_call(t, id, campaign_id, answer, |reply, campaign_id| {
                    Ok(SessionDescription {
                        campaign_id,
                        sdp: reply.sdp()?,
                    })
                });
            }
            ClientRequest::MediaAnswer(SessionDescription { campaign_id, sdp }) => {
                let call = |participant| Call::Answer { participant, sdp };
                self.media_call(t, id, campaign_id, call, done);
            }
            ClientRequest::MediaCandidate(candidate) => {
                let campaign_id = candidate.campaign_id.clone();
                let call = |participant| Call::Candidate {
                    participant,
                    candidate,
                };
                self.media_call(t, id, campaign_id, call, done);
            }
            ClientRequest::MediaLeave(CampaignRef { campaign_id }) => {
                self.leave_media(t, id, campaign_id, out).await
            }
            ClientRequest::History(query) => self.read(
                t,
                id,
                query.campaign_id.clone(),
                |manager, caller| async move { manager.history(&query, caller).await },
            ),
            ClientRequest::Version(query) => self.read(
                t,
                id,
                query.campaign_id.clone(),
                |manager, caller| async move {
                    manager
                        .state_at(&query.campaign_id, query.version, caller)
                        .await
                },
            ),
            ClientRequest::Revert(request) => {
                if let Err(error) = self.may_read() {
                    return self.pipeline.push_ready(failure(&t, id, &error));
                }
                let caller = self.who.caller(&request.campaign_id);
                let manager = self.state.manager.clone();
                self.pipeline.push(async move {
                    let result = manager.revert(request, caller, None).await;
                    outcome(&t, id, result)
                });
            }
        }
    }

    /// A read of one campaign by `ask`, answered in the pipeline.
    fn read<T, F>(
        &mut self,
        t: EventType,
        id: Option<RequestId>,
        campaign: CampaignId,
        ask: impl FnOnce(StateManager, Option<Caller>) -> F,
    ) where
        T: serde::Serialize,
        F: std::future::Future<Output = Result<T, ErrorBody>> + Send + 'static,
    {
        if let Err(error) = self.may_read() {
            return self.pipeline.push_ready(failure(&t, id, &error));
        }
        let asked = ask(self.state.manager.clone(), self.who.caller(&campaign));
        self.pipeline
            .push(async move { outcome(&t, id, asked.await) });
    }

    fn create(&mut self, t: EventType, id: Option<RequestId>, request: CreateCampaign) {
        let actor = match self.may_create() {
            Ok(actor) => actor.clone(),
            Err(error) => return self.pipeline.push_ready(failure(&t, id, &error)),
        };
        let quotas = &self.state.quotas;
        if !quotas.campaigns.take(&actor.user_id, Instant::now()) {
            let error = ErrorBody::new(ErrorCode::RateLimited, quotas.campaigns_refused());
            return self.pipeline.push_ready(failure(&t, id, &error));
        }
        let manager = self.state.manager.clone();
        self.pipeline.push(async move {
            let result = manager.create(request, actor).await;
            outcome(&t, id, result)
        });
    }

    /// Send a write to its campaign without waiting: the reply joins the pipeline.
    fn write(&mut self, t: EventType, id: Option<RequestId>, write: Write) {
        let started = Instant::now();
        let manager = self.state.manager.clone();
        let caller = self.who.caller(write.campaign_id());
        let ops = self.state.ops.clone();
        self.pipeline.push(async move {
            let result = manager.write(write, caller, None).await;
            if result.is_ok() {
                let elapsed = started.elapsed();
                metrics::histogram!("rally_write_ack_seconds").record(elapsed.as_secs_f64());
                ops.ack_latency.record(elapsed);
            }
            outcome(&t, id, result)
        });
    }

    fn snapshot(&mut self, t: EventType, id: Option<RequestId>, campaign: CampaignId) {
        if let Err(error) = self.may_read() {
            return self.pipeline.push_ready(failure(&t, id, &error));
        }
        let caller = self.who.caller(&campaign);
        let manager = self.state.manager.clone();
        self.pipeline.push(async move {
            let result = manager.snapshot(&campaign, caller).await;
            outcome(&t, id, result)
        });
    }

    async fn subscribe(
        &mut self,
        t: EventType,
        id: Option<RequestId>,
        request: Subscribe,
        out: &mut Outgoing,
    ) {
        self.pipeline.drain(out).await;
        if let Err(error) = self.may_read() {
            return out.push(failure(&t, id, &error));
        }
        let Subscribe {
            campaign_id: campaign,
            since_version,
        } = request;
        let resubscribing = self.following.follows(&campaign);
        let limit = self.state.config.max_subscriptions;
        if !resubscribing && self.following.count() >= limit {
            let error = ErrorBody::new(
                ErrorCode::LimitExceeded,
                format!(
                    "a connection may follow at most {limit} campaigns; unsubscribe from one first"
                ),
            );
            return out.push(failure(&t, id, &error));
        }
        if resubscribing {
            // Replace, never duplicate: the old stream (and its buffer) goes first.
            self.following.forget(&campaign);
        }
        let viewer = self.who.caller(&campaign);
        let manager = &self.state.manager;
        match manager
            .subscribe(&campaign, self.id, viewer, since_version)
            .await
        {
            Ok(subscription) => {
                // Already live in this campaign's room (went live before following it, or
                // following again): presence learns it now.
                if self.media.live_in() == Some(&campaign) {
                    manager.set_live(&campaign, self.id, true);
                }
                out.push(success(&t, id, &subscription.reply));
                self.following.start(campaign, subscription, out);
            }
            Err(error) => {
                if resubscribing {
                    manager.leave(&campaign, self.id);
                }
                out.push(failure(&t, id, &error));
            }
        }
    }

    async fn unsubscribe(
        &mut self,
        t: EventType,
        id: Option<RequestId>,
        campaign_id: CampaignId,
        out: &mut Outgoing,
    ) {
        self.pipeline.drain(out).await;
        if self.following.forget(&campaign_id) {
            self.state.manager.leave(&campaign_id, self.id);
        }
        out.push(success(&t, id, &CampaignRef { campaign_id }));
    }

    async fn watch_ops(&mut self, t: EventType, id: Option<RequestId>, out: &mut Outgoing) {
        self.pipeline.drain(out).await;
        if let Err(error) = self.may_watch_ops() {
            return out.push(failure(&t, id, &error));
        }
        self.ops_events = Some(self.state.ops_feed.subscribe());
        let history = OpsHistory {
            samples: self.state.ops_feed.history(),
        };
        out.push(success(&t, id, &history));
    }

    async fn join_media(
        &mut self,
        t: EventType,
        id: Option<RequestId>,
        campaign: CampaignId,
        out: &mut Outgoing,
    ) {
        self.pipeline.drain(out).await;
        if let Err(error) = self.may_read() {
            return out.push(failure(&t, id, &error));
        }
        let state = &self.state;
        let joined = self
            .media
            .join(&state.relay, &state.manager, &self.who, campaign)
            .await;
        out.push(outcome(&t, id, joined));
    }

    /// Send a media call to the relay now (so calls reach the session in order); its reply
    /// joins the pipeline.
    fn media_call<P: serde::Serialize>(
        &mut self,
        t: EventType,
        id: Option<RequestId>,
        campaign: CampaignId,
        call: impl FnOnce(crate::media::ParticipantId) -> Call,
        reply: impl FnOnce(CallReply, CampaignId) -> Result<P, MediaError> + Send + 'static,
    ) {
        let sent = self.media.call(&self.state.relay, &campaign, call);
        self.pipeline.push(async move {
            let result = sent.await.and_then(|answer| reply(answer, campaign));
            outcome(&t, id, result.map_err(ErrorBody::from))
        });
    }

    async fn leave_media(
        &mut self,
        t: EventType,
        id: Option<RequestId>,
        campaign_id: CampaignId,
        out: &mut Outgoing,
    ) {
        // Not in the pipeline: later requests must see this connection out of the session.
        self.pipeline.drain(out).await;
        if let Some(campaign) = self.media.live_in().filter(|c| **c == campaign_id) {
            self.state.manager.set_live(campaign, self.id, false);
        }
        let left = self.media.leave(&self.state.relay, &campaign_id).await;
        let result = left.map(|()| CampaignRef { campaign_id });
        out.push(outcome(&t, id, result.map_err(ErrorBody::from)));
    }
}

/// A media call's reply that carries nothing but "done".
fn done(reply: CallReply, campaign_id: CampaignId) -> Result<CampaignRef, MediaError> {
    reply.done().map(|()| CampaignRef { campaign_id })
}
