//! The `mixed` scenario: many connected (idle) customers held open while
//! the fan-out engine drives dashboards at a steady rate of case changes;
//! reports push latency under that load.

use std::path::PathBuf;

use crate::fanout::{self, FanoutOpts};
use crate::idle::{self, HoldOpts, Mix};
use crate::report::{Progress, Report, thousands};

/// What a mixed run is asked to do.
pub struct MixedOpts {
    /// The fan-out part: dashboards, rate, seconds.
    pub fanout: FanoutOpts,
    pub customers: usize,
    pub per_process: usize,
    pub worker_exe: Option<PathBuf>,
}

/// Runs the scenario.
pub async fn run(opts: &MixedOpts) -> anyhow::Result<Report> {
    let f = &opts.fanout;
    let bar = Progress::new(f.progress, opts.customers as u64);
    let holder = idle::hold(
        HoldOpts {
            target: &f.target,
            token: &f.token,
            mix: Mix {
                customers: opts.customers,
                dashboards: 0,
            },
            local_room: opts.per_process.saturating_sub(f.dashboards + 16),
            per_process: opts.per_process,
            worker_exe: &opts.worker_exe,
            max_seconds: f.seconds + 900,
        },
        &bar,
    )
    .await?;
    let result = fanout::run(f, &bar).await;
    let (opened, failed, first_failure) =
        (holder.opened, holder.failed, holder.first_failure.clone());
    let dropped = holder.dropped();
    holder.release().await;
    let result = result?;

    let mut r = Report::new(format!(
        "mixed: {} dashboards, {} customers, {} changes/s, {} s",
        f.dashboards,
        opts.customers,
        f.rate.unwrap_or(0.0),
        f.seconds
    ));
    r.row(
        "customers connected",
        format!(
            "{} ({} failed, {} ended by the broker)",
            thousands(opened),
            failed,
            dropped
        ),
    );
    if let Some(e) = &first_failure {
        r.row("first customer failure", e);
    }
    result.fill(&mut r, "");
    r.json = result.json();
    r.set("scenario", "mixed");
    r.set("customers", opened);
    r.set("customers_failed", failed);
    r.set("customers_dropped", dropped);
    r.set("rate", f.rate);
    r.latency
        .push(("push latency".into(), result.latency.clone()));
    r.failed = !result.clean() || failed > 0 || dropped > 0;
    Ok(r)
}
