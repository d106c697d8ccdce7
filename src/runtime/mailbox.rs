//! The cross-worker mailbox: a bounded queue plus a `mio::Waker` per worker.
//!
//! A publish on one worker becomes one immutable message (`Arc<Message>`, each wire encoding
//! built once) that every
//! other worker receives through its inbox and delivers to its own subscribers; no worker ever
//! touches another's connections. Senders batch wake-ups: a worker that queued mail for a peer
//! during a loop turn wakes it once at the end of that turn.

use std::sync::Arc;
use std::sync::mpsc::{TryRecvError, TrySendError};

use mio::Waker;

use crate::bounded::{BoundedReceiver, BoundedSender, bounded};
use crate::pubsub::hub::Message;

/// Messages a worker can receive.
#[derive(Debug)]
pub enum Mail {
    /// Deliver `msg` to local subscribers of its channel.
    Publish(Arc<Message>),
    /// A Bayeux client whose `/meta/connect` this worker holds (slot, generation) has
    /// something queued, or the connect was replaced or its client removed.
    BayeuxWake { idx: u32, generation: u32 },
    /// `--broker`: Redis answered the publish this worker's connection (slot, generation)
    /// waits for, reaching `receivers` Redis subscribers; `None`: lost before an answer.
    PublishAck {
        idx: u32,
        generation: u32,
        receivers: Option<u64>,
    },
    /// A connection whose Socket.IO session this worker owns, moved here from the worker
    /// that read its request (`worker/socketio.rs`).
    SioAdopt(Box<crate::runtime::worker::SioAdopt>),
    /// First step of a shutdown: `Shared::draining` is set, so from now on this worker accepts
    /// no publish; it counts itself in `Shared::quiesced`. Every publish it accepted before
    /// has been posted to its peers' inboxes by then, so a `Shutdown` sent once all workers
    /// are counted comes after all of them in every inbox.
    Quiesce,
    /// Stop accepting, deliver what is pending, close every client (1001), exit when done or
    /// at `until`.
    Shutdown { until: std::time::Instant },
}

/// Mail queued per worker before senders see it as full: 65,536 messages is far more than one
/// loop turn of any peer produces, so it fills only if a worker is stuck, and then the publish
/// is refused and counted rather than growing memory without bound.
///
/// The queue holds memory only for what is in it ([`crate::bounded`]).
pub const INBOX_CAPACITY: usize = 65_536;

/// The sending side of one worker's inbox.
#[derive(Debug, Clone)]
pub struct Mailbox {
    tx: BoundedSender<Mail>,
    waker: Arc<Waker>,
}

/// The receiving side: the worker's own.
#[derive(Debug)]
pub struct Inbox {
    rx: BoundedReceiver<Mail>,
}

impl Inbox {
    /// The next mail, if any.
    pub fn try_recv(&self) -> Result<Mail, TryRecvError> {
        self.rx.try_recv()
    }
}

/// The inbox is full; the mail was not queued.
#[derive(Debug)]
pub struct Full;

impl Mailbox {
    /// Creates a worker's inbox; `waker` must be registered with that worker's `Poll`.
    pub fn new(waker: Arc<Waker>) -> (Mailbox, Inbox) {
        let (tx, rx) = bounded(INBOX_CAPACITY);
        (Mailbox { tx, waker }, Inbox { rx })
    }

    /// Queues `mail` without waking the worker (call [`Mailbox::wake`] once per turn).
    pub fn post(&self, mail: Mail) -> Result<(), Full> {
        match self.tx.try_send(mail) {
            Err(TrySendError::Full(_)) => Err(Full),
            // Disconnected: the worker has exited (shutdown); nothing to deliver to.
            Ok(()) | Err(TrySendError::Disconnected(_)) => Ok(()),
        }
    }

    pub fn wake(&self) {
        // A failed wake means the worker is gone; there is nobody to wake.
        let _ = self.waker.wake();
    }

    /// Queues `mail` and wakes the worker at once (control messages).
    pub fn send_now(&self, mail: Mail) -> Result<(), Full> {
        self.post(mail)?;
        self.wake();
        Ok(())
    }
}
