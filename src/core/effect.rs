//! What must happen outside the core after a change: plain data, no bytes
//! and no sockets. The delivery layer turns each effect into a frame once
//! and hands it to the connections named.

use std::sync::Arc;

use serde_json::Value;

use crate::case::{CaseView, SessionCode, Status, SupporterView};
use crate::protocol::{Action, AgentStatus, ChatLine, EndReason, Role};

/// A connection's id, unique for the broker's life.
pub type ConnId = u64;

/// Where effects go: the delivery layer. Called in each shard's order
/// (under its lock, or from the journal once stored); it must not block
/// and must not call back into the broker.
pub trait Deliver: Send + Sync + 'static {
    fn deliver(&self, shard: usize, effects: &mut Vec<Effect>);
}

/// One event of a company's stream, as kept for replay.
#[derive(Debug)]
pub struct Event {
    pub epoch: Arc<str>,
    pub seq: u64,
    pub action: Action,
    /// The case's group index, for the subscribers' filters.
    pub group: usize,
    /// The group a transferred case has just left: its subscribers get
    /// this event too (a case in a group they do not watch: it left their
    /// view).
    pub left: Option<usize>,
    pub case: CaseView,
}

impl Event {
    /// True when a subscriber with `filter` gets the event.
    pub fn seen_by(&self, filter: &Filter) -> bool {
        filter.sees(self.group) || self.left.is_some_and(|g| filter.sees(g))
    }
}

/// Which events a subscriber may see.
#[derive(Clone, Debug)]
pub struct Filter {
    /// The groups (indexes) the agent may see; `None` for an admin.
    pub groups: Option<Arc<[usize]>>,
    /// The `group` asked for in `subscribe`, if any.
    pub only: Option<usize>,
}

impl Filter {
    /// True when an event or case of `group` is for this subscriber.
    pub fn sees(&self, group: usize) -> bool {
        self.groups.as_ref().is_none_or(|g| g.contains(&group))
            && self.only.is_none_or(|o| o == group)
    }

    /// True when this subscriber sees any of `groups`.
    pub fn sees_any(&self, groups: &[usize]) -> bool {
        groups.iter().any(|&g| self.sees(g))
    }
}

/// A group as the `groups` push shows it, with its index for the filters.
#[derive(Clone, Debug)]
pub struct GroupEntry {
    pub index: usize,
    pub group: crate::protocol::GroupInfo,
}

/// How a subscription starts.
#[derive(Debug)]
pub enum Start {
    /// The open and recently ended cases the subscriber may see.
    Snapshot {
        epoch: Arc<str>,
        seq: u64,
        cases: Vec<CaseView>,
    },
    /// The stream still holds what was missed: these events follow.
    Resumed {
        epoch: Arc<str>,
        seq: u64,
        events: Vec<Arc<Event>>,
    },
}

/// An effect of a change or a command, for the delivery layer.
#[derive(Debug)]
pub enum Effect {
    /// A company event, to every subscriber whose filter lets it through.
    Event(Arc<Event>),
    /// A case's status line changed: to both seats.
    Status {
        to: Vec<ConnId>,
        code: SessionCode,
        status: Status,
        customer_connected: bool,
        supporter_connected: bool,
        supporter: Option<SupporterView>,
    },
    /// The session ended for these connections; customers' are closed.
    Ended {
        to: Vec<ConnId>,
        code: SessionCode,
        reason: EndReason,
        close: bool,
    },
    /// These connections must end now, with this close code (an agent
    /// disabled, deleted or given a new token).
    Close {
        to: Vec<ConnId>,
        code: u16,
        reason: &'static str,
    },
    /// A waiting customer's new place in line.
    Position {
        to: Vec<ConnId>,
        code: SessionCode,
        position: usize,
        estimated_wait_s: Option<u64>,
    },
    /// An agent's presence or load, to the subscribers that see one of its
    /// groups.
    Agent {
        agent: AgentStatus,
        groups: Arc<[usize]>,
    },
    /// The company's groups changed: to every subscriber, the groups
    /// (not deleted) it may see.
    Groups { groups: Arc<[GroupEntry]> },
    /// A chat line, to the others in the session (`internal`: a
    /// whisper, agents only).
    Chat {
        to: Vec<ConnId>,
        code: SessionCode,
        line: ChatLine,
        internal: bool,
    },
    /// Group numbers changed: to the subscribers that see each group.
    Stats {
        groups: Vec<(usize, crate::protocol::GroupStats)>,
    },
    /// An agent was invited to help with a case: to its connections.
    Invited {
        to: Vec<ConnId>,
        code: SessionCode,
        case: Box<CaseView>,
        by: String,
    },
    /// A case is offered to an agent: to its connections.
    Offered {
        to: Vec<ConnId>,
        code: SessionCode,
        case: Box<CaseView>,
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    /// Signalling data, to the other seat.
    Signal {
        to: Vec<ConnId>,
        code: SessionCode,
        from: Role,
        data: Value,
    },
    /// A connection subscribes: its start, then every event it may see.
    Subscribe {
        conn: ConnId,
        filter: Filter,
        start: Start,
    },
    /// A connection's subscription ends.
    Unsubscribe { conn: ConnId },
}
