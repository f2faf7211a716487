//! casebroker: a real-time WebSocket session broker for support teams, an
//! open, self-hosted service queue.
//!
//! # Layout
//! - [`config`]: the one `Config` (TOML file and flags) and its validation.
//! - [`directory`]: companies, groups, agents and module keys from the config.
//! - [`case`]: session codes, the case views, and the status function.
//! - [`broker`]: the state and every command that changes it; the one
//!   mutation path that emits queue events.
//! - [`queue`]: a company's live stream: epoch, seq, history, fan-out.
//! - [`outbox`]: each connection's bounded outbound queue.
//! - [`session`]: one task per WebSocket.
//! - [`protocol`]: the wire types, error codes and close codes.
//! - [`http`]: the HTTP API, `/metrics` and `/healthz`.
//! - [`metrics`]: Prometheus metrics in the broker's own registry.

pub mod broker;
pub mod case;
pub mod config;
pub mod directory;
pub mod error;
pub mod guard;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod queue;
pub mod server;
pub mod session;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use broker::Broker;
pub use config::Config;

/// What every request handler and session shares.
#[derive(Clone)]
pub struct App {
    pub broker: Broker,
    /// Per-address limits.
    pub guard: Arc<guard::Guard>,
    /// Cancelled when the broker shuts down; sessions close with 4000.
    pub shutdown: CancellationToken,
    /// Every connection and background task, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

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
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = config.shutdown_grace;
    let capacity = config.max_connections.unwrap_or(usize::MAX);
    let handshake_timeout = config.handshake_timeout;
    let metrics = metrics::Metrics::new();
    metrics.set_capacity(capacity.min(i64::MAX as usize));
    let guard = Arc::new(guard::Guard::new(&config, metrics.clone()));
    let broker = Broker::new(config, metrics.clone());
    let app = App {
        broker: broker.clone(),
        guard: guard.clone(),
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
    };
    app.tracker
        .spawn(run_timers(broker.clone(), guard, app.shutdown.clone()));
    if let Some(l) = metrics_listener {
        app.tracker.spawn(server::serve(
            l,
            server::Serve {
                router: http::metrics_app(broker.clone()),
                capacity: 1024,
                handshake_timeout,
                shutdown: app.shutdown.clone(),
                tracker: app.tracker.clone(),
                metrics: metrics.clone(),
            },
        ));
    }
    let token = app.shutdown.clone();
    app.tracker.spawn(async move {
        shutdown.await;
        token.cancel();
    });
    server::serve(
        listener,
        server::Serve {
            router: http::app(app.clone()),
            capacity,
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
    Ok(())
}

/// Drives case expiry, purging and orphan checks: sleeps until the
/// earliest deadline (or until an earlier one is added), never scanning
/// every case. Once a minute it also forgets idle rate-limit state.
async fn run_timers(broker: Broker, guard: Arc<guard::Guard>, shutdown: CancellationToken) {
    let mut sweep = tokio::time::interval(Duration::from_secs(60));
    loop {
        let next = broker.run_timers(tokio::time::Instant::now());
        let until = next.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = broker.timers_changed() => {}
            _ = sweep.tick() => guard.sweep(),
            _ = shutdown.cancelled() => return,
        }
    }
}
