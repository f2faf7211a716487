//! The state of a crash run and one round of it: [`Tally`] counts what the
//! run saw, [`Run`] holds the broker, the dashboard and the cases checked
//! so far, and [`Run::round`] drives the clients, kills the broker after a
//! random delay, starts it again on the same directory, resumes the
//! dashboard and checks the round's cases.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use casebroker::protocol::StreamPos;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::broker::Broker;
use super::check::Checked;
use super::counts::Counts;
use super::dashboard::{Answer, Watch, subscribe};
use super::workload::{Ctx, Driver, client_round};
use super::{CrashOpts, Rng, WIND_DOWN};
use crate::http::Http;
use crate::stats::round3;
use crate::target::Target;

/// Cases checked once are checked again every this many rounds.
const RECHECK_EVERY: u32 = 10;
/// Losses and surprises listed in the JSON (all are counted).
const LISTED: usize = 20;

/// Everything a run counts.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) rounds: u32,
    pub(super) acked: Counts,
    pub(super) recovered: u64,
    pub(super) lost: u64,
    pub(super) losses: Vec<String>,
    pub(super) surprises: Vec<String>,
    pub(super) surprise_count: u64,
    /// Cases showing their unanswered last change.
    pub(super) beyond: u64,
    /// Changes whose answer never came (at most one per client and round).
    pub(super) unanswered: u64,
    /// Creations whose answer never came but whose case exists.
    pub(super) unanswered_found: u64,
    pub(super) resumed: u64,
    pub(super) snapshots: u64,
    pub(super) epoch_changed: u64,
    /// Resumes answered `resumed` at a seq behind the one the dashboard saw.
    pub(super) went_back: u64,
    /// What went wrong with resumes and the epoch, first ones.
    pub(super) resume_issues: Vec<String>,
    pub(super) errors: u64,
    pub(super) first_errors: Vec<String>,
    pub(super) drive: Duration,
    /// Per round: the kill delay, the changes acknowledged, the restart.
    pub(super) per_round: Vec<Value>,
    pub(super) aborted: Option<String>,
}

impl Tally {
    pub(super) fn list_loss(&mut self, why: String) {
        if self.losses.len() < LISTED {
            self.losses.push(why);
        }
    }

    /// `n` changes counted as recovered turn out lost.
    pub(super) fn lose(&mut self, n: u64, why: String) {
        let n = n.min(self.recovered);
        self.lost += n;
        self.recovered -= n;
        self.list_loss(why);
    }

    pub(super) fn surprise(&mut self, why: String) {
        self.surprise_count += 1;
        if self.surprises.len() < LISTED {
            self.surprises.push(why);
        }
    }

    pub(super) fn resume_issue(&mut self, why: String) {
        if self.resume_issues.len() < LISTED {
            self.resume_issues.push(why);
        }
    }

    pub(super) fn error(&mut self, why: String) {
        self.errors += 1;
        if self.first_errors.len() < LISTED {
            self.first_errors.push(why);
        }
    }
}

pub(super) struct Run {
    pub(super) opts: CrashOpts,
    pub(super) data: PathBuf,
    pub(super) rng: Rng,
    pub(super) broker: Broker,
    pub(super) me: String,
    pub(super) groups: Vec<(String, Vec<String>)>,
    pub(super) epoch: String,
    /// The dashboard following the current broker.
    pub(super) dash: Option<(JoinHandle<()>, Arc<Mutex<Watch>>)>,
    pub(super) checked: HashMap<String, Checked>,
    /// Codes whose creation was never answered and that were found.
    pub(super) orphans: HashSet<String>,
    pub(super) restarts: hdrhistogram::Histogram<u64>,
    pub(super) first_start: Duration,
    pub(super) events: u64,
    pub(super) gaps: u64,
    pub(super) first_gap: Option<String>,
    pub(super) wrong_epoch: u64,
    pub(super) t: Tally,
}

impl Run {
    fn target(&self) -> anyhow::Result<Target> {
        Target::new(&self.broker.url(), self.opts.source_addrs)
    }

