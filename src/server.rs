//! Starting and stopping a server: bind one SO_REUSEPORT listener per worker, spawn the workers,
//! and on request send them `Shutdown` and wait for them within the deadline.
//!
//! Binding happens in the caller's thread so that an address in use or a permission error is
//! reported before anything runs. With port 0 the first listener picks the port and the others
//! bind that same port.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::broker::{self, Broker, BrokerConfig};
use crate::config::Config;
use crate::pubsub::hub::{Hub, HubLimits};
use crate::runtime::mailbox::{Mail, Mailbox};
use crate::runtime::shared::Shared;
use crate::runtime::worker::{Listeners, WAKER, Worker};
use crate::session::bayeux::store::{BayeuxLimits, Clients};
use crate::stats::WorkerStats;

/// What the broker's subscriber thread receives goes into the process (held weakly: messages
/// arriving during shutdown find nobody and are dropped).
struct BrokerSink(std::sync::Weak<Shared>);

impl broker::Sink for BrokerSink {
    fn deliver(&self, channel: &str, id: u64, payload: bytes::Bytes) {
        if let Some(s) = self.0.upgrade() {
            s.deliver_from_broker(channel, id, payload);
        }
    }

    fn flush(&self) {
        if let Some(s) = self.0.upgrade() {
            for mb in &s.mailboxes {
                mb.wake();
            }
        }
    }

    fn ack(&self, to: broker::AckTo, receivers: Option<u64>) {
        if let Some(mb) = self
            .0
            .upgrade()
            .and_then(|s| s.mailboxes.get(to.worker as usize).cloned())
        {
            // A full inbox: the waiting publish is answered at its timeout (504).
            let _ = mb.post(Mail::PublishAck {
                idx: to.idx,
                generation: to.generation,
                receivers,
            });
        }
    }

    fn relinked(&self) {
        if let Some(s) = self.0.upgrade() {
            s.hub.new_link_epoch();
        }
    }

    fn wake(&self, worker: u32) {
        if let Some(s) = self.0.upgrade()
            && let Some(mb) = s.mailboxes.get(worker as usize)
        {
            mb.wake();
        }
    }
}

/// How long a shutdown waits for every worker to confirm that it accepts no more publishes.
const QUIESCE_WAIT: Duration = Duration::from_secs(1);

/// Posts a control mail (made by `mail`), retrying while the inbox is full (a busy worker
/// empties it within a turn) until `until`.
fn post_retrying(mb: &Mailbox, mail: impl Fn() -> Mail, until: Instant) {
    while mb.send_now(mail()).is_err() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    cfg: Arc<Config>,
}

/// Binds a non-blocking listener with SO_REUSEADDR and SO_REUSEPORT.
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog)?;
    Ok(TcpListener::from_std(sock.into()))
}

/// Fails when something already listens on `addr` (another edgecomet would otherwise share
/// it silently through SO_REUSEPORT and take a share of the clients). Probed with a socket
/// that does not ask for SO_REUSEPORT: its bind fails on a listening port whoever holds it.
/// (Two servers starting in the same instant can still both pass; that is not guarded.)
pub fn check_not_served(addr: SocketAddr) -> io::Result<()> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    match sock.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{addr} is already served by another process (another edgecomet?). Sharing a \
                 port must be asked for: --processes P runs P processes on it, and \
                 --share-port --broker redis://... joins processes already there; otherwise \
                 stop the other one or pick another --listen"
            ),
        )),
        Err(e) => Err(e),
    }
}

/// Stops the kernel from backing this process's memory with transparent huge pages
/// (`prctl(PR_SET_THP_DISABLE)`; applies to existing and future mappings).
pub fn disable_transparent_huge_pages() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; no memory is passed.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises the soft open-files limit (RLIMIT_NOFILE) to the hard one, which an unprivileged
/// process may do; every client connection is an open file. Returns the limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return Err(io::Error::last_os_error());
        }
        if l.rlim_cur < l.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: l.rlim_max,
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(io::Error::last_os_error());
            }
            l.rlim_cur = l.rlim_max;
        }
    }
    Ok(l.rlim_cur)
}

/// Open files a server process needs besides its client connections: stdio, and per worker its
/// listeners (plain and TLS), its epoll and its waker; the broker's two sockets, the signal
/// pipe, key and certificate files read on SIGHUP, with room to spare.
pub fn files_besides_connections(workers: usize) -> u64 {
    32 + 4 * workers as u64
}

