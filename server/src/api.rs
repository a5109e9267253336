//! The JSON HTTP API under `/api`: sessions, campaigns, invites. Errors are
//! `{"error": {"code", "message"}}` with the code's HTTP status (see [`ApiError`]).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rally_app::model::{Actor, CampaignId, DisplayName, Role, Timestamp};
use rally_app::protocol::campaign::{CampaignSnapshot, CampaignSummary, CreateCampaign};
use rally_app::protocol::{ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::auth::{self, Source};
use crate::clock;
use crate::http::{ApiError, AppState};

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/session", get(whoami).post(sign_in).delete(sign_out))
        .route("/campaigns", get(list).post(create))
        .route("/campaigns/{id}", get(snapshot))
        .route("/campaigns/{id}/invites", post(invite))
        .route("/invites/{token}/accept", post(accept_invite))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
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

impl From<ErrorBody> for ApiError {
    fn from(error: ErrorBody) -> Self {
        ApiError::new(error.code, error.message)
    }
}

/// The caller's session, if any. A bad explicit token is an error; a stale cookie is no session.
fn identity(state: &AppState, headers: &HeaderMap) -> Result<Option<Actor>, ApiError> {
    match auth::token_from_request(headers, None) {
        None => Ok(None),
        Some((token, source)) => match state.keys.verify_session(token, clock::now()) {
            Ok(actor) => Ok(Some(actor)),
            Err(_) if source == Source::Cookie => Ok(None),
            Err(err) => Err(ApiError::new(
                ErrorCode::Unauthorized,
                format!("session token rejected: {err}"),
            )),
        },
    }
}

fn require_session(state: &AppState, headers: &HeaderMap) -> Result<Actor, ApiError> {
    identity(state, headers)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthorized,
            "sign in first: POST /api/session {\"display_name\": ...}",
        )
    })
}

fn parse_id(id: &str) -> Result<CampaignId, ApiError> {
    CampaignId::parse(id).map_err(|err| ApiError::new(ErrorCode::Invalid, err.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    display_name: DisplayName,
}

/// `POST /api/session` answer.
#[derive(Serialize)]
struct SessionInfo {
    user: Actor,
    /// For non-browser clients: send as `Authorization: Bearer <token>`. Browsers use the cookie.
    token: String,
}

/// Sign in (or rename: an existing session keeps its user id).
async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, ApiError> {
    let now = clock::now();
    let (user, token) = match identity(&state, &headers)? {
        Some(existing) => state
            .keys
            .reissue_session(&existing.user_id, &body.display_name, now),
        None => state.keys.issue_session(&body.display_name, now),
    };
    let cookie = auth::session_cookie(&token, state.secure_cookies);
    Ok(([(SET_COOKIE, cookie)], Json(SessionInfo { user, token })).into_response())
}

async fn whoami(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = require_session(&state, &headers)?;
    Ok(Json(serde_json::json!({ "user": user })))
}

async fn sign_out(State(state): State<AppState>) -> Response {
    (
        StatusCode::NO_CONTENT,
        [(SET_COOKIE, auth::clear_cookie(state.secure_cookies))],
    )
        .into_response()
}

async fn list(State(state): State<AppState>) -> Result<Json<Vec<CampaignSummary>>, ApiError> {
    Ok(Json(state.manager.list().await?))
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateCampaign>,
) -> Result<(StatusCode, Json<CampaignSnapshot>), ApiError> {
    let actor = require_session(&state, &headers)?;
    let snapshot = state.manager.create(request, actor).await?;
    Ok((StatusCode::CREATED, Json(snapshot)))
}

async fn snapshot(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CampaignSnapshot>, ApiError> {
    let id = parse_id(&id)?;
    let user = identity(&state, &headers)?;
    if user.is_none() && !state.gateway_config.allow_anonymous {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this server requires a session to read campaigns",
        ));
    }
    let snapshot = state.manager.snapshot(&id, user.map(|a| a.user_id)).await?;
    Ok(Json(snapshot))
}

#[derive(Serialize)]
struct InviteCreated {
    campaign_id: CampaignId,
    role: Role,
    token: String,
    /// Path of the page that accepts the invite in a browser.
    path: String,
    expires_at: Timestamp,
}

/// Owner only: an invite link that makes whoever accepts it an editor.
async fn invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<InviteCreated>), ApiError> {
    let id = parse_id(&id)?;
    let actor = require_session(&state, &headers)?;
    let snapshot = state.manager.snapshot(&id, Some(actor.user_id)).await?;
    if snapshot.role != Role::Owner {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only the campaign's owner can invite editors",
        ));
    }
    let (token, invite) = state.keys.issue_invite(&id, Role::Editor, clock::now());
    Ok((
        StatusCode::CREATED,
        Json(InviteCreated {
            path: format!("/invite/{token}"),
            campaign_id: invite.campaign_id,
            role: invite.role,
            token,
            expires_at: invite.expires_at,
        }),
    ))
}

async fn accept_invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let actor = require_session(&state, &headers)?;
    let invite = state
        .keys
        .verify_invite(&token, clock::now())
        .map_err(|err| ApiError::new(ErrorCode::Invalid, format!("invite rejected: {err}")))?;
    let role = state
        .manager
        .grant(&invite.campaign_id, actor.user_id, invite.role)
        .await?;
    Ok(Json(
        serde_json::json!({ "campaign_id": invite.campaign_id, "role": role }),
    ))
}
