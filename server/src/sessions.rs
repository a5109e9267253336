//! Server-side sessions: who is signed in where, and signing out that takes effect everywhere.
//!
//! A session token only names a session (see [`crate::auth`]); the session itself — user, name,
//! device, last use, end — is a record in the store. So a session can be listed and ended, and an
//! ended session is refused on the next request on every instance, because every request looks
//! its record up. Connections opened earlier learn it from [`Sessions::ends`]: the instance that
//! ended the session tells its own connections at once and the others over the bus (Redis mode),
//! and each connection closes if the session was its own. A note can be lost (pub/sub
//! reconnecting, a failed publish): after a bus resync every connection re-checks its session,
//! and each re-checks it anyway when it records its use, at least every [`TOUCH_EVERY`].
//!
//! A session ends at the earlier of its lifetime and its idle expiry; using it (a request, an open
//! connection) moves the idle expiry forward, writing the record at most once per
//! [`TOUCH_EVERY`].
//!
//! Requests may instead carry a token minted by the integrator's backend (see [`crate::jwt`]):
//! nothing is stored for it, it is good until its `exp`, and it may grant roles on campaigns.

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use rally_app::model::{Actor, CampaignId, DisplayName, Role, Timestamp, UserId};
use tokio::sync::broadcast;

use crate::api_keys::{self, ApiKeys, KeyRefused, KeyScope};
use crate::auth::{self, Keys, Source, TokenError};
use crate::bus::{BusNote, EventBus};
use crate::campaigns::{Caller, KeyBond};
use crate::clock;
use crate::jwt::JwtVerifier;
use crate::store::sessions::{SessionRecord, SessionStore};
use crate::store::StoreError;

/// A session's record is rewritten when it is used at most this often (the idle expiry moves
/// forward in steps of this size).
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Ended sessions are swept from the embedded store at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Session ends a slow connection may fall behind on before it re-checks its own session.
const ENDS_BUFFER: usize = 256;
/// Longest device description kept.
const MAX_DEVICE_CHARS: usize = 48;

/// What open connections hear about sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionNews {
    /// This session ended.
    Ended(String),
    /// Some ends may have been missed: check yours with the store.
    Recheck,
}

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// From sign-in to the end, however active.
    pub lifetime: Duration,
    /// Without use for this long, a session ends.
    pub idle: Duration,
}

/// A request's verified credential: a server-side session, a backend-minted token, or an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub actor: Actor,
    /// The server-side session (None for a backend-minted token: nothing is stored for it).
    pub session: Option<SessionRecord>,
    /// Roles the credential grants on campaigns (only backend-minted tokens grant any).
    pub grants: BTreeMap<CampaignId, Role>,
    /// When the credential stops being accepted, however active.
    pub expires_at: Timestamp,
    /// An API key's reach (None for a person's credential, which works everywhere).
    pub scope: Option<KeyScope>,
}

impl Signed {
    pub fn into_who(self) -> Who {
        Who {
            actor: Some(self.actor),
            grants: Arc::new(self.grants),
            scope: self.scope,
        }
    }
}

/// Who a connection or request is, for permission checks: the person (None: anonymous) and the
/// roles their credential grants.
#[derive(Debug, Clone, Default)]
pub struct Who {
    pub actor: Option<Actor>,
    pub grants: Arc<BTreeMap<CampaignId, Role>>,
    /// An API key's reach: what it may do, and where.
    pub scope: Option<KeyScope>,
}

impl Who {
    /// How `campaign` sees them (None: anonymous).
    pub fn caller(&self, campaign: &CampaignId) -> Option<Caller> {
        let (granted, key) = match &self.scope {
            Some(scope) => (
                scope.role_on(campaign),
                Some(KeyBond {
                    made_by_owner: scope.made_by_owner.clone(),
                }),
            ),
            None => (self.grants.get(campaign).copied(), None),
        };
        self.actor.clone().map(|actor| Caller {
            actor,
            granted,
            key,
        })
    }

    /// Whether their credential works on `campaign` (an API key only where it reaches).
    pub fn reaches(&self, campaign: &CampaignId) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|scope| scope.covers(campaign))
    }
}

/// Why a request's credentials were not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdentifyError {
    /// The token is bad, expired, or its session ended: 401.
    #[error("session token rejected: {0}")]
    Rejected(#[from] TokenError),
    /// The store (or the token's signing keys) could not be reached: 503, try again.
    #[error("cannot check the credentials: {0}")]
    Unavailable(String),
}

