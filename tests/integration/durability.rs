//! Durability: what a broker with a data directory keeps across a restart
//! (cases with their fields, assignments and transcripts, resume tokens,
//! each company's epoch, seq and event history), what it does at start
//! (seats held at the stop are left, cases whose TTL passed meanwhile
//! expire), the directory's lock against a second broker, `in_memory`,
//! and a SIGKILL at a random moment that loses no acknowledged change.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use casebroker::Config;
use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::util::*;

// Scratch directories ------------------------------------------------------

static NEXT_DIR: AtomicU64 = AtomicU64::new(1);

/// A directory of one test under the system's temp dir: the data directory
/// (`data/`, created by the broker) and config files beside it. Removed
/// when the test ends, passed or failed.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        let root = std::env::temp_dir().join(format!(
            "casebroker-durability-{}-{}-{test}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create the scratch directory");
        Scratch { root }
    }

    /// The data directory.
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The config line naming the data directory.
    fn data_dir_line(&self) -> String {
        format!(
            "data_dir = {}",
            toml::Value::String(self.data().display().to_string())
        )
    }

    /// The test config on this data directory, with `extra` top-level keys.
    fn config(&self, extra: &str) -> Config {
        config_with(&format!("{}\n{extra}", self.data_dir_line()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

// Helpers on the in-process broker -----------------------------------------

/// Stops `server` gracefully (every socket closed with 4000, the data
/// directory closed) while `clients` read their close frames.
async fn stop(server: TestServer, clients: Vec<WsClient>) {
    let drain = async move {
        for mut c in clients {
            assert_eq!(c.closed().await.0, Closed::Code(4000));
        }
    };
    tokio::join!(server.stop(), drain);
}

async fn get_transcript(server: &TestServer, code: &str) -> Value {
    let (status, t) = server
        .http(
            "GET",
            &format!("/v1/cases/{code}/transcript"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(status, 200, "GET {code}/transcript: {t}");
    t
}

/// An admin dashboard and its `snapshot`.
async fn dashboard(server: &TestServer) -> (WsClient, Value) {
    let mut ws = server.agent(ALICE).await;
    let snap = ws.ok(json!({"type": "subscribe"}), "snapshot").await;
    (ws, snap)
}

// 1. Cases, assignments, transcripts and the epoch ---------------------------

#[tokio::test]
async fn restart_keeps_cases_assignments_transcripts_and_the_epoch() {
    let scratch = Scratch::new("restart");
    let server = TestServer::with_config(scratch.config("")).await;

    // A case over HTTP with every field, one over WebSocket assigned at
    // creation, and a customer's request for help.
    let (status, by_http) = server
        .http(
            "POST",
            "/v1/cases",
            Some(BOB),
            Some(json!({
                "group": "support",
                "name": "VPN drops",
                "description": "every hour, on the hour",
                "customer": {"name": "Ola", "email": "ola@example.com"},
            })),
        )
        .await;
    assert_eq!(status, 201, "{by_http}");
    let http_code = code_of(&by_http);
    let mut alice = server.agent(ALICE).await;
    let by_ws = alice
        .ok(
            json!({"type": "create_case", "group": "sales", "name": "Invoice", "assignee": "carol"}),
            "case",
        )
        .await["case"]
        .clone();
    assert_eq!(by_ws["assigned_by"], "alice", "{by_ws}");
    let ws_code = code_of(&by_ws);
    let (mut ana, joined) = request_help(&server, MODULE).await;
    let help_code = joined["code"].as_str().unwrap().to_string();

    // Bob joins the help case; they chat both ways.
    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "join", "code": help_code}), "joined")
        .await;
    ana.wait_for("status in_progress", |m| {
        m["type"] == "status" && m["status"] == "in_progress"
    })
    .await;
    bob.ok(
        json!({"type": "chat", "code": help_code, "text": "Hello Ana, Bob here."}),
        "sent",
    )
    .await;
    ana.wait_type("chat").await;
    ana.ok(
        json!({"type": "chat", "text": "My printer is on fire."}),
        "sent",
    )
    .await;
    bob.wait_type("chat").await;

    // The HTTP case is assigned to dave by alice; the WebSocket case closed.
    let (status, assigned) = server
        .http(
            "POST",
            &format!("/v1/cases/{http_code}/assign"),
            Some(ALICE),
            Some(json!({"assignee": "dave"})),
        )
        .await;
    assert_eq!(status, 200, "{assigned}");
    assert_eq!(assigned["assignee"], "dave", "{assigned}");
    assert_eq!(assigned["assigned_by"], "alice", "{assigned}");
    let closed = alice
        .ok(json!({"type": "close", "code": ws_code}), "case")
        .await["case"]
        .clone();
    assert_eq!(closed["status"], "closed", "{closed}");
    assert_eq!(closed["closed_by"], "alice", "{closed}");

    let transcript = get_transcript(&server, &help_code).await;
    assert_eq!(
        transcript["messages"].as_array().unwrap().len(),
        2,
        "{transcript}"
    );
    let (dash, snap) = dashboard(&server).await;
    let epoch = snap["epoch"].as_str().unwrap().to_string();
    let seq = seq_of(&snap);
    assert_eq!(
        seq, 6,
        "3 creations, a join, an assignment, a close: {snap}"
    );

    stop(server, vec![alice, ana, bob, dash]).await;
    let server = TestServer::with_config(scratch.config("")).await;

    // Nothing touched these two since: they come back exactly.
    assert_eq!(get_case(&server, &http_code).await, assigned);
    assert_eq!(get_case(&server, &ws_code).await, closed);
    assert_eq!(
        assigned["status"], "new",
        "nobody ever connected: {assigned}"
    );
    assert_eq!(assigned["name"], "VPN drops");
    assert_eq!(assigned["description"], "every hour, on the hour");
    assert_eq!(
        assigned["customer"],
        json!({"name": "Ola", "email": "ola@example.com"})
    );
    assert_eq!(assigned["created_by"], "bob");
    assert_eq!(closed["assignee"], "carol");
    assert_eq!(closed["assigned_by"], "alice");

    // The help case: its seats were left, it was connected once: pending.
    let help = get_case(&server, &help_code).await;
    assert_eq!(help["status"], "pending", "{help}");
    assert_eq!(help["assignee"], "bob", "{help}");
    assert_eq!(help["assigned_by"], "bob", "{help}");
    assert_eq!(help["customer_connected"], false, "{help}");
    assert_eq!(help["supporter_connected"], false, "{help}");
    assert_eq!(help["source"], "quicksupport", "{help}");
    assert_eq!(help["created_by"], "customer", "{help}");
    assert_eq!(help["name"], "Help request: Ana", "{help}");
    assert_eq!(help["closed_by"], Value::Null, "{help}");
    assert_eq!(help["closed_at"], Value::Null, "{help}");
    let messages = transcript["messages"].as_array().unwrap();
    assert_eq!(messages[0]["from"], json!({"role": "agent", "name": "Bob"}));
    assert_eq!(messages[0]["text"], "Hello Ana, Bob here.");
    assert_eq!(
        messages[1]["from"],
        json!({"role": "customer", "name": "Ana"})
    );
    assert_eq!(messages[1]["text"], "My printer is on fire.");
    assert_eq!(get_transcript(&server, &help_code).await, transcript);

    // The same stream: same epoch, seq where it was or further.
    let (dash, snap2) = dashboard(&server).await;
    assert_eq!(snap2["epoch"], epoch.as_str(), "{snap2}");
    assert!(seq_of(&snap2) >= seq, "seq went back: {seq} -> {snap2}");
    let cases = snap2["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3, "{snap2}");
    for code in [&http_code, &ws_code, &help_code] {
        let c = cases
            .iter()
            .find(|c| c["code"] == code.as_str())
            .unwrap_or_else(|| panic!("{code} not in {snap2}"));
        assert_eq!(*c, get_case(&server, code).await);
    }
    let (status, list) = server.http("GET", "/v1/cases", Some(ALICE), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["cases"].as_array().unwrap().len(), 3, "{list}");

    stop(server, vec![dash]).await;
}

// 2. Resume across a restart -------------------------------------------------

#[tokio::test]
async fn a_dashboard_resumes_exactly_across_a_restart() {
    let scratch = Scratch::new("resume");
    let server = TestServer::with_config(scratch.config("")).await;
    let mut maker = server.agent(ALICE).await;
    create_case(&mut maker, "support").await;

    let (mut dash, snap) = dashboard(&server).await;
    let epoch = snap["epoch"].as_str().unwrap().to_string();
    let seq0 = seq_of(&snap);
    assert_eq!(seq0, 1, "{snap}");

    // Five changes while the dashboard watches.
    let a = code_of(&create_case(&mut maker, "support").await);
    maker
        .ok(
            json!({"type": "assign", "code": a, "assignee": "dave"}),
            "case",
        )
        .await;
    let (mut ana, joined) = request_help(&server, MODULE).await;
    let help = joined["code"].as_str().unwrap().to_string();
    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "join", "code": help}), "joined")
        .await;
    ana.wait_for("status in_progress", |m| {
        m["type"] == "status" && m["status"] == "in_progress"
    })
    .await;
    maker.ok(json!({"type": "close", "code": a}), "case").await;
    let mut seen = Vec::new();
    for k in 0..5u64 {
        let ev = dash.wait_type("event").await;
        assert_eq!(seq_of(&ev), seq0 + 1 + k, "{ev}");
        assert_eq!(ev["epoch"], epoch.as_str(), "{ev}");
        seen.push(ev);
    }
    let codes: Vec<Value> = seen.iter().map(|e| e["case"]["code"].clone()).collect();
    assert_eq!(codes, [&a, &a, &help, &help, &a].map(|c| json!(c)));
    assert_quiet(&mut dash, "dashboard").await;
    // The dashboard left off after the second of them.
    let from = seq_of(&seen[1]);

    stop(server, vec![maker, dash, ana, bob]).await;
    let server = TestServer::with_config(scratch.config("")).await;

    let (mut dash, first) = connect_resuming(&server, ALICE, &epoch, from).await;
    assert_eq!(first["type"], "resumed", "{first}");
    assert_eq!(first["epoch"], epoch.as_str(), "{first}");
    // The events after `from`, exactly as they went out the first time...
    for ev in &seen[2..] {
        let got = next_msg(&mut dash).await;
        assert_eq!(got, *ev, "replayed event");
    }
    // ...then the two seats of the help case being left (ana's and bob's),
    // and nothing else.
    let last = seq_of(seen.last().unwrap());
    assert_eq!(seq_of(&first), last + 2, "{first}");
    let left1 = next_msg(&mut dash).await;
    let left2 = next_msg(&mut dash).await;
    for (k, ev) in [&left1, &left2].into_iter().enumerate() {
        assert_eq!(ev["type"], "event", "{ev}");
        assert_eq!(ev["epoch"], epoch.as_str(), "{ev}");
        assert_eq!(seq_of(ev), last + 1 + k as u64, "{ev}");
        assert_eq!(ev["action"], "updated", "{ev}");
        assert_eq!(ev["case"]["code"], help.as_str(), "{ev}");
    }
    let seats = |ev: &Value| {
        (
            ev["case"]["customer_connected"].as_bool().unwrap(),
            ev["case"]["supporter_connected"].as_bool().unwrap(),
        )
    };
    assert!(
        matches!(seats(&left1), (true, false) | (false, true)),
        "one seat left first: {left1}"
    );
    assert_eq!(seats(&left2), (false, false), "{left2}");
    assert_eq!(left2["case"]["status"], "pending", "{left2}");
    assert_eq!(left2["case"], get_case(&server, &help).await);
    assert_quiet(&mut dash, "resumed dashboard").await;

    // A fresh snapshot stands where the resume did.
    let (other, snap2) = dashboard(&server).await;
    assert_eq!(snap2["epoch"], epoch.as_str(), "{snap2}");
    assert_eq!(seq_of(&snap2), seq_of(&first), "{snap2}");

    stop(server, vec![dash, other]).await;
}

