//! Bayeux sessions.

pub mod store;