/// The warning to print when `--max-connections` needs more open files than `limit` allows.
pub fn open_files_warning(cfg: &Config, limit: u64) -> Option<String> {
    let reserve = files_besides_connections(cfg.worker_count());
    let allowed = limit.saturating_sub(reserve);
    (cfg.max_connections as u64 > allowed).then(|| {
        format!(
            "edgecomet: warning: --max-connections {} but the open-files limit is {limit} (hard \
             limit; `ulimit -Hn`, systemd LimitNOFILE=): about {allowed} connections fit; past \
             them accept(2) fails with EMFILE and accepting pauses (--accept-pause)",
            cfg.max_connections
        )
    })
}

impl Server {
    /// Binds and starts `cfg.worker_count()` workers.
    pub fn start(cfg: Config) -> io::Result<Server> {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if !cfg.share_port && cfg.listen.port() != 0 {
            check_not_served(cfg.listen)?;
        }
        if let Some(a) = cfg.tls_listen
            && !cfg.share_port
            && a.port() != 0
        {
            check_not_served(a)?;
        }
        // The certificate is read before anything listens: a file that does not load stops the
        // start with its name.
        let tls = match (&cfg.tls_listen, &cfg.tls_cert, &cfg.tls_key) {
            (Some(_), Some(cert), Some(key)) => Some(Arc::new(
                crate::tls::Certs::load(cert, key, cfg.tls_session_cache)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            )),
            _ => None,
        };
        // The keys are read before anything listens too.
        let auth = if cfg.auth_configured() {
            let a = crate::auth::Auth::load(&crate::auth::Sources::of(&cfg))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            Some(std::sync::RwLock::new(Arc::new(a)))
        } else {
            None
        };
        let cfg = Arc::new(cfg);
        let n = cfg.worker_count();
        let mut addr = cfg.listen;
        let mut parts = Vec::with_capacity(n);
        let mut mailboxes = Vec::with_capacity(n);
        let mut tls_addr = cfg.tls_listen;
        for _ in 0..n {
            let listener = bind_reuseport(addr, cfg.backlog)?;
            addr = listener.local_addr()?;
            let tls_listener = match tls_addr {
                Some(a) => {
                    let l = bind_reuseport(a, cfg.backlog)?;
                    tls_addr = Some(l.local_addr()?);
                    Some(l)
                }
                None => None,
            };
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (mailbox, inbox) = Mailbox::new(waker);
            mailboxes.push(mailbox);
            parts.push((
                poll,
                Listeners {
                    plain: listener,
                    tls: tls_listener,
                },
                inbox,
            ));
        }
        let shared = Arc::new(Shared {
            mailboxes,
            stats: (0..n).map(|_| Arc::new(WorkerStats::default())).collect(),
            conns: AtomicUsize::new(0),
            sio_sessions: AtomicUsize::new(0),
            hub: Hub::new(HubLimits {
                history: cfg.history,
                history_age: cfg.history_age,
                session_queue: cfg.session_queue as usize,
                session_ttl: cfg.session_ttl,
                max_sessions: cfg.max_sessions,
                max_channels: cfg.max_channels,
            }),
            bayeux: Clients::new(BayeuxLimits {
                max_queue: cfg.bayeux_max_queue as usize,
                max_interval: cfg.bayeux_max_interval,
                max_clients: cfg.bayeux_max_clients,
                max_channel_len: cfg.max_channel_len + 1,
                root_wildcards: cfg.bayeux_root_wildcards,
                max_subscriptions: cfg.bayeux_max_subscriptions,
            }),
            broker: std::sync::OnceLock::new(),
            draining: AtomicBool::new(false),
            quiesced: AtomicUsize::new(0),
            listening: AtomicUsize::new(0),
            start: std::time::Instant::now(),
            processes: std::sync::Mutex::new(None),
            tls,
            auth,
            push_limit: std::sync::Mutex::new(crate::auth::push::Limiter::new(
                cfg.push_rate,
                cfg.push_burst,
                cfg.push_max_sources as usize,
            )),
            sio_recovery: std::sync::Mutex::new(crate::session::socketio::recovery::Records::new(
                cfg.socketio_recovery_max,
            )),
        });
        if let Some(url) = &cfg.broker {
            let url = broker::BrokerUrl::parse(url)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = match url.tls {
                true => Some(
                    broker::link::tls_config(cfg.broker_ca.as_deref())
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
                ),
                false => None,
            };
            let weak = Arc::downgrade(&shared);
            let b = Broker::start(
                BrokerConfig {
                    url,
                    tls,
                    linger: Duration::from_millis(cfg.broker_linger_ms),
                    max_message: cfg.max_body_bytes as usize,
                    max_queued_bytes: cfg.broker_max_queued_bytes,
                    id_ttl_ms: u64::from(cfg.history_age) * 1000,
                    reply_timeout: Duration::from_secs(u64::from(cfg.broker_ack_timeout) + 1),
                },
                Box::new(BrokerSink(weak)),
            )?;
            let _ = shared.broker.set(b);
        }
        let mut threads = Vec::with_capacity(n);
        for (id, (poll, listener, inbox)) in parts.into_iter().enumerate() {
            let worker = Worker::new(id, cfg.clone(), poll, listener, inbox, shared.clone())?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("edgecomet-w{id}"))
                    .spawn(move || worker.run())?,
            );
        }
        Ok(Server {
            addr,
            tls_addr,
            shared,
            threads,
            cfg,
        })
    }

    /// The TLS address actually bound (`--tls-listen`), if any.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// SIGHUP: the certificate files are read again (with `--tls-listen`); the log line says
    /// what happened. Without TLS there is nothing to reload.
    pub fn reload(&self) -> String {
        let mut said = Vec::new();
        if let Some(t) = &self.shared.tls {
            said.push(match t.reload() {
                Ok(()) => "TLS certificate reloaded: new handshakes use it".to_string(),
                Err(e) => format!("TLS certificate NOT reloaded, the old one stays in use: {e}"),
            });
        }
        said.extend(self.shared.reload_auth(&self.cfg));
        if said.is_empty() {
            "nothing to reload".to_string()
        } else {
            said.join("; ")
        }
    }

    /// What authorization is in force, for the start-up log: said once, so that an open server
    /// is a decision someone saw.
    pub fn auth_summary(&self) -> String {
        match self.shared.auth() {
            None => "authorization: OPEN: anyone who reaches the port may publish and subscribe \
                     to any channel (see --publish-key, --token-secret, --token-public-key)"
                .to_string(),
            Some(a) => format!(
                "authorization: publishing {}; subscribing {}",
                if a.publish_keys() {
                    "needs a publish key"
                } else {
                    "OPEN (no --publish-key)"
                },
                if a.tokens() {
                    "needs a token"
                } else {
                    "OPEN (no --token-secret / --token-public-key)"
                }
            ),
        }
    }

    /// The start-up log lines: the effective limits, the listeners, the broker and the
    /// authorization in force (after the "listening on" line, which scripts read first).
    pub fn log_started(&self) {
        let c = &self.cfg;
        let nofile = open_files_limit();
        let broker = c
            .broker
            .as_deref()
            .map_or_else(|| "none".to_string(), crate::logging::redact_url);
        log::info!(
            target: "edgecomet::server",
            version = env!("CARGO_PKG_VERSION"),
            workers = self.shared.mailboxes.len(),
            max_connections = c.max_connections,
            open_files_limit = nofile,
            listen = self.addr.to_string().as_str(),
            tls_listen = self.tls_addr.map(|a| a.to_string()).unwrap_or_default().as_str(),
            broker = broker.as_str(),
            authorization = if self.shared.auth().is_some() { "on" } else { "open" },
            max_queued_bytes = c.max_queued_bytes,
            max_channels = c.max_channels,
            max_sessions = c.max_sessions;
            "started: {} worker(s), --max-connections {}, open-files limit {nofile}{}",
            self.shared.mailboxes.len(),
            c.max_connections,
            if (nofile as usize) < c.max_connections {
                " (below --max-connections: accept fails with EMFILE first; raise ulimit -n)"
            } else {
                ""
            }
        );
        log::info!(
            target: "edgecomet::server",
            listen = self.addr.to_string().as_str(), tls = false;
            "listener {} (http, ws) on every worker", self.addr
        );
        if let Some(t) = self.tls_addr {
            log::info!(
                target: "edgecomet::server",
                listen = t.to_string().as_str(), tls = true;
                "listener {t} (TLS: https, wss) on every worker"
            );
        }
        match &c.broker {
            Some(_) => log::info!(
                target: "edgecomet::server",
                broker = broker.as_str();
                "broker {broker}: scale-out through Redis pub/sub (its up/down changes are logged)"
            ),
            None => log::info!(
                target: "edgecomet::server",
                broker = "none";
                "no broker: in-process fan-out only"
            ),
        }
        log::info!(target: "edgecomet::server", "{}", self.auth_summary());
    }

    /// The address actually bound (the real port when `--listen` used port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `/stats` document, as served.
    pub fn stats_json(&self) -> String {
        self.shared.stats_json()
    }

    /// This process's totals as one line, for the launcher (`--processes`).
    pub fn stats_line(&self) -> String {
        self.shared.stats_line()
    }

    /// State shared by the workers (the launcher's child side reads and sets its stats).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Every worker's counters (live; benches and tests read them without rendering JSON).
    pub fn worker_stats(&self) -> &[Arc<WorkerStats>] {
        &self.shared.stats
    }

    /// Starts a shutdown that ends at `until`: first no publish is accepted any more
    /// (`Shared::draining`; publishes get 503) and every worker confirms it (`Mail::Quiesce`),
    /// so that every message already accepted is in the inboxes; with `--broker`, what Redis
    /// has already sent this process is taken in too. Then every worker delivers what it has,
    /// stops accepting, closes its clients (1001) and exits when they are gone or at `until`.
    pub fn begin_shutdown(&self, until: Instant) {
        let shared = &self.shared;
        shared.draining.store(true, Ordering::SeqCst);
        for mb in &shared.mailboxes {
            post_retrying(mb, || Mail::Quiesce, until);
        }
        let n = shared.mailboxes.len();
        // A worker stuck for longer than this is not waited for: the others must not miss
        // their deadline because of it.
        let wait = until.min(Instant::now() + QUIESCE_WAIT);
        while shared.quiesced.load(Ordering::SeqCst) < n && Instant::now() < wait {
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(b) = shared.broker.get() {
            // Everything Redis sent before now enters the inboxes before the Shutdown below.
            b.barrier(wait);
        }
        for mb in &shared.mailboxes {
            post_retrying(mb, || Mail::Shutdown { until }, until);
        }
    }

    /// Shuts down (see [`Server::begin_shutdown`]) and waits for the workers until `deadline`
    /// from now (then leaves them behind). Returns whether all of them finished.
    pub fn shutdown(self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        self.begin_shutdown(until);
        // The workers leave at `until` themselves; a little grace for their last turn.
        let grace = until + Duration::from_millis(100);
        for t in self.threads {
            while !t.is_finished() {
                if Instant::now() >= grace {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = t.join();
        }
        if let Some(b) = self.shared.broker.get() {
            b.stop();
        }
        true
    }
}

/// The open-files limit (RLIMIT_NOFILE, soft): each connection takes one.
pub fn open_files_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur
    } else {
        0
    }
}

