//! The lease: which node may change a company. A command holds its
//! company ([`Cluster::hold`]); the lease is taken from Redis when another
//! node has it (asking that node to give it up), the copy catches up with
//! the log, and the lease stays here until another node asks for it and
//! every command in flight is stored.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;

use crate::error::Result;

use super::{Cluster, HOLD_WAIT, Hold, keys, unavailable};

impl Cluster {
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
                let mut l = link.lease();
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
    pub(super) async fn acquire(&self, shard: usize, deadline: tokio::time::Instant) -> Result<()> {
        let link = &self.links[shard];
        let _one = link.acquiring.lock().await;
        if link.lease().held {
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
                link.lease().take();
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

    /// Another node wants `shard`: give the lease up once unused.
    pub(super) fn wanted(&self, shard: usize) {
        let link = &self.links[shard];
        let mut l = link.lease();
        if l.held && !l.yielding {
            l.yielding = true;
            link.release_if_unused(&mut l);
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
        link.freed.notify_waiters();
    }
}
