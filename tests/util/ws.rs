//! [`WsClient`]: a WebSocket client that buffers what it receives, so a
//! test waits for the message it expects (with a timeout) while pushes are
//! kept for later, and [`Closed`], how a connection ended.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
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

impl WsClient {
    pub async fn connect(url: &str) -> WsClient {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("WebSocket handshake");
        WsClient {
            ws,
            pending: VecDeque::new(),
            closed: None,
        }
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
        if let Some(v) = self.pending.pop_front() {
            return v;
        }
        match self.read().await {
            Some(v) => v,
            None => panic!("connection closed: {:?}", self.closed),
        }
    }

    /// Waits for the first message matching `pred`; the others stay
    /// buffered, in order.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i).unwrap();
        }
        loop {
            match self.read().await {
                Some(v) if pred(&v) => return v,
                Some(v) => self.pending.push_back(v),
                None => panic!(
                    "connection closed ({:?}) while waiting for {what}; pending: {:?}",
                    self.closed, self.pending
                ),
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
    pub async fn request(&mut self, mut v: Value) -> Value {
        let id = format!("r{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        v["id"] = json!(id);
        self.send(v).await;
        let want = json!(id);
        self.wait_for(&format!("reply {id}"), move |m| m["id"] == want)
            .await
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
