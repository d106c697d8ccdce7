//! Connection state recovery (what Socket.IO 4.6 calls it), sans-IO: what a session leaves
//! behind when its connection is lost, so that the client, reconnecting within the window with
//! its private id (`pid`) and the offset of the last message it received, gets what it missed.
//!
//! A record is kept for a session that had joined `/` with at most one channel (no pattern):
//! the offset the client sends is the id of the last message it got, which places it exactly
//! in one channel. A session on several channels or a pattern keeps no record, and its
//! client is told it was not recovered (`socket.recovered` false).

use std::collections::HashMap;

/// What a lost session leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its socket id's random bits (the CONNECT reply's `sid`), given again on recovery.
    pub sid: u64,
    /// The channel it had joined, if any.
    pub channel: Option<Box<str>>,
    /// The channel's last id when the session joined it: where a client that received nothing
    /// since resumes.
    pub joined_at: u64,
    /// Until when (ms) it can be recovered.
    pub until: u64,
}

/// The records of one process, bounded.
#[derive(Debug)]
pub struct Records {
    by_pid: HashMap<u64, Record>,
    max: usize,
}

/// The store is full (`--socketio-recovery-max`): the record was not kept.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Records {
    pub fn new(max: usize) -> Records {
        Records {
            by_pid: HashMap::new(),
            max,
        }
    }

    /// Keeps `r` under `pid` (replacing what was there).
    pub fn keep(&mut self, pid: u64, r: Record) -> Result<(), Full> {
        if self.by_pid.len() >= self.max && !self.by_pid.contains_key(&pid) {
            return Err(Full);
        }
        self.by_pid.insert(pid, r);
        Ok(())
    }

    /// Takes the record of `pid` if it is still within its window at `now`.
    pub fn take(&mut self, pid: u64, now: u64) -> Option<Record> {
        self.by_pid.remove(&pid).filter(|r| now < r.until)
    }

    /// Forgets the records whose window has passed.
    pub fn sweep(&mut self, now: u64) {
        self.by_pid.retain(|_, r| now < r.until);
        if self.by_pid.is_empty() && self.by_pid.capacity() > 1024 {
            self.by_pid.shrink_to_fit();
        }
    }

    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }
}

/// A private or socket id as the client sees it: 11 URL-safe characters for 64 random bits.
pub fn id_string(v: u64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_le_bytes())
}

/// The bits of an id made by [`id_string`].
pub fn id_bits(s: &str) -> Option<u64> {
    use base64::Engine as _;
    if s.len() != 11 {
        return None;
    }
    let mut b = [0u8; 9];
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode_slice(s, &mut b)
        .ok()?;
    (n == 8).then(|| u64::from_le_bytes(b[..8].try_into().expect("8 bytes")))
}

/// The offset a client sends back: the id of the last message it received (the last argument
/// of each event while recovery is on).
pub fn parse_offset(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(until: u64) -> Record {
        Record {
            sid: 7,
            channel: Some("news".into()),
            joined_at: 3,
            until,
        }
    }

    #[test]
    fn window_and_bound() {
        let mut r = Records::new(2);
        r.keep(1, rec(100)).unwrap();
        r.keep(2, rec(50)).unwrap();
        assert_eq!(r.keep(3, rec(100)), Err(Full));
        // Replacing is not growing.
        r.keep(2, rec(60)).unwrap();
        assert_eq!(r.take(1, 100), None, "the window has passed");
        assert_eq!(r.take(1, 10), None, "taken once");
        r.sweep(70);
        assert!(r.is_empty());
        r.keep(3, rec(100)).unwrap();
        assert_eq!(r.take(3, 99).unwrap().joined_at, 3);
    }

    #[test]
    fn ids() {
        for v in [1, u64::MAX, 0x0123_4567_89ab_cdef] {
            let s = id_string(v);
            assert_eq!(s.len(), 11);
            assert_eq!(id_bits(&s), Some(v));
        }
        assert_eq!(id_bits("short"), None);
        assert_eq!(id_bits("!!!!!!!!!!!"), None);
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("42"), Some(42));
        for bad in ["", "-1", "4a", "1.0", "99999999999999999999999"] {
            assert_eq!(parse_offset(bad), None, "{bad}");
        }
    }
}
