//! [`Endpoint`]: a broker as a test reaches it at its address, in this
//! process ([`super::TestServer`] derefs to one) or as a process: its
//! WebSocket (agents and customers after `welcome`) and its HTTP API, each
//! call in a panicking form and, for a broker that may be killed at any
//! moment, a `try_` form that gives `None` once it is gone.

use std::net::{IpAddr, SocketAddr};

use serde_json::{Value, json};

use super::WAIT;
use super::ws::WsClient;

/// A broker's address and an HTTP client for it.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    http: reqwest::Client,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            http: reqwest::Client::new(),
        }
    }

    /// The same broker, its HTTP requests sent from the loopback address
    /// `ip` (any of 127.0.0.0/8), which the broker's per-address limits
    /// count apart.
    pub fn sending_from(&self, ip: IpAddr) -> Endpoint {
        let http = reqwest::Client::builder()
            .local_address(ip)
            .build()
            .expect("an HTTP client");
        Endpoint {
            addr: self.addr,
            http,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    // WebSocket -----------------------------------------------------------

    /// A connected WebSocket that has not said hello.
    pub async fn ws(&self) -> WsClient {
        WsClient::connect(&self.ws_url()).await
    }

    /// An agent connection after `welcome`.
    pub async fn agent(&self, token: &str) -> WsClient {
        self.try_agent(token)
            .await
            .unwrap_or_else(|| panic!("agent {token}: the connection ended before welcome"))
    }

    /// A customer connection after `welcome`.
    pub async fn customer(&self) -> WsClient {
        self.try_customer()
            .await
            .expect("customer: the connection ended before welcome")
    }

    /// An agent connection after `welcome`; `None` when the broker is gone.
    pub async fn try_agent(&self, token: &str) -> Option<WsClient> {
        self.try_hello(json!({"type": "hello", "role": "agent", "token": token}))
            .await
    }

    /// A customer connection after `welcome`; `None` when the broker is
    /// gone.
    pub async fn try_customer(&self) -> Option<WsClient> {
        self.try_hello(json!({"type": "hello", "role": "customer"}))
            .await
    }

    async fn try_hello(&self, hello: Value) -> Option<WsClient> {
        let role = hello["role"].clone();
        let mut ws = WsClient::open(&self.ws_url(), None, &[]).await.ok()?;
        let welcome = ws.try_request(hello).await?;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        assert_eq!(welcome["role"], role, "{welcome}");
        Some(ws)
    }

    // HTTP ----------------------------------------------------------------

    /// One HTTP request; returns the status and the JSON body (`Null` when
    /// the body is empty or not JSON).
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.try_http(method, path, token, body)
            .await
            .unwrap_or_else(|| panic!("{method} {path}: no answer"))
    }

    /// As [`Endpoint::http`]; `None` when no complete answer came (the
    /// broker was killed).
    pub async fn try_http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let body = body.map(|b| ("application/json", b.to_string()));
        self.exchange(method, path, token, body).await
    }

    /// One HTTP request with a raw body and no content type.
    pub async fn http_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        self.exchange(method, path, token, Some(("", body.to_string())))
            .await
            .unwrap_or_else(|| panic!("{method} {path}: no answer"))
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
    ) -> Option<(u16, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut req = self.http.request(method, self.url(path)).timeout(WAIT);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some((content_type, b)) = body {
            if !content_type.is_empty() {
                req = req.header("content-type", content_type);
            }
            req = req.body(b);
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        let text = resp.text().await.ok()?;
        Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// `GET path` as `token`; asserts a 200 and returns the body.
    pub async fn get(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.http("GET", path, Some(token), None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `POST path` with `body` as `token`; asserts a 2xx and returns the
    /// answer's body.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Value {
        let (status, answer) = self.http("POST", path, Some(token), Some(body)).await;
        assert!(
            (200..300).contains(&status),
            "POST {path}: {status} {answer}"
        );
        answer
    }

    /// `GET path` with extra request headers; the status, the answer's
    /// headers and its text (for pages and assets).
    pub async fn page(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut req = self.http.get(self.url(path)).timeout(WAIT);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap_or_default())
    }
}
