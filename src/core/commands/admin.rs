//! The directory at run time: agents added, changed, given a new token,
//! disabled and deleted through the admin API. Each is a change of the
//! company's shard (journaled, replayed, shared by a cluster); applying it
//! builds a new directory with the agent set and swaps it in.

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::config::hash_token;
use crate::config::validate::valid_id;
use crate::directory::{Agent, AgentRecord, GroupRecord, ModuleRecord};
use crate::error::{Error, Result};
use crate::protocol::{GroupInfo, close};

use super::super::change::Change;
use super::super::effect::{Effect, GroupEntry};
use super::super::shard::{AgentLive, Locked};
use super::super::{Broker, limits};

/// The most agents one company may have (with former and deleted ones).
pub const MAX_AGENTS: usize = 10_000;
/// The most open cases automation may give one agent.
pub const MAX_CASES: u32 = 1000;

/// `POST /v1/admin/agents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    pub id: String,
    pub name: String,
    pub groups: Vec<String>,
    #[serde(default)]
    pub admin: bool,
    pub max_cases: Option<u32>,
}

/// `PATCH /v1/admin/agents/{id}`: any of the fields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub groups: Option<Vec<String>>,
    pub admin: Option<bool>,
    pub max_cases: Option<u32>,
    pub disabled: Option<bool>,
}

/// An agent as the admin API shows it (never a token).
#[derive(Debug, Serialize)]
pub struct AdminAgent {
    pub id: String,
    pub name: String,
    pub groups: Vec<String>,
    pub admin: bool,
    pub max_cases: u32,
    pub disabled: bool,
    /// `config` (declared in the file, changed there) or `api`.
    pub source: &'static str,
}

impl AdminAgent {
    pub(crate) fn of(a: &Agent) -> AdminAgent {
        AdminAgent {
            id: a.id.clone(),
            name: a.name.clone(),
            groups: a.groups.clone(),
            admin: a.admin,
            max_cases: a.max_cases,
            disabled: a.disabled,
            source: if a.from_api { "api" } else { "config" },
        }
    }
}

/// A new agent token: 32 random bytes, hex.
pub(crate) fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn admin_only(agent: &Agent) -> Result<()> {
    if agent.admin {
        Ok(())
    } else {
        Err(Error::forbidden("only admins manage the directory"))
    }
}

impl Broker {
    /// `GET /v1/admin/agents`: the company's agents, former ones aside.
    pub fn admin_agents(&self, viewer: &Agent) -> Result<Vec<AdminAgent>> {
        admin_only(viewer)?;
        let company = self.company(viewer.company_index);
        Ok(company
            .agents
            .iter()
            .filter(|a| !a.retired)
            .map(|a| AdminAgent::of(a))
            .collect())
    }

    /// `POST /v1/admin/agents`: a new agent and its token (shown once).
    pub fn admin_add_agent(&self, viewer: &Agent, new: NewAgent) -> Result<(AdminAgent, String)> {
        self.writable()?;
        admin_only(viewer)?;
        let mut cx = self.lock(viewer.company_index);
        if !valid_id(&new.id) || new.id == "customer" || new.id == "auto" {
            return Err(Error::bad_request(
                "id must be 1 to 64 of a-z, A-Z, 0-9, '-', '_', '.' (not customer or auto)",
            ));
        }
        if cx.company.agent(&new.id).is_some() {
            return Err(Error::conflict(format!("agent \"{}\" exists", new.id)));
        }
        if cx.company.agents.len() >= MAX_AGENTS {
            return Err(Error::conflict(format!(
                "a company has at most {MAX_AGENTS} agents"
            )));
        }
        let token = new_token();
        let rec = AgentRecord {
            id: new.id,
            name: new.name,
            groups: new.groups,
            admin: new.admin,
            max_cases: new.max_cases.unwrap_or(5),
            disabled: false,
            token_hash: hash_token(&token),
        };
        cx.check(&rec)?;
        cx.apply(Change::AgentSet(Box::new(rec.clone())));
        let view = AdminAgent::of(cx.company.agent(&rec.id).expect("just added"));
        audit(&self.shared.metrics, viewer, "agent_added", &rec.id);
        Ok((view, token))
    }

