//! `rally keys …`: API keys made, listed and revoked from the command line, by whoever runs the
//! server — how the first key for every campaign is made before anyone is an admin, and how a
//! leaked key is revoked without a browser.
//!
//! It opens the store the server uses (the same `--data-dir` or `--redis-url`) and acts on it
//! directly. In Redis mode that works while the servers run (every request reads its key from
//! Redis). The embedded store is one file that one process holds at a time: stop the server
//! first, or make the key in the page.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use clap::{Subcommand, ValueEnum};
use rally_app::model::{Actor, CampaignId, UserId};
use rally_app::protocol::api_keys::{CreateApiKey, KeyAccess};

use crate::api_keys::{ApiKeys, CreateKeyError, MadeAs, OPERATOR_ID};
use crate::clock;
use crate::redis::RedisLink;
use crate::store::embedded::EmbeddedStore;
use crate::store::redis::RedisStore;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Make a key and print its token (shown this once).
    Create {
        /// What uses it ("CMS", "Nightly report").
        #[arg(long)]
        name: String,
        /// `read`, or `write` (read and change, as an editor).
        #[arg(long, value_enum)]
        access: AccessArg,
        /// A campaign it works on (repeat for more).
        #[arg(long = "campaign", required_unless_present = "all_campaigns")]
        campaigns: Vec<String>,
        /// Every campaign, present and future.
        #[arg(long, conflicts_with = "campaigns")]
        all_campaigns: bool,
    },
    /// Every key: id, name, access, campaigns, last use.
    List,
    /// Revoke a key: refused from the next request on.
    Revoke {
        /// The key's id (`rally keys list`; the part of its token after `rk_`).
        id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AccessArg {
    Read,
    Write,
}

/// Why the command failed (main prints it and exits non-zero).
#[derive(Debug, thiserror::Error)]
pub enum KeyCommandError {
    #[error("cannot open the store: {0}")]
    Open(String),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who keys made here were made by.
fn operator() -> Actor {
    Actor {
        user_id: UserId::parse(OPERATOR_ID).expect("a valid id"),
        display_name: "Server operator".into(),
    }
}

/// Run a keys command against the store at `data_dir`, or Redis at `redis_url`; what to print.
pub async fn run(
    command: &KeysCommand,
    data_dir: &Path,
    redis_url: Option<&str>,
) -> Result<String, KeyCommandError> {
    match redis_url {
        Some(url) => {
            let link = RedisLink::connect(url)
                .await
                .map_err(|err| KeyCommandError::Open(err.to_string()))?;
            act(command, ApiKeys::new(Arc::new(RedisStore::new(link)))).await
        }
        None => {
            std::fs::create_dir_all(data_dir)
                .map_err(|err| KeyCommandError::Open(format!("{}: {err}", data_dir.display())))?;
            let store = EmbeddedStore::open(data_dir).map_err(|err| {
                KeyCommandError::Open(format!(
                    "{}: {err} (is the server running? It holds the file: stop it first)",
                    data_dir.display()
                ))
            })?;
            let outcome = act(command, ApiKeys::new(Arc::new(store.clone()))).await;
            // Let go of the file before returning, so a server can start right after.
            store.close().await?;
            outcome
        }
    }
}

async fn act(command: &KeysCommand, keys: ApiKeys) -> Result<String, KeyCommandError> {
    match command {
        KeysCommand::Create {
            name,
            access,
            campaigns,
            all_campaigns,
        } => {
            let campaigns = campaigns
                .iter()
                .map(|id| {
                    CampaignId::parse(id)
                        .map_err(|err| KeyCommandError::Refused(format!("--campaign {id}: {err}")))
                })
                .collect::<Result<_, _>>()?;
            let access = match access {
                AccessArg::Read => KeyAccess::Read,
                AccessArg::Write => KeyAccess::Write,
            };
            let asked = CreateApiKey {
                name: name.clone(),
                access,
                campaigns,
                all_campaigns: *all_campaigns,
            };
            let (name, reach) = asked
                .checked()
                .map_err(|err| KeyCommandError::Refused(err.message))?;
            let made = keys
                .create(
                    name,
                    access,
                    reach,
                    (operator(), MadeAs::Operator),
                    clock::now(),
                )
                .await
                .map_err(|err| match err {
                    CreateKeyError::TooMany(message) => KeyCommandError::Refused(message),
                    CreateKeyError::Store(err) => KeyCommandError::Store(err),
                })?;
            Ok(format!(
                "{}\nThat is key {} ({}). Keep the token secret: it is shown only this once.\n",
                made.token, made.key.id, made.key.name
            ))
        }
        KeysCommand::List => {
            let mut all = keys.all().await?;
            all.sort_by_key(|key| key.created_at);
            let mut out = String::new();
            for key in all.iter().map(|key| key.summary()) {
                let reach = if key.all_campaigns {
                    "all campaigns".to_owned()
                } else {
                    key.campaigns
                        .iter()
                        .map(CampaignId::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let used = key
                    .last_used_at
                    .map_or("never used".to_owned(), |at| format!("used {at}"));
                let access = match key.access {
                    KeyAccess::Read => "read",
                    KeyAccess::Write => "write",
                };
                let _ = writeln!(
                    out,
                    "{}\t{}\t{access}\t{reach}\tby {}\t{used}",
                    key.id, key.name, key.created_by.display_name
                );
            }
            if out.is_empty() {
                out.push_str("No API keys.\n");
            }
            Ok(out)
        }
        KeysCommand::Revoke { id } => match keys.revoke(id).await? {
            Some(key) => Ok(format!("Revoked key {} ({}).\n", key.id, key.name)),
            None => Err(KeyCommandError::Refused(format!("no API key {id}"))),
        },
    }
}
