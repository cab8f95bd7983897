//! Hopping windows by panes (slices): each record updates one pane of `gcd(size, step)`, and a
//! window's result is its panes merged when it closes. A record then costs one update
//! whatever `size / step` is, where updating every window containing it costs `size / step`.
//!
//! Used for aggregations whose merge gives the state adding the records one by one would, in
//! any order (`Agg::order_free`: count, sum, min, max, mean, `combine` with a user
//! `MergeState`), emitted once at close (`Emit::Final`). Float sums and means may differ from
//! the window-by-window path in their last bits (the additions are grouped differently).
//!
//! Each key keeps its panes (in `KeyState::windows`, by pane start, stored under the `P` tag
//! with the first window each may join: one already closed when the pane was made, by the
//! watermark of another partition, never gets its records) and one entry in the close queue:
//! the next window of the key to close (`KeyState::next`).
//! When it closes, its panes are merged; the panes no later window contains are dropped, and
//! the key's next window with a pane is queued. Windows stored whole by an earlier version of
//! rill (the `W` tag) are kept apart (`WindowPartition::legacy`) and merged with the panes of
//! their range when they close, so an upgrade loses no record and counts none twice.

use super::{Agg, Closing, Key, KeyState, Win, WindowPartition, WindowResult, close_at};

/// The hopping windows of one operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Panes {
    pub(crate) size: i64,
    pub(crate) step: i64,
    /// The pane: `gcd(size, step)`.
    pub(crate) pane: i64,
    pub(crate) grace: i64,
}

impl Panes {
    /// Panes for hopping windows of `size` every `step` (`step < size`).
    pub(crate) fn new(size: i64, step: i64, grace: i64) -> Self {
        let (mut a, mut b) = (size, step);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        Panes {
            size,
            step,
            pane: a.max(1),
            grace,
        }
    }

    /// When the window starting at `start` closes.
    pub(crate) fn close_of(self, start: i64) -> i64 {
        close_at(start.saturating_add(self.size), self.grace)
    }

    /// The first window containing the pane at `p` (windows start every `step`).
    fn first_window(self, p: i64) -> i64 {
        (p - self.size).div_euclid(self.step) * self.step + self.step
    }

    /// The first window containing the pane at `p` that is still open at watermark `wm`
    /// (windows close in the order of their starts).
    fn first_open(self, p: i64, wm: i64) -> i64 {
        let first = self.first_window(p);
        if self.close_of(first) > wm {
            return first;
        }
        let open = (wm - self.size - self.grace).div_euclid(self.step) * self.step + self.step;
        first.max(open)
    }
}

/// Adds a record at `time` to its key's pane; false when it is late (the last window
/// containing it has closed). `updated` gets the pane's start.
#[allow(
    clippy::too_many_arguments,
    reason = "the operator's parts, borrowed apart"
)]
pub(super) fn add<T, K, S, O>(
    agg: &Agg<T, S, O>,
    ks: &mut KeyState<K, S>,
    closing: &mut Closing,
    panes: Panes,
    wm: i64,
    time: i64,
    item: &T,
    updated: &mut Vec<i64>,
) -> bool {
    let last = time.div_euclid(panes.step) * panes.step;
    if panes.close_of(last) <= wm {
        return false;
    }
    let p = time.div_euclid(panes.pane) * panes.pane;
    let from = panes.first_open(p, wm);
    let win = ks.windows.get_or_insert_with(p, || Win {
        end: p + panes.pane,
        state: (agg.init)(),
        // The pane's first window: those closed when it was made never see its records.
        max: from,
        stored: false,
    });
    (agg.add)(&mut win.state, item);
    updated.push(p);
    schedule(ks, closing, panes, from);
    true
}

/// Queues the window at `start` as the key's next to close, unless an earlier one is queued.
pub(super) fn schedule<K, S>(
    ks: &mut KeyState<K, S>,
    closing: &mut Closing,
    panes: Panes,
    start: i64,
) {
    if ks.next != i64::MIN {
        if ks.next <= start {
            return;
        }
        closing.remove(panes.close_of(ks.next), &ks.bytes, ks.next);
    }
    closing.insert(panes.close_of(start), &ks.bytes, start);
    ks.next = start;
}

