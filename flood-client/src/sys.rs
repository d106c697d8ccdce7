//! The system calls flood and the benchmark tools share: a non-blocking connect bound to a
//! source address ([`connect`]) and raising the open-files limit ([`raise_nofile`]).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;

/// Raises the soft open-files limit (RLIMIT_NOFILE) to the hard one; returns the soft limit in
/// effect afterwards (0 if it cannot be read). A process holding many connections calls it
/// first: raising the soft limit up to the hard one needs no privilege.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid, owned struct and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    if r.rlim_cur < r.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit reads the valid, owned struct and nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            r = raised;
        }
    }
    r.rlim_cur
}

/// Starts a non-blocking connect from `src` (port chosen at connect time, so that the same port
/// may serve several targets: IP_BIND_ADDRESS_NO_PORT).
pub fn connect(target: SocketAddr, src: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    if let Some(ip) = src {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a valid fd and a pointer to a live c_int of the stated size.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        s.bind(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())?;
    }
    match s.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(s.into())
}
