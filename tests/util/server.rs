//! The broker under test: [`TestServer`] on a free loopback port in each
//! storage mode ([`Mode`]), its HTTP helper and its clean stop, and
//! [`TempDir`], a directory removed when dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use casebroker::Config;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::ws::WsClient;
use super::{WAIT, config_text, config_with, redis};

/// A broker serving on a free loopback port, shut down when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    http: reqwest::Client,
    /// What the broker stores into (a data directory, a Redis), kept as
    /// long as the broker.
    storage: Option<Storage>,
}

/// Where a test broker keeps its cases: every storage mode a user can
/// pick, so that each protocol test runs in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `in_memory = true`.
    Memory,
    /// The default: a journal in a data directory.
    Journal,
    /// One node of a cluster on its own `redis-server`.
    Cluster,
}

enum Storage {
    Dir(TempDir),
    Redis(redis::RedisServer),
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A new empty directory under the system's temporary folder.
    pub fn new(what: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("casebroker-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestServer {
    /// A broker on the default test config.
    pub async fn start() -> TestServer {
        TestServer::with_config(config_with("")).await
    }

    /// A broker on the default test config in storage `mode`.
    pub async fn start_in(mode: Mode) -> TestServer {
        TestServer::with_extra_in(mode, "").await
    }

    /// A broker on the test config with `extra` (top-level keys) in
    /// storage `mode`.
    pub async fn with_extra_in(mode: Mode, extra: &str) -> TestServer {
        TestServer::with_text_in(mode, extra, |text| text).await
    }

    /// As [`TestServer::with_extra_in`], the config's text passed through
    /// `edit` first (to change a company's tables).
    pub async fn with_text_in(mode: Mode, extra: &str, edit: fn(String) -> String) -> TestServer {
        let config = |extra: &str| {
            Config::from_toml(&edit(config_text(extra))).expect("test config is valid")
        };
        match mode {
            Mode::Memory => TestServer::with_config(config(extra)).await,
            Mode::Journal => {
                let dir = TempDir::new("data");
                let extra = format!("data_dir = \"{}\"\n{extra}", dir.path().display());
                let mut server = TestServer::with_config(config(&extra)).await;
                server.storage = Some(Storage::Dir(dir));
                server
            }
            Mode::Cluster => {
                let redis = redis::RedisServer::start();
                let extra = format!(
                    "{extra}\n[cluster]\nredis_url = \"{}\"\nnode_id = \"n\"\nnode_timeout = \"3s\"\n",
                    redis.url()
                );
                let mut server = TestServer::with_config(config(&extra)).await;
                server.storage = Some(Storage::Redis(redis));
                server
            }
        }
    }

    /// Node `name` of a cluster on `redis`, the test config with `extra`
    /// (top-level keys) and an image every second.
    pub async fn node(redis: &redis::RedisServer, name: &str, extra: &str) -> TestServer {
        TestServer::node_with(redis, name, extra, |text| text).await
    }

    /// As [`TestServer::node`], the config's text passed through `edit`
    /// first (to change a company's tables).
    pub async fn node_with(
        redis: &redis::RedisServer,
        name: &str,
        extra: &str,
        edit: fn(String) -> String,
    ) -> TestServer {
        let table = format!(
            "{extra}\nsnapshot_interval = \"1s\"\n[cluster]\nredis_url = \"{}\"\nnode_id = \"{name}\"\nnode_timeout = \"3s\"\n",
            redis.url()
        );
        let config = Config::from_toml(&edit(config_text(&table))).expect("test config is valid");
        TestServer::with_config(config).await
    }

    pub async fn with_config(config: Config) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(casebroker::run(listener, config, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
            http: reqwest::Client::new(),
            storage: None,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A connected WebSocket that has not said hello.
    pub async fn ws(&self) -> WsClient {
        WsClient::connect(&self.ws_url()).await
    }

    /// An agent connection after `welcome`.
    pub async fn agent(&self, token: &str) -> WsClient {
        let mut ws = self.ws().await;
        ws.send(json!({"type": "hello", "role": "agent", "token": token}))
            .await;
        let welcome = ws.wait_type("welcome").await;
        assert_eq!(welcome["role"], "agent", "{welcome}");
        ws
    }

    /// A customer connection after `welcome`.
    pub async fn customer(&self) -> WsClient {
        let mut ws = self.ws().await;
        ws.send(json!({"type": "hello", "role": "customer"})).await;
        ws.wait_type("welcome").await;
        ws
    }

    /// One HTTP request; returns the status and the JSON body (`Null` when
    /// the body is empty or not JSON).
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, self.url(path)).timeout(WAIT);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Raw HTTP request with a raw body.
    pub async fn http_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, self.url(path))
            .timeout(WAIT)
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Stops the broker and waits for `run` to return.
    pub async fn shutdown(self) {
        self.stop().await
    }

    /// Shuts the broker down and waits until it has stopped (its data
    /// directory is closed and may be opened again): within its grace
    /// period, without a panic, and with `run` answering `Ok`.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("broker stops within its grace period")
                .expect("the broker's task did not panic")
                .expect("the broker stopped without an error");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
