//! Backups of the embedded store: every table, entry by entry, one JSON line each.
//!
//! A backup is read in one redb read transaction: a consistent copy of the store as it was at
//! one moment, taken while the writer thread goes on committing (readers keep the snapshot they
//! began with). Values go out as the store holds them (JSON; secrets in base64), so a restored
//! store is the same bytes, and a backup of it equals the backup it came from. The last line
//! counts the entries: a file cut short is refused rather than restored in part.
//!
//! ```text
//! {"rally_backup":1}
//! {"campaign":{"id":"spring","value":{…record…}}}
//! {"event":{"campaign":"spring","version":1,"value":{…event…}}}
//! …
//! {"end":{"entries":5021}}
//! ```
//!
//! Restore writes into a new file beside the store and gives it the store's name only once
//! every line is in; it refuses a data directory that already has a store, also one that
//! appears while it restores.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::tables::{
    API_KEYS, CAMPAIGNS, EVENTS, FILE_NAME, SECRETS, SESSIONS, SNAPSHOTS, USER_SESSIONS, WEBHOOKS,
};

/// The format's version, in the first line.
const FORMAT: u32 = 1;
/// Entries written per transaction while restoring (bounds the restore's memory).
const RESTORE_BATCH: usize = 5_000;

/// Why a backup or a restore did not complete.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot read the store: {0}")]
    Store(String),
    #[error("cannot write the backup: {0}")]
    Write(std::io::Error),
    #[error("cannot read the backup: {0}")]
    Read(std::io::Error),
    #[error("line {line} of the backup: {reason}")]
    Invalid { line: u64, reason: String },
    #[error("the backup ends after {0} entries without its last line: it was cut short")]
    Truncated(u64),
    #[error("{0} already holds a store; restore needs a data directory without one (move its rally.redb aside first)")]
    NotEmpty(PathBuf),
}

fn store_error(err: impl std::fmt::Display) -> BackupError {
    BackupError::Store(err.to_string())
}

/// What a backup holds, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BackupCounts {
    pub campaigns: u64,
    pub events: u64,
    pub snapshots: u64,
    /// Secrets, sessions, API keys and webhook endpoints.
    pub other: u64,
}

impl BackupCounts {
    fn count(&mut self, entry: &Entry) {
        match entry {
            Entry::Campaign { .. } => self.campaigns += 1,
            Entry::Event { .. } => self.events += 1,
            Entry::Snapshot { .. } => self.snapshots += 1,
            _ => self.other += 1,
        }
    }

    pub fn entries(&self) -> u64 {
        self.campaigns + self.events + self.snapshots + self.other
    }
}

impl std::fmt::Display for BackupCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} campaigns, {} events, {} snapshots, {} other records",
            self.campaigns, self.events, self.snapshots, self.other
        )
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    rally_backup: u32,
}

/// One line of a backup after the header.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    Campaign {
        id: String,
        value: Box<RawValue>,
    },
    Event {
        campaign: String,
        version: u64,
        value: Box<RawValue>,
    },
    Snapshot {
        campaign: String,
        version: u64,
        value: Box<RawValue>,
    },
    Secret {
        name: String,
        base64: String,
    },
    Session {
        id: String,
        value: Box<RawValue>,
    },
    UserSession {
        user: String,
        session: String,
    },
    ApiKey {
        id: String,
        value: Box<RawValue>,
    },
    Webhook {
        id: String,
        value: Box<RawValue>,
    },
    End {
        entries: u64,
    },
}

/// A stored JSON value as it is.
fn raw(bytes: &[u8]) -> Result<Box<RawValue>, BackupError> {
    let text = String::from_utf8(bytes.to_vec()).map_err(store_error)?;
    RawValue::from_string(text).map_err(store_error)
}

