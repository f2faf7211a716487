//! [`Locked::apply`], the one function that writes case records. Applying a
//! change keeps the company's indexes, waiting lines, agent loads and
//! deadlines in step with the record, and queues its effects: the
//! company's event, `status` to the seats, `ended`, chat, agent pushes.

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::case::{SessionCode, Status, Terminal};
use crate::protocol::{Action, ChatLine, EndReason, Role};

use super::change::{Change, Seat};
use super::effect::Effect;
use super::limits;
use super::record::{AssignedBy, Case, CaseRecord, Sla};
use super::shard::Locked;
use super::timers::{self, Timer};

/// The bookkeeping a change calls for once its record is written.
type Touch = (SessionCode, Action, Option<DateTime<Utc>>);

impl Locked<'_> {
    /// Applies one change.
    pub fn apply(&mut self, change: Change) {
        self.record(std::slice::from_ref(&change));
        if let Some((code, action, at)) = self.write(change) {
            self.touch(code, action, at);
        }
    }

    /// Applies the changes of one decision together: each case they touch
    /// gets one event (`created` if it was created among them) and one
    /// `status`, with its final state.
    pub fn apply_all(&mut self, changes: Vec<Change>) {
        self.record(&changes);
        let mut touches: Vec<Touch> = Vec::new();
        for change in changes {
            let Some((code, action, at)) = self.write(change) else {
                continue;
            };
            match touches.iter_mut().find(|t| t.0 == code) {
                Some(t) => t.2 = at.or(t.2),
                None => touches.push((code, action, at)),
            }
        }
        for (code, action, at) in touches {
            self.touch(code, action, at);
        }
    }

    /// Keeps a decision's changes for the sink: all of them for a cluster,
    /// the durable ones for a journal. Changes replayed or followed from
    /// another node are not kept again.
    fn record(&mut self, changes: &[Change]) {
        if self.shared.journaled && !self.st.replaying && !self.st.following {
            if self.shared.replicated {
                self.st.batches.push(changes.to_vec());
            } else if changes.iter().any(Change::durable) {
                let durable = changes.iter().filter(|c| c.durable()).cloned().collect();
                self.st.batches.push(durable);
            }
        }
        // What another node decided is not tracked here: a node that takes
        // a company over writes its first image whole.
        if self.shared.journaled && !self.st.following {
            self.st
                .dirty
                .extend(changes.iter().filter_map(Change::code));
        }
    }

    /// Writes one change to its record: the only writer of case records.
    /// Returns the bookkeeping still due, if any. A change about a case the
    /// shard does not hold does nothing.
    fn write(&mut self, change: Change) -> Option<Touch> {
        let code = match change {
            Change::AgentSet(rec) => {
                self.set_agent(&rec, false);
                return None;
            }
            Change::AgentRemoved { id } => {
                let rec = self.company.agent(&id)?.record();
                self.set_agent(&rec, true);
                return None;
            }
            Change::GroupSet(rec) => {
                self.set_group(&rec);
                return None;
            }
            Change::CompanySet(rec) => {
                self.set_company(&rec);
                return None;
            }
            Change::WebhookSet(rec) => {
                self.st.hooks.set_endpoint(*rec);
                self.hooks_changed();
                return None;
            }
            Change::WebhookQueued(d) => {
                self.st.hooks.queue(*d);
                self.hooks_changed();
                return None;
            }
            Change::WebhookSending { id, until } => {
                self.st.hooks.sending(id, until);
                return None;
            }
            Change::WebhookAttempted {
                id,
                status_code,
                outcome,
            } => {
                self.st.hooks.attempted(id, status_code, outcome);
                self.hooks_changed();
                return None;
            }
            Change::ModuleSet(rec) => {
                self.set_module(&rec.key, Some(&rec));
                return None;
            }
            Change::ModuleRemoved { key } => {
                self.set_module(&key, None);
                return None;
            }
            Change::AgentOnline { agent, conn } => {
                self.st.conns.entry(conn).or_default().online = true;
                self.agent_online(agent, conn);
                return None;
            }
            Change::AgentOffline { agent, conn } => {
                if let Some(s) = self.st.conns.get_mut(&conn) {
                    s.online = false;
                }
                self.forget_remote(&[conn]);
                self.agent_offline(agent, conn);
                return None;
            }
            Change::Presence { agent, state } => {
                let a = &mut self.st.agents[agent];
                if a.presence != state {
                    a.presence = state;
                    self.push_agent(agent);
                }
                return None;
            }
            ref c => c.code()?,
        };
        match change {
            Change::Created(rec) => Some(self.created(*rec)),
            Change::Assigned { to, by, at, .. } => {
                self.end_supporters(code, EndReason::Reassigned);
                let c = self.st.cases.get_mut(&code)?;
                c.ext.offer = None;
                let r = &mut c.rec;
                r.assignee = Some(to);
                r.assigned_at = Some(at);
                r.assigned_by = Some(by);
                r.assignee_joined = false;
                let group = r.group;
                if by == AssignedBy::Auto {
                    self.remember_pick(group, to);
                }
                if by == AssignedBy::Auto && !self.is_online(to) {
                    let when = Instant::now() + self.shared.config.orphan_timeout;
                    self.add_timer(when, Timer::Orphan, code);
                }
                Some((code, Action::Updated, Some(at)))
            }
            Change::Returned { at, .. } => {
                self.end_supporters(code, EndReason::Reassigned);
                let c = self.st.cases.get_mut(&code)?;
                let r = &mut c.rec;
                r.returned_by = r.assignee.take();
                r.assigned_at = None;
                r.assigned_by = None;
                r.assignee_joined = false;
                Some((code, Action::Updated, Some(at)))
            }
            Change::SeatTaken {
                seat,
                conn,
                at,
                customer_name,
                token_hash,
                ..
            } => {
                let st = &mut *self.st;
                let c = st.cases.get_mut(&code)?;
                let conn_state = st.conns.entry(conn).or_default();
                if seat == Seat::Helper {
                    // Beside the assignee: the status and the case stay
                    // as they are.
                    if !c.live.helpers.contains(&conn) {
                        c.live.helpers.push(conn);
                    }
                    conn_state.sessions.insert(code);
                    return None;
                }
                let r = &mut c.rec;
                r.ever_occupied = true;
                match seat {
                    Seat::Customer => {
                        if !c.live.customer.contains(&conn) {
                            c.live.customer.push(conn);
                        }
                        conn_state.case = Some(code);
                        r.customer_left_at = None;
                        if let Some(hash) = token_hash {
                            r.resume_token_hash = Some(hash);
                        }
                        if let Some(n) = customer_name
                            && !n.is_empty()
                            && r.customer.name.as_deref().is_none_or(str::is_empty)
                        {
                            r.customer.name = Some(n);
                        }
                    }
                    Seat::Supporter | Seat::Helper => {
                        if !c.live.supporter.contains(&conn) {
                            c.live.supporter.push(conn);
                        }
                        conn_state.sessions.insert(code);
                        r.assignee_joined = true;
                        let group = r.group;
                        // The wait, counted once, for the group's numbers.
                        if !c.live.answered {
                            c.live.answered = true;
                            let wait = (at - r.created_at).num_milliseconds();
                            st.windows[group].answered(at.timestamp_millis(), wait);
                        }
                        // The first response, when a service level waits
                        // for one.
                        if let Some(sla) = c.ext.sla.as_mut()
                            && sla.first_response_at.is_none()
                        {
                            sla.first_response_at = Some(at);
                            let kind = crate::case::SlaKind::FirstResponse;
                            if sla.first_response_due.is_some() && !sla.breached.contains(&kind) {
                                self.decided_sla(group, kind, true, at);
                            }
                        }
                    }
                }
                Some((code, Action::Updated, Some(at)))
            }
            Change::SeatLeft { seat, conn, at, .. } => {
                let st = &mut *self.st;
                let c = st.cases.get_mut(&code)?;
                let conns = match seat {
                    Seat::Customer => &mut c.live.customer,
                    Seat::Supporter => &mut c.live.supporter,
                    Seat::Helper => &mut c.live.helpers,
                };
                let before = conns.len();
                conns.retain(|&x| x != conn);
                let left = conns.len() != before;
                if seat == Seat::Customer && left && c.live.customer.is_empty() {
                    c.rec.customer_left_at = Some(at);
                }
                if let Some(s) = st.conns.get_mut(&conn) {
                    match seat {
                        Seat::Customer => {
                            if s.case == Some(code) {
                                s.case = None;
                            }
                        }
                        Seat::Supporter | Seat::Helper => {
                            s.sessions.remove(&code);
                        }
                    }
                }
                self.forget_remote(&[conn]);
                (left && seat != Seat::Helper).then_some((code, Action::Updated, Some(at)))
            }
            Change::Chat { line, .. } => {
                // Written before helpers: from the seat of its role.
                let seat = match line.from.role {
                    Role::Agent => Seat::Supporter,
                    Role::Customer => Seat::Customer,
                };
                self.said(code, line, Sender::Seat(seat))
            }
            Change::ChatBy { line, conn, .. } => {
                let from = self.sender(&code, conn);
                self.said(code, line, from)
            }
            Change::Whispered { line, conn, .. } => {
                let from = match conn {
                    Some(conn) => self.sender(&code, conn),
                    None => Sender::Nobody,
                };
                let c = self.st.cases.get_mut(&code)?;
                let mut to = c.agent_conns();
                from.drop_from(c, &mut to);
                if c.ext.whispers.len() == limits::TRANSCRIPT {
                    c.ext.whispers.pop_front();
                }
                c.ext.whispers.push_back(line.clone());
                self.st.with_ext.insert(code);
                if !to.is_empty() {
                    self.emit(Effect::Chat {
                        to,
                        code,
                        line,
                        internal: true,
                    });
                }
                None
            }
            Change::Invited { agent, by, at, .. } => {
                let to = match self.company.agent(&agent) {
                    Some(a) => self.st.agents[a.index].conns.clone(),
                    None => Vec::new(),
                };
                let c = self.st.cases.get_mut(&code)?;
                if c.is_helper(&agent) {
                    return None;
                }
                c.ext.helpers.push(agent);
                let case = (!to.is_empty()).then(|| Box::new(c.view(&self.company)));
                self.st.with_ext.insert(code);
                // The invitee's connections are told, with the case.
                if let Some(case) = case {
                    self.emit(Effect::Invited { to, code, case, by });
                }
                Some((code, Action::Updated, Some(at)))
            }
            Change::Watched { conn, on, .. } => {
                let st = &mut *self.st;
                let c = st.cases.get_mut(&code)?;
                let s = st.conns.entry(conn).or_default();
                if on {
                    if !c.live.watchers.contains(&conn) {
                        c.live.watchers.push(conn);
                    }
                    s.watching.insert(code);
                } else {
                    c.live.watchers.retain(|&x| x != conn);
                    s.watching.remove(&code);
                    self.forget_remote(&[conn]);
                }
                None
            }
            Change::ExtSet { ext, .. } => {
                let c = self.st.cases.get_mut(&code)?;
                c.ext = ext.0;
                self.st.with_ext.insert(code);
                self.arm_sla(code);
                self.arm_offer(code);
                self.keep_in_step(code, Action::Updated, None, true);
                None
            }
            Change::SlaStarted {
                first_response_due,
                resolution_due,
                ..
            } => {
                let c = self.st.cases.get_mut(&code)?;
                c.ext.sla = Some(Sla {
                    first_response_due,
                    resolution_due,
                    ..Sla::default()
                });
                self.st.with_ext.insert(code);
                self.arm_sla(code);
                None
            }
            Change::Routed { decision, .. } => {
                let c = self.st.cases.get_mut(&code)?;
                if c.ext.routing.len() == super::record::ROUTING_KEPT {
                    c.ext.routing.pop_front();
                }
                c.ext.routing.push_back(decision.0);
                self.st.with_ext.insert(code);
                None
            }
            Change::Offered {
                agent,
                expires_at,
                at,
                ..
            } => {
                let id = self.company.agents.get(agent)?.id.clone();
                let to = self.st.agents.get(agent)?.conns.clone();
                let c = self.st.cases.get_mut(&code)?;
                if !c.is_open() || c.rec.assignee.is_some() {
                    return None;
                }
                c.ext.offer = Some(crate::case::Offer {
                    agent: id,
                    expires_at,
                });
                let group = c.rec.group;
                // The agent's connections are told, with the case.
                let case = (!to.is_empty()).then(|| Box::new(c.view(&self.company)));
                self.st.with_ext.insert(code);
                self.remember_pick(group, agent);
                self.arm_offer(code);
                if let Some(case) = case {
                    self.emit(Effect::Offered {
                        to,
                        code,
                        case,
                        expires_at,
                    });
                }
                Some((code, Action::Updated, Some(at)))
            }
            Change::OfferEnded {
                agent, outcome, at, ..
            } => {
                let id = self.company.agents.get(agent)?.id.clone();
                let c = self.st.cases.get_mut(&code)?;
                if c.ext.offer.as_ref().is_none_or(|o| o.agent != id) {
                    return None;
                }
                c.ext.offer = None;
                if !c.ext.passed.contains(&id) {
                    c.ext.passed.push(id);
                }
                if !self.st.replaying && !self.st.following {
                    self.shared.metrics.offer(outcome.as_str());
                }
                Some((code, Action::Updated, Some(at)))
            }
            Change::SlaBreached { kind, at, .. } => {
                let c = self.st.cases.get_mut(&code)?;
                let sla = c.ext.sla.as_mut()?;
                if sla.breached.contains(&kind) {
                    return None;
                }
                sla.breached.push(kind);
                let group = c.rec.group;
                self.decided_sla(group, kind, false, at);
                Some((code, Action::Updated, Some(at)))
            }
            Change::Closed { by, at, .. } => {
                let c = self.st.cases.get_mut(&code)?;
                let kind = crate::case::SlaKind::Resolution;
                let met = c
                    .ext
                    .sla
                    .as_ref()
                    .is_some_and(|s| s.resolution_due.is_some() && !s.breached.contains(&kind));
                if met {
                    let group = c.rec.group;
                    self.decided_sla(group, kind, true, at);
                }
                let c = self.st.cases.get_mut(&code)?;
                c.rec.terminal = Some(Terminal::Closed);
                c.rec.closed_at = Some(at);
                c.rec.closed_by = Some(by);
                self.finish(code, EndReason::Closed, at)
            }
            Change::Expired { at, .. } => {
                let c = self.st.cases.get_mut(&code)?;
                c.rec.terminal = Some(Terminal::Expired);
                self.finish(code, EndReason::Expired, at)
            }
            Change::Deleted { .. } => {
                if !self.st.cases.contains_key(&code) {
                    return None;
                }
                self.end_seats(code, EndReason::Deleted);
                self.touch(code, Action::Deleted, None);
                self.remove(code);
                None
            }
            Change::Purged { .. } => {
                self.remove(code);
                None
            }
            Change::Transferred { group, at, .. } => {
                let st = &mut *self.st;
                let c = st.cases.get_mut(&code)?;
                let old = c.rec.group;
                if old == group || group >= self.company.groups.len() {
                    return None;
                }
                if c.live.in_line {
                    st.lines.remove(old, &c.place());
                    c.live.in_line = false;
                }
                c.rec.group = group;
                c.ext.offer = None;
                st.left_group = Some(old);
                Some((code, Action::Updated, Some(at)))
            }
            Change::AgentOnline { .. }
            | Change::AgentOffline { .. }
            | Change::Presence { .. }
            | Change::AgentSet(_)
            | Change::AgentRemoved { .. }
            | Change::GroupSet(_)
            | Change::CompanySet(_)
            | Change::WebhookSet(_)
            | Change::WebhookQueued(_)
            | Change::WebhookSending { .. }
            | Change::WebhookAttempted { .. }
            | Change::ModuleSet(_)
            | Change::ModuleRemoved { .. } => None,
        }
    }

    /// An agent connection opens: the first takes the agent online, with
    /// presence `available`.
    fn agent_online(&mut self, agent: usize, conn: super::effect::ConnId) {
        let a = &mut self.st.agents[agent];
        if a.conns.contains(&conn) {
            return;
        }
        a.conns.push(conn);
        if a.conns.len() == 1 {
            a.presence = crate::protocol::PresenceState::Available;
            a.offline_since = None;
            self.push_agent(agent);
        }
    }

    /// An agent connection closes. The last one takes the agent offline and
    /// starts the orphan clock of its unjoined automatic cases (found
    /// through the agent's own open cases, not a scan of the company).
    fn agent_offline(&mut self, agent: usize, conn: super::effect::ConnId) {
        let a = &mut self.st.agents[agent];
        let before = a.conns.len();
        a.conns.retain(|&c| c != conn);
        if a.conns.len() == before || !a.conns.is_empty() {
            return;
        }
        let now = Instant::now();
        a.offline_since = Some(now);
        let at = now + self.shared.config.orphan_timeout;
        let orphans: Vec<SessionCode> = self.st.agents[agent]
            .open
            .iter()
            .filter(|code| {
                self.st.cases.get(code).is_some_and(|c| {
                    c.rec.assigned_by == Some(AssignedBy::Auto) && !c.rec.assignee_joined
                })
            })
            .copied()
            .collect();
        for code in orphans {
            self.add_timer(at, Timer::Orphan, code);
        }
        self.push_agent(agent);
    }

    /// Puts back a piece of live state an image kept (a seat, an agent
    /// connection, presence): written and kept in step like a change, but
    /// without an event, so the stream's seq stays the image's.
    pub fn put_back(&mut self, change: Change) {
        if let Some((code, action, _)) = self.write(change) {
            self.keep_in_step(code, action, None, true);
        }
    }

    /// Leaves these seats, in order, as changes with their events.
    pub fn leave_seats(&mut self, mut seats: Vec<(SessionCode, Seat, super::effect::ConnId)>) {
        seats.sort();
        let at = Utc::now();
        for (code, seat, conn) in seats {
            self.apply(Change::SeatLeft {
                code,
                seat,
                conn,
                at,
            });
        }
    }

    /// Puts back a case loaded from a snapshot: its deadlines re-armed from
    /// its wall-clock times, its indexes, line and load, without an event.
    pub fn restore_case(&mut self, rec: CaseRecord) {
        let code = rec.code;
        self.shared.codes.insert(code, self.shard);
        let mut case = Case::new(rec);
        case.live.answered = case.rec.assignee_joined;
        match case.rec.terminal {
            None => {
                let expiry = timers::instant_at(case.rec.expires_at);
                case.live.expiry = Some(expiry);
                self.add_timer(expiry, Timer::Expiry, code);
            }
            Some(terminal) => {
                let ended = match terminal {
                    Terminal::Closed => case.rec.closed_at.unwrap_or(case.rec.updated_at),
                    Terminal::Expired => case.rec.updated_at,
                };
                let purge_at = case
                    .rec
                    .purge_at
                    .unwrap_or_else(|| timers::add(ended, self.shared.config.retention));
                let purge = timers::instant_at(purge_at);
                case.live.purge = Some(purge);
                case.live.ended_ms = Some(ended.timestamp_millis());
                self.st
                    .index
                    .ended(case.rec.group, ended.timestamp_millis(), code);
                self.add_timer(purge, Timer::Purge, code);
            }
        }
        self.st.cases.insert(code, case);
        self.keep_in_step(code, Action::Created, None, true);
    }

    fn created(&mut self, rec: CaseRecord) -> Touch {
        let code = rec.code;
        self.shared.codes.insert(code, self.shard);
        let expiry = timers::instant_at(rec.expires_at);
        let orphan = rec.assigned_by == Some(AssignedBy::Auto)
            && rec.assignee.is_some_and(|a| !self.is_online(a));
        let at = rec.created_at;
        let mut case = Case::new(rec);
        case.live.expiry = Some(expiry);
        self.st.cases.insert(code, case);
        self.add_timer(expiry, Timer::Expiry, code);
        if orphan {
            let when = Instant::now() + self.shared.config.orphan_timeout;
            self.add_timer(when, Timer::Orphan, code);
        }
        (code, Action::Created, Some(at))
    }

    /// Adds a deadline; wakes the timer task when it is the earliest.
    pub fn add_timer(&mut self, at: Instant, timer: Timer, code: SessionCode) {
        if self.st.timers.add(at, timer, code) {
            self.shared.shards[self.shard].timers_changed.notify_one();
        }
    }

    /// The policy's memory of an automatic pick (an assignment or an
    /// offer), kept with the change so that every copy of the company
    /// picks alike.
    fn remember_pick(&mut self, group: usize, agent: usize) {
        if self.company.assignment == crate::config::Assignment::RoundRobin {
            self.st.rr[group] = Some(agent);
        }
        self.st.auto_counter += 1;
        self.st.agents[agent].last_auto = self.st.auto_counter;
    }

    /// Arms the deadline of a case's pending offer, in place of the
    /// previous offer's.
    pub fn arm_offer(&mut self, code: SessionCode) {
        let st = &mut *self.st;
        let Some(c) = st.cases.get_mut(&code) else {
            return;
        };
        if let Some(old) = c.live.offer_timer.take() {
            st.timers.remove(old, Timer::Offer, code);
        }
        let Some(offer) = c.ext.offer.as_ref().filter(|_| c.is_open()) else {
            return;
        };
        let at = timers::instant_at(offer.expires_at);
        c.live.offer_timer = Some(at);
        self.add_timer(at, Timer::Offer, code);
    }

    /// Arms the deadlines of a case's service levels still to be met.
    fn arm_sla(&mut self, code: SessionCode) {
        use crate::case::SlaKind;
        let Some(c) = self.st.cases.get(&code) else {
            return;
        };
        let Some(sla) = c.ext.sla.as_ref().filter(|_| c.is_open()) else {
            return;
        };
        let mut due = Vec::with_capacity(2);
        if let Some(at) = sla.first_response_due
            && sla.first_response_at.is_none()
            && !sla.breached.contains(&SlaKind::FirstResponse)
        {
            due.push((at, SlaKind::FirstResponse));
        }
        if let Some(at) = sla.resolution_due
            && !sla.breached.contains(&SlaKind::Resolution)
        {
            due.push((at, SlaKind::Resolution));
        }
        for (at, kind) in due {
            self.add_timer(timers::instant_at(at), Timer::Sla(kind), code);
        }
    }

    /// Counts a service level met or missed: in the group's numbers, and
    /// in the metrics of the node that decided it.
    fn decided_sla(
        &mut self,
        group: usize,
        kind: crate::case::SlaKind,
        met: bool,
        at: DateTime<Utc>,
    ) {
        self.st.windows[group].sla(at.timestamp_millis(), met);
        if !self.st.replaying && !self.st.following {
            self.shared.metrics.sla(kind.as_str(), met);
        }
    }

    /// Who sent a line: a connection in one of the two seats (the whole
    /// seat does not get it back), another connection of the session (a
    /// helper's or a watcher's), or nobody (an HTTP whisper).
    fn sender(&self, code: &SessionCode, conn: super::effect::ConnId) -> Sender {
        match self.st.cases.get(code) {
            Some(c) if c.live.customer.contains(&conn) => Sender::Seat(Seat::Customer),
            Some(c) if c.live.supporter.contains(&conn) => Sender::Seat(Seat::Supporter),
            _ => Sender::Conn(conn),
        }
    }

    /// A chat line: kept in the transcript, to everyone in the session
    /// (agents' lines to the customer too) but the sender.
    fn said(&mut self, code: SessionCode, line: ChatLine, from: Sender) -> Option<Touch> {
        let c = self.st.cases.get_mut(&code)?;
        let mut to = c.agent_conns();
        if line.from.role == Role::Agent {
            to.extend_from_slice(&c.live.customer);
        }
        from.drop_from(c, &mut to);
        if c.rec.transcript.len() == limits::TRANSCRIPT {
            c.rec.transcript.pop_front();
        }
        c.rec.transcript.push_back(line.clone());
        self.queue_chat_hooks(code, &line);
        if !to.is_empty() {
            self.emit(Effect::Chat {
                to,
                code,
                line,
                internal: false,
            });
        }
        None
    }

    /// A case reached a terminal state: end its sessions, disarm its
    /// expiry, arm its purge, and emit the change.
    fn finish(&mut self, code: SessionCode, reason: EndReason, at: DateTime<Utc>) -> Option<Touch> {
        self.end_seats(code, reason);
        let purge_at = timers::add(at, self.shared.config.retention);
        let st = &mut *self.st;
        let c = st.cases.get_mut(&code)?;
        if let Some(e) = c.live.expiry.take() {
            st.timers.remove(e, Timer::Expiry, code);
        }
        c.ext.offer = None;
        c.rec.purge_at = Some(purge_at);
        let purge = timers::instant_at(purge_at);
        c.live.purge = Some(purge);
        c.live.ended_ms = Some(at.timestamp_millis());
        st.index.ended(c.rec.group, at.timestamp_millis(), code);
        self.add_timer(purge, Timer::Purge, code);
        Some((code, Action::Updated, Some(at)))
    }

    /// Sends `ended` to the supporter seat alone (a reassignment) and
    /// empties it.
    fn end_supporters(&mut self, code: SessionCode, reason: EndReason) {
        let st = &mut *self.st;
        let Some(c) = st.cases.get_mut(&code) else {
            return;
        };
        let to = std::mem::take(&mut c.live.supporter);
        for conn in &to {
            if let Some(s) = st.conns.get_mut(conn) {
                s.sessions.remove(&code);
            }
        }
        self.forget_remote(&to);
        if !to.is_empty() {
            self.emit(Effect::Ended {
                to,
                code,
                reason,
                close: false,
            });
        }
    }

    /// Another node's connections that hold no seat here any more are
    /// forgotten (this node's own go when they close).
    fn forget_remote(&mut self, conns: &[super::effect::ConnId]) {
        if !self.shared.replicated {
            return;
        }
        let me = self.shared.node();
        for conn in conns {
            if super::replica::node_of(*conn) != me
                && self.st.conns.get(conn).is_some_and(|s| {
                    s.case.is_none()
                        && s.sessions.is_empty()
                        && s.watching.is_empty()
                        && !s.subscribed
                        && !s.online
                })
            {
                self.st.conns.remove(conn);
            }
        }
    }

    /// Sends `ended` to both seats and empties them; customers'
    /// connections are then closed.
    fn end_seats(&mut self, code: SessionCode, reason: EndReason) {
        self.end_supporters(code, reason);
        let st = &mut *self.st;
        let Some(c) = st.cases.get_mut(&code) else {
            return;
        };
        // Helpers and watchers: their session ends, their connection stays.
        let helpers = std::mem::take(&mut c.live.helpers);
        let watchers = std::mem::take(&mut c.live.watchers);
        for conn in &helpers {
            if let Some(s) = st.conns.get_mut(conn) {
                s.sessions.remove(&code);
            }
        }
        for conn in &watchers {
            if let Some(s) = st.conns.get_mut(conn) {
                s.watching.remove(&code);
            }
        }
        let mut to = helpers;
        to.extend(watchers);
        if !to.is_empty() {
            self.forget_remote(&to);
            self.emit(Effect::Ended {
                to,
                code,
                reason,
                close: false,
            });
        }
        let st = &mut *self.st;
        let Some(c) = st.cases.get_mut(&code) else {
            return;
        };
        let to = std::mem::take(&mut c.live.customer);
        for conn in &to {
            if let Some(s) = st.conns.get_mut(conn) {
                s.case = None;
            }
        }
        self.forget_remote(&to);
        if !to.is_empty() {
            self.emit(Effect::Ended {
                to,
                code,
                reason,
                close: true,
            });
        }
    }

    /// Forgets a case everywhere: indexes, line, load, deadlines, the
    /// code index (the code may be drawn again).
    fn remove(&mut self, code: SessionCode) {
        let st = &mut *self.st;
        let Some(c) = st.cases.remove(&code) else {
            return;
        };
        st.with_ext.remove(&code);
        st.index.update(c.live.indexed, None);
        if let Some(ended) = c.live.ended_ms {
            st.index.forget_end(c.rec.group, ended, code);
        }
        if c.live.in_line {
            st.lines.remove(c.rec.group, &c.place());
        }
        if let Some(a) = c.live.counted_for
            && st.agents[a].open.remove(&code)
        {
            self.push_agent(a);
        }
        let st = &mut *self.st;
        if let Some(e) = c.live.expiry {
            st.timers.remove(e, Timer::Expiry, code);
        }
        if let Some(p) = c.live.purge {
            st.timers.remove(p, Timer::Purge, code);
        }
        self.shared.codes.remove(&code);
    }

    /// After any change to a case: bring its agent's load, its line, its
    /// index entry and `updated_at` in step; tell its seats when their
    /// status line changed; emit the company's event. `Deleted` sends the
    /// case as it last was.
    fn touch(&mut self, code: SessionCode, action: Action, at: Option<DateTime<Utc>>) {
        self.keep_in_step(code, action, at, false);
    }

    /// `touch`; `quiet` keeps the indexes, line and loads in step alone,
    /// telling nobody (a case loaded from a snapshot).
    fn keep_in_step(
        &mut self,
        code: SessionCode,
        action: Action,
        at: Option<DateTime<Utc>>,
        quiet: bool,
    ) {
        let gone = action == Action::Deleted;
        let st = &mut *self.st;
        let Some(c) = st.cases.get_mut(&code) else {
            return;
        };
        if let Some(at) = at {
            c.rec.updated_at = at;
        }
        // Load: the open cases of each agent.
        let load_for = if c.is_open() && !gone {
            c.rec.assignee
        } else {
            None
        };
        let mut agents_changed = [None, None];
        if c.live.counted_for != load_for {
            if let Some(old) = c.live.counted_for.take() {
                st.agents[old].open.remove(&code);
                agents_changed[0] = Some(old);
            }
            if let Some(new) = load_for {
                st.agents[new].open.insert(code);
                agents_changed[1] = Some(new);
            }
            c.live.counted_for = load_for;
        }
        // The pending offer: one of the agent's while the case waits.
        let offered_to = match &c.ext.offer {
            Some(o) if c.is_open() && c.rec.assignee.is_none() && !gone => {
                self.company.agent(&o.agent).map(|a| a.index)
            }
            _ => None,
        };
        if c.live.offered_to != offered_to {
            if let Some(old) = c.live.offered_to.take() {
                st.agents[old].offers.remove(&code);
            }
            if let Some(new) = offered_to {
                st.agents[new].offers.insert(code);
            }
            c.live.offered_to = offered_to;
        }
        // The waiting line: open, unassigned and not on offer.
        let want_line = c.is_open() && c.rec.assignee.is_none() && c.ext.offer.is_none() && !gone;
        if want_line != c.live.in_line {
            c.live.in_line = want_line;
            if want_line {
                st.lines.insert(c.rec.group, c.place());
            } else {
                st.lines.remove(c.rec.group, &c.place());
            }
        }
        if want_line {
            st.lines
                .set_seated(c.rec.group, c.place(), !c.live.customer.is_empty());
        }
        // Indexes.
        let entry = (!gone).then(|| c.entry());
        st.index.update(c.live.indexed, entry);
        c.live.indexed = entry;
        if quiet {
            c.live.last_pushed = Some(c.status_line());
            return;
        }
        // Status to the seats, when their line changed.
        let before = c.live.last_pushed.map(|l| l.0);
        let line = c.status_line();
        if !gone && c.live.last_pushed != Some(line) {
            c.live.last_pushed = Some(line);
            let mut to = c.live.customer.clone();
            to.extend(c.agent_conns());
            if !to.is_empty() {
                let effect = Effect::Status {
                    to,
                    code,
                    status: line.0,
                    customer_connected: line.1,
                    supporter_connected: line.2,
                    supporter: c.supporter(&self.company),
                };
                st.effects.push(effect);
            }
        }
        let view = c.view(&self.company);
        let group = c.rec.group;
        let left = st.left_group.take();
        let event = st.stream.append(action, group, left, view);
        let kind = match (action, event.case.status) {
            (Action::Created, _) => "case.created",
            (Action::Deleted, _) => "case.deleted",
            (_, Status::Closed) if before != Some(Status::Closed) => "case.closed",
            (_, Status::Expired) if before != Some(Status::Expired) => "case.expired",
            _ => "case.updated",
        };
        st.effects.push(Effect::Event(event.clone()));
        self.stats_soon();
        for a in agents_changed.into_iter().flatten() {
            self.push_agent(a);
        }
        self.queue_hooks(kind, &event);
    }
}

/// Who sent a chat line, as far as who must not get it back.
#[derive(Clone, Copy)]
enum Sender {
    Seat(Seat),
    Conn(super::effect::ConnId),
    Nobody,
}

impl Sender {
    /// Takes the sender (its whole seat, for a seat) out of `to`.
    fn drop_from(self, c: &super::record::Case, to: &mut Vec<super::effect::ConnId>) {
        match self {
            Sender::Seat(Seat::Customer) => to.retain(|x| !c.live.customer.contains(x)),
            Sender::Seat(_) => to.retain(|x| !c.live.supporter.contains(x)),
            Sender::Conn(conn) => to.retain(|&x| x != conn),
            Sender::Nobody => {}
        }
    }
}
