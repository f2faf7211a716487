//! Every change to durable case state, as a value: what a journal records
//! and a replica replays. [`super::apply`] is the one function that writes
//! them into case records.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::case::SessionCode;
use crate::protocol::{ChatLine, PresenceState};

use super::effect::ConnId;
use super::record::{Actor, AssignedBy, CaseRecord, ExtBlob};
use crate::directory::{AgentRecord, CompanyRecord, GroupRecord, ModuleRecord};
use crate::webhook::{Delivery, Outcome, WebhookRecord};

/// One of a case's two seats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Seat {
    Customer,
    Supporter,
    /// An invited agent sitting in beside the assignee.
    Helper,
}

/// How an offer ended without an `accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfferOutcome {
    /// The agent said `decline`.
    Declined,
    /// `offer_timeout` passed.
    TimedOut,
    /// The agent went away or offline first.
    Withdrawn,
}

impl OfferOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            OfferOutcome::Declined => "declined",
            OfferOutcome::TimedOut => "timed_out",
            OfferOutcome::Withdrawn => "withdrawn",
        }
    }
}

/// A change to a case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Change {
    /// A new case, as it starts (possibly assigned already).
    Created(Box<CaseRecord>),
    /// The case is given to an agent (index in the company).
    Assigned {
        code: SessionCode,
        to: usize,
        by: AssignedBy,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        at: DateTime<Utc>,
    },
    /// The case goes back to the line; its assignee is remembered as
    /// `returned_by`.
    Returned {
        code: SessionCode,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        at: DateTime<Utc>,
    },
    /// A connection sits down. A customer may bring its name (kept when the
    /// case has none) and a new resume token's hash.
    SeatTaken {
        code: SessionCode,
        seat: Seat,
        conn: ConnId,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        at: DateTime<Utc>,
        customer_name: Option<String>,
        token_hash: Option<[u8; 32]>,
    },
    /// A connection leaves its seat.
    SeatLeft {
        code: SessionCode,
        seat: Seat,
        conn: ConnId,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        at: DateTime<Utc>,
    },
    /// A chat line, kept in the transcript and relayed to the other seat.
    Chat { code: SessionCode, line: ChatLine },
    Closed {
        code: SessionCode,
        by: Actor,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        at: DateTime<Utc>,
    },
    Expired {
        code: SessionCode,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        at: DateTime<Utc>,
    },
    /// Removed by an agent: its sessions end and the company is told.
    Deleted { code: SessionCode },
    /// Removed after retention, silently.
    Purged { code: SessionCode },
    /// An agent connection opened (index in the company). Live state:
    /// shared between the nodes of a cluster, never journaled.
    AgentOnline { agent: usize, conn: ConnId },
    /// An agent connection closed. Live state, like `AgentOnline`.
    AgentOffline { agent: usize, conn: ConnId },
    /// An agent set its presence. Live state, like `AgentOnline`.
    Presence { agent: usize, state: PresenceState },
    /// An agent added or changed through the admin API (by id: added at
    /// the end of the company when new). Durable.
    AgentSet(Box<AgentRecord>),
    /// An agent deleted through the admin API: retired, its id kept for
    /// the history. Durable.
    AgentRemoved { id: String },
    /// The company added or deleted by the operator: the first change of
    /// a company added at run time. Durable.
    CompanySet(Box<CompanyRecord>),
    /// A group added, renamed or deleted through the admin API (by id:
    /// added at the end of the company when new). Durable.
    GroupSet(Box<GroupRecord>),
    /// A webhook endpoint added, changed or deleted. Durable.
    WebhookSet(Box<WebhookRecord>),
    /// A delivery queued for an endpoint (decided with the event it is
    /// about). Durable.
    WebhookQueued(Box<Delivery>),
    /// A node is sending the delivery until `until` (Unix ms). Live state,
    /// like `AgentOnline`: past `until` another node may take it over.
    WebhookSending { id: u64, until: i64 },
    /// An attempt's outcome. Durable.
    WebhookAttempted {
        id: u64,
        status_code: Option<u16>,
        outcome: Outcome,
    },
    /// A module key added or changed through the admin API. Durable.
    ModuleSet(Box<ModuleRecord>),
    /// A module key deleted through the admin API. Durable.
    ModuleRemoved { key: String },
    /// The case moves to another group (index in the company); its place
    /// in the new group's line follows its creation order, like every
    /// case's. Durable.
    Transferred {
        code: SessionCode,
        group: usize,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        at: DateTime<Utc>,
    },
    /// An agent (by id) is invited to help by another. Durable.
    Invited {
        code: SessionCode,
        agent: String,
        by: String,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        at: DateTime<Utc>,
    },
    /// A line only agents get, kept with the case; `conn` is the sender's
    /// connection (none over HTTP), which does not get it. Durable.
    Whispered {
        code: SessionCode,
        line: ChatLine,
        conn: Option<ConnId>,
    },
    /// A chat line from connection `conn`, kept in the transcript: to
    /// everyone in the session but the sender's own seat (a helper's or
    /// watcher's: its connection). Durable. (`Chat`, written before
    /// helpers, reads as a line from the seat of its role.)
    ChatBy {
        code: SessionCode,
        line: ChatLine,
        conn: ConnId,
    },
    /// An admin's connection starts (`on`) or stops following a session.
    /// Live state, like `AgentOnline`.
    Watched {
        code: SessionCode,
        conn: ConnId,
        on: bool,
    },
    /// What a case holds beside its record, whole (from an image).
    /// Durable.
    ExtSet { code: SessionCode, ext: ExtBlob },
    /// The case's service levels start, as its group sets them. Durable.
    SlaStarted {
        code: SessionCode,
        #[serde(with = "chrono::serde::ts_milliseconds_option")]
        first_response_due: Option<DateTime<Utc>>,
        #[serde(with = "chrono::serde::ts_milliseconds_option")]
        resolution_due: Option<DateTime<Utc>>,
    },
    /// Why automation is about to give the case to an agent (the
    /// `Assigned` that follows). Durable.
    Routed {
        code: SessionCode,
        decision: super::record::DecisionBlob,
    },
    /// Automation offers the case to an agent (index in the company)
    /// until `expires_at`; `accept` gives it to the agent (`Assigned`).
    /// Durable.
    Offered {
        code: SessionCode,
        agent: usize,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        expires_at: DateTime<Utc>,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        at: DateTime<Utc>,
    },
    /// The agent's offer ends without an `accept`: the agent passed on the
    /// case, which goes back to its line. Durable.
    OfferEnded {
        code: SessionCode,
        agent: usize,
        outcome: OfferOutcome,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        at: DateTime<Utc>,
    },
    /// A service level was missed, at its deadline. Durable.
    SlaBreached {
        code: SessionCode,
        kind: crate::case::SlaKind,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        at: DateTime<Utc>,
    },
}

