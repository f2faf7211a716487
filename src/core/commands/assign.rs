//! Commands on a case's ownership and life: `assign`, an agent's `join`,
//! `close`, `delete`, and `presence`.

use chrono::Utc;

use crate::case::{CaseView, CustomerCaseView};
use crate::directory::Agent;
use crate::error::{Error, Result};
use crate::protocol::{AgentStatus, PresenceState, TransferBody};

use super::super::change::{Change, Seat};
use super::super::record::{Actor, AssignedBy, Case};
use super::super::{Broker, Conn};
use super::{Who, parse_code, required_code};

impl Broker {
    /// `assign`: gives a case to an agent, or back to the line with `None`.
    pub fn assign(&self, agent: &Agent, code: &str, assignee: Option<String>) -> Result<CaseView> {
        self.writable()?;
        let code = parse_code(code)?;
        let mut cx = self.lock(agent.company_index);
        let c = cx.visible(&code, agent)?;
        let (group, current) = (c.rec.group, c.rec.assignee);
        let allowed = agent.admin
            || current == Some(agent.index)
            || (current.is_none() && agent.member_of_index(group));
        if !allowed {
            return Err(Error::forbidden("you may not assign this case"));
        }
        let target = match &assignee {
            Some(t) => Some(self.assignable(agent, group, t)?),
            None => None,
        };
        if !c.is_open() {
            return Err(Error::conflict("the case is no longer open"));
        }
        if current != target {
            let at = Utc::now();
            cx.apply(match target {
                Some(to) => Change::Assigned {
                    code,
                    to,
                    by: AssignedBy::Agent(agent.index),
                    at,
                },
                None => Change::Returned { code, at },
            });
            // The old assignee has room again, or the case waits in the line.
            cx.dispatch();
        }
        Ok(cx.case(&code)?.view(&cx.company))
    }

    /// `transfer`: moves a case to another group and/or agent, by its
    /// assignee or an admin. Without `assignee` the assignee stays when a
    /// member of the new group, else the case waits in the new group's
    /// line (in creation order, like every case); `assignee: null` puts it
    /// back in the line. The customer's `status` names who helps now.
    pub fn transfer(&self, agent: &Agent, code: &str, to: TransferBody) -> Result<CaseView> {
        self.writable()?;
        let code = parse_code(code)?;
        if to.group.is_none() && to.assignee.is_none() {
            return Err(Error::bad_request(
                "transfer needs a group, an assignee, or both",
            ));
        }
        let company = self.company(agent.company_index);
        let group = match &to.group {
            Some(g) => Some(
                company
                    .group(g)
                    .filter(|_| company.has_group(g))
                    .ok_or_else(|| Error::bad_request(format!("unknown group \"{g}\"")))?,
            ),
            None => None,
        };
        let mut cx = self.lock(agent.company_index);
        let c = cx.visible(&code, agent)?;
        let (from_group, current) = (c.rec.group, c.rec.assignee);
        if !agent.admin && current != Some(agent.index) {
            return Err(Error::forbidden(
                "only the assignee or an admin may transfer this case",
            ));
        }
        if !c.is_open() {
            return Err(Error::conflict("the case is no longer open"));
        }
        let group = group.unwrap_or(from_group);
        let target = match &to.assignee {
            Some(Some(t)) => Some(self.assignable(agent, group, t)?),
            Some(None) => None,
            // Kept when a member of the new group.
            None => current.filter(|&a| cx.company.agents[a].member_of_index(group)),
        };
        let at = Utc::now();
        let mut changes = Vec::with_capacity(2);
        if group != from_group {
            changes.push(Change::Transferred { code, group, at });
        }
        if target != current {
            changes.push(match target {
                Some(to) => Change::Assigned {
                    code,
                    to,
                    by: AssignedBy::Agent(agent.index),
                    at,
                },
                None => Change::Returned { code, at },
            });
        }
        if !changes.is_empty() {
            cx.apply_all(changes);
            // The old assignee has room again; the case may be picked in
            // its new group's line.
            cx.dispatch();
        }
        Ok(cx.case(&code)?.view(&cx.company))
    }

