//! The commands: each checks who may do what, decides, and applies the
//! resulting changes on the case's shard. One file per family:
//! [`create`], [`assign`] (assign, join, close, delete), [`session`]
//! (customer join, leave, chat, signal), [`subscribe`], [`query`], and the
//! connection's life and deadlines here.

pub mod admin;
pub mod assign;
pub mod companies;
pub mod create;
pub mod offers;
pub mod query;
pub mod session;
pub mod subscribe;
pub mod supervise;
pub mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;

use crate::case::{Customer, SessionCode};
use crate::directory::Agent;
use crate::error::{Error, Result};
use crate::protocol::Role;

use super::change::{Change, Seat};
use super::effect::Effect;
use super::limits;
use super::timers::Timer;
use super::{Broker, Conn, NO_SHARD};

pub use query::{ListQuery, Page};

/// Who acts on a case: an agent, or a customer through its connection.
#[derive(Clone, Copy)]
pub enum Who<'a> {
    Agent(&'a Agent),
    Customer(&'a Conn),
}

pub(crate) fn check_len(field: &str, value: &str, max: usize) -> Result<()> {
    if value.chars().count() > max {
        Err(Error::too_large(format!(
            "{field} is longer than {max} characters"
        )))
    } else {
        Ok(())
    }
}

pub(crate) fn check_customer(c: &Customer) -> Result<()> {
    if let Some(name) = &c.name {
        check_len("customer.name", name, limits::CUSTOMER_NAME)?;
    }
    if let Some(email) = &c.email {
        check_len("customer.email", email, limits::EMAIL)?;
        if !plausible_email(email) {
            return Err(Error::bad_request("customer.email is not an email address"));
        }
    }
    Ok(())
}

/// One `@` between a local part and a domain with a dot, no spaces, no
/// control characters and none of `<>()[],;:\"` (which would let an address
/// smuggle headers or markup into whatever sends mail to it).
pub(crate) fn plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let clean = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && !"<>()[],;:\\\"@".contains(c))
    };
    clean(local)
        && clean(domain)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

/// Parses a code from any client path.
pub fn parse_code(input: &str) -> Result<SessionCode> {
    SessionCode::parse(input)
        .ok_or_else(|| Error::bad_request("code must be s followed by 8 or 11 digits"))
}

/// A code a command requires (`None`: the field was missing).
pub(crate) fn required_code(code: Option<&str>) -> Result<SessionCode> {
    parse_code(code.ok_or_else(|| Error::bad_request("missing field `code`"))?)
}

impl Broker {
    /// Registers a connection after its `hello`. An agent connection counts
    /// towards its agent's presence at once. `reachable` runs with the new
    /// id before anything may be delivered to it.
    pub fn connect_with(
        &self,
        role: Role,
        agent: Option<Arc<Agent>>,
        reachable: impl FnOnce(super::ConnId),
    ) -> Conn {
        let id = self.shared.next_conn.fetch_add(1, Ordering::Relaxed);
        reachable(id);
        let conn = Conn {
            id,
            role,
            agent,
            shard: AtomicUsize::new(NO_SHARD),
            feed: false,
        };
        if let Some(a) = &conn.agent {
            let mut cx = self.lock(a.company_index);
            cx.add_conn(id);
            cx.agent_connected(a.index, id);
        }
        self.shared.metrics.connection_opened(role);
        conn
    }

    /// A reader of `agent`'s events (the event feed): it may subscribe,
    /// and nothing else; the agent does not count as online for it.
    pub fn connect_feed(&self, agent: Arc<Agent>, reachable: impl FnOnce(super::ConnId)) -> Conn {
        let id = self.shared.next_conn.fetch_add(1, Ordering::Relaxed);
        reachable(id);
        self.lock(agent.company_index).add_conn(id);
        Conn {
            id,
            role: Role::Agent,
            agent: Some(agent),
            shard: AtomicUsize::new(NO_SHARD),
            feed: true,
        }
    }

    /// A connection whose company is decided on another node (in a
    /// cluster): known here, but its agent goes online only through
    /// [`Broker::agent_online`] on the node that decides.
    pub fn connect_elsewhere(
        &self,
        role: Role,
        agent: Option<Arc<Agent>>,
        reachable: impl FnOnce(super::ConnId),
    ) -> Conn {
        let id = self.shared.next_conn.fetch_add(1, Ordering::Relaxed);
        reachable(id);
        if let Some(a) = &agent {
            self.lock(a.company_index).add_conn(id);
        }
        self.shared.metrics.connection_opened(role);
        Conn {
            id,
            role,
            agent,
            shard: AtomicUsize::new(NO_SHARD),
            feed: false,
        }
    }

