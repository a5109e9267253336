//! A campaign's history over HTTP: pages of its log, the campaign at any version, diffs between
//! versions, the whole log as NDJSON, and reverts. Reads follow the campaign's visibility (one
//! the caller may not see answers `404`, as a missing one); a revert is a write like any other.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{self, HeaderValue};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rally_app::model::{CampaignEvent, CampaignId, RevertCampaign, UserId};
use rally_app::protocol::history::{HistoryPage, HistoryQuery, VersionDiff};
use rally_app::protocol::ErrorCode;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::campaigns::{acknowledged, write_parts};
use super::context::{may_read, parse_id, who_on, ApiJson, ApiState};
use crate::campaigns::Caller;
use crate::http_error::ApiError;

/// Exports one instance streams at once: each holds a batch of events in memory while it sends.
const EXPORTS_AT_ONCE: usize = 4;
static EXPORTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(EXPORTS_AT_ONCE);

/// `GET /api/campaigns/{id}/history` query: as `campaign:history:v1`, without `campaign_id`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageQuery {
    before: Option<u64>,
    limit: Option<u32>,
    field: Option<String>,
    actor: Option<UserId>,
}

/// `GET /api/campaigns/{id}/diff` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DiffQuery {
    from: u64,
    to: u64,
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::new(ErrorCode::Invalid, rejection.body_text()))
}

/// Who reads campaign `id` (a reading key is enough).
async fn reader(
    state: &ApiState,
    headers: &HeaderMap,
    id: &str,
) -> Result<(CampaignId, Option<Caller>), ApiError> {
    let id = parse_id(id)?;
    let who = who_on(state, headers, &id, false).await?;
    may_read(state, &who.actor)?;
    let caller = who.caller(&id);
    Ok((id, caller))
}

pub(super) async fn history(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    asked: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<HistoryPage>, ApiError> {
    let asked = query(asked)?;
    let (campaign_id, caller) = reader(&state, &headers, &id).await?;
    let query = HistoryQuery {
        campaign_id,
        before: asked.before,
        limit: asked.limit,
        field: asked.field,
        actor: asked.actor,
    };
    Ok(Json(state.manager.history(&query, caller).await?))
}

pub(super) async fn version(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((id, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (id, caller) = reader(&state, &headers, &id).await?;
    let version: u64 = version.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::Invalid,
            format!("version must be a whole number from 1, got {version:?}"),
        )
    })?;
    let campaign = state.manager.state_at(&id, version, caller).await?;
    // A past version never changes: caches may keep it.
    let cache = HeaderValue::from_static("private, max-age=31536000, immutable");
    Ok(([(header::CACHE_CONTROL, cache)], Json(campaign)).into_response())
}

pub(super) async fn diff(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    asked: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Json<VersionDiff>, ApiError> {
    let DiffQuery { from, to } = query(asked)?;
    let (id, caller) = reader(&state, &headers, &id).await?;
    Ok(Json(state.manager.diff(&id, from, to, caller).await?))
}

/// `GET /api/campaigns/{id}/history/export`: every event the log keeps, oldest first, one JSON
/// object per line, up to the version the campaign had when the export began. Streamed in
/// batches, so its size is bounded by the log, not by memory; a read failing midway ends the
/// body early (the last line is then not the campaign's version at the start). At most
/// [`EXPORTS_AT_ONCE`] run at once; another is `503 unavailable`.
pub(super) async fn export(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (id, caller) = reader(&state, &headers, &id).await?;
    state.manager.role(&id, caller).await?;
    let running = EXPORTS.try_acquire().map_err(|_| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("{EXPORTS_AT_ONCE} exports are running on this server; try again in a moment"),
        )
    })?;
    let store = state.manager.store();
    let unreadable = |err: crate::store::StoreError| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("cannot read the history: {err}"),
        )
    };
    let until = store.version(&id).await.map_err(unreadable)?.unwrap_or(0);
    // Retention may have forgotten the oldest changes: start with the oldest kept.
    let oldest = store.oldest_event(&id).await.map_err(unreadable)?;
    let start = oldest.unwrap_or(1).saturating_sub(1);
    let manager = state.manager.clone();
    let lines = futures_util::stream::unfold(start, move |after| {
        let (manager, id) = (manager.clone(), id.clone());
        let _running = &running; // held until the body ends
        async move {
            if after >= until {
                return None;
            }
            match manager.export_batch(&id, after).await {
                Ok(events) if events.is_empty() => None,
                Ok(events) => {
                    let kept: Vec<&CampaignEvent> =
                        events.iter().filter(|e| e.version <= until).collect();
                    let last = kept.last().map_or(until, |e| e.version);
                    Some((Ok::<_, std::io::Error>(ndjson(&kept)), last))
                }
                Err(error) => Some((Err(std::io::Error::other(error.message)), until)),
            }
        }
    });
    let content_type = HeaderValue::from_static("application/x-ndjson");
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(lines),
    )
        .into_response())
}

fn ndjson(events: &[&CampaignEvent]) -> String {
    let mut text = String::new();
    for event in events {
        if let Ok(line) = serde_json::to_string(event) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

/// `POST /api/campaigns/{id}/revert`: body as `campaign:revert:v1`, without `campaign_id`;
/// `If-Match` is its `base_version`.
pub(super) async fn revert(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let parts = write_parts::<RevertCampaign>(&state, &headers, &id, body, "revert").await?;
    let ack = state
        .manager
        .revert(parts.request, parts.caller, parts.named)
        .await?;
    Ok(acknowledged(ack))
}
