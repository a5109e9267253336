//! The Redis store's records for other systems: API keys and webhook endpoints. Each kind lives
//! in hashes that share one hash tag (one slot on Redis Cluster), so a script may touch all of
//! them at once.

use std::sync::OnceLock;

use rally_app::model::Timestamp;
use redis::Script;

use super::api_keys::{ApiKeyRecord, ApiKeyStore};
use super::redis::{corrupt, refused, RedisStore};
use super::webhooks::{WebhookRecord, WebhookStore};
use super::{StoreError, StoreFuture};
use crate::redis::keys;

/// Record a key's use only while the key exists, so a use never brings a revoked key back.
fn touch_key_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        Script::new(
            r"
            if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
            redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
            return 1
            ",
        )
    })
}

/// Delete a key and its last use at once; its record if it existed.
fn delete_key_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        Script::new(
            r"
            local record = redis.call('HGET', KEYS[1], ARGV[1])
            if not record then return false end
            local used = redis.call('HGET', KEYS[2], ARGV[1])
            redis.call('HDEL', KEYS[1], ARGV[1])
            redis.call('HDEL', KEYS[2], ARGV[1])
            return {record, used or ''}
            ",
        )
    })
}

/// A key's record in one hash, its last use (unix nanoseconds) in another: a use is recorded
/// without rewriting the record, and deleting removes both at once.
fn decode_api_key(json: &str, used: Option<&str>) -> Result<ApiKeyRecord, StoreError> {
    let mut record: ApiKeyRecord = serde_json::from_str(json).map_err(corrupt)?;
    if let Some(nanos) = used.filter(|text| !text.is_empty()) {
        let nanos = nanos.parse::<u64>().map_err(corrupt)?;
        record.last_used_at = Some(Timestamp::from_unix_nanos(nanos));
    }
    Ok(record)
}

impl ApiKeyStore for RedisStore {
    fn insert_api_key(&self, record: ApiKeyRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let json = serde_json::to_string(&record).map_err(corrupt)?;
            let id = record.id.clone();
            self.link
                .run(|mut conn| async move {
                    redis::cmd("HSET")
                        .arg(keys::API_KEYS)
                        .arg(&id)
                        .arg(&json)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)
        })
    }

    fn api_key(&self, id: &str) -> StoreFuture<'_, Option<ApiKeyRecord>> {
        let id = id.to_owned();
        Box::pin(async move {
            let (json, used): (Option<String>, Option<String>) = self
                .link
                .run(|mut conn| async move {
                    redis::pipe()
                        .cmd("HGET")
                        .arg(keys::API_KEYS)
                        .arg(&id)
                        .cmd("HGET")
                        .arg(keys::API_KEY_USES)
                        .arg(&id)
                        .query_async(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)?;
            json.map(|json| decode_api_key(&json, used.as_deref()))
                .transpose()
        })
    }

    fn api_keys(&self) -> StoreFuture<'_, Vec<ApiKeyRecord>> {
        Box::pin(async move {
            let (records, uses): (
                std::collections::HashMap<String, String>,
                std::collections::HashMap<String, String>,
            ) = self
                .link
                .run(|mut conn| async move {
                    redis::pipe()
                        .cmd("HGETALL")
                        .arg(keys::API_KEYS)
                        .cmd("HGETALL")
                        .arg(keys::API_KEY_USES)
                        .query_async(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)?;
            records
                .iter()
                .map(|(id, json)| decode_api_key(json, uses.get(id).map(String::as_str)))
                .collect()
        })
    }

    fn touch_api_key(&self, id: &str, at: Timestamp) -> StoreFuture<'_, bool> {
        let id = id.to_owned();
        Box::pin(async move {
            let touched: i64 = self
                .link
                .run(|mut conn| async move {
                    touch_key_script()
                        .key(keys::API_KEYS)
                        .key(keys::API_KEY_USES)
                        .arg(&id)
                        .arg(at.unix_nanos())
                        .invoke_async(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)?;
            Ok(touched == 1)
        })
    }

    fn delete_api_key(&self, id: &str) -> StoreFuture<'_, Option<ApiKeyRecord>> {
        let id = id.to_owned();
        Box::pin(async move {
            let deleted: Option<(String, String)> = self
                .link
                .run(|mut conn| async move {
                    delete_key_script()
                        .key(keys::API_KEYS)
                        .key(keys::API_KEY_USES)
                        .arg(&id)
                        .invoke_async(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)?;
            deleted
                .map(|(json, used)| decode_api_key(&json, Some(used.as_str())))
                .transpose()
        })
    }
}

/// Replace an endpoint's record only at the expected revision (kept beside the records, so the
/// check needs no JSON parsing).
fn replace_webhook_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        Script::new(
            r"
            if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
            redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
            redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
            return 1
            ",
        )
    })
}

