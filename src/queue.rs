//! One company's live queue stream: its `epoch`, its `seq`, a bounded
//! history for `resume`, and the subscribers it fans events out to. Each
//! event is serialised once; every subscriber gets the same bytes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;

use crate::case::CaseView;
use crate::outbox::Outbox;
use crate::protocol::{Action, ServerMsg};

/// Which events a subscriber may see.
#[derive(Clone, Debug)]
pub struct Filter {
    /// The groups the agent may see; `None` for an admin (the whole company).
    pub groups: Option<Arc<HashSet<String>>>,
    /// The `group` asked for in `subscribe`, if any.
    pub only: Option<String>,
}

impl Filter {
    /// True when an event or case of `group` is for this subscriber.
    pub fn sees(&self, group: &str) -> bool {
        self.groups.as_ref().is_none_or(|g| g.contains(group))
            && self.only.as_deref().is_none_or(|o| o == group)
    }
}

/// One event as held for replay.
struct Held {
    seq: u64,
    group: Arc<str>,
    frame: Utf8Bytes,
}

struct Subscriber {
    filter: Filter,
    outbox: Outbox,
}

/// A company's stream.
pub struct Stream {
    epoch: String,
    seq: u64,
    history: VecDeque<Held>,
    capacity: usize,
    subscribers: HashMap<u64, Subscriber>,
}

/// What `resume` can offer a subscriber.
pub enum Replay {
    /// The missed events this subscriber may see, in order.
    Events(Vec<Utf8Bytes>),
    /// The events are gone or the epoch differs: send a snapshot.
    Snapshot,
}

