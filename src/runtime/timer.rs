//! A hashed timing wheel with one-second slots: no timer object per connection.
//!
//! Each connection keeps a `deadline` (the tick its current timeout expires) and `timer_at` (the
//! tick of its one live wheel entry). Pushing a deadline later touches nothing: when the old entry
//! fires, the worker sees the deadline is still ahead and re-arms (lazy re-arming, as nginx and
//! uSockets do). Only a deadline moved *earlier* adds an entry; the superseded one is recognised
//! as stale by `timer_at` and dropped. So a connection has one live entry (8 bytes) in the wheel
//! whatever its traffic.
//!
//! One-second slots: every timeout here (ping intervals, head and close timeouts) is whole
//! seconds and tolerates a second of slack. 64 slots: deadlines further out are parked in the
//! last slot of the window and re-armed when it fires, so the wheel never wraps onto itself.

/// Slots in the wheel (ticks it covers before a long deadline must be re-armed).
pub const SLOTS: u32 = 64;

/// A wheel entry: connection slot and the generation it had when armed.
pub type Key = (u32, u32);

#[derive(Debug)]
pub struct Wheel {
    slots: Vec<Vec<Key>>,
    /// The last tick whose slot has been processed.
    done: u32,
}

impl Wheel {
    /// A wheel whose ticks up to and including `now` count as processed.
    pub fn new(now: u32) -> Self {
        Wheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            done: now,
        }
    }

    /// Arms `key` for tick `at`; returns the tick actually used (clamped into the wheel's
    /// window, never in the processed past). The caller stores it as the connection's `timer_at`.
    pub fn arm(&mut self, at: u32, key: Key) -> u32 {
        let at = at.clamp(self.done + 1, self.done + SLOTS - 1);
        self.slots[(at % SLOTS) as usize].push(key);
        at
    }

    /// Processes every tick up to `now`, calling `fire(tick, key)` for each entry due. At most one
    /// full turn of the wheel is processed per call; the rest catches up on later calls.
    pub fn advance(&mut self, now: u32, mut fire: impl FnMut(u32, Key)) {
        let mut steps = 0;
        while self.done < now && steps < SLOTS {
            self.done += 1;
            steps += 1;
            let tick = self.done;
            let i = (tick % SLOTS) as usize;
            let mut due = std::mem::take(&mut self.slots[i]);
            for &key in &due {
                fire(tick, key);
            }
            // `fire` cannot arm into this slot (arm clamps to done + SLOTS - 1), so give the
            // allocation back for reuse.
            due.clear();
            if self.slots[i].is_empty() {
                self.slots[i] = due;
            }
        }
    }

    /// Entries held, live or stale.
    pub fn len(&self) -> usize {
        self.slots.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_at_the_right_tick() {
        let mut w = Wheel::new(10);
        assert_eq!(w.arm(13, (1, 0)), 13);
        assert_eq!(w.arm(11, (2, 0)), 11);
        let mut fired = Vec::new();
        w.advance(12, |t, k| fired.push((t, k)));
        assert_eq!(fired, vec![(11, (2, 0))]);
        w.advance(20, |t, k| fired.push((t, k)));
        assert_eq!(fired, vec![(11, (2, 0)), (13, (1, 0))]);
        assert!(w.is_empty());
    }

    #[test]
    fn clamps_past_and_far_deadlines() {
        let mut w = Wheel::new(100);
        assert_eq!(w.arm(50, (1, 0)), 101);
        assert_eq!(w.arm(1000, (2, 0)), 100 + SLOTS - 1);
        let mut n = 0;
        w.advance(100 + SLOTS, |_, _| n += 1);
        assert_eq!(n, 2);
    }

    #[test]
    fn rearm_from_fire_is_kept() {
        let mut w = Wheel::new(0);
        w.arm(1, (7, 0));
        let mut rearmed = Vec::new();
        w.advance(1, |t, k| rearmed.push((t, k)));
        for (t, k) in rearmed {
            assert_eq!(w.arm(t + 5, k), 6);
        }
        let mut fired = Vec::new();
        w.advance(6, |t, k| fired.push((t, k)));
        assert_eq!(fired, vec![(6, (7, 0))]);
    }
}
