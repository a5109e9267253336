//! The embedded store's records beside campaigns: sessions, API keys and webhook endpoints. Each
//! change goes through the same group-committing writer thread as campaign commits.

use rally_app::model::{Timestamp, UserId};
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::tables::{API_KEYS, SESSIONS, USER_SESSIONS, WEBHOOKS};
use super::{corrupt, unavailable, EmbeddedStore, OpResult, WriteOp};
use crate::store::api_keys::{ApiKeyRecord, ApiKeyStore};
use crate::store::sessions::{SessionRecord, SessionStore};
use crate::store::webhooks::{WebhookRecord, WebhookStore};
use crate::store::{StoreError, StoreFuture};

pub(super) enum WebhookChange {
    Insert(WebhookRecord),
    Replace(WebhookRecord),
    Delete(String),
}

pub(super) enum ApiKeyChange {
    Insert(ApiKeyRecord),
    Touch(String, Timestamp),
    Delete(String),
}

pub(super) enum SessionChange {
    Insert(SessionRecord),
    Update(SessionRecord),
    Delete(String),
    Sweep(Timestamp),
}

fn decode_webhook(bytes: &[u8]) -> Result<WebhookRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(corrupt)
}

pub(super) fn apply_webhook_change(
    txn: &WriteTransaction,
    change: &WebhookChange,
) -> Result<OpResult, StoreError> {
    let mut hooks = txn.open_table(WEBHOOKS).map_err(unavailable)?;
    let stored = |hooks: &redb::Table<&'static str, &'static [u8]>, id: &str| {
        hooks
            .get(id)
            .map_err(unavailable)?
            .map(|bytes| decode_webhook(bytes.value()))
            .transpose()
    };
    match change {
        WebhookChange::Insert(record) | WebhookChange::Replace(record) => {
            if let WebhookChange::Replace(_) = change {
                let current = stored(&hooks, &record.id)?;
                if current.is_none_or(|c| c.revision + 1 != record.revision) {
                    return Ok(OpResult::Updated(false));
                }
            }
            let json = serde_json::to_vec(record).map_err(corrupt)?;
            hooks
                .insert(record.id.as_str(), json.as_slice())
                .map_err(unavailable)?;
            Ok(OpResult::Updated(true))
        }
        WebhookChange::Delete(id) => {
            let record = stored(&hooks, id)?;
            if record.is_some() {
                hooks.remove(id.as_str()).map_err(unavailable)?;
            }
            Ok(OpResult::WebhookDeleted(record))
        }
    }
}

fn decode_api_key(bytes: &[u8]) -> Result<ApiKeyRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(corrupt)
}

pub(super) fn apply_api_key_change(
    txn: &WriteTransaction,
    change: &ApiKeyChange,
) -> Result<OpResult, StoreError> {
    let mut keys = txn.open_table(API_KEYS).map_err(unavailable)?;
    let found = |keys: &redb::Table<&'static str, &'static [u8]>, id: &str| {
        keys.get(id)
            .map_err(unavailable)?
            .map(|bytes| decode_api_key(bytes.value()))
            .transpose()
    };
    match change {
        ApiKeyChange::Insert(record) => {
            let json = serde_json::to_vec(record).map_err(corrupt)?;
            keys.insert(record.id.as_str(), json.as_slice())
                .map_err(unavailable)?;
            Ok(OpResult::Done)
        }
        ApiKeyChange::Touch(id, at) => {
            let Some(mut record) = found(&keys, id)? else {
                return Ok(OpResult::Updated(false));
            };
            record.last_used_at = Some(*at);
            let json = serde_json::to_vec(&record).map_err(corrupt)?;
            keys.insert(id.as_str(), json.as_slice())
                .map_err(unavailable)?;
            Ok(OpResult::Updated(true))
        }
        ApiKeyChange::Delete(id) => {
            let record = found(&keys, id)?;
            if record.is_some() {
                keys.remove(id.as_str()).map_err(unavailable)?;
            }
            Ok(OpResult::KeyDeleted(record))
        }
    }
}

fn decode_session(bytes: &[u8]) -> Result<SessionRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(corrupt)
}

