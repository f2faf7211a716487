//! A case as a shard holds it: the durable record (everything needed to
//! rebuild the case: fields, assignment history, resume-token hash,
//! transcript, deadlines as wall-clock times) and the live part that does
//! not survive a restart (who sits in the seats, what was last told).

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::case::{
    CaseView, Customer, CustomerCaseView, Seats, SessionCode, Source, Status, SupporterView,
    Terminal, status,
};
use crate::directory::Company;
use crate::protocol::ChatLine;

use super::effect::ConnId;
use super::index::{Entry, Order};

/// Who did something to a case: an agent (its index in the company) or
/// the customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    Agent(usize),
    Customer,
}

/// Who made an assignment: an agent, or automation (policies and module
/// defaults), shown as `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignedBy {
    Agent(usize),
    Auto,
}

/// `assigned_by` of automatic assignments on the wire.
pub const AUTO: &str = "auto";

/// The durable part of a case. Changed only by `Locked::apply` ([`super::apply`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseRecord {
    pub code: SessionCode,
    /// The group's index in the company.
    pub group: usize,
    pub name: String,
    pub description: String,
    pub customer: Customer,
    pub source: Source,
    pub created_by: Actor,
    /// The assignee's index in the company.
    pub assignee: Option<usize>,
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    pub assigned_at: Option<DateTime<Utc>>,
    pub assigned_by: Option<AssignedBy>,
    /// The assignee who last gave the case back to the line; automation
    /// prefers anyone else.
    pub returned_by: Option<usize>,
    /// The current assignee has sat in the session (orphan rule).
    pub assignee_joined: bool,
    /// Creation order in the company: the waiting line's sort key.
    pub line_seq: u64,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub expires_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    pub closed_at: Option<DateTime<Utc>>,
    pub closed_by: Option<Actor>,
    pub terminal: Option<Terminal>,
    /// When a terminal case is purged.
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    pub purge_at: Option<DateTime<Utc>>,
    /// Someone has sat in either seat at some point.
    pub ever_occupied: bool,
    /// SHA-256 of the customer's resume token.
    pub resume_token_hash: Option<[u8; 32]>,
    /// When the customer seat was last left, for `seat_grace`.
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    pub customer_left_at: Option<DateTime<Utc>>,
    /// The last chat lines, oldest first.
    pub transcript: VecDeque<ChatLine>,
}

/// The status line last pushed to a case's seats.
pub type StatusLine = (Status, bool, bool, Option<usize>);

/// The live part of a case: not durable.
#[derive(Debug, Default)]
pub struct Live {
    /// Connections in the customer seat.
    pub customer: Vec<ConnId>,
    /// Connections in the supporter seat (the assignee's).
    pub supporter: Vec<ConnId>,
    /// Connections of invited agents sitting in as helpers: they get the
    /// session's chat and status; the status counts the assignee's seat
    /// alone.
    pub helpers: Vec<ConnId>,
    /// Admins' connections following the session unseen (`watch`).
    pub watchers: Vec<ConnId>,
    /// A supporter has sat in the session: its wait is counted.
    pub answered: bool,
    /// What the seats were last told, so `status` is pushed only on change.
    pub last_pushed: Option<StatusLine>,
    /// The status under which the case is indexed.
    pub indexed: Option<Entry>,
    /// The agent whose load counts this case.
    pub counted_for: Option<usize>,
    /// The agent whose pending offer this case is.
    pub offered_to: Option<usize>,
    /// In its group's waiting line.
    pub in_line: bool,
    /// The armed expiry and purge deadlines, to disarm them.
    pub expiry: Option<Instant>,
    /// The armed deadline of the pending offer.
    pub offer_timer: Option<Instant>,
    pub purge: Option<Instant>,
    /// When the case ended (ms), as the ended index holds it.
    pub ended_ms: Option<i64>,
}

/// What a case holds beside its record: the agents invited to help and
/// the agents' internal lines. Durable, kept apart from the record (an
/// image stores it under its own key, as JSON, so that it can grow
/// without changing how records are stored).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaseExt {
    /// Ids of the agents invited to help, in the order invited.
    #[serde(default)]
    pub helpers: Vec<String>,
    /// Lines only agents get (`whisper`), oldest first.
    #[serde(default)]
    pub whispers: VecDeque<ChatLine>,
    /// The service levels the case's group set when it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<Sla>,
    /// Why automation gave the case to whom, oldest first (the last
    /// [`ROUTING_KEPT`]).
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub routing: VecDeque<Decision>,
    /// The offer waiting for its agent's `accept`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<crate::case::Offer>,
    /// Ids of the agents who declined the case or let its offer run out:
    /// offered again only while nobody else is eligible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passed: Vec<String>,
}

/// Routing decisions kept per case.
pub const ROUTING_KEPT: usize = 20;

/// One automatic assignment's decision, as `GET /v1/cases/{code}/routing`
/// shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    #[serde(with = "crate::case::wire_time")]
    pub at: DateTime<Utc>,
    /// The company's policy: `round_robin` or `least_loaded`.
    pub policy: String,
    /// The agent picked.
    pub chosen: String,
    /// The agent was offered the case (`accept` gives it), rather than
    /// given it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offered: bool,
    /// Every member of the case's group, in config order.
    pub candidates: Vec<RoutingCandidate>,
}

/// A member of the group as the decision saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoutingCandidate {
    pub agent: String,
    pub eligible: bool,
    pub reason: String,
    pub open_cases: u32,
}

/// A [`Decision`] as a change carries it: JSON, so that it can grow.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionBlob(pub Decision);

