//! Who exists: companies, groups, agents and module keys, built once from
//! the config and never changed while the broker runs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::config::{Assignment, Config, hash_token};
use crate::protocol::AgentInfo;

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
#[derive(Debug)]
pub struct Company {
    pub id: String,
    pub name: String,
    pub assignment: Assignment,
    pub groups: Vec<String>,
    /// Agents in config order (round robin follows it).
    pub agents: Vec<Arc<Agent>>,
}

impl Company {
    pub fn agent(&self, id: &str) -> Option<&Arc<Agent>> {
        self.agents.iter().find(|a| a.id == id)
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// A QuickSupport module key's target.
#[derive(Debug)]
pub struct Module {
    pub company: String,
    pub group: String,
    pub default_assignee: Option<String>,
}

/// Everything the config declares, indexed.
#[derive(Debug, Default)]
pub struct Directory {
    companies: HashMap<String, Company>,
    modules: HashMap<String, Module>,
    agents: Vec<Arc<Agent>>,
}

impl Directory {
    /// Builds the directory from a validated config.
    pub fn new(config: &Config) -> Directory {
        let mut dir = Directory::default();
        for c in &config.companies {
            let agents: Vec<Arc<Agent>> = c
                .agents
                .iter()
                .map(|a| {
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
                        token_hash: a.token_hash(),
                    })
                })
                .collect();
            dir.agents.extend(agents.iter().cloned());
            for m in &c.modules {
                dir.modules.insert(
                    m.key.clone(),
                    Module {
                        company: c.id.clone(),
                        group: m.group.clone(),
                        default_assignee: m.default_assignee.clone(),
                    },
                );
            }
            dir.companies.insert(
                c.id.clone(),
                Company {
                    id: c.id.clone(),
                    name: if c.name.is_empty() {
                        c.id.clone()
                    } else {
                        c.name.clone()
                    },
                    assignment: c.assignment,
                    groups: c.groups.iter().map(|g| g.id.clone()).collect(),
                    agents,
                },
            );
        }
        dir
    }

    /// The agent whose token this is. Every agent's hash is compared in
    /// constant time, so the time taken says nothing about the token.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Agent>> {
        let hash = hash_token(token);
        let mut found = None;
        for agent in &self.agents {
            if bool::from(agent.token_hash.ct_eq(&hash)) {
                found = Some(agent.clone());
            }
        }
        found
    }

    pub fn company(&self, id: &str) -> Option<&Company> {
        self.companies.get(id)
    }

    pub fn companies(&self) -> impl Iterator<Item = &Company> {
        self.companies.values()
    }

    /// The module a key names. Keys are public (they ship in client apps),
    /// so an ordinary look-up is fine.
    pub fn module(&self, key: &str) -> Option<&Module> {
        self.modules.get(key)
    }
}
