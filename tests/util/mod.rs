//! Test helpers: a real broker on `127.0.0.1:0`, a typed WebSocket client
//! that waits for what it expects with a timeout, and an HTTP helper.
#![allow(dead_code)]

pub mod process;
pub mod receiver;
pub mod redis;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use casebroker::Config;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(5);

pub const ALICE: &str = "alice-token-0001"; // acme admin, groups support + sales
pub const BOB: &str = "bob-token-00002"; // acme, support
pub const CAROL: &str = "carol-token-0003"; // acme, sales
pub const DAVE: &str = "dave-token-00004"; // acme, support
pub const GINA: &str = "gina-token-00005"; // globex admin, support
pub const MODULE: &str = "acme-qs"; // acme / support
pub const MODULE_BOB: &str = "acme-qs-bob"; // acme / support, default assignee bob
pub const MODULE_SALES: &str = "acme-qs-sales"; // acme / sales
pub const GLOBEX_MODULE: &str = "globex-qs"; // globex / support

/// Top-level config lines that lift the per-connection message rate, for
/// tests that drive load through one connection.
pub const UNLIMITED: &str = "messages_per_second = 1000000\nmessage_burst = 1000000";

/// The test config: two companies, so isolation can be checked. `extra` is
/// prepended (top-level keys such as `case_ttl = "1s"`).
pub fn config_with(extra: &str) -> Config {
    Config::from_toml(&config_text(extra)).expect("test config is valid")
}

/// The test config as TOML, for a broker started as a process.
pub fn config_text(extra: &str) -> String {
    // Nothing on disk unless the test names a data directory.
    let storage = if extra.contains("data_dir") {
        ""
    } else {
        "in_memory = true"
    };
    let text = format!(
        r#"
{storage}
{extra}

[[companies]]
id = "acme"
name = "ACME"
groups = [{{ id = "support" }}, {{ id = "sales" }}]

[[companies.agents]]
id = "alice"
name = "Alice"
token = "{ALICE}"
groups = ["support", "sales"]
admin = true

[[companies.agents]]
id = "bob"
name = "Bob"
token = "{BOB}"
groups = ["support"]

[[companies.agents]]
id = "carol"
name = "Carol"
token = "{CAROL}"
groups = ["sales"]

[[companies.agents]]
id = "dave"
name = "Dave"
token = "{DAVE}"
groups = ["support"]

[[companies.modules]]
key = "{MODULE}"
group = "support"

[[companies.modules]]
key = "{MODULE_BOB}"
group = "support"
default_assignee = "bob"

[[companies.modules]]
key = "{MODULE_SALES}"
group = "sales"

[[companies]]
id = "globex"
name = "Globex"
groups = [{{ id = "support" }}]

[[companies.agents]]
id = "gina"
name = "Gina"
token = "{GINA}"
groups = ["support"]
admin = true

[[companies.modules]]
key = "{GLOBEX_MODULE}"
group = "support"
"#
    );
    text
}

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

