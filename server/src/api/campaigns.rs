//! Campaigns over HTTP: list (filtered, in pages), create, read, and every change the WebSocket
//! makes — the same typed writes through the same campaign writer, so an HTTP write reaches
//! every subscriber like any other and is refused with the same codes.
//!
//! A campaign's version is its entity tag: reads and writes answer `ETag: "<version>"`, a read
//! with a matching `If-None-Match` is `304`, and `If-Match: "<version>"` on a write is its
//! `base_version` (what the change was based on: `409 conflict` when something it changes was
//! changed after that version).

use std::time::Instant;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rally_app::model::{
    CampaignId, CampaignStatus, CreateCampaign, Idempotency, IdempotencyKey, IdempotencyKeyError,
    Visibility, Write,
};
use rally_app::protocol::campaign::{CampaignSnapshot, CampaignSummary, WriteAck};
use rally_app::protocol::ErrorCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::context::{
    may_read, parse_id, rate_limited, require_session, signed, who_on, ApiJson, ApiState,
};
use crate::campaigns::Caller;
use crate::http_error::ApiError;
use crate::sessions::Signed;

/// Most campaigns one page of `GET /api/campaigns` lists.
pub const MAX_PAGE: usize = 1000;

/// `GET /api/campaigns` query: filters, and where the page starts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    status: Option<CampaignStatus>,
    visibility: Option<Visibility>,
    /// At most this many (1 to [`MAX_PAGE`]); all of them without it.
    limit: Option<usize>,
    /// Only campaigns whose id sorts after this one (the last id of the previous page).
    after: Option<CampaignId>,
}

/// The campaigns listed to the caller, by id, filtered; with `limit`, one page, and a
/// `Link: <…>; rel="next"` header when there are more.
pub(super) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::new(ErrorCode::Invalid, rejection.body_text()))?;
    if query
        .limit
        .is_some_and(|limit| !(1..=MAX_PAGE).contains(&limit))
    {
        return Err(ApiError::new(
            ErrorCode::Invalid,
            format!("limit must be 1 to {MAX_PAGE}"),
        ));
    }
    let who = signed(&state, &headers)
        .await?
        .map(Signed::into_who)
        .unwrap_or_default();
    may_read(&state, &who.actor)?;
    let mut listed = state.manager.list(|id| who.caller(id)).await?;
    listed.retain(|row| who.reaches(&row.id));
    let (page, more) = page_of(listed, &query);
    let mut response = Json(&page).into_response();
    if more {
        let last = page.last().expect("a full page has a last row");
        let mut next = format!(
            "/api/campaigns?limit={}&after={}",
            query.limit.expect("only a limited page has more"),
            last.id
        );
        if let Some(status) = query.status {
            next.push_str(&format!("&status={}", query_value(&status)));
        }
        if let Some(visibility) = query.visibility {
            next.push_str(&format!("&visibility={}", query_value(&visibility)));
        }
        let link = HeaderValue::from_str(&format!("<{next}>; rel=\"next\""))
            .expect("ids and enum names are header-safe");
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

/// A snake_case enum as it appears in a query.
fn query_value<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The rows `query` asks for from `listed` (ordered by id), and whether more follow the page.
fn page_of(listed: Vec<CampaignSummary>, query: &ListQuery) -> (Vec<CampaignSummary>, bool) {
    let mut rows = listed.into_iter().filter(|row| {
        query.status.is_none_or(|status| row.status == status)
            && query.visibility.is_none_or(|v| row.visibility == v)
            && query.after.as_ref().is_none_or(|after| row.id > *after)
    });
    match query.limit {
        None => (rows.collect(), false),
        Some(limit) => {
            let page: Vec<_> = rows.by_ref().take(limit).collect();
            let more = rows.next().is_some();
            (page, more)
        }
    }
}

pub(super) async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateCampaign>,
) -> Result<Response, ApiError> {
    // A campaign needs an owner who can manage it: a person, never an API key.
    let actor = require_session(&state, &headers).await?;
    if !state.quotas.campaigns.take(&actor.user_id, Instant::now()) {
        return Err(rate_limited(state.quotas.campaigns_refused()));
    }
    let snapshot = state.manager.create(request, actor).await?;
    let tag = entity_tag(snapshot.campaign.version);
    Ok((StatusCode::CREATED, tagged(tag), Json(snapshot)).into_response())
}

