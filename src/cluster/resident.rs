//! Which companies a node keeps in memory. A node holds a company's cases
//! only while it decides the company (holds its lease) or serves one of
//! its connections; one unused for `company_idle` is let go, and loaded
//! again from its image and its log at its next use. A company nobody
//! decides is taken at its first command, wherever it arrives; one still
//! free after `node_timeout` is taken at a heartbeat by the node its id
//! picks among those alive (after twice that, by any), so its deadlines
//! run and free companies spread over the nodes.
//!
//! A node that does not hold a company finds it from a session code, an
//! agent's token or a module key through hashes in Redis,
//! `casebroker:where:<n>` (`c:<code>`, `t:<token's SHA-256, hex>`,
//! `m:<module key>` → company id; `n` from the field's SHA-256, 64 hashes
//! so that Redis Cluster spreads them), written beside each commit that
//! creates a case, sets an agent or adds a module key; a purged case's
//! code and a removed key are taken out.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::AsyncCommands;

use crate::case::SessionCode;
use crate::core::change::Change;
use crate::core::sink::Batch;

use super::{Cluster, keys};

/// What a node looks a company up by in `casebroker:where:<n>`.
pub enum Name<'a> {
    Code(&'a SessionCode),
    Token(&'a [u8; 32]),
    Module(&'a str),
}

impl Name<'_> {
    fn field(&self) -> String {
        match self {
            Name::Code(code) => format!("c:{code}"),
            Name::Token(hash) => format!("t:{}", hex::encode(hash)),
            Name::Module(key) => format!("m:{key}"),
        }
    }
}

/// The names a run of commits adds (`set`) and removes (`del`).
#[derive(Default)]
pub(super) struct Names {
    pub set: Vec<String>,
    pub del: Vec<String>,
}

impl Names {
    pub fn of<'a>(batches: impl Iterator<Item = &'a Batch>) -> Names {
        let mut names = Names::default();
        for change in batches.flatten() {
            match change {
                Change::Created(rec) => names.set.push(Name::Code(&rec.code).field()),
                Change::Purged { code } => names.del.push(Name::Code(code).field()),
                Change::AgentSet(a) => names.set.push(Name::Token(&a.token_hash).field()),
                Change::ModuleSet(m) => names.set.push(Name::Module(&m.key).field()),
                Change::ModuleRemoved { key } => names.del.push(Name::Module(key).field()),
                _ => {}
            }
        }
        names
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.del.is_empty()
    }
}

impl Cluster {
    /// Milliseconds since this node started, the clock of `used`.
    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Notes a use of `shard`: it is not let go for `company_idle`.
    pub(super) fn touch(&self, shard: usize) {
        self.links[shard]
            .used
            .store(self.now_ms(), Ordering::Release);
    }

    /// True while this node holds nothing of `shard` in memory.
    pub fn cold(&self, shard: usize) -> bool {
        self.links[shard].cold.load(Ordering::Acquire)
    }

    /// Loads `shard` when this node let it go (or never loaded it), and
    /// notes the use. `unavailable`-worthy errors are Redis's.
    pub async fn warm(&self, shard: usize) -> redis::RedisResult<()> {
        self.touch(shard);
        if !self.cold(shard) {
            return Ok(());
        }
        let _g = self.links[shard].catching_up.lock().await;
        self.load_cold(shard).await
    }

    /// `warm` with the company's catch-up lock held.
    pub(super) async fn load_cold(&self, shard: usize) -> redis::RedisResult<()> {
        let link = &self.links[shard];
        if !link.cold.load(Ordering::Acquire) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        // Followed from before the load reads anything: no commit appended
        // meanwhile goes by without a notice here.
        self.say_following(shard).await?;
        let epoch = self.epoch(shard, None).await?;
        // From an empty copy: a load that failed half-way left part of one.
        self.broker().reset(shard);
        self.broker().set_epoch(shard, &epoch);
        self.load(shard).await?;
        link.cold.store(false, Ordering::Release);
        self.broker().wake(shard);
        self.touch(shard);
        self.loaded.inc();
        self.loads.inc();
        tracing::debug!(company = %link.company, ms = started.elapsed().as_millis() as u64, "company loaded");
        Ok(())
    }

