//! The calls: one task per company takes the deliveries due (in a cluster,
//! while holding the company, so each is sent by one node) and makes each
//! call in its own task, at most `webhook_concurrency` at a time per
//! endpoint, never under the company's lock. Nothing here waits on the
//! queue, and the queue never waits on it: the senders, the calls and the
//! HTTP client's connections run on a thread of their own
//! ([`Runtime`]), so a busy queue (thousands of sockets to write) does not
//! starve the deliveries, and deliveries never take the queue's threads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::core::Broker;
use crate::core::commands::webhooks::{Answer, Send};

/// Heads taken at once.
const TAKE: usize = 256;
/// A node that does not hold the company waits this long first, so that
/// the holder usually sends and the lease stays where it is.
const FOLLOWER_DELAY: Duration = Duration::from_millis(200);

/// The webhooks' own thread: a runtime with one worker, shut down (without
/// waiting) when dropped.
pub struct Runtime {
    rt: Option<tokio::runtime::Runtime>,
}

impl Runtime {
    pub fn new() -> std::io::Result<Runtime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("casebroker-webhooks")
            .enable_all()
            .build()?;
        Ok(Runtime { rt: Some(rt) })
    }

    /// Where senders are spawned.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt
            .as_ref()
            .expect("the webhook runtime runs until dropped")
            .handle()
            .clone()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Resolves names for the calls, refusing private addresses unless
/// `webhook_allow_private` (a URL's host could point anywhere, and could
/// change after the URL was checked).
struct Guarded {
    allow_private: bool,
}

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow || super::public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    format!("{} resolves to no address webhooks may call", name.as_str()).into(),
                );
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client of every call: no redirects followed, each attempt
/// bounded by `webhook_timeout`, names resolved through the guard.
pub fn client(config: &Config) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.webhook_timeout)
        .connect_timeout(config.webhook_timeout)
        .dns_resolver(Arc::new(Guarded {
            allow_private: config.webhook_allow_private,
        }))
        .user_agent(concat!("casebroker-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the webhook client builds")
}

/// Sends one company's deliveries until shutdown. Each turn records the
/// answers that came back, takes what is due and reads when the next head
/// falls due, under one taking of the company's lock: a busy endpoint
/// costs the lock once per batch of answers, not once per call, and a
/// wake costs one taking of it.
pub async fn run(
    broker: Broker,
    cluster: Option<Arc<Cluster>>,
    shard: usize,
    client: reqwest::Client,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    // When a head may next be due (Unix ms): at start, look at once.
    let mut next: Option<i64> = Some(0);
    loop {
        if !broker.webhook_answers_waiting(shard) {
            let now = now_ms();
            let wait = match next {
                Some(at) if at <= now => None,
                Some(at) => Some(Duration::from_millis((at - now) as u64)),
                None => Some(Duration::from_secs(3600)),
            };
            if let Some(wait) = wait {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = broker.webhooks_changed(shard) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
        let hold = match &cluster {
            Some(c) => {
                if !c.holds(shard) && !broker.webhook_answers_waiting(shard) {
                    // Not the holder: only what is due, and only after
                    // the holder had its chance, so the lease stays put.
                    match broker.webhook_next(shard) {
                        Some(at) if at <= now_ms() => {}
                        later => {
                            next = later;
                            continue;
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(FOLLOWER_DELAY) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
                match c.hold(shard).await {
                    Ok(h) => Some(h),
                    Err(_) => {
                        // Without the company the answers cannot be
                        // recorded: the hold on those deliveries runs
                        // out and they are sent again.
                        drop(broker.webhook_answers(shard));
                        next = Some(0);
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = shutdown.cancelled() => return,
                        }
                    }
                }
            }
            None => None,
        };
        let turn = broker.webhook_turn(shard, TAKE);
        drop(hold);
        // Heads still due after a turn wait for their endpoints' calls
        // (an answer is a change), or another sender's hold to run out:
        // a second at most.
        let now = now_ms();
        next = turn.next.map(|at| if at <= now { now + 1000 } else { at });
        for send in turn.sends {
            tracker.spawn(attempt(
                broker.clone(),
                cluster.clone(),
                shard,
                client.clone(),
                send,
                shutdown.clone(),
            ));
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One attempt: the signed call, then its answer handed to the sender.
async fn attempt(
    broker: Broker,
    cluster: Option<Arc<Cluster>>,
    shard: usize,
    client: reqwest::Client,
    send: Send,
    shutdown: CancellationToken,
) {
    let timestamp = chrono::Utc::now().timestamp();
    let signature = super::sign(&send.secrets, &send.message_id, timestamp, &send.body);
    let answer = client
        .post(&send.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &send.message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(send.body)
        .send()
        .await;
    let (status_code, retry_after) = match answer {
        Ok(resp) => {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            (Some(resp.status().as_u16()), retry_after)
        }
        Err(e) => {
            tracing::debug!(error = %e, "a webhook call failed");
            (None, None)
        }
    };
    broker.metrics().webhook_attempt(status_code);
    broker.webhook_answered(
        shard,
        Answer {
            id: send.id,
            attempts: send.attempts,
            status_code,
            retry_after,
        },
    );
    if shutdown.is_cancelled() {
        // The sender takes no more turns: record it here, as a commit
        // like any other (in a cluster, only while holding the company).
        let _hold = match &cluster {
            Some(c) => match c.hold(shard).await {
                Ok(h) => Some(h),
                Err(_) => return,
            },
            None => None,
        };
        broker.webhook_record_answers(shard);
    }
}
