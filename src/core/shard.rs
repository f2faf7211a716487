//! One company: its cases, waiting lines, stream, indexes, deadlines, the
//! live state of its agents and connections, behind its own lock.
//!
//! [`Locked`] is the held lock. Commands queue effects on it; when it is
//! dropped, waiting customers whose positions are due are told them, and
//! every effect is handed to the delivery sink, in order, before the lock
//! is released.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use tokio::sync::Notify;

use tokio::time::Instant;

use crate::case::SessionCode;
use crate::config::Config;
use crate::directory::{Company, Directory};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::protocol::{AgentStatus, ErrorCode, PresenceState};

use super::effect::ConnId;
use super::effect::Effect;
use super::index::Index;
use super::line::Lines;
use super::record::Case;
use super::sink::{Batch, Sink};
use super::stream::Stream;
use super::timers::Timers;

/// What every shard shares.
pub(crate) struct Shared {
    /// Who exists; replaced whole when the directory changes (rarely),
    /// read without a lock.
    pub dir: arc_swap::ArcSwap<Directory>,
    pub config: Config,
    pub metrics: Metrics,
    pub sink: Arc<dyn Sink>,
    /// Changes are recorded for a journal.
    pub journaled: bool,
    /// Changes are shared with other nodes (live state too).
    pub replicated: bool,
    /// Which company each held code belongs to: a join by code finds its
    /// shard here.
    pub codes: DashMap<SessionCode, usize>,
    pub next_conn: AtomicU64,
    /// One per company slot (`max_companies`); those past the directory's
    /// companies wait for a company added at run time.
    pub shards: Vec<Shard>,
    /// Companies are added one at a time.
    pub adding: Mutex<()>,
    /// Called with a company's shard once it is added at run time (starts
    /// its deadlines).
    pub on_company: std::sync::OnceLock<Box<dyn Fn(usize) + Send + Sync>>,
}

impl Shared {
    /// This node's number (0 for a single broker): the one its
    /// connection ids carry.
    pub fn node(&self) -> u64 {
        super::replica::node_of(self.next_conn.load(std::sync::atomic::Ordering::Acquire))
    }
}

/// The `stats` push goes at most this often.
pub const STATS_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// One company's lock and its timer wake-up.
pub(crate) struct Shard {
    pub state: Mutex<ShardState>,
    /// Wakes the shard's timer task when an earlier deadline appears.
    pub timers_changed: Notify,
    /// Wakes the shard's webhook sender when deliveries may be due.
    pub hooks_changed: Notify,
    /// Answers of webhook calls not recorded yet: the sender records them
    /// in batches, under one taking of the lock (at most the calls in
    /// flight).
    pub hook_answers: Mutex<Vec<crate::core::commands::webhooks::Answer>>,
}

/// Live state of one configured agent.
#[derive(Debug)]
pub struct AgentLive {
    /// Open agent connections (on every node); online while any.
    pub conns: Vec<ConnId>,
    pub presence: PresenceState,
    /// The open cases assigned to the agent (its load).
    pub open: HashSet<SessionCode>,
    /// The cases offered to the agent, waiting for its `accept`.
    pub offers: HashSet<SessionCode>,
    /// Order of the agent's last automatic assignment; 0 for never.
    pub last_auto: u64,
    /// When the last connection closed (`None` while online).
    pub offline_since: Option<Instant>,
}

impl AgentLive {
    pub(crate) fn new() -> AgentLive {
        AgentLive {
            conns: Vec::new(),
            presence: PresenceState::Available,
            open: HashSet::new(),
            offers: HashSet::new(),
            last_auto: 0,
            offline_since: Some(Instant::now()),
        }
    }

    pub fn load(&self) -> u32 {
        self.open.len() as u32
    }
}

/// A connection of this company, as far as its seats and subscription go.
#[derive(Debug, Default)]
pub struct ConnState {
    /// The customer's one case.
    pub case: Option<SessionCode>,
    /// The sessions an agent connection sits in (as the assignee or as a
    /// helper).
    pub sessions: HashSet<SessionCode>,
    /// The sessions an admin's connection follows unseen.
    pub watching: HashSet<SessionCode>,
    pub subscribed: bool,
    /// An agent's connection, online (known to every node alike).
    pub online: bool,
}

