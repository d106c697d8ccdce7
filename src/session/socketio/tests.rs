//! The session rules without sockets: time is a number, the server an [`Env`] that records.

use super::*;

#[derive(Default)]
struct Rec {
    connects: Vec<(usize, String)>,
    disconnects: Vec<usize>,
    published: Vec<(String, String)>,
    refuse: Option<String>,
}

impl Env for Rec {
    fn connect(&mut self, nsp: usize, auth: &str) -> Result<Granted, String> {
        self.connects.push((nsp, auth.to_string()));
        match &self.refuse {
            Some(e) => Err(e.clone()),
            None => Ok(Granted {
                sid: "sock1".to_string(),
                pid: (auth == "{\"recover\":1}").then(|| "p1".to_string()),
            }),
        }
    }
    fn disconnect(&mut self, nsp: usize) {
        self.disconnects.push(nsp);
    }
    fn publish(&mut self, channel: &str, data: &str) -> Result<(), String> {
        self.published.push((channel.to_string(), data.to_string()));
        Ok(())
    }
}

fn settings(conformance: bool) -> Settings {
    Settings {
        ping_interval_ms: 300,
        ping_timeout_ms: 200,
        connect_timeout_ms: 1000,
        max_payload: 1_000_000,
        namespaces: vec!["/".into(), "/custom".into()],
        conformance,
        client_publish: true,
        recovery_ms: 0,
        max_attachments: 10,
    }
}

fn texts(s: &mut Session) -> Vec<String> {
    s.take_outbox()
        .into_iter()
        .map(|o| match o {
            Out::Text(b) => String::from_utf8(b.to_vec()).unwrap(),
            Out::Binary(b) => format!("bin{:?}", b.to_vec()),
        })
        .collect()
}

fn session(conformance: bool) -> (Session, Settings, Rec) {
    let st = settings(conformance);
    (
        Session::new(1, 42, Transport::WebSocket, 0, &st),
        st,
        Rec::default(),
    )
}

#[test]
fn connect_echoes_auth_in_conformance_mode() {
    let (mut s, st, mut env) = session(true);
    s.on_text(b"40{\"token\":\"123\"}", false, 10, &st, &mut env)
        .unwrap();
    assert_eq!(
        texts(&mut s),
        ["40{\"sid\":\"sock1\"}", "42[\"auth\",{\"token\":\"123\"}]"]
    );
    s.on_text(b"40/custom,", false, 10, &st, &mut env).unwrap();
    assert_eq!(
        texts(&mut s),
        ["40/custom,{\"sid\":\"sock1\"}", "42/custom,[\"auth\",{}]"]
    );
    s.on_text(b"40/random", false, 10, &st, &mut env).unwrap();
    assert_eq!(
        texts(&mut s),
        ["44/random,{\"message\":\"Invalid namespace\"}"]
    );
    assert_eq!(
        env.connects,
        [(0, "{\"token\":\"123\"}".into()), (1, String::new())]
    );
    // Twice the same namespace: the reference server closes.
    assert!(s.on_text(b"40", false, 10, &st, &mut env).is_err());
}

#[test]
fn the_private_id_is_in_the_connect_reply() {
    let (mut s, st, mut env) = session(false);
    s.on_text(b"40{\"recover\":1}", false, 0, &st, &mut env)
        .unwrap();
    assert_eq!(texts(&mut s), ["40{\"sid\":\"sock1\",\"pid\":\"p1\"}"]);
}

#[test]
fn refused_connect_is_a_connect_error() {
    let (mut s, st, mut env) = session(false);
    env.refuse = Some("{\"message\":\"no\"}".into());
    s.on_text(b"40", false, 0, &st, &mut env).unwrap();
    assert_eq!(texts(&mut s), ["44{\"message\":\"no\"}"]);
    assert!(!s.joined(0));
    // Still not connected: events are refused, and the connect timeout still runs.
    assert!(s.on_text(b"42[\"x\"]", false, 0, &st, &mut env).is_err());
    assert_eq!(s.due(), 300);
}

