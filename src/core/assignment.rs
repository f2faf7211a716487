//! Automated assignment and presence inside one company: agents coming and
//! going, handing waiting cases to eligible agents oldest first (the choice
//! itself is [`super::policy`]'s), and the orphan rule.

use chrono::Utc;
use tokio::time::Instant;

use crate::case::SessionCode;
use crate::config::Assignment;
use crate::protocol::PresenceState;

use super::change::Change;
use super::effect::ConnId;
use super::line::Place;
use super::policy::{self, Candidate};
use super::record::{AssignedBy, Decision, DecisionBlob, RoutingCandidate};
use super::shard::Locked;
use super::timers::Timer;

impl Locked<'_> {
    /// What the policy knows of every agent of the company, for `group`.
    fn candidates(&self, group: usize) -> Vec<Candidate> {
        self.company
            .agents
            .iter()
            .zip(&self.st.agents)
            .map(|(a, live)| Candidate {
                index: a.index,
                online: !live.conns.is_empty(),
                presence: live.presence,
                member: a.member_of_index(group),
                load: live.load(),
                max_cases: a.max_cases,
                last_auto: live.last_auto,
            })
            .collect()
    }

    /// The decision behind an automatic assignment, to keep with the case.
    fn decision(
        &self,
        policy: Assignment,
        candidates: &[Candidate],
        returned_by: Option<usize>,
        chosen: usize,
        at: chrono::DateTime<Utc>,
    ) -> DecisionBlob {
        let agents = &self.company.agents;
        DecisionBlob(Decision {
            at,
            policy: match policy {
                Assignment::RoundRobin => "round_robin",
                Assignment::LeastLoaded => "least_loaded",
                Assignment::Manual => "manual",
            }
            .to_string(),
            chosen: agents[chosen].id.clone(),
            candidates: policy::reasons(policy, candidates, returned_by, chosen)
                .into_iter()
                .filter(|(i, _, _)| agents[*i].active())
                .map(|(i, eligible, reason)| RoutingCandidate {
                    agent: agents[i].id.clone(),
                    eligible,
                    reason: reason.to_string(),
                    open_cases: candidates[i].load,
                })
                .collect(),
        })
    }

    fn anyone_eligible(&self, group: usize) -> bool {
        self.company
            .agents
            .iter()
            .zip(&self.st.agents)
            .any(|(a, live)| {
                !live.conns.is_empty()
                    && live.presence == PresenceState::Available
                    && a.member_of_index(group)
                    && live.load() < a.max_cases
            })
    }

    /// Hands waiting cases to eligible agents, oldest first across the
    /// company's groups, until nobody eligible is left for any waiting
    /// case. Each turn assigns one case, so the work is bounded by the
    /// assignments made, not by the length of the lines.
    pub fn dispatch(&mut self) {
        let policy = self.company.assignment;
        if policy == Assignment::Manual {
            return;
        }
        loop {
            let mut oldest: Option<(Place, usize)> = None;
            for g in 0..self.st.lines.groups() {
                let Some(head) = self.st.lines.group(g).head() else {
                    continue;
                };
                if oldest.is_none_or(|(o, _)| head < o) && self.anyone_eligible(g) {
                    oldest = Some((head, g));
                }
            }
            let Some(((_, code), group)) = oldest else {
                return;
            };
            let returned_by = self.st.cases.get(&code).and_then(|c| c.rec.returned_by);
            let candidates = self.candidates(group);
            let Some(agent) = policy::pick(policy, &candidates, returned_by, self.st.rr[group])
            else {
                return;
            };
            let at = Utc::now();
            let decision = self.decision(policy, &candidates, returned_by, agent, at);
            self.apply_all(vec![
                Change::Routed { code, decision },
                Change::Assigned {
                    code,
                    to: agent,
                    by: AssignedBy::Auto,
                    at,
                },
            ]);
        }
    }

    /// An agent connection of this company said hello; waiting cases may
    /// now go to the agent.
    pub fn agent_connected(&mut self, agent: usize, conn: ConnId) {
        self.apply(Change::AgentOnline { agent, conn });
        self.dispatch();
    }

    /// An agent connection closed.
    pub fn agent_disconnected(&mut self, agent: usize, conn: ConnId) {
        self.apply(Change::AgentOffline { agent, conn });
    }

    /// `presence`.
    pub fn set_presence(&mut self, agent: usize, state: PresenceState) {
        if self.st.agents[agent].presence == state {
            return;
        }
        self.apply(Change::Presence { agent, state });
        self.dispatch();
    }

    /// Returns an orphaned case to the line: still assigned automatically,
    /// never joined, its assignee offline for `orphan_timeout`.
    pub fn check_orphan(&mut self, code: SessionCode, now: Instant) {
        let timeout = self.shared.config.orphan_timeout;
        let Some(c) = self.st.cases.get(&code) else {
            return;
        };
        if !c.is_open() || c.rec.assigned_by != Some(AssignedBy::Auto) || c.rec.assignee_joined {
            return;
        }
        let Some(assignee) = c.rec.assignee else {
            return;
        };
        match self.st.agents[assignee].offline_since {
            None => {}
            Some(since) if since + timeout <= now => {
                self.apply(Change::Returned {
                    code,
                    at: Utc::now(),
                });
                self.dispatch();
            }
            // Back and gone again since the timer was set: wait the rest.
            Some(since) => self.add_timer(since + timeout, Timer::Orphan, code),
        }
    }
}