pub(super) async fn snapshot(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let who = who_on(&state, &headers, &id, false).await?;
    may_read(&state, &who.actor)?;
    let snapshot: CampaignSnapshot = state.manager.snapshot(&id, who.caller(&id)).await?;
    let tag = entity_tag(snapshot.campaign.version);
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|asked| asked.as_bytes() == tag.as_bytes())
    {
        return Ok((StatusCode::NOT_MODIFIED, tagged(tag)).into_response());
    }
    Ok((tagged(tag), Json(snapshot)).into_response())
}

/// `PATCH /api/campaigns/{id}`: body as `campaign:update:v1`, without `campaign_id`.
pub(super) async fn update(
    state: State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Response, ApiError> {
    change(state, headers, &id, body, "update", Write::Update).await
}

/// `POST /api/campaigns/{id}/features`: body as `campaign:feature:v1`.
pub(super) async fn features(
    state: State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Response, ApiError> {
    change(state, headers, &id, body, "features", Write::Feature).await
}

/// `POST /api/campaigns/{id}/config`: body as `campaign:config:v1`.
pub(super) async fn config(
    state: State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Response, ApiError> {
    change(state, headers, &id, body, "config", Write::Config).await
}

/// `POST /api/campaigns/{id}/text`: body as `campaign:text:v1`.
pub(super) async fn text(
    state: State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Response, ApiError> {
    change(state, headers, &id, body, "text", Write::Text).await
}

/// `POST /api/campaigns/{id}/members`: body as `campaign:member:v1`.
pub(super) async fn member(
    state: State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Response, ApiError> {
    change(state, headers, &id, body, "member", Write::Member).await
}

/// `POST /api/campaigns/{id}/handover`: body as `campaign:handover:v1`.
pub(super) async fn handover(
    state: State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Response, ApiError> {
    change(state, headers, &id, body, "handover", Write::Handover).await
}

/// One write: the request's payload with the campaign from the path and the base from
/// `If-Match`, through the campaign's writer, once per `Idempotency-Key`. Answers the write's
/// ack and the new `ETag`.
async fn change<T: DeserializeOwned>(
    State(state): State<ApiState>,
    headers: HeaderMap,
    id: &str,
    body: Map<String, Value>,
    kind: &str,
    write: fn(T) -> Write,
) -> Result<Response, ApiError> {
    let parts = write_parts(&state, &headers, id, body, kind).await?;
    let ack = state
        .manager
        .write(write(parts.request), parts.caller, parts.named)
        .await?;
    Ok(acknowledged(ack))
}

/// A write as an HTTP request carries it.
pub(super) struct WriteParts<T> {
    /// The payload, with the campaign from the path and the base from `If-Match`.
    pub request: T,
    pub caller: Option<Caller>,
    /// Its `Idempotency-Key`, if any, with the digest of the payload.
    pub named: Option<Idempotency>,
}

/// The parts of a write request of `kind` to campaign `id`: only a person or a writing key may
/// send one.
pub(super) async fn write_parts<T: DeserializeOwned>(
    state: &ApiState,
    headers: &HeaderMap,
    id: &str,
    body: Map<String, Value>,
    kind: &str,
) -> Result<WriteParts<T>, ApiError> {
    let id = parse_id(id)?;
    let base = if_match(headers)?;
    let key = idempotency_key(headers)?;
    let who = who_on(state, headers, &id, true).await?;
    if who.actor.is_none() {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "sign in first: POST /api/session {\"display_name\": ...}",
        ));
    }
    let body = complete(&id, body, base)?;
    let named = key.map(|key| Idempotency {
        key,
        digest: digest(kind, &body),
    });
    let request = serde_json::from_value(Value::Object(body))
        .map_err(|err| ApiError::new(ErrorCode::Invalid, err.to_string()))?;
    Ok(WriteParts {
        request,
        caller: who.caller(&id),
        named,
    })
}

/// A write's answer: its ack, and the new version as the `ETag`.
pub(super) fn acknowledged(ack: WriteAck) -> Response {
    let tag = entity_tag(ack.version);
    (tagged(tag), Json(ack)).into_response()
}

/// The name `Idempotency-Key` gives the write, if any.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| IdempotencyKey::parse(text).ok())
        .map(Some)
        .ok_or_else(|| ApiError::new(ErrorCode::Invalid, IdempotencyKeyError.to_string()))
}

/// What names a write's content: 16 hex digits of the SHA-256 of its kind and its completed
/// body (keys in order, so the same write always has the same digest).
fn digest(kind: &str, body: &Map<String, Value>) -> String {
    let mut hash = Sha256::new();
    hash.update(kind.as_bytes());
    hash.update([0]);
    hash.update(serde_json::to_vec(body).expect("JSON values serialize"));
    crate::auth::hex(&hash.finalize()[..8])
}

/// The write's body, which may leave out `campaign_id` (or repeat the path's) and leave
/// `base_version` to `If-Match`, with both filled in.
fn complete(
    id: &CampaignId,
    mut body: Map<String, Value>,
    if_match: Option<u64>,
) -> Result<Map<String, Value>, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::Invalid, message);
    match body.get("campaign_id") {
        Some(named) if named.as_str() != Some(id.as_str()) => {
            return Err(invalid(format!(
                "campaign_id in the body must be the path's {id} (or left out)"
            )))
        }
        _ => {}
    }
    body.insert("campaign_id".into(), Value::String(id.to_string()));
    if let Some(base) = if_match {
        match body.get("base_version") {
            Some(given) if given.as_u64() != Some(base) => {
                return Err(invalid(format!(
                    "If-Match names version {base} but base_version is {given}; send one"
                )))
            }
            _ => {
                body.insert("base_version".into(), Value::from(base));
            }
        }
    }
    Ok(body)
}

/// The headers of an answer about one campaign: its tag, and that the answer is the asker's own
/// (it carries their role), so no cache hands it to someone else or serves it unchecked.
fn tagged(tag: HeaderValue) -> [(header::HeaderName, HeaderValue); 3] {
    [
        (header::ETAG, tag),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        ),
        (
            header::VARY,
            HeaderValue::from_static("Cookie, Authorization"),
        ),
    ]
}

