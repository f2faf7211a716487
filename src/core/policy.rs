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
}

impl Candidate {
    /// Online, available, a member of the group and under `max_cases`.
    pub fn eligible(&self) -> bool {
        self.online
            && self.presence == PresenceState::Available
            && self.member
            && self.load < self.max_cases
    }
}

/// The agent `policy` picks for a case among `candidates` (in config
/// order), or `None` when nobody is eligible or the policy is `manual`.
///
/// - The agent who returned the case (`returned_by`) is picked only when
///   nobody else is eligible.
/// - Round robin takes the first eligible agent after `last_picked` (the
///   config index of the group's previous pick), wrapping around.
/// - Least loaded takes the fewest open cases, ties to the longest idle
///   (oldest last automatic assignment), then config order.
pub fn pick(
    policy: Assignment,
    candidates: &[Candidate],
    returned_by: Option<usize>,
    last_picked: Option<usize>,
) -> Option<usize> {
    let eligible = candidates.iter().filter(|c| c.eligible());
    let others = eligible
        .clone()
        .filter(|c| Some(c.index) != returned_by)
        .count();
    let allowed = |c: &&Candidate| others == 0 || Some(c.index) != returned_by;
    match policy {
        Assignment::Manual => None,
        Assignment::RoundRobin => {
            let mut pool = eligible.filter(allowed);
            let first = pool.clone().next();
            pool.find(|c| last_picked.is_none_or(|l| c.index > l))
                .or(first)
                .map(|c| c.index)
        }
        Assignment::LeastLoaded => eligible
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
    returned_by: Option<usize>,
    chosen: usize,
) -> Vec<(usize, bool, &'static str)> {
    let others = candidates
        .iter()
        .filter(|c| c.eligible() && Some(c.index) != returned_by)
        .count();
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
            } else if others > 0 && Some(c.index) == returned_by {
                "gave this case back: others come first"
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
        assert_eq!(pick(Assignment::Manual, &[agent(0)], None, None), None);
    }

    #[test]
    fn nobody_eligible_means_nobody_picked() {
        let away = Candidate {
            presence: PresenceState::Away,
            ..agent(0)
        };
        for policy in [Assignment::RoundRobin, Assignment::LeastLoaded] {
            assert_eq!(pick(policy, &[away], None, None), None);
            assert_eq!(pick(policy, &[], None, None), None);
        }
    }

    #[test]
    fn round_robin_rotates_in_config_order_and_wraps() {
        let all = [agent(0), agent(1), agent(2)];
        let rr = |last| pick(Assignment::RoundRobin, &all, None, last);
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
        assert_eq!(pick(Assignment::RoundRobin, &all, None, Some(0)), Some(2));
        assert_eq!(pick(Assignment::RoundRobin, &all, None, Some(2)), Some(0));
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
        assert_eq!(pick(Assignment::LeastLoaded, &all, None, None), Some(2));
        let tie = [agent(0), agent(1)];
        assert_eq!(pick(Assignment::LeastLoaded, &tie, None, None), Some(0));
    }

    #[test]
    fn the_agent_who_returned_a_case_gets_it_only_when_alone() {
        let all = [agent(0), agent(1)];
        for policy in [Assignment::RoundRobin, Assignment::LeastLoaded] {
            assert_eq!(pick(policy, &all, Some(0), None), Some(1), "{policy:?}");
            assert_eq!(pick(policy, &all[..1], Some(0), None), Some(0));
        }
        // An ineligible returner does not count as "someone else".
        let busy = [
            agent(0),
            Candidate {
                load: 5,
                ..agent(1)
            },
        ];
        assert_eq!(pick(Assignment::LeastLoaded, &busy, Some(0), None), Some(0));
    }
}
