//! Rally's shared crate: the wire protocol and domain model (compiled for server and browser alike)
//! and the Leptos views (rendered on the server, hydrated in the browser).

pub mod client;
pub mod data;
pub mod model;
pub mod protocol;

mod app;
mod pages;

pub use app::{shell, App};
