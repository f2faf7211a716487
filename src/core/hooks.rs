//! A company's webhook endpoints and pending deliveries, inside its shard.
//!
//! Deliveries wait in one line per endpoint and case: only a line's head
//! is ever sent, so one case's events reach an endpoint in `seq` order,
//! and a head that keeps failing holds back its own case only. Heads that
//! are due sit in `due`, by the time of their next attempt. Every change
//! of this state is a [`Change`](super::change::Change) (journaled, shared
//! by a cluster); which node sends a head is live state (`in_flight`).

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::case::SessionCode;
use crate::webhook::{Delivery, Outcome, Status, WebhookRecord};

/// Finished deliveries kept per endpoint for its delivery log.
pub const RECENT: usize = 200;

#[derive(Debug, Default)]
pub struct Hooks {
    /// Endpoints in the order they were added (deleted ones dropped).
    pub endpoints: Vec<WebhookRecord>,
    /// Pending deliveries by id.
    pub pending: HashMap<u64, Delivery>,
    /// Per endpoint and case: its pending deliveries, oldest first.
    lines: HashMap<(String, SessionCode), VecDeque<u64>>,
    /// Line heads by next attempt: `(Unix ms, id)`.
    due: BTreeSet<(i64, u64)>,
    /// Heads being sent, and until when the sender has them (Unix ms):
    /// past it another node may take them over.
    in_flight: HashMap<u64, i64>,
    /// Pending deliveries per endpoint.
    counts: HashMap<String, usize>,
    /// Finished deliveries per endpoint, newest last.
    pub recent: HashMap<String, VecDeque<Delivery>>,
    /// The next delivery's id.
    pub next_id: u64,
}

impl Hooks {
    /// Endpoints and pending deliveries, for an image.
    pub fn stored(&self) -> crate::webhook::StoredHooks {
        let mut pending: Vec<Delivery> = self.pending.values().cloned().collect();
        pending.sort_by_key(|d| d.id);
        crate::webhook::StoredHooks {
            endpoints: self.endpoints.clone(),
            pending,
        }
    }

    pub fn endpoint(&self, id: &str) -> Option<&WebhookRecord> {
        self.endpoints.iter().find(|e| e.id == id)
    }

    /// Adds or replaces an endpoint; a removed one takes its deliveries.
    /// An endpoint the config file declares keeps the file's fields: only
    /// whether it is disabled changes; one the file no longer declares is
    /// not brought back.
    pub fn set_endpoint(&mut self, rec: WebhookRecord) {
        if let Some(e) = self
            .endpoints
            .iter_mut()
            .find(|e| e.id == rec.id && e.from_config)
        {
            e.disabled = rec.disabled;
            e.disabled_reason = rec.disabled_reason;
            return;
        }
        if rec.from_config {
            return;
        }
        if rec.removed {
            self.endpoints.retain(|e| e.id != rec.id);
            let ids: Vec<u64> = self
                .pending
                .values()
                .filter(|d| d.endpoint == rec.id)
                .map(|d| d.id)
                .collect();
            for id in ids {
                if let Some(d) = self.pending.remove(&id) {
                    self.due.remove(&(d.next_attempt_at, id));
                    self.in_flight.remove(&id);
                }
            }
            self.lines.retain(|(e, _), _| e != &rec.id);
            self.counts.remove(&rec.id);
            self.recent.remove(&rec.id);
            return;
        }
        match self.endpoints.iter_mut().find(|e| e.id == rec.id) {
            Some(e) => *e = rec,
            None => self.endpoints.push(rec),
        }
    }

    /// Pending deliveries of an endpoint.
    pub fn count(&self, endpoint: &str) -> usize {
        self.counts.get(endpoint).copied().unwrap_or(0)
    }

    /// Queues a delivery at the end of its line (none for an endpoint
    /// that no longer exists).
    pub fn queue(&mut self, d: Delivery) {
        self.next_id = self.next_id.max(d.id + 1);
        if self.endpoint(&d.endpoint).is_none() {
            return;
        }
        let line = self.lines.entry((d.endpoint.clone(), d.code)).or_default();
        line.push_back(d.id);
        if line.len() == 1 {
            self.due.insert((d.next_attempt_at, d.id));
        }
        *self.counts.entry(d.endpoint.clone()).or_default() += 1;
        self.pending.insert(d.id, d);
    }

