#![recursion_limit = "256"]
//! The Rally server as a library: `main` parses configuration and calls [`run`]; integration tests
//! call [`run`] on `127.0.0.1:0` with their own shutdown trigger.

pub mod access_log;
pub mod api;
pub mod api_keys;
pub mod auth;
pub mod bus;
pub mod campaigns;
pub mod clock;
pub mod command;
pub mod config;
pub mod control;
pub mod forwarded;
pub mod frames;
pub mod gateway;
pub mod health;
pub mod http;
pub mod http_error;
pub mod jwt;
pub mod key_command;
pub mod listener;
pub mod media;
pub mod metrics;
pub mod oidc;
pub mod ops;
pub mod page_data;
pub mod panics;
pub mod quota;
pub mod redis;
pub mod registry;
pub mod sessions;
pub mod shutdown;
pub mod sign_in;
pub mod site;
pub mod stats;
pub mod store;
pub mod store_command;
pub mod telemetry;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use leptos::config::{Env, LeptosOptions};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;

use crate::api::ApiState;
use crate::auth::Keys;
use crate::bus::redis::RedisBus;
use crate::bus::{EventBus, InProcessBus, Incoming};
use crate::campaigns::{StateManager, WriterConfig};
use crate::clock::EventIds;
use crate::config::Config;
use crate::gateway::{GatewayConfig, GatewayState};
use crate::health::{Check, Readiness};
use crate::http::AppState;
use crate::listener::ListenerConfig;
use crate::media::MediaRelay;
use crate::ops::OpsFeed;
use crate::redis::RedisLink;
use crate::sessions::{SessionSettings, Sessions};
use crate::shutdown::Shutdown;
use crate::stats::{GatewayStats, OpsCounters};
use crate::store::api_keys::ApiKeyStore;
use crate::store::embedded::EmbeddedStore;
use crate::store::redis::RedisStore;
use crate::store::sessions::SessionStore;
use crate::store::webhooks::WebhookStore;
use crate::store::Store;

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
    #[error("{0}")]
    Site(#[from] crate::site::SiteError),
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Redis(#[from] crate::redis::LinkError),
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// Settings that do not add up (tests build a `Config` without parsing it).
    #[error("{0}")]
    Config(String),
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
fn leptos_options(site: &crate::site::Site, addr: std::net::SocketAddr) -> LeptosOptions {
    let env = match std::env::var("LEPTOS_ENV").as_deref() {
        Ok("DEV" | "dev" | "development") => Env::DEV,
        _ => Env::PROD,
    };
    let reload_port = std::env::var("LEPTOS_RELOAD_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);
    // Leptos joins the fingerprint file's name to the binary's directory: an absolute path
    // keeps it in the site root, so a deployment is the binary plus the site folder.
    let fingerprints = site.fingerprint_file();
    LeptosOptions::builder()
        .output_name("rally")
        .site_root(site.root().to_string_lossy().into_owned())
        .hash_files(fingerprints.is_some())
        .hash_file(
            fingerprints
                .map(|path| path.to_string_lossy().into_owned())
                .unwrap_or_else(|| crate::site::FINGERPRINT_FILE.to_owned())
                .into(),
        )
        .site_pkg_dir("pkg")
        .site_addr(addr)
        .env(env)
        .reload_port(reload_port)
        .build()
}

/// Open and serve in one step; see [`Rally::open`] and [`Rally::serve`].
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown_requested: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    Rally::open(config)
        .await?
        .serve(listener, shutdown_requested)
        .await
}

/// A Rally server whose state is open but which does not serve yet.
pub struct Rally {
    config: Config,
    store: Arc<dyn Store>,
    /// Webhook endpoints, and which instance this is (it names the deliverer's leases).
    webhooks: (Arc<dyn WebhookStore>, u32),
    keys: Keys,
    sessions: Sessions,
    manager: StateManager,
    ops: Arc<OpsCounters>,
    gateway_config: GatewayConfig,
    shutdown: Shutdown,
    /// Redis mode: the link (for readiness and status) and what other instances send.
    redis: Option<(RedisLink, mpsc::UnboundedReceiver<Incoming>)>,
    /// Single-instance mode: keeps the always-writable signal alive.
    _writable: Option<watch::Sender<bool>>,
    media: MediaRelay,
    site: crate::site::Site,
    /// Single-instance mode: the control socket and the store it backs up.
    control: Option<(tokio::net::UnixListener, EmbeddedStore)>,
}

/// What the store and bus are, by mode.
struct Backends {
    store: Arc<dyn Store>,
    sessions: Arc<dyn SessionStore>,
    api_keys: Arc<dyn ApiKeyStore>,
    webhooks: Arc<dyn WebhookStore>,
    bus: Arc<dyn EventBus>,
    writable: watch::Receiver<bool>,
    redis: Option<(RedisLink, mpsc::UnboundedReceiver<Incoming>)>,
    always_writable: Option<watch::Sender<bool>>,
    /// Single-instance mode: the store itself, for backups through the control socket.
    embedded: Option<EmbeddedStore>,
}

impl Backends {
    /// Redis mode: Redis is the source of truth and the bus. Unreachable at start is fatal: an
    /// instance without its source of truth could only answer errors. Otherwise the embedded
    /// store and no bus.
    async fn open(
        config: &Config,
        instance: u32,
        shutdown: &Shutdown,
    ) -> Result<Backends, ServerError> {
        Ok(match &config.redis_url {
            Some(url) => {
                let link = RedisLink::connect(url.as_str()).await?;
                let (bus, incoming) = RedisBus::start(link.clone(), instance, shutdown.signal());
                let store = RedisStore::new(link.clone());
                Backends {
                    store: Arc::new(store.clone()),
                    sessions: Arc::new(store.clone()),
                    api_keys: Arc::new(store.clone()),
                    webhooks: Arc::new(store),
                    bus: Arc::new(bus),
                    writable: link.watch(),
                    redis: Some((link, incoming)),
                    always_writable: None,
                    embedded: None,
                }
            }
            None => {
                let (sender, writable) = watch::channel(true);
                let store = EmbeddedStore::open(&config.data_dir)?;
                Backends {
                    store: Arc::new(store.clone()),
                    sessions: Arc::new(store.clone()),
                    api_keys: Arc::new(store.clone()),
                    webhooks: Arc::new(store.clone()),
                    bus: Arc::new(InProcessBus),
                    writable,
                    redis: None,
                    always_writable: Some(sender),
                    embedded: Some(store.clone()),
                }
            }
        })
    }
}

impl Rally {
    /// Check the site, open the store and the session keys. Nothing listens yet.
    pub async fn open(config: Config) -> Result<Rally, ServerError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let site = crate::site::Site::open(&config.site_root)?;
        let shutdown = Shutdown::new();
        let event_ids = EventIds::new();
        let instance = event_ids.instance();
        let backends = Backends::open(&config, instance, &shutdown).await?;
        let keys = match &config.session_secret {
            Some(secret) => Keys::new(secret.as_bytes()),
            None => Keys::new(
                &backends
                    .store
                    .secret("session", || clock::random_bytes::<32>().to_vec())
                    .await?,
            ),
        };
        let sessions = Sessions::new(
            keys.clone(),
            backends.sessions,
            backends.bus.clone(),
            SessionSettings {
                lifetime: Duration::from_secs(config.session_lifetime_secs),
                idle: Duration::from_secs(config.session_idle_secs),
            },
            config.jwt().map(crate::jwt::JwtVerifier::new),
            crate::api_keys::ApiKeys::new(backends.api_keys),
            config.guest_sign_in,
        );
        let ops = Arc::new(OpsCounters::default());
        let manager = StateManager::new(
            backends.store.clone(),
            backends.bus,
            backends.writable,
            event_ids,
            ops.clone(),
            WriterConfig {
                history_len: config.history_len as usize,
                history_bytes: usize::try_from(config.history_bytes).unwrap_or(usize::MAX),
                idle_unload: Duration::from_secs(config.idle_unload_secs),
                default_visibility: config.default_visibility,
                max_campaigns_per_user: config.max_campaigns_per_user as usize,
                max_invites_per_user: config.max_invites_per_user as usize,
            },
        );
        let gateway_config = GatewayConfig {
            max_connections: config.max_connections as usize,
            max_subscriptions: config.max_subscriptions as usize,
            write_rate: f64::from(config.write_rate),
            write_burst: 2.0 * f64::from(config.write_rate),
            read_rate: f64::from(config.read_rate),
            read_burst: 2.0 * f64::from(config.read_rate),
            allow_anonymous: config.allow_anonymous,
            origins: config.origins(),
            ops_public: config.ops_public,
            admins: config.admins.clone(),
            ping_interval: Duration::from_secs(config.ws_ping_secs),
            idle_timeout: Duration::from_secs(config.ws_idle_secs),
        };
        let media = MediaRelay::new(
            config.media(),
            instance,
            backends.redis.as_ref().map(|(link, _)| link.clone()),
            shutdown.signal(),
            ops.clone(),
        );
        // Without its control socket the server still serves; only `rally backup` must then
        // wait until it is stopped.
        let control =
            backends
                .embedded
                .and_then(|store| match crate::control::bind(&config.data_dir) {
                    Ok(listener) => Some((listener, store)),
                    Err(err) => {
                        tracing::warn!(
                            path = %crate::control::socket_path(&config.data_dir).display(),
                            error = %err,
                            "no control socket: backups need the server stopped"
                        );
                        None
                    }
                });
        Ok(Rally {
            media,
            site,
            control,
            config,
            store: backends.store,
            webhooks: (backends.webhooks, instance),
            keys,
            sessions,
            manager,
            ops,
            gateway_config,
            shutdown,
            redis: backends.redis,
            _writable: backends.always_writable,
        })
    }

    /// The campaign state manager (tests drive it directly).
    pub fn manager(&self) -> &StateManager {
        &self.manager
    }

    /// The media relay (tests read its census).
    pub fn media(&self) -> &MediaRelay {
        &self.media
    }

    /// Serve until `shutdown_requested` resolves, then drain: stop accepting, close WebSockets
    /// with 1001, wait up to the configured grace period for them, close the store, return.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown_requested: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Rally {
            config,
            site,
            control,
            store,
            webhooks: (webhook_store, instance),
            keys,
            sessions,
            manager,
            ops,
            gateway_config,
            shutdown,
            redis,
            _writable,
            media,
        } = self;
        let addr = listener.local_addr().map_err(ServerError::Serve)?;
        if let Some((listener, store)) = control {
            tokio::spawn(crate::control::serve(listener, store, shutdown.signal()));
        }
        let link = redis.as_ref().map(|(link, _)| link.clone());
        if let Some((link, incoming)) = redis {
            tokio::spawn(route_bus(
                manager.clone(),
                sessions.clone(),
                link,
                incoming,
                shutdown.signal(),
            ));
        }
        let stats = GatewayStats::new(gateway_config.max_connections);
        let bus_check = match &link {
            Some(link) => Check::RedisBus(link.clone()),
            None => Check::InProcessBus,
        };
        let checks = vec![
            Check::WebSocketGateway {
                stats: stats.clone(),
                shutdown: shutdown.signal(),
            },
            Check::StateConsistency(manager.clone()),
            bus_check,
            Check::SubscriberChannels(stats.clone()),
            Check::DataDir(crate::health::DataDir::new(config.data_dir.clone())),
            Check::Store(store.clone()),
        ];
        crate::metrics::handle(); // install the recorder before anything records
        let ops_feed = OpsFeed::new();
        let bus_kind = manager.bus().kind();
        let bus_link = link.clone();
        tokio::spawn(crate::ops::run_sampler(
            ops_feed.clone(),
            ops.clone(),
            manager.clone(),
            stats.clone(),
            move || rally_app::protocol::ops::BusStatus {
                kind: bus_kind.to_owned(),
                connected: bus_link.as_ref().is_none_or(|l| l.is_up()),
            },
            shutdown.signal(),
        ));
        if config.history_retention_days > 0 {
            let keep =
                std::time::Duration::from_secs(86_400 * u64::from(config.history_retention_days));
            tokio::spawn(crate::campaigns::retention::run(
                store.clone(),
                keep,
                shutdown.signal(),
            ));
        }
        let webhook_settings = config.webhook_settings();
        tokio::spawn(
            crate::webhooks::Deliverer::new(
                store.clone(),
                webhook_store.clone(),
                webhook_settings.clone(),
                instance,
            )
            .run(shutdown.signal()),
        );
        let tasks = TaskTracker::new();
        let shutdown_manager = manager.clone();
        let quotas = Arc::new(crate::quota::Quotas::new(config.quotas()));
        let api = ApiState {
            manager: manager.clone(),
            keys: keys.clone(),
            sessions: sessions.clone(),
            secure_cookies: config.secure_cookies,
            allow_anonymous: config.allow_anonymous,
            origins: config.origins(),
            quotas: quotas.clone(),
            oidc: config
                .oidc()
                .map_err(ServerError::Config)?
                .map(crate::oidc::Oidc::new),
            admins: config.admins.clone().into(),
            webhooks: crate::webhooks::Webhooks::new(
                store.clone(),
                webhook_store,
                webhook_settings,
            ),
            site: Arc::new(site.clone()),
        };
        let state = AppState {
            leptos_options: leptos_options(&site, addr),
            site: Arc::new(site.clone()),
            trusted_proxies: crate::forwarded::TrustedProxies::new(config.trusted_proxies.clone()),
            readiness: Readiness(Arc::from(checks)),
            metrics: crate::metrics::MetricsState {
                manager: manager.clone(),
                per_campaign: config.metrics_campaigns,
            },
            page_data: crate::page_data::PageData {
                manager: manager.clone(),
                keys: keys.clone(),
                allow_anonymous: config.allow_anonymous,
                sign_in: api.sign_in_options(),
            }
            .shared(),
            api,
            gateway: GatewayState {
                config: Arc::new(gateway_config),
                sessions,
                manager,
                relay: media,
                stats,
                ops,
                ops_feed,
                shutdown: shutdown.signal(),
                tasks: tasks.clone(),
                quotas,
            },
        };

        tracing::info!(%addr, build = env!("RALLY_BUILD"), data_dir = %config.data_dir.display(), redis = config.redis_url.is_some(), "rally started");
        let listening = ListenerConfig {
            max_connections: listener::connection_cap(config.max_http_connections as usize),
            max_per_ip: config.max_connections_per_ip as usize,
            trusted_proxies: crate::forwarded::TrustedProxies::new(config.trusted_proxies.clone()),
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
            tcp_keepalive: Duration::from_secs(60),
        };
        let serve = tokio::spawn(listener::serve(
            listener,
            http::router(state),
            listening,
            tasks.clone(),
            shutdown.signal(),
        ));

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
            Ok(Ok(())) => {}
            Ok(Err(join)) => return Err(ServerError::Serve(std::io::Error::other(join))),
            Err(_) => tracing::warn!(
                grace_secs = config.shutdown_grace_secs,
                open = tasks.len(),
                "connections still open after the grace period; closing them"
            ),
        }
        shutdown_manager.shutdown().await;
        if let Err(err) = store.close().await {
            tracing::error!(error = %err, "store did not close cleanly");
        }
        tracing::info!("rally stopped");
        Ok(())
    }
}

/// Redis mode: route notes from other instances, and the link's ups and downs, to the
/// campaigns (and the ends of sessions to the sessions), until shutdown.
async fn route_bus(
    manager: StateManager,
    sessions: Sessions,
    link: RedisLink,
    mut incoming: mpsc::UnboundedReceiver<Incoming>,
    mut stop: crate::shutdown::ShutdownSignal,
) {
    let mut up = link.watch();
    loop {
        tokio::select! {
            _ = stop.recv() => return,
            Some(note) = incoming.recv() => match note {
                Incoming::SessionEnded(id) => sessions.ended_elsewhere(id),
                Incoming::Resync => {
                    sessions.recheck_all();
                    manager.dispatch(Incoming::Resync);
                }
                note => manager.dispatch(note),
            },
            changed = up.changed() => {
                if changed.is_err() {
                    return;
                }
                let writable = *up.borrow_and_update();
                manager.set_writable(writable);
            }
        }
    }
}
