//! Bayeux sessions.

mod client;
pub mod ids;
pub mod store;

pub use client::Out;
