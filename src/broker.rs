//! The broker's state and every command that changes it. `Broker` is a
//! cheap handle to `Arc<Shared>` → `Mutex<State>`; methods are synchronous,
//! lock, change, queue what must be sent (never waiting), and return. They
//! never await, so no lock is held across an `.await`.
//!
//! Every change to a case goes through `State::commit`, the one place that
//! stamps `updated_at`, pushes `status` to the seats and emits the company's
//! queue event. A journal or a shared backend attaches there.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::case::{
    CaseView, Customer, CustomerCaseView, Seats, SessionCode, Source, Status, SupporterView,
    Terminal, format_time, status,
};
use crate::config::Config;
use crate::directory::{Agent, Directory};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::outbox::{Outbox, OutboxRx};
use crate::protocol::SignalFrom;
use crate::protocol::{
    Action, AgentStatus, ChatLine, CreateCase, EndReason, From, Id, PresenceState, RequestHelp,
    Role, ServerMsg, StreamPos, Via, close,
};
use crate::queue::{Filter, Replay, Stream};

mod assign;
use assign::{AUTO, AgentState, Key, Lines};

/// Field limits, in Unicode characters (PRODUCT.md).
pub mod limits {
    pub const NAME: usize = 100;
    pub const DESCRIPTION: usize = 4000;
    pub const CUSTOMER_NAME: usize = 100;
    pub const EMAIL: usize = 254;
    pub const CHAT: usize = 4000;
    /// Bytes of the serialised `data` of a `signal`.
    pub const SIGNAL_BYTES: usize = 32 * 1024;
    /// Chat lines kept per case.
    pub const TRANSCRIPT: usize = 1000;
    /// The largest page of `GET /v1/cases`.
    pub const PAGE_MAX: usize = 1000;
    /// Resume tokens are this many random bytes (128 bits).
    pub const RESUME_TOKEN_BYTES: usize = 16;
}

/// The locked state. When a command is done with it, waiting customers are
/// told their new line positions, once, after every change the command made
/// (including automatic assignment), so nobody is told a position that
/// lasted no time.
struct Locked<'a>(MutexGuard<'a, State>);

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.0
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.0.flush_positions();
    }
}

/// A connection's id, unique for the broker's life.
pub type ConnId = u64;

/// A handle to the broker. Clone it freely.
#[derive(Clone)]
pub struct Broker {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    dir: Directory,
    config: Config,
    metrics: Metrics,
    /// Wakes the timer task when a deadline earlier than all others appears.
    timers_changed: Notify,
}

/// One seat of a case: the connections that hold it.
#[derive(Default)]
struct Seat {
    conns: Vec<(ConnId, Outbox)>,
}

impl Seat {
    fn occupied(&self) -> bool {
        !self.conns.is_empty()
    }

    fn holds(&self, conn: ConnId) -> bool {
        self.conns.iter().any(|(c, _)| *c == conn)
    }

    fn add(&mut self, conn: ConnId, outbox: &Outbox) {
        if !self.holds(conn) {
            self.conns.push((conn, outbox.clone()));
        }
    }

    fn remove(&mut self, conn: ConnId) -> bool {
        let before = self.conns.len();
        self.conns.retain(|(c, _)| *c != conn);
        before != self.conns.len()
    }

    fn push(&self, msg: &ServerMsg) {
        if self.conns.is_empty() {
            return;
        }
        let frame = axum::extract::ws::Utf8Bytes::from(msg.to_text(None));
        for (_, outbox) in &self.conns {
            outbox.push_shared(frame.clone());
        }
    }
}

/// A case as the broker holds it. Its status is derived, never stored.
struct CaseEntry {
    code: SessionCode,
    company: String,
    group: String,
    name: String,
    description: String,
    customer: Customer,
    source: Source,
    created_by: String,
    assignee: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    assigned_at: Option<DateTime<Utc>>,
    /// Who made the current assignment: an agent id, or `auto`.
    assigned_by: Option<String>,
    /// The assignee who last gave the case back to the line; automation
    /// prefers anyone else.
    returned_by: Option<String>,
    /// The current assignee has sat in the session (orphan rule).
    assignee_joined: bool,
    /// Creation order, the line's sort key.
    line_seq: u64,
    /// The agent whose load counts this case (reconciled in `commit`).
    counted_for: Option<String>,
    /// In its group's waiting line (reconciled in `commit`).
    in_line: bool,
    /// The last `queue` position told to the customer.
    last_position: Option<usize>,
    expires_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
    closed_by: Option<String>,
    terminal: Option<Terminal>,
    customer_seat: Seat,
    supporter_seat: Seat,
    ever_occupied: bool,
    resume_token: Option<String>,
    /// When the customer seat was last left, for `seat_grace`.
    customer_left: Option<Instant>,
    transcript: VecDeque<ChatLine>,
    expiry_deadline: Instant,
    purge_deadline: Option<Instant>,
    /// The last `status` push sent to the seats (with the assignee), so
    /// that one is sent only when something in it changed.
    last_pushed: Option<(Status, bool, bool, Option<String>)>,
}

impl CaseEntry {
    fn status(&self) -> Status {
        status(
            self.terminal,
            Seats {
                customer: self.customer_seat.occupied(),
                supporter: self.supporter_seat.occupied(),
                ever_occupied: self.ever_occupied,
            },
        )
    }

    fn is_open(&self) -> bool {
        self.terminal.is_none()
    }

