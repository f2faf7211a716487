//! Durability: what a broker with a data directory keeps across a restart
//! (cases with their fields, assignments and transcripts, resume tokens,
//! each company's epoch, seq and event history), what it does at start
//! (seats held at the stop are left, cases whose TTL passed meanwhile
//! expire), the directory's lock against a second broker, `in_memory`,
//! and a SIGKILL at a random moment that loses no acknowledged change.

#[path = "durability/journal.rs"]
mod journal;
#[path = "durability/restart.rs"]
mod restart;
#[path = "durability/sigkill.rs"]
mod sigkill;
#[path = "durability/sigkill_clients.rs"]
mod sigkill_clients;
#[path = "durability/sigkill_worker.rs"]
mod sigkill_worker;
#[path = "durability/start.rs"]
mod start;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use casebroker::Config;
use serde_json::{Value, json};

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
