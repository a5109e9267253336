//! The Redis store: in Redis mode, Redis is the single source of truth shared by all instances.
//!
//! The keys are listed in [`crate::redis::keys`].
//!
//! Commits are one Lua script: check the stored version, write the record, append the events
//! (the stream is the campaign's complete log) and, every
//! [`SNAPSHOT_EVERY`](super::SNAPSHOT_EVERY) versions, a snapshot — atomically. A stale writer
//! gets `VERSION <stored>` back and catches up.

use std::sync::OnceLock;

use rally_app::model::{CampaignEvent, CampaignId, CampaignState, Timestamp, UserId};
use redis::Script;

use super::sessions::{SessionRecord, SessionStore};
use super::{CampaignRecord, Commit, Loaded, Store, StoreError, StoreFuture};
use crate::redis::{keys, RedisLink};

/// How long a claimed turn lasts if its claimer never commits (it died).
const TURN_MS: u64 = 250;

fn commit_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        Script::new(
            r"
            local turn = redis.call('GET', KEYS[3])
            if turn and turn ~= ARGV[5] then return redis.error_reply('TURN taken') end
            local current = redis.call('HGET', KEYS[1], 'version')
            if not current then return redis.error_reply('NOTFOUND campaign') end
            if current ~= ARGV[1] then return redis.error_reply('VERSION ' .. current) end
            redis.call('HSET', KEYS[1], 'version', ARGV[2], 'record', ARGV[3])
            for i = 6, #ARGV, 2 do
                redis.call('XADD', KEYS[2], ARGV[i] .. '-0', 'e', ARGV[i + 1])
            end
            if ARGV[4] ~= '' then
                redis.call('XADD', KEYS[4], ARGV[2] .. '-0', 's', ARGV[4])
            end
            if turn then redis.call('DEL', KEYS[3]) end
            return 'OK'
            ",
        )
    })
}

fn create_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        Script::new(
            r"
            if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('EXISTS campaign') end
            redis.call('DEL', KEYS[2], KEYS[3])
            redis.call('HSET', KEYS[1], 'version', ARGV[1], 'record', ARGV[2])
            redis.call('XADD', KEYS[2], ARGV[1] .. '-0', 'e', ARGV[3])
            return 'OK'
            ",
        )
    })
}

pub(super) fn corrupt(err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

pub(super) fn refused(err: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("Redis refused: {err}"))
}

/// Stream entries as `(id, [(field, value)])`.
type StreamEntries = Vec<(String, Vec<(String, String)>)>;

fn parse_events(entries: StreamEntries) -> Result<Vec<CampaignEvent>, StoreError> {
    entries
        .into_iter()
        .map(|(_, fields)| {
            let json = fields
                .into_iter()
                .find(|(field, _)| field == "e")
                .map(|(_, value)| value)
                .ok_or_else(|| corrupt("stream entry without an event"))?;
            serde_json::from_str(&json).map_err(corrupt)
        })
        .collect()
}

#[derive(Clone)]
pub struct RedisStore {
    pub(super) link: RedisLink,
}

impl RedisStore {
    pub fn new(link: RedisLink) -> Self {
        RedisStore { link }
    }
}