// 3. A customer's resume token ----------------------------------------------

#[tokio::test]
async fn a_customer_rejoins_with_its_resume_token_after_a_restart() {
    let scratch = Scratch::new("token");
    let server = TestServer::with_config(scratch.config("")).await;
    let (ana, joined) = request_help(&server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    let token = joined["resume_token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32, "{joined}");

    stop(server, vec![ana]).await;
    let server = TestServer::with_config(scratch.config("")).await;

    // Within seat_grace, the code alone, or a wrong token, is refused.
    let mut other = server.customer().await;
    other
        .err(json!({"type": "join", "code": code}), "conflict")
        .await;
    other
        .err(
            json!({"type": "join", "code": code, "resume_token": "0".repeat(32)}),
            "conflict",
        )
        .await;

    // The token takes the seat back and is returned unchanged.
    let mut ana = server.customer().await;
    let rejoined = ana
        .ok(
            json!({"type": "join", "code": code, "resume_token": token}),
            "joined",
        )
        .await;
    assert_eq!(rejoined["code"], code.as_str(), "{rejoined}");
    assert_eq!(rejoined["resume_token"], token.as_str(), "{rejoined}");
    assert_eq!(rejoined["case"]["status"], "pending", "{rejoined}");
    assert_eq!(rejoined["case"]["customer_connected"], true, "{rejoined}");
    let case = get_case(&server, &code).await;
    assert_eq!(case["customer_connected"], true, "{case}");
    assert_eq!(case["customer"]["name"], "Ana", "{case}");

    // The session goes on: an agent joins and they talk.
    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    ana.wait_for("status in_progress", |m| {
        m["type"] == "status" && m["status"] == "in_progress"
    })
    .await;
    ana.ok(json!({"type": "chat", "text": "I'm back."}), "sent")
        .await;
    let line = bob.wait_type("chat").await;
    assert_eq!(line["text"], "I'm back.", "{line}");

    stop(server, vec![ana, bob, other]).await;
}

// 4. in_memory ---------------------------------------------------------------

#[tokio::test]
async fn in_memory_forgets_everything() {
    let scratch = Scratch::new("in-memory");
    // `in_memory` wins over a data_dir: nothing is written there.
    let config = || config_with(&format!("in_memory = true\n{}", scratch.data_dir_line()));
    let server = TestServer::with_config(config()).await;
    let mut bob = server.agent(BOB).await;
    let code = code_of(&create_case(&mut bob, "support").await);
    let (ana, _) = request_help(&server, MODULE).await;
    let (dash, snap) = dashboard(&server).await;
    let epoch = snap["epoch"].as_str().unwrap().to_string();
    assert_eq!(snap["cases"].as_array().unwrap().len(), 2, "{snap}");

    stop(server, vec![bob, ana, dash]).await;
    assert!(
        !scratch.data().exists(),
        "in_memory wrote to {}",
        scratch.data().display()
    );
    let server = TestServer::with_config(config()).await;

    let (status, body) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, list) = server.http("GET", "/v1/cases", Some(ALICE), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["cases"], json!([]), "{list}");
    // A new stream: the old position gets a snapshot, empty, at seq 0.
    let (mut dash, first) = connect_resuming(&server, ALICE, &epoch, seq_of(&snap)).await;
    assert_eq!(first["type"], "snapshot", "{first}");
    assert_ne!(first["epoch"], epoch.as_str(), "{first}");
    assert_eq!(first["seq"], 0, "{first}");
    assert_eq!(first["cases"], json!([]), "{first}");
    assert_quiet(&mut dash, "dashboard").await;

    stop(server, vec![dash]).await;
}

#[tokio::test]
async fn the_journal_counts_its_commits_and_changes_in_metrics() {
    let scratch = Scratch::new("journal-metrics");
    let server = TestServer::with_config(scratch.config("")).await;
    let before = scrape(&server).await;
    let commits = value(&before, "casebroker_journal_commits_total");
    let changes = value(&before, "casebroker_journal_changes_total");
    let mut bob = server.agent(BOB).await;
    for _ in 0..3 {
        create_case(&mut bob, "support").await;
    }
    // Each create is acknowledged only once stored, so the counters
    // already hold it.
    let after = scrape(&server).await;
    assert!(
        value(&after, "casebroker_journal_commits_total") > commits,
        "{after}"
    );
    // Three created cases, plus Bob's connection (presence is not journaled).
    assert!(
        value(&after, "casebroker_journal_changes_total") >= changes + 3.0,
        "{after}"
    );
    assert!(
        value(&after, "casebroker_journal_bytes_total") > 0.0,
        "{after}"
    );
    assert_eq!(value(&after, "casebroker_journal_failures_total"), 0.0);
    let histogram = value(&after, "casebroker_journal_commit_seconds_count");
    assert_eq!(
        histogram,
        value(&after, "casebroker_journal_commits_total"),
        "{after}"
    );
    stop(server, vec![bob]).await;

    // A broker without a journal (the tests' default) has none of them.
    let server = TestServer::start().await;
    let text = scrape(&server).await;
    assert!(!text.contains("casebroker_journal_"), "{text}");
    server.stop().await;
}

// 5. Expiry while down -------------------------------------------------------

#[tokio::test]
async fn a_case_whose_ttl_passed_while_down_expires_at_start() {
    let scratch = Scratch::new("ttl");
    let ttl = Duration::from_secs(1);
    let server = TestServer::with_config(scratch.config("case_ttl = \"1s\"")).await;
    let (mut dash, _) = dashboard(&server).await;
    let (status, case) = server
        .http(
            "POST",
            "/v1/cases",
            Some(BOB),
            Some(json!({"group": "support", "name": "Short-lived"})),
        )
        .await;
    let created = Instant::now();
    assert_eq!(status, 201, "{case}");
    let code = code_of(&case);
    let ev = dash.wait_type("event").await;
    assert_eq!(ev["action"], "created", "{ev}");
    let epoch = ev["epoch"].as_str().unwrap().to_string();
    let seq = seq_of(&ev);
    assert_eq!(get_case(&server, &code).await["status"], "new");

    stop(server, vec![dash]).await;
    assert!(
        created.elapsed() < ttl,
        "the broker took {:?} to stop: the TTL passed while it ran",
        created.elapsed()
    );
    // The TTL passes while no broker runs.
    tokio::time::sleep_until((created + ttl + Duration::from_millis(500)).into()).await;
    let server = TestServer::with_config(scratch.config("case_ttl = \"1s\"")).await;

    let (mut dash, first) = connect_resuming(&server, ALICE, &epoch, seq).await;
    assert_eq!(first["type"], "resumed", "{first}");
    assert_eq!(first["epoch"], epoch.as_str(), "{first}");
    let expired = next_msg(&mut dash).await;
    assert_eq!(expired["type"], "event", "{expired}");
    assert_eq!(seq_of(&expired), seq + 1, "{expired}");
    assert_eq!(expired["action"], "updated", "{expired}");
    assert_eq!(expired["case"]["code"], code.as_str(), "{expired}");
    assert_eq!(expired["case"]["status"], "expired", "{expired}");
    assert_eq!(expired["case"]["closed_at"], Value::Null, "{expired}");
    assert_eq!(expired["case"]["closed_by"], Value::Null, "{expired}");
    let now = get_case(&server, &code).await;
    assert_eq!(now, expired["case"]);
    assert_quiet(&mut dash, "dashboard").await;
    // An expired case cannot be joined.
    let mut ana = server.customer().await;
    ana.err(json!({"type": "join", "code": code}), "not_found")
        .await;

    stop(server, vec![dash, ana]).await;
}

// The real binary --------------------------------------------------------------

/// The broker binary, killed when dropped. Both pipes are drained into
/// buffers for the life of the process.
struct Process {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    listening: tokio::sync::mpsc::UnboundedReceiver<String>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Process {
    fn spawn(config: &Path, data: &Path) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_casebroker"))
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data)
            .arg("--log-format")
            .arg("json")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the binary");
        let (tx, listening) = tokio::sync::mpsc::unbounded_channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        let mut readers = Vec::new();
        for (pipe, keep) in [(out, stdout.clone()), (err, stderr.clone())] {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && v["fields"]["message"] == "casebroker listening"
                        && let Some(addr) = v["fields"]["addr"].as_str()
                    {
                        let _ = tx.send(addr.to_string());
                    }
                    let mut keep = keep.lock().unwrap();
                    keep.push_str(&line);
                    keep.push('\n');
                }
            }));
        }
        Process {
            child,
            stdout,
            stderr,
            listening,
            readers,
        }
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// The address the broker listens on, from its log line.
    async fn addr(&mut self) -> SocketAddr {
        match tokio::time::timeout(WAIT * 2, self.listening.recv()).await {
            Ok(Some(addr)) => addr.parse().expect("a socket address"),
            _ => panic!("the broker logged no address; {}", self.output()),
        }
    }

    /// Waits for the process to end by itself, then for its output.
    async fn exited(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the binary still runs after {within:?}; {}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        status
    }

    /// SIGKILL, and wait until the process is gone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