/// What a shutdown drained, for its log line: taken at the signal, logged at the end.
pub struct Drain {
    shared: Arc<Shared>,
    started: Instant,
    conns: usize,
    delivered: u64,
}

impl Drain {
    /// Notes the open connections and messages delivered so far.
    pub fn begin(server: &Server) -> Drain {
        let shared = server.shared();
        Drain {
            conns: shared.conns.load(Ordering::Relaxed),
            delivered: delivered(&shared),
            started: Instant::now(),
            shared,
        }
    }

    /// Logs the drain: connections told, messages delivered during it, how long it took,
    /// whether every worker finished within the deadline.
    pub fn log(self, finished: bool) {
        let left = self.shared.conns.load(Ordering::Relaxed);
        let delivered = delivered(&self.shared).saturating_sub(self.delivered);
        let ms = self.started.elapsed().as_millis() as u64;
        if finished {
            log::info!(
                target: "edgecomet::server",
                connections_told = self.conns, messages_delivered = delivered, drain_ms = ms;
                "stopped: {} connection(s) told, {delivered} message(s) delivered while \
                 draining, in {ms} ms",
                self.conns
            );
        } else {
            log::warn!(
                target: "edgecomet::server",
                connections_told = self.conns, connections_left = left,
                messages_delivered = delivered, drain_ms = ms;
                "drain deadline passed; exiting with {left} connection(s) still open ({} told, \
                 {delivered} message(s) delivered while draining, {ms} ms)",
                self.conns
            );
        }
    }
}

fn delivered(shared: &Shared) -> u64 {
    shared
        .stats
        .iter()
        .map(|s| s.messages_out.load(Ordering::Relaxed))
        .sum()
}
