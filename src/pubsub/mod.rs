//! Channels and their subscribers within one worker: policy, sans-IO.
//!
//! A worker knows only its own subscribers. A channel lives while it has at least one; its
//! subscriber list is a `Vec` of connection slots (4 bytes each) so that fan-out is a linear walk,
//! and each connection remembers its position in that list so unsubscribing is a `swap_remove`.
//! Channels emptied during a loop turn are removed only by [`Channels::collect_empty`] at the end
//! of the turn, so a channel index held by pending fan-out work stays valid for the whole turn.
//! This module must never touch sockets: it hands out slot numbers, the worker does the I/O.

pub mod hub;
pub mod message;

use crate::proto::segment_char;

use std::collections::HashMap;
use std::sync::Arc;

use slab::Slab;

/// A channel with subscribers in this worker.
#[derive(Debug)]
struct Channel {
    name: Arc<str>,
    /// Connection slots subscribed here, in no particular order.
    subs: Vec<u32>,
}

/// The worker's subscription table.
#[derive(Debug)]
pub struct Channels {
    by_name: HashMap<Arc<str>, u32>,
    slots: Slab<Channel>,
    /// Channels that became empty this turn (may hold duplicates or refilled channels).
    emptied: Vec<u32>,
    /// Most channels at once (`--max-channels`).
    max: usize,
    /// Entries that are patterns (`a/*`, `a/**`, `*`, `**`): while there are none, a message
    /// looks up its channel alone.
    patterns: usize,
}

/// A subscription made ([`Channels::subscribe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The channel's index.
    pub chan: u32,
    /// The subscriber's position in the channel's list.
    pub pos: u32,
    /// The channel had no subscriber in this worker before: the first local interest (the
    /// caller tells the broker).
    pub first: bool,
}

/// Subscribing would exceed `--max-channels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyChannels;

/// Whether `name` is an acceptable channel name: 1..=`max_len` bytes, segments of
/// [`segment_char`]s separated by single `/` (no leading, trailing or doubled `/`). The Bayeux
/// channel `/a/b` is the native channel `a/b`.
pub fn valid_channel(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name
            .split('/')
            .all(|s| !s.is_empty() && s.bytes().all(segment_char))
}

/// Whether `name` is a subscription pattern: a channel followed by `/*` (its children) or `/**`
/// (everything below it), or `*` (every channel of one segment) or `**` (every channel).
pub fn valid_pattern(name: &str, max_len: usize) -> bool {
    if name == "*" || name == "**" {
        return true;
    }
    name.strip_suffix("/**")
        .or_else(|| name.strip_suffix("/*"))
        .is_some_and(|p| valid_channel(p, max_len.saturating_sub(3)))
}

/// Whether `name` is a pattern (`a/*`, `a/**`, `*`, `**`) rather than a channel.
pub fn is_pattern(name: &str) -> bool {
    name.ends_with('*')
}

/// The patterns that cover `channel`, most specific first: `a/b/*`, `a/b/**`, `a/**`, `**` for
/// `a/b/c`; `*`, `**` for `a`.
pub fn covering_patterns(channel: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parent = channel.rfind('/').map(|i| &channel[..i]);
    match parent {
        Some(p) => out.push(format!("{p}/*")),
        None => out.push("*".to_string()),
    }
    let mut end = parent.map(str::len);
    while let Some(e) = end {
        out.push(format!("{}/**", &channel[..e]));
        end = channel[..e].rfind('/');
    }
    out.push("**".to_string());
    out
}

impl Channels {
    /// The entries a message on `channel` goes to: the channel's own, and those of the patterns
    /// covering it.
    pub fn targets(&self, channel: &str, mut f: impl FnMut(u32)) {
        if let Some(c) = self.lookup(channel) {
            f(c);
        }
        if self.patterns > 0 {
            for p in covering_patterns(channel) {
                if let Some(c) = self.lookup(&p) {
                    f(c);
                }
            }
        }
    }

    pub fn new(max: usize) -> Self {
        Channels {
            by_name: HashMap::new(),
            slots: Slab::new(),
            emptied: Vec::new(),
            max,
            patterns: 0,
        }
    }

    /// Index of the channel called `name`, if it has subscribers here.
    pub fn lookup(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// Whether a subscription to `name` would be admitted.
    pub fn admits(&self, name: &str) -> bool {
        self.by_name.contains_key(name) || self.slots.len() < self.max
    }

    /// Whether subscriptions to all of `names` would be admitted together (those that have no
    /// channel here yet need room for all of them at once).
    pub fn admits_all<'a>(&self, names: impl Iterator<Item = &'a str>) -> bool {
        let new = names.filter(|n| !self.by_name.contains_key(*n)).count();
        self.slots.len() + new <= self.max
    }

    /// Adds connection slot `conn` to `name`: its channel index, its position in the list, and
    /// whether the channel is new here.
    pub fn subscribe(&mut self, name: &str, conn: u32) -> Result<Joined, TooManyChannels> {
        let (chan, first) = match self.by_name.get(name) {
            Some(&c) => (c, false),
            None => {
                if self.slots.len() >= self.max {
                    return Err(TooManyChannels);
                }
                self.patterns += usize::from(is_pattern(name));
                let name: Arc<str> = Arc::from(name);
                let c = self.slots.insert(Channel {
                    name: name.clone(),
                    subs: Vec::new(),
                }) as u32;
                self.by_name.insert(name, c);
                (c, true)
            }
        };
        let subs = &mut self.slots[chan as usize].subs;
        subs.push(conn);
        Ok(Joined {
            chan,
            pos: (subs.len() - 1) as u32,
            first,
        })
    }

