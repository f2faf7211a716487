//! The flags of each subcommand: [`Common`], which every scenario has;
//! one struct per subcommand, its caps given by clap's value parsers and
//! its defaults; [`Spread`], how idle connections are spread over
//! processes; and [`WorkerArgs`], the hidden worker's.

use std::path::PathBuf;

use clap::Args;

use crate::baseline;
use crate::idle::PER_PROCESS;
use crate::target::{DEFAULT_URL, Target};

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
    pub(super) fn target(&self) -> anyhow::Result<Target> {
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
    /// Another node of the same cluster (repeatable; loopback only): with
    /// N URLs in all (--url first), worker w's agent connects to URL w mod
    /// N and its customers to URL w+1 mod N, so every case spans two nodes.
    #[arg(long, value_name = "URL")]
    pub node_url: Vec<String>,
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

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
        assert!(l.node_url.is_empty());
        let nodes = parse(&[
            "lt",
            "lifecycle",
            "--node-url",
            "ws://127.0.0.1:8082/v1/ws",
            "--node-url",
            "ws://127.0.0.1:8083/v1/ws",
        ])
        .unwrap();
        let Command::Lifecycle(l) = nodes.command else {
            panic!()
        };
        assert_eq!(l.node_url.len(), 2);
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
}