/// Write every entry of `db` to `out`, from one read transaction.
pub fn write_backup(db: &Database, out: &mut impl Write) -> Result<BackupCounts, BackupError> {
    let txn = db.begin_read().map_err(store_error)?;
    let mut counts = BackupCounts::default();
    let mut emit = |entry: Entry, out: &mut dyn Write| -> Result<(), BackupError> {
        counts.count(&entry);
        serde_json::to_writer(&mut *out, &entry).map_err(|err| BackupError::Write(err.into()))?;
        out.write_all(b"\n").map_err(BackupError::Write)
    };
    serde_json::to_writer(
        &mut *out,
        &Header {
            rally_backup: FORMAT,
        },
    )
    .map_err(|err| BackupError::Write(err.into()))?;
    out.write_all(b"\n").map_err(BackupError::Write)?;

    let by_name = |table: TableDefinition<&str, &[u8]>| txn.open_table(table).map_err(store_error);
    for row in by_name(CAMPAIGNS)?.iter().map_err(store_error)? {
        let (id, value) = row.map_err(store_error)?;
        emit(
            Entry::Campaign {
                id: id.value().to_owned(),
                value: raw(value.value())?,
            },
            out,
        )?;
    }
    for row in txn
        .open_table(EVENTS)
        .map_err(store_error)?
        .iter()
        .map_err(store_error)?
    {
        let (key, value) = row.map_err(store_error)?;
        let (campaign, version) = key.value();
        let value = raw(value.value())?;
        emit(
            Entry::Event {
                campaign: campaign.to_owned(),
                version,
                value,
            },
            out,
        )?;
    }
    for row in txn
        .open_table(SNAPSHOTS)
        .map_err(store_error)?
        .iter()
        .map_err(store_error)?
    {
        let (key, value) = row.map_err(store_error)?;
        let (campaign, version) = key.value();
        let value = raw(value.value())?;
        emit(
            Entry::Snapshot {
                campaign: campaign.to_owned(),
                version,
                value,
            },
            out,
        )?;
    }
    for row in by_name(SECRETS)?.iter().map_err(store_error)? {
        let (name, value) = row.map_err(store_error)?;
        let base64 = base64::engine::general_purpose::STANDARD.encode(value.value());
        emit(
            Entry::Secret {
                name: name.value().to_owned(),
                base64,
            },
            out,
        )?;
    }
    for row in by_name(SESSIONS)?.iter().map_err(store_error)? {
        let (id, value) = row.map_err(store_error)?;
        emit(
            Entry::Session {
                id: id.value().to_owned(),
                value: raw(value.value())?,
            },
            out,
        )?;
    }
    for row in txn
        .open_table(USER_SESSIONS)
        .map_err(store_error)?
        .iter()
        .map_err(store_error)?
    {
        let (key, _) = row.map_err(store_error)?;
        let (user, session) = key.value();
        emit(
            Entry::UserSession {
                user: user.to_owned(),
                session: session.to_owned(),
            },
            out,
        )?;
    }
    for row in by_name(API_KEYS)?.iter().map_err(store_error)? {
        let (id, value) = row.map_err(store_error)?;
        emit(
            Entry::ApiKey {
                id: id.value().to_owned(),
                value: raw(value.value())?,
            },
            out,
        )?;
    }
    for row in by_name(WEBHOOKS)?.iter().map_err(store_error)? {
        let (id, value) = row.map_err(store_error)?;
        emit(
            Entry::Webhook {
                id: id.value().to_owned(),
                value: raw(value.value())?,
            },
            out,
        )?;
    }
    let entries = counts.entries();
    serde_json::to_writer(&mut *out, &Entry::End { entries })
        .map_err(|err| BackupError::Write(err.into()))?;
    out.write_all(b"\n").map_err(BackupError::Write)?;
    out.flush().map_err(BackupError::Write)?;
    Ok(counts)
}

/// Restore a backup into `data_dir`, which must not hold a store yet.
pub fn restore(data_dir: &Path, input: impl BufRead) -> Result<BackupCounts, BackupError> {
    let target = data_dir.join(FILE_NAME);
    if target.exists() {
        return Err(BackupError::NotEmpty(data_dir.to_path_buf()));
    }
    let partial = data_dir.join(format!("{FILE_NAME}.restoring"));
    let _ = std::fs::remove_file(&partial);
    let outcome = restore_into(&partial, input);
    match outcome {
        Ok(counts) => {
            // A link, not a rename: it fails rather than replace a store that appeared
            // meanwhile (a server started on this directory).
            let linked = std::fs::hard_link(&partial, &target);
            let _ = std::fs::remove_file(&partial);
            match linked {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(BackupError::NotEmpty(data_dir.to_path_buf()))
                }
                Err(err) => return Err(BackupError::Write(err)),
            }
            if let Ok(dir) = std::fs::File::open(data_dir) {
                let _ = dir.sync_all();
            }
            Ok(counts)
        }
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            Err(err)
        }
    }
}

