//! One component per routed page, plus the pieces pages share.

mod before_hydration;
mod campaign;
pub(crate) mod erase;
mod invite;
mod landing;
mod not_found;
mod ops;
mod session;

pub use campaign::CampaignPage;
pub use invite::InvitePage;
pub use landing::Landing;
pub use not_found::NotFound;
pub use ops::OpsPage;
pub use session::{ConnectionBadge, SignIn, UserBadge};
