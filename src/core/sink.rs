//! Where a command's outcome goes when its shard unlocks: the changes it
//! applied (for a journal) and the effects they yielded (for delivery).
//!
//! Without a journal the effects are delivered at once. With one, they are
//! released, in order, only once the changes are on disk; the command's
//! reply waits for that too, through the [`Ack`] its thread leaves behind.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
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
    /// True when the sink shares every change with other nodes, the live
    /// state of agents included (a cluster); a journal keeps durable ones.
    fn replicated(&self) -> bool {
        false
    }
    /// False while changes cannot be made durable (the disk failed): the
    /// commands that change state answer `unavailable`.
    fn available(&self) -> bool;
    /// Called with the shard's lock held, in the shard's order.
    fn commit(&self, shard: usize, batches: Vec<Batch>, effects: Vec<Effect>);
    /// A company was added at run time in shard `shard`, before its first
    /// commit.
    fn company_added(&self, _shard: usize, _id: &str) {}
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

/// What runs once an acknowledgement is settled; told whether the changes
/// were stored.
type Then = Box<dyn FnOnce(bool) + Send>;

/// The acknowledgement of one committed shard unlock: done once its
/// changes are stored; a command's reply is queued just before its effects
/// are handed to delivery, later replies just after.
#[derive(Default)]
pub struct Ack {
    state: AtomicU8,
    notify: Notify,
    then: Mutex<Vec<Then>>,
    /// What runs once the effects were handed to delivery too, and
    /// whether that happened (under the same lock).
    after: Mutex<(bool, Vec<Then>)>,
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish()
    }
}

impl Ack {
    pub fn new() -> Arc<Ack> {
        Arc::new(Ack::default())
    }

    /// Marks the changes stored (`true`) or given up on (`false`), and runs
    /// what waited for it, in the order it was registered.
    pub fn finish(&self, stored: bool) {
        self.finish_then_deliver(stored, || {});
    }

    /// Settles in three steps: what waited with [`Ack::then`] (the
    /// command's reply), then `deliver` (its effects), then what waited
    /// with [`Ack::after`] (replies of later commands of the same
    /// connection, which follow this command's pushes).
    pub fn finish_then_deliver(&self, stored: bool, deliver: impl FnOnce()) {
        let then = {
            let mut then = self.then.lock().unwrap_or_else(|p| p.into_inner());
            self.state
                .store(if stored { DONE } else { FAILED }, Ordering::Release);
            std::mem::take(&mut *then)
        };
        for f in then {
            f(stored);
        }
        deliver();
        let after = {
            let mut after = self.after.lock().unwrap_or_else(|p| p.into_inner());
            after.0 = true;
            std::mem::take(&mut after.1)
        };
        for f in after {
            f(stored);
        }
        self.notify.notify_waiters();
    }

    /// True once settled and its effects handed to delivery.
    pub fn delivered(&self) -> bool {
        self.after.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Runs `f` once settled and the effects handed to delivery (at once
    /// if they already are).
    pub fn after(&self, f: impl FnOnce(bool) + Send + 'static) {
        let mut after = self.after.lock().unwrap_or_else(|p| p.into_inner());
        if after.0 {
            drop(after);
            f(self.state.load(Ordering::Acquire) == DONE);
        } else {
            after.1.push(Box::new(f));
        }
    }

    /// Runs `f` once settled (at once if it already is). Everything
    /// registered on one acknowledgement runs in registration order, and
    /// acknowledgements settle in the order of their commits.
    pub fn then(&self, f: impl FnOnce(bool) + Send + 'static) {
        let mut then = self.then.lock().unwrap_or_else(|p| p.into_inner());
        match self.state.load(Ordering::Acquire) {
            0 => then.push(Box::new(f)),
            state => {
                drop(then);
                f(state == DONE);
            }
        }
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
