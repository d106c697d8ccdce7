//! `flood --transport bayeux --bayeux-transport websocket` against a real edgecomet (started in
//! this test process): 1,000 Bayeux clients, each on one WebSocket (handshake, subscribe, then
//! the connect loop in text frames), with a publish load through the native `POST /pub`; every
//! message received once and in order, the report whole. A test binary of its own, so that the
//! server memory flood reads is that of this run alone.

mod common;

#[test]
fn bayeux_websocket_thousand_clients_with_a_publish_load() {
    let r = common::thousand_connections_with("bayeux", &["--bayeux-transport", "websocket"]);
    assert_eq!(r["bayeux_transport"], "websocket");
    assert_eq!(r["params"]["bayeux_transport"], "websocket");
}
