//! Who exists: companies, groups, agents and module keys, built from the
//! config and what the admin API added, and replaced whole (a new
//! snapshot) when the admin API changes it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use subtle::ConstantTimeEq;

use crate::config::{Assignment, Config, hash_token};
use crate::protocol::AgentInfo;

/// An agent added through the admin API, as it is stored (journal,
/// images) and replayed: by id, its groups by id, its token as a hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    pub name: String,
    pub groups: Vec<String>,
    pub admin: bool,
    pub max_cases: u32,
    pub disabled: bool,
    pub token_hash: [u8; 32],
}

/// A company added or deleted by the operator through the admin API, as
/// stored and replayed. A deleted company keeps its place and its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyRecord {
    pub id: String,
    pub name: String,
    pub removed: bool,
}

/// A group added, renamed or deleted through the admin API, as stored and
/// replayed. A deleted group keeps its place (the history refers to it)
/// and comes back with its id if added again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub id: String,
    pub name: String,
    pub removed: bool,
}

/// One of a company's groups.
#[derive(Clone, Debug)]
pub struct Group {
    pub id: String,
    pub name: String,
    /// Added through the admin API (else declared in the config file).
    pub from_api: bool,
    /// Deleted through the admin API: kept for the cases that ended in it.
    pub removed: bool,
    /// Service levels (the config file's groups only).
    pub sla_first_response: Option<std::time::Duration>,
    pub sla_resolution: Option<std::time::Duration>,
    /// The group's own `offer_timeout` (the config file's groups only).
    pub offer_timeout: Option<std::time::Duration>,
    /// Opening hours (the config file's groups only): none, always open.
    pub hours: Option<Arc<crate::hours::Hours>>,
    /// What customers read outside the opening hours.
    pub closed_message: Option<String>,
}

impl Group {
    /// Outside its opening hours at `now`: its `closed_message` (if it
    /// has one) and when it opens next (if it does within 400 days).
    /// `None` while open, and always for a group without hours.
    pub fn closed_at(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<(Option<&str>, Option<chrono::DateTime<chrono::Utc>>)> {
        let hours = self.hours.as_ref()?;
        (!hours.is_open(now)).then(|| (self.closed_message.as_deref(), hours.opens_at(now)))
    }

    /// The group as stored, for one added through the API.
    pub fn record(&self) -> GroupRecord {
        GroupRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            removed: self.removed,
        }
    }
}

/// A module key added through the admin API, as stored and replayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRecord {
    pub key: String,
    pub group: String,
    pub default_assignee: Option<String>,
}

/// An agent as the broker knows it.
#[derive(Debug)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub company: String,
    /// The agent's groups, in config order.
    pub groups: Vec<String>,
    /// The same groups, for look-ups.
    pub group_set: Arc<HashSet<String>>,
    pub admin: bool,
    pub max_cases: u32,
    /// The company's place in the directory: its shard.
    pub company_index: usize,
    /// The agent's place in its company, in config order.
    pub index: usize,
    /// The agent's groups as indexes into the company's groups.
    pub group_indexes: Vec<usize>,
    /// Removed from the config (or deleted through the API), known from
    /// the data: shown in the history by id, never signed in, never
    /// assigned.
    pub retired: bool,
    /// Added through the admin API (else declared in the config file, and
    /// changed there).
    pub from_api: bool,
    /// Disabled through the admin API: cannot sign in or be assigned.
    pub disabled: bool,
    token_hash: [u8; 32],
}

impl Agent {
    /// True when the agent may see cases of `group` (admins see them all).
    pub fn sees(&self, group: &str) -> bool {
        self.admin || self.group_set.contains(group)
    }

    /// True when the agent is a member of `group`.
    pub fn member_of(&self, group: &str) -> bool {
        self.group_set.contains(group)
    }

    /// True when the agent is a member of the company's group `group`.
    pub fn member_of_index(&self, group: usize) -> bool {
        self.group_indexes.contains(&group)
    }

