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

    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The seq of the last event emitted (0 before the first).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Takes the next seq for an event and keeps it for replay.
    pub fn append(&mut self, action: Action, group: usize, case: CaseView) -> Arc<Event> {
        self.seq += 1;
        let event = Arc::new(Event {
            epoch: self.epoch.clone(),
            seq: self.seq,
            action,
            group,
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
                .filter(|e| filter.sees(e.group))
                .cloned()
                .collect(),
        )
    }
}
