//! The `queue-depth` scenario: does the cost of a change grow with the
//! size of a company's queue? It measures the rate and latency of
//! `create_case`, `assign` and `close` twice: against the group as found
//! ("empty"), and again ("deep") after filling the group with `--cases`
//! open cases, `--waiting` of them with a customer seated and waiting
//! (`request_help`, reading its `queue` pushes). It reports deep / empty
//! for each operation, then deletes every case it created and closes the
//! customer sockets (not timed), so repeated runs leave the broker as
//! found.
//!
//! Measuring keeps the queue's size steady: each round creates up to
//! `--batch` cases at the tail of the line, assigns each to `--assignee`
//! and back to the line, closes them and deletes them (the delete is not
//! timed). An operation's clock runs only while it is being measured: a
//! timed step stops sending once its operation has had `--seconds` in all
//! (the commands in flight are still answered and counted), and a phase
//! ends when all three have. Creation goes on, untimed, while another
//! operation still needs cases. Commands are pipelined on `--connections`
//! agent connections, each with at most `--window` commands without reply,
//! and replies are matched by `id`.
//!
//! This file has the limits, the options and [`run`], which makes the
//! report; `pipeline.rs` the pipelined agent connections, `state.rs` what
//! a run holds, `measure.rs` the measuring phases, `customers.rs` the
//! waiting customers, `fill.rs` the fill and `cleanup.rs` the clean-up.

mod cleanup;
mod customers;
mod fill;
mod measure;
mod pipeline;
mod state;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::report::{Progress, Report, per_sec, thousands};
use crate::stats::round3;
use crate::target::Target;
use cleanup::clean_up;
use fill::{Fill, fill, open_in_group};
use measure::{OpStats, Phase, latency_ratio, phase, phase_json, ratio};
use pipeline::Agent;
use state::Run;

/// The measured operations, in the order of a round.
pub const OPS: [&str; 3] = ["create_case", "assign", "close"];
/// The deep / empty rate ratio each operation should reach.
pub const TARGET_RATIO: f64 = 0.8;
/// The longest the bulk creation of the fill may take; past it the fill
/// stops (a failure) and the deep phase runs behind the cases created.
pub const FILL_LIMIT: Duration = Duration::from_secs(900);
/// The shortest bound of the clean-up; it is allowed three times the fill's
/// time when that is longer (removing a case from a deep line may cost as
/// much as adding it).
pub const CLEANUP_LIMIT: Duration = Duration::from_secs(1800);
/// Customer connections opened at once.
const CONNECT_AT_ONCE: usize = 64;
/// Cases created (fill) or deleted (clean-up) per pipelined step, between
/// progress updates and deadline checks.
const CHUNK: usize = 1_000;

/// The longest one measuring phase may take: its three operations' clocks
/// plus the untimed steps, with a wide margin.
pub fn phase_limit(seconds: u64) -> Duration {
    Duration::from_secs(10 * seconds + 60)
}

/// The clean-up's bound after a fill that took `fill`.
pub fn cleanup_limit(fill: Duration) -> Duration {
    CLEANUP_LIMIT.max(fill * 3)
}

/// The bound of a whole run in seconds: two phases, the fill and the
/// clean-up.
pub fn time_bound(seconds: u64) -> u64 {
    let fill = FILL_LIMIT + Duration::from_secs(60);
    (2 * phase_limit(seconds) + fill + cleanup_limit(fill)).as_secs()
}

/// What a queue-depth run is asked to do.
#[derive(Clone, Debug)]
pub struct QueueDepthOpts {
    pub target: Target,
    pub token: String,
    pub group: String,
    /// Module keys of the waiting customers, used in turn; they must map
    /// to `group`.
    pub modules: Vec<String>,
    /// Open cases the fill adds, waiting customers included.
    pub cases: usize,
    /// Cases of the fill with a seated, waiting customer.
    pub waiting: usize,
    /// Measured seconds per operation and phase.
    pub seconds: u64,
    pub connections: usize,
    /// Commands without reply per agent connection.
    pub window: usize,
    /// Cases per measuring round (at most `cases / 10`).
    pub batch: usize,
    /// The agent `assign` hands cases to before returning them to the line.
    pub assignee: String,
    pub progress: bool,
}