    /// True when the agent may see cases of the company's group `group`.
    pub fn sees_index(&self, group: usize) -> bool {
        self.admin || self.member_of_index(group)
    }

    /// True when both carry the same token.
    pub fn same_token(&self, other: &Agent) -> bool {
        bool::from(self.token_hash.ct_eq(&other.token_hash))
    }

    /// True when the agent may sign in and be given cases.
    pub fn active(&self) -> bool {
        !self.retired && !self.disabled
    }

    /// The agent as stored, for one added through the API.
    pub fn record(&self) -> AgentRecord {
        AgentRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            groups: self.groups.clone(),
            admin: self.admin,
            max_cases: self.max_cases,
            disabled: self.disabled,
            token_hash: self.token_hash,
        }
    }

    /// The agent as `welcome` shows it.
    pub fn info(&self) -> AgentInfo {
        AgentInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            company: self.company.clone(),
            groups: self.groups.clone(),
            admin: self.admin,
        }
    }
}

/// A company profile.
#[derive(Clone, Debug)]
pub struct Company {
    pub id: String,
    pub name: String,
    /// The company's place in the directory: its shard.
    pub index: usize,
    pub assignment: Assignment,
    /// The company's `offer_timeout`, for groups without their own.
    pub offer_timeout: Option<std::time::Duration>,
    /// Group ids by index: the config's, then the API's (deleted ones
    /// kept in place).
    pub groups: Vec<String>,
    /// The same groups, with their names and where they come from.
    pub group_info: Vec<Group>,
    /// Agents in config order (round robin follows it).
    pub agents: Vec<Arc<Agent>>,
    agent_index: HashMap<String, usize>,
    group_index: HashMap<String, usize>,
    /// Added by the operator through the admin API (else declared in the
    /// config file).
    pub from_api: bool,
    /// Deleted by the operator: nobody signs in, no key works.
    pub removed: bool,
    /// The webhook endpoints the config file declares.
    pub webhooks: Vec<crate::webhook::WebhookRecord>,
}

impl Company {
    /// How long an offer of a case of `group` waits for its `accept`;
    /// `None` when automated assignment gives cases straight away.
    pub fn offer_timeout(&self, group: usize) -> Option<std::time::Duration> {
        self.group_info
            .get(group)
            .and_then(|g| g.offer_timeout)
            .or(self.offer_timeout)
    }

    /// The company as stored, for one added through the API.
    pub fn record(&self) -> CompanyRecord {
        CompanyRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            removed: self.removed,
        }
    }

    pub fn agent(&self, id: &str) -> Option<&Arc<Agent>> {
        self.agent_index.get(id).map(|&i| &self.agents[i])
    }

    /// True when the company has this group (and it was not deleted).
    pub fn has_group(&self, group: &str) -> bool {
        self.group(group)
            .is_some_and(|g| !self.group_info[g].removed)
    }

    /// The index of a group of this company (a deleted one included: the
    /// history refers to it).
    pub fn group(&self, group: &str) -> Option<usize> {
        self.group_index.get(group).copied()
    }

    /// The groups' indexes that `agent` may see (admins: all).
    pub fn visible_groups(&self, agent: &Agent) -> Vec<usize> {
        if agent.admin {
            (0..self.groups.len()).collect()
        } else {
            agent.group_indexes.clone()
        }
    }

    /// The groups (not deleted) that `agent` may see: `(index, group)`.
    pub fn live_groups_of<'a>(
        &'a self,
        agent: &'a Agent,
    ) -> impl Iterator<Item = (usize, &'a Group)> + 'a {
        self.group_info
            .iter()
            .enumerate()
            .filter(move |(i, g)| !g.removed && agent.sees_index(*i))
    }
}

/// A QuickSupport module key's target.
#[derive(Clone, Debug)]
pub struct Module {
    pub company: String,
    pub group: String,
    pub default_assignee: Option<String>,
    /// The company's index (its shard).
    pub company_index: usize,
    /// The group's index in its company.
    pub group_index: usize,
    /// The default assignee's index in its company.
    pub default_assignee_index: Option<usize>,
    /// Added through the admin API (else declared in the config file).
    pub from_api: bool,
}

