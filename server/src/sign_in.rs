//! How a browser signs in other than by picking a name:
//! - through the OpenID Connect provider: `GET /auth/oidc/start` sends it there,
//!   `GET /auth/oidc/callback` takes it back, signed in (the rules are in [`crate::oidc`]);
//! - with a token minted by the integrator's backend: its page posts the token to
//!   `POST /auth/token` (a form, from an origin allowed to use the cookie), and Rally keeps it as
//!   the browser's session cookie until the token expires.
//!
//! All are top-level navigations, so they answer with redirects and, when a sign-in does not
//! complete, a small page saying why in plain words with a way to try again — never JSON, and
//! never a 500 for anything the browser or the provider sent.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::DefaultBodyLimit;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::header::{CACHE_CONTROL, LOCATION, ORIGIN, SET_COOKIE, USER_AGENT};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use rally_app::protocol::session::SignInOptions;

use crate::api::ApiState;
use crate::auth;
use crate::clock;
use crate::oidc::{self, Callback, LoginError, Oidc, ATTEMPT_COOKIE, ATTEMPT_COOKIE_PATH};
use crate::sessions::{self, IdentifyError, Signed};
use crate::site::Site;

/// Largest `POST /auth/token` form read (a token and a path).
pub const MAX_HANDOFF_BYTES: usize = 16 * 1024;
/// Longest token handed over: it becomes the cookie, and browsers drop cookies over 4096 bytes
/// (name and attributes included).
pub const MAX_HANDOFF_TOKEN_BYTES: usize = 3800;

/// The sign-in routes (answering 404 when no provider is configured).
pub fn router<S>(state: ApiState) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/auth/oidc/start", get(start))
        .route("/auth/oidc/callback", get(callback))
        .route(
            "/auth/token",
            post(token_handoff).layer(DefaultBodyLimit::max(MAX_HANDOFF_BYTES)),
        )
        .with_state(state)
}

#[derive(Deserialize)]
struct Start {
    return_to: Option<String>,
}

/// The answer to the provider's routes on a server without one.
fn no_provider(site: &Site) -> Response {
    failure_page(
        site,
        StatusCode::NOT_FOUND,
        "This Rally does not sign people in through an organization's accounts.",
        None,
    )
}

/// Send the browser to the provider, remembering the attempt in a cookie.
async fn start(
    State(state): State<ApiState>,
    query: Result<Query<Start>, QueryRejection>,
) -> Response {
    let Some(oidc) = state.oidc.as_ref() else {
        return no_provider(&state.site);
    };
    let return_to = query.ok().and_then(|Query(start)| start.return_to);
    match oidc.begin(return_to.as_deref(), clock::now()).await {
        Ok((url, attempt)) => {
            let cookie = attempt_cookie(
                &oidc::seal_attempt(&state.keys, &attempt),
                oidc::login::ATTEMPT_TTL_SECS,
                state.secure_cookies,
            );
            redirect(url.as_str(), [cookie])
        }
        Err(err) => login_failed(&state, err, return_to.as_deref()),
    }
}

/// A callback that did not lead to a session: how to answer it.
struct Failure {
    status: StatusCode,
    message: String,
    /// Whether starting again could help.
    retry: bool,
}

