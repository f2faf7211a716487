//! Several brokers on one Redis: any node serves anyone.
//!
//! A node holds a copy of each company it decides or serves, loaded from
//! the company's image and log of commits in Redis and kept in step by
//! following it (`resident`). One node at a
//! time decides a company's changes: the holder of its lease, which stays
//! where it is. A command that changes a company is [`Cluster::place`]d:
//! on the holder it runs on the local copy as on a single broker; on any
//! other node it is forwarded to the holder and its answer relayed back
//! (`calls`). Its changes are appended by a script that checks the lease
//! and the log's head and publishes the new head atomically; only then
//! are its effects delivered and its reply sent. Other nodes apply the
//! commit as it was applied there, so every copy gives every event the
//! same `seq` and every seat its `status`, `chat` and `ended` wherever it
//! is connected.
//!
//! - [`keys`]: what lives in Redis, and the scripts.
//! - `lease`: which node decides a company: taken when free, kept until
//!   the node stops (handing it over) or dies (it runs out).
//! - `calls`: commands forwarded to the holder, and their answers.
//! - `peers`: direct links between nodes, which carry calls, answers and
//!   log notices instead of Redis when both ends have one.
//! - `log`: reading, following and appending a company's log; rebuilding
//!   a copy that went astray.
//! - [`nodes`]: the node's own number and heartbeat, the channels it
//!   listens to, and the release of a dead node's seats.
//! - [`limits`]: failed-join back-off and help-request limits shared by
//!   every node.
//! - `image`: images of each company in Redis, and the trimming of the log
//!   behind them.
//! - `resident`: which companies this node keeps in memory (those it
//!   decides or serves), and finding the company of a code, token or key.

pub mod calls;
mod image;
pub mod keys;
mod lease;
pub mod limits;
mod log;
pub mod nodes;
mod peers;
pub mod registry;
mod resident;

pub use lease::Placed;
pub use resident::Name;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use crate::case::SessionCode;
use crate::config::Config;
use crate::core::sink::{Ack, Batch, leave_ack};
use crate::core::{Broker, Effect, Sink};
use crate::delivery::Hub;
use crate::directory::Directory;
use crate::error::Error;
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
    #[error("cannot listen for other nodes' links on {addr} (cluster.link): {cause}")]
    Link { addr: String, cause: String },
}

/// How long a command waits for its company's lease before it answers
/// `unavailable`.
const HOLD_WAIT: Duration = Duration::from_secs(5);
/// Commits read from the log in one request.
const PAGE: usize = 512;
/// Commits appended in one script call.
const GROUP: usize = 256;
/// Log notices whose commits wait for a company's follower, at most.
const NOTICES: usize = 64;

/// Every company's link, by shard: a slot per company the broker may
/// serve, filled in order as companies are added.
struct Links {
    slots: Vec<OnceLock<Link>>,
    len: AtomicUsize,
}

impl Links {
    fn new(slots: usize) -> Links {
        Links {
            slots: (0..slots).map(|_| OnceLock::new()).collect(),
            len: AtomicUsize::new(0),
        }
    }

    /// The companies linked so far.
    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    fn iter(&self) -> impl Iterator<Item = &Link> {
        self.slots[..self.len()]
            .iter()
            .map(|s| s.get().expect("a linked company"))
    }

    /// Links the company of `shard` (the next one).
    fn add(&self, shard: usize, link: Link) {
        let _ = self.slots[shard].set(link);
        self.len.fetch_max(shard + 1, Ordering::AcqRel);
    }
}

impl std::ops::Index<usize> for Links {
    type Output = Link;
    fn index(&self, shard: usize) -> &Link {
        self.slots[shard].get().expect("a linked company")
    }
}

