//! The default store: one redb file under the data directory.
//!
//! Why redb: pure Rust (no C toolchain, nothing to install), ACID with fsync-on-commit durability,
//! copy-on-write B-trees that survive `kill -9` at any point, and concurrent readers beside one
//! writer — which is exactly the shape of Rally's load: many reads, writes funnelled per campaign.
//!
//! Writes go to one dedicated thread that *group-commits*: it takes every write queued at that
//! moment (from all campaigns), applies them in one transaction and fsyncs once. Under load many
//! acknowledgements share one fsync; when idle a write pays for exactly one.

use std::path::Path;
use std::sync::Arc;

mod backup;
mod integrations;
mod tables;

pub use backup::{check, restore, BackupCounts, BackupError};
pub use tables::FILE_NAME;
use tables::{API_KEYS, CAMPAIGNS, EVENTS, SECRETS, SESSIONS, SNAPSHOTS, USER_SESSIONS, WEBHOOKS};

use std::ops::RangeBounds;

use rally_app::model::{CampaignEvent, CampaignId, CampaignState};
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use super::api_keys::ApiKeyRecord;
use super::sessions::SessionRecord;
use super::webhooks::WebhookRecord;
use super::CampaignRecord;
use super::{Commit, Loaded, Store, StoreError, StoreFuture};
use integrations::{
    apply_api_key_change, apply_session_change, apply_webhook_change, ApiKeyChange, SessionChange,
    WebhookChange,
};

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 512;

/// redb's page cache. Its default (1 GiB) would let the process grow towards that as the logs
/// grow, though only the newest pages are hot: old versions are read rarely, and the operating
/// system's cache serves them (measured in BENCHMARKS.md, "Campaign history").
const CACHE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: Arc<Writer>,
}

/// The write queue and the thread draining it. Closing drops the queue's sender, so the thread
/// finishes what is queued and exits; joining it means every accepted write is on disk.
struct Writer {
    queue: std::sync::Mutex<Option<std::sync::mpsc::Sender<WriteOp>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

enum WriteOp {
    Create {
        record: CampaignRecord,
        event: CampaignEvent,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Commit {
        commit: Commit,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Forget {
        id: CampaignId,
        version: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Secret {
        name: String,
        value: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, StoreError>>,
    },
    Session {
        change: SessionChange,
        reply: oneshot::Sender<Result<OpResult, StoreError>>,
    },
    ApiKey {
        change: ApiKeyChange,
        reply: oneshot::Sender<Result<OpResult, StoreError>>,
    },
    Webhook {
        change: WebhookChange,
        reply: oneshot::Sender<Result<OpResult, StoreError>>,
    },
}

fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

fn corrupt(err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

impl EmbeddedStore {
    /// Open (or create) `<data_dir>/rally.redb` and start the writer thread.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(data_dir.join(FILE_NAME))
            .map_err(unavailable)?;
        // Create the tables up front so readers never see them missing.
        let txn = db.begin_write().map_err(unavailable)?;
        txn.open_table(CAMPAIGNS).map_err(unavailable)?;
        txn.open_table(EVENTS).map_err(unavailable)?;
        txn.open_table(SNAPSHOTS).map_err(unavailable)?;
        txn.open_table(SECRETS).map_err(unavailable)?;
        txn.open_table(SESSIONS).map_err(unavailable)?;
        txn.open_table(USER_SESSIONS).map_err(unavailable)?;
        txn.open_table(API_KEYS).map_err(unavailable)?;
        txn.open_table(WEBHOOKS).map_err(unavailable)?;
        txn.commit().map_err(unavailable)?;

        let db = Arc::new(db);
        let (sender, queue) = std::sync::mpsc::channel();
        let writer_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("rally-store-writer".into())
            .spawn(move || write_loop(&writer_db, &queue))
            .map_err(unavailable)?;
        let writer = Writer {
            queue: std::sync::Mutex::new(Some(sender)),
            thread: std::sync::Mutex::new(Some(thread)),
        };
        Ok(EmbeddedStore {
            db,
            writer: Arc::new(writer),
        })
    }

    /// Write a backup of the whole store, consistent at one moment, while it keeps serving
    /// (see [`backup`]). Blocking: call it from a blocking thread.
    pub fn write_backup(&self, out: &mut impl std::io::Write) -> Result<BackupCounts, BackupError> {
        backup::write_backup(&self.db, out)
    }

    /// Every named secret and its value (for `rally migrate`).
    pub async fn secrets(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let secrets = txn.open_table(SECRETS).map_err(unavailable)?;
            let mut all = Vec::new();
            for row in secrets.iter().map_err(unavailable)? {
                let (name, value) = row.map_err(unavailable)?;
                all.push((name.value().to_owned(), value.value().to_vec()));
            }
            Ok(all)
        })
        .await
    }

    fn submit<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> WriteOp,
    ) -> StoreFuture<'static, T> {
        let (reply, answer) = oneshot::channel();
        let sent = match &*self.writer.queue.lock().expect("store queue lock") {
            Some(queue) => queue.send(make(reply)).is_ok(),
            None => false,
        };
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Unavailable("store is closed".into()));
            }
            answer
                .await
                .map_err(|_| StoreError::Unavailable("store writer stopped".into()))?
        })
    }

    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'static, T> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&db))
                .await
                .map_err(unavailable)?
        })
    }
}

