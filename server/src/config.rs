//! Server settings, from flags or `RALLY_*` environment variables (flags win).
//!
//! Everything is checked before the server starts: a bad value stops it with one line that names
//! the flag, its variable and what is allowed, and exit code 2 (see [`Config::from_args`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use std::error::Error as _;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, ValueEnum};
use rally_app::model::Visibility;

#[derive(Debug, Clone, Parser)]
#[command(name = "rally", version = env!("RALLY_BUILD"), about = "Rally: live campaign rooms")]
pub struct Config {
    /// Address to listen on for HTTP and WebSocket traffic.
    #[arg(long, env = "RALLY_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,

    /// Directory for Rally's durable state (created if missing).
    #[arg(long, env = "RALLY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// The built site (`target/site` from `cargo leptos build --split`): WASM, JS, CSS and assets.
    #[arg(long, env = "RALLY_SITE_ROOT", default_value = "target/site")]
    pub site_root: PathBuf,

    /// Redis URL (`redis://host:port/db` or `rediss://…`) for multi-instance mode.
    /// Without it Rally runs on its embedded defaults.
    #[arg(long, env = "RALLY_REDIS_URL", value_parser = parse_redis_url)]
    pub redis_url: Option<RedisUrl>,

    /// Log line format. The level comes from `RUST_LOG` (default: info for Rally, warn for others).
    #[arg(long, env = "RALLY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Key for signing session and invite tokens (at least 32 characters). Instances that share
    /// users must share it. Default: generated on first start and kept in the data directory.
    #[arg(long, env = "RALLY_SESSION_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub session_secret: Option<Secret>,

    /// Seconds a session lasts from sign-in, however active (default 30 days).
    #[arg(long, env = "RALLY_SESSION_LIFETIME_SECS", default_value_t = 30 * 24 * 3600, value_parser = clap::value_parser!(u64).range(60..=10 * 365 * 24 * 3600))]
    pub session_lifetime_secs: u64,

    /// Seconds without use after which a session ends (default 7 days). Use counts at most once
    /// a minute; an open page counts as use.
    #[arg(long, env = "RALLY_SESSION_IDLE_SECS", default_value_t = 7 * 24 * 3600, value_parser = clap::value_parser!(u64).range(120..=10 * 365 * 24 * 3600))]
    pub session_idle_secs: u64,

    /// Let anyone sign in by picking a display name (guests). Turn it off when people sign in
    /// through your backend's tokens (`--jwt-secret` / `--jwt-jwks-url`).
    #[arg(long, env = "RALLY_GUEST_SIGN_IN", default_value_t = true, action = clap::ArgAction::Set)]
    pub guest_sign_in: bool,

    /// Accept HS256 tokens minted by your backend with this shared secret (at least 32
    /// characters). See docs/protocol.md "Tokens from your backend".
    #[arg(long, env = "RALLY_JWT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub jwt_secret: Option<Secret>,

    /// Accept RS256 and ES256 tokens signed by the keys published at this JWKS URL.
    #[arg(long, env = "RALLY_JWT_JWKS_URL", value_parser = parse_http_url)]
    pub jwt_jwks_url: Option<String>,

    /// The `aud` every backend-minted token must carry.
    #[arg(long, env = "RALLY_JWT_AUDIENCE", default_value = "rally")]
    pub jwt_audience: String,

    /// The `iss` backend-minted tokens must carry (unchecked when unset).
    #[arg(long, env = "RALLY_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Clock skew allowed on a backend-minted token's `exp` and `nbf`, in seconds.
    #[arg(long, env = "RALLY_JWT_LEEWAY_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub jwt_leeway_secs: u64,

    /// Sign people in through this OpenID Connect provider (its issuer URL, as in its ID
    /// tokens). Needs --oidc-client-id, and --oidc-redirect-url or --public-origin. See the
    /// README, "Who may sign in".
    #[arg(long, env = "RALLY_OIDC_ISSUER", value_parser = parse_http_url)]
    pub oidc_issuer: Option<String>,

    /// Rally's client id at the provider.
    #[arg(long, env = "RALLY_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,

    /// Rally's client secret at the provider (unset for a public client: PKCE alone).
    #[arg(long, env = "RALLY_OIDC_CLIENT_SECRET", hide_env_values = true, value_parser = parse_client_secret)]
    pub oidc_client_secret: Option<Secret>,

