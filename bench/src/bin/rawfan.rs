//! `rawfan`: the floor under a broadcast to many WebSocket subscribers, for `bench/c1m/run.sh
//! SERVER=raw`: what the kernel and the machine cost when the server does nothing but the
//! syscalls.
//!
//! It speaks just enough of edgecomet's wire for `flood` to run against it unchanged: a
//! WebSocket upgrade (`GET` with `Sec-WebSocket-Key`; the path is not looked at, every
//! subscriber gets every message) and `POST /pub/...` (any path; the body is the message). A
//! publish is sent as one UDP datagram to every process, and each process writes the same
//! pre-framed text frame to each of its subscribers with one `write(2)` each, in a tight loop
//! with no event loop turn in between. No history, no ids, no broker, no slow-consumer
//! handling: nothing edgecomet does beyond the write.
//!
//! `--processes N` runs N processes with one SO_REUSEPORT listener each (the open-files cap is
//! per process), like `edgecomet --processes N --workers 1`. Each process reports on stderr how
//! long its write loop took for every message.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Command, ExitCode};
use std::time::Instant;

use edgecomet::proto::ws::frame::{OP_TEXT, frame};
use edgecomet::proto::ws::handshake::accept_key;
use edgecomet_bench::{Args, die};
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

const HELP: &str = "\
rawfan: a bare write(2)-loop broadcast server, the baseline of bench/c1m/run.sh SERVER=raw

  --listen ADDR        address to listen on [127.0.0.1:8080]
  --processes N        processes, one SO_REUSEPORT listener each [1]
  --ctrl-port P        the processes tell each other of a publish over UDP on
                       127.0.0.1:P .. P+N-1 [the listen port + 100]

  A WebSocket upgrade (any path) subscribes to every message; POST (any path) publishes its
  body (at most 60,000 bytes) to every subscriber of every process; anything else is a 404.
";

/// Request heads and POST bodies beyond this close the connection.
const MAX_REQUEST: usize = 64 * 1024;
/// A publish travels as one datagram.
const MAX_BODY: usize = 60_000;

const LISTENER: Token = Token(usize::MAX);
const CTRL: Token = Token(usize::MAX - 1);

fn main() -> ExitCode {
    let mut args = Args::from_env();
    if args.flag("--help") || args.flag("-h") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let listen: SocketAddr = args.get("--listen", "127.0.0.1:8080".parse().expect("addr"));
    let processes: u16 = args.get("--processes", 1);
    let ctrl_port: u16 = args.get("--ctrl-port", listen.port().saturating_add(100));
    let child: Option<u16> = args.opt("--child");
    args.finish();
    if processes == 0 || processes > 1000 {
        die("--processes is 1..1000");
    }
    if u32::from(ctrl_port) + u32::from(processes) > 65536 {
        die("--ctrl-port + --processes goes past port 65535");
    }
    let ctrl: Vec<SocketAddr> = (0..processes)
        .map(|i| SocketAddrV4::new(Ipv4Addr::LOCALHOST, ctrl_port + i).into())
        .collect();
    match child {
        Some(i) if i < processes => match serve(listen, i, &ctrl) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rawfan[{i}]: {e}");
                ExitCode::FAILURE
            }
        },
        Some(_) => die("--child is below --processes"),
        None => launch(listen, processes, ctrl_port),
    }
}

/// Starts the processes and waits for them; each one ends with this one (PR_SET_PDEATHSIG).
fn launch(listen: SocketAddr, processes: u16, ctrl_port: u16) -> ExitCode {
    let exe = std::env::current_exe().unwrap_or_else(|e| die(&format!("own path: {e}")));
    let mut children = Vec::new();
    for i in 0..processes {
        let c = Command::new(&exe)
            .args(["--listen", &listen.to_string()])
            .args(["--processes", &processes.to_string()])
            .args(["--ctrl-port", &ctrl_port.to_string()])
            .args(["--child", &i.to_string()])
            .spawn();
        match c {
            Ok(c) => children.push(c),
            Err(e) => die(&format!("starting process {i}: {e}")),
        }
    }
    eprintln!(
        "rawfan: {processes} processes listening on {listen}, pids {}",
        children
            .iter()
            .map(|c| c.id().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut failed = false;
    for mut c in children {
        failed |= !c.wait().is_ok_and(|s| s.success());
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

enum Kind {
    /// Reading a request head (and a POST's body).
    Http,
    /// Upgraded: at this index of `subs`.
    Sub(usize),
}

struct Conn {
    sock: TcpStream,
    buf: Vec<u8>,
    kind: Kind,
}

struct Proc {
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// The subscribers' fds, written in this order; `owner[i]` is the token of `subs[i]`.
    subs: Vec<RawFd>,
    owner: Vec<usize>,
    ctrl: UdpSocket,
    peers: Vec<SocketAddr>,
    index: u16,
}

fn serve(listen: SocketAddr, index: u16, peers: &[SocketAddr]) -> io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } == 1 {
        return Ok(()); // the launcher is already gone
    }
    flood::sys::raise_nofile();
    let mut listener = edgecomet::server::bind_reuseport(listen, 65535)?;
    let mut p = Proc {
        conns: Vec::new(),
        free: Vec::new(),
        subs: Vec::new(),
        owner: Vec::new(),
        ctrl: UdpSocket::bind(peers[usize::from(index)])?,
        peers: peers.to_vec(),
        index,
    };
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    poll.registry()
        .register(&mut p.ctrl, CTRL, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None)
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        for ev in events.iter() {
            match ev.token() {
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut sock, _)) => {
                            let _ = sock.set_nodelay(true);
                            let key = p.free.pop().unwrap_or(p.conns.len());
                            poll.registry()
                                .register(&mut sock, Token(key), Interest::READABLE)?;
                            let c = Conn {
                                sock,
                                buf: Vec::new(),
                                kind: Kind::Http,
                            };
                            if key == p.conns.len() {
                                p.conns.push(Some(c));
                            } else {
                                p.conns[key] = Some(c);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // EMFILE and the like: the backlog keeps the rest.
                        Err(_) => break,
                    }
                },
                CTRL => p.on_ctrl(),
                Token(key) => {
                    if !p.on_readable(key) {
                        p.close(&poll, key);
                    }
                }
            }
        }
    }
}