// 6. The directory's lock ----------------------------------------------------

#[tokio::test]
async fn a_second_broker_on_the_same_directory_is_refused() {
    let scratch = Scratch::new("locked");
    let server = TestServer::with_config(scratch.config("")).await;
    let mut bob = server.agent(BOB).await;
    let code = code_of(&create_case(&mut bob, "support").await);

    let config = scratch.file("second.toml");
    std::fs::write(
        &config,
        format!(
            "[[companies]]\nid = \"acme\"\ngroups = [{{ id = \"support\" }}]\n\n[[companies.agents]]\nid = \"bob\"\ntoken = \"{BOB}\"\ngroups = [\"support\"]\n"
        ),
    )
    .unwrap();
    let mut second = Process::spawn(&config, &scratch.data());
    let status = second.exited(WAIT * 2).await;
    let stderr = second.stderr.lock().unwrap().clone();
    let all = second.output();
    assert_eq!(status.code(), Some(1), "{status:?}; {all}");
    let dir = scratch.data().display().to_string();
    assert!(
        stderr.contains(&format!("data directory {dir}")),
        "stderr does not name {dir}: {all}"
    );
    assert!(stderr.contains("locked"), "{all}");
    assert!(
        !all.contains("casebroker listening"),
        "the second broker served: {all}"
    );

    // The first broker is untouched and keeps serving.
    assert_eq!(get_case(&server, &code).await["code"], code.as_str());
    create_case(&mut bob, "support").await;

    stop(server, vec![bob]).await;
}