    /// The callback registered with the provider. Default: --public-origin +
    /// `/auth/oidc/callback`.
    #[arg(long, env = "RALLY_OIDC_REDIRECT_URL", value_parser = parse_http_url)]
    pub oidc_redirect_url: Option<String>,

    /// Scopes asked for (space-separated; must include `openid`).
    #[arg(
        long,
        env = "RALLY_OIDC_SCOPES",
        default_value = "openid profile email"
    )]
    pub oidc_scopes: String,

    /// What the sign-in button calls the provider: "Sign in with <this>".
    #[arg(
        long,
        env = "RALLY_OIDC_PROVIDER_NAME",
        default_value = "your organization"
    )]
    pub oidc_provider_name: String,

    /// Only people whose verified email address is in one of these domains (comma-separated)
    /// may sign in through the provider.
    #[arg(long, env = "RALLY_OIDC_ALLOWED_DOMAINS", value_delimiter = ',')]
    pub oidc_allowed_domains: Vec<String>,

    /// Only people in at least one of these groups (comma-separated) may sign in through the
    /// provider.
    #[arg(long, env = "RALLY_OIDC_ALLOWED_GROUPS", value_delimiter = ',')]
    pub oidc_allowed_groups: Vec<String>,

    /// The claim that lists a person's groups.
    #[arg(long, env = "RALLY_OIDC_GROUPS_CLAIM", default_value = "groups")]
    pub oidc_groups_claim: String,

    /// Who may see a new campaign whose creator did not choose: `private` (members only),
    /// `unlisted` (anyone with its address) or `public` (listed to everyone).
    #[arg(long, env = "RALLY_DEFAULT_VISIBILITY", default_value = "private", value_parser = parse_visibility)]
    pub default_visibility: Visibility,

    /// Let visitors without a session watch campaigns (they can never edit).
    #[arg(long, env = "RALLY_ALLOW_ANONYMOUS", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_anonymous: bool,

    /// Extra origins (comma-separated, like `http://127.0.0.1:8080`) whose pages may open
    /// WebSockets and make cookie-authenticated requests, besides the site itself.
    #[arg(long, env = "RALLY_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// The site's public origin, like `https://rally.example.com`. Set it in production: then
    /// only pages from exactly this origin (and --allowed-origins) count as the site itself.
    /// Unset, a page counts when its origin's host is the request's `Host` (over https with
    /// --secure-cookies, http without).
    #[arg(long, env = "RALLY_PUBLIC_ORIGIN")]
    pub public_origin: Option<String>,

    /// List subscribers per campaign on `/metrics` (`rally_campaign_subscribers{campaign}`).
    /// Off by default: the series name campaigns, and `/metrics` needs no session.
    #[arg(long, env = "RALLY_METRICS_CAMPAIGNS", default_value_t = false, action = clap::ArgAction::Set)]
    pub metrics_campaigns: bool,

    /// Let anyone watch the live ops view (`/ops`); otherwise only `--admins` may.
    #[arg(long, env = "RALLY_OPS_PUBLIC", default_value_t = false, action = clap::ArgAction::Set)]
    pub ops_public: bool,

    /// User ids (comma-separated) allowed to watch `/ops`, make API keys and webhook endpoints
    /// for every campaign, and revoke or remove anyone's. A signed-in user's id is shown on the ops page when access is refused.
    #[arg(long, env = "RALLY_ADMINS", value_delimiter = ',')]
    pub admins: Vec<String>,

    /// Mark the session cookie `Secure` (set when the site is served over HTTPS).
    #[arg(long, env = "RALLY_SECURE_COOKIES", default_value_t = false, action = clap::ArgAction::Set)]
    pub secure_cookies: bool,

    /// Most WebSocket connections this instance accepts at once.
    #[arg(long, env = "RALLY_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Most campaigns one connection may subscribe to at once.
    #[arg(long, env = "RALLY_MAX_SUBSCRIPTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_subscriptions: u32,

    /// Writes per second one connection may sustain (bursts of twice as many are allowed).
    #[arg(long, env = "RALLY_WRITE_RATE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub write_rate: u32,

    /// Events kept per campaign for resuming subscribers.
    #[arg(long, env = "RALLY_HISTORY_LEN", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub history_len: u32,

    /// Encoded bytes of events kept per campaign (whichever of this and --history-len is
    /// reached first); also bounds what one resuming subscriber is sent.
    #[arg(long, env = "RALLY_HISTORY_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(65_536..=1 << 32))]
    pub history_bytes: u64,

    /// Days of changes each campaign's log keeps at least; older ones are forgotten down to a
    /// snapshot (versions before it can no longer be read). 0: keep the log for ever.
    #[arg(long, env = "RALLY_HISTORY_RETENTION_DAYS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub history_retention_days: u32,

    /// Reads (subscribe, snapshot, joining a live room) per second one connection may sustain
    /// (bursts of twice as many are allowed).
    #[arg(long, env = "RALLY_READ_RATE", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub read_rate: u32,

    /// Open TCP connections (HTTP and WebSocket) at most; lowered to fit the process's open-file
    /// limit (`ulimit -n`) less 256.
    #[arg(long, env = "RALLY_MAX_HTTP_CONNECTIONS", default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub max_http_connections: u32,

    /// Open TCP connections from one client address at most; 0 turns the cap off. Connections
    /// from --trusted-proxies are not capped (each carries many clients: cap them in the proxy).
    #[arg(long, env = "RALLY_MAX_CONNECTIONS_PER_IP", default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub max_connections_per_ip: u32,

    /// Reverse proxies (comma-separated addresses or CIDR ranges, like `127.0.0.1,10.0.0.0/8`)
    /// whose `X-Forwarded-For` names the client: per-address quotas then count the client, not
    /// the proxy. Empty (the default): every client is its TCP address.
    #[arg(long, env = "RALLY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<crate::forwarded::AddressRange>,

    /// Seconds a client has to send a request's headers; an idle keep-alive connection is
    /// closed after as long.
    #[arg(long, env = "RALLY_HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub header_read_timeout_secs: u64,

    /// New sessions (sign-ins) one client address may make per minute (bursts of twice as
    /// many).
    #[arg(long, env = "RALLY_SESSIONS_PER_MINUTE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub sessions_per_minute: u32,

    /// Campaigns one user may create per minute (bursts of twice as many).
    #[arg(long, env = "RALLY_CAMPAIGNS_PER_MINUTE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub campaigns_per_minute: u32,

    /// Campaigns one user may own at once (created, or handed to them), checked when they create
    /// one: a handover is never refused by it.
    #[arg(long, env = "RALLY_MAX_CAMPAIGNS_PER_USER", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub max_campaigns_per_user: u32,

    /// Open invite links (not yet expired, used up or withdrawn) one user may have made, across
    /// all campaigns.
    #[arg(long, env = "RALLY_MAX_INVITES_PER_USER", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_invites_per_user: u32,

    /// HTTP API requests one client address may make per minute (bursts of twice as many).
    #[arg(long, env = "RALLY_API_PER_MINUTE", default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub api_per_minute: u32,

    /// Seconds of silence from a WebSocket client before the server pings it; a client that
    /// stays silent as long again is disconnected (close code 4009).
    #[arg(long, env = "RALLY_WS_PING_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub ws_ping_secs: u64,

    /// Seconds a WebSocket that follows nothing (no campaign, live room or ops view) and sends
    /// no request stays open (then close code 4010).
    #[arg(long, env = "RALLY_WS_IDLE_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ws_idle_secs: u64,

    /// Seconds a campaign nobody subscribes to stays in memory.
    #[arg(long, env = "RALLY_IDLE_UNLOAD_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub idle_unload_secs: u64,

    /// Seconds to wait for connections to finish after SIGINT/SIGTERM before exiting anyway.
    #[arg(long, env = "RALLY_SHUTDOWN_GRACE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub shutdown_grace_secs: u64,

    /// IP address the media relay's UDP sockets bind to. `0.0.0.0` binds every non-loopback
    /// interface; `127.0.0.1` keeps media on this machine (development, tests).
    #[arg(long, env = "RALLY_MEDIA_IP", default_value = "0.0.0.0")]
    pub media_ip: IpAddr,

    /// Public IP announced in the relay's ICE candidates when it sits behind 1:1 NAT (a cloud VM
    /// with an elastic IP). Browsers connect to it directly.
    #[arg(long, env = "RALLY_MEDIA_PUBLIC_IP")]
    pub media_public_ip: Option<IpAddr>,

    /// UDP ports for media, `FIRST-LAST` (like `50000-50199`); each peer connection uses one, so
    /// a participant takes up to two. Default: ephemeral ports.
    #[arg(long, env = "RALLY_MEDIA_UDP_PORTS", value_parser = parse_port_range)]
    pub media_udp_ports: Option<PortRange>,

    /// STUN/TURN URLs handed to browsers (comma-separated), like
    /// `stun:stun.example.org:3478,turn:turn.example.org:3478`.
    #[arg(long, env = "RALLY_ICE_SERVERS", value_delimiter = ',')]
    pub ice_servers: Vec<String>,

    /// Username for the `turn:`/`turns:` entries of --ice-servers.
    #[arg(long, env = "RALLY_TURN_USERNAME")]
    pub turn_username: Option<String>,

    /// Credential for the `turn:`/`turns:` entries of --ice-servers.
    #[arg(long, env = "RALLY_TURN_CREDENTIAL", hide_env_values = true)]
    pub turn_credential: Option<String>,

    /// Who may go live: `editors` (owners and editors) or `everyone` who may watch.
    #[arg(long, env = "RALLY_MEDIA_PUBLISHERS", value_enum, default_value_t = crate::media::Publishers::Editors)]
    pub media_publishers: crate::media::Publishers,

    /// Hosts (comma-separated names or addresses) that may receive webhooks although their
    /// addresses are not public (loopback, private networks). Default: none.
    #[arg(long, env = "RALLY_WEBHOOK_ALLOW_HOSTS", value_delimiter = ',')]
    pub webhook_allow_hosts: Vec<String>,

    /// Seconds a failing webhook delivery is retried after its first failure (default a day).
    #[arg(long, env = "RALLY_WEBHOOK_RETRY_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=30 * 86_400))]
    pub webhook_retry_secs: u64,

    /// Seconds a webhook endpoint has to answer a delivery.
    #[arg(long, env = "RALLY_WEBHOOK_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub webhook_timeout_secs: u64,

    /// Instead of serving, do this and exit.
    #[command(subcommand)]
    pub command: Option<crate::command::Command>,
}

