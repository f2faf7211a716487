//! Latency bookkeeping: HDR histograms in microseconds, a sharded recorder
//! that many connection tasks feed in batches, and the percentile summary
//! that the table and the JSON report.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// The largest latency recorded, in microseconds (one hour); longer ones
/// are clamped to it.
const MAX_US: u64 = 3_600_000_000;

/// A fresh latency histogram: 1 µs to one hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// A histogram shared by many tasks, split in shards so they rarely wait
/// on one another. Tasks record into a local buffer and flush it here.
pub struct Sharded {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Sharded {
    pub fn new(shards: usize) -> Sharded {
        Sharded {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(histogram()))
                .collect(),
        }
    }

    /// Records a batch of microsecond values into shard `key % shards`.
    pub fn record(&self, key: usize, values: &[u32]) {
        let mut h = self.shards[key % self.shards.len()]
            .lock()
            .expect("histogram lock");
        for &v in values {
            h.saturating_record(u64::from(v).max(1));
        }
    }

    /// Records one value.
    pub fn record_one(&self, key: usize, us: u64) {
        self.shards[key % self.shards.len()]
            .lock()
            .expect("histogram lock")
            .saturating_record(us.max(1));
    }

    /// All shards added up.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for s in &self.shards {
            all.add(&*s.lock().expect("histogram lock"))
                .expect("same bounds");
        }
        all
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }

    /// The JSON form; `null`s when nothing was recorded.
    pub fn to_json(&self) -> Value {
        if self.count == 0 {
            return json!({"count": 0, "p50_ms": null, "p99_ms": null, "p999_ms": null,
                          "max_ms": null, "mean_ms": null});
        }
        json!({
            "count": self.count,
            "p50_ms": round3(self.p50_ms),
            "p99_ms": round3(self.p99_ms),
            "p999_ms": round3(self.p999_ms),
            "max_ms": round3(self.max_ms),
            "mean_ms": round3(self.mean_ms),
        })
    }

    /// `p50 / p99 / p999 / max` for the table.
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "{} / {} / {} / {} ms",
            fmt_ms(self.p50_ms),
            fmt_ms(self.p99_ms),
            fmt_ms(self.p999_ms),
            fmt_ms(self.max_ms)
        )
    }
}

/// Three decimals, for JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A millisecond figure with sensible precision.
pub fn fmt_ms(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.3}")
    } else if x < 1000.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_and_summarise() {
        let s = Sharded::new(4);
        s.record(0, &[1000, 2000, 3000]);
        s.record(5, &[4000]);
        s.record_one(2, 0);
        let h = s.merged();
        assert_eq!(h.len(), 5);
        let sum = Summary::of(&h);
        assert_eq!(sum.count, 5);
        assert!((sum.max_ms - 4.0).abs() < 0.01, "{sum:?}");
        assert!(Summary::of(&histogram()).to_json()["p99_ms"].is_null());
    }
}
