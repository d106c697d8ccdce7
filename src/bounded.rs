//! A bounded queue between threads that holds memory only for what is in it: std's unbounded
//! channel (a list of small blocks, allocated as items come) with the bound kept by a count
//! beside it. A bounded `sync_channel` allocates all its slots at once and writes each one's
//! stamp: 65,536 slots were ~0.9 MiB resident per worker inbox and ~4.7 MiB for the broker's
//! publish queue of every idle process (bench/RESULTS.md, "Fixed cost per process").

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError, channel};
use std::time::Duration;

/// The sending side (cloned by every sender).
#[derive(Debug)]
pub struct BoundedSender<T> {
    tx: Sender<T>,
    queued: Arc<AtomicUsize>,
    cap: usize,
}

impl<T> Clone for BoundedSender<T> {
    fn clone(&self) -> Self {
        BoundedSender {
            tx: self.tx.clone(),
            queued: self.queued.clone(),
            cap: self.cap,
        }
    }
}

/// The receiving side.
#[derive(Debug)]
pub struct BoundedReceiver<T> {
    rx: Receiver<T>,
    queued: Arc<AtomicUsize>,
}

/// A queue of at most `cap` items.
pub fn bounded<T>(cap: usize) -> (BoundedSender<T>, BoundedReceiver<T>) {
    let (tx, rx) = channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        BoundedSender {
            tx,
            queued: queued.clone(),
            cap,
        },
        BoundedReceiver { rx, queued },
    )
}

impl<T> BoundedSender<T> {
    /// Queues `item`, unless `cap` items are queued (`Full`) or the receiver is gone
    /// (`Disconnected`); either way the item comes back.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        // Counted first, so that concurrent senders cannot overshoot the bound together.
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.cap {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(TrySendError::Full(item));
        }
        self.tx.send(item).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            TrySendError::Disconnected(e.0)
        })
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> BoundedReceiver<T> {
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let item = self.rx.try_recv()?;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        Ok(item)
    }

    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let item = self.rx.recv_timeout(timeout)?;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_cap_and_frees_a_place_per_receive() {
        let (tx, rx) = bounded(2);
        let tx2 = tx.clone();
        assert!(tx.try_send(1).is_ok());
        assert!(tx2.try_send(2).is_ok());
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(tx.len(), 2);
        assert_eq!(rx.try_recv(), Ok(1));
        assert!(tx.try_send(3).is_ok());
        assert_eq!(rx.recv_timeout(Duration::from_millis(10)), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert!(tx.is_empty());
        drop(rx);
        assert!(matches!(tx.try_send(4), Err(TrySendError::Disconnected(4))));
        assert!(tx.is_empty());
    }
}
