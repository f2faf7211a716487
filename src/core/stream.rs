//! One company's event stream: its `epoch`, its `seq` and a bounded history
//! for `resume`. Who receives the events is the delivery layer's business.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::case::CaseView;
use crate::protocol::Action;

use super::effect::{Event, Filter};

/// A company's stream.
pub struct Stream {
    epoch: Arc<str>,
    seq: u64,
    history: VecDeque<Arc<Event>>,
    capacity: usize,
}

/// What `resume` can offer a subscriber.
pub enum Replay {
    /// The missed events this subscriber may see, in order.
    Events(Vec<Arc<Event>>),
    /// The events are gone or the epoch differs: send a snapshot.
    Snapshot,
}

impl Stream {
    /// A fresh stream with a random epoch: history from before it is lost.
    pub fn new(capacity: usize) -> Stream {
        Stream {
            epoch: Arc::from(hex::encode(rand::random::<[u8; 8]>())),
            seq: 0,
            history: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// A stream as it was: its epoch, its last seq and the events still
    /// held (oldest first; at most `capacity` are kept).
    pub fn restored(epoch: String, seq: u64, history: Vec<Arc<Event>>, capacity: usize) -> Stream {
        let capacity = capacity.max(1);
        let skip = history.len().saturating_sub(capacity);
        Stream {
            epoch: Arc::from(epoch),
            seq,
            history: history.into_iter().skip(skip).collect(),
            capacity,
        }
    }

    /// The events held for replay, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Arc<Event>> {
        self.history.iter()
    }

    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The seq of the last event emitted (0 before the first).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Takes the next seq for an event and keeps it for replay.
    pub fn append(
        &mut self,
        action: Action,
        group: usize,
        left: Option<usize>,
        case: CaseView,
    ) -> Arc<Event> {
        self.seq += 1;
        let event = Arc::new(Event {
            epoch: self.epoch.clone(),
            seq: self.seq,
            action,
            group,
            left,
            case,
        });
        if self.history.len() == self.capacity {
            self.history.pop_front();
        }
        self.history.push_back(event.clone());
        event
    }

    /// The events after `seq` that `filter` lets through, if the stream
    /// still holds all of them and `epoch` is this stream's.
    pub fn replay(&self, epoch: &str, seq: u64, filter: &Filter) -> Replay {
        if epoch != &*self.epoch || seq > self.seq {
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
                .filter(|e| e.seen_by(filter))
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{Customer, SessionCode, Source, Status};
    use proptest::prelude::*;

    const GROUPS: usize = 3;

    fn case(n: u64) -> CaseView {
        let now = chrono::Utc::now();
        CaseView {
            code: SessionCode::parse(&format!("{:08}", n % 100_000_000)).expect("8 digits"),
            company: "acme".into(),
            group: "support".into(),
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
            helpers: Vec::new(),
            sla: None,
            offer: None,
        }
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
                4 => (0..GROUPS).prop_map(Step::Publish),
                1 => Just(Step::Reconnect),
            ],
            0..200,
        )
    }

    /// A subscriber: an admin (every group) or an agent of group 0 alone,
    /// subscribed to every group it may see or to one.
    fn subscribers() -> impl Strategy<Value = (bool, Option<usize>)> {
        (any::<bool>(), prop::option::of(0..GROUPS))
    }

    proptest! {
        /// Any interleaving of events and reconnects gives the dashboard
        /// exactly the events it missed and may see, in order, or a
        /// snapshot when they are no longer all held; never a wrong list.
        #[test]
        fn resume_yields_exactly_the_missed_events_or_a_snapshot(
            capacity in 1usize..20,
            steps in steps(),
            (admin, only) in subscribers(),
        ) {
            let filter = Filter {
                groups: (!admin).then(|| Arc::from([0usize].as_slice())),
                only,
            };
            // What the subscriber may see, stated apart from `Filter::sees`:
            // its own group (every group for an admin), narrowed to the one
            // it asked for.
            let visible = |g: usize| (admin || g == 0) && only.is_none_or(|o| o == g);
            let mut stream = Stream::new(capacity);
            // Everything ever appended: (seq, group).
            let mut all: Vec<(u64, usize)> = Vec::new();
            let mut seen = 0u64;
            for step in steps {
                match step {
                    Step::Publish(g) => {
                        let ev = stream.append(Action::Created, g, None, case(all.len() as u64));
                        all.push((ev.seq, g));
                    }
                    Step::Reconnect => {
                        let expected: Vec<u64> = all
                            .iter()
                            .filter(|(s, g)| *s > seen && visible(*g))
                            .map(|(s, _)| *s)
                            .collect();
                        let oldest_held = all.len().saturating_sub(capacity) as u64 + 1;
                        let epoch = stream.epoch().to_string();
                        match stream.replay(&epoch, seen, &filter) {
                            Replay::Events(events) => {
                                let got: Vec<u64> = events.iter().map(|e| e.seq).collect();
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
