//! Automated assignment and agent presence: who is online and available,
//! each agent's load, the waiting line of unassigned cases (oldest first),
//! the round-robin and least-loaded policies, and the orphan rule.
//!
//! Load and line membership are reconciled in `commit`, the one mutation
//! path, so they can never drift from the cases themselves.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Shared, State};
use crate::case::SessionCode;
use crate::config::Assignment;
use crate::directory::Agent;
use crate::protocol::{Action, AgentStatus, PresenceState, ServerMsg};

/// `assigned_by` of automatic assignments (policies and module defaults).
pub const AUTO: &str = "auto";

/// Live state of one configured agent.
pub(super) struct AgentState {
    pub agent: Arc<Agent>,
    /// Open agent connections; online while above zero.
    pub conns: usize,
    pub presence: PresenceState,
    /// Open cases assigned to the agent.
    pub load: u32,
    /// Order of the agent's last automatic assignment; 0 for never.
    pub last_auto: u64,
    /// When the last connection closed (`None` while online).
    pub offline_since: Option<Instant>,
}

impl AgentState {
    pub fn new(agent: Arc<Agent>) -> AgentState {
        AgentState {
            agent,
            conns: 0,
            presence: PresenceState::Available,
            load: 0,
            last_auto: 0,
            offline_since: Some(Instant::now()),
        }
    }

    /// Online, available, a member of `group` and under `max_cases`.
    fn eligible_for(&self, group: &str) -> bool {
        self.conns > 0
            && self.presence == PresenceState::Available
            && self.agent.member_of(group)
            && self.load < self.agent.max_cases
    }

    /// The agent as `GET /v1/agents` and the `agent` push show it.
    pub fn status(&self) -> AgentStatus {
        AgentStatus {
            id: self.agent.id.clone(),
            name: self.agent.name.clone(),
            groups: self.agent.groups.clone(),
            online: self.conns > 0,
            presence: self.presence,
            open_cases: self.load,
            max_cases: self.agent.max_cases,
        }
    }
}

/// Key of an agent or a line: (company, id).
pub(super) type Key = (String, String);

impl State {
    /// An agent connection said hello.
    pub(super) fn agent_connected(&mut self, shared: &Shared, agent: &Agent) {
        let key = (agent.company.clone(), agent.id.clone());
        let Some(a) = self.agents.get_mut(&key) else {
            return;
        };
        a.conns += 1;
        if a.conns == 1 {
            // Presence right after `hello` is `available`.
            a.presence = PresenceState::Available;
            a.offline_since = None;
            self.push_agent(&key);
            self.dispatch(shared, &agent.company);
        }
    }

    /// An agent connection closed. The last one takes the agent offline
    /// and starts the orphan clock of its unjoined automatic cases.
    pub(super) fn agent_disconnected(&mut self, shared: &Shared, agent: &Agent) {
        let key = (agent.company.clone(), agent.id.clone());
        let Some(a) = self.agents.get_mut(&key) else {
            return;
        };
        a.conns = a.conns.saturating_sub(1);
        if a.conns > 0 {
            return;
        }
        let now = Instant::now();
        a.offline_since = Some(now);
        let at = now + shared.config.orphan_timeout;
        let orphans: Vec<SessionCode> = self
            .cases
            .values()
            .filter(|e| {
                e.is_open()
                    && e.company == agent.company
                    && e.assignee.as_deref() == Some(agent.id.as_str())
                    && e.assigned_by.as_deref() == Some(AUTO)
                    && !e.assignee_joined
            })
            .map(|e| e.code.clone())
            .collect();
        for code in orphans {
            self.add_timer(shared, super::Timer::Orphan, at, &code);
        }
        self.push_agent(&key);
    }

    /// `presence`.
    pub(super) fn set_presence(&mut self, shared: &Shared, agent: &Agent, state: PresenceState) {
        let key = (agent.company.clone(), agent.id.clone());
        let Some(a) = self.agents.get_mut(&key) else {
            return;
        };
        if a.presence == state {
            return;
        }
        a.presence = state;
        self.push_agent(&key);
        self.dispatch(shared, &agent.company);
    }

