//! The crash run's report: the table rows (acknowledged, recovered and
//! lost changes, resumes, the epoch, restart times) and the JSON, and
//! whether the run failed.

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use super::round::Run;
use crate::report::{Report, per_sec, thousands};
use crate::stats::{Summary, fmt_ms, round3};

pub(super) fn report(run: &Run, data: &Path, kept: bool, took: Duration) -> Report {
    let o = &run.opts;
    let t = &run.t;
    let acked = t.acked.total();
    let restart = Summary::of(&run.restarts);
    let mut r = Report::new(format!(
        "crash: {} rounds, {} clients, SIGKILL after {}..{} ms",
        o.rounds, o.clients, o.min_ms, o.max_ms
    ));
    r.row(
        "rounds (kill + restart)",
        format!("{} of {}", t.rounds, o.rounds),
    );
    let a = &t.acked;
    r.row(
        "acknowledged changes",
        format!(
            "{} ({} creates, {} assigns, {} joins, {} chat lines, {} closes)",
            thousands(acked),
            thousands(a.creates),
            thousands(a.assigns),
            thousands(a.joins),
            thousands(a.chats),
            thousands(a.closes)
        ),
    );
    let drive = t.drive.as_secs_f64();
    r.row("  while driving", per_sec(acked as f64 / drive.max(1e-9)));
    r.row("recovered", thousands(t.recovered));
    r.row("lost", thousands(t.lost));
    if let Some(first) = t.losses.first() {
        r.row("first loss", first);
    }
    r.row(
        "unanswered changes",
        format!(
            "{} ({} shown after the restart, {} unanswered creations found)",
            t.unanswered, t.beyond, t.unanswered_found
        ),
    );
    if t.surprise_count > 0 {
        r.row("unexpected states", t.surprise_count);
        if let Some(first) = t.surprises.first() {
            r.row("first unexpected", first);
        }
    }
    r.row(
        "resume after restart",
        format!("{} resumed, {} snapshot", t.resumed, t.snapshots),
    );
    if let Some(first) = t.resume_issues.first() {
        r.row("first resume failure", first);
    }
    r.row(
        "epoch",
        if t.epoch_changed == 0 {
            format!("unchanged ({})", run.epoch)
        } else {
            format!("changed {} times", t.epoch_changed)
        },
    );
    r.row(
        "dashboard events",
        format!("{} ({} out of sequence)", thousands(run.events), run.gaps),
    );
    r.row("restart p50/p99/p999/max", restart.line());
    r.row("first start", format!("{} ms", fmt_ms(first_ms(run))));
    r.row("errors", t.errors);
    if let Some(first) = t.first_errors.first() {
        r.row("first error", first);
    }
    if let Some(why) = &t.aborted {
        r.row("aborted", why);
    }
    r.row(
        "data directory",
        format!(
            "{}{}",
            data.display(),
            if kept { " (kept)" } else { " (removed)" }
        ),
    );
    r.row("seed", o.seed);
    r.row("took", format!("{:.1} s", took.as_secs_f64()));

    let mut restart_json = restart.to_json();
    if let Value::Object(m) = &mut restart_json {
        m.insert("count".into(), run.restarts.len().into());
    }
    let j = |v: &Vec<String>| Value::Array(v.iter().cloned().map(Value::from).collect());
    let mut m = Map::new();
    m.insert("scenario".into(), "crash".into());
    m.insert("rounds".into(), o.rounds.into());
    m.insert("rounds_done".into(), t.rounds.into());
    m.insert("clients".into(), o.clients.into());
    m.insert("min_ms".into(), o.min_ms.into());
    m.insert("max_ms".into(), o.max_ms.into());
    m.insert("seed".into(), o.seed.into());
    m.insert("acknowledged".into(), acked.into());
    m.insert("acknowledged_by_kind".into(), t.acked.json());
    m.insert(
        "acknowledged_per_sec".into(),
        round3(acked as f64 / drive.max(1e-9)).into(),
    );
    m.insert("recovered".into(), t.recovered.into());
    m.insert("lost".into(), t.lost.into());
    m.insert("losses".into(), j(&t.losses));
    m.insert("unexpected".into(), t.surprise_count.into());
    m.insert("unexpected_states".into(), j(&t.surprises));
    m.insert("unanswered".into(), t.unanswered.into());
    m.insert("unanswered_shown".into(), t.beyond.into());
    m.insert(
        "unanswered_creations_found".into(),
        t.unanswered_found.into(),
    );
    m.insert("resumed".into(), t.resumed.into());
    m.insert("snapshot".into(), t.snapshots.into());
    m.insert("resumed_behind".into(), t.went_back.into());
    m.insert("resume_failures".into(), j(&t.resume_issues));
    m.insert("epoch".into(), run.epoch.clone().into());
    m.insert("epoch_changed".into(), t.epoch_changed.into());
    m.insert("events".into(), run.events.into());
    m.insert("out_of_sequence".into(), run.gaps.into());
    m.insert("first_out_of_sequence".into(), run.first_gap.clone().into());
    m.insert("wrong_epoch_events".into(), run.wrong_epoch.into());
    m.insert("restart".into(), restart_json.clone());
    m.insert("per_round".into(), Value::Array(t.per_round.clone()));
    for k in ["p50_ms", "p99_ms", "p999_ms", "max_ms"] {
        m.insert(k.into(), restart_json[k].clone());
    }
    m.insert("first_start_ms".into(), round3(first_ms(run)).into());
    m.insert("errors".into(), t.errors.into());
    m.insert("first_errors".into(), j(&t.first_errors));
    m.insert("aborted".into(), t.aborted.clone().into());
    m.insert("data_dir".into(), data.display().to_string().into());
    m.insert("kept".into(), kept.into());
    m.insert("seconds".into(), round3(took.as_secs_f64()).into());
    r.json = m;
    r.latency.push(("restart".into(), run.restarts.clone()));
    r.failed = t.lost > 0
        || t.surprise_count > 0
        || t.errors > 0
        || t.snapshots > 0
        || t.went_back > 0
        || t.epoch_changed > 0
        || run.gaps > 0
        || run.wrong_epoch > 0
        || t.aborted.is_some()
        || t.rounds < o.rounds;
    r
}

fn first_ms(run: &Run) -> f64 {
    run.first_start.as_secs_f64() * 1000.0
}