impl Module {
    /// The module as stored, for one added through the API.
    pub fn record(&self, key: &str) -> ModuleRecord {
        ModuleRecord {
            key: key.to_string(),
            group: self.group.clone(),
            default_assignee: self.default_assignee.clone(),
        }
    }
}

/// A module of `company` (index `ci`) from its parts.
fn module_of(
    company: &Company,
    ci: usize,
    group: &str,
    default_assignee: Option<&String>,
    from_api: bool,
) -> Module {
    Module {
        company: company.id.clone(),
        group: group.to_string(),
        default_assignee: default_assignee.cloned(),
        company_index: ci,
        group_index: company.group(group).unwrap_or_default(),
        default_assignee_index: default_assignee.and_then(|a| company.agent(a).map(|a| a.index)),
        from_api,
    }
}

/// Everything the config declares, and the admin API added, indexed.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    /// In config order; a company's index is its shard.
    companies: Vec<Arc<Company>>,
    company_index: HashMap<String, usize>,
    modules: HashMap<String, Module>,
    agents: Vec<Arc<Agent>>,
}

impl Directory {
    /// Builds the directory from a validated config.
    pub fn new(config: &Config) -> Directory {
        let mut dir = Directory::default();
        for (ci, c) in config.companies.iter().enumerate() {
            let mut group_info: Vec<Group> = c
                .groups
                .iter()
                .map(|g| Group {
                    id: g.id.clone(),
                    name: if g.name.is_empty() {
                        g.id.clone()
                    } else {
                        g.name.clone()
                    },
                    from_api: false,
                    removed: false,
                    sla_first_response: g.sla_first_response,
                    sla_resolution: g.sla_resolution,
                    offer_timeout: g.offer_timeout,
                    // Checked when the config was read.
                    hours: g.hours.as_ref().and_then(|h| h.parse().ok()).map(Arc::new),
                    closed_message: g.closed_message.clone(),
                })
                .collect();
            group_info.extend(c.api_groups.iter().map(group_of));
            let groups: Vec<String> = group_info.iter().map(|g| g.id.clone()).collect();
            let group_index: HashMap<String, usize> = groups
                .iter()
                .enumerate()
                .map(|(i, g)| (g.clone(), i))
                .collect();
            let mut agents: Vec<Arc<Agent>> = c
                .agents
                .iter()
                .enumerate()
                .map(|(ai, a)| {
                    Arc::new(Agent {
                        id: a.id.clone(),
                        name: if a.name.is_empty() {
                            a.id.clone()
                        } else {
                            a.name.clone()
                        },
                        company: c.id.clone(),
                        groups: a.groups.clone(),
                        group_set: Arc::new(a.groups.iter().cloned().collect()),
                        admin: a.admin,
                        max_cases: a.max_cases,
                        company_index: ci,
                        index: ai,
                        group_indexes: a
                            .groups
                            .iter()
                            .filter_map(|g| group_index.get(g).copied())
                            .collect(),
                        retired: false,
                        from_api: false,
                        disabled: false,
                        token_hash: a.token_hash(),
                    })
                })
                .collect();
            for rec in &c.api_agents {
                let index = agents.len();
                agents.push(Arc::new(agent_of(rec, &c.id, ci, index, &group_index)));
            }
            for id in &c.former_agents {
                let index = agents.len();
                agents.push(Arc::new(Agent {
                    id: id.clone(),
                    name: id.clone(),
                    company: c.id.clone(),
                    groups: Vec::new(),
                    group_set: Arc::new(HashSet::new()),
                    admin: false,
                    max_cases: 0,
                    company_index: ci,
                    index,
                    group_indexes: Vec::new(),
                    retired: true,
                    from_api: false,
                    disabled: false,
                    token_hash: [0; 32],
                }));
            }
            let agent_index: HashMap<String, usize> = agents
                .iter()
                .enumerate()
                .map(|(i, a)| (a.id.clone(), i))
                .collect();
            if !c.removed {
                dir.agents.extend(agents.iter().cloned());
            }
            dir.company_index.insert(c.id.clone(), ci);
            let company = Arc::new(Company {
                id: c.id.clone(),
                name: if c.name.is_empty() {
                    c.id.clone()
                } else {
                    c.name.clone()
                },
                index: ci,
                assignment: c.assignment,
                offer_timeout: c.offer_timeout,
                groups,
                group_info,
                agents,
                agent_index,
                group_index,
                from_api: c.from_api,
                removed: c.removed,
                webhooks: declared_webhooks(c),
            });
            if c.removed {
                dir.companies.push(company);
                continue;
            }
            let declared = c
                .modules
                .iter()
                .map(|m| (&m.key, &m.group, m.default_assignee.as_ref(), false));
            let added = c
                .api_modules
                .iter()
                .map(|m| (&m.key, &m.group, m.default_assignee.as_ref(), true));
            for (key, group, default_assignee, from_api) in declared.chain(added) {
                let module = module_of(&company, ci, group, default_assignee, from_api);
                dir.modules.insert(key.clone(), module);
            }
            dir.companies.push(company);
        }
        dir
    }

