//! Creating cases: `create_case` by an agent (and `POST /v1/cases`), and
//! `request_help` by a customer's support module (and `POST /v1/help`).

use std::collections::VecDeque;

use chrono::Utc;
use dashmap::mapref::entry::Entry;

use crate::case::{CaseView, Customer, CustomerCaseView, SessionCode, Source};
use crate::directory::Agent;
use crate::error::{Error, Result};
use crate::protocol::{CreateCase, RequestHelp, Via};

use super::super::change::{Change, Seat};
use super::super::record::{Actor, AssignedBy, CaseRecord};
use super::super::shard::Locked;
use super::super::timers;
use super::super::{Broker, Conn};
use super::{check_customer, check_len, limits};

/// What a new case starts with, before it has a code.
struct NewCase {
    group: usize,
    name: String,
    description: String,
    customer: Customer,
    source: Source,
    created_by: Actor,
    assignee: Option<usize>,
    assigned_by: Option<AssignedBy>,
}

/// A fresh resume token and its hash (only the hash is kept).
pub(crate) fn new_resume_token() -> (String, [u8; 32]) {
    let token = hex::encode(rand::random::<[u8; limits::RESUME_TOKEN_BYTES]>());
    let hash = crate::config::hash_token(&token);
    (token, hash)
}

impl Broker {
    /// `create_case` and `POST /v1/cases`.
    pub fn create_case(&self, agent: &Agent, req: CreateCase) -> Result<CaseView> {
        self.writable()?;
        let company = self.company(agent.company_index);
        let unknown = || Error::bad_request(format!("unknown group \"{}\"", req.group));
        let group = company
            .group(&req.group)
            .filter(|_| company.has_group(&req.group))
            .ok_or_else(unknown)?;
        if !agent.sees_index(group) {
            return Err(Error::forbidden("you are not a member of this group"));
        }
        let name = req.name.unwrap_or_default();
        check_len("name", &name, limits::NAME)?;
        let description = req.description.unwrap_or_default();
        check_len("description", &description, limits::DESCRIPTION)?;
        let customer = req.customer.unwrap_or_default();
        check_customer(&customer)?;
        let assignee = match &req.assignee {
            Some(target) => {
                let target = self.assignable(agent, group, target)?;
                if !agent.admin && target != agent.index && !agent.member_of_index(group) {
                    return Err(Error::forbidden("you may not assign cases of this group"));
                }
                Some(target)
            }
            None => None,
        };
        let mut cx = self.lock(agent.company_index);
        // Deleted meanwhile: no case may open in it.
        if !cx.company.has_group(&req.group) {
            return Err(unknown());
        }
        let rec = cx.new_record(NewCase {
            group,
            name,
            description,
            customer,
            source: Source::Manual,
            created_by: Actor::Agent(agent.index),
            assigned_by: assignee.map(|_| AssignedBy::Agent(agent.index)),
            assignee,
        });
        let (code, at) = (rec.code, rec.created_at);
        let mut changes = vec![Change::Created(Box::new(rec))];
        changes.extend(cx.sla_start_at(code, group, at));
        cx.apply_all(changes);
        cx.dispatch();
        Ok(cx.case(&code)?.view(&company))
    }

