//! The server's answer to [`rally_app::data::ServerData`]: pages rendered on the server read
//! campaign state straight from the state manager, as the request's user.

use std::sync::Arc;

use rally_app::data::{DataFuture, ServerData};
use rally_app::model::{Actor, CampaignId};
use rally_app::protocol::campaign::{CampaignSnapshot, CampaignSummary};
use rally_app::protocol::ErrorBody;

use crate::auth::{self, Keys};
use crate::campaigns::StateManager;
use crate::clock;

pub struct PageData {
    pub manager: StateManager,
    pub keys: Keys,
}

impl PageData {
    pub fn shared(manager: StateManager, keys: Keys) -> Arc<dyn ServerData> {
        Arc::new(PageData { manager, keys })
    }
}

impl ServerData for PageData {
    fn current_user(&self, request: &axum::http::request::Parts) -> Option<Actor> {
        // A page renders for whoever is signed in; a token that does not verify is no session.
        auth::identify(&self.keys, &request.headers, None, clock::now())
            .ok()
            .flatten()
    }

    fn list(&self) -> DataFuture<Result<Vec<CampaignSummary>, ErrorBody>> {
        let manager = self.manager.clone();
        Box::pin(async move { manager.list().await })
    }

    fn snapshot(
        &self,
        id: CampaignId,
        user: Option<Actor>,
    ) -> DataFuture<Result<CampaignSnapshot, ErrorBody>> {
        let manager = self.manager.clone();
        Box::pin(async move { manager.snapshot(&id, user.map(|u| u.user_id)).await })
    }
}
