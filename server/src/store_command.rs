//! `rally backup`, `rally restore` and `rally migrate --to-redis`: the operator's store
//! commands (see [`crate::command`]).
//!
//! Backup works with the server running or stopped: a running server holds the embedded store's
//! file, so it is asked for the backup through its control socket ([`crate::control`]); when
//! nothing answers there, the store is opened here. Restore and migrate need the server
//! stopped: restore fills an empty data directory, migrate reads the store while nothing
//! writes it.

use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::control;
use crate::redis::RedisLink;
use crate::store::embedded::{self, BackupCounts, BackupError, EmbeddedStore};
use crate::store::migrate::{self, MigrateReport};
use crate::store::redis::RedisStore;
use crate::store::{Store, StoreError};

/// Why a store command failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreCommandError {
    #[error("Redis mode keeps everything in Redis: back it up with Redis's own tools (RDB snapshots or AOF); `rally {0}` is for the embedded store")]
    RedisMode(&'static str),
    #[error("cannot open the store in {path}: {reason} (is the server running? Stop it first)")]
    Busy { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the running server's backup failed: {0}")]
    Server(String),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("cannot reach Redis: {0}")]
    Redis(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{summary}; not moved:\n{failures}")]
    Incomplete { summary: String, failures: String },
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreCommandError + '_ {
    move |source| StoreCommandError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// Write a backup of the store in `data_dir` to `to`.
pub async fn backup(
    data_dir: &Path,
    redis_url: Option<&str>,
    to: &Path,
) -> Result<String, StoreCommandError> {
    if redis_url.is_some() {
        return Err(StoreCommandError::RedisMode("backup"));
    }
    let store = data_dir.join(embedded::FILE_NAME);
    if std::fs::canonicalize(to)
        .is_ok_and(|to| std::fs::canonicalize(&store).is_ok_and(|s| s == to))
    {
        return Err(StoreCommandError::File {
            path: to.to_path_buf(),
            source: std::io::Error::other("that is the store itself; write the backup elsewhere"),
        });
    }
    let partial = partial_name(to);
    // Only its owner may read it: a backup holds the signing secrets and every session.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(file_error(&partial))?;
    let outcome = match std::os::unix::net::UnixStream::connect(control::socket_path(data_dir)) {
        Ok(socket) => {
            from_server(socket, file, &partial).map(|counts| (counts, "the running server"))
        }
        // Nobody listens: no server runs on this directory (a socket file left by one that died
        // refuses the connection).
        Err(_) => from_file(data_dir, file)
            .await
            .map(|counts| (counts, "the store")),
    };
    match outcome {
        Ok((counts, source)) => {
            std::fs::rename(&partial, to).map_err(file_error(to))?;
            Ok(format!(
                "Backed up {counts} from {source} to {}.\n",
                to.display()
            ))
        }
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            Err(err)
        }
    }
}

/// `to.partial`, beside `to`.
fn partial_name(to: &Path) -> PathBuf {
    let mut name = to.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Ask the server on the other end of `socket` for a backup and copy it into `file`; the
/// entries it holds (checked: the server's last line must be there).
fn from_server(
    mut socket: std::os::unix::net::UnixStream,
    file: std::fs::File,
    path: &Path,
) -> Result<BackupCounts, StoreCommandError> {
    let server = |err: std::io::Error| StoreCommandError::Server(err.to_string());
    socket
        .write_all(format!("{}\n", control::BACKUP_REQUEST).as_bytes())
        .map_err(server)?;
    let mut out = BufWriter::new(file);
    std::io::copy(&mut BufReader::new(&mut socket), &mut out).map_err(server)?;
    let file = out.into_inner().map_err(|err| server(err.into_error()))?;
    file.sync_all().map_err(file_error(path))?;
    // Read it back: a backup the server could not finish (or an error line) is not a backup.
    let written = std::fs::File::open(path).map_err(file_error(path))?;
    embedded::check(BufReader::new(written)).map_err(|err| {
        StoreCommandError::Server(format!("what it sent is not a whole backup ({err})"))
    })
}

/// No server runs: open the store here and write the backup.
async fn from_file(
    data_dir: &Path,
    file: std::fs::File,
) -> Result<BackupCounts, StoreCommandError> {
    let store = open_embedded(data_dir)?;
    // Blocking reads on the command's one thread: nothing else runs here.
    let written = (|| {
        let mut out = BufWriter::new(file);
        let counts = store.write_backup(&mut out)?;
        let file = out
            .into_inner()
            .map_err(|err| BackupError::Write(err.into_error()))?;
        file.sync_all().map_err(BackupError::Write)?;
        Ok::<_, BackupError>(counts)
    })();
    store.close().await?;
    Ok(written?)
}

fn open_embedded(data_dir: &Path) -> Result<EmbeddedStore, StoreCommandError> {
    if !data_dir.join(embedded::FILE_NAME).exists() {
        return Err(StoreCommandError::File {
            path: data_dir.join(embedded::FILE_NAME),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no store here"),
        });
    }
    EmbeddedStore::open(data_dir).map_err(|err| StoreCommandError::Busy {
        path: data_dir.to_path_buf(),
        reason: err.to_string(),
    })
}

/// Restore the backup `from` into `data_dir`.
pub fn restore(
    data_dir: &Path,
    redis_url: Option<&str>,
    from: &Path,
) -> Result<String, StoreCommandError> {
    if redis_url.is_some() {
        return Err(StoreCommandError::RedisMode("restore"));
    }
    std::fs::create_dir_all(data_dir).map_err(file_error(data_dir))?;
    let input: Box<dyn Read> = Box::new(std::fs::File::open(from).map_err(file_error(from))?);
    let counts = embedded::restore(data_dir, BufReader::with_capacity(1 << 16, input))?;
    Ok(format!("Restored {counts} into {}.\n", data_dir.display()))
}

/// Move the embedded store in `data_dir` into the Redis at `redis_url`.
pub async fn migrate(data_dir: &Path, redis_url: &str) -> Result<String, StoreCommandError> {
    let from = open_embedded(data_dir)?;
    let link = RedisLink::connect(redis_url)
        .await
        .map_err(|err| StoreCommandError::Redis(err.to_string()))?;
    let to = RedisStore::new(link);
    let report = migrate::migrate(&from, &to).await;
    from.close().await?;
    let report = report?;
    let summary = summary(&report);
    if report.failed.is_empty() {
        return Ok(summary + ".\n");
    }
    let failures = report
        .failed
        .iter()
        .map(|err| format!("  {err}"))
        .collect::<Vec<_>>()
        .join("\n");
    Err(StoreCommandError::Incomplete { summary, failures })
}

fn summary(report: &MigrateReport) -> String {
    let mut text = format!(
        "Moved {} campaigns ({} events, {} snapshots) into Redis, each read back and compared; {} campaigns were there already and compared equal; {} sessions, API keys, webhook endpoints and secrets copied (those Redis already had are kept)",
        report.copied, report.events, report.snapshots, report.already_there, report.records
    );
    if !report.kept_secrets.is_empty() {
        text.push_str(&format!(
            ". Redis already had its own {} secret (kept, as instances may use it): sessions and invite links made before the move must be made again",
            report.kept_secrets.join(", ")
        ));
    }
    text
}
