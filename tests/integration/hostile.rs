//! Hostile clients on real loopback sockets: endless fragments, unmasked
//! frames, silent sockets, dashboards that never read, message floods, code
//! guessing, connection hogging, spoofed forwarding headers, help-request
//! floods, and shutdown with sockets open. The broker protects itself and
//! keeps serving everyone else.

#[path = "hostile/connection_limits.rs"]
mod connection_limits;
#[path = "hostile/floods.rs"]
mod floods;
#[path = "hostile/guessing.rs"]
mod guessing;
#[path = "hostile/metrics.rs"]
mod metrics;
#[path = "hostile/shutdown.rs"]
mod shutdown;
#[path = "hostile/sockets.rs"]
mod sockets;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::util::*;

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
const THIRD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

// Metrics -------------------------------------------------------------------

fn disconnects(reason: &str) -> String {
    format!("casebroker_disconnects_total{{reason=\"{reason}\"}}")
}

fn join_failures(reason: &str) -> String {
    format!("casebroker_join_failures_total{{reason=\"{reason}\"}}")
}

// Connections from any loopback address, with extra request headers -------

/// A WebSocket handshake from `from` with extra headers; the handshake
/// error (an HTTP refusal) is returned as is.
async fn open(
    server: &TestServer,
    from: Option<IpAddr>,
    headers: &[(&'static str, &str)],
) -> Result<WsClient, tungstenite::Error> {
    WsClient::open(&server.ws_url(), from, headers).await
}

/// The HTTP status and JSON body (or `Null`) of a refused handshake.
fn refusal(attempt: Result<WsClient, tungstenite::Error>) -> (u16, Value) {
    match attempt {
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("the WebSocket handshake was accepted"),
    }
}

/// A customer after `welcome`, from `from`, with extra headers.
async fn customer_from(
    server: &TestServer,
    from: Option<IpAddr>,
    headers: &[(&'static str, &str)],
) -> WsClient {
    let mut c = open(server, from, headers)
        .await
        .unwrap_or_else(|e| panic!("handshake from {from:?} {headers:?}: {e}"));
    c.ok(json!({"type": "hello", "role": "customer"}), "welcome")
        .await;
    c
}

/// `not_found`, `rate_limited`, ... for an error; the type otherwise.
fn outcome(reply: &Value) -> String {
    if reply["type"] == "error" {
        reply["code"].as_str().unwrap_or("?").to_string()
    } else {
        reply["type"].as_str().unwrap_or("?").to_string()
    }
}
