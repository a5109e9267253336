//! What a campaign's writer is asked ([`Command`], answered on a [`Reply`]) and told
//! ([`Happening`]), and what it hands back to subscribers. The writer's mailbox carries these;
//! writer.rs has the loop that answers them.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;

use rally_app::model::{Actor, CreateCampaign, Idempotency, Invite, InviteId, Role, Write};
use rally_app::protocol::campaign::{CampaignSnapshot, SubscribeReply, WriteAck};
use rally_app::protocol::invites::CreateInvite;
use rally_app::protocol::ErrorBody;
use tokio::sync::{broadcast, oneshot};

use super::access::Caller;
use super::history::EncodedHistory;
use super::presence::ConnectionId;
use crate::bus::BusNote;
use crate::frames::{self, Frame};

/// What the manager can read about a loaded campaign without asking its task.
#[derive(Debug, Default)]
pub struct CampaignGauges {
    pub subscribers: AtomicUsize,
    /// The newest version broadcast (how far ahead of a subscriber the campaign is).
    pub latest_version: AtomicU64,
    /// The version the writer believes the store holds.
    pub durable_version: AtomicU64,
    /// Whether the campaign is public: only public campaigns are named on operator surfaces
    /// (`/metrics` labels, the ops view), which are not behind campaign access.
    pub public: AtomicBool,
}

/// Why a command was not answered by this writer.
#[derive(Debug)]
pub(super) enum WriterError {
    Rejected(ErrorBody),
    /// This writer was retiring and did not process the command; resolve a fresh writer and
    /// send again (nothing was applied).
    Retry,
}

impl From<ErrorBody> for WriterError {
    fn from(error: ErrorBody) -> Self {
        WriterError::Rejected(error)
    }
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, WriterError>>;

/// A live subscription handed to a connection.
pub struct Subscription {
    pub reply: SubscribeReply,
    /// The campaign's recent events, encoded (to catch up without asking the campaign task).
    pub history: EncodedHistory,
    /// The campaign's live counters (how far ahead of this subscriber it is).
    pub gauges: Arc<CampaignGauges>,
    /// Missed events to deliver, in order, before anything from `events`.
    pub backlog: Vec<Frame>,
    pub events: broadcast::Receiver<frames::Batch>,
}

/// Events a lagging subscriber missed (contiguous, from the version after its last), or the
/// snapshot it needs instead.
pub enum Backfill {
    Events(Vec<Frame>),
    Snapshot(Box<CampaignSnapshot>),
}

pub(super) enum Command {
    Create {
        request: CreateCampaign,
        actor: Actor,
        reply: Reply<CampaignSnapshot>,
    },
    Write {
        write: Write,
        caller: Option<Caller>,
        /// The name its sender gave it (applied once per name).
        named: Option<Idempotency>,
        reply: Reply<WriteAck>,
    },
    Subscribe {
        connection: ConnectionId,
        viewer: Option<Caller>,
        since_version: Option<u64>,
        reply: Reply<Subscription>,
    },
    Backfill {
        since_version: u64,
        caller: Option<Caller>,
        reply: Reply<Backfill>,
    },
    Snapshot {
        caller: Option<Caller>,
        reply: Reply<CampaignSnapshot>,
    },
    /// The caller's role, or `not_found` if they may not see the campaign (a snapshot's answer
    /// without copying the state).
    Role {
        caller: Option<Caller>,
        reply: Reply<Role>,
    },
    Join {
        person: Actor,
        invite: InviteId,
        reply: Reply<Role>,
    },
    MakeInvite {
        caller: Option<Caller>,
        asked: CreateInvite,
        reply: Reply<Invite>,
    },
    WithdrawInvite {
        caller: Option<Caller>,
        id: InviteId,
        reply: Reply<()>,
    },
    /// The campaign's invite links, for its owners.
    Invites {
        caller: Option<Caller>,
        reply: Reply<Vec<Invite>>,
    },
    /// What the invite link `id` offers anyone holding it, and the campaign's title.
    InviteOffer {
        id: InviteId,
        reply: Reply<(Invite, String)>,
    },
    /// Test-only: panic inside the core-handling code path.
    #[cfg(feature = "fault-injection")]
    Panic { reply: Reply<()> },
}

impl Command {
    pub(super) fn reject(self, error: WriterError) {
        match self {
            Command::Create { reply, .. } => drop(reply.send(Err(error))),
            Command::Write { reply, .. } => drop(reply.send(Err(error))),
            Command::Subscribe { reply, .. } => drop(reply.send(Err(error))),
            Command::Backfill { reply, .. } => drop(reply.send(Err(error))),
            Command::Snapshot { reply, .. } => drop(reply.send(Err(error))),
            Command::Role { reply, .. } => drop(reply.send(Err(error))),
            Command::Join { reply, .. } => drop(reply.send(Err(error))),
            Command::MakeInvite { reply, .. } => drop(reply.send(Err(error))),
            Command::WithdrawInvite { reply, .. } => drop(reply.send(Err(error))),
            Command::Invites { reply, .. } => drop(reply.send(Err(error))),
            Command::InviteOffer { reply, .. } => drop(reply.send(Err(error))),
            #[cfg(feature = "fault-injection")]
            Command::Panic { reply } => drop(reply.send(Err(error))),
        }
    }
}

/// What happens to a campaign besides requests; never refused, never lost.
#[derive(Debug, Clone)]
pub(super) enum Happening {
    /// A connection stopped following the campaign.
    Left(ConnectionId),
    /// A following connection started (`true`) or stopped publishing in the live room.
    Live(ConnectionId, bool),
    /// Another instance changed something.
    Bus(BusNote),
    /// Bus notes may have been missed: catch up from the store.
    Resync,
    /// The shared store became reachable (true) or unreachable (false).
    Writable(bool),
}