/// One company's link to Redis.
struct Link {
    company: String,
    keys: CompanyKeys,
    lease: Mutex<Lease>,
    /// The last commit of the log that the local copy holds.
    applied: AtomicU64,
    /// The commit the local copy stands at, counting this node's commits
    /// not yet stored (read under the company's lock).
    committed: AtomicU64,
    /// Rebuilds of the copy so far: a heartbeat compares Redis's head with
    /// the copy only when no rebuild ran in between.
    rebuilt: AtomicU64,
    /// The commit of the latest image this node stored or started from.
    imaged: AtomicU64,
    /// The copy took commits it did not decide (followed or loaded): the
    /// records they changed are not tracked, so the next image is whole.
    whole_image: AtomicBool,
    /// One catch-up (or rebuild) at a time.
    catching_up: tokio::sync::Mutex<()>,
    /// One acquisition at a time.
    acquiring: tokio::sync::Mutex<()>,
    /// Woken when the lease may have become free.
    freed: Notify,
    /// Woken when the log has more than the copy holds.
    behind: Notify,
    /// The node this one last knew to hold the lease (0: none known).
    holder: AtomicU64,
    /// Nothing of the company is in memory here (`resident`).
    cold: AtomicBool,
    /// The highest head log notices told of.
    heard: AtomicU64,
    /// Commits log notices carried, not applied yet: the first one's
    /// number and each one's bytes, oldest first (at most `NOTICES`).
    notices: Mutex<std::collections::VecDeque<(u64, Vec<Vec<u8>>)>>,
    /// When the company was last used here, in ms since the node started.
    used: AtomicU64,
    /// Heartbeats in a row that found the company's lease free.
    free_beats: AtomicU64,
    tx: mpsc::UnboundedSender<Item>,
}

#[derive(Default)]
struct Lease {
    held: bool,
    /// Being handed over: no new holds; released once unused.
    yielding: bool,
    release_queued: bool,
    users: usize,
    /// The local copy went astray from the log: rebuilt before use.
    diverged: bool,
    /// Counts takings and givings up: a renewal that finds the lease gone
    /// says it expired only if nothing changed hands while it asked.
    term: u64,
    /// Being given up in Redis right now (until `free`).
    letting_go: bool,
}

impl Lease {
    /// Not held any more (given up, or never taken).
    fn free(&mut self) {
        self.held = false;
        self.yielding = false;
        self.release_queued = false;
        self.letting_go = false;
        self.term += 1;
    }

    /// About to be given up in Redis: a renewal meanwhile finds it gone.
    fn let_go(&mut self) {
        self.letting_go = true;
        self.term += 1;
    }

    /// Taken from Redis.
    fn take(&mut self) {
        self.held = true;
        self.yielding = false;
        self.release_queued = false;
        self.term += 1;
    }
}

impl Link {
    /// A company's link, and the queue its appender reads.
    fn new(company: &str) -> (Link, mpsc::UnboundedReceiver<Item>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Link {
            company: company.to_string(),
            keys: CompanyKeys::new(company),
            lease: Mutex::new(Lease::default()),
            applied: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            rebuilt: AtomicU64::new(0),
            imaged: AtomicU64::new(0),
            whole_image: AtomicBool::new(true),
            catching_up: tokio::sync::Mutex::new(()),
            acquiring: tokio::sync::Mutex::new(()),
            freed: Notify::new(),
            behind: Notify::new(),
            holder: AtomicU64::new(0),
            cold: AtomicBool::new(true),
            heard: AtomicU64::new(0),
            notices: Mutex::new(std::collections::VecDeque::new()),
            used: AtomicU64::new(0),
            free_beats: AtomicU64::new(0),
            tx,
        };
        (link, rx)
    }