    /// Up to `max` heads due at `now` (Unix ms), in order, none of an
    /// endpoint that already has `per_endpoint` in flight or is disabled,
    /// none another sender still has.
    pub fn due_now(&self, now: i64, per_endpoint: usize, max: usize) -> Vec<u64> {
        let mut busy: HashMap<&str, usize> = HashMap::new();
        for (id, until) in &self.in_flight {
            if *until > now
                && let Some(d) = self.pending.get(id)
            {
                *busy.entry(d.endpoint.as_str()).or_default() += 1;
            }
        }
        let mut out = Vec::new();
        for &(at, id) in &self.due {
            if at > now || out.len() >= max {
                break;
            }
            if self.in_flight.get(&id).is_some_and(|&u| u > now) {
                continue;
            }
            let Some(d) = self.pending.get(&id) else {
                continue;
            };
            if self.endpoint(&d.endpoint).is_none_or(|e| e.disabled) {
                continue;
            }
            let n = busy.entry(d.endpoint.as_str()).or_default();
            if *n < per_endpoint {
                *n += 1;
                out.push(id);
            }
        }
        out
    }

    /// When the next head falls due (or its sender's hold runs out), if
    /// any is pending for an enabled endpoint.
    pub fn next_due(&self) -> Option<i64> {
        self.due
            .iter()
            .filter(|(_, id)| {
                self.pending
                    .get(id)
                    .and_then(|d| self.endpoint(&d.endpoint))
                    .is_some_and(|e| !e.disabled)
            })
            .map(|&(at, id)| at.max(self.in_flight.get(&id).copied().unwrap_or(i64::MIN)))
            .min()
    }

    /// A sender has the head `id` until `until` (Unix ms).
    pub fn sending(&mut self, id: u64, until: i64) {
        if self.pending.contains_key(&id) {
            self.in_flight.insert(id, until);
        }
    }

    /// Records an attempt: the head is done (its line moves on) or waits
    /// for its next attempt.
    pub fn attempted(&mut self, id: u64, status_code: Option<u16>, outcome: Outcome) {
        self.in_flight.remove(&id);
        let Some(d) = self.pending.get_mut(&id) else {
            return;
        };
        d.attempts += 1;
        d.last_status_code = status_code;
        match outcome {
            Outcome::Retry(at) => {
                self.due.remove(&(d.next_attempt_at, id));
                d.next_attempt_at = at;
                self.due.insert((at, id));
            }
            Outcome::Delivered => self.finish(id, Status::Succeeded),
            Outcome::GaveUp | Outcome::Gone => self.finish(id, Status::Failed),
        }
    }

    /// Takes a head out of its line; the next one becomes due.
    fn finish(&mut self, id: u64, status: Status) {
        let Some(mut d) = self.pending.remove(&id) else {
            return;
        };
        self.due.remove(&(d.next_attempt_at, id));
        let key = (d.endpoint.clone(), d.code);
        if let Some(line) = self.lines.get_mut(&key) {
            line.retain(|&x| x != id);
            match line.front() {
                Some(next) => {
                    let at = self.pending[next].next_attempt_at;
                    self.due.insert((at, *next));
                }
                None => {
                    self.lines.remove(&key);
                }
            }
        }
        if let Some(n) = self.counts.get_mut(&d.endpoint) {
            *n = n.saturating_sub(1);
        }
        d.status = status;
        let recent = self.recent.entry(d.endpoint.clone()).or_default();
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(d);
    }
}

/// The changes that put stored endpoints and deliveries back, endpoints
/// first.
pub fn changes(stored: crate::webhook::StoredHooks) -> Vec<super::change::Change> {
    use super::change::Change;
    stored
        .endpoints
        .into_iter()
        .map(|e| Change::WebhookSet(Box::new(e)))
        .chain(
            stored
                .pending
                .into_iter()
                .map(|d| Change::WebhookQueued(Box::new(d))),
        )
        .collect()
}
