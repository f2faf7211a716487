//! The companies the operator adds at run time, shared by every node.
//!
//! A company added through `/v1/admin/companies` is written to the
//! registry in Redis (`casebroker:companies`, id → `{id, name, removed,
//! order}`) with the next number of `casebroker:companies-seq`, by one
//! script, so that no id is taken twice. Every node adds the registry's
//! companies after the file's, in that order, so a company has the same
//! shard on every node; a node hears of a new one at its next heartbeat
//! (or at once, when a request names it). Its data then lives in its own
//! log like any company's; its deletion is a commit of that log.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::AsyncCommands;
use serde::Deserialize;

use crate::config::{CompanyConfig, Config};
use crate::directory::CompanyRecord;
use crate::error::{Error, Result};
use crate::protocol::ErrorCode;

use super::{Cluster, ClusterError, Link, unavailable};

/// The registry: company id → its JSON.
pub const COMPANIES: &str = "casebroker:companies";
/// Counts registrations and deletions: a node reads the registry again
/// when it moved.
pub const COMPANIES_SEQ: &str = "casebroker:companies-seq";

/// Registers a company unless its id is taken. KEYS: registry, seq. ARGV:
/// id, name. Returns its order, or 0 when the id is taken.
const REGISTER: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local n = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({id = ARGV[1], name = ARGV[2], removed = false, order = n}))
return n
";

/// Marks a company deleted. KEYS: registry, seq. ARGV: id.
const UNREGISTER: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local c = cjson.decode(v)
c.removed = true
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(c))
redis.call('INCR', KEYS[2])
return 1
";

/// One registry entry.
#[derive(Debug, Deserialize)]
struct Entry {
    id: String,
    name: String,
    removed: bool,
    order: u64,
}

impl Entry {
    fn record(&self) -> CompanyRecord {
        CompanyRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            removed: self.removed,
        }
    }
}

/// The registry's companies, in order.
async fn entries(conn: &mut impl redis::aio::ConnectionLike) -> redis::RedisResult<Vec<Entry>> {
    let all: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(COMPANIES)
        .query_async(conn)
        .await?;
    let mut out: Vec<Entry> = all
        .values()
        .filter_map(|v| serde_json::from_str(v).ok())
        .collect();
    out.sort_by_key(|e| e.order);
    Ok(out)
}

/// Adds the registry's companies to `config`, after the file's, before
/// the node starts (an id the file declares too is the file's).
pub async fn read(config: &mut Config) -> std::result::Result<(), ClusterError> {
    let Some(c) = &config.cluster else {
        return Ok(());
    };
    let url = crate::config::redacted_url(&c.redis_url);
    let fail = |e: redis::RedisError| ClusterError::Unreachable {
        url: url.clone(),
        cause: e.to_string(),
    };
    let client = redis::Client::open(c.redis_url.as_str()).map_err(fail)?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(fail)?;
    for e in entries(&mut conn).await.map_err(fail)? {
        if config.companies.iter().any(|c| c.id == e.id) {
            tracing::warn!(company = %e.id, "a company the operator added is now declared in the config file: the file's entry is used");
            continue;
        }
        config.companies.push(CompanyConfig {
            id: e.id,
            name: e.name,
            from_api: true,
            removed: e.removed,
            ..Default::default()
        });
    }
    Ok(())
}

impl Cluster {
    /// The shard of a company, by id.
    pub(super) fn shard_of(&self, company: &str) -> Option<usize> {
        self.by_company.get(company).map(|s| *s)
    }

    /// Links a company added at run time (the core's sink is told before
    /// its first commit) and starts its appender.
    pub(super) fn link_company(&self, shard: usize, id: &str) {
        if self.shard_of(id).is_some() {
            return;
        }
        let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        let (link, rx) = Link::new(id);
        self.links.add(shard, link);
        self.by_company.insert(id.to_string(), shard);
        tokio::spawn(me.appender(shard, rx));
    }

    /// Registers a new company in Redis, then adds every company the
    /// registry has and this node lacks, in order; the new one's shard.
    pub async fn register_company(self: &Arc<Self>, id: &str, name: &str) -> Result<usize> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<u64> = redis::Script::new(REGISTER)
            .key(COMPANIES)
            .key(COMPANIES_SEQ)
            .arg(id)
            .arg(name)
            .invoke_async(&mut conn)
            .await;
        self.saw(&r);
        let order = r.map_err(|_| unavailable("the cluster's Redis does not answer"))?;
        if order == 0 {
            return Err(Error::conflict(format!("company \"{id}\" exists")));
        }
        self.sync_companies().await;
        self.shard_of(id).ok_or_else(|| {
            Error::new(
                ErrorCode::Conflict,
                format!("this broker cannot serve more companies (max_companies); \"{id}\" is registered but not served here"),
            )
        })
    }

    /// Marks a company deleted in the registry (its deletion itself is a
    /// commit of its log, already stored).
    pub async fn unregister_company(&self, id: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<u64> = redis::Script::new(UNREGISTER)
            .key(COMPANIES)
            .key(COMPANIES_SEQ)
            .arg(id)
            .invoke_async(&mut conn)
            .await;
        self.saw(&r);
        r.map(|_| ())
            .map_err(|_| unavailable("the cluster's Redis does not answer"))
    }

    /// Adds the registry's companies this node lacks, in order, each
    /// loaded from its log and followed from then on.
    pub async fn sync_companies(self: &Arc<Self>) {
        let Some((shutdown, tracker)) = self.tasks.get() else {
            return;
        };
        let mut conn = self.conn.clone();
        let seq: redis::RedisResult<Option<u64>> = conn.get(COMPANIES_SEQ).await;
        self.saw(&seq);
        let Ok(Some(seq)) = seq else {
            return;
        };
        if self.companies_seen.load(Ordering::Acquire) == seq {
            return;
        }
        let r = entries(&mut conn).await;
        self.saw(&r);
        let Ok(entries) = r else {
            return;
        };
        let _one_at_a_time = self.syncing.lock().await;
        for e in entries {
            if self.shard_of(&e.id).is_some() {
                continue;
            }
            let shard = match self.broker().ensure_company(&e.record(), false) {
                Ok(shard) => shard,
                Err(err) => {
                    tracing::error!(company = %e.id, error = %err.message, "a company the operator added cannot be served here");
                    continue;
                }
            };
            if let Err(err) = self.start_company(shard).await {
                tracing::warn!(company = %e.id, error = %err, "a company the operator added does not load yet");
            }
            tracker.spawn(self.clone().follow(shard, shutdown.clone()));
        }
        self.companies_seen.store(seq, Ordering::Release);
    }

    /// Takes a linked company's epoch (its cases are loaded at first use).
    pub(super) async fn start_company(&self, shard: usize) -> redis::RedisResult<()> {
        let link = &self.links[shard];
        let mut conn = self.conn.clone();
        let fresh = hex::encode(rand::random::<[u8; 8]>());
        let _: bool = conn.set_nx(&link.keys.epoch, &fresh).await?;
        let epoch: String = conn.get(&link.keys.epoch).await?;
        self.broker().set_epoch(shard, &epoch);
        // Loaded at its first use here, or when this node takes it.
        Ok(())
    }
}
