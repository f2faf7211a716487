//! Idle connections and the broker's memory: opening and holding many
//! customer and dashboard connections (spread over child worker processes
//! when one process may not open that many files), the hidden `worker`
//! those children run, reading the broker's resident memory, and the
//! `idle` scenario itself.
//!
//! # Layout
//! - `connections`: the mix of connections, opening them in this process
//!   and keeping them alive.
//! - `holder`: holding a mix, here and in worker processes, and releasing
//!   it.
//! - `worker`: starting a worker process, and the hidden `worker` it runs.
//! - `memory`: the broker's resident memory and its `/metrics`.

mod connections;
mod holder;
mod memory;
mod worker;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::report::{Progress, Report, thousands};
use crate::target::Target;

pub use self::connections::Mix;
pub use self::holder::{HoldOpts, Holder, PER_PROCESS, hold};
pub use self::memory::{
    RssSource, broker_connections, fetch_metrics, metric_value, pid_listening_on, vm_rss,
};
pub use self::worker::worker;

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