impl Serialize for DecisionBlob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for DecisionBlob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text)
            .map(DecisionBlob)
            .map_err(serde::de::Error::custom)
    }
}

/// A case's service levels: when each is due, when the first response
/// came, and which were missed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sla {
    pub first_response_due: Option<DateTime<Utc>>,
    pub resolution_due: Option<DateTime<Utc>>,
    /// When a supporter first sat in the session.
    #[serde(default)]
    pub first_response_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub breached: Vec<crate::case::SlaKind>,
}

impl Sla {
    pub fn view(&self) -> crate::case::SlaView {
        crate::case::SlaView {
            first_response_due: self.first_response_due,
            resolution_due: self.resolution_due,
            breached: self.breached.clone(),
        }
    }
}

impl CaseExt {
    pub fn is_empty(&self) -> bool {
        self == &CaseExt::default()
    }
}

/// A [`CaseExt`] as a change carries it and an image stores it: JSON, so
/// that fields added later read from older data as their defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct ExtBlob(pub CaseExt);

impl Serialize for ExtBlob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for ExtBlob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text)
            .map(ExtBlob)
            .map_err(serde::de::Error::custom)
    }
}

/// A case: its record, what it holds beside it, and its live part.
#[derive(Debug)]
pub struct Case {
    pub rec: CaseRecord,
    pub ext: CaseExt,
    pub live: Live,
}

impl Case {
    pub fn new(rec: CaseRecord) -> Case {
        Case {
            rec,
            ext: CaseExt::default(),
            live: Live::default(),
        }
    }

    /// Every agent connection in the session: the supporter seat, the
    /// helpers and the watchers.
    pub fn agent_conns(&self) -> Vec<ConnId> {
        let l = &self.live;
        let mut to = Vec::with_capacity(l.supporter.len() + l.helpers.len() + l.watchers.len());
        to.extend_from_slice(&l.supporter);
        to.extend_from_slice(&l.helpers);
        to.extend_from_slice(&l.watchers);
        to
    }

    /// True when `agent` (an id) was invited to help.
    pub fn is_helper(&self, agent: &str) -> bool {
        self.ext.helpers.iter().any(|h| h == agent)
    }

    pub fn seats(&self) -> Seats {
        Seats {
            customer: !self.live.customer.is_empty(),
            supporter: !self.live.supporter.is_empty(),
            ever_occupied: self.rec.ever_occupied,
        }
    }

    /// The derived status.
    pub fn status(&self) -> Status {
        status(self.rec.terminal, self.seats())
    }

    pub fn is_open(&self) -> bool {
        self.rec.terminal.is_none()
    }

    /// The case's place in its waiting line.
    pub fn place(&self) -> (u64, SessionCode) {
        (self.rec.line_seq, self.rec.code)
    }

    /// The order of lists and snapshots: creation time, then code.
    pub fn order(&self) -> Order {
        (self.rec.created_at.timestamp_millis(), self.rec.code)
    }

    /// Where the case belongs in the indexes now.
    pub fn entry(&self) -> Entry {
        Entry {
            group: self.rec.group,
            status: self.status(),
            assignee: self.rec.assignee,
            order: self.order(),
        }
    }

    /// What the seats are told in `status`.
    pub fn status_line(&self) -> StatusLine {
        let seats = self.seats();
        (
            self.status(),
            seats.customer,
            seats.supporter,
            self.rec.assignee,
        )
    }

    /// The case object agents and integrations see.
    pub fn view(&self, company: &Company) -> CaseView {
        let r = &self.rec;
        let seats = self.seats();
        CaseView {
            code: r.code,
            company: company.id.clone(),
            group: company.groups[r.group].clone(),
            name: r.name.clone(),
            description: r.description.clone(),
            customer: r.customer.clone(),
            source: r.source,
            created_by: actor_id(company, r.created_by),
            assignee: r.assignee.map(|a| company.agents[a].id.clone()),
            status: self.status(),
            customer_connected: seats.customer,
            supporter_connected: seats.supporter,
            created_at: r.created_at,
            updated_at: r.updated_at,
            assigned_at: r.assigned_at,
            assigned_by: r.assigned_by.map(|by| match by {
                AssignedBy::Agent(a) => company.agents[a].id.clone(),
                AssignedBy::Auto => AUTO.to_string(),
            }),
            expires_at: r.expires_at,
            closed_at: r.closed_at,
            closed_by: r.closed_by.map(|by| actor_id(company, by)),
            helpers: self.ext.helpers.clone(),
            sla: self.ext.sla.as_ref().map(Sla::view),
            offer: self.ext.offer.clone(),
        }
    }

    /// The assignee as customers see it: its display name.
    pub fn supporter(&self, company: &Company) -> Option<SupporterView> {
        self.rec.assignee.map(|a| SupporterView {
            name: company.agents[a].name.clone(),
        })
    }

    /// The reduced case object customers see.
    pub fn customer_view(&self, company: &Company) -> CustomerCaseView {
        let seats = self.seats();
        CustomerCaseView {
            code: self.rec.code,
            status: self.status(),
            name: self.rec.name.clone(),
            customer_connected: seats.customer,
            supporter_connected: seats.supporter,
            supporter: self.supporter(company),
            expires_at: self.rec.expires_at,
        }
    }
}

/// An actor's id on the wire: an agent id, or `customer`.
pub fn actor_id(company: &Company, actor: Actor) -> String {
    match actor {
        Actor::Agent(a) => company.agents[a].id.clone(),
        Actor::Customer => "customer".to_string(),
    }
}
