//! The command line: flags of every scenario with their caps, and
//! [`run_cli`], which runs one scenario within a hard time bound, prints
//! the summary table and writes `--json` and `--plot`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::bare;
use crate::baseline::{self, Baseline};
use crate::crash::{self, CrashOpts};
use crate::fanout::{self, FanoutOpts};
use crate::idle::{self, IdleOpts, Mix, PER_PROCESS};
use crate::lifecycle::{self, LifecycleOpts};
use crate::mixed::{self, MixedOpts};
use crate::plot;
use crate::queue_depth::{self, QueueDepthOpts};
use crate::report::{Progress, Report};
use crate::stats::{Summary, round3};
use crate::target::{DEFAULT_URL, Target, raise_nofile_limit};
use crate::webhooks::{self, WebhooksOpts};

/// The longest run `--seconds` allows.
pub const MAX_SECONDS: u64 = 600;
/// The most connections any scenario opens.
pub const MAX_CONNECTIONS: usize = 100_000;
/// Time allowed beyond `--seconds` for connecting, draining and closing;
/// past it the run is abandoned.
const HARD_EXTRA: Duration = Duration::from_secs(600);

/// Load tester for casebroker: drives a broker on loopback with one of the
/// scenarios below, then prints a summary (and writes --json / --plot).
/// Every scenario is bounded in connections and seconds and stops by
/// itself; only loopback URLs are accepted.
#[derive(Debug, Parser)]
#[command(name = "casebroker-loadtest", version)]
pub struct Cli {
    /// Runtime worker threads (default: one per CPU).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: Option<u16>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// N dashboards subscribe to one company; a driver changes cases as fast
    /// as they keep up (or at --rate). Delivered events/s, push latency,
    /// and a check that every dashboard got every event in seq order.
    Fanout(FanoutArgs),
    /// Complete cases: request_help, agent join, one chat each way, close.
    /// Cases/s and each step's latency.
    Lifecycle(LifecycleArgs),
    /// N idle connections (half customers, half dashboards); the broker's
    /// resident memory per connection.
    Idle(IdleArgs),
    /// Many dashboards and connected customers with a steady rate of case
    /// changes; push latency under load.
    Mixed(MixedArgs),
    /// Whether a change costs more behind a deep queue: create_case, assign
    /// and close rates and latencies against the group as found, then
    /// behind --cases open cases (--waiting of them with a waiting
    /// customer), and the ratio deep / empty of each.
    QueueDepth(QueueDepthArgs),
    /// Starts the broker binary on a data directory, lets clients change
    /// cases, kills it with SIGKILL at a random moment, restarts it and
    /// checks that every acknowledged change is there, the epoch is
    /// unchanged and a dashboard's resume is answered `resumed`; --rounds
    /// times. Lost changes fail the run.
    Crash(CrashArgs),
    /// Webhook deliveries: a receiver inside the load tester is registered
    /// as an endpoint (POST /v1/admin/webhooks); drivers create, close and
    /// delete cases. Deliveries/s, latency, failures, repeats, per-case
    /// order and whether every delivery arrived. The broker needs
    /// webhook_allow_private = true.
    Webhooks(WebhooksArgs),
    /// Not a scenario: a bare broadcast server on tokio-tungstenite that
    /// speaks the Node.js baseline's protocol subset, the ceiling `fanout
    /// --baseline bare` measures. Runs until SIGINT or SIGTERM.
    Bare(BareArgs),
    /// Holds a share of idle connections for a parent process.
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// Flags every scenario has.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// WebSocket URL of the broker; loopback only.
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,
    /// How long the measured part runs (1 to 600).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub seconds: u64,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<String>,
    /// Draw the latency distribution to FILE (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<String>,
    /// Client sockets are bound in turn to 127.0.0.1 .. 127.0.0.N.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_addrs: u8,
    /// Agent token for dashboards, the driver and lifecycle agents.
    #[arg(long, default_value = "load-admin-token")]
    pub token: String,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl Common {
    fn target(&self) -> anyhow::Result<Target> {
        Target::new(&self.url, self.source_addrs)
    }
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Dashboards (1 to 100,000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub dashboards: u32,
    /// Case changes per second; without it, as fast as the slowest
    /// dashboard keeps up.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Without --rate: events the driver may be ahead of the slowest
    /// dashboard (keep it below the broker's outbox_messages).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub window: u64,
    /// Group the driver creates cases in.
    #[arg(long, default_value = "support")]
    pub group: String,
    /// Where the dashboards connect, dealt in turn (repeat it: the nodes
    /// of a cluster); the driver stays on --url. Default: --url.
    #[arg(long, value_name = "URL")]
    pub dashboard_url: Vec<String>,
    /// Also run the same fan-out against this server (the Node.js
    /// baseline, say ws://127.0.0.1:8090/) and compare.
    #[arg(long, value_name = "URL")]
    pub baseline_url: Option<String>,
    /// Start a baseline server on a free loopback port and run the same
    /// fan-out against it after casebroker's, in the same run: `bare` (this
    /// program's `bare`), `node` (baseline/server.js) or `node-corked`
    /// (server.js --cork). Prints the ratio casebroker / baseline.
    #[arg(long, value_enum, value_name = "KIND", conflicts_with = "baseline_url")]
    pub baseline: Option<baseline::Kind>,
    /// The program `--baseline bare` runs (default: this one).
    #[arg(long, hide = true, value_name = "PATH")]
    pub baseline_exe: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct WebhooksArgs {
    #[command(flatten)]
    pub common: Common,
    /// Driver connections changing cases at once (1 to 64).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub drivers: u32,
    /// Case changes per second over all drivers; without it, as fast as
    /// the receiver keeps up.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Without --rate: deliveries the drivers may be ahead of the receiver
    /// (keep it below the broker's webhook_pending).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub window: u64,
    /// Group the drivers create cases in.
    #[arg(long, default_value = "support")]
    pub group: String,
    /// Event types the endpoint asks for (comma-separated, or *).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub events: Vec<String>,
    /// Verify every call's signature with the endpoint's secret; a bad one
    /// is a failure.
    #[arg(long, conflicts_with = "no_endpoint")]
    pub verify: bool,
    /// Longest wait for the last deliveries after the drivers stop (1 to
    /// 600 s).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub drain: u64,
    /// Only receive: register the endpoint and answer calls until
    /// --seconds pass or SIGINT/SIGTERM, then wait (--drain) until the
    /// endpoint has nothing pending; another scenario makes the changes.
    #[arg(long, conflicts_with_all = ["rate", "no_endpoint"])]
    pub receiver_only: bool,
    /// Only drive: the same changes with no endpoint (webhooks off), to
    /// compare what webhooks cost.
    #[arg(long)]
    pub no_endpoint: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BareArgs {
    /// Address to listen on; loopback only.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8091)]
    pub port: u16,
    /// Also stop when standard input closes (so a parent that started it
    /// takes it along when it goes).
    #[arg(long)]
    pub stop_on_eof: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LifecycleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Cases in flight at once (1 to 10,000).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Module keys for request_help, used in turn (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "load-qs-1,load-qs-2,load-qs-3,load-qs-4,load-qs-5,load-qs-6,load-qs-7,load-qs-8"
    )]
    pub module: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Idle connections, half customers and half dashboards (2 to 100,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub connections: u32,
    /// The broker's process id, for its VmRSS (otherwise /metrics, or the
    /// process listening on the URL's port).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    #[command(flatten)]
    pub spread: Spread,
}

#[derive(Debug, Clone, Args)]
pub struct MixedArgs {
    #[command(flatten)]
    pub common: Common,
    /// Dashboards (1 to 100,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub dashboards: u32,
    /// Connected, idle customers (0 to 100,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub customers: u32,
    /// Case changes per second.
    #[arg(long, default_value_t = 100.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Group the driver creates cases in.
    #[arg(long, default_value = "support")]
    pub group: String,
    #[command(flatten)]
    pub spread: Spread,
}

#[derive(Debug, Clone, Args)]
pub struct QueueDepthArgs {
    #[command(flatten)]
    pub common: Common,
    /// Open cases the fill adds to the group, waiting customers included
    /// (1 to 1,000,000).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub cases: u32,
    /// Of those, cases whose customer is seated and waiting (request_help,
    /// one connection each); 0 to 15,000 and at most --cases.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=15_000))]
    pub waiting: u32,
    /// Group of every case; the --module keys must map to it.
    #[arg(long, default_value = "support")]
    pub group: String,
    /// Module keys of the waiting customers, used in turn (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "load-qs-1,load-qs-2,load-qs-3,load-qs-4,load-qs-5,load-qs-6,load-qs-7,load-qs-8"
    )]
    pub module: Vec<String>,
    /// Agent connections the commands are spread over (1 to 64).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connections: u32,
    /// Commands each agent connection may have without reply (1 to 4096).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub window: u32,
    /// Cases per measuring round (1 to 100,000; at most --cases / 10).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Agent that assign hands each case to before returning it to the
    /// line; a member of --group.
    #[arg(long, default_value = "admin")]
    pub assignee: String,
}

#[derive(Debug, Clone, Args)]
pub struct CrashArgs {
    /// The casebroker binary to start (relative to the working directory).
    #[arg(long, value_name = "PATH", default_value = "target/release/casebroker")]
    pub broker: PathBuf,
    /// Its config file; the broker is started with --data-dir, which turns
    /// the file's in_memory off.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "loadtest/casebroker-load.toml"
    )]
    pub config: PathBuf,
    /// The data directory (kept at the end). Default: a fresh directory
    /// under the temp dir, removed at the end unless --keep.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep the fresh data directory at the end.
    #[arg(long)]
    pub keep: bool,
    /// Kill-and-restart rounds (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,
    /// Clients changing cases at once (1 to 64).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub clients: u32,
    /// The kill comes at least this many ms after the clients start
    /// (1 to 60,000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub min_ms: u64,
    /// ... and at most this many (1 to 60,000, at least --min-ms).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub max_ms: u64,
    /// No round starts after this many seconds (10 to 7200); a run cut
    /// short fails.
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(10..=7200))]
    pub time_limit: u64,
    /// Seed of the random choices (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// An admin's token; every change is made as that agent.
    #[arg(long, default_value = "load-admin-token")]
    pub token: String,
    /// Module keys for request_help, used at random (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "load-qs-1,load-qs-2,load-qs-3,load-qs-4,load-qs-5,load-qs-6,load-qs-7,load-qs-8"
    )]
    pub module: Vec<String>,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<String>,
    /// Draw the restart time distribution to FILE (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<String>,
    /// Client sockets are bound in turn to 127.0.0.1 .. 127.0.0.N.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_addrs: u8,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Start the broker with --in-memory instead of the data directory: it
    /// keeps nothing, and the run must report every change lost.
    #[arg(long, hide = true)]
    pub broker_in_memory: bool,
}