/// A company's state.
pub struct ShardState {
    pub cases: HashMap<SessionCode, Case>,
    pub lines: Lines,
    pub stream: Stream,
    pub index: Index,
    pub agents: Vec<AgentLive>,
    pub conns: HashMap<ConnId, ConnState>,
    pub timers: Timers,
    /// Webhook endpoints and their pending deliveries.
    pub hooks: super::hooks::Hooks,
    /// Round robin: the config index of the last agent picked, per group.
    pub rr: Vec<Option<usize>>,
    /// Counts automatic assignments, to order agents by their last one.
    pub auto_counter: u64,
    /// Creation order of the company's cases.
    pub next_line_seq: u64,
    /// What the current command must have happen, in order.
    pub effects: Vec<Effect>,
    /// The changes the current command applied, for the journal.
    pub batches: Vec<Batch>,
    /// Codes changed or removed since the last snapshot.
    pub dirty: HashSet<SessionCode>,
    /// Replaying the journal: nothing is recorded or delivered.
    pub replaying: bool,
    /// Applying changes another node decided: delivered, not recorded.
    pub following: bool,
    /// The group a case being transferred has just left, for its event.
    pub left_group: Option<usize>,
    /// The cases that hold something beside their record (helpers,
    /// whispers), for images: their cost follows these, not the queue.
    pub with_ext: HashSet<SessionCode>,
    /// Each group's last hour: waits answered, service levels decided.
    pub windows: Vec<super::stats::GroupWindow>,
    /// The `stats` push: when the next one may go (set while one waits),
    /// when the last went, and what each group's subscribers were told.
    pub stats_due: Option<Instant>,
    pub stats_pushed: Option<Instant>,
    pub stats_told: Vec<Option<crate::protocol::GroupStats>>,
}

impl ShardState {
    pub fn new(company: &Company, history: usize) -> ShardState {
        let mut st = ShardState::sized(company.groups.len(), company.agents.len(), history);
        st.hooks.endpoints = company.webhooks.clone();
        st
    }

    /// The state of a company with `groups` groups and `agents` agents (a
    /// free slot has none: they are added as the company is).
    pub fn sized(groups: usize, agents: usize, history: usize) -> ShardState {
        ShardState {
            cases: HashMap::new(),
            lines: Lines::new(groups),
            stream: Stream::new(history),
            index: Index::new(groups, agents),
            agents: (0..agents).map(|_| AgentLive::new()).collect(),
            conns: HashMap::new(),
            timers: Timers::default(),
            hooks: Default::default(),
            rr: vec![None; groups],
            auto_counter: 0,
            next_line_seq: 0,
            effects: Vec::new(),
            batches: Vec::new(),
            dirty: HashSet::new(),
            replaying: false,
            following: false,
            left_group: None,
            with_ext: HashSet::new(),
            windows: (0..groups).map(|_| Default::default()).collect(),
            stats_due: None,
            stats_pushed: None,
            stats_told: vec![None; groups],
        }
    }
}

/// A company's held lock, with what commands need beside the state.
pub struct Locked<'a> {
    pub st: MutexGuard<'a, ShardState>,
    pub(crate) shared: &'a Shared,
    /// The company as it stood when the lock was taken.
    pub company: Arc<Company>,
    pub shard: usize,
}

impl std::ops::Deref for Locked<'_> {
    type Target = ShardState;
    fn deref(&self) -> &ShardState {
        &self.st
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut ShardState {
        &mut self.st
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if self.st.replaying {
            self.st.effects.clear();
            self.st.batches.clear();
            return;
        }
        self.tell_positions(Instant::now());
        if !self.st.effects.is_empty() || !self.st.batches.is_empty() {
            let effects = std::mem::take(&mut self.st.effects);
            let batches = std::mem::take(&mut self.st.batches);
            self.shared.sink.commit(self.shard, batches, effects);
        }
    }
}