    /// `PATCH /v1/admin/agents/{id}`.
    pub fn admin_update_agent(
        &self,
        viewer: &Agent,
        id: &str,
        patch: AgentPatch,
    ) -> Result<AdminAgent> {
        self.writable()?;
        admin_only(viewer)?;
        let mut cx = self.lock(viewer.company_index);
        let mut rec = cx.api_agent(id)?;
        if let Some(name) = patch.name {
            rec.name = name;
        }
        if let Some(groups) = patch.groups {
            rec.groups = groups;
        }
        if let Some(admin) = patch.admin {
            rec.admin = admin;
        }
        if let Some(max) = patch.max_cases {
            rec.max_cases = max;
        }
        if let Some(disabled) = patch.disabled {
            rec.disabled = disabled;
        }
        cx.check(&rec)?;
        let before = cx.api_agent(id)?;
        if rec == before {
            return Ok(AdminAgent::of(cx.company.agent(id).expect("exists")));
        }
        cx.apply(Change::AgentSet(Box::new(rec.clone())));
        let index = cx.company.agent(id).expect("set").index;
        cx.sign_out(index);
        audit(&self.shared.metrics, viewer, "agent_changed", id);
        Ok(AdminAgent::of(&cx.company.agents[index]))
    }

    /// `POST /v1/admin/agents/{id}/token`: a new token; the old one stops
    /// working at once.
    pub fn admin_agent_token(&self, viewer: &Agent, id: &str) -> Result<String> {
        self.writable()?;
        admin_only(viewer)?;
        let mut cx = self.lock(viewer.company_index);
        let mut rec = cx.api_agent(id)?;
        let token = new_token();
        rec.token_hash = hash_token(&token);
        cx.apply(Change::AgentSet(Box::new(rec)));
        let index = cx.company.agent(id).expect("set").index;
        cx.sign_out(index);
        audit(&self.shared.metrics, viewer, "agent_token", id);
        Ok(token)
    }

    /// `DELETE /v1/admin/agents/{id}`: retired, its id kept in the history.
    pub fn admin_remove_agent(&self, viewer: &Agent, id: &str) -> Result<()> {
        self.writable()?;
        admin_only(viewer)?;
        let mut cx = self.lock(viewer.company_index);
        cx.api_agent(id)?;
        if id == viewer.id {
            return Err(Error::conflict("an admin cannot delete itself"));
        }
        cx.apply(Change::AgentRemoved { id: id.to_string() });
        let index = cx.company.agent(id).expect("kept").index;
        cx.sign_out(index);
        audit(&self.shared.metrics, viewer, "agent_deleted", id);
        Ok(())
    }
}

/// The most groups one company may have (deleted ones included).
pub const MAX_GROUPS: usize = 1000;

/// `POST /v1/admin/groups`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    pub id: String,
    pub name: String,
}

/// `PATCH /v1/admin/groups/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPatch {
    pub name: Option<String>,
}

/// A group as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct AdminGroup {
    pub id: String,
    pub name: String,
    /// `config` or `api`, as for agents.
    pub source: &'static str,
}

impl AdminGroup {
    fn of(g: &crate::directory::Group) -> AdminGroup {
        AdminGroup {
            id: g.id.clone(),
            name: g.name.clone(),
            source: if g.from_api { "api" } else { "config" },
        }
    }
}

impl Broker {
    /// `GET /v1/groups`: the company's groups the agent sees (an admin:
    /// all), in the company's order.
    pub fn groups(&self, viewer: &Agent) -> Vec<GroupInfo> {
        let company = self.company(viewer.company_index);
        company
            .live_groups_of(viewer)
            .map(|(_, g)| GroupInfo {
                id: g.id.clone(),
                name: g.name.clone(),
            })
            .collect()
    }

