//! When the userspace SAs' time limits fall due, earliest first, so the lifetimes task
//! sleeps until the next one instead of visiting every SA on a tick (tens of thousands
//! of clock reads a second on a node with thousands of neighbors, idle or not).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::model::SaId;

/// Entries of SAs gone are dropped when due, or all at once when they outnumber the live
/// SAs by this many and more than twice over.
const STALE_SLACK: usize = 1024;

/// Deadlines by SA. An SA may have several (each update of its limits adds one, the
/// earlier ones stay); an entry is only a reminder to look at the SA's limits then.
#[derive(Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, SaId)>>,
}

impl Deadlines {
    /// Adds a deadline; whether it is now the earliest.
    pub fn push(&mut self, at: Instant, sa: SaId) -> bool {
        let earliest = self.next().is_none_or(|next| at < next);
        self.heap.push(Reverse((at, sa)));
        earliest
    }

    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the SAs with a deadline at or before `now`, each once.
    pub fn due(&mut self, now: Instant) -> Vec<SaId> {
        let mut due = Vec::new();
        while let Some(Reverse((at, sa))) = self.heap.peek()
            && *at <= now
        {
            due.push(*sa);
            self.heap.pop();
        }
        due.sort_unstable();
        due.dedup();
        due
    }

    /// Drops the entries of SAs that no longer `exist`, once stale ones may dominate.
    pub fn compact(&mut self, live: usize, exist: impl Fn(&SaId) -> bool) {
        if self.heap.len() > 2 * live + STALE_SLACK {
            self.heap.retain(|Reverse((_, sa))| exist(sa));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sa(spi: u32) -> SaId {
        SaId {
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            spi,
        }
    }

    #[test]
    fn due_takes_the_past_deadlines_each_sa_once_and_keeps_the_rest() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut d = Deadlines::default();
        assert!(d.push(t0 + s(5), sa(1)));
        assert!(!d.push(t0 + s(9), sa(2)));
        assert!(d.push(t0 + s(2), sa(3)));
        assert!(!d.push(t0 + s(5), sa(1)));
        assert!(!d.push(t0 + s(3), sa(1)));
        assert_eq!(d.next(), Some(t0 + s(2)));
        assert_eq!(d.due(t0 + s(1)), vec![]);
        assert_eq!(d.due(t0 + s(5)), vec![sa(1), sa(3)]);
        assert_eq!(d.next(), Some(t0 + s(9)));
        assert_eq!(d.due(t0 + s(9)), vec![sa(2)]);
        assert_eq!(d.next(), None);
    }

    #[test]
    fn compaction_drops_only_entries_of_gone_sas_and_only_when_they_pile_up() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        let n = u32::try_from(STALE_SLACK).unwrap() + 10;
        for spi in 0..n {
            d.push(t0, sa(spi));
        }
        d.compact(5, |id| id.spi < 5);
        assert_eq!(d.heap.len(), STALE_SLACK + 10, "compacted below the slack");
        d.push(t0, sa(n));
        d.compact(4, |id| id.spi < 4);
        assert_eq!(d.due(t0), (0..4).map(sa).collect::<Vec<_>>());
    }
}
