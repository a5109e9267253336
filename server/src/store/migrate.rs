//! Moving from the embedded store to Redis (`rally migrate --to-redis`), with the server
//! stopped: every campaign with its whole log and snapshots, the signing secrets, sessions, API
//! keys and webhook endpoints — written the way the Redis store writes them, then read back
//! through both stores and compared.
//!
//! Idempotent: a campaign Redis already holds at the same version is compared, not copied again,
//! so a run that was interrupted (or one run twice) ends in the same place. A campaign's record
//! is written last: a run cut short leaves its log without a record, which the next run
//! replaces. A campaign Redis holds at another version has changed there since: it is reported
//! and left alone.

use rally_app::model::{CampaignEvent, CampaignId, CampaignState};

use super::embedded::EmbeddedStore;
use super::redis::{corrupt, refused, RedisStore};
use super::sessions::SessionStore;
use super::{api_keys::ApiKeyStore, webhooks::WebhookStore, Store, StoreError};
use crate::redis::keys;

/// Events read and written per round trip.
const CHUNK: usize = 1_000;

/// What happened to one campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignMove {
    /// Copied and checked.
    Copied { events: u64, snapshots: u64 },
    /// Redis already held it, equal.
    AlreadyThere,
}

/// Why a campaign could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{id}: Redis holds version {redis}, the embedded store version {embedded}: they differ (written in both places?); left alone")]
    Diverged {
        id: CampaignId,
        redis: u64,
        embedded: u64,
    },
    #[error("{id}: {what} read back from Redis differs from the embedded store")]
    Differs { id: CampaignId, what: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The whole move's outcome.
#[derive(Debug, Default)]
pub struct MigrateReport {
    pub copied: u64,
    pub already_there: u64,
    pub events: u64,
    pub snapshots: u64,
    /// Sessions, API keys, webhook endpoints and secrets copied (those already there are kept).
    pub records: u64,
    /// Secrets Redis already had with other values (kept: instances may be using them).
    pub kept_secrets: Vec<String>,
    pub failed: Vec<MigrateError>,
}

/// Move everything from `from` into `to`.
pub async fn migrate(from: &EmbeddedStore, to: &RedisStore) -> Result<MigrateReport, StoreError> {
    let mut report = MigrateReport::default();
    for (name, value) in from.secrets().await? {
        if to.put_secret_if_absent(&name, &value).await? {
            report.records += 1;
        } else if to.raw_secret(&name).await?.as_deref() != Some(value.as_slice()) {
            report.kept_secrets.push(name);
        }
    }
    for session in from.all_sessions().await? {
        if to.session(&session.id).await?.is_none() {
            to.insert_session(session).await?;
            report.records += 1;
        }
    }
    for key in from.api_keys().await? {
        if to.api_key(&key.id).await?.is_none() {
            to.insert_api_key(key).await?;
            report.records += 1;
        }
    }
    for webhook in from.webhooks().await? {
        if to.webhook(&webhook.id).await?.is_none() {
            to.insert_webhook(webhook).await?;
            report.records += 1;
        }
    }
    for record in from.list().await? {
        match move_campaign(from, to, &record.state.id).await {
            Ok(CampaignMove::Copied { events, snapshots }) => {
                report.copied += 1;
                report.events += events;
                report.snapshots += snapshots;
            }
            Ok(CampaignMove::AlreadyThere) => report.already_there += 1,
            Err(err) => report.failed.push(err),
        }
    }
    Ok(report)
}

/// Copy one campaign (unless Redis holds it already) and check the copy.
pub async fn move_campaign(
    from: &EmbeddedStore,
    to: &RedisStore,
    id: &CampaignId,
) -> Result<CampaignMove, MigrateError> {
    let record = from.load(id, 0).await?.ok_or(StoreError::NotFound)?.record;
    let embedded = record.state.version;
    match to.version(id).await? {
        Some(redis) if redis == embedded => {
            check(from, to, id).await?;
            // A run cut short between the record and the listing: list it now.
            to.put_listing(id).await?;
            return Ok(CampaignMove::AlreadyThere);
        }
        Some(redis) => {
            return Err(MigrateError::Diverged {
                id: id.clone(),
                redis,
                embedded,
            })
        }
        None => {}
    }
    to.clear_log(id).await?;
    let mut events = 0;
    let mut after = from.oldest_event(id).await?.unwrap_or(1).saturating_sub(1);
    loop {
        let chunk = from
            .events_since(id, after, CHUNK)
            .await?
            .ok_or_else(|| gap(id, after))?;
        let Some(last) = chunk.last() else { break };
        after = last.version;
        events += chunk.len() as u64;
        to.append_events(id, &chunk).await?;
    }
    let snapshots = snapshots(from, id, embedded).await?;
    to.append_snapshots(id, &snapshots).await?;
    to.put_record(&record).await?;
    check(from, to, id).await?;
    Ok(CampaignMove::Copied {
        events,
        snapshots: snapshots.len() as u64,
    })
}

/// Every snapshot a store keeps of a campaign, oldest first.
async fn snapshots(
    store: &dyn Store,
    id: &CampaignId,
    version: u64,
) -> Result<Vec<CampaignState>, StoreError> {
    let mut found = Vec::new();
    let mut at = version;
    while at > 0 {
        let Some(state) = store.snapshot_at_or_before(id, at).await? else {
            break;
        };
        at = state.version.min(at).saturating_sub(1);
        found.push(state);
    }
    found.reverse();
    Ok(found)
}

/// Read the campaign back through both stores: record, every event, every snapshot.
async fn check(from: &EmbeddedStore, to: &RedisStore, id: &CampaignId) -> Result<(), MigrateError> {
    let differs = |what: &str| MigrateError::Differs {
        id: id.clone(),
        what: what.to_owned(),
    };
    let record = |loaded: Option<super::Loaded>| loaded.map(|l| l.record);
    if record(from.load(id, 0).await?) != record(to.load(id, 0).await?) {
        return Err(differs("the record"));
    }
    if from.oldest_event(id).await? != to.oldest_event(id).await? {
        return Err(differs("the oldest kept event"));
    }
    let mut after = from.oldest_event(id).await?.unwrap_or(1).saturating_sub(1);
    loop {
        let mine = from
            .events_since(id, after, CHUNK)
            .await?
            .ok_or_else(|| gap(id, after))?;
        let theirs = to
            .events_since(id, after, CHUNK)
            .await?
            .ok_or_else(|| gap(id, after))?;
        if as_json(&mine)? != as_json(&theirs)? {
            return Err(differs(&format!("the events after version {after}")));
        }
        let Some(last) = mine.last() else { break };
        after = last.version;
    }
    let version = from.version(id).await?.unwrap_or(0);
    if as_json(&snapshots(from, id, version).await?)?
        != as_json(&snapshots(to, id, version).await?)?
    {
        return Err(differs("the snapshots"));
    }
    Ok(())
}

/// A log that does not reach back to where it was asked to continue.
fn gap(id: &CampaignId, after: u64) -> StoreError {
    StoreError::Corrupt(format!("{id}: the log has no events after version {after}"))
}

fn as_json<T: serde::Serialize>(values: &[T]) -> Result<String, StoreError> {
    serde_json::to_string(values).map_err(corrupt)
}

/// Writing a campaign the way [`RedisStore`]'s commits do, piece by piece.
impl RedisStore {
    /// Drop a campaign's log and snapshots (left by a move that was cut short).
    async fn clear_log(&self, id: &CampaignId) -> Result<(), StoreError> {
        let (events, snapshots) = (keys::events(id), keys::snapshots(id));
        self.link
            .run(|mut conn| async move {
                redis::cmd("DEL")
                    .arg(&events)
                    .arg(&snapshots)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await?
            .map_err(refused)?;
        Ok(())
    }

    async fn append_events(
        &self,
        id: &CampaignId,
        events: &[CampaignEvent],
    ) -> Result<(), StoreError> {
        let stream = keys::events(id);
        let mut pipe = redis::pipe();
        for event in events {
            let json = serde_json::to_string(event).map_err(corrupt)?;
            pipe.cmd("XADD")
                .arg(&stream)
                .arg(format!("{}-0", event.version))
                .arg("e")
                .arg(json)
                .ignore();
        }
        self.link
            .run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
            .await?
            .map_err(refused)
    }

    async fn append_snapshots(
        &self,
        id: &CampaignId,
        states: &[CampaignState],
    ) -> Result<(), StoreError> {
        let stream = keys::snapshots(id);
        let mut pipe = redis::pipe();
        for state in states {
            let json = serde_json::to_string(state).map_err(corrupt)?;
            pipe.cmd("XADD")
                .arg(&stream)
                .arg(format!("{}-0", state.version))
                .arg("s")
                .arg(json)
                .ignore();
        }
        if states.is_empty() {
            return Ok(());
        }
        self.link
            .run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
            .await?
            .map_err(refused)
    }

    /// The record, and the campaign in the listing: from here on it is the campaign.
    async fn put_record(&self, record: &super::CampaignRecord) -> Result<(), StoreError> {
        let id = &record.state.id;
        let campaign = keys::campaign(id);
        let json = serde_json::to_string(record).map_err(corrupt)?;
        let version = record.state.version;
        let id_text = id.to_string();
        self.link
            .run(|mut conn| async move {
                redis::pipe()
                    .cmd("HSET")
                    .arg(&campaign)
                    .arg("version")
                    .arg(version)
                    .arg("record")
                    .arg(&json)
                    .ignore()
                    .cmd("SADD")
                    .arg(keys::CAMPAIGNS)
                    .arg(&id_text)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?
            .map_err(refused)
    }

    /// The campaign in the listing (idempotent).
    async fn put_listing(&self, id: &CampaignId) -> Result<(), StoreError> {
        let id_text = id.to_string();
        self.link
            .run(|mut conn| async move {
                redis::cmd("SADD")
                    .arg(keys::CAMPAIGNS)
                    .arg(&id_text)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await?
            .map_err(refused)?;
        Ok(())
    }

    /// Store a secret unless one of that name exists; whether it was stored.
    async fn put_secret_if_absent(&self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        let key = keys::secret(name);
        let value = value.to_vec();
        let set: Option<String> = self
            .link
            .run(|mut conn| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("NX")
                    .query_async(&mut conn)
                    .await
            })
            .await?
            .map_err(refused)?;
        Ok(set.is_some())
    }

    async fn raw_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = keys::secret(name);
        self.link
            .run(|mut conn| async move { redis::cmd("GET").arg(&key).query_async(&mut conn).await })
            .await?
            .map_err(refused)
    }
}