impl Proc {
    /// Reads what `key` sent; false when it is to be closed.
    fn on_readable(&mut self, key: usize) -> bool {
        let Some(c) = self.conns.get_mut(key).and_then(Option::as_mut) else {
            return true;
        };
        let mut chunk = [0u8; 4096];
        loop {
            match c.sock.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    if let Kind::Http = c.kind {
                        c.buf.extend_from_slice(&chunk[..n]);
                        if c.buf.len() > MAX_REQUEST {
                            return false;
                        }
                    } // a subscriber's frames (a close at the end) are not looked at
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        while self.conns[key]
            .as_ref()
            .is_some_and(|c| matches!(c.kind, Kind::Http))
        {
            match self.request(key) {
                Ok(true) => {}
                Ok(false) => break,
                Err(()) => return false,
            }
        }
        true
    }

    /// Answers the request at the start of `key`'s buffer: Ok(true) when one was answered,
    /// Ok(false) when it is not whole yet, Err when the connection is to be closed.
    fn request(&mut self, key: usize) -> Result<bool, ()> {
        let c = self.conns[key].as_mut().ok_or(())?;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let head = match req.parse(&c.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(_) => return Err(()),
        };
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        if req.method == Some("GET")
            && let Some(k) = header("sec-websocket-key")
        {
            let mut resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                Connection: Upgrade\r\nSec-WebSocket-Accept: "
                .to_vec();
            resp.extend_from_slice(&accept_key(k));
            resp.extend_from_slice(b"\r\n\r\n");
            write_all(&mut c.sock, &resp)?;
            c.buf = Vec::new();
            c.kind = Kind::Sub(self.subs.len());
            self.subs.push(c.sock.as_raw_fd());
            self.owner.push(key);
            return Ok(false);
        }
        if req.method == Some("POST") {
            let len: usize = header("content-length")
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
                .ok_or(())?;
            if len > MAX_BODY {
                write_all(
                    &mut c.sock,
                    b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )?;
                return Err(());
            }
            if c.buf.len() < head + len {
                return Ok(false);
            }
            let body = c.buf[head..head + len].to_vec();
            c.buf.drain(..head + len);
            for peer in &self.peers {
                // A datagram to a process that is gone fails here; that process has no
                // subscribers left to lose.
                let _ = self.ctrl.send_to(&body, *peer);
            }
            write_all(&mut c.sock, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(true);
        }
        c.buf.drain(..head);
        write_all(
            &mut c.sock,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        )?;
        Ok(true)
    }

    /// Every publish datagram: framed once, written to every subscriber.
    fn on_ctrl(&mut self) {
        let mut buf = vec![0u8; 65536];
        loop {
            let n = match self.ctrl.recv_from(&mut buf) {
                Ok((n, _)) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let f = frame(OP_TEXT, &buf[..n]);
            let t0 = Instant::now();
            let mut short = 0u64;
            for &fd in &self.subs {
                // SAFETY: fd is an open socket owned by this process (removed from `subs`
                // before it is closed); f is a live buffer of f.len() bytes.
                let w = unsafe { libc::write(fd, f.as_ptr().cast(), f.len()) };
                if w != f.len() as isize {
                    short += 1;
                }
            }
            eprintln!(
                "rawfan[{}]: {} bytes to {} subscribers in {:.1} ms ({short} writes short or failed)",
                self.index,
                f.len(),
                self.subs.len(),
                t0.elapsed().as_secs_f64() * 1e3
            );
        }
    }

    fn close(&mut self, poll: &Poll, key: usize) {
        let Some(mut c) = self.conns.get_mut(key).and_then(Option::take) else {
            return;
        };
        if let Kind::Sub(i) = c.kind {
            self.subs.swap_remove(i);
            self.owner.swap_remove(i);
            if let Some(&moved) = self.owner.get(i)
                && let Some(m) = self.conns[moved].as_mut()
            {
                m.kind = Kind::Sub(i);
            }
        }
        let _ = poll.registry().deregister(&mut c.sock);
        self.free.push(key);
    }
}

/// Writes a short response whole (a fresh socket's buffer takes it; anything else closes).
fn write_all(sock: &mut TcpStream, b: &[u8]) -> Result<(), ()> {
    match sock.write(b) {
        Ok(n) if n == b.len() => Ok(()),
        _ => Err(()),
    }
}
