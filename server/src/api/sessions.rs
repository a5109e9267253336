//! Sessions over HTTP: signing in by name, who am I, signing out (here or everywhere), and the
//! list of one's sessions.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::header::{SET_COOKIE, USER_AGENT};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rally_app::protocol::session::{
    SessionInfo, SessionSummary, SessionsEnded, SignIn, SignInOptions, WhoAmI,
};
use rally_app::protocol::ErrorCode;

use super::context::{
    rate_limited, require_person, require_session, signed, store_unavailable, ApiJson, ApiState,
};
use crate::auth;
use crate::clock;
use crate::http_error::ApiError;
use crate::sessions::{self, Signed};

pub(super) async fn sign_in_options(State(state): State<ApiState>) -> Json<SignInOptions> {
    Json(state.sign_in_options())
}

/// Sign in (or rename: an existing session keeps its user id, and every session of the user
/// takes the new name).
pub(super) async fn sign_in(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, ApiError> {
    let now = clock::now();
    let (user, session) =
        match signed(&state, &headers).await? {
            Some(Signed { scope: Some(_), .. }) => {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "an API key has no name to change; rename the key by making a new one",
                ))
            }
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

pub(super) async fn whoami(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<WhoAmI>, ApiError> {
    let user = require_session(&state, &headers).await?;
    Ok(Json(WhoAmI { user }))
}

/// Sign out: the session ends everywhere (its open connections close) and the cookie goes.
pub(super) async fn sign_out(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // A token that no longer verifies has nothing left to end; the cookie still goes. A store
    // that cannot be asked is a 503: the session might still be going.
    let current = match signed(&state, &headers).await {
        Ok(current) => current,
        Err(err) if err.code() == ErrorCode::Unavailable => return Err(err),
        Err(_) => None,
    };
    if current
        .as_ref()
        .is_some_and(|signed| signed.scope.is_some())
    {
        require_person(&state, &headers).await?;
    }
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
pub(super) async fn list_sessions(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Vec<SessionSummary>>, ApiError> {
    let me = require_person(&state, &headers).await?;
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
pub(super) async fn end_all_sessions(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let me = require_person(&state, &headers).await?;
    let ended = state
        .sessions
        .end_all(&me.actor.user_id)
        .await
        .map_err(store_unavailable)?;
    Ok((
        [(SET_COOKIE, auth::clear_cookie(state.secure_cookies))],
        Json(SessionsEnded {
            ended: ended as u64,
        }),
    )
        .into_response())
}

/// End one of the caller's sessions (another browser, a lost phone). Someone else's session
/// answers exactly like one that does not exist.
pub(super) async fn end_session(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let me = require_person(&state, &headers).await?;
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
