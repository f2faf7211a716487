//! The clients of the SIGKILL test: a WebSocket link and an HTTP API for a
//! broker that may be killed at any moment, giving `None` once it is gone.

use std::collections::HashMap;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::*;

/// A WebSocket client for a broker that may be killed at any moment: every
/// call gives `None` once the connection is gone.
pub(super) struct Link {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Link {
    async fn open(addr: SocketAddr) -> Option<Link> {
        let url = format!("ws://{addr}/v1/ws");
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("handshake in time")
            .ok()?;
        Some(Link { ws, next_id: 1 })
    }

    async fn hello(addr: SocketAddr, hello: Value) -> Option<Link> {
        let mut link = Link::open(addr).await?;
        let welcome = link.request(hello).await?;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        Some(link)
    }

    pub(super) async fn agent(addr: SocketAddr, token: &str) -> Option<Link> {
        Link::hello(
            addr,
            json!({"type": "hello", "role": "agent", "token": token}),
        )
        .await
    }

    pub(super) async fn customer(addr: SocketAddr) -> Option<Link> {
        Link::hello(addr, json!({"type": "hello", "role": "customer"})).await
    }

    /// The next JSON message; `None` once the connection closed.
    pub(super) async fn recv(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message or the end of the connection in time");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Some(serde_json::from_str(&t).expect("server sent JSON"));
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Sends `v` with a fresh `id`; the message echoing it (pushes before it
    /// are dropped).
    pub(super) async fn request(&mut self, mut v: Value) -> Option<Value> {
        let id = self.next_id;
        self.next_id += 1;
        v["id"] = json!(id);
        self.ws.send(Message::text(v.to_string())).await.ok()?;
        loop {
            let m = self.recv().await?;
            if m["id"] == json!(id) {
                return Some(m);
            }
        }
    }
}

/// HTTP to the binary; `None` when no complete answer came (it was killed).
#[derive(Clone)]
pub(super) struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub(super) fn new(addr: SocketAddr) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
        }
    }

    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(WAIT)
            .bearer_auth(token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        let text = resp.text().await.ok()?;
        Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A GET that must answer 200 (the broker is running).
    async fn get(&self, path: &str) -> Value {
        let (status, body) = self
            .call(reqwest::Method::GET, path, ALICE, None)
            .await
            .unwrap_or_else(|| panic!("GET {path}: no answer"));
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Every case, as alice (admin) sees them, by code.
    pub(super) async fn all_cases(&self) -> HashMap<String, Value> {
        let mut all = HashMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/cases?limit=1000&cursor={c}"),
                None => "/v1/cases?limit=1000".to_string(),
            };
            let page = self.get(&path).await;
            for c in page["cases"].as_array().unwrap() {
                assert!(all.insert(code_of(c), c.clone()).is_none(), "{c} twice");
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return all,
            }
        }
    }

    /// A case's transcript as (role, text) lines.
    pub(super) async fn lines(&self, code: &str) -> Vec<(String, String)> {
        let t = self.get(&format!("/v1/cases/{code}/transcript")).await;
        t["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["from"]["role"].as_str().unwrap().to_string(),
                    m["text"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}
