//! Companies at run time, under the operator token: added with a first
//! admin, listed, deleted. A company takes the next free shard (the broker
//! keeps `max_companies` of them); its creation and deletion are changes of
//! its own shard, journaled like any other.

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::config::hash_token;
use crate::config::validate::valid_id;
use crate::directory::{AgentRecord, CompanyRecord, GroupRecord};
use crate::error::{Error, Result};
use crate::protocol::close;

use super::super::change::Change;
use super::super::effect::Effect;
use super::super::shard::Locked;
use super::super::{Broker, limits};
use super::admin::{AdminAgent, new_token};

/// The group a new company starts with (its first admin is in it).
pub const FIRST_GROUP: (&str, &str) = ("support", "Support");

/// `POST /v1/admin/companies`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCompany {
    pub id: String,
    pub name: String,
    pub admin: NewAdmin,
}

/// The first admin of a new company.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAdmin {
    pub id: String,
    pub name: String,
}

/// A company as the operator sees it.
#[derive(Debug, Serialize)]
pub struct AdminCompany {
    pub id: String,
    pub name: String,
    /// `config` or `api`, as for agents.
    pub source: &'static str,
    /// Its groups and agents (not deleted), and its open cases.
    pub groups: usize,
    pub agents: usize,
    pub open_cases: usize,
}

impl Broker {
    /// True when `token` is the operator's (compared in constant time).
    pub fn is_operator(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.shared
            .config
            .operator_hash()
            .is_some_and(|h| bool::from(h.ct_eq(&hash_token(token))))
    }

    /// `GET /v1/admin/companies`: every company served, in order.
    pub fn admin_companies(&self) -> Vec<AdminCompany> {
        let dir = self.directory();
        dir.companies()
            .iter()
            .filter(|c| !c.removed)
            .map(|c| {
                let open_cases = self.lock(c.index).st.index.open_count();
                AdminCompany {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    source: if c.from_api { "api" } else { "config" },
                    groups: c.group_info.iter().filter(|g| !g.removed).count(),
                    agents: c.agents.iter().filter(|a| a.active()).count(),
                    open_cases,
                }
            })
            .collect()
    }

    /// Checks a new company's fields; errors name the field.
    pub fn check_new_company(&self, new: &NewCompany) -> Result<()> {
        if !valid_id(&new.id) {
            return Err(Error::bad_request(
                "id must be 1 to 64 of a-z, A-Z, 0-9, '-', '_', '.'",
            ));
        }
        check_name("name", &new.name)?;
        if !valid_id(&new.admin.id) || new.admin.id == "customer" || new.admin.id == "auto" {
            return Err(Error::bad_request(
                "admin.id must be 1 to 64 of a-z, A-Z, 0-9, '-', '_', '.' (not customer or auto)",
            ));
        }
        check_name("admin.name", &new.admin.name)?;
        if let Some(c) = self.directory().company(&new.id) {
            return Err(Error::conflict(if c.removed {
                format!("company \"{}\" was deleted; its id stays taken", new.id)
            } else {
                format!("company \"{}\" exists", new.id)
            }));
        }
        Ok(())
    }

    /// Makes sure the company `rec` exists here: added in the next free
    /// shard when new (and, with `record`, its creation recorded as the
    /// shard's first change). Returns its shard.
    pub fn ensure_company(&self, rec: &CompanyRecord, record: bool) -> Result<usize> {
        let _one_at_a_time = self.shared.adding.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = self.directory().company(&rec.id) {
            return Ok(c.index);
        }
        let index = self.directory().companies().len();
        if index >= self.shared.shards.len() {
            return Err(Error::conflict(format!(
                "this broker serves at most {} companies (max_companies)",
                self.shared.shards.len()
            )));
        }
        self.shared.dir.rcu(|dir| dir.with_company(rec).0);
        self.shared.sink.company_added(index, &rec.id);
        if record {
            let mut cx = self.lock(index);
            cx.apply(Change::CompanySet(Box::new(rec.clone())));
        }
        if let Some(hook) = self.shared.on_company.get() {
            hook(index);
        }
        Ok(index)
    }

