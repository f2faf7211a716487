//! What a run shows and leaves behind: the progress bar while it runs, the
//! one-screen summary table, and the `--json` file with its fixed keys.

use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value};

/// The keys every `--json` file has (`null` where they do not apply).
pub const JSON_KEYS: [&str; 7] = [
    "delivered_per_sec",
    "lost",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "cases_per_sec",
    "rss_bytes_per_connection",
];

/// The outcome of one scenario.
pub struct Report {
    pub title: String,
    /// Label and value rows of the summary table.
    pub rows: Vec<(String, String)>,
    /// The `--json` object (the fixed keys are added when missing).
    pub json: Map<String, Value>,
    /// Latency distributions for `--plot`, by series name.
    pub latency: Vec<(String, Histogram<u64>)>,
    /// True when the run saw something wrong (lost events, failures):
    /// the binary then exits with 1.
    pub failed: bool,
}

impl Report {
    pub fn new(title: impl Into<String>) -> Report {
        Report {
            title: title.into(),
            rows: Vec::new(),
            json: Map::new(),
            latency: Vec::new(),
            failed: false,
        }
    }

    pub fn row(&mut self, label: impl Into<String>, value: impl std::fmt::Display) {
        self.rows.push((label.into(), value.to_string()));
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.json.insert(key.to_string(), value.into());
    }

    /// The summary table, boxed, ready to print.
    pub fn table(&self) -> String {
        let lw = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let vw = self.rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        let width = (lw + vw + 3).max(self.title.len());
        let mut out = String::new();
        out.push_str(&format!("┌{}┐\n", "─".repeat(width + 2)));
        out.push_str(&format!("│ {:<width$} │\n", self.title));
        out.push_str(&format!("├{}┤\n", "─".repeat(width + 2)));
        for (l, v) in &self.rows {
            let pad = width - lw - 3;
            out.push_str(&format!("│ {l:<lw$} │ {v:<pad$} │\n"));
        }
        out.push_str(&format!("└{}┘\n", "─".repeat(width + 2)));
        out
    }

    /// The JSON object with every fixed key present.
    pub fn json_value(&self) -> Value {
        let mut obj = self.json.clone();
        for k in JSON_KEYS {
            obj.entry(k).or_insert(Value::Null);
        }
        Value::Object(obj)
    }

    /// Writes the JSON object to `path`.
    pub fn write_json(&self, path: &str) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(&self.json_value())? + "\n";
        std::fs::write(path, text).with_context(|| format!("write {path}"))
    }
}

/// A progress bar over the seconds of a run, hidden when disabled or when
/// stderr is not a terminal.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar of `len` steps.
    pub fn new(enabled: bool, len: u64) -> Progress {
        let bar = if enabled {
            ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(5))
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>11} [{bar:30}] {pos:>6}/{len:<6} {elapsed:>4} {msg}",
            )
            .expect("valid progress template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar }
    }

    /// Starts a phase: a new label and length, from zero.
    pub fn phase(&self, label: &'static str, len: u64) {
        self.bar.set_prefix(label);
        self.bar.set_length(len);
        self.bar.set_position(0);
        self.bar.reset_elapsed();
    }

    pub fn set(&self, pos: u64, msg: String) {
        self.bar.set_position(pos);
        self.bar.set_message(msg);
    }

    pub fn inc(&self) {
        self.bar.inc(1);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// A count per second with a thousands separator.
pub fn per_sec(n: f64) -> String {
    format!("{}/s", thousands(n.round() as u64))
}

/// 1234567 as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_every_key_and_table_lines_up() {
        let mut r = Report::new("fanout");
        r.set("lost", 0);
        r.row("lost", 0);
        r.row("delivered", per_sec(1234567.0));
        let v = r.json_value();
        for k in JSON_KEYS {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["lost"], 0);
        let t = r.table();
        let widths: Vec<usize> = t.lines().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{t}");
        assert!(t.contains("1,234,567/s"), "{t}");
    }
}