/// Whether a stored session may be used at `now`, and whether using it should be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Active { touch: bool },
    Ended,
}

/// The rule, pure: ended at [`SessionRecord::ends_at`]; touched when last seen a
/// [`TOUCH_EVERY`] ago or more.
pub fn standing(record: &SessionRecord, now: Timestamp) -> Standing {
    if record.ends_at() <= now {
        return Standing::Ended;
    }
    let since = Duration::from_nanos(now.nanos_since(record.last_seen_at));
    Standing::Active {
        touch: since >= TOUCH_EVERY,
    }
}

fn after(at: Timestamp, duration: Duration) -> Timestamp {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    Timestamp::from_unix_nanos(at.unix_nanos().saturating_add(nanos))
}

/// A few words saying what signed in, from a `User-Agent` ("Firefox on Linux", "curl").
pub fn device_label(user_agent: Option<&str>) -> String {
    let Some(agent) = user_agent.filter(|a| !a.trim().is_empty()) else {
        return "Unknown device".into();
    };
    // Order matters: Edge and Chrome say "Safari" too, Edge says "Chrome".
    let browsers = [
        ("Edg/", "Edge"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
    ];
    let systems = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ];
    let browser = browsers.iter().find(|(mark, _)| agent.contains(mark));
    let system = systems.iter().find(|(mark, _)| agent.contains(mark));
    let label = match (browser, system) {
        (Some((_, b)), Some((_, s))) => format!("{b} on {s}"),
        (Some((_, b)), None) => (*b).to_owned(),
        (None, _) => agent.split(['/', ' ']).next().unwrap_or(agent).to_owned(),
    };
    label.chars().take(MAX_DEVICE_CHARS).collect()
}

/// Sessions: start, verify, rename, list, end. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Keys,
    store: Arc<dyn SessionStore>,
    bus: Arc<dyn EventBus>,
    settings: SessionSettings,
    /// Checks backend-minted tokens, when configured.
    jwt: Option<JwtVerifier>,
    /// Checks API keys.
    api_keys: ApiKeys,
    /// Whether anyone may start a session by picking a name (guest sign-in).
    guests: bool,
    /// Sessions that ended, for this instance's open connections.
    ends: broadcast::Sender<SessionNews>,
    last_sweep: std::sync::Mutex<Option<Timestamp>>,
}

impl Sessions {
    pub fn new(
        keys: Keys,
        store: Arc<dyn SessionStore>,
        bus: Arc<dyn EventBus>,
        settings: SessionSettings,
        jwt: Option<JwtVerifier>,
        api_keys: ApiKeys,
        guests: bool,
    ) -> Self {
        let (ends, _) = broadcast::channel(ENDS_BUFFER);
        Sessions {
            inner: Arc::new(Inner {
                keys,
                store,
                bus,
                settings,
                jwt,
                api_keys,
                guests,
                ends,
                last_sweep: std::sync::Mutex::new(None),
            }),
        }
    }

    pub fn settings(&self) -> SessionSettings {
        self.inner.settings
    }

    /// Whether guests may sign in by picking a name.
    pub fn guests(&self) -> bool {
        self.inner.guests
    }

    /// Start a session for `user` (a new user when None) named `name`; its token.
    pub async fn start(
        &self,
        user: Option<UserId>,
        name: &DisplayName,
        device: String,
        now: Timestamp,
    ) -> Result<(Signed, String), StoreError> {
        self.sweep_now_and_then(now).await;
        let user_id = user.unwrap_or_else(|| {
            UserId::parse(&format!("u{}", auth::hex(&clock::random_bytes::<8>())))
                .expect("generated user ids are valid")
        });
        let settings = self.inner.settings;
        let record = SessionRecord {
            id: auth::hex(&clock::random_bytes::<16>()),
            user_id,
            display_name: name.as_str().to_owned(),
            device,
            started_at: now,
            last_seen_at: now,
            expires_at: after(now, settings.lifetime),
            idle_until: after(now, settings.idle),
        };
        self.inner.store.insert_session(record.clone()).await?;
        tracing::debug!(user = %record.user_id, "session started");
        let token = self.token(&record);
        Ok((signed(record), token))
    }

    /// The token that names `session` (the same one every time).
    pub fn token(&self, session: &SessionRecord) -> String {
        self.inner
            .keys
            .session_token(&session.id, session.expires_at)
    }

