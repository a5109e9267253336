//! The connection's credential, watched: a connection opened with a session closes (code
//! [`CLOSE_SESSION_ENDED`](super::limits::CLOSE_SESSION_ENDED)) as soon as that session ends —
//! signed out on any instance, revoked, or past its lifetime — and keeps it from expiring for
//! disuse while it is open. One opened with a backend-minted token closes when the token
//! expires; one opened with an API key, when its periodic check finds the key revoked.

use std::time::{Duration, Instant};

use rally_app::model::Timestamp;
use tokio::sync::broadcast;

use crate::sessions::{SessionNews, Sessions, Signed, TOUCH_EVERY};

pub(super) struct SessionWatch {
    /// What the periodic check looks up (None for a backend-minted token: only its expiry ends
    /// it).
    stored: Option<Stored>,
    /// When the credential expires, on this process's monotonic clock (None: it does not).
    deadline: Option<tokio::time::Instant>,
    ends: broadcast::Receiver<SessionNews>,
    last_touch: Instant,
}

/// A credential the store keeps, so its end can be looked up.
enum Stored {
    Session(String),
    Key(String),
}

/// What the watch saw.
pub(super) enum End {
    /// News about sessions, or news was missed.
    Heard(Result<SessionNews, broadcast::error::RecvError>),
    /// This connection's credential expired.
    Expired,
}

/// What a session end that arrived means for this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Goes,
    Ended,
}

impl SessionWatch {
    /// `ends` must have been subscribed before `signed` was verified.
    pub fn new(signed: &Signed, ends: broadcast::Receiver<SessionNews>) -> Self {
        let stored = match (&signed.session, &signed.scope) {
            (Some(session), _) => Some(Stored::Session(session.id.clone())),
            (None, Some(scope)) => Some(Stored::Key(scope.key_id.clone())),
            (None, None) => None,
        };
        SessionWatch {
            deadline: signed.scope.is_none().then(|| {
                tokio::time::Instant::now()
                    + Duration::from_nanos(signed.expires_at.nanos_since(crate::clock::now()))
            }),
            stored,
            ends,
            last_touch: Instant::now(),
        }
    }

    /// The next session that ends anywhere, or this credential's expiry (only polled while
    /// watching).
    pub async fn next_end(watch: &mut Option<SessionWatch>) -> End {
        match watch {
            Some(watch) => match watch.deadline {
                Some(deadline) => tokio::select! {
                    end = watch.ends.recv() => End::Heard(end),
                    _ = tokio::time::sleep_until(deadline) => End::Expired,
                },
                None => End::Heard(watch.ends.recv().await),
            },
            None => std::future::pending().await,
        }
    }

    /// A session ended (or some ends were missed: then ask the store about this one), or the
    /// credential expired.
    pub async fn heard(&self, end: End, sessions: &Sessions, now: Timestamp) -> Verdict {
        let end = match end {
            End::Expired => return Verdict::Ended,
            End::Heard(end) => end,
        };
        let Some(Stored::Session(mine)) = &self.stored else {
            return Verdict::Goes;
        };
        match end {
            Ok(SessionNews::Ended(id)) if id == *mine => Verdict::Ended,
            Ok(SessionNews::Ended(_)) | Err(broadcast::error::RecvError::Closed) => Verdict::Goes,
            Ok(SessionNews::Recheck) | Err(broadcast::error::RecvError::Lagged(_)) => {
                match sessions.is_active(mine, now).await {
                    Ok(false) => Verdict::Ended,
                    // Cannot tell: the next use recorded checks again.
                    Ok(true) | Err(_) => Verdict::Goes,
                }
            }
        }
    }

    /// The periodic check: the open connection counts as use of its session, recorded at most
    /// once per [`TOUCH_EVERY`] — and recording it finds a session that ended while its news
    /// was lost. An API key is looked up at every check (a revoked key's stream ends at the next
    /// one).
    pub async fn check(&mut self, sessions: &Sessions, now: Timestamp) -> Verdict {
        let Some(stored) = &self.stored else {
            return Verdict::Goes;
        };
        let due = self.last_touch.elapsed() >= TOUCH_EVERY;
        let checked = match stored {
            Stored::Session(_) if !due => return Verdict::Goes,
            Stored::Session(id) => sessions.touch(id, now).await,
            // Nothing tells a stream its key was revoked: look at every check, write the use
            // down once a minute.
            Stored::Key(id) if !due => sessions.api_keys().get(id).await.map(|key| key.is_some()),
            Stored::Key(id) => sessions.api_keys().touch(id, now).await,
        };
        if due {
            self.last_touch = Instant::now();
        }
        match checked {
            Ok(false) => Verdict::Ended,
            Ok(true) => Verdict::Goes,
            Err(error) => {
                tracing::debug!(%error, "cannot record a session's use");
                Verdict::Goes
            }
        }
    }
}
