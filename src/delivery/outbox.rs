//! A connection's bounded outbound queue. Everything the broker sends to a
//! socket goes through one; it is filled without waiting and never waited
//! on. A full outbox (by messages or by bytes) means a slow consumer: the
//! connection is told to close with 4001 and must resume.
//!
//! The queue is a `VecDeque` behind a mutex with a `Notify`, rather than a
//! channel: tokio's bounded channel allocates a block of slots (about
//! 1.8 KiB here) for every connection up front, which alone would be a
//! quarter of an idle connection's budget. This queue allocates as items
//! arrive and gives memory back once drained.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Frame;
use crate::protocol::{Id, ServerMsg, close};

/// One item for the socket writer.
#[derive(Debug)]
pub enum Outgoing {
    /// A text frame, possibly shared with other connections.
    Text(Frame),
    /// A queue event, shared, with the time it was emitted (push latency).
    Event(Frame, Instant),
    /// Close the connection with this code after what is queued before it.
    Close(u16, &'static str),
    /// A text frame larger than the outbox's byte bound (a big snapshot),
    /// with its share of the broker-wide budget for such frames, held until
    /// it is written.
    Large(Frame, Pin),
}

impl Outgoing {
    /// Payload bytes, for the outbox's byte bound.
    fn len(&self) -> usize {
        match self {
            Outgoing::Text(f) | Outgoing::Event(f, _) | Outgoing::Large(f, _) => f.len(),
            Outgoing::Close(..) => 0,
        }
    }
}

/// The bytes that frames larger than an outbox's bound may hold across
/// every connection at once (`large_messages_bytes`): a client that asks
/// for big snapshots and never reads them pins at most this much.
#[derive(Debug)]
pub struct LargeBudget {
    left: std::sync::atomic::AtomicUsize,
}

impl LargeBudget {
    pub fn new(bytes: usize) -> Arc<LargeBudget> {
        Arc::new(LargeBudget {
            left: std::sync::atomic::AtomicUsize::new(bytes),
        })
    }

    /// Takes `n` bytes of the budget, or `None` when that many are not left.
    pub fn take(self: &Arc<Self>, n: usize) -> Option<Pin> {
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .ok()
            .map(|_| Pin {
                budget: self.clone(),
                n,
            })
    }

    /// Bytes not taken.
    pub fn left(&self) -> usize {
        self.left.load(Ordering::Acquire)
    }
}

/// A share of a [`LargeBudget`], given back when dropped.
#[derive(Debug)]
pub struct Pin {
    budget: Arc<LargeBudget>,
    n: usize,
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.budget.left.fetch_add(self.n, Ordering::AcqRel);
    }
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

/// Items and their bytes, under one lock.
#[derive(Debug, Default)]
struct Items {
    queue: VecDeque<Outgoing>,
    bytes: usize,
    /// While a command of this connection runs: what arrives meanwhile is
    /// held at the back of the queue, behind the command's reply.
    holding: bool,
    /// Items at the back of the queue that arrived while holding.
    held: usize,
}

impl Items {
    /// Items the writer may take now.
    fn ready(&self) -> usize {
        self.queue.len() - self.held
    }
}

#[derive(Debug)]
struct Queue {
    items: Mutex<Items>,
    /// Wakes the writer; a notification sent while it is busy is kept as a
    /// permit, so none is lost.
    ready: Notify,
    /// The receiving side is gone.
    closed: AtomicBool,
    max_messages: usize,
    max_bytes: usize,
    /// Where a frame over `max_bytes` takes its bytes; without one it
    /// passes alone, unbounded.
    large: Option<Arc<LargeBudget>>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Items> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A drained queue keeps at most this many slots allocated.
const KEEP_SLOTS: usize = 16;

/// The sending side of a connection's outbound queue.
#[derive(Clone, Debug)]
pub struct Outbox {
    queue: Arc<Queue>,
    kill: Arc<Kill>,
}

/// The receiving side, owned by the connection's task.
pub struct OutboxRx {
    queue: Arc<Queue>,
    pub kill: Arc<Kill>,
}

impl Drop for OutboxRx {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        // Free what nobody will write.
        *self.queue.lock() = Items::default();
    }
}

impl OutboxRx {
    /// A sending half of the same queue.
    pub fn sender(&self) -> Outbox {
        Outbox {
            queue: self.queue.clone(),
            kill: self.kill.clone(),
        }
    }

    /// The next item. Cancel-safe: an item is only taken when returned.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        loop {
            if let Some(item) = self.try_recv() {
                return Some(item);
            }
            self.queue.ready.notified().await;
        }
    }

    /// The next item if one is queued now.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        let mut items = self.queue.lock();
        if items.ready() == 0 {
            return None;
        }
        let item = items.queue.pop_front()?;
        items.bytes -= item.len();
        if items.queue.is_empty() && items.queue.capacity() > KEEP_SLOTS {
            items.queue.shrink_to(KEEP_SLOTS);
        }
        Some(item)
    }
}

