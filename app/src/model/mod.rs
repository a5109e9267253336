//! Rally's domain types, shared by the server and the browser.

mod access;
mod campaign;
mod change_read;
mod describe;
mod history;
mod ids;
mod invite;
pub mod limits;
#[cfg(feature = "ssr")]
mod schema;
mod text;
mod timestamp;
mod write;

pub use access::{DisplayName, Member, Presence, Role, Viewer, PRESENCE_LIST_MAX};
pub use campaign::{
    json_depth, merge_patch, merge_patch_between, Actor, ApplyError, CampaignEvent, CampaignState,
    CampaignStatus, Change, ConfigMode, Feature, FieldUpdates, Idempotency, SectionName, TextField,
    Visibility,
};
pub(crate) use change_read::required;
pub use describe::{describe_change, describe_event};
pub use history::{ContentField, Restored, Revert, RevertCampaign};
pub use ids::{
    CampaignId, CampaignIdError, EditId, EditIdError, EventId, EventIdError, IdempotencyKey,
    IdempotencyKeyError, RequestId, RequestIdError, UserId, UserIdError, MAX_CAMPAIGN_ID_LEN,
    MAX_REQUEST_ID_LEN,
};
pub use invite::{
    Invite, InviteId, InviteIdError, InviteStatus, InviteTerms, InviteUse, MAX_INVITE_ID_LEN,
};
pub use text::{LengthMismatch, TextEdit, TextStep};
pub use timestamp::{Timestamp, TimestampError};
pub use write::{
    check_text, ConfigChange, CreateCampaign, FeatureChange, FeatureOp, Handover, MemberChange,
    TextChange, UpdateFields, Write,
};