    /// Removes the subscriber at `pos` of `chan`. Returns the connection slot that was moved
    /// into `pos` (its owner must update its stored position), if any.
    pub fn unsubscribe(&mut self, chan: u32, pos: u32) -> Option<u32> {
        let Some(c) = self.slots.get_mut(chan as usize) else {
            debug_assert!(false, "unsubscribe from unknown channel {chan}");
            return None;
        };
        let pos = pos as usize;
        if pos >= c.subs.len() {
            debug_assert!(false, "unsubscribe at bad position");
            return None;
        }
        c.subs.swap_remove(pos);
        if c.subs.is_empty() {
            self.emptied.push(chan);
        }
        c.subs.get(pos).copied()
    }

    /// The name of `chan`.
    pub fn name(&self, chan: u32) -> Option<&Arc<str>> {
        self.slots.get(chan as usize).map(|c| &c.name)
    }

    /// The subscribers of `chan` (empty if it does not exist).
    pub fn subscribers(&self, chan: u32) -> &[u32] {
        self.slots.get(chan as usize).map_or(&[], |c| &c.subs)
    }

    /// Removes channels that are still empty, telling `last` each one's name (the last local
    /// interest: the caller tells the broker). Called once at the end of a loop turn.
    pub fn collect_empty(&mut self, mut last: impl FnMut(&Arc<str>)) {
        for chan in self.emptied.drain(..) {
            if self
                .slots
                .get(chan as usize)
                .is_some_and(|c| c.subs.is_empty())
            {
                let c = self.slots.remove(chan as usize);
                self.by_name.remove(&c.name);
                self.patterns -= usize::from(is_pattern(&c.name));
                last(&c.name);
            }
        }
        if self.slots.is_empty() && self.slots.capacity() > 1024 {
            self.slots.shrink_to_fit();
        }
    }

    /// Entries that are patterns.
    pub fn patterns(&self) -> usize {
        self.patterns
    }

    /// Channels with subscribers in this worker.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_channel("news-0", 255));
        assert!(valid_channel("a.b:c@d~e_f", 255));
        assert!(valid_channel("a/b/c", 255));
        for bad in ["", "a b", "/a", "a/", "a//b", "ü", "a%20", "<x>", "a/*"] {
            assert!(!valid_channel(bad, 255), "{bad:?}");
        }
        assert!(valid_channel(&"a".repeat(255), 255));
        assert!(!valid_channel(&"a".repeat(256), 255));
    }

    #[test]
    fn patterns() {
        for ok in ["*", "**", "a/*", "a/**", "a/b/*"] {
            assert!(valid_pattern(ok, 255), "{ok}");
        }
        for bad in ["a", "a*", "a/*/b", "/*", "a//*", "***", "a/***"] {
            assert!(!valid_pattern(bad, 255), "{bad}");
        }
        assert_eq!(
            covering_patterns("a/b/c"),
            ["a/b/*", "a/b/**", "a/**", "**"]
        );
        assert_eq!(covering_patterns("a"), ["*", "**"]);
        let mut t = Channels::new(10);
        t.subscribe("a/b", 1).unwrap();
        let star = t.subscribe("a/*", 2).unwrap().chan;
        let all = t.subscribe("**", 3).unwrap().chan;
        let mut got = Vec::new();
        t.targets("a/b", |c| got.push(c));
        assert_eq!(got, [t.lookup("a/b").unwrap(), star, all]);
        got.clear();
        t.targets("a/b/c", |c| got.push(c));
        assert_eq!(got, [all]);
        t.unsubscribe(star, 0);
        t.unsubscribe(all, 0);
        t.collect_empty(|_| {});
        assert_eq!(t.patterns, 0);
    }

    #[test]
    fn subscribe_unsubscribe_keeps_positions_right() {
        let mut t = Channels::new(10);
        let a = t.subscribe("x", 10).unwrap();
        let b = t.subscribe("x", 11).unwrap();
        let c = t.subscribe("x", 12).unwrap();
        assert_eq!((a.pos, b.pos, c.pos), (0, 1, 2));
        // The first subscriber here is the first local interest, the others are not.
        assert_eq!((a.first, b.first, c.first), (true, false, false));
        let chan = a.chan;
        // Removing position 0 moves the last subscriber (12) into it.
        assert_eq!(t.unsubscribe(chan, a.pos), Some(12));
        assert_eq!(t.subscribers(chan), &[12, 11]);
        assert_eq!(t.unsubscribe(chan, 1), None);
        assert_eq!(t.unsubscribe(chan, 0), None);
        // Still present until the end of the turn, then gone: the last local interest.
        assert_eq!(t.lookup("x"), Some(chan));
        let mut last = Vec::new();
        t.collect_empty(|name| last.push(name.to_string()));
        assert_eq!(last, ["x"]);
        assert_eq!(t.lookup("x"), None);
        assert!(t.is_empty());
    }

    #[test]
    fn refilled_channel_survives_collection() {
        let mut t = Channels::new(10);
        let j = t.subscribe("x", 1).unwrap();
        t.unsubscribe(j.chan, j.pos);
        assert!(!t.subscribe("x", 2).unwrap().first);
        let mut last = Vec::new();
        t.collect_empty(|name| last.push(name.to_string()));
        assert!(last.is_empty(), "a refilled channel keeps its interest");
        assert_eq!(t.subscribers(t.lookup("x").unwrap()), &[2]);
    }

    #[test]
    fn channel_limit() {
        let mut t = Channels::new(2);
        t.subscribe("a", 1).unwrap();
        t.subscribe("b", 2).unwrap();
        assert!(t.admits("a"));
        assert!(!t.admits("c"));
        assert_eq!(t.subscribe("c", 3), Err(TooManyChannels));
        assert!(t.subscribe("a", 4).is_ok());
    }
}
