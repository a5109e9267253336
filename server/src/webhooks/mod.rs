//! Webhooks: every change of a campaign (or of every campaign), POSTed to the endpoints
//! registered for it, signed, in version order, retried, and logged for their owners.
//!
//! - `endpoints`: register, list, remove, ask for a redelivery (what the API calls).
//! - `deliverer`: the background task that sends (its module doc has the delivery rules).
//! - `signing` (Standard Webhooks signatures), `retry` (backoff, pure), `address` (which hosts may
//!   receive).

mod address;
mod deliverer;
mod endpoints;
mod retry;
mod signing;

pub use deliverer::{Deliverer, WebhookSettings};
pub use endpoints::{EndpointError, Webhooks};
