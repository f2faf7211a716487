//! Several brokers on one Redis: any node serves anyone.
//!
//! Every node holds a copy of every company, rebuilt from the company's
//! log of commits in Redis and kept in step by following it. One node at a
//! time may change a company: the holder of its lease. A command that
//! changes a company first [`Cluster::hold`]s it (taking the lease, if
//! another node has it, once that node is done, and catching up with the
//! log), then runs on the local copy as on a single broker. Its changes
//! are appended by a script that checks the lease and the log's head and
//! publishes the new head atomically; only then are its effects delivered
//! and its reply sent. Other nodes apply the commit as it was applied
//! here, so every copy gives every event the same `seq` and every seat its
//! `status`, `chat` and `ended` wherever it is connected.
//!
//! - [`keys`]: what lives in Redis, and the scripts.
//! - [`nodes`]: the node's own number and heartbeat, the channels it
//!   listens to, and the release of a dead node's seats.
//! - [`limits`]: failed-join back-off and help-request limits shared by
//!   every node.

pub mod keys;
pub mod limits;
pub mod nodes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use crate::case::SessionCode;
use crate::config::Config;
use crate::core::sink::{Ack, Batch, leave_ack};
use crate::core::{Broker, Deliver, Effect, Sink};
use crate::delivery::Hub;
use crate::directory::Directory;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, Role};

use keys::CompanyKeys;

/// Why a node cannot join its cluster at start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach Redis at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error(
        "company {company} is stored in Redis with other {what}; every node must run the same companies, groups and agents"
    )]
    Mismatch { company: String, what: String },
    #[error("Redis at {url}: {cause}")]
    Redis { url: String, cause: String },
}

/// How long a command waits for its company's lease before it answers
/// `unavailable`.
const HOLD_WAIT: Duration = Duration::from_secs(5);
/// Commits read from the log in one request.
const PAGE: usize = 512;
/// Commits appended in one script call.
const GROUP: usize = 256;

/// One company's link to Redis.
struct Link {
    company: String,
    keys: CompanyKeys,
    lease: Mutex<Lease>,
    /// The last commit of the log that the local copy holds.
    applied: AtomicU64,
    /// One catch-up (or rebuild) at a time.
    catching_up: tokio::sync::Mutex<()>,
    /// One acquisition at a time.
    acquiring: tokio::sync::Mutex<()>,
    /// Woken when the lease may have become free.
    freed: Notify,
    /// Woken when the log has more than the copy holds.
    behind: Notify,
    tx: mpsc::UnboundedSender<Item>,
}

#[derive(Default)]
struct Lease {
    held: bool,
    /// Another node wants it: no new holds; released once unused.
    yielding: bool,
    release_queued: bool,
    users: usize,
    /// The local copy went astray from the log: rebuilt before use.
    diverged: bool,
}

enum Item {
    Commit {
        batches: Vec<Batch>,
        effects: Vec<Effect>,
        ack: Arc<Ack>,
    },
    Release,
}

/// A signal to connections on another node.
#[derive(Serialize, Deserialize)]
struct Relay {
    node: u64,
    company: usize,
    to: Vec<u64>,
    code: SessionCode,
    from: Role,
    data: serde_json::Value,
}

/// This node's side of the cluster; it is the core's sink.
pub struct Cluster {
    url: String,
    name: String,
    node: u64,
    timeout: Duration,
    client: redis::Client,
    conn: ConnectionManager,
    links: Vec<Link>,
    by_company: HashMap<String, usize>,
    up: AtomicBool,
    up_gauge: prometheus::IntGauge,
    deliver: Arc<Hub>,
    broker: OnceLock<Broker>,
    scripts: Scripts,
}

struct Scripts {
    acquire: redis::Script,
    append: redis::Script,
    renew: redis::Script,
    release: redis::Script,
    count: redis::Script,
}

/// A company held for one command: while any is alive the lease stays.
pub struct Hold {
    cluster: Arc<Cluster>,
    shard: usize,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let link = &self.cluster.links[self.shard];
        let mut l = link.lease.lock().unwrap_or_else(|p| p.into_inner());
        l.users -= 1;
        if l.users == 0 && l.yielding && !l.release_queued {
            l.release_queued = true;
            let _ = link.tx.send(Item::Release);
        }
    }
}