    /// `GET /v1/admin/groups`.
    pub fn admin_groups(&self, viewer: &Agent) -> Result<Vec<AdminGroup>> {
        admin_only(viewer)?;
        let company = self.company(viewer.company_index);
        Ok(company
            .group_info
            .iter()
            .filter(|g| !g.removed)
            .map(AdminGroup::of)
            .collect())
    }

    /// `POST /v1/admin/groups`: a new group (or one deleted before, back).
    pub fn admin_add_group(&self, viewer: &Agent, new: NewGroup) -> Result<AdminGroup> {
        self.writable()?;
        admin_only(viewer)?;
        let mut cx = self.lock(viewer.company_index);
        if !valid_id(&new.id) {
            return Err(Error::bad_request(
                "id must be 1 to 64 of a-z, A-Z, 0-9, '-', '_', '.'",
            ));
        }
        check_name(&new.name)?;
        if cx.company.has_group(&new.id) {
            return Err(Error::conflict(format!("group \"{}\" exists", new.id)));
        }
        if cx.company.group(&new.id).is_none() && cx.company.groups.len() >= MAX_GROUPS {
            return Err(Error::conflict(format!(
                "a company has at most {MAX_GROUPS} groups"
            )));
        }
        let rec = GroupRecord {
            id: new.id,
            name: new.name,
            removed: false,
        };
        cx.apply(Change::GroupSet(Box::new(rec.clone())));
        audit(&self.shared.metrics, viewer, "group_added", &rec.id);
        let g = cx.company.group(&rec.id).expect("just added");
        Ok(AdminGroup::of(&cx.company.group_info[g]))
    }

    /// `PATCH /v1/admin/groups/{id}`.
    pub fn admin_update_group(
        &self,
        viewer: &Agent,
        id: &str,
        patch: GroupPatch,
    ) -> Result<AdminGroup> {
        self.writable()?;
        admin_only(viewer)?;
        let mut cx = self.lock(viewer.company_index);
        let mut rec = cx.api_group(id)?;
        if let Some(name) = patch.name {
            check_name(&name)?;
            rec.name = name;
        }
        if rec != cx.api_group(id)? {
            cx.apply(Change::GroupSet(Box::new(rec)));
            audit(&self.shared.metrics, viewer, "group_changed", id);
        }
        let g = cx.company.group(id).expect("exists");
        Ok(AdminGroup::of(&cx.company.group_info[g]))
    }

    /// `DELETE /v1/admin/groups/{id}`: only while no open case, agent or
    /// module key uses it (409 naming what does); the cases that ended in
    /// it keep it.
    pub fn admin_remove_group(&self, viewer: &Agent, id: &str) -> Result<()> {
        self.writable()?;
        admin_only(viewer)?;
        let mut cx = self.lock(viewer.company_index);
        let mut rec = cx.api_group(id)?;
        let g = cx.company.group(id).expect("exists");
        if cx.st.index.has_open(g) {
            return Err(Error::conflict(format!(
                "group \"{id}\" still has open cases: close or transfer them first"
            )));
        }
        if let Some(a) = cx
            .company
            .agents
            .iter()
            .find(|a| !a.retired && a.member_of_index(g))
        {
            return Err(Error::conflict(format!(
                "group \"{id}\" still has agents (\"{}\"): take them out of it first",
                a.id
            )));
        }
        let dir = self.shared.dir.load();
        if let Some((key, _)) = dir
            .modules()
            .find(|(_, m)| m.company_index == cx.shard && m.group_index == g)
        {
            return Err(Error::conflict(format!(
                "group \"{id}\" still has module keys (\"{key}\"): move or delete them first"
            )));
        }
        rec.removed = true;
        cx.apply(Change::GroupSet(Box::new(rec)));
        audit(&self.shared.metrics, viewer, "group_deleted", id);
        Ok(())
    }
}