/// An inclusive UDP port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

fn parse_port_range(text: &str) -> Result<PortRange, String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| "expected FIRST-LAST, like 50000-50199".to_owned())?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))
    };
    let (first, last) = (port(first)?, port(last)?);
    if first > last {
        return Err(format!("{first} is above {last}"));
    }
    Ok(PortRange { first, last })
}

impl Config {
    /// How backend-minted tokens are checked, if any are accepted.
    pub fn jwt(&self) -> Option<crate::jwt::JwtSettings> {
        if self.jwt_secret.is_none() && self.jwt_jwks_url.is_none() {
            return None;
        }
        Some(crate::jwt::JwtSettings {
            secret: self
                .jwt_secret
                .as_ref()
                .map(|s| String::from_utf8_lossy(s.as_bytes()).into_owned()),
            jwks_url: self.jwt_jwks_url.clone(),
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
            leeway: std::time::Duration::from_secs(self.jwt_leeway_secs),
        })
    }

    /// Sign-in through an OpenID Connect provider, when configured; an error line when the
    /// settings do not add up.
    pub fn oidc(&self) -> Result<Option<crate::oidc::OidcSettings>, String> {
        let Some(issuer) = self.oidc_issuer.clone() else {
            return Ok(None);
        };
        let client_id = self
            .oidc_client_id
            .clone()
            .filter(|id| !id.trim().is_empty())
            .ok_or("rally: --oidc-issuer (RALLY_OIDC_ISSUER) needs --oidc-client-id (RALLY_OIDC_CLIENT_ID)")?;
        let redirect_url = match (&self.oidc_redirect_url, &self.public_origin) {
            (Some(url), _) => url.clone(),
            (None, Some(origin)) => format!("{}/auth/oidc/callback", origin.trim_end_matches('/')),
            (None, None) => return Err("rally: --oidc-issuer (RALLY_OIDC_ISSUER) needs --oidc-redirect-url (RALLY_OIDC_REDIRECT_URL) or --public-origin (RALLY_PUBLIC_ORIGIN)".into()),
        };
        if !self.oidc_scopes.split_whitespace().any(|s| s == "openid") {
            return Err("rally: --oidc-scopes (RALLY_OIDC_SCOPES) must include openid".into());
        }
        let list = |items: &[String]| -> Vec<String> {
            items
                .iter()
                .map(|item| item.trim().to_owned())
                .filter(|item| !item.is_empty())
                .collect()
        };
        Ok(Some(crate::oidc::OidcSettings {
            issuer,
            client_id,
            client_secret: self
                .oidc_client_secret
                .as_ref()
                .map(|secret| secret.as_str().to_owned()),
            redirect_url,
            scopes: self.oidc_scopes.clone(),
            provider_name: self.oidc_provider_name.clone(),
            allow: crate::oidc::AllowList {
                email_domains: list(&self.oidc_allowed_domains),
                groups: list(&self.oidc_allowed_groups),
                groups_claim: self.oidc_groups_claim.clone(),
            },
            leeway: std::time::Duration::from_secs(self.jwt_leeway_secs),
        }))
    }