impl From<LoginError> for Failure {
    fn from(err: LoginError) -> Failure {
        let status = match &err {
            LoginError::NoAttempt | LoginError::StateMismatch | LoginError::Refused(_) => {
                StatusCode::BAD_REQUEST
            }
            LoginError::IdToken(_) => StatusCode::UNAUTHORIZED,
            LoginError::NotAllowed(_) => StatusCode::FORBIDDEN,
            LoginError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        match &err {
            LoginError::Unavailable(_) => {
                tracing::warn!(error = %err, "sign-in through the provider failed")
            }
            _ => tracing::debug!(error = %err, "sign-in through the provider refused"),
        }
        let mut message = err.to_string();
        if let Some(first) = message.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        Failure {
            status,
            message: format!("{message}."),
            // Refused by an allow-list, the same account would be refused again.
            retry: !matches!(err, LoginError::NotAllowed(_)),
        }
    }
}

/// The provider sent the browser back: finish the sign-in, start a session, go where the
/// person was going. Whatever happens, the attempt cookie goes: an attempt is used once.
async fn callback(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    answer: Result<Query<Callback>, QueryRejection>,
) -> Response {
    let Some(oidc) = state.oidc.as_ref() else {
        return no_provider(&state.site);
    };
    let attempt = auth::cookie(&headers, ATTEMPT_COOKIE)
        .and_then(|value| oidc::open_attempt(&state.keys, value));
    let return_to = attempt.as_ref().map(|a| a.return_to.clone());
    let clear_attempt = attempt_cookie("", 0, state.secure_cookies);
    match sign_in(&state, oidc, peer, &headers, attempt.as_ref(), answer).await {
        Ok(session_cookie) => redirect(
            return_to.as_deref().unwrap_or("/"),
            [session_cookie, clear_attempt],
        ),
        Err(failure) => {
            let retry = failure.retry.then(|| retry_provider(return_to.as_deref()));
            let mut page = failure_page(
                &state.site,
                failure.status,
                &failure.message,
                retry.as_deref(),
            );
            if let Ok(clear) = HeaderValue::from_str(&clear_attempt) {
                page.headers_mut().append(SET_COOKIE, clear);
            }
            page
        }
    }
}

/// The callback's work: the provider's answer checked, the person found, their session started
/// (replacing any this browser had). Returns the session cookie.
async fn sign_in(
    state: &ApiState,
    oidc: &Oidc,
    peer: SocketAddr,
    headers: &HeaderMap,
    attempt: Option<&oidc::Attempt>,
    answer: Result<Query<Callback>, QueryRejection>,
) -> Result<String, Failure> {
    let Ok(Query(answer)) = answer else {
        return Err(LoginError::StateMismatch.into());
    };
    if !state.quotas.sessions.take(&peer.ip(), Instant::now()) {
        return Err(Failure {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "Too many sign-ins from this network just now. Wait a minute and try again."
                .into(),
            retry: true,
        });
    }
    let now = clock::now();
    let person = oidc.finish(attempt, &answer, now).await?;
    if let Ok(Some(Signed {
        session: Some(old), ..
    })) = state.sessions.identify(headers, None, now).await
    {
        if let Err(error) = state.sessions.end(&old.id).await {
            tracing::debug!(%error, "cannot end the session a sign-in replaced");
        }
    }
    let agent = headers.get(USER_AGENT).and_then(|v| v.to_str().ok());
    let (signed, token) = state
        .sessions
        .start(
            Some(person.user_id),
            &person.display_name,
            sessions::device_label(agent),
            now,
        )
        .await
        .map_err(|error| {
            tracing::warn!(%error, "cannot start a session after signing in");
            Failure {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "Rally cannot record your sign-in right now. Try again in a moment."
                    .into(),
                retry: true,
            }
        })?;
    let session = signed.session.expect("a started session is stored");
    tracing::debug!(user = %session.user_id, "signed in through the provider");
    let max_age = session.expires_at.nanos_since(now) / 1_000_000_000;
    Ok(auth::session_cookie(&token, max_age, state.secure_cookies))
}

#[derive(Deserialize)]
struct Handoff {
    token: String,
    return_to: Option<String>,
}

/// Sign the browser in with a token from the integrator's backend (or a Rally session token a
/// client holds): checked like any bearer token, then kept as the session cookie until it
/// expires. Only a page allowed to use the cookie may post it, and it must say where it is
/// (`Origin`, which browsers send with every form post) — otherwise any site could sign a
/// visitor in as someone else.
async fn token_handoff(
    State(state): State<ApiState>,
    headers: HeaderMap,
    form: Result<Form<Handoff>, FormRejection>,
) -> Response {
    let refused =
        |status: StatusCode, message: &str| failure_page(&state.site, status, message, None);
    if !headers.contains_key(ORIGIN) || !state.origins.allow(&headers) {
        return refused(
            StatusCode::FORBIDDEN,
            "This page may not sign you in to Rally: its site is not one Rally trusts.",
        );
    }
    let handoff =
        match form {
            Ok(Form(handoff)) => handoff,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return refused(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "Rally could not sign you in: the form is over {MAX_HANDOFF_BYTES} bytes."
                    ),
                )
            }
            Err(_) => return refused(
                StatusCode::BAD_REQUEST,
                "Rally could not sign you in: the page sent no token (a form with a token field).",
            ),
        };
    let token = handoff.token.trim();
    if token.len() > MAX_HANDOFF_TOKEN_BYTES {
        return refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "Rally could not sign you in: the token is over {MAX_HANDOFF_TOKEN_BYTES} bytes, more than a browser keeps in a cookie."
            ),
        );
    }
    if crate::api_keys::is_key_token(token) {
        return refused(
            StatusCode::UNAUTHORIZED,
            &format!(
                "Rally could not sign you in: {}.",
                crate::auth::TokenError::KeyNotAccepted
            ),
        );
    }
    let now = clock::now();
    match state.sessions.verify(token, now).await {
        Ok(signed) => {
            tracing::debug!(user = %signed.actor.user_id, "signed in with a handed-over token");
            let max_age = signed.expires_at.nanos_since(now) / 1_000_000_000;
            redirect(
                &oidc::login::local_path(handoff.return_to.as_deref()),
                [auth::session_cookie(token, max_age, state.secure_cookies)],
            )
        }
        Err(err @ IdentifyError::Rejected(_)) => refused(
            StatusCode::UNAUTHORIZED,
            &format!("Rally could not sign you in: {err}."),
        ),
        Err(err @ IdentifyError::Unavailable(_)) => refused(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("Rally could not sign you in just now ({err}). Try again in a moment."),
        ),
    }
}