    /// `request_help` (with the customer's connection, which takes the seat)
    /// and `POST /v1/help` (without; the case stays `new`). Returns the case
    /// in the customer's view and, with a connection, the resume token.
    pub fn request_help(
        &self,
        conn: Option<&Conn>,
        req: RequestHelp,
    ) -> Result<(CustomerCaseView, Option<String>)> {
        self.writable()?;
        let dir = self.shared.dir.load();
        let module = dir
            .module(&req.module)
            .ok_or_else(|| Error::unauthorized("unknown module key"))?;
        let customer = Customer {
            name: req.name,
            email: req.email,
        };
        check_customer(&customer)?;
        // Outside the group's hours: nothing is created.
        let group = &dir.companies()[module.company_index].group_info[module.group_index];
        if let Some((message, opens_at)) = group.closed_at(chrono::Utc::now()) {
            let message =
                message.unwrap_or("We are closed now: please ask for help again when we are open.");
            return Err(Error::closed(message, opens_at));
        }
        let description = req.description.unwrap_or_default();
        check_len("description", &description, limits::DESCRIPTION)?;
        let (source, title) = match req.via.unwrap_or_default() {
            Via::Quicksupport => (Source::Quicksupport, "Help request"),
            Via::Sos => (Source::Sos, "SOS"),
        };
        let name = match &customer.name {
            Some(n) if !n.is_empty() => format!("{title}: {n}"),
            _ => title.to_string(),
        };
        if let Some(conn) = conn {
            self.check_customer_free(conn)?;
        }
        let shard = module.company_index;
        let mut cx = self.lock(shard);
        // A default assignee disabled or deleted since is no longer one.
        let assignee = module
            .default_assignee_index
            .filter(|&a| cx.company.agents.get(a).is_some_and(|a| a.active()));
        let rec = cx.new_record(NewCase {
            group: module.group_index,
            name: name.chars().take(limits::NAME).collect(),
            description,
            customer,
            source,
            created_by: Actor::Customer,
            assigned_by: assignee.map(|_| AssignedBy::Auto),
            assignee,
        });
        let (code, group, at) = (rec.code, rec.group, rec.created_at);
        let mut changes = vec![Change::Created(Box::new(rec))];
        changes.extend(cx.sla_start_at(code, group, at));
        // The customer's connection sits down in the same change set, so
        // the company sees one `created` event, already pending.
        let token = conn.map(|conn| {
            conn.set_shard(shard);
            cx.add_conn(conn.id);
            let (token, hash) = new_resume_token();
            changes.push(Change::SeatTaken {
                code,
                seat: Seat::Customer,
                conn: conn.id,
                at,
                customer_name: None,
                token_hash: Some(hash),
            });
            token
        });
        cx.apply_all(changes);
        cx.dispatch();
        let company = self.company(shard);
        Ok((cx.case(&code)?.customer_view(&company), token))
    }

    /// `conflict` when a customer connection already serves a case.
    pub(crate) fn check_customer_free(&self, conn: &Conn) -> Result<()> {
        if let Some(shard) = conn.shard() {
            let cx = self.lock(shard);
            if cx.conn(conn.id).is_ok_and(|s| s.case.is_some()) {
                return Err(Error::conflict("this connection already serves a case"));
            }
        }
        Ok(())
    }

    /// Checks that agent `target` may be given a case of `group` by `by`;
    /// returns its index.
    pub(crate) fn assignable(&self, by: &Agent, group: usize, target: &str) -> Result<usize> {
        let company = self.company(by.company_index);
        let agent = company
            .agent(target)
            .ok_or_else(|| Error::bad_request(format!("unknown agent \"{target}\"")))?;
        if !agent.active() {
            return Err(Error::bad_request(format!(
                "agent \"{target}\" is no longer in the company"
            )));
        }
        if !agent.member_of_index(group) {
            return Err(Error::forbidden(format!(
                "agent \"{target}\" is not a member of group \"{}\"",
                company.groups[group]
            )));
        }
        Ok(agent.index)
    }
}

impl Locked<'_> {
    /// The service levels of a case of `group` created at `at`.
    pub(crate) fn sla_start_at(
        &self,
        code: SessionCode,
        group: usize,
        at: chrono::DateTime<Utc>,
    ) -> Option<Change> {
        let g = self.company.group_info.get(group)?;
        if g.sla_first_response.is_none() && g.sla_resolution.is_none() {
            return None;
        }
        let due = |d: Option<std::time::Duration>| d.map(|d| super::super::timers::add(at, d));
        Some(Change::SlaStarted {
            code,
            first_response_due: due(g.sla_first_response),
            resolution_due: due(g.sla_resolution),
        })
    }

    /// Draws a code no other case holds, in any company, and builds the
    /// new case's record.
    fn new_record(&mut self, new: NewCase) -> CaseRecord {
        let digits = self.shared.config.code_digits;
        let code = loop {
            let code = SessionCode::random(digits);
            if let Entry::Vacant(slot) = self.shared.codes.entry(code) {
                slot.insert(self.shard);
                break code;
            }
        };
        let now = Utc::now();
        self.st.next_line_seq += 1;
        CaseRecord {
            code,
            group: new.group,
            name: new.name,
            description: new.description,
            customer: new.customer,
            source: new.source,
            created_by: new.created_by,
            assigned_at: new.assignee.map(|_| now),
            assignee: new.assignee,
            assigned_by: new.assigned_by,
            returned_by: None,
            assignee_joined: false,
            line_seq: self.st.next_line_seq,
            created_at: now,
            updated_at: now,
            expires_at: timers::add(now, self.shared.config.case_ttl),
            closed_at: None,
            closed_by: None,
            terminal: None,
            purge_at: None,
            ever_occupied: false,
            resume_token_hash: None,
            customer_left_at: None,
            transcript: VecDeque::new(),
        }
    }
}
