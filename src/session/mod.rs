//! Protocol rules with state, sans-IO: what a session protocol does with a parsed message,
//! returned as values for the runtime to carry out. Nothing here reads a clock, draws a random
//! number or touches a socket: `now` and randomness are passed in.

pub mod bayeux;
pub mod socketio;