    /// An agent's `join`: takes the supporter seat, and the case when it is
    /// unassigned (or, for an admin with `takeover`, from its assignee).
    /// Everything is checked before anything changes.
    pub fn agent_join(
        &self,
        conn: &Conn,
        agent: &Agent,
        code: &str,
        takeover: bool,
    ) -> Result<CaseView> {
        self.writable()?;
        let code = parse_code(code)?;
        let mut cx = self.lock(agent.company_index);
        cx.conn(conn.id)?;
        let c = super::supervise::visible_to_helper(cx.st.cases.get(&code), agent)
            .or_else(|_| cx.visible(&code, agent))?;
        if !c.is_open() {
            return Err(Error::conflict("the case is no longer open"));
        }
        let current = c.rec.assignee;
        // An invited helper sits in beside the assignee.
        if c.is_helper(&agent.id) && current.is_some_and(|a| a != agent.index) && !takeover {
            cx.apply(Change::SeatTaken {
                code,
                seat: Seat::Helper,
                conn: conn.id,
                at: Utc::now(),
                customer_name: None,
                token_hash: None,
            });
            return Ok(cx.case(&code)?.view(&cx.company));
        }
        if !agent.sees_index(c.rec.group) {
            return Err(Error::not_found());
        }
        let claim = match current {
            None => true,
            Some(id) if id == agent.index => false,
            Some(_) if takeover && agent.admin => true,
            Some(_) if takeover => {
                return Err(Error::forbidden("only admins may take over a case"));
            }
            Some(other) => {
                return Err(Error::conflict(format!(
                    "the case is assigned to \"{}\"; an admin may join with takeover",
                    cx.company.agents[other].id
                )));
            }
        };
        let at = Utc::now();
        let mut changes = Vec::with_capacity(2);
        if claim {
            changes.push(Change::Assigned {
                code,
                to: agent.index,
                by: AssignedBy::Agent(agent.index),
                at,
            });
        }
        changes.push(Change::SeatTaken {
            code,
            seat: Seat::Supporter,
            conn: conn.id,
            at,
            customer_name: None,
            token_hash: None,
        });
        cx.apply_all(changes);
        if current.is_some_and(|prev| prev != agent.index) {
            // A takeover freed room for the previous assignee.
            cx.dispatch();
        }
        Ok(cx.case(&code)?.view(&cx.company))
    }

    /// `close`: by the assignee, the creator or an admin; customers close
    /// the case they requested.
    pub fn close(&self, who: Who<'_>, code: Option<&str>) -> Result<(CaseView, CustomerCaseView)> {
        self.writable()?;
        let (mut cx, code, by) = match who {
            Who::Agent(agent) => {
                let code = required_code(code)?;
                let cx = self.lock(agent.company_index);
                if !may_end(agent, cx.visible(&code, agent)?) {
                    return Err(Error::forbidden(
                        "only the assignee, the creator or an admin may close this case",
                    ));
                }
                (cx, code, Actor::Agent(agent.index))
            }
            Who::Customer(conn) => {
                let shard = conn
                    .shard()
                    .ok_or_else(|| Error::conflict("you are not in a session"))?;
                let cx = self.lock(shard);
                let code = cx
                    .conn(conn.id)?
                    .case
                    .ok_or_else(|| Error::conflict("you are not in a session"))?;
                if cx.case(&code)?.rec.created_by != Actor::Customer {
                    return Err(Error::forbidden(
                        "only a case you requested may be closed by you",
                    ));
                }
                (cx, code, Actor::Customer)
            }
        };
        if !cx.case(&code)?.is_open() {
            return Err(Error::conflict("the case is not open"));
        }
        cx.apply(Change::Closed {
            code,
            by,
            at: Utc::now(),
        });
        cx.dispatch();
        let c = cx.case(&code)?;
        Ok((c.view(&cx.company), c.customer_view(&cx.company)))
    }

    /// `delete`: by an admin, the creator or the assignee, in any state.
    pub fn delete(&self, agent: &Agent, code: &str) -> Result<crate::case::SessionCode> {
        self.writable()?;
        let code = parse_code(code)?;
        let mut cx = self.lock(agent.company_index);
        if !may_end(agent, cx.visible(&code, agent)?) {
            return Err(Error::forbidden(
                "only an admin, the creator or the assignee may delete this case",
            ));
        }
        cx.apply(Change::Deleted { code });
        cx.dispatch();
        Ok(code)
    }

    /// `presence`: an agent's availability, shared by all its connections.
    pub fn set_presence(&self, agent: &Agent, state: PresenceState) {
        self.lock(agent.company_index)
            .set_presence(agent.index, state);
    }

    /// `GET /v1/agents`: the agents of the caller's company that it may see
    /// (admins: all; others: those sharing a group), in config order.
    /// Returns to the line, unassigned, every open case of an agent that
    /// is no longer in the config (with its events); automated assignment
    /// takes them from there. The number of cases returned.
    pub fn return_cases_of_former_agents(&self, shard: usize) -> usize {
        let mut cx = self.lock(shard);
        let former: Vec<usize> = cx
            .company
            .agents
            .iter()
            .filter(|a| !a.active())
            .map(|a| a.index)
            .collect();
        former
            .into_iter()
            .map(|agent| cx.return_cases_of(agent))
            .sum()
    }

    pub fn agents(&self, viewer: &Agent) -> Vec<AgentStatus> {
        let cx = self.lock(viewer.company_index);
        cx.company
            .agents
            .iter()
            .filter(|a| a.groups.iter().any(|g| viewer.sees(g)))
            .map(|a| cx.agent_status(a.index))
            .collect()
    }
}

/// Who may close or delete a case: an admin, its creator, its assignee.
fn may_end(agent: &Agent, case: &Case) -> bool {
    agent.admin
        || case.rec.created_by == Actor::Agent(agent.index)
        || case.rec.assignee == Some(agent.index)
}
