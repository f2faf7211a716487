//! Live numbers per group for team leads: how long the waits of the last
//! hour were (p50, p90 from a histogram of fixed buckets) and how often
//! the service levels were met. Every sample costs O(1) to add and to
//! expire, and a percentile is read from the buckets alone: nothing here
//! walks the line or the cases.

use std::collections::VecDeque;

/// The window the numbers cover.
pub const WINDOW_MS: i64 = 3_600_000;
/// The most samples a group keeps in its window (the oldest go first).
const MAX_SAMPLES: usize = 100_000;
/// Bucket `i` (i ≥ 1) holds waits up to `RATIO^i` seconds: a percentile
/// is within 10 % of the truth. Bucket 0 holds waits under a second.
const RATIO: f64 = 1.2;
const BUCKETS: usize = 64;

/// The bucket of a wait.
fn bucket(wait_ms: i64) -> usize {
    if wait_ms < 1000 {
        return 0;
    }
    let secs = wait_ms as f64 / 1000.0;
    ((secs.ln() / RATIO.ln()).ceil() as usize).clamp(1, BUCKETS - 1)
}

/// The wait a bucket stands for, in seconds (its upper bound).
fn upper_s(b: usize) -> u64 {
    if b == 0 {
        return 1;
    }
    RATIO.powi(b as i32).round() as u64
}

/// One group's last hour.
#[derive(Debug)]
pub struct GroupWindow {
    /// Waits answered: (when, bucket).
    waits: VecDeque<(i64, u8)>,
    counts: [u32; BUCKETS],
    /// Service levels decided: (when, met).
    slas: VecDeque<(i64, bool)>,
    met: u32,
}

impl Default for GroupWindow {
    fn default() -> Self {
        GroupWindow {
            waits: VecDeque::new(),
            counts: [0; BUCKETS],
            slas: VecDeque::new(),
            met: 0,
        }
    }
}

impl GroupWindow {
    /// A case of the group was answered at `at` (Unix ms) after waiting
    /// `wait_ms`.
    pub fn answered(&mut self, at: i64, wait_ms: i64) {
        self.expire(at);
        if self.waits.len() == MAX_SAMPLES
            && let Some((_, b)) = self.waits.pop_front()
        {
            self.counts[b as usize] -= 1;
        }
        let b = bucket(wait_ms.max(0));
        self.waits.push_back((at, b as u8));
        self.counts[b] += 1;
    }

    /// A service level of a case of the group was met or missed at `at`.
    pub fn sla(&mut self, at: i64, met: bool) {
        self.expire(at);
        if self.slas.len() == MAX_SAMPLES
            && let Some((_, was)) = self.slas.pop_front()
        {
            self.met -= u32::from(was);
        }
        self.slas.push_back((at, met));
        self.met += u32::from(met);
    }

    /// Drops what is older than the window at `now` (Unix ms).
    pub fn expire(&mut self, now: i64) {
        while let Some(&(at, b)) = self.waits.front() {
            if at > now - WINDOW_MS {
                break;
            }
            self.waits.pop_front();
            self.counts[b as usize] -= 1;
        }
        while let Some(&(at, met)) = self.slas.front() {
            if at > now - WINDOW_MS {
                break;
            }
            self.slas.pop_front();
            self.met -= u32::from(met);
        }
    }

    /// The wait at quantile `q` (0..1) in seconds; `None` without samples.
    pub fn wait_quantile(&self, q: f64) -> Option<u64> {
        let n = self.waits.len();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        let mut seen = 0usize;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c as usize;
            if seen >= rank {
                return Some(upper_s(b));
            }
        }
        Some(upper_s(BUCKETS - 1))
    }

    /// The share of service levels met; `None` when none was decided.
    pub fn sla_met_ratio(&self) -> Option<f64> {
        match self.slas.len() {
            0 => None,
            n => Some((self.met as f64 / n as f64 * 1000.0).round() / 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_buckets_within_ten_percent() {
        let mut w = GroupWindow::default();
        for s in 1..=100 {
            w.answered(1_000_000, s * 1000);
        }
        let p50 = w.wait_quantile(0.5).unwrap() as f64;
        let p90 = w.wait_quantile(0.9).unwrap() as f64;
        assert!((50.0..=60.0).contains(&p50), "{p50}");
        assert!((90.0..=108.0).contains(&p90), "{p90}");
        assert_eq!(GroupWindow::default().wait_quantile(0.5), None);
    }

    #[test]
    fn samples_leave_the_window_after_an_hour() {
        let mut w = GroupWindow::default();
        w.answered(0, 5_000);
        w.sla(0, true);
        w.sla(10, false);
        assert_eq!(w.sla_met_ratio(), Some(0.5));
        w.expire(WINDOW_MS + 5);
        assert_eq!(w.wait_quantile(0.5), None);
        assert_eq!(w.sla_met_ratio(), Some(0.0));
        w.expire(WINDOW_MS + 10);
        assert_eq!(w.sla_met_ratio(), None);
        assert_eq!(w.counts.iter().sum::<u32>(), 0);
    }
}
