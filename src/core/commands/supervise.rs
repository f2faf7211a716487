//! Commands of a team lead and of a second agent: `invite` another agent
//! to help (it joins as a helper), `watch` / `unwatch` a session unseen
//! (admins), and `whisper`, a line only agents get.

use chrono::Utc;

use crate::case::{CaseView, SessionCode, format_time};
use crate::directory::Agent;
use crate::error::{Error, Result};
use crate::protocol::{ChatLine, From, Role};

use super::super::change::Change;
use super::super::record::Case;
use super::super::{Broker, Conn};
use super::{check_len, limits, parse_code};

/// The most helpers one case may have.
pub const MAX_HELPERS: usize = 8;

impl Broker {
    /// `invite`: the assignee or an admin asks another active agent of
    /// the company to help; the invitee may then `join` as a helper.
    pub fn invite(&self, agent: &Agent, code: &str, invitee: &str) -> Result<CaseView> {
        self.writable()?;
        let code = parse_code(code)?;
        let mut cx = self.lock(agent.company_index);
        let c = cx.visible(&code, agent)?;
        if !agent.admin && c.rec.assignee != Some(agent.index) {
            return Err(Error::forbidden(
                "only the assignee or an admin may invite a helper",
            ));
        }
        let target = cx
            .company
            .agent(invitee)
            .filter(|a| a.active())
            .ok_or_else(|| Error::bad_request(format!("unknown agent \"{invitee}\"")))?;
        if c.rec.assignee == Some(target.index) {
            return Err(Error::conflict(format!(
                "\"{invitee}\" is the case's assignee"
            )));
        }
        if !c.is_open() {
            return Err(Error::conflict("the case is no longer open"));
        }
        if !c.is_helper(invitee) {
            if c.ext.helpers.len() >= MAX_HELPERS {
                return Err(Error::conflict(format!(
                    "a case may have at most {MAX_HELPERS} helpers"
                )));
            }
            let change = Change::Invited {
                code,
                agent: invitee.to_string(),
                by: agent.id.clone(),
                at: Utc::now(),
            };
            cx.apply(change);
        }
        Ok(cx.case(&code)?.view(&cx.company))
    }

    /// `watch`: an admin's connection follows a session (status, chat,
    /// whispers) without taking a seat; the customer is not told.
    pub fn watch(&self, conn: &Conn, agent: &Agent, code: &str) -> Result<CaseView> {
        let code = parse_code(code)?;
        if !agent.admin {
            return Err(Error::forbidden("only admins may watch a session"));
        }
        let mut cx = self.lock(agent.company_index);
        cx.conn(conn.id)?;
        let c = cx.visible(&code, agent)?;
        if !c.is_open() {
            return Err(Error::conflict("the case is no longer open"));
        }
        if !c.live.watchers.contains(&conn.id) {
            cx.apply(Change::Watched {
                code,
                conn: conn.id,
                on: true,
            });
        }
        Ok(cx.case(&code)?.view(&cx.company))
    }

    /// `unwatch`: stops following a session.
    pub fn unwatch(&self, conn: &Conn, agent: &Agent, code: &str) -> Result<SessionCode> {
        let code = parse_code(code)?;
        let mut cx = self.lock(agent.company_index);
        if !cx.conn(conn.id)?.watching.contains(&code) {
            cx.visible(&code, agent)?;
            return Err(Error::conflict("you are not watching this session"));
        }
        cx.apply(Change::Watched {
            code,
            conn: conn.id,
            on: false,
        });
        Ok(code)
    }

    /// `whisper`: a line only agents get (the assignee's seat, helpers,
    /// watchers), kept with the case and marked internal in its
    /// transcript. By the assignee, a helper or an admin; `conn` (the
    /// sender's connection over WebSocket) gets `sent`, not the line.
    pub fn whisper(
        &self,
        conn: Option<&Conn>,
        agent: &Agent,
        code: &str,
        text: String,
    ) -> Result<SessionCode> {
        self.writable()?;
        check_len("text", &text, limits::CHAT)?;
        let code = parse_code(code)?;
        let mut cx = self.lock(agent.company_index);
        let c = visible_to_helper(cx.st.cases.get(&code), agent)
            .or_else(|_| cx.visible(&code, agent))?;
        let allowed = agent.admin || c.rec.assignee == Some(agent.index) || c.is_helper(&agent.id);
        if !allowed {
            return Err(Error::forbidden(
                "only the assignee, a helper or an admin may whisper in this case",
            ));
        }
        if !c.is_open() {
            return Err(Error::conflict("the case is no longer open"));
        }
        let line = ChatLine {
            from: From {
                role: Role::Agent,
                name: Some(agent.name.clone()),
            },
            text,
            at: format_time(&Utc::now()),
        };
        cx.apply(Change::Whispered {
            code,
            line,
            conn: conn.map(|c| c.id),
        });
        Ok(code)
    }
}

/// A case an invited helper may act on even outside its groups.
pub(crate) fn visible_to_helper<'a>(case: Option<&'a Case>, agent: &Agent) -> Result<&'a Case> {
    match case {
        Some(c) if c.is_helper(&agent.id) => Ok(c),
        _ => Err(Error::not_found()),
    }
}