    /// Every agent of a company, in config order.
    /// Every agent of the viewer's company that the viewer may see (admins:
    /// all; others: those sharing a group), in config order.
    pub(super) fn agent_statuses(&self, shared: &Shared, viewer: &Agent) -> Vec<AgentStatus> {
        let Some(c) = shared.dir.company(&viewer.company) else {
            return Vec::new();
        };
        c.agents
            .iter()
            .filter(|a| a.groups.iter().any(|g| viewer.sees(g)))
            .filter_map(|a| self.agents.get(&(a.company.clone(), a.id.clone())))
            .map(AgentState::status)
            .collect()
    }

    /// Brings an agent's load and the waiting line in line with the case,
    /// after any change to it. Returns the line that changed, if any.
    pub(super) fn reconcile(&mut self, code: &SessionCode, action: Action) -> Option<Key> {
        let e = self.cases.get_mut(code)?;
        let gone = action == Action::Deleted;
        let load_for = if e.is_open() && !gone {
            e.assignee.clone()
        } else {
            None
        };
        let mut agents_changed = Vec::new();
        if e.counted_for != load_for {
            if let Some(old) = e.counted_for.take()
                && let Some(a) = self.agents.get_mut(&(e.company.clone(), old.clone()))
            {
                a.load = a.load.saturating_sub(1);
                agents_changed.push((e.company.clone(), old));
            }
            if let Some(new) = &load_for
                && let Some(a) = self.agents.get_mut(&(e.company.clone(), new.clone()))
            {
                a.load += 1;
                agents_changed.push((e.company.clone(), new.clone()));
            }
            e.counted_for = load_for;
        }
        let line_key = (e.company.clone(), e.group.clone());
        let want_line = e.is_open() && e.assignee.is_none() && !gone;
        let entry = (e.line_seq, code.clone());
        let mut line_changed = None;
        if want_line != e.in_line {
            e.in_line = want_line;
            if !want_line {
                e.last_position = None;
            }
            let line = self.lines.entry(line_key.clone()).or_default();
            if want_line {
                line.insert(entry);
            } else {
                line.remove(&entry);
            }
            line_changed = Some(line_key);
        } else if want_line {
            // A change to a waiting case (say, its customer arrived) may
            // mean its position must be told.
            line_changed = Some(line_key);
        }
        for key in agents_changed {
            self.push_agent(&key);
        }
        line_changed
    }

    /// Tells the waiting customers of every line changed by the command
    /// their positions.
    pub(super) fn flush_positions(&mut self) {
        for line in std::mem::take(&mut self.dirty_lines) {
            self.push_positions(&line);
        }
    }

    /// Tells each waiting customer of a line its position (1 = next), when
    /// it changed.
    fn push_positions(&mut self, line: &Key) {
        let Some(codes) = self.lines.get(line) else {
            return;
        };
        for (i, (_, code)) in codes.iter().enumerate() {
            let position = i + 1;
            if let Some(e) = self.cases.get_mut(code)
                && e.customer_seat.occupied()
                && e.last_position != Some(position)
            {
                e.last_position = Some(position);
                e.customer_seat.push(&ServerMsg::Queue {
                    code: code.clone(),
                    position,
                });
            }
        }
    }

    /// Sends an agent's status to its company's dashboards.
    fn push_agent(&mut self, key: &Key) {
        let Some(a) = self.agents.get(key) else {
            return;
        };
        let msg = ServerMsg::Agent { agent: a.status() };
        let groups = a.agent.groups.clone();
        if let Some(stream) = self.streams.get_mut(&key.0) {
            stream.push_to_groups(&msg, &groups);
        }
    }

