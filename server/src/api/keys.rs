//! API keys over HTTP: people make, list and revoke them (see [`crate::api_keys`]).
//!
//! | who | may |
//! |---|---|
//! | a campaign's owner | make keys for campaigns they own; list the keys that reach one; revoke those |
//! | an admin (`--admins`) | make keys for every campaign (`all_campaigns`); list and revoke any key |
//! | the person who made a key | list and revoke it (also after handing the campaign over) |
//!
//! Keys themselves cannot make, list or revoke keys.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use rally_app::model::{Actor, CampaignId};
use rally_app::protocol::api_keys::{ApiKeySummary, CreateApiKey, KeyReach, NewApiKey};
use rally_app::protocol::ErrorCode;
use serde::Deserialize;

use super::context::{owns, require_person, store_unavailable, ApiJson, ApiState};
use crate::api_keys::{CreateKeyError, MadeAs};
use crate::clock;
use crate::http_error::ApiError;
use crate::store::api_keys::ApiKeyRecord;

/// Make a key: for campaigns the caller owns, or for all of them (admins). Answers its token,
/// this once.
pub(super) async fn create_key(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiJson(asked): ApiJson<CreateApiKey>,
) -> Result<(StatusCode, Json<NewApiKey>), ApiError> {
    let me = require_person(&state, &headers).await?.actor;
    let (name, reach) = asked.checked()?;
    let admin = state.is_admin(&me);
    match &reach {
        KeyReach::All if !admin => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "only admins may make keys for all campaigns; name the campaigns instead",
            ))
        }
        KeyReach::All => {}
        KeyReach::Campaigns(campaigns) => {
            for campaign in campaigns {
                if !admin && !owns(&state, &me, campaign).await? {
                    return Err(ApiError::new(
                        ErrorCode::Forbidden,
                        format!("only an owner of {campaign} may make keys for it"),
                    ));
                }
            }
        }
    }
    let made = state
        .sessions
        .api_keys()
        .create(
            name,
            asked.access,
            reach,
            (me, if admin { MadeAs::Admin } else { MadeAs::Owner }),
            clock::now(),
        )
        .await
        .map_err(|err| match err {
            CreateKeyError::TooMany(message) => ApiError::new(ErrorCode::LimitExceeded, message),
            CreateKeyError::Store(err) => store_unavailable(err),
        })?;
    Ok((StatusCode::CREATED, Json(made)))
}

/// `GET /api/keys` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeysQuery {
    /// Only the keys that name this campaign (its owners may ask).
    campaign: Option<CampaignId>,
}

/// The keys the caller made (an admin: every key), or with `?campaign=`, the keys that name that
/// campaign; newest first. Never their tokens. Of a key someone else made for several campaigns,
/// an owner who is not an admin sees only the campaign they asked about (the others may be
/// private to them).
pub(super) async fn list_keys(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<KeysQuery>, QueryRejection>,
) -> Result<Json<Vec<ApiKeySummary>>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::new(ErrorCode::Invalid, rejection.body_text()))?;
    let me = require_person(&state, &headers).await?.actor;
    let admin = state.is_admin(&me);
    let mut keys = all_keys(&state).await?;
    match &query.campaign {
        Some(campaign) => {
            if !admin && !owns(&state, &me, campaign).await? {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("only an owner of {campaign} may list its keys"),
                ));
            }
            keys.retain(|key| key.campaigns.as_ref().is_some_and(|c| c.contains(campaign)));
        }
        None if admin => {}
        None => keys.retain(|key| key.created_by.user_id == me.user_id),
    }
    keys.sort_by_key(|key| std::cmp::Reverse(key.created_at));
    Ok(Json(
        keys.iter()
            .map(|key| {
                let mut summary = key.summary();
                if let Some(asked) = &query.campaign {
                    if !admin && key.created_by.user_id != me.user_id {
                        summary.campaigns = vec![asked.clone()];
                    }
                }
                summary
            })
            .collect(),
    ))
}

/// Revoke a key: refused from the next request on, everywhere (204). A key the caller may not
/// revoke answers exactly like one that does not exist.
pub(super) async fn revoke_key(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let me = require_person(&state, &headers).await?.actor;
    let not_found = || ApiError::new(ErrorCode::NotFound, "no such API key");
    let keys = state.sessions.api_keys();
    let key = keys
        .get(&id)
        .await
        .map_err(store_unavailable)?
        .ok_or_else(not_found)?;
    if !may_revoke(&state, &me, &key).await? {
        return Err(not_found());
    }
    keys.revoke(&id).await.map_err(store_unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn may_revoke(state: &ApiState, me: &Actor, key: &ApiKeyRecord) -> Result<bool, ApiError> {
    if key.created_by.user_id == me.user_id || state.is_admin(me) {
        return Ok(true);
    }
    for campaign in key.campaigns.iter().flatten() {
        match owns(state, me, campaign).await {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(err) if err.code() == ErrorCode::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(false)
}

async fn all_keys(state: &ApiState) -> Result<Vec<ApiKeyRecord>, ApiError> {
    state
        .sessions
        .api_keys()
        .all()
        .await
        .map_err(store_unavailable)
}