    fn view(&self) -> CaseView {
        CaseView {
            code: self.code.clone(),
            company: self.company.clone(),
            group: self.group.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            customer: self.customer.clone(),
            source: self.source,
            created_by: self.created_by.clone(),
            assignee: self.assignee.clone(),
            status: self.status(),
            customer_connected: self.customer_seat.occupied(),
            supporter_connected: self.supporter_seat.occupied(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            assigned_at: self.assigned_at,
            assigned_by: self.assigned_by.clone(),
            expires_at: self.expires_at,
            closed_at: self.closed_at,
            closed_by: self.closed_by.clone(),
        }
    }

    /// The assignee as customers see it: its display name.
    fn supporter(&self, dir: &Directory) -> Option<SupporterView> {
        self.assignee.as_ref().map(|id| SupporterView {
            name: dir
                .company(&self.company)
                .and_then(|c| c.agent(id))
                .map_or_else(|| id.clone(), |a| a.name.clone()),
        })
    }

    fn customer_view(&self, dir: &Directory) -> CustomerCaseView {
        let supporter = self.supporter(dir);
        CustomerCaseView {
            code: self.code.clone(),
            status: self.status(),
            name: self.name.clone(),
            customer_connected: self.customer_seat.occupied(),
            supporter_connected: self.supporter_seat.occupied(),
            supporter,
            expires_at: self.expires_at,
        }
    }

    /// True when `agent` may see this case at all.
    fn visible_to(&self, agent: &Agent) -> bool {
        self.company == agent.company && agent.sees(&self.group)
    }
}

/// A live connection.
struct Conn {
    outbox: Outbox,
    role: Role,
    agent: Option<Arc<Agent>>,
    /// The customer's one case.
    case: Option<SessionCode>,
    /// The sessions an agent connection sits in.
    sessions: HashSet<SessionCode>,
    /// The company whose stream this connection is subscribed to.
    subscribed: Option<String>,
}

/// Which deadline a timer entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Expiry,
    Purge,
    Orphan,
}

#[derive(Default)]
struct State {
    cases: HashMap<SessionCode, CaseEntry>,
    conns: HashMap<ConnId, Conn>,
    streams: HashMap<String, Stream>,
    agents: HashMap<Key, AgentState>,
    lines: Lines,
    /// Round robin: the config index of the last agent picked, per line.
    rr: HashMap<Key, usize>,
    /// Counts automatic assignments, to order agents by their last one.
    auto_counter: u64,
    /// Expiry, purge and orphan deadlines, earliest first.
    timers: BTreeSet<(Instant, Timer, SessionCode)>,
    next_conn: ConnId,
    next_case_seq: u64,
    /// Lines whose positions changed during the current command.
    dirty_lines: HashSet<Key>,
}

/// Filters and paging of `GET /v1/cases`.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub status: Option<Status>,
    pub group: Option<String>,
    pub assignee: Option<String>,
    pub limit: usize,
    pub cursor: Option<String>,
}

/// One page of cases.
pub struct Page {
    pub cases: Vec<CaseView>,
    pub next_cursor: Option<String>,
}

/// Who acts on a case: an agent, or a customer through its connection.
#[derive(Clone, Copy)]
pub enum Actor<'a> {
    Agent(&'a Agent),
    Customer(ConnId),
}

fn check_len(field: &str, value: &str, max: usize) -> Result<()> {
    if value.chars().count() > max {
        Err(Error::too_large(format!(
            "{field} is longer than {max} characters"
        )))
    } else {
        Ok(())
    }
}

fn check_customer(c: &Customer) -> Result<()> {
    if let Some(name) = &c.name {
        check_len("customer.name", name, limits::CUSTOMER_NAME)?;
    }
    if let Some(email) = &c.email {
        check_len("customer.email", email, limits::EMAIL)?;
        if !email.contains('@') {
            return Err(Error::bad_request("customer.email is not an email address"));
        }
    }
    Ok(())
}

/// Parses a code from any client path.
pub fn parse_code(input: &str) -> Result<SessionCode> {
    SessionCode::parse(input)
        .ok_or_else(|| Error::bad_request("code must be s followed by 8 or 11 digits"))
}

fn new_resume_token() -> String {
    hex::encode(rand::random::<[u8; limits::RESUME_TOKEN_BYTES]>())
}