pub(super) fn apply_session_change(
    txn: &WriteTransaction,
    change: &SessionChange,
) -> Result<OpResult, StoreError> {
    let mut sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
    let mut by_user = txn.open_table(USER_SESSIONS).map_err(unavailable)?;
    match change {
        SessionChange::Insert(record) | SessionChange::Update(record) => {
            let exists = sessions
                .get(record.id.as_str())
                .map_err(unavailable)?
                .is_some();
            if matches!(change, SessionChange::Update(_)) && !exists {
                return Ok(OpResult::Updated(false));
            }
            let json = serde_json::to_vec(record).map_err(corrupt)?;
            sessions
                .insert(record.id.as_str(), json.as_slice())
                .map_err(unavailable)?;
            by_user
                .insert((record.user_id.as_str(), record.id.as_str()), ())
                .map_err(unavailable)?;
            Ok(OpResult::Updated(true))
        }
        SessionChange::Delete(id) => {
            // Decode before removing: a corrupt record is reported, not half deleted.
            let record = match sessions.get(id.as_str()).map_err(unavailable)? {
                Some(bytes) => decode_session(bytes.value())?,
                None => return Ok(OpResult::Deleted(None)),
            };
            sessions.remove(id.as_str()).map_err(unavailable)?;
            by_user
                .remove((record.user_id.as_str(), record.id.as_str()))
                .map_err(unavailable)?;
            Ok(OpResult::Deleted(Some(record)))
        }
        SessionChange::Sweep(now) => {
            let mut ended = Vec::new();
            for row in sessions.iter().map_err(unavailable)? {
                let (id, bytes) = row.map_err(unavailable)?;
                match decode_session(bytes.value()) {
                    Ok(record) if record.ends_at() <= *now => ended.push(record),
                    Ok(_) => {}
                    // One bad record must not stop every later sweep: skip it, say so.
                    Err(error) => {
                        tracing::warn!(session = id.value(), %error, "unreadable session record")
                    }
                }
            }
            for record in &ended {
                sessions.remove(record.id.as_str()).map_err(unavailable)?;
                by_user
                    .remove((record.user_id.as_str(), record.id.as_str()))
                    .map_err(unavailable)?;
            }
            Ok(OpResult::Swept(ended.len()))
        }
    }
}

impl EmbeddedStore {
    fn change_session(&self, change: SessionChange) -> StoreFuture<'static, OpResult> {
        self.submit(|reply| WriteOp::Session { change, reply })
    }
}

impl SessionStore for EmbeddedStore {
    fn insert_session(&self, record: SessionRecord) -> StoreFuture<'_, ()> {
        let done = self.change_session(SessionChange::Insert(record));
        Box::pin(async move { done.await.map(|_| ()) })
    }

    fn update_session(&self, record: SessionRecord) -> StoreFuture<'_, bool> {
        let done = self.change_session(SessionChange::Update(record));
        Box::pin(async move { Ok(matches!(done.await?, OpResult::Updated(true))) })
    }

    fn session(&self, id: &str) -> StoreFuture<'_, Option<SessionRecord>> {
        let id = id.to_owned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
            let bytes = sessions.get(id.as_str()).map_err(unavailable)?;
            bytes.map(|b| decode_session(b.value())).transpose()
        })
    }

    fn delete_session(&self, id: &str) -> StoreFuture<'_, Option<SessionRecord>> {
        let done = self.change_session(SessionChange::Delete(id.to_owned()));
        Box::pin(async move {
            match done.await? {
                OpResult::Deleted(record) => Ok(record),
                _ => Ok(None),
            }
        })
    }

    fn user_sessions(&self, user: &UserId) -> StoreFuture<'_, Vec<SessionRecord>> {
        let user = user.as_str().to_owned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let by_user = txn.open_table(USER_SESSIONS).map_err(unavailable)?;
            let sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
            let mut records = Vec::new();
            let range = (user.as_str(), "")..=(user.as_str(), "\u{10ffff}");
            for row in by_user.range(range).map_err(unavailable)? {
                let (key, _) = row.map_err(unavailable)?;
                let (_, id) = key.value();
                if let Some(bytes) = sessions.get(id).map_err(unavailable)? {
                    records.push(decode_session(bytes.value())?);
                }
            }
            Ok(records)
        })
    }

    fn sweep_sessions(&self, now: Timestamp) -> StoreFuture<'_, usize> {
        let done = self.change_session(SessionChange::Sweep(now));
        Box::pin(async move {
            match done.await? {
                OpResult::Swept(count) => Ok(count),
                _ => Ok(0),
            }
        })
    }
}