impl Outbox {
    /// A queue of at most `max_messages` messages and about `max_bytes`
    /// bytes (one larger message, such as a big snapshot, passes alone).
    pub fn new(max_messages: usize, max_bytes: usize) -> (Outbox, OutboxRx) {
        Outbox::with_budget(max_messages, max_bytes, None)
    }

    /// As [`Outbox::new`], a frame larger than `max_bytes` taking its bytes
    /// from `large`: when they are not left, the connection is told to
    /// close with 4001 (and resumes later).
    pub fn with_budget(
        max_messages: usize,
        max_bytes: usize,
        large: Option<Arc<LargeBudget>>,
    ) -> (Outbox, OutboxRx) {
        let queue = Arc::new(Queue {
            items: Mutex::new(Items::default()),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            max_messages,
            max_bytes,
            large,
        });
        let kill = Arc::new(Kill::default());
        (
            Outbox {
                queue: queue.clone(),
                kill: kill.clone(),
            },
            OutboxRx { queue, kill },
        )
    }

    /// Queues a queue event emitted at `at`.
    pub fn push_event(&self, frame: Frame, at: Instant) -> bool {
        self.push_item(Outgoing::Event(frame, at))
    }

    /// Queues a frame already serialised. False when the connection is gone
    /// or too slow (it is then told to close with 4001).
    pub fn push_shared(&self, frame: Frame) -> bool {
        self.push_item(Outgoing::Text(frame))
    }

    /// Serialises and queues one message.
    pub fn push(&self, msg: &ServerMsg, id: Option<&Id>) -> bool {
        self.push_shared(Frame::message(msg, id))
    }

    /// Queues a close after everything queued so far.
    pub fn close(&self, code: u16, reason: &'static str) {
        self.push_item(Outgoing::Close(code, reason));
    }

    /// Tells the connection to close now, dropping what is queued.
    pub fn kill(&self, code: u16) {
        self.kill.fire(code);
    }

    /// From now until [`Outbox::release`], what is queued is held back
    /// behind a reply queued with [`Outbox::push_reply`]: a command's reply
    /// leaves before the pushes (and the close) that reach its connection
    /// while it runs, whichever thread delivers them.
    pub fn hold(&self) {
        let mut items = self.queue.lock();
        items.holding = true;
    }

    /// Ends a [`Outbox::hold`]: what was held follows the reply.
    pub fn release(&self) {
        let wake = {
            let mut items = self.queue.lock();
            items.holding = false;
            let held = std::mem::take(&mut items.held);
            held > 0
        };
        if wake {
            self.queue.ready.notify_one();
        }
    }

    /// Queues a command's reply ahead of whatever is held (behind
    /// everything else); a plain push when nothing is held.
    pub fn push_reply(&self, frame: Frame) -> bool {
        self.push_at(Outgoing::Text(frame), true)
    }

    fn push_item(&self, item: Outgoing) -> bool {
        self.push_at(item, false)
    }

