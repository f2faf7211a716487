//! The baselines `fanout --baseline KIND` starts itself: a child process on
//! a free loopback port, up once it prints its `listening` line, killed
//! (and waited for) when the [`Baseline`] guard is dropped, whether the run
//! ends normally or with an error.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};

/// How long a baseline may take to print its `listening` line.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of the child's stderr kept for an error message.
const TAIL: usize = 20;

/// Which baseline server to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// `casebroker-loadtest bare`: tokio-tungstenite, one serialisation per
    /// event, one flush per writer wake-up.
    Bare,
    /// `baseline/server.js` on Node.js `ws`, one write per event and
    /// subscriber.
    Node,
    /// `baseline/server.js --cork`: each subscriber's socket corked for the
    /// rest of the event-loop turn, so a turn's events leave in one write.
    NodeCorked,
}

impl Kind {
    /// The name in the table and the JSON (`baseline.kind`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bare => "bare",
            Kind::Node => "node",
            Kind::NodeCorked => "node-corked",
        }
    }

    /// True for the corked Node.js baseline.
    pub fn corked(self) -> bool {
        self == Kind::NodeCorked
    }

    /// What the server is, for the table.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Bare => "tokio-tungstenite, one flush per wake-up, not corked",
            Kind::Node => "Node.js ws, not corked",
            Kind::NodeCorked => "Node.js ws, corked per event-loop turn",
        }
    }
}

/// The directory of the Node.js baseline (`loadtest/baseline`).
pub fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("baseline")
}

/// A free port on 127.0.0.1: bound, read, released.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A running baseline server; killed and reaped when dropped.
pub struct Baseline {
    kind: Kind,
    port: u16,
    child: Child,
    /// Held open: the child stops when it closes (`--stop-on-eof`), so it
    /// goes even if this process dies without dropping the guard.
    _stdin: Option<ChildStdin>,
}

impl Baseline {
    /// Starts `kind` on a free port and waits for its `listening` line.
    /// `exe` is the program `bare` runs (default: this one).
    pub async fn start(kind: Kind, exe: Option<PathBuf>) -> anyhow::Result<Baseline> {
        let port = free_port()?;
        let port_arg = port.to_string();
        let mut cmd = match kind {
            Kind::Bare => {
                let exe = match exe {
                    Some(exe) => exe,
                    None => std::env::current_exe().context("this program's path")?,
                };
                let mut c = Command::new(exe);
                c.args(["bare", "--port", &port_arg]);
                c
            }
            Kind::Node | Kind::NodeCorked => {
                let dir = node_dir();
                let server = dir.join("server.js");
                if !server.is_file() {
                    bail!("no Node.js baseline at {}", server.display());
                }
                if !dir.join("node_modules").join("ws").is_dir() {
                    bail!(
                        "{}/node_modules is missing: run `npm ci` in {} first",
                        dir.display(),
                        dir.display()
                    );
                }
                let mut c = Command::new("node");
                c.arg(&server).args(["--port", &port_arg]);
                if kind.corked() {
                    c.arg("--cork");
                }
                c
            }
        };
        cmd.arg("--stop-on-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && kind != Kind::Bare => {
                bail!(
                    "`node` is not on PATH: the {} baseline needs Node.js (>= 20) and \
                     `npm ci` in {}",
                    kind.name(),
                    node_dir().display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("start the {} baseline", kind.name())),
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let stdin = child.stdin.take();
        let guard = Baseline {
            kind,
            port,
            child,
            _stdin: stdin,
        };
        let (tail, tail_reader) = keep_tail(stderr);
        let listening = first_listening_line(stdout);
        let outcome = tokio::time::timeout(START_TIMEOUT, listening).await;
        let why = match outcome {
            Ok(Ok(Some(_))) => return Ok(guard),
            Ok(Ok(None)) | Ok(Err(_)) => "exited before it was listening".to_string(),
            Err(_) => format!("printed no listening line within {START_TIMEOUT:?}"),
        };
        drop(guard);
        // The child is gone and its stderr closed: the reader ends.
        let _ = tail_reader.join();
        let tail = tail.lock().expect("tail lock");
        let tail = tail.iter().cloned().collect::<Vec<_>>().join("\n");
        bail!("the {} baseline {why}; its stderr:\n{tail}", kind.name())
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Its WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the child's stdout on a thread: the first line that says
/// `listening` (or `None` at its end), then the rest, discarded, so the
/// child never blocks on a full pipe.
fn first_listening_line(
    stdout: impl Read + Send + 'static,
) -> tokio::sync::oneshot::Receiver<Option<String>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("listening")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(Some(line));
            }
        }
        if let Some(tx) = tx.take() {
            let _ = tx.send(None);
        }
    });
    rx
}

/// The last lines of a child's stderr.
type Tail = Arc<Mutex<VecDeque<String>>>;

/// Keeps the last lines of the child's stderr, read on a thread.
fn keep_tail(stderr: impl Read + Send + 'static) -> (Tail, std::thread::JoinHandle<()>) {
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let keep = tail.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut t = keep.lock().expect("tail lock");
            if t.len() == TAIL {
                t.pop_front();
            }
            t.push_back(line);
        }
    });
    (tail, reader)
}
