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
        let was = self.endpoint(&rec.id).map(|e| e.disabled);
        if let Some(e) = self
            .endpoints
            .iter_mut()
            .find(|e| e.id == rec.id && e.from_config)
        {
            e.disabled = rec.disabled;
            e.disabled_reason = rec.disabled_reason;
            self.park(&rec.id, was, rec.disabled);
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
        let (id, disabled) = (rec.id.clone(), rec.disabled);
        match self.endpoints.iter_mut().find(|e| e.id == rec.id) {
            Some(e) => *e = rec,
            None => self.endpoints.push(rec),
        }
        self.park(&id, was, disabled);
    }

    /// A disabled endpoint's line heads leave `due` (so that what is due
    /// is found without walking past them), and come back when it is
    /// enabled again.
    fn park(&mut self, endpoint: &str, was: Option<bool>, disabled: bool) {
        if was.unwrap_or(false) == disabled {
            return;
        }
        for ((e, _), line) in &self.lines {
            if e != endpoint {
                continue;
            }
            if let Some(head) = line.front()
                && let Some(d) = self.pending.get(head)
            {
                if disabled {
                    self.due.remove(&(d.next_attempt_at, *head));
                } else {
                    self.due.insert((d.next_attempt_at, *head));
                }
            }
        }
    }

    /// True when the endpoint exists and is enabled.
    fn enabled(&self, endpoint: &str) -> bool {
        self.endpoint(endpoint).is_some_and(|e| !e.disabled)
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
        let enabled = self.enabled(&d.endpoint);
        let line = self.lines.entry((d.endpoint.clone(), d.code)).or_default();
        line.push_back(d.id);
        if line.len() == 1 && enabled {
            self.due.insert((d.next_attempt_at, d.id));
        }
        *self.counts.entry(d.endpoint.clone()).or_default() += 1;
        self.pending.insert(d.id, d);
    }

    /// Up to `max` heads due at `now` (Unix ms), in order, none of an
    /// endpoint that already has `per_endpoint` in flight or is disabled,
    /// none another sender still has.
    pub fn due_now(&self, now: i64, per_endpoint: usize, max: usize) -> Vec<u64> {
        // Calls in flight to an enabled endpoint (those to a disabled one
        // take no place: nothing more is sent to it).
        let mut busy: HashMap<&str, usize> = HashMap::new();
        for (id, until) in &self.in_flight {
            if *until > now
                && let Some(d) = self.pending.get(id)
                && self.enabled(&d.endpoint)
            {
                *busy.entry(d.endpoint.as_str()).or_default() += 1;
            }
        }
        // Stop as soon as every enabled endpoint is full: the walk costs
        // what is taken (and the heads being sent), not the backlog.
        let enabled = self.endpoints.iter().filter(|e| !e.disabled).count();
        let mut full = busy.values().filter(|&&n| n >= per_endpoint).count();
        let mut out = Vec::new();
        for &(at, id) in &self.due {
            if at > now || out.len() >= max || full >= enabled {
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
                if *n == per_endpoint {
                    full += 1;
                }
            }
        }
        out
    }

    /// When the next head falls due (or its sender's hold runs out), if
    /// any is pending for an enabled endpoint (disabled endpoints' heads
    /// are parked out of `due`). Walks only past heads being sent.
    pub fn next_due(&self) -> Option<i64> {
        let mut best: Option<i64> = None;
        for &(at, id) in &self.due {
            if best.is_some_and(|b| at >= b) {
                break;
            }
            let when = at.max(self.in_flight.get(&id).copied().unwrap_or(i64::MIN));
            best = Some(best.map_or(when, |b| b.min(when)));
        }
        best
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
                let parked = !self.due.remove(&(d.next_attempt_at, id));
                d.next_attempt_at = at;
                if !parked {
                    self.due.insert((at, id));
                }
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
        let parked = !self.due.remove(&(d.next_attempt_at, id));
        let enabled = self.enabled(&d.endpoint) && !parked;
        let key = (d.endpoint.clone(), d.code);
        if let Some(line) = self.lines.get_mut(&key) {
            line.retain(|&x| x != id);
            match line.front() {
                Some(next) => {
                    let at = self.pending[next].next_attempt_at;
                    if enabled {
                        self.due.insert((at, *next));
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::{Delivery, Outcome, Status, WebhookRecord};

    fn endpoint(id: &str, disabled: bool) -> WebhookRecord {
        WebhookRecord {
            id: id.into(),
            url: "https://example.com/".into(),
            events: vec!["*".into()],
            description: String::new(),
            disabled,
            disabled_reason: None,
            secret: "whsec_MDEyMzQ1Njc4OWFiY2RlZg==".into(),
            previous_secret: None,
            previous_until: 0,
            removed: false,
            from_config: false,
        }
    }

    fn delivery(id: u64, endpoint: &str, code: u64, at: i64) -> Delivery {
        Delivery {
            id,
            endpoint: endpoint.into(),
            message_id: format!("msg_{id}"),
            kind: "case.updated".into(),
            seq: id,
            code: SessionCode::parse(&format!("{:08}", 10_000_000 + code)).expect("a code"),
            body: "{}".into(),
            attempts: 0,
            status: Status::Pending,
            last_status_code: None,
            next_attempt_at: at,
        }
    }

    #[test]
    fn one_case_at_a_time_per_endpoint_and_a_failing_case_holds_only_itself() {
        let mut h = Hooks::default();
        h.set_endpoint(endpoint("a", false));
        h.queue(delivery(1, "a", 11, 0));
        h.queue(delivery(2, "a", 11, 0));
        h.queue(delivery(3, "a", 22, 0));
        // Only the heads: the first of case 11, the one of case 22.
        assert_eq!(h.due_now(10, 8, 10), vec![1, 3]);
        // Case 11's head fails and waits; case 22 goes on; 2 stays behind 1.
        h.attempted(1, Some(500), Outcome::Retry(100));
        h.attempted(3, Some(200), Outcome::Delivered);
        assert_eq!(h.due_now(10, 8, 10), Vec::<u64>::new());
        assert_eq!(h.next_due(), Some(100));
        h.attempted(1, Some(200), Outcome::Delivered);
        assert_eq!(h.due_now(100, 8, 10), vec![2]);
        assert_eq!(h.recent["a"].len(), 2);
    }

    #[test]
    fn a_disabled_endpoint_is_parked_and_a_busy_one_waits_its_turn() {
        let mut h = Hooks::default();
        h.set_endpoint(endpoint("a", false));
        for i in 0..5 {
            h.queue(delivery(i, "a", 100 + i, 0));
        }
        assert_eq!(h.due_now(0, 2, 10).len(), 2, "two in flight at most");
        h.sending(0, 50);
        h.sending(1, 50);
        assert_eq!(h.due_now(0, 2, 10), Vec::<u64>::new());
        assert_eq!(h.next_due(), Some(0), "three more are due");
        // Disabled: nothing is due, nothing is walked past.
        h.set_endpoint(endpoint("a", true));
        assert_eq!(h.next_due(), None);
        assert!(h.due.is_empty());
        assert_eq!(h.count("a"), 5, "kept while disabled");
        h.set_endpoint(endpoint("a", false));
        assert_eq!(h.due.len(), 5);
        // Deleted: its deliveries go.
        let mut gone = endpoint("a", false);
        gone.removed = true;
        h.set_endpoint(gone);
        assert!(h.pending.is_empty() && h.due.is_empty() && h.next_due().is_none());
        // A delivery for an endpoint that does not exist is not kept.
        h.queue(delivery(9, "nope", 1, 0));
        assert!(h.pending.is_empty());
    }

    #[test]
    fn calls_in_flight_to_a_disabled_endpoint_do_not_hold_back_an_enabled_one() {
        let mut h = Hooks::default();
        h.set_endpoint(endpoint("a", false));
        h.set_endpoint(endpoint("b", false));
        h.queue(delivery(1, "a", 11, 0));
        h.queue(delivery(2, "a", 22, 0));
        h.sending(1, 50);
        h.sending(2, 50);
        // `a` has its two calls in flight, then is disabled while they hang.
        h.set_endpoint(endpoint("a", true));
        h.queue(delivery(3, "b", 11, 0));
        assert_eq!(h.due_now(10, 2, 10), vec![3]);
    }
}