    fn lease(&self) -> std::sync::MutexGuard<'_, Lease> {
        self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notices(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, Vec<Vec<u8>>)>> {
        self.notices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the commits a log notice carried for the follower. Past
    /// `NOTICES` waiting, they are dropped: the follower reads the log.
    fn noticed(&self, first: u64, commits: Vec<Vec<u8>>) {
        let mut q = self.notices();
        if q.len() >= NOTICES {
            q.clear();
        }
        q.push_back((first, commits));
    }

    /// Queues the giving up of a lease being handed over, once no
    /// command holds it; after what is queued before it is stored.
    fn release_if_unused(&self, l: &mut Lease) {
        if l.users == 0 && !l.release_queued {
            l.release_queued = true;
            let _ = self.tx.send(Item::Release);
        }
    }
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
    heartbeat: Duration,
    /// A company unused this long is let go (`company_idle`).
    idle: Duration,
    /// When this node started: the clock of each link's `used`.
    born: std::time::Instant,
    client: redis::Client,
    conn: ConnectionManager,
    links: Links,
    by_company: dashmap::DashMap<String, usize>,
    /// The registry of companies added at run time, as last read.
    companies_seen: AtomicU64,
    /// One reading of the registry at a time.
    syncing: tokio::sync::Mutex<()>,
    /// This cluster, for the tasks of companies added at run time.
    me: OnceLock<std::sync::Weak<Cluster>>,
    /// Where tasks of companies added at run time are started.
    tasks: OnceLock<(
        tokio_util::sync::CancellationToken,
        tokio_util::task::TaskTracker,
    )>,
    up: AtomicBool,
    /// Handing its companies over to stop: takes no free company at its
    /// heartbeat.
    leaving: AtomicBool,
    up_gauge: prometheus::IntGauge,
    rebuilds: prometheus::IntCounter,
    /// Leases this node took (a company it came to decide).
    leases_taken: prometheus::IntCounter,
    /// Commands this node sent to the node deciding their company.
    forwarded: prometheus::IntCounter,
    /// Companies held in memory here.
    loaded: prometheus::IntGauge,
    /// Companies loaded from Redis here.
    loads: prometheus::IntCounter,
    /// Log notices this node received.
    notices: prometheus::IntCounter,
    deliver: Arc<Hub>,
    broker: OnceLock<Broker>,
    scripts: Scripts,
    /// Calls sent to other nodes, waiting for their answers.
    calls: dashmap::DashMap<u64, tokio::sync::oneshot::Sender<calls::Outcome>>,
    /// Calls and answers queued for each other node.
    outgoing: dashmap::DashMap<u64, calls::Outgoing>,
    next_call: AtomicU64,
    /// What runs the calls other nodes send here (none before the node
    /// serves, nor once it stopped).
    handler: std::sync::RwLock<Option<calls::Handler>>,
    /// The calls of other nodes running here, until answered.
    running: tokio_util::task::TaskTracker,
    /// Where this node's link listens (`[cluster] link`; none: every
    /// message between nodes goes through Redis).
    link_addr: Option<std::net::SocketAddr>,
    /// What both ends of a link prove they know.
    link_secret: Vec<u8>,
    /// The nodes this one has a link to now: their log notices go on it.
    linked: dashmap::DashSet<u64>,
    /// Links this node has open to others.
    links_up: prometheus::IntGauge,
    /// Links to this node refused at their handshake.
    link_refusals: prometheus::IntCounter,
    /// When a refused link was last logged as a warning, in ms since the
    /// node started (0: never).
    refusal_logged: AtomicU64,
}

struct Scripts {
    acquire: redis::Script,
    append: redis::Script,
    renew: redis::Script,
    release: redis::Script,
    count: redis::Script,
    join_failed: redis::Script,
    store_image: redis::Script,
    new_epoch: redis::Script,
}

/// A company held for one command: while any is alive a lease being
/// handed over stays.
pub struct Hold {
    cluster: Arc<Cluster>,
    shard: usize,
}

impl Hold {
    /// The company held.
    pub fn shard(&self) -> usize {
        self.shard
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let link = &self.cluster.links[self.shard];
        let mut l = link.lease();
        l.users -= 1;
        if l.yielding {
            link.release_if_unused(&mut l);
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
        // Errors and logs show the URL without its password.
        let url = crate::config::redacted_url(&c.redis_url);
        let fail = |e: redis::RedisError| ClusterError::Unreachable {
            url: url.clone(),
            cause: e.to_string(),
        };
        let client = redis::Client::open(c.redis_url.as_str()).map_err(fail)?;
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
        let links = Links::new(config.company_slots());
        let by_company = dashmap::DashMap::new();
        let mut rxs = Vec::new();
        for company in dir.companies() {
            let (link, rx) = Link::new(&company.id);
            rxs.push(rx);
            by_company.insert(company.id.clone(), company.index);
            links.add(company.index, link);
            // The operator's companies are the registry's, not the file's.
            if company.from_api {
                continue;
            }
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
        }
        let link_secret = Cluster::link_secret(&mut conn).await.map_err(fail)?;
        let up_gauge = metrics.gauge(
            "casebroker_cluster_redis_up",
            "1 while this node reaches the cluster's Redis, 0 while it does not",
        );
        up_gauge.set(1);
        let rebuilds = metrics.counter(
            "casebroker_cluster_rebuilds_total",
            "Companies rebuilt from Redis because the copy went astray (a lost lease, a failed append, a log trimmed past it, or Redis that lost data)",
        );
        let leases_taken = metrics.counter(
            "casebroker_cluster_leases_taken_total",
            "Companies this node came to decide (their lease taken: at first use, or from a node that stopped or died)",
        );
        let forwarded = metrics.counter(
            "casebroker_cluster_forwarded_total",
            "Commands this node sent to the node deciding their company",
        );
        let loaded = metrics.gauge(
            "casebroker_cluster_companies_loaded",
            "Companies this node holds in memory (it decides them or serves their connections)",
        );
        let loads = metrics.counter(
            "casebroker_cluster_company_loads_total",
            "Companies this node loaded from Redis (at first use, or used again after it let them go)",
        );
        let notices = metrics.counter(
            "casebroker_cluster_log_notices_total",
            "Log notices this node received (sent only to the nodes that hold the company in memory, not to the one that appended)",
        );
        let links_up = metrics.gauge(
            "casebroker_cluster_links",
            "Direct links this node has open to other nodes (calls, answers and log notices to them skip Redis)",
        );
        let link_refusals = metrics.counter(
            "casebroker_cluster_link_refusals_total",
            "Links to this node refused at their handshake (not a node, another version, or no proof of the cluster's link secret)",
        );
        let cluster = Arc::new(Cluster {
            url,
            name,
            node,
            timeout: c.node_timeout,
            heartbeat: c.heartbeat,
            idle: c.company_idle,
            born: std::time::Instant::now(),
            client,
            conn,
            links,
            by_company,
            companies_seen: AtomicU64::new(0),
            syncing: tokio::sync::Mutex::new(()),
            me: OnceLock::new(),
            tasks: OnceLock::new(),
            up: AtomicBool::new(true),
            leaving: AtomicBool::new(false),
            up_gauge,
            rebuilds,
            leases_taken,
            forwarded,
            loaded,
            loads,
            notices,
            deliver,
            broker: OnceLock::new(),
            calls: dashmap::DashMap::new(),
            outgoing: dashmap::DashMap::new(),
            next_call: AtomicU64::new(1),
            handler: std::sync::RwLock::new(None),
            running: tokio_util::task::TaskTracker::new(),
            link_addr: c.link,
            link_secret,
            linked: dashmap::DashSet::new(),
            links_up,
            link_refusals,
            refusal_logged: AtomicU64::new(0),
            scripts: Scripts {
                acquire: keys::acquire(),
                append: keys::append(),
                renew: keys::renew(),
                release: keys::release(),
                count: keys::count(),
                join_failed: redis::Script::new(limits::JOIN_FAILED),
                store_image: redis::Script::new(image::STORE),
                new_epoch: keys::new_epoch(),
            },
        });
        let _ = cluster.me.set(Arc::downgrade(&cluster));
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

    /// Starts following the cluster: heartbeats, channels, lease renewal,
    /// dead nodes. No company is loaded yet: each is at its first use (or
    /// when this node takes it because nobody decides it).
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
        if let Some(addr) = self.link_addr {
            let bound = self
                .listen_links(addr, shutdown.clone(), tracker)
                .await
                .map_err(|e| ClusterError::Link {
                    addr: addr.to_string(),
                    cause: e.to_string(),
                })?;
            tracing::info!(%bound, "listening for links from other nodes");
        }
        let mut conn = self.conn.clone();
        for (shard, link) in self.links.iter().enumerate() {
            let fresh = hex::encode(rand::random::<[u8; 8]>());
            let _: bool = conn.set_nx(&link.keys.epoch, &fresh).await.map_err(fail)?;
            let epoch: String = conn.get(&link.keys.epoch).await.map_err(fail)?;
            self.broker().set_epoch(shard, &epoch);
        }
        for shard in 0..self.links.len() {
            tracker.spawn(self.clone().follow(shard, shutdown.clone()));
        }
        let interval = self.broker().config().snapshot_interval;
        tracker.spawn(self.clone().images(interval, shutdown.clone()));
        tracker.spawn(self.clone().heartbeat(shutdown.clone()));
        let _ = self.tasks.set((shutdown.clone(), tracker.clone()));
        tracker.spawn(self.clone().renew_leases(shutdown));
        tracing::info!(node = self.node, name = %self.name, "joined the cluster");
        Ok(())
    }

    /// True while the copy of `shard` went astray from the log.
    fn astray(&self, shard: usize) -> bool {
        self.links[shard].lease().diverged
    }

    /// Marks the copy of `shard` as standing at commit `n` of the log.
    fn stands_at(&self, shard: usize, n: u64) {
        let link = &self.links[shard];
        if link.applied.swap(n, Ordering::AcqRel) != n {
            link.whole_image.store(true, Ordering::Release);
        }
        link.committed.store(n, Ordering::Release);
    }

    /// True while this node holds the lease of `shard`.
    pub fn holds(&self, shard: usize) -> bool {
        self.links[shard].lease().held
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

    /// Brings the copy of `shard` up to what the log holds now (loading
    /// it when this node holds nothing of it), so that a read on this node
    /// shows what another node just acknowledged. While Redis is away a
    /// copy in memory is read as it is; one that is not cannot be read.
    pub async fn fresh(&self, shard: usize) -> crate::error::Result<()> {
        self.in_memory(shard).await?;
        let r = self.catch_up(shard).await;
        self.saw(&r);
        Ok(())
    }

    /// Loads `shard` when this node holds nothing of it (see
    /// `resident`), for a connection that is to follow it here;
    /// `unavailable` when Redis cannot be read.
    pub async fn in_memory(&self, shard: usize) -> crate::error::Result<()> {
        let r = self.warm(shard).await;
        self.saw(&r);
        r.map_err(|_| unavailable("the cluster's store is unreachable; retry later"))
    }

    /// Catches up every company this node holds in memory, for a name it
    /// does not know that another node may have just added.
    pub async fn fresh_in_memory(&self) {
        for shard in 0..self.links.len() {
            if !self.cold(shard) {
                let r = self.catch_up(shard).await;
                self.saw(&r);
            }
        }
    }

    /// Makes sure the copy holds `code` if any node created it: a code
    /// just made on another node may not have reached this one yet, and
    /// its company may not be in memory here.
    pub async fn find(&self, code: &SessionCode) -> Option<usize> {
        if let Some(shard) = self.broker().company_of(code) {
            self.touch(shard);
            return Some(shard);
        }
        if let Some(shard) = self.locate(Name::Code(code)).await
            && self.fresh(shard).await.is_ok()
            && let Some(found) = self.broker().company_of(code)
        {
            return Some(found);
        }
        // Codes stored before `casebroker:where` was kept.
        self.fresh_in_memory().await;
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

    fn company_added(&self, shard: usize, id: &str) {
        self.link_company(shard, id);
    }

    fn commit(&self, shard: usize, batches: Vec<Batch>, effects: Vec<Effect>) {
        if !batches.is_empty() {
            self.links[shard].committed.fetch_add(1, Ordering::AcqRel);
        }
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
