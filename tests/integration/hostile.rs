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

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

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

// A small JSON WebSocket client that can dial from any loopback address
// and carry extra request headers ------------------------------------------

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Conn {
    ws: Stream,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A TCP connection to `addr`, from `from` when given.
async fn tcp_from(addr: SocketAddr, from: Option<IpAddr>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(ip) = from {
        socket
            .bind(SocketAddr::new(ip, 0))
            .expect("bind a loopback address");
    }
    timeout(WAIT, socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// A WebSocket handshake from `from` with extra headers; the handshake
/// error (an HTTP refusal) is returned as is.
async fn open(
    server: &TestServer,
    from: Option<IpAddr>,
    headers: &[(&'static str, &str)],
) -> Result<Conn, tungstenite::Error> {
    let mut req = server.ws_url().into_client_request().unwrap();
    for (name, v) in headers {
        req.headers_mut()
            .insert(*name, HeaderValue::from_str(v).unwrap());
    }
    let stream = tcp_from(server.addr, from).await;
    let (ws, _) = timeout(
        WAIT,
        tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("handshake answered in time")?;
    Ok(Conn { ws })
}

/// The HTTP status and JSON body (or `Null`) of a refused handshake.
fn refusal(attempt: Result<Conn, tungstenite::Error>) -> (u16, Value) {
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
) -> Conn {
    let mut c = open(server, from, headers)
        .await
        .unwrap_or_else(|e| panic!("handshake from {from:?} {headers:?}: {e}"));
    c.send(json!({"type": "hello", "role": "customer"})).await;
    let welcome = c.recv().await.expect("welcome");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    c
}

impl Conn {
    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    /// Queues messages and writes them with one flush (errors ignored: the
    /// broker may close while they are on the way).
    async fn burst(&mut self, msgs: impl IntoIterator<Item = Value>) {
        for m in msgs {
            if self.ws.feed(Message::text(m.to_string())).await.is_err() {
                return;
            }
        }
        let _ = self.ws.flush().await;
    }

    /// The next JSON message, or `None` once the connection closed.
    async fn recv(&mut self) -> Option<Value> {
        loop {
            match timeout(WAIT, self.ws.next())
                .await
                .expect("a message or a close in time")
            {
                Some(Ok(Message::Text(t))) => {
                    return Some(serde_json::from_str(&t).expect("server sent JSON"));
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Sends `v` with a fresh `id` and returns the message echoing it.
    async fn request(&mut self, mut v: Value) -> Value {
        let id = format!("h{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        v["id"] = json!(id);
        self.send(v.clone()).await;
        loop {
            match self.recv().await {
                Some(m) if m["id"] == id.as_str() => return m,
                Some(_) => continue,
                None => panic!("connection closed while waiting for the reply to {v}"),
            }
        }
    }

    /// Reads until the connection ends; the close code (None: no close
    /// frame) and the messages before it.
    async fn closed(&mut self) -> (Option<u16>, Vec<Value>) {
        let mut seen = Vec::new();
        loop {
            match timeout(WAIT, self.ws.next())
                .await
                .expect("the connection closes in time")
            {
                Some(Ok(Message::Text(t))) => {
                    seen.push(serde_json::from_str(&t).expect("server sent JSON"))
                }
                Some(Ok(Message::Close(frame))) => {
                    return (Some(frame.map(|f| u16::from(f.code)).unwrap_or(1005)), seen);
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return (None, seen),
            }
        }
    }
}

/// `not_found`, `rate_limited`, ... for an error; the type otherwise.
fn outcome(reply: &Value) -> String {
    if reply["type"] == "error" {
        reply["code"].as_str().unwrap_or("?").to_string()
    } else {
        reply["type"].as_str().unwrap_or("?").to_string()
    }
}
