//! What this process wants from Redis, sans-IO: a reference count per key (a channel, or a
//! pattern for a Bayeux wildcard), raised at a key's first local subscriber and lowered at its
//! last; what Redis has subscribed for this process ([`Subscribed`]); and the commands that bring
//! one in line with the other, a key staying subscribed for the linger after its last local
//! interest. Time is passed in (`now`): the broker's threads read the clock, these rules do not.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::resp;

/// What the process wants from Redis: a channel, or a pattern (`a/*`: every channel under `a/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Channel(Box<str>),
    Pattern(Box<str>),
}

impl Key {
    /// The key of a Bayeux subscription: `/a/b` is the channel `a/b`; `/a/*` and `/a/**` are the
    /// pattern `a/*` (a Redis glob `*` crosses `/`, so it covers both; the Bayeux index picks the
    /// clients that match exactly); `/**` and `/*` are `*`.
    pub fn of_bayeux(sub: &str) -> Key {
        let native = sub.strip_prefix('/').unwrap_or(sub);
        match native
            .strip_suffix("/**")
            .or_else(|| native.strip_suffix("/*"))
        {
            Some(prefix) => Key::Pattern(format!("{prefix}/*").into()),
            None if native == "*" || native == "**" => Key::Pattern("*".into()),
            None => Key::Channel(native.into()),
        }
    }
}

/// Whether pattern `p` covers `channel` (patterns are always `prefix*`).
pub(super) fn covers(p: &str, channel: &str) -> bool {
    channel.starts_with(p.strip_suffix('*').unwrap_or(p))
}

/// What Redis has subscribed for this connection: channels (looked up by name, without
/// allocating) and patterns (in order: the first that covers a channel delivers its message).
#[derive(Debug, Default)]
pub(super) struct Subscribed {
    pub(super) channels: HashSet<Box<str>>,
    pub(super) patterns: BTreeSet<Box<str>>,
}

impl Subscribed {
    pub(super) fn contains(&self, k: &Key) -> bool {
        match k {
            Key::Channel(c) => self.channels.contains(c),
            Key::Pattern(p) => self.patterns.contains(p),
        }
    }

    pub(super) fn insert(&mut self, k: Key) {
        match k {
            Key::Channel(c) => self.channels.insert(c),
            Key::Pattern(p) => self.patterns.insert(p),
        };
    }

    fn remove(&mut self, k: &Key) {
        match k {
            Key::Channel(c) => self.channels.remove(c),
            Key::Pattern(p) => self.patterns.remove(p),
        };
    }

