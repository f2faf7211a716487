//! What every request handler and session shares: the core, delivery, the
//! per-address guard, and the shutdown signal with its task tracker.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Cluster, Hold, Name, Placed};
use crate::core::{Broker, Conn};
use crate::delivery::outbox::LargeBudget;
use crate::delivery::{Hub, Outbox, OutboxRx};
use crate::directory::Agent;
use crate::error::Result;
use crate::protocol::Role;
use crate::transport::forward;
use crate::transport::guard::Guard;

#[derive(Clone)]
pub struct App {
    pub broker: Broker,
    pub hub: Arc<Hub>,
    /// Per-address limits.
    pub guard: Arc<Guard>,
    /// This node's side of a cluster, when it is one.
    pub cluster: Option<Arc<Cluster>>,
    /// Cancelled when the broker shuts down; sessions close with 4000.
    pub shutdown: CancellationToken,
    /// Every connection and background task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// What big snapshots may hold, all connections together.
    pub large: Arc<LargeBudget>,
    /// The HTTP router, to run a request forwarded by another cluster
    /// node (set once serving; emptied at the end, as it holds the app).
    pub router: Arc<std::sync::Mutex<Option<axum::Router>>>,
}

/// Where a command runs.
pub enum Place {
    /// Here, with its company held in a cluster.
    Here(Option<Hold>),
    /// On the cluster node that decides its company.
    There { node: u64, shard: usize },
}

impl App {
    /// Where a command changing `shard` runs: here on a single broker; in
    /// a cluster, here holding the company when this node decides it, or
    /// on the node that does (see [`Cluster::place`]).
    pub async fn place(&self, shard: Option<usize>) -> Result<Place> {
        match (&self.cluster, shard) {
            (Some(c), Some(shard)) => Ok(match c.place(shard).await? {
                Placed::Here(hold) => Place::Here(Some(hold)),
                Placed::There(node) => Place::There { node, shard },
            }),
            _ => Ok(Place::Here(None)),
        }
    }