impl QueueDepthOpts {
    /// The round size actually used: `batch`, at most a tenth of the fill.
    pub fn round_size(&self) -> usize {
        self.batch.min(self.cases / 10).max(1)
    }
}

/// Runs the scenario.
pub async fn run(opts: QueueDepthOpts) -> anyhow::Result<Report> {
    if opts.waiting > opts.cases {
        bail!("--waiting may not exceed --cases");
    }
    if opts.waiting > 0 && opts.modules.is_empty() {
        bail!("--module: at least one module key is needed");
    }
    let (before, waiting_before) = open_in_group(&opts.target, &opts.token, &opts.group).await?;
    let mut agents = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        agents.push(Agent::connect(&opts.target, &opts.token).await?);
    }
    let mut run = Run {
        bar: Progress::new(opts.progress, 1),
        opts,
        agents,
        live: HashSet::new(),
        customers: Vec::new(),
        release: CancellationToken::new(),
        pushes: Arc::new(AtomicU64::new(0)),
        failures: 0,
        first_failure: None,
    };

    let mut f = Fill::default();
    let mut empty = None;
    let mut deep = None;
    let measured: anyhow::Result<()> = async {
        empty = Some(phase(&mut run, "empty").await.context("phase empty")?);
        fill(&mut run, &mut f).await.context("fill")?;
        deep = Some(phase(&mut run, "deep").await.context("phase deep")?);
        Ok(())
    }
    .await;
    let aborted = measured.err().map(|e| format!("{e:#}"));
    if let Some(why) = &aborted {
        run.fail(1, || why.clone());
    }
    let cleanup = clean_up(&mut run, Duration::from_secs_f64(f.secs())).await;
    run.bar.finish();

    let o = &run.opts;
    let mut r = Report::new(format!(
        "queue-depth: {} cases ({} waiting) in group {}, {} s per operation",
        thousands(o.cases as u64),
        thousands(o.waiting as u64),
        o.group,
        o.seconds
    ));
    r.row(
        "before",
        format!(
            "{} open cases in {} ({} waiting unassigned)",
            thousands(before.len() as u64),
            o.group,
            thousands(waiting_before as u64)
        ),
    );
    r.row(
        "pipelining",
        format!(
            "{} connections x window {}, rounds of {} cases",
            o.connections,
            o.window,
            o.round_size()
        ),
    );
    let fill_rate = f.total() as f64 / f.secs().max(1e-9);
    r.row(
        "fill",
        format!(
            "{} cases in {:.1} s ({}): {} customers in {:.1} s, {} created in {:.1} s",
            thousands(f.total()),
            f.secs(),
            per_sec(fill_rate),
            thousands(f.customers),
            f.customer_secs,
            thousands(f.created),
            f.create_secs
        ),
    );
    let mut ratios = Map::new();
    let mut p99_ratios = Map::new();
    let mut meets = true;
    let mut complete = empty.is_some() && deep.is_some();
    let none = Phase {
        ops: [OpStats::new(), OpStats::new(), OpStats::new()],
        rounds: 0,
        hit_limit: false,
    };
    let (e, d) = (
        empty.as_ref().unwrap_or(&none),
        deep.as_ref().unwrap_or(&none),
    );
    for (i, name) in OPS.iter().enumerate() {
        r.row(format!("{name} empty"), e.ops[i].line());
        r.row(format!("{name} deep"), d.ops[i].line());
        let q = ratio(&d.ops[i], &e.ops[i]);
        let p99 = latency_ratio(&d.ops[i], &e.ops[i], 0.99);
        let verdict = match q {
            Some(q) if q >= TARGET_RATIO => format!("{q:.2} (target >= {TARGET_RATIO}: met)"),
            Some(q) => format!("{q:.2} (target >= {TARGET_RATIO}: NOT met)"),
            None => "n/a".into(),
        };
        let p99_text = p99.map(|x| format!(", p99 x{x:.2}")).unwrap_or_default();
        r.row(format!("{name} deep/empty"), format!("{verdict}{p99_text}"));
        meets &= q.is_some_and(|q| q >= TARGET_RATIO);
        complete &= q.is_some();
        ratios.insert(name.to_string(), q.map(round3).into());
        p99_ratios.insert(name.to_string(), p99.map(round3).into());
    }
    if f.hit_limit {
        r.row(
            "fill limit",
            format!(
                "stopped at {FILL_LIMIT:?}: deep measured behind {} cases",
                thousands(f.total())
            ),
        );
    }
    for (label, p) in [("empty", &empty), ("deep", &deep)] {
        if let Some(p) = p
            && p.hit_limit
        {
            r.row(
                format!("{label} phase"),
                format!("stopped at its limit of {:?}", phase_limit(o.seconds)),
            );
        }
    }
    r.row(
        "waiting customers",
        format!(
            "{} seated, {} queue pushes received",
            thousands(f.customers),
            thousands(run.pushes.load(Ordering::Relaxed))
        ),
    );
    r.row(
        "clean-up",
        format!(
            "{} cases deleted in {:.1} s, {} left",
            thousands(cleanup.deleted),
            cleanup.secs,
            cleanup.left
        ),
    );
    r.row("failures", run.failures);
    if let Some(why) = &run.first_failure {
        r.row("first failure", why);
    }

    for (label, p) in [("empty", e), ("deep", d)] {
        for (name, op) in OPS.iter().zip(&p.ops) {
            r.latency
                .push((format!("{name} ({label})"), op.latency.clone()));
        }
    }
    r.set("scenario", "queue-depth");
    r.set("url", o.target.url());
    r.set("group", o.group.clone());
    r.set("cases", o.cases);
    r.set("waiting", o.waiting);
    r.set("seconds", o.seconds);
    r.set("connections", o.connections);
    r.set("window", o.window);
    r.set("batch", o.round_size());
    r.set("assignee", o.assignee.clone());
    r.set("open_before", before.len());
    r.set("waiting_before", waiting_before);
    r.set(
        "fill",
        json!({
            "cases": f.total(),
            "customers": f.customers,
            "created": f.created,
            "seconds": round3(f.secs()),
            "customer_seconds": round3(f.customer_secs),
            "create_seconds": round3(f.create_secs),
            "per_sec": round3(fill_rate),
            "hit_time_limit": f.hit_limit,
        }),
    );
    r.set("empty", empty.as_ref().map(phase_json));
    r.set("deep", deep.as_ref().map(phase_json));
    r.set("ratios", Value::Object(ratios));
    r.set("p99_ratios", Value::Object(p99_ratios));
    r.set("target_ratio", TARGET_RATIO);
    r.set("meets_target", complete && meets);
    r.set("queue_pushes", run.pushes.load(Ordering::Relaxed));
    r.set(
        "cleanup",
        json!({"deleted": cleanup.deleted, "left": cleanup.left,
               "seconds": round3(cleanup.secs)}),
    );
    r.set("failed", run.failures);
    r.set("first_failure", run.first_failure.clone());
    r.set("aborted", aborted);
    r.failed = run.failures > 0 || !complete;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_stay_small_beside_the_fill() {
        let opts = QueueDepthOpts {
            target: Target::new(crate::target::DEFAULT_URL, 1).unwrap(),
            token: "t".into(),
            group: "support".into(),
            modules: vec!["m".into()],
            cases: 200,
            waiting: 20,
            seconds: 1,
            connections: 2,
            window: 32,
            batch: 1000,
            assignee: "admin".into(),
            progress: false,
        };
        assert_eq!(opts.round_size(), 20);
        let big = QueueDepthOpts {
            cases: 100_000,
            ..opts.clone()
        };
        assert_eq!(big.round_size(), 1000);
        let tiny = QueueDepthOpts { cases: 3, ..opts };
        assert_eq!(tiny.round_size(), 1);
    }
}