/// A display name: 1 to 100 characters.
fn check_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0 || n > limits::NAME {
        return Err(Error::bad_request(format!(
            "name must be 1 to {} characters",
            limits::NAME
        )));
    }
    Ok(())
}

/// `POST /v1/admin/modules`: a key is drawn when none is given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewModule {
    pub key: Option<String>,
    pub group: String,
    pub default_assignee: Option<String>,
}

/// `PATCH /v1/admin/modules/{key}`: any of the fields (`default_assignee`
/// null clears it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulePatch {
    pub group: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub default_assignee: Option<Option<String>>,
}

/// A field that is there, even as null, is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A module key as the admin API shows it, with the customer's help link.
#[derive(Debug, Serialize)]
pub struct AdminModule {
    pub key: String,
    pub group: String,
    pub default_assignee: Option<String>,
    /// The help page for this key, on this broker.
    pub help_path: String,
    /// `config` or `api`, as for agents.
    pub source: &'static str,
}

impl AdminModule {
    fn of(key: &str, m: &crate::directory::Module) -> AdminModule {
        AdminModule {
            key: key.to_string(),
            group: m.group.clone(),
            default_assignee: m.default_assignee.clone(),
            help_path: format!("/help/{key}"),
            source: if m.from_api { "api" } else { "config" },
        }
    }
}