    /// How webhooks are delivered.
    pub fn webhook_settings(&self) -> crate::webhooks::WebhookSettings {
        crate::webhooks::WebhookSettings {
            allow_hosts: self
                .webhook_allow_hosts
                .iter()
                .map(|host| host.trim().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            retry_for: std::time::Duration::from_secs(self.webhook_retry_secs),
            timeout: std::time::Duration::from_secs(self.webhook_timeout_secs),
            admins: self.admins.clone().into(),
        }
    }

    /// What one address or one person may do per minute.
    pub fn quotas(&self) -> crate::quota::QuotaConfig {
        crate::quota::QuotaConfig {
            sessions_per_minute: self.sessions_per_minute,
            campaigns_per_minute: self.campaigns_per_minute,
            api_per_minute: self.api_per_minute,
        }
    }

    /// Which browser pages count as the site (WebSockets, cookie-authenticated requests).
    pub fn origins(&self) -> crate::auth::Origins {
        crate::auth::Origins {
            public: self.public_origin.clone(),
            secure: self.secure_cookies,
            extra: self.allowed_origins.clone(),
        }
    }

    pub fn media(&self) -> crate::media::MediaConfig {
        let ice_servers = self
            .ice_servers
            .iter()
            .filter(|url| !url.trim().is_empty())
            .map(|url| {
                let turn = url.starts_with("turn:") || url.starts_with("turns:");
                rally_app::protocol::media::IceServer {
                    urls: vec![url.trim().to_owned()],
                    username: turn.then(|| self.turn_username.clone()).flatten(),
                    credential: turn.then(|| self.turn_credential.clone()).flatten(),
                }
            })
            .collect();
        crate::media::MediaConfig {
            bind_ip: self.media_ip,
            public_ip: self.media_public_ip,
            udp_ports: self.media_udp_ports.map(|r| (r.first, r.last)),
            ice_servers,
            publishers: self.media_publishers,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A Redis URL that the `redis` crate accepts. Kept as text: it is parsed again where it is used,
/// and its password must never be printed (see the `Debug` impl).
#[derive(Clone)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisUrl(..)")
    }
}

/// A secret that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn parse_secret(text: &str) -> Result<Secret, String> {
    if text.len() < 32 {
        return Err(format!(
            "must be at least 32 characters, got {}",
            text.len()
        ));
    }
    Ok(Secret(text.to_owned()))
}

/// A provider's client secret: whatever the provider issued (its length is the provider's
/// business), but not empty.
fn parse_client_secret(text: &str) -> Result<Secret, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(Secret(text.to_owned()))
}

