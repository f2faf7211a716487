//! The waiting lines of one company: per group, its unassigned open cases,
//! oldest first, in an order-statistic tree so a case's position costs
//! O(log n), and the waiting customers who must be told theirs.
//!
//! Positions are told only when they changed, and coalesced: the lines
//! remember that something moved, and [`Lines::flush`] (at most every
//! [`Lines::PERIOD`], and always once after the last change) computes the
//! position of each seated waiting customer alone, never walking the line.

use std::collections::HashMap;
use std::time::Duration;

use indexset::BTreeSet;
use tokio::time::Instant;

use crate::case::SessionCode;

/// A place in a line: creation order first, then the code.
pub type Place = (u64, SessionCode);

/// A seated waiting customer: its place and the position it was last told.
#[derive(Clone, Copy, Debug)]
struct Seated {
    seq: u64,
    told: Option<usize>,
}

/// One group's line.
#[derive(Default)]
pub struct Line {
    cases: BTreeSet<Place>,
    seated: HashMap<SessionCode, Seated>,
    /// Something moved since the last flush.
    dirty: bool,
}

impl Line {
    /// How many cases wait.
    pub fn len(&self) -> usize {
        self.cases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    /// The oldest waiting case.
    pub fn head(&self) -> Option<Place> {
        self.cases.first().copied()
    }

    /// 1 for the next case to be served; `None` when not in the line.
    pub fn position(&self, place: &Place) -> Option<usize> {
        self.cases
            .contains(place)
            .then(|| self.cases.rank(place) + 1)
    }
}

/// The lines of one company, indexed by group, and when positions are next
/// due to be told.
pub struct Lines {
    groups: Vec<Line>,
    /// At most one flush per period during a burst.
    period: Duration,
    last_flush: Option<Instant>,
    /// Set while a coalesced flush waits for its turn.
    due: Option<Instant>,
}

/// A position to tell: the case and its new position.
pub type Told = (SessionCode, usize);

impl Lines {
    /// Positions are told at most this often during a burst of changes,
    /// unless set otherwise (`position_interval`).
    pub const PERIOD: Duration = Duration::from_millis(250);

    /// Sets how often positions may be told during a burst (zero: at every
    /// change).
    pub fn set_period(&mut self, period: Duration) {
        self.period = period;
    }

    pub fn new(groups: usize) -> Lines {
        Lines {
            groups: (0..groups).map(|_| Line::default()).collect(),
            period: Self::PERIOD,
            last_flush: None,
            due: None,
        }
    }

    /// Makes room for the group added at the end of the company.
    pub fn add_group(&mut self) {
        self.groups.push(Line::default());
    }

    pub fn group(&self, group: usize) -> &Line {
        &self.groups[group]
    }

    /// The number of groups.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// Puts a case in its group's line.
    pub fn insert(&mut self, group: usize, place: Place) {
        let line = &mut self.groups[group];
        if line.cases.insert(place) {
            line.dirty = true;
        }
    }

    /// Takes a case out of its group's line (and out of the seated set).
    pub fn remove(&mut self, group: usize, place: &Place) {
        let line = &mut self.groups[group];
        if line.cases.remove(place) {
            line.dirty = true;
        }
        line.seated.remove(&place.1);
    }

    /// Records whether a waiting case's customer is seated. A customer who
    /// sits down again is told its position afresh.
    pub fn set_seated(&mut self, group: usize, place: Place, seated: bool) {
        let line = &mut self.groups[group];
        if seated && line.cases.contains(&place) {
            if let std::collections::hash_map::Entry::Vacant(slot) = line.seated.entry(place.1) {
                slot.insert(Seated {
                    seq: place.0,
                    told: None,
                });
                line.dirty = true;
            }
        } else {
            line.seated.remove(&place.1);
        }
    }

    /// True when some line moved since the last flush.
    pub fn dirty(&self) -> bool {
        self.groups.iter().any(|l| l.dirty)
    }

    /// When a flush of the current changes may run: now if the last one
    /// was at least a period ago, else when the period is over.
    pub fn flush_at(&mut self, now: Instant) -> Option<Instant> {
        if !self.dirty() {
            return None;
        }
        let at = match self.last_flush {
            Some(last) if last + self.period > now => last + self.period,
            _ => now,
        };
        self.due = Some(at);
        Some(at)
    }

