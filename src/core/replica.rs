//! A company as one copy among several (a cluster): changes another node
//! decided are applied here as they were there, so every copy takes the
//! same seqs; connection ids carry their node; the seats and agent
//! connections of a node that died are let go.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use crate::case::SessionCode;

use super::Broker;
use super::change::{Change, Seat};
use super::effect::ConnId;
use super::shard::ShardState;
use super::sink::Batch;
use super::stream::Stream;

/// Bits of a connection id below its node's number.
pub const NODE_SHIFT: u32 = 40;

impl ShardState {
    /// The connections that hold a seat or keep an agent online here.
    fn present(&self) -> impl Iterator<Item = ConnId> + '_ {
        let seats = self
            .conns
            .iter()
            .filter(|(_, s)| s.case.is_some() || !s.sessions.is_empty())
            .map(|(c, _)| *c);
        let agents = self.agents.iter().flat_map(|a| a.conns.iter().copied());
        seats.chain(agents)
    }
}

/// The node a connection id was given by (0 for a single broker).
pub fn node_of(conn: ConnId) -> u64 {
    conn >> NODE_SHIFT
}

impl Broker {
    /// Numbers this node's connections after `node`, so that ids are
    /// unique across a cluster. Call before serving.
    pub fn number_connections(&self, node: u64) {
        self.shared
            .next_conn
            .store((node << NODE_SHIFT) + 1, Ordering::Release);
    }

    /// Starts a company's stream at `epoch`, before its changes are
    /// replayed: every node shows the same epoch.
    pub fn set_epoch(&self, shard: usize, epoch: &str) {
        let mut cx = self.lock(shard);
        let cap = self.shared.config.history_events;
        cx.st.stream = Stream::restored(epoch.to_string(), 0, Vec::new(), cap);
    }

    /// The company's stream epoch.
    pub fn epoch(&self, shard: usize) -> String {
        self.lock(shard).st.stream.epoch().to_string()
    }

    /// Applies changes another node decided and stored, in their order,
    /// with their effects delivered here; nothing is recorded again.
    pub fn follow(&self, shard: usize, batches: Vec<Batch>) {
        let mut cx = self.lock(shard);
        cx.st.following = true;
        for batch in batches {
            if let Some(Change::Created(rec)) = batch.first() {
                cx.st.next_line_seq = cx.st.next_line_seq.max(rec.line_seq);
            }
            cx.apply_all(batch);
        }
        cx.st.following = false;
    }

    /// Puts back the live state an image keeps (seats, agent connections,
    /// presence, as changes), quietly, after its records.
    pub fn restore_live(&self, shard: usize, live: Vec<Change>) {
        let mut cx = self.lock(shard);
        cx.st.replaying = true;
        for change in live {
            cx.put_back(change);
        }
        cx.st.replaying = false;
        cx.st.effects.clear();
    }

    /// Forgets a company's cases (its copy went astray from the stored
    /// changes), keeping this node's connections and subscriptions, so it
    /// can be rebuilt with [`Broker::set_epoch`] and [`Broker::restore`].
    pub fn reset(&self, shard: usize) {
        let mut cx = self.lock(shard);
        let company = cx.company.clone();
        let history = self.shared.config.history_events;
        let mut fresh = ShardState::new(&company, history);
        fresh.lines.set_period(self.shared.config.position_interval);
        for (id, state) in cx.st.conns.drain() {
            let s = super::shard::ConnState {
                subscribed: state.subscribed,
                online: state.online,
                ..Default::default()
            };
            fresh.conns.insert(id, s);
        }
        for code in cx.st.cases.keys() {
            self.shared.codes.remove(code);
        }
        *cx.st = fresh;
    }

    /// Wakes the company's deadline task and webhook sender: a copy loaded
    /// quietly may hold deadlines and deliveries they do not know of.
    pub fn wake(&self, shard: usize) {
        let s = &self.shared.shards[shard];
        s.timers_changed.notify_one();
        s.hooks_changed.notify_one();
    }

    /// Drops a company's cases from memory when no connection of this
    /// node is in it: none `open`, and none closed whose seats or presence
    /// still wait to be left (the heartbeat leaves them). The copy is
    /// empty until loaded again. False, and nothing dropped, otherwise.
    pub fn let_go(&self, shard: usize, open: impl Fn(ConnId) -> bool) -> bool {
        let me = self.node();
        let mut cx = self.lock(shard);
        let here = |(&c, s): (&ConnId, &super::shard::ConnState)| {
            node_of(c) == me && (open(c) || s.case.is_some() || !s.sessions.is_empty() || s.online)
        };
        if cx.st.conns.iter().any(here) {
            return false;
        }
        let company = cx.company.clone();
        let mut empty = ShardState::new(&company, self.shared.config.history_events);
        empty.lines.set_period(self.shared.config.position_interval);
        for code in cx.st.cases.keys() {
            self.shared.codes.remove(code);
        }
        *cx.st = empty;
        true
    }

    /// True when one of the company's deadlines that may change a case
    /// (expiry, purge, orphan) is due.
    pub fn timers_due(&self, shard: usize, now: Instant) -> bool {
        let cx = self.lock(shard);
        cx.st.timers.next().is_some_and(|at| at <= now)
    }

    /// This node's connections that hold a seat or keep an agent online
    /// in this company but are not `open` any more.
    pub fn closed_here(&self, shard: usize, open: impl Fn(ConnId) -> bool) -> Vec<ConnId> {
        let me = self.node();
        let cx = self.lock(shard);
        let mut gone: Vec<ConnId> = cx
            .st
            .present()
            .filter(|&c| node_of(c) == me && !open(c))
            .collect();
        gone.sort_unstable();
        gone.dedup();
        gone
    }

