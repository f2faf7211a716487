//! The `crash` scenario: does a broker keep every change it acknowledged
//! when it is killed at a random moment?
//!
//! The scenario starts the broker binary itself, on a data directory and a
//! free loopback port, and then, round after round: C clients change cases
//! (`create_case` over WebSocket and `POST /v1/cases`, `assign`, customer
//! `request_help` + agent `join` + chat both ways, `close`) while an admin
//! dashboard follows the company's stream; after a random delay the broker
//! gets SIGKILL, is started again on the same directory, and every change
//! whose answer (a reply, an HTTP 2xx) arrived before the kill is looked
//! up: the case exists (`GET /v1/cases/{code}`), shows its last
//! acknowledged assignee and its acknowledged close, and its transcript
//! (`GET /v1/cases/{code}/transcript`) holds every acknowledged chat line.
//! The company's `epoch` must be the one of the first round and the
//! dashboard, subscribing again with `resume {epoch, seq}` from the last
//! event it saw, must get `resumed`. The restarted broker serves the next
//! round, whose kill ends it.
//!
//! One client makes every change of its own cases, one at a time, so at
//! most its last change lacks an answer when the kill comes: the broker may
//! show that change or not, both are right. A change counts as recovered
//! when its case shows it (or a later acknowledged change of the same
//! case), lost otherwise. Cases checked once are checked again every ten
//! rounds and at the end (their status and assignee; at the end their
//! transcripts too): a later crash must not take them back either.
//!
//! # Layout
//! - `broker`: the broker process (started by `casebroker_testkit`'s
//!   `Process`) and its readiness.
//! - `workload`: the clients that change cases until the kill, logging
//!   each change (`casebroker_testkit::crash`'s `CaseLog`).
//! - `dashboard`: the admin dashboard following the stream and resuming.
//! - `check`: the checks against the restarted broker, each case judged by
//!   `casebroker_testkit::crash::judge`.
//! - `counts`: the acknowledged changes by kind.
//! - `round`: the run's state and one round (drive, kill, restart, check).
//! - `report`: the table and JSON.
//! - `rng`: the seedable generator.

mod broker;
mod check;
mod counts;
mod dashboard;
mod report;
mod rng;
mod round;
mod workload;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use casebroker::protocol::{ClientMsg, ServerMsg};

use self::broker::Broker;
use self::dashboard::{Answer, subscribe};
use self::round::{Run, Tally};
use self::workload::ask;
use crate::client::Client;
use crate::http::Http;
use crate::report::{Progress, Report, thousands};
use crate::stats::{Summary, fmt_ms, histogram};
use crate::target::Target;

pub use self::rng::{Rng, fresh_seed};

/// How long the clients and the dashboard get to notice the kill.
const WIND_DOWN: Duration = Duration::from_secs(20);

/// What a crash run is asked to do.
#[derive(Clone, Debug)]
pub struct CrashOpts {
    /// The casebroker binary.
    pub broker: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// The data directory; `None`: a fresh one under the temp dir.
    pub data_dir: Option<PathBuf>,
    /// Keep the fresh data directory at the end.
    pub keep: bool,
    pub rounds: u32,
    pub clients: usize,
    /// The kill comes this many ms after the clients start, uniformly.
    pub min_ms: u64,
    pub max_ms: u64,
    /// The whole run stops starting rounds past this.
    pub time_limit: Duration,
    pub seed: u64,
    /// An admin's token (every change is made as that agent).
    pub token: String,
    /// Module keys for `request_help`, used in turn.
    pub modules: Vec<String>,
    pub source_addrs: u8,
    pub progress: bool,
    /// Start the broker with `--in-memory` instead of the data directory:
    /// it then loses everything, which the run must report.
    pub in_memory: bool,
}