    /// The agent whose token this is. Every agent's hash is compared in
    /// constant time, so the time taken says nothing about the token.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Agent>> {
        let hash = hash_token(token);
        let mut found = None;
        for agent in &self.agents {
            if bool::from(agent.token_hash.ct_eq(&hash)) && agent.active() {
                found = Some(agent.clone());
            }
        }
        found
    }

    pub fn company(&self, id: &str) -> Option<&Company> {
        self.company_index.get(id).map(|&i| &*self.companies[i])
    }

    /// Every company, in config order (index order).
    pub fn companies(&self) -> &[Arc<Company>] {
        &self.companies
    }

    /// Every module key and its target.
    pub fn modules(&self) -> impl Iterator<Item = (&String, &Module)> {
        self.modules.iter()
    }

    /// The module a key names. Keys are public (they ship in client apps),
    /// so an ordinary look-up is fine.
    pub fn module(&self, key: &str) -> Option<&Module> {
        self.modules.get(key)
    }
}

/// The agents who may sign in somewhere: those of companies not deleted.
fn live_agents(companies: &[Arc<Company>]) -> Vec<Arc<Agent>> {
    companies
        .iter()
        .filter(|c| !c.removed)
        .flat_map(|c| c.agents.iter().cloned())
        .collect()
}

/// Builds a group added through the API from its record.
fn group_of(rec: &GroupRecord) -> Group {
    Group {
        id: rec.id.clone(),
        name: rec.name.clone(),
        from_api: true,
        removed: rec.removed,
        sla_first_response: None,
        sla_resolution: None,
        offer_timeout: None,
        hours: None,
        closed_message: None,
    }
}

/// Builds an agent added through the API from its record.
fn agent_of(
    rec: &AgentRecord,
    company: &str,
    company_index: usize,
    index: usize,
    group_index: &HashMap<String, usize>,
) -> Agent {
    Agent {
        id: rec.id.clone(),
        name: if rec.name.is_empty() {
            rec.id.clone()
        } else {
            rec.name.clone()
        },
        company: company.to_string(),
        groups: rec.groups.clone(),
        group_set: Arc::new(rec.groups.iter().cloned().collect()),
        admin: rec.admin,
        max_cases: rec.max_cases,
        company_index,
        index,
        group_indexes: rec
            .groups
            .iter()
            .filter_map(|g| group_index.get(g).copied())
            .collect(),
        retired: false,
        from_api: true,
        disabled: rec.disabled,
        token_hash: rec.token_hash,
    }
}

impl Directory {
    /// A copy in which company `shard` has the module `rec` (added or
    /// replaced by key), or, with `None`, has no module `key`.
    pub fn with_module(&self, shard: usize, key: &str, rec: Option<&ModuleRecord>) -> Directory {
        let mut dir = self.clone();
        match rec {
            Some(rec) => {
                let module = module_of(
                    &dir.companies[shard],
                    shard,
                    &rec.group,
                    rec.default_assignee.as_ref(),
                    true,
                );
                dir.modules.insert(rec.key.clone(), module);
            }
            None => {
                dir.modules.remove(key);
            }
        }
        dir
    }

