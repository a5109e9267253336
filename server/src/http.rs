//! The HTTP surface: routes, shared state, and JSON errors.
//!
//! `/healthz`, `/readyz`, `/ws` and `/api/*` are Rally's; everything else is the Leptos app
//! (server-rendered pages, falling back to files from the site root, then the app's 404 page).

use std::any::Any;
use std::sync::Arc;

use axum::extract::{FromRef, OriginalUri};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use leptos::prelude::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use rally_app::data::ServerData;
use rally_app::protocol::ErrorCode;
use rally_app::{shell, App};
use tower_http::catch_panic::CatchPanicLayer;

use crate::api::ApiState;
use crate::campaigns::StateManager;
use crate::gateway::{self, GatewayState};
use crate::health::{self, Readiness};
use crate::http_error::ApiError;

/// What every handler can reach; each takes only its part (an axum sub-state). Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub gateway: GatewayState,
    pub api: ApiState,
    pub readiness: Readiness,
    /// Campaign data for server-rendered pages.
    pub page_data: Arc<dyn ServerData>,
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

impl FromRef<AppState> for StateManager {
    fn from_ref(state: &AppState) -> Self {
        state.gateway.manager.clone()
    }
}

pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let api = crate::api::router()
        .fallback(api_not_found)
        .with_state(state.api.clone());
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(crate::metrics::scrape))
        .route("/ws", get(gateway::upgrade))
        .nest("/api", api)
        .leptos_routes_with_context(
            &state,
            routes,
            {
                let data = state.page_data.clone();
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
