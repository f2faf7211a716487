//! The state the driver and the dashboards share: the snapshot `seq`, the
//! ring of send times the driver writes and the dashboards read (slot
//! `k % RING` for the driver's k-th change), each dashboard's progress,
//! from which the driver paces itself, and the latency histograms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::stats::Sharded;

/// Slots of the send-time ring: far more than the changes in flight.
pub(super) const RING: u64 = 1 << 20;

/// State shared by the driver and the dashboards.
pub(super) struct Shared {
    pub(super) start: Instant,
    /// The snapshot `seq`: the driver's k-th change is `base + k`.
    pub(super) base: u64,
    /// Send time of change k (µs since `start`) in slot `k % RING`.
    pub(super) send_us: Box<[AtomicU64]>,
    /// Changes whose send time is stored.
    pub(super) sent: AtomicU64,
    /// Each dashboard's last in-order `seq`; `u64::MAX` once disconnected.
    pub(super) progress: Box<[AtomicU64]>,
    pub(super) latency: Sharded,
}

impl Shared {
    pub(super) fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Events delivered so far (from the dashboards' progress), and the
    /// slowest live dashboard's progress.
    pub(super) fn scan_progress(&self) -> (u64, u64) {
        let mut total = 0;
        let mut min = u64::MAX;
        for p in self.progress.iter() {
            let p = p.load(Ordering::Relaxed);
            if p != u64::MAX {
                total += p - self.base;
                min = min.min(p);
            }
        }
        (total, min)
    }
}