impl<'a> Locked<'a> {
    pub(crate) fn new(
        st: MutexGuard<'a, ShardState>,
        shared: &'a Shared,
        shard: usize,
    ) -> Locked<'a> {
        Locked {
            st,
            shared,
            company: shared.dir.load().companies()[shard].clone(),
            shard,
        }
    }

    /// Queues an effect.
    pub fn emit(&mut self, effect: Effect) {
        self.st.effects.push(effect);
    }

    /// Tells waiting customers their positions if a flush is due now;
    /// otherwise makes sure the timer task wakes when it is.
    pub fn tell_positions(&mut self, now: Instant) {
        let pending = self.st.lines.due();
        let Some(at) = self.st.lines.flush_at(now) else {
            return;
        };
        if at > now {
            if pending != Some(at) {
                self.shared.shards[self.shard].timers_changed.notify_one();
            }
            return;
        }
        let told = self.st.lines.flush(now);
        // The estimate's inputs, once per group told.
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut per_group: HashMap<usize, (Option<u64>, u32)> = HashMap::new();
        for (code, position) in told {
            let Some(case) = self.st.cases.get(&code) else {
                continue;
            };
            if case.live.customer.is_empty() {
                continue;
            }
            let (to, group) = (case.live.customer.clone(), case.rec.group);
            let (p50, available) = match per_group.get(&group) {
                Some(&v) => v,
                None => {
                    let s = self.group_stats(group, now_ms);
                    let v = (s.wait_p50_s, s.agents_available);
                    per_group.insert(group, v);
                    v
                }
            };
            self.st.effects.push(Effect::Position {
                to,
                code,
                position,
                estimated_wait_s: estimate(p50, position, available),
            });
        }
    }

    /// The connection's state in this company.
    pub fn conn(&self, conn: ConnId) -> Result<&ConnState> {
        self.st
            .conns
            .get(&conn)
            .ok_or_else(|| Error::new(ErrorCode::Unavailable, "connection closed"))
    }

    /// The case if the agent may see it; `not_found` otherwise, so a case
    /// of another group is indistinguishable from none.
    pub fn visible(&self, code: &SessionCode, agent: &crate::directory::Agent) -> Result<&Case> {
        match self.st.cases.get(code) {
            Some(c) if agent.sees_index(c.rec.group) => Ok(c),
            _ => Err(Error::not_found()),
        }
    }

    pub fn case(&self, code: &SessionCode) -> Result<&Case> {
        self.st.cases.get(code).ok_or_else(Error::not_found)
    }

    /// True when the agent has an open connection.
    pub fn is_online(&self, agent: usize) -> bool {
        !self.st.agents[agent].conns.is_empty()
    }

    /// An agent as `GET /v1/agents` and the `agent` push show it.
    pub fn agent_status(&self, agent: usize) -> AgentStatus {
        let a = &self.company.agents[agent];
        let live = &self.st.agents[agent];
        AgentStatus {
            id: a.id.clone(),
            name: a.name.clone(),
            groups: a.groups.clone(),
            online: !live.conns.is_empty(),
            presence: live.presence,
            open_cases: live.load(),
            max_cases: a.max_cases,
            removed: a.retired,
        }
    }

    /// Sends an agent's status to the dashboards that see one of its groups.
    pub fn push_agent(&mut self, agent: usize) {
        self.stats_soon();
        let status = self.agent_status(agent);
        let groups = self.company.agents[agent].group_indexes.clone().into();
        self.emit(Effect::Agent {
            agent: status,
            groups,
        });
    }

    /// Something the group numbers show may have changed: the `stats`
    /// push is due within a second (at most one a second).
    pub fn stats_soon(&mut self) {
        if self.st.replaying || self.st.stats_due.is_some() {
            return;
        }
        let now = Instant::now();
        let at = match self.st.stats_pushed {
            Some(last) if last + STATS_PERIOD > now => last + STATS_PERIOD,
            _ => now,
        };
        self.st.stats_due = Some(at);
        self.shared.shards[self.shard].timers_changed.notify_one();
    }

    /// A group's numbers now.
    pub fn group_stats(&mut self, group: usize, now_ms: i64) -> crate::protocol::GroupStats {
        let line = self.st.lines.group(group);
        let waiting = line.len();
        let longest_wait_s = line
            .head()
            .and_then(|(_, code)| self.st.cases.get(&code))
            .map(|c| ((now_ms - c.rec.created_at.timestamp_millis()).max(0) / 1000) as u64);
        let (mut online, mut available) = (0, 0);
        for a in self.company.agents.iter().filter(|a| a.active()) {
            if !a.member_of_index(group) {
                continue;
            }
            let live = &self.st.agents[a.index];
            if !live.conns.is_empty() {
                online += 1;
                if live.presence == crate::protocol::PresenceState::Available {
                    available += 1;
                }
            }
        }
        let w = &mut self.st.windows[group];
        w.expire(now_ms);
        crate::protocol::GroupStats {
            group: self.company.groups[group].clone(),
            waiting,
            longest_wait_s,
            agents_online: online,
            agents_available: available,
            wait_p50_s: w.wait_quantile(0.5),
            wait_p90_s: w.wait_quantile(0.9),
            sla_met_ratio: w.sla_met_ratio(),
        }
    }

    /// When due, pushes the groups whose numbers changed since they were
    /// last told.
    pub fn push_stats(&mut self, now: Instant) {
        match self.st.stats_due {
            Some(at) if at <= now => {}
            _ => return,
        }
        self.st.stats_due = None;
        self.st.stats_pushed = Some(now);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut changed = Vec::new();
        for g in 0..self.company.groups.len() {
            if self.company.group_info[g].removed {
                continue;
            }
            let stats = self.group_stats(g, now_ms);
            // The longest wait grows by itself: a change of the rest counts.
            let same = self.st.stats_told[g]
                .as_ref()
                .is_some_and(|t| t.same_but_longest_wait(&stats));
            if !same {
                self.st.stats_told[g] = Some(stats.clone());
                changed.push((g, stats));
            }
        }
        if !changed.is_empty() {
            self.emit(Effect::Stats { groups: changed });
        }
    }

    /// Registers a connection of this company (agents at hello, customers
    /// when they first join one of its cases).
    pub fn add_conn(&mut self, conn: ConnId) {
        self.st.conns.entry(conn).or_default();
    }

    /// True when a service level of an open case is still waiting at its
    /// deadline (not met, not already counted as missed).
    pub fn sla_missed(&self, code: &SessionCode, kind: crate::case::SlaKind) -> bool {
        let Some(c) = self.st.cases.get(code).filter(|c| c.is_open()) else {
            return false;
        };
        let Some(sla) = &c.ext.sla else {
            return false;
        };
        if sla.breached.contains(&kind) {
            return false;
        }
        match kind {
            crate::case::SlaKind::FirstResponse => {
                sla.first_response_due.is_some() && sla.first_response_at.is_none()
            }
            crate::case::SlaKind::Resolution => sla.resolution_due.is_some(),
        }
    }

    /// The seat an agent connection holds in a session: a helper's, or
    /// the assignee's.
    pub fn agent_seat(&self, code: &SessionCode, conn: ConnId) -> super::change::Seat {
        match self.st.cases.get(code) {
            Some(c) if c.live.helpers.contains(&conn) => super::change::Seat::Helper,
            _ => super::change::Seat::Supporter,
        }
    }
}

/// A waiting customer's estimate: the median wait of the group's cases
/// answered in the last hour, for each case ahead and its own, shared by
/// the agents available now (at least one); unknown while no case of the
/// group was answered in the last hour.
pub fn estimate(p50: Option<u64>, position: usize, available: u32) -> Option<u64> {
    p50.map(|p| p.saturating_mul(position as u64) / u64::from(available.max(1)))
}
