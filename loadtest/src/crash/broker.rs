//! The broker process of the crash scenario: the casebroker binary started
//! (by `casebroker_testkit`'s [`Process`]) on the data directory and a
//! free loopback port, ready once it has logged its address and answers
//! `/healthz`; SIGKILLed, and its last lines of output kept for error
//! messages.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use casebroker_testkit::Process;

use super::CrashOpts;
use crate::http::Http;

/// How long a broker may take from its start to answering `/healthz`.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a SIGKILLed broker may take to be gone.
const KILL_LIMIT: Duration = Duration::from_secs(10);
/// Lines of the broker's output shown in error messages.
const TAIL_LINES: usize = 30;

/// A broker process; SIGKILLed when dropped, so no run leaves one behind.
pub(super) struct Broker {
    process: Process,
    pub(super) addr: SocketAddr,
}

impl Broker {
    /// Starts the broker and waits until it answers `GET /healthz` with 200.
    /// Returns it and the time from the start to that answer.
    pub(super) async fn start(opts: &CrashOpts, data: &Path) -> anyhow::Result<(Broker, Duration)> {
        let started = Instant::now();
        let mut args = vec![
            "--config".as_ref(),
            opts.config.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--log-format".as_ref(),
            "json".as_ref(),
        ];
        if opts.in_memory {
            args.push("--in-memory".as_ref());
        } else {
            args.extend(["--data-dir".as_ref(), data.as_os_str()]);
        }
        let env = [("RUST_LOG", "info"), ("NO_COLOR", "1")];
        let process = Process::spawn(&opts.broker, None, args, &env)
            .with_context(|| format!("cannot start {}", opts.broker.display()))?;
        let mut broker = Broker {
            process,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = started + START_LIMIT;
        // The address, from the "casebroker listening" log line.
        broker.addr = broker
            .process
            .listening_within(START_LIMIT)
            .await
            .map_err(|e| anyhow!("the broker is not listening: {e}"))?;
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
        self.process.exited()
    }

    /// SIGKILL, and wait until the process is gone (its lock on the data
    /// directory with it).
    pub(super) async fn kill(&mut self) -> anyhow::Result<()> {
        self.process
            .kill(KILL_LIMIT)
            .await
            .map(drop)
            .map_err(|e| anyhow!("the broker did not end within {KILL_LIMIT:?} of SIGKILL: {e}"))
    }

    /// Its last lines of output, for an error message.
    pub(super) fn output(&self) -> String {
        let tail = self.process.tail(TAIL_LINES);
        if tail.is_empty() {
            return "it wrote nothing".into();
        }
        format!("its last output:\n{tail}")
    }
}