/// Closes the window of `key` at `start`: merges its panes (and the whole window an earlier
/// version stored, if any), drops the panes no later window contains, queues the key's next
/// window, and returns the result (`None` when the window had no record).
pub(super) fn close<T, K: Clone, S: Clone, O>(
    part: &mut WindowPartition<K, S>,
    key: &Key,
    start: i64,
    panes: Panes,
    agg: &Agg<T, S, O>,
) -> Option<WindowResult<K, O>> {
    let merge = agg.merge.as_ref()?;
    let legacy = part.legacy.remove(&(key.clone(), start));
    if legacy.is_some() {
        part.legacy_gone.push((key.clone(), start));
    }
    let ks = part.keys.get_mut(key)?;
    if ks.next == start {
        ks.next = i64::MIN;
    }
    let end = start + panes.size;
    let mut state = legacy.map(|w| w.state);
    let mut fold = |pane: S| match &mut state {
        Some(s) => merge(s, pane),
        None => state = Some(pane),
    };
    // Panes before the next window's start are in no later window: they go, moved, not copied.
    let keep_from = start + panes.step;
    while let Some((p, _)) = ks.windows.0.first().filter(|(p, _)| *p < keep_from) {
        let p = *p;
        let Some(win) = ks.windows.remove(p) else {
            break;
        };
        super::forget(&mut part.dirty, part.aging.quiet, key, p, win.stored);
        if p >= start && win.max <= start {
            fold(win.state);
        }
    }
    for (_, win) in ks.windows.range(keep_from..end) {
        if win.max <= start {
            fold(win.state.clone());
        }
    }
    let next = next_window(ks, &part.legacy, key, start, panes);
    let result_key = match next {
        Some(next) => {
            schedule(ks, &mut part.closing, panes, next);
            ks.key.clone()
        }
        // Nothing left of the key: its state goes, and its key moves to the result.
        None => part.keys.remove(key)?.key,
    };
    Some(WindowResult {
        key: result_key,
        start,
        end,
        value: (agg.output)(&state?),
    })
}

/// The key's next window after `after` holding a pane or a whole window of an earlier version.
fn next_window<K, S>(
    ks: &KeyState<K, S>,
    legacy: &LegacyWindows<S>,
    key: &Key,
    after: i64,
    panes: Panes,
) -> Option<i64> {
    let by_pane = ks
        .windows
        .0
        .iter()
        .map(|(p, win)| panes.first_window(*p).max(win.max).max(after + panes.step))
        .min();
    let by_legacy = legacy
        .keys()
        .filter(|(k, s)| k == key && *s > after)
        .map(|(_, s)| *s)
        .min();
    match (by_pane, by_legacy) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whole windows an earlier version of rill stored, by key and start (empty but after an
/// upgrade).
pub(crate) type LegacyWindows<S> = std::collections::HashMap<(Key, i64), Win<S>, super::Hasher>;

/// Queues the first window of every loaded key still open at the partition's floor.
pub(super) fn schedule_loaded<K, S>(part: &mut WindowPartition<K, S>, panes: Panes) {
    let floor = part.floor;
    let mut firsts: Vec<(Key, i64)> = part
        .keys
        .values()
        .filter_map(|ks| {
            let first = ks.windows.0.iter();
            let first = first.map(|(p, win)| panes.first_open(*p, floor).max(win.max));
            Some((ks.bytes.clone(), first.min()?))
        })
        .collect();
    firsts.extend(part.legacy.keys().cloned());
    for (key, start) in firsts {
        if let Some(ks) = part.keys.get_mut(&key) {
            schedule(ks, &mut part.closing, panes, start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panes_are_the_gcd_and_windows_are_found_from_them() {
        let panes = Panes::new(60, 10, 0);
        assert_eq!(panes.pane, 10);
        assert_eq!(Panes::new(60, 25, 0).pane, 5);
        // The pane [30, 40) is in the windows starting at -20, -10, 0, 10, 20 and 30.
        assert_eq!(panes.first_window(30), -20);
        assert_eq!(panes.first_open(30, i64::MIN), -20);
        // At watermark 55, [-10, 50) has closed: the first open one starts at 0.
        assert_eq!(panes.first_open(30, 55), 0);
        assert_eq!(panes.first_open(30, 50), 0);
        assert_eq!(panes.first_open(30, 49), -10);
    }
}
