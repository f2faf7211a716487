//! casebroker: a real-time WebSocket session broker for support teams, an
//! open, self-hosted service queue.
//!
//! # Layout
//! - [`config`]: the one `Config` (TOML file and flags) and its validation.
//! - [`directory`]: companies, groups, agents and module keys from the config.
//! - [`case`]: session codes, the case views, and the status function.
//! - [`core`]: the state of every company, a shard each with its own lock;
//!   commands decide, changes are applied by the one writer of case
//!   records, effects come out as plain data.
//! - [`delivery`]: effects to frames, once; connections' bounded outboxes;
//!   each company's subscribers.
//! - [`transport`]: the accept loop, HTTP routes, WebSocket sessions and
//!   per-address limits.
//! - [`store`]: the data directory: the journal of changes on redb, its
//!   images, and recovery at start.
//! - [`cluster`]: several nodes on one Redis: the company logs, leases,
//!   heartbeats and the release of a dead node's seats.
//! - [`app`]: what handlers and sessions share.
//! - [`protocol`]: the wire types, error codes and close codes.
//! - [`metrics`]: Prometheus metrics in the broker's own registry.

pub mod app;
pub mod case;
pub mod cluster;
pub mod config;
pub mod core;
pub mod delivery;
pub mod directory;
pub mod error;
pub mod hours;
pub mod ice;
pub mod metrics;
pub mod protocol;
pub mod store;
pub mod transport;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::app::App;
pub use crate::config::Config;
pub use crate::core::Broker;
use crate::delivery::Hub;
use crate::transport::{guard, http, server};

/// Serves HTTP and WebSocket on `listener` until `shutdown` resolves, then
/// closes every socket with 4000 and waits at most `shutdown_grace` for the
/// connections to finish. The config must be valid.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with_metrics(listener, None, config, shutdown).await
}

/// `run`, with `/metrics` also served alone on `metrics_listener`.
pub async fn run_with_metrics(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let store = if config.cluster.is_some() {
        // In a cluster the cases live in Redis, and the companies the
        // operator added in its registry.
        tokio::time::timeout(JOIN_WAIT, cluster::registry::read(&mut config))
            .await
            .map_err(|_| {
                std::io::Error::other(cluster::ClusterError::Unreachable {
                    url: config::redacted_url(
                        &config.cluster.as_ref().expect("a cluster").redis_url,
                    ),
                    cause: format!("no answer within {} s", JOIN_WAIT.as_secs()),
                })
            })?
            .map_err(std::io::Error::other)?;
        None
    } else {
        store::open(&config).map_err(std::io::Error::other)?
    };
    if let Some(s) = &store {
        s.reconcile(&mut config).map_err(std::io::Error::other)?;
    }
    run_with_store(listener, metrics_listener, config, store, shutdown).await
}

