//! One instance's link to Redis, behind a circuit breaker.
//!
//! Every Redis command of the store and the bus goes through [`RedisLink::run`]. While Redis
//! answers, commands pass. The first failure opens the circuit: one Error line for the incident,
//! subscribers are told campaigns are read-only, and from then on commands fail at once with
//! `unavailable` instead of piling up on a dead socket. A probe task retries with exponential
//! backoff and jitter (250 ms doubling to 10 s); when a PING succeeds the circuit closes, one Warn
//! line reports the outage's length, and every loaded campaign catches up from Redis.
//!
//! [`keys`] names every Redis key and channel Rally uses, in one place.

pub mod keys;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;

use crate::shutdown::ShutdownSignal;

/// How long one command may take before it counts as a failure.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
const PROBE_BASE: Duration = Duration::from_millis(250);
const PROBE_MAX: Duration = Duration::from_secs(10);

/// A command did not get an answer from Redis: the circuit is open, the connection broke, or
/// Redis took longer than [`COMMAND_TIMEOUT`]. (An error *reply* from Redis is an answer.)
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Outage(String);

#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    #[error("cannot reach Redis at {target}: {reason}")]
    Unreachable { target: String, reason: String },
}

/// What a pub/sub subscription delivers (see [`RedisLink::listen`]).
#[derive(Debug)]
pub enum Heard {
    /// A message published on the channel.
    Message(String),
    /// The subscription is back after a loss: messages published meanwhile were missed.
    Resubscribed,
}

/// Where the link is.
#[derive(Debug)]
enum Circuit {
    Closed,
    Open { since: Instant },
}

struct Inner {
    connection: ConnectionManager,
    client: redis::Client,
    circuit: Mutex<Circuit>,
    /// true while Redis answers; the manager and readiness watch it.
    up: watch::Sender<bool>,
    /// Where Redis is, for log lines (never the password).
    target: String,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
}

/// Failures of the connection rather than answers from Redis.
fn is_outage(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
}

/// `host:port/db` of a Redis URL, without credentials.
fn describe(client: &redis::Client) -> String {
    let info = client.get_connection_info();
    format!("{}", info.addr())
}

impl RedisLink {
    /// Connect and check Redis answers. Failing here stops the server with a clear line: an
    /// instance that starts without its source of truth would only serve errors.
    pub async fn connect(url: &str) -> Result<RedisLink, LinkError> {
        let client = redis::Client::open(url).map_err(|err| LinkError::Unreachable {
            target: "(invalid URL)".into(),
            reason: err.to_string(),
        })?;
        let target = describe(&client);
        let unreachable = |reason: String| LinkError::Unreachable {
            target: target.clone(),
            reason,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let mut connection = tokio::time::timeout(
            Duration::from_secs(5),
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| unreachable("no answer within 5 s".into()))?
        .map_err(|err| unreachable(err.to_string()))?;
        let _: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(|err| unreachable(err.to_string()))?;
        let (up, _) = watch::channel(true);
        Ok(RedisLink {
            inner: Arc::new(Inner {
                connection,
                client,
                circuit: Mutex::new(Circuit::Closed),
                up,
                target,
            }),
        })
    }

    pub fn client(&self) -> &redis::Client {
        &self.inner.client
    }

    pub fn is_up(&self) -> bool {
        *self.inner.up.borrow()
    }

    /// Changes of [`RedisLink::is_up`].
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.inner.up.subscribe()
    }

