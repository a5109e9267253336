//! Rally's domain types, shared by the server and the browser.

mod ids;
mod timestamp;

pub use ids::{
    CampaignId, CampaignIdError, EventId, EventIdError, RequestId, RequestIdError,
    MAX_CAMPAIGN_ID_LEN, MAX_REQUEST_ID_LEN,
};
pub use timestamp::{Timestamp, TimestampError};
