//! Sliding windows as Kafka Streams computes them: `KStreamSlidingWindowAggregate` of Kafka
//! Streams 4.1.1 with `SlidingWindows.ofTimeDifferenceAndGrace(d, grace)`, where `d = size - 1`
//! (rill's window `[start, start + size)` is Kafka Streams' `[start, start + d]`).
//!
//! No record is kept: a window holds its aggregate and the largest event time added to it (`max`).
//! A record at `t` meets its key's windows that start in `[max(0, t - 2d), t + 1]`, from the
//! latest start down, and stops at the first window ending before `t`:
//!
//! - a window starting at `t + 1` is the record's right window: it exists;
//! - each window containing `t` gets the record, if open; the latest of them is the source of
//!   the record's right window;
//! - the window ending at `t` is the record's left window: it gets the record, if open; when a
//!   record at `t` came before (its `max` is `t`), nothing is created;
//! - the first window ending before `t` is the source of the record's left window.
//!
//! The previous record's time `p` is the `max` of the left window (when below `t`) or else of
//! that first window ending before `t`. Then, in this order:
//!
//! - the previous record's right window `[p + 1, p + 1 + d]`, when no window starts there and
//!   it reaches `t`: the record alone, if open;
//! - the record's left window `[t - d, t]`, when missing: the left source's aggregate when
//!   `p >= t - d`, else empty, plus the record, if open;
//! - the record's right window `[t + 1, t + 1 + d]`, when missing and the right source holds a
//!   record after `t`: a copy of the right source's aggregate and `max`, without the record.
//!
//! A window is written (`put`) in full; "if open" means it has not closed (the watermark has not
//! reached `start + size + grace`). A record is late when `[t, t + d]` has closed, or when it was
//! added to no window (it may still have copied a right window). Records before `d` (Kafka
//! Streams' early records; window starts are never negative there) meet the windows starting
//! in `[0, t + 1]` in ascending order instead: `[0, d]` gathers them all, the windows starting
//! in `(0, t]` get the record, the latest of them (or `[0, d]`, when it holds a record after `t`)
//! is the right source; the right window, the previous record's right window (without the
//! reach condition) and `[0, d]` are written as above. Records before the epoch are late: Kafka
//! Streams rejects negative timestamps.
//!
//! What a record meets is what Kafka Streams' window store returns: it keeps a window for
//! `2d + grace` (its retention) behind the latest window start written on the partition. So a
//! closed window stays (emitted once, never updated again) until it starts before that bound,
//! then it is forgotten. An open window is never forgotten: with one partition per agent instance
//! no open window is that old, and with several the instance's watermark may hold one open.

use super::{Agg, Closing, KeyState, KeyWindows, Win, WindowPartition, close_at};

/// Kafka Streams' retention of a sliding window store: `2d + grace`.
pub(super) fn retention(size: i64, grace: i64) -> i64 {
    (size - 1).saturating_mul(2).saturating_add(grace)
}

/// Forgets the closed windows that start before the latest window start written minus
/// `retention`: Kafka Streams' store no longer returns them.
pub(super) fn expire<K, S>(part: &mut WindowPartition<K, S>, retention: i64) {
    let horizon = part.latest_start.saturating_sub(retention);
    while let Some(bucket) = part.retained.pop_until(horizon.saturating_sub(1)) {
        for (key, start) in bucket {
            let Some(ks) = part.keys.get_mut(&key) else {
                continue;
            };
            if let Some(win) = ks.windows.remove(start) {
                if win.stored {
                    part.dirty.insert((key.clone(), start));
                } else {
                    part.dirty.remove(&(key.clone(), start));
                }
            }
            if ks.windows.is_empty() {
                part.keys.remove(&key);
            }
        }
    }
}

/// One record meeting its key's sliding windows.
pub(super) struct Slide<'a, T, S, O> {
    pub(super) agg: &'a Agg<T, S, O>,
    pub(super) size: i64,
    pub(super) grace: i64,
    /// The watermark before the record.
    pub(super) wm: i64,
    pub(super) time: i64,
    pub(super) item: &'a T,
}

/// What a record finds among its key's windows.
#[derive(Default)]
struct Found {
    /// The windows containing the record.
    containing: Vec<i64>,
    /// The window whose aggregate (before the record) becomes the record's right window.
    right_source: Option<i64>,
    right_exists: bool,
    left_exists: bool,
    /// The window, ending before the record, whose aggregate starts its left window.
    left_source: Option<i64>,
    /// The previous record's time, when a window tells it.
    previous: Option<i64>,
    /// A record at the same time came before: nothing is created.
    repeat: bool,
    /// Early records: the window `[0, d]` exists.
    combined: bool,
}

/// Where a sliding record's writes go: its key's windows, the close queue, the latest start
/// written, the starts it updated.
struct SlideTarget<'a, K, S> {
    ks: &'a mut KeyState<K, S>,
    closing: &'a mut Closing,
    latest_start: &'a mut i64,
    updated: &'a mut Vec<i64>,
}

impl<K, S> SlideTarget<'_, K, S> {
    fn window(&self, start: i64) -> Option<&Win<S>> {
        self.ks.windows.get(start)
    }

    /// Writes the window at `start`, replacing its state or opening it.
    fn put(&mut self, start: i64, size: i64, grace: i64, state: S, max: i64) {
        *self.latest_start = (*self.latest_start).max(start);
        self.updated.push(start);
        match self.ks.windows.get_mut(start) {
            Some(win) => {
                win.state = state;
                win.max = max;
            }
            None => {
                let end = start + size;
                self.closing
                    .insert(close_at(end, grace), &self.ks.bytes, start);
                let win = Win {
                    end,
                    state,
                    max,
                    stored: false,
                };
                self.ks.windows.insert(start, win);
            }
        }
    }
}

