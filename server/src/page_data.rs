//! The server's answer to [`rally_app::data::ServerData`]: pages rendered on the server read
//! campaign state straight from the state manager, as the request's user — with the same read
//! rule as the WebSocket and the HTTP API (without `--allow-anonymous`, nobody unsigned reads).

use std::sync::Arc;

use rally_app::data::{DataFuture, ServerData, Visitor};
use rally_app::model::CampaignId;
use rally_app::protocol::campaign::{CampaignSnapshot, CampaignSummary};
use rally_app::protocol::invites::InviteDetails;
use rally_app::protocol::session::SignInOptions;
use rally_app::protocol::{ErrorBody, ErrorCode};

use axum::extract::State;

use crate::auth::Keys;
use crate::campaigns::{Caller, StateManager};
use crate::clock;
use crate::sessions::Sessions;

/// Who is asking for a page: found by [`find_visitor`] before the page renders, because pages
/// read it synchronously (and must render the same on the server and when hydrating).
#[derive(Debug, Clone)]
pub struct PageVisitor(pub Option<Visitor>);

/// Middleware: find the session of a request for a page. A token that does not verify is no
/// session (and so is one the store cannot confirm right now). The API, the WebSocket, probes
/// and files identify themselves or need nobody.
/// Files the site serves (invite paths carry dots too, so only these count as files).
const ASSET_SUFFIXES: [&str; 9] = [
    ".js",
    ".wasm",
    ".css",
    ".ico",
    ".png",
    ".svg",
    ".txt",
    ".map",
    ".webmanifest",
];

pub async fn find_visitor(
    State(sessions): State<Sessions>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path();
    let page = !(path.starts_with("/api/")
        || path.starts_with("/auth/")
        || path.starts_with("/pkg/")
        || matches!(path, "/ws" | "/healthz" | "/readyz" | "/metrics")
        || ASSET_SUFFIXES.iter().any(|suffix| path.ends_with(suffix)));
    if page {
        let signed = sessions
            .identify(request.headers(), None, clock::now())
            .await;
        // Pages are for people: an API key is no visitor.
        let visitor = signed
            .ok()
            .flatten()
            .filter(|signed| signed.scope.is_none())
            .map(|signed| Visitor {
                actor: signed.actor,
                grants: Arc::new(signed.grants),
            });
        request.extensions_mut().insert(PageVisitor(visitor));
    }
    next.run(request).await
}

pub struct PageData {
    pub manager: StateManager,
    /// Checks invite links.
    pub keys: Keys,
    /// Whether visitors without a session may read campaigns.
    pub allow_anonymous: bool,
    /// The ways people may sign in here.
    pub sign_in: SignInOptions,
}

impl PageData {
    pub fn shared(self) -> Arc<dyn ServerData> {
        Arc::new(self)
    }

    fn may_read(&self, user: &Option<Visitor>) -> Result<(), ErrorBody> {
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
    fn current_user(&self, request: &axum::http::request::Parts) -> Option<Visitor> {
        request
            .extensions
            .get::<PageVisitor>()
            .and_then(|visitor| visitor.0.clone())
    }

    fn sign_in_options(&self) -> SignInOptions {
        self.sign_in.clone()
    }

    fn list(&self, user: Option<Visitor>) -> DataFuture<Result<Vec<CampaignSummary>, ErrorBody>> {
        let allowed = self.may_read(&user);
        let manager = self.manager.clone();
        Box::pin(async move {
            allowed?;
            manager.list(|id| caller(&user, id)).await
        })
    }

    fn snapshot(
        &self,
        id: CampaignId,
        user: Option<Visitor>,
    ) -> DataFuture<Result<CampaignSnapshot, ErrorBody>> {
        let allowed = self.may_read(&user);
        let manager = self.manager.clone();
        Box::pin(async move {
            allowed?;
            manager.snapshot(&id, caller(&user, &id)).await
        })
    }

    fn invite(
        &self,
        token: String,
        user: Option<Visitor>,
    ) -> DataFuture<Result<InviteDetails, ErrorBody>> {
        let allowed = self.may_read(&user);
        let (keys, manager) = (self.keys.clone(), self.manager.clone());
        Box::pin(async move {
            allowed?;
            crate::api::invite_details(&keys, &manager, &token).await
        })
    }
}

/// How campaign `id` sees the visitor: their stored roles, and what their credential grants.
fn caller(visitor: &Option<Visitor>, id: &CampaignId) -> Option<Caller> {
    visitor.as_ref().map(|visitor| Caller {
        actor: visitor.actor.clone(),
        granted: visitor.grants.get(id).copied(),
        key: None,
    })
}