    /// On the node that decides the agent's company: the agent's
    /// connection `conn`, opened on another node, is online.
    pub fn agent_online(&self, conn: super::ConnId, agent: &Agent) {
        let mut cx = self.lock(agent.company_index);
        cx.add_conn(conn);
        cx.agent_connected(agent.index, conn);
    }

    /// Another node's connection as this node sees it, to run a command
    /// it forwarded here.
    pub fn conn_of(
        &self,
        id: super::ConnId,
        role: Role,
        agent: Option<Arc<Agent>>,
        shard: Option<usize>,
    ) -> Conn {
        Conn {
            id,
            role,
            agent,
            shard: AtomicUsize::new(shard.unwrap_or(NO_SHARD)),
            feed: false,
        }
    }

    /// Forgets a connection on a node that does not decide its company:
    /// its subscription ends here; its seats are left by the node that
    /// decides ([`Broker::leave_seats`]).
    pub fn forget(&self, conn: &Conn) {
        if let Some(shard) = conn.shard() {
            let mut cx = self.lock(shard);
            if let Some(state) = cx.st.conns.remove(&conn.id)
                && state.subscribed
            {
                cx.emit(Effect::Unsubscribe { conn: conn.id });
            }
        }
        if !conn.feed {
            self.shared.metrics.connection_closed(conn.role);
        }
    }

    /// Forgets a connection: it leaves every seat at once (the status
    /// follows) and its subscription.
    pub fn disconnect(&self, conn: &Conn) {
        self.leave_seats(conn);
        if !conn.feed {
            self.shared.metrics.connection_closed(conn.role);
        }
    }

    /// A connection leaves every seat, its watching and its subscription;
    /// its agent goes offline if it was the last one.
    pub fn leave_seats(&self, conn: &Conn) {
        if let Some(shard) = conn.shard() {
            let mut cx = self.lock(shard);
            if let Some(state) = cx.st.conns.remove(&conn.id) {
                if state.subscribed {
                    cx.emit(Effect::Unsubscribe { conn: conn.id });
                }
                let now = chrono::Utc::now();
                if let Some(code) = state.case {
                    cx.apply(Change::SeatLeft {
                        code,
                        seat: Seat::Customer,
                        conn: conn.id,
                        at: now,
                    });
                }
                for code in state.sessions {
                    let seat = cx.agent_seat(&code, conn.id);
                    cx.apply(Change::SeatLeft {
                        code,
                        seat,
                        conn: conn.id,
                        at: now,
                    });
                }
                for code in state.watching {
                    cx.apply(Change::Watched {
                        code,
                        conn: conn.id,
                        on: false,
                    });
                }
            }
            if let Some(a) = &conn.agent
                && !conn.feed
            {
                cx.agent_disconnected(a.index, conn.id);
            }
        }
    }

    /// Expires, purges, returns orphans and tells coalesced positions as
    /// they fall due in one company; returns its next deadline.
    pub fn run_timers(&self, shard: usize, now: Instant) -> Option<Instant> {
        let mut cx = self.lock(shard);
        while let Some((timer, code)) = cx.st.timers.pop_due(now) {
            match timer {
                Timer::Expiry => {
                    if cx.st.cases.get(&code).is_some_and(|c| c.is_open()) {
                        cx.apply(Change::Expired {
                            code,
                            at: chrono::Utc::now(),
                        });
                        cx.dispatch();
                    }
                }
                // Purging after retention emits nothing.
                Timer::Purge => cx.apply(Change::Purged { code }),
                Timer::Orphan => cx.check_orphan(code, now),
                Timer::Offer => cx.check_offer(code),
                Timer::Sla(kind) => {
                    if cx.sla_missed(&code, kind) {
                        cx.apply(Change::SlaBreached {
                            code,
                            kind,
                            at: chrono::Utc::now(),
                        });
                    }
                }
            }
        }
        cx.tell_positions(now);
        cx.push_stats(now);
        [cx.st.timers.next(), cx.st.lines.due(), cx.st.stats_due]
            .into_iter()
            .flatten()
            .min()
    }

    /// On a cluster node that does not decide the company: tells its own
    /// connections their coalesced positions and live numbers as they
    /// fall due, leaving the deadlines that change cases to the node that
    /// decides it; returns when to come back.
    pub fn run_local_timers(&self, shard: usize, now: Instant) -> Option<Instant> {
        let mut cx = self.lock(shard);
        cx.tell_positions(now);
        cx.push_stats(now);
        [cx.st.lines.due(), cx.st.stats_due]
            .into_iter()
            .flatten()
            .min()
    }

    /// Resolves when one company's deadlines changed (an earlier one
    /// appeared, or positions became due).
    pub async fn timers_changed(&self, shard: usize) {
        self.shared.shards[shard].timers_changed.notified().await;
    }
}
