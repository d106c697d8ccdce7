//! The broker subscriber thread's doorbell: an eventfd that the rest of the process rings when
//! the thread has something to do (interest changed, a barrier asked, stop), so that the thread
//! can sleep in `poll(2)` on its Redis socket and the doorbell instead of waking every few
//! milliseconds to look.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    /// A non-blocking eventfd.
    pub fn new() -> io::Result<Doorbell> {
        // SAFETY: eventfd with an initial count and flags; it returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Doorbell { fd })
    }

    /// Wakes a [`wait`] in progress, or makes the next one return at once.
    pub fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write from a live buffer to our eventfd. It fails only when the
        // counter is at its maximum, and then the doorbell is rung anyway.
        unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    fn clear(&self) {
        let mut b = [0u8; 8];
        // SAFETY: an 8-byte read into a live buffer from our non-blocking eventfd.
        unsafe { libc::read(self.fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
    }
}

/// What ended a [`wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// The socket has something to read (bytes, its end, or an error).
    Readable,
    /// The doorbell rang, or the time was up.
    Other,
}

/// Sleeps until `sock` is readable, `bell` rings (it is cleared) or `timeout` passes. Without
/// a doorbell it only waits for the socket, at most `timeout`.
pub fn wait(sock: RawFd, bell: Option<&Doorbell>, timeout: Duration) -> io::Result<Woken> {
    let mut fds = [
        libc::pollfd {
            fd: sock,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: bell.map_or(-1, |b| b.fd.as_raw_fd()), // a negative fd is ignored by poll
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // Rounded up: rounded down, the last fraction of a millisecond would be polls of 0 ms in a
    // loop until the time is up.
    let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
    // SAFETY: two valid pollfds in a live array.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(Woken::Other)
        } else {
            Err(e)
        };
    }
    if fds[1].revents != 0
        && let Some(b) = bell
    {
        b.clear();
    }
    Ok(if fds[0].revents != 0 {
        Woken::Readable
    } else {
        Woken::Other
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn a_ring_before_the_wait_ends_it_at_once_and_is_cleared() {
        let (a, _b) = pair();
        let bell = Doorbell::new().unwrap();
        bell.ring();
        bell.ring();
        let t = Instant::now();
        let w = wait(a.as_raw_fd(), Some(&bell), Duration::from_secs(10)).unwrap();
        assert_eq!(w, Woken::Other);
        assert!(t.elapsed() < Duration::from_secs(5));
        // Both rings were taken by that wait: the next one runs to its timeout.
        let t = Instant::now();
        let w = wait(a.as_raw_fd(), Some(&bell), Duration::from_millis(30)).unwrap();
        assert_eq!(w, Woken::Other);
        assert!(
            t.elapsed() >= Duration::from_millis(25),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn a_ring_from_another_thread_ends_the_wait_whether_before_or_during_it() {
        let (a, _b) = pair();
        let bell = std::sync::Arc::new(Doorbell::new().unwrap());
        let b2 = bell.clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            // Rings once the waiter has said it is about to wait.
            rx.recv().unwrap();
            b2.ring();
        });
        tx.send(()).unwrap();
        let t = Instant::now();
        let w = wait(a.as_raw_fd(), Some(&bell), Duration::from_secs(10)).unwrap();
        h.join().unwrap();
        assert_eq!(w, Woken::Other);
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn bytes_on_the_socket_and_its_end_are_readable() {
        let (a, mut b) = pair();
        let bell = Doorbell::new().unwrap();
        b.write_all(b"+PONG\r\n").unwrap();
        let w = wait(a.as_raw_fd(), Some(&bell), Duration::from_secs(10)).unwrap();
        assert_eq!(w, Woken::Readable);
        let (c, d) = pair();
        drop(d);
        let w = wait(c.as_raw_fd(), None, Duration::from_secs(10)).unwrap();
        assert_eq!(w, Woken::Readable);
    }

    #[test]
    fn a_timeout_under_a_millisecond_still_sleeps() {
        let (a, _b) = pair();
        let t = Instant::now();
        let w = wait(a.as_raw_fd(), None, Duration::from_micros(300)).unwrap();
        assert_eq!(w, Woken::Other);
        assert!(
            t.elapsed() >= Duration::from_micros(300),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn without_a_doorbell_it_waits_for_the_socket_until_the_timeout() {
        let (a, _b) = pair();
        let t = Instant::now();
        let w = wait(a.as_raw_fd(), None, Duration::from_millis(30)).unwrap();
        assert_eq!(w, Woken::Other);
        assert!(t.elapsed() >= Duration::from_millis(25));
    }
}