/// A sign-in that could not start: the reason in plain words and a way to start again.
fn login_failed(state: &ApiState, err: LoginError, return_to: Option<&str>) -> Response {
    let failure = Failure::from(err);
    let retry = failure.retry.then(|| retry_provider(return_to));
    let mut page = failure_page(
        &state.site,
        failure.status,
        &failure.message,
        retry.as_deref(),
    );
    if let Ok(clear) = HeaderValue::from_str(&attempt_cookie("", 0, state.secure_cookies)) {
        page.headers_mut().append(SET_COOKIE, clear);
    }
    page
}

fn attempt_cookie(value: &str, max_age_secs: u64, secure: bool) -> String {
    auth::set_cookie(
        ATTEMPT_COOKIE,
        value,
        ATTEMPT_COOKIE_PATH,
        max_age_secs,
        secure,
    )
}

fn redirect<const N: usize>(to: &str, cookies: [String; N]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match HeaderValue::from_str(to) {
        Ok(location) => headers.insert(LOCATION, location),
        Err(_) => headers.insert(LOCATION, HeaderValue::from_static("/")),
    };
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            headers.append(SET_COOKIE, value);
        }
    }
    response
}

/// Where "Try again" starts a new sign-in through the provider, back to `return_to`.
fn retry_provider(return_to: Option<&str>) -> String {
    SignInOptions::provider_start(&oidc::login::local_path(return_to))
}

/// A plain page saying the sign-in did not complete, with a way to try again (`retry`).
fn failure_page(site: &Site, status: StatusCode, message: &str, retry: Option<&str>) -> Response {
    let body = failure_body(&site.stylesheet_href(), message, retry);
    let mut response = (status, Html(body)).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The page's HTML: the reason, and a way to try again (`retry`) or go back to Rally.
fn failure_body(stylesheet: &str, message: &str, retry: Option<&str>) -> String {
    let retry = retry
        .map(|href| {
            format!(
                r#"<a class="button" href="{}">Try again</a> "#,
                escape(href)
            )
        })
        .unwrap_or_default();
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign-in did not complete — Rally</title><link rel="stylesheet" href="{stylesheet}"></head>
<body><main><section class="panel sign-in-failed"><h1>Sign-in did not complete</h1>
<p class="error" role="alert">{}</p>
<p>{retry}<a href="/">Back to Rally</a></p></section></main></body></html>"#,
        escape(message),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
