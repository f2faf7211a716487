//! Where a command's outcome goes when its shard unlocks: the changes it
//! applied (for a journal) and the effects they yielded (for delivery).
//!
//! Without a journal the effects are delivered at once. With one, they are
//! released, in order, only once the changes are on disk; the command's
//! reply waits for that too, through the [`Ack`] its thread leaves behind.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::change::Change;
use super::effect::{Deliver, Effect};

/// The changes of one decision, applied together.
pub type Batch = Vec<Change>;

/// Takes each unlocked shard's changes and effects.
pub trait Sink: Send + Sync + 'static {
    /// True when changes must be recorded for this sink.
    fn journaled(&self) -> bool;
    /// False while changes cannot be made durable (the disk failed): the
    /// commands that change state answer `unavailable`.
    fn available(&self) -> bool;
    /// Called with the shard's lock held, in the shard's order.
    fn commit(&self, shard: usize, batches: Vec<Batch>, effects: Vec<Effect>);
}

/// Delivers at once: no journal.
pub struct Direct<D>(pub Arc<D>);

impl<D: Deliver> Sink for Direct<D> {
    fn journaled(&self) -> bool {
        false
    }

    fn available(&self) -> bool {
        true
    }

    fn commit(&self, shard: usize, _batches: Vec<Batch>, mut effects: Vec<Effect>) {
        self.0.deliver(shard, &mut effects);
    }
}

const DONE: u8 = 1;
const FAILED: u8 = 2;

/// The acknowledgement of one committed shard unlock: done once its
/// changes are on disk and its effects handed to delivery.
#[derive(Debug, Default)]
pub struct Ack {
    state: AtomicU8,
    notify: Notify,
}

impl Ack {
    pub fn new() -> Arc<Ack> {
        Arc::new(Ack::default())
    }

    /// Marks the changes stored (`true`) or given up on (`false`).
    pub fn finish(&self, stored: bool) {
        self.state
            .store(if stored { DONE } else { FAILED }, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Waits until the changes are stored; false when they were not within
    /// `limit`.
    pub async fn wait(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.notify.notified();
                match self.state.load(Ordering::Acquire) {
                    DONE => return true,
                    FAILED => return false,
                    _ => notified.await,
                }
            }
        };
        tokio::time::timeout(limit, wait).await.unwrap_or(false)
    }
}

/// How long a command's reply waits for its changes to be stored.
pub const STORE_WAIT: Duration = Duration::from_secs(10);

/// Waits until the changes behind `ack` are stored; `unavailable` when they
/// were not in time (they may still be, later: never a false yes).
pub async fn stored(ack: Option<Arc<Ack>>) -> crate::error::Result<()> {
    match ack {
        Some(ack) if !ack.wait(STORE_WAIT).await => Err(crate::error::Error::new(
            crate::protocol::ErrorCode::Unavailable,
            "the change could not be stored in time; retry",
        )),
        _ => Ok(()),
    }
}

thread_local! {
    /// The acknowledgement of the last commit made on this thread.
    static LAST: RefCell<Option<Arc<Ack>>> = const { RefCell::new(None) };
}

/// Leaves `ack` for the command running on this thread.
pub fn leave_ack(ack: Arc<Ack>) {
    LAST.with(|l| *l.borrow_mut() = Some(ack));
}

/// Takes the acknowledgement of the last commit made on this thread, if
/// it still has to be waited for. Call it right after a command returns,
/// before any `.await`.
pub fn take_ack() -> Option<Arc<Ack>> {
    LAST.with(|l| l.borrow_mut().take())
}