// 7. SIGKILL -------------------------------------------------------------------

/// Kill-and-restart rounds.
const ROUNDS: usize = 20;

/// The agents driving changes: id, token, admin. All are in `support`.
const AGENTS: [(&str, &str, bool); 3] = [
    ("alice", ALICE, true),
    ("bob", BOB, false),
    ("dave", DAVE, false),
];

/// The binary's config. Odd rounds also store an image of every company
/// every 25 ms, so kills land on images and journal trimming as well.
fn binary_config(round: usize) -> String {
    let images = if round % 2 == 1 {
        "snapshot_interval = \"25ms\""
    } else {
        ""
    };
    let mut text = format!(
        "shutdown_grace = \"1s\"\nmessages_per_second = 1000000\nmessage_burst = 1000000\nhelp_per_ip_per_minute = 1000000\nhelp_per_module_per_minute = 1000000\n{images}\n\n[[companies]]\nid = \"acme\"\nname = \"ACME\"\ngroups = [{{ id = \"support\" }}]\n\n[[companies.modules]]\nkey = \"{MODULE}\"\ngroup = \"support\"\n"
    );
    for (id, token, admin) in AGENTS {
        let mut name = id.to_string();
        name[..1].make_ascii_uppercase();
        text.push_str(&format!(
            "\n[[companies.agents]]\nid = \"{id}\"\nname = \"{name}\"\ntoken = \"{token}\"\ngroups = [\"support\"]\nadmin = {admin}\n"
        ));
    }
    text
}

