//! Durability: every change is appended to a journal on redb and
//! acknowledged only once on disk; at start the latest image of each
//! company plus the journal after it rebuild every case, with the same
//! epochs, seqs and history.
//!
//! - [`format`](mod@format): the tables and what their values hold.
//! - [`journal`]: the writer thread that commits in groups and releases
//!   each commit's effects, in order, once it is on disk; it is the core's
//!   [`Sink`](crate::core::Sink) when the broker keeps data.

mod backend;
pub mod format;
pub mod journal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::config::Config;
use crate::core::Broker;
use crate::core::effect::Event;
use crate::core::restore::Image;
use crate::core::sink::Batch;
use crate::directory::Directory;

use format::{CASES, CompanyMeta, Entry, JOURNAL, META, Remap};

/// The file inside the data directory.
pub const FILE: &str = "casebroker.redb";

/// Why the data directory cannot be used. Names the path and the cause.
#[derive(Debug, thiserror::Error)]
#[error("data directory {path}: {cause}")]
pub struct StoreError {
    pub path: PathBuf,
    pub cause: String,
}

/// What one company's data holds, read at start.
struct Stored {
    meta: Option<CompanyMeta>,
    /// A company the operator added through the admin API, as it stands
    /// (from the image, or the journal's `CompanySet`).
    record: Option<crate::directory::CompanyRecord>,
    /// Webhook endpoints and pending deliveries, as of the image.
    hooks: Option<crate::webhook::StoredHooks>,
    /// What cases hold beside their records, as of the image.
    ext: Vec<(crate::case::SessionCode, crate::core::record::ExtBlob)>,
    /// Agents added through the admin API, as of the image.
    api_agents: Vec<crate::directory::AgentRecord>,
    /// Groups and module keys added through the admin API, as of the
    /// image.
    api_groups: Vec<crate::directory::GroupRecord>,
    api_modules: Vec<crate::directory::ModuleRecord>,
    cases: Vec<Vec<u8>>,
    /// Journal entries after the image, with their positions.
    entries: Vec<(u64, Entry)>,
}

/// An opened data directory, with what it held.
pub struct Store {
    path: PathBuf,
    db: Arc<Database>,
    companies: HashMap<String, Stored>,
    /// The journal's next position.
    next: u64,
}

