//! Automated assignment as pure functions: who is eligible for a case, and
//! whom the company's policy picks among them. No state, no locks; the
//! shard feeds them what it knows and applies the answer as a change.

use crate::config::Assignment;
use crate::protocol::PresenceState;

/// What the policy knows of one agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The agent's place in the company, in config order.
    pub index: usize,
    /// Open agent connections right now.
    pub online: bool,
    pub presence: PresenceState,
    /// A member of the case's group.
    pub member: bool,
    /// Open cases assigned to the agent.
    pub load: u32,
    pub max_cases: u32,
    /// Order of the agent's last automatic assignment; 0 for never.
    pub last_auto: u64,
    /// Another case's offer waits for the agent's answer.
    pub offer_pending: bool,
    /// The agent already passed on this case.
    pub passed: Option<Passed>,
}

/// How an agent passed on a case: picked only when nobody else is
/// eligible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passed {
    /// It was the case's assignee and gave it back (or went missing).
    Returned,
    /// It declined the case's offer or let it run out.
    Declined,
}

impl Candidate {
    /// Online, available, a member of the group, under `max_cases` and
    /// not holding another offer.
    pub fn eligible(&self) -> bool {
        self.online
            && self.presence == PresenceState::Available
            && self.member
            && self.load < self.max_cases
            && !self.offer_pending
    }
}

/// True when an eligible agent who has not passed on the case exists:
/// then those who passed are left out.
fn fresh_eligible(candidates: &[Candidate]) -> bool {
    candidates
        .iter()
        .any(|c| c.eligible() && c.passed.is_none())
}

/// The agent `policy` picks for a case among `candidates` (in config
/// order), or `None` when nobody is eligible or the policy is `manual`.
///
/// - An agent who passed on the case (gave it back, declined its offer or
///   let it run out) is picked only when nobody else is eligible.
/// - Round robin takes the first eligible agent after `last_picked` (the
///   config index of the group's previous pick), wrapping around.
/// - Least loaded takes the fewest open cases, ties to the longest idle
///   (oldest last automatic assignment), then config order.
pub fn pick(
    policy: Assignment,
    candidates: &[Candidate],
    last_picked: Option<usize>,
) -> Option<usize> {
    let fresh = fresh_eligible(candidates);
    let allowed = |c: &&Candidate| c.eligible() && (!fresh || c.passed.is_none());
    match policy {
        Assignment::Manual => None,
        Assignment::RoundRobin => {
            let mut pool = candidates.iter().filter(allowed);
            let first = pool.clone().next();
            pool.find(|c| last_picked.is_none_or(|l| c.index > l))
                .or(first)
                .map(|c| c.index)
        }
        Assignment::LeastLoaded => candidates
            .iter()
            .filter(allowed)
            .min_by_key(|c| (c.load, c.last_auto, c.index))
            .map(|c| c.index),
    }
}