impl Stream {
    /// A fresh stream with a random epoch: history from before it is lost.
    pub fn new(capacity: usize) -> Stream {
        Stream {
            epoch: hex::encode(rand::random::<[u8; 8]>()),
            seq: 0,
            history: VecDeque::new(),
            capacity,
            subscribers: HashMap::new(),
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The seq of the last event emitted (0 before the first).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Number of live subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }

    /// Emits one event: takes the next seq, serialises the event once, keeps
    /// it for replay and hands the bytes to every subscriber that may see it.
    /// A subscriber whose outbox is full is dropped from the stream (its
    /// connection is closed with 4001 by the outbox). Returns the seq.
    pub fn publish(&mut self, action: Action, case: &CaseView) -> u64 {
        self.seq += 1;
        let msg = ServerMsg::Event {
            epoch: self.epoch.clone(),
            seq: self.seq,
            action,
            case: Box::new(case.clone()),
        };
        let frame = Utf8Bytes::from(msg.to_text(None));
        let group: Arc<str> = Arc::from(case.group.as_str());
        let now = tokio::time::Instant::now();
        self.subscribers
            .retain(|_, sub| !sub.filter.sees(&group) || sub.outbox.push_event(frame.clone(), now));
        if self.history.len() == self.capacity {
            self.history.pop_front();
        }
        self.history.push_back(Held {
            seq: self.seq,
            group,
            frame,
        });
        self.seq
    }

    /// Sends a push outside the event sequence (no `seq`, not replayed),
    /// such as an agent's presence, to the subscribers that see one of
    /// `groups`.
    pub fn push_to_groups(&mut self, msg: &ServerMsg, groups: &[String]) {
        if self.subscribers.is_empty() {
            return;
        }
        let frame = Utf8Bytes::from(msg.to_text(None));
        self.subscribers.retain(|_, sub| {
            !groups.iter().any(|g| sub.filter.sees(g)) || sub.outbox.push_shared(frame.clone())
        });
    }

    /// Adds (or replaces) a connection's subscription.
    pub fn subscribe(&mut self, conn: u64, filter: Filter, outbox: Outbox) {
        self.subscribers.insert(conn, Subscriber { filter, outbox });
    }

    /// Removes a connection's subscription; true if it had one.
    pub fn unsubscribe(&mut self, conn: u64) -> bool {
        self.subscribers.remove(&conn).is_some()
    }

    /// The events after `seq` that `filter` lets through, if the stream
    /// still holds all of them and `epoch` is this stream's.
    pub fn replay(&self, epoch: &str, seq: u64, filter: &Filter) -> Replay {
        if epoch != self.epoch || seq > self.seq {
            return Replay::Snapshot;
        }
        if seq == self.seq {
            return Replay::Events(Vec::new());
        }
        // The history must still hold seq + 1, the first missed event.
        match self.history.front() {
            Some(first) if first.seq <= seq + 1 => {}
            _ => return Replay::Snapshot,
        }
        let skip = (seq + 1 - self.history[0].seq) as usize;
        Replay::Events(
            self.history
                .iter()
                .skip(skip)
                .filter(|h| filter.sees(&h.group))
                .map(|h| h.frame.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{Customer, SessionCode, Source, Status};
    use proptest::prelude::*;

    const GROUPS: [&str; 3] = ["support", "sales", "billing"];

    fn case_in(group: &str, n: u64) -> CaseView {
        let now = chrono::Utc::now();
        CaseView {
            code: SessionCode::parse(&format!("{:08}", n % 100_000_000)).expect("8 digits"),
            company: "acme".into(),
            group: group.into(),
            name: String::new(),
            description: String::new(),
            customer: Customer::default(),
            source: Source::Manual,
            created_by: "alice".into(),
            assignee: None,
            status: Status::New,
            customer_connected: false,
            supporter_connected: false,
            created_at: now,
            updated_at: now,
            assigned_at: None,
            assigned_by: None,
            expires_at: now,
            closed_at: None,
            closed_by: None,
        }
    }

    fn seq_of(frame: &Utf8Bytes) -> u64 {
        let v: serde_json::Value = serde_json::from_str(frame.as_str()).expect("event JSON");
        v["seq"].as_u64().expect("seq")
    }

    /// One step of a dashboard's life: the stream moves on, or the
    /// dashboard reconnects from the last position it saw.
    #[derive(Clone, Debug)]
    enum Step {
        Publish(usize),
        Reconnect,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            prop_oneof![
                4 => (0..GROUPS.len()).prop_map(Step::Publish),
                1 => Just(Step::Reconnect),
            ],
            0..200,
        )
    }

    fn filters() -> impl Strategy<Value = Filter> {
        (any::<bool>(), prop::option::of(0..GROUPS.len())).prop_map(|(admin, only)| Filter {
            groups: (!admin).then(|| Arc::new(["support".to_string()].into_iter().collect())),
            only: only.map(|g| GROUPS[g].to_string()),
        })
    }

    proptest! {
        /// Any interleaving of events and reconnects gives the dashboard
        /// exactly the events it missed and may see, in order, or a
        /// snapshot when they are no longer all held; never a wrong list.
        #[test]
        fn resume_yields_exactly_the_missed_events_or_a_snapshot(
            capacity in 1usize..20,
            steps in steps(),
            filter in filters(),
        ) {
            let mut stream = Stream::new(capacity);
            // Everything ever published: (seq, group).
            let mut all: Vec<(u64, &str)> = Vec::new();
            let mut seen = 0u64;
            for step in steps {
                match step {
                    Step::Publish(g) => {
                        let seq = stream.publish(Action::Created, &case_in(GROUPS[g], all.len() as u64));
                        all.push((seq, GROUPS[g]));
                    }
                    Step::Reconnect => {
                        let expected: Vec<u64> = all
                            .iter()
                            .filter(|(s, g)| *s > seen && filter.sees(g))
                            .map(|(s, _)| *s)
                            .collect();
                        let oldest_held = all.len().saturating_sub(capacity) as u64 + 1;
                        match stream.replay(stream.epoch().to_string().as_str(), seen, &filter) {
                            Replay::Events(frames) => {
                                let got: Vec<u64> = frames.iter().map(seq_of).collect();
                                prop_assert_eq!(got, expected);
                            }
                            Replay::Snapshot => {
                                // Only when the first missed event is gone.
                                prop_assert!(seen + 1 < oldest_held);
                            }
                        }
                        seen = stream.seq();
                    }
                }
            }
            // A foreign epoch always gets a snapshot.
            prop_assert!(matches!(stream.replay("other", seen, &filter), Replay::Snapshot));
        }
    }
}