/// How idle connections are spread over processes.
#[derive(Debug, Clone, Args)]
pub struct Spread {
    /// Sockets per process before worker processes are started.
    #[arg(long, hide = true, default_value_t = PER_PROCESS)]
    pub per_process: usize,
    /// The program worker processes run (default: this one).
    #[arg(long, hide = true)]
    pub worker_exe: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value_t = 16)]
    pub source_addrs: u8,
    #[arg(long, default_value_t = 0)]
    pub source_offset: usize,
    #[arg(long)]
    pub token: String,
    #[arg(long, default_value_t = 0)]
    pub customers: usize,
    #[arg(long, default_value_t = 0)]
    pub dashboards: usize,
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub max_seconds: u64,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if r.is_finite() && r > 0.0 && r <= 1_000_000.0 {
        Ok(r)
    } else {
        Err("must be more than 0 and at most 1,000,000".into())
    }
}

impl Cli {
    /// The `--seconds` of the chosen scenario.
    fn seconds(&self) -> u64 {
        match &self.command {
            Command::Fanout(a) => {
                let runs = if a.baseline_url.is_some() || a.baseline.is_some() {
                    2
                } else {
                    1
                };
                a.common.seconds * runs
            }
            Command::Lifecycle(a) => a.common.seconds,
            Command::Idle(a) => a.common.seconds,
            Command::Mixed(a) => a.common.seconds,
            Command::QueueDepth(a) => queue_depth::time_bound(a.common.seconds),
            Command::Crash(a) => a.time_limit,
            Command::Webhooks(a) => a.common.seconds + a.drain,
            // A server: it is not bounded (run_cli does not time it).
            Command::Bare(_) => 0,
            Command::Worker(a) => a.max_seconds,
        }
    }