/// Generates, for each named `async fn NAME(mode: Mode)`, a module `NAME`
/// with one test per storage mode: `in_memory`, `journaled`,
/// `cluster_node`.
#[allow(unused_macros)]
macro_rules! in_every_mode {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::util::Mode;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn in_memory() {
                super::$name(Mode::Memory).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn journaled() {
                super::$name(Mode::Journal).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster_node() {
                super::$name(Mode::Cluster).await
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use in_every_mode;

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

/// Creates a case over WebSocket as `ws` (an agent) in `group`; returns the
/// case object.
pub async fn create_case(ws: &mut WsClient, group: &str) -> Value {
    let reply = ws
        .ok(
            json!({"type": "create_case", "group": group, "name": "Printer down"}),
            "case",
        )
        .await;
    reply["case"].clone()
}

/// A customer connection that asked for help through `module`; returns the
/// connection and the `joined` reply.
pub async fn request_help(server: &TestServer, module: &str) -> (WsClient, Value) {
    let mut c = server.customer().await;
    let joined = c
        .ok(
            json!({"type": "request_help", "module": module, "name": "Ana"}),
            "joined",
        )
        .await;
    (c, joined)
}

/// The `code` string of a message or case object; panics, naming the
/// value, when it has none.
pub fn code_of(v: &Value) -> String {
    v["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no code in {v}"))
        .to_string()
}

/// The `seq` of a snapshot, event or `resumed` reply; panics, naming the
/// value, when it has none.
pub fn seq_of(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {v}"))
}

/// `GET /v1/cases/{code}` as alice (admin of acme); asserts a 200 and
/// returns the case.
pub async fn get_case(server: &TestServer, code: &str) -> Value {
    let (status, body) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(status, 200, "GET /v1/cases/{code}: {body}");
    body
}

// The queue stream -----------------------------------------------------------

/// True for the `agent` and `stats` pushes a subscriber gets beside the
/// queue: they are outside the event sequence and never replayed.
pub fn is_unsequenced_push(v: &Value) -> bool {
    v["type"] == "agent" || v["type"] == "stats"
}

/// The next message on `ws` that is not an `agent` or `stats` push (those
/// are skipped): a reply, an error or an event, in the order sent.
pub async fn next_msg(ws: &mut WsClient) -> Value {
    loop {
        let v = ws.next().await;
        if !is_unsequenced_push(&v) {
            return v;
        }
    }
}

/// Asserts that nothing but `agent` and `stats` pushes has arrived on `ws`
/// (after a ping round trip, so everything sent before is in); `who` names
/// the connection in the failure.
pub async fn assert_quiet(ws: &mut WsClient, who: &str) {
    ws.sync().await;
    let extra: Vec<&Value> = ws
        .pending()
        .iter()
        .filter(|v| !is_unsequenced_push(v))
        .collect();
    assert!(
        extra.is_empty(),
        "{who} received unexpected messages: {extra:?}"
    );
}

/// A new agent connection (`token`) that subscribes with `resume` from
/// `epoch` and `seq`; returns it and the reply (`resumed`, or `snapshot`
/// when the position is gone). Asserts that the reply is the first message
/// besides `agent` and `stats` pushes and echoes the command's id.
pub async fn connect_resuming(
    server: &TestServer,
    token: &str,
    epoch: &str,
    seq: u64,
) -> (WsClient, Value) {
    let mut ws = server.agent(token).await;
    ws.send(json!({
        "type": "subscribe",
        "id": "resume-1",
        "resume": {"epoch": epoch, "seq": seq},
    }))
    .await;
    let first = next_msg(&mut ws).await;
    assert_eq!(
        first["id"], "resume-1",
        "first message after resume: {first}"
    );
    (ws, first)
}

/// An HTTP answer is the error `status` and `code`, its message naming
/// `mentions`.
pub fn assert_error(got: (u16, Value), status: u16, code: &str, mentions: &str) {
    let (st, body) = got;
    assert_eq!(st, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains(mentions),
        "the message names {mentions:?}: {body}"
    );
}

// Metrics -------------------------------------------------------------------

/// The broker's `/metrics` text (asserting a 200).
pub async fn scrape(server: &TestServer) -> String {
    scrape_with(&reqwest::Client::new(), &server.url("/metrics")).await
}

/// The `/metrics` text at `url` through `client` (asserting a 200).
pub async fn scrape_with(client: &reqwest::Client, url: &str) -> String {
    let resp = client
        .get(url)
        .timeout(WAIT)
        .send()
        .await
        .expect("GET /metrics");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("metrics body");
    assert_eq!(status, 200, "GET /metrics: {text}");
    text
}

/// The value of one series (`name{labels}` exactly as rendered).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// The value of one series, which must be there.
pub fn value(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Polls `/metrics` until `series` is there with a value for which `ok`
/// holds (`what` says which, for the failure); returns that value. Panics
/// with the last scrape when it does not within `WAIT`.
pub async fn wait_metric(
    server: &TestServer,
    series: &str,
    what: &str,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape(server).await;
        if let Some(v) = metric(&text, series)
            && ok(v)
        {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never became {what} within {WAIT:?}; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
