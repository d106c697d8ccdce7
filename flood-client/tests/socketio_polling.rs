//! `flood --transport socketio --socketio-transport polling` against a real edgecomet (started
//! in this test process): 1,000 Socket.IO clients over Engine.IO long-polling, each on one
//! keep-alive connection (handshake `GET`, `POST` of the CONNECT, then `GET` after `GET`), with
//! a publish load through the native `POST /pub`; every message received once and in order, the
//! report whole. A test binary of its own, so that the server memory flood reads is that of
//! this run alone.

mod common;

#[test]
fn socketio_polling_thousand_clients_with_a_publish_load() {
    let r = common::thousand_connections_with("socketio", &["--socketio-transport", "polling"]);
    assert_eq!(r["socketio_transport"], "polling");
}