fn write_loop(db: &Database, queue: &std::sync::mpsc::Receiver<WriteOp>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let outcome = db.begin_write().map_err(unavailable).and_then(|txn| {
            let results: Vec<_> = batch.iter().map(|op| apply_op(&txn, op)).collect();
            // A storage error inside one op may leave the transaction half-written: fail all.
            if let Some(Err(err @ StoreError::Unavailable(_))) = results
                .iter()
                .find(|r| matches!(r, Err(StoreError::Unavailable(_))))
            {
                let err = err.clone();
                let _ = txn.abort();
                return Err(err);
            }
            txn.commit().map_err(unavailable)?;
            Ok(results)
        });
        match outcome {
            Ok(results) => {
                for (op, result) in batch.into_iter().zip(results) {
                    op.answer(result);
                }
            }
            Err(err) => {
                for op in batch {
                    op.answer(Err(err.clone()));
                }
            }
        }
    }
}

/// The value an op produced, for its reply.
enum OpResult {
    Done,
    Secret(Vec<u8>),
    Updated(bool),
    Deleted(Option<SessionRecord>),
    Swept(usize),
    KeyDeleted(Option<ApiKeyRecord>),
    WebhookDeleted(Option<WebhookRecord>),
}

impl WriteOp {
    fn answer(self, result: Result<OpResult, StoreError>) {
        match self {
            WriteOp::Create { reply, .. }
            | WriteOp::Commit { reply, .. }
            | WriteOp::Forget { reply, .. } => {
                let _ = reply.send(result.map(|_| ()));
            }
            WriteOp::Secret { reply, .. } => {
                let _ = reply.send(result.map(|r| match r {
                    OpResult::Secret(value) => value,
                    _ => Vec::new(),
                }));
            }
            WriteOp::Session { reply, .. }
            | WriteOp::ApiKey { reply, .. }
            | WriteOp::Webhook { reply, .. } => {
                let _ = reply.send(result);
            }
        }
    }
}

fn stored_version(bytes: &[u8]) -> Result<u64, StoreError> {
    #[derive(serde::Deserialize)]
    struct Head {
        state: StateHead,
    }
    #[derive(serde::Deserialize)]
    struct StateHead {
        version: u64,
    }
    serde_json::from_slice::<Head>(bytes)
        .map(|h| h.state.version)
        .map_err(corrupt)
}