    /// The `--json` and `--plot` files of the chosen scenario (`None` for
    /// the hidden worker).
    fn outputs(&self) -> Option<(Option<String>, Option<String>)> {
        let common = match &self.command {
            Command::Fanout(a) => &a.common,
            Command::Lifecycle(a) => &a.common,
            Command::Idle(a) => &a.common,
            Command::Mixed(a) => &a.common,
            Command::QueueDepth(a) => &a.common,
            Command::Webhooks(a) => &a.common,
            Command::Crash(a) => return Some((a.json.clone(), a.plot.clone())),
            Command::Bare(_) | Command::Worker(_) => return None,
        };
        Some((common.json.clone(), common.plot.clone()))
    }
}

/// Runs the scenario the command line names, prints its table, writes its
/// files. Returns the report (`None` for the hidden worker).
pub async fn run_cli(cli: Cli) -> anyhow::Result<Option<Report>> {
    raise_nofile_limit();
    if matches!(cli.command, Command::Bare(_)) {
        // A server, not a scenario: it runs until it is stopped.
        return scenario(cli).await;
    }
    let limit = Duration::from_secs(cli.seconds()) + HARD_EXTRA;
    let outputs = cli.outputs();
    let report = tokio::time::timeout(limit, scenario(cli))
        .await
        .map_err(|_| anyhow::anyhow!("the run exceeded its hard limit of {limit:?}"))??;
    let (Some(report), Some((json, plot))) = (report, outputs) else {
        return Ok(None);
    };
    println!("{}", report.table());
    if let Some(path) = &json {
        report.write_json(path)?;
    }
    if let Some(path) = &plot {
        plot::draw(path, &report.title, &report.latency)?;
    }
    Ok(Some(report))
}