impl Store for RedisStore {
    fn load(&self, id: &CampaignId, history_len: usize) -> StoreFuture<'_, Option<Loaded>> {
        let (campaign, events) = (keys::campaign(id), keys::events(id));
        Box::pin(async move {
            let answer: redis::RedisResult<(Option<String>, StreamEntries)> = self
                .link
                .run(|mut conn| async move {
                    redis::pipe()
                        .atomic()
                        .hget(&campaign, "record")
                        .cmd("XREVRANGE")
                        .arg(&events)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(history_len.max(1))
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            let (record, mut entries) = answer.map_err(refused)?;
            let Some(record) = record else {
                return Ok(None);
            };
            let record: CampaignRecord = serde_json::from_str(&record).map_err(corrupt)?;
            entries.reverse();
            Ok(Some(Loaded {
                record,
                history: parse_events(entries)?,
            }))
        })
    }

    fn create(&self, record: CampaignRecord, event: CampaignEvent) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let id = record.state.id.clone();
            let record_json = serde_json::to_string(&record).map_err(corrupt)?;
            let event_json = serde_json::to_string(&event).map_err(corrupt)?;
            let (campaign, events) = (keys::campaign(&id), keys::events(&id));
            let snapshots = keys::snapshots(&id);
            let answer: redis::RedisResult<String> = self
                .link
                .run(|mut conn| async move {
                    create_script()
                        .key(&campaign)
                        .key(&events)
                        .key(&snapshots)
                        .arg(event.version)
                        .arg(&record_json)
                        .arg(&event_json)
                        .invoke_async(&mut conn)
                        .await
                })
                .await?;
            match answer {
                Ok(_) => {}
                Err(err) if err.code() == Some("EXISTS") => return Err(StoreError::AlreadyExists),
                Err(err) => return Err(refused(err)),
            }
            // The listing set lives in another slot, so it cannot join the script on a cluster.
            // Adding is idempotent; a crash in between leaves a campaign that works but is not
            // listed until it is next created or repaired by `SADD`.
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
        })
    }

    fn commit(&self, commit: Commit) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let record_json = serde_json::to_string(&commit.record).map_err(corrupt)?;
            let mut events = Vec::with_capacity(commit.events.len());
            for event in &commit.events {
                events.push((
                    event.version,
                    serde_json::to_string(event).map_err(corrupt)?,
                ));
            }
            let (campaign, stream, turn) = (
                keys::campaign(&commit.campaign_id),
                keys::events(&commit.campaign_id),
                keys::turn(&commit.campaign_id),
            );
            let snapshots = keys::snapshots(&commit.campaign_id);
            let snapshot = match commit.takes_snapshot() {
                true => serde_json::to_string(&commit.record.state).map_err(corrupt)?,
                false => String::new(),
            };
            let instance = format!("{:08x}", commit.instance);
            let expected = commit.expected_version;
            let version = commit.record.state.version;
            let answer: redis::RedisResult<String> = self
                .link
                .run(|mut conn| async move {
                    let mut invocation = commit_script().prepare_invoke();
                    invocation
                        .key(&campaign)
                        .key(&stream)
                        .key(&turn)
                        .key(&snapshots)
                        .arg(expected);
                    invocation
                        .arg(version)
                        .arg(&record_json)
                        .arg(&snapshot)
                        .arg(&instance);
                    for (version, json) in &events {
                        invocation.arg(*version).arg(json);
                    }
                    invocation.invoke_async(&mut conn).await
                })
                .await?;
            match answer {
                Ok(_) => Ok(()),
                Err(err) if err.code() == Some("NOTFOUND") => Err(StoreError::NotFound),
                Err(err) if err.code() == Some("TURN") => Err(StoreError::NotYourTurn),
                Err(err) if err.code() == Some("VERSION") => {
                    let stored = err
                        .detail()
                        .and_then(|d| d.trim().parse().ok())
                        .unwrap_or(0);
                    Err(StoreError::VersionMismatch { expected, stored })
                }
                Err(err) => Err(refused(err)),
            }
        })
    }

    fn claim_turn(&self, id: &CampaignId, instance: u32) -> StoreFuture<'_, ()> {
        let key = keys::turn(id);
        let instance = format!("{instance:08x}");
        Box::pin(async move {
            self.link
                .run(|mut conn| async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&instance)
                        .arg("NX")
                        .arg("PX")
                        .arg(TURN_MS)
                        .query_async::<Option<String>>(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)?;
            Ok(())
        })
    }

    fn events_since(
        &self,
        id: &CampaignId,
        after_version: u64,
        max: usize,
    ) -> StoreFuture<'_, Option<Vec<CampaignEvent>>> {
        let stream = keys::events(id);
        Box::pin(async move {
            let from = format!("{}-0", after_version + 1);
            let answer: redis::RedisResult<StreamEntries> = self
                .link
                .run(|mut conn| async move {
                    redis::cmd("XRANGE")
                        .arg(&stream)
                        .arg(&from)
                        .arg("+")
                        .arg("COUNT")
                        .arg(max.max(1))
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            let events = parse_events(answer.map_err(refused)?)?;
            if events
                .first()
                .is_some_and(|e| e.version != after_version + 1)
            {
                return Ok(None);
            }
            Ok(Some(events))
        })
    }

    fn snapshot_at_or_before(
        &self,
        id: &CampaignId,
        version: u64,
    ) -> StoreFuture<'_, Option<CampaignState>> {
        let snapshots = keys::snapshots(id);
        Box::pin(async move {
            let answer: redis::RedisResult<StreamEntries> = self
                .link
                .run(|mut conn| async move {
                    redis::cmd("XREVRANGE")
                        .arg(&snapshots)
                        .arg(format!("{version}-0"))
                        .arg("-")
                        .arg("COUNT")
                        .arg(1)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            let entry = answer.map_err(refused)?.into_iter().next();
            let Some((_, fields)) = entry else {
                return Ok(None);
            };
            let json = fields
                .into_iter()
                .find(|(field, _)| field == "s")
                .map(|(_, value)| value)
                .ok_or_else(|| corrupt("snapshot entry without a state"))?;
            serde_json::from_str(&json).map(Some).map_err(corrupt)
        })
    }

    fn events_before(
        &self,
        id: &CampaignId,
        before: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<CampaignEvent>> {
        let stream = keys::events(id);
        Box::pin(async move {
            if before <= 1 || limit == 0 {
                return Ok(Vec::new());
            }
            let answer: redis::RedisResult<StreamEntries> = self
                .link
                .run(|mut conn| async move {
                    redis::cmd("XREVRANGE")
                        .arg(&stream)
                        .arg(format!("{}-0", before - 1))
                        .arg("-")
                        .arg("COUNT")
                        .arg(limit)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            parse_events(answer.map_err(refused)?)
        })
    }

    fn oldest_event(&self, id: &CampaignId) -> StoreFuture<'_, Option<u64>> {
        let stream = keys::events(id);
        Box::pin(async move {
            let answer: redis::RedisResult<StreamEntries> = self
                .link
                .run(|mut conn| async move {
                    redis::cmd("XRANGE")
                        .arg(&stream)
                        .arg("-")
                        .arg("+")
                        .arg("COUNT")
                        .arg(1)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            let first = answer.map_err(refused)?.into_iter().next();
            first
                .map(|(entry, _)| {
                    let version = entry.split('-').next().unwrap_or_default();
                    version.parse().map_err(corrupt)
                })
                .transpose()
        })
    }

    fn forget_before(&self, id: &CampaignId, version: u64) -> StoreFuture<'_, ()> {
        let (events, snapshots) = (keys::events(id), keys::snapshots(id));
        Box::pin(async move {
            let answer: redis::RedisResult<()> = self
                .link
                .run(|mut conn| async move {
                    redis::pipe()
                        .atomic()
                        .cmd("XTRIM")
                        .arg(&events)
                        .arg("MINID")
                        .arg(format!("{}-0", version + 1))
                        .ignore()
                        .cmd("XTRIM")
                        .arg(&snapshots)
                        .arg("MINID")
                        .arg(format!("{version}-0"))
                        .ignore()
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            answer.map_err(refused)
        })
    }

    fn version(&self, id: &CampaignId) -> StoreFuture<'_, Option<u64>> {
        let campaign = keys::campaign(id);
        Box::pin(async move {
            let answer: redis::RedisResult<Option<u64>> = self
                .link
                .run(|mut conn| async move {
                    redis::cmd("HGET")
                        .arg(&campaign)
                        .arg("version")
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            answer.map_err(refused)
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<CampaignRecord>> {
        Box::pin(async move {
            let ids: Vec<String> = self
                .link
                .run(|mut conn| async move {
                    redis::cmd("SMEMBERS")
                        .arg(keys::CAMPAIGNS)
                        .query_async(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)?;
            let mut ids: Vec<CampaignId> = ids
                .iter()
                .filter_map(|id| CampaignId::parse(id).ok())
                .collect();
            ids.sort();
            let keys: Vec<String> = ids.iter().map(keys::campaign).collect();
            let records: Vec<Option<String>> = if keys.is_empty() {
                Vec::new()
            } else {
                self.link
                    .run(|mut conn| async move {
                        let mut pipe = redis::pipe();
                        for key in &keys {
                            pipe.hget(key, "record");
                        }
                        pipe.query_async(&mut conn).await
                    })
                    .await?
                    .map_err(refused)?
            };
            let mut list = Vec::with_capacity(records.len());
            for record in records.into_iter().flatten() {
                let record: CampaignRecord = serde_json::from_str(&record).map_err(corrupt)?;
                list.push(record);
            }
            Ok(list)
        })
    }

    fn secret(&self, name: &str, generate: fn() -> Vec<u8>) -> StoreFuture<'_, Vec<u8>> {
        let key = keys::secret(name);
        Box::pin(async move {
            let fresh = crate::auth::hex(&generate());
            // Read as bytes: a secret this store made is hex text, one moved here from the
            // embedded store (`rally migrate`) is its raw bytes.
            let stored: Vec<u8> = self
                .link
                .run(|mut conn| async move {
                    let _: Option<String> = redis::cmd("SET")
                        .arg(&key)
                        .arg(&fresh)
                        .arg("NX")
                        .query_async(&mut conn)
                        .await?;
                    redis::cmd("GET").arg(&key).query_async(&mut conn).await
                })
                .await?
                .map_err(refused)?;
            Ok(stored)
        })
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let _: String = self
                .link
                .run(|mut conn| async move { redis::cmd("PING").query_async(&mut conn).await })
                .await?
                .map_err(refused)?;
            Ok(())
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        // Every acknowledged write is already in Redis; nothing is buffered here.
        Box::pin(async { Ok(()) })
    }
}

fn decode_session(json: &str) -> Result<SessionRecord, StoreError> {
    serde_json::from_str(json).map_err(corrupt)
}

/// A session's key expires when the session ends; the user's set of sessions lives as long as
/// the longest of them (`NX` sets the first expiry, `GT` only ever extends it).
impl SessionStore for RedisStore {
    fn insert_session(&self, record: SessionRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let json = serde_json::to_string(&record).map_err(corrupt)?;
            let (key, set) = (
                keys::session(&record.id),
                keys::user_sessions(&record.user_id),
            );
            let ends_ms = record.ends_at().unix_millis();
            // The set outlives every session in it: its expiry is the latest lifetime end (which
            // never moves), not the idle end (which use moves forward).
            let lifetime_ms = record.expires_at.unix_millis();
            let id = record.id.clone();
            self.link
                .run(|mut conn| async move {
                    redis::pipe()
                        .cmd("SET")
                        .arg(&key)
                        .arg(&json)
                        .arg("PXAT")
                        .arg(ends_ms)
                        .ignore()
                        .cmd("SADD")
                        .arg(&set)
                        .arg(&id)
                        .ignore()
                        .cmd("PEXPIREAT")
                        .arg(&set)
                        .arg(lifetime_ms)
                        .arg("NX")
                        .ignore()
                        .cmd("PEXPIREAT")
                        .arg(&set)
                        .arg(lifetime_ms)
                        .arg("GT")
                        .ignore()
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)
        })
    }

    fn update_session(&self, record: SessionRecord) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let json = serde_json::to_string(&record).map_err(corrupt)?;
            let key = keys::session(&record.id);
            let ends_ms = record.ends_at().unix_millis();
            // XX: only while the session exists, so an update never revives a deleted one.
            let answer: Option<String> = self
                .link
                .run(|mut conn| async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&json)
                        .arg("XX")
                        .arg("PXAT")
                        .arg(ends_ms)
                        .query_async(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)?;
            Ok(answer.is_some())
        })
    }

    fn session(&self, id: &str) -> StoreFuture<'_, Option<SessionRecord>> {
        let key = keys::session(id);
        Box::pin(async move {
            let json: Option<String> =
                self.link
                    .run(|mut conn| async move {
                        redis::cmd("GET").arg(&key).query_async(&mut conn).await
                    })
                    .await?
                    .map_err(refused)?;
            json.as_deref().map(decode_session).transpose()
        })
    }

    fn delete_session(&self, id: &str) -> StoreFuture<'_, Option<SessionRecord>> {
        let key = keys::session(id);
        Box::pin(async move {
            let json: Option<String> = self
                .link
                .run(|mut conn| async move {
                    redis::cmd("GETDEL").arg(&key).query_async(&mut conn).await
                })
                .await?
                .map_err(refused)?;
            let Some(record) = json.as_deref().map(decode_session).transpose()? else {
                return Ok(None);
            };
            // The session is gone: the index is tidied best effort (a listing prunes what this
            // misses), so the caller still learns what ended and tells everyone.
            let set = keys::user_sessions(&record.user_id);
            let id = record.id.clone();
            let _ = self
                .link
                .run(|mut conn| async move {
                    redis::cmd("SREM")
                        .arg(&set)
                        .arg(&id)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await;
            Ok(Some(record))
        })
    }

    fn user_sessions(&self, user: &UserId) -> StoreFuture<'_, Vec<SessionRecord>> {
        let set = keys::user_sessions(user);
        Box::pin(async move {
            let ids: Vec<String> = self
                .link
                .run(|mut conn| {
                    let set = set.clone();
                    async move {
                        redis::cmd("SMEMBERS")
                            .arg(&set)
                            .query_async(&mut conn)
                            .await
                    }
                })
                .await?
                .map_err(refused)?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let session_keys: Vec<String> = ids.iter().map(|id| keys::session(id)).collect();
            let found: Vec<Option<String>> = self
                .link
                .run(|mut conn| async move {
                    redis::cmd("MGET")
                        .arg(&session_keys)
                        .query_async(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)?;
            let mut records = Vec::new();
            let mut gone = Vec::new();
            for (id, json) in ids.into_iter().zip(found) {
                match json {
                    Some(json) => records.push(decode_session(&json)?),
                    None => gone.push(id),
                }
            }
            if !gone.is_empty() {
                // Sessions Redis expired: prune them from the set (best effort).
                let _ = self
                    .link
                    .run(|mut conn| async move {
                        redis::cmd("SREM")
                            .arg(&set)
                            .arg(&gone)
                            .query_async::<()>(&mut conn)
                            .await
                    })
                    .await;
            }
            Ok(records)
        })
    }

    fn sweep_sessions(&self, _now: Timestamp) -> StoreFuture<'_, usize> {
        // Redis expires each session's key at its end.
        Box::pin(async { Ok(0) })
    }
}
