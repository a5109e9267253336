//! The HTTP surface: routes, shared state, and JSON errors.
//!
//! `/healthz`, `/readyz`, `/ws` and `/api/*` are Rally's; everything else is the Leptos app
//! (server-rendered pages, falling back to files from the site root, then the app's 404 page).

use std::any::Any;
use std::sync::Arc;

use axum::extract::{FromRef, OriginalUri, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use leptos::prelude::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use rally_app::data::ServerData;
use rally_app::protocol::ErrorCode;
use rally_app::{shell, App};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::api::ApiState;
use crate::forwarded::TrustedProxies;
use crate::gateway::{self, GatewayState};
use crate::health::{self, Readiness};
use crate::http_error::ApiError;
use crate::metrics::MetricsState;
use crate::site::Site;

/// What every handler can reach; each takes only its part (an axum sub-state). Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub gateway: GatewayState,
    pub api: ApiState,
    pub readiness: Readiness,
    pub metrics: MetricsState,
    /// Campaign data for server-rendered pages.
    pub page_data: Arc<dyn ServerData>,
    /// The built site: its files and their cache rules.
    pub site: Arc<Site>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

impl FromRef<AppState> for GatewayState {
    fn from_ref(state: &AppState) -> Self {
        state.gateway.clone()
    }
}

impl FromRef<AppState> for Readiness {
    fn from_ref(state: &AppState) -> Self {
        state.readiness.clone()
    }
}

impl FromRef<AppState> for MetricsState {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

pub fn router(state: AppState) -> Router {
    let api = crate::api::router(state.api.clone(), api_not_found);
    let router: Router<AppState> = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(crate::metrics::scrape))
        .route("/ws", get(gateway::upgrade))
        .route("/api/campaigns/{id}/events", get(gateway::campaign_events))
        .nest("/api", api)
        .merge(crate::sign_in::router(state.api.clone()))
        .merge(pages(&state))
        .fallback(site_file)
        .layer(axum::middleware::from_fn_with_state(
            state.api.sessions.clone(),
            crate::page_data::find_visitor,
        ))
        .layer(CatchPanicLayer::custom(panic_response));
    security_headers(router)
        .layer(axum::middleware::from_fn_with_state(
            state.trusted_proxies.clone(),
            crate::forwarded::client_address,
        ))
        .layer(axum::middleware::from_fn(crate::access_log::log_requests))
        .with_state(state)
}

/// The server-rendered pages. A page shows live data for the person signed in: browsers ask
/// again on every visit, and no shared cache keeps it. Their headers name the frontend's files, so
/// the browser fetches them before it reads the page ([`Site::preload_header`]).
fn pages(state: &AppState) -> Router<AppState> {
    let pages = Router::new()
        .leptos_routes_with_context(
            state,
            generate_route_list(App),
            {
                let data = state.page_data.clone();
                move || leptos::prelude::provide_context(data.clone())
            },
            {
                let options = state.leptos_options.clone();
                move || shell(options.clone())
            },
        )
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        ));
    match state.site.preload_header() {
        Some(links) => pages.layer(SetResponseHeaderLayer::if_not_present(header::LINK, links)),
        None => pages,
    }
}

/// A file from the site root with its cache rules — a precompressed variant when the browser
/// takes one, `304 Not Modified` when the browser's copy is current — or the app's "not found"
/// page. The file is looked up with the request's own headers: Leptos's handler passes on only
/// `Accept-Encoding`, so files that revalidate would go out whole every time.
async fn site_file(
    uri: Uri,
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut lookup = axum::extract::Request::new(axum::body::Body::empty());
        *lookup.method_mut() = request.method().clone();
        *lookup.uri_mut() = uri.clone();
        *lookup.headers_mut() = request.headers().clone();
        let mut files = ServeDir::new(state.site.root())
            .precompressed_br()
            .precompressed_gzip()
            .append_index_html_on_directories(false);
        if let Ok(found) = files.try_call(lookup).await {
            if found.status() != StatusCode::NOT_FOUND {
                let mut response = found.map(axum::body::Body::new);
                state.site.set_cache_headers(uri.path(), &mut response);
                if !response.headers().contains_key(header::CACHE_CONTROL) {
                    response
                        .headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                }
                return response;
            }
        }
    }
    let serve = leptos_axum::file_and_error_handler::<AppState, _>(shell);
    let mut response = serve(uri.clone(), State(state.clone()), request).await;
    if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED {
        state.site.set_cache_headers(uri.path(), &mut response);
    } else {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

/// The page's content policy. Leptos hydrates from inline scripts and the app is WebAssembly,
/// hence `'unsafe-inline'` and `'wasm-unsafe-eval'` for scripts; everything else comes from the
/// site itself (media from the browser's own camera: `blob:`), and no other site may frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; \
    script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self' ws: wss:; \
    object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// Headers every response carries (unless a handler set its own).
fn security_headers(router: Router<AppState>) -> Router<AppState> {
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    router
        .layer(set(
            header::CONTENT_SECURITY_POLICY,
            CONTENT_SECURITY_POLICY,
        ))
        .layer(set(header::X_FRAME_OPTIONS, "DENY"))
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(header::REFERRER_POLICY, "same-origin"))
}

async fn api_not_found(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no API route for {method} {}", uri.path()),
    )
}

/// A handler panicked: the request gets a JSON 500, the incident one Error line, the server lives.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = crate::panics::message(panic.as_ref());
    tracing::error!(panic = %what, "request handler panicked");
    ApiError::new(
        ErrorCode::Internal,
        "internal error; the incident was logged",
    )
    .into_response()
}
