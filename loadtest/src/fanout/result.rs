//! What a fan-out run measured: [`FanoutResult`], with the delivered and
//! expected events, every kind of loss, the driver's errors and the push
//! latency; the table rows of a run (labelled for a baseline run) and its
//! JSON object.

use hdrhistogram::Histogram;

use crate::report::{Report, per_sec, thousands};
use crate::stats::{Summary, round3};

/// What a fan-out run measured.
#[derive(Debug)]
pub struct FanoutResult {
    pub dashboards: usize,
    pub changes: u64,
    pub driver_errors: u64,
    pub first_error: Option<String>,
    /// Seconds from the first change to the last dashboard's last event.
    pub secs: f64,
    pub delivered: u64,
    pub expected: u64,
    /// Events missing, out of order or unexpected, summed over dashboards.
    pub lost: u64,
    pub gaps: u64,
    pub out_of_order: u64,
    pub missing_at_end: u64,
    pub unexpected: u64,
    pub disconnected: u64,
    /// The first dashboard that saw a hole: (dashboard, expected seq, got).
    pub first_gap: Option<(usize, u64, u64)>,
    pub latency: Histogram<u64>,
}

impl FanoutResult {
    pub fn delivered_per_sec(&self) -> f64 {
        self.delivered as f64 / self.secs.max(1e-9)
    }

    pub fn changes_per_sec(&self) -> f64 {
        self.changes as f64 / self.secs.max(1e-9)
    }

    /// True when nothing was lost and the driver saw no error.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.driver_errors == 0 && self.disconnected == 0
    }

    /// Adds the rows and JSON keys of this run to a report; `tag` prefixes
    /// them for a second (baseline) run.
    pub fn fill(&self, r: &mut Report, label: &str) {
        let s = Summary::of(&self.latency);
        let p = |name: &str| {
            if label.is_empty() {
                name.to_string()
            } else {
                format!("{name} ({label})")
            }
        };
        r.row(p("dashboards"), self.dashboards);
        r.row(
            p("changes"),
            format!(
                "{} ({})",
                thousands(self.changes),
                per_sec(self.changes_per_sec())
            ),
        );
        r.row(
            p("events delivered"),
            format!(
                "{} of {} ({})",
                thousands(self.delivered),
                thousands(self.expected),
                per_sec(self.delivered_per_sec())
            ),
        );
        r.row(
            p("lost / out of order"),
            format!(
                "{} (gaps {}, out of order {}, missing at end {}, unexpected {})",
                self.lost, self.gaps, self.out_of_order, self.missing_at_end, self.unexpected
            ),
        );
        if let Some((d, want, got)) = self.first_gap {
            r.row(
                p("first hole"),
                format!("dashboard {d} expected seq {want}, got {got}"),
            );
        }
        r.row(p("disconnected dashboards"), self.disconnected);
        if self.driver_errors > 0 {
            r.row(
                p("driver errors"),
                format!(
                    "{} (first: {})",
                    self.driver_errors,
                    self.first_error.as_deref().unwrap_or("")
                ),
            );
        }
        r.row(p("push latency p50/p99/p999/max"), s.line());
    }

    /// The JSON object of one run.
    pub fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        let s = Summary::of(&self.latency);
        let lat = s.to_json();
        let mut m = serde_json::Map::new();
        m.insert(
            "delivered_per_sec".into(),
            round3(self.delivered_per_sec()).into(),
        );
        m.insert("lost".into(), self.lost.into());
        for k in ["p50_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms"] {
            m.insert(k.into(), lat[k].clone());
        }
        m.insert("dashboards".into(), self.dashboards.into());
        m.insert("changes".into(), self.changes.into());
        m.insert(
            "changes_per_sec".into(),
            round3(self.changes_per_sec()).into(),
        );
        m.insert("delivered".into(), self.delivered.into());
        m.insert("expected".into(), self.expected.into());
        m.insert("gaps".into(), self.gaps.into());
        m.insert("out_of_order".into(), self.out_of_order.into());
        m.insert("missing_at_end".into(), self.missing_at_end.into());
        m.insert("unexpected".into(), self.unexpected.into());
        m.insert("disconnected".into(), self.disconnected.into());
        m.insert("driver_errors".into(), self.driver_errors.into());
        if let Some((d, want, got)) = self.first_gap {
            m.insert(
                "first_hole".into(),
                serde_json::json!({"dashboard": d, "expected_seq": want, "got_seq": got}),
            );
        }
        m.insert("latency_samples".into(), s.count.into());
        m.insert("seconds".into(), round3(self.secs).into());
        m
    }
}
