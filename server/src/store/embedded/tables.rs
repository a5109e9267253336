//! The embedded store's tables and file name: what a backup copies, table by table.

use redb::TableDefinition;

pub const FILE_NAME: &str = "rally.redb";

pub const CAMPAIGNS: TableDefinition<&str, &[u8]> = TableDefinition::new("campaigns");
/// Every event of every campaign, by (campaign, version): the complete log.
pub const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
/// The campaign's state (JSON) at some versions (see [`Commit::takes_snapshot`](crate::store::Commit::takes_snapshot)).
pub const SNAPSHOTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("snapshots");
pub const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
pub const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// (user id, session id): a user's sessions, for listing.
pub const USER_SESSIONS: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_sessions");
/// API keys by id.
pub const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
/// Webhook endpoints by id.
pub const WEBHOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhooks");