/// `run_with_metrics` on a data directory already opened (`None`: keep
/// nothing). The store is read, every company rebuilt from it, and every
/// change journaled before it is acknowledged.
pub async fn run_with_store(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: Config,
    store: Option<store::Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = config.shutdown_grace;
    let capacity = config.max_connections.unwrap_or(usize::MAX);
    let handshake_timeout = config.handshake_timeout;
    let metrics = metrics::Metrics::new();
    metrics.set_capacity(capacity.min(i64::MAX as usize));
    let guard = Arc::new(guard::Guard::new(&config, metrics.clone()));
    let hub = Arc::new(Hub::new(config.company_slots(), metrics.clone()));
    let snapshot_interval = config.snapshot_interval;
    let dir = directory::Directory::new(&config);
    let grouping = store::journal::Grouping {
        changes: config.journal_group_changes,
        bytes: config.journal_group_bytes,
        wait: config.journal_group_wait,
    };
    let journal = store.as_ref().map(|s| {
        store::journal::Journal::start(s, &dir, hub.clone(), grouping, Some(metrics.journal()))
    });
    // A node that cannot join its cluster in time does not start, rather
    // than wait on a Redis that does not answer.
    let redis_url = config
        .cluster
        .as_ref()
        .map(|c| config::redacted_url(&c.redis_url));
    let no_answer = |_| {
        std::io::Error::other(cluster::ClusterError::Unreachable {
            url: redis_url.clone().unwrap_or_default(),
            cause: format!("no answer within {} s", JOIN_WAIT.as_secs()),
        })
    };
    let cluster = match &config.cluster {
        Some(_) => Some(
            tokio::time::timeout(
                JOIN_WAIT,
                cluster::Cluster::connect(&config, hub.clone(), &metrics),
            )
            .await
            .map_err(no_answer)?
            .map_err(std::io::Error::other)?,
        ),
        None => None,
    };
    let sink: Arc<dyn core::Sink> = match (&journal, &cluster) {
        (_, Some(c)) => c.clone(),
        (Some(j), None) => j.clone(),
        (None, None) => Arc::new(core::Direct(hub.clone())),
    };
    let broker = Broker::new(config, metrics.clone(), sink);
    if let (Some(mut store), Some(journal)) = (store, &journal) {
        let fresh = store.is_new();
        store.restore(&broker).map_err(std::io::Error::other)?;
        for shard in 0..broker.shards() {
            broker.release_seats(shard);
            let returned = broker.return_cases_of_former_agents(shard);
            if returned > 0 {
                tracing::info!(company = %broker.directory().companies()[shard].id, cases = returned, "open cases of former agents returned to the line");
            }
        }
        journal.image(&broker);
        if fresh {
            tracing::info!(data_dir = %store.path().display(), "a new data directory: no cases yet");
        } else {
            tracing::info!(data_dir = %store.path().display(), "cases restored from the data directory");
        }
    }
    let app = App {
        broker: broker.clone(),
        hub,
        guard: guard.clone(),
        cluster: cluster.clone(),
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        large: delivery::outbox::LargeBudget::new(broker.config().large_messages_bytes),
        router: Arc::default(),
    };
    // A cluster node keeps following the cluster and answering other
    // nodes while its own connections close: its tasks stop after them.
    let (cluster_stop, cluster_tasks) = (CancellationToken::new(), TaskTracker::new());
    if let Some(c) = &cluster {
        tokio::time::timeout(
            JOIN_WAIT,
            c.start(broker.clone(), cluster_stop.clone(), &cluster_tasks),
        )
        .await
        .map_err(no_answer)?
        .map_err(std::io::Error::other)?;
    }
    for shard in 0..broker.shards() {
        app.tracker.spawn(run_timers(
            broker.clone(),
            cluster.clone(),
            shard,
            app.shutdown.clone(),
        ));
    }
    // A company added at run time gets its deadlines' task too (what the
    // broker holds, it holds weakly: the hook lives in the broker).
    let (weak, cluster_weak) = (broker.downgrade(), cluster.as_ref().map(Arc::downgrade));
    let (tracker, stop) = (app.tracker.clone(), app.shutdown.clone());
    let client = webhook::sender::client(broker.config());
    let webhooks = webhook::sender::Runtime::new()?;
    let on_webhooks = webhooks.handle();
    for shard in 0..broker.shards() {
        app.tracker.spawn_on(
            webhook::sender::run(
                broker.clone(),
                cluster.clone(),
                shard,
                client.clone(),
                app.shutdown.clone(),
                app.tracker.clone(),
            ),
            &on_webhooks,
        );
    }
    broker.on_company(move |shard| {
        let cluster = cluster_weak.as_ref().and_then(|c| c.upgrade());
        if let Some(broker) = weak.upgrade() {
            tracker.spawn(run_timers(
                broker.clone(),
                cluster.clone(),
                shard,
                stop.clone(),
            ));
            tracker.spawn_on(
                webhook::sender::run(
                    broker,
                    cluster,
                    shard,
                    client.clone(),
                    stop.clone(),
                    tracker.clone(),
                ),
                &on_webhooks,
            );
        }
    });
    app.tracker
        .spawn(sweep(guard.clone(), app.shutdown.clone()));
    if let Some(j) = &journal {
        app.tracker.spawn(images(
            broker.clone(),
            j.clone(),
            snapshot_interval,
            app.shutdown.clone(),
        ));
    }
    let metrics_here = metrics_listener.is_none();
    if let Some(l) = metrics_listener {
        app.tracker.spawn(server::serve(
            l,
            server::Serve {
                router: http::metrics_app(broker.clone()),
                capacity: 1024,
                guard: None,
                handshake_timeout,
                shutdown: app.shutdown.clone(),
                tracker: app.tracker.clone(),
                metrics: metrics.clone(),
            },
        ));
    }
    let token = app.shutdown.clone();
    let handing_over = cluster.clone();
    app.tracker.spawn(async move {
        shutdown.await;
        token.cancel();
        // The companies this node decides go to other nodes before its
        // connections are gone: their commands then run there.
        if let Some(c) = handing_over {
            c.hand_over(grace).await;
        }
    });
    let router = http::app(app.clone(), metrics_here);
    *app.router.lock().unwrap_or_else(|p| p.into_inner()) = Some(router.clone());
    if let Some(c) = &cluster {
        c.serve_calls(Some(transport::forward::handler(
            app.clone(),
            router.clone(),
        )));
    }
    server::serve(
        listener,
        server::Serve {
            router,
            capacity,
            guard: Some(app.guard.clone()),
            handshake_timeout,
            shutdown: app.shutdown.clone(),
            tracker: app.tracker.clone(),
            metrics,
        },
    )
    .await;
    app.tracker.close();
    if tokio::time::timeout(grace, app.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = app.tracker.len(),
            "shutdown grace period over; dropping the remaining connections"
        );
    }
    if let Some(c) = &cluster {
        // Whatever this node still decides (nothing, unless the hand-over
        // ran out of time) is given up; then it leaves.
        c.hand_over(Duration::from_secs(1)).await;
        c.stop_serving().await;
        cluster_tasks.close();
        cluster_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), cluster_tasks.wait()).await;
    }
    app.router.lock().unwrap_or_else(|p| p.into_inner()).take();
    drop(webhooks);
    if let Some(j) = journal {
        // What is still queued is stored, then an image of the end.
        j.image(&broker);
        tokio::task::spawn_blocking(move || j.stop())
            .await
            .map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// Every `interval`, stores an image of what changed, so recovery reads
/// little journal and the journal stays small.
async fn images(
    broker: Broker,
    journal: Arc<store::journal::Journal>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let (b, j) = (broker.clone(), journal.clone());
                let _ = tokio::task::spawn_blocking(move || j.image(&b)).await;
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// How long a cluster node may take to join its cluster at start.
const JOIN_WAIT: Duration = Duration::from_secs(10);

/// In a cluster, how long a node that does not hold a company waits
/// before it takes the company to run a due deadline itself.
const FOLLOWER_TIMER_DELAY: Duration = Duration::from_secs(2);

/// Drives one company's expiry, purging, orphan checks and coalesced line
/// positions: sleeps until its earliest deadline (or until an earlier one
/// is added), never scanning every case.
async fn run_timers(
    broker: Broker,
    cluster: Option<Arc<cluster::Cluster>>,
    shard: usize,
    shutdown: CancellationToken,
) {
    loop {
        let now = tokio::time::Instant::now();
        // In a cluster a deadline that changes a case runs on the node
        // that decides the company. The holder runs it at once; another
        // node waits a little first, and runs it only if no node decides
        // the company (it then takes it). Meanwhile it tells its own
        // connections what is theirs (positions, live numbers).
        let mut elsewhere = false;
        let hold = match &cluster {
            Some(c) if broker.timers_due(shard, now) => {
                if !c.holds(shard) {
                    tokio::select! {
                        _ = tokio::time::sleep(FOLLOWER_TIMER_DELAY) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
                if !broker.timers_due(shard, tokio::time::Instant::now()) {
                    continue;
                }
                match c.hold(shard).await {
                    Ok(h) => Some(h),
                    Err(_) => {
                        elsewhere = true;
                        None
                    }
                }
            }
            _ => None,
        };
        let now = tokio::time::Instant::now();
        let next = if elsewhere {
            let again = now + Duration::from_secs(1);
            Some(
                broker
                    .run_local_timers(shard, now)
                    .map_or(again, |t| t.min(again)),
            )
        } else {
            broker.run_timers(shard, now)
        };
        drop(hold);
        let until = next.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = broker.timers_changed(shard) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Once a minute, forgets idle rate-limit state.
async fn sweep(guard: Arc<guard::Guard>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => guard.sweep(),
            _ = shutdown.cancelled() => return,
        }
    }
}
