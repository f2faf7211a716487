//! Idle connections and the broker's memory: opening and holding many
//! customer and dashboard connections (spread over child worker processes
//! when one process may not open that many files), the hidden `worker`
//! those children run, reading the broker's resident memory, and the
//! `idle` scenario itself.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::report::{Progress, Report, thousands};
use crate::target::{Target, Ws};

/// Connections opened at once.
const OPEN_AT_ONCE: usize = 128;
/// Sockets one process holds by default: under the 20,000 open files a
/// process may have here, with room for everything else.
pub const PER_PROCESS: usize = 15_000;
/// How long a worker may take to open its share.
const WORKER_READY: Duration = Duration::from_secs(300);

/// How many connections of each kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mix {
    pub customers: usize,
    pub dashboards: usize,
}

impl Mix {
    pub fn total(&self) -> usize {
        self.customers + self.dashboards
    }

    /// Splits into shares of at most `per` connections, dashboards first.
    pub fn split(&self, per: usize) -> Vec<Mix> {
        let per = per.max(1);
        let mut left = *self;
        let mut out = Vec::new();
        while left.total() > 0 {
            let dashboards = left.dashboards.min(per);
            let customers = left.customers.min(per - dashboards);
            left.dashboards -= dashboards;
            left.customers -= customers;
            out.push(Mix {
                customers,
                dashboards,
            });
        }
        out
    }
}

/// Opens one idle connection: a customer (hello) or a dashboard (agent
/// hello + subscribe).
async fn open_one(target: &Target, token: &str, dashboard: bool) -> anyhow::Result<Ws> {
    let mut c = Client::connect(target).await?;
    if dashboard {
        c.hello_agent(token).await?;
        c.subscribe().await?;
    } else {
        c.hello_customer().await?;
    }
    Ok(c.into_inner())
}

/// Opens `mix` in this process; returns the sockets and the failures.
async fn open_local(
    target: &Target,
    token: &str,
    mix: Mix,
    bar: Option<&Progress>,
) -> (Vec<Ws>, Vec<String>) {
    let mut held = Vec::with_capacity(mix.total());
    let mut failed = Vec::new();
    let mut opening = futures::stream::iter(0..mix.total())
        .map(|i| {
            let target = target.clone();
            let token = token.to_string();
            async move { open_one(&target, &token, i < mix.dashboards).await }
        })
        .buffer_unordered(OPEN_AT_ONCE);
    while let Some(r) = opening.next().await {
        match r {
            Ok(ws) => held.push(ws),
            Err(e) => failed.push(format!("{e:#}")),
        }
        if let Some(bar) = bar {
            bar.inc();
        }
    }
    (held, failed)
}