async fn scenario(cli: Cli) -> anyhow::Result<Option<Report>> {
    Ok(Some(match cli.command {
        Command::Fanout(a) => fanout_cmd(a).await?,
        Command::Lifecycle(a) => {
            lifecycle::run(LifecycleOpts {
                target: a.common.target()?,
                token: a.common.token.clone(),
                modules: a.module.clone(),
                concurrency: a.concurrency as usize,
                seconds: a.common.seconds,
                progress: !a.common.no_progress,
            })
            .await?
        }
        Command::Idle(a) => {
            idle::run(&IdleOpts {
                target: a.common.target()?,
                token: a.common.token.clone(),
                connections: a.connections as usize,
                seconds: a.common.seconds,
                broker_pid: a.broker_pid,
                per_process: a.spread.per_process.max(1),
                worker_exe: a.spread.worker_exe.clone(),
                progress: !a.common.no_progress,
            })
            .await?
        }
        Command::Mixed(a) => {
            if a.dashboards as usize + a.customers as usize > MAX_CONNECTIONS {
                anyhow::bail!("--dashboards + --customers may not exceed {MAX_CONNECTIONS}");
            }
            mixed::run(&MixedOpts {
                fanout: FanoutOpts {
                    target: a.common.target()?,
                    dashboard_targets: Vec::new(),
                    token: a.common.token.clone(),
                    group: a.group.clone(),
                    dashboards: a.dashboards as usize,
                    seconds: a.common.seconds,
                    rate: Some(a.rate),
                    window: 0,
                    progress: !a.common.no_progress,
                },
                customers: a.customers as usize,
                per_process: a.spread.per_process.max(1),
                worker_exe: a.spread.worker_exe.clone(),
            })
            .await?
        }
        Command::QueueDepth(a) => {
            queue_depth::run(QueueDepthOpts {
                target: a.common.target()?,
                token: a.common.token.clone(),
                group: a.group.clone(),
                modules: a.module.clone(),
                cases: a.cases as usize,
                waiting: a.waiting as usize,
                seconds: a.common.seconds,
                connections: a.connections as usize,
                window: a.window as usize,
                batch: a.batch as usize,
                assignee: a.assignee.clone(),
                progress: !a.common.no_progress,
            })
            .await?
        }
        Command::Crash(a) => {
            crash::run(CrashOpts {
                broker: a.broker,
                config: a.config,
                data_dir: a.data_dir,
                keep: a.keep,
                rounds: a.rounds,
                clients: a.clients as usize,
                min_ms: a.min_ms,
                max_ms: a.max_ms,
                time_limit: Duration::from_secs(a.time_limit),
                seed: a.seed.unwrap_or_else(crash::fresh_seed),
                token: a.token,
                modules: a.module,
                source_addrs: a.source_addrs,
                progress: !a.no_progress,
                in_memory: a.broker_in_memory,
            })
            .await?
        }
        Command::Webhooks(a) => {
            webhooks::run(WebhooksOpts {
                target: a.common.target()?,
                token: a.common.token.clone(),
                group: a.group.clone(),
                drivers: a.drivers as usize,
                seconds: a.common.seconds,
                rate: a.rate,
                window: a.window,
                events: a.events.clone(),
                verify: a.verify,
                drain: Duration::from_secs(a.drain),
                mode: if a.receiver_only {
                    webhooks::Mode::ReceiverOnly
                } else if a.no_endpoint {
                    webhooks::Mode::NoEndpoint
                } else {
                    webhooks::Mode::Drive
                },
                progress: !a.common.no_progress,
            })
            .await?
        }
        Command::Bare(a) => {
            bare::serve(&a.host, a.port, a.stop_on_eof).await?;
            return Ok(None);
        }
        Command::Worker(w) => {
            let target = Target::new(&w.url, w.source_addrs)?.with_offset(w.source_offset);
            let mix = Mix {
                customers: w.customers,
                dashboards: w.dashboards,
            };
            if mix.total() > MAX_CONNECTIONS {
                anyhow::bail!("a worker holds at most {MAX_CONNECTIONS} connections");
            }
            idle::worker(target, &w.token, mix, w.max_seconds).await?;
            return Ok(None);
        }
    }))
}

