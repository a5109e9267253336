//! Rally's domain types, shared by the server and the browser.

mod access;
mod campaign;
mod describe;
mod ids;
pub mod limits;
mod timestamp;
mod write;

pub use access::{DisplayName, Presence, Role, Viewer, PRESENCE_LIST_MAX};
pub use campaign::{
    json_depth, merge_patch, Actor, ApplyError, CampaignEvent, CampaignState, CampaignStatus,
    Change, ConfigMode, Feature, FieldUpdates, SectionName,
};
pub use describe::{describe_change, describe_event};
pub use ids::{
    CampaignId, CampaignIdError, EventId, EventIdError, RequestId, RequestIdError, UserId,
    UserIdError, MAX_CAMPAIGN_ID_LEN, MAX_REQUEST_ID_LEN,
};
pub use timestamp::{Timestamp, TimestampError};
pub use write::{ConfigChange, CreateCampaign, FeatureChange, FeatureOp, UpdateFields, Write};