impl Broker {
    /// `GET /v1/admin/modules`: the company's module keys, by key.
    pub fn admin_modules(&self, viewer: &Agent) -> Result<Vec<AdminModule>> {
        admin_only(viewer)?;
        let dir = self.directory();
        let mut out: Vec<AdminModule> = dir
            .modules()
            .filter(|(_, m)| m.company_index == viewer.company_index)
            .map(|(k, m)| AdminModule::of(k, m))
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// `POST /v1/admin/modules`.
    pub fn admin_add_module(&self, viewer: &Agent, new: NewModule) -> Result<AdminModule> {
        self.writable()?;
        admin_only(viewer)?;
        let mut cx = self.lock(viewer.company_index);
        let key = match new.key {
            Some(k) => k,
            None => format!("qs-{}", hex::encode(rand::random::<[u8; 6]>())),
        };
        if !valid_id(&key) {
            return Err(Error::bad_request(
                "key must be 1 to 64 of a-z, A-Z, 0-9, '-', '_', '.'",
            ));
        }
        // Keys are unique across companies: one of another company is a
        // conflict too (it says no more than its help page does).
        if self.shared.dir.load().module(&key).is_some() {
            return Err(Error::conflict(format!("module key \"{key}\" exists")));
        }
        let rec = ModuleRecord {
            key: key.clone(),
            group: new.group,
            default_assignee: new.default_assignee,
        };
        cx.check_module(&rec)?;
        cx.apply(Change::ModuleSet(Box::new(rec)));
        audit(&self.shared.metrics, viewer, "module_added", &key);
        let dir = self.shared.dir.load();
        Ok(AdminModule::of(&key, dir.module(&key).expect("just added")))
    }

    /// `PATCH /v1/admin/modules/{key}`.
    pub fn admin_update_module(
        &self,
        viewer: &Agent,
        key: &str,
        patch: ModulePatch,
    ) -> Result<AdminModule> {
        self.writable()?;
        admin_only(viewer)?;
        let mut cx = self.lock(viewer.company_index);
        let mut rec = cx.api_module(key)?;
        if let Some(group) = patch.group {
            rec.group = group;
        }
        if let Some(assignee) = patch.default_assignee {
            rec.default_assignee = assignee;
        }
        cx.check_module(&rec)?;
        cx.apply(Change::ModuleSet(Box::new(rec)));
        audit(&self.shared.metrics, viewer, "module_changed", key);
        let dir = self.shared.dir.load();
        Ok(AdminModule::of(key, dir.module(key).expect("set")))
    }

    /// `DELETE /v1/admin/modules/{key}`: help requests with it are refused
    /// from now on; the cases it made stay.
    pub fn admin_remove_module(&self, viewer: &Agent, key: &str) -> Result<()> {
        self.writable()?;
        admin_only(viewer)?;
        let mut cx = self.lock(viewer.company_index);
        cx.api_module(key)?;
        cx.apply(Change::ModuleRemoved {
            key: key.to_string(),
        });
        audit(&self.shared.metrics, viewer, "module_deleted", key);
        Ok(())
    }
}

/// The export of one company, in the config file's own shape.
#[derive(Serialize)]
struct Export {
    companies: Vec<ExportCompany>,
}

#[derive(Serialize)]
struct ExportCompany {
    id: String,
    name: String,
    assignment: crate::config::Assignment,
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    offer_timeout: Option<std::time::Duration>,
    groups: Vec<ExportGroup>,
    agents: Vec<ExportAgent>,
    modules: Vec<ExportModule>,
}

#[derive(Serialize)]
struct ExportGroup {
    id: String,
    name: String,
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    sla_first_response: Option<std::time::Duration>,
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    sla_resolution: Option<std::time::Duration>,
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    offer_timeout: Option<std::time::Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    closed_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hours: Option<crate::hours::HoursConfig>,
}

#[derive(Serialize)]
struct ExportAgent {
    id: String,
    name: String,
    token_sha256: String,
    groups: Vec<String>,
    admin: bool,
    max_cases: u32,
}

#[derive(Serialize)]
struct ExportModule {
    key: String,
    group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    default_assignee: Option<String>,
}

impl Broker {
    /// `GET /v1/admin/export`: the company's live directory as a config
    /// file's `[[companies]]` table (tokens as their SHA-256; disabled and
    /// deleted agents left out), for a backup or another broker.
    pub fn admin_export(&self, viewer: &Agent) -> Result<String> {
        admin_only(viewer)?;
        let dir = self.directory();
        let company = &dir.companies()[viewer.company_index];
        let mut modules: Vec<ExportModule> = dir
            .modules()
            .filter(|(_, m)| m.company_index == viewer.company_index)
            .map(|(key, m)| ExportModule {
                key: key.clone(),
                group: m.group.clone(),
                default_assignee: m.default_assignee.clone(),
            })
            .collect();
        modules.sort_by(|a, b| a.key.cmp(&b.key));
        let export = Export {
            companies: vec![ExportCompany {
                id: company.id.clone(),
                name: company.name.clone(),
                assignment: company.assignment,
                offer_timeout: company.offer_timeout,
                groups: company
                    .group_info
                    .iter()
                    .filter(|g| !g.removed)
                    .map(|g| ExportGroup {
                        id: g.id.clone(),
                        name: g.name.clone(),
                        sla_first_response: g.sla_first_response,
                        sla_resolution: g.sla_resolution,
                        offer_timeout: g.offer_timeout,
                        closed_message: g.closed_message.clone(),
                        hours: g.hours.as_ref().map(|h| h.config().clone()),
                    })
                    .collect(),
                agents: company
                    .agents
                    .iter()
                    .filter(|a| a.active())
                    .map(|a| ExportAgent {
                        id: a.id.clone(),
                        name: a.name.clone(),
                        token_sha256: hex::encode(a.record().token_hash),
                        groups: a.groups.clone(),
                        admin: a.admin,
                        max_cases: a.max_cases,
                    })
                    .collect(),
                modules,
            }],
        };
        toml::to_string(&export)
            .map_err(|e| Error::new(crate::protocol::ErrorCode::Internal, e.to_string()))
    }
}

/// Every directory change is logged (who, what, when; never a token) and
/// counted in `casebroker_directory_changes_total`.
fn audit(metrics: &crate::metrics::Metrics, by: &Agent, what: &'static str, agent: &str) {
    metrics.directory_changed(what);
    tracing::info!(company = %by.company, by = %by.id, target = %agent, at = %Utc::now(), "directory: {what}");
}

impl Locked<'_> {
    /// The record of an agent the API may change: `not_found` for an
    /// unknown (or deleted, or other company's) id, `conflict` for one the
    /// config file declares.
    fn api_agent(&self, id: &str) -> Result<AgentRecord> {
        let a = self
            .company
            .agent(id)
            .filter(|a| !a.retired)
            .ok_or_else(Error::not_found)?;
        if !a.from_api {
            return Err(Error::conflict(format!(
                "agent \"{id}\" is declared in the config file: change it there"
            )));
        }
        Ok(a.record())
    }