/// A WebSocket client for a broker that may be killed at any moment: every
/// call gives `None` once the connection is gone.
struct Link {
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

    async fn agent(addr: SocketAddr, token: &str) -> Option<Link> {
        Link::hello(
            addr,
            json!({"type": "hello", "role": "agent", "token": token}),
        )
        .await
    }

    async fn customer(addr: SocketAddr) -> Option<Link> {
        Link::hello(addr, json!({"type": "hello", "role": "customer"})).await
    }

    /// The next JSON message; `None` once the connection closed.
    async fn recv(&mut self) -> Option<Value> {
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
    async fn request(&mut self, mut v: Value) -> Option<Value> {
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
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
        }
    }

    async fn call(
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
    async fn all_cases(&self) -> HashMap<String, Value> {
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
    async fn lines(&self, code: &str) -> Vec<(String, String)> {
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

/// A change a worker asked for.
#[derive(Clone, Debug)]
enum Op {
    Create {
        assignee: Option<&'static str>,
    },
    Assign(&'static str),
    /// The worker's agent joins the session (claiming the unassigned case).
    Join,
    CustomerJoin,
    Chat {
        role: &'static str,
        text: String,
    },
    Close,
}

#[derive(Debug)]
struct Step {
    op: Op,
    /// Its reply (or 2xx) arrived.
    acked: bool,
}

/// One case, as its worker made it: the worker's agent makes every change
/// of it, one at a time, so at most the last step lacks its answer.
#[derive(Debug)]
struct CaseLog {
    round: usize,
    agent: &'static str,
    /// Known once the creation was answered.
    code: Option<String>,
    steps: Vec<Step>,
}

/// What a case's steps imply.
#[derive(Clone, Debug, PartialEq)]
struct State {
    assignee: Option<String>,
    closed: bool,
    /// A seat was ever taken.
    seated: bool,
    lines: Vec<(String, String)>,
}

impl CaseLog {
    fn apply(&self, s: &mut State, op: &Op) {
        match op {
            Op::Create { assignee } => s.assignee = assignee.map(str::to_string),
            Op::Assign(to) => s.assignee = Some(to.to_string()),
            Op::Join => {
                s.assignee.get_or_insert_with(|| self.agent.to_string());
                s.seated = true;
            }
            Op::CustomerJoin => s.seated = true,
            Op::Chat { role, text } => s.lines.push((role.to_string(), text.clone())),
            Op::Close => s.closed = true,
        }
    }

    /// The state of the answered steps, and the state with the unanswered
    /// last step too (when there is one).
    fn states(&self) -> (State, Option<State>) {
        let mut s = State {
            assignee: None,
            closed: false,
            seated: false,
            lines: Vec::new(),
        };
        let mut beyond = None;
        for (k, step) in self.steps.iter().enumerate() {
            if step.acked {
                assert!(beyond.is_none(), "a step after an unanswered one: {self:?}");
                self.apply(&mut s, &step.op);
            } else {
                assert_eq!(k + 1, self.steps.len(), "{self:?}");
                let mut b = s.clone();
                self.apply(&mut b, &step.op);
                beyond = Some(b);
            }
        }
        (s, beyond)
    }

    fn acked(&self) -> State {
        self.states().0
    }
}

/// Whether a recovered case and its transcript show `s`.
fn shows(case: &Value, lines: &[(String, String)], s: &State) -> bool {
    let status = case["status"].as_str().unwrap();
    case["assignee"].as_str() == s.assignee.as_deref()
        && (status == "closed") == s.closed
        && (s.closed || status == if s.seated { "pending" } else { "new" })
        && lines == s.lines.as_slice()
}

/// One of three agents driving changes against the binary until it dies.
struct Worker {
    me: &'static str,
    token: &'static str,
    admin: bool,
    round: usize,
    addr: SocketAddr,
    api: Api,
    rng: StdRng,
    killed: Arc<AtomicBool>,
    logs: Vec<CaseLog>,
    /// Customer connections kept seated until the kill.
    customers: Vec<Link>,
    lines: u64,
}

impl Worker {
    /// `v`, after checking that a missing answer comes from the kill.
    fn alive<T>(&self, v: Option<T>, what: &str) -> Option<T> {
        if v.is_none() {
            assert!(
                self.killed.load(Ordering::SeqCst),
                "{}: {what} got no answer while the broker was running",
                self.me
            );
        }
        v
    }

    fn begin(&mut self, i: usize, op: Op) {
        self.logs[i].steps.push(Step { op, acked: false });
    }

    fn acked(&mut self, i: usize) {
        self.logs[i].steps.last_mut().unwrap().acked = true;
    }

    fn code(&self, i: usize) -> String {
        self.logs[i].code.clone().unwrap()
    }

    fn other_agent(&mut self, not: Option<&str>) -> &'static str {
        loop {
            let (id, _, _) = AGENTS[self.rng.random_range(0..AGENTS.len())];
            if Some(id) != not {
                return id;
            }
        }
    }

    async fn run(mut self) -> Vec<CaseLog> {
        let link = Link::agent(self.addr, self.token).await;
        let Some(mut agent) = self.alive(link, "hello") else {
            return self.logs;
        };
        while self.step(&mut agent).await.is_some() {}
        drop(self.customers);
        self.logs
    }

    async fn step(&mut self, agent: &mut Link) -> Option<()> {
        let roll = self.rng.random_range(0..100);
        if roll < 25 {
            let assignee = self
                .rng
                .random_bool(0.3)
                .then(|| AGENTS[self.rng.random_range(0..AGENTS.len())].0);
            self.create(agent, assignee).await?;
        } else if roll < 45 {
            match self.pick(|w, s| {
                !s.closed && (w.admin || s.assignee.as_deref().is_none_or(|a| a == w.me))
            }) {
                Some(i) => self.assign(agent, i).await?,
                None => {
                    self.create(agent, None).await?;
                }
            }
        } else if roll < 60 {
            match self.pick(|_, s| !s.closed) {
                Some(i) => self.close(agent, i).await?,
                None => {
                    self.create(agent, None).await?;
                }
            }
        } else {
            self.session(agent).await?;
        }
        Some(())
    }

    /// A random case of this worker whose answered state passes `ok`.
    fn pick(&mut self, ok: impl Fn(&Worker, &State) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.logs.len())
            .filter(|&i| self.logs[i].code.is_some() && ok(self, &self.logs[i].acked()))
            .collect();
        (!candidates.is_empty()).then(|| candidates[self.rng.random_range(0..candidates.len())])
    }

    async fn create(&mut self, agent: &mut Link, assignee: Option<&'static str>) -> Option<usize> {
        let i = self.logs.len();
        self.logs.push(CaseLog {
            round: self.round,
            agent: self.me,
            code: None,
            steps: vec![Step {
                op: Op::Create { assignee },
                acked: false,
            }],
        });
        let mut body = json!({
            "group": "support",
            "name": format!("{} round {} #{i}", self.me, self.round),
        });
        if let Some(a) = assignee {
            body["assignee"] = json!(a);
        }
        let case = if self.rng.random_bool(0.5) {
            body["type"] = json!("create_case");
            let r = agent.request(body).await;
            let r = self.alive(r, "create_case")?;
            assert_eq!(r["type"], "case", "{}: create_case: {r}", self.me);
            r["case"].clone()
        } else {
            let r = self
                .api
                .call(reqwest::Method::POST, "/v1/cases", self.token, Some(body))
                .await;
            let (status, case) = self.alive(r, "POST /v1/cases")?;
            assert_eq!(status, 201, "{}: POST /v1/cases: {case}", self.me);
            case
        };
        assert_eq!(case["assignee"].as_str(), assignee, "{case}");
        self.logs[i].code = Some(code_of(&case));
        self.acked(i);
        Some(i)
    }

    async fn assign(&mut self, agent: &mut Link, i: usize) -> Option<()> {
        let code = self.code(i);
        let current = self.logs[i].acked().assignee;
        let to = self.other_agent(current.as_deref());
        self.begin(i, Op::Assign(to));
        let case = if self.rng.random_bool(0.5) {
            let r = agent
                .request(json!({"type": "assign", "code": code, "assignee": to}))
                .await;
            let r = self.alive(r, "assign")?;
            assert_eq!(r["type"], "case", "{}: assign {code} to {to}: {r}", self.me);
            r["case"].clone()
        } else {
            let r = self
                .api
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/cases/{code}/assign"),
                    self.token,
                    Some(json!({"assignee": to})),
                )
                .await;
            let (status, case) = self.alive(r, "POST assign")?;
            assert_eq!(status, 200, "{}: assign {code} to {to}: {case}", self.me);
            case
        };
        assert_eq!(case["assignee"], to, "{case}");
        assert_eq!(case["assigned_by"], self.me, "{case}");
        self.acked(i);
        Some(())
    }

    async fn close(&mut self, agent: &mut Link, i: usize) -> Option<()> {
        let code = self.code(i);
        self.begin(i, Op::Close);
        let case = if self.rng.random_bool(0.5) {
            let r = agent.request(json!({"type": "close", "code": code})).await;
            let r = self.alive(r, "close")?;
            assert_eq!(r["type"], "case", "{}: close {code}: {r}", self.me);
            r["case"].clone()
        } else {
            let r = self
                .api
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/cases/{code}/close"),
                    self.token,
                    None,
                )
                .await;
            let (status, case) = self.alive(r, "POST close")?;
            assert_eq!(status, 200, "{}: close {code}: {case}", self.me);
            case
        };
        assert_eq!(case["status"], "closed", "{case}");
        assert_eq!(case["closed_by"], self.me, "{case}");
        self.acked(i);
        Some(())
    }

    /// A new case, the agent joins, a customer joins, a few chat lines both
    /// ways, and sometimes the agent closes it.
    async fn session(&mut self, agent: &mut Link) -> Option<()> {
        let i = self.create(agent, None).await?;
        let code = self.code(i);
        self.begin(i, Op::Join);
        let r = agent.request(json!({"type": "join", "code": code})).await;
        let r = self.alive(r, "join")?;
        assert_eq!(r["type"], "joined", "{}: join {code}: {r}", self.me);
        self.acked(i);

        let link = Link::customer(self.addr).await;
        let mut customer = self.alive(link, "customer hello")?;
        self.begin(i, Op::CustomerJoin);
        let r = customer
            .request(json!({"type": "join", "code": code, "name": "Ana"}))
            .await;
        let r = self.alive(r, "customer join")?;
        assert_eq!(r["type"], "joined", "customer join {code}: {r}");
        self.acked(i);

        for k in 0..self.rng.random_range(1..=4) {
            self.lines += 1;
            let text = format!("{} round {} line {}", self.me, self.round, self.lines);
            let (role, r) = if k % 2 == 0 {
                self.begin(
                    i,
                    Op::Chat {
                        role: "agent",
                        text: text.clone(),
                    },
                );
                let r = agent
                    .request(json!({"type": "chat", "code": code, "text": text}))
                    .await;
                ("agent", r)
            } else {
                self.begin(
                    i,
                    Op::Chat {
                        role: "customer",
                        text: text.clone(),
                    },
                );
                let r = customer
                    .request(json!({"type": "chat", "text": text}))
                    .await;
                ("customer", r)
            };
            let r = self.alive(r, "chat")?;
            assert_eq!(r["type"], "sent", "{role} chat in {code}: {r}");
            self.acked(i);
        }
        if self.rng.random_bool(0.3) {
            self.begin(i, Op::Close);
            let r = agent.request(json!({"type": "close", "code": code})).await;
            let r = self.alive(r, "close")?;
            assert_eq!(r["type"], "case", "{}: close {code}: {r}", self.me);
            self.acked(i);
        } else {
            self.customers.push(customer);
        }
        Some(())
    }
}

/// Counts of one round's check.
#[derive(Default, Debug)]
struct Tally {
    acked_creates: usize,
    found_creates: usize,
    acked_changes: usize,
    acked_lines: usize,
    found_lines: usize,
    /// Cases showing their unanswered last step too.
    beyond: usize,
    /// Cases whose creation was not answered, found anyway.
    unanswered_found: usize,
    unanswered_creates: usize,
}

/// Checks a restarted broker against every log. `fresh` is the round whose
/// cases are seen for the first time since their kill: each must show its
/// answered steps, possibly with its unanswered last one. Cases seen in an
/// earlier check must not have changed since; with `full`, transcripts of
/// every case are checked again.
async fn check(
    api: &Api,
    logs: &[CaseLog],
    fresh: usize,
    full: bool,
    known: &mut HashMap<String, Value>,
) -> Tally {
    let cases = api.all_cases().await;
    let mut tally = Tally::default();
    let ours: HashSet<&str> = logs.iter().filter_map(|l| l.code.as_deref()).collect();
    for log in logs {
        let answered = matches!(log.steps.first(), Some(Step { acked: true, .. }));
        if log.round == fresh {
            if answered {
                tally.acked_creates += 1;
                tally.acked_changes += log.steps[1..]
                    .iter()
                    .filter(|s| s.acked && !matches!(s.op, Op::Chat { .. }))
                    .count();
                tally.acked_lines += log
                    .steps
                    .iter()
                    .filter(|s| s.acked && matches!(s.op, Op::Chat { .. }))
                    .count();
            } else {
                tally.unanswered_creates += 1;
            }
        }
        let Some(code) = &log.code else { continue };
        let case = cases.get(code).unwrap_or_else(|| {
            panic!(
                "round {}: the answered creation of {code} was lost; {log:?}",
                log.round
            )
        });
        if log.round != fresh && !full {
            continue;
        }
        let lines = api.lines(code).await;
        let (acked, beyond) = log.states();
        let ok = shows(case, &lines, &acked);
        let further = !ok && beyond.as_ref().is_some_and(|b| shows(case, &lines, b));
        assert!(
            ok || further,
            "round {}: {code} lost an answered change.\nanswered: {acked:?}\nwith the unanswered step: {beyond:?}\nrecovered: {case}\ntranscript: {lines:?}\nsteps: {log:?}",
            log.round
        );
        assert_eq!(case["created_by"], log.agent, "{case}");
        assert_eq!(
            case["customer_connected"], false,
            "nobody is connected: {case}"
        );
        assert_eq!(
            case["supporter_connected"], false,
            "nobody is connected: {case}"
        );
        match case["assignee"].as_str() {
            Some(_) => assert_eq!(case["assigned_by"], log.agent, "{case}"),
            None => assert_eq!(case["assigned_by"], Value::Null, "{case}"),
        }
        if case["status"] == "closed" {
            assert_eq!(case["closed_by"], log.agent, "{case}");
        }
        if log.round == fresh {
            tally.found_creates += 1;
            tally.found_lines += lines.len();
            tally.beyond += usize::from(further);
        }
    }
    for (code, case) in &cases {
        match known.get(code) {
            Some(before) => assert_eq!(case, before, "{code} changed after it was checked"),
            None => {
                if !ours.contains(code.as_str()) {
                    // A creation whose answer was lost in the kill: nothing
                    // else was asked of it.
                    assert_eq!(case["status"], "new", "{case}");
                    assert_eq!(api.lines(code).await, [], "{code}");
                    tally.unanswered_found += 1;
                }
                known.insert(code.clone(), case.clone());
            }
        }
    }
    assert!(
        tally.unanswered_found <= tally.unanswered_creates,
        "round {fresh}: {} unknown cases, {} unanswered creations: {tally:?}",
        tally.unanswered_found,
        tally.unanswered_creates
    );
    assert_eq!(known.len(), cases.len(), "a case vanished");
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_acknowledged_change() {
    let scratch = Scratch::new("sigkill");
    let config = scratch.file("casebroker.toml");
    let seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("sigkill_loses_no_acknowledged_change: seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut logs: Vec<CaseLog> = Vec::new();
    let mut known: HashMap<String, Value> = HashMap::new();
    // The dashboard's position: the epoch of round 0 and the last seq seen.
    let mut position: Option<(String, u64)> = None;

    for round in 0..=ROUNDS {
        std::fs::write(&config, binary_config(round)).unwrap();
        let mut broker = Process::spawn(&config, &scratch.data());
        let addr = broker.addr().await;
        let api = Api::new(addr);
        let mut dash = Link::agent(addr, ALICE).await.expect("dashboard hello");
        let (epoch, mut seq) = match position.take() {
            None => {
                let snap = dash
                    .request(json!({"type": "subscribe"}))
                    .await
                    .expect("subscribe");
                assert_eq!(snap["type"], "snapshot", "{snap}");
                (snap["epoch"].as_str().unwrap().to_string(), seq_of(&snap))
            }
            Some((epoch, seq)) => {
                let tally = check(&api, &logs, round - 1, round == ROUNDS, &mut known).await;
                assert_eq!(tally.found_creates, tally.acked_creates);
                // The dashboard resumes from the last event it saw.
                let r = dash
                    .request(json!({"type": "subscribe", "resume": {"epoch": epoch, "seq": seq}}))
                    .await
                    .expect("subscribe with resume");
                assert_eq!(
                    r["type"], "resumed",
                    "round {round}: resuming from seq {seq}, the last seen before the kill: {r}"
                );
                assert_eq!(r["epoch"], epoch.as_str(), "the epoch changed: {r}");
                let head = seq_of(&r);
                assert!(head >= seq, "{r}");
                let mut at = seq;
                while at < head {
                    let m = dash.recv().await.expect("replayed events");
                    if m["type"] == "agent" {
                        continue;
                    }
                    assert_eq!(m["type"], "event", "{m}");
                    assert_eq!(m["epoch"], epoch.as_str(), "{m}");
                    assert_eq!(seq_of(&m), at + 1, "{m}");
                    at += 1;
                }
                eprintln!(
                    "round {}: acknowledged {} creates, {} other changes, {} chat lines; recovered {} creates, {} chat lines and every acknowledged change, plus {} of {} unanswered creates and {} unanswered steps; resumed from seq {seq} with {} events replayed",
                    round - 1,
                    tally.acked_creates,
                    tally.acked_changes,
                    tally.acked_lines,
                    tally.found_creates,
                    tally.found_lines,
                    tally.unanswered_found,
                    tally.unanswered_creates,
                    tally.beyond,
                    head - seq,
                );
                (epoch, head)
            }
        };
        if round == ROUNDS {
            break;
        }

        let killed = Arc::new(AtomicBool::new(false));
        let last = Arc::new(AtomicU64::new(seq));
        let reader = {
            let (epoch, last) = (epoch.clone(), last.clone());
            tokio::spawn(async move {
                while let Some(m) = dash.recv().await {
                    if m["type"] != "event" {
                        continue;
                    }
                    assert_eq!(m["epoch"], epoch.as_str(), "{m}");
                    let prev = last.load(Ordering::SeqCst);
                    assert_eq!(seq_of(&m), prev + 1, "events in order: {m}");
                    last.store(prev + 1, Ordering::SeqCst);
                }
            })
        };
        let workers: Vec<_> = AGENTS
            .iter()
            .enumerate()
            .map(|(k, &(me, token, admin))| {
                let worker = Worker {
                    me,
                    token,
                    admin,
                    round,
                    addr,
                    api: api.clone(),
                    rng: StdRng::seed_from_u64(rng.random()),
                    killed: killed.clone(),
                    logs: Vec::new(),
                    customers: Vec::new(),
                    lines: (round * 1000 + k * 100_000) as u64,
                };
                tokio::spawn(worker.run())
            })
            .collect();
        let delay = Duration::from_millis(rng.random_range(50..=300));
        tokio::time::sleep(delay).await;
        killed.store(true, Ordering::SeqCst);
        broker.kill();
        for w in workers {
            let round_logs = tokio::time::timeout(WAIT * 2, w)
                .await
                .expect("workers end after the kill")
                .expect("worker");
            logs.extend(round_logs);
        }
        tokio::time::timeout(WAIT * 2, reader)
            .await
            .expect("the dashboard ends after the kill")
            .expect("dashboard");
        seq = last.load(Ordering::SeqCst);
        position = Some((epoch, seq));
        drop(broker);
    }
    eprintln!(
        "sigkill_loses_no_acknowledged_change: {ROUNDS} rounds, {} cases, in {:?}",
        known.len(),
        started.elapsed()
    );
}
