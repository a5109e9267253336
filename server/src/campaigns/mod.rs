//! Campaign state: one writer task per loaded campaign, and the manager that finds or starts
//! them.
//!
//! - [`access`]: who may see a campaign, list it, and in which role, pure.
//! - [`core`]: the state machine, pure — validation order, permissions, conflicts, versions.
//! - [`presence`]: who is watching and when to say so, pure.
//! - [`history`]: recent events encoded once, shared with subscribers' connections.
//! - `changelog`: the complete log read back — any past version, pages, diffs (`diff`, pure),
//!   reverts. [`retention`]: forgetting what is older than `--history-retention-days`.
//! - `writer`: the task around the core — its loop and one method per command; `commit`: how
//!   its writes become durable (the race between instances included); `reads`: what it answers
//!   without changing anything.
//! - `command`: what a writer is asked and told, and what it answers.
//! - [`invites`]: the invite links a campaign keeps, pure.
//! - `manager`: [`StateManager`], the front door; writers retire after an idle period, so
//!   memory holds only campaigns someone is looking at.

pub mod access;
pub mod changelog;
mod command;
mod commit;
pub mod core;
mod diff;
pub mod history;
pub mod invites;
mod manager;
pub mod presence;
mod reads;
pub mod retention;
mod writer;

pub use access::{Caller, KeyBond};
pub use command::{Backfill, CampaignGauges, Subscription};
pub use history::EncodedHistory;
pub use manager::{StateManager, REQUEST_TIMEOUT};
pub use presence::ConnectionId;
pub use writer::{WriterConfig, SUBSCRIBER_BUFFER};
