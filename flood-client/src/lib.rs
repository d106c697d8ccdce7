//! flood, the client toolkit of edgecomet: the `flood` load generator's coordinator and
//! workers, and the pieces the benchmark tools (`bench/`) share with it.

pub mod bayeux;
pub mod cli;
pub mod coordinator;
pub mod engine;
pub mod http;
pub mod kcheck;
pub mod longpoll;
pub mod memory;
pub mod msg;
pub mod plan;
pub mod plot;
pub mod preflight;
pub mod publish;
pub mod report;
pub mod sse;
pub mod sys;
pub mod ws;
