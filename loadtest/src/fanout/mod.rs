//! The `fanout` scenario (and the engine of `mixed`): N agent dashboards
//! subscribe to one company; one driver connection creates, closes and
//! deletes cases, as fast as the slowest dashboard allows or at a fixed
//! rate. Every dashboard checks that it gets every event in `seq` order,
//! and each event's push latency is measured.
//!
//! Latency: the driver is the only writer of the company's stream, and
//! every command it sends makes exactly one event (`create_case`: created,
//! `close`: updated, `delete`: deleted), applied in the order sent. So the
//! k-th command sent is the event with `seq = base + k`, where `base` is the
//! snapshot `seq` every dashboard got. The driver writes its send time
//! into slot k of a ring before sending; a dashboard reads slot
//! `seq - base` when the event arrives. Any reply that is an error, and any
//! event beyond the last one the driver caused, is reported: either would
//! mean the mapping, and the run, is not to be trusted.
//!
//! # Layout
//! - `shared`: the state the driver and the dashboards share, with the
//!   ring of send times.
//! - `dashboard`: connecting a dashboard and its hot receive loop.
//! - `driver`: the driver that makes the changes, and the clean-up of the
//!   cases it left open.
//! - `result`: what a run measured, as table rows and JSON.

mod dashboard;
mod driver;
mod result;
mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use self::dashboard::{dashboard, open_dashboard};
use self::driver::{clean_up, driver};
use self::shared::{RING, Shared};
use crate::client::Client;
use crate::report::{Progress, per_sec};
use crate::stats::Sharded;
use crate::target::Target;

pub use self::result::FanoutResult;

/// How long dashboards may take, after the driver stopped, to get the last
/// event.
const DRAIN: Duration = Duration::from_secs(15);
/// Dashboards connecting at once.
const CONNECT_AT_ONCE: usize = 64;

/// What a fan-out run is asked to do.
#[derive(Clone, Debug)]
pub struct FanoutOpts {
    pub target: Target,
    /// Where the dashboards connect, dealt in turn (several nodes of a
    /// cluster, say); empty: all on `target`, like the driver.
    pub dashboard_targets: Vec<Target>,
    pub token: String,
    pub group: String,
    pub dashboards: usize,
    pub seconds: u64,
    /// Changes per second; `None` for as fast as the dashboards keep up.
    pub rate: Option<f64>,
    /// Without `rate`: events the driver may be ahead of the slowest
    /// dashboard. Keep it below the broker's `outbox_messages`.
    pub window: u64,
    pub progress: bool,
}

/// Runs one fan-out: connect, drive for `seconds`, drain, tally.
pub async fn run(opts: &FanoutOpts, bar: &Progress) -> anyhow::Result<FanoutResult> {
    bar.phase("connecting", opts.dashboards as u64);
    let token = opts.token.clone();
    let mut opened = Vec::with_capacity(opts.dashboards);
    let mut connecting = futures::stream::iter(0..opts.dashboards)
        .map(|i| {
            let target = match opts.dashboard_targets.len() {
                0 => opts.target.clone(),
                n => opts.dashboard_targets[i % n].clone(),
            };
            let token = token.clone();
            async move { open_dashboard(&target, &token).await }
        })
        .buffer_unordered(CONNECT_AT_ONCE);
    while let Some(r) = connecting.next().await {
        let dash = r.context("opening a dashboard")?;
        opened.push(dash);
        bar.inc();
    }
    drop(connecting);
    let base = opened.first().map(|d| d.1).unwrap_or(0);
    if let Some((_, seq)) = opened.iter().find(|d| d.1 != base) {
        bail!(
            "the company's stream moved while dashboards subscribed (seq {base} and {seq}): \
             is something else changing its cases?"
        );
    }
    let mut drv = Client::connect(&opts.target).await?;
    drv.hello_agent(&opts.token).await?;
    let drv = drv.into_inner();

    let n = opened.len();
    let sh = Arc::new(Shared {
        start: Instant::now(),
        base,
        send_us: (0..RING).map(|_| AtomicU64::new(0)).collect(),
        sent: AtomicU64::new(0),
        progress: (0..n).map(|_| AtomicU64::new(base)).collect(),
        latency: Sharded::new(32),
    });
    let stop = CancellationToken::new();
    let tasks: Vec<_> = opened
        .into_iter()
        .enumerate()
        .map(|(i, (ws, _))| tokio::spawn(dashboard(i, ws, sh.clone(), stop.clone())))
        .collect();

    bar.phase("running", opts.seconds);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(opts.seconds);
    let driving = driver(drv, sh.clone(), opts, deadline);
    tokio::pin!(driving);
    let driven = loop {
        tokio::select! {
            d = &mut driving => break d?,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                let (delivered, _) = sh.scan_progress();
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                bar.set(
                    started.elapsed().as_secs().min(opts.seconds),
                    format!(
                        "{} changes, {} events",
                        per_sec(sh.sent.load(Ordering::Relaxed) as f64 / secs),
                        per_sec(delivered as f64 / secs)
                    ),
                );
            }
        }
    };

    // Every event the driver caused, and no other, must reach every
    // dashboard: wait for the slowest, within a bound.
    bar.phase("draining", DRAIN.as_secs());
    let last = base + driven.changes - driven.errors.min(driven.changes);
    let drain_until = Instant::now() + DRAIN;
    loop {
        let (_, min) = sh.scan_progress();
        if min == u64::MAX || min >= last || Instant::now() >= drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    let mut res = FanoutResult {
        dashboards: n,
        changes: driven.changes,
        driver_errors: driven.errors,
        first_error: driven.first_error,
        secs,
        delivered: 0,
        expected: (last - base) * n as u64,
        lost: 0,
        gaps: 0,
        out_of_order: 0,
        missing_at_end: 0,
        unexpected: 0,
        disconnected: 0,
        first_gap: None,
        latency: sh.latency.merged(),
    };
    for (i, t) in tasks.into_iter().enumerate() {
        let t = t.await.context("dashboard task")?;
        if res.first_gap.is_none()
            && let Some((want, got)) = t.first_gap
        {
            res.first_gap = Some((i, want, got));
        }
        res.delivered += t.delivered;
        res.gaps += t.gaps;
        res.out_of_order += t.out_of_order;
        res.unexpected += t.unexpected;
        res.missing_at_end += last.saturating_sub(t.last);
        res.disconnected += u64::from(t.disconnected);
    }
    res.latency = sh.latency.merged();
    bar.phase("cleaning up", 1);
    if let Err(e) = clean_up(opts, driven.live).await {
        eprintln!("fanout: clean-up of the cases left open failed: {e:#}");
    }
    res.lost = res.gaps + res.out_of_order + res.missing_at_end + res.unexpected;
    bar.finish();
    Ok(res)
}
