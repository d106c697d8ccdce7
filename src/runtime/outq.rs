//! The outbound queue of one connection: only what the kernel did not take.
//!
//! A connection writes straight to its socket; when the kernel takes less than everything, the
//! rest waits here as references to the shared, already-framed messages (`Bytes` advanced past
//! what was sent) — never a private copy. Pending messages leave in one `writev` per writable
//! event. The queue itself is boxed and exists only while something is pending, so an idle
//! connection pays 8 bytes for it.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes};

/// Most buffers handed to one `writev` (well under IOV_MAX = 1024; 64 frames of even a few
/// hundred bytes fill a socket buffer's worth).
pub const MAX_IOV: usize = 64;

/// What is waiting to be written, in order.
#[derive(Debug, Default)]
pub struct OutQueue {
    items: VecDeque<Item>,
    /// Sum of the items' remaining lengths.
    bytes: usize,
}

/// One pending buffer and whether it is a data message (droppable for a slow consumer) or a
/// control frame / HTTP response (never dropped).
#[derive(Debug)]
struct Item {
    buf: Bytes,
    data: bool,
    /// Part of this frame has already been written: it must be finished, never dropped.
    started: bool,
}

impl OutQueue {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn push(&mut self, buf: Bytes, data: bool) {
        self.push_item(buf, data, false);
    }

    fn push_item(&mut self, buf: Bytes, data: bool, started: bool) {
        if !buf.is_empty() {
            self.bytes += buf.len();
            self.items.push_back(Item { buf, data, started });
        }
    }

    /// Drops every data message that has not started to go out (a partly written one stays, so
    /// the stream remains valid frames). Returns (messages dropped, bytes dropped).
    pub fn drop_unsent_data(&mut self) -> (u64, usize) {
        let mut msgs = 0;
        let mut bytes = 0;
        self.items.retain(|it| {
            let keep = it.started || !it.data;
            if !keep {
                msgs += 1;
                bytes += it.buf.len();
            }
            keep
        });
        self.bytes -= bytes;
        (msgs, bytes)
    }

    /// Writes as much as the socket takes, `MAX_IOV` buffers per `writev`. Returns the bytes
    /// written; stops at `WouldBlock` (returned as Ok) or on another error.
    pub fn flush<W: Write>(&mut self, sock: &mut W) -> io::Result<usize> {
        let mut total = 0;
        while !self.items.is_empty() {
            let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
            let mut n_iov = 0;
            for (slot, it) in iov.iter_mut().zip(self.items.iter()) {
                *slot = IoSlice::new(&it.buf);
                n_iov += 1;
            }
            match sock.write_vectored(&iov[..n_iov]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    total += n;
                    self.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let Some(front) = self.items.front_mut() else {
                debug_assert!(false, "consumed more than queued");
                return;
            };
            if n >= front.buf.len() {
                n -= front.buf.len();
                self.items.pop_front();
            } else {
                front.buf.advance(n);
                front.started = true;
                n = 0;
            }
        }
    }
}

/// Writes `bufs` (in order) straight to the socket with one `writev`, and returns how many bytes
/// went. Used when nothing is queued; the caller queues what is left with [`queue_rest`].
pub fn write_direct<W: Write>(sock: &mut W, bufs: &[Bytes]) -> io::Result<usize> {
    loop {
        let r = match bufs {
            // The common case (one message for this subscriber this turn): a plain write, no
            // iovec array to fill.
            [one] => sock.write(one),
            _ => {
                let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
                let n_iov = bufs.len().min(MAX_IOV);
                for (slot, b) in iov.iter_mut().zip(bufs.iter()) {
                    *slot = IoSlice::new(b);
                }
                sock.write_vectored(&iov[..n_iov])
            }
        };
        match r {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Queues what [`write_direct`] did not write: `bufs` minus the first `written` bytes.
pub fn queue_rest(q: &mut OutQueue, bufs: &[Bytes], mut written: usize, data: bool) {
    for b in bufs {
        if written >= b.len() {
            written -= b.len();
            continue;
        }
        q.push_item(b.slice(written..), data, written > 0);
        written = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that accepts at most `cap` bytes per call and `budget` in total.
    struct Sink {
        out: Vec<u8>,
        cap: usize,
        budget: usize,
        calls: usize,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(b)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.cap - n).min(self.budget);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                self.budget -= take;
                if n == self.cap || self.budget == 0 {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order_and_coalesce() {
        let msgs: Vec<Bytes> = (0..10u8).map(|i| Bytes::from(vec![i; 7])).collect();
        let mut sink = Sink {
            out: vec![],
            cap: 5,
            budget: 12,
            calls: 0,
        };
        let n = write_direct(&mut sink, &msgs[..3]).unwrap();
        let mut q = OutQueue::default();
        queue_rest(&mut q, &msgs[..3], n, true);
        for m in &msgs[3..] {
            q.push(m.clone(), true);
        }
        assert_eq!(q.bytes(), 70 - n);
        sink.budget = usize::MAX;
        sink.cap = usize::MAX;
        sink.calls = 0;
        q.flush(&mut sink).unwrap();
        assert_eq!(sink.calls, 1, "one writev for everything queued");
        let want: Vec<u8> = msgs.iter().flat_map(|m| m.to_vec()).collect();
        assert_eq!(sink.out, want);
        assert!(q.is_empty() && q.bytes() == 0);
    }

    #[test]
    fn dropping_keeps_started_head_and_control() {
        let mut q = OutQueue::default();
        let bufs = [
            Bytes::from_static(b"xxpartial"),
            Bytes::from_static(b"data1"),
        ];
        queue_rest(&mut q, &bufs, 2, true);
        q.push(Bytes::from_static(b"pong"), false);
        q.push(Bytes::from_static(b"data2"), true);
        let (m, b) = q.drop_unsent_data();
        assert_eq!((m, b), (2, 10));
        assert_eq!(q.bytes(), 11);
        let mut sink = Sink {
            out: vec![],
            cap: usize::MAX,
            budget: usize::MAX,
            calls: 0,
        };
        q.flush(&mut sink).unwrap();
        assert_eq!(sink.out, b"partialpong");
    }
}