    /// The HTTP router, while serving.
    pub fn router(&self) -> Option<axum::Router> {
        self.router
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// In a cluster, brings this node's copy of a company up to date
    /// before a read, loading it if it is not in memory here (see
    /// [`Cluster::fresh`]); `unavailable` when that cannot be done.
    pub async fn fresh(&self, shard: usize) -> Result<()> {
        match &self.cluster {
            Some(c) => c.fresh(shard).await,
            None => Ok(()),
        }
    }

    /// The agent a token belongs to (see [`App::find_named`]).
    pub async fn authenticate(&self, token: &str) -> Option<Arc<Agent>> {
        let hash = crate::config::hash_token(token);
        self.find_named(
            Name::Token(&hash),
            |app| app.broker.authenticate(token),
            |agent| agent.company_index,
        )
        .await
    }

    /// The company of a module key (see [`App::find_named`]).
    pub async fn module_shard(&self, key: &str) -> Option<usize> {
        self.find_named(
            Name::Module(key),
            |app| app.broker.directory().module(key).map(|m| m.company_index),
            |&shard| shard,
        )
        .await
    }

    /// What `lookup` finds on this node. On a cluster node a name it does
    /// not know may be one another node has just added: the company Redis
    /// names for it is loaded or caught up (then the companies in memory
    /// are) before it counts as unknown. A name known here of a company
    /// not in memory is looked up again once the company is loaded, since
    /// it may have changed meanwhile (a disabled agent, a deleted key).
    async fn find_named<T>(
        &self,
        name: Name<'_>,
        lookup: impl Fn(&App) -> Option<T>,
        company: impl Fn(&T) -> usize,
    ) -> Option<T> {
        let found = lookup(self);
        let Some(cluster) = &self.cluster else {
            return found;
        };
        if let Some(t) = found {
            let shard = company(&t);
            // While Redis is away the copy here is all there is (and no
            // change can be made).
            if !cluster.cold(shard) || cluster.in_memory(shard).await.is_err() {
                return Some(t);
            }
            return lookup(self);
        }
        cluster.sync_companies().await;
        if let Some(shard) = cluster.locate(name).await
            && cluster.fresh(shard).await.is_ok()
            && let Some(t) = lookup(self)
        {
            return Some(t);
        }
        cluster.fresh_in_memory().await;
        lookup(self)
    }

    /// Registers a connection after its `hello`: its outbox with delivery
    /// first (so nothing meant for it is lost), then with the core. In a
    /// cluster an agent's presence changes its company: on the node that
    /// decides it.
    pub async fn connect(
        &self,
        role: Role,
        agent: Option<Arc<Agent>>,
    ) -> Result<(Conn, Outbox, OutboxRx)> {
        let shard = agent.as_ref().map(|a| a.company_index);
        // The connection follows its company here: it is in memory.
        if let (Some(c), Some(shard)) = (&self.cluster, shard) {
            c.in_memory(shard).await?;
        }
        let (node, shard) = match self.place(shard).await? {
            Place::Here(_hold) => return Ok(self.connect_held(role, agent)),
            Place::There { node, shard } => (node, shard),
        };
        let cluster = self
            .cluster
            .as_ref()
            .expect("placed elsewhere in a cluster");
        let (outbox, rx) = self.outbox();
        let conn = self.broker.connect_elsewhere(role, agent.clone(), |id| {
            self.hub.register(id, outbox.clone());
        });
        match forward::presence(cluster, shard, node, &conn, true).await {
            Ok(None) => Ok((conn, outbox, rx)),
            // Decided here now.
            Ok(Some(_hold)) => {
                if let Some(a) = &agent {
                    self.broker.agent_online(conn.id, a);
                }
                Ok((conn, outbox, rx))
            }
            Err(e) => {
                self.broker.forget(&conn);
                self.hub.unregister(conn.id);
                Err(e)
            }
        }
    }

    fn outbox(&self) -> (Outbox, OutboxRx) {
        let config = self.broker.config();
        Outbox::with_budget(
            config.outbox_messages,
            config.outbox_bytes,
            Some(self.large.clone()),
        )
    }

    fn connect_held(&self, role: Role, agent: Option<Arc<Agent>>) -> (Conn, Outbox, OutboxRx) {
        let (outbox, rx) = self.outbox();
        let conn = self.broker.connect_with(role, agent, |id| {
            self.hub.register(id, outbox.clone());
        });
        (conn, outbox, rx)
    }

    /// A reader of an agent's events for `GET /v1/events`: its outbox is
    /// bounded like a connection's; the agent does not count as online.
    pub fn connect_feed(&self, agent: Arc<Agent>) -> (Conn, OutboxRx) {
        let (outbox, rx) = self.outbox();
        let conn = self.broker.connect_feed(agent, |id| {
            self.hub.register(id, outbox);
        });
        (conn, rx)
    }

    /// Releases a connection's seats and subscription, then its outbox.
    /// In a cluster the seats are left on the node that decides the
    /// company (while Redis is away, once it is back, for at most
    /// `DISCONNECT_WAIT`).
    pub async fn disconnect(&self, conn: Conn) {
        if let Some(c) = &self.cluster
            && let Some(shard) = conn.shard()
        {
            let until = tokio::time::Instant::now() + DISCONNECT_WAIT;
            loop {
                let placed = match self.place(Some(shard)).await {
                    Ok(Place::Here(_hold)) => {
                        self.broker.disconnect(&conn);
                        break;
                    }
                    Ok(Place::There { node, .. }) => {
                        forward::presence(c, shard, node, &conn, false).await
                    }
                    Err(e) => Err(e),
                };
                match placed {
                    Ok(None) => {
                        self.broker.forget(&conn);
                        break;
                    }
                    Ok(Some(_hold)) => {
                        self.broker.disconnect(&conn);
                        break;
                    }
                    Err(_) if tokio::time::Instant::now() < until => {
                        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    }
                    // Its seats stay; the heartbeat lets them go once the
                    // company can be decided again.
                    Err(_) => break,
                }
            }
        } else {
            self.broker.disconnect(&conn);
        }
        self.hub.unregister(conn.id);
    }

    /// `disconnect` on a single broker, where nothing waits.
    pub fn disconnect_now(&self, conn: Conn) {
        self.broker.disconnect(&conn);
        self.hub.unregister(conn.id);
    }
}

/// The longest a closed connection waits to leave its seats in a cluster.
const DISCONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