/// `"<version>"`, the campaign's entity tag.
fn entity_tag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are header-safe")
}

/// The version `If-Match` names (`"7"`; `*` or no header: none).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    text.strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .and_then(|digits| digits.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Invalid,
                format!("If-Match must be one campaign version as an ETag (\"7\"), not {text:?}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rally_app::model::UpdateFields;
    use serde_json::json;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_body_takes_the_campaign_from_the_path_and_the_base_from_if_match() {
        let id = CampaignId::parse("spring").unwrap();
        let cases: &[(Value, Option<u64>, Result<Option<u64>, ()>)] = &[
            (json!({"updates": {"title": "A"}}), None, Ok(None)),
            (json!({"updates": {"title": "A"}}), Some(4), Ok(Some(4))),
            (
                json!({"updates": {"title": "A"}, "base_version": 4}),
                Some(4),
                Ok(Some(4)),
            ),
            (
                json!({"updates": {"title": "A"}, "base_version": 3}),
                None,
                Ok(Some(3)),
            ),
            (
                json!({"updates": {"title": "A"}, "base_version": 3}),
                Some(4),
                Err(()),
            ),
            (
                json!({"updates": {"title": "A"}, "campaign_id": "spring"}),
                None,
                Ok(None),
            ),
            (
                json!({"updates": {"title": "A"}, "campaign_id": "autumn"}),
                None,
                Err(()),
            ),
            (
                json!({"updates": {"title": "A"}, "surprise": 1}),
                None,
                Err(()),
            ),
            (json!({"updates": {"nonsense": 1}}), None, Err(())),
        ];
        for (given, if_match, expected) in cases {
            let got = complete(&id, body(given.clone()), *if_match)
                .and_then(|body| {
                    serde_json::from_value::<UpdateFields>(Value::Object(body))
                        .map_err(|err| ApiError::new(ErrorCode::Invalid, err.to_string()))
                })
                .map(|w| {
                    assert_eq!(w.campaign_id, id);
                    w.base_version
                })
                .map_err(|err| assert_eq!(err.code(), ErrorCode::Invalid));
            assert_eq!(&got, expected, "{given} with If-Match {if_match:?}");
        }
    }

    #[test]
    fn if_match_is_one_version_tag() {
        let cases: &[(Option<&str>, Result<Option<u64>, ()>)] = &[
            (None, Ok(None)),
            (Some("*"), Ok(None)),
            (Some("\"7\""), Ok(Some(7))),
            (Some(" \"7\" "), Ok(Some(7))),
            (Some("7"), Err(())),
            (Some("W/\"7\""), Err(())),
            (Some("\"7\", \"8\""), Err(())),
            (Some("\"x\""), Err(())),
        ];
        for (value, expected) in cases {
            let mut headers = HeaderMap::new();
            if let Some(value) = value {
                headers.insert(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
            }
            let got = if_match(&headers).map_err(|err| assert_eq!(err.code(), ErrorCode::Invalid));
            assert_eq!(&got, expected, "{value:?}");
        }
    }

    fn row(id: &str, status: CampaignStatus, visibility: Visibility) -> CampaignSummary {
        CampaignSummary {
            id: CampaignId::parse(id).unwrap(),
            title: id.into(),
            status,
            version: 1,
            updated_at: rally_app::model::Timestamp::from_unix_nanos(0),
            owner: "Ann".into(),
            visibility,
            your_role: None,
        }
    }

    #[test]
    fn a_digest_names_the_write_whatever_the_order_of_its_keys() {
        let one = body(json!({"updates": {"title": "A", "status": "active"}, "base_version": 3}));
        let same = body(json!({"base_version": 3, "updates": {"status": "active", "title": "A"}}));
        let other = body(json!({"updates": {"title": "B", "status": "active"}, "base_version": 3}));
        assert_eq!(digest("update", &one), digest("update", &same));
        assert_ne!(digest("update", &one), digest("update", &other));
        assert_ne!(digest("update", &one), digest("config", &one));
        assert_eq!(digest("update", &one).len(), 16);
    }

    #[test]
    fn pages_filter_then_continue_after_the_last_id() {
        use CampaignStatus::*;
        let listed = || {
            vec![
                row("a", Draft, Visibility::Public),
                row("b", Active, Visibility::Public),
                row("c", Active, Visibility::Private),
                row("d", Active, Visibility::Public),
                row("e", Draft, Visibility::Public),
            ]
        };
        let ids = |rows: Vec<CampaignSummary>| {
            rows.into_iter()
                .map(|r| r.id.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let query = |status, visibility, limit, after: Option<&str>| ListQuery {
            status,
            visibility,
            limit,
            after: after.map(|a| CampaignId::parse(a).unwrap()),
        };
        let cases = [
            (query(None, None, None, None), "a,b,c,d,e", false),
            (query(None, None, Some(2), None), "a,b", true),
            (query(None, None, Some(2), Some("b")), "c,d", true),
            (query(None, None, Some(2), Some("c")), "d,e", false),
            (query(Some(Active), None, None, None), "b,c,d", false),
            (
                query(Some(Active), Some(Visibility::Public), Some(1), None),
                "b",
                true,
            ),
            (
                query(Some(Active), Some(Visibility::Public), Some(1), Some("b")),
                "d",
                false,
            ),
            (query(None, None, Some(5), None), "a,b,c,d,e", false),
            (query(None, None, None, Some("zz")), "", false),
        ];
        for (query, expected, more) in cases {
            let (page, has_more) = page_of(listed(), &query);
            assert_eq!(
                (ids(page), has_more),
                (expected.to_string(), more),
                "{query:?}"
            );
        }
    }
}
