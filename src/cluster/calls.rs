//! Calls between nodes: a command for a company another node holds is
//! sent to that node on its channel (`casebroker:node:<n>`, or on the
//! direct link to it, see `super::peers`), run there while it holds the
//! company, and its answer sent back the same way (the caller's channel,
//! or the link to it). What a call carries is the transport's business
//! (`transport::forward`); here it is bytes.
//!
//! A call that reaches a node not holding the company (any more) runs
//! nothing and is answered "not here", so the caller may place it anew.
//! A call with no answer in time may or may not have run: it is never
//! sent twice. What a node sends to one other node (calls, answers and,
//! on a link, log notices) goes out in batches: whatever queued while the
//! last write was on its way, or while the running tasks had their turn,
//! leaves in the next one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::future::BoxFuture;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::error::Result;

use super::{Cluster, Hold, keys, unavailable};

/// How often a node waiting for an answer checks that the node it called
/// is still there.
const ALIVE_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs a call's body on the node that holds its company, giving the
/// answer's body.
pub type Handler = Arc<dyn Fn(Hold, Vec<u8>) -> BoxFuture<'static, Vec<u8>> + Send + Sync>;

/// Calls and answers on a node's channel (a message holds several).
#[derive(Serialize, Deserialize)]
pub(super) enum Wire {
    Call {
        from: u64,
        id: u64,
        company: String,
        body: Vec<u8>,
    },
    /// `None`: the node does not hold the company; nothing ran.
    Answer { id: u64, body: Option<Vec<u8>> },
    /// A log notice (see `keys::append`), on a link only: through Redis
    /// it goes on the node's log channel.
    Notice(Vec<u8>),
}

/// What the waiter of a call is told.
pub(super) enum Outcome {
    /// The answer (`None`: not held there, nothing ran).
    Answer(Option<Vec<u8>>),
    /// Nobody listens on the node's channel: it is gone; nothing ran.
    Undelivered,
    /// Redis did not take the call.
    StoreDown,
}

/// Calls and answers queued for one node.
pub(super) type Outgoing = tokio::sync::mpsc::UnboundedSender<Wire>;

/// Most calls and answers in one message.
const BATCH: usize = 64;

/// The outcome of a call that was answered.
pub enum Answered {
    /// It ran on the holder, which answered this.
    Ran(Vec<u8>),
    /// The node did not hold the company (or is gone): nothing ran.
    NotThere,
}

impl Cluster {
    /// True while this node runs the calls other nodes forward to it.
    pub(super) fn serving(&self) -> bool {
        self.handler
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Sets what runs the calls other nodes send here; `None` once the
    /// node stopped serving.
    pub fn serve_calls(&self, handler: Option<Handler>) {
        *self.handler.write().unwrap_or_else(|p| p.into_inner()) = handler;
    }

    /// Stops running other nodes' calls: those that come now are answered
    /// "not here", those running are answered, and then the node is marked
    /// as having left cleanly, so that a call it never read counts as not
    /// run.
    pub async fn stop_serving(&self) {
        self.serve_calls(None);
        self.running.close();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.running.wait()).await;
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<()> = conn.set_ex(keys::node_left(self.node), 1, 3600).await;
        self.saw(&r);
    }

    /// True when `node` stopped cleanly (see [`Cluster::stop_serving`]).
    async fn left(&self, node: u64) -> bool {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<bool> = conn.exists(keys::node_left(node)).await;
        r.unwrap_or(false)
    }

    /// Sends `body` to `node` for the company of `shard` and waits for its
    /// answer until `deadline`; `unavailable` when none came in time (the
    /// command may have run).
    pub async fn call(
        &self,
        node: u64,
        shard: usize,
        body: Vec<u8>,
        deadline: tokio::time::Instant,
    ) -> Result<Answered> {
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        self.forwarded.inc();
        let (tx, rx) = oneshot::channel();
        self.calls.insert(id, tx);
        self.send_to(
            node,
            Wire::Call {
                from: self.node,
                id,
                company: self.links[shard].company.clone(),
                body,
            },
        );
        // While it runs, the node is checked to be still there: a node that
        // died with the call never answers.
        let mut rx = rx;
        let mut check =
            tokio::time::interval_at(tokio::time::Instant::now() + ALIVE_CHECK, ALIVE_CHECK);
        let outcome = loop {
            tokio::select! {
                r = &mut rx => break r.ok(),
                _ = tokio::time::sleep_until(deadline) => break None,
                _ = check.tick() => {
                    if !self.listening(node).await {
                        break None;
                    }
                }
            }
        };
        match outcome {
            Some(Outcome::Answer(Some(body))) => Ok(Answered::Ran(body)),
            Some(Outcome::Answer(None) | Outcome::Undelivered) => {
                self.forget_holder(shard, node);
                Ok(Answered::NotThere)
            }
            Some(Outcome::StoreDown) => {
                Err(unavailable("the cluster's store did not answer; retry"))
            }
            // A node that stopped cleanly answered every call it read: this
            // one it never read.
            None if self.left(node).await => {
                self.calls.remove(&id);
                self.forget_holder(shard, node);
                Ok(Answered::NotThere)
            }
            None => {
                self.calls.remove(&id);
                self.forget_holder(shard, node);
                Err(unavailable(
                    "the node deciding the company did not answer; retry",
                ))
            }
        }
    }

