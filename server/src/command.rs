//! What `rally` does instead of serving when given a command: `keys`, `openapi`, `backup`,
//! `restore`, `migrate`. Each prints what it did on stdout; main turns an error into one line on
//! stderr and exit code 1.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::key_command::{KeyCommandError, KeysCommand};
use crate::store_command::StoreCommandError;

/// What the command line may ask instead of serving.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Make, list and revoke API keys (embedded mode: while the server is stopped).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print the HTTP API's OpenAPI 3.1 document (what `GET /api/openapi.json` serves).
    Openapi,
    /// Write a backup of the embedded store: consistent at one moment, also while the server
    /// runs (it is asked through its control socket in the data directory).
    Backup {
        /// The file to write. Written under a temporary name and renamed once complete.
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup into the data directory, which must not hold a store yet (stop the
    /// server and move its store file, `rally.redb`, aside first).
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
    },
    /// Copy every campaign with its history from the embedded store into Redis and read each
    /// back and compare it; copy the sessions, API keys, webhook endpoints and signing secrets
    /// Redis does not have yet. Idempotent: run it again to finish or check a move. Stop the
    /// server first.
    Migrate {
        /// The Redis to move into (`redis://host:port/db`).
        #[arg(long = "to-redis")]
        to_redis: String,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Keys(#[from] KeyCommandError),
    #[error(transparent)]
    Store(#[from] StoreCommandError),
}

/// Run `command` against the store the server would use (`data_dir`, or Redis at
/// `redis_url`); what to print.
pub async fn run(
    command: &Command,
    data_dir: &Path,
    redis_url: Option<&str>,
) -> Result<String, CommandError> {
    Ok(match command {
        Command::Keys(keys) => crate::key_command::run(keys, data_dir, redis_url).await?,
        Command::Openapi => {
            let document = crate::api::openapi::document();
            serde_json::to_string_pretty(document).expect("JSON") + "\n"
        }
        Command::Backup { to } => crate::store_command::backup(data_dir, redis_url, to).await?,
        Command::Restore { from } => crate::store_command::restore(data_dir, redis_url, from)?,
        Command::Migrate { to_redis } => crate::store_command::migrate(data_dir, to_redis).await?,
    })
}