fn restore_into(path: &Path, input: impl BufRead) -> Result<BackupCounts, BackupError> {
    let db = Database::create(path).map_err(store_error)?;
    let mut batch: Vec<Entry> = Vec::with_capacity(RESTORE_BATCH);
    let counts = read_backup(input, |entry| {
        batch.push(entry);
        if batch.len() == RESTORE_BATCH {
            write_batch(&db, &mut batch)?;
        }
        Ok(())
    })?;
    write_batch(&db, &mut batch)?;
    // The same empty tables a fresh store has, even where the backup had no entries.
    write_batch(&db, &mut Vec::new())?;
    Ok(counts)
}

/// Check that `input` is a whole backup, without writing anything; what it holds.
pub fn check(input: impl BufRead) -> Result<BackupCounts, BackupError> {
    read_backup(input, |_| Ok(()))
}

/// Read a backup, handing each entry to `each`; what it held. Fails on anything but a whole
/// backup — after handing over entries, so a caller that wrote them must drop what it wrote.
fn read_backup(
    input: impl BufRead,
    mut each: impl FnMut(Entry) -> Result<(), BackupError>,
) -> Result<BackupCounts, BackupError> {
    let mut lines = input.lines();
    let mut line_no = 0u64;
    let invalid = |line: u64, reason: String| BackupError::Invalid { line, reason };
    let header = lines
        .next()
        .ok_or(BackupError::Truncated(0))?
        .map_err(BackupError::Read)?;
    line_no += 1;
    match serde_json::from_str::<Header>(&header) {
        Ok(Header {
            rally_backup: FORMAT,
        }) => {}
        Ok(Header {
            rally_backup: other,
        }) => {
            return Err(invalid(
                1,
                format!("format {other}; this rally reads format {FORMAT}"),
            ))
        }
        Err(_) => return Err(invalid(1, "not a Rally backup".into())),
    }
    let mut counts = BackupCounts::default();
    let mut ended = None;
    for line in lines {
        let line = line.map_err(BackupError::Read)?;
        line_no += 1;
        if ended.is_some() {
            return Err(invalid(line_no, "lines after the last one".into()));
        }
        let entry: Entry =
            serde_json::from_str(&line).map_err(|err| invalid(line_no, err.to_string()))?;
        if let Entry::End { entries } = entry {
            ended = Some(entries);
            continue;
        }
        counts.count(&entry);
        each(entry)?;
    }
    let Some(expected) = ended else {
        return Err(BackupError::Truncated(counts.entries()));
    };
    if expected != counts.entries() {
        return Err(invalid(
            line_no,
            format!("says {expected} entries, holds {}", counts.entries()),
        ));
    }
    Ok(counts)
}