    /// Queues a call, an answer or a notice for `node`.
    pub(super) fn send_to(&self, node: u64, wire: Wire) {
        let tx = self
            .outgoing
            .entry(node)
            .or_insert_with(|| {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let me = self.me.get().cloned().unwrap_or_default();
                tokio::spawn(send_batches(me, node, rx));
                tx
            })
            .clone();
        let _ = tx.send(wire);
    }

    /// True while `node` listens on its channel (or Redis does not say).
    async fn listening(&self, node: u64) -> bool {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(keys::node_channel(node))
            .query_async(&mut conn)
            .await;
        !matches!(r, Ok((_, 0)))
    }

    /// A message on this node's channel.
    pub(super) fn on_call_channel(self: &Arc<Self>, payload: &[u8]) {
        let Ok(batch) = postcard::from_bytes::<Vec<Wire>>(payload) else {
            return;
        };
        for wire in batch {
            match wire {
                Wire::Answer { id, body } => {
                    if let Some((_, tx)) = self.calls.remove(&id) {
                        let _ = tx.send(Outcome::Answer(body));
                    }
                }
                Wire::Notice(msg) => {
                    self.notices.inc();
                    self.heard_log(&msg);
                }
                Wire::Call {
                    from,
                    id,
                    company,
                    body,
                } => {
                    let me = self.clone();
                    self.running.spawn(async move {
                        let hold = me.shard_of(&company).and_then(|s| me.hold_if_held(s));
                        let handler = me.handler.read().unwrap_or_else(|p| p.into_inner()).clone();
                        let answer = match (hold, handler) {
                            (Some(hold), Some(handler)) => Some(handler(hold, body).await),
                            _ => None,
                        };
                        me.send_to(from, Wire::Answer { id, body: answer });
                    });
                }
            }
        }
    }
}

/// Sends what is queued for `node`, a batch at a time: on the link to it
/// while there is one (see `super::peers`), else published in Redis; tells
/// the waiters of calls that could not be delivered. Ends with the cluster.
async fn send_batches(
    cluster: std::sync::Weak<Cluster>,
    node: u64,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Wire>,
) {
    let channel = keys::node_channel(node);
    let log_channel = keys::log_channel(node);
    let mut batch = Vec::with_capacity(BATCH);
    let mut link = None;
    let mut linking: Option<tokio::task::JoinHandle<Option<super::peers::Link>>> = None;
    let mut next_try = tokio::time::Instant::now();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // What the tasks running now queue (answers and notices of the
        // same commits, calls of the same moment) leaves with these.
        if batch.len() < BATCH {
            tokio::task::yield_now().await;
            while batch.len() < BATCH
                && let Ok(wire) = rx.try_recv()
            {
                batch.push(wire);
            }
        }
        let Some(me) = cluster.upgrade() else {
            return;
        };
        if let Some(h) = linking.take_if(|h| h.is_finished()) {
            link = h.await.ok().flatten();
            me.set_linked(node, link.is_some());
        }
        if link.is_none()
            && linking.is_none()
            && me.link_addr.is_some()
            && tokio::time::Instant::now() >= next_try
        {
            next_try = tokio::time::Instant::now() + super::peers::RETRY;
            let me = me.clone();
            linking = Some(tokio::spawn(async move { me.open_link(node).await }));
        }
        if let Some(l) = link.as_mut() {
            let bytes = postcard::to_allocvec(&batch).expect("calls encode");
            if super::peers::write(l, bytes).await {
                batch.clear();
                continue;
            }
            tracing::warn!(node, "the link to a node broke; using Redis");
            link = None;
            me.set_linked(node, false);
            // Calls may have arrived: they are not sent again.
            batch.retain(|w| !matches!(w, Wire::Call { .. }));
        }
        let mut conn = me.conn.clone();
        // Notices go to the node's log channel, as the append script
        // publishes them.
        for wire in batch.extract_if(.., |w| matches!(w, Wire::Notice(_))) {
            if let Wire::Notice(msg) = wire {
                let r: redis::RedisResult<i64> = conn.publish(&log_channel, msg).await;
                me.saw(&r);
            }
        }
        if batch.is_empty() {
            continue;
        }
        let bytes = postcard::to_allocvec(&batch).expect("calls encode");
        let r: redis::RedisResult<i64> = conn.publish(&channel, bytes).await;
        me.saw(&r);
        // Nobody listens (the node is gone), or Redis did not take it.
        let failed = match r {
            Ok(0) => Some(true),
            Ok(_) => None,
            Err(_) => Some(false),
        };
        if let Some(gone) = failed {
            for wire in &batch {
                if let Wire::Call { id, .. } = wire
                    && let Some((_, tx)) = me.calls.remove(id)
                {
                    let _ = tx.send(if gone {
                        Outcome::Undelivered
                    } else {
                        Outcome::StoreDown
                    });
                }
            }
        }
        batch.clear();
    }
}