    /// A copy with the company `rec`: added at the end when new (no
    /// groups, no agents yet), else renamed or deleted (its agents and
    /// module keys then stop working); and the company's index.
    pub fn with_company(&self, rec: &CompanyRecord) -> (Directory, usize) {
        let mut dir = self.clone();
        let index = match dir.company_index.get(&rec.id) {
            Some(&i) => {
                let mut company = (*dir.companies[i]).clone();
                company.name = rec.name.clone();
                company.removed = rec.removed;
                dir.companies[i] = Arc::new(company);
                i
            }
            None => {
                let i = dir.companies.len();
                dir.companies.push(Arc::new(Company {
                    id: rec.id.clone(),
                    name: rec.name.clone(),
                    index: i,
                    assignment: Assignment::default(),
                    offer_timeout: None,
                    groups: Vec::new(),
                    group_info: Vec::new(),
                    agents: Vec::new(),
                    agent_index: HashMap::new(),
                    group_index: HashMap::new(),
                    from_api: true,
                    removed: rec.removed,
                    webhooks: Vec::new(),
                }));
                dir.company_index.insert(rec.id.clone(), i);
                i
            }
        };
        if rec.removed {
            dir.modules.retain(|_, m| m.company_index != index);
            dir.agents = live_agents(&dir.companies);
        }
        (dir, index)
    }

    /// A copy in which company `shard` has the group `rec` (replacing the
    /// group with its id, or added at the end); and the group's index.
    pub fn with_group(&self, shard: usize, rec: &GroupRecord) -> (Directory, usize) {
        let mut dir = self.clone();
        let mut company = (*dir.companies[shard]).clone();
        let index = match company.group_index.get(&rec.id) {
            Some(&i) => {
                company.group_info[i] = group_of(rec);
                i
            }
            None => {
                company.groups.push(rec.id.clone());
                company.group_info.push(group_of(rec));
                company
                    .group_index
                    .insert(rec.id.clone(), company.groups.len() - 1);
                company.groups.len() - 1
            }
        };
        // Modules carry their group's index: unchanged, as a group keeps
        // its place.
        dir.companies[shard] = Arc::new(company);
        (dir, index)
    }

    /// A copy in which company `shard` has the agent `rec` (replacing the
    /// agent with its id, or added at the end), or, with `retire`, that
    /// agent retired; and the agent's index.
    pub fn with_agent(&self, shard: usize, rec: &AgentRecord, retire: bool) -> (Directory, usize) {
        let mut dir = self.clone();
        let mut company = (*dir.companies[shard]).clone();
        let index = company
            .agent_index
            .get(&rec.id)
            .copied()
            .unwrap_or(company.agents.len());
        let mut agent = agent_of(rec, &company.id, shard, index, &company.group_index);
        if retire {
            agent.retired = true;
            agent.groups.clear();
            agent.group_indexes.clear();
            agent.group_set = Arc::new(HashSet::new());
            agent.token_hash = [0; 32];
        }
        let agent = Arc::new(agent);
        if index == company.agents.len() {
            company.agents.push(agent);
            company.agent_index.insert(rec.id.clone(), index);
        } else {
            company.agents[index] = agent;
        }
        dir.companies[shard] = Arc::new(company);
        dir.agents = live_agents(&dir.companies);
        (dir, index)
    }
}

/// The endpoints a company's config declares.
fn declared_webhooks(c: &crate::config::CompanyConfig) -> Vec<crate::webhook::WebhookRecord> {
    c.webhooks
        .iter()
        .map(|w| crate::webhook::WebhookRecord {
            id: w.id.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            description: w.description.clone(),
            disabled: false,
            disabled_reason: None,
            secret: w.secret.0.clone(),
            previous_secret: None,
            previous_until: 0,
            removed: false,
            from_config: true,
        })
        .collect()
}