    /// API keys (checking them, and the key management the API does).
    pub fn api_keys(&self) -> &ApiKeys {
        &self.inner.api_keys
    }

    /// The request's session, if any, for every entry point (WebSocket, HTTP API, rendered
    /// pages). An explicit token (header, query) that is bad or whose session ended is an
    /// error; such a cookie is just no session, so a stale cookie never locks a browser out of
    /// watching. API keys count only in the `Authorization` header: a key in a link or a
    /// cookie would end up in logs and histories.
    pub async fn identify(
        &self,
        headers: &axum::http::HeaderMap,
        query: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Signed>, IdentifyError> {
        let Some((token, source)) = auth::token_from_request(headers, query) else {
            return Ok(None);
        };
        if api_keys::is_key_token(token) {
            match source {
                Source::Header => {}
                // Keys never belong in a browser's cookie: no session, as for a stale cookie.
                Source::Cookie => return Ok(None),
                Source::Query => return Err(TokenError::KeyNotAccepted.into()),
            }
        }
        match self.verify(token, now).await {
            Ok(signed) => Ok(Some(signed)),
            Err(IdentifyError::Rejected(_)) if source == Source::Cookie => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// What a token says: an API key (`rk_…`), a backend-minted JWT (three parts), or a Rally
    /// session token (two) whose session is still going — then the use is recorded.
    pub async fn verify(&self, token: &str, now: Timestamp) -> Result<Signed, IdentifyError> {
        if api_keys::is_key_token(token) {
            return match self.inner.api_keys.verify(token, now).await {
                Ok(key) => Ok(Signed {
                    actor: key.actor,
                    session: None,
                    grants: BTreeMap::new(),
                    // Keys do not expire; they are revoked.
                    expires_at: Timestamp::from_unix_nanos(u64::MAX),
                    scope: Some(key.scope),
                }),
                Err(KeyRefused::Rejected(err)) => Err(err.into()),
                Err(KeyRefused::Unavailable(err)) => {
                    Err(IdentifyError::Unavailable(err.to_string()))
                }
            };
        }
        if token.split('.').count() == 3 {
            let jwt = self.inner.jwt.as_ref().ok_or(TokenError::UnknownKey)?;
            return match jwt.verify(token).await {
                Ok(identity) => Ok(Signed {
                    actor: identity.actor,
                    session: None,
                    grants: identity.grants,
                    expires_at: identity.expires_at,
                    scope: None,
                }),
                Err(TokenError::KeysUnavailable) => Err(IdentifyError::Unavailable(
                    TokenError::KeysUnavailable.to_string(),
                )),
                Err(err) => Err(err.into()),
            };
        }
        let claims = self.inner.keys.verify_session(token, now)?;
        let record = self
            .inner
            .store
            .session(&claims.session_id)
            .await
            .map_err(|err| IdentifyError::Unavailable(err.to_string()))?
            .ok_or(TokenError::Ended)?;
        match standing(&record, now) {
            Standing::Ended => Err(TokenError::Ended.into()),
            Standing::Active { touch } => {
                if touch {
                    let (sessions, id) = (self.clone(), record.id.clone());
                    // Off the request's path: a failed write only means the idle end moves later.
                    tokio::spawn(async move {
                        if let Err(error) = sessions.touch(&id, now).await {
                            tracing::debug!(%error, "cannot record a session's use");
                        }
                    });
                }
                Ok(signed(record))
            }
        }
    }

    /// Record a use of the session (an open connection counts): its idle end moves forward.
    /// False when the session has ended (deleted, or past its end): nothing is written then,
    /// so a use never brings an ended session back.
    pub async fn touch(&self, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let store = &self.inner.store;
        let Some(mut record) = store.session(id).await? else {
            return Ok(false);
        };
        if standing(&record, now) == Standing::Ended {
            return Ok(false);
        }
        record.last_seen_at = now;
        record.idle_until = after(now, self.inner.settings.idle);
        store.update_session(record).await
    }

    /// Whether the session is still going (a connection that may have missed its end asks).
    pub async fn is_active(&self, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        Ok(self
            .inner
            .store
            .session(id)
            .await?
            .is_some_and(|record| standing(&record, now) != Standing::Ended))
    }

    /// Rename the user on every one of their sessions (the user id stays).
    pub async fn rename(&self, signed: &Signed, name: &DisplayName) -> Result<Actor, StoreError> {
        for mut record in self
            .inner
            .store
            .user_sessions(&signed.actor.user_id)
            .await?
        {
            record.display_name = name.as_str().to_owned();
            self.inner.store.update_session(record).await?;
        }
        Ok(Actor {
            user_id: signed.actor.user_id.clone(),
            display_name: name.as_str().to_owned(),
        })
    }

    /// The user's sessions that are still going, most recently used first.
    pub async fn list(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let mut records = self.inner.store.user_sessions(user).await?;
        records.retain(|record| standing(record, now) != Standing::Ended);
        records.sort_by_key(|record| std::cmp::Reverse(record.last_seen_at));
        Ok(records)
    }

    /// End a session: it is refused from now on, everywhere, and open connections using it
    /// close. Its record if it existed.
    pub async fn end(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let ended = self.inner.store.delete_session(id).await?;
        if let Some(record) = &ended {
            tracing::debug!(user = %record.user_id, "session ended");
            self.ended_elsewhere(id.to_owned());
            self.inner
                .bus
                .publish(BusNote::SessionEnded {
                    session: id.to_owned(),
                })
                .await;
        }
        Ok(ended)
    }

    /// End every session of `user` (signing out everywhere); how many ended.
    pub async fn end_all(&self, user: &UserId) -> Result<usize, StoreError> {
        let mut ended = 0;
        for record in self.inner.store.user_sessions(user).await? {
            if self.end(&record.id).await?.is_some() {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// A session ended (here, or on another instance): tell this instance's connections.
    pub fn ended_elsewhere(&self, id: String) {
        let _ = self.inner.ends.send(SessionNews::Ended(id));
    }

    /// Notes from other instances may have been missed: every connection checks its session.
    pub fn recheck_all(&self) {
        let _ = self.inner.ends.send(SessionNews::Recheck);
    }

    /// Sessions as they end, for an open connection to watch for its own. Subscribe before
    /// verifying the connection's credential, so an end in between is not missed.
    pub fn ends(&self) -> broadcast::Receiver<SessionNews> {
        self.inner.ends.subscribe()
    }

    /// Sweep ended sessions from the store, at most once per [`SWEEP_EVERY`] (done on sign-in:
    /// only sign-ins add records).
    async fn sweep_now_and_then(&self, now: Timestamp) {
        {
            let mut last = self.inner.last_sweep.lock().expect("sweep lock");
            if last.is_some_and(|at| Duration::from_nanos(now.nanos_since(at)) < SWEEP_EVERY) {
                return;
            }
            *last = Some(now);
        }
        match self.inner.store.sweep_sessions(now).await {
            Ok(0) => {}
            Ok(swept) => tracing::debug!(swept, "ended sessions swept"),
            Err(error) => tracing::warn!(%error, "cannot sweep ended sessions"),
        }
    }
}

fn signed(record: SessionRecord) -> Signed {
    Signed {
        actor: Actor {
            user_id: record.user_id.clone(),
            display_name: record.display_name.clone(),
        },
        expires_at: record.expires_at,
        grants: BTreeMap::new(),
        session: Some(record),
        scope: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_nanos(secs * 1_000_000_000)
    }

    fn record(last_seen: u64, expires: u64, idle_until: u64) -> SessionRecord {
        SessionRecord {
            id: "s".into(),
            user_id: UserId::parse("u1").unwrap(),
            display_name: "Ada".into(),
            device: "Firefox on Linux".into(),
            started_at: at(0),
            last_seen_at: at(last_seen),
            expires_at: at(expires),
            idle_until: at(idle_until),
        }
    }

    #[test]
    fn standing_follows_both_limits_and_touches_once_a_minute() {
        // (last seen, lifetime end, idle end, now) → standing
        let cases = [
            ((100, 1000, 500, 100), Standing::Active { touch: false }),
            ((100, 1000, 500, 159), Standing::Active { touch: false }),
            ((100, 1000, 500, 160), Standing::Active { touch: true }),
            ((100, 1000, 500, 499), Standing::Active { touch: true }),
            ((100, 1000, 500, 500), Standing::Ended),
            ((100, 400, 500, 400), Standing::Ended),
            ((100, 400, 500, 399), Standing::Active { touch: true }),
        ];
        for ((seen, expires, idle, now), expected) in cases {
            assert_eq!(
                standing(&record(seen, expires, idle), at(now)),
                expected,
                "seen {seen}, ends {expires}/{idle}, now {now}"
            );
        }
    }

    #[tokio::test]
    async fn one_user_signed_in_twice_ends_one_session_and_keeps_the_other() {
        use crate::store::embedded::EmbeddedStore;
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let sessions = Sessions::new(
            Keys::new(b"k"),
            Arc::new(store.clone()),
            Arc::new(crate::bus::InProcessBus),
            SessionSettings {
                lifetime: Duration::from_secs(3600),
                idle: Duration::from_secs(600),
            },
            None,
            ApiKeys::new(Arc::new(store.clone())),
            true,
        );
        let name = DisplayName::parse("Ada").unwrap();
        let now = clock::now();
        let (laptop, laptop_token) = sessions
            .start(None, &name, "Firefox on Linux".into(), now)
            .await
            .unwrap();
        let user = laptop.actor.user_id.clone();
        let (phone, phone_token) = sessions
            .start(Some(user.clone()), &name, "Safari on iOS".into(), now)
            .await
            .unwrap();
        assert_eq!(phone.actor, laptop.actor);
        assert_eq!(sessions.list(&user, now).await.unwrap().len(), 2);

        let mut ends = sessions.ends();
        sessions
            .end(&phone.session.as_ref().unwrap().id)
            .await
            .unwrap();
        assert_eq!(
            ends.recv().await.unwrap(),
            SessionNews::Ended(phone.session.as_ref().unwrap().id.clone())
        );
        assert!(matches!(
            sessions.verify(&phone_token, now).await,
            Err(IdentifyError::Rejected(TokenError::Ended))
        ));
        assert!(
            !store
                .update_session(phone.session.clone().unwrap())
                .await
                .unwrap(),
            "an ended session is never written back"
        );
        assert_eq!(
            sessions.verify(&laptop_token, now).await.unwrap().actor,
            laptop.actor
        );
        let listed = sessions.list(&user, now).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].device, "Firefox on Linux");

        // Signing out everywhere ends the rest, and says so to every connection.
        let (_, tablet_token) = sessions
            .start(Some(user.clone()), &name, "Safari on iPadOS".into(), now)
            .await
            .unwrap();
        assert_eq!(sessions.end_all(&user).await.unwrap(), 2);
        let told = vec![ends.recv().await.unwrap(), ends.recv().await.unwrap()];
        assert!(told.contains(&SessionNews::Ended(
            laptop.session.as_ref().unwrap().id.clone()
        )));
        for token in [&laptop_token, &tablet_token] {
            assert!(sessions.verify(token, now).await.is_err());
        }
        assert!(sessions.list(&user, now).await.unwrap().is_empty());
        let (laptop, laptop_token) = sessions
            .start(Some(user.clone()), &name, "Firefox on Linux".into(), now)
            .await
            .unwrap();

        // Unused past the idle expiry: refused, then swept.
        let later = after(now, Duration::from_secs(601));
        assert!(matches!(
            sessions.verify(&laptop_token, later).await,
            Err(IdentifyError::Rejected(TokenError::Ended))
        ));
        assert!(sessions.list(&user, later).await.unwrap().is_empty());
        assert!(
            !sessions
                .touch(&laptop.session.as_ref().unwrap().id, later)
                .await
                .unwrap(),
            "a use after the idle end does not bring the session back"
        );
        assert!(sessions.verify(&laptop_token, later).await.is_err());
        assert_eq!(store.sweep_sessions(later).await.unwrap(), 1);
        assert_eq!(
            store
                .session(&laptop.session.as_ref().unwrap().id)
                .await
                .unwrap(),
            None
        );
        assert!(store.user_sessions(&user).await.unwrap().is_empty());
    }

    #[test]
    fn device_labels_are_short_and_plain() {
        let cases = [
            (
                Some("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
                "Firefox on Linux",
            ),
            (
                Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36 Edg/130.0"),
                "Edge on Windows",
            ),
            (
                Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"),
                "Safari on iOS",
            ),
            (
                Some("Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Mobile Safari/537.36"),
                "Chrome on Android",
            ),
            (Some("curl/8.5.0"), "curl"),
            (Some("   "), "Unknown device"),
            (None, "Unknown device"),
        ];
        for (agent, expected) in cases {
            assert_eq!(device_label(agent), expected, "{agent:?}");
        }
        assert_eq!(
            device_label(Some(&"x".repeat(500))).chars().count(),
            MAX_DEVICE_CHARS
        );
    }
}
