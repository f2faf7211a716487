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
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod queue;
pub mod session;

use std::future::Future;
use std::net::SocketAddr;
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
    /// Cancelled when the broker shuts down; sessions close with 4000.
    pub shutdown: CancellationToken,
    /// Every session and background task, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

/// Serves HTTP and WebSocket on `listener` until `shutdown` resolves, then
/// closes every socket with 4000 and waits at most `shutdown_grace` for the
/// sessions to finish. The config must be valid.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = config.shutdown_grace;
    let broker = Broker::new(config, metrics::Metrics::new());
    let app = App {
        broker: broker.clone(),
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
    };
    app.tracker
        .spawn(run_timers(broker.clone(), app.shutdown.clone()));
    let token = app.shutdown.clone();
    let result = axum::serve(
        listener,
        http::app(app.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        token.cancel();
    })
    .await;
    app.shutdown.cancel();
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
    result
}

/// Drives case expiry and purging: sleeps until the earliest deadline (or
/// until an earlier one is added), never scanning every case.
async fn run_timers(broker: Broker, shutdown: CancellationToken) {
    loop {
        let next = broker.run_timers(tokio::time::Instant::now());
        let until = next.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = broker.timers_changed() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
