//! The control socket: how `rally backup` reaches a running server.
//!
//! The embedded store is one file that one process holds at a time, so a backup taken while
//! the server runs must be taken *by* the server. It listens on a Unix socket in its data
//! directory (`control.sock`, mode 0600, and a connection from another user is refused by its
//! credentials: only the user the server runs as — who could read the store's file anyway). A
//! client sends one line, `backup`, and reads the backup until the server closes the socket.
//! One backup runs at a time, and a client that stops reading is dropped after
//! [`WRITE_TIMEOUT`]: a stalled backup holds a read transaction (the file cannot reuse pages
//! meanwhile) and would hold up shutdown. Nothing else is asked here; the HTTP listener never
//! offers it.

use std::io::BufWriter;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::shutdown::ShutdownSignal;
use crate::store::embedded::EmbeddedStore;

/// The socket's file name in the data directory.
pub const SOCKET_NAME: &str = "control.sock";
/// The one request: a backup.
pub const BACKUP_REQUEST: &str = "backup";
/// A client has this long to say what it wants.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request line read.
const MAX_REQUEST_BYTES: u64 = 64;
/// A backup client that takes nothing for this long is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the socket of the server using `data_dir` is.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Listen on the socket in `data_dir`. A file left there by a server that died is replaced:
/// the caller holds the store, so no other server uses this directory.
pub fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answer requests on `listener` until `stop` fires; then remove the socket file.
pub async fn serve(listener: UnixListener, store: EmbeddedStore, mut stop: ShutdownSignal) {
    let one_at_a_time = Arc::new(tokio::sync::Semaphore::new(1));
    let path = listener
        .local_addr()
        .ok()
        .and_then(|addr| addr.as_pathname().map(Path::to_path_buf));
    loop {
        let accepted = tokio::select! {
            _ = stop.recv() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, store.clone(), one_at_a_time.clone()));
            }
            Err(err) => {
                tracing::debug!(error = %err, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
}

async fn answer(
    stream: UnixStream,
    store: EmbeddedStore,
    one_at_a_time: Arc<tokio::sync::Semaphore>,
) {
    // SAFETY: getuid has no preconditions and cannot fail.
    let own = unsafe { libc::getuid() };
    if !stream.peer_cred().is_ok_and(|peer| peer.uid() == own) {
        tracing::warn!("control socket: a connection from another user was refused");
        return;
    }
    let mut reader = BufReader::new(stream).take(MAX_REQUEST_BYTES);
    let mut request = String::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut request)).await;
    let mut stream = reader.into_inner().into_inner();
    if !matches!(read, Ok(Ok(_))) || request.trim() != BACKUP_REQUEST {
        let _ = stream
            .write_all(format!("error: expected `{BACKUP_REQUEST}`\n").as_bytes())
            .await;
        return;
    }
    let Ok(_turn) = one_at_a_time.try_acquire() else {
        let _ = stream
            .write_all(b"error: a backup is already being taken; try again when it is done\n")
            .await;
        return;
    };
    tracing::info!("backup requested through the control socket");
    // The backup is written by blocking code (redb's reads), on a blocking thread.
    let outcome = stream.into_std().and_then(|stream| {
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(stream)
    });
    let stream = match outcome {
        Ok(stream) => stream,
        Err(err) => {
            tracing::warn!(error = %err, "backup not sent");
            return;
        }
    };
    let written = tokio::task::spawn_blocking(move || {
        store.write_backup(&mut BufWriter::with_capacity(1 << 16, stream))
    })
    .await;
    match written {
        Ok(Ok(counts)) => tracing::info!(%counts, "backup sent"),
        Ok(Err(err)) => tracing::warn!(error = %err, "backup not completed"),
        Err(err) => tracing::warn!(error = %err, "backup not completed"),
    }
}
