//! What every request handler and session shares: the core, delivery, the
//! per-address guard, and the shutdown signal with its task tracker.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::{Broker, Conn};
use crate::delivery::{Hub, Outbox, OutboxRx};
use crate::directory::Agent;
use crate::protocol::Role;
use crate::transport::guard::Guard;

#[derive(Clone)]
pub struct App {
    pub broker: Broker,
    pub hub: Arc<Hub>,
    /// Per-address limits.
    pub guard: Arc<Guard>,
    /// Cancelled when the broker shuts down; sessions close with 4000.
    pub shutdown: CancellationToken,
    /// Every connection and background task, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

impl App {
    /// Registers a connection after its `hello`: its outbox with delivery
    /// first (so nothing meant for it is lost), then with the core.
    pub fn connect(&self, role: Role, agent: Option<Arc<Agent>>) -> (Conn, Outbox, OutboxRx) {
        let config = self.broker.config();
        let (outbox, rx) = Outbox::new(config.outbox_messages, config.outbox_bytes);
        let conn = self.broker.connect_with(role, agent, |id| {
            self.hub.register(id, outbox.clone());
        });
        (conn, outbox, rx)
    }

    /// Releases a connection's seats and subscription, then its outbox.
    pub fn disconnect(&self, conn: &Conn) {
        self.broker.disconnect(conn);
        self.hub.unregister(conn.id);
    }
}