#[test]
fn events_and_acks_in_conformance_mode() {
    let (mut s, st, mut env) = session(true);
    s.on_text(b"40", false, 0, &st, &mut env).unwrap();
    texts(&mut s);
    s.on_text(
        b"42[\"message\",1,\"2\",{\"3\":[true]}]",
        false,
        0,
        &st,
        &mut env,
    )
    .unwrap();
    assert_eq!(
        texts(&mut s),
        ["42[\"message-back\",1,\"2\",{\"3\":[true]}]"]
    );
    s.on_text(b"42[\"message\"]", false, 0, &st, &mut env)
        .unwrap();
    assert_eq!(texts(&mut s), ["42[\"message-back\"]"]);
    s.on_text(
        b"42456[\"message-with-ack\",1,\"2\",{\"3\":[false]}]",
        false,
        0,
        &st,
        &mut env,
    )
    .unwrap();
    assert_eq!(texts(&mut s), ["43456[1,\"2\",{\"3\":[false]}]"]);
    // Space before the first comma.
    s.on_text(b"429[\"message-with-ack\" ,1]", false, 0, &st, &mut env)
        .unwrap();
    assert_eq!(texts(&mut s), ["439[1]"]);
    // A name with a comma in it.
    s.on_text(b"42[\"a,b\",1]", false, 0, &st, &mut env)
        .unwrap();
    assert!(texts(&mut s).is_empty());
}

#[test]
fn binary_attachments_are_reassembled() {
    let (mut s, st, mut env) = session(true);
    s.on_text(b"40", false, 0, &st, &mut env).unwrap();
    texts(&mut s);
    let head =
        "452-[\"message\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]";
    s.on_text(head.as_bytes(), false, 0, &st, &mut env).unwrap();
    assert!(!s.has_out());
    s.on_binary(Bytes::from_static(&[1, 2, 3]), &st, &mut env)
        .unwrap();
    s.on_binary(Bytes::from_static(&[4, 5, 6]), &st, &mut env)
        .unwrap();
    assert_eq!(
        texts(&mut s),
        [
            "452-[\"message-back\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
            "bin[1, 2, 3]",
            "bin[4, 5, 6]"
        ]
    );
    let head = "452-789[\"message-with-ack\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]";
    s.on_text(head.as_bytes(), false, 0, &st, &mut env).unwrap();
    // Over polling an attachment comes as `b` + base64.
    s.on_text(b"bAQID", true, 0, &st, &mut env).unwrap();
    s.on_binary(Bytes::from_static(&[4]), &st, &mut env)
        .unwrap();
    assert_eq!(
        texts(&mut s),
        [
            "462-789[{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
            "bin[1, 2, 3]",
            "bin[4]"
        ]
    );
    // Attachment counts that lie: a text packet while attachments are due, or a binary
    // message nobody announced.
    s.on_text(head.as_bytes(), false, 0, &st, &mut env).unwrap();
    assert!(
        s.on_text(b"42[\"message\"]", false, 0, &st, &mut env)
            .is_err()
    );
    let (mut s, st, mut env) = session(true);
    s.on_text(b"40", false, 0, &st, &mut env).unwrap();
    assert!(
        s.on_binary(Bytes::from_static(&[1]), &st, &mut env)
            .is_err()
    );
}

#[test]
fn bad_packets_close() {
    for bad in [
        &b"4abc"[..],
        b"42{}",
        b"42abc[\"message-with-ack\",1]",
        b"abc",
        b"",
        b"0",
    ] {
        let (mut s, st, mut env) = session(true);
        s.on_text(b"40", false, 0, &st, &mut env).unwrap();
        assert!(s.on_text(bad, false, 0, &st, &mut env).is_err(), "{bad:?}");
    }
    // A CONNECT_ERROR from a client is ignored, as the reference server does.
    let (mut s, st, mut env) = session(true);
    s.on_text(b"40", false, 0, &st, &mut env).unwrap();
    texts(&mut s);
    s.on_text(b"44{}", false, 0, &st, &mut env).unwrap();
    assert!(texts(&mut s).is_empty());
}

