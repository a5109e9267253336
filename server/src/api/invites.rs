//! Invite links over HTTP: owners make, list and withdraw them; anyone with a working link reads
//! what it offers and accepts it.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use rally_app::model::{CampaignId, Invite, InviteId};
use rally_app::protocol::invites::{CreateInvite, InviteAccepted, InviteDetails, InviteLinkInfo};
use rally_app::protocol::ErrorCode;

use super::context::{
    may_read, parse_id, require_person, require_session, signed, ApiState, MAX_BODY_BYTES,
};
use crate::auth::{InviteLink, Keys};
use crate::campaigns::{Caller, StateManager};
use crate::clock;
use crate::http_error::ApiError;

/// An invite link as its campaign's owners see it, with the link itself.
fn link_info(keys: &Keys, campaign_id: &CampaignId, invite: Invite) -> InviteLinkInfo {
    let token = keys.invite_link(campaign_id, &invite.terms.id, invite.terms.expires_at);
    InviteLinkInfo {
        campaign_id: campaign_id.clone(),
        status: invite.status(clock::now()),
        path: format!("/invite/{token}"),
        token,
        invite,
    }
}

/// The owner a request comes from, for the invite requests (owners only: the campaign says).
async fn invite_caller(
    state: &ApiState,
    headers: &HeaderMap,
    id: &CampaignId,
) -> Result<Caller, ApiError> {
    let who = require_person(state, headers).await?.into_who();
    Ok(who.caller(id).expect("signed in"))
}

/// Owners only: an invite link on the terms the body asks for (editor, 7 days, anyone with the
/// link, unless it says otherwise).
pub(super) async fn make_invite(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<InviteLinkInfo>), ApiError> {
    let id = parse_id(&id)?;
    let body = body.map_err(|_| {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("request body over {MAX_BODY_BYTES} bytes"),
        )
    })?;
    let asked: CreateInvite = if body.iter().all(u8::is_ascii_whitespace) {
        CreateInvite::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|err| ApiError::new(ErrorCode::Invalid, format!("invite request: {err}")))?
    };
    let caller = invite_caller(&state, &headers, &id).await?;
    let invite = state.manager.make_invite(&id, caller, asked).await?;
    Ok((
        StatusCode::CREATED,
        Json(link_info(&state.keys, &id, invite)),
    ))
}

/// Owners only: the campaign's invite links, newest first, with who used each.
pub(super) async fn list_invites(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Vec<InviteLinkInfo>>, ApiError> {
    let id = parse_id(&id)?;
    let caller = invite_caller(&state, &headers, &id).await?;
    let invites = state.manager.invites(&id, caller).await?;
    Ok(Json(
        invites
            .into_iter()
            .map(|invite| link_info(&state.keys, &id, invite))
            .collect(),
    ))
}

/// Owners only: nobody can join through the link any more (204, also when it was withdrawn
/// already).
pub(super) async fn withdraw_invite(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((id, invite_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let invite_id = InviteId::parse(&invite_id)
        .map_err(|err| ApiError::new(ErrorCode::Invalid, err.to_string()))?;
    let caller = invite_caller(&state, &headers, &id).await?;
    state
        .manager
        .withdraw_invite(&id, caller, invite_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What an invite link offers: the campaign's title, who made the link, the role. Reads
/// like any read of the campaign (a closed server asks for a session first).
pub(super) async fn describe_invite(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Json<InviteDetails>, ApiError> {
    let signed = signed(&state, &headers).await?;
    if signed.as_ref().is_some_and(|signed| signed.scope.is_some()) {
        require_person(&state, &headers).await?;
    }
    may_read(&state, &signed.map(|signed| signed.actor))?;
    Ok(Json(
        invite_details(&state.keys, &state.manager, &token).await?,
    ))
}

/// The details of a working invite link (the API and the invite page both show them).
pub(crate) async fn invite_details(
    keys: &Keys,
    manager: &StateManager,
    token: &str,
) -> Result<InviteDetails, rally_app::protocol::ErrorBody> {
    let link = verified_link(keys, token)?;
    let (invite, title) = manager
        .invite_offer(&link.campaign_id, link.invite_id)
        .await?;
    Ok(InviteDetails {
        campaign_id: link.campaign_id,
        title,
        invited_by: invite.made_by.display_name.clone(),
        role: invite.terms.role,
        expires_at: invite.terms.expires_at,
        uses_left: invite.uses_left(),
    })
}

/// What a signed invite link names (whether it still lets anyone in is the campaign's answer).
fn verified_link(keys: &Keys, token: &str) -> Result<InviteLink, rally_app::protocol::ErrorBody> {
    keys.verify_invite(token, clock::now()).map_err(|err| {
        rally_app::protocol::ErrorBody::new(ErrorCode::Invalid, format!("invite rejected: {err}"))
    })
}

pub(super) async fn accept_invite(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Json<InviteAccepted>, ApiError> {
    let actor = require_session(&state, &headers).await?;
    let link = verified_link(&state.keys, &token)?;
    let role = state
        .manager
        .join(&link.campaign_id, actor, link.invite_id)
        .await?;
    Ok(Json(InviteAccepted {
        campaign_id: link.campaign_id,
        role,
    }))
}