fn parse_visibility(text: &str) -> Result<Visibility, String> {
    Visibility::parse(text).ok_or_else(|| "must be private, unlisted or public".into())
}

fn parse_http_url(text: &str) -> Result<String, String> {
    if text.starts_with("https://") || text.starts_with("http://") {
        Ok(text.to_owned())
    } else {
        Err("must be an http:// or https:// URL".into())
    }
}

fn parse_redis_url(text: &str) -> Result<RedisUrl, String> {
    if !(text.starts_with("redis://")
        || text.starts_with("rediss://")
        || text.starts_with("redis+unix://")
        || text.starts_with("unix://"))
    {
        return Err(
            "expected a URL starting with redis://, rediss://, redis+unix:// or unix://".into(),
        );
    }
    redis::Client::open(text).map_err(|err| format!("not a usable Redis URL: {err}"))?;
    Ok(RedisUrl(text.to_owned()))
}

/// What to do when the command line or environment cannot be used.
#[derive(Debug)]
pub enum ConfigOutcome {
    /// `--help` or `--version`: print this and exit 0.
    Info(String),
    /// A bad setting: print this one line and exit 2.
    Invalid(String),
}

impl Config {
    /// Parse the process's arguments and environment.
    pub fn from_args() -> Result<Config, ConfigOutcome> {
        Self::from_args_iter(std::env::args_os())
    }

