//! Holding connections: [`hold`] opens a mix, as much of it as this
//! process has room for here and the rest in worker processes, waiting for
//! each worker to say it is ready; [`Holder`] counts what was opened and
//! what failed, and releases it all at the end.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use super::connections::{Kept, Mix, open_local};
use super::worker::spawn_worker;
use crate::report::Progress;
use crate::target::Target;

/// Sockets one process holds by default: under the 20,000 open files a
/// process may have here, with room for everything else.
pub const PER_PROCESS: usize = 15_000;
/// How long a worker may take to open its share.
const WORKER_READY: Duration = Duration::from_secs(300);

/// Connections held open: some here, the rest in worker processes.
pub struct Holder {
    local: Kept,
    children: Vec<Child>,
    pub opened: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
}

/// Options for [`hold`].
pub struct HoldOpts<'a> {
    pub target: &'a Target,
    pub token: &'a str,
    pub mix: Mix,
    /// Sockets this process holds itself; the rest go to workers.
    pub local_room: usize,
    pub per_process: usize,
    pub worker_exe: &'a Option<PathBuf>,
    /// Workers exit by themselves after this long.
    pub max_seconds: u64,
}

/// Opens and holds the connections of `opts.mix`.
pub async fn hold(opts: HoldOpts<'_>, bar: &Progress) -> anyhow::Result<Holder> {
    bar.phase("connecting", opts.mix.total() as u64);
    let mut shares = opts.mix.split(opts.per_process).into_iter();
    let mut remote = Vec::new();
    let local = match opts.local_room {
        0 => Mix::default(),
        room => {
            let first = shares.next().unwrap_or_default();
            let mut rest = first.split(room).into_iter();
            let mine = rest.next().unwrap_or_default();
            remote.extend(rest);
            mine
        }
    };
    remote.extend(shares);
    let mut children = Vec::new();
    for (i, share) in remote.iter().enumerate() {
        children.push(spawn_worker(&opts, *share, i + 1)?);
    }
    let (local_ws, failures) = open_local(opts.target, opts.token, local, Some(bar)).await;
    let mut holder = Holder {
        opened: local_ws.len() as u64,
        failed: failures.len() as u64,
        first_failure: failures.into_iter().next(),
        local: Kept::new(local_ws),
        children: Vec::new(),
    };
    for mut child in children {
        let stdout = child.stdout.take().context("worker stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(WORKER_READY, lines.next_line())
            .await
            .context("a worker did not open its connections in time")?
            .context("reading a worker")?
            .unwrap_or_default();
        let mut parts = line.split_whitespace();
        let (Some("ready"), Some(ok), Some(bad)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("a worker failed: {line:?}");
        };
        let ok: u64 = ok.parse().context("worker count")?;
        let bad: u64 = bad.parse().context("worker count")?;
        holder.opened += ok;
        holder.failed += bad;
        if bad > 0 && holder.first_failure.is_none() {
            holder.first_failure = Some(parts.collect::<Vec<_>>().join(" "));
        }
        bar.set(holder.opened + holder.failed, String::new());
        holder.children.push(child);
    }
    Ok(holder)
}

impl Holder {
    /// Connections of this process that the broker ended while held.
    pub fn dropped(&self) -> u64 {
        self.local.dropped.load(Ordering::Relaxed)
    }

    /// Closes everything: local sockets, then each worker (told by closing
    /// its stdin, killed if it lingers).
    pub async fn release(self) {
        self.local.close().await;
        for mut child in self.children {
            drop(child.stdin.take());
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}
