//! Wire formats, sans-IO: bytes in, parsed items or events out. Nothing in `proto` touches a
//! socket, a clock or the worker's state, so every parser can be tested on every prefix and
//! fuzzed on its own.

pub mod bayeux;
pub mod http;
pub mod ws;
