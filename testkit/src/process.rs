//! The broker binary as its own process: started with a config text in a
//! directory of its own (or as given, in the current directory), its output
//! (stdout and stderr) collected line by line, its address read from its
//! log (text or JSON format), signals sent with `kill`, its exit awaited
//! with a deadline. The integration tests and the load tester's `crash`
//! scenario start it this way.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::WAIT;

/// Lines of output kept (the oldest go first): a long run cannot grow
/// without bound, and no test prints nearly this many.
const KEPT_LINES: usize = 100_000;

/// A running `casebroker` process, killed when dropped.
pub struct Process {
    child: Mutex<Child>,
    output: Arc<Mutex<Output>>,
    /// The process's working directory (its config file is there); `None`
    /// when it runs in the current directory.
    dir: Option<TempDir>,
}

#[derive(Default)]
struct Output {
    /// stdout and stderr, as they came.
    lines: VecDeque<String>,
    /// stderr alone.
    errors: VecDeque<String>,
}

fn keep(lines: &mut VecDeque<String>, line: String) {
    if lines.len() == KEPT_LINES {
        lines.pop_front();
    }
    lines.push_back(line);
}

impl Process {
    /// Starts `bin` with `args` and `env` (`RUST_LOG` is removed unless
    /// `env` sets it), in `dir` when given, else in the current directory.
    pub fn spawn<I, S>(
        bin: &Path,
        dir: Option<TempDir>,
        args: I,
        env: &[(&str, &str)],
    ) -> std::io::Result<Process>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &dir {
            cmd.current_dir(dir.path());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let output = Arc::new(Mutex::new(Output::default()));
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().expect("piped"));
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().expect("piped"));
        for (pipe, is_err) in [(out, false), (err, true)] {
            let output = output.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut o = output.lock().expect("output lock");
                    if is_err {
                        keep(&mut o.errors, line.clone());
                    }
                    keep(&mut o.lines, line);
                }
            });
        }
        Ok(Process {
            child: Mutex::new(child),
            output,
            dir,
        })
    }

    /// Starts `bin` in a new directory with `config` (written to
    /// `casebroker.toml` and passed with `--config`; `None` runs the
    /// demo), `args` after it, and `env`. Panics when it cannot start.
    pub fn start(
        bin: impl AsRef<Path>,
        config: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Process {
        Process::start_in(bin, TempDir::new("process"), config, args, env)
    }

    /// As [`Process::start`], in `dir` (kept as it is: a data directory in
    /// it survives a restart).
    pub fn start_in(
        bin: impl AsRef<Path>,
        dir: TempDir,
        config: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Process {
        let mut all: Vec<&OsStr> = Vec::new();
        let path = dir.path().join("casebroker.toml");
        if let Some(text) = config {
            std::fs::write(&path, text).expect("write the config");
            all.extend([OsStr::new("--config"), path.as_os_str()]);
        }
        all.extend(args.iter().map(OsStr::new));
        let bin = bin.as_ref();
        Process::spawn(bin, Some(dir), all, env)
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()))
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.lock().expect("child lock").id()
    }

    /// Everything printed so far, one line each.
    pub fn output(&self) -> String {
        let o = self.output.lock().expect("output lock");
        Vec::from(o.lines.clone()).join("\n")
    }

    /// What was printed on stderr so far, one line each.
    pub fn stderr(&self) -> String {
        let o = self.output.lock().expect("output lock");
        Vec::from(o.errors.clone()).join("\n")
    }

    /// The last `n` lines printed, one line each.
    pub fn tail(&self, n: usize) -> String {
        let o = self.output.lock().expect("output lock");
        let skip = o.lines.len().saturating_sub(n);
        let last: Vec<&str> = o.lines.iter().skip(skip).map(String::as_str).collect();
        last.join("\n")
    }

    /// The exit status once the process has ended.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .expect("child lock")
            .try_wait()
            .ok()
            .flatten()
    }

    /// Waits within `limit` for a printed line that `find` takes a value
    /// from; an error when none comes or the process exits first.
    async fn find_line<T>(
        &self,
        what: &str,
        limit: Duration,
        find: impl Fn(&str) -> Option<T>,
    ) -> Result<T, String> {
        let until = Instant::now() + limit;
        let search = || {
            let output = self.output.lock().expect("output lock");
            output.lines.iter().find_map(|l| find(l))
        };
        loop {
            if let Some(v) = search() {
                return Ok(v);
            }
            if let Some(status) = self.exited() {
                // Let the readers take the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return search().ok_or_else(|| {
                    format!(
                        "the process exited ({status}) before printing {what}; output:\n{}",
                        self.output()
                    )
                });
            }
            if Instant::now() >= until {
                return Err(format!(
                    "no {what} within {limit:?}; output:\n{}",
                    self.output()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (within twice the usual wait) for a printed line containing
    /// `text`; returns it.
    pub async fn line(&self, text: &str) -> String {
        self.find_line(&format!("line with {text:?}"), WAIT * 2, |l| {
            l.contains(text).then(|| l.to_string())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The address from the "casebroker listening" log line (text or JSON
    /// format), within `limit`; an error when the process exits first.
    pub async fn listening_within(&self, limit: Duration) -> Result<SocketAddr, String> {
        self.find_line("listening address", limit, listening_addr)
            .await
    }

    /// The address from the "casebroker listening" log line, within twice
    /// the usual wait.
    pub async fn listening(&self) -> SocketAddr {
        self.listening_within(WAIT * 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The process's resident memory, in bytes (`VmRSS`).
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.id()))
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
            .arg(self.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the process to exit, within `limit`.
    pub async fn wait_exit(&self, limit: Duration) -> Result<ExitStatus, String> {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                // Let the readers take the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Ok(status);
            }
            if Instant::now() >= until {
                return Err(format!(
                    "the process did not exit within {limit:?}; output:\n{}",
                    self.output()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit, within `limit`; panics when it does
    /// not.
    pub async fn exit(&self, limit: Duration) -> ExitStatus {
        self.wait_exit(limit)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// SIGKILL (nothing flushed, nothing said), and waits within `limit`
    /// until the process is gone (its lock on a data directory with it).
    pub async fn kill(&self, limit: Duration) -> Result<ExitStatus, String> {
        let killed = self.child.lock().expect("child lock").kill();
        // An error from a process already gone is no failure.
        if let Err(e) = killed
            && self.exited().is_none()
        {
            return Err(format!("SIGKILL: {e}"));
        }
        self.wait_exit(limit).await
    }

    /// Kills the process with SIGKILL and gives its directory back, for a
    /// restart on what it left.
    pub async fn kill9(mut self) -> TempDir {
        self.kill(WAIT).await.unwrap_or_else(|e| panic!("{e}"));
        self.take_dir()
    }

    /// Stops the process with SIGTERM and checks it exits cleanly; gives
    /// its directory back (for a restart on the same data).
    pub async fn stop(mut self) -> TempDir {
        self.signal("TERM");
        let status = self.exit(WAIT * 3).await;
        assert!(status.success(), "{status}; output:\n{}", self.output());
        self.take_dir()
    }

    fn take_dir(&mut self) -> TempDir {
        self.dir
            .take()
            .expect("a process started in a directory of its own")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The address of a "casebroker listening" log line: `addr=` in the text
/// format, `fields.addr` in the JSON one.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("casebroker listening") {
        return None;
    }
    if let Ok(v) = serde_json::from_str::<Value>(line) {
        if v["fields"]["message"] != "casebroker listening" {
            return None;
        }
        return v["fields"]["addr"].as_str()?.parse().ok();
    }
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))?
        .parse()
        .ok()
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system's temporary folder, named
    /// after `what`.
    pub fn new(what: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("casebroker-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_address_is_read_in_either_log_format() {
        let text = "2026-01-01T00:00:00Z  INFO casebroker: casebroker listening addr=127.0.0.1:4321 version=0.1.0";
        assert_eq!(
            listening_addr(text),
            Some("127.0.0.1:4321".parse().unwrap())
        );
        let json = r#"{"timestamp":"x","level":"INFO","fields":{"message":"casebroker listening","addr":"127.0.0.1:4322"}}"#;
        assert_eq!(
            listening_addr(json),
            Some("127.0.0.1:4322".parse().unwrap())
        );
        assert_eq!(listening_addr("casebroker starting addr=127.0.0.1:1"), None);
    }
}
