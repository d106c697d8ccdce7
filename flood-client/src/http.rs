//! Plain HTTP/1.1 on the client side: where a response head ends ([`head_end`]), a request
//! ([`request_bytes`]) and a blocking keep-alive connection ([`HttpConn`]) for publishing and
//! for the benchmark tools' `/stats` and `/pub` calls, in plaintext or over TLS
//! ([`HttpConn::connect_tls`]: rustls' buffered client, boxed; there are only a few of these
//! connections, so their buffers do not matter).
//!
//! [`HttpConn`] is lenient on purpose (a response without `Content-Length` has an empty body):
//! it talks to the server under test and to the servers it is compared with. The strict parser
//! for what subscribers read is [`crate::longpoll::response`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};

use crate::tls::TlsClient;

/// The offset of the `\r\n\r\n` that ends the response head at the start of `buf`, if it is
/// there.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// A whole request: `Content-Length` on everything but a `GET` without a body.
pub fn request_bytes(method: &str, host: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    if method != "GET" || !body.is_empty() {
        req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    req
}

/// The byte stream under an [`HttpConn`].
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One blocking keep-alive HTTP/1.1 connection (TCP_NODELAY). Requests may be pipelined:
/// [`HttpConn::send_raw`] several, then [`HttpConn::read_response`] (or
/// [`HttpConn::read_response_within`]) once for each, in order.
pub struct HttpConn {
    sock: Stream,
    /// What was read past the last response (normally nothing).
    buf: Vec<u8>,
    /// The `Host:` of every request.
    host: String,
}

impl HttpConn {
    /// Connects within 5 s; a read that waits longer than `read_timeout` fails.
    pub fn connect(addr: SocketAddr, host: &str, read_timeout: Duration) -> io::Result<HttpConn> {
        let sock = tcp(addr, read_timeout)?;
        Ok(HttpConn::over(Stream::Plain(sock), host))
    }

    /// [`HttpConn::connect`] over TLS with `tls`'s settings (and its session store: a
    /// reconnect resumes). The handshake is done here, so that a refused certificate is this
    /// call's error.
    pub fn connect_tls(
        addr: SocketAddr,
        host: &str,
        read_timeout: Duration,
        tls: &TlsClient,
    ) -> io::Result<HttpConn> {
        let mut sock = tcp(addr, read_timeout)?;
        let mut conn = ClientConnection::new(tls.config.clone(), tls.name.clone())
            .map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        let s = StreamOwned::new(conn, sock);
        Ok(HttpConn::over(Stream::Tls(Box::new(s)), host))
    }

    fn over(sock: Stream, host: &str) -> HttpConn {
        HttpConn {
            sock,
            buf: Vec::with_capacity(4096),
            host: host.to_string(),
        }
    }

    /// Writes a complete, pre-built request.
    pub fn send_raw(&mut self, req: &[u8]) -> io::Result<()> {
        self.sock.write_all(req)
    }

    /// Reads one response; returns the status and the body (`Content-Length` bytes, none if
    /// the head has no length).
    pub fn read_response(&mut self) -> io::Result<(u16, Vec<u8>)> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(r) = self.take_response()? {
                return Ok(r);
            }
            let what = if head_end(&self.buf).is_some() {
                "connection closed within a response body"
            } else {
                "connection closed before a complete response head"
            };
            self.fill(&mut chunk, what)?;
        }
    }

    /// [`HttpConn::read_response`], waiting at most `wait` for it: `None` if it has not (all)
    /// come by then; what was read of it stays for the next call. The wait is `ppoll(2)`'s,
    /// to the microsecond: a socket read timeout (`SO_RCVTIMEO`) counts in the kernel's ticks
    /// (4 ms at `HZ=250`), which would make a publisher waiting for answers until its next
    /// message is due send that message up to a tick late.
    pub fn read_response_within(&mut self, wait: Duration) -> io::Result<Option<(u16, Vec<u8>)>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(r) = self.take_response()? {
                return Ok(Some(r));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !readable(self.sock.tcp(), left)? {
                return Ok(None);
            }
            self.read_available()?;
        }
    }

    /// The first response in `buf`, taken out of it, if it is all there.
    fn take_response(&mut self) -> io::Result<Option<(u16, Vec<u8>)>> {
        let Some(p) = head_end(&self.buf) else {
            return Ok(None);
        };
        let at = p + 4;
        let head = String::from_utf8_lossy(&self.buf[..at]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line in {head:?}")))?;
        let len = content_length(&head).unwrap_or(0);
        if self.buf.len() < at + len {
            return Ok(None);
        }
        let body = self.buf[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Ok(Some((status, body)))
    }

    /// Appends to `buf` everything the socket has now, without waiting (over TLS, every
    /// record that came). End of stream is an error.
    fn read_available(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        self.sock.tcp().set_nonblocking(true)?;
        let r = loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => {
                    break Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before a complete response",
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.sock.tcp().set_nonblocking(false)?;
        r
    }

    /// Sends a request and reads the response.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        let req = request_bytes(method, &self.host, path, body);
        self.send_raw(&req)?;
        self.read_response()
    }

    /// Appends one read to `buf`; end of stream is an `UnexpectedEof` saying `what`.
    fn fill(&mut self, chunk: &mut [u8], what: &str) -> io::Result<()> {
        let n = self.sock.read(chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, what));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// Whether `sock` has something to read (or an end or error to report) within `wait`.
fn readable(sock: &TcpStream, wait: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask.
    let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        // A signal: not readable yet (the caller looks at its deadline again).
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(n > 0)
}

/// A blocking TCP connection (within 5 s, TCP_NODELAY, reads time out after `read_timeout`).
fn tcp(addr: SocketAddr, read_timeout: Duration) -> io::Result<TcpStream> {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(read_timeout))?;
    Ok(sock)
}

/// The `Content-Length` of a response head, if it has one that parses.
fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(
            request_bytes("GET", "h", "/stats", b""),
            b"GET /stats HTTP/1.1\r\nHost: h\r\n\r\n"
        );
        assert_eq!(
            request_bytes("POST", "h", "/pub/a", b"xy"),
            b"POST /pub/a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nxy"
        );
    }

    #[test]
    fn lengths() {
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n\r\nbody"), Some(15));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n"), None);
        let head = "HTTP/1.1 200 OK\r\ncontent-length:  12\r\n\r\n";
        assert_eq!(content_length(head), Some(12));
        assert_eq!(content_length("HTTP/1.1 204 No Content\r\n\r\n"), None);
    }

    #[test]
    fn a_keep_alive_exchange() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 256];
            while head_end(&got).is_none() {
                let n = s.read(&mut b).unwrap();
                got.extend_from_slice(&b[..n]);
            }
            // Two responses in one write: the second waits in the buffer.
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 404 X\r\n\r\n")
                .unwrap();
            got
        });
        let mut c = HttpConn::connect(addr, "here", Duration::from_secs(5)).unwrap();
        assert_eq!(c.request("GET", "/x", b"").unwrap(), (200, b"ok".to_vec()));
        assert_eq!(c.read_response().unwrap(), (404, Vec::new()));
        assert_eq!(
            server.join().unwrap(),
            b"GET /x HTTP/1.1\r\nHost: here\r\n\r\n"
        );
    }

    #[test]
    fn a_response_in_two_pieces_waits_for_its_end() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap();
            rx.recv().unwrap();
            s.write_all(b"ngth: 2\r\n\r\nokHTTP/1.1 201 Created\r\n\r\n")
                .unwrap();
            rx.recv().ok();
        });
        let mut c = HttpConn::connect(addr, "here", Duration::from_secs(5)).unwrap();
        // Half a head: nothing yet, and the half is kept.
        assert_eq!(
            c.read_response_within(Duration::from_millis(30)).unwrap(),
            None
        );
        tx.send(()).unwrap();
        let got = c.read_response_within(Duration::from_secs(5)).unwrap();
        assert_eq!(got, Some((200, b"ok".to_vec())));
        // The second came with it: answered from the buffer, without waiting.
        let t = Instant::now();
        let got = c.read_response_within(Duration::from_secs(5)).unwrap();
        assert_eq!(got, Some((201, Vec::new())));
        assert!(t.elapsed() < Duration::from_secs(1));
        drop(tx);
        server.join().unwrap();
    }

    #[test]
    fn a_wait_for_an_answer_ends_on_time_not_on_a_tick() {
        // SO_RCVTIMEO would round each 1 ms wait up to the kernel's tick (4 ms at HZ=250, 10 ms
        // at HZ=100); ppoll's ends within microseconds of it. The median of 21 waits, so that
        // one preempted wait on a busy machine does not decide.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let _held = std::thread::spawn(move || l.accept().map(|(s, _)| s));
        let mut c = HttpConn::connect(addr, "here", Duration::from_secs(5)).unwrap();
        let mut took: Vec<Duration> = (0..21)
            .map(|_| {
                let t = Instant::now();
                assert_eq!(
                    c.read_response_within(Duration::from_millis(1)).unwrap(),
                    None
                );
                t.elapsed()
            })
            .collect();
        took.sort();
        assert!(took[0] >= Duration::from_millis(1), "{took:?}");
        assert!(
            took[10] < Duration::from_micros(2_500),
            "median {:?}",
            took[10]
        );
    }
}
