//! The command line: flags of every scenario with their caps, and
//! [`run_cli`], which runs one scenario within a hard time bound, prints
//! the summary table and writes `--json` and `--plot`.
//!
//! # Layout
//! - `command`: [`Cli`] and its subcommands, with the time bound and the
//!   output files of each.
//! - `flags`: the flags of every scenario, with their caps and defaults.
//! - `fanout_cmd`: the `fanout` command, with the same run against a
//!   baseline and the ratios.

mod command;
mod fanout_cmd;
mod flags;

use std::time::Duration;

use self::fanout_cmd::fanout_cmd;
use crate::bare;
use crate::crash::{self, CrashOpts};
use crate::fanout::FanoutOpts;
use crate::idle::{self, IdleOpts, Mix};
use crate::lifecycle::{self, LifecycleOpts};
use crate::mixed::{self, MixedOpts};
use crate::plot;
use crate::queue_depth::{self, QueueDepthOpts};
use crate::report::Report;
use crate::target::{Target, raise_nofile_limit};
use crate::webhooks::{self, WebhooksOpts};

pub use self::command::{Cli, Command};
pub use self::flags::{
    BareArgs, Common, CrashArgs, FanoutArgs, IdleArgs, LifecycleArgs, MixedArgs, QueueDepthArgs,
    Spread, WebhooksArgs, WorkerArgs,
};

/// The longest run `--seconds` allows.
pub const MAX_SECONDS: u64 = 600;
/// The most connections any scenario opens.
pub const MAX_CONNECTIONS: usize = 100_000;
/// Time allowed beyond `--seconds` for connecting, draining and closing;
/// past it the run is abandoned.
const HARD_EXTRA: Duration = Duration::from_secs(600);

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
            let mut targets = vec![a.common.target()?];
            for url in &a.node_url {
                targets.push(crate::target::Target::new(url, a.common.source_addrs)?);
            }
            lifecycle::run(LifecycleOpts {
                targets,
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

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
}