fn apply_op(txn: &WriteTransaction, op: &WriteOp) -> Result<OpResult, StoreError> {
    match op {
        WriteOp::Create { record, event, .. } => {
            let id = record.state.id.as_str();
            let mut campaigns = txn.open_table(CAMPAIGNS).map_err(unavailable)?;
            if campaigns.get(id).map_err(unavailable)?.is_some() {
                return Err(StoreError::AlreadyExists);
            }
            let record_json = serde_json::to_vec(record).map_err(corrupt)?;
            let event_json = serde_json::to_vec(event).map_err(corrupt)?;
            campaigns
                .insert(id, record_json.as_slice())
                .map_err(unavailable)?;
            let mut events = txn.open_table(EVENTS).map_err(unavailable)?;
            let mut snapshots = txn.open_table(SNAPSHOTS).map_err(unavailable)?;
            // A campaign created again after deletion must not inherit old events.
            events
                .retain_in((id, 0u64)..=(id, u64::MAX), |_, _| false)
                .map_err(unavailable)?;
            snapshots
                .retain_in((id, 0u64)..=(id, u64::MAX), |_, _| false)
                .map_err(unavailable)?;
            events
                .insert((id, event.version), event_json.as_slice())
                .map_err(unavailable)?;
            Ok(OpResult::Done)
        }
        WriteOp::Commit { commit, .. } => {
            let id = commit.campaign_id.as_str();
            let mut campaigns = txn.open_table(CAMPAIGNS).map_err(unavailable)?;
            let stored = match campaigns.get(id).map_err(unavailable)? {
                Some(bytes) => stored_version(bytes.value())?,
                None => return Err(StoreError::NotFound),
            };
            if stored != commit.expected_version {
                return Err(StoreError::VersionMismatch {
                    expected: commit.expected_version,
                    stored,
                });
            }
            let record_json = serde_json::to_vec(&commit.record).map_err(corrupt)?;
            let mut event_rows = Vec::with_capacity(commit.events.len());
            for event in &commit.events {
                event_rows.push((event.version, serde_json::to_vec(event).map_err(corrupt)?));
            }
            campaigns
                .insert(id, record_json.as_slice())
                .map_err(unavailable)?;
            let mut events = txn.open_table(EVENTS).map_err(unavailable)?;
            for (version, json) in &event_rows {
                events
                    .insert((id, *version), json.as_slice())
                    .map_err(unavailable)?;
            }
            if commit.takes_snapshot() {
                let state = &commit.record.state;
                let json = serde_json::to_vec(state).map_err(corrupt)?;
                txn.open_table(SNAPSHOTS)
                    .map_err(unavailable)?
                    .insert((id, state.version), json.as_slice())
                    .map_err(unavailable)?;
            }
            Ok(OpResult::Done)
        }
        WriteOp::Forget { id, version, .. } => {
            let id = id.as_str();
            txn.open_table(EVENTS)
                .map_err(unavailable)?
                .retain_in((id, 0u64)..=(id, *version), |_, _| false)
                .map_err(unavailable)?;
            txn.open_table(SNAPSHOTS)
                .map_err(unavailable)?
                .retain_in((id, 0u64)..(id, *version), |_, _| false)
                .map_err(unavailable)?;
            Ok(OpResult::Done)
        }
        WriteOp::Secret { name, value, .. } => {
            let mut secrets = txn.open_table(SECRETS).map_err(unavailable)?;
            if let Some(existing) = secrets.get(name.as_str()).map_err(unavailable)? {
                return Ok(OpResult::Secret(existing.value().to_vec()));
            }
            secrets
                .insert(name.as_str(), value.as_slice())
                .map_err(unavailable)?;
            Ok(OpResult::Secret(value.clone()))
        }
        WriteOp::Session { change, .. } => apply_session_change(txn, change),
        WriteOp::ApiKey { change, .. } => apply_api_key_change(txn, change),
        WriteOp::Webhook { change, .. } => apply_webhook_change(txn, change),
    }
}

/// At most `limit` events of `range`, ascending (or `newest_first`).
fn read_events<'a>(
    db: &Database,
    range: impl RangeBounds<(&'a str, u64)>,
    limit: usize,
    newest_first: bool,
) -> Result<Vec<CampaignEvent>, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let events = txn.open_table(EVENTS).map_err(unavailable)?;
    let rows = events.range(range).map_err(unavailable)?;
    let rows: Box<dyn Iterator<Item = _>> = match newest_first {
        true => Box::new(rows.rev()),
        false => Box::new(rows),
    };
    let mut found = Vec::new();
    for row in rows.take(limit) {
        let (_, value) = row.map_err(unavailable)?;
        found.push(serde_json::from_slice::<CampaignEvent>(value.value()).map_err(corrupt)?);
    }
    Ok(found)
}

