//! What each connection costs, read from `/proc`.
//!
//! Three views of memory, sampled before and during a run so the caller can divide the growth by
//! the number of connections:
//!
//! * processes (the server, or this client): PSS and RSS from `/proc/PID/smaps_rollup`;
//! * the kernel: slab memory from `/proc/meminfo`, the per-cache table from `/proc/slabinfo`
//!   (readable by root only) and TCP buffer pages from `/proc/net/sockstat`;
//! * which processes are the server: the pids holding a listening TCP socket on a port.
//!
//! The parsers take `&str` so they are tested on fixed samples. Odd `/proc` contents never panic:
//! a field that is missing counts as zero (said on each function), a field that is present but
//! not a number is an `InvalidData` error.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader};

/// Memory of one or more processes, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcMem {
    /// Proportional set size: private pages plus a fair share of shared ones. Sums over
    /// processes without counting a shared page twice.
    pub pss: u64,
    /// Resident set size: every resident page, shared ones counted in full.
    pub rss: u64,
    /// Transparent huge pages mapped (`AnonHugePages:`, part of RSS): memory grows in 2 MiB
    /// steps there, which a figure per connection must be read against.
    pub anon_huge: u64,
}

/// Sum of `Pss:` / `Rss:` / `AnonHugePages:` from `/proc/PID/smaps_rollup` over the pids. Falls back to
/// `/proc/PID/smaps` on kernels without `smaps_rollup` (before 4.14). A process without an
/// address space (a kernel thread) counts as zero. The error names the pid that failed, and keeps
/// the kind of the underlying error (`NotFound` when the process is gone).
pub fn proc_mem(pids: &[u32]) -> io::Result<ProcMem> {
    let mut total = ProcMem::default();
    for &pid in pids {
        let m = smaps_of(&pid.to_string()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("pid {pid}: /proc/{pid}/smaps_rollup: {e}"),
            )
        })?;
        total.pss = total.pss.saturating_add(m.pss);
        total.rss = total.rss.saturating_add(m.rss);
        total.anon_huge = total.anon_huge.saturating_add(m.anon_huge);
    }
    Ok(total)
}

/// This process's own PSS, RSS and huge pages (`/proc/self/smaps_rollup`).
pub fn own_mem() -> io::Result<ProcMem> {
    smaps_of("self").map_err(|e| io::Error::new(e.kind(), format!("/proc/self/smaps_rollup: {e}")))
}

/// Reads `/proc/{who}/smaps_rollup`, or `/proc/{who}/smaps` if the first does not exist.
fn smaps_of(who: &str) -> io::Result<ProcMem> {
    let text = match fs::read_to_string(format!("/proc/{who}/smaps_rollup")) {
        Ok(t) => t,
        // No smaps_rollup: either an old kernel (smaps is there) or no such process (smaps
        // fails with NotFound too, and that error is returned).
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::read_to_string(format!("/proc/{who}/smaps"))?
        }
        Err(e) => return Err(e),
    };
    parse_smaps(&text)
}

/// Sums the `Pss:`, `Rss:` and `AnonHugePages:` lines of `smaps_rollup` (one of each) or `smaps` (one per mapping).
/// Values are in kB. Missing lines count as zero (an empty file is a kernel thread).
fn parse_smaps(text: &str) -> io::Result<ProcMem> {
    let mut m = ProcMem::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "Pss" => &mut m.pss,
            "Rss" => &mut m.rss,
            "AnonHugePages" => &mut m.anon_huge,
            _ => continue,
        };
        *slot = slot.saturating_add(parse_kb(value)?);
    }
    Ok(m)
}

