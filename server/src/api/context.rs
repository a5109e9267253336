//! What every API handler shares: the API's state, reading a JSON body, and who is asking.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::FromRequest;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use rally_app::model::{Actor, CampaignId, Role};
use rally_app::protocol::api_keys::KeyAccess;
use rally_app::protocol::session::SignInOptions;
use rally_app::protocol::ErrorCode;

use crate::auth::{Keys, Origins};
use crate::campaigns::{Caller, StateManager};
use crate::clock;
use crate::http_error::ApiError;
use crate::oidc::Oidc;
use crate::quota::Quotas;
use crate::sessions::{IdentifyError, Sessions, Signed, Who};
use crate::store::StoreError;

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the API handlers need (an axum sub-state of the app's state).
#[derive(Clone)]
pub struct ApiState {
    pub manager: StateManager,
    /// Signs and checks invite links.
    pub keys: Keys,
    pub sessions: Sessions,
    /// Mark cookies `Secure` (the site is served over HTTPS).
    pub secure_cookies: bool,
    /// Whether visitors without a session may read campaigns.
    pub allow_anonymous: bool,
    /// Which pages may make cookie-authenticated requests.
    pub origins: Origins,
    /// What one address or one person may do per minute.
    pub quotas: Arc<Quotas>,
    /// Sign-in through the organization's OpenID Connect provider, when configured.
    pub oidc: Option<Oidc>,
    /// User ids of the server's admins (`--admins`): they may make keys for every campaign and
    /// revoke any key.
    pub admins: Arc<[String]>,
    /// Webhook endpoints.
    pub webhooks: crate::webhooks::Webhooks,
    /// The built site (the sign-in failure pages link its stylesheet).
    pub site: Arc<crate::site::Site>,
}

impl ApiState {
    pub fn is_admin(&self, actor: &Actor) -> bool {
        self.admins.iter().any(|id| id == actor.user_id.as_str())
    }

    /// The ways people may sign in here.
    pub fn sign_in_options(&self) -> SignInOptions {
        SignInOptions {
            guests: self.sessions.guests(),
            provider: self
                .oidc
                .as_ref()
                .map(|oidc| oidc.provider_name().to_owned()),
        }
    }
}

pub(super) fn rate_limited(message: String) -> ApiError {
    ApiError::new(ErrorCode::RateLimited, message)
}

/// `Json<T>` whose rejections are API errors instead of axum's plain-text ones.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

pub(super) fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                ErrorCode::TooLarge,
                format!("request body over {MAX_BODY_BYTES} bytes"),
            )
        }
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(ErrorCode::Invalid, "send Content-Type: application/json")
        }
        other => ApiError::new(ErrorCode::Invalid, other.body_text()),
    }
}

/// The caller's session, if any (see [`Sessions::identify`]).
pub(super) async fn signed(
    state: &ApiState,
    headers: &HeaderMap,
) -> Result<Option<Signed>, ApiError> {
    state
        .sessions
        .identify(headers, None, clock::now())
        .await
        .map_err(|err| match err {
            IdentifyError::Rejected(_) => ApiError::new(ErrorCode::Unauthorized, err.to_string()),
            IdentifyError::Unavailable(_) => ApiError::new(ErrorCode::Unavailable, err.to_string()),
        })
}

/// Who asks about `campaign`: anyone (or no one), but an API key only where it reaches — refused
/// (403) before anything is looked up, so the answer says nothing about the campaign. With
/// `writes`, a key must also be allowed to write.
pub(super) async fn who_on(
    state: &ApiState,
    headers: &HeaderMap,
    campaign: &CampaignId,
    writes: bool,
) -> Result<Who, ApiError> {
    let who = signed(state, headers)
        .await?
        .map(Signed::into_who)
        .unwrap_or_default();
    if let Some(scope) = &who.scope {
        if !scope.covers(campaign) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this API key does not reach campaign {campaign}"),
            ));
        }
        if writes && scope.access == KeyAccess::Read {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "this API key may only read",
            ));
        }
    }
    Ok(who)
}

/// Any credential, a key's included.
pub(super) async fn require_signed(
    state: &ApiState,
    headers: &HeaderMap,
) -> Result<Signed, ApiError> {
    signed(state, headers).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthorized,
            "sign in first: POST /api/session {\"display_name\": ...}",
        )
    })
}

/// A person's credential: API keys read and change campaigns, nothing else (sessions, invites
/// and keys are people's business), so one is refused here with 403.
pub(super) async fn require_person(
    state: &ApiState,
    headers: &HeaderMap,
) -> Result<Signed, ApiError> {
    let signed = require_signed(state, headers).await?;
    if signed.scope.is_some() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "API keys read and change campaigns; this needs a person signed in",
        ));
    }
    Ok(signed)
}

pub(super) async fn require_session(
    state: &ApiState,
    headers: &HeaderMap,
) -> Result<Actor, ApiError> {
    Ok(require_person(state, headers).await?.actor)
}

pub(super) fn store_unavailable(err: StoreError) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!("sessions unavailable: {err}"),
    )
}

/// Without `--allow-anonymous`, reading campaigns needs a session.
pub(super) fn may_read(state: &ApiState, user: &Option<Actor>) -> Result<(), ApiError> {
    if user.is_none() && !state.allow_anonymous {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this server requires a session to read campaigns",
        ));
    }
    Ok(())
}

pub(super) fn parse_id(id: &str) -> Result<CampaignId, ApiError> {
    CampaignId::parse(id).map_err(|err| ApiError::new(ErrorCode::Invalid, err.to_string()))
}

/// Whether `actor` owns `campaign` (a campaign they cannot see answers as missing: 404).
pub(super) async fn owns(
    state: &ApiState,
    actor: &Actor,
    campaign: &CampaignId,
) -> Result<bool, ApiError> {
    let snapshot = state
        .manager
        .snapshot(campaign, Some(Caller::person(actor.clone())))
        .await?;
    Ok(snapshot.role == Role::Owner)
}
