//! The JSON HTTP API under `/api`: sessions, campaigns, invites. Errors are
//! `{"error": {"code", "message"}}` with the code's HTTP status (see [`ApiError`]).

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, Path, State};
use axum::http::header::{SET_COOKIE, USER_AGENT};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rally_app::model::{Actor, CampaignId, CreateCampaign, Invite, InviteId};
use rally_app::protocol::campaign::{CampaignSnapshot, CampaignSummary};
use rally_app::protocol::invites::{CreateInvite, InviteDetails, InviteLinkInfo};
use rally_app::protocol::session::{SessionInfo, SessionSummary, SignIn, SignInOptions};
use rally_app::protocol::ErrorCode;

use crate::auth::{self, InviteLink, Keys, Origins};
use crate::campaigns::{Caller, StateManager};
use crate::clock;
use crate::http_error::ApiError;
use crate::oidc::Oidc;
use crate::quota::Quotas;
use crate::sessions::{self, IdentifyError, Sessions, Signed};
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
}

impl ApiState {
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

/// The API's routes, with `state`; `fallback` answers paths it does not know.
pub fn router<S, H, T>(state: ApiState, fallback: H) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    H: axum::handler::Handler<T, ApiState>,
    T: 'static,
{
    Router::new()
        .route("/sign-in", get(sign_in_options))
        .route("/session", get(whoami).post(sign_in).delete(sign_out))
        .route("/sessions", get(list_sessions).delete(end_all_sessions))
        .route("/sessions/{id}", axum::routing::delete(end_session))
        .route("/campaigns", get(list).post(create))
        .route("/campaigns/{id}", get(snapshot))
        .route(
            "/campaigns/{id}/invites",
            get(list_invites).post(make_invite),
        )
        .route(
            "/campaigns/{id}/invites/{invite_id}",
            axum::routing::delete(withdraw_invite),
        )
        .route("/invites/{token}", get(describe_invite))
        .route("/invites/{token}/accept", post(accept_invite))
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_cross_site,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            within_quota,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Every API request counts against its client address's quota.
async fn within_quota(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !state.quotas.api.take(&peer.ip(), Instant::now()) {
        return rate_limited(format!(
            "more than {} API requests a minute from this address; slow down",
            state.quotas.api.per_minute_rate()
        ))
        .into_response();
    }
    next.run(request).await
}

fn rate_limited(message: String) -> ApiError {
    ApiError::new(ErrorCode::RateLimited, message)
}

/// A request that changes something and carries the session cookie must come from the site's
/// own pages: browsers attach cookies to cross-site requests too (CSRF).
async fn refuse_cross_site(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let reads = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let headers = request.headers();
    if !reads && auth::uses_cookie(headers, None) && !state.origins.allow(headers) {
        return ApiError::new(
            ErrorCode::Forbidden,
            "cross-site request refused: this page's origin may not use the session cookie",
        )
        .into_response();
    }
    next.run(request).await
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

fn json_rejection(rejection: JsonRejection) -> ApiError {
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
async fn signed(state: &ApiState, headers: &HeaderMap) -> Result<Option<Signed>, ApiError> {
    state
        .sessions
        .identify(headers, None, clock::now())
        .await
        .map_err(|err| match err {
            IdentifyError::Rejected(_) => ApiError::new(ErrorCode::Unauthorized, err.to_string()),
            IdentifyError::Unavailable(_) => ApiError::new(ErrorCode::Unavailable, err.to_string()),
        })
}

async fn identity(state: &ApiState, headers: &HeaderMap) -> Result<Option<Actor>, ApiError> {
    Ok(signed(state, headers).await?.map(|signed| signed.actor))
}

async fn require_signed(state: &ApiState, headers: &HeaderMap) -> Result<Signed, ApiError> {
    signed(state, headers).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthorized,
            "sign in first: POST /api/session {\"display_name\": ...}",
        )
    })
}

async fn require_session(state: &ApiState, headers: &HeaderMap) -> Result<Actor, ApiError> {
    Ok(require_signed(state, headers).await?.actor)
}

fn store_unavailable(err: StoreError) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!("sessions unavailable: {err}"),
    )
}

/// Without `--allow-anonymous`, reading campaigns needs a session.
fn may_read(state: &ApiState, user: &Option<Actor>) -> Result<(), ApiError> {
    if user.is_none() && !state.allow_anonymous {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this server requires a session to read campaigns",
        ));
    }
    Ok(())
}

fn parse_id(id: &str) -> Result<CampaignId, ApiError> {
    CampaignId::parse(id).map_err(|err| ApiError::new(ErrorCode::Invalid, err.to_string()))
}

async fn sign_in_options(State(state): State<ApiState>) -> Json<SignInOptions> {
    Json(state.sign_in_options())
}

