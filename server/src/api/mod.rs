//! The JSON HTTP API under `/api`: sessions, campaigns (read, create, change), invites. Errors
//! are `{"error": {"code", "message"}}` with the code's HTTP status (see [`ApiError`]).
//!
//! - `context`: the API's state, JSON bodies, who is asking.
//! - `sessions`, `campaigns`, `history`, `invites`, `keys`, `webhooks`: the handlers, one file per
//!   resource.
//! - `openapi`: the API described (OpenAPI 3.1, generated from the types); `docs_page` renders
//!   it for people.
//! - here: the routes, and what every request passes first (the address's quota, the
//!   cross-site check).

mod campaigns;
mod context;
mod docs_page;
mod history;
mod invites;
mod keys;
pub mod openapi;
mod sessions;
mod webhooks;

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rally_app::protocol::ErrorCode;

use self::campaigns::{config, create, features, handover, list, member, snapshot, text, update};
use self::context::rate_limited;
pub use self::context::{ApiJson, ApiState, MAX_BODY_BYTES};
pub(crate) use self::invites::invite_details;
use self::invites::{accept_invite, describe_invite, list_invites, make_invite, withdraw_invite};
use self::keys::{create_key, list_keys, revoke_key};
use self::sessions::{
    end_all_sessions, end_session, list_sessions, sign_in, sign_in_options, sign_out, whoami,
};
use self::webhooks::{list_webhooks, redeliver, register_webhook, remove_webhook};
use crate::auth;
use crate::http_error::ApiError;

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
        .route("/campaigns/{id}", get(snapshot).patch(update))
        .route("/campaigns/{id}/features", post(features))
        .route("/campaigns/{id}/config", post(config))
        .route("/campaigns/{id}/text", post(text))
        .route("/campaigns/{id}/members", post(member))
        .route("/campaigns/{id}/handover", post(handover))
        .route("/campaigns/{id}/history", get(history::history))
        .route("/campaigns/{id}/history/export", get(history::export))
        .route("/campaigns/{id}/versions/{version}", get(history::version))
        .route("/campaigns/{id}/diff", get(history::diff))
        .route("/campaigns/{id}/revert", post(history::revert))
        .route(
            "/campaigns/{id}/invites",
            get(list_invites).post(make_invite),
        )
        .route(
            "/campaigns/{id}/invites/{invite_id}",
            axum::routing::delete(withdraw_invite),
        )
        .route("/keys", get(list_keys).post(create_key))
        .route("/keys/{id}", axum::routing::delete(revoke_key))
        .route("/webhooks", get(list_webhooks).post(register_webhook))
        .route("/webhooks/{id}", axum::routing::delete(remove_webhook))
        .route("/webhooks/{id}/redeliver", post(redeliver))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(docs_page::docs_page))
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