/// Why each member of the group was or was not picked, in config order:
/// `(index, eligible, reason)`. Agents outside the group are no
/// candidates and are left out.
pub fn reasons(
    policy: Assignment,
    candidates: &[Candidate],
    chosen: usize,
) -> Vec<(usize, bool, &'static str)> {
    let fresh = fresh_eligible(candidates);
    candidates
        .iter()
        .filter(|c| c.member)
        .map(|c| {
            let reason = if c.index == chosen {
                match policy {
                    Assignment::RoundRobin => "picked: next in turn",
                    _ => "picked: fewest open cases, then longest since its last case",
                }
            } else if !c.online {
                "offline"
            } else if c.presence != PresenceState::Available {
                "away"
            } else if c.load >= c.max_cases {
                "at its max_cases"
            } else if c.offer_pending {
                "another offer waits for its answer"
            } else if fresh && c.passed == Some(Passed::Returned) {
                "gave this case back: others come first"
            } else if fresh && c.passed == Some(Passed::Declined) {
                "passed on this case's offer: others come first"
            } else {
                match policy {
                    Assignment::RoundRobin => "eligible, not next in turn",
                    _ => "eligible, more open cases or a more recent case",
                }
            };
            (c.index, c.eligible(), reason)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(index: usize) -> Candidate {
        Candidate {
            index,
            online: true,
            presence: PresenceState::Available,
            member: true,
            load: 0,
            max_cases: 5,
            last_auto: 0,
            offer_pending: false,
            passed: None,
        }
    }

    #[test]
    fn eligibility_needs_every_condition() {
        assert!(agent(0).eligible());
        assert!(
            !Candidate {
                online: false,
                ..agent(0)
            }
            .eligible()
        );
        assert!(
            !Candidate {
                presence: PresenceState::Away,
                ..agent(0)
            }
            .eligible()
        );
        assert!(
            !Candidate {
                member: false,
                ..agent(0)
            }
            .eligible()
        );
        assert!(
            !Candidate {
                load: 5,
                ..agent(0)
            }
            .eligible()
        );
        assert!(
            Candidate {
                load: 4,
                ..agent(0)
            }
            .eligible()
        );
    }

    #[test]
    fn manual_never_picks() {
        assert_eq!(pick(Assignment::Manual, &[agent(0)], None), None);
    }

    #[test]
    fn nobody_eligible_means_nobody_picked() {
        let away = Candidate {
            presence: PresenceState::Away,
            ..agent(0)
        };
        for policy in [Assignment::RoundRobin, Assignment::LeastLoaded] {
            assert_eq!(pick(policy, &[away], None), None);
            assert_eq!(pick(policy, &[], None), None);
        }
    }

    #[test]
    fn round_robin_rotates_in_config_order_and_wraps() {
        let all = [agent(0), agent(1), agent(2)];
        let rr = |last| pick(Assignment::RoundRobin, &all, last);
        assert_eq!(rr(None), Some(0));
        assert_eq!(rr(Some(0)), Some(1));
        assert_eq!(rr(Some(1)), Some(2));
        assert_eq!(rr(Some(2)), Some(0));
    }

    #[test]
    fn round_robin_skips_the_ineligible() {
        let all = [
            agent(0),
            Candidate {
                online: false,
                ..agent(1)
            },
            agent(2),
        ];
        assert_eq!(pick(Assignment::RoundRobin, &all, Some(0)), Some(2));
        assert_eq!(pick(Assignment::RoundRobin, &all, Some(2)), Some(0));
    }

    #[test]
    fn least_loaded_takes_the_fewest_then_the_longest_idle_then_config_order() {
        let all = [
            Candidate {
                load: 2,
                ..agent(0)
            },
            Candidate {
                load: 1,
                last_auto: 7,
                ..agent(1)
            },
            Candidate {
                load: 1,
                last_auto: 3,
                ..agent(2)
            },
        ];
        assert_eq!(pick(Assignment::LeastLoaded, &all, None), Some(2));
        let tie = [agent(0), agent(1)];
        assert_eq!(pick(Assignment::LeastLoaded, &tie, None), Some(0));
    }

    #[test]
    fn an_agent_who_passed_on_a_case_gets_it_only_when_alone() {
        for passed in [Passed::Returned, Passed::Declined] {
            let gave = Candidate {
                passed: Some(passed),
                ..agent(0)
            };
            let all = [gave, agent(1)];
            for policy in [Assignment::RoundRobin, Assignment::LeastLoaded] {
                assert_eq!(pick(policy, &all, None), Some(1), "{policy:?}");
                assert_eq!(pick(policy, &all[..1], None), Some(0));
            }
            // An ineligible other agent does not count as "someone else".
            let busy = [
                gave,
                Candidate {
                    load: 5,
                    ..agent(1)
                },
            ];
            assert_eq!(pick(Assignment::LeastLoaded, &busy, None), Some(0));
        }
    }

    #[test]
    fn an_agent_holding_an_offer_gets_no_other() {
        let waiting = Candidate {
            offer_pending: true,
            ..agent(0)
        };
        assert!(!waiting.eligible());
        for policy in [Assignment::RoundRobin, Assignment::LeastLoaded] {
            assert_eq!(pick(policy, &[waiting, agent(1)], None), Some(1));
            assert_eq!(pick(policy, &[waiting], None), None);
        }
        let why = reasons(Assignment::LeastLoaded, &[waiting, agent(1)], 1);
        assert_eq!(why[0], (0, false, "another offer waits for its answer"));
    }

    #[test]
    fn the_reasons_say_who_passed() {
        let declined = Candidate {
            passed: Some(Passed::Declined),
            ..agent(0)
        };
        let why = reasons(Assignment::RoundRobin, &[declined, agent(1)], 1);
        assert_eq!(
            why[0],
            (0, true, "passed on this case's offer: others come first")
        );
        assert_eq!(why[1], (1, true, "picked: next in turn"));
    }
}