    /// Hands waiting cases of a company to eligible agents, oldest first,
    /// by the company's policy. Nothing happens under `manual`.
    pub(super) fn dispatch(&mut self, shared: &Shared, company: &str) {
        let Some(c) = shared.dir.company(company) else {
            return;
        };
        if c.assignment == Assignment::Manual {
            return;
        }
        let any_eligible = |st: &State, group: &str| {
            c.agents.iter().any(|a| {
                st.agents
                    .get(&(a.company.clone(), a.id.clone()))
                    .is_some_and(|s| s.eligible_for(group))
            })
        };
        // The company's waiting cases, oldest first across its groups, for
        // the groups that have someone eligible right now.
        let mut waiting: Vec<(u64, SessionCode, String)> = Vec::new();
        for group in &c.groups {
            if !any_eligible(self, group) {
                continue;
            }
            if let Some(line) = self.lines.get(&(company.to_string(), group.clone())) {
                waiting.extend(
                    line.iter()
                        .map(|(s, code)| (*s, code.clone(), group.clone())),
                );
            }
        }
        waiting.sort();
        for (_, code, group) in waiting {
            let returned_by = self.cases.get(&code).and_then(|e| e.returned_by.clone());
            let Some(agent) = self.pick(shared, company, &group, returned_by.as_deref()) else {
                continue;
            };
            self.auto_counter += 1;
            let order = self.auto_counter;
            if let Some(a) = self.agents.get_mut(&(company.to_string(), agent.clone())) {
                a.last_auto = order;
            }
            self.set_assignee(shared, &code, Some(agent), Some(AUTO.to_string()));
            self.commit(shared, &code, Action::Updated);
        }
    }

    /// The agent the policy picks for a case of `group`, if anyone is
    /// eligible. The agent who returned the case is picked only when
    /// nobody else is eligible.
    fn pick(
        &mut self,
        shared: &Shared,
        company: &str,
        group: &str,
        returned_by: Option<&str>,
    ) -> Option<String> {
        let c = shared.dir.company(company)?;
        let mut eligible: Vec<(usize, &AgentState)> = c
            .agents
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                self.agents
                    .get(&(a.company.clone(), a.id.clone()))
                    .filter(|s| s.eligible_for(group))
                    .map(|s| (i, s))
            })
            .collect();
        if eligible.len() > 1 {
            eligible.retain(|(_, s)| Some(s.agent.id.as_str()) != returned_by);
        }
        match c.assignment {
            Assignment::Manual => None,
            Assignment::RoundRobin => {
                let key = (company.to_string(), group.to_string());
                let last = self.rr.get(&key).copied();
                let next = eligible
                    .iter()
                    .find(|(i, _)| last.is_none_or(|l| *i > l))
                    .or_else(|| eligible.first())
                    .map(|(i, s)| (*i, s.agent.id.clone()));
                if let Some((i, _)) = next {
                    self.rr.insert(key, i);
                }
                next.map(|(_, id)| id)
            }
            Assignment::LeastLoaded => eligible
                .iter()
                .min_by_key(|(i, s)| (s.load, s.last_auto, *i))
                .map(|(_, s)| s.agent.id.clone()),
        }
    }

    /// Returns an orphaned case to the line: still assigned automatically,
    /// never joined, its assignee offline for `orphan_timeout`.
    pub(super) fn check_orphan(&mut self, shared: &Shared, code: &SessionCode, now: Instant) {
        let timeout = shared.config.orphan_timeout;
        let Some(e) = self.cases.get(code) else {
            return;
        };
        if !e.is_open() || e.assigned_by.as_deref() != Some(AUTO) || e.assignee_joined {
            return;
        }
        let Some(assignee) = e.assignee.clone() else {
            return;
        };
        let company = e.company.clone();
        let offline_since = self
            .agents
            .get(&(company.clone(), assignee))
            .and_then(|a| a.offline_since);
        match offline_since {
            None => {}
            Some(since) if since + timeout <= now => {
                self.set_assignee(shared, code, None, None);
                self.commit(shared, code, Action::Updated);
                self.dispatch(shared, &company);
            }
            // Back and gone again since the timer was set: wait the rest.
            Some(since) => self.add_timer(shared, super::Timer::Orphan, since + timeout, code),
        }
    }
}

/// The lines: unassigned open cases per (company, group), oldest first.
pub(super) type Lines = std::collections::HashMap<Key, BTreeSet<(u64, SessionCode)>>;