impl Change {
    /// The case the change is about; `None` for an agent's live state.
    pub fn code(&self) -> Option<SessionCode> {
        Some(match self {
            Change::Created(rec) => rec.code,
            Change::Assigned { code, .. }
            | Change::Returned { code, .. }
            | Change::SeatTaken { code, .. }
            | Change::SeatLeft { code, .. }
            | Change::Chat { code, .. }
            | Change::Closed { code, .. }
            | Change::Expired { code, .. }
            | Change::Deleted { code }
            | Change::Purged { code }
            | Change::Transferred { code, .. }
            | Change::Invited { code, .. }
            | Change::Whispered { code, .. }
            | Change::ChatBy { code, .. }
            | Change::Watched { code, .. }
            | Change::ExtSet { code, .. }
            | Change::SlaStarted { code, .. }
            | Change::Routed { code, .. }
            | Change::SlaBreached { code, .. }
            | Change::Offered { code, .. }
            | Change::OfferEnded { code, .. } => *code,
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
            | Change::ModuleRemoved { .. } => {
                return None;
            }
        })
    }

    /// True for a change to a case record, which a journal keeps; false
    /// for an agent's live state, which ends with the broker's process.
    pub fn durable(&self) -> bool {
        (self.code().is_some() && !matches!(self, Change::Watched { .. }))
            || self.directory()
            || matches!(
                self,
                Change::WebhookSet(_) | Change::WebhookQueued(_) | Change::WebhookAttempted { .. }
            )
    }

    /// True for a change of the directory (agents, groups, module keys).
    pub fn directory(&self) -> bool {
        matches!(
            self,
            Change::AgentSet(_)
                | Change::AgentRemoved { .. }
                | Change::GroupSet(_)
                | Change::CompanySet(_)
                | Change::ModuleSet(_)
                | Change::ModuleRemoved { .. }
        )
    }
}
