//! A company's log of commits in Redis: reading it, following what other
//! nodes append, appending this node's commits in order and releasing
//! their effects once stored, and rebuilding a copy that went astray.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::AsyncCommands;
use tokio::sync::mpsc;

use crate::core::sink::{Ack, Batch};
use crate::core::{Deliver, Effect};

use super::{Cluster, GROUP, Item, PAGE, Relay, keys};

impl Cluster {
    /// Reads the log of `shard` after commit `from` (up to `to`, if given):
    /// the batches in order and the last commit read.
    pub(super) async fn read_log(
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
    pub(super) async fn catch_up_to(&self, shard: usize, head: u64) -> redis::RedisResult<()> {
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
    pub(super) async fn catch_up(&self, shard: usize) -> redis::RedisResult<()> {
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
    pub(super) async fn appender(
        self: Arc<Self>,
        shard: usize,
        mut rx: mpsc::UnboundedReceiver<Item>,
    ) {
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
    pub(super) async fn store(&self, shard: usize, run: Vec<(Vec<Batch>, Vec<Effect>, Arc<Ack>)>) {
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
    pub(super) async fn append(&self, shard: usize, commits: Vec<Vec<u8>>) -> bool {
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
    pub(super) fn diverge(&self, shard: usize) {
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
    pub(super) async fn rebuild(&self, shard: usize) -> redis::RedisResult<()> {
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

    /// Follows one company: catches up when told the log grew, and every
    /// second in case a notice was missed; rebuilds it when it went astray.
    pub(super) async fn follow(
        self: Arc<Self>,
        shard: usize,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
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
    pub(super) fn relay(&self, shard: usize, effects: &[Effect]) {
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
}
