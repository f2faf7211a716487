//! A connection's bounded outbound queue. Everything the broker sends to a
//! socket goes through one; it is filled with `try_send` and never waited
//! on. A full outbox means a slow consumer: the connection is told to close
//! with 4001 and must resume.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::{Id, ServerMsg, close};

/// One item for the socket writer.
#[derive(Debug)]
pub enum Outgoing {
    /// A text frame, possibly shared with other connections.
    Text(Utf8Bytes),
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
}

/// The receiving side, owned by the connection's task.
pub struct OutboxRx {
    pub rx: mpsc::Receiver<Outgoing>,
    pub kill: Arc<Kill>,
}

impl Outbox {
    /// A queue of at most `capacity` messages.
    pub fn new(capacity: usize) -> (Outbox, OutboxRx) {
        let (tx, rx) = mpsc::channel(capacity);
        let kill = Arc::new(Kill::default());
        (
            Outbox {
                tx,
                kill: kill.clone(),
            },
            OutboxRx { rx, kill },
        )
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
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.kill(close::SLOW);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}