#[test]
fn attachments_are_bounded_by_the_payload_limit() {
    let (mut s, mut st, mut env) = session(true);
    st.max_payload = 10;
    s.on_text(b"40", false, 0, &st, &mut env).unwrap();
    s.on_text(
        b"452-[\"message\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
        false,
        0,
        &st,
        &mut env,
    )
    .unwrap();
    s.on_binary(Bytes::from_static(&[0; 6]), &st, &mut env)
        .unwrap();
    assert!(
        s.on_binary(Bytes::from_static(&[0; 6]), &st, &mut env)
            .is_err()
    );
}

#[test]
fn disconnect_keeps_the_session() {
    let (mut s, st, mut env) = session(true);
    s.on_text(b"40", false, 0, &st, &mut env).unwrap();
    s.on_text(b"40/custom,", false, 0, &st, &mut env).unwrap();
    texts(&mut s);
    s.on_text(b"41/custom,", false, 0, &st, &mut env).unwrap();
    assert_eq!(env.disconnects, [1]);
    s.on_text(b"42[\"message\",\"x\"]", false, 0, &st, &mut env)
        .unwrap();
    assert_eq!(texts(&mut s), ["42[\"message-back\",\"x\"]"]);
    assert!(
        s.on_text(b"42/custom,[\"message\"]", false, 0, &st, &mut env)
            .is_err()
    );
}

#[test]
fn heartbeat_and_connect_timeout() {
    let (mut s, st, mut env) = session(false);
    assert_eq!(s.due(), 300);
    s.timer(300, &st).unwrap();
    assert_eq!(texts(&mut s), ["2"]);
    assert_eq!(s.due(), 500);
    s.on_text(b"3", false, 450, &st, &mut env).unwrap();
    assert_eq!(s.due(), 750);
    s.on_text(b"40", false, 460, &st, &mut env).unwrap();
    s.timer(750, &st).unwrap();
    s.timer(900, &st).unwrap();
    assert_eq!(s.timer(950, &st), Err(Closed::PingTimeout));
    // No CONNECT: closed at the connect timeout even while pongs come.
    let (mut s, st, mut env) = session(false);
    let mut t;
    loop {
        t = s.due();
        match s.timer(t, &st) {
            Ok(()) => s.on_text(b"3", false, t, &st, &mut env).unwrap(),
            Err(e) => {
                assert_eq!(e, Closed::ConnectTimeout);
                break;
            }
        }
    }
    assert_eq!(t, 1000);
}

#[test]
fn client_publish_is_acked() {
    let (mut s, st, mut env) = session(false);
    s.on_text(b"40", false, 0, &st, &mut env).unwrap();
    texts(&mut s);
    s.on_text(
        b"427[\"publish\",\"news\",{\"a\":1}]",
        false,
        0,
        &st,
        &mut env,
    )
    .unwrap();
    assert_eq!(env.published, [("news".into(), "{\"a\":1}".into())]);
    assert_eq!(texts(&mut s), ["437[{\"ok\":true}]"]);
    s.on_text(b"428[\"publish\",5]", false, 0, &st, &mut env)
        .unwrap();
    assert_eq!(
        texts(&mut s),
        ["438[{\"error\":\"publish takes a channel name and data\"}]"]
    );
    let mut off = settings(false);
    off.client_publish = false;
    s.on_text(b"429[\"publish\",\"news\",1]", false, 0, &off, &mut env)
        .unwrap();
    assert_eq!(
        texts(&mut s),
        ["439[{\"error\":\"client publishing is off (--client-publish)\"}]"]
    );
}

/// A session is most of what a Socket.IO connection costs beyond a native subscriber; growing it
/// is a decision, so this test pins it.
#[test]
fn session_size_is_pinned() {
    assert_eq!(std::mem::size_of::<Session>(), 112);
}