    /// The time a pending coalesced flush is due, if any.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Computes the position of every seated waiting customer of the lines
    /// that moved, and returns those that differ from what they were last
    /// told. Costs O(s log n) for s seated customers, whatever the change
    /// rate.
    pub fn flush(&mut self, now: Instant) -> Vec<Told> {
        self.last_flush = Some(now);
        self.due = None;
        let mut told = Vec::new();
        for line in &mut self.groups {
            if !std::mem::take(&mut line.dirty) {
                continue;
            }
            for (code, seated) in line.seated.iter_mut() {
                let place = (seated.seq, *code);
                let position = line.cases.rank(&place) + 1;
                if seated.told != Some(position) {
                    seated.told = Some(position);
                    told.push((*code, position));
                }
            }
        }
        told
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(n: u64) -> SessionCode {
        SessionCode::parse(&format!("{n:08}")).expect("8 digits")
    }

    fn place(n: u64) -> Place {
        (n, code(n))
    }

    fn told(lines: &mut Lines) -> Vec<Told> {
        let mut t = lines.flush(Instant::now());
        t.sort();
        t
    }

    #[test]
    fn positions_count_from_the_head() {
        let mut lines = Lines::new(1);
        for n in 1..=5 {
            lines.insert(0, place(n));
        }
        assert_eq!(lines.group(0).position(&place(1)), Some(1));
        assert_eq!(lines.group(0).position(&place(5)), Some(5));
        lines.remove(0, &place(1));
        assert_eq!(lines.group(0).position(&place(5)), Some(4));
        assert_eq!(lines.group(0).position(&place(1)), None);
        assert_eq!(lines.group(0).head(), Some(place(2)));
    }

    #[test]
    fn only_seated_customers_whose_position_changed_are_told() {
        let mut lines = Lines::new(1);
        for n in 1..=1000 {
            lines.insert(0, place(n));
        }
        lines.set_seated(0, place(10), true);
        lines.set_seated(0, place(900), true);
        assert_eq!(told(&mut lines), vec![(code(10), 10), (code(900), 900)]);
        // Nothing moved: nothing to tell.
        assert!(told(&mut lines).is_empty());
        // A case behind both leaves: nobody's position changes.
        lines.remove(0, &place(950));
        assert!(told(&mut lines).is_empty());
        // One between them leaves: only the one behind moves up.
        lines.remove(0, &place(500));
        assert_eq!(told(&mut lines), vec![(code(900), 899)]);
        // The head leaves: both move up.
        lines.remove(0, &place(1));
        assert_eq!(told(&mut lines), vec![(code(10), 9), (code(900), 898)]);
    }

    #[test]
    fn a_returned_case_goes_back_to_its_place_by_age() {
        let mut lines = Lines::new(1);
        for n in [1, 2, 3] {
            lines.insert(0, place(n));
        }
        lines.set_seated(0, place(3), true);
        assert_eq!(told(&mut lines), vec![(code(3), 3)]);
        lines.remove(0, &place(1));
        assert_eq!(told(&mut lines), vec![(code(3), 2)]);
        lines.insert(0, place(1));
        assert_eq!(told(&mut lines), vec![(code(3), 3)]);
    }

    #[test]
    fn groups_are_separate_lines() {
        let mut lines = Lines::new(2);
        lines.insert(0, place(1));
        lines.insert(1, place(2));
        lines.set_seated(1, place(2), true);
        assert_eq!(told(&mut lines), vec![(code(2), 1)]);
        lines.remove(0, &place(1));
        assert!(told(&mut lines).is_empty());
    }

    #[test]
    fn a_customer_who_sits_again_is_told_again() {
        let mut lines = Lines::new(1);
        lines.insert(0, place(1));
        lines.set_seated(0, place(1), true);
        assert_eq!(told(&mut lines), vec![(code(1), 1)]);
        lines.set_seated(0, place(1), false);
        lines.set_seated(0, place(1), true);
        assert_eq!(told(&mut lines), vec![(code(1), 1)]);
    }

    #[test]
    fn flushes_are_coalesced_to_one_per_period() {
        let mut lines = Lines::new(1);
        let t0 = Instant::now();
        assert_eq!(lines.flush_at(t0), None, "nothing moved");
        lines.insert(0, place(1));
        assert_eq!(
            lines.flush_at(t0),
            Some(t0),
            "the first change is told at once"
        );
        lines.flush(t0);
        lines.insert(0, place(2));
        let soon = t0 + Duration::from_millis(10);
        assert_eq!(lines.flush_at(soon), Some(t0 + Lines::PERIOD));
        assert_eq!(lines.due(), Some(t0 + Lines::PERIOD));
        lines.flush(t0 + Lines::PERIOD);
        assert_eq!(lines.due(), None);
    }

    #[test]
    fn a_deep_line_costs_no_walk() {
        // 100,000 waiting, 1,000 seated: taking the head tells 1,000.
        let mut lines = Lines::new(1);
        for n in 1..=100_000 {
            lines.insert(0, place(n));
        }
        for n in (100..100_000).step_by(100) {
            lines.set_seated(0, place(n), true);
        }
        assert_eq!(told(&mut lines).len(), 999);
        lines.remove(0, &place(1));
        let t = told(&mut lines);
        assert_eq!(t.len(), 999);
        assert!(t.iter().all(|(c, p)| {
            let n: u64 = c.digits().parse().unwrap();
            *p as u64 == n - 1
        }));
    }
}
