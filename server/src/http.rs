//! The HTTP surface: routes, shared state, and JSON errors.
//!
//! `/healthz`, `/readyz`, `/ws` and `/api/*` are Rally's; everything else is the Leptos app
//! (server-rendered pages, falling back to files from the site root, then the app's 404 page).

use std::any::Any;
use std::sync::Arc;

use axum::extract::{FromRef, OriginalUri, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use leptos::prelude::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use rally_app::protocol::{ErrorBody, ErrorCode};
use rally_app::{shell, App};
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::Keys;
use crate::campaigns::StateManager;
use crate::gateway::{self, GatewayConfig, GatewayStats};
use crate::health::{self, Check};
use crate::shutdown::ShutdownSignal;

/// What every handler can reach. Cheap to clone (all handles).
#[derive(Clone)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub checks: Arc<[Check]>,
    pub gateway: GatewayStats,
    pub gateway_config: Arc<GatewayConfig>,
    pub manager: StateManager,
    pub keys: Keys,
    /// Mark cookies `Secure` (the site is served over HTTPS).
    pub secure_cookies: bool,
    pub shutdown: ShutdownSignal,
    /// Tasks that outlive their HTTP request (upgraded WebSockets); shutdown waits for them.
    pub tasks: TaskTracker,
    /// Live samples for `/ops`.
    pub ops_feed: crate::ops::OpsFeed,
    /// The media relay (WebRTC SFU).
    pub media: crate::media::MediaRelay,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

/// A JSON API error: `{"error": {"code": "...", "message": "..."}}` with the code's HTTP status.
#[derive(Debug)]
pub struct ApiError(ErrorBody);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(ErrorBody::new(code, message))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(serde_json::json!({ "error": self.0 }))).into_response()
    }
}

pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let api = crate::api::router().fallback(api_not_found);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/ws", get(gateway::upgrade))
        .nest("/api", api)
        .leptos_routes_with_context(
            &state,
            routes,
            {
                let data =
                    crate::page_data::PageData::shared(state.manager.clone(), state.keys.clone());
                move || leptos::prelude::provide_context(data.clone())
            },
            {
                let options = state.leptos_options.clone();
                move || shell(options.clone())
            },
        )
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let report = health::readiness(&state.checks).await;
    let status = if report.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// Prometheus text exposition.
async fn metrics(State(state): State<AppState>) -> Response {
    let body = crate::metrics::render(&state.manager).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn api_not_found(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no API route for {method} {}", uri.path()),
    )
}

/// A handler panicked: the request gets a JSON 500, the incident one Error line, the server lives.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into());
    tracing::error!(panic = %what, "request handler panicked");
    ApiError::new(
        ErrorCode::Internal,
        "internal error; the incident was logged",
    )
    .into_response()
}
