//! The accept loop: one HTTP/1.1 connection per accepted socket, with a
//! deadline for the request head (the WebSocket handshake), `TCP_NODELAY`,
//! the client address for the handlers, and a cap on open connections past
//! which a clean HTTP 503 is answered instead of running out of files.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::api_error::ApiError;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::protocol::ErrorCode;

/// Counts open TCP connections; a clone lives in each connection's request
/// extensions and, after an upgrade, in its WebSocket session, so the slot
/// is given back only when the socket is really gone.
#[derive(Clone)]
pub struct TcpSlot {
    _inner: Arc<SlotInner>,
}

struct SlotInner {
    open: Arc<AtomicUsize>,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How the accept loop runs.
pub struct Serve {
    pub router: Router,
    /// Open connections served before new ones get 503.
    pub capacity: usize,
    pub handshake_timeout: Duration,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub metrics: Metrics,
}

/// Accepts until `shutdown`; each connection runs on the tracker.
pub async fn serve(listener: TcpListener, s: Serve) {
    let open = Arc::new(AtomicUsize::new(0));
    let full: Router = Router::new().fallback(|| async {
        ApiError(Error::new(
            ErrorCode::Unavailable,
            "the broker is at its connection capacity; retry later",
        ))
    });
    let mut failures = 0u32;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = s.shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                failures = 0;
                a
            }
            Err(e) => {
                // Out of file descriptors, or the like: back off a little
                // rather than spin; the cap normally keeps us clear of it.
                failures += 1;
                if failures == 1 || failures.is_multiple_of(1000) {
                    tracing::warn!(error = %e, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let admitted = open.fetch_add(1, Ordering::AcqRel) < s.capacity;
        let slot = TcpSlot {
            _inner: Arc::new(SlotInner { open: open.clone() }),
        };
        let router = if admitted {
            s.router.clone()
        } else {
            s.metrics.refused("capacity");
            full.clone()
        };
        s.tracker.spawn(connection(
            stream,
            peer,
            router,
            slot,
            s.handshake_timeout,
            s.shutdown.clone(),
        ));
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    slot: TcpSlot,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
) {
    let svc = router.map_request(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(slot.clone());
        req
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}