async fn fanout_cmd(a: FanoutArgs) -> anyhow::Result<Report> {
    let url_baseline = match &a.baseline_url {
        Some(url) => Some(Target::new(url, a.common.source_addrs)?),
        None => None,
    };
    if a.dashboard_url.len() > 16 {
        anyhow::bail!("--dashboard-url may be given at most 16 times");
    }
    if !a.dashboard_url.is_empty() && (a.baseline.is_some() || a.baseline_url.is_some()) {
        anyhow::bail!(
            "--dashboard-url cannot be combined with a baseline (a baseline is one server)"
        );
    }
    let dashboard_targets = a
        .dashboard_url
        .iter()
        .map(|u| Target::new(u, a.common.source_addrs))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = FanoutOpts {
        target: a.common.target()?,
        dashboard_targets,
        token: a.common.token.clone(),
        group: a.group.clone(),
        dashboards: a.dashboards as usize,
        seconds: a.common.seconds,
        rate: a.rate,
        window: a.window,
        progress: !a.common.no_progress,
    };
    // Started before casebroker's run, so a baseline that cannot start
    // fails the run at once; idle until its turn. The guard kills it
    // however the run ends.
    let started = match a.baseline {
        Some(kind) => Some(Baseline::start(kind, a.baseline_exe.clone()).await?),
        None => None,
    };
    let pace = match a.rate {
        Some(r) => format!("{r} changes/s"),
        None => format!("as fast as they keep up, window {}", a.window),
    };
    let bar = Progress::new(opts.progress, opts.dashboards as u64);
    let main = fanout::run(&opts, &bar)
        .await
        .with_context(|| format!("fanout against {}", opts.target.url()))?;
    let mut r = Report::new(format!(
        "fanout: {} dashboards, {pace}, {} s",
        opts.dashboards, opts.seconds
    ));
    main.fill(&mut r, "");
    r.json = main.json();
    r.set("scenario", "fanout");
    r.set("url", opts.target.url());
    r.set("rate", a.rate);
    r.latency.push(("casebroker".into(), main.latency.clone()));
    r.failed = !main.clean();
    let baseline = match (&started, url_baseline) {
        (Some(b), _) => Some((
            b.kind().name(),
            Some(b.kind()),
            Target::new(&b.url(), a.common.source_addrs)?,
        )),
        (None, Some(target)) => Some(("baseline", None, target)),
        (None, None) => None,
    };
    if let Some((label, kind, target)) = baseline {
        let url = target.url().to_string();
        let other = fanout::run(&FanoutOpts { target, ..opts }, &bar)
            .await
            .with_context(|| format!("fanout against the baseline {url}"))?;
        if let Some(kind) = kind {
            r.row("baseline", format!("{} ({})", kind.name(), kind.describe()));
        }
        other.fill(&mut r, label);
        let ratio = ratio_of(main.delivered_per_sec(), other.delivered_per_sec());
        let p99_ratio = ratio_of(
            Summary::of(&main.latency).p99_ms,
            Summary::of(&other.latency).p99_ms,
        );
        r.row(format!("ratio casebroker / {label}"), times(ratio));
        r.row(format!("p99 ratio casebroker / {label}"), times(p99_ratio));
        r.set("ratio", ratio.map(round3));
        r.set("p99_ratio", p99_ratio.map(round3));
        let mut b = other.json();
        b.insert("url".into(), url.into());
        b.insert(
            "kind".into(),
            kind.map_or("url", baseline::Kind::name).into(),
        );
        b.insert("corked".into(), kind.map(baseline::Kind::corked).into());
        r.set("baseline", serde_json::Value::Object(b));
        r.latency.push((label.into(), other.latency.clone()));
        r.failed |= !other.clean();
    }
    drop(started);
    Ok(r)
}