/// Sign in (or rename: an existing session keeps its user id, and every session of the user
/// takes the new name).
async fn sign_in(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, ApiError> {
    let now = clock::now();
    let (user, session) =
        match signed(&state, &headers).await? {
            Some(Signed { session: None, .. }) => {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "your name comes from your organization's sign-in; change it there",
                ))
            }
            Some(existing) => {
                let user = state
                    .sessions
                    .rename(&existing, &body.display_name)
                    .await
                    .map_err(store_unavailable)?;
                (user, existing.session.expect("matched a stored session"))
            }
            None if !state.sessions.guests() => return Err(ApiError::new(
                ErrorCode::Forbidden,
                "this server does not let guests sign in by name; use your organization's sign-in",
            )),
            None => {
                if !state.quotas.sessions.take(&peer.ip(), Instant::now()) {
                    return Err(rate_limited(format!(
                        "more than {} new sessions a minute from this address; try again shortly",
                        state.quotas.sessions.per_minute_rate()
                    )));
                }
                let agent = headers.get(USER_AGENT).and_then(|v| v.to_str().ok());
                let (signed, _) = state
                    .sessions
                    .start(None, &body.display_name, sessions::device_label(agent), now)
                    .await
                    .map_err(store_unavailable)?;
                (
                    signed.actor,
                    signed.session.expect("a started session is stored"),
                )
            }
        };
    let token = state.sessions.token(&session);
    let max_age = session.expires_at.nanos_since(now) / 1_000_000_000;
    let cookie = auth::session_cookie(&token, max_age, state.secure_cookies);
    Ok(([(SET_COOKIE, cookie)], Json(SessionInfo { user, token })).into_response())
}

async fn whoami(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = require_session(&state, &headers).await?;
    Ok(Json(serde_json::json!({ "user": user })))
}

/// Sign out: the session ends everywhere (its open connections close) and the cookie goes.
async fn sign_out(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    // A token that no longer verifies has nothing left to end; the cookie still goes. A store
    // that cannot be asked is a 503: the session might still be going.
    let current = match signed(&state, &headers).await {
        Ok(current) => current,
        Err(err) if err.code() == ErrorCode::Unavailable => return Err(err),
        Err(_) => None,
    };
    if let Some(Signed {
        session: Some(session),
        ..
    }) = current
    {
        state
            .sessions
            .end(&session.id)
            .await
            .map_err(store_unavailable)?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(SET_COOKIE, auth::clear_cookie(state.secure_cookies))],
    )
        .into_response())
}

