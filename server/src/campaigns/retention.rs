//! Retention: with `--history-retention-days N`, each campaign's log keeps at least the last N
//! days of changes. What is older is forgotten down to a snapshot, so the log still begins with
//! a whole state: every version from that snapshot on stays readable, older ones answer
//! `not_found`, and the history pages end there. Without the setting the log is kept for ever.
//!
//! Every instance runs the pass (hourly); forgetting is idempotent, so instances sharing a Redis
//! need not agree on who does it.

use std::sync::Arc;
use std::time::Duration;

use rally_app::model::{CampaignId, Timestamp};

use crate::shutdown::ShutdownSignal;
use crate::store::{Store, StoreError};

/// How often the pass runs.
const EVERY: Duration = Duration::from_secs(3600);

/// Where the log of `id` may be cut for `cutoff`: the newest snapshot taken before it, if that
/// moves the log's start forward. Found by halving the kept versions: about log2(versions)
/// snapshot reads, however long the log.
pub async fn cut_point(
    store: &dyn Store,
    id: &CampaignId,
    cutoff: Timestamp,
) -> Result<Option<u64>, StoreError> {
    let (Some(oldest), Some(newest)) = (store.oldest_event(id).await?, store.version(id).await?)
    else {
        return Ok(None);
    };
    // Never at the newest version: the log keeps at least its latest event, which instances
    // catching up and the history pages read.
    let (mut low, mut high) = (oldest, newest.saturating_sub(1));
    let mut found = None;
    while low <= high {
        let middle = low + (high - low) / 2;
        match store.snapshot_at_or_before(id, middle).await? {
            Some(snapshot) if snapshot.updated_at < cutoff => {
                found = Some(snapshot.version);
                low = middle + 1;
            }
            _ => high = middle - 1,
        }
    }
    // A snapshot before the oldest kept event is where the log was cut last time.
    Ok(found.filter(|version| *version >= oldest))
}

/// Forget what every campaign's log holds from before `cutoff`; answers the campaigns cut.
pub async fn forget_older(store: &dyn Store, cutoff: Timestamp) -> Result<usize, StoreError> {
    let mut cut = 0;
    for record in store.list().await? {
        let id = &record.state.id;
        if let Some(version) = cut_point(store, id, cutoff).await? {
            store.forget_before(id, version).await?;
            cut += 1;
        }
    }
    Ok(cut)
}

/// Run the pass every hour (the first a minute after start) until shutdown.
pub async fn run(store: Arc<dyn Store>, keep: Duration, mut shutdown: ShutdownSignal) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = EVERY;
        let keep_nanos = u64::try_from(keep.as_nanos()).unwrap_or(u64::MAX);
        let now = crate::clock::now();
        let cutoff = Timestamp::from_unix_nanos(now.unix_nanos().saturating_sub(keep_nanos));
        match forget_older(store.as_ref(), cutoff).await {
            Ok(cut) => tracing::debug!(campaigns = cut, "history retention pass"),
            Err(error) => tracing::warn!(%error, "history retention pass failed"),
        }
    }
}