/// Delete an endpoint, its revision and its lease at once; its record if it existed.
fn delete_webhook_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        Script::new(
            r"
            local record = redis.call('HGET', KEYS[1], ARGV[1])
            if not record then return false end
            redis.call('HDEL', KEYS[1], ARGV[1])
            redis.call('HDEL', KEYS[2], ARGV[1])
            redis.call('DEL', KEYS[3])
            return record
            ",
        )
    })
}

/// Take or extend an endpoint's delivery lease.
fn claim_webhook_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        Script::new(
            r"
            local holder = redis.call('GET', KEYS[1])
            if holder == ARGV[1] then
                redis.call('PEXPIRE', KEYS[1], ARGV[2])
                return 1
            end
            if holder then return 0 end
            redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
            return 1
            ",
        )
    })
}

fn decode_webhook(json: &str) -> Result<WebhookRecord, StoreError> {
    serde_json::from_str(json).map_err(corrupt)
}

impl WebhookStore for RedisStore {
    fn insert_webhook(&self, record: WebhookRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let json = serde_json::to_string(&record).map_err(corrupt)?;
            let (id, revision) = (record.id.clone(), record.revision);
            self.link
                .run(|mut conn| async move {
                    redis::pipe()
                        .atomic()
                        .cmd("HSET")
                        .arg(keys::WEBHOOKS)
                        .arg(&id)
                        .arg(&json)
                        .ignore()
                        .cmd("HSET")
                        .arg(keys::WEBHOOK_REVISIONS)
                        .arg(&id)
                        .arg(revision)
                        .ignore()
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)
        })
    }

    fn webhook(&self, id: &str) -> StoreFuture<'_, Option<WebhookRecord>> {
        let id = id.to_owned();
        Box::pin(async move {
            let json: Option<String> = self
                .link
                .run(|mut conn| async move {
                    redis::cmd("HGET")
                        .arg(keys::WEBHOOKS)
                        .arg(&id)
                        .query_async(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)?;
            json.as_deref().map(decode_webhook).transpose()
        })
    }

    fn webhooks(&self) -> StoreFuture<'_, Vec<WebhookRecord>> {
        Box::pin(async move {
            let all: Vec<String> = self
                .link
                .run(|mut conn| async move {
                    redis::cmd("HVALS")
                        .arg(keys::WEBHOOKS)
                        .query_async(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)?;
            all.iter().map(|json| decode_webhook(json)).collect()
        })
    }

    fn replace_webhook(&self, record: WebhookRecord) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let json = serde_json::to_string(&record).map_err(corrupt)?;
            let id = record.id.clone();
            let expected = record.revision.saturating_sub(1);
            let replaced: i64 = self
                .link
                .run(|mut conn| async move {
                    replace_webhook_script()
                        .key(keys::WEBHOOKS)
                        .key(keys::WEBHOOK_REVISIONS)
                        .arg(&id)
                        .arg(expected)
                        .arg(record.revision)
                        .arg(&json)
                        .invoke_async(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)?;
            Ok(replaced == 1)
        })
    }

    fn delete_webhook(&self, id: &str) -> StoreFuture<'_, Option<WebhookRecord>> {
        let id = id.to_owned();
        Box::pin(async move {
            let lease = keys::webhook_lease(&id);
            let json: Option<String> = self
                .link
                .run(|mut conn| async move {
                    delete_webhook_script()
                        .key(keys::WEBHOOKS)
                        .key(keys::WEBHOOK_REVISIONS)
                        .key(&lease)
                        .arg(&id)
                        .invoke_async(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)?;
            json.as_deref().map(decode_webhook).transpose()
        })
    }

    fn claim_webhook(&self, id: &str, holder: &str, for_ms: u64) -> StoreFuture<'_, bool> {
        let (lease, holder) = (keys::webhook_lease(id), holder.to_owned());
        Box::pin(async move {
            let held: i64 = self
                .link
                .run(|mut conn| async move {
                    claim_webhook_script()
                        .key(&lease)
                        .arg(&holder)
                        .arg(for_ms)
                        .invoke_async(&mut conn)
                        .await
                })
                .await?
                .map_err(refused)?;
            Ok(held == 1)
        })
    }
}