impl<T, S: Clone, O> Slide<'_, T, S, O> {
    /// Kafka Streams' time difference: a window is `[start, start + d]`, both included.
    fn d(&self) -> i64 {
        self.size - 1
    }

    fn open(&self, start: i64) -> bool {
        close_at(start.saturating_add(self.size), self.grace) > self.wm
    }

    /// Applies the record to its key's windows; false when it is late (added to none).
    /// `updated` gets the starts of the windows written.
    pub(super) fn apply<K>(
        &self,
        ks: &mut KeyState<K, S>,
        closing: &mut Closing,
        latest_start: &mut i64,
        updated: &mut Vec<i64>,
    ) -> bool {
        if self.time < 0 || !self.open(self.time) {
            return false;
        }
        let mut to = SlideTarget {
            ks,
            closing,
            latest_start,
            updated,
        };
        if self.time < self.d() {
            self.early(&mut to)
        } else {
            self.regular(&mut to)
        }
    }

    /// `processReverse` and `createWindows`.
    fn regular<K>(&self, to: &mut SlideTarget<'_, K, S>) -> bool {
        let (t, d) = (self.time, self.d());
        let found = self.scan(&to.ks.windows);
        // Copies of what the record is about to change.
        let right = self.right_copy(&found, to);
        let left = match (found.previous, found.left_source) {
            (Some(p), Some(source)) if !found.left_exists && t - d <= p => {
                to.window(source).map(|w| w.state.clone())
            }
            _ => None,
        };
        let mut added = false;
        for &start in &found.containing {
            added |= self.add(to, start);
        }
        if found.repeat {
            return added;
        }
        if let Some(p) = found.previous {
            let start = p + 1;
            if to.window(start).is_none() && start + d >= t {
                added |= self.create(to, start, (self.agg.init)());
            }
        }
        if !found.left_exists {
            let base = left.unwrap_or_else(|| (self.agg.init)());
            added |= self.create(to, t - d, base);
        }
        self.right(to, right);
        added
    }

    /// The windows a regular record meets, from the latest start down.
    fn scan(&self, windows: &KeyWindows<S>) -> Found {
        let (t, d) = (self.time, self.d());
        let mut found = Found::default();
        let from = t.saturating_sub(d.saturating_mul(2)).max(0);
        for (start, win) in windows.range(from..=t + 1).rev() {
            let end = start + d;
            if start == t + 1 {
                found.right_exists = true;
            } else if end > t {
                found.right_source.get_or_insert(start);
                found.containing.push(start);
            } else if end == t {
                found.left_exists = true;
                found.containing.push(start);
                if win.max < t {
                    found.previous = Some(win.max);
                } else {
                    found.repeat = true;
                    break;
                }
            } else {
                found.left_source = Some(start);
                found.previous = Some(win.max);
                break;
            }
        }
        found
    }

    /// `processEarly`: a record before `d`, whose windows would start before the epoch.
    fn early<K>(&self, to: &mut SlideTarget<'_, K, S>) -> bool {
        let t = self.time;
        let mut found = Found::default();
        for (start, win) in to.ks.windows.range(0..=t + 1) {
            if start == 0 {
                found.combined = true;
                found.previous = (win.max < t).then_some(win.max);
            } else if start <= t {
                found.right_source = Some(start);
                found.containing.push(start);
            } else {
                found.right_exists = true;
            }
        }
        if found.right_source.is_none() && found.combined {
            found.right_source = Some(0);
        }
        let right = self.right_copy(&found, to);
        let mut added = false;
        for &start in &found.containing {
            added |= self.add(to, start);
        }
        self.right(to, right);
        if let Some(p) = found.previous
            && to.window(p + 1).is_none()
        {
            added |= self.create(to, p + 1, (self.agg.init)());
        }
        added |= match found.combined {
            true => self.add(to, 0),
            false => self.create(to, 0, (self.agg.init)()),
        };
        added
    }

    /// The right source's aggregate and `max`, when the record's right window is to be made.
    fn right_copy<K>(&self, found: &Found, to: &SlideTarget<'_, K, S>) -> Option<(S, i64)> {
        if found.right_exists {
            return None;
        }
        let source = to.window(found.right_source?)?;
        (source.max > self.time).then(|| (source.state.clone(), source.max))
    }

    /// Writes the record's right window, a copy without the record.
    fn right<K>(&self, to: &mut SlideTarget<'_, K, S>, copy: Option<(S, i64)>) {
        if let Some((state, max)) = copy {
            to.put(self.time + 1, self.size, self.grace, state, max);
        }
    }

    /// Adds the record to the window at `start`, if it is open (`updateWindowAndForward`).
    fn add<K>(&self, to: &mut SlideTarget<'_, K, S>, start: i64) -> bool {
        if !self.open(start) {
            return false;
        }
        let Some(win) = to.ks.windows.get_mut(start) else {
            return false;
        };
        (self.agg.add)(&mut win.state, self.item);
        win.max = win.max.max(self.time);
        *to.latest_start = (*to.latest_start).max(start);
        to.updated.push(start);
        true
    }

    /// Writes the window at `start` as `base` plus the record, if it is open.
    fn create<K>(&self, to: &mut SlideTarget<'_, K, S>, start: i64, mut base: S) -> bool {
        if !self.open(start) {
            return false;
        }
        (self.agg.add)(&mut base, self.item);
        to.put(start, self.size, self.grace, base, self.time);
        true
    }
}