/// The caller's sessions that are still going, most recently used first.
async fn list_sessions(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Vec<SessionSummary>>, ApiError> {
    let me = require_signed(&state, &headers).await?;
    let records = state
        .sessions
        .list(&me.actor.user_id, clock::now())
        .await
        .map_err(store_unavailable)?;
    Ok(Json(
        records
            .into_iter()
            .map(|record| SessionSummary {
                current: me.session.as_ref().is_some_and(|s| s.id == record.id),
                expires_at: record.ends_at(),
                id: record.id,
                device: record.device,
                started_at: record.started_at,
                last_seen_at: record.last_seen_at,
            })
            .collect(),
    ))
}

/// Sign out everywhere: every session of the caller ends (their open connections close) and this
/// browser's cookie goes.
async fn end_all_sessions(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let me = require_signed(&state, &headers).await?;
    let ended = state
        .sessions
        .end_all(&me.actor.user_id)
        .await
        .map_err(store_unavailable)?;
    Ok((
        [(SET_COOKIE, auth::clear_cookie(state.secure_cookies))],
        Json(serde_json::json!({ "ended": ended })),
    )
        .into_response())
}

/// End one of the caller's sessions (another browser, a lost phone). Someone else's session
/// answers exactly like one that does not exist.
async fn end_session(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let me = require_signed(&state, &headers).await?;
    let mine = state
        .sessions
        .list(&me.actor.user_id, clock::now())
        .await
        .map_err(store_unavailable)?
        .into_iter()
        .any(|record| record.id == id);
    if !mine {
        return Err(ApiError::new(ErrorCode::NotFound, "no such session"));
    }
    state.sessions.end(&id).await.map_err(store_unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Vec<CampaignSummary>>, ApiError> {
    let who = signed(&state, &headers)
        .await?
        .map(Signed::into_who)
        .unwrap_or_default();
    may_read(&state, &who.actor)?;
    Ok(Json(state.manager.list(|id| who.caller(id)).await?))
}

async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateCampaign>,
) -> Result<(StatusCode, Json<CampaignSnapshot>), ApiError> {
    let actor = require_session(&state, &headers).await?;
    if !state.quotas.campaigns.take(&actor.user_id, Instant::now()) {
        return Err(rate_limited(state.quotas.campaigns_refused()));
    }
    let snapshot = state.manager.create(request, actor).await?;
    Ok((StatusCode::CREATED, Json(snapshot)))
}

async fn snapshot(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CampaignSnapshot>, ApiError> {
    let id = parse_id(&id)?;
    let who = signed(&state, &headers)
        .await?
        .map(Signed::into_who)
        .unwrap_or_default();
    may_read(&state, &who.actor)?;
    let snapshot = state.manager.snapshot(&id, who.caller(&id)).await?;
    Ok(Json(snapshot))
}

/// An invite link as its campaign's owners see it, with the link itself.
fn link_info(keys: &Keys, campaign_id: &CampaignId, invite: Invite) -> InviteLinkInfo {
    let token = keys.invite_link(campaign_id, &invite.terms.id, invite.terms.expires_at);
    InviteLinkInfo {
        campaign_id: campaign_id.clone(),
        status: invite.status(clock::now()),
        path: format!("/invite/{token}"),
        token,
        invite,
    }
}

/// The owner a request comes from, for the invite requests (owners only: the campaign says).
async fn invite_caller(
    state: &ApiState,
    headers: &HeaderMap,
    id: &CampaignId,
) -> Result<Caller, ApiError> {
    let who = require_signed(state, headers).await?.into_who();
    Ok(who.caller(id).expect("signed in"))
}

/// Owners only: an invite link on the terms the body asks for (editor, 7 days, anyone with the
/// link, unless it says otherwise).
async fn make_invite(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<InviteLinkInfo>), ApiError> {
    let id = parse_id(&id)?;
    let body = body.map_err(|_| {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("request body over {MAX_BODY_BYTES} bytes"),
        )
    })?;
    let asked: CreateInvite = if body.iter().all(u8::is_ascii_whitespace) {
        CreateInvite::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|err| ApiError::new(ErrorCode::Invalid, format!("invite request: {err}")))?
    };
    let caller = invite_caller(&state, &headers, &id).await?;
    let invite = state.manager.make_invite(&id, caller, asked).await?;
    Ok((
        StatusCode::CREATED,
        Json(link_info(&state.keys, &id, invite)),
    ))
}

/// Owners only: the campaign's invite links, newest first, with who used each.
async fn list_invites(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Vec<InviteLinkInfo>>, ApiError> {
    let id = parse_id(&id)?;
    let caller = invite_caller(&state, &headers, &id).await?;
    let invites = state.manager.invites(&id, caller).await?;
    Ok(Json(
        invites
            .into_iter()
            .map(|invite| link_info(&state.keys, &id, invite))
            .collect(),
    ))
}

/// Owners only: nobody can join through the link any more (204, also when it was withdrawn
/// already).
async fn withdraw_invite(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((id, invite_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let invite_id = InviteId::parse(&invite_id)
        .map_err(|err| ApiError::new(ErrorCode::Invalid, err.to_string()))?;
    let caller = invite_caller(&state, &headers, &id).await?;
    state
        .manager
        .withdraw_invite(&id, caller, invite_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What an invite link offers: the campaign's title, who made the link, the role. Reads
/// like any read of the campaign (a closed server asks for a session first).
async fn describe_invite(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Json<InviteDetails>, ApiError> {
    may_read(&state, &identity(&state, &headers).await?)?;
    Ok(Json(
        invite_details(&state.keys, &state.manager, &token).await?,
    ))
}

/// The details of a working invite link (the API and the invite page both show them).
pub(crate) async fn invite_details(
    keys: &Keys,
    manager: &StateManager,
    token: &str,
) -> Result<InviteDetails, rally_app::protocol::ErrorBody> {
    let link = verified_link(keys, token)?;
    let (invite, title) = manager
        .invite_offer(&link.campaign_id, link.invite_id)
        .await?;
    Ok(InviteDetails {
        campaign_id: link.campaign_id,
        title,
        invited_by: invite.made_by.display_name.clone(),
        role: invite.terms.role,
        expires_at: invite.terms.expires_at,
        uses_left: invite.uses_left(),
    })
}

/// What a signed invite link names (whether it still lets anyone in is the campaign's answer).
fn verified_link(keys: &Keys, token: &str) -> Result<InviteLink, rally_app::protocol::ErrorBody> {
    keys.verify_invite(token, clock::now()).map_err(|err| {
        rally_app::protocol::ErrorBody::new(ErrorCode::Invalid, format!("invite rejected: {err}"))
    })
}

async fn accept_invite(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let actor = require_session(&state, &headers).await?;
    let link = verified_link(&state.keys, &token)?;
    let role = state
        .manager
        .join(&link.campaign_id, actor, link.invite_id)
        .await?;
    Ok(Json(
        serde_json::json!({ "campaign_id": link.campaign_id, "role": role }),
    ))
}
