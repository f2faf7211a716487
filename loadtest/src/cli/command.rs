//! The command line itself: [`Cli`], with its global flags, and
//! [`Command`], one subcommand per scenario (and the `bare` server and the
//! hidden `worker`); with the time bound each one's run gets and the
//! `--json` and `--plot` files it writes.

use clap::{Parser, Subcommand};

use super::flags::{
    BareArgs, CrashArgs, FanoutArgs, IdleArgs, LifecycleArgs, MixedArgs, QueueDepthArgs,
    WebhooksArgs, WorkerArgs,
};
use crate::queue_depth;

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

impl Cli {
    /// The `--seconds` of the chosen scenario.
    pub(super) fn seconds(&self) -> u64 {
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
    pub(super) fn outputs(&self) -> Option<(Option<String>, Option<String>)> {
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
