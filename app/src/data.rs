//! What pages load before they go live: the signed-in user, the campaign list, a campaign's
//! snapshot, an invite's details. On the server it comes straight from the state manager ([`ServerData`], provided by
//! the server as context, so the first paint already has real content); in the browser, from the
//! JSON API. Leptos resources serialize the server's answer into the page, so hydration does not
//! fetch it again.

use std::future::Future;
use std::pin::Pin;

use serde::de::DeserializeOwned;

use crate::client::SharedIo;
use crate::model::{Actor, CampaignId};
use crate::protocol::campaign::{CampaignSnapshot, CampaignSummary};
use crate::protocol::invites::InviteDetails;
use crate::protocol::session::SignInOptions;
use crate::protocol::{ErrorBody, ErrorCode};

pub type DataFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Who is asking for a page, as the server found them: the person, and the roles their
/// credential grants (a token from the integrator's backend may grant roles on campaigns).
#[cfg(feature = "ssr")]
#[derive(Debug, Clone)]
pub struct Visitor {
    pub actor: Actor,
    pub grants: std::sync::Arc<std::collections::BTreeMap<CampaignId, crate::model::Role>>,
}

/// The server's side of page data (implemented by the server crate).
#[cfg(feature = "ssr")]
pub trait ServerData: Send + Sync + 'static {
    /// The session carried by this request, if valid.
    fn current_user(&self, request: &http::request::Parts) -> Option<Visitor>;
    /// The ways people may sign in on this server.
    fn sign_in_options(&self) -> SignInOptions;
    /// The campaigns `user` may see listed.
    fn list(&self, user: Option<Visitor>) -> DataFuture<Result<Vec<CampaignSummary>, ErrorBody>>;
    fn snapshot(
        &self,
        id: CampaignId,
        user: Option<Visitor>,
    ) -> DataFuture<Result<CampaignSnapshot, ErrorBody>>;
    /// What the invite `token` offers.
    fn invite(
        &self,
        token: String,
        user: Option<Visitor>,
    ) -> DataFuture<Result<InviteDetails, ErrorBody>>;
}

/// The context a page's loaders need, captured while rendering.
#[derive(Clone)]
pub struct DataSource {
    #[cfg(feature = "ssr")]
    server: Option<(std::sync::Arc<dyn ServerData>, Option<Visitor>)>,
    browser: Option<SharedIo>,
}

impl DataSource {
    pub fn from_context() -> Self {
        use leptos::prelude::use_context;
        #[cfg(feature = "ssr")]
        let server = use_context::<std::sync::Arc<dyn ServerData>>().map(|data| {
            let user =
                use_context::<http::request::Parts>().and_then(|parts| data.current_user(&parts));
            (data, user)
        });
        DataSource {
            #[cfg(feature = "ssr")]
            server,
            browser: use_context::<SharedIo>(),
        }
    }

    pub fn session(&self) -> DataFuture<Option<Actor>> {
        #[cfg(feature = "ssr")]
        if let Some((_, user)) = &self.server {
            let user = user.clone().map(|visitor| visitor.actor);
            return Box::pin(async move { user });
        }
        let fetch = self.get_json::<serde_json::Value>("/api/session".to_owned());
        Box::pin(async move {
            let body = fetch.await.ok()?;
            serde_json::from_value(body.get("user")?.clone()).ok()
        })
    }

    /// How people sign in here (guests picking a name, the organization's provider). A browser
    /// that cannot ask offers guest sign-in, which the server refuses with a reason if it is off.
    pub fn sign_in_options(&self) -> DataFuture<SignInOptions> {
        #[cfg(feature = "ssr")]
        if let Some((data, _)) = &self.server {
            let options = data.sign_in_options();
            return Box::pin(async move { options });
        }
        let fetch = self.get_json::<SignInOptions>("/api/sign-in".to_owned());
        Box::pin(async move { fetch.await.unwrap_or_default() })
    }

    pub fn campaigns(&self) -> DataFuture<Result<Vec<CampaignSummary>, ErrorBody>> {
        #[cfg(feature = "ssr")]
        if let Some((data, user)) = &self.server {
            return data.list(user.clone());
        }
        self.get_json("/api/campaigns".to_owned())
    }

    pub fn snapshot(&self, id: CampaignId) -> DataFuture<Result<CampaignSnapshot, ErrorBody>> {
        #[cfg(feature = "ssr")]
        if let Some((data, user)) = &self.server {
            return data.snapshot(id, user.clone());
        }
        self.get_json(format!("/api/campaigns/{id}"))
    }

    pub fn invite(&self, token: String) -> DataFuture<Result<InviteDetails, ErrorBody>> {
        #[cfg(feature = "ssr")]
        if let Some((data, user)) = &self.server {
            return data.invite(token, user.clone());
        }
        self.get_json(format!("/api/invites/{token}"))
    }

    fn get_json<T: DeserializeOwned + 'static>(
        &self,
        path: String,
    ) -> DataFuture<Result<T, ErrorBody>> {
        let Some(io) = self.browser.clone() else {
            return Box::pin(async {
                Err(ErrorBody::new(ErrorCode::Unavailable, "no data source"))
            });
        };
        let io = (*io).clone();
        Box::pin(send_wrapper::SendWrapper::new(async move {
            let (status, body) = io
                .http("GET", &path, None)
                .await
                .map_err(|err| ErrorBody::new(ErrorCode::Unavailable, err))?;
            decode_response(status, &body)
        }))
    }
}

/// A JSON API answer: the value for 2xx, the error body otherwise.
pub fn decode_response<T: DeserializeOwned>(status: u16, body: &str) -> Result<T, ErrorBody> {
    if (200..300).contains(&status) {
        serde_json::from_str(body)
            .map_err(|err| ErrorBody::new(ErrorCode::Internal, err.to_string()))
    } else {
        #[derive(serde::Deserialize)]
        struct Wrapper {
            error: ErrorBody,
        }
        Err(serde_json::from_str::<Wrapper>(body)
            .map(|w| w.error)
            .unwrap_or_else(|_| ErrorBody::new(ErrorCode::Internal, format!("HTTP {status}"))))
    }
}
