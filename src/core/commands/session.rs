//! Commands of a live session: a customer's `join` by code, `leave`, and
//! the relay of `chat` (kept in the transcript) and `signal` (not kept).

use chrono::Utc;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::case::{CustomerCaseView, SessionCode, format_time};
use crate::error::{Error, Result};
use crate::protocol::{ChatLine, From, Role};

use super::super::change::{Change, Seat};
use super::super::effect::Effect;
use super::super::shard::Locked;
use super::super::{Broker, Conn};
use super::create::new_resume_token;
use super::{check_len, limits, required_code};

impl Broker {
    /// A customer's `join` by code. Every refusal that could tell whether a
    /// code exists is `not_found`.
    pub fn customer_join(
        &self,
        conn: &Conn,
        code: &str,
        name: Option<String>,
        resume_token: Option<String>,
    ) -> Result<(CustomerCaseView, String)> {
        self.writable()?;
        let code = SessionCode::parse(code).ok_or_else(Error::not_found)?;
        if let Some(n) = &name {
            check_len("name", n, limits::CUSTOMER_NAME)?;
        }
        self.check_customer_free(conn)?;
        let shard = self.shard_of(&code).ok_or_else(Error::not_found)?;
        let grace = self.shared.config.seat_grace;
        let mut cx = self.lock(shard);
        let c = cx.case(&code)?;
        if !c.is_open() {
            return Err(Error::not_found());
        }
        let token_ok = match (&c.rec.resume_token_hash, &resume_token) {
            (Some(held), Some(given)) => bool::from(held.ct_eq(&crate::config::hash_token(given))),
            _ => false,
        };
        let now = Utc::now();
        let recently_left = c.rec.customer_left_at.is_some_and(|left| {
            (now - left).to_std().is_ok_and(|elapsed| elapsed < grace) || left > now
        });
        let reserved = !c.live.customer.is_empty() || recently_left;
        if reserved && !token_ok {
            return Err(Error::conflict(
                "the customer seat is taken; rejoin with your resume_token",
            ));
        }
        // The valid token is returned unchanged; otherwise a new one.
        let (token, hash) = match resume_token.filter(|_| token_ok) {
            Some(t) => (t, None),
            None => {
                let (t, h) = new_resume_token();
                (t, Some(h))
            }
        };
        conn.set_shard(shard);
        cx.add_conn(conn.id);
        cx.apply(Change::SeatTaken {
            code,
            seat: Seat::Customer,
            conn: conn.id,
            at: now,
            customer_name: name,
            token_hash: hash,
        });
        Ok((cx.case(&code)?.customer_view(&cx.company), token))
    }

    /// `leave`: a connection gives up its seat. Agents name the code;
    /// customers leave their one case.
    pub fn leave(&self, conn: &Conn, code: Option<&str>) -> Result<SessionCode> {
        match conn.role {
            Role::Customer => {
                let shard = conn
                    .shard()
                    .ok_or_else(|| Error::conflict("you are not in a session"))?;
                let mut cx = self.lock(shard);
                let code = cx
                    .conn(conn.id)?
                    .case
                    .ok_or_else(|| Error::conflict("you are not in a session"))?;
                cx.apply(Change::SeatLeft {
                    code,
                    seat: Seat::Customer,
                    conn: conn.id,
                    at: Utc::now(),
                });
                Ok(code)
            }
            Role::Agent => {
                let code = required_code(code)?;
                let shard = conn.shard().ok_or_else(Error::not_found)?;
                let mut cx = self.lock(shard);
                if !cx.conn(conn.id)?.sessions.contains(&code) {
                    return Err(Error::conflict("you are not in this session"));
                }
                let seat = cx.agent_seat(&code, conn.id);
                cx.apply(Change::SeatLeft {
                    code,
                    seat,
                    conn: conn.id,
                    at: Utc::now(),
                });
                Ok(code)
            }
        }
    }

    /// `chat` from a seated connection to the other seat. Kept in the
    /// transcript.
    pub fn chat(&self, conn: &Conn, code: Option<&str>, text: String) -> Result<SessionCode> {
        self.writable()?;
        check_len("text", &text, limits::CHAT)?;
        let shard = self.seated_shard(conn)?;
        let mut cx = self.lock(shard);
        let code = cx.seated(conn, code)?;
        let name = match &conn.agent {
            Some(a) => Some(a.name.clone()),
            None => cx.case(&code)?.rec.customer.name.clone(),
        };
        let line = ChatLine {
            from: From {
                role: conn.role,
                name,
            },
            text,
            at: format_time(&Utc::now()),
        };
        cx.apply(Change::ChatBy {
            code,
            line,
            conn: conn.id,
        });
        Ok(code)
    }

    /// `signal`: opaque data to the other seat, not kept.
    pub fn signal(&self, conn: &Conn, code: Option<&str>, data: Value) -> Result<SessionCode> {
        let size = serde_json::to_vec(&data)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > limits::SIGNAL_BYTES {
            return Err(Error::too_large(format!(
                "signal data is larger than {} bytes",
                limits::SIGNAL_BYTES
            )));
        }
        let shard = self.seated_shard(conn)?;
        let mut cx = self.lock(shard);
        let code = cx.seated(conn, code)?;
        let c = cx.case(&code)?;
        if c.live.helpers.contains(&conn.id) {
            return Err(Error::conflict(
                "signals go between the customer and the assignee's seat",
            ));
        }
        let to = match conn.role {
            Role::Agent => c.live.customer.clone(),
            Role::Customer => c.live.supporter.clone(),
        };
        if !to.is_empty() {
            cx.emit(Effect::Signal {
                to,
                code,
                from: conn.role,
                data,
            });
        }
        Ok(code)
    }

    fn seated_shard(&self, conn: &Conn) -> Result<usize> {
        conn.shard()
            .ok_or_else(|| Error::conflict("you are not in a session"))
    }
}

impl Locked<'_> {
    /// The case `conn` sits in: for agents the named one, for customers
    /// their one case.
    fn seated(&self, conn: &Conn, code: Option<&str>) -> Result<SessionCode> {
        let state = self.conn(conn.id)?;
        match &conn.agent {
            None => state
                .case
                .ok_or_else(|| Error::conflict("you are not in a session")),
            Some(agent) => {
                let code = required_code(code)?;
                if !state.sessions.contains(&code) {
                    return match self.st.cases.get(&code) {
                        Some(c) if agent.sees_index(c.rec.group) => {
                            Err(Error::conflict("join the session first"))
                        }
                        _ => Err(Error::not_found()),
                    };
                }
                Ok(code)
            }
        }
    }
}
