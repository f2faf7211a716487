//! What every request handler and session shares: the core, delivery, the
//! per-address guard, and the shutdown signal with its task tracker.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Cluster, Hold};
use crate::core::{Broker, Conn};
use crate::delivery::outbox::LargeBudget;
use crate::delivery::{Hub, Outbox, OutboxRx};
use crate::directory::Agent;
use crate::error::Result;
use crate::protocol::Role;
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
}

impl App {
    /// In a cluster, holds the company a command is about to change (see
    /// [`Cluster::hold`]); nothing to hold on a single broker.
    pub async fn hold(&self, shard: Option<usize>) -> Result<Option<Hold>> {
        match (&self.cluster, shard) {
            (Some(c), Some(shard)) => c.hold(shard).await.map(Some),
            _ => Ok(None),
        }
    }

    /// In a cluster, brings this node's copy of a company up to date
    /// before a read (see [`Cluster::fresh`]).
    pub async fn fresh(&self, shard: usize) {
        if let Some(c) = &self.cluster {
            c.fresh(shard).await;
        }
    }

    /// The agent a token belongs to. On a cluster node a token it does not
    /// know may be one another node has just added or re-enabled: every
    /// company catches up with the log once before the token is refused.
    pub async fn authenticate(&self, token: &str) -> Option<Arc<Agent>> {
        if let Some(agent) = self.broker.authenticate(token) {
            return Some(agent);
        }
        let cluster = self.cluster.as_ref()?;
        cluster.sync_companies().await;
        for shard in 0..self.broker.shards() {
            cluster.fresh(shard).await;
        }
        self.broker.authenticate(token)
    }

    /// The company of a module key. On a cluster node a key it does not
    /// know may be one another node has just added: every company catches
    /// up with the log once before the key counts as unknown.
    pub async fn module_shard(&self, key: &str) -> Option<usize> {
        let known = |app: &App| app.broker.directory().module(key).map(|m| m.company_index);
        if let Some(shard) = known(self) {
            return Some(shard);
        }
        let cluster = self.cluster.as_ref()?;
        for shard in 0..self.broker.shards() {
            cluster.fresh(shard).await;
        }
        known(self)
    }

    /// Registers a connection after its `hello`: its outbox with delivery
    /// first (so nothing meant for it is lost), then with the core. In a
    /// cluster an agent's company is held first, as its presence changes.
    pub async fn connect(
        &self,
        role: Role,
        agent: Option<Arc<Agent>>,
    ) -> Result<(Conn, Outbox, OutboxRx)> {
        let _hold = self.hold(agent.as_ref().map(|a| a.company_index)).await?;
        Ok(self.connect_held(role, agent))
    }

    fn connect_held(&self, role: Role, agent: Option<Arc<Agent>>) -> (Conn, Outbox, OutboxRx) {
        let config = self.broker.config();
        let (outbox, rx) = Outbox::with_budget(
            config.outbox_messages,
            config.outbox_bytes,
            Some(self.large.clone()),
        );
        let conn = self.broker.connect_with(role, agent, |id| {
            self.hub.register(id, outbox.clone());
        });
        (conn, outbox, rx)
    }

    /// A reader of an agent's events for `GET /v1/events`: its outbox is
    /// bounded like a connection's; the agent does not count as online.
    pub fn connect_feed(&self, agent: Arc<Agent>) -> (Conn, OutboxRx) {
        let config = self.broker.config();
        let (outbox, rx) = Outbox::with_budget(
            config.outbox_messages,
            config.outbox_bytes,
            Some(self.large.clone()),
        );
        let conn = self.broker.connect_feed(agent, |id| {
            self.hub.register(id, outbox);
        });
        (conn, rx)
    }

    /// Releases a connection's seats and subscription, then its outbox.
    /// In a cluster this waits for the company's lease (while Redis is
    /// away, until it is back, for at most `DISCONNECT_WAIT`).
    pub async fn disconnect(&self, conn: Conn) {
        if let Some(c) = &self.cluster
            && let Some(shard) = conn.shard()
        {
            let until = tokio::time::Instant::now() + DISCONNECT_WAIT;
            let hold = loop {
                match c.hold(shard).await {
                    Ok(h) => break Some(h),
                    Err(_) if tokio::time::Instant::now() < until => {
                        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    }
                    Err(_) => break None,
                }
            };
            // Without the lease its seats stay; the heartbeat lets them go
            // once the company can be held again.
            if hold.is_some() {
                self.broker.disconnect(&conn);
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
