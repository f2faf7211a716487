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

/// What a read of the log says when it does not follow on from the copy.
const GAP: &str = "the log has a gap";

fn is_gap(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Client && e.to_string().contains(GAP)
}

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
                        GAP,
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
        self.stands_at(shard, last);
        Ok(())
    }

    /// Applies whatever other nodes appended since the copy's last commit,
    /// unless this node holds the lease (then nobody else can append).
    pub(super) async fn catch_up(&self, shard: usize) -> redis::RedisResult<()> {
        self.catch_up_with(shard, true).await
    }

    /// `catch_up`, first from the commits log notices carried; the log is
    /// read after them when `ask`, or when a notice told of more.
    pub(super) async fn catch_up_with(&self, shard: usize, ask: bool) -> redis::RedisResult<()> {
        let link = &self.links[shard];
        let _g = link.catching_up.lock().await;
        if link.cold.load(Ordering::Acquire) {
            return Ok(());
        }
        {
            let l = link.lease();
            if l.held || l.diverged {
                link.notices().clear();
                return Ok(());
            }
        }
        let applied = link.applied.load(Ordering::Acquire);
        let (batches, last) = self.noticed_after(shard, applied);
        if last > applied {
            self.broker().follow(shard, batches);
            self.stands_at(shard, last);
        }
        if !ask && last >= link.heard.load(Ordering::Acquire) {
            return Ok(());
        }
        let applied = link.applied.load(Ordering::Acquire);
        let (batches, last) = match self.read_log(shard, applied, None).await {
            Ok(read) => read,
            Err(e) if is_gap(&e) => {
                // Trimmed past this copy (it was far behind): rebuild.
                self.diverge(shard);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if !batches.is_empty() {
            self.broker().follow(shard, batches);
        }
        self.stands_at(shard, last);
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
        let names = super::resident::Names::of(run.iter().flat_map(|(b, _, _)| b));
        let commits: Vec<Vec<u8>> = run
            .iter()
            .filter(|(b, _, _)| !b.is_empty())
            .map(|(b, _, _)| postcard::to_allocvec(b).expect("changes encode"))
            .collect();
        let stored = if commits.is_empty() {
            true
        } else {
            let diverged = link.lease().diverged;
            !diverged && self.append(shard, commits, &names).await
        };
        for (batches, mut effects, ack) in run {
            let speculative = !stored && !batches.is_empty();
            // The command's reply is queued before its pushes (and before
            // a close they carry).
            ack.finish_then_deliver(stored, || {
                if !speculative && !effects.is_empty() {
                    self.relay(shard, &effects);
                    self.deliver.deliver(shard, &mut effects);
                }
            });
        }
    }

    /// The commits log notices carried that follow on from commit `after`,
    /// in order, and the last one's number (`after` when none does). A
    /// notice past a gap waits for the log to fill it; one that cannot be
    /// read drops the rest, which the log then gives.
    fn noticed_after(&self, shard: usize, after: u64) -> (Vec<Batch>, u64) {
        let mut q = self.links[shard].notices();
        let mut batches = Vec::new();
        let mut last = after;
        while let Some((first, commits)) = q.front() {
            if *first + commits.len() as u64 <= last + 1 {
                q.pop_front();
                continue;
            }
            if *first > last + 1 {
                break;
            }
            let (first, commits) = q.pop_front().expect("a notice");
            for (n, bytes) in (first..).zip(commits) {
                if n <= last {
                    continue;
                }
                match postcard::from_bytes::<Vec<Batch>>(&bytes) {
                    Ok(commit) => {
                        batches.extend(commit);
                        last = n;
                    }
                    Err(_) => {
                        q.clear();
                        return (batches, last);
                    }
                }
            }
        }
        (batches, last)
    }

    /// Runs the append script; false (and the copy marked astray) when the
    /// commits were not stored.
    pub(super) async fn append(
        &self,
        shard: usize,
        commits: Vec<Vec<u8>>,
        names: &super::resident::Names,
    ) -> bool {
        let link = &self.links[shard];
        let expected = link.applied.load(Ordering::Acquire);
        let n = commits.len() as u64;
        let mut inv = self.scripts.append.prepare_invoke();
        inv.key(&link.keys.lease)
            .key(&link.keys.head)
            .key(&link.keys.log)
            .key(&link.keys.followers)
            .arg(self.node)
            .arg(expected)
            .arg(&link.company)
            .arg(keys::LEASE_MS)
            .arg(chrono::Utc::now().timestamp_millis())
            .arg(self.linked_list());
        for c in &commits {
            inv.arg(c.as_slice());
        }
        let mut conn = self.conn.clone();
        // The names the commits add are written beside them (sent first on
        // the same connection): a code is findable before it is answered.
        // A name written for commits that then fail only points a lookup
        // at a company that does not have it.
        let (r, named) = if names.is_empty() {
            (inv.invoke_async(&mut conn).await, Ok(()))
        } else {
            let (named, r) =
                tokio::join!(self.write_names(shard, names), inv.invoke_async(&mut conn));
            (r, named)
        };
        let r: redis::RedisResult<Vec<redis::Value>> = match (r, named) {
            (Ok(_), Err(e)) => Err(e),
            (r, _) => r,
        };
        self.saw(&r);
        let r = r.map(|out| {
            let head = out
                .first()
                .and_then(|v| redis::from_redis_value_ref::<i64>(v).ok());
            (head.unwrap_or(i64::MIN), out)
        });
        match r {
            Ok((head, out)) if head >= 0 && head as u64 == expected + n => {
                link.applied.store(expected + n, Ordering::Release);
                // The notice for the followers this node has a link to,
                // written here from the commits it has.
                let linked: Vec<u64> = out[1..]
                    .iter()
                    .filter_map(|n| redis::from_redis_value_ref::<u64>(n).ok())
                    .collect();
                if let Some((last, rest)) = linked.split_last() {
                    let msg = keys::Notice::write(&link.company, expected + n, &commits);
                    for &node in rest {
                        self.send_to(node, super::calls::Wire::Notice(msg.clone()));
                    }
                    self.send_to(*last, super::calls::Wire::Notice(msg));
                }
                true
            }
            outcome => {
                let why = match outcome {
                    Ok((-1, _)) => "the lease was lost".to_string(),
                    Ok((-2, _)) => "the log moved".to_string(),
                    Ok((h, _)) => format!("unexpected head {h}"),
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
        let mut l = link.lease();
        if !l.diverged {
            l.diverged = true;
            link.behind.notify_one();
        }
    }

    /// Rebuilds a copy that went astray: from the image and the log, what
    /// this node had stored and delivered quietly, what others stored since
    /// with its effects. A copy too far behind for that (the log before the
    /// image is gone) is rebuilt quietly, and its dashboards resume.
    pub(super) async fn rebuild(&self, shard: usize) -> redis::RedisResult<()> {
        let link = &self.links[shard];
        let _g = link.catching_up.lock().await;
        let good = link.applied.load(Ordering::Acquire);
        let image = self.load_image(shard).await?;
        let from = image.as_ref().map_or(0, |i| i.at);
        let (old, new, last) = if from <= good {
            let (old, at) = self.read_log(shard, from, Some(good)).await?;
            let (new, last) = self.read_log(shard, at, None).await?;
            (old, new, last)
        } else {
            let (old, last) = self.read_log(shard, from, None).await?;
            (old, Vec::new(), last)
        };
        let broker = self.broker();
        // Redis lost commits this copy had: the seqs after what it still
        // holds would be given again to other events, so the company's
        // stream starts a new epoch (one for every node).
        let lost = last < good;
        if lost {
            tracing::error!(company = %link.company, redis = last, copy = good, "Redis lost commits of this company; its stream starts a new epoch");
        }
        let current = broker.epoch(shard);
        let epoch = self.epoch(shard, lost.then_some(current.as_ref())).await?;
        let epoch_changed = current.as_ref() != epoch;
        broker.reset(shard);
        broker.set_epoch(shard, &epoch);
        if let Some(i) = image {
            broker.restore(shard, None, vec![i.directory]);
            broker.restore(shard, Some(i.image), Vec::new());
            broker.restore_live(shard, i.live);
        }
        broker.restore(shard, None, old);
        broker.follow(shard, new);
        self.stands_at(shard, last);
        link.imaged.store(from, Ordering::Release);
        link.rebuilt.fetch_add(1, Ordering::AcqRel);
        self.rebuilds.inc();
        link.lease().let_go();
        let _ = self.release_now(shard).await;
        {
            let mut l = link.lease();
            l.free();
            l.diverged = false;
        }
        self.forget_holder(shard, self.node);
        tracing::info!(company = %link.company, "company rebuilt from the cluster");
        // Dashboards that must start again are closed only now, once the
        // company takes commands: the ones that come straight back find it
        // ready (they used to find it still catching up).
        if from > good || epoch_changed {
            self.deliver.drop_subscribers(shard);
        }
        Ok(())
    }

    /// Loads a company at its first use here: its image, if any, and the
    /// log after it, quietly.
    pub(super) async fn load(&self, shard: usize) -> redis::RedisResult<()> {
        let link = &self.links[shard];
        let image = self.load_image(shard).await?;
        let from = image.as_ref().map_or(0, |i| i.at);
        let (batches, last) = self.read_log(shard, from, None).await?;
        let broker = self.broker();
        if let Some(i) = image {
            broker.restore(shard, None, vec![i.directory]);
            broker.restore(shard, Some(i.image), Vec::new());
            broker.restore_live(shard, i.live);
        }
        broker.restore(shard, None, batches);
        self.stands_at(shard, last);
        link.imaged.store(from, Ordering::Release);
        Ok(())
    }

    /// The company's epoch. When Redis lost what it held (restarted
    /// without persistence, or with the last commits missing) the company
    /// starts again with a new one, so dashboards that resume get a
    /// snapshot: `replace` is the epoch this copy had, replaced by a fresh
    /// one unless another node already did.
    pub(super) async fn epoch(
        &self,
        shard: usize,
        replace: Option<&str>,
    ) -> redis::RedisResult<String> {
        let link = &self.links[shard];
        let mut conn = self.conn.clone();
        let fresh = hex::encode(rand::random::<[u8; 8]>());
        if let Some(old) = replace {
            return self
                .scripts
                .new_epoch
                .key(&link.keys.epoch)
                .arg(old)
                .arg(&fresh)
                .invoke_async(&mut conn)
                .await;
        }
        let epoch: Option<String> = conn.get(&link.keys.epoch).await?;
        if let Some(e) = epoch {
            return Ok(e);
        }
        tracing::error!(company = %link.company, "Redis no longer holds this company's data; starting it afresh with a new epoch");
        let _: bool = conn.set_nx(&link.keys.epoch, &fresh).await?;
        conn.get(&link.keys.epoch).await
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
            // Told: the notices' commits may be all there is to apply.
            // Every second: the log is read, in case a notice was missed.
            let ask = tokio::select! {
                _ = link.behind.notified() => false,
                _ = tokio::time::sleep(Duration::from_secs(1)) => true,
                _ = shutdown.cancelled() => return,
            };
            let diverged = link.lease().diverged;
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
                self.catch_up_with(shard, ask).await
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