/// Keeps one idle connection alive: reads (and so answers the broker's
/// pings) until told to stop, then closes it. Counts a connection the
/// broker ended in `dropped`.
async fn keep(mut ws: Ws, stop: CancellationToken, dropped: Arc<AtomicU64>) {
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            _ = stop.cancelled() => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// Idle connections of this process, each kept by a task.
struct Kept {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
}

impl Kept {
    fn new(held: Vec<Ws>) -> Kept {
        let stop = CancellationToken::new();
        let dropped = Arc::new(AtomicU64::new(0));
        let tasks = held
            .into_iter()
            .map(|ws| tokio::spawn(keep(ws, stop.clone(), dropped.clone())))
            .collect();
        Kept {
            stop,
            tasks,
            dropped,
        }
    }

    async fn close(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

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

fn spawn_worker(opts: &HoldOpts<'_>, share: Mix, index: usize) -> anyhow::Result<Child> {
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

/// Where the broker's resident memory comes from.
#[derive(Clone, Debug)]
pub enum RssSource {
    /// `/proc/<pid>/status`, from `--broker-pid` or found by the port.
    Pid(u32),
    /// `process_resident_memory_bytes` of the broker's `/metrics`.
    Metrics,
}

impl RssSource {
    /// `--broker-pid`, else `/metrics` when it has process memory, else
    /// the process listening on the target's port.
    pub async fn find(target: &Target, pid: Option<u32>) -> Option<RssSource> {
        if let Some(pid) = pid {
            return Some(RssSource::Pid(pid));
        }
        if let Ok(text) = fetch_metrics(target).await
            && metric_value(&text, "process_resident_memory_bytes").is_some()
        {
            return Some(RssSource::Metrics);
        }
        pid_listening_on(target.addr().port()).map(RssSource::Pid)
    }

    pub fn describe(&self) -> String {
        match self {
            RssSource::Pid(pid) => format!("/proc/{pid}/status VmRSS"),
            RssSource::Metrics => "/metrics process_resident_memory_bytes".into(),
        }
    }

    /// The resident memory now, in bytes.
    pub async fn sample(&self, target: &Target) -> Option<u64> {
        match self {
            RssSource::Pid(pid) => vm_rss(*pid),
            RssSource::Metrics => fetch_metrics(target)
                .await
                .ok()
                .and_then(|t| metric_value(&t, "process_resident_memory_bytes"))
                .map(|v| v as u64),
        }
    }
}

/// VmRSS of a process, in bytes.
pub fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The process with a listening TCP socket on `port` (IPv4 or IPv6), by
/// matching the socket's inode in `/proc/net/tcp*` with `/proc/*/fd`.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// `GET /metrics` over a plain HTTP/1.1 connection.
pub async fn fetch_metrics(target: &Target) -> anyhow::Result<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(target.addr()).await?;
        let req = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            target.addr()
        );
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .context("GET /metrics timed out")??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("bad HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET /metrics: {}", head.lines().next().unwrap_or(""));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The sum of a metric's samples (all label sets) in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        *found.get_or_insert(0.0) += value;
    }
    found
}

/// What the `idle` scenario is asked to do.
pub struct IdleOpts {
    pub target: Target,
    pub token: String,
    pub connections: usize,
    pub seconds: u64,
    pub broker_pid: Option<u32>,
    pub per_process: usize,
    pub worker_exe: Option<PathBuf>,
    pub progress: bool,
}

/// `idle`: open N idle connections (half customers, half dashboards), hold
/// them for `seconds`, and report the broker's resident memory per
/// connection.
pub async fn run(opts: &IdleOpts) -> anyhow::Result<Report> {
    let bar = Progress::new(opts.progress, opts.connections as u64);
    let source = RssSource::find(&opts.target, opts.broker_pid).await;
    let before = match &source {
        Some(s) => s.sample(&opts.target).await,
        None => None,
    };
    let gauge_before = broker_connections(&opts.target).await;
    let customers = opts.connections / 2;
    let mix = Mix {
        customers,
        dashboards: opts.connections - customers,
    };
    let holder = hold(
        HoldOpts {
            target: &opts.target,
            token: &opts.token,
            mix,
            local_room: opts.per_process,
            per_process: opts.per_process,
            worker_exe: &opts.worker_exe,
            max_seconds: opts.seconds + 600,
        },
        &bar,
    )
    .await?;
    bar.phase("holding", opts.seconds);
    let mut after = None;
    let mut peak = None;
    let held_from = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(s) = &source
            && let Some(v) = s.sample(&opts.target).await
        {
            after = Some(v);
            peak = Some(peak.map_or(v, |p: u64| p.max(v)));
        }
        let held = held_from.elapsed().as_secs();
        bar.set(
            held.min(opts.seconds),
            after
                .map(|v| format!("broker RSS {} MiB", v >> 20))
                .unwrap_or_default(),
        );
        if held >= opts.seconds {
            break;
        }
    }
    let gauge_after = broker_connections(&opts.target).await;
    bar.finish();
    let dropped = holder.dropped();
    let opened = holder.opened;
    let failed = holder.failed;
    let first_failure = holder.first_failure.clone();
    holder.release().await;

    let per_conn = match (before, after) {
        (Some(b), Some(a)) if opened > 0 => Some(a.saturating_sub(b) as f64 / opened as f64),
        _ => None,
    };
    let mut r = Report::new("idle: broker memory per idle connection");
    r.row(
        "connections",
        format!(
            "{} opened ({} customers + {} dashboards asked), {} failed",
            thousands(opened),
            thousands(mix.customers as u64),
            thousands(mix.dashboards as u64),
            failed
        ),
    );
    if let Some(f) = &first_failure {
        r.row("first failure", f);
    }
    r.row("ended by the broker while held", dropped);
    if let (Some(b), Some(a)) = (gauge_before, gauge_after) {
        r.row(
            "broker's connection gauge",
            format!("{b:.0} before, {a:.0} while held"),
        );
    }
    r.row(
        "RSS source",
        source
            .as_ref()
            .map(RssSource::describe)
            .unwrap_or_else(|| "none found (pass --broker-pid)".into()),
    );
    let mib = |v: Option<u64>| {
        v.map(|v| format!("{:.1} MiB", v as f64 / 1048576.0))
            .unwrap_or_else(|| "?".into())
    };
    r.row(
        "RSS before / held / peak",
        format!("{} / {} / {}", mib(before), mib(after), mib(peak)),
    );
    r.row(
        "RSS per connection",
        per_conn
            .map(|v| format!("{v:.0} bytes"))
            .unwrap_or_else(|| "?".into()),
    );
    r.set("scenario", "idle");
    r.set("connections", opened);
    r.set("customers", mix.customers);
    r.set("dashboards", mix.dashboards);
    r.set("failed", failed);
    r.set("dropped", dropped);
    r.set("rss_before_bytes", before);
    r.set("rss_after_bytes", after);
    r.set("rss_peak_bytes", peak);
    r.set("rss_bytes_per_connection", per_conn.map(|v| v.round()));
    r.set("seconds", opts.seconds);
    r.failed = failed > 0 || dropped > 0 || opened == 0;
    Ok(r)
}

/// The broker's `casebroker_connections` gauge (all roles), if reachable.
pub async fn broker_connections(target: &Target) -> Option<f64> {
    let text = fetch_metrics(target).await.ok()?;
    metric_value(&text, "casebroker_connections")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_fills_dashboards_first() {
        let m = Mix {
            customers: 5,
            dashboards: 4,
        };
        let parts = m.split(3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.iter().map(|p| p.dashboards).sum::<usize>(), 4);
        assert_eq!(parts.iter().map(|p| p.customers).sum::<usize>(), 5);
        assert!(parts.iter().all(|p| p.total() <= 3));
        assert!(Mix::default().split(10).is_empty());
    }

    #[test]
    fn metrics_text_is_read() {
        let text = "# HELP x\ncasebroker_connections{role=\"agent\"} 3\n\
                    casebroker_connections{role=\"customer\"} 4\n\
                    casebroker_connections_total{role=\"agent\"} 9\n";
        assert_eq!(metric_value(text, "casebroker_connections"), Some(7.0));
        assert_eq!(metric_value(text, "process_resident_memory_bytes"), None);
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(vm_rss(std::process::id()).unwrap_or(0) > 0);
    }
}