impl Store {
    /// Opens (or creates) the data directory and reads it. Fails when it
    /// cannot be created, is locked by another broker, or cannot be read.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let fail = |cause: String| StoreError {
            path: dir.to_path_buf(),
            cause,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create it: {e}")))?;
        let file = dir.join(FILE);
        let db = match backend::create(&file) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(fail(
                    "it is in use by another casebroker (locked); give each broker its own data_dir"
                        .into(),
                ));
            }
            Err(e) => return Err(fail(format!("cannot open {}: {e}", file.display()))),
        };
        let mut store = Store {
            path: dir.to_path_buf(),
            db: Arc::new(db),
            companies: HashMap::new(),
            next: 1,
        };
        store.read().map_err(fail)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the directory held nothing: no image, no case, no journal.
    pub fn is_new(&self) -> bool {
        self.companies.is_empty() && self.next == 1
    }

    fn stored(&mut self, company: &str) -> &mut Stored {
        self.companies
            .entry(company.to_string())
            .or_insert_with(|| Stored {
                meta: None,
                record: None,
                hooks: None,
                ext: Vec::new(),
                api_agents: Vec::new(),
                api_groups: Vec::new(),
                api_modules: Vec::new(),
                cases: Vec::new(),
                entries: Vec::new(),
            })
    }

    /// Reads every image, record and journal entry.
    fn read(&mut self) -> Result<(), String> {
        let bad = |e: &dyn std::fmt::Display| format!("cannot read it: {e}");
        let txn = self.db.begin_write().map_err(|e| bad(&e))?;
        // Make sure the tables exist, so a fresh directory reads as empty.
        txn.open_table(META).map_err(|e| bad(&e))?;
        txn.open_table(CASES).map_err(|e| bad(&e))?;
        txn.open_table(JOURNAL).map_err(|e| bad(&e))?;
        txn.commit().map_err(|e| bad(&e))?;
        let txn = self.db.begin_read().map_err(|e| bad(&e))?;
        let meta = txn.open_table(META).map_err(|e| bad(&e))?;
        for row in meta.iter().map_err(|e| bad(&e))? {
            let (k, v) = row.map_err(|e| bad(&e))?;
            if let Some(company) = k.value().strip_prefix("company/") {
                let m: CompanyMeta = postcard::from_bytes(v.value()).map_err(|e| bad(&e))?;
                self.stored(company).meta = Some(m);
            } else if let Some(company) = k.value().strip_prefix("agents/") {
                let agents = postcard::from_bytes(v.value()).map_err(|e| bad(&e))?;
                self.stored(company).api_agents = agents;
            } else if let Some(company) = k.value().strip_prefix("case-ext/") {
                let ext = postcard::from_bytes(v.value()).map_err(|e| bad(&e))?;
                self.stored(company).ext = ext;
            } else if let Some(company) = k.value().strip_prefix("webhooks/") {
                let hooks = postcard::from_bytes(v.value()).map_err(|e| bad(&e))?;
                self.stored(company).hooks = Some(hooks);
            } else if let Some(company) = k.value().strip_prefix("api-company/") {
                let record = postcard::from_bytes(v.value()).map_err(|e| bad(&e))?;
                self.stored(company).record = Some(record);
            } else if let Some(company) = k.value().strip_prefix("groups/") {
                let groups = postcard::from_bytes(v.value()).map_err(|e| bad(&e))?;
                self.stored(company).api_groups = groups;
            } else if let Some(company) = k.value().strip_prefix("modules/") {
                let modules = postcard::from_bytes(v.value()).map_err(|e| bad(&e))?;
                self.stored(company).api_modules = modules;
            }
        }
        let cases = txn.open_table(CASES).map_err(|e| bad(&e))?;
        for row in cases.iter().map_err(|e| bad(&e))? {
            let (k, v) = row.map_err(|e| bad(&e))?;
            let (company, _) = k.value();
            let bytes = v.value().to_vec();
            self.stored(company).cases.push(bytes);
        }
        let journal = txn.open_table(JOURNAL).map_err(|e| bad(&e))?;
        for row in journal.iter().map_err(|e| bad(&e))? {
            let (k, v) = row.map_err(|e| bad(&e))?;
            self.next = self.next.max(k.value() + 1);
            let entries: Vec<(u64, &[u8])> =
                postcard::from_bytes(v.value()).map_err(|e| bad(&e))?;
            for (id, bytes) in entries {
                let entry: Entry = postcard::from_bytes(bytes).map_err(|e| bad(&e))?;
                let company = entry.company.clone();
                let stored = self.stored(&company);
                if stored.meta.as_ref().is_none_or(|m| id >= m.position) {
                    stored.entries.push((id, entry));
                }
            }
        }
        // A company's commits are applied in the order of their positions,
        // which groups may hold out of order.
        for stored in self.companies.values_mut() {
            stored.entries.sort_by_key(|(id, _)| *id);
            for (_, entry) in &stored.entries {
                for change in entry.batches.iter().flatten() {
                    if let crate::core::change::Change::CompanySet(rec) = change {
                        stored.record = Some((**rec).clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks the data against `config` before anything is served: an
    /// agent the data knows and the config no longer has is kept as a
    /// former agent of its company (history keeps its id; its open cases
    /// return to the line at start); a group the config no longer has is
    /// an error naming it.
    pub fn reconcile(&self, config: &mut Config) -> Result<(), StoreError> {
        // Companies the operator added come after the file's, by id.
        let mut added: Vec<_> = self
            .companies
            .iter()
            .filter(|(id, _)| !config.companies.iter().any(|c| &c.id == *id))
            .filter_map(|(_, s)| s.record.clone())
            .collect();
        added.sort_by(|a, b| a.id.cmp(&b.id));
        for rec in added {
            config.companies.push(crate::config::CompanyConfig {
                id: rec.id,
                name: rec.name,
                from_api: true,
                removed: rec.removed,
                ..Default::default()
            });
        }
        let config_keys: std::collections::HashSet<String> = config
            .companies
            .iter()
            .flat_map(|c| c.modules.iter().map(|m| m.key.clone()))
            .collect();
        for company in &mut config.companies {
            let Some(meta) = self
                .companies
                .get(&company.id)
                .and_then(|s| s.meta.as_ref())
            else {
                continue;
            };
            // Groups added through the API stay (deleted ones too: cases
            // that ended in them refer to them); the file's own entry wins
            // for an id it declares too.
            let stored = &self.companies[&company.id];
            let mut api_groups = Vec::new();
            for g in &stored.api_groups {
                if company.groups.iter().any(|c| c.id == g.id) {
                    tracing::warn!(company = %company.id, group = %g.id, "a group added through the admin API is now declared in the config file: the file's entry is used");
                } else {
                    api_groups.push(g.clone());
                }
            }
            company.api_groups = api_groups;
            let known = |g: &str| {
                company.groups.iter().any(|c| c.id == g)
                    || company.api_groups.iter().any(|r| r.id == g)
            };
            if let Some(g) = meta.groups.iter().find(|g| !known(g)) {
                return Err(StoreError {
                    path: self.path.clone(),
                    cause: format!(
                        "it holds cases of group \"{g}\" of company \"{}\", which the config no longer has; \
                         put the group back or move the data directory aside",
                        company.id
                    ),
                });
            }
            // Agents added through the API stay; the file's own entry wins
            // for an id it declares too.
            let mut api = Vec::new();
            for rec in &stored.api_agents {
                if company.agents.iter().any(|c| c.id == rec.id) {
                    tracing::warn!(company = %company.id, agent = %rec.id, "an agent added through the admin API is now declared in the config file: the file's entry is used");
                } else {
                    api.push(rec.clone());
                }
            }
            let former: Vec<String> = meta
                .agents
                .iter()
                .filter(|a| !company.agents.iter().any(|c| &c.id == *a))
                .filter(|a| !api.iter().any(|r| &r.id == *a))
                .cloned()
                .collect();
            company.api_agents = api;
            // Module keys likewise: the file's entry wins for a key it
            // declares too; one whose group or default assignee the config
            // no longer has is dropped, with a warning.
            let mut modules = Vec::new();
            for m in &stored.api_modules {
                let declared = config_keys.contains(m.key.as_str());
                let group_ok = company.groups.iter().any(|g| g.id == m.group)
                    || company
                        .api_groups
                        .iter()
                        .any(|g| g.id == m.group && !g.removed);
                let assignee_ok = m.default_assignee.as_ref().is_none_or(|a| {
                    company.agents.iter().any(|c| &c.id == a)
                        || company.api_agents.iter().any(|r| &r.id == a)
                });
                if declared {
                    tracing::warn!(company = %company.id, module = %m.key, "a module key added through the admin API is now declared in the config file: the file's entry is used");
                } else if !group_ok || !assignee_ok {
                    tracing::warn!(company = %company.id, module = %m.key, "a module key added through the admin API names a group or agent the config no longer has: dropped");
                } else {
                    modules.push(m.clone());
                }
            }
            company.api_modules = modules;
            for id in &former {
                tracing::warn!(company = %company.id, agent = %id, "an agent of the data directory is no longer in the config: kept as a former agent, its open cases return to the line");
            }
            company.former_agents = former;
        }
        Ok(())
    }

    /// Rebuilds every configured company in `broker` from what was read.
    /// Fails when the data refers to an agent or group the config no
    /// longer has.
    pub fn restore(&mut self, broker: &Broker) -> Result<(), StoreError> {
        let fail = |cause: String| StoreError {
            path: self.path.clone(),
            cause,
        };
        let dir: Arc<Directory> = broker.directory();
        for company in dir.companies() {
            let Some(mut stored) = self.companies.remove(&company.id) else {
                continue;
            };
            let (agents, groups) = match &stored.meta {
                Some(m) => (m.agents.clone(), m.groups.clone()),
                None => (
                    company.agents.iter().map(|a| a.id.clone()).collect(),
                    company.groups.clone(),
                ),
            };
            let remap = Remap::new(company, &agents, &groups).map_err(|what| {
                fail(format!(
                    "it holds cases of {what}, which the config no longer has; \
                     put it back or move the data directory aside"
                ))
            })?;
            let image = match stored.meta {
                Some(m) => {
                    let epoch: Arc<str> = Arc::from(m.epoch.as_str());
                    let mut history = Vec::with_capacity(m.history.len());
                    for h in m.history {
                        let case = serde_json::from_str(&h.case_json)
                            .map_err(|e| fail(format!("cannot read an event: {e}")))?;
                        history.push(Arc::new(Event {
                            epoch: epoch.clone(),
                            seq: h.seq,
                            action: h.action,
                            group: remap.group(h.group),
                            left: None,
                            case,
                        }));
                    }
                    let mut cases = Vec::with_capacity(stored.cases.len());
                    for bytes in &stored.cases {
                        let rec = postcard::from_bytes(bytes)
                            .map_err(|e| fail(format!("cannot read a case: {e}")))?;
                        cases.push(remap.record(rec));
                    }
                    Some(Image {
                        epoch: m.epoch,
                        seq: m.seq,
                        next_line_seq: m.next_line_seq,
                        history,
                        cases,
                    })
                }
                None => None,
            };
            // The image's webhooks first, then what the journal holds after it.
            let hooks = stored
                .hooks
                .map(crate::core::hooks::changes)
                .filter(|c| !c.is_empty());
            // Then what the image's cases hold beside their records.
            let ext: Vec<crate::core::change::Change> = std::mem::take(&mut stored.ext)
                .into_iter()
                .map(|(code, ext)| crate::core::change::Change::ExtSet { code, ext })
                .collect();
            let batches: Vec<Batch> = hooks
                .into_iter()
                .chain((!ext.is_empty()).then_some(ext))
                .chain(
                    stored
                        .entries
                        .into_iter()
                        .flat_map(|(_, e)| e.batches)
                        .map(|b| b.into_iter().map(|c| remap.change(c)).collect()),
                )
                .collect();
            broker.restore(company.index, image, batches);
        }
        for company in self.companies.keys() {
            tracing::warn!(
                company = %company,
                "the data directory holds a company the config does not have; its data is kept but not served"
            );
        }
        Ok(())
    }
}

/// Opens the data directory the config names, unless it keeps nothing.
pub fn open(config: &Config) -> Result<Option<Store>, StoreError> {
    if config.in_memory {
        return Ok(None);
    }
    Store::open(&config.data_dir).map(Some)
}
