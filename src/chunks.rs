//! A slab in fixed chunks: the connection table, the Socket.IO session table and the Bayeux
//! client table. Uses nothing of the crate, so that every layer may.
//!
//! The `slab` crate keeps its entries in one `Vec` that doubles: at 15,000 connections it holds
//! 16,384 entries, and the doubling from 8,192 copied them all and freed a buffer half that size,
//! which the allocator keeps (~44 of the 168 bytes an idle WebSocket subscriber cost, with the
//! ~7 of spare entries; bench/RESULTS.md, "Idle cost (issue 20)"). Here entries live in chunks of
//! [`CHUNK`] that never move: growing allocates one more chunk, nothing is copied, no buffer is
//! left behind, and at most one chunk is spare. Keys are dense indexes (chunk × CHUNK + offset)
//! reused last-freed-first, as the slab does, so a mio token carries one the same way.

use std::ops::{Index, IndexMut};

/// Entries per chunk.
pub const CHUNK: usize = 1024;

/// No free entry.
const NONE: usize = usize::MAX;

#[derive(Debug)]
enum Entry<T> {
    /// Free; the next free key.
    Vacant(usize),
    Occupied(T),
}

/// Entries in chunks that never move.
#[derive(Debug)]
pub struct Chunked<T> {
    chunks: Vec<Box<[Entry<T>]>>,
    /// The last freed entry (the head of the free list), or [`NONE`].
    free: usize,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked::new()
    }
}

impl<T> Chunked<T> {
    pub fn new() -> Self {
        Chunked {
            chunks: Vec::new(),
            free: NONE,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries allocated (occupied and free).
    pub fn capacity(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    fn entry(&self, key: usize) -> Option<&Entry<T>> {
        self.chunks.get(key / CHUNK).map(|c| &c[key % CHUNK])
    }

    fn entry_mut(&mut self, key: usize) -> Option<&mut Entry<T>> {
        self.chunks
            .get_mut(key / CHUNK)
            .map(|c| &mut c[key % CHUNK])
    }

    pub fn get(&self, key: usize) -> Option<&T> {
        match self.entry(key) {
            Some(Entry::Occupied(t)) => Some(t),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.entry_mut(key) {
            Some(Entry::Occupied(t)) => Some(t),
            _ => None,
        }
    }

    pub fn contains(&self, key: usize) -> bool {
        self.get(key).is_some()
    }

    /// The key the next insert takes (a chunk is added if none is free).
    pub fn vacant_key(&mut self) -> usize {
        if self.free == NONE {
            let base = self.chunks.len() * CHUNK;
            // Free list through the new chunk in ascending order, its last entry ending it.
            let chunk: Box<[Entry<T>]> = (0..CHUNK)
                .map(|i| Entry::Vacant(if i + 1 < CHUNK { base + i + 1 } else { NONE }))
                .collect();
            self.chunks.push(chunk);
            self.free = base;
        }
        self.free
    }

    /// Stores `value`; its key.
    pub fn insert(&mut self, value: T) -> usize {
        let key = self.vacant_key();
        let e = self.entry_mut(key).expect("the free key is inside a chunk");
        let Entry::Vacant(next) = *e else {
            unreachable!("the free list holds free entries only")
        };
        *e = Entry::Occupied(value);
        self.free = next;
        self.len += 1;
        key
    }

    /// Takes the value at `key` out, if there is one; the entry is reused first.
    pub fn try_remove(&mut self, key: usize) -> Option<T> {
        let free = self.free;
        let e = self.entry_mut(key)?;
        if matches!(e, Entry::Vacant(_)) {
            return None;
        }
        let Entry::Occupied(t) = std::mem::replace(e, Entry::Vacant(free)) else {
            unreachable!("checked just above")
        };
        self.free = key;
        self.len -= 1;
        Some(t)
    }

    /// Takes the value at `key` out. Panics if there is none (as `slab::Slab::remove`).
    pub fn remove(&mut self, key: usize) -> T {
        self.try_remove(key).expect("no entry at this key")
    }

    /// (key, value) of every occupied entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk.iter().enumerate().filter_map(move |(i, e)| match e {
                Entry::Occupied(t) => Some((c * CHUNK + i, t)),
                Entry::Vacant(_) => None,
            })
        })
    }

    /// A place for a value whose key must be known first (a mio token is made from it).
    pub fn vacant_entry(&mut self) -> VacantEntry<'_, T> {
        let key = self.vacant_key();
        VacantEntry { key, table: self }
    }
}

/// A free entry reserved by [`Chunked::vacant_entry`].
pub struct VacantEntry<'a, T> {
    key: usize,
    table: &'a mut Chunked<T>,
}

impl<T> VacantEntry<'_, T> {
    pub fn key(&self) -> usize {
        self.key
    }

    pub fn insert(self, value: T) {
        let k = self.table.insert(value);
        debug_assert_eq!(k, self.key);
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, key: usize) -> &T {
        self.get(key).expect("no entry at this key")
    }
}

impl<T> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, key: usize) -> &mut T {
        self.get_mut(key).expect("no entry at this key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_dense_and_reused_last_freed_first() {
        let mut t = Chunked::new();
        let keys: Vec<usize> = (0..3000).map(|i| t.insert(i)).collect();
        assert_eq!(keys, (0..3000).collect::<Vec<_>>());
        assert_eq!(t.len(), 3000);
        assert_eq!(t.capacity(), 3 * CHUNK);
        assert_eq!(t[2500], 2500);
        assert_eq!(t.remove(10), 10);
        assert_eq!(t.remove(2000), 2000);
        assert!(!t.contains(10) && t.get(2000).is_none());
        assert_eq!(t.try_remove(10), None);
        // Last freed, first reused.
        assert_eq!(t.insert(7), 2000);
        assert_eq!(t.insert(8), 10);
        assert_eq!(t.insert(9), 3000);
        assert_eq!(t.len(), 3001);
        t[10] += 1;
        assert_eq!(t.get(10), Some(&9));
        assert_eq!(t.get(5 * CHUNK), None);
    }

    #[test]
    fn iter_and_vacant_entry() {
        let mut t = Chunked::new();
        for i in 0..5 {
            t.insert(i * 10);
        }
        t.remove(1);
        t.remove(3);
        let seen: Vec<(usize, i32)> = t.iter().map(|(k, v)| (k, *v)).collect();
        assert_eq!(seen, [(0, 0), (2, 20), (4, 40)]);
        let e = t.vacant_entry();
        assert_eq!(e.key(), 3);
        e.insert(33);
        assert_eq!(t[3], 33);
        assert!(Chunked::<u8>::new().is_empty());
    }

    /// Entries never move: a reference's address stays the same while the table grows.
    #[test]
    fn growing_moves_nothing() {
        let mut t = Chunked::new();
        t.insert(1u64);
        let before = &t[0] as *const u64;
        for i in 0..10 * CHUNK {
            t.insert(i as u64);
        }
        assert_eq!(&t[0] as *const u64, before);
    }
}