fn unavailable(message: &str) -> Error {
    Error::new(ErrorCode::Unavailable, message.to_string())
}

impl Cluster {
    /// Connects to Redis, takes a node number and checks that every
    /// company is stored with the same agents and groups. Nothing is served
    /// yet: [`Cluster::start`] follows once the core exists.
    pub async fn connect(
        config: &Config,
        deliver: Arc<Hub>,
        metrics: &Metrics,
    ) -> std::result::Result<Arc<Cluster>, ClusterError> {
        let c = config.cluster.as_ref().expect("a cluster config");
        let url = c.redis_url.clone();
        let fail = |e: redis::RedisError| ClusterError::Unreachable {
            url: url.clone(),
            cause: e.to_string(),
        };
        let client = redis::Client::open(url.as_str()).map_err(fail)?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let mut conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_connection_manager_with_config(manager),
        )
        .await
        .map_err(|_| ClusterError::Unreachable {
            url: url.clone(),
            cause: "no answer within 5 s".into(),
        })?
        .map_err(fail)?;
        let node: u64 = conn.incr(keys::NODE_SEQ, 1).await.map_err(fail)?;
        let name = c.node_name();
        let _: () = conn
            .hset(keys::NODE_NAMES, node, &name)
            .await
            .map_err(fail)?;
        let dir = Directory::new(config);
        let mut links = Vec::new();
        let mut by_company = HashMap::new();
        let mut rxs = Vec::new();
        for company in dir.companies() {
            let keys = CompanyKeys::new(&company.id);
            let shape = serde_json::json!({
                "agents": company.agents.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
                "groups": company.groups,
            })
            .to_string();
            let _: bool = conn.set_nx(&keys.shape, &shape).await.map_err(fail)?;
            let stored: String = conn.get(&keys.shape).await.map_err(fail)?;
            if stored != shape {
                return Err(ClusterError::Mismatch {
                    company: company.id.clone(),
                    what: "agents or groups".into(),
                });
            }
            let (tx, rx) = mpsc::unbounded_channel();
            rxs.push(rx);
            by_company.insert(company.id.clone(), company.index);
            links.push(Link {
                company: company.id.clone(),
                keys,
                lease: Mutex::new(Lease::default()),
                applied: AtomicU64::new(0),
                catching_up: tokio::sync::Mutex::new(()),
                acquiring: tokio::sync::Mutex::new(()),
                freed: Notify::new(),
                behind: Notify::new(),
                tx,
            });
        }
        let up_gauge = metrics.gauge(
            "casebroker_cluster_redis_up",
            "1 while this node reaches the cluster's Redis, 0 while it does not",
        );
        up_gauge.set(1);
        let cluster = Arc::new(Cluster {
            url,
            name,
            node,
            timeout: c.node_timeout,
            client,
            conn,
            links,
            by_company,
            up: AtomicBool::new(true),
            up_gauge,
            deliver,
            broker: OnceLock::new(),
            scripts: Scripts {
                acquire: keys::acquire(),
                append: keys::append(),
                renew: keys::renew(),
                release: keys::release(),
                count: keys::count(),
            },
        });
        for (shard, rx) in rxs.into_iter().enumerate() {
            tokio::spawn(cluster.clone().appender(shard, rx));
        }
        Ok(cluster)
    }

    /// This node's number, which its connection ids carry.
    pub fn node(&self) -> u64 {
        self.node
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn broker(&self) -> &Broker {
        self.broker.get().expect("the cluster is started")
    }

    /// Rebuilds every company from its log and starts following the
    /// cluster: heartbeats, channels, lease renewal, dead nodes.
    pub async fn start(
        self: &Arc<Self>,
        broker: Broker,
        shutdown: tokio_util::sync::CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> std::result::Result<(), ClusterError> {
        broker.number_connections(self.node);
        let _ = self.broker.set(broker);
        let fail = |e: redis::RedisError| ClusterError::Redis {
            url: self.url.clone(),
            cause: e.to_string(),
        };
        // Listen first, so that no commit appended meanwhile goes unseen.
        tracker.spawn(self.clone().listen(shutdown.clone()));
        let mut conn = self.conn.clone();
        for (shard, link) in self.links.iter().enumerate() {
            let fresh = hex::encode(rand::random::<[u8; 8]>());
            let _: bool = conn.set_nx(&link.keys.epoch, &fresh).await.map_err(fail)?;
            let epoch: String = conn.get(&link.keys.epoch).await.map_err(fail)?;
            self.broker().set_epoch(shard, &epoch);
            let _g = link.catching_up.lock().await;
            let (batches, last) = self.read_log(shard, 0, None).await.map_err(fail)?;
            self.broker().restore(shard, None, batches);
            link.applied.store(last, Ordering::Release);
        }
        for shard in 0..self.links.len() {
            tracker.spawn(self.clone().follow(shard, shutdown.clone()));
        }
        tracker.spawn(self.clone().heartbeat(shutdown.clone()));
        tracker.spawn(self.clone().renew_leases(shutdown));
        tracing::info!(node = self.node, name = %self.name, "joined the cluster");
        Ok(())
    }

    /// True while this node holds the lease of `shard`.
    pub fn holds(&self, shard: usize) -> bool {
        self.links[shard]
            .lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .held
    }

    /// True while Redis answers.
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn set_up(&self, up: bool) {
        let was = self.up.swap(up, Ordering::AcqRel);
        self.up_gauge.set(up as i64);
        if was != up {
            if up {
                tracing::info!("Redis is reachable again");
            } else {
                tracing::warn!("Redis is unreachable; changes are refused until it is back");
            }
        }
    }

    /// Notes what a Redis call's outcome says about Redis.
    fn saw<T>(&self, r: &redis::RedisResult<T>) {
        match r {
            Ok(_) => self.set_up(true),
            Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                self.set_up(false)
            }
            Err(e) if e.is_connection_refusal() => self.set_up(false),
            Err(_) => {}
        }
    }

    /// Holds `shard` for a command that changes it: returns once this node
    /// holds the company's lease and its copy is up to date with the log.
    /// `unavailable` while Redis is unreachable or the lease stays taken.
    pub async fn hold(self: &Arc<Self>, shard: usize) -> Result<Hold> {
        let link = &self.links[shard];
        let deadline = tokio::time::Instant::now() + HOLD_WAIT;
        loop {
            if !self.up() {
                return Err(unavailable(
                    "the cluster's store is unreachable; retry later",
                ));
            }
            let wait = {
                let mut l = link.lease.lock().unwrap_or_else(|p| p.into_inner());
                if l.diverged {
                    return Err(unavailable(
                        "this node is catching up with the cluster; retry",
                    ));
                }
                if l.held && !l.yielding {
                    l.users += 1;
                    return Ok(Hold {
                        cluster: self.clone(),
                        shard,
                    });
                }
                l.held
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable("the company is busy on another node; retry"));
            }
            if wait {
                // Being handed over: wait until it is released, then race
                // for it like everyone else, a little later.
                let _ = tokio::time::timeout(Duration::from_millis(5), link.freed.notified()).await;
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            self.acquire(shard, deadline).await?;
        }
    }

    /// Takes the lease of `shard` and catches up with the log.
    async fn acquire(&self, shard: usize, deadline: tokio::time::Instant) -> Result<()> {
        let link = &self.links[shard];
        let _one = link.acquiring.lock().await;
        if link.lease.lock().unwrap_or_else(|p| p.into_inner()).held {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut pause = Duration::from_millis(1);
        loop {
            let r: redis::RedisResult<(i64, i64)> = self
                .scripts
                .acquire
                .key(&link.keys.lease)
                .key(&link.keys.head)
                .arg(self.node)
                .arg(keys::LEASE_MS)
                .invoke_async(&mut conn)
                .await;
            self.saw(&r);
            let (taken, value) =
                r.map_err(|_| unavailable("the cluster's store did not answer; retry"))?;
            if taken == 1 {
                let head = value.max(0) as u64;
                let _g = link.catching_up.lock().await;
                if let Err(e) = self.catch_up_to(shard, head).await {
                    self.saw(&Err::<(), _>(e));
                    let _ = self.release_now(shard).await;
                    return Err(unavailable("the cluster's store did not answer; retry"));
                }
                let mut l = link.lease.lock().unwrap_or_else(|p| p.into_inner());
                l.held = true;
                l.yielding = false;
                l.release_queued = false;
                return Ok(());
            }
            let _: redis::RedisResult<()> = conn
                .publish(
                    keys::WANT_CHANNEL,
                    format!("{} {}", link.company, self.node),
                )
                .await;
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable("the company is busy on another node; retry"));
            }
            let _ = tokio::time::timeout(pause, link.freed.notified()).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    async fn release_now(&self, shard: usize) -> redis::RedisResult<()> {
        let link = &self.links[shard];
        let mut conn = self.conn.clone();
        self.scripts
            .release
            .key(&link.keys.lease)
            .arg(self.node)
            .arg(&link.company)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
    }

    /// Another node wants `shard`: give the lease up once unused.
    fn wanted(&self, shard: usize) {
        let link = &self.links[shard];
        let mut l = link.lease.lock().unwrap_or_else(|p| p.into_inner());
        if l.held && !l.yielding {
            l.yielding = true;
            if l.users == 0 && !l.release_queued {
                l.release_queued = true;
                let _ = link.tx.send(Item::Release);
            }
        }
    }

    /// Reads the log of `shard` after commit `from` (up to `to`, if given):
    /// the batches in order and the last commit read.
    async fn read_log(
        &self,
        shard: usize,
        from: u64,
        to: Option<u64>,
    ) -> redis::RedisResult<(Vec<Batch>, u64)> {
        let link = &self.links[shard];
        let mut conn = self.conn.clone();
        let mut batches = Vec::new();
        let mut last = from;
        loop {
            if to.is_some_and(|t| last >= t) {
                break;
            }
            let end = to.map(keys::entry_id).unwrap_or_else(|| "+".into());
            let page: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
                .arg(&link.keys.log)
                .arg(keys::entry_id(last + 1))
                .arg(end)
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut conn)
                .await?;
            if page.is_empty() {
                break;
            }
            for (id, fields) in page {
                let n: u64 = id
                    .split('-')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                if n != last + 1 {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "the log has a gap",
                        format!("{}: expected commit {}, found {id}", link.company, last + 1),
                    )));
                }
                let bytes = fields.get("c").map(Vec::as_slice).unwrap_or_default();
                let commit: Vec<Batch> = postcard::from_bytes(bytes).map_err(|e| {
                    redis::RedisError::from((
                        redis::ErrorKind::Parse,
                        "a commit in the log cannot be read",
                        e.to_string(),
                    ))
                })?;
                batches.extend(commit);
                last = n;
            }
        }
        Ok((batches, last))
    }

    /// Applies the log up to `head` on the local copy, with effects.
    async fn catch_up_to(&self, shard: usize, head: u64) -> redis::RedisResult<()> {
        let link = &self.links[shard];
        let applied = link.applied.load(Ordering::Acquire);
        if applied >= head {
            return Ok(());
        }
        let (batches, last) = self.read_log(shard, applied, Some(head)).await?;
        self.broker().follow(shard, batches);
        link.applied.store(last, Ordering::Release);
        Ok(())
    }

    /// Applies whatever other nodes appended since the copy's last commit,
    /// unless this node holds the lease (then nobody else can append).
    async fn catch_up(&self, shard: usize) -> redis::RedisResult<()> {
        let link = &self.links[shard];
        let _g = link.catching_up.lock().await;
        {
            let l = link.lease.lock().unwrap_or_else(|p| p.into_inner());
            if l.held || l.diverged {
                return Ok(());
            }
        }
        let applied = link.applied.load(Ordering::Acquire);
        let (batches, last) = self.read_log(shard, applied, None).await?;
        if !batches.is_empty() {
            self.broker().follow(shard, batches);
        }
        link.applied.store(last, Ordering::Release);
        Ok(())
    }

    /// Appends, in order, what each unlock of `shard` changed, then
    /// releases its effects and acknowledgements; gives the lease up when
    /// asked, after everything before it is stored.
    async fn appender(self: Arc<Self>, shard: usize, mut rx: mpsc::UnboundedReceiver<Item>) {
        let mut items = Vec::new();
        while rx.recv_many(&mut items, GROUP).await > 0 {
            let mut run: Vec<(Vec<Batch>, Vec<Effect>, Arc<Ack>)> = Vec::new();
            for item in items.drain(..) {
                match item {
                    Item::Commit {
                        batches,
                        effects,
                        ack,
                    } => run.push((batches, effects, ack)),
                    Item::Release => {
                        self.store(shard, std::mem::take(&mut run)).await;
                        self.give_up(shard).await;
                    }
                }
            }
            self.store(shard, run).await;
        }
    }

    /// Stores one run of commits and releases them.
    async fn store(&self, shard: usize, run: Vec<(Vec<Batch>, Vec<Effect>, Arc<Ack>)>) {
        if run.is_empty() {
            return;
        }
        let link = &self.links[shard];
        let commits: Vec<Vec<u8>> = run
            .iter()
            .filter(|(b, _, _)| !b.is_empty())
            .map(|(b, _, _)| postcard::to_allocvec(b).expect("changes encode"))
            .collect();
        let stored = if commits.is_empty() {
            true
        } else {
            let diverged = link
                .lease
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .diverged;
            !diverged && self.append(shard, commits).await
        };
        for (batches, mut effects, ack) in run {
            let speculative = !stored && !batches.is_empty();
            if !speculative && !effects.is_empty() {
                self.relay(shard, &effects);
                self.deliver.deliver(shard, &mut effects);
            }
            ack.finish(stored);
        }
    }

    /// Runs the append script; false (and the copy marked astray) when the
    /// commits were not stored.
    async fn append(&self, shard: usize, commits: Vec<Vec<u8>>) -> bool {
        let link = &self.links[shard];
        let expected = link.applied.load(Ordering::Acquire);
        let n = commits.len() as u64;
        let mut inv = self.scripts.append.prepare_invoke();
        inv.key(&link.keys.lease)
            .key(&link.keys.head)
            .key(&link.keys.log)
            .arg(self.node)
            .arg(expected)
            .arg(&link.company)
            .arg(keys::LEASE_MS);
        for c in &commits {
            inv.arg(c.as_slice());
        }
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<i64> = inv.invoke_async(&mut conn).await;
        self.saw(&r);
        match r {
            Ok(head) if head >= 0 && head as u64 == expected + n => {
                link.applied.store(expected + n, Ordering::Release);
                true
            }
            outcome => {
                let why = match outcome {
                    Ok(-1) => "the lease was lost".to_string(),
                    Ok(-2) => "the log moved".to_string(),
                    Ok(h) => format!("unexpected head {h}"),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(company = %link.company, reason = %why, "changes not stored; rebuilding the company from the cluster");
                self.diverge(shard);
                false
            }
        }
    }

    /// The local copy holds changes the log does not: refuse commands on
    /// it until it is rebuilt from the log.
    fn diverge(&self, shard: usize) {
        let link = &self.links[shard];
        let mut l = link.lease.lock().unwrap_or_else(|p| p.into_inner());
        if !l.diverged {
            l.diverged = true;
            link.behind.notify_one();
        }
    }

    /// Rebuilds a copy that went astray: what this node had stored and
    /// delivered is replayed quietly, what others stored since is applied
    /// with its effects.
    async fn rebuild(&self, shard: usize) -> redis::RedisResult<()> {
        let link = &self.links[shard];
        let _g = link.catching_up.lock().await;
        let good = link.applied.load(Ordering::Acquire);
        let (old, last_old) = self.read_log(shard, 0, Some(good)).await?;
        let (new, last) = self.read_log(shard, last_old, None).await?;
        let mut conn = self.conn.clone();
        let epoch: Option<String> = conn.get(&link.keys.epoch).await?;
        let epoch = match epoch {
            Some(e) => e,
            None => {
                // Redis lost what it held (restarted without persistence):
                // the company starts again with a new epoch, so dashboards
                // that resume get a snapshot.
                tracing::error!(company = %link.company, "Redis no longer holds this company's data; starting it afresh with a new epoch");
                let fresh = hex::encode(rand::random::<[u8; 8]>());
                let _: bool = conn.set_nx(&link.keys.epoch, &fresh).await?;
                conn.get(&link.keys.epoch).await?
            }
        };
        let broker = self.broker();
        broker.reset(shard);
        broker.set_epoch(shard, &epoch);
        broker.restore(shard, None, old);
        broker.follow(shard, new);
        link.applied.store(last, Ordering::Release);
        let _ = self.release_now(shard).await;
        let mut l = link.lease.lock().unwrap_or_else(|p| p.into_inner());
        l.held = false;
        l.yielding = false;
        l.release_queued = false;
        l.diverged = false;
        tracing::info!(company = %link.company, "company rebuilt from the cluster");
        Ok(())
    }

    /// Gives the lease of `shard` up (everything before it is stored).
    async fn give_up(&self, shard: usize) {
        let link = &self.links[shard];
        let r = self.release_now(shard).await;
        self.saw(&r);
        {
            let mut l = link.lease.lock().unwrap_or_else(|p| p.into_inner());
            l.held = false;
            l.yielding = false;
            l.release_queued = false;
        }
        link.freed.notify_waiters();
    }

    /// Follows one company: catches up when told the log grew, and every
    /// second in case a notice was missed; rebuilds it when it went astray.
    async fn follow(self: Arc<Self>, shard: usize, shutdown: tokio_util::sync::CancellationToken) {
        let link = &self.links[shard];
        loop {
            tokio::select! {
                _ = link.behind.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return,
            }
            let diverged = link
                .lease
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .diverged;
            let r = if diverged {
                if !self.up() {
                    continue;
                }
                let r = self.rebuild(shard).await;
                if r.is_err() {
                    // Try again soon.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    link.behind.notify_one();
                }
                r
            } else {
                self.catch_up(shard).await
            };
            self.saw(&r);
            if let Err(e) = r {
                tracing::debug!(company = %link.company, error = %e, "catching up failed");
            }
        }
    }

    /// Sends signals meant for another node's connections to the relay.
    fn relay(&self, shard: usize, effects: &[Effect]) {
        for e in effects {
            if let Effect::Signal {
                to,
                code,
                from,
                data,
            } = e
                && to
                    .iter()
                    .any(|&c| crate::core::replica::node_of(c) != self.node)
            {
                let msg = Relay {
                    node: self.node,
                    company: shard,
                    to: to.clone(),
                    code: *code,
                    from: *from,
                    data: data.clone(),
                };
                let Ok(text) = serde_json::to_string(&msg) else {
                    continue;
                };
                let mut conn = self.conn.clone();
                tokio::spawn(async move {
                    let _: redis::RedisResult<()> = conn.publish(keys::RELAY_CHANNEL, text).await;
                });
            }
        }
    }

    /// Counts one event of a shared limit; `None` while Redis cannot say.
    pub async fn count(&self, key: &str, window: Duration) -> Option<u64> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<u64> = self
            .scripts
            .count
            .key(format!("casebroker:limit:{key}"))
            .arg(window.as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        self.saw(&r);
        r.ok()
    }

    /// Brings the copy of `shard` up to what the log holds now, so that a
    /// read on this node shows what another node just acknowledged. While
    /// Redis is away the copy is read as it is.
    pub async fn fresh(&self, shard: usize) {
        let r = self.catch_up(shard).await;
        self.saw(&r);
    }

    /// Makes sure the copy holds `code` if any node created it: a code
    /// just made on another node may not have reached this one yet.
    pub async fn find(&self, code: &SessionCode) -> Option<usize> {
        if let Some(shard) = self.broker().company_of(code) {
            return Some(shard);
        }
        for shard in 0..self.links.len() {
            let r = self.catch_up(shard).await;
            self.saw(&r);
        }
        self.broker().company_of(code)
    }
}

impl Sink for Cluster {
    fn journaled(&self) -> bool {
        true
    }

    fn replicated(&self) -> bool {
        true
    }

    fn available(&self) -> bool {
        self.up()
    }

    fn commit(&self, shard: usize, batches: Vec<Batch>, effects: Vec<Effect>) {
        let ack = Ack::new();
        leave_ack(ack.clone());
        let item = Item::Commit {
            batches,
            effects,
            ack: ack.clone(),
        };
        if self.links[shard].tx.send(item).is_err() {
            ack.finish(false);
        }
    }
}
