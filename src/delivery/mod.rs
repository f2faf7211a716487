//! Delivery: the core's effects turned into frames, each serialised once,
//! and handed to the connections' bounded outboxes without waiting. Holds
//! every connection's outbox and each company's subscribers with their
//! filters.
//!
//! [`Hub::deliver`] is called in each company's order: under the company's
//! lock when nothing is journaled, from the journal's release thread once
//! a group is on disk otherwise. Either way events of one company reach
//! every subscriber in `seq` order.

pub mod frame;
pub mod outbox;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use dashmap::DashMap;
use serde::Serialize;
use tokio::time::Instant;

use crate::case::CaseView;
use crate::core::effect::{Event, Filter, Start};
use crate::core::{ConnId, Deliver, Effect};
use crate::metrics::Metrics;
use crate::protocol::{Action, CaseBody, Id, ServerMsg, SignalFrom, close};

pub use frame::Frame;
pub use outbox::{Outbox, OutboxRx, Outgoing};

/// `subscribe`s of one connection awaiting their start at once, at most.
const MAX_PENDING_SUBSCRIBES: usize = 64;

/// A connection as delivery knows it.
struct Endpoint {
    outbox: Outbox,
    /// The `id`s of the `subscribe`s in flight, in order, each echoed by
    /// its snapshot or `resumed`.
    reply_ids: VecDeque<Option<Id>>,
}

struct Subscriber {
    filter: Filter,
    outbox: Outbox,
}

/// Every connection's outbox, and each company's subscribers.
pub struct Hub {
    endpoints: DashMap<ConnId, Endpoint>,
    /// Per company (shard): its subscribers. Only touched from
    /// [`Hub::deliver`], which runs in that company's order.
    subscribers: Vec<Mutex<HashMap<ConnId, Subscriber>>>,
    metrics: Metrics,
}

impl Hub {
    pub fn new(shards: usize, metrics: Metrics) -> Hub {
        Hub {
            endpoints: DashMap::new(),
            subscribers: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            metrics,
        }
    }

    /// Makes a connection reachable.
    pub fn register(&self, conn: ConnId, outbox: Outbox) {
        self.endpoints.insert(
            conn,
            Endpoint {
                outbox,
                reply_ids: VecDeque::new(),
            },
        );
    }

    /// Forgets a connection (after the core has released its seats).
    pub fn unregister(&self, conn: ConnId) {
        self.endpoints.remove(&conn);
    }

    /// Queues the `id` the next subscription start of `conn` echoes.
    pub fn push_reply_id(&self, conn: ConnId, id: Option<Id>) {
        if let Some(mut e) = self.endpoints.get_mut(&conn)
            && e.reply_ids.len() < MAX_PENDING_SUBSCRIBES
        {
            e.reply_ids.push_back(id);
        }
    }

    /// Takes back the last queued `id` (its `subscribe` was refused).
    pub fn pop_reply_id(&self, conn: ConnId) {
        if let Some(mut e) = self.endpoints.get_mut(&conn) {
            e.reply_ids.pop_back();
        }
    }

    /// Closes every subscriber of a company with 4001, as slow consumers:
    /// they resume and get what they missed from the stream's history (its
    /// copy was rebuilt and some events were never pushed here).
    pub fn drop_subscribers(&self, shard: usize) {
        let subs = self.subscribers[shard]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for s in subs.values() {
            s.outbox.kill(crate::protocol::close::SLOW);
        }
    }

    /// True while `conn` is registered (its connection is open).
    pub fn has(&self, conn: ConnId) -> bool {
        self.endpoints.contains_key(&conn)
    }

    fn outbox(&self, conn: ConnId) -> Option<Outbox> {
        self.endpoints.get(&conn).map(|e| e.outbox.clone())
    }

    /// One frame to each named connection.
    fn to_each(&self, to: &[ConnId], frame: &Frame) {
        for &conn in to {
            if let Some(outbox) = self.outbox(conn) {
                outbox.push_shared(frame.clone());
            }
        }
    }

    fn one(&self, to: &[ConnId], msg: &ServerMsg) {
        if !to.is_empty() {
            self.to_each(to, &Frame::message(msg, None));
        }
    }
}