    /// Says that this node follows `shard` (the heartbeat says it again
    /// while the company is in memory here; a company let go is no longer
    /// followed once [`keys::FOLLOW_MS`] has passed).
    async fn say_following(&self, shard: usize) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<()> = conn
            .zadd(
                &self.links[shard].keys.followers,
                self.node,
                chrono::Utc::now().timestamp_millis(),
            )
            .await;
        self.saw(&r);
        r
    }

    /// Lets go of every company this node neither holds nor serves a
    /// connection of, unused for `company_idle`.
    pub(super) fn let_go_idle(&self) {
        let now = self.now_ms();
        let idle = self.idle.as_millis() as u64;
        for (shard, link) in self.links.iter().enumerate() {
            if link.cold.load(Ordering::Acquire)
                || now.saturating_sub(link.used.load(Ordering::Acquire)) < idle
            {
                continue;
            }
            // Not while it is caught up or loaded.
            let Ok(_g) = link.catching_up.try_lock() else {
                continue;
            };
            {
                let l = link.lease();
                if l.held || l.diverged || l.users > 0 {
                    continue;
                }
            }
            if !self.broker().let_go(shard, |c| self.deliver.has(c)) {
                // Served here: used now.
                self.touch(shard);
                continue;
            }
            link.cold.store(true, Ordering::Release);
            link.notices().clear();
            link.applied.store(0, Ordering::Release);
            link.committed.store(0, Ordering::Release);
            link.whole_image.store(true, Ordering::Release);
            self.loaded.dec();
            tracing::debug!(company = %link.company, "company let go (unused here)");
        }
    }

    /// Whether this node takes, at its heartbeat, a company whose lease
    /// `beats` heartbeats in a row found free, `alive` the nodes alive. A
    /// company's first command takes it where it arrives; one still free
    /// after `node_timeout` is taken by the node its id picks among those
    /// alive (so free companies spread over the nodes), and after twice
    /// that by any node.
    pub(super) fn adopts(&self, company: &str, beats: u64, alive: &[u64]) -> bool {
        let free_for = self.heartbeat * beats.min(u32::MAX as u64) as u32;
        if free_for >= self.timeout * 2 {
            return true;
        }
        free_for >= self.timeout && pick(company, alive) == Some(self.node)
    }

    /// Takes every company whose lease the heartbeat found free (`free`),
    /// loading it: a company nobody decides has deadlines nobody runs.
    pub(super) async fn adopt(self: &Arc<Self>, free: Vec<usize>) {
        for shard in free {
            if let Err(e) = self.acquire(shard).await {
                tracing::debug!(company = %self.links[shard].company, error = %e.message, "cannot take a free company yet");
            }
        }
    }

    /// The company `name` belongs to, as `casebroker:where` says.
    pub async fn locate(&self, name: Name<'_>) -> Option<usize> {
        let mut conn = self.conn.clone();
        let field = name.field();
        let r: redis::RedisResult<Option<String>> =
            conn.hget(keys::where_key(&field), &field).await;
        self.saw(&r);
        self.shard_of(&r.ok()??)
    }

    /// Writes what a run of commits adds to and removes from
    /// `casebroker:where`.
    pub(super) async fn write_names(&self, shard: usize, names: &Names) -> redis::RedisResult<()> {
        let company = &self.links[shard].company;
        let mut pipe = redis::pipe();
        for field in &names.set {
            pipe.hset(keys::where_key(field), field, company).ignore();
        }
        for field in &names.del {
            pipe.hdel(keys::where_key(field), field).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn).await
    }
}

/// The node among `alive` that takes the free company `company`: the
/// same on every node that sees the same nodes alive.
fn pick(company: &str, alive: &[u64]) -> Option<u64> {
    use sha2::Digest;
    let mut nodes = alive.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    let digest = sha2::Sha256::digest(company.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (!nodes.is_empty()).then(|| nodes[(n % nodes.len() as u64) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_companies_spread_over_the_nodes_alive() {
        assert_eq!(pick("acme", &[]), None);
        assert_eq!(pick("acme", &[7]), Some(7));
        // The same pick whatever the order the nodes were read in.
        assert_eq!(pick("acme", &[3, 1, 2]), pick("acme", &[1, 2, 3]));
        // A hundred companies over four nodes: each node takes some.
        let mut taken = std::collections::HashMap::new();
        for c in 0..100 {
            *taken
                .entry(pick(&format!("company-{c}"), &[1, 2, 3, 4]).unwrap())
                .or_insert(0) += 1;
        }
        assert_eq!(taken.len(), 4, "{taken:?}");
        assert!(taken.values().all(|&n| n >= 10), "{taken:?}");
    }

    #[test]
    fn the_names_of_commits_are_their_codes_tokens_and_keys() {
        let code = SessionCode::parse("s12-345-678").expect("a code");
        let batches: Vec<Batch> = vec![vec![
            Change::Purged { code },
            Change::ModuleRemoved {
                key: "old-key".into(),
            },
            Change::AgentSet(Box::new(crate::directory::AgentRecord {
                id: "erin".into(),
                name: "Erin".into(),
                groups: vec!["support".into()],
                admin: false,
                max_cases: 5,
                disabled: false,
                token_hash: [0xab; 32],
            })),
            Change::ModuleSet(Box::new(crate::directory::ModuleRecord {
                key: "new-key".into(),
                group: "support".into(),
                default_assignee: None,
            })),
        ]];
        let names = Names::of(batches.iter());
        assert_eq!(
            names.set,
            vec![format!("t:{}", "ab".repeat(32)), "m:new-key".to_string()]
        );
        assert_eq!(names.del, vec!["c:s12-345-678", "m:old-key"]);
        assert!(!names.is_empty());
        assert!(Names::of(std::iter::empty()).is_empty());
    }
}
