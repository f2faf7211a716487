//! Calls between nodes: a command for a company another node holds is
//! sent to that node on its channel (`casebroker:node:<n>`), run there
//! while it holds the company, and its answer published back on the
//! caller's channel. What a call carries is the transport's business
//! (`transport::forward`); here it is bytes.
//!
//! A call that reaches a node not holding the company (any more) runs
//! nothing and is answered "not here", so the caller may place it anew.
//! A call with no answer in time may or may not have run: it is never
//! sent twice.

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

/// Calls and answers on a node's channel.
#[derive(Serialize, Deserialize)]
enum Wire {
    Call {
        from: u64,
        id: u64,
        company: String,
        body: Vec<u8>,
    },
    /// `None`: the node does not hold the company; nothing ran.
    Answer { id: u64, body: Option<Vec<u8>> },
}

/// The outcome of a call that was answered.
pub enum Answered {
    /// It ran on the holder, which answered this.
    Ran(Vec<u8>),
    /// The node did not hold the company (or is gone): nothing ran.
    NotThere,
}

impl Cluster {
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
        let wire = Wire::Call {
            from: self.node,
            id,
            company: self.links[shard].company.clone(),
            body,
        };
        let bytes = postcard::to_allocvec(&wire).expect("calls encode");
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<i64> = conn.publish(keys::node_channel(node), bytes).await;
        self.saw(&r);
        match r {
            Ok(0) => {
                // Nobody listens there: the node is gone.
                self.calls.remove(&id);
                self.forget_holder(shard, node);
                return Ok(Answered::NotThere);
            }
            Ok(_) => {}
            Err(_) => {
                self.calls.remove(&id);
                return Err(unavailable("the cluster's store did not answer; retry"));
            }
        }
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
            Some(Some(body)) => Ok(Answered::Ran(body)),
            Some(None) => {
                self.forget_holder(shard, node);
                Ok(Answered::NotThere)
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
        let Ok(wire) = postcard::from_bytes::<Wire>(payload) else {
            return;
        };
        match wire {
            Wire::Answer { id, body } => {
                if let Some((_, tx)) = self.calls.remove(&id) {
                    let _ = tx.send(body);
                }
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
                    let wire = Wire::Answer { id, body: answer };
                    let bytes = postcard::to_allocvec(&wire).expect("answers encode");
                    let mut conn = me.conn.clone();
                    let r: redis::RedisResult<i64> =
                        conn.publish(keys::node_channel(from), bytes).await;
                    me.saw(&r);
                });
            }
        }
    }
}