/// Parses `"   1692 kB"` (or a bare number of bytes) into bytes.
fn parse_kb(value: &str) -> io::Result<u64> {
    let mut words = value.split_whitespace();
    let number = words.next().unwrap_or("");
    let n: u64 = number
        .parse()
        .map_err(|_| invalid(format!("not a number: {value:?}")))?;
    match words.next() {
        Some("kB") => Ok(n.saturating_mul(1024)),
        None => Ok(n),
        Some(unit) => Err(invalid(format!("unknown unit {unit:?} in {value:?}"))),
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The pids of processes that have a listening TCP socket on `port` (IPv4 or IPv6, any address),
/// found by reading `/proc/net/tcp` and `/proc/net/tcp6` (state `0A` = LISTEN) for the socket
/// inodes, then scanning the `/proc/*/fd/*` symlinks for `socket:[INODE]`. Sorted, deduplicated.
///
/// Only sockets of this network namespace are seen. Processes that vanish or whose fds this user
/// may not read are skipped, so the list may be incomplete without root. A process is dropped
/// from the scan at its first matching fd; listeners are opened early, so a server holding a
/// million connection fds is usually matched within its first few fds. Errors only if neither
/// `/proc/net/tcp` nor `/proc/net/tcp6` can be read, or `/proc` cannot be listed.
pub fn pids_listening_on(port: u16) -> io::Result<Vec<u32>> {
    let mut inodes = HashSet::new();
    let mut read_any = false;
    let mut last_err = None;
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match fs::File::open(path) {
            Ok(f) => {
                read_any = true;
                // Streamed line by line: with a million connections the file is ~150 MB.
                for line in BufReader::new(f).lines() {
                    let line = line?;
                    if let Some(inode) = parse_listen_line(&line, port) {
                        inodes.insert(inode);
                    }
                }
            }
            Err(e) => last_err = Some(io::Error::new(e.kind(), format!("{path}: {e}"))),
        }
    }
    if !read_any {
        return Err(last_err.unwrap_or_else(|| invalid("no /proc/net/tcp".into())));
    }
    if inodes.is_empty() {
        return Ok(Vec::new());
    }
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if process_has_socket(pid, &inodes) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Whether any fd of `pid` is one of the socket `inodes`. Unreadable means no.
fn process_has_socket(pid: u32, inodes: &HashSet<u64>) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    for fd in fds {
        let Ok(fd) = fd else { continue };
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        if let Some(inode) = target.to_str().and_then(socket_inode)
            && inodes.contains(&inode)
        {
            return true;
        }
    }
    false
}

/// `"socket:[12345]"` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The socket inodes of all lines of a `/proc/net/tcp` or `/proc/net/tcp6` text that are
/// listening on `port`. Header and malformed lines are skipped.
#[cfg_attr(not(test), allow(dead_code))]
fn parse_listen_inodes(text: &str, port: u16) -> Vec<u64> {
    text.lines()
        .filter_map(|l| parse_listen_line(l, port))
        .collect()
}

/// One line of `/proc/net/tcp{,6}`:
/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...`
/// with addresses as `HEXADDR:HEXPORT`. Returns the inode if the state is LISTEN (`0A`) and the
/// local port is `port`; `None` for anything else, including the header and garbage.
fn parse_listen_line(line: &str, port: u16) -> Option<u64> {
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    let state = fields.nth(1)?;
    if state != "0A" {
        return None;
    }
    let (_, hex_port) = local.rsplit_once(':')?;
    if u16::from_str_radix(hex_port, 16).ok()? != port {
        return None;
    }
    // After `st`: tx:rx, tr:when, retrnsmt, uid, timeout, inode.
    let inode: u64 = fields.nth(5)?.parse().ok()?;
    (inode != 0).then_some(inode)
}

/// Kernel memory, system-wide, in bytes. Take one before and one during the run and use
/// [`KernelMem::growth_since`] / [`KernelMem::top_growth`]: other activity on the machine shows
/// up too, so keep the machine otherwise quiet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelMem {
    /// `Slab:` from `/proc/meminfo` (all slab caches; zero if the line is missing).
    pub slab: u64,
    /// Every cache in `/proc/slabinfo`, `num_objs * objsize` bytes each. Empty when slabinfo is
    /// not readable (it is root-only). The caches a TCP connection uses include `TCP`, `TCPv6`,
    /// `request_sock_TCP`, `sock_inode_cache`, `skbuff_head_cache`, `skbuff_small_head`,
    /// `kmalloc-*`, `dentry`, `filp`, `eventpoll_epi`, `eventpoll_pwq`, `inode_cache`.
    pub caches: BTreeMap<String, u64>,
    /// Pages charged to TCP socket buffers (`TCP: ... mem` in `/proc/net/sockstat`), in bytes.
    /// Zero if sockstat is unreadable.
    pub tcp_mem: u64,
    /// `sockets: used` from `/proc/net/sockstat` (all socket kinds; zero if unreadable).
    pub sockets_used: u64,
    /// `TCP: tw` (connections in TIME-WAIT) and `TCP: orphan` (closed by their process, still
    /// sending or closing) from `/proc/net/sockstat`; zero if unreadable.
    pub tcp_tw: u64,
    pub tcp_orphan: u64,
}

/// Reads [`KernelMem`]: `/proc/meminfo` must be readable (else the error); `/proc/slabinfo` and
/// `/proc/net/sockstat` are optional and leave their fields empty or zero.
pub fn kernel_mem() -> io::Result<KernelMem> {
    let meminfo = fs::read_to_string("/proc/meminfo")
        .map_err(|e| io::Error::new(e.kind(), format!("/proc/meminfo: {e}")))?;
    let slab = meminfo_field(&meminfo, "Slab")?.unwrap_or(0);
    let caches = match fs::read_to_string("/proc/slabinfo") {
        Ok(t) => parse_slabinfo(&t),
        Err(_) => BTreeMap::new(),
    };
    let st = match fs::read_to_string("/proc/net/sockstat") {
        Ok(t) => parse_sockstat(&t),
        Err(_) => Sockstat::default(),
    };
    Ok(KernelMem {
        slab,
        caches,
        tcp_mem: st.tcp_pages.saturating_mul(page_size()),
        sockets_used: st.used,
        tcp_tw: st.tcp_tw,
        tcp_orphan: st.tcp_orphan,
    })
}

impl KernelMem {
    /// Bytes grown from `before` to `self`: slab delta + `tcp_mem` delta (buffers), each
    /// saturating at zero (shrinkage does not cancel growth elsewhere).
    pub fn growth_since(&self, before: &KernelMem) -> u64 {
        self.slab
            .saturating_sub(before.slab)
            .saturating_add(self.tcp_mem.saturating_sub(before.tcp_mem))
    }

    /// The caches that grew most since `before`, largest first (name, bytes grown), top `n`.
    /// Caches that did not grow are left out; ties are by name. Empty without slabinfo.
    pub fn top_growth(&self, before: &KernelMem, n: usize) -> Vec<(String, u64)> {
        let mut grown: Vec<(String, u64)> = self
            .caches
            .iter()
            .filter_map(|(name, &now)| {
                let was = before.caches.get(name).copied().unwrap_or(0);
                let d = now.saturating_sub(was);
                (d > 0).then(|| (name.clone(), d))
            })
            .collect();
        grown.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        grown.truncate(n);
        grown
    }
}

/// The system page size, 4096 if sysconf fails.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions and touches no memory of ours.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// A `Key:   123 kB` field of `/proc/meminfo`, in bytes; `None` if the key is missing.
pub(crate) fn meminfo_field(text: &str, key: &str) -> io::Result<Option<u64>> {
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':')
            && k == key
        {
            return parse_kb(v).map(Some);
        }
    }
    Ok(None)
}

/// `/proc/slabinfo` (version 2.1): `name active_objs num_objs objsize objperslab ...` → bytes
/// per cache (`num_objs * objsize`). The header lines and malformed lines are skipped.
fn parse_slabinfo(text: &str) -> BTreeMap<String, u64> {
    let mut caches = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with("slabinfo") || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().take(4).collect();
        let [name, _active, num, size] = f[..] else {
            continue;
        };
        let (Ok(num), Ok(size)) = (num.parse::<u64>(), size.parse::<u64>()) else {
            continue;
        };
        let e = caches.entry(name.to_string()).or_insert(0u64);
        *e = e.saturating_add(num.saturating_mul(size));
    }
    caches
}

/// The figures of `/proc/net/sockstat` flood uses.
#[derive(Debug, Default, PartialEq, Eq)]
struct Sockstat {
    /// `sockets: used`.
    used: u64,
    /// `TCP: inuse`, `orphan`, `tw`, `mem` (pages).
    tcp_inuse: u64,
    tcp_orphan: u64,
    tcp_tw: u64,
    tcp_pages: u64,
}

/// `/proc/net/sockstat` → [`Sockstat`]. Missing or malformed values are zero.
fn parse_sockstat(text: &str) -> Sockstat {
    let mut st = Sockstat::default();
    for line in text.lines() {
        let Some((proto, rest)) = line.split_once(':') else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let get = |key: &str| {
            // `key value` pairs; chunks_exact(2) makes kv[0] and kv[1] always present.
            words
                .chunks_exact(2)
                .find(|kv| kv[0] == key)
                .and_then(|kv| kv[1].parse::<u64>().ok())
                .unwrap_or(0)
        };
        match proto {
            "sockets" => st.used = get("used"),
            "TCP" => {
                st.tcp_inuse = get("inuse");
                st.tcp_orphan = get("orphan");
                st.tcp_tw = get("tw");
                st.tcp_pages = get("mem");
            }
            _ => {}
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command};

    const ROLLUP: &str = "\
5588b8b26000-7fff42a43000 ---p 00000000 00:00 0                          [rollup]
Rss:                1692 kB
Pss:                 615 kB
Pss_Dirty:           116 kB
Pss_Anon:            116 kB
Pss_File:            499 kB
Shared_Clean:       1464 kB
AnonHugePages:      2048 kB
Swap:                  0 kB
SwapPss:               0 kB
";

    #[test]
    fn parses_smaps_rollup() {
        let m = parse_smaps(ROLLUP).expect("valid sample");
        assert_eq!(m.rss, 1692 * 1024);
        assert_eq!(m.pss, 615 * 1024); // not Pss_Dirty, Pss_Anon, SwapPss, ...
        assert_eq!(m.anon_huge, 2048 * 1024);
    }

    #[test]
    fn parses_full_smaps_by_summing_mappings() {
        let text = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 123 /usr/bin/sleep
Size:                  8 kB
Rss:                   8 kB
Pss:                   4 kB
7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0 [stack]
Size:                132 kB
Rss:                  12 kB
Pss:                  12 kB
";
        let m = parse_smaps(text).expect("valid sample");
        assert_eq!(
            m,
            ProcMem {
                pss: 16 * 1024,
                rss: 20 * 1024,
                anon_huge: 0,
            }
        );
    }

    #[test]
    fn smaps_oddities() {
        // A kernel thread: empty file, zero.
        assert_eq!(parse_smaps("").expect("empty is fine"), ProcMem::default());
        // Bare numbers are bytes.
        assert_eq!(parse_smaps("Pss: 10\n").expect("bare").pss, 10);
        // Garbage values are errors, not panics.
        assert!(parse_smaps("Pss: lots kB\n").is_err());
        assert!(parse_smaps("Pss: 1 MB\n").is_err());
        assert!(parse_smaps("Pss:\n").is_err());
        // Huge values saturate.
        let huge = format!("Pss: {} kB\nPss: {} kB\n", u64::MAX, u64::MAX);
        assert_eq!(parse_smaps(&huge).expect("saturates").pss, u64::MAX);
    }

    struct Sleeper(Child);
    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    fn sleeper() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    #[test]
    fn proc_mem_of_real_processes() {
        let a = sleeper();
        let b = sleeper();
        // Give exec a moment so we measure `sleep`, not the forked test binary.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let ma = proc_mem(&[a.0.id()]).expect("sleep a");
        let mb = proc_mem(&[b.0.id()]).expect("sleep b");
        assert!(ma.pss > 0 && ma.rss >= ma.pss, "{ma:?}");
        assert!(mb.pss > 0 && mb.rss >= mb.pss, "{mb:?}");
        let both = proc_mem(&[a.0.id(), b.0.id()]).expect("both");
        // Each was read separately, so allow for a page or two of drift.
        let sum = ma.pss + mb.pss;
        assert!(
            both.pss.abs_diff(sum) <= sum / 10,
            "{both:?} vs {ma:?} + {mb:?}"
        );
        assert_eq!(proc_mem(&[]).expect("no pids"), ProcMem::default());
    }

    #[test]
    fn proc_mem_names_the_failing_pid() {
        let me = std::process::id();
        let gone = 999_999_999u32; // above pid_max (at most 2^22)
        let err = proc_mem(&[me, gone]).expect_err("no such pid");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("pid 999999999"), "{err}");
    }

    #[test]
    fn own_mem_is_plausible() {
        let m = own_mem().expect("own smaps_rollup");
        assert!(m.pss > 100 * 1024 && m.rss >= m.pss, "{m:?}");
    }

    const TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1613 1 0000000052000103 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:ED2A 01 00000000:00000000 00:00000000 00000000  1000        0 5555 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:8CC7 0100007F:1F90 06 00000000:00000000 03:00000126 00000000     0        0 0 3 000000009bac426c
   4: 0200007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 0 1 0000000000000000 100 0 0 10 0
   5: garbage
   6: 0100007F:ZZZZ 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1
";
    const TCP6: &str = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9002 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn parses_proc_net_tcp() {
        // Port 8080 = 0x1F90: the LISTEN line only, not the established one, not inode 0.
        assert_eq!(parse_listen_inodes(TCP, 8080), vec![4242]);
        assert_eq!(parse_listen_inodes(TCP, 2024), vec![1613]);
        assert_eq!(parse_listen_inodes(TCP, 36039), Vec::<u64>::new()); // 0x8CC7, TIME_WAIT
        assert_eq!(parse_listen_inodes(TCP6, 8080), vec![9001]);
        assert_eq!(parse_listen_inodes(TCP6, 8081), vec![9002]);
        assert_eq!(parse_listen_inodes("", 8080), Vec::<u64>::new());
        assert_eq!(socket_inode("socket:[123]"), Some(123));
        assert_eq!(socket_inode("pipe:[123]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn finds_own_listener() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind v4");
        let port = l.local_addr().expect("addr").port();
        let pids = pids_listening_on(port).expect("scan");
        assert!(pids.contains(&std::process::id()), "{pids:?}");

        // A connected client socket is not a listener: its port finds nobody.
        let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (_s, _) = l.accept().expect("accept");
        let client_port = c.local_addr().expect("addr").port();
        assert!(pids_listening_on(client_port).expect("scan").is_empty());
    }

    #[test]
    fn finds_own_v6_listener() {
        let Ok(l) = TcpListener::bind("[::1]:0") else {
            eprintln!("no IPv6 loopback here; skipped");
            return;
        };
        let port = l.local_addr().expect("addr").port();
        let pids = pids_listening_on(port).expect("scan");
        assert!(pids.contains(&std::process::id()), "{pids:?}");
    }

    const SLABINFO: &str = "\
slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
TCP                   40    104   2368   13    8 : tunables    0    0    0 : slabdata      8      8      0
sock_inode_cache     184    228    832   19    4 : tunables    0    0    0 : slabdata     12     12      0
kmalloc-cg-1k        103    144   1024   16    4 : tunables    0    0    0 : slabdata      9      9      0
broken line
dentry            115547 115584    192   21    1 : tunables    0    0    0 : slabdata   5504   5504      0
";

    #[test]
    fn parses_slabinfo() {
        let c = parse_slabinfo(SLABINFO);
        assert_eq!(c.len(), 4);
        assert_eq!(c["TCP"], 104 * 2368);
        assert_eq!(c["sock_inode_cache"], 228 * 832);
        assert_eq!(c["kmalloc-cg-1k"], 144 * 1024);
        assert_eq!(c["dentry"], 115_584 * 192);
        assert!(parse_slabinfo("").is_empty());
    }

    #[test]
    fn parses_sockstat_and_meminfo() {
        let s = "\
sockets: used 10
TCP: inuse 1 orphan 2 tw 238 alloc 1 mem 7
UDP: inuse 0 mem 3
";
        let want = Sockstat {
            used: 10,
            tcp_inuse: 1,
            tcp_orphan: 2,
            tcp_tw: 238,
            tcp_pages: 7,
        };
        assert_eq!(parse_sockstat(s), want);
        assert_eq!(parse_sockstat("TCP: inuse x mem\n"), Sockstat::default());
        let m = "MemTotal:       32000000 kB\nSlab:             197896 kB\nSReclaimable: 1 kB\n";
        assert_eq!(meminfo_field(m, "Slab").expect("ok"), Some(197_896 * 1024));
        assert_eq!(meminfo_field(m, "MemAvailable").expect("ok"), None);
        assert!(meminfo_field("Slab: ?? kB\n", "Slab").is_err());
    }

    #[test]
    fn reads_real_kernel_mem() {
        let k = kernel_mem().expect("meminfo");
        assert!(k.slab > 0);
        // Hold a connection pair so at least two sockets are in use.
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let _c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let k = kernel_mem().expect("meminfo");
        assert!(k.sockets_used >= 2, "{}", k.sockets_used);
        if fs::File::open("/proc/slabinfo").is_ok() {
            assert!(k.caches.contains_key("TCP"), "no TCP cache in slabinfo");
        }
    }

    #[test]
    fn growth_and_top_caches() {
        let mk = |slab, tcp_mem, caches: &[(&str, u64)]| KernelMem {
            slab,
            caches: caches.iter().map(|&(n, b)| (n.to_string(), b)).collect(),
            tcp_mem,
            sockets_used: 0,
            tcp_tw: 0,
            tcp_orphan: 0,
        };
        let before = mk(1000, 4096, &[("TCP", 100), ("dentry", 500), ("filp", 10)]);
        let after = mk(
            5000,
            8192,
            &[
                ("TCP", 2100),
                ("dentry", 400),
                ("filp", 1010),
                ("new", 1010),
            ],
        );
        assert_eq!(after.growth_since(&before), 4000 + 4096);
        // Shrinking saturates at zero rather than wrapping.
        assert_eq!(before.growth_since(&after), 0);
        assert_eq!(
            after.top_growth(&before, 10),
            vec![
                ("TCP".to_string(), 2000),
                ("new".to_string(), 1010),
                ("filp".to_string(), 1000),
            ]
        );
        assert_eq!(
            after.top_growth(&before, 1),
            vec![("TCP".to_string(), 2000)]
        );
        assert!(after.top_growth(&before, 0).is_empty());
    }
}
