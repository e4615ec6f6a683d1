//! A timer queue over many keyed deadlines: the earliest one and the keys that are due,
//! without scanning every key.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// At most one deadline per key. Setting a key's deadline replaces its previous one.
#[derive(Debug)]
pub struct Deadlines<K, T> {
    by_time: BTreeSet<(T, K)>,
    by_key: HashMap<K, T>,
}

impl<K, T> Default for Deadlines<K, T> {
    fn default() -> Self {
        Self {
            by_time: BTreeSet::new(),
            by_key: HashMap::new(),
        }
    }
}

impl<K: Ord + Hash + Clone, T: Ord + Copy> Deadlines<K, T> {
    /// Sets (`Some`) or clears (`None`) the deadline of `key`.
    pub fn set(&mut self, key: K, at: Option<T>) {
        let old = match at {
            Some(at) => self.by_key.insert(key.clone(), at),
            None => self.by_key.remove(&key),
        };
        if old == at {
            return;
        }
        if let Some(old) = old {
            self.by_time.remove(&(old, key.clone()));
        }
        if let Some(at) = at {
            self.by_time.insert((at, key));
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<T> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Removes and returns, earliest first, the keys whose deadline is at or before `now`.
    pub fn take_due(&mut self, now: T) -> Vec<K> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first()
            && *at <= now
        {
            if let Some((_, key)) = self.by_time.pop_first() {
                self.by_key.remove(&key);
                due.push(key);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::Deadlines;

    #[test]
    fn replaces_clears_and_takes_in_order() {
        let mut d = Deadlines::default();
        d.set("a", Some(30));
        d.set("b", Some(10));
        d.set("c", Some(20));
        d.set("a", Some(5));
        d.set("c", None);
        assert_eq!(d.next(), Some(5));
        assert_eq!(d.take_due(10), vec!["a", "b"]);
        assert_eq!(d.next(), None);
        assert!(d.take_due(100).is_empty());
        d.set("b", Some(40));
        assert_eq!(d.take_due(39), Vec::<&str>::new());
        assert_eq!(d.take_due(40), vec!["b"]);
    }
}
