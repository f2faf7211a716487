//! The broker process of the crash scenario: starting the casebroker
//! binary on the data directory and a free loopback port, waiting for it
//! to log its address and answer `/healthz`, SIGKILLing it, and keeping its
//! last lines of output for error messages.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::CrashOpts;
use crate::http::Http;

/// How long a broker may take from its start to answering `/healthz`.
const START_LIMIT: Duration = Duration::from_secs(60);
/// Lines of the broker's output kept for error messages.
const TAIL_LINES: usize = 30;

/// A broker process; SIGKILLed when dropped, so no run leaves one behind.
pub(super) struct Broker {
    child: Child,
    pub(super) addr: SocketAddr,
    /// The last lines it wrote (stdout and stderr).
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Broker {
    /// Starts the broker and waits until it answers `GET /healthz` with 200.
    /// Returns it and the time from the start to that answer.
    pub(super) async fn start(opts: &CrashOpts, data: &Path) -> anyhow::Result<(Broker, Duration)> {
        let started = Instant::now();
        let mut cmd = Command::new(&opts.broker);
        cmd.arg("--config").arg(&opts.config).args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ]);
        if opts.in_memory {
            cmd.arg("--in-memory");
        } else {
            cmd.arg("--data-dir").arg(data);
        }
        cmd.env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", opts.broker.display()))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, mut listening) = tokio::sync::mpsc::unbounded_channel::<String>();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(read_log(out, tail.clone(), tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(read_log(err, tail.clone(), tx));
        }
        let mut broker = Broker {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tail,
        };
        let deadline = started + START_LIMIT;
        // The address, from the "casebroker listening" log line.
        loop {
            if let Some(status) = broker.exited() {
                bail!(
                    "the broker exited while starting ({status}); {}",
                    broker.output()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the broker logged no address within {START_LIMIT:?}; {}",
                    broker.output()
                );
            }
            match tokio::time::timeout(Duration::from_millis(20), listening.recv()).await {
                Ok(Some(addr)) => {
                    broker.addr = addr
                        .parse()
                        .with_context(|| format!("the broker logged the address {addr:?}"))?;
                    break;
                }
                Ok(None) | Err(_) => continue,
            }
        }
        // Accepting: /healthz answers.
        let mut http = Http::new(broker.addr);
        loop {
            if let Ok(r) = http.call("GET", "/healthz", None, None).await
                && r.status == 200
            {
                break;
            }
            if let Some(status) = broker.exited() {
                bail!(
                    "the broker exited while starting ({status}); {}",
                    broker.output()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the broker did not answer /healthz within {START_LIMIT:?}; {}",
                    broker.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok((broker, started.elapsed()))
    }

    pub(super) fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// The exit status once the process has ended.
    pub(super) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, and wait until the process is gone (its lock on the data
    /// directory with it).
    pub(super) async fn kill(&mut self) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(10), self.child.kill())
            .await
            .context("the broker did not end within 10 s of SIGKILL")?
            .context("SIGKILL")
    }

    /// Its last lines of output, for an error message.
    pub(super) fn output(&self) -> String {
        let tail = self.tail.lock().expect("log tail lock");
        if tail.is_empty() {
            return "it wrote nothing".into();
        }
        let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
        format!("its last output:\n{}", lines.join("\n"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Reads one of the broker's pipes to its end: keeps the last lines and
/// sends the listening address when it is logged.
async fn read_log(
    pipe: impl tokio::io::AsyncRead + Unpin,
    tail: Arc<Mutex<VecDeque<String>>>,
    addr: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["fields"]["message"] == "casebroker listening"
            && let Some(a) = v["fields"]["addr"].as_str()
        {
            let _ = addr.send(a.to_string());
        }
        let mut tail = tail.lock().expect("log tail lock");
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}