    /// `POST /v1/admin/companies`, once [`Broker::check_new_company`]
    /// passed (and, in a cluster, the company is registered): a new company
    /// with its first group and admin; the admin's token, shown once.
    pub fn admin_add_company(&self, new: NewCompany) -> Result<(AdminCompany, AdminAgent, String)> {
        self.writable()?;
        let rec = CompanyRecord {
            id: new.id.clone(),
            name: new.name.clone(),
            removed: false,
        };
        let shard = self.ensure_company(&rec, !self.shared.replicated)?;
        let token = self.first_admin(shard, new.admin)?;
        tracing::info!(company = %rec.id, by = "operator", at = %Utc::now(), "directory: company_added");
        self.shared.metrics.directory_changed("company_added");
        let company = self
            .admin_companies()
            .into_iter()
            .find(|c| c.id == rec.id)
            .expect("just added");
        let dir = self.directory();
        let agent = dir.companies()[shard]
            .agents
            .first()
            .map(|a| AdminAgent::of(a))
            .expect("the first admin");
        Ok((company, agent, token))
    }

    /// Gives a new company (shard) its first group and admin, in one
    /// commit; returns the admin's token.
    pub fn first_admin(&self, shard: usize, admin: NewAdmin) -> Result<String> {
        let mut cx = self.lock(shard);
        if !cx.company.agents.is_empty() {
            return Err(Error::conflict(format!(
                "company \"{}\" exists",
                cx.company.id
            )));
        }
        let token = new_token();
        cx.apply(Change::GroupSet(Box::new(GroupRecord {
            id: FIRST_GROUP.0.into(),
            name: FIRST_GROUP.1.into(),
            removed: false,
        })));
        cx.apply(Change::AgentSet(Box::new(AgentRecord {
            id: admin.id,
            name: admin.name,
            groups: vec![FIRST_GROUP.0.into()],
            admin: true,
            max_cases: 5,
            disabled: false,
            token_hash: hash_token(&token),
        })));
        Ok(token)
    }

    /// `DELETE /v1/admin/companies/{id}`: its cases are deleted, everyone
    /// connected to it is signed out (4500), its tokens and module keys stop
    /// working; the id stays taken. A company of the config file is
    /// deleted there (409).
    pub fn admin_remove_company(&self, id: &str) -> Result<usize> {
        self.writable()?;
        let dir = self.directory();
        let c = dir
            .company(id)
            .filter(|c| !c.removed)
            .ok_or_else(Error::not_found)?;
        if !c.from_api {
            return Err(Error::conflict(format!(
                "company \"{id}\" is declared in the config file: remove it there"
            )));
        }
        let mut cx = self.lock(c.index);
        let codes: Vec<_> = cx.st.cases.keys().copied().collect();
        for &code in &codes {
            cx.apply(Change::Purged { code });
        }
        let mut rec = cx.company.record();
        rec.removed = true;
        cx.apply(Change::CompanySet(Box::new(rec)));
        tracing::info!(company = %id, by = "operator", cases = codes.len(), at = %Utc::now(), "directory: company_deleted");
        self.shared.metrics.directory_changed("company_deleted");
        Ok(codes.len())
    }
}

/// A display name of 1 to 100 characters; the error names `field`.
fn check_name(field: &str, name: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0 || n > limits::NAME {
        return Err(Error::bad_request(format!(
            "{field} must be 1 to {} characters",
            limits::NAME
        )));
    }
    Ok(())
}

impl Locked<'_> {
    /// Sets (adds, renames or deletes) this company: a deleted one's
    /// connections, agents' and customers', are closed with 4500.
    pub(crate) fn set_company(&mut self, rec: &CompanyRecord) {
        self.shared.dir.rcu(|dir| dir.with_company(rec).0);
        self.company = self.shared.dir.load().companies()[self.shard].clone();
        if rec.removed {
            let conns: Vec<_> = self.st.conns.keys().copied().collect();
            if !conns.is_empty() {
                self.emit(Effect::Close {
                    to: conns,
                    code: close::UNAUTHORIZED,
                    reason: "the company was deleted",
                });
            }
        }
    }
}
