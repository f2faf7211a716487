//! The worker processes: [`spawn_worker`] starts this program (or
//! `--worker-exe`) with the hidden `worker` subcommand and one share of
//! the connections, and [`worker`] is what that subcommand does: open the
//! share, say so on stdout, and hold it until stdin closes or its time is
//! up.

use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use super::connections::{Kept, Mix, open_local};
use super::holder::HoldOpts;
use crate::target::Target;

pub(super) fn spawn_worker(opts: &HoldOpts<'_>, share: Mix, index: usize) -> anyhow::Result<Child> {
    let exe = match opts.worker_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("path of this program")?,
    };
    let mut cmd = Command::new(&exe);
    cmd.arg("worker")
        .arg("--url")
        .arg(opts.target.url())
        .arg("--source-addrs")
        .arg(opts.target.source_addrs().to_string())
        .arg("--source-offset")
        .arg((index * 7).to_string())
        .arg("--token")
        .arg(opts.token)
        .arg("--customers")
        .arg(share.customers.to_string())
        .arg("--dashboards")
        .arg(share.dashboards.to_string())
        .arg("--max-seconds")
        .arg(opts.max_seconds.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd.spawn()
        .with_context(|| format!("starting worker {}", exe.display()))
}

/// The hidden `worker` subcommand: open a share, say `ready OK FAILED
/// [first failure]` on stdout, hold until stdin closes or `max_seconds`.
pub async fn worker(target: Target, token: &str, mix: Mix, max_seconds: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(max_seconds);
    let (held, failures) = open_local(&target, token, mix, None).await;
    let mut line = format!("ready {} {}", held.len(), failures.len());
    if let Some(f) = failures.first() {
        line.push(' ');
        line.push_str(&f.replace('\n', " "));
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    let wait_eof = async {
        while let Ok(n) = stdin.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let kept = Kept::new(held);
    tokio::select! {
        _ = wait_eof => {}
        _ = tokio::time::sleep_until(deadline.into()) => {}
    }
    kept.close().await;
    Ok(())
}
