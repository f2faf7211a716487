//! What the data directory holds, and how: three redb tables, with
//! values encoded by postcard.
//!
//! - `meta`: per company (`company/<id>`), its image's stream state and the
//!   agent and group ids its indexes refer to;
//! - `cases`: per (company, code), the durable case record as of the image;
//! - `journal`: one row per stored group, keyed by the group's largest
//!   position: the group's entries, each a commit's batches of changes
//!   with its position, applied (in position order) after the image.
//!
//! Records and changes refer to agents and groups by their index in the
//! company, so the image keeps the id lists; a restart with a reordered or
//! extended config maps the old indexes to the new ones by id.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::core::change::Change;
use crate::core::record::{Actor, AssignedBy, CaseRecord};
use crate::core::sink::Batch;
use crate::directory::Company;
use crate::protocol::Action;

pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub const CASES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("cases");
pub const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");

/// The meta key of a company.
pub fn meta_key(company: &str) -> String {
    format!("company/{company}")
}

/// The META key of a company's agents added through the admin API (a
/// postcard `Vec<AgentRecord>`), written with each image.
pub fn api_agents_key(company: &str) -> String {
    format!("agents/{company}")
}

/// The META key of what a company's cases hold beside their records
/// (helpers, whispers): a postcard `Vec<(SessionCode, ExtBlob)>`, written
/// with each image.
pub fn case_ext_key(company: &str) -> String {
    format!("case-ext/{company}")
}

/// The META key of a company's webhook endpoints and pending deliveries
/// (a postcard `StoredHooks`), written with each image.
pub fn api_hooks_key(company: &str) -> String {
    format!("webhooks/{company}")
}

/// The META key of a company the operator added through the admin API (a
/// postcard `CompanyRecord`), written with each image.
pub fn api_company_key(company: &str) -> String {
    format!("api-company/{company}")
}

/// The META key of a company's groups added through the admin API (a
/// postcard `Vec<GroupRecord>`, deleted ones included), written with each
/// image.
pub fn api_groups_key(company: &str) -> String {
    format!("groups/{company}")
}

/// The META key of a company's module keys added through the admin API
/// (a postcard `Vec<ModuleRecord>`), written with each image.
pub fn api_modules_key(company: &str) -> String {
    format!("modules/{company}")
}

/// One event kept for `resume`; the case as its JSON view.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeldEvent {
    pub seq: u64,
    pub action: Action,
    pub group: usize,
    pub case_json: String,
}

impl HeldEvent {
    /// An event as kept.
    pub fn of(ev: &crate::core::effect::Event) -> HeldEvent {
        HeldEvent {
            seq: ev.seq,
            action: ev.action,
            group: ev.group,
            case_json: serde_json::to_string(&ev.case).unwrap_or_default(),
        }
    }
}

/// A company's image, beside its case records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompanyMeta {
    pub epoch: String,
    pub seq: u64,
    pub next_line_seq: u64,
    /// Journal entries from this position on come after the image.
    pub position: u64,
    pub agents: Vec<String>,
    pub groups: Vec<String>,
    pub history: Vec<HeldEvent>,
}

/// One journal entry: a commit's batches of one company.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub company: String,
    pub batches: Vec<Batch>,
}

/// Maps the indexes a data directory was written with to the config's.
pub struct Remap {
    agents: Vec<usize>,
    groups: Vec<usize>,
}

impl Remap {
    /// By id; an id the config no longer has is an error naming it.
    pub fn new(company: &Company, agents: &[String], groups: &[String]) -> Result<Remap, String> {
        let agents = agents
            .iter()
            .map(|id| {
                company
                    .agent(id)
                    .map(|a| a.index)
                    .ok_or_else(|| format!("agent \"{id}\" of company \"{}\"", company.id))
            })
            .collect::<Result<_, _>>()?;
        let groups = groups
            .iter()
            .map(|id| {
                company
                    .group(id)
                    .ok_or_else(|| format!("group \"{id}\" of company \"{}\"", company.id))
            })
            .collect::<Result<_, _>>()?;
        Ok(Remap { agents, groups })
    }

    pub fn group(&self, g: usize) -> usize {
        self.groups.get(g).copied().unwrap_or(g)
    }

    fn agent(&self, a: usize) -> usize {
        self.agents.get(a).copied().unwrap_or(a)
    }

    fn actor(&self, a: Actor) -> Actor {
        match a {
            Actor::Agent(i) => Actor::Agent(self.agent(i)),
            Actor::Customer => Actor::Customer,
        }
    }

    fn by(&self, b: AssignedBy) -> AssignedBy {
        match b {
            AssignedBy::Agent(i) => AssignedBy::Agent(self.agent(i)),
            AssignedBy::Auto => AssignedBy::Auto,
        }
    }

    pub fn record(&self, mut r: CaseRecord) -> CaseRecord {
        r.group = self.group(r.group);
        r.created_by = self.actor(r.created_by);
        r.assignee = r.assignee.map(|a| self.agent(a));
        r.assigned_by = r.assigned_by.map(|b| self.by(b));
        r.returned_by = r.returned_by.map(|a| self.agent(a));
        r.closed_by = r.closed_by.map(|a| self.actor(a));
        r
    }

    pub fn change(&self, c: Change) -> Change {
        match c {
            Change::Created(r) => Change::Created(Box::new(self.record(*r))),
            Change::Assigned { code, to, by, at } => Change::Assigned {
                code,
                to: self.agent(to),
                by: self.by(by),
                at,
            },
            Change::Closed { code, by, at } => Change::Closed {
                code,
                by: self.actor(by),
                at,
            },
            Change::Transferred { code, group, at } => Change::Transferred {
                code,
                group: self.group(group),
                at,
            },
            Change::AgentOnline { agent, conn } => Change::AgentOnline {
                agent: self.agent(agent),
                conn,
            },
            Change::AgentOffline { agent, conn } => Change::AgentOffline {
                agent: self.agent(agent),
                conn,
            },
            Change::Presence { agent, state } => Change::Presence {
                agent: self.agent(agent),
                state,
            },
            other => other,
        }
    }
}
