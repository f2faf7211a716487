//! A connection's bounded outbound queue. Everything the broker sends to a
//! socket goes through one; it is filled with `try_send` and never waited
//! on. A full outbox means a slow consumer: the connection is told to close
//! with 4001 and must resume.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::protocol::{Id, ServerMsg, close};

/// One item for the socket writer.
#[derive(Debug)]
pub enum Outgoing {
    /// A text frame, possibly shared with other connections.
    Text(Utf8Bytes),
    /// A queue event, shared, with the time it was emitted (push latency).
    Event(Utf8Bytes, Instant),
    /// Close the connection with this code after what is queued before it.
    Close(u16, &'static str),
}

/// Tells a connection's task to close at once, with a code.
#[derive(Debug, Default)]
pub struct Kill {
    token: CancellationToken,
    code: AtomicU16,
}

impl Kill {
    /// Waits until the connection is told to close; returns the close code.
    pub async fn wait(&self) -> u16 {
        self.token.cancelled().await;
        self.code.load(Ordering::Acquire)
    }

    fn fire(&self, code: u16) {
        // The first reason wins.
        let _ = self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }
}

/// The sending side of a connection's outbound queue.
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    kill: Arc<Kill>,
    /// Bytes queued and not yet taken by the writer.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The receiving side, owned by the connection's task.
pub struct OutboxRx {
    rx: mpsc::Receiver<Outgoing>,
    queued: Arc<AtomicUsize>,
    pub kill: Arc<Kill>,
}

impl OutboxRx {
    /// The next item; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        let item = self.rx.recv().await;
        self.taken(item.as_ref());
        item
    }

    /// The next item if one is queued now.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        let item = self.rx.try_recv().ok();
        self.taken(item.as_ref());
        item
    }

    fn taken(&self, item: Option<&Outgoing>) {
        if let Some(len) = item.map(Outgoing::len) {
            self.queued.fetch_sub(len, Ordering::AcqRel);
        }
    }
}

impl Outgoing {
    /// Payload bytes, for the outbox's byte bound.
    fn len(&self) -> usize {
        match self {
            Outgoing::Text(f) | Outgoing::Event(f, _) => f.len(),
            Outgoing::Close(..) => 0,
        }
    }
}

impl Outbox {
    /// A queue of at most `capacity` messages and about `max_bytes` bytes.
    pub fn new(capacity: usize, max_bytes: usize) -> (Outbox, OutboxRx) {
        let (tx, rx) = mpsc::channel(capacity);
        let kill = Arc::new(Kill::default());
        let queued = Arc::new(AtomicUsize::new(0));
        (
            Outbox {
                tx,
                kill: kill.clone(),
                queued: queued.clone(),
                max_bytes,
            },
            OutboxRx { rx, queued, kill },
        )
    }

    /// Queues a queue event emitted at `at`.
    pub fn push_event(&self, frame: Utf8Bytes, at: Instant) -> bool {
        self.push_item(Outgoing::Event(frame, at))
    }

    /// Queues a frame already serialised. False when the connection is gone
    /// or too slow (it is then told to close with 4001).
    pub fn push_shared(&self, frame: Utf8Bytes) -> bool {
        self.push_item(Outgoing::Text(frame))
    }

    /// Serialises and queues one message.
    pub fn push(&self, msg: &ServerMsg, id: Option<&Id>) -> bool {
        self.push_shared(Utf8Bytes::from(msg.to_text(id)))
    }

    /// Queues a close after everything queued so far.
    pub fn close(&self, code: u16, reason: &'static str) {
        self.push_item(Outgoing::Close(code, reason));
    }

    /// Tells the connection to close now, dropping what is queued.
    pub fn kill(&self, code: u16) {
        self.kill.fire(code);
    }

    fn push_item(&self, item: Outgoing) -> bool {
        let len = item.len();
        // One message larger than the bound (a big snapshot) may pass alone.
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued + len > self.max_bytes {
            self.kill(close::SLOW);
            return false;
        }
        self.queued.fetch_add(len, Ordering::AcqRel);
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(e) => {
                self.queued.fetch_sub(len, Ordering::AcqRel);
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    self.kill(close::SLOW);
                }
                false
            }
        }
    }
}
