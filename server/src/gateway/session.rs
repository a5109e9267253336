//! The connection's credential, watched: a connection opened with a session closes (code
//! [`CLOSE_SESSION_ENDED`](super::limits::CLOSE_SESSION_ENDED)) as soon as that session ends —
//! signed out on any instance, revoked, or past its lifetime — and keeps it from expiring for
//! disuse while it is open. One opened with a backend-minted token closes when the token
//! expires.

use std::time::{Duration, Instant};

use rally_app::model::Timestamp;
use tokio::sync::broadcast;

use crate::sessions::{Sessions, Signed, TOUCH_EVERY};

pub(super) struct SessionWatch {
    /// The server-side session (None for a backend-minted token: only its expiry ends it).
    id: Option<String>,
    /// When the credential expires, on this process's monotonic clock.
    deadline: tokio::time::Instant,
    ends: broadcast::Receiver<String>,
    last_touch: Instant,
}

/// What the watch saw.
pub(super) enum End {
    /// Some session ended (its id), or ends were missed.
    Heard(Result<String, broadcast::error::RecvError>),
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
    pub fn new(signed: &Signed, sessions: &Sessions) -> Self {
        SessionWatch {
            id: signed.session.as_ref().map(|s| s.id.clone()),
            deadline: tokio::time::Instant::now()
                + Duration::from_nanos(signed.expires_at.nanos_since(crate::clock::now())),
            ends: sessions.ends(),
            last_touch: Instant::now(),
        }
    }

    /// The next session that ends anywhere, or this credential's expiry (only polled while
    /// watching).
    pub async fn next_end(watch: &mut Option<SessionWatch>) -> End {
        match watch {
            Some(watch) => tokio::select! {
                end = watch.ends.recv() => End::Heard(end),
                _ = tokio::time::sleep_until(watch.deadline) => End::Expired,
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
        let Some(mine) = &self.id else {
            return Verdict::Goes;
        };
        match end {
            Ok(id) if id == *mine => Verdict::Ended,
            Ok(_) | Err(broadcast::error::RecvError::Closed) => Verdict::Goes,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                match sessions.is_active(mine, now).await {
                    Ok(false) => Verdict::Ended,
                    // Cannot tell: the next request made with it is checked anyway.
                    Ok(true) | Err(_) => Verdict::Goes,
                }
            }
        }
    }

    /// The periodic check: the open connection counts as use of its session, recorded at most
    /// once per [`TOUCH_EVERY`].
    pub fn check(&mut self, sessions: &Sessions, now: Timestamp) {
        if let Some(id) = &self.id {
            if self.last_touch.elapsed() >= TOUCH_EVERY {
                self.last_touch = Instant::now();
                sessions.touch_in_background(id.clone(), now);
            }
        }
    }
}