    /// The record of a group the API may change: `not_found` for an
    /// unknown or deleted id, `conflict` for one the config file declares.
    fn api_group(&self, id: &str) -> Result<GroupRecord> {
        let g = self
            .company
            .group(id)
            .map(|g| &self.company.group_info[g])
            .filter(|g| !g.removed)
            .ok_or_else(Error::not_found)?;
        if !g.from_api {
            return Err(Error::conflict(format!(
                "group \"{id}\" is declared in the config file: change it there"
            )));
        }
        Ok(g.record())
    }

    /// Checks a record's fields against the company; errors name the field.
    fn check(&self, rec: &AgentRecord) -> Result<()> {
        check_name(&rec.name)?;
        if rec.groups.is_empty() {
            return Err(Error::bad_request("groups must name at least one group"));
        }
        if let Some(g) = rec.groups.iter().find(|g| !self.company.has_group(g)) {
            return Err(Error::bad_request(format!("groups: unknown group \"{g}\"")));
        }
        if rec.max_cases > MAX_CASES {
            return Err(Error::bad_request(format!(
                "max_cases must be at most {MAX_CASES}"
            )));
        }
        Ok(())
    }

    /// The module keys of this company added through the API.
    pub(crate) fn api_modules(&self) -> Vec<ModuleRecord> {
        let dir = self.shared.dir.load();
        let mut out: Vec<ModuleRecord> = dir
            .modules()
            .filter(|(_, m)| m.company_index == self.shard && m.from_api)
            .map(|(k, m)| m.record(k))
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The record of a module key the API may change: `not_found` for an
    /// unknown key or another company's, `conflict` for one the config file
    /// declares.
    fn api_module(&self, key: &str) -> Result<ModuleRecord> {
        let dir = self.shared.dir.load();
        let m = dir
            .module(key)
            .filter(|m| m.company_index == self.shard)
            .ok_or_else(Error::not_found)?;
        if !m.from_api {
            return Err(Error::conflict(format!(
                "module key \"{key}\" is declared in the config file: change it there"
            )));
        }
        Ok(m.record(key))
    }

    /// Checks a module's group and default assignee; errors name the field.
    fn check_module(&self, rec: &ModuleRecord) -> Result<()> {
        let Some(group) = self
            .company
            .group(&rec.group)
            .filter(|_| self.company.has_group(&rec.group))
        else {
            return Err(Error::bad_request(format!(
                "group: unknown group \"{}\"",
                rec.group
            )));
        };
        if let Some(a) = &rec.default_assignee {
            let agent = self
                .company
                .agent(a)
                .filter(|x| x.active())
                .ok_or_else(|| {
                    Error::bad_request(format!("default_assignee: unknown agent \"{a}\""))
                })?;
            if !agent.member_of_index(group) {
                return Err(Error::bad_request(format!(
                    "default_assignee: \"{a}\" is not a member of group \"{}\"",
                    rec.group
                )));
            }
        }
        Ok(())
    }

    /// The groups of this company added through the API (deleted ones
    /// too), in index order.
    pub(crate) fn api_groups(&self) -> Vec<GroupRecord> {
        self.company
            .group_info
            .iter()
            .filter(|g| g.from_api)
            .map(|g| g.record())
            .collect()
    }

    /// Sets (adds, renames or deletes) a group of this company: a new
    /// directory with it is swapped in, the shard makes room for a new
    /// group, and dashboards are told the groups they see.
    pub(crate) fn set_group(&mut self, rec: &GroupRecord) {
        let shard = self.shard;
        let mut index = 0;
        self.shared.dir.rcu(|dir| {
            let (next, i) = dir.with_group(shard, rec);
            index = i;
            next
        });
        self.company = self.shared.dir.load().companies()[shard].clone();
        while self.st.lines.groups() <= index {
            self.st.lines.add_group();
            self.st.windows.push(Default::default());
            self.st.stats_told.push(None);
            self.st.index.add_group();
            self.st.rr.push(None);
        }
        let groups = self
            .company
            .group_info
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.removed)
            .map(|(index, g)| GroupEntry {
                index,
                group: GroupInfo {
                    id: g.id.clone(),
                    name: g.name.clone(),
                },
            })
            .collect();
        self.emit(Effect::Groups { groups });
    }

