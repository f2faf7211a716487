//! A node among others: the channels it listens to, its heartbeat, the
//! renewal of the leases it holds, and the release of the seats and agent
//! connections of nodes that stopped heartbeating.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use crate::core::replica::node_of;
use crate::core::{Deliver, Effect};

use super::{Cluster, Relay, keys};

impl Cluster {
    /// Listens to the cluster's channels, reconnecting while Redis is away;
    /// after each (re)connection every company catches up, since notices
    /// sent meanwhile are lost.
    pub(super) async fn listen(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let session = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                let own = keys::node_channel(self.node);
                let own_log = keys::log_channel(self.node);
                for channel in [
                    own_log.as_str(),
                    keys::LOG_CHANNEL,
                    keys::FREE_CHANNEL,
                    keys::RELAY_CHANNEL,
                    own.as_str(),
                ] {
                    pubsub.subscribe(channel).await?;
                }
                for link in self.links.iter() {
                    link.behind.notify_one();
                }
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    if msg.get_channel_name() == own {
                        self.on_call_channel(msg.get_payload_bytes());
                        continue;
                    }
                    if msg.get_channel_name() == own_log
                        || msg.get_channel_name() == keys::LOG_CHANNEL
                    {
                        self.notices.inc();
                        self.heard_log(msg.get_payload_bytes());
                        continue;
                    }
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    self.heard(msg.get_channel_name(), &payload);
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                r = session => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "the cluster's channels are unreachable");
                    }
                }
                _ = shutdown.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// A log notice: the follower of its company is told, with the
    /// commits it carries, unless this node holds nothing of the company
    /// or now holds it itself (a notice of the node before it, late).
    pub(super) fn heard_log(&self, payload: &[u8]) {
        let Some(notice) = keys::Notice::parse(payload) else {
            return;
        };
        let Some(shard) = self.shard_of(notice.company) else {
            return;
        };
        let link = &self.links[shard];
        if notice.head <= link.applied.load(Ordering::Acquire)
            || link.cold.load(Ordering::Acquire)
            || link.holder.load(Ordering::Acquire) == self.node
        {
            return;
        }
        link.heard.fetch_max(notice.head, Ordering::AcqRel);
        if let Some((first, commits)) = notice.commits {
            link.noticed(first, commits.into_iter().map(<[u8]>::to_vec).collect());
        }
        link.behind.notify_one();
    }

    /// One message on a channel.
    fn heard(&self, channel: &str, payload: &str) {
        match channel {
            keys::FREE_CHANNEL => {
                if let Some(shard) = self.shard_of(payload) {
                    let link = &self.links[shard];
                    if !link.lease().held {
                        link.holder.store(0, Ordering::Release);
                    }
                    link.freed.notify_waiters();
                }
            }
            keys::RELAY_CHANNEL => {
                let Ok(r) = serde_json::from_str::<Relay>(payload) else {
                    return;
                };
                if r.node == self.node || r.company >= self.links.len() {
                    return;
                }
                let to: Vec<u64> =
                    r.to.into_iter()
                        .filter(|&c| node_of(c) == self.node)
                        .collect();
                if to.is_empty() {
                    return;
                }
                let mut effects = vec![Effect::Signal {
                    to,
                    code: r.code,
                    from: r.from,
                    data: r.data,
                }];
                self.deliver.deliver(r.company, &mut effects);
            }
            _ => {}
        }
    }

    /// Every `heartbeat` (a second by default): says this node is alive, notes whether Redis answers,
    /// and lets go of what dead nodes held.
    pub(super) async fn heartbeat(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => {
                    self.leave().await;
                    return;
                }
            }
            let Some((alive, free)) = self.beat().await else {
                continue;
            };
            self.let_go_idle();
            if self.serving() && !self.leaving.load(Ordering::Acquire) && !free.is_empty() {
                self.adopt(free).await;
            }
            self.sync_companies().await;
            for shard in 0..self.links.len() {
                let present = self.broker().nodes_present(shard, self.node);
                let dead: BTreeSet<u64> = present.difference(&alive).copied().collect();
                // Connections of this node that closed while their company
                // could not be held.
                let closed = self.broker().closed_here(shard, |c| self.deliver.has(c));
                if dead.is_empty() && closed.is_empty() {
                    continue;
                }
                match self.hold(shard).await {
                    Ok(_hold) => {
                        if !dead.is_empty() {
                            tracing::info!(company = %self.links[shard].company, nodes = ?dead, "releasing the seats of nodes that stopped heartbeating");
                        }
                        let me = self.node;
                        self.broker().release_conns(shard, |c| {
                            dead.contains(&node_of(c)) || (node_of(c) == me && closed.contains(&c))
                        });
                    }
                    Err(e) => {
                        tracing::debug!(error = %e.message, "cannot release a dead node's seats yet")
                    }
                }
            }
        }
    }

    /// One heartbeat; the nodes alive and the companies nobody holds,
    /// when Redis answered.
    async fn beat(&self) -> Option<(BTreeSet<u64>, Vec<usize>)> {
        let mut conn = self.conn.clone();
        let now = chrono::Utc::now().timestamp_millis();
        let since = now - self.timeout.as_millis() as i64;
        let mut pipe = redis::pipe();
        pipe.zadd(keys::NODES, self.node, now)
            .ignore()
            .zrembyscore(keys::NODES, "-inf", since - 3_600_000)
            .ignore()
            .zrangebyscore(keys::NODES, since, "+inf");
        // What each copy stood at before the heads are asked for: a copy
        // only ever stands at a commit Redis already has, and Redis's head
        // only grows, so a head read afterwards is at least this unless
        // Redis lost data. (Read after the answer, it would count commits
        // appended meanwhile, and a busy node would think Redis behind.)
        let links: Vec<_> = self.links.iter().collect();
        // A company not in memory here has no copy to compare.
        let before: Vec<Option<(u64, u64, String)>> = links
            .iter()
            .enumerate()
            .map(|(shard, link)| {
                (!link.cold.load(Ordering::Acquire)).then(|| {
                    (
                        link.rebuilt.load(Ordering::Acquire),
                        link.applied.load(Ordering::Acquire),
                        self.broker().epoch(shard),
                    )
                })
            })
            .collect();
        // Whether each company's lease is free; the head and epoch only of
        // the companies in memory here, which this node (again) says it
        // follows, so that their log notices keep coming.
        for (link, copy) in links.iter().zip(&before) {
            pipe.exists(&link.keys.lease);
            if copy.is_some() {
                pipe.get(&link.keys.head).get(&link.keys.epoch);
                pipe.zadd(&link.keys.followers, self.node, now).ignore();
            }
        }
        let r: redis::RedisResult<Vec<redis::Value>> = pipe.query_async(&mut conn).await;
        self.saw(&r);
        let mut replies = r.ok()?.into_iter();
        let alive: Vec<u64> = redis::from_redis_value(replies.next()?).ok()?;
        // A log shorter than what a copy held means Redis lost data (it
        // restarted without persistence): the copy is rebuilt from what
        // Redis has now. A copy rebuilt meanwhile already is.
        // So does an epoch that is gone or not the copy's: Redis lost the
        // company (even if this copy had nothing more than what is left),
        // or another node started its stream anew after such a loss.
        let mut free = Vec::new();
        for (shard, link) in links.iter().enumerate() {
            let leased: bool = redis::from_redis_value(replies.next()?).ok()?;
            if leased {
                link.free_beats.store(0, Ordering::Release);
            } else {
                let beats = link.free_beats.fetch_add(1, Ordering::AcqRel) + 1;
                if self.adopts(&link.company, beats, &alive) {
                    free.push(shard);
                }
            }
            let Some((rebuilt, applied, ref copy)) = before[shard] else {
                continue;
            };
            let head: Option<u64> = redis::from_redis_value(replies.next()?).ok()?;
            let epoch: Option<String> = redis::from_redis_value(replies.next()?).ok()?;
            if link.rebuilt.load(Ordering::Acquire) != rebuilt || link.cold.load(Ordering::Acquire)
            {
                continue;
            }
            if head.unwrap_or(0) < applied {
                tracing::error!(company = %link.company, head = head.unwrap_or(0), copy = applied, "the cluster's log in Redis is shorter than this node's copy: Redis lost data");
                self.diverge(shard);
            } else if epoch.as_deref() != Some(copy.as_str()) {
                tracing::error!(company = %link.company, "the company's stream in Redis is not this node's copy's (Redis lost data, or another node started it anew)");
                self.diverge(shard);
            }
        }
        // A holder that stopped heartbeating is forgotten: the next command
        // finds the company's lease anew (taken once it runs out).
        for link in &links {
            let holder = link.holder.load(Ordering::Acquire);
            if holder != 0 && holder != self.node && !alive.contains(&holder) {
                let _ =
                    link.holder
                        .compare_exchange(holder, 0, Ordering::AcqRel, Ordering::Acquire);
            }
        }
        Some((alive.into_iter().collect(), free))
    }

    /// A node that stops cleanly says so at once: its heartbeat is gone.
    async fn leave(&self) {
        let mut conn = self.conn.clone();
        let _: redis::RedisResult<()> = conn.zrem(keys::NODES, self.node).await;
    }

    /// Keeps the leases this node holds alive while it holds them.
    pub(super) async fn renew_leases(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(keys::LEASE_MS / 3));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            for (shard, link) in self.links.iter().enumerate() {
                let (held, term) = {
                    let l = link.lease();
                    (l.held && !l.letting_go, l.term)
                };
                if !held {
                    continue;
                }
                let mut conn = self.conn.clone();
                let r: redis::RedisResult<i64> = self
                    .scripts
                    .renew
                    .key(&link.keys.lease)
                    .arg(self.node)
                    .arg(keys::LEASE_MS)
                    .invoke_async(&mut conn)
                    .await;
                self.saw(&r);
                // Gone, and not because this node gave it up (or took it
                // anew) while the renewal was on its way.
                let expired = r == Ok(0) && {
                    let l = link.lease();
                    l.held && !l.letting_go && l.term == term
                };
                if expired {
                    tracing::warn!(company = %link.company, "the company's lease expired while held");
                    self.diverge(shard);
                }
            }
        }
    }
}
