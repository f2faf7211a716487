//! The indexes of one company's cases, so that lists, snapshots and counts
//! touch only the cases they return: by group and status, by assignee, and
//! the recently ended cases of each group by the time they ended.

use std::collections::BTreeSet;
use std::ops::Bound;

use crate::case::{SessionCode, Status};

/// A key that sorts cases by creation time (ms), then code.
pub type Order = (i64, SessionCode);

/// The statuses an index slot stands for, in `Status::ALL` order.
fn slot(status: Status) -> usize {
    match status {
        Status::New => 0,
        Status::Pending => 1,
        Status::InProgress => 2,
        Status::Closed => 3,
        Status::Expired => 4,
    }
}

/// Where a case is indexed: its group, status and assignee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub group: usize,
    pub status: Status,
    pub assignee: Option<usize>,
    pub order: Order,
}

/// The indexes of one company.
pub struct Index {
    /// Per group, per status: the cases, oldest first.
    by_group_status: Vec<[BTreeSet<Order>; 5]>,
    /// Per agent: the cases assigned to it, oldest first.
    by_assignee: Vec<BTreeSet<Order>>,
    /// Per group: terminal cases by the time they ended (ms), for the
    /// snapshot's window.
    ended: Vec<BTreeSet<(i64, SessionCode)>>,
}

impl Index {
    pub fn new(groups: usize, agents: usize) -> Index {
        Index {
            by_group_status: (0..groups).map(|_| Default::default()).collect(),
            by_assignee: (0..agents).map(|_| BTreeSet::new()).collect(),
            ended: (0..groups).map(|_| BTreeSet::new()).collect(),
        }
    }

    /// Makes room for the group added at the end of the company.
    pub fn add_group(&mut self) {
        self.by_group_status.push(Default::default());
        self.ended.push(BTreeSet::new());
    }

    /// True when `group` holds an open case (new, pending, in progress).
    pub fn has_open(&self, group: usize) -> bool {
        [Status::New, Status::Pending, Status::InProgress]
            .into_iter()
            .any(|s| !self.by_group_status[group][slot(s)].is_empty())
    }

    /// Makes room for the agent added at the end of the company.
    pub fn add_agent(&mut self) {
        self.by_assignee.push(BTreeSet::new());
    }

    /// Moves a case from where it was indexed (`old`) to `new`.
    pub fn update(&mut self, old: Option<Entry>, new: Option<Entry>) {
        if old == new {
            return;
        }
        if let Some(o) = old {
            self.by_group_status[o.group][slot(o.status)].remove(&o.order);
            if let Some(a) = o.assignee {
                self.by_assignee[a].remove(&o.order);
            }
        }
        if let Some(n) = new {
            self.by_group_status[n.group][slot(n.status)].insert(n.order);
            if let Some(a) = n.assignee {
                self.by_assignee[a].insert(n.order);
            }
        }
    }

    /// Records when a case of `group` ended (ms since the epoch).
    pub fn ended(&mut self, group: usize, at: i64, code: SessionCode) {
        self.ended[group].insert((at, code));
    }

    /// Forgets a case's end (delete, purge).
    pub fn forget_end(&mut self, group: usize, at: i64, code: SessionCode) {
        self.ended[group].remove(&(at, code));
    }

    /// The number of cases in `status` across the company.
    pub fn count(&self, status: Status) -> usize {
        self.by_group_status
            .iter()
            .map(|g| g[slot(status)].len())
            .sum()
    }

    /// The cases of `group` in `status`, oldest first, after `after`.
    pub fn in_group(
        &self,
        group: usize,
        status: Status,
        after: Option<Order>,
    ) -> impl Iterator<Item = &Order> {
        self.by_group_status[group][slot(status)].range(lower(after))
    }

    /// The cases assigned to `agent`, oldest first, after `after`.
    pub fn of_assignee(&self, agent: usize, after: Option<Order>) -> impl Iterator<Item = &Order> {
        self.by_assignee[agent].range(lower(after))
    }

    /// The cases of `group` that ended at or after `since` (ms).
    pub fn ended_since(&self, group: usize, since: i64) -> impl Iterator<Item = &SessionCode> {
        self.ended[group]
            .range((since, SessionCode::MIN)..)
            .map(|(_, code)| code)
    }
}

fn lower(after: Option<Order>) -> (Bound<Order>, Bound<Order>) {
    match after {
        Some(a) => (Bound::Excluded(a), Bound::Unbounded),
        None => (Bound::Unbounded, Bound::Unbounded),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(n: u64) -> SessionCode {
        SessionCode::parse(&format!("{n:08}")).expect("8 digits")
    }

    fn entry(n: u64, group: usize, status: Status, assignee: Option<usize>) -> Entry {
        Entry {
            group,
            status,
            assignee,
            order: (n as i64, code(n)),
        }
    }

    #[test]
    fn a_case_moves_between_slots_as_it_changes() {
        let mut ix = Index::new(2, 2);
        let e = entry(1, 0, Status::New, None);
        ix.update(None, Some(e));
        assert_eq!(ix.count(Status::New), 1);
        let e2 = entry(1, 0, Status::Pending, Some(1));
        ix.update(Some(e), Some(e2));
        assert_eq!(ix.count(Status::New), 0);
        assert_eq!(ix.count(Status::Pending), 1);
        assert_eq!(ix.of_assignee(1, None).count(), 1);
        ix.update(Some(e2), None);
        assert_eq!(ix.count(Status::Pending), 0);
        assert_eq!(ix.of_assignee(1, None).count(), 0);
    }

    #[test]
    fn ranges_start_after_the_cursor() {
        let mut ix = Index::new(1, 1);
        for n in 1..=5 {
            ix.update(None, Some(entry(n, 0, Status::New, None)));
        }
        let after = Some((2, code(2)));
        let got: Vec<i64> = ix.in_group(0, Status::New, after).map(|o| o.0).collect();
        assert_eq!(got, vec![3, 4, 5]);
    }

    #[test]
    fn ended_cases_are_found_by_when_they_ended() {
        let mut ix = Index::new(1, 1);
        ix.ended(0, 100, code(1));
        ix.ended(0, 200, code(2));
        let got: Vec<_> = ix.ended_since(0, 150).copied().collect();
        assert_eq!(got, vec![code(2)]);
        ix.forget_end(0, 200, code(2));
        assert_eq!(ix.ended_since(0, 0).count(), 1);
    }
}