    fn push_at(&self, item: Outgoing, before_held: bool) -> bool {
        if self.queue.closed.load(Ordering::Acquire) {
            return false;
        }
        let len = item.len();
        // A frame over the byte bound passes alone, with its share of the
        // broker-wide budget for such frames.
        let item = match (item, &self.queue.large) {
            (Outgoing::Text(frame), Some(budget)) if len > self.queue.max_bytes => {
                match budget.take(len) {
                    Some(pin) => Outgoing::Large(frame, pin),
                    None => {
                        self.kill(close::SLOW);
                        return false;
                    }
                }
            }
            (item, _) => item,
        };
        let (full, wake) = {
            let mut items = self.queue.lock();
            let over_bytes = items.bytes > 0 && items.bytes + len > self.queue.max_bytes;
            let full = items.queue.len() >= self.queue.max_messages || over_bytes;
            let was_empty = items.ready() == 0;
            let mut wake = false;
            if !full {
                items.bytes += len;
                if before_held {
                    let at = items.ready();
                    items.queue.insert(at, item);
                    wake = was_empty;
                } else {
                    items.queue.push_back(item);
                    if items.holding {
                        items.held += 1;
                    } else {
                        wake = was_empty;
                    }
                }
            }
            (full, wake)
        };
        if full {
            self.kill(close::SLOW);
            return false;
        }
        // Only the first item wakes the writer: it empties the queue before
        // it waits again (`OutboxRx::recv` looks before it sleeps), so
        // items behind the first need no wake-up of their own. Held items
        // wake it when released.
        if wake {
            self.queue.ready.notify_one();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Frame {
        Frame::text(&"x".repeat(n))
    }

    #[tokio::test]
    async fn items_come_out_in_order_and_wake_the_reader() {
        let (tx, mut rx) = Outbox::new(10, 1000);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 3 {
                match rx.recv().await {
                    Some(Outgoing::Text(f)) => got.push(f.len()),
                    other => panic!("{other:?}"),
                }
            }
            got
        });
        for n in [1, 2, 3] {
            assert!(tx.push_shared(frame(n)));
        }
        assert_eq!(reader.await.unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn past_the_message_bound_the_connection_is_told_to_close() {
        let (tx, _rx) = Outbox::new(2, 1000);
        assert!(tx.push_shared(frame(1)));
        assert!(tx.push_shared(frame(1)));
        assert!(!tx.push_shared(frame(1)));
        assert!(tx.kill.token.is_cancelled());
        assert_eq!(tx.kill.code.load(Ordering::Acquire), close::SLOW);
    }

    #[test]
    fn past_the_byte_bound_too_but_one_big_message_passes_alone() {
        let (tx, mut rx) = Outbox::new(100, 10);
        assert!(tx.push_shared(frame(50)), "alone, a big message passes");
        assert!(!tx.push_shared(frame(1)), "behind it, nothing more");
        assert!(rx.try_recv().is_some());
        let (tx, _rx) = Outbox::new(100, 10);
        assert!(tx.push_shared(frame(6)));
        assert!(!tx.push_shared(frame(6)));
    }

    #[test]
    fn a_drained_queue_gives_its_memory_back() {
        let (tx, mut rx) = Outbox::new(10_000, usize::MAX);
        for _ in 0..1000 {
            tx.push_shared(frame(1));
        }
        while rx.try_recv().is_some() {}
        assert!(rx.queue.lock().queue.capacity() <= KEEP_SLOTS);
    }

    #[test]
    fn a_reply_leaves_before_what_arrived_while_its_command_ran() {
        let (tx, mut rx) = Outbox::new(10, 1000);
        assert!(tx.push_shared(frame(1)), "before the command");
        tx.hold();
        assert!(tx.push_shared(frame(2)), "a push while it runs");
        tx.close(close::NORMAL, "case ended");
        let first = rx.try_recv();
        assert!(
            matches!(first, Some(Outgoing::Text(ref f)) if f.len() == 1),
            "{first:?}"
        );
        assert!(rx.try_recv().is_none(), "held items wait for the reply");
        assert!(tx.push_reply(frame(3)));
        let reply = rx.try_recv();
        assert!(
            matches!(reply, Some(Outgoing::Text(ref f)) if f.len() == 3),
            "{reply:?}"
        );
        assert!(rx.try_recv().is_none(), "still held until released");
        tx.release();
        assert!(matches!(rx.try_recv(), Some(Outgoing::Text(ref f)) if f.len() == 2));
        assert!(matches!(
            rx.try_recv(),
            Some(Outgoing::Close(close::NORMAL, _))
        ));
        // After the release, a late reply is queued in order.
        assert!(tx.push_shared(frame(4)));
        assert!(tx.push_reply(frame(5)));
        assert!(matches!(rx.try_recv(), Some(Outgoing::Text(ref f)) if f.len() == 4));
        assert!(matches!(rx.try_recv(), Some(Outgoing::Text(ref f)) if f.len() == 5));
    }

    #[tokio::test]
    async fn released_items_wake_the_reader() {
        let (tx, mut rx) = Outbox::new(10, 1000);
        tx.hold();
        assert!(tx.push_shared(frame(1)));
        let reader = tokio::spawn(async move { rx.recv().await.map(|i| i.len()) });
        tokio::task::yield_now().await;
        tx.release();
        assert_eq!(reader.await.unwrap(), Some(1));
    }

    #[test]
    fn big_frames_share_one_budget_until_written() {
        let budget = LargeBudget::new(120);
        let (a, mut rx_a) = Outbox::with_budget(10, 10, Some(budget.clone()));
        let (b, _rx_b) = Outbox::with_budget(10, 10, Some(budget.clone()));
        assert!(a.push_shared(frame(100)), "within the budget");
        assert_eq!(budget.left(), 20);
        assert!(!b.push_shared(frame(50)), "past it: told to close");
        assert_eq!(b.kill.code.load(Ordering::Acquire), close::SLOW);
        assert!(b.push_shared(frame(5)) || b.kill.token.is_cancelled());
        // Taken out of the queue, the frame keeps its share until dropped
        // (written).
        let big = rx_a.try_recv();
        assert!(matches!(big, Some(Outgoing::Large(ref f, _)) if f.len() == 100));
        assert_eq!(budget.left(), 20);
        drop(big);
        assert_eq!(budget.left(), 120);
    }

    #[test]
    fn nothing_is_queued_once_the_reader_is_gone() {
        let (tx, rx) = Outbox::new(10, 1000);
        drop(rx);
        assert!(!tx.push_shared(frame(1)));
        assert!(!tx.kill.token.is_cancelled(), "a gone reader is not slow");
    }
}
