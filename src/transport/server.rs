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
use super::guard::{Admission, ConnPermit, Guard};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::protocol::ErrorCode;

/// Counts open TCP connections; a clone lives in each connection's request
/// extensions and, after an upgrade, in its WebSocket session, so the slot
/// is given back only when the socket is really gone.
#[derive(Clone)]
pub struct TcpSlot {
    inner: Arc<SlotInner>,
}

struct SlotInner {
    open: Arc<AtomicUsize>,
    /// The connection's place in its address's count; none for a trusted
    /// proxy's connection (its clients are counted at the upgrade, by the
    /// address it forwards).
    permit: Option<ConnPermit>,
}

impl TcpSlot {
    /// True when this connection already counts for its client address.
    pub fn counted(&self) -> bool {
        self.inner.permit.is_some()
    }
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
    /// Per-address connection counts (every HTTP connection, upgraded or
    /// not); none for a listener that serves `/metrics` alone.
    pub guard: Option<Arc<Guard>>,
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
        let before = open.fetch_add(1, Ordering::AcqRel);
        let admitted = before < s.capacity;
        // Every connection counts for its address, and near capacity an
        // address that already holds a few gets no more: one address
        // cannot take the last slots from everyone else.
        let (permit, per_ip) = match &s.guard {
            Some(g) if admitted => match g.admit_tcp(peer.ip(), before, s.capacity) {
                Admission::Counted(p) => (Some(p), true),
                Admission::Proxy => (None, true),
                Admission::Refused => (None, false),
            },
            _ => (None, true),
        };
        let slot = TcpSlot {
            inner: Arc::new(SlotInner {
                open: open.clone(),
                permit,
            }),
        };
        if admitted && !per_ip {
            // Answered at once and closed: an address past its share does
            // not get to hold a slot while it takes its time to ask.
            s.metrics.refused("per_ip");
            s.tracker.spawn(refuse(stream, slot));
            continue;
        }
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

/// The whole answer to a connection whose address holds too many.
const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
content-type: application/json\r\n\
cache-control: no-store\r\n\
connection: close\r\n\
content-length: 74\r\n\r\n\
{\"code\":\"rate_limited\",\"message\":\"too many connections from your address\"}";

/// Writes [`TOO_MANY`] without reading the request, and closes; what
/// the client sent meanwhile is read and dropped for a moment, since
/// closing over unread input would reset the answer away.
async fn refuse(mut stream: TcpStream, slot: TcpSlot) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(TOO_MANY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
    drop(slot);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canned_answer_says_its_own_length() {
        let text = std::str::from_utf8(TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "rate_limited");
    }
}