fn add_duration(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Broker {
    /// A broker for a validated config.
    pub fn new(config: Config, metrics: Metrics) -> Broker {
        let dir = Directory::new(&config);
        let mut state = State::default();
        for company in dir.companies() {
            for agent in &company.agents {
                state.agents.insert(
                    (company.id.clone(), agent.id.clone()),
                    AgentState::new(agent.clone()),
                );
            }
            state
                .streams
                .insert(company.id.clone(), Stream::new(config.history_events));
        }
        Broker {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                dir,
                config,
                metrics,
                timers_changed: Notify::new(),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub fn directory(&self) -> &Directory {
        &self.shared.dir
    }

    /// The lock. A panic while it was held leaves the state as the panicking
    /// command left it; serving on beats taking every other case down.
    fn state(&self) -> Locked<'_> {
        Locked(
            self.shared
                .state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// The agent a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Agent>> {
        self.shared.dir.authenticate(token)
    }

    /// Registers a connection after its `hello`; returns its id and the
    /// receiving end of its outbox.
    pub fn connect(&self, role: Role, agent: Option<Arc<Agent>>) -> (ConnId, Outbox, OutboxRx) {
        let config = &self.shared.config;
        let (outbox, rx) = Outbox::new(config.outbox_messages, config.outbox_bytes);
        let mut st = self.state();
        st.next_conn += 1;
        let id = st.next_conn;
        st.conns.insert(
            id,
            Conn {
                outbox: outbox.clone(),
                role,
                agent,
                case: None,
                sessions: HashSet::new(),
                subscribed: None,
            },
        );
        if let Some(agent) = &st.conns[&id].agent.clone() {
            st.agent_connected(&self.shared, agent);
        }
        drop(st);
        self.shared.metrics.connection_opened(role);
        (id, outbox, rx)
    }

    /// Forgets a connection: it leaves every seat at once (the status
    /// follows) and its subscription.
    pub fn disconnect(&self, conn: ConnId) {
        let mut st = self.state();
        let Some(c) = st.conns.remove(&conn) else {
            return;
        };
        if let Some(company) = &c.subscribed
            && let Some(stream) = st.streams.get_mut(company)
        {
            stream.unsubscribe(conn);
        }
        if let Some(code) = &c.case {
            st.leave_customer_seat(&self.shared, code, conn);
        }
        for code in &c.sessions {
            if let Some(e) = st.cases.get_mut(code)
                && e.supporter_seat.remove(conn)
            {
                st.commit(&self.shared, code, Action::Updated);
            }
        }
        if let Some(agent) = &c.agent {
            st.agent_disconnected(&self.shared, agent);
        }
        drop(st);
        self.shared.metrics.connection_closed(c.role);
    }

    /// `create_case` and `POST /v1/cases`.
    pub fn create_case(&self, agent: &Agent, req: CreateCase) -> Result<CaseView> {
        let dir = &self.shared.dir;
        let company = dir.company(&agent.company).ok_or_else(Error::not_found)?;
        if !company.has_group(&req.group) {
            return Err(Error::bad_request(format!(
                "unknown group \"{}\"",
                req.group
            )));
        }
        if !agent.sees(&req.group) {
            return Err(Error::forbidden("you are not a member of this group"));
        }
        let name = req.name.unwrap_or_default();
        check_len("name", &name, limits::NAME)?;
        let description = req.description.unwrap_or_default();
        check_len("description", &description, limits::DESCRIPTION)?;
        let customer = req.customer.unwrap_or_default();
        check_customer(&customer)?;
        if let Some(target) = &req.assignee {
            let target = self.assignable(agent, &req.group, target)?;
            if !agent.admin && target.id != agent.id && !agent.member_of(&req.group) {
                return Err(Error::forbidden("you may not assign cases of this group"));
            }
        }
        let mut st = self.state();
        let code = st.insert_case(
            &self.shared,
            NewCase {
                company: agent.company.clone(),
                group: req.group,
                name,
                description,
                customer,
                source: Source::Manual,
                created_by: agent.id.clone(),
                assigned_by: req.assignee.as_ref().map(|_| agent.id.clone()),
                assignee: req.assignee,
            },
        );
        st.commit(&self.shared, &code, Action::Created);
        st.dispatch(&self.shared, &agent.company);
        Ok(st.cases[&code].view())
    }

    /// `request_help` (with the customer's connection, which takes the seat)
    /// and `POST /v1/help` (without; the case stays `new`). Returns the case
    /// in the customer's view and, with a connection, the resume token.
    pub fn request_help(
        &self,
        conn: Option<ConnId>,
        req: RequestHelp,
    ) -> Result<(CustomerCaseView, Option<String>)> {
        let dir = &self.shared.dir;
        let module = dir
            .module(&req.module)
            .ok_or_else(|| Error::unauthorized("unknown module key"))?;
        let customer = Customer {
            name: req.name,
            email: req.email,
        };
        check_customer(&customer)?;
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
        let mut st = self.state();
        if let Some(conn) = conn {
            st.check_customer_free(conn)?;
        }
        let code = st.insert_case(
            &self.shared,
            NewCase {
                company: module.company.clone(),
                group: module.group.clone(),
                name: name.chars().take(limits::NAME).collect(),
                description,
                customer,
                source,
                created_by: "customer".into(),
                assigned_by: module.default_assignee.as_ref().map(|_| AUTO.to_string()),
                assignee: module.default_assignee.clone(),
            },
        );
        let token = conn.map(|conn| st.seat_customer(&code, conn, None));
        st.commit(&self.shared, &code, Action::Created);
        st.dispatch(&self.shared, &module.company);
        Ok((st.cases[&code].customer_view(dir), token))
    }

    /// Checks that `target` may be given a case of `group` by `by`.
    fn assignable(&self, by: &Agent, group: &str, target: &str) -> Result<Arc<Agent>> {
        let company = self
            .shared
            .dir
            .company(&by.company)
            .ok_or_else(Error::not_found)?;
        let agent = company
            .agent(target)
            .ok_or_else(|| Error::bad_request(format!("unknown agent \"{target}\"")))?;
        if !agent.member_of(group) {
            return Err(Error::forbidden(format!(
                "agent \"{target}\" is not a member of group \"{group}\""
            )));
        }
        Ok(agent.clone())
    }

    /// `assign`: gives a case to an agent, or back to the line with `None`.
    pub fn assign(&self, agent: &Agent, code: &str, assignee: Option<String>) -> Result<CaseView> {
        let code = parse_code(code)?;
        let mut st = self.state();
        let e = st.visible_case(&code, agent)?;
        let allowed = agent.admin
            || e.assignee.as_deref() == Some(agent.id.as_str())
            || (e.assignee.is_none() && agent.member_of(&e.group));
        if !allowed {
            return Err(Error::forbidden("you may not assign this case"));
        }
        if let Some(target) = &assignee {
            self.assignable(agent, &e.group, target)?;
        }
        if !e.is_open() {
            return Err(Error::conflict("the case is no longer open"));
        }
        if e.assignee == assignee {
            return Ok(e.view());
        }
        st.set_assignee(&self.shared, &code, assignee, Some(agent.id.clone()));
        st.commit(&self.shared, &code, Action::Updated);
        // The old assignee has room again, or the case waits in the line.
        st.dispatch(&self.shared, &agent.company);
        Ok(st.cases[&code].view())
    }

    /// An agent's `join`: takes the supporter seat, and the case when it is
    /// unassigned (or, for an admin with `takeover`, from its assignee).
    pub fn agent_join(
        &self,
        conn: ConnId,
        agent: &Agent,
        code: &str,
        takeover: bool,
    ) -> Result<CaseView> {
        let code = parse_code(code)?;
        let mut st = self.state();
        let e = st.visible_case(&code, agent)?;
        if !e.is_open() {
            return Err(Error::conflict("the case is no longer open"));
        }
        let current = e.assignee.clone();
        match current.as_deref() {
            None => st.set_assignee(
                &self.shared,
                &code,
                Some(agent.id.clone()),
                Some(agent.id.clone()),
            ),
            Some(id) if id == agent.id => {}
            Some(_) if takeover && agent.admin => st.set_assignee(
                &self.shared,
                &code,
                Some(agent.id.clone()),
                Some(agent.id.clone()),
            ),
            Some(_) if takeover => {
                return Err(Error::forbidden("only admins may take over a case"));
            }
            Some(other) => {
                return Err(Error::conflict(format!(
                    "the case is assigned to \"{other}\"; an admin may join with takeover"
                )));
            }
        }
        let outbox = st.conn(conn)?.outbox.clone();
        let e = st.cases.get_mut(&code).expect("checked above");
        e.supporter_seat.add(conn, &outbox);
        e.ever_occupied = true;
        e.assignee_joined = true;
        if let Some(c) = st.conns.get_mut(&conn) {
            c.sessions.insert(code.clone());
        }
        st.commit(&self.shared, &code, Action::Updated);
        if current.is_some_and(|prev| prev != agent.id) {
            // A takeover freed room for the previous assignee.
            st.dispatch(&self.shared, &agent.company);
        }
        Ok(st.cases[&code].view())
    }

    /// A customer's `join` by code. Every refusal that could tell whether a
    /// code exists is `not_found`.
    pub fn customer_join(
        &self,
        conn: ConnId,
        code: &str,
        name: Option<String>,
        resume_token: Option<String>,
    ) -> Result<(CustomerCaseView, String)> {
        let code = SessionCode::parse(code).ok_or_else(Error::not_found)?;
        if let Some(n) = &name {
            check_len("name", n, limits::CUSTOMER_NAME)?;
        }
        let grace = self.shared.config.seat_grace;
        let mut st = self.state();
        st.check_customer_free(conn)?;
        let e = st.cases.get_mut(&code).ok_or_else(Error::not_found)?;
        if !e.is_open() {
            return Err(Error::not_found());
        }
        let token_ok = match (&e.resume_token, &resume_token) {
            (Some(held), Some(given)) => bool::from(held.as_bytes().ct_eq(given.as_bytes())),
            _ => false,
        };
        let reserved = e.customer_seat.occupied()
            || e.customer_left.is_some_and(|left| left.elapsed() < grace);
        if reserved && !token_ok {
            return Err(Error::conflict(
                "the customer seat is taken; rejoin with your resume_token",
            ));
        }
        if let Some(n) = name
            && e.customer.name.as_deref().is_none_or(str::is_empty)
            && !n.is_empty()
        {
            e.customer.name = Some(n);
        }
        let keep = if token_ok { resume_token } else { None };
        let token = st.seat_customer(&code, conn, keep);
        st.commit(&self.shared, &code, Action::Updated);
        Ok((st.cases[&code].customer_view(&self.shared.dir), token))
    }

    /// `leave`: a connection gives up its seat. Agents name the code;
    /// customers leave their one case.
    pub fn leave(&self, conn: ConnId, code: Option<&str>) -> Result<SessionCode> {
        let mut st = self.state();
        let c = st.conn(conn)?;
        match c.role {
            Role::Customer => {
                let code = c
                    .case
                    .clone()
                    .ok_or_else(|| Error::conflict("you are not in a session"))?;
                if let Some(c) = st.conns.get_mut(&conn) {
                    c.case = None;
                }
                st.leave_customer_seat(&self.shared, &code, conn);
                Ok(code)
            }
            Role::Agent => {
                let code =
                    parse_code(code.ok_or_else(|| Error::bad_request("missing field `code`"))?)?;
                let in_session = st
                    .conns
                    .get_mut(&conn)
                    .is_some_and(|c| c.sessions.remove(&code));
                if !in_session {
                    return Err(Error::conflict("you are not in this session"));
                }
                if let Some(e) = st.cases.get_mut(&code)
                    && e.supporter_seat.remove(conn)
                {
                    st.commit(&self.shared, &code, Action::Updated);
                }
                Ok(code)
            }
        }
    }

    /// `close`: by the assignee, the creator or an admin; customers close
    /// the case they requested.
    pub fn close(
        &self,
        actor: Actor<'_>,
        code: Option<&str>,
    ) -> Result<(CaseView, CustomerCaseView)> {
        let mut st = self.state();
        let (code, closed_by) = match actor {
            Actor::Agent(agent) => {
                let code =
                    parse_code(code.ok_or_else(|| Error::bad_request("missing field `code`"))?)?;
                let e = st.visible_case(&code, agent)?;
                let allowed = agent.admin
                    || e.created_by == agent.id
                    || e.assignee.as_deref() == Some(agent.id.as_str());
                if !allowed {
                    return Err(Error::forbidden(
                        "only the assignee, the creator or an admin may close this case",
                    ));
                }
                (code, agent.id.clone())
            }
            Actor::Customer(conn) => {
                let code = st
                    .conn(conn)?
                    .case
                    .clone()
                    .ok_or_else(|| Error::conflict("you are not in a session"))?;
                let e = st.cases.get(&code).ok_or_else(Error::not_found)?;
                if e.created_by != "customer" {
                    return Err(Error::forbidden(
                        "only a case you requested may be closed by you",
                    ));
                }
                (code, "customer".to_string())
            }
        };
        let e = st.cases.get_mut(&code).ok_or_else(Error::not_found)?;
        if !e.is_open() {
            return Err(Error::conflict("the case is not open"));
        }
        e.terminal = Some(Terminal::Closed);
        e.closed_at = Some(Utc::now());
        e.closed_by = Some(closed_by);
        let company = e.company.clone();
        st.finish(&self.shared, &code, EndReason::Closed);
        st.dispatch(&self.shared, &company);
        let e = &st.cases[&code];
        Ok((e.view(), e.customer_view(&self.shared.dir)))
    }

    /// `delete`: by an admin, the creator or the assignee, in any state.
    pub fn delete(&self, agent: &Agent, code: &str) -> Result<SessionCode> {
        let code = parse_code(code)?;
        let mut st = self.state();
        let e = st.visible_case(&code, agent)?;
        let allowed = agent.admin
            || e.created_by == agent.id
            || e.assignee.as_deref() == Some(agent.id.as_str());
        if !allowed {
            return Err(Error::forbidden(
                "only an admin, the creator or the assignee may delete this case",
            ));
        }
        st.end_seats(&code, EndReason::Deleted, true);
        st.commit(&self.shared, &code, Action::Deleted);
        st.remove_case(&code);
        st.dispatch(&self.shared, &agent.company);
        Ok(code)
    }

    /// `presence`: an agent's availability, shared by all its connections.
    pub fn set_presence(&self, agent: &Agent, state: PresenceState) {
        self.state().set_presence(&self.shared, agent, state);
    }

    /// `GET /v1/agents`: the agents of the caller's company.
    pub fn agents(&self, agent: &Agent) -> Vec<AgentStatus> {
        self.state().agent_statuses(&self.shared, agent)
    }

    /// `chat` from a seated connection to the other seat. Kept in the
    /// transcript.
    pub fn chat(&self, conn: ConnId, code: Option<&str>, text: String) -> Result<SessionCode> {
        check_len("text", &text, limits::CHAT)?;
        let mut st = self.state();
        let (code, role, name) = st.seated(conn, code)?;
        let e = st.cases.get_mut(&code).ok_or_else(Error::not_found)?;
        let name = match role {
            Role::Agent => name,
            Role::Customer => e.customer.name.clone(),
        };
        let line = ChatLine {
            from: From { role, name },
            text,
            at: format_time(&Utc::now()),
        };
        let other = match role {
            Role::Agent => &e.customer_seat,
            Role::Customer => &e.supporter_seat,
        };
        other.push(&ServerMsg::Chat {
            code: code.clone(),
            line: line.clone(),
        });
        if e.transcript.len() == limits::TRANSCRIPT {
            e.transcript.pop_front();
        }
        e.transcript.push_back(line);
        Ok(code)
    }

    /// `signal`: opaque data to the other seat, not kept.
    pub fn signal(&self, conn: ConnId, code: Option<&str>, data: Value) -> Result<SessionCode> {
        let size = serde_json::to_vec(&data)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > limits::SIGNAL_BYTES {
            return Err(Error::too_large(format!(
                "signal data is larger than {} bytes",
                limits::SIGNAL_BYTES
            )));
        }
        let st = self.state();
        let (code, role, _) = st.seated(conn, code)?;
        let e = st.cases.get(&code).ok_or_else(Error::not_found)?;
        let other = match role {
            Role::Agent => &e.customer_seat,
            Role::Customer => &e.supporter_seat,
        };
        other.push(&ServerMsg::Signal {
            code: code.clone(),
            from: SignalFrom { role },
            data,
        });
        Ok(code)
    }

    /// `subscribe`: registers the connection on its company's stream and
    /// queues, in the same critical section, either `resumed` and the missed
    /// events or a `snapshot`. Nothing can slip in between.
    pub fn subscribe(
        &self,
        conn: ConnId,
        agent: &Agent,
        group: Option<String>,
        resume: Option<StreamPos>,
        id: Option<&Id>,
    ) -> Result<()> {
        if let Some(g) = &group {
            let company = self
                .shared
                .dir
                .company(&agent.company)
                .ok_or_else(Error::not_found)?;
            if !company.has_group(g) {
                return Err(Error::bad_request(format!("unknown group \"{g}\"")));
            }
            if !agent.sees(g) {
                return Err(Error::forbidden("you are not a member of this group"));
            }
        }
        let filter = Filter {
            groups: (!agent.admin).then(|| agent.group_set.clone()),
            only: group,
        };
        let window = self.shared.config.snapshot_window;
        let mut st = self.state();
        let outbox = st.conn(conn)?.outbox.clone();
        let st = &mut *st;
        let stream = st
            .streams
            .get_mut(&agent.company)
            .ok_or_else(Error::not_found)?;
        let replay = match &resume {
            Some(pos) => stream.replay(&pos.epoch, pos.seq, &filter),
            None => Replay::Snapshot,
        };
        let (epoch, seq) = (stream.epoch().to_string(), stream.seq());
        match replay {
            Replay::Events(events) => {
                if outbox.push(&ServerMsg::Resumed { epoch, seq }, id) {
                    for frame in events {
                        if !outbox.push_shared(frame) {
                            break;
                        }
                    }
                }
            }
            Replay::Snapshot => {
                let horizon = Utc::now() - chrono::Duration::from_std(window).unwrap_or_default();
                let mut cases: Vec<&CaseEntry> = st
                    .cases
                    .values()
                    .filter(|e| e.company == agent.company && filter.sees(&e.group))
                    .filter(|e| match e.terminal {
                        None => true,
                        Some(Terminal::Closed) => e.closed_at.is_some_and(|t| t >= horizon),
                        Some(Terminal::Expired) => e.expires_at >= horizon,
                    })
                    .collect();
                cases.sort_by(|a, b| (a.created_at, &a.code).cmp(&(b.created_at, &b.code)));
                let cases = cases.into_iter().map(CaseEntry::view).collect();
                outbox.push(&ServerMsg::Snapshot { epoch, seq, cases }, id);
            }
        }
        stream.subscribe(conn, filter, outbox);
        if let Some(c) = st.conns.get_mut(&conn) {
            c.subscribed = Some(agent.company.clone());
        }
        Ok(())
    }

    /// `unsubscribe`.
    pub fn unsubscribe(&self, conn: ConnId) {
        let mut st = self.state();
        let company = st.conns.get_mut(&conn).and_then(|c| c.subscribed.take());
        if let Some(company) = company
            && let Some(stream) = st.streams.get_mut(&company)
        {
            stream.unsubscribe(conn);
        }
    }

    /// `GET /v1/cases/{code}`.
    pub fn get_case(&self, agent: &Agent, code: &str) -> Result<CaseView> {
        let code = parse_code(code)?;
        let mut st = self.state();
        Ok(st.visible_case(&code, agent)?.view())
    }

    /// `GET /v1/cases/{code}/transcript`: the kept chat lines, oldest first.
    pub fn transcript(&self, agent: &Agent, code: &str) -> Result<(SessionCode, Vec<ChatLine>)> {
        let code = parse_code(code)?;
        let mut st = self.state();
        let e = st.visible_case(&code, agent)?;
        Ok((code, e.transcript.iter().cloned().collect()))
    }

    /// `GET /v1/cases`: the caller's visible cases, oldest first, paged.
    pub fn list_cases(&self, agent: &Agent, q: &ListQuery) -> Result<Page> {
        let after = match &q.cursor {
            None => None,
            Some(c) => Some(decode_cursor(c)?),
        };
        let limit = q.limit.clamp(1, limits::PAGE_MAX);
        let st = self.state();
        let mut rows: Vec<(i64, &SessionCode, &CaseEntry)> = st
            .cases
            .values()
            .filter(|e| e.visible_to(agent))
            .filter(|e| q.group.as_deref().is_none_or(|g| g == e.group))
            .filter(|e| q.assignee.is_none() || e.assignee == q.assignee)
            .filter(|e| q.status.is_none_or(|s| s == e.status()))
            .map(|e| (e.created_at.timestamp_millis(), &e.code, e))
            .filter(|(t, code, _)| {
                after
                    .as_ref()
                    .is_none_or(|(at, ac)| (*t, code.digits()) > (*at, ac.as_str()))
            })
            .collect();
        rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = more
            .then(|| {
                rows.last()
                    .map(|(t, code, _)| format!("{t}.{}", code.digits()))
            })
            .flatten();
        Ok(Page {
            cases: rows.into_iter().map(|(_, _, e)| e.view()).collect(),
            next_cursor,
        })
    }

    /// Counts cases by status, for the metrics gauge (computed when scraped,
    /// since statuses are derived).
    pub fn count_by_status(&self) -> Vec<(Status, usize)> {
        let st = self.state();
        let mut counts: HashMap<Status, usize> = HashMap::new();
        for e in st.cases.values() {
            *counts.entry(e.status()).or_default() += 1;
        }
        Status::ALL
            .into_iter()
            .map(|s| (s, counts.get(&s).copied().unwrap_or(0)))
            .collect()
    }

    /// Expires, purges and returns orphans as they fall due; returns the
    /// next deadline.
    pub fn run_timers(&self, now: Instant) -> Option<Instant> {
        let mut st = self.state();
        while let Some((at, timer, code)) = st.timers.first().cloned() {
            if at > now {
                return Some(at);
            }
            st.timers.pop_first();
            match timer {
                Timer::Expiry => {
                    if let Some(e) = st.cases.get_mut(&code)
                        && e.is_open()
                    {
                        e.terminal = Some(Terminal::Expired);
                        let company = e.company.clone();
                        st.finish(&self.shared, &code, EndReason::Expired);
                        st.dispatch(&self.shared, &company);
                    }
                }
                // Purging after retention emits nothing.
                Timer::Purge => st.remove_case(&code),
                Timer::Orphan => st.check_orphan(&self.shared, &code, now),
            }
        }
        None
    }

    /// Resolves when a deadline earlier than the known ones was added.
    pub async fn timers_changed(&self) {
        self.shared.timers_changed.notified().await;
    }
}

fn decode_cursor(c: &str) -> Result<(i64, String)> {
    let bad = || Error::bad_request("invalid cursor");
    let (t, digits) = c.split_once('.').ok_or_else(bad)?;
    let t = t.parse().map_err(|_| bad())?;
    if digits.len() > 11 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok((t, digits.to_string()))
}

/// What a new case starts with.
struct NewCase {
    company: String,
    group: String,
    name: String,
    description: String,
    customer: Customer,
    source: Source,
    created_by: String,
    assignee: Option<String>,
    assigned_by: Option<String>,
}

impl State {
    fn conn(&self, conn: ConnId) -> Result<&Conn> {
        self.conns
            .get(&conn)
            .ok_or_else(|| Error::new(crate::protocol::ErrorCode::Unavailable, "connection closed"))
    }

    /// The case if `agent` may see it; `not_found` otherwise, so a case of
    /// another company or group is indistinguishable from none.
    fn visible_case(&mut self, code: &SessionCode, agent: &Agent) -> Result<&mut CaseEntry> {
        match self.cases.get_mut(code) {
            Some(e) if e.visible_to(agent) => Ok(e),
            _ => Err(Error::not_found()),
        }
    }

    fn check_customer_free(&self, conn: ConnId) -> Result<()> {
        if self.conn(conn)?.case.is_some() {
            return Err(Error::conflict("this connection already serves a case"));
        }
        Ok(())
    }

    /// The case `conn` sits in: for agents the named one, for customers
    /// their one case. Returns the code, the role and the agent's name.
    fn seated(
        &self,
        conn: ConnId,
        code: Option<&str>,
    ) -> Result<(SessionCode, Role, Option<String>)> {
        let c = self.conn(conn)?;
        match c.role {
            Role::Customer => {
                let code = c
                    .case
                    .clone()
                    .ok_or_else(|| Error::conflict("you are not in a session"))?;
                Ok((code, Role::Customer, None))
            }
            Role::Agent => {
                let code =
                    parse_code(code.ok_or_else(|| Error::bad_request("missing field `code`"))?)?;
                if !c.sessions.contains(&code) {
                    let agent = c.agent.as_deref().ok_or_else(Error::not_found)?;
                    return match self.cases.get(&code) {
                        Some(e) if e.visible_to(agent) => {
                            Err(Error::conflict("join the session first"))
                        }
                        _ => Err(Error::not_found()),
                    };
                }
                Ok((code, Role::Agent, c.agent.as_ref().map(|a| a.name.clone())))
            }
        }
    }

    fn insert_case(&mut self, shared: &Shared, new: NewCase) -> SessionCode {
        let config = &shared.config;
        let mut code = SessionCode::random(config.code_digits);
        while self.cases.contains_key(&code) {
            code = SessionCode::random(config.code_digits);
        }
        let now = Utc::now();
        let deadline = Instant::now() + config.case_ttl;
        let assigned_at = new.assignee.as_ref().map(|_| now);
        self.next_case_seq += 1;
        let orphan_check = new.assigned_by.as_deref() == Some(AUTO)
            && new
                .assignee
                .as_ref()
                .is_some_and(|a| !self.is_online(&new.company, a));
        self.cases.insert(
            code.clone(),
            CaseEntry {
                code: code.clone(),
                company: new.company,
                group: new.group,
                name: new.name,
                description: new.description,
                customer: new.customer,
                source: new.source,
                created_by: new.created_by,
                assignee: new.assignee,
                created_at: now,
                updated_at: now,
                assigned_at,
                assigned_by: new.assigned_by,
                returned_by: None,
                assignee_joined: false,
                line_seq: self.next_case_seq,
                counted_for: None,
                in_line: false,
                last_position: None,
                expires_at: add_duration(now, config.case_ttl),
                closed_at: None,
                closed_by: None,
                terminal: None,
                customer_seat: Seat::default(),
                supporter_seat: Seat::default(),
                ever_occupied: false,
                resume_token: None,
                customer_left: None,
                transcript: VecDeque::new(),
                expiry_deadline: deadline,
                purge_deadline: None,
                last_pushed: None,
            },
        );
        self.add_timer(shared, Timer::Expiry, deadline, &code);
        if orphan_check {
            self.add_timer(
                shared,
                Timer::Orphan,
                Instant::now() + config.orphan_timeout,
                &code,
            );
        }
        code
    }

    fn is_online(&self, company: &str, agent: &str) -> bool {
        self.agents
            .get(&(company.to_string(), agent.to_string()))
            .is_some_and(|a| a.conns > 0)
    }

    /// Adds a deadline; wakes the timer task when it is the earliest.
    fn add_timer(&mut self, shared: &Shared, timer: Timer, at: Instant, code: &SessionCode) {
        let earliest = self.timers.first().is_none_or(|(first, _, _)| at < *first);
        self.timers.insert((at, timer, code.clone()));
        if earliest {
            shared.timers_changed.notify_one();
        }
    }

    /// Seats a customer connection; returns the resume token it must use,
    /// `keep` when it presented the valid one, a fresh one otherwise.
    fn seat_customer(&mut self, code: &SessionCode, conn: ConnId, keep: Option<String>) -> String {
        let Some(c) = self.conns.get_mut(&conn) else {
            return String::new();
        };
        c.case = Some(code.clone());
        let outbox = c.outbox.clone();
        let e = self
            .cases
            .get_mut(code)
            .expect("seat_customer on a held case");
        let token = keep.unwrap_or_else(new_resume_token);
        e.resume_token = Some(token.clone());
        e.customer_seat.add(conn, &outbox);
        e.customer_left = None;
        e.ever_occupied = true;
        token
    }

    fn leave_customer_seat(&mut self, shared: &Shared, code: &SessionCode, conn: ConnId) {
        if let Some(e) = self.cases.get_mut(code)
            && e.customer_seat.remove(conn)
        {
            if !e.customer_seat.occupied() {
                e.customer_left = Some(Instant::now());
                e.last_position = None;
            }
            self.commit(shared, code, Action::Updated);
        }
    }

    /// Changes the assignee (`by`: an agent id or `auto`); the previous
    /// assignee's connections in the session get `ended` with reason
    /// `reassigned`. A case given back to the line remembers who had it.
    fn set_assignee(
        &mut self,
        shared: &Shared,
        code: &SessionCode,
        assignee: Option<String>,
        by: Option<String>,
    ) {
        self.end_seats(code, EndReason::Reassigned, false);
        let Some(e) = self.cases.get_mut(code) else {
            return;
        };
        if assignee.is_none() {
            e.returned_by = e.assignee.take();
        }
        e.assigned_at = assignee.as_ref().map(|_| Utc::now());
        e.assignee_joined = false;
        let orphan_check = by.as_deref() == Some(AUTO);
        e.assigned_by = assignee.as_ref().and(by);
        e.assignee = assignee;
        let (company, assignee) = (e.company.clone(), e.assignee.clone());
        if orphan_check
            && let Some(a) = assignee
            && !self.is_online(&company, &a)
        {
            let at = Instant::now() + shared.config.orphan_timeout;
            self.add_timer(shared, Timer::Orphan, at, code);
        }
    }

    /// Sends `ended` to the supporter seat, and with `customers` to the
    /// customer seat too (whose connections are then closed with 1000), and
    /// empties those seats.
    fn end_seats(&mut self, code: &SessionCode, reason: EndReason, customers: bool) {
        let Some(e) = self.cases.get_mut(code) else {
            return;
        };
        let ended = ServerMsg::Ended {
            code: code.clone(),
            reason,
        };
        let supporters = std::mem::take(&mut e.supporter_seat.conns);
        let customer_conns = if customers {
            std::mem::take(&mut e.customer_seat.conns)
        } else {
            Vec::new()
        };
        let frame = axum::extract::ws::Utf8Bytes::from(ended.to_text(None));
        for (conn, outbox) in &supporters {
            outbox.push_shared(frame.clone());
            if let Some(c) = self.conns.get_mut(conn) {
                c.sessions.remove(code);
            }
        }
        for (conn, outbox) in &customer_conns {
            outbox.push_shared(frame.clone());
            outbox.close(close::NORMAL, "case ended");
            if let Some(c) = self.conns.get_mut(conn) {
                c.case = None;
            }
        }
    }

    /// A case reached a terminal state: end its sessions, stop its expiry
    /// timer, start its retention timer, and emit the change.
    fn finish(&mut self, shared: &Shared, code: &SessionCode, reason: EndReason) {
        self.end_seats(code, reason, true);
        let purge_at = Instant::now() + shared.config.retention;
        if let Some(e) = self.cases.get_mut(code) {
            let key = (e.expiry_deadline, Timer::Expiry, code.clone());
            e.purge_deadline = Some(purge_at);
            self.timers.remove(&key);
        }
        self.add_timer(shared, Timer::Purge, purge_at, code);
        self.commit(shared, code, Action::Updated);
    }

    fn remove_case(&mut self, code: &SessionCode) {
        if let Some(e) = self.cases.remove(code) {
            self.timers
                .remove(&(e.expiry_deadline, Timer::Expiry, code.clone()));
            if let Some(at) = e.purge_deadline {
                self.timers.remove(&(at, Timer::Purge, code.clone()));
            }
        }
    }

    /// The one mutation path: after any change to a case, stamp it, tell
    /// its seats when their status line changed, and emit the company's
    /// event. `Deleted` sends the case as it last was.
    fn commit(&mut self, shared: &Shared, code: &SessionCode, action: Action) {
        if let Some(line) = self.reconcile(code, action) {
            self.dirty_lines.insert(line);
        }
        let Some(e) = self.cases.get_mut(code) else {
            return;
        };
        if action != Action::Deleted {
            e.updated_at = Utc::now();
        }
        let view = e.view();
        let line = (
            view.status,
            view.customer_connected,
            view.supporter_connected,
            view.assignee.clone(),
        );
        if e.last_pushed.as_ref() != Some(&line) && action != Action::Deleted {
            e.last_pushed = Some(line.clone());
            let msg = ServerMsg::Status {
                code: code.clone(),
                status: line.0,
                customer_connected: line.1,
                supporter_connected: line.2,
                supporter: e.supporter(&shared.dir),
            };
            e.customer_seat.push(&msg);
            e.supporter_seat.push(&msg);
        }
        if let Some(stream) = self.streams.get_mut(&view.company) {
            stream.publish(action, &view);
            shared.metrics.event_emitted();
        }
    }
}
