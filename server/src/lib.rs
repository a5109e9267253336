//! The Rally server as a library: `main` parses configuration and calls [`run`]; integration tests
//! call [`run`] on `127.0.0.1:0` with their own shutdown trigger.

pub mod clock;
pub mod config;
pub mod gateway;
pub mod health;
pub mod http;
pub mod shutdown;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use leptos::config::{Env, LeptosOptions};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::gateway::GatewayStats;
use crate::health::Check;
use crate::http::AppState;
use crate::shutdown::Shutdown;

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("site root {0} has no pkg/ directory; build the site first (`cargo leptos build`) or set --site-root")]
    SiteRoot(std::path::PathBuf),
    #[error("invalid Redis URL: {0}")]
    RedisUrl(String),
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Bind the configured address. Separate from [`run`] so callers can report the real port.
pub async fn bind(config: &Config) -> Result<TcpListener, ServerError> {
    TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.addr,
            source,
        })
}

/// Leptos's options from Rally's configuration. cargo-leptos (`cargo leptos watch`) exports
/// `LEPTOS_ENV=DEV` and a reload port; only those dev-loop settings are taken from its variables.
fn leptos_options(config: &Config, addr: std::net::SocketAddr) -> LeptosOptions {
    let env = match std::env::var("LEPTOS_ENV").as_deref() {
        Ok("DEV" | "dev" | "development") => Env::DEV,
        _ => Env::PROD,
    };
    let reload_port = std::env::var("LEPTOS_RELOAD_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);
    LeptosOptions::builder()
        .output_name("rally")
        .site_root(config.site_root.to_string_lossy().into_owned())
        .site_pkg_dir("pkg")
        .site_addr(addr)
        .env(env)
        .reload_port(reload_port)
        .build()
}

/// Serve until `shutdown_requested` resolves, then drain: stop accepting, close WebSockets with
/// 1001, wait up to the configured grace period for them, and return.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown_requested: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    if !config.site_root.join("pkg").is_dir() {
        return Err(ServerError::SiteRoot(config.site_root.clone()));
    }

    let shutdown = Shutdown::new();
    let gateway = GatewayStats::new(gateway::DEFAULT_MAX_CONNECTIONS);
    let mut checks = vec![
        Check::WebSocketGateway {
            stats: gateway.clone(),
            shutdown: shutdown.signal(),
        },
        Check::DataDir(config.data_dir.clone()),
    ];
    if let Some(url) = &config.redis_url {
        let client = redis::Client::open(url.as_str())
            .map_err(|err| ServerError::RedisUrl(err.to_string()))?;
        checks.push(Check::Redis(client));
    }
    let tasks = TaskTracker::new();
    let state = AppState {
        leptos_options: leptos_options(&config, addr),
        checks: Arc::from(checks),
        gateway,
        shutdown: shutdown.signal(),
        tasks: tasks.clone(),
    };

    tracing::info!(%addr, data_dir = %config.data_dir.display(), redis = config.redis_url.is_some(), "rally started");

    let mut stop = shutdown.signal();
    let serve = axum::serve(listener, http::router(state))
        .with_graceful_shutdown(async move { stop.recv().await });
    let serve = tokio::spawn(async move { serve.await });

    shutdown_requested.await;
    tracing::info!("rally shutting down");
    shutdown.trigger();
    tasks.close();
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let drained = tokio::time::timeout(grace, async {
        let served = serve.await;
        tasks.wait().await;
        served
    })
    .await;
    match drained {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => return Err(ServerError::Serve(err)),
        Ok(Err(join)) => return Err(ServerError::Serve(std::io::Error::other(join))),
        Err(_) => tracing::warn!(
            grace_secs = config.shutdown_grace_secs,
            open = tasks.len(),
            "connections still open after the grace period; closing them"
        ),
    }
    tracing::info!("rally stopped");
    Ok(())
}