    pub fn from_args_iter<I, T>(args: I) -> Result<Config, ConfigOutcome>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let config = Config::try_parse_from(args).map_err(|err| match err.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                ConfigOutcome::Info(err.render().to_string())
            }
            _ => ConfigOutcome::Invalid(one_line(&err)),
        })?;
        config.oidc().map_err(ConfigOutcome::Invalid)?;
        Ok(config)
    }
}

/// clap's errors span several lines and name only the flag; operators setting `RALLY_*` variables
/// need the variable too. Build `rally: invalid value "x" for --flag (RALLY_FLAG): reason`.
fn one_line(err: &clap::Error) -> String {
    let text = |kind| match err.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => Some(v.join(", ")),
        _ => None,
    };
    let Some(arg) = text(ContextKind::InvalidArg) else {
        let first = err.to_string();
        let first = first.lines().next().unwrap_or("invalid arguments");
        return format!("rally: {}", first.trim_start_matches("error: "));
    };
    let flag = arg.split_whitespace().next().unwrap_or(&arg).to_owned();
    let env = Config::command()
        .get_arguments()
        .find(|a| a.get_long().is_some_and(|long| flag == format!("--{long}")))
        .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()));
    let setting = match env {
        Some(env) => format!("{flag} ({env})"),
        None => flag,
    };
    let value = text(ContextKind::InvalidValue).unwrap_or_default();
    let reason = match (text(ContextKind::ValidValue), err.source()) {
        (Some(valid), _) => format!("expected one of: {valid}"),
        (None, Some(source)) => source.to_string(),
        (None, None) => err
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid")
            .trim_start_matches("error: ")
            .to_owned(),
    };
    format!("rally: invalid value {value:?} for {setting}: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(args: &[&str]) -> String {
        match Config::from_args_iter(std::iter::once("rally").chain(args.iter().copied())) {
            Err(ConfigOutcome::Invalid(line)) => line,
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let config = Config::from_args_iter(["rally"]).unwrap();
        assert_eq!(config.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert!(config.redis_url.is_none());
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn bad_values_name_the_flag_the_variable_and_the_choices() {
        let line = invalid(&["--log-format", "xml"]);
        assert_eq!(
            line,
            "rally: invalid value \"xml\" for --log-format (RALLY_LOG_FORMAT): expected one of: text, json"
        );
        let line = invalid(&["--addr", "nowhere"]);
        assert!(
            line.starts_with("rally: invalid value \"nowhere\" for --addr (RALLY_ADDR): "),
            "{line}"
        );
        let line = invalid(&["--redis-url", "http://x"]);
        assert!(
            line.contains("--redis-url (RALLY_REDIS_URL)") && line.contains("redis://"),
            "{line}"
        );
        let line = invalid(&["--shutdown-grace-secs", "999"]);
        assert!(
            line.contains("RALLY_SHUTDOWN_GRACE_SECS") && line.contains("0..=300"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        let line = invalid(&["--media-udp-ports", "6000-5000"]);
        assert!(
            line.contains("--media-udp-ports (RALLY_MEDIA_UDP_PORTS)") && line.contains("above"),
            "{line}"
        );
        let line = invalid(&["--oidc-issuer", "https://id.example"]);
        assert!(
            line.contains("--oidc-client-id (RALLY_OIDC_CLIENT_ID)"),
            "{line}"
        );
        let line = invalid(&[
            "--oidc-issuer",
            "https://id.example",
            "--oidc-client-id",
            "rally",
        ]);
        assert!(
            line.contains("--public-origin (RALLY_PUBLIC_ORIGIN)"),
            "{line}"
        );
        let oidc = Config::from_args_iter([
            "rally",
            "--oidc-issuer",
            "https://id.example",
            "--oidc-client-id",
            "rally",
            "--public-origin",
            "https://rally.example/",
        ])
        .unwrap()
        .oidc()
        .unwrap()
        .unwrap();
        assert_eq!(
            oidc.redirect_url,
            "https://rally.example/auth/oidc/callback"
        );
        let line = invalid(&["--no-such-flag"]);
        assert!(
            line.starts_with("rally: ") && !line.contains('\n'),
            "{line}"
        );
    }
}
