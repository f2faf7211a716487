//! The measuring phases: [`OpStats`], one operation's count, clock and
//! latency in one phase; [`Phase`], the three operations of a phase;
//! [`phase`], which runs rounds of create, assign and close (and the
//! untimed delete) until every operation's clock is full; and the deep /
//! empty ratios and the JSON of a phase that the report is made of.

use std::time::{Duration, Instant};

use anyhow::bail;
use casebroker::protocol::ClientMsg;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use super::pipeline::{Step, deal};
use super::state::Run;
use super::{OPS, phase_limit};
use crate::report::{per_sec, thousands};
use crate::stats::{Summary, fmt_ms, histogram, round3};

/// One operation's measurement in one phase.
pub(super) struct OpStats {
    ops: u64,
    errors: u64,
    secs: f64,
    pub(super) latency: Histogram<u64>,
}

impl OpStats {
    pub(super) fn new() -> OpStats {
        OpStats {
            ops: 0,
            errors: 0,
            secs: 0.0,
            latency: histogram(),
        }
    }

    fn add(&mut self, s: &Step) {
        self.ops += s.ok;
        self.errors += s.errors;
        self.secs += s.secs;
        self.latency.add(&s.latency).expect("same bounds");
    }

    /// When a step of this operation must stop sending: once its clock has
    /// `secs` in all (from now), and never past `limit`.
    fn until(&self, secs: f64, limit: Instant) -> Instant {
        let left = Duration::from_secs_f64((secs - self.secs).max(0.0));
        (Instant::now() + left).min(limit)
    }

    fn rate(&self) -> Option<f64> {
        (self.ops > 0 && self.secs > 0.0).then(|| self.ops as f64 / self.secs)
    }

    pub(super) fn line(&self) -> String {
        let Some(rate) = self.rate() else {
            return "no samples".into();
        };
        let s = Summary::of(&self.latency);
        format!(
            "{}, p50/p99 {} / {} ms ({} in {:.1} s)",
            per_sec(rate),
            fmt_ms(s.p50_ms),
            fmt_ms(s.p99_ms),
            thousands(self.ops),
            self.secs
        )
    }

    fn json(&self) -> Value {
        let s = Summary::of(&self.latency).to_json();
        json!({
            "ops": self.ops,
            "errors": self.errors,
            "seconds": round3(self.secs),
            "per_sec": self.rate().map(round3),
            "p50_ms": s["p50_ms"],
            "p99_ms": s["p99_ms"],
            "p999_ms": s["p999_ms"],
            "max_ms": s["max_ms"],
        })
    }
}

/// One measuring phase: the three operations.
pub(super) struct Phase {
    pub(super) ops: [OpStats; 3],
    pub(super) rounds: u64,
    /// The phase ran into [`phase_limit`] before every clock was full.
    pub(super) hit_limit: bool,
}

/// Measures the three operations for `seconds` each.
pub(super) async fn phase(run: &mut Run, label: &'static str) -> anyhow::Result<Phase> {
    let secs = run.opts.seconds as f64;
    let round = run.opts.round_size();
    let mut p = Phase {
        ops: [OpStats::new(), OpStats::new(), OpStats::new()],
        rounds: 0,
        hit_limit: false,
    };
    let limit = Instant::now() + phase_limit(run.opts.seconds);
    run.bar.phase(label, 3 * run.opts.seconds);
    while p.ops.iter().any(|o| o.secs < secs) {
        if Instant::now() >= limit {
            p.hit_limit = true;
            break;
        }
        p.rounds += 1;
        let k = p.rounds;
        let names = (0..round)
            .map(|i| format!("queue-depth {label} {k}.{i}"))
            .collect();
        let timed = p.ops[0].secs < secs;
        let until = if timed {
            p.ops[0].until(secs, limit)
        } else {
            limit
        };
        let created = run.create(names, Some(until)).await?;
        if timed {
            p.ops[0].add(&created);
        }
        let codes = created.codes;
        if codes.is_empty() && timed && created.first_error.is_none() {
            // The step's clock ran out before it could send anything: the
            // create budget is spent, and the next round is untimed.
            p.ops[0].secs = p.ops[0].secs.max(secs);
            continue;
        }
        if codes.is_empty() {
            if Instant::now() >= limit {
                p.hit_limit = true;
                break;
            }
            bail!(
                "create_case in group {} created no case: {}",
                run.opts.group,
                created.first_error.unwrap_or_default()
            );
        }
        if p.ops[1].secs < secs {
            let to = run.opts.assignee.clone();
            // Each case there and back in turn, so a step stopped by the
            // clock has sent as many of one as of the other.
            let cmds = deal(codes.iter().cloned(), run.agents.len())
                .into_iter()
                .map(|share| {
                    share
                        .into_iter()
                        .flat_map(|code| {
                            [
                                ClientMsg::Assign {
                                    code: code.clone(),
                                    assignee: Some(to.clone()),
                                },
                                ClientMsg::Assign {
                                    code,
                                    assignee: None,
                                },
                            ]
                        })
                        .collect()
                })
                .collect();
            let s = run
                .step(cmds, "case", Some(p.ops[1].until(secs, limit)))
                .await?;
            p.ops[1].add(&s);
        }
        if p.ops[2].secs < secs {
            let cmds = deal(
                codes.iter().map(|code| ClientMsg::Close {
                    code: Some(code.clone()),
                }),
                run.agents.len(),
            );
            let s = run
                .step(cmds, "case", Some(p.ops[2].until(secs, limit)))
                .await?;
            p.ops[2].add(&s);
        }
        run.delete(&codes, None).await?;
        let done: f64 = p.ops.iter().map(|o| o.secs.min(secs)).sum();
        run.bar.set(
            done as u64,
            format!(
                "{} / {} / {} (create / assign / close)",
                per_sec(p.ops[0].rate().unwrap_or(0.0)),
                per_sec(p.ops[1].rate().unwrap_or(0.0)),
                per_sec(p.ops[2].rate().unwrap_or(0.0)),
            ),
        );
    }
    Ok(p)
}

pub(super) fn ratio(deep: &OpStats, empty: &OpStats) -> Option<f64> {
    Some(deep.rate()? / empty.rate()?)
}

pub(super) fn latency_ratio(deep: &OpStats, empty: &OpStats, q: f64) -> Option<f64> {
    if deep.latency.is_empty() || empty.latency.is_empty() {
        return None;
    }
    let e = empty.latency.value_at_quantile(q).max(1) as f64;
    Some(deep.latency.value_at_quantile(q) as f64 / e)
}

pub(super) fn phase_json(p: &Phase) -> Value {
    let mut m = Map::new();
    for (name, o) in OPS.iter().zip(&p.ops) {
        m.insert(name.to_string(), o.json());
    }
    m.insert("rounds".into(), p.rounds.into());
    m.insert("hit_time_limit".into(), p.hit_limit.into());
    Value::Object(m)
}