    /// Run one Redis operation, failing fast while the circuit is open. The outer error is an
    /// outage (circuit open, connection lost, timeout); the inner result is Redis's own answer,
    /// which may be an error reply (a script refusing a stale version) for the caller to read.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<redis::RedisResult<T>, Outage>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(Outage(
                "Redis is unavailable (circuit open); retrying in the background".into(),
            ));
        }
        let outcome =
            tokio::time::timeout(COMMAND_TIMEOUT, op(self.inner.connection.clone())).await;
        match outcome {
            Ok(Err(err)) if is_outage(&err) => {
                self.trip(err.to_string());
                Err(Outage(format!("Redis failed: {err}")))
            }
            Ok(answer) => Ok(answer),
            Err(_) => {
                self.trip(format!(
                    "no answer within {} ms",
                    COMMAND_TIMEOUT.as_millis()
                ));
                Err(Outage("Redis did not answer in time".into()))
            }
        }
    }

    /// `PUBLISH payload` on `channel`; Redis answers with how many subscribers received it.
    pub async fn publish(
        &self,
        channel: &str,
        payload: &str,
    ) -> Result<redis::RedisResult<i64>, Outage> {
        self.run(|mut conn| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
        })
        .await
    }

    /// Open the circuit (once per incident) and start probing.
    pub fn trip(&self, reason: String) {
        {
            let mut circuit = self.inner.circuit.lock().expect("circuit lock");
            if matches!(*circuit, Circuit::Open { .. }) {
                return;
            }
            *circuit = Circuit::Open {
                since: Instant::now(),
            };
        }
        tracing::error!(redis = %self.inner.target, %reason, "Redis unreachable; campaigns are read-only until it returns");
        metrics::counter!("rally_bus_errors_total").increment(1);
        self.inner.up.send_replace(false);
        tokio::spawn(self.clone().probe());
    }

    async fn probe(self) {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let exp = PROBE_BASE
                .saturating_mul(1u32 << attempt.min(16).saturating_sub(1))
                .min(PROBE_MAX);
            let jitter: f64 =
                f64::from(u32::from_le_bytes(crate::clock::random_bytes())) / f64::from(u32::MAX);
            tokio::time::sleep(exp / 2 + exp.mul_f64(jitter / 2.0)).await;
            let mut connection = self.inner.connection.clone();
            let ping = tokio::time::timeout(
                COMMAND_TIMEOUT,
                redis::cmd("PING").query_async::<String>(&mut connection),
            )
            .await;
            if matches!(ping, Ok(Ok(_))) {
                let since = {
                    let mut circuit = self.inner.circuit.lock().expect("circuit lock");
                    let since = match *circuit {
                        Circuit::Open { since } => since,
                        Circuit::Closed => Instant::now(),
                    };
                    *circuit = Circuit::Closed;
                    since
                };
                tracing::warn!(redis = %self.inner.target, down_secs = since.elapsed().as_secs_f64(), attempts = attempt, "Redis reachable again; campaigns catch up");
                metrics::counter!("rally_bus_reconnects_total").increment(1);
                self.inner.up.send_replace(true);
                return;
            }
        }
    }

    /// Keep a subscription to `channel` open for as long as the server runs, reconnecting
    /// with backoff after losses, and hand what arrives to `heard` (on one task, in order).
    /// Pub/sub needs a connection of its own; a lost one also trips the circuit.
    pub fn listen(
        &self,
        channel: String,
        mut shutdown: ShutdownSignal,
        mut heard: impl FnMut(Heard) + Send + 'static,
    ) {
        let link = self.clone();
        tokio::spawn(async move {
            let mut first = true;
            let mut delay = PROBE_BASE;
            loop {
                let subscription = async {
                    let mut pubsub = link.client().get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                };
                let pubsub = tokio::select! {
                    _ = shutdown.recv() => return,
                    result = tokio::time::timeout(Duration::from_secs(5), subscription) => result,
                };
                match pubsub {
                    Ok(Ok(pubsub)) => {
                        delay = PROBE_BASE;
                        if !first {
                            heard(Heard::Resubscribed);
                        }
                        first = false;
                        let mut messages = pubsub.into_on_message();
                        loop {
                            let message = tokio::select! {
                                _ = shutdown.recv() => return,
                                message = messages.next() => message,
                            };
                            let Some(message) = message else { break };
                            if let Ok(payload) = message.get_payload::<String>() {
                                heard(Heard::Message(payload));
                            }
                        }
                        // The stream ended: the connection is gone.
                        link.trip(format!("pub/sub connection of {channel} lost"));
                    }
                    Ok(Err(err)) => link.trip(format!("pub/sub: {err}")),
                    Err(_) => link.trip("pub/sub: no answer within 5 s".into()),
                }
                tokio::select! {
                    _ = shutdown.recv() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(PROBE_MAX);
            }
        });
    }
}
