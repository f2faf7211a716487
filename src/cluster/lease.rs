//! The lease: which node decides a company's changes. The first node
//! that needs a company free of any holder takes it, catches up with the
//! log, and keeps it (renewing it) until it stops or dies; every other
//! node forwards that company's commands to it ([`super::calls`]) rather
//! than taking the lease away. A node that stops hands its companies
//! over ([`Cluster::hand_over`]); a dead node's lease runs out after
//! [`keys::LEASE_MS`] and the next command anywhere takes it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::Result;

use super::{Cluster, HOLD_WAIT, Hold, keys, unavailable};

/// Where a company's changes are decided.
pub enum Placed {
    /// Here: the command runs on this node while the hold lives.
    Here(Hold),
    /// On that node: the command is forwarded to it.
    There(u64),
}

impl Cluster {
    /// Where `shard`'s changes are decided now: held here (taking the
    /// lease when no node has it), or the node that holds it.
    /// `unavailable` while Redis is unreachable or the copy is rebuilt.
    pub async fn place(self: &Arc<Self>, shard: usize) -> Result<Placed> {
        let link = &self.links[shard];
        self.touch(shard);
        let deadline = tokio::time::Instant::now() + HOLD_WAIT;
        loop {
            if !self.up() {
                return Err(unavailable(
                    "the cluster's store is unreachable; retry later",
                ));
            }
            let handing_over = {
                let mut l = link.lease();
                if l.diverged {
                    return Err(unavailable(
                        "this node is catching up with the cluster; retry",
                    ));
                }
                if l.held && !l.yielding {
                    l.users += 1;
                    return Ok(Placed::Here(Hold {
                        cluster: self.clone(),
                        shard,
                    }));
                }
                l.held
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable("the company's node is changing; retry"));
            }
            if handing_over {
                // This node is handing the company over: once it is free,
                // the next holder is wherever it is taken.
                let _ = tokio::time::timeout(Duration::from_millis(5), link.freed.notified()).await;
                continue;
            }
            let holder = link.holder.load(Ordering::Acquire);
            if holder != 0 && holder != self.node {
                return Ok(Placed::There(holder));
            }
            match self.acquire(shard).await? {
                None => continue,
                Some(node) => {
                    link.holder.store(node, Ordering::Release);
                    return Ok(Placed::There(node));
                }
            }
        }
    }

    /// Holds `shard` on this node, for work that runs where the company is
    /// decided (deadlines, webhook deliveries, images, releasing a dead
    /// node's seats): `unavailable` when another node holds it.
    pub async fn hold(self: &Arc<Self>, shard: usize) -> Result<Hold> {
        match self.place(shard).await? {
            Placed::Here(hold) => Ok(hold),
            Placed::There(_) => Err(unavailable("another node holds the company")),
        }
    }

    /// Holds `shard` when this node holds its lease already, without
    /// waiting or taking it: for a call another node forwarded here.
    pub(super) fn hold_if_held(self: &Arc<Self>, shard: usize) -> Option<Hold> {
        let mut l = self.links[shard].lease();
        if l.held && !l.yielding && !l.diverged && self.up() {
            l.users += 1;
            return Some(Hold {
                cluster: self.clone(),
                shard,
            });
        }
        None
    }

    /// The holder this node knew of `shard` is not (or no longer) it.
    pub fn forget_holder(&self, shard: usize, node: u64) {
        let _ =
            self.links[shard]
                .holder
                .compare_exchange(node, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Takes the lease of `shard` if no other node holds it and catches up
    /// with the log: `None` when taken, else the node holding it.
    pub(super) async fn acquire(&self, shard: usize) -> Result<Option<u64>> {
        let link = &self.links[shard];
        let _one = link.acquiring.lock().await;
        if link.lease().held {
            return Ok(None);
        }
        let mut conn = self.conn.clone();
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
        if taken != 1 {
            return Ok(Some(value.max(0) as u64));
        }
        let head = value.max(0) as u64;
        let _g = link.catching_up.lock().await;
        // A company not in memory here is loaded whole; nobody appends
        // while the lease is this node's.
        let caught_up = if link.cold.load(Ordering::Acquire) {
            self.load_cold(shard).await
        } else {
            self.catch_up_to(shard, head).await
        };
        if let Err(e) = caught_up {
            self.saw(&Err::<(), _>(e));
            let _ = self.release_now(shard).await;
            return Err(unavailable("the cluster's store did not answer; retry"));
        }
        link.lease().take();
        link.holder.store(self.node, Ordering::Release);
        self.leases_taken.inc();
        tracing::debug!(company = %link.company, "holding the company");
        Ok(None)
    }

    pub(super) async fn release_now(&self, shard: usize) -> redis::RedisResult<()> {
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

    /// Hands every company this node holds over: no new holds here, and
    /// each lease is given up once what was decided here is stored. Waits
    /// at most `limit` for that.
    pub async fn hand_over(&self, limit: Duration) {
        // Nor does its heartbeat take a free company any more.
        self.leaving.store(true, Ordering::Release);
        let mut held = Vec::new();
        for (shard, link) in self.links.iter().enumerate() {
            let mut l = link.lease();
            if l.held && !l.yielding {
                l.yielding = true;
                link.release_if_unused(&mut l);
                held.push(shard);
            }
        }
        let until = tokio::time::Instant::now() + limit;
        for shard in held {
            let link = &self.links[shard];
            while link.lease().held && tokio::time::Instant::now() < until {
                let _ =
                    tokio::time::timeout(Duration::from_millis(20), link.freed.notified()).await;
            }
        }
    }

    /// Gives the lease of `shard` up (everything before it is stored).
    pub(super) async fn give_up(&self, shard: usize) {
        let link = &self.links[shard];
        // A renewal running meanwhile finds the lease gone: that is this
        // giving up, not an expiry.
        link.lease().let_go();
        let r = self.release_now(shard).await;
        self.saw(&r);
        {
            link.lease().free();
        }
        self.forget_holder(shard, self.node);
        link.freed.notify_waiters();
    }
}
