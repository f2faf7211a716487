//! [`WsClient`]: the one WebSocket client of the tests. It buffers what it
//! receives, so a test waits for the message it expects (with a timeout)
//! while pushes are kept for later; it dials from any loopback address with
//! extra request headers; and each wait has a `try_` form that gives `None`
//! once the connection is gone (for a broker that may be killed at any
//! moment). [`Closed`]: how a connection ended.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::WAIT;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code.
    Code(u16),
    /// The stream ended without a close frame.
    Dropped,
}

/// A WebSocket client that buffers what it receives, so a test can wait
/// for one message while others (pushes) are kept for later.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
    closed: Option<Closed>,
}

/// A TCP connection to `addr`, from the loopback address `from` when
/// given.
pub async fn tcp_from(addr: SocketAddr, from: Option<IpAddr>) -> TcpStream {
    tokio::time::timeout(WAIT, try_tcp_from(addr, from))
        .await
        .expect("connect in time")
        .expect("connect")
}

async fn try_tcp_from(addr: SocketAddr, from: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

impl WsClient {
    /// A WebSocket to `url`, panicking when the handshake fails.
    pub async fn connect(url: &str) -> WsClient {
        WsClient::open(url, None, &[])
            .await
            .unwrap_or_else(|e| panic!("WebSocket handshake with {url}: {e}"))
    }

    /// A WebSocket handshake with `url` (`ws://127.0.0.1:port/...`), from
    /// the loopback address `from` when given, with extra request headers;
    /// the handshake's error (an HTTP refusal, a broker gone) is returned
    /// as is. Panics when neither comes in time.
    pub async fn open(
        url: &str,
        from: Option<IpAddr>,
        headers: &[(&'static str, &str)],
    ) -> Result<WsClient, tungstenite::Error> {
        let mut req = url.into_client_request().expect("a WebSocket URL");
        for (name, v) in headers {
            req.headers_mut()
                .insert(*name, HeaderValue::from_str(v).expect("a header value"));
        }
        let addr: SocketAddr = req
            .uri()
            .authority()
            .and_then(|a| a.as_str().parse().ok())
            .expect("a URL with an IP address and a port");
        let handshake = async {
            let stream = try_tcp_from(addr, from).await?;
            tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await
        };
        let (ws, _) = tokio::time::timeout(WAIT, handshake)
            .await
            .expect("handshake answered in time")?;
        Ok(WsClient {
            ws,
            pending: VecDeque::new(),
            closed: None,
        })
    }

    /// Sends one JSON message.
    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// Queues messages and writes them with one flush (errors ignored: the
    /// broker may close while they are on the way).
    pub async fn burst(&mut self, msgs: impl IntoIterator<Item = Value>) {
        for m in msgs {
            if self.ws.feed(Message::text(m.to_string())).await.is_err() {
                return;
            }
        }
        let _ = self.ws.flush().await;
    }

    /// Reads the next JSON message from the socket (not the buffer), or
    /// `None` when the connection closed.
    async fn read(&mut self) -> Option<Value> {
        if self.closed.is_some() {
            return None;
        }
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("no message within {WAIT:?}; pending: {:?}", self.pending)
                });
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Some(serde_json::from_str(&t).expect("server sent JSON"));
                }
                Some(Ok(Message::Close(frame))) => {
                    self.closed = Some(Closed::Code(
                        frame.map(|f| u16::from(f.code)).unwrap_or(1005),
                    ));
                    return None;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    self.closed = Some(Closed::Dropped);
                    return None;
                }
            }
        }
    }

    /// The next message, buffered or new. Panics when none comes in time or
    /// the connection closed.
    pub async fn next(&mut self) -> Value {
        match self.try_next().await {
            Some(v) => v,
            None => panic!("connection closed: {:?}", self.closed),
        }
    }

    /// The next message, buffered or new; `None` once the connection
    /// closed. Panics when neither comes in time.
    pub async fn try_next(&mut self) -> Option<Value> {
        match self.pending.pop_front() {
            Some(v) => Some(v),
            None => self.read().await,
        }
    }

    /// Waits for the first message matching `pred`; the others stay
    /// buffered, in order.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        match self.try_wait_for(pred).await {
            Some(v) => v,
            None => panic!(
                "connection closed ({:?}) while waiting for {what}; pending: {:?}",
                self.closed, self.pending
            ),
        }
    }

    /// As [`WsClient::wait_for`]; `None` once the connection closed.
    pub async fn try_wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i);
        }
        loop {
            match self.read().await? {
                v if pred(&v) => return Some(v),
                v => self.pending.push_back(v),
            }
        }
    }

    /// Waits for the first message of this `type`.
    pub async fn wait_type(&mut self, ty: &str) -> Value {
        let ty = ty.to_string();
        self.wait_for(&ty.clone(), move |v| v["type"] == ty.as_str())
            .await
    }

    /// Sends a command with a fresh `id` and waits for the message that
    /// echoes it (reply or error).
    pub async fn request(&mut self, v: Value) -> Value {
        let what = v.to_string();
        match self.try_request(v).await {
            Some(reply) => reply,
            None => panic!(
                "connection closed ({:?}) while waiting for the reply to {what}; pending: {:?}",
                self.closed, self.pending
            ),
        }
    }

    /// As [`WsClient::request`]; `None` once the connection is gone.
    pub async fn try_request(&mut self, mut v: Value) -> Option<Value> {
        let id = format!("r{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        v["id"] = json!(id);
        self.ws.send(Message::text(v.to_string())).await.ok()?;
        let want = json!(id);
        self.try_wait_for(move |m| m["id"] == want).await
    }

    /// Like `request`, but panics unless the reply has the given type.
    pub async fn ok(&mut self, v: Value, ty: &str) -> Value {
        let reply = self.request(v.clone()).await;
        assert_eq!(reply["type"], ty, "request {v} got {reply}");
        reply
    }

    /// Like `request`, but panics unless the reply is an `error` with this
    /// code; returns the error.
    pub async fn err(&mut self, v: Value, code: &str) -> Value {
        let reply = self.request(v.clone()).await;
        assert_eq!(reply["type"], "error", "request {v} got {reply}");
        assert_eq!(reply["code"], code, "request {v} got {reply}");
        reply
    }

    /// Waits for the connection to close; returns how, with the messages
    /// received before it.
    pub async fn closed(&mut self) -> (Closed, Vec<Value>) {
        let mut seen: Vec<Value> = self.pending.drain(..).collect();
        while let Some(v) = self.read().await {
            seen.push(v);
        }
        (self.closed.take().unwrap_or(Closed::Dropped), seen)
    }

    /// Sends a `ping` and waits for its `pong`: everything the server sent
    /// before the pong is then buffered, so "nothing else arrived" can be
    /// checked with `pending()` without sleeping.
    pub async fn sync(&mut self) {
        self.ok(json!({"type": "ping"}), "pong").await;
    }

    /// The messages received and not yet consumed.
    pub fn pending(&self) -> &VecDeque<Value> {
        &self.pending
    }

    /// Drops every buffered message.
    pub fn clear(&mut self) {
        self.pending.clear();
    }

    /// Closes the socket with a close frame.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}