impl Store for EmbeddedStore {
    fn load(&self, id: &CampaignId, history_len: usize) -> StoreFuture<'_, Option<Loaded>> {
        let id = id.clone();
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let campaigns = txn.open_table(CAMPAIGNS).map_err(unavailable)?;
            let Some(bytes) = campaigns.get(id.as_str()).map_err(unavailable)? else {
                return Ok(None);
            };
            let record: CampaignRecord = serde_json::from_slice(bytes.value()).map_err(corrupt)?;
            let events = txn.open_table(EVENTS).map_err(unavailable)?;
            let mut history = Vec::new();
            let rows = events
                .range((id.as_str(), 0u64)..=(id.as_str(), u64::MAX))
                .map_err(unavailable)?;
            for row in rows.rev().take(history_len) {
                let (_, value) = row.map_err(unavailable)?;
                history.push(serde_json::from_slice(value.value()).map_err(corrupt)?);
            }
            history.reverse();
            Ok(Some(Loaded { record, history }))
        })
    }

    fn claim_turn(&self, _id: &CampaignId, _instance: u32) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn events_since(
        &self,
        id: &CampaignId,
        after_version: u64,
        max: usize,
    ) -> StoreFuture<'_, Option<Vec<CampaignEvent>>> {
        let id = id.clone();
        self.read(move |db| {
            let range = (id.as_str(), after_version + 1)..=(id.as_str(), u64::MAX);
            let found = read_events(db, range, max, false)?;
            if found
                .first()
                .is_some_and(|e| e.version != after_version + 1)
            {
                return Ok(None);
            }
            Ok(Some(found))
        })
    }

    fn snapshot_at_or_before(
        &self,
        id: &CampaignId,
        version: u64,
    ) -> StoreFuture<'_, Option<CampaignState>> {
        let id = id.clone();
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let snapshots = txn.open_table(SNAPSHOTS).map_err(unavailable)?;
            let newest = snapshots
                .range((id.as_str(), 0u64)..=(id.as_str(), version))
                .map_err(unavailable)?
                .next_back();
            match newest {
                Some(row) => {
                    let (_, value) = row.map_err(unavailable)?;
                    serde_json::from_slice(value.value())
                        .map(Some)
                        .map_err(corrupt)
                }
                None => Ok(None),
            }
        })
    }

    fn events_before(
        &self,
        id: &CampaignId,
        before: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<CampaignEvent>> {
        let id = id.clone();
        self.read(move |db| {
            let range = (id.as_str(), 0u64)..(id.as_str(), before);
            read_events(db, range, limit, true)
        })
    }

    fn oldest_event(&self, id: &CampaignId) -> StoreFuture<'_, Option<u64>> {
        let id = id.clone();
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let events = txn.open_table(EVENTS).map_err(unavailable)?;
            let first = events
                .range((id.as_str(), 0u64)..=(id.as_str(), u64::MAX))
                .map_err(unavailable)?
                .next();
            match first {
                Some(row) => Ok(Some(row.map_err(unavailable)?.0.value().1)),
                None => Ok(None),
            }
        })
    }

    fn forget_before(&self, id: &CampaignId, version: u64) -> StoreFuture<'_, ()> {
        let id = id.clone();
        self.submit(move |reply| WriteOp::Forget { id, version, reply })
    }

    fn version(&self, id: &CampaignId) -> StoreFuture<'_, Option<u64>> {
        let id = id.clone();
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let campaigns = txn.open_table(CAMPAIGNS).map_err(unavailable)?;
            match campaigns.get(id.as_str()).map_err(unavailable)? {
                Some(bytes) => stored_version(bytes.value()).map(Some),
                None => Ok(None),
            }
        })
    }

    fn create(&self, record: CampaignRecord, event: CampaignEvent) -> StoreFuture<'_, ()> {
        self.submit(|reply| WriteOp::Create {
            record,
            event,
            reply,
        })
    }

    fn commit(&self, commit: Commit) -> StoreFuture<'_, ()> {
        self.submit(|reply| WriteOp::Commit { commit, reply })
    }

    fn list(&self) -> StoreFuture<'_, Vec<CampaignRecord>> {
        self.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let campaigns = txn.open_table(CAMPAIGNS).map_err(unavailable)?;
            let mut list = Vec::new();
            for row in campaigns.iter().map_err(unavailable)? {
                let (_, value) = row.map_err(unavailable)?;
                let record: CampaignRecord =
                    serde_json::from_slice(value.value()).map_err(corrupt)?;
                list.push(record);
            }
            Ok(list)
        })
    }

    fn secret(&self, name: &str, generate: fn() -> Vec<u8>) -> StoreFuture<'_, Vec<u8>> {
        let name = name.to_owned();
        self.submit(move |reply| WriteOp::Secret {
            name,
            value: generate(),
            reply,
        })
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        self.read(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            txn.open_table(CAMPAIGNS).map_err(unavailable)?;
            Ok(())
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        let writer = self.writer.clone();
        Box::pin(async move {
            writer.queue.lock().expect("store queue lock").take();
            let thread = writer.thread.lock().expect("store thread lock").take();
            if let Some(thread) = thread {
                tokio::task::spawn_blocking(move || thread.join())
                    .await
                    .map_err(unavailable)?
                    .map_err(|_| StoreError::Unavailable("store writer panicked".into()))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaigns::core::CampaignCore;
    use rally_app::model::Write;
    use rally_app::model::{Actor, EventId, Timestamp, UserId};
    use rally_app::protocol::campaign::CreateCampaign;

    fn owner() -> Actor {
        Actor {
            user_id: UserId::parse("u1").unwrap(),
            display_name: "One".into(),
        }
    }

    fn created(id: &str) -> (CampaignCore, CampaignEvent) {
        let request: CreateCampaign =
            serde_json::from_value(serde_json::json!({"campaign_id": id, "title": "T"})).unwrap();
        CampaignCore::create(
            request,
            &owner(),
            Timestamp::from_unix_nanos(1),
            EventId::new(1, 1, 1),
            3,
        )
        .unwrap()
    }

    async fn retitle(store: &EmbeddedStore, core: &mut CampaignCore, title: &str) {
        let expected_version = core.version();
        let write: Write = Write::Update(
            serde_json::from_value(
                serde_json::json!({"campaign_id": core.state().id, "updates": {"title": title}}),
            )
            .unwrap(),
        );
        let crate::campaigns::core::Applied::Changed(event) = core
            .apply(
                &write,
                Some(&crate::campaigns::Caller::person(owner())),
                Timestamp::from_unix_nanos(2),
                EventId::new(2, 1, expected_version as u32 + 1),
            )
            .unwrap()
        else {
            panic!("expected a change");
        };
        store
            .commit(Commit {
                campaign_id: core.state().id.clone(),
                expected_version,
                record: core.record().clone(),
                events: vec![event],
                instance: 1,
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn round_trips_campaigns_history_and_secrets_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let (mut core, event) = created("alpha");
            store
                .create(core.record().clone(), event.clone())
                .await
                .unwrap();
            assert!(matches!(
                store.create(core.record().clone(), event).await,
                Err(StoreError::AlreadyExists)
            ));
            for title in ["a", "b", "c", "d"] {
                retitle(&store, &mut core, title).await;
            }
            let stale = Commit {
                campaign_id: core.state().id.clone(),
                expected_version: 2,
                record: core.record().clone(),
                events: vec![],
                instance: 1,
            };
            assert!(matches!(
                store.commit(stale).await,
                Err(StoreError::VersionMismatch {
                    expected: 2,
                    stored: 5
                })
            ));
            let secret = store.secret("session", || vec![7; 4]).await.unwrap();
            assert_eq!(secret, vec![7; 4]);
            store.close().await.unwrap();
            assert!(
                matches!(store.check().await, Ok(())),
                "reads still work after close"
            );
            let (core, event) = created("gamma");
            assert!(matches!(
                store.create(core.record().clone(), event).await,
                Err(StoreError::Unavailable(_))
            ));
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let alpha = CampaignId::parse("alpha").unwrap();
        let loaded = store.load(&alpha, 3).await.unwrap().unwrap();
        assert_eq!(loaded.record.state.title, "d");
        assert_eq!(loaded.record.state.version, 5);
        let versions: Vec<u64> = loaded.history.iter().map(|e| e.version).collect();
        assert_eq!(versions, [3, 4, 5], "a load brings the latest events only");
        let log = store.events_since(&alpha, 0, 100).await.unwrap().unwrap();
        assert_eq!(log.len(), 5, "the log keeps every event");
        let newest: Vec<u64> = store
            .events_before(&alpha, 5, 2)
            .await
            .unwrap()
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(newest, [4, 3]);
        assert!(store
            .load(&CampaignId::parse("beta").unwrap(), 10)
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            store.secret("session", || vec![9; 4]).await.unwrap(),
            vec![7; 4],
            "secrets persist"
        );
        let list = store.list().await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].state.title, "d");
    }

    #[tokio::test]
    async fn concurrent_commits_are_group_committed_and_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let (mut core, event) = created(&format!("c{i}"));
                store.create(core.record().clone(), event).await.unwrap();
                for n in 0..10 {
                    retitle(&store, &mut core, &format!("t{n}")).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        store.close().await.unwrap();
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let list = store.list().await.unwrap();
        assert_eq!(list.len(), 20);
        assert!(list
            .iter()
            .all(|r| r.state.version == 11 && r.state.title == "t9"));
    }
}
