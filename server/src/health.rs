//! Liveness (`GET /healthz`) and readiness (`GET /readyz`).
//!
//! Liveness answers "is the process serving HTTP at all" and checks nothing else, so an orchestrator
//! never restarts a server that is merely waiting on Redis. Readiness runs every check, reports each
//! one by name, and answers 503 when any fails, so a load balancer stops sending new users to an
//! instance that cannot serve them (including one that is shutting down).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::campaigns::StateManager;
use crate::redis::RedisLink;
use crate::shutdown::ShutdownSignal;
use crate::stats::GatewayStats;
use crate::store::Store;

/// Loaded campaigns compared with the store per readiness check.
pub const CONSISTENCY_SAMPLE: usize = 50;
/// Stuck subscriber sockets tolerated before the instance reports not ready: the larger of this
/// and a tenth of the open connections (one slow client is the client's problem; many are ours).
pub const STALLED_ALLOWED: usize = 10;

/// The data directory, checked without saying where it is (readiness is public) and written
/// to at most once per [`DATA_DIR_PROBE_EVERY`], however often readiness is asked.
#[derive(Clone)]
pub struct DataDir {
    path: PathBuf,
    last_write: Arc<std::sync::Mutex<Option<Instant>>>,
}

/// Least time between two write probes of the data directory.
pub const DATA_DIR_PROBE_EVERY: Duration = Duration::from_secs(10);

impl DataDir {
    pub fn new(path: PathBuf) -> Self {
        DataDir {
            path,
            last_write: Arc::default(),
        }
    }

    async fn check(&self) -> Result<String, String> {
        let is_dir = tokio::fs::metadata(&self.path)
            .await
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if !is_dir {
            return Err("the data directory is gone: not writable".into());
        }
        let due = {
            let mut last = self.last_write.lock().expect("probe lock");
            let due = last.is_none_or(|at| at.elapsed() >= DATA_DIR_PROBE_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            let probe = self.path.join(".rally-ready-probe");
            tokio::fs::write(&probe, b"ok")
                .await
                .map_err(|err| format!("the data directory is not writable: {}", err.kind()))?;
            let _ = tokio::fs::remove_file(&probe).await;
        }
        Ok("writable".into())
    }
}

/// How long one readiness check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// One thing readiness depends on.
#[derive(Clone)]
pub enum Check {
    /// The WebSocket gateway accepts new connections (not shutting down, under its limit).
    WebSocketGateway {
        stats: GatewayStats,
        shutdown: ShutdownSignal,
    },
    /// Loaded campaigns agree with the store (no writer believes in a version the store lacks).
    StateConsistency(StateManager),
    /// Single-instance mode: events fan out inside this process; nothing to lose contact with.
    InProcessBus,
    /// Subscriber channels are draining: few sockets have refused writes for over a second.
    SubscriberChannels(GatewayStats),
    /// The data directory exists and is writable.
    DataDir(DataDir),
    /// The campaign store answers a read.
    Store(Arc<dyn Store>),
    /// Redis mode: the link to Redis is up and answers PING.
    RedisBus(RedisLink),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Failing,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub duration_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadinessReport {
    pub status: &'static str,
    pub checks: Vec<CheckReport>,
}

impl ReadinessReport {
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|c| c.status == Status::Ok)
    }
}

impl Check {
    fn name(&self) -> &'static str {
        match self {
            Check::WebSocketGateway { .. } => "websocket_gateway",
            Check::StateConsistency(_) => "state_consistency",
            Check::InProcessBus | Check::RedisBus(_) => "event_bus",
            Check::SubscriberChannels(_) => "subscriber_channels",
            Check::DataDir(_) => "data_dir",
            Check::Store(_) => "store",
        }
    }

    async fn run(&self) -> Result<String, String> {
        match self {
            Check::WebSocketGateway { stats, shutdown } => {
                if shutdown.is_triggered() {
                    return Err("shutting down: not accepting connections".into());
                }
                let (open, limit) = (stats.open(), stats.limit());
                if open >= limit {
                    Err(format!("{open} connections open, at the limit of {limit}"))
                } else {
                    Ok(format!("accepting; {open} of {limit} connections open"))
                }
            }
            Check::StateConsistency(manager) => {
                let checked = manager.check_consistency(CONSISTENCY_SAMPLE).await?;
                Ok(format!("{checked} loaded campaigns match the store"))
            }
            Check::InProcessBus => Ok("in-process (single instance)".into()),
            Check::SubscriberChannels(stats) => {
                let (stalled, open) = (stats.stalled(), stats.open());
                let limit = STALLED_ALLOWED.max(open / 10);
                if stalled > limit {
                    Err(format!("{stalled} of {open} subscriber sockets stuck for over a second (limit {limit})"))
                } else {
                    Ok(format!("{stalled} of {open} subscriber sockets stuck"))
                }
            }
            Check::DataDir(dir) => dir.check().await,
            Check::Store(store) => {
                store.check().await.map_err(|err| err.to_string())?;
                Ok("answers reads".into())
            }
            Check::RedisBus(link) => {
                let pong: String = link
                    .run(|mut conn| async move { redis::cmd("PING").query_async(&mut conn).await })
                    .await
                    .map_err(|outage| outage.to_string())?
                    .map_err(|err| format!("Redis PING failed: {err}"))?;
                Ok(format!("Redis PING answered {pong}"))
            }
        }
    }
}

/// Run all checks concurrently, each bounded by [`CHECK_TIMEOUT`].
pub async fn readiness(checks: &[Check]) -> ReadinessReport {
    let reports = futures_util::future::join_all(checks.iter().map(|check| async move {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check.run()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
        };
        let (status, detail) = match outcome {
            Ok(detail) => (Status::Ok, detail),
            Err(detail) => (Status::Failing, detail),
        };
        CheckReport {
            name: check.name(),
            status,
            detail,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }))
    .await;
    let ready = reports.iter().all(|r| r.status == Status::Ok);
    ReadinessReport {
        status: if ready { "ready" } else { "not_ready" },
        checks: reports,
    }
}

/// The checks readiness runs (an axum sub-state).
#[derive(Clone)]
pub struct Readiness(pub Arc<[Check]>);

/// `GET /healthz`: the process serves HTTP.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}

/// `GET /readyz`: every check, by name; 503 when any fails.
pub async fn readyz(State(Readiness(checks)): State<Readiness>) -> Response {
    let report = readiness(&checks).await;
    let status = if report.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}
