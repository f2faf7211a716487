//! One company's deadlines: case expiry, purge after retention, orphan
//! checks, service levels and offers, earliest first, so the timer task
//! sleeps until the next one and never scans the cases. Records keep their deadlines as wall-clock times;
//! here they are armed on the monotonic clock.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::case::SessionCode;

/// Which deadline a timer entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    Expiry,
    Purge,
    Orphan,
    /// A service level's deadline.
    Sla(crate::case::SlaKind),
    /// A pending offer's `offer_timeout`.
    Offer,
}

/// The deadlines, earliest first.
#[derive(Default)]
pub struct Timers {
    set: BTreeSet<(Instant, Timer, SessionCode)>,
}

impl Timers {
    /// Adds a deadline; true when it is now the earliest.
    pub fn add(&mut self, at: Instant, timer: Timer, code: SessionCode) -> bool {
        let earliest = self.set.first().is_none_or(|(first, _, _)| at < *first);
        self.set.insert((at, timer, code));
        earliest
    }

    pub fn remove(&mut self, at: Instant, timer: Timer, code: SessionCode) {
        self.set.remove(&(at, timer, code));
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.set.first().map(|(at, _, _)| *at)
    }

    /// Takes the earliest deadline if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Timer, SessionCode)> {
        match self.set.first() {
            Some((at, _, _)) if *at <= now => self.set.pop_first().map(|(_, t, c)| (t, c)),
            _ => None,
        }
    }
}

/// The monotonic instant of a wall-clock time (now, when it is past).
pub fn instant_at(t: DateTime<Utc>) -> Instant {
    let left = (t - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    Instant::now() + left
}

/// `t + d`, saturating.
pub fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