    /// One round: drive, kill, restart, check.
    pub(super) async fn round(&mut self, r: u32) -> anyhow::Result<()> {
        let ctx = Arc::new(Ctx {
            round: r,
            target: self.target()?,
            addr: self.broker.addr,
            token: self.opts.token.clone(),
            me: self.me.clone(),
            groups: self.groups.clone(),
            modules: self.opts.modules.clone(),
            killed: AtomicBool::new(false),
        });
        let (ready_tx, mut ready) = tokio::sync::mpsc::channel(self.opts.clients);
        let (go_tx, go) = tokio::sync::watch::channel(false);
        let tasks: Vec<JoinHandle<Driver>> = (0..self.opts.clients)
            .map(|k| {
                let d = Driver {
                    k,
                    ctx: ctx.clone(),
                    rng: Rng::new(self.rng.next_u64()),
                    http: Http::new(ctx.addr),
                    logs: Vec::new(),
                    errors: Vec::new(),
                    customers: Vec::new(),
                    lines: 0,
                };
                tokio::spawn(client_round(d, ready_tx.clone(), go.clone()))
            })
            .collect();
        drop(ready_tx);
        let all_ready = async {
            for _ in 0..self.opts.clients {
                if ready.recv().await.is_none() {
                    break;
                }
            }
        };
        if tokio::time::timeout(WIND_DOWN, all_ready).await.is_err() {
            bail!("round {r}: the clients did not connect within {WIND_DOWN:?}");
        }

        // Drive until the kill.
        let delay = Duration::from_millis(self.rng.range(self.opts.min_ms, self.opts.max_ms));
        let _ = go_tx.send(true);
        tokio::time::sleep(delay).await;
        self.t.drive += delay;
        if let Some(status) = self.broker.exited() {
            bail!(
                "round {r}: the broker exited by itself ({status}); {}",
                self.broker.output()
            );
        }
        ctx.killed.store(true, Ordering::SeqCst);
        self.broker.kill().await?;

        let mut logs = Vec::new();
        for task in tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout(WIND_DOWN, task).await {
                Ok(Ok(d)) => {
                    for e in d.errors {
                        self.t.error(e);
                    }
                    logs.extend(d.logs);
                }
                Ok(Err(e)) => self
                    .t
                    .error(format!("round {r}: a client task failed: {e}")),
                Err(_) => {
                    abort.abort();
                    self.t.error(format!(
                        "round {r}: a client did not notice the kill within {WIND_DOWN:?}"
                    ));
                }
            }
        }
        let last = self.end_dashboard().await;

        // Restart on the same directory.
        let (broker, took) = Broker::start(&self.opts, &self.data)
            .await
            .with_context(|| format!("round {r}: restart after the kill"))?;
        self.broker = broker;
        self.restarts
            .saturating_record((took.as_micros() as u64).max(1));

        // The dashboard resumes where it left off.
        let target = self.target()?;
        let resume = StreamPos {
            epoch: last.epoch.clone(),
            seq: last.seq,
        };
        let (c, answer) = subscribe(&target, &self.opts.token, Some(resume))
            .await
            .with_context(|| format!("round {r}: the dashboard's resume"))?;
        let (epoch, from) = match answer {
            Answer::Resumed { epoch, seq } => {
                self.t.resumed += 1;
                if seq < last.seq {
                    self.t.went_back += 1;
                    self.t.resume_issue(format!(
                        "round {r}: resumed at seq {seq}, behind the seq {} the dashboard saw",
                        last.seq
                    ));
                }
                (epoch, last.seq)
            }
            Answer::Snapshot { epoch, seq } => {
                self.t.snapshots += 1;
                self.t.resume_issue(format!(
                    "round {r}: resume {{epoch {}, seq {}}} was answered with a snapshot (epoch {epoch}, seq {seq})",
                    last.epoch, last.seq
                ));
                (epoch, seq)
            }
        };
        if epoch != self.epoch {
            self.t.epoch_changed += 1;
            self.t.resume_issue(format!(
                "round {r}: the epoch changed from {} to {epoch}",
                self.epoch
            ));
        }
        self.start_dashboard(c, epoch, from);

        // Every acknowledged change is there.
        let before = self.t.acked.total();
        self.check(r, logs).await?;
        self.t.per_round.push(json!({
            "round": r,
            "kill_after_ms": delay.as_millis() as u64,
            "acknowledged": self.t.acked.total() - before,
            "restart_ms": round3(took.as_secs_f64() * 1000.0),
        }));
        if r.is_multiple_of(RECHECK_EVERY) || r == self.opts.rounds {
            self.recheck(r, r == self.opts.rounds).await?;
        }
        self.t.rounds = r;
        Ok(())
    }
}