    /// The nodes, other than `me`, whose connections hold a seat or keep an
    /// agent online in this company.
    pub fn nodes_present(&self, shard: usize, me: u64) -> BTreeSet<u64> {
        let cx = self.lock(shard);
        cx.st.present().map(node_of).filter(|&n| n != me).collect()
    }

    /// Lets go every seat and agent connection of the nodes in `dead`, as
    /// changes with their usual events.
    pub fn release_nodes(&self, shard: usize, dead: &BTreeSet<u64>) {
        self.release_conns(shard, |c| dead.contains(&node_of(c)));
    }

    /// Lets go every seat and agent connection of the connections `gone`
    /// picks, as changes with their usual events (and what follows them:
    /// an agent left offline gives up its offers).
    pub fn release_conns(&self, shard: usize, gone: impl Fn(ConnId) -> bool) {
        let mut cx = self.lock(shard);
        let gone = |c: &ConnId| gone(*c);
        let mut seats: Vec<(SessionCode, Seat, ConnId)> = Vec::new();
        let conns: Vec<ConnId> = cx.st.conns.keys().copied().filter(gone).collect();
        for conn in &conns {
            if let Some(state) = cx.st.conns.remove(conn) {
                seats.extend(state.case.map(|c| (c, Seat::Customer, *conn)));
                seats.extend(
                    state
                        .sessions
                        .iter()
                        .map(|&c| (c, cx.agent_seat(&c, *conn), *conn)),
                );
                for code in state.watching {
                    if let Some(c) = cx.st.cases.get_mut(&code) {
                        c.live.watchers.retain(|x| x != conn);
                    }
                }
            }
        }
        cx.leave_seats(seats);
        let agents: Vec<(usize, ConnId)> = cx
            .st
            .agents
            .iter()
            .enumerate()
            .flat_map(|(i, a)| a.conns.iter().filter(|c| gone(c)).map(move |&c| (i, c)))
            .collect();
        // As when the connections close: an agent left with none gives up
        // its offers, which go to the next eligible agent.
        for (agent, conn) in agents {
            cx.agent_disconnected(agent, conn);
        }
    }

    /// What changed since the company's last image, and its live state
    /// (seats, agent connections, presence) as the changes that rebuild
    /// it, both under one lock; `position` is called under it too.
    pub fn capture_live(
        &self,
        shard: usize,
        position: impl FnOnce() -> u64,
    ) -> (super::restore::Capture, Vec<Change>) {
        let mut cx = self.lock(shard);
        let capture = cx.capture(position);
        // The groups and agents added through the admin API first, in index order (a
        // deleted one set, then removed), so that a node starting from the
        // image has the same directory, with the same indexes, before the
        // records that refer to it.
        let mut live: Vec<Change> = cx
            .api_groups()
            .into_iter()
            .map(|g| Change::GroupSet(Box::new(g)))
            .collect();
        for a in cx.company.agents.iter().filter(|a| a.from_api) {
            live.push(Change::AgentSet(Box::new(a.record())));
            if a.retired {
                live.push(Change::AgentRemoved { id: a.id.clone() });
            }
        }
        live.extend(
            cx.api_modules()
                .into_iter()
                .map(|m| Change::ModuleSet(Box::new(m))),
        );
        // Webhook endpoints and pending deliveries, after the directory.
        live.extend(super::hooks::changes(cx.st.hooks.stored()));
        // What cases hold beside their records.
        live.extend(
            cx.stored_ext()
                .into_iter()
                .map(|(code, ext)| Change::ExtSet { code, ext }),
        );
        // From the connections, not the cases: the cost follows who is
        // connected, not the length of the queue.
        let mut seats: Vec<(SessionCode, Seat, ConnId)> = Vec::new();
        let mut watching: Vec<(SessionCode, ConnId)> = Vec::new();
        for (&conn, s) in &cx.st.conns {
            seats.extend(s.case.map(|c| (c, Seat::Customer, conn)));
            seats.extend(
                s.sessions
                    .iter()
                    .map(|&c| (c, cx.agent_seat(&c, conn), conn)),
            );
            watching.extend(s.watching.iter().map(|&c| (c, conn)));
        }
        watching.sort();
        live.extend(watching.into_iter().map(|(code, conn)| Change::Watched {
            code,
            conn,
            on: true,
        }));
        seats.sort();
        for (code, seat, conn) in seats {
            // At the record's own time, so that putting the seat back
            // leaves the record as it is.
            let Some(c) = cx.st.cases.get(&code) else {
                continue;
            };
            live.push(Change::SeatTaken {
                code,
                seat,
                conn,
                at: c.rec.updated_at,
                customer_name: None,
                token_hash: None,
            });
        }
        for (agent, a) in cx.st.agents.iter().enumerate() {
            live.extend(
                a.conns
                    .iter()
                    .map(|&conn| Change::AgentOnline { agent, conn }),
            );
            if !a.conns.is_empty() {
                live.push(Change::Presence {
                    agent,
                    state: a.presence,
                });
            }
        }
        (capture, live)
    }

    /// The company a session code belongs to, if this copy holds it.
    pub fn company_of(&self, code: &SessionCode) -> Option<usize> {
        self.shard_of(code)
    }

    /// This node's number (0 for a single broker).
    pub fn node(&self) -> u64 {
        self.shared.node()
    }
}
