//! `flood --transport socketio --socketio-transport websocket` against a real edgecomet (started
//! in this test process): 1,000 Socket.IO clients, each on its own WebSocket (open packet,
//! CONNECT with `auth.channels`, events), with a publish load through the native `POST /pub`;
//! every message received once and in order (each event carrying the recovery offset as a last
//! argument, on by default), the report whole. A test binary of its own, so that the server
//! memory flood reads is that of this run alone.

mod common;

#[test]
fn socketio_websocket_thousand_clients_with_a_publish_load() {
    let r = common::thousand_connections_with("socketio", &["--socketio-transport", "websocket"]);
    assert_eq!(r["socketio_transport"], "websocket");
    assert_eq!(r["params"]["socketio_path"], "/socket.io/");
}
