//! Next offsets to commit, per partition, as records finish.

use std::collections::HashMap;
use std::sync::Arc;

use crate::io::transport::Tp;

/// Next offset to commit per partition. A batch's records come in runs of one partition: the
/// current run's entry is kept apart and updated in place (no hashing, no key kept per
/// record); the map holds the others. `last` is never older than the map's entry for its
/// partition.
#[derive(Default)]
pub(super) struct Done {
    last: Option<(Tp, i64)>,
    map: HashMap<Tp, i64, foldhash::fast::RandomState>,
}

impl Done {
    /// The next offset of `tp` is `next` (records of a partition finish in order).
    pub(super) fn set(&mut self, tp: Tp, next: i64) {
        match &mut self.last {
            // The fetcher gives one topic's records one `Arc`: an address compare.
            Some((last, n)) if Arc::ptr_eq(&last.0, &tp.0) && last.1 == tp.1 => *n = next,
            _ => {
                if let Some((last, n)) = self.last.replace((tp, next)) {
                    self.map.insert(last, n);
                }
            }
        }
    }

    /// The next offset of `tp` is at least `next`.
    pub(super) fn raise(&mut self, tp: Tp, next: i64) {
        self.settle();
        let n = self.map.entry(tp).or_insert(next);
        *n = (*n).max(next);
    }

    pub(super) fn settle(&mut self) {
        if let Some((tp, n)) = self.last.take() {
            self.map.insert(tp, n);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.last.is_none() && self.map.is_empty()
    }

    pub(super) fn drain(&mut self) -> Vec<(Tp, i64)> {
        self.settle();
        self.map.drain().collect()
    }

    pub(super) fn clear(&mut self) {
        self.last = None;
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<(Tp, i64)>) -> Vec<(String, i32, i64)> {
        v.sort();
        v.into_iter()
            .map(|((t, p), n)| (t.to_string(), p, n))
            .collect()
    }

    #[test]
    fn done_offsets_keep_the_latest_per_partition_across_runs() {
        let a: Arc<str> = Arc::from("a");
        let a_again: Arc<str> = Arc::from("a");
        let mut done = Done::default();
        assert!(done.is_empty());
        done.set((a.clone(), 0), 5);
        done.set((a.clone(), 0), 6);
        done.set((a.clone(), 1), 3);
        // The same topic under another `Arc` (a later fetch loop) is the same partition.
        done.set((a_again.clone(), 0), 7);
        done.set((a.clone(), 1), 4);
        assert!(!done.is_empty());
        assert_eq!(
            sorted(done.drain()),
            [("a".into(), 0, 7), ("a".into(), 1, 4)]
        );
        assert!(done.is_empty());
        // `raise` never lowers what a partition finished.
        done.set((a.clone(), 0), 9);
        done.raise((a.clone(), 0), 8);
        done.raise((a.clone(), 2), 1);
        assert_eq!(
            sorted(done.drain()),
            [("a".into(), 0, 9), ("a".into(), 2, 1)]
        );
        done.set((a, 0), 10);
        done.clear();
        assert!(done.is_empty() && done.drain().is_empty());
    }
}