    pub(super) fn len(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

/// Interest in one key: local references, and since when there have been none.
#[derive(Debug)]
struct Interest {
    count: u32,
    idle_since: Option<Instant>,
}

/// The wanted keys with their reference counts.
#[derive(Debug, Default)]
pub(super) struct Interests {
    keys: HashMap<Key, Interest>,
}

impl Interests {
    /// One more local reference to `key`; whether it had none before (the subscriber thread must
    /// look: Redis may not have it, or it may be lingering there).
    pub(super) fn add(&mut self, key: Key) -> bool {
        let e = self.keys.entry(key).or_insert(Interest {
            count: 0,
            idle_since: None,
        });
        e.count += 1;
        e.idle_since = None;
        e.count == 1
    }

    /// One local reference to `key` fewer, at `now`; whether that was the last (its linger
    /// starts). `None`: it had none (a bug of the caller's).
    pub(super) fn remove(&mut self, key: &Key, now: Instant) -> Option<bool> {
        let e = self.keys.get_mut(key)?;
        e.count = e.count.saturating_sub(1);
        if e.count == 0 {
            e.idle_since = Some(now);
        }
        Some(e.count == 0)
    }

    /// Brings `actual` (what Redis has) in line with the wanted keys at `now`: the commands go
    /// into `out`. Keys without interest for `linger` or longer are forgotten. Returns when the
    /// next lingering key is due. Only the differences are copied (no snapshot of every key).
    pub(super) fn sync(
        &mut self,
        actual: &mut Subscribed,
        out: &mut Vec<u8>,
        now: Instant,
        linger: Duration,
    ) -> Option<Instant> {
        let mut add: Vec<Key> = Vec::new();
        let mut drop: Vec<Key> = Vec::new();
        let mut next: Option<Instant> = None;
        self.keys.retain(|k, i| {
            let ends = i.idle_since.filter(|_| i.count == 0).map(|t| t + linger);
            if ends.is_some_and(|e| now >= e) {
                if actual.contains(k) {
                    drop.push(k.clone());
                }
                return false;
            }
            if let Some(e) = ends {
                next = Some(next.map_or(e, |n| n.min(e)));
            }
            if !actual.contains(k) {
                add.push(k.clone());
            }
            true
        });
        add.sort();
        drop.sort();
        for (cmd, pattern, keys) in [
            (&b"SUBSCRIBE"[..], false, &add),
            (b"PSUBSCRIBE", true, &add),
            (b"UNSUBSCRIBE", false, &drop),
            (b"PUNSUBSCRIBE", true, &drop),
        ] {
            // One command per 512 keys.
            let names: Vec<&[u8]> = keys
                .iter()
                .filter_map(|k| match (k, pattern) {
                    (Key::Channel(c), false) | (Key::Pattern(c), true) => Some(c.as_bytes()),
                    _ => None,
                })
                .collect();
            for chunk in names.chunks(512) {
                let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() + 1);
                args.push(cmd);
                args.extend_from_slice(chunk);
                resp::command(out, &args);
            }
        }
        for k in &drop {
            actual.remove(k);
        }
        for k in add {
            actual.insert(k);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bayeux_keys() {
        assert_eq!(Key::of_bayeux("/a/b"), Key::Channel("a/b".into()));
        assert_eq!(Key::of_bayeux("/a/*"), Key::Pattern("a/*".into()));
        assert_eq!(Key::of_bayeux("/a/b/**"), Key::Pattern("a/b/*".into()));
        assert_eq!(Key::of_bayeux("/**"), Key::Pattern("*".into()));
        assert_eq!(Key::of_bayeux("/*"), Key::Pattern("*".into()));
        assert!(covers("a/*", "a/b/c"));
        assert!(!covers("a/*", "ab"));
        assert!(covers("*", "x"));
    }

    #[test]
    fn sync_sends_only_the_differences_and_keeps_the_linger() {
        let linger = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut i = Interests::default();
        let mut actual = Subscribed::default();
        let mut out = Vec::new();
        assert!(i.add(Key::Channel("a".into())));
        assert!(i.add(Key::Pattern("p/*".into())));
        assert!(!i.add(Key::Pattern("p/*".into())), "had one already");
        assert_eq!(i.sync(&mut actual, &mut out, t0, linger), None);
        assert_eq!(
            out,
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n*2\r\n$10\r\nPSUBSCRIBE\r\n$3\r\np/*\r\n"
        );
        // Nothing changed: nothing sent.
        out.clear();
        assert_eq!(i.sync(&mut actual, &mut out, t0, linger), None);
        assert!(out.is_empty());
        // The last local subscriber leaves: still subscribed until the linger ends.
        assert_eq!(i.remove(&Key::Channel("a".into()), t0), Some(true));
        assert_eq!(i.remove(&Key::Pattern("p/*".into()), t0), Some(false));
        assert_eq!(i.remove(&Key::Channel("nope".into()), t0), None);
        let ends = i.sync(&mut actual, &mut out, t0, linger);
        assert_eq!(ends, Some(t0 + linger), "a lingers");
        assert!(out.is_empty());
        // Just before the linger ends: still there.
        let before = t0 + linger - Duration::from_millis(1);
        assert_eq!(
            i.sync(&mut actual, &mut out, before, linger),
            Some(t0 + linger)
        );
        assert!(out.is_empty());
        // At its end: unsubscribed.
        assert_eq!(i.sync(&mut actual, &mut out, t0 + linger, linger), None);
        assert_eq!(out, b"*2\r\n$11\r\nUNSUBSCRIBE\r\n$1\r\na\r\n");
        assert!(!actual.contains(&Key::Channel("a".into())));
        assert_eq!(actual.len(), 1);
    }

    #[test]
    fn interest_back_within_the_linger_keeps_the_subscription() {
        let linger = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut i = Interests::default();
        let mut actual = Subscribed::default();
        let mut out = Vec::new();
        i.add(Key::Channel("a".into()));
        i.sync(&mut actual, &mut out, t0, linger);
        out.clear();
        i.remove(&Key::Channel("a".into()), t0);
        // A long-poll client comes back before the linger ends: Redis still has it, so the
        // subscriber's look sends no command at all, however late it looks.
        assert!(i.add(Key::Channel("a".into())));
        assert_eq!(i.sync(&mut actual, &mut out, t0 + 2 * linger, linger), None);
        assert!(out.is_empty());
        assert!(actual.contains(&Key::Channel("a".into())));
    }
}