fn write_batch(db: &Database, batch: &mut Vec<Entry>) -> Result<(), BackupError> {
    let txn = db.begin_write().map_err(store_error)?;
    {
        let mut campaigns = txn.open_table(CAMPAIGNS).map_err(store_error)?;
        let mut events = txn.open_table(EVENTS).map_err(store_error)?;
        let mut snapshots = txn.open_table(SNAPSHOTS).map_err(store_error)?;
        let mut secrets = txn.open_table(SECRETS).map_err(store_error)?;
        let mut sessions = txn.open_table(SESSIONS).map_err(store_error)?;
        let mut user_sessions = txn.open_table(USER_SESSIONS).map_err(store_error)?;
        let mut api_keys = txn.open_table(API_KEYS).map_err(store_error)?;
        let mut webhooks = txn.open_table(WEBHOOKS).map_err(store_error)?;
        for entry in batch.drain(..) {
            let json = |value: &RawValue| value.get().as_bytes().to_vec();
            match entry {
                Entry::Campaign { id, value } => campaigns
                    .insert(id.as_str(), json(&value).as_slice())
                    .map(drop),
                Entry::Event {
                    campaign,
                    version,
                    value,
                } => events
                    .insert((campaign.as_str(), version), json(&value).as_slice())
                    .map(drop),
                Entry::Snapshot {
                    campaign,
                    version,
                    value,
                } => snapshots
                    .insert((campaign.as_str(), version), json(&value).as_slice())
                    .map(drop),
                Entry::Secret { name, base64 } => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(base64)
                        .map_err(store_error)?;
                    secrets.insert(name.as_str(), bytes.as_slice()).map(drop)
                }
                Entry::Session { id, value } => sessions
                    .insert(id.as_str(), json(&value).as_slice())
                    .map(drop),
                Entry::UserSession { user, session } => user_sessions
                    .insert((user.as_str(), session.as_str()), ())
                    .map(drop),
                Entry::ApiKey { id, value } => api_keys
                    .insert(id.as_str(), json(&value).as_slice())
                    .map(drop),
                Entry::Webhook { id, value } => webhooks
                    .insert(id.as_str(), json(&value).as_slice())
                    .map(drop),
                Entry::End { .. } => Ok(()),
            }
            .map_err(store_error)?;
        }
    }
    txn.commit().map_err(store_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup_of(db: &Database) -> (BackupCounts, String) {
        let mut out = Vec::new();
        let counts = write_backup(db, &mut out).unwrap();
        (counts, String::from_utf8(out).unwrap())
    }

    fn sample(path: &Path) -> Database {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut campaigns = txn.open_table(CAMPAIGNS).unwrap();
            campaigns
                .insert("spring", br#"{"state":{"version":2}}"#.as_slice())
                .unwrap();
            let mut events = txn.open_table(EVENTS).unwrap();
            events
                .insert(("spring", 1), br#"{"version":1}"#.as_slice())
                .unwrap();
            events
                .insert(("spring", 2), br#"{"version":2,"x":"\u00e9\n"}"#.as_slice())
                .unwrap();
            let mut secrets = txn.open_table(SECRETS).unwrap();
            secrets
                .insert("session", [0u8, 255, 10, 13].as_slice())
                .unwrap();
            let mut user_sessions = txn.open_table(USER_SESSIONS).unwrap();
            user_sessions.insert(("u1", "s1"), ()).unwrap();
            for table in [SNAPSHOTS] {
                txn.open_table(table).unwrap();
            }
            for table in [SESSIONS, API_KEYS, WEBHOOKS] {
                txn.open_table(table).unwrap();
            }
        }
        txn.commit().unwrap();
        db
    }

    #[test]
    fn a_restored_store_backs_up_to_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let db = sample(&dir.path().join("source.redb"));
        let (counts, text) = backup_of(&db);
        assert_eq!(
            counts,
            BackupCounts {
                campaigns: 1,
                events: 2,
                snapshots: 0,
                other: 2
            }
        );
        assert!(text.starts_with("{\"rally_backup\":1}\n"), "{text}");
        assert!(text.ends_with("{\"end\":{\"entries\":5}}\n"), "{text}");

        let target = dir.path().join("restored");
        std::fs::create_dir(&target).unwrap();
        assert_eq!(restore(&target, text.as_bytes()).unwrap(), counts);
        let restored = Database::open(target.join(FILE_NAME)).unwrap();
        assert_eq!(backup_of(&restored).1, text);
        assert!(matches!(
            restore(&target, text.as_bytes()),
            Err(BackupError::NotEmpty(_))
        ));
    }

    #[test]
    fn a_damaged_backup_restores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = sample(&dir.path().join("source.redb"));
        let (counts, text) = backup_of(&db);
        assert_eq!(check(text.as_bytes()).unwrap(), counts);
        let lines: Vec<&str> = text.lines().collect();
        let without_end = lines[..lines.len() - 1].join("\n");
        let miscounted = text.replace("\"entries\":5", "\"entries\":6");
        let bad_line = text.replacen("{\"event\"", "{\"evnt\"", 1);
        for (name, input, expected) in [
            ("cut short", without_end.as_str(), "cut short"),
            ("miscounted", miscounted.as_str(), "says 6 entries, holds 5"),
            ("a bad line", bad_line.as_str(), "line 3 of the backup"),
            ("not a backup", "{\"hello\":1}\n", "not a Rally backup"),
            ("a newer format", "{\"rally_backup\":9}\n", "format 9"),
            ("empty", "", "cut short"),
        ] {
            let target = tempfile::tempdir().unwrap();
            assert!(check(input.as_bytes()).is_err(), "{name}");
            let err = restore(target.path(), input.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{name}: {err}");
            assert!(
                !target.path().join(FILE_NAME).exists(),
                "{name}: no store left"
            );
            assert_eq!(
                std::fs::read_dir(target.path()).unwrap().count(),
                0,
                "{name}: nothing left"
            );
        }
    }
}