/// A fresh directory under the temp dir, removed when dropped unless kept.
struct Scratch {
    root: PathBuf,
    keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// The admin behind `token`, its groups and their members (from
/// `GET /v1/agents`).
async fn discover(
    broker: &Broker,
    opts: &CrashOpts,
) -> anyhow::Result<(String, Vec<(String, Vec<String>)>)> {
    let target = Target::new(&broker.url(), opts.source_addrs)?;
    let mut c = Client::connect(&target).await?;
    let hello = ClientMsg::Hello {
        role: casebroker::protocol::Role::Agent,
        token: Some(opts.token.clone()),
    };
    let info = match ask(&mut c, "hello", hello).await? {
        ServerMsg::Welcome {
            agent: Some(info), ..
        } => info,
        other => bail!("hello: expected welcome, got {other:?}"),
    };
    c.close().await;
    if !info.admin {
        bail!(
            "--token belongs to {}, who is not an admin: the crash scenario assigns and closes cases of every group",
            info.id
        );
    }
    let mut http = Http::new(broker.addr);
    let r = http.get("/v1/agents", &opts.token).await?;
    if r.status != 200 {
        bail!("GET /v1/agents: {} {}", r.status, r.text());
    }
    let agents = r.json();
    let groups = info
        .groups
        .iter()
        .map(|g| {
            let members = agents["agents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| {
                    a["groups"]
                        .as_array()
                        .is_some_and(|gs| gs.iter().any(|x| x == g.as_str()))
                })
                .filter_map(|a| a["id"].as_str().map(str::to_string))
                .collect();
            (g.clone(), members)
        })
        .collect();
    Ok((info.id, groups))
}

/// Runs the scenario.
pub async fn run(opts: CrashOpts) -> anyhow::Result<Report> {
    if opts.min_ms > opts.max_ms {
        bail!(
            "--min-ms {} is more than --max-ms {}",
            opts.min_ms,
            opts.max_ms
        );
    }
    if opts.modules.is_empty() {
        bail!("--module: at least one module key is needed");
    }
    if !opts.broker.is_file() {
        bail!(
            "no broker binary at {} (build it with `cargo build --release -p casebroker`, or pass --broker)",
            opts.broker.display()
        );
    }
    if !opts.config.is_file() {
        bail!(
            "no config file at {} (pass --config)",
            opts.config.display()
        );
    }
    let (data, scratch) = match &opts.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let root = std::env::temp_dir().join(format!(
                "casebroker-crash-{}-{:x}",
                std::process::id(),
                fresh_seed()
            ));
            std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
            let data = root.join("data");
            (
                data,
                Some(Scratch {
                    root,
                    keep: opts.keep,
                }),
            )
        }
    };
    let started = Instant::now();
    let deadline = started + opts.time_limit;
    let (broker, first_start) = Broker::start(&opts, &data).await?;
    let (me, groups) = discover(&broker, &opts).await?;
    let target = Target::new(&broker.url(), opts.source_addrs)?;
    let (dash, answer) = subscribe(&target, &opts.token, None).await?;
    let (epoch, seq) = match answer {
        Answer::Snapshot { epoch, seq } | Answer::Resumed { epoch, seq } => (epoch, seq),
    };
    let mut run = Run {
        rng: Rng::new(opts.seed),
        data: data.clone(),
        broker,
        me,
        groups,
        epoch: epoch.clone(),
        dash: None,
        checked: HashMap::new(),
        orphans: HashSet::new(),
        restarts: histogram(),
        first_start,
        events: 0,
        gaps: 0,
        first_gap: None,
        wrong_epoch: 0,
        t: Tally::default(),
        opts,
    };
    run.start_dashboard(dash, epoch, seq);

    let bar = Progress::new(run.opts.progress, u64::from(run.opts.rounds));
    bar.phase("rounds", u64::from(run.opts.rounds));
    let rounds = async {
        for r in 1..=run.opts.rounds {
            if Instant::now() > deadline {
                run.t.aborted = Some(format!(
                    "the time limit of {:?} passed after {} rounds",
                    run.opts.time_limit,
                    r - 1
                ));
                break;
            }
            if let Err(e) = run.round(r).await {
                run.t.aborted = Some(format!("{e:#}"));
                break;
            }
            let p50 = Summary::of(&run.restarts).p50_ms;
            bar.set(
                u64::from(r),
                format!(
                    "{} acknowledged, {} lost, restart p50 {} ms",
                    thousands(run.t.acked.total()),
                    run.t.lost,
                    fmt_ms(p50)
                ),
            );
        }
        // A run cut short still checks every case it checked once.
        let done = run.t.rounds;
        if done > 0 && done < run.opts.rounds && run.broker.exited().is_none() {
            let last = run.recheck(done, true).await;
            if let Err(e) = last {
                run.t
                    .error(format!("the final check after round {done}: {e:#}"));
            }
        }
    };
    let interrupted = tokio::select! {
        () = rounds => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    bar.finish();
    if interrupted {
        // The broker and the scratch directory go with `run` and `scratch`.
        bail!("interrupted");
    }
    let _ = run.broker.kill().await;
    run.end_dashboard().await;
    let kept = match &scratch {
        Some(s) => s.keep,
        None => true,
    };
    drop(scratch);
    Ok(report::report(&run, &data, kept, started.elapsed()))
}