    /// Sets or removes a module key of this company.
    pub(crate) fn set_module(&mut self, key: &str, rec: Option<&ModuleRecord>) {
        let shard = self.shard;
        self.shared.dir.rcu(|dir| dir.with_module(shard, key, rec));
    }

    /// Sets (or, with `retire`, retires) an agent: a new directory with it
    /// is swapped in, the shard makes room for a new agent, and dashboards
    /// are told.
    pub(crate) fn set_agent(&mut self, rec: &AgentRecord, retire: bool) {
        let shard = self.shard;
        let before = self.company.agent(&rec.id).cloned();
        let mut index = 0;
        self.shared.dir.rcu(|dir| {
            let (next, i) = dir.with_agent(shard, rec, retire);
            index = i;
            next
        });
        self.company = self.shared.dir.load().companies()[shard].clone();
        while self.st.agents.len() <= index {
            self.st.agents.push(AgentLive::new());
            self.st.index.add_agent();
        }
        if retire {
            // Told to those that saw it, by the groups it had.
            let groups = before
                .as_ref()
                .map(|b| b.group_indexes.clone())
                .unwrap_or_default();
            self.emit(Effect::Agent {
                agent: self.agent_status(index),
                groups: groups.into(),
            });
        } else {
            self.push_agent(index);
        }
        // Its connections (on every node: each applies this) end: signed
        // out (4500) when it may no longer sign in with what it used,
        // resumed (4001) when it is signed in with what it no longer is.
        if let Some(before) = before {
            let after = &self.company.agents[index];
            let code = if !after.active() || !after.same_token(&before) {
                Some(close::UNAUTHORIZED)
            } else if after.record() != before.record() {
                Some(close::SLOW)
            } else {
                None
            };
            if let Some(code) = code {
                self.close_conns_of(index, code);
            }
        }
    }

    /// Ends the agent's connections here with `code`.
    fn close_conns_of(&mut self, agent: usize, code: u16) {
        let conns = self.st.agents[agent].conns.clone();
        if !conns.is_empty() {
            self.emit(Effect::Close {
                to: conns,
                code,
                reason: if code == close::UNAUTHORIZED {
                    "signed out by an admin"
                } else {
                    "the agent was changed; resume"
                },
            });
        }
    }

    /// Returns the agent's open cases to the line when it may no longer
    /// have them (its connections were closed when the change applied).
    fn sign_out(&mut self, agent: usize) {
        if !self.company.agents[agent].active() {
            self.return_cases_of(agent);
        }
    }

    /// Returns the open cases assigned to `agent` to the line, unassigned,
    /// each with its event; automated assignment takes them from there.
    pub(crate) fn return_cases_of(&mut self, agent: usize) -> usize {
        let codes: Vec<_> = self
            .st
            .index
            .of_assignee(agent, None)
            .map(|(_, code)| *code)
            .filter(|code| self.case(code).is_ok_and(|c| c.is_open()))
            .collect();
        for &code in &codes {
            self.apply(Change::Returned {
                code,
                at: Utc::now(),
            });
        }
        if !codes.is_empty() {
            self.dispatch();
        }
        codes.len()
    }
}
