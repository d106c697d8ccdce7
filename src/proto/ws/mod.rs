//! WebSocket (RFC 6455), server side: handshake, frame codec, incremental UTF-8 and the
//! receive state machine. Sans-IO: nothing here touches a socket or a clock.

pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod reader;
pub mod utf8;
