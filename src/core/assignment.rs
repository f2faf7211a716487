//! Automated assignment and presence inside one company: agents coming and
//! going, handing (or offering) waiting cases to eligible agents oldest
//! first (the choice itself is [`super::policy`]'s), offers running out,
//! and the orphan rule.

use chrono::Utc;
use tokio::time::Instant;

use crate::case::SessionCode;
use crate::config::Assignment;
use crate::protocol::PresenceState;

use super::change::{Change, OfferOutcome};
use super::effect::{ConnId, Effect};
use super::line::Place;
use super::policy::{self, Candidate, Passed};
use super::record::{AssignedBy, Decision, DecisionBlob, RoutingCandidate};
use super::shard::Locked;
use super::timers::{self, Timer};

impl Locked<'_> {
    /// What the policy knows of every agent of the company, for a case
    /// of `group` (which `returned_by` gave back and `passed` passed on).
    fn candidates(
        &self,
        group: usize,
        returned_by: Option<usize>,
        passed: &[String],
    ) -> Vec<Candidate> {
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
                offer_pending: !live.offers.is_empty(),
                passed: if returned_by == Some(a.index) {
                    Some(Passed::Returned)
                } else if passed.contains(&a.id) {
                    Some(Passed::Declined)
                } else {
                    None
                },
            })
            .collect()
    }

    /// The decision behind an automatic assignment or offer, to keep with
    /// the case.
    fn decision(
        &self,
        policy: Assignment,
        candidates: &[Candidate],
        chosen: usize,
        offered: bool,
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
            offered,
            candidates: policy::reasons(policy, candidates, chosen)
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
                    && live.offers.is_empty()
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
            let candidates = match self.st.cases.get(&code) {
                Some(c) => self.candidates(group, c.rec.returned_by, &c.ext.passed),
                None => return,
            };
            let Some(agent) = policy::pick(policy, &candidates, self.st.rr[group]) else {
                return;
            };
            let at = Utc::now();
            let offer = self.company.offer_timeout(group);
            let decision = self.decision(policy, &candidates, agent, offer.is_some(), at);
            let give = match offer {
                Some(timeout) => Change::Offered {
                    code,
                    agent,
                    expires_at: timers::add(at, timeout),
                    at,
                },
                None => Change::Assigned {
                    code,
                    to: agent,
                    by: AssignedBy::Auto,
                    at,
                },
            };
            self.apply_all(vec![Change::Routed { code, decision }, give]);
        }
    }

    /// An agent connection of this company said hello; waiting cases may
    /// now go to the agent.
    pub fn agent_connected(&mut self, agent: usize, conn: ConnId) {
        self.apply(Change::AgentOnline { agent, conn });
        // Offers waiting for the agent's answer reach its new connection.
        let offers: Vec<SessionCode> = self.st.agents[agent].offers.iter().copied().collect();
        for code in offers {
            let Some(c) = self.st.cases.get(&code) else {
                continue;
            };
            let Some(expires_at) = c.ext.offer.as_ref().map(|o| o.expires_at) else {
                continue;
            };
            let case = Box::new(c.view(&self.company));
            self.emit(Effect::Offered {
                to: vec![conn],
                code,
                case,
                expires_at,
            });
        }
        self.dispatch();
    }

    /// An agent connection closed. The last one withdraws the agent's
    /// pending offers.
    pub fn agent_disconnected(&mut self, agent: usize, conn: ConnId) {
        self.apply(Change::AgentOffline { agent, conn });
        if self.st.agents[agent].conns.is_empty() {
            self.withdraw_offers(agent);
        }
    }

    /// `presence`. Going away withdraws the agent's pending offers.
    pub fn set_presence(&mut self, agent: usize, state: PresenceState) {
        if self.st.agents[agent].presence == state {
            return;
        }
        self.apply(Change::Presence { agent, state });
        if state == PresenceState::Away {
            self.withdraw_offers(agent);
        }
        self.dispatch();
    }

    /// Ends the agent's pending offers: it can no longer answer them. The
    /// cases go to the next eligible agent.
    fn withdraw_offers(&mut self, agent: usize) {
        let codes: Vec<SessionCode> = self.st.agents[agent].offers.iter().copied().collect();
        if codes.is_empty() {
            return;
        }
        let at = Utc::now();
        for code in codes {
            self.apply(Change::OfferEnded {
                code,
                agent,
                outcome: OfferOutcome::Withdrawn,
                at,
            });
        }
        self.dispatch();
    }

    /// A pending offer's deadline: past it, the offer ends and the case
    /// goes to the next eligible agent.
    pub fn check_offer(&mut self, code: SessionCode) {
        let Some(c) = self.st.cases.get(&code) else {
            return;
        };
        let Some(offer) = &c.ext.offer else {
            return;
        };
        let now = Utc::now();
        // Woken early (the wall clock moved back): wait the rest.
        if offer.expires_at - now > chrono::Duration::milliseconds(20) {
            self.arm_offer(code);
            return;
        }
        let Some(agent) = self.company.agent(&offer.agent).map(|a| a.index) else {
            return;
        };
        self.apply(Change::OfferEnded {
            code,
            agent,
            outcome: OfferOutcome::TimedOut,
            at: now,
        });
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
