//! The server's answer to [`rally_app::data::ServerData`]: pages rendered on the server read
//! campaign state straight from the state manager, as the request's user — with the same read
//! rule as the WebSocket and the HTTP API (without `--allow-anonymous`, nobody unsigned reads).

use std::sync::Arc;

use rally_app::data::{DataFuture, ServerData};
use rally_app::model::{Actor, CampaignId};
use rally_app::protocol::campaign::{CampaignSnapshot, CampaignSummary};
use rally_app::protocol::session::InviteDetails;
use rally_app::protocol::{ErrorBody, ErrorCode};

use crate::auth::{self, Keys};
use crate::campaigns::StateManager;
use crate::clock;

pub struct PageData {
    pub manager: StateManager,
    pub keys: Keys,
    /// Whether visitors without a session may read campaigns.
    pub allow_anonymous: bool,
}

impl PageData {
    pub fn shared(self) -> Arc<dyn ServerData> {
        Arc::new(self)
    }

    fn may_read(&self, user: &Option<Actor>) -> Result<(), ErrorBody> {
        if user.is_none() && !self.allow_anonymous {
            return Err(ErrorBody::new(
                ErrorCode::Unauthorized,
                "sign in to see campaigns on this server",
            ));
        }
        Ok(())
    }
}

impl ServerData for PageData {
    fn current_user(&self, request: &axum::http::request::Parts) -> Option<Actor> {
        // A page renders for whoever is signed in; a token that does not verify is no session.
        auth::identify(&self.keys, &request.headers, None, clock::now())
            .ok()
            .flatten()
    }

    fn list(&self, user: Option<Actor>) -> DataFuture<Result<Vec<CampaignSummary>, ErrorBody>> {
        let allowed = self.may_read(&user);
        let manager = self.manager.clone();
        Box::pin(async move {
            allowed?;
            manager.list().await
        })
    }

    fn snapshot(
        &self,
        id: CampaignId,
        user: Option<Actor>,
    ) -> DataFuture<Result<CampaignSnapshot, ErrorBody>> {
        let allowed = self.may_read(&user);
        let manager = self.manager.clone();
        Box::pin(async move {
            allowed?;
            manager.snapshot(&id, user.map(|u| u.user_id)).await
        })
    }

    fn invite(
        &self,
        token: String,
        user: Option<Actor>,
    ) -> DataFuture<Result<InviteDetails, ErrorBody>> {
        let allowed = self.may_read(&user);
        let (keys, manager) = (self.keys.clone(), self.manager.clone());
        Box::pin(async move {
            allowed?;
            crate::api::invite_details(&keys, &manager, &token).await
        })
    }
}
