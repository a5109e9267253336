//! Reading a campaign's change log: the campaign at any past version, and pages of the log.
//!
//! The store keeps every committed event and, every [`SNAPSHOT_EVERY`](crate::store::SNAPSHOT_EVERY) versions, the whole state
//! (see [`crate::store`]). Reading version N loads the newest snapshot at or before N and replays
//! the events after it, so it costs about `SNAPSHOT_EVERY` events however long the log is.
//! Nothing here checks who may read: the manager asks the campaign's writer first.

use rally_app::model::{
    describe_change, CampaignEvent, CampaignId, CampaignState, Change, Idempotency, Revert,
    RevertCampaign, Write,
};
use rally_app::protocol::campaign::WriteAck;
use rally_app::protocol::history::{
    HistoryEntry, HistoryPage, HistoryQuery, VersionDiff, HISTORY_PAGE_MAX_BYTES, HISTORY_SCAN_MAX,
};
use rally_app::protocol::{ErrorBody, ErrorCode};

use super::{diff, Caller, StateManager};
use crate::store::{Store, StoreError};

/// The history requests, each asking first whether the caller may see the campaign (one who may
/// not is answered `not_found`, as for a campaign that does not exist).
impl StateManager {
    /// The campaign as it was at `version`.
    pub async fn state_at(
        &self,
        id: &CampaignId,
        version: u64,
        caller: Option<Caller>,
    ) -> Result<CampaignState, ErrorBody> {
        self.role(id, caller).await?;
        self.read_version(id, version).await
    }

    async fn read_version(
        &self,
        id: &CampaignId,
        version: u64,
    ) -> Result<CampaignState, ErrorBody> {
        let state = state_at(self.store().as_ref(), id, version)
            .await
            .map_err(unreadable)?;
        state.ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::NotFound,
                format!("campaign {id} has no version {version} in its history"),
            )
        })
    }

    /// A page of the log, newest first.
    pub async fn history(
        &self,
        query: &HistoryQuery,
        caller: Option<Caller>,
    ) -> Result<HistoryPage, ErrorBody> {
        let id = &query.campaign_id;
        self.role(id, caller).await?;
        query.check()?;
        let store = self.store().as_ref();
        let newest = store.version(id).await.map_err(unreadable)?.unwrap_or(0);
        page(store, newest, query).await.map_err(unreadable)
    }

    /// What changed from version `from` to version `to`.
    pub async fn diff(
        &self,
        id: &CampaignId,
        from: u64,
        to: u64,
        caller: Option<Caller>,
    ) -> Result<VersionDiff, ErrorBody> {
        self.role(id, caller).await?;
        let before = self.read_version(id, from).await?;
        let after = self.read_version(id, to).await?;
        Ok(diff::between(&before, &after))
    }

    /// Put content back as it was at `request.to_version`, as a new version: read that version
    /// from the log, then write like any other change (an editor's, conflict-checked against
    /// `base_version`).
    pub async fn revert(
        &self,
        request: RevertCampaign,
        caller: Option<Caller>,
        named: Option<Idempotency>,
    ) -> Result<WriteAck, ErrorBody> {
        let id = request.campaign_id.clone();
        let role = self.role(&id, caller.clone()).await?;
        // Before reading the log: a viewer learns nothing about which versions exist.
        if !role.can_edit() {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                format!("a {role} can look at the history but not restore it"),
            ));
        }
        let then = Box::new(self.read_version(&id, request.to_version).await?);
        let write = Write::Revert(Revert { request, then });
        self.write(write, caller, named).await
    }

    /// The next events of an export after `after` (empty: the end), for a caller already let
    /// through [`Self::role`].
    pub async fn export_batch(
        &self,
        id: &CampaignId,
        after: u64,
    ) -> Result<Vec<CampaignEvent>, ErrorBody> {
        match self.store().events_since(id, after, BATCH).await {
            Ok(Some(events)) => Ok(events),
            // Retention forgot what the export was about to send: cut it off, visibly.
            Ok(None) => Err(ErrorBody::new(
                ErrorCode::Unavailable,
                "the log was shortened while it was being exported; export again",
            )),
            Err(err) => Err(unreadable(err)),
        }
    }
}