impl Deliver for Hub {
    fn deliver(&self, shard: usize, effects: &mut Vec<Effect>) {
        let mut subs = self.subscribers[shard]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for effect in effects.drain(..) {
            match effect {
                Effect::Event(event) => {
                    let frame = event_frame(&event);
                    self.metrics.event_emitted();
                    let now = Instant::now();
                    // A subscriber whose outbox is full is dropped from the
                    // stream; its connection is closed with 4001.
                    subs.retain(|_, s| {
                        !event.seen_by(&s.filter) || s.outbox.push_event(frame.clone(), now)
                    });
                }
                Effect::Status {
                    to,
                    code,
                    status,
                    customer_connected,
                    supporter_connected,
                    supporter,
                } => self.one(
                    &to,
                    &ServerMsg::Status {
                        code,
                        status,
                        customer_connected,
                        supporter_connected,
                        supporter,
                    },
                ),
                Effect::Ended {
                    to,
                    code,
                    reason,
                    close,
                } => {
                    let frame = Frame::message(&ServerMsg::Ended { code, reason }, None);
                    for conn in to {
                        if let Some(outbox) = self.outbox(conn) {
                            outbox.push_shared(frame.clone());
                            if close {
                                outbox.close(close::NORMAL, "case ended");
                            }
                        }
                    }
                }
                Effect::Position {
                    to,
                    code,
                    position,
                    estimated_wait_s,
                } => self.one(
                    &to,
                    &ServerMsg::Queue {
                        code,
                        position,
                        estimated_wait_s,
                    },
                ),
                Effect::Agent { agent, groups } => {
                    if subs.is_empty() {
                        continue;
                    }
                    let frame = Frame::message(&ServerMsg::Agent { agent }, None);
                    subs.retain(|_, s| {
                        !s.filter.sees_any(&groups) || s.outbox.push_shared(frame.clone())
                    });
                }
                Effect::Groups { groups } => {
                    if subs.is_empty() {
                        continue;
                    }
                    // Admins see every group: one frame for them all.
                    let all = Frame::message(
                        &ServerMsg::Groups {
                            groups: groups.iter().map(|g| g.group.clone()).collect(),
                        },
                        None,
                    );
                    subs.retain(|_, s| {
                        let frame = match &s.filter.groups {
                            None => all.clone(),
                            Some(mine) => Frame::message(
                                &ServerMsg::Groups {
                                    groups: groups
                                        .iter()
                                        .filter(|g| mine.contains(&g.index))
                                        .map(|g| g.group.clone())
                                        .collect(),
                                },
                                None,
                            ),
                        };
                        s.outbox.push_shared(frame)
                    });
                }
                Effect::Stats { groups } => {
                    if subs.is_empty() {
                        continue;
                    }
                    // One frame per set of groups seen: admins and a
                    // dashboard of every group share it.
                    let all = Frame::message(
                        &ServerMsg::Stats {
                            groups: groups.iter().map(|(_, s)| s.clone()).collect(),
                        },
                        None,
                    );
                    subs.retain(|_, s| {
                        let seen: Vec<_> =
                            groups.iter().filter(|(g, _)| s.filter.sees(*g)).collect();
                        if seen.is_empty() {
                            return true;
                        }
                        let frame = if seen.len() == groups.len() {
                            all.clone()
                        } else {
                            Frame::message(
                                &ServerMsg::Stats {
                                    groups: seen.into_iter().map(|(_, s)| s.clone()).collect(),
                                },
                                None,
                            )
                        };
                        s.outbox.push_shared(frame)
                    });
                }
                Effect::Chat {
                    to,
                    code,
                    line,
                    internal,
                } => self.one(
                    &to,
                    &ServerMsg::Chat {
                        code,
                        line,
                        internal,
                    },
                ),
                Effect::Invited { to, code, case, by } => self.one(
                    &to,
                    &ServerMsg::Invited {
                        code,
                        case: CaseBody::Agent(case),
                        by,
                    },
                ),
                Effect::Offered {
                    to,
                    code,
                    case,
                    expires_at,
                } => self.one(
                    &to,
                    &ServerMsg::Offer {
                        code,
                        case: CaseBody::Agent(case),
                        expires_at,
                    },
                ),
                Effect::Signal {
                    to,
                    code,
                    from,
                    data,
                } => self.one(
                    &to,
                    &ServerMsg::Signal {
                        code,
                        from: SignalFrom { role: from },
                        data,
                    },
                ),
                Effect::Subscribe {
                    conn,
                    filter,
                    start,
                } => {
                    let Some((outbox, id)) = self
                        .endpoints
                        .get_mut(&conn)
                        .map(|mut e| (e.outbox.clone(), e.reply_ids.pop_front().flatten()))
                    else {
                        continue;
                    };
                    match start {
                        Start::Snapshot { epoch, seq, cases } => {
                            let msg = ServerMsg::Snapshot {
                                epoch: epoch.to_string(),
                                seq,
                                cases,
                            };
                            outbox.push_shared(Frame::message(&msg, id.as_ref()));
                        }
                        Start::Resumed { epoch, seq, events } => {
                            let msg = ServerMsg::Resumed {
                                epoch: epoch.to_string(),
                                seq,
                            };
                            if outbox.push_shared(Frame::message(&msg, id.as_ref())) {
                                for event in events {
                                    if !outbox.push_shared(event_frame(&event)) {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    subs.insert(conn, Subscriber { filter, outbox });
                }
                Effect::Unsubscribe { conn } => {
                    subs.remove(&conn);
                }
                Effect::Close { to, code, reason } => {
                    for conn in to {
                        if let Some(outbox) = self.outbox(conn) {
                            outbox.close(code, reason);
                        }
                    }
                }
            }
        }
    }
}

/// An `event` frame, serialised straight from the kept event.
pub(crate) fn event_frame(event: &Event) -> Frame {
    #[derive(Serialize)]
    struct EventFrame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        epoch: &'a str,
        seq: u64,
        action: Action,
        case: &'a CaseView,
    }
    Frame::json(&EventFrame {
        kind: "event",
        epoch: &event.epoch,
        seq: event.seq,
        action: event.action,
        case: &event.case,
    })
}
