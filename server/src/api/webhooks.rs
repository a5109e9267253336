//! Webhook endpoints over HTTP: people register, list, remove them and ask for a change to be
//! sent again (see [`crate::webhooks`]).
//!
//! | who | may |
//! |---|---|
//! | a campaign's owner | register endpoints for it; list, remove and redeliver those |
//! | an admin (`--admins`) | register endpoints for every campaign; list, remove and redeliver any |
//! | the person who registered one | list, remove and redeliver it |

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use rally_app::model::{Actor, CampaignId};
use rally_app::protocol::webhooks::{CreateWebhook, NewWebhook, Redeliver, WebhookSummary};
use rally_app::protocol::ErrorCode;
use serde::Deserialize;

use super::context::{owns, require_person, store_unavailable, ApiJson, ApiState};
use crate::clock;
use crate::http_error::ApiError;
use crate::store::webhooks::WebhookRecord;
use crate::webhooks::EndpointError;

fn refused(err: EndpointError) -> ApiError {
    match err {
        EndpointError::Invalid(body) => body.into(),
        EndpointError::TooMany | EndpointError::TooManyOfYours | EndpointError::TooManyWaiting => {
            ApiError::new(ErrorCode::LimitExceeded, err.to_string())
        }
        EndpointError::NotFound => not_found(),
        EndpointError::Store(err) => store_unavailable(err),
    }
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such webhook endpoint")
}

/// Register an endpoint for a campaign the caller owns, or (admins) for every campaign.
pub(super) async fn register_webhook(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiJson(asked): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<NewWebhook>), ApiError> {
    let me = require_person(&state, &headers).await?.actor;
    asked.check()?;
    if !state.is_admin(&me) {
        let Some(campaign) = &asked.campaign else {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "only admins may register endpoints for every campaign; name the campaign",
            ));
        };
        if !owns(&state, &me, campaign).await? {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("only an owner of {campaign} may send its changes elsewhere"),
            ));
        }
    }
    let made = state
        .webhooks
        .register(asked, me, clock::now())
        .await
        .map_err(refused)?;
    Ok((StatusCode::CREATED, Json(made)))
}

/// `GET /api/webhooks` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebhooksQuery {
    /// Only the endpoints of this campaign (its owners may ask).
    campaign: Option<CampaignId>,
}

/// The endpoints the caller registered (an admin: every one), or with `?campaign=`, those of
/// that campaign; each with its latest deliveries. Never their secrets.
pub(super) async fn list_webhooks(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<WebhooksQuery>, QueryRejection>,
) -> Result<Json<Vec<WebhookSummary>>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::new(ErrorCode::Invalid, rejection.body_text()))?;
    let me = require_person(&state, &headers).await?.actor;
    let admin = state.is_admin(&me);
    let mut hooks = state.webhooks.all().await.map_err(store_unavailable)?;
    match &query.campaign {
        Some(campaign) => {
            if !admin && !owns(&state, &me, campaign).await? {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("only an owner of {campaign} may list its webhook endpoints"),
                ));
            }
            hooks.retain(|hook| hook.campaign.as_ref() == Some(campaign));
        }
        None if admin => {}
        None => hooks.retain(|hook| hook.created_by.user_id == me.user_id),
    }
    hooks.sort_by_key(|hook| std::cmp::Reverse(hook.created_at));
    Ok(Json(hooks.iter().map(WebhookRecord::summary).collect()))
}

/// The endpoint `id`, if the caller may manage it (anyone else is told it does not exist).
async fn managed(state: &ApiState, me: &Actor, id: &str) -> Result<WebhookRecord, ApiError> {
    let hook = state
        .webhooks
        .get(id)
        .await
        .map_err(store_unavailable)?
        .ok_or_else(not_found)?;
    let mine = hook.created_by.user_id == me.user_id || state.is_admin(me);
    let owner = match &hook.campaign {
        Some(campaign) if !mine => match owns(state, me, campaign).await {
            Ok(owner) => owner,
            Err(err) if err.code() == ErrorCode::NotFound => false,
            Err(err) => return Err(err),
        },
        _ => false,
    };
    if mine || owner {
        Ok(hook)
    } else {
        Err(not_found())
    }
}

/// Remove an endpoint: nothing more is sent to it (204).
pub(super) async fn remove_webhook(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let me = require_person(&state, &headers).await?.actor;
    managed(&state, &me, &id).await?;
    state
        .webhooks
        .remove(&id)
        .await
        .map_err(store_unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send one change again, once, after the delivery under way (202); the endpoint's log shows
/// how it went. Only someone who may see the campaign's changes now: an owner, or an admin
/// (its maker too, while they are one of those).
pub(super) async fn redeliver(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(asked): ApiJson<Redeliver>,
) -> Result<StatusCode, ApiError> {
    let me = require_person(&state, &headers).await?.actor;
    let hook = managed(&state, &me, &id).await?;
    let allowed = state.is_admin(&me)
        || match &hook.campaign {
            Some(campaign) => owns(&state, &me, campaign).await.unwrap_or(false),
            None => false,
        };
    if !allowed {
        return Err(not_found());
    }
    state
        .webhooks
        .redeliver(&id, asked.campaign_id, asked.version)
        .await
        .map_err(refused)?;
    Ok(StatusCode::ACCEPTED)
}