fn unreadable(err: StoreError) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Unavailable,
        format!("cannot read the campaign's history: {err}"),
    )
}

/// Events read from the store at a time. One event is at most ~0.6 MB (a creation or a revert
/// carrying every config section at its limit), so a batch stays within ~30 MB however large
/// the campaign's events are.
const BATCH: usize = 50;

/// The campaign as it was at `version`, or None when the log has no such version (0, beyond the
/// newest, or a campaign that does not exist).
pub async fn state_at(
    store: &dyn Store,
    id: &CampaignId,
    version: u64,
) -> Result<Option<CampaignState>, StoreError> {
    if version == 0 {
        return Ok(None);
    }
    let mut state = store.snapshot_at_or_before(id, version).await?;
    let mut reached = state.as_ref().map_or(0, |s| s.version);
    while reached < version {
        let wanted = usize::try_from(version - reached)
            .unwrap_or(BATCH)
            .min(BATCH);
        let Some(events) = store.events_since(id, reached, wanted).await? else {
            return Ok(None); // the log no longer reaches back that far
        };
        if events.is_empty() {
            return Ok(None); // beyond the newest version
        }
        for event in &events {
            replay(&mut state, event)?;
            reached = event.version;
        }
    }
    Ok(state.filter(|s| s.version == version))
}

/// Apply one logged event to the state before it (None: before the campaign existed).
fn replay(state: &mut Option<CampaignState>, event: &CampaignEvent) -> Result<(), StoreError> {
    match (state.as_mut(), &event.change) {
        (None, Change::Created { state: created }) => {
            *state = Some(created.as_ref().clone());
            Ok(())
        }
        (None, _) => Err(StoreError::Corrupt(format!(
            "the log of {} starts at version {} without a snapshot",
            event.campaign_id, event.version
        ))),
        (Some(current), _) => current
            .apply_event(event)
            .map_err(|err| StoreError::Corrupt(format!("replaying the log: {err}"))),
    }
}

/// One page of the log, newest first, filtered by `query`. Looks through at most
/// [`HISTORY_SCAN_MAX`] entries, so a filter that matches rarely answers a short page with a
/// `next_before` to go on from, rather than reading the whole log.
pub async fn page(
    store: &dyn Store,
    newest: u64,
    query: &HistoryQuery,
) -> Result<HistoryPage, StoreError> {
    let id = &query.campaign_id;
    let want = query.page_size();
    let mut before = query.before.unwrap_or(newest + 1).min(newest + 1);
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    let mut scanned = 0usize;
    let full = |entries: &Vec<HistoryEntry>, bytes: usize| {
        entries.len() >= want || bytes >= HISTORY_PAGE_MAX_BYTES
    };
    while !full(&entries, bytes) && before > 1 && scanned < HISTORY_SCAN_MAX as usize {
        let batch = match query.field.is_some() || query.actor.is_some() {
            true => BATCH.min(HISTORY_SCAN_MAX as usize - scanned),
            false => (want - entries.len()).min(BATCH),
        };
        let events = store.events_before(id, before, batch).await?;
        let exhausted = events.len() < batch;
        for event in events {
            scanned += 1;
            before = event.version;
            let fields = event.change.touched_fields();
            if query.matches(&fields, &event.changed_by.user_id) {
                let entry = entry(event, fields);
                bytes += serde_json::to_vec(&entry).map_or(0, |json| json.len());
                entries.push(entry);
                if full(&entries, bytes) {
                    break;
                }
            }
        }
        // A short batch that did not fill the page was read to its end: nothing is older.
        if exhausted && !full(&entries, bytes) {
            before = 1;
        }
    }
    Ok(HistoryPage {
        campaign_id: id.clone(),
        entries,
        next_before: (before > 1).then_some(before),
    })
}

fn entry(event: CampaignEvent, fields: Vec<String>) -> HistoryEntry {
    HistoryEntry {
        version: event.version,
        event_id: event.event_id,
        summary: describe_change(&event.change),
        changed_by: event.changed_by,
        changed_at: event.changed_at,
        fields,
        change: event.change,
    }
}