/// `a / b`, when `b` is a positive figure.
fn ratio_of(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// A ratio as the table shows it: `0.83×`.
fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}×"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_are_enforced_by_the_parser() {
        let parse = |args: &[&str]| Cli::try_parse_from(args);
        assert!(parse(&["lt", "fanout", "--seconds", "601"]).is_err());
        assert!(parse(&["lt", "fanout", "--dashboards", "100001"]).is_err());
        assert!(parse(&["lt", "idle", "--connections", "100001"]).is_err());
        assert!(parse(&["lt", "fanout", "--rate", "0"]).is_err());
        assert!(parse(&["lt", "queue-depth", "--cases", "0"]).is_err());
        assert!(parse(&["lt", "queue-depth", "--cases", "1000001"]).is_err());
        assert!(parse(&["lt", "queue-depth", "--waiting", "15001"]).is_err());
        assert!(parse(&["lt", "queue-depth", "--window", "0"]).is_err());
        assert!(parse(&["lt", "crash", "--rounds", "0"]).is_err());
        assert!(parse(&["lt", "crash", "--rounds", "1001"]).is_err());
        assert!(parse(&["lt", "crash", "--clients", "65"]).is_err());
        assert!(parse(&["lt", "crash", "--max-ms", "60001"]).is_err());
        assert!(parse(&["lt", "crash", "--url", "ws://127.0.0.1:1/"]).is_err());
        assert!(parse(&["lt", "webhooks", "--drivers", "65"]).is_err());
        assert!(parse(&["lt", "webhooks", "--drain", "0"]).is_err());
        assert!(parse(&["lt", "webhooks", "--verify", "--no-endpoint"]).is_err());
        assert!(parse(&["lt", "webhooks", "--receiver-only", "--rate", "5"]).is_err());
        let Command::Webhooks(w) = parse(&["lt", "webhooks"]).unwrap().command else {
            panic!()
        };
        assert_eq!(
            (w.drivers, w.window, w.drain, w.events.as_slice(), w.verify),
            (4, 200, 30, &["*".to_string()][..], false)
        );
        let Command::Crash(c) = parse(&["lt", "crash"]).unwrap().command else {
            panic!()
        };
        assert_eq!(
            (c.rounds, c.clients, c.min_ms, c.max_ms, c.keep),
            (100, 4, 50, 500, false)
        );
        assert_eq!(c.broker, PathBuf::from("target/release/casebroker"));
        assert_eq!(c.config, PathBuf::from("loadtest/casebroker-load.toml"));
        assert!(c.data_dir.is_none());
        let qd = parse(&["lt", "queue-depth"]).unwrap();
        let Command::QueueDepth(q) = qd.command else {
            panic!()
        };
        assert_eq!(
            (q.cases, q.waiting, q.group.as_str()),
            (100_000, 1000, "support")
        );
        let ok = parse(&["lt", "lifecycle", "--module", "a,b"]).unwrap();
        let Command::Lifecycle(l) = ok.command else {
            panic!()
        };
        assert_eq!(l.module, ["a", "b"]);
        assert_eq!(l.common.url, DEFAULT_URL);
    }

    #[test]
    fn baseline_flags_parse() {
        let parse = |args: &[&str]| Cli::try_parse_from(args);
        for (arg, kind) in [
            ("bare", baseline::Kind::Bare),
            ("node", baseline::Kind::Node),
            ("node-corked", baseline::Kind::NodeCorked),
        ] {
            let Command::Fanout(f) = parse(&["lt", "fanout", "--baseline", arg]).unwrap().command
            else {
                panic!()
            };
            assert_eq!(f.baseline, Some(kind));
            assert_eq!(kind.name(), arg);
        }
        assert!(parse(&["lt", "fanout", "--baseline", "java"]).is_err());
        let both = [
            "lt",
            "fanout",
            "--baseline",
            "bare",
            "--baseline-url",
            "ws://127.0.0.1:8090/",
        ];
        assert!(parse(&both).is_err());
        let Command::Bare(b) = parse(&["lt", "bare"]).unwrap().command else {
            panic!()
        };
        assert_eq!(
            (b.host.as_str(), b.port, b.stop_on_eof),
            ("127.0.0.1", 8091, false)
        );
    }

    #[tokio::test]
    async fn bare_refuses_hosts_outside_loopback() {
        for host in ["10.0.0.1", "0.0.0.0", "example.com", "::"] {
            let cli = Cli::try_parse_from(["lt", "bare", "--host", host, "--port", "0"]).unwrap();
            let Err(e) = run_cli(cli).await else {
                panic!("{host} was accepted")
            };
            assert!(
                e.downcast_ref::<crate::NotLoopback>().is_some(),
                "{host}: {e}"
            );
        }
    }

    #[test]
    fn ratios_show_two_decimals() {
        assert_eq!(times(ratio_of(83.0, 100.0)), "0.83×");
        assert_eq!(times(ratio_of(1.0, 0.0)), "n/a");
    }
}