impl EmbeddedStore {
    /// Every session (for `rally migrate`).
    pub async fn all_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let sessions = txn.open_table(SESSIONS).map_err(unavailable)?;
            let mut all = Vec::new();
            for row in sessions.iter().map_err(unavailable)? {
                let (_, bytes) = row.map_err(unavailable)?;
                all.push(decode_session(bytes.value())?);
            }
            Ok(all)
        })
        .await
    }

    fn change_api_key(&self, change: ApiKeyChange) -> StoreFuture<'static, OpResult> {
        self.submit(|reply| WriteOp::ApiKey { change, reply })
    }
}

impl ApiKeyStore for EmbeddedStore {
    fn insert_api_key(&self, record: ApiKeyRecord) -> StoreFuture<'_, ()> {
        let done = self.change_api_key(ApiKeyChange::Insert(record));
        Box::pin(async move { done.await.map(|_| ()) })
    }

    fn api_key(&self, id: &str) -> StoreFuture<'_, Option<ApiKeyRecord>> {
        let id = id.to_owned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let keys = txn.open_table(API_KEYS).map_err(unavailable)?;
            let bytes = keys.get(id.as_str()).map_err(unavailable)?;
            bytes.map(|b| decode_api_key(b.value())).transpose()
        })
    }

    fn api_keys(&self) -> StoreFuture<'_, Vec<ApiKeyRecord>> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let keys = txn.open_table(API_KEYS).map_err(unavailable)?;
            let mut records = Vec::new();
            for row in keys.iter().map_err(unavailable)? {
                let (_, bytes) = row.map_err(unavailable)?;
                records.push(decode_api_key(bytes.value())?);
            }
            Ok(records)
        })
    }

    fn touch_api_key(&self, id: &str, at: Timestamp) -> StoreFuture<'_, bool> {
        let done = self.change_api_key(ApiKeyChange::Touch(id.to_owned(), at));
        Box::pin(async move { Ok(matches!(done.await?, OpResult::Updated(true))) })
    }

    fn delete_api_key(&self, id: &str) -> StoreFuture<'_, Option<ApiKeyRecord>> {
        let done = self.change_api_key(ApiKeyChange::Delete(id.to_owned()));
        Box::pin(async move {
            match done.await? {
                OpResult::KeyDeleted(record) => Ok(record),
                _ => Ok(None),
            }
        })
    }
}

impl EmbeddedStore {
    fn change_webhook(&self, change: WebhookChange) -> StoreFuture<'static, OpResult> {
        self.submit(|reply| WriteOp::Webhook { change, reply })
    }
}

impl WebhookStore for EmbeddedStore {
    fn insert_webhook(&self, record: WebhookRecord) -> StoreFuture<'_, ()> {
        let done = self.change_webhook(WebhookChange::Insert(record));
        Box::pin(async move { done.await.map(|_| ()) })
    }

    fn webhook(&self, id: &str) -> StoreFuture<'_, Option<WebhookRecord>> {
        let id = id.to_owned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let hooks = txn.open_table(WEBHOOKS).map_err(unavailable)?;
            let bytes = hooks.get(id.as_str()).map_err(unavailable)?;
            bytes.map(|b| decode_webhook(b.value())).transpose()
        })
    }

    fn webhooks(&self) -> StoreFuture<'_, Vec<WebhookRecord>> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let hooks = txn.open_table(WEBHOOKS).map_err(unavailable)?;
            let mut records = Vec::new();
            for row in hooks.iter().map_err(unavailable)? {
                let (_, bytes) = row.map_err(unavailable)?;
                records.push(decode_webhook(bytes.value())?);
            }
            Ok(records)
        })
    }

    fn replace_webhook(&self, record: WebhookRecord) -> StoreFuture<'_, bool> {
        let done = self.change_webhook(WebhookChange::Replace(record));
        Box::pin(async move { Ok(matches!(done.await?, OpResult::Updated(true))) })
    }

    fn delete_webhook(&self, id: &str) -> StoreFuture<'_, Option<WebhookRecord>> {
        let done = self.change_webhook(WebhookChange::Delete(id.to_owned()));
        Box::pin(async move {
            match done.await? {
                OpResult::WebhookDeleted(record) => Ok(record),
                _ => Ok(None),
            }
        })
    }

    fn claim_webhook(&self, _id: &str, _holder: &str, _for_ms: u64) -> StoreFuture<'_, bool> {
        // One process holds the file: there is nobody to share the delivering with.
        Box::pin(async { Ok(true) })
    }
}
