//! The broker binary as its own process: started on a config text (or the
//! demo) in a directory of its own, its output (stdout and stderr)
//! collected line by line, its address read from its log, signals sent
//! with `kill`, its exit awaited with a deadline.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{TempDir, WAIT};

/// A running `casebroker` process, killed when dropped.
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The lines printed on stderr alone.
    errors: Arc<Mutex<Vec<String>>>,
    /// The process's working directory (its config file is there).
    pub dir: TempDir,
}

impl Process {
    /// Starts the binary in a new directory with `config` (written to
    /// `casebroker.toml` and passed with `--config`; `None` runs the
    /// demo), `args` after it, and `env`.
    pub fn start(config: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Process {
        Process::start_in(TempDir::new("process"), config, args, env)
    }

    /// As [`Process::start`], in `dir` (kept as it is: a data directory in
    /// it survives a restart).
    pub fn start_in(
        dir: TempDir,
        config: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_casebroker"));
        if let Some(text) = config {
            let path = dir.path().join("casebroker.toml");
            std::fs::write(&path, text).expect("write the config");
            cmd.arg("--config").arg(path);
        }
        cmd.args(args)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the binary");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for (pipe, apart) in [(out, None), (err, Some(errors.clone()))] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(apart) = &apart {
                        apart.lock().unwrap().push(line.clone());
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Process {
            child,
            lines,
            errors,
            dir,
        }
    }

    /// Everything printed so far, one line each.
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// What was printed on stderr so far, one line each.
    pub fn stderr(&self) -> String {
        self.errors.lock().unwrap().join("\n")
    }

    /// Waits (within twice the usual wait) for a printed line containing
    /// `text`; returns it.
    pub async fn line(&self, text: &str) -> String {
        let until = Instant::now() + WAIT * 2;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            assert!(
                Instant::now() < until,
                "no line with {text:?} within {:?}; output:\n{}",
                WAIT * 2,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address from the "casebroker listening" log line (text format).
    pub async fn listening(&self) -> SocketAddr {
        let line = self.line("casebroker listening").await;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line:?}"));
        addr.parse().expect("a socket address")
    }

    /// The process's resident memory, in bytes (`VmRSS`).
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// Sends a signal by name (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the process to exit, within `limit`.
    pub async fn exit(&mut self, limit: Duration) -> ExitStatus {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the child") {
                // Let the readers take the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return status;
            }
            assert!(
                Instant::now() < until,
                "the process did not exit within {limit:?}; output:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the process with SIGKILL (nothing flushed, nothing said) and
    /// gives its directory back, for a restart on what it left.
    pub async fn kill9(mut self) -> TempDir {
        self.signal("KILL");
        self.exit(WAIT).await;
        std::mem::replace(&mut self.dir, TempDir::new("process"))
    }

    /// Stops the process with SIGTERM and checks it exits cleanly; gives
    /// its directory back (for a restart on the same data).
    pub async fn stop(mut self) -> TempDir {
        self.signal("TERM");
        let status = self.exit(WAIT * 3).await;
        assert!(status.success(), "{status}; output:\n{}", self.output());
        std::mem::replace(&mut self.dir, TempDir::new("process"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
