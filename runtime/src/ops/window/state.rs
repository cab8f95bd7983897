//! The window operator: open windows per partition and key, the watermark, closing and
//! expiry, and the state's stored form. It holds no I/O: the driver feeds it records and clock
//! ticks and hands its writes to the table overlay at each commit step.
//!
//! Sliding windows follow Kafka Streams' algorithm (the `sliding` submodule), which reads the
//! windows a record meets, closed ones included: a closed sliding window stays, not emitted
//! again, until it falls out of the retention Kafka Streams' store gives it.
//!
//! Stored form, per partition of the window's table (keys are bytes, values JSON):
//! - `w | start | key` → `[key, end, state]`: an open window; a sliding window (open, or
//!   closed and retained) is `[key, end, state, largest event time in it]`; `p | start | key`
//!   → `[key, end, state, first window]`: a pane of hopping windows. Time first, so a
//!   partition's entries sort by start: a commit's writes (mostly the newest windows) and a
//!   close's deletes (the oldest) each touch few LMDB pages, and the write transaction's
//!   dirty pages stay few (key first, a commit dirtied pages all over the table: ~75 MiB for
//!   the benchmark's tumbling count). Versions before 2026-12-05 stored keys first
//!   (`W`/`P | len(key) u32 | key | start`): such entries load, and the next commit moves
//!   them (the same value under the time-first key, the old key deleted);
//! - `C` → the partition's clock: largest event time seen, the watermark its windows were
//!   closed at, the `group_by` pumps' watermarks, the offset of the last record applied,
//!   (sliding windows) the largest window start written, and on a time-retained changelog
//!   (`WindowOperator::expire_by_age`) the start below which every window has closed and
//!   when the open windows were last written again.
//!
//! Times are stored sign-flipped big-endian, so LMDB orders them numerically.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Agg, Emit, WindowKind, WindowResult};
use crate::base::codec::KeyBytes;
use crate::base::error::{Error, Result};
use crate::instance::table::ExpiredRanges;
use crate::ops::expiry::{Aging, ChangelogAge, ExpiredBefore, time_bytes, time_from};

mod panes;
mod sliding;

pub(crate) use panes::Panes;

const WINDOW: u8 = b'w';
/// A pane of hopping windows (`panes`).
const PANE: u8 = b'p';
/// The key-first layouts of earlier versions (see the module's docs).
const KEY_FIRST_WINDOW: u8 = b'W';
const KEY_FIRST_PANE: u8 = b'P';
const CLOCK: &[u8] = b"C";

/// A partition's clock as stored (the `C` entry).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredWindowClock {
    max_seen: i64,
    floor: i64,
    /// Watermarks of the pumps feeding a repartition partition: after a restart its windows
    /// follow them, not the interleaved largest event time.
    pumps: Vec<(u64, i64)>,
    /// Offset of the last record applied: one handed out again (an in-place retry, a
    /// redelivery after a crash) is not counted twice.
    applied: i64,
    /// Sliding windows: the largest window start written (what the windows retained are
    /// measured from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latest_start: Option<i64>,
    /// Windows closed without tombstones (`WindowOperator::expire_by_age`): every window and
    /// pane starting before this has closed, though the changelog may still hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expired_below: Option<i64>,
    /// When (wall clock, ms) every open window of the partition was last written again, so
    /// that none ages out of a time-retained changelog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refreshed: Option<i64>,
}

/// What a replayed clock entry shows closed (`ExpiredBefore`): tumbling and hopping windows,
/// whose closing follows their start; sliding and session windows keep tombstones.
pub(crate) fn closed_windows(kind: WindowKind) -> Option<Arc<dyn ExpiredRanges>> {
    match kind {
        WindowKind::Tumbling { .. } | WindowKind::Hopping { .. } => {
            Some(ExpiredBefore::shared(CLOCK, &[WINDOW, PANE]))
        }
        WindowKind::Sliding { .. } | WindowKind::Session { .. } => None,
    }
}

fn window_key(key: &[u8], start: i64) -> Vec<u8> {
    stored_key(WINDOW, key, start)
}

/// The stored key of a window (`w`) or a pane (`p`) of `key` at `start`: time first.
fn stored_key(tag: u8, key: &[u8], start: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + key.len());
    out.push(tag);
    out.extend_from_slice(&time_bytes(start));
    out.extend_from_slice(key);
    out
}

/// A stored window's or pane's key, read in either layout.
struct StoredKey<'a> {
    pane: bool,
    key: &'a [u8],
    start: i64,
    /// In an earlier version's key-first layout (moved at the next commit).
    key_first: bool,
}

fn parse_stored_key(stored: &[u8]) -> Option<StoredKey<'_>> {
    let (&tag, rest) = stored.split_first()?;
    let (key, start, key_first) = match tag {
        WINDOW | PANE => (rest.get(8..)?, rest.get(..8)?, false),
        KEY_FIRST_WINDOW | KEY_FIRST_PANE => {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            (rest.get(4..4 + len)?, rest.get(4 + len..)?, true)
        }
        _ => return None,
    };
    Some(StoredKey {
        pane: matches!(tag, PANE | KEY_FIRST_PANE),
        key,
        start: time_from(start)?,
        key_first,
    })
}

/// A group key's bytes, shared by its entry in the key map, the close queue and the dirty set
/// (one allocation per key, not one per window and structure).
type Key = Arc<[u8]>;

/// The operator's per-record maps: foldhash (randomly seeded per process) is several times
/// cheaper than SipHash on short keys, and SipHash showed in window profiles.
type Hasher = foldhash::fast::RandomState;

pub(crate) struct Win<S> {
    pub(crate) end: i64,
    pub(crate) state: S,
    /// Sliding windows: the largest event time added (Kafka Streams' window timestamp); panes
    /// of hopping windows: the first window the pane joins.
    max: i64,
    /// In the table store (and its changelog): closing it must delete it there. A window
    /// opened and closed between two commits never is, and costs no write at all.
    stored: bool,
}

struct KeyState<K, S> {
    bytes: Key,
    key: K,
    windows: KeyWindows<S>,
    /// Hopping windows by panes: the start of the key's window queued to close next
    /// (`i64::MIN`: none).
    next: i64,
}

impl<K, S> KeyState<K, S> {
    fn new(bytes: Key, key: K) -> Self {
        KeyState {
            bytes,
            key,
            windows: KeyWindows(Vec::new()),
            next: i64::MIN,
        }
    }
}

/// The state of `key` in `keys`, created when it has none. Looked up by the key's bytes
/// borrowed where it holds them (strings, byte vectors): no copy unless the key is new.
fn key_state_of<K: KeyBytes, S>(
    keys: &mut HashMap<Key, KeyState<K, S>, Hasher>,
    key: K,
) -> &mut KeyState<K, S> {
    let bytes = key.key_cow();
    if keys.contains_key(&*bytes) {
        return match keys.get_mut(&*bytes) {
            Some(ks) => ks,
            None => unreachable!("found above"),
        };
    }
    let shared: Key = Arc::from(&*bytes);
    drop(bytes);
    keys.entry(shared.clone())
        .or_insert_with(|| KeyState::new(shared, key))
}

/// The state of `bytes` in `keys`, created with `key()` when it has none.
fn key_state<'a, K, S>(
    keys: &'a mut HashMap<Key, KeyState<K, S>, Hasher>,
    bytes: &[u8],
    key: impl FnOnce() -> K,
) -> &'a mut KeyState<K, S> {
    if !keys.contains_key(bytes) {
        let shared: Key = Arc::from(bytes);
        keys.insert(shared.clone(), KeyState::new(shared, key()));
    }
    match keys.get_mut(bytes) {
        Some(ks) => ks,
        None => unreachable!("inserted above"),
    }
}

/// A key's open windows by start, in a sorted vector: a key has one or a few windows open at a
/// time, and a `BTreeMap` would allocate a node of eleven slots for the first.
struct KeyWindows<S>(Vec<(i64, Win<S>)>);

impl<S> KeyWindows<S> {
    fn find(&self, start: i64) -> std::result::Result<usize, usize> {
        self.0.binary_search_by_key(&start, |(s, _)| *s)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(&self, start: i64) -> Option<&Win<S>> {
        self.find(start).ok().map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, start: i64) -> Option<&mut Win<S>> {
        self.find(start).ok().map(|i| &mut self.0[i].1)
    }

    /// The window at `start`, made by `open` when there is none.
    fn get_or_insert_with(&mut self, start: i64, open: impl FnOnce() -> Win<S>) -> &mut Win<S> {
        let i = match self.find(start) {
            Ok(i) => i,
            Err(i) => {
                self.add(i, start, open());
                i
            }
        };
        &mut self.0[i].1
    }

    fn insert(&mut self, start: i64, win: Win<S>) {
        match self.find(start) {
            Ok(i) => self.0[i].1 = win,
            Err(i) => self.add(i, start, win),
        }
    }

    /// Adds a window at `i`. A key's first window gets room for itself alone (a vector's
    /// first growth makes room for four): most keys have one window open at a time.
    fn add(&mut self, i: usize, start: i64, win: Win<S>) {
        if self.0.capacity() == 0 {
            self.0.reserve_exact(1);
        }
        self.0.insert(i, (start, win));
    }

    fn remove(&mut self, start: i64) -> Option<Win<S>> {
        self.find(start).ok().map(|i| self.0.remove(i).1)
    }

    /// The windows whose start is in `starts`, by start.
    fn range(
        &self,
        starts: impl RangeBounds<i64>,
    ) -> impl DoubleEndedIterator<Item = (i64, &Win<S>)> {
        let from = match starts.start_bound() {
            Bound::Included(&s) => self.0.partition_point(|(t, _)| *t < s),
            Bound::Excluded(&s) => self.0.partition_point(|(t, _)| *t <= s),
            Bound::Unbounded => 0,
        };
        let to = match starts.end_bound() {
            Bound::Included(&s) => self.0.partition_point(|(t, _)| *t <= s),
            Bound::Excluded(&s) => self.0.partition_point(|(t, _)| *t < s),
            Bound::Unbounded => self.0.len(),
        };
        self.0[from..to.max(from)].iter().map(|(s, w)| (*s, w))
    }
}

/// Open windows by close time, then key and start. One bucket per close time: the windows of
/// a tumbling or hopping period share it, with no tree node or key copy per window.
#[derive(Default)]
struct Closing(BTreeMap<i64, Vec<(Key, i64)>>);

impl Closing {
    fn insert(&mut self, at: i64, key: &Key, start: i64) {
        self.0.entry(at).or_default().push((key.clone(), start));
    }

    fn remove(&mut self, at: i64, key: &[u8], start: i64) {
        if let Some(bucket) = self.0.get_mut(&at) {
            if let Some(i) = bucket.iter().position(|(k, s)| *s == start && **k == *key) {
                bucket.swap_remove(i);
            }
            if bucket.is_empty() {
                self.0.remove(&at);
            }
        }
    }

    /// The earliest bucket if it closes at or before `wm`, sorted by key and start.
    fn pop_until(&mut self, wm: i64) -> Option<Vec<(Key, i64)>> {
        let entry = self.0.first_entry()?;
        if *entry.key() > wm {
            return None;
        }
        let mut bucket = entry.remove();
        bucket.sort_unstable();
        Some(bucket)
    }
}

/// The window's state in one owned partition: its keys' windows, the close queue and its clock.
struct WindowPartition<K, S> {
    keys: HashMap<Key, KeyState<K, S>, Hasher>,
    closing: Closing,
    /// Sliding windows that closed and are retained, by start (all in one bucket per start).
    retained: Closing,
    /// Sliding windows: the largest window start written (`i64::MIN`: none).
    latest_start: i64,
    max_seen: i64,
    /// The watermark this partition's windows were closed at (never goes back).
    floor: i64,
    /// Clock time of the last record (or of loading), for idleness.
    last_arrival: i64,
    /// A repartition partition: the watermarks of the `group_by` pumps writing to it.
    upstream: crate::base::watermark::Upstream,
    /// Offset of the last record applied (`i64::MIN`: none).
    applied: i64,
    dirty: HashSet<(Key, i64), Hasher>,
    clock_dirty: bool,
    /// Hopping windows by panes: whole windows an earlier version stored, and those closed
    /// since the last commit (their stored entries go).
    legacy: panes::LegacyWindows<S>,
    legacy_gone: Vec<(Key, i64)>,
    /// Entries loaded in the key-first layout, to move at the next commit: each value under
    /// its time-first key, and the old key deleted.
    relocated: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Closed windows and dropped panes without tombstones, and rewrites of the open ones
    /// (see `expire_by_age`).
    aging: Aging,
}

/// Every window and pane starting before this has closed at watermark `floor` (tumbling and
/// hopping windows close in the order of their starts); `None` for other kinds.
fn expired_below(kind: WindowKind, grace: i64, floor: i64) -> Option<i64> {
    let size = match kind {
        WindowKind::Tumbling { size } | WindowKind::Hopping { size, .. } => size,
        WindowKind::Sliding { .. } | WindowKind::Session { .. } => return None,
    };
    (floor != i64::MIN).then(|| {
        floor
            .saturating_sub(size)
            .saturating_sub(grace)
            .saturating_add(1)
    })
}

/// Drops the stored entry of the window or pane of `key` at `start`, just removed from the
/// key's windows: with a tombstone (through `dirty`), or, in a partition that expires by age
/// (`quiet`), without one (the next clock written deletes it from the local copy); nothing
/// when it was never stored.
fn forget(
    dirty: &mut HashSet<(Key, i64), Hasher>,
    quiet: bool,
    key: &Key,
    start: i64,
    stored: bool,
) {
    if stored && !quiet {
        dirty.insert((key.clone(), start));
    } else {
        dirty.remove(&(key.clone(), start));
    }
}

impl<K, S> WindowPartition<K, S> {
    /// A partition with no state yet; `quiet`: see `WindowOperator::expire_by_age`.
    fn new(now: i64, quiet: bool) -> Self {
        WindowPartition {
            keys: HashMap::default(),
            closing: Closing::default(),
            retained: Closing::default(),
            latest_start: i64::MIN,
            max_seen: i64::MIN,
            floor: i64::MIN,
            last_arrival: now,
            upstream: Default::default(),
            applied: i64::MIN,
            dirty: HashSet::default(),
            clock_dirty: false,
            legacy: HashMap::default(),
            legacy_gone: Vec::new(),
            relocated: Vec::new(),
            aging: Aging::new(quiet),
        }
    }

    /// Moves the partition's clock for a record at event time `time`, read at clock time
    /// `now` (`upstream`: the watermark of the `group_by` pump that forwarded it). True when
    /// the instance's watermark may have moved: the partition's watermark rose (its largest
    /// event time, or its pumps' when it follows pumps) from at or below `computed`, the
    /// smallest over the partitions (from above it, another partition holds the watermark),
    /// or it may have been idle (quiet for `idle_timeout`) and counts again.
    fn note_arrival(
        &mut self,
        time: i64,
        upstream: Option<(u64, i64)>,
        now: i64,
        idle_timeout: i64,
        computed: i64,
    ) -> bool {
        let mut moved = now.saturating_sub(self.last_arrival) >= idle_timeout;
        if let Some((pump, watermark)) = upstream {
            moved |= self.upstream.heard(pump, watermark, now);
            self.clock_dirty = true;
        }
        if time > self.max_seen {
            moved |= !self.upstream.follows() && self.max_seen <= computed;
            self.max_seen = time;
            self.clock_dirty = true;
        }
        self.last_arrival = now;
        moved
    }
}

/// Counters the driver turns into agent stats.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) closed: u64,
}

/// One stored change: partition, stored key, value (`None` deletes).
use crate::ops::operator::StateWrite;

pub(crate) type OnClose<K, O> = Box<dyn FnMut(&WindowResult<K, O>) + Send>;

/// The window operator of one window definition: the open windows of every owned partition.
pub(crate) struct WindowOperator<T, K, S, O> {
    kind: WindowKind,
    grace: i64,
    idle_timeout: i64,
    emit: Emit,
    agg: Arc<Agg<T, S, O>>,
    /// Hopping windows kept by panes (see `panes`), when the aggregation allows it.
    panes: Option<Panes>,
    parts: HashMap<i32, WindowPartition<K, S>, Hasher>,
    watermark: i64,
    pub(crate) out: std::collections::VecDeque<WindowResult<K, O>>,
    pub(crate) on_close: Option<OnClose<K, O>>,
    pub(crate) counts: Counts,
    /// The starts of the windows a record updated (kept to reuse its allocation).
    updated: Vec<i64>,
    /// Something `advance` reads changed since it last ran, other than the clock: a record
    /// moved a partition's watermark, a partition was loaded, a pump was heard (see
    /// `must_advance`).
    stale: bool,
    /// The clock time from which `advance` may move the watermark without a record moving a
    /// partition's: a partition or pump going quiet for the idle timeout.
    due: i64,
    /// The smallest clock over the partitions that `advance` last computed (before the
    /// floor): a record that moves a partition's clock from above it moves no watermark.
    computed: i64,
    /// What the changelog drops by age (`expire_by_age`).
    age: ChangelogAge,
}

impl<T, K, S, O> WindowOperator<T, K, S, O>
where
    T: Serialize + DeserializeOwned,
    K: KeyBytes + Serialize + DeserializeOwned + Clone,
    S: Serialize + DeserializeOwned + Clone,
{
    pub(crate) fn new(
        kind: WindowKind,
        grace: i64,
        idle_timeout: i64,
        emit: Emit,
        agg: Arc<Agg<T, S, O>>,
    ) -> Self {
        let panes = match kind {
            WindowKind::Hopping { size, step }
                if step < size && emit == Emit::Final && agg.order_free && agg.merge.is_some() =>
            {
                Some(Panes::new(size, step, grace))
            }
            _ => None,
        };
        WindowOperator {
            kind,
            grace,
            idle_timeout,
            emit,
            agg,
            panes,
            parts: HashMap::default(),
            watermark: i64::MIN,
            out: Default::default(),
            on_close: None,
            counts: Counts::default(),
            updated: Vec::new(),
            stale: true,
            due: i64::MIN,
            computed: i64::MIN,
            age: ChangelogAge::default(),
        }
    }

    /// The window's changelog may drop records older than `retention` ms, and does when
    /// `by_age` (`None`: it keeps them until a tombstone). So that no open window ages out,
    /// each partition then writes all its open windows again every quarter of the retention.
    /// When it does, tumbling and hopping windows close without tombstones: the local copy
    /// deletes them, the changelog keeps them until they age out, and the stored clock's
    /// `expired_below` tells recovery and standbys that they closed. (Kafka Streams'
    /// windowed changelogs are `compact,delete` too, but keep a window only as long as its
    /// retention in stream time.)
    pub(crate) fn expire_by_age(&mut self, changelog: Option<(i64, bool)>) {
        let closes_in_order = matches!(
            self.kind,
            WindowKind::Tumbling { .. } | WindowKind::Hopping { .. }
        );
        self.age = ChangelogAge::new(changelog.filter(|_| closes_in_order));
        for part in self.parts.values_mut() {
            part.aging.quiet = self.age.quiet();
        }
    }

    /// The same operator keeping every window whole (the path panes replace), for tests that
    /// compare the two.
    #[cfg(test)]
    pub(crate) fn without_panes(mut self) -> Self {
        self.panes = None;
        self
    }

    /// The instance's current watermark.
    #[cfg(test)]
    pub(crate) fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Forgets every partition (after a rebalance; they are reloaded from the store).
    pub(crate) fn clear(&mut self) {
        self.parts.clear();
        self.watermark = i64::MIN;
        self.stale = true;
    }

    pub(crate) fn has_partition(&self, partition: i32) -> bool {
        self.parts.contains_key(&partition)
    }

    /// Loads a partition from its stored entries.
    pub(crate) fn load(
        &mut self,
        partition: i32,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        now: i64,
    ) -> Result<()> {
        self.stale = true;
        let mut part = WindowPartition::new(now, self.age.quiet());
        let bad = |what: &str, e: serde_json::Error| Error::Agent {
            agent: String::new(),
            message: format!(
                "window state: a stored {what} of partition {partition} does not decode ({e}); did the window's key, record or state type change? name the window differently to start afresh"
            ),
        };
        if let Some((_, value)) = entries.iter().find(|(k, _)| k == CLOCK) {
            let clock: StoredWindowClock =
                serde_json::from_slice(value).map_err(|e| bad("clock", e))?;
            part.max_seen = clock.max_seen;
            part.floor = clock.floor;
            part.applied = clock.applied;
            part.upstream.restore(clock.pumps);
            part.latest_start = clock.latest_start.unwrap_or(i64::MIN);
            part.aging.loaded(clock.refreshed);
        }
        let below = expired_below(self.kind, self.grace, part.floor).unwrap_or(i64::MIN);
        let mut windows = Vec::new();
        for (stored, value) in entries {
            // (Other tags: entries of an earlier version, such as the record buffer sliding
            // windows kept, are left alone.)
            let Some(at) = parse_stored_key(&stored) else {
                continue;
            };
            if at.start < below {
                // Closed at the stored watermark; its entry came back from a changelog that
                // keeps it until it ages out (or a tombstone was not written): it goes.
                if part.aging.quiet && !at.key_first {
                    // The next clock written deletes it from the local copy.
                    part.clock_dirty = true;
                } else {
                    part.relocated.push((stored, None));
                }
                continue;
            }
            let with_max = at.pane || matches!(self.kind, WindowKind::Sliding { .. });
            let window = self
                .decode_window(&value, with_max)
                .map_err(|e| bad("window", e))?;
            let (pane, key, start) = (at.pane, at.key.to_vec(), at.start);
            if at.key_first {
                let tag = if pane { PANE } else { WINDOW };
                part.relocated
                    .push((stored_key(tag, &key, start), Some(value)));
                part.relocated.push((stored, None));
            }
            windows.push((pane, key, start, window));
        }
        if let Some(panes) = self.panes {
            for (pane, key, start, (k, win)) in windows {
                let ks = key_state(&mut part.keys, &key, || k);
                if pane {
                    ks.windows.insert(start, win);
                } else {
                    // A whole window stored before panes: merged with its panes at close.
                    part.legacy.insert((ks.bytes.clone(), start), win);
                }
            }
            panes::schedule_loaded(&mut part, panes);
            self.parts.insert(partition, part);
            return Ok(());
        }
        // After the clock: a sliding window closed at its watermark is retained, not closed again.
        for (_, key, start, (k, win)) in windows.into_iter().filter(|w| !w.0) {
            let ks = key_state(&mut part.keys, &key, || k);
            let close = self.close_time(win.end);
            if matches!(self.kind, WindowKind::Sliding { .. }) && close <= part.floor {
                part.retained.insert(start, &ks.bytes, start);
            } else {
                part.closing.insert(close, &ks.bytes, start);
            }
            ks.windows.insert(start, win);
        }
        self.parts.insert(partition, part);
        Ok(())
    }

    /// A stored window's key and window: sliding windows and panes carry `Win::max`.
    fn decode_window(&self, value: &[u8], with_max: bool) -> serde_json::Result<(K, Win<S>)> {
        let (k, end, state, max) = if with_max {
            serde_json::from_slice::<(K, i64, S, i64)>(value)?
        } else {
            let (k, end, state) = serde_json::from_slice::<(K, i64, S)>(value)?;
            (k, end, state, i64::MIN)
        };
        let win = Win {
            end,
            state,
            max,
            stored: true,
        };
        Ok((k, win))
    }

    fn close_time(&self, end: i64) -> i64 {
        let extra = match self.kind {
            WindowKind::Session { gap } => gap,
            _ => 0,
        };
        end.saturating_add(extra).saturating_add(self.grace)
    }

    /// True when some partition has changes to write.
    pub(crate) fn dirty(&self) -> bool {
        let now = self.age.now();
        self.parts.values().any(|p| {
            p.clock_dirty
                || !p.dirty.is_empty()
                || !p.legacy_gone.is_empty()
                || !p.relocated.is_empty()
                || self.age.refresh_due(&p.aging, now)
        })
    }

    /// Marks every stored window (or pane) of `part` to be written again, and its clock.
    fn refresh(part: &mut WindowPartition<K, S>, now: i64) {
        for ks in part.keys.values() {
            for (start, win) in &ks.windows.0 {
                if win.stored {
                    part.dirty.insert((ks.bytes.clone(), *start));
                }
            }
        }
        part.clock_dirty = true;
        part.aging.refreshed = now;
    }

    /// The changes since the last call, as (partition, stored key, value or delete).
    pub(crate) fn take_writes(&mut self) -> Result<Vec<StateWrite>> {
        let mut out = Vec::new();
        let encode = |e: serde_json::Error| Error::Agent {
            agent: String::new(),
            message: format!("cannot encode window state: {e}"),
        };
        // Sliding windows and panes store a fourth field (`Win::max`).
        let with_max = matches!(self.kind, WindowKind::Sliding { .. }) || self.panes.is_some();
        let tag = if self.panes.is_some() { PANE } else { WINDOW };
        // One buffer encodes every window; each value is then copied out at its exact size
        // (`serde_json::to_vec` started a 128-byte vector per window). The bytes are the same.
        let mut buf = Vec::with_capacity(128);
        let (kind, grace, age) = (self.kind, self.grace, self.age);
        let now = age.now();
        for (&partition, part) in &mut self.parts {
            if age.refresh_due(&part.aging, now) {
                Self::refresh(part, now);
            }
            // Moved entries first: a later write of the same window (changed, or closed) wins.
            out.extend(part.relocated.drain(..).map(|(k, v)| (partition, k, v)));
            for (key, start) in part.legacy_gone.drain(..) {
                out.push((partition, window_key(&key, start), None));
            }
            for (key, start) in part.dirty.drain() {
                let stored = stored_key(tag, &key, start);
                let value = match part.keys.get_mut(&key).and_then(|ks| {
                    let KeyState { key, windows, .. } = ks;
                    windows.get_mut(start).map(|w| (&*key, w))
                }) {
                    Some((k, w)) => {
                        w.stored = true;
                        buf.clear();
                        if with_max {
                            serde_json::to_writer(&mut buf, &(k, w.end, &w.state, w.max))
                        } else {
                            serde_json::to_writer(&mut buf, &(k, w.end, &w.state))
                        }
                        .map_err(encode)?;
                        Some(buf.as_slice().to_vec())
                    }
                    None => None,
                };
                out.push((partition, stored, value));
            }
            if part.clock_dirty {
                part.clock_dirty = false;
                let clock = StoredWindowClock {
                    max_seen: part.max_seen,
                    floor: part.floor,
                    pumps: part.upstream.snapshot(),
                    applied: part.applied,
                    latest_start: (part.latest_start != i64::MIN).then_some(part.latest_start),
                    expired_below: part
                        .aging
                        .quiet
                        .then(|| expired_below(kind, grace, part.floor))
                        .flatten(),
                    refreshed: age.refreshed(&part.aging),
                };
                let value = serde_json::to_vec(&clock).map_err(encode)?;
                out.push((partition, CLOCK.to_vec(), Some(value)));
            }
        }
        Ok(out)
    }

    /// Handles one record of `partition` at event time `time`; results go to `out`. Returns
    /// the record when it is late (every window it belongs to has closed).
    #[allow(
        clippy::too_many_arguments,
        reason = "one record's parts, as the driver has them"
    )]
    pub(crate) fn on_record(
        &mut self,
        partition: i32,
        key: K,
        time: i64,
        item: T,
        now: i64,
        upstream: Option<(u64, i64)>,
        offset: Option<i64>,
    ) -> Option<T> {
        let watermark = self.watermark;
        let (kind, grace, emit) = (self.kind, self.grace, self.emit);
        // Borrowed apart from the partitions (no reference count touched per record).
        let agg = &*self.agg;
        // A new partition, and sliding windows (the retention `advance` expires follows the
        // latest window start a record writes), always need an advance.
        self.stale |= matches!(kind, WindowKind::Sliding { .. });
        let quiet = self.age.quiet();
        let part = self.parts.entry(partition).or_insert_with(|| {
            self.stale = true;
            WindowPartition::new(now, quiet)
        });
        if let Some(offset) = offset {
            if offset <= part.applied {
                // Already in the windows (handed out again after a failure or a crash).
                return None;
            }
            part.applied = offset;
            part.clock_dirty = true;
        }
        let rules = Rules {
            agg,
            kind,
            panes: self.panes,
            grace,
            wm: watermark.max(part.floor),
        };
        let mut updated = std::mem::take(&mut self.updated);
        updated.clear();
        let ks = key_state_of(&mut part.keys, key);
        let accepted = add_to_windows(
            &rules,
            ks,
            &mut part.closing,
            &mut part.dirty,
            &mut part.latest_start,
            time,
            &item,
            &mut updated,
        );
        // A late record may still have written a window: a sliding window copied from another.
        for &start in &updated {
            part.dirty.insert((ks.bytes.clone(), start));
        }
        if emit == Emit::Update {
            for &start in &updated {
                if let Some(w) = ks.windows.get(start) {
                    self.out.push_back(WindowResult {
                        key: ks.key.clone(),
                        start,
                        end: w.end,
                        value: (agg.output)(&w.state),
                    });
                }
            }
        }
        let mut late = None;
        if !accepted {
            late = Some(item);
            if ks.windows.is_empty() {
                let bytes = ks.bytes.clone();
                part.keys.remove(&bytes);
            }
        }
        self.updated = updated;
        self.stale |= part.note_arrival(time, upstream, now, self.idle_timeout, self.computed);
        late
    }

    /// A pump's watermark marker read from `partition`.
    pub(crate) fn heard(&mut self, partition: i32, pump: u64, watermark: i64, now: i64) {
        if let Some(part) = self.parts.get_mut(&partition) {
            part.upstream.heard(pump, watermark, now);
            part.clock_dirty = true;
            self.stale = true;
        }
    }

    /// False when `advance` at clock time `now` would change nothing, given the floor and the
    /// caught-up partitions it last ran with (the caller tracks those): no record moved the
    /// watermark of a partition that held the instance's (at or below the smallest
    /// `advance` computed) or may have woken an idle one since, no partition was loaded, and
    /// no partition or pump has gone quiet for the idle timeout. New windows close after the
    /// watermark (records at or behind it are late), so the close queue has nothing to hand
    /// out either.
    pub(crate) fn must_advance(&self, now: i64) -> bool {
        self.stale || now >= self.due
    }

    /// The earliest clock time after `now` at which a partition or a pump may go idle; the
    /// next millisecond when every partition may be idle already (the watermark then moves
    /// with the clock).
    fn next_due(&self, now: i64) -> i64 {
        let mut due = i64::MAX;
        let mut all_quiet = true;
        for part in self.parts.values() {
            let idle_at = part.last_arrival.saturating_add(self.idle_timeout);
            if idle_at > now {
                due = due.min(idle_at);
                all_quiet = false;
            }
            if let Some(at) = part.upstream.next_quiet(now, self.idle_timeout) {
                due = due.min(at);
            }
        }
        if all_quiet {
            due = now.saturating_add(1);
        }
        due
    }

    /// Recomputes the watermark at clock time `now` and closes the windows it passed. A
    /// partition is idle when it is `caught_up` (read to its end, nothing waiting) and had no
    /// record for the idle timeout; a partition with records still to read never is, however
    /// long they take to reach the window.
    pub(crate) fn advance(&mut self, now: i64, floor: i64, caught_up: &HashSet<i32>) {
        let computed = watermark_of(
            self.parts
                .iter_mut()
                .map(|(&partition, part)| PartitionTime {
                    partition,
                    max_seen: part.max_seen,
                    last_arrival: part.last_arrival,
                    upstream: &mut part.upstream,
                }),
            now,
            self.idle_timeout,
            caught_up,
        );
        self.computed = computed;
        self.watermark = self.watermark.max(computed).max(floor);
        let watermark = self.watermark;
        let agg = self.agg.clone();
        let retention = match self.kind {
            WindowKind::Sliding { size } => Some(sliding::retention(size, self.grace)),
            _ => None,
        };
        for part in self.parts.values_mut() {
            let wm = watermark.max(part.floor);
            if wm > part.floor {
                part.floor = wm;
                part.clock_dirty = true;
            }
            while let Some(bucket) = part.closing.pop_until(wm) {
                for (key, start) in bucket {
                    let closed = match self.panes {
                        Some(panes) => panes::close(part, &key, start, panes, &agg),
                        None => close(part, &key, start, retention, &agg),
                    };
                    let Some(result) = closed else {
                        continue;
                    };
                    self.counts.closed += 1;
                    if let Some(on_close) = &mut self.on_close {
                        on_close(&result);
                    }
                    if self.emit == Emit::Final {
                        self.out.push_back(result);
                    }
                }
            }
            if let Some(retention) = retention {
                sliding::expire(part, retention);
            }
        }
        self.stale = false;
        self.due = self.next_due(now);
    }
}

/// Closes the window of `key` at `start` and returns its result. Its state is deleted, unless
/// it is a sliding window still within `retention` of the latest start written: then it stays,
/// closed (see `sliding`).
fn close<T, K: Clone, S, O>(
    part: &mut WindowPartition<K, S>,
    key: &Key,
    start: i64,
    retention: Option<i64>,
    agg: &Agg<T, S, O>,
) -> Option<WindowResult<K, O>> {
    let key_bytes = key.clone();
    let ks = part.keys.get_mut(key)?;
    let win = ks.windows.get(start)?;
    let (end, value) = (win.end, (agg.output)(&win.state));
    if retention.is_some_and(|r| start >= part.latest_start.saturating_sub(r)) {
        part.retained.insert(start, key, start);
        let key = ks.key.clone();
        return Some(WindowResult {
            key,
            start,
            end,
            value,
        });
    }
    let win = ks.windows.remove(start)?;
    // The key's last window: its state goes, and its key moves to the result.
    let key = if ks.windows.is_empty() {
        part.keys.remove(key)?.key
    } else {
        ks.key.clone()
    };
    // (Sliding windows are never quiet: retained ones are deleted by `sliding::expire`.)
    forget(
        &mut part.dirty,
        part.aging.quiet,
        &key_bytes,
        start,
        win.stored,
    );
    Some(WindowResult {
        key,
        start,
        end,
        value,
    })
}

/// A partition's clock, as the instance watermark reads it.
pub(crate) struct PartitionTime<'a> {
    pub(crate) partition: i32,
    pub(crate) max_seen: i64,
    pub(crate) last_arrival: i64,
    pub(crate) upstream: &'a mut crate::base::watermark::Upstream,
}

/// The watermark of an instance's partitions at clock time `now` (windows and joins share it):
/// the smallest over the partitions that are not idle of their largest event time (or, for a
/// repartition partition, of its `group_by` pumps' watermark). A partition is idle when it is
/// `caught_up` (read to its end, nothing waiting) and had no record for `idle_timeout`; a
/// partition with records still to read never is, however long they take to arrive. When
/// every partition is idle, the watermark advances with the wall clock from the newest event.
pub(crate) fn watermark_of<'a>(
    parts: impl Iterator<Item = PartitionTime<'a>>,
    now: i64,
    idle_timeout: i64,
    caught_up: &HashSet<i32>,
) -> i64 {
    let mut min_active: Option<i64> = None;
    let mut max_seen = i64::MIN;
    let mut last_arrival = i64::MIN;
    for part in parts {
        max_seen = max_seen.max(part.max_seen);
        last_arrival = last_arrival.max(part.last_arrival);
        let idle = caught_up.contains(&part.partition)
            && now.saturating_sub(part.last_arrival) >= idle_timeout;
        if !idle {
            // Fed by `group_by` pumps: their watermark, not the interleaved event times.
            let reached = part
                .upstream
                .watermark(now, idle_timeout)
                .unwrap_or(part.max_seen);
            min_active = Some(min_active.map_or(reached, |m: i64| m.min(reached)));
        }
    }
    match min_active {
        Some(m) => m,
        None if max_seen == i64::MIN => i64::MIN,
        None => max_seen.saturating_add(
            now.saturating_sub(last_arrival)
                .saturating_sub(idle_timeout)
                .max(0),
        ),
    }
}

fn close_at(end: i64, grace: i64) -> i64 {
    end.saturating_add(grace)
}

/// What every record of a partition is judged by.
struct Rules<'a, T, S, O> {
    agg: &'a Agg<T, S, O>,
    kind: WindowKind,
    panes: Option<Panes>,
    grace: i64,
    /// The watermark before the record.
    wm: i64,
}

/// Adds a record at `time` to the windows of its key; false when it is late (added to none).
/// `updated` gets the starts of the windows written.
#[allow(
    clippy::too_many_arguments,
    reason = "the operator's parts, borrowed apart"
)]
fn add_to_windows<T, K, S: Clone, O>(
    rules: &Rules<'_, T, S, O>,
    ks: &mut KeyState<K, S>,
    closing: &mut Closing,
    dirty: &mut HashSet<(Key, i64), Hasher>,
    latest_start: &mut i64,
    time: i64,
    item: &T,
    updated: &mut Vec<i64>,
) -> bool {
    let Rules {
        agg,
        kind,
        panes,
        grace,
        wm,
    } = *rules;
    if let Some(panes) = panes {
        return panes::add(agg, ks, closing, panes, wm, time, item, updated);
    }
    match kind {
        WindowKind::Tumbling { size } => {
            let start = time.div_euclid(size) * size;
            add_fixed(agg, ks, closing, start, size, grace, wm, item, updated)
        }
        WindowKind::Hopping { size, step } => {
            let mut start = time.div_euclid(step) * step;
            let mut any = false;
            while start > time - size {
                any |= add_fixed(agg, ks, closing, start, size, grace, wm, item, updated);
                start -= step;
            }
            any
        }
        WindowKind::Sliding { size } => {
            let record = sliding::Slide {
                agg,
                size,
                grace,
                wm,
                time,
                item,
            };
            record.apply(ks, closing, latest_start, updated)
        }
        WindowKind::Session { gap } => {
            add_to_session(agg, ks, closing, dirty, time, gap, grace, wm, item, updated)
        }
    }
}

/// Adds a record to the fixed-size window at `start`, unless it has closed.
#[allow(
    clippy::too_many_arguments,
    reason = "the operator's parts, borrowed apart"
)]
fn add_fixed<T, K, S, O>(
    agg: &Agg<T, S, O>,
    ks: &mut KeyState<K, S>,
    closing: &mut Closing,
    start: i64,
    size: i64,
    grace: i64,
    wm: i64,
    item: &T,
    updated: &mut Vec<i64>,
) -> bool {
    let end = start + size;
    if close_at(end, grace) <= wm {
        return false;
    }
    let bytes = &ks.bytes;
    let win = ks.windows.get_or_insert_with(start, || {
        closing.insert(close_at(end, grace), bytes, start);
        Win {
            end,
            state: (agg.init)(),
            max: i64::MIN,
            stored: false,
        }
    });
    (agg.add)(&mut win.state, item);
    updated.push(start);
    true
}

/// Session windows: the record joins (and merges) every open session of its key within `gap`.
#[allow(
    clippy::too_many_arguments,
    reason = "the operator's parts, borrowed apart"
)]
fn add_to_session<T, K, S, O>(
    agg: &Agg<T, S, O>,
    ks: &mut KeyState<K, S>,
    closing: &mut Closing,
    dirty: &mut HashSet<(Key, i64), Hasher>,
    time: i64,
    gap: i64,
    grace: i64,
    wm: i64,
    item: &T,
    updated: &mut Vec<i64>,
) -> bool {
    let joined: Vec<i64> = ks
        .windows
        .range(..=time.saturating_add(gap))
        .filter(|(_, w)| w.end >= time.saturating_sub(gap))
        .map(|(s, _)| s)
        .collect();
    let mut start = time;
    let mut end = time;
    for s in &joined {
        if let Some(w) = ks.windows.get(*s) {
            start = start.min(*s);
            end = end.max(w.end);
        }
    }
    if close_at(end.saturating_add(gap), grace) <= wm {
        return false;
    }
    let mut state = (agg.init)();
    for s in joined {
        if let Some(w) = ks.windows.remove(s) {
            closing.remove(close_at(w.end.saturating_add(gap), grace), &ks.bytes, s);
            if w.stored {
                dirty.insert((ks.bytes.clone(), s));
            } else {
                dirty.remove(&(ks.bytes.clone(), s));
            }
            match &agg.merge {
                Some(merge) => merge(&mut state, w.state),
                None => state = w.state,
            }
        }
    }
    (agg.add)(&mut state, item);
    closing.insert(close_at(end.saturating_add(gap), grace), &ks.bytes, start);
    ks.windows.insert(
        start,
        Win {
            end,
            state,
            max: i64::MIN,
            stored: false,
        },
    );
    updated.push(start);
    true
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    type CountWindows = WindowOperator<i64, String, u64, u64>;

    /// Every partition read to its end.
    fn all() -> HashSet<i32> {
        (0..8).collect()
    }

    fn count() -> Arc<Agg<i64, u64, u64>> {
        Arc::new(Agg {
            name: "count",
            init: Box::new(|| 0),
            add: Box::new(|n, _| *n += 1),
            merge: Some(Box::new(|n, m| *n += m)),
            order_free: true,
            output: Box::new(|n| *n),
        })
    }

    fn op(kind: WindowKind, grace: i64) -> CountWindows {
        WindowOperator::new(kind, grace, 1_000, Emit::Final, count())
    }

    /// Sends (key, time) records to partition 0 at clock 0, advancing after each.
    fn feed(op: &mut CountWindows, records: &[(&str, i64)]) -> Vec<Option<i64>> {
        records
            .iter()
            .map(|&(key, time)| {
                let late = op.on_record(0, key.to_owned(), time, time, 0, None, None);
                op.advance(0, i64::MIN, &all());
                late
            })
            .collect()
    }

    fn results(op: &mut CountWindows) -> Vec<(String, i64, i64, u64)> {
        let mut out: Vec<_> = op
            .out
            .drain(..)
            .map(|r| (r.key, r.start, r.end, r.value))
            .collect();
        out.sort();
        out
    }

    fn w(key: &str, start: i64, end: i64, n: u64) -> (String, i64, i64, u64) {
        (key.to_owned(), start, end, n)
    }

    #[test]
    fn tumbling_closes_on_the_watermark_and_drops_late_records() {
        let mut op = op(WindowKind::Tumbling { size: 10 }, 0);
        // 3 arrives after 12: the watermark (12) has passed 10 + grace (0), so [0, 10) has
        // closed and 3 is late.
        let late = feed(
            &mut op,
            &[("a", 1), ("a", 5), ("b", 9), ("a", 12), ("a", 3)],
        );
        assert_eq!(late, vec![None, None, None, None, Some(3)]);
        assert_eq!(results(&mut op), vec![w("a", 0, 10, 2), w("b", 0, 10, 1)]);
        feed(&mut op, &[("a", 15), ("a", 30)]);
        assert_eq!(results(&mut op), vec![w("a", 10, 20, 2)]);
    }

    #[test]
    fn grace_keeps_a_window_open_for_out_of_order_records() {
        let mut op = op(WindowKind::Tumbling { size: 10 }, 5);
        let late = feed(
            &mut op,
            &[("a", 1), ("a", 12), ("a", 3), ("a", 15), ("a", 4)],
        );
        // [0, 10) closes when the watermark reaches 15: the record at 4 comes after that.
        assert_eq!(late, vec![None, None, None, None, Some(4)]);
        assert_eq!(results(&mut op), vec![w("a", 0, 10, 2)]);
    }

    #[test]
    fn hopping_windows_count_a_record_in_each_window_containing_it() {
        let mut op = op(WindowKind::Hopping { size: 10, step: 5 }, 0);
        feed(&mut op, &[("a", 1), ("a", 7), ("a", 12), ("a", 100)]);
        assert_eq!(
            results(&mut op),
            vec![
                w("a", -5, 5, 1),
                w("a", 0, 10, 2),
                w("a", 5, 15, 2),
                w("a", 10, 20, 1)
            ]
        );
    }

    /// Sliding windows of `size` 10 ms: Kafka Streams' `SlidingWindows.ofTimeDifference(9 ms)`.
    /// The expected windows below are what Kafka Streams 4.1.1 emitted for the same records
    /// (bench/kstreams `WindowsDiff`, ends plus one).
    fn slide(grace: i64) -> CountWindows {
        op(WindowKind::Sliding { size: 10 }, grace)
    }

    #[test]
    fn sliding_windows_follow_kafka_streams_in_and_out_of_order() {
        // The left windows of 105, 108 and 120, and the right window of 105, holding 108.
        let expected = vec![
            w("a", 96, 106, 1),
            w("a", 99, 109, 2),
            w("a", 106, 116, 1),
            w("a", 111, 121, 1),
        ];
        for records in [[105, 108, 120], [120, 108, 105], [108, 120, 105]] {
            let mut op = slide(100);
            feed(&mut op, &records.map(|t| ("a", t)));
            op.advance(0, 1_000, &all());
            assert_eq!(results(&mut op), expected, "records {records:?}");
        }
    }

    #[test]
    fn sliding_windows_gather_records_before_the_time_difference_in_one_window() {
        // Kafka Streams' early records (before 9 ms): [0, 10) holds 5 and 8; the right window
        // of 5 holds 8.
        let expected = vec![w("a", 0, 10, 2), w("a", 6, 16, 1), w("a", 11, 21, 1)];
        for records in [[5, 8, 20], [20, 8, 5]] {
            let mut op = slide(100);
            feed(&mut op, &records.map(|t| ("a", t)));
            op.advance(0, 1_000, &all());
            assert_eq!(results(&mut op), expected, "records {records:?}");
        }
        let mut op = slide(100);
        assert_eq!(
            feed(&mut op, &[("a", -1)]),
            vec![Some(-1)],
            "before the epoch"
        );
    }

    #[test]
    fn a_late_sliding_record_can_still_copy_a_closed_window_into_its_right_window() {
        let mut op = slide(0);
        // 111 closes a's windows; 102 is added to none of them (all closed): late. Its right
        // window [103, 113) still copies the window holding 109, closed but retained.
        let late = feed(&mut op, &[("a", 100), ("a", 109), ("b", 111), ("a", 102)]);
        assert_eq!(late, vec![None, None, None, Some(102)]);
        op.advance(0, 1_000, &all());
        let got = results(&mut op);
        let want = vec![
            w("a", 91, 101, 1),
            w("a", 100, 110, 2),
            w("a", 101, 111, 1),
            w("a", 103, 113, 1),
            w("b", 102, 112, 1),
        ];
        assert_eq!(got, want);
        // 108 meets [91, 101), closed: it neither updates it nor makes windows that closed.
        let mut op = slide(0);
        let late = feed(&mut op, &[("a", 100), ("b", 115), ("a", 108)]);
        assert_eq!(late, vec![None, None, Some(108)]);
        op.advance(0, 1_000, &all());
        assert_eq!(
            results(&mut op),
            vec![w("a", 91, 101, 1), w("b", 106, 116, 1)]
        );
    }
    #[test]
    fn sessions_merge_when_a_record_bridges_them() {
        let mut op = op(WindowKind::Session { gap: 10 }, 100);
        feed(
            &mut op,
            &[("a", 0), ("a", 5), ("a", 30), ("a", 20), ("b", 3)],
        );
        op.advance(0, 60, &all());
        // Closed at end + gap + grace: b's [3, 3] at 113, nothing yet.
        assert!(results(&mut op).is_empty());
        feed(&mut op, &[("a", 12)]);
        op.advance(0, 1_000, &all());
        assert_eq!(results(&mut op), vec![w("a", 0, 30, 5), w("b", 3, 3, 1)]);
    }

    #[test]
    fn a_record_that_could_only_form_a_closed_session_is_late() {
        let mut op = op(WindowKind::Session { gap: 20 }, 0);
        // b at 120 closes a's [100, 100] (100 + 20 + 0). A second a at 100 would form
        // [100, 100] again, closed at once: late here, where Kafka Streams emits [100, 100]
        // a second time (see the module docs of `window`).
        let late = feed(&mut op, &[("a", 100), ("b", 120), ("a", 100)]);
        assert_eq!(late, vec![None, None, Some(100)]);
        assert_eq!(results(&mut op), vec![w("a", 100, 100, 1)]);
    }

    #[test]
    fn the_slowest_partition_holds_the_watermark_until_it_is_idle() {
        let mut op = op(WindowKind::Tumbling { size: 10 }, 0);
        op.load(1, Vec::new(), 0).unwrap();
        feed(&mut op, &[("a", 1), ("a", 50)]);
        assert!(results(&mut op).is_empty(), "partition 1 has seen nothing");
        assert_eq!(op.watermark(), i64::MIN);
        // Partition 1 catches up to 20: the watermark is min(50, 20).
        op.on_record(1, "b".into(), 20, 20, 0, None, None);
        op.advance(0, i64::MIN, &all());
        assert_eq!(op.watermark(), 20);
        assert_eq!(results(&mut op), vec![w("a", 0, 10, 1)]);
        // Partition 0 keeps receiving; partition 1 goes quiet for the idle timeout (1 s of
        // clock): it stops holding the watermark back.
        op.on_record(0, "a".into(), 60, 60, 1_500, None, None);
        op.advance(1_500, i64::MIN, &all());
        assert_eq!(op.watermark(), 60);
        assert_eq!(results(&mut op), vec![w("a", 50, 60, 1), w("b", 20, 30, 1)]);
        // Everything idle: the watermark moves with the clock past the idle timeout.
        op.advance(2_500 + 5, i64::MIN, &all());
        assert_eq!(op.watermark(), 65);
        assert_eq!(results(&mut op), Vec::new());
        op.advance(2_500 + 10, i64::MIN, &all());
        assert_eq!(results(&mut op), vec![w("a", 60, 70, 1)]);
    }

    #[test]
    fn a_record_handed_out_again_is_not_counted_twice() {
        let mut op = op(WindowKind::Tumbling { size: 10 }, 0);
        let at = |op: &mut CountWindows, offset| {
            op.on_record(0, "a".into(), 1, 1, 0, None, Some(offset))
        };
        at(&mut op, 5);
        at(&mut op, 5); // a retry, or a redelivery after a crash
        at(&mut op, 6);
        op.advance(0, 1_000, &all());
        assert_eq!(results(&mut op), vec![w("a", 0, 10, 2)]);
    }

    #[test]
    fn a_partition_with_records_still_to_read_is_never_idle() {
        let mut op = op(WindowKind::Tumbling { size: 10 }, 0);
        op.load(1, Vec::new(), 0).unwrap();
        op.on_record(0, "a".into(), 50, 50, 0, None, None);
        // Partition 1 is behind (its records wait in the queue): it holds the watermark
        // however long the clock runs.
        op.advance(1_000_000, i64::MIN, &HashSet::from([0]));
        assert_eq!(op.watermark(), i64::MIN);
        // Read to its end and quiet for the idle timeout: it stops holding.
        op.advance(1_000_000, i64::MIN, &all());
        assert!(op.watermark() >= 50);
    }

    #[test]
    fn state_round_trips_through_the_store_and_closed_windows_are_deleted() {
        let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut apply = |op: &mut CountWindows| {
            for (_, k, v) in op.take_writes().unwrap() {
                match v {
                    Some(v) => store.insert(k, v),
                    None => store.remove(&k),
                };
            }
            store.clone()
        };
        let mut first = op(WindowKind::Tumbling { size: 10 }, 0);
        feed(&mut first, &[("a", 5), ("b", 8)]);
        let stored = apply(&mut first);
        let mut second = op(WindowKind::Tumbling { size: 10 }, 0);
        second.load(0, stored.into_iter().collect(), 0).unwrap();
        feed(&mut second, &[("a", 7), ("a", 12)]);
        assert_eq!(
            results(&mut second),
            vec![w("a", 0, 10, 2), w("b", 0, 10, 1)]
        );
        let left = apply(&mut second);
        let windows = left.keys().filter(|k| k[0] == WINDOW).count();
        assert_eq!(windows, 1, "only [10, 20) is left");
        let clock: StoredWindowClock = serde_json::from_slice(&left[CLOCK]).unwrap();
        assert_eq!((clock.max_seen, clock.floor), (12, 12));
    }

    #[test]
    fn closed_sliding_windows_stay_stored_until_they_fall_out_of_retention() {
        let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut apply = |op: &mut CountWindows| {
            for (_, k, v) in op.take_writes().unwrap() {
                match v {
                    Some(v) => store.insert(k, v),
                    None => store.remove(&k),
                };
            }
            store.clone()
        };
        let windows =
            |stored: &BTreeMap<Vec<u8>, Vec<u8>>| stored.keys().filter(|k| k[0] == WINDOW).count();
        let mut first = slide(0);
        feed(&mut first, &[("a", 100), ("a", 109), ("b", 111)]);
        let closed = vec![w("a", 91, 101, 1), w("a", 100, 110, 2), w("a", 101, 111, 1)];
        assert_eq!(results(&mut first), closed);
        let stored = apply(&mut first);
        assert_eq!(windows(&stored), 4, "a's closed windows and b's open one");
        // After a restart, 102 still meets a's closed windows (as in the test above), and
        // they are not emitted again.
        let mut second = slide(0);
        second.load(0, stored.into_iter().collect(), 0).unwrap();
        assert_eq!(feed(&mut second, &[("a", 102)]), vec![Some(102)]);
        feed(&mut second, &[("c", 125)]);
        assert_eq!(
            results(&mut second),
            vec![w("a", 103, 113, 1), w("b", 102, 112, 1)]
        );
        // Retention is 2 × 9 + 0 behind the latest start written (c's left window, 116): every
        // window starting before 98 is forgotten, a's [91, 101) with them.
        assert_eq!(windows(&apply(&mut second)), 5);
        feed(&mut second, &[("c", 140)]);
        assert_eq!(results(&mut second), vec![w("c", 116, 126, 1)]);
        let left = apply(&mut second);
        assert_eq!(
            windows(&left),
            2,
            "c's two windows are retained, the rest forgotten"
        );
        let clock: StoredWindowClock = serde_json::from_slice(&left[CLOCK]).unwrap();
        assert_eq!(clock.latest_start, Some(131));
    }

    #[test]
    fn the_close_queue_hands_out_a_bucket_in_key_order_once_the_watermark_passes_it() {
        let (a, b): (Key, Key) = (Arc::from(&b"a"[..]), Arc::from(&b"b"[..]));
        let mut closing = Closing::default();
        closing.insert(20, &b, 0);
        closing.insert(10, &b, 5);
        closing.insert(10, &a, 7);
        closing.insert(10, &a, 3);
        closing.remove(10, b"a", 7);
        assert!(closing.pop_until(9).is_none());
        assert_eq!(closing.pop_until(15), Some(vec![(a, 3), (b.clone(), 5)]));
        assert!(closing.pop_until(15).is_none());
        closing.remove(20, b"b", 0);
        assert!(closing.0.is_empty(), "an emptied bucket goes");
    }

    #[test]
    fn a_keys_windows_stay_sorted_by_start() {
        let win = |end| Win {
            end,
            state: 0_u64,
            max: 0,
            stored: false,
        };
        let mut windows = KeyWindows(Vec::new());
        windows.insert(20, win(30));
        windows.get_or_insert_with(0, || win(10)).state += 1;
        windows.get_or_insert_with(0, || win(99)).state += 1;
        windows.insert(10, win(20));
        let all: Vec<_> = windows
            .range(..)
            .map(|(s, w)| (s, w.end, w.state))
            .collect();
        assert_eq!(all, vec![(0, 10, 2), (10, 20, 0), (20, 30, 0)]);
        let some: Vec<_> = windows.range(5..=20).map(|(s, _)| s).collect();
        assert_eq!(some, vec![10, 20]);
        assert_eq!(windows.remove(10).map(|w| w.end), Some(20));
        assert!(windows.remove(10).is_none());
        assert_eq!(windows.get(20).map(|w| w.end), Some(30));
        assert!(!windows.is_empty());
    }

    /// A stored partition: what `take_writes` left, by stored key.
    type Stored = BTreeMap<Vec<u8>, Vec<u8>>;

    fn apply_writes(op: &mut CountWindows, stores: &mut HashMap<i32, Stored>) {
        for (partition, k, v) in op.take_writes().unwrap() {
            let store = stores.entry(partition).or_default();
            match v {
                Some(v) => store.insert(k, v),
                None => store.remove(&k),
            };
        }
    }

    /// Commits `op`'s state and loads it into a fresh operator made by `make`, as a restart.
    fn restart(
        op: &mut CountWindows,
        stores: &mut HashMap<i32, Stored>,
        make: impl Fn() -> CountWindows,
    ) -> CountWindows {
        apply_writes(op, stores);
        let mut fresh = make();
        for (&partition, store) in stores.iter() {
            let entries = store.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            fresh.load(partition, entries, 0).unwrap();
        }
        fresh
    }

    /// A record `(partition, key, time)`, or a watermark advance (`None`).
    type Event = Option<(i32, &'static str, i64)>;

    /// Emitted windows `(key, start, end, count)`, sorted, and the late records' times.
    type Outcome = (Vec<(String, i64, i64, u64)>, Vec<i64>);

    /// One random run: `(partition, key, time)` records, with watermark advances (`None`) and
    /// restarts (`Some(i64::MIN)` as time) among them.
    fn random_run(seed: u64) -> (WindowKind, i64, Vec<Event>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let step = [5, 10, 25][rng.random_range(0..3)];
        let size = step * rng.random_range(2..7) + [0, 5][rng.random_range(0..2)];
        let grace = [0, 7, 30][rng.random_range(0..3)];
        let mut time: i64 = rng.random_range(-50..50);
        let mut events = Vec::new();
        for _ in 0..rng.random_range(20..200) {
            match rng.random_range(0..20) {
                0 => events.push(None),
                1 => events.push(Some((0, "", i64::MIN))),
                _ => {
                    time += rng.random_range(0..12);
                    let jitter = rng.random_range(0..40);
                    let key = ["a", "b", "c", "d"][rng.random_range(0..4)];
                    events.push(Some((rng.random_range(0..2), key, time - jitter)));
                }
            }
        }
        (WindowKind::Hopping { size, step }, grace, events)
    }

    /// The results and late records of `events` through operators made by `make`.
    fn run_events(make: impl Fn() -> CountWindows, events: &[Event]) -> Outcome {
        run_restarting(&make, events, &mut |op, stores| restart(op, stores, &make))
    }

    /// [`run_events`], each restart made by `restart` from the stores it keeps.
    fn run_restarting(
        make: &dyn Fn() -> CountWindows,
        events: &[Event],
        restart: &mut dyn FnMut(&mut CountWindows, &mut HashMap<i32, Stored>) -> CountWindows,
    ) -> Outcome {
        let mut op = make();
        let mut stores = HashMap::new();
        let (mut out, mut late) = (Vec::new(), Vec::new());
        for event in events {
            match *event {
                None => op.advance(0, i64::MIN, &all()),
                Some((_, _, i64::MIN)) => {
                    out.extend(results(&mut op));
                    op = restart(&mut op, &mut stores);
                }
                Some((partition, key, time)) => {
                    let item = op.on_record(partition, key.into(), time, time, 0, None, None);
                    late.extend(item);
                }
            }
        }
        op.advance(0, i64::MAX, &all());
        out.extend(results(&mut op));
        out.sort();
        (out, late)
    }

    const DAY: i64 = 86_400_000;

    /// A restart from a time-retained changelog: `changelogs` gets the commit's records
    /// (closed windows leave none), and with `purge` the entries a replayed clock shows
    /// expired are deleted, as recovery does; the fresh operator loads what is left.
    fn restart_from_changelog(
        op: &mut CountWindows,
        changelogs: &mut HashMap<i32, Stored>,
        purge: bool,
        make: &dyn Fn() -> CountWindows,
    ) -> CountWindows {
        apply_writes(op, changelogs);
        assert!(op.take_writes().unwrap().is_empty());
        let mut fresh = make();
        fresh.expire_by_age(Some((DAY, true)));
        for (&partition, log) in changelogs.iter_mut() {
            if purge {
                let ranges = log
                    .get(CLOCK)
                    .map(|clock| {
                        // Every kind that expires by age stores its entries the same way.
                        let closed = closed_windows(WindowKind::Tumbling { size: 1 });
                        closed
                            .map(|c| c.expired_by(CLOCK, clock))
                            .unwrap_or_default()
                    })
                    .unwrap_or_default();
                log.retain(|k, _| !ranges.iter().any(|(from, to)| k >= from && k < to));
            }
            let entries = log.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            fresh.load(partition, entries, 0).unwrap();
        }
        fresh
    }

    #[test]
    fn windows_closed_without_tombstones_emit_what_tombstoned_ones_do_on_random_streams() {
        let mut compared = 0;
        for seed in 0..300 {
            let (kind, grace, events) = random_run(seed);
            let tumbling = WindowKind::Tumbling {
                size: match kind {
                    WindowKind::Hopping { size, .. } => size,
                    _ => unreachable!(),
                },
            };
            let makers: [&dyn Fn() -> CountWindows; 3] = [
                &|| op(kind, grace),
                &|| op(kind, grace).without_panes(),
                &|| op(tumbling, grace),
            ];
            for make in makers {
                let expiring = || {
                    let mut op = make();
                    op.expire_by_age(Some((DAY, true)));
                    op
                };
                let tombstoned = run_events(make, &events);
                for purge in [false, true] {
                    let by_age = run_restarting(&expiring, &events, &mut |op, logs| {
                        restart_from_changelog(op, logs, purge, &expiring)
                    });
                    assert_eq!(by_age, tombstoned, "seed {seed}, {kind:?}, grace {grace}");
                }
                compared += tombstoned.0.len();
            }
        }
        assert!(compared > 10_000, "the runs emitted {compared} windows");
    }

    #[test]
    fn a_closed_window_leaves_no_tombstone_and_its_clock_marks_it_expired() {
        let mut op = op(WindowKind::Tumbling { size: 10 }, 2);
        op.expire_by_age(Some((DAY, true)));
        feed(&mut op, &[("a", 5), ("b", 11)]);
        let written: Vec<_> = op.take_writes().unwrap();
        assert!(written.iter().all(|(_, _, v)| v.is_some()), "{written:?}");
        // 12 + grace 2: [0, 10) closes.
        feed(&mut op, &[("b", 12)]);
        assert_eq!(results(&mut op), vec![w("a", 0, 10, 1)]);
        let written = op.take_writes().unwrap();
        assert!(
            written.iter().all(|(_, _, v)| v.is_some()),
            "no tombstone: {written:?}"
        );
        // The commit step that writes this clock deletes `a` from the local copy, as
        // recovery does after replaying it.
        let a = stored_key(WINDOW, b"a", 0);
        let (_, _, clock) = written.iter().find(|(_, k, _)| k == CLOCK).unwrap();
        let clock = clock.as_deref().unwrap();
        let stored: StoredWindowClock = serde_json::from_slice(clock).unwrap();
        // Closed: start + 10 + 2 <= 12, so every start below 1.
        assert_eq!(stored.expired_below, Some(1));
        let closed = closed_windows(WindowKind::Tumbling { size: 10 }).unwrap();
        let ranges = closed.expired_by(CLOCK, clock);
        let within = |k: &[u8]| {
            ranges
                .iter()
                .any(|(f, t)| k >= f.as_slice() && k < t.as_slice())
        };
        assert!(within(&a));
        assert!(!within(&stored_key(WINDOW, b"b", 10)));
        assert!(within(&stored_key(PANE, b"b", -5)) && !within(&stored_key(PANE, b"b", 1)));
        assert!(
            closed
                .expired_by(&stored_key(WINDOW, b"b", 10), b"[]")
                .is_empty()
        );
        // A changelog whose configs cannot be read may drop windows by age: they are written
        // again in time, but closed ones still leave tombstones.
        let mut unsure = self::op(WindowKind::Tumbling { size: 10 }, 0);
        unsure.expire_by_age(Some((DAY, false)));
        feed(&mut unsure, &[("a", 5)]);
        unsure.take_writes().unwrap();
        unsure.parts.get_mut(&0).unwrap().aging.refreshed -= DAY / 4;
        assert!(unsure.dirty());
        assert_eq!(
            unsure.take_writes().unwrap().len(),
            2,
            "the window and the clock"
        );
        feed(&mut unsure, &[("b", 11)]);
        let written = unsure.take_writes().unwrap();
        assert!(
            written.contains(&(0, stored_key(WINDOW, b"a", 0), None)),
            "{written:?}"
        );
        // Sliding and session windows keep their tombstones.
        assert!(closed_windows(WindowKind::Sliding { size: 10 }).is_none());
        let mut sliding = self::op(WindowKind::Sliding { size: 10 }, 0);
        sliding.expire_by_age(Some((DAY, true)));
        assert!(!sliding.age.quiet() && sliding.age.refreshed(&Aging::new(false)).is_none());
    }

    #[test]
    fn a_closed_window_loaded_again_gets_its_clock_written_so_the_next_step_deletes_it() {
        let expiring = || {
            let mut op = op(WindowKind::Tumbling { size: 10 }, 0);
            op.expire_by_age(Some((DAY, true)));
            op
        };
        let mut first = expiring();
        feed(&mut first, &[("a", 5)]);
        // The changelog: the last write of each key, and no tombstones.
        let mut log = BTreeMap::new();
        let step = |op: &mut CountWindows, log: &mut BTreeMap<Vec<u8>, Vec<u8>>| {
            for (_, k, v) in op.take_writes().unwrap() {
                log.insert(k, v.expect("no tombstone"));
            }
        };
        step(&mut first, &mut log);
        let open: Vec<_> = log.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        // 11: [0, 10) closes; the changelog still holds it.
        feed(&mut first, &[("b", 11)]);
        step(&mut first, &mut log);
        assert!(log.contains_key(&stored_key(WINDOW, b"a", 0)));
        let mut loaded = expiring();
        loaded.load(0, log.into_iter().collect(), 0).unwrap();
        assert!(
            loaded.dirty(),
            "the closed window is in the local copy until a clock goes"
        );
        let written = loaded.take_writes().unwrap();
        assert_eq!(written.len(), 1, "{written:?}");
        assert_eq!(written[0].1, CLOCK);
        // Nothing closed among the entries loaded: nothing to write.
        let mut kept = expiring();
        kept.load(0, open, 0).unwrap();
        assert!(!kept.dirty());
    }

    #[test]
    fn open_windows_are_written_again_every_quarter_of_the_retention() {
        let mut op = op(WindowKind::Tumbling { size: 10 }, 0);
        op.expire_by_age(Some((DAY, true)));
        feed(&mut op, &[("a", 5), ("b", 6)]);
        assert_eq!(
            op.take_writes().unwrap().len(),
            3,
            "two windows and the clock"
        );
        assert!(!op.dirty(), "nothing changed, and the windows are fresh");
        let part = op.parts.get_mut(&0).unwrap();
        part.aging.refreshed -= DAY / 4;
        assert!(op.dirty(), "a quarter of the retention has passed");
        let mut rewritten: Vec<Vec<u8>> = op
            .take_writes()
            .unwrap()
            .into_iter()
            .map(|(_, k, v)| {
                assert!(v.is_some());
                k
            })
            .collect();
        rewritten.sort();
        let expected = vec![
            CLOCK.to_vec(),
            stored_key(WINDOW, b"a", 0),
            stored_key(WINDOW, b"b", 0),
        ];
        assert_eq!(rewritten, expected);
        assert!(!op.dirty(), "written again just now");
        // Without time retention nothing is written again.
        let mut kept = self::op(WindowKind::Tumbling { size: 10 }, 0);
        feed(&mut kept, &[("a", 5)]);
        kept.take_writes().unwrap();
        kept.parts.get_mut(&0).unwrap().aging.refreshed = i64::MIN;
        assert!(!kept.dirty());
    }

    #[test]
    fn hopping_windows_by_panes_emit_what_whole_windows_do_on_random_streams() {
        let mut paned = 0;
        for seed in 0..300 {
            let (kind, grace, events) = random_run(seed);
            let make = || op(kind, grace);
            assert!(make().panes.is_some(), "{kind:?}");
            let whole = || op(kind, grace).without_panes();
            let by_panes = run_events(make, &events);
            let by_windows = run_events(whole, &events);
            assert_eq!(by_panes, by_windows, "seed {seed}, {kind:?}, grace {grace}");
            paned += by_panes.0.len();
        }
        assert!(paned > 10_000, "the runs emitted {paned} windows");
    }

    #[test]
    fn panes_store_one_entry_per_pane_and_drop_those_no_window_needs() {
        let kind = WindowKind::Hopping { size: 60, step: 10 };
        let mut op = op(kind, 0);
        let mut stores = HashMap::new();
        feed(&mut op, &[("a", 1), ("a", 2), ("a", 15), ("a", 59)]);
        apply_writes(&mut op, &mut stores);
        let panes =
            |stores: &HashMap<i32, Stored>| stores[&0].keys().filter(|k| k[0] == PANE).count();
        assert_eq!(panes(&stores), 3, "[0, 10), [10, 20) and [50, 60)");
        feed(&mut op, &[("a", 75)]);
        // The windows starting up to 10 closed, each merged from its panes.
        assert_eq!(
            results(&mut op),
            vec![
                w("a", -50, 10, 2),
                w("a", -40, 20, 3),
                w("a", -30, 30, 3),
                w("a", -20, 40, 3),
                w("a", -10, 50, 3),
                w("a", 0, 60, 4),
                w("a", 10, 70, 2)
            ]
        );
        apply_writes(&mut op, &mut stores);
        // [0, 10) and [10, 20) are in no open window any more.
        assert_eq!(panes(&stores), 2, "[50, 60) and [70, 80)");
    }

    #[test]
    fn whole_windows_stored_before_panes_are_merged_with_the_panes_after_an_upgrade() {
        for seed in 0..100 {
            let (kind, grace, events) = random_run(seed);
            let cut = events.len() / 2;
            // Both runs keep whole windows up to the restart at `cut`; then one keeps panes.
            let run = |upgrade: bool| {
                let mut op = op(kind, grace).without_panes();
                let mut stores = HashMap::new();
                let mut out = Vec::new();
                for event in events[..cut].iter().flatten() {
                    let (partition, key, time) = *event;
                    if time != i64::MIN {
                        op.on_record(partition, key.into(), time, time, 0, None, None);
                    }
                }
                out.extend(results(&mut op));
                let mut op = restart(&mut op, &mut stores, || {
                    let fresh = self::op(kind, grace);
                    if upgrade {
                        fresh
                    } else {
                        fresh.without_panes()
                    }
                });
                for event in events[cut..].iter().flatten() {
                    let (partition, key, time) = *event;
                    if time != i64::MIN {
                        op.on_record(partition, key.into(), time, time, 0, None, None);
                        op.advance(0, i64::MIN, &all());
                    }
                }
                op.advance(0, i64::MAX, &all());
                out.extend(results(&mut op));
                out.sort();
                out
            };
            assert_eq!(run(true), run(false), "seed {seed}");
        }
    }

    #[test]
    fn an_idle_partition_releases_the_watermark_though_no_record_moves_a_clock() {
        let mut op = op(WindowKind::Tumbling { size: 10 }, 0);
        op.on_record(1, "b".into(), 5, 5, 0, None, None);
        op.on_record(0, "a".into(), 50, 50, 0, None, None);
        op.advance(0, i64::MIN, &all());
        assert_eq!(op.watermark(), 5, "partition 1 holds it");
        // Records behind partition 0's largest event time move no clock: nothing to do until
        // partition 1 has been quiet for the idle timeout (1 s of clock).
        for now in [500, 999] {
            op.on_record(0, "a".into(), 45, 45, now, None, None);
            assert!(!op.must_advance(now), "at {now}");
        }
        op.on_record(0, "a".into(), 45, 45, 1_000, None, None);
        assert!(op.must_advance(1_000), "partition 1 went idle");
        op.advance(1_000, i64::MIN, &all());
        assert_eq!(op.watermark(), 50);
        assert_eq!(results(&mut op), vec![w("a", 40, 50, 3), w("b", 0, 10, 1)]);
        // Every partition quiet: the watermark follows the clock, and the ticks close the rest.
        assert!(op.must_advance(2_000));
        op.on_record(0, "a".into(), 50, 50, 2_000, None, None);
        assert!(
            op.must_advance(2_000),
            "partition 0 was idle: it counts again"
        );
        op.advance(2_000, i64::MIN, &all());
        op.advance(3_000 + 10, i64::MIN, &all());
        assert_eq!(results(&mut op), vec![w("a", 50, 60, 2)]);
    }

    #[test]
    fn a_record_waking_an_idle_partition_advances_though_it_moves_no_clock() {
        let mut op = op(WindowKind::Tumbling { size: 10 }, 0);
        op.on_record(2, "a".into(), 5, 5, 0, Some((1, 5)), None);
        op.advance(0, i64::MIN, &all());
        // A marker: the pump is at 100. The partition, quiet for the idle timeout, is idle:
        // every partition is, and the watermark is its largest event time (5).
        op.heard(2, 1, 100, 1_000);
        op.advance(1_000, i64::MIN, &all());
        assert_eq!(op.watermark(), 5);
        // A record behind it, stamped with the same pump watermark, moves no clock; but the
        // partition counts again, and its watermark is the pump's.
        op.on_record(2, "a".into(), 3, 3, 1_000, Some((1, 100)), None);
        assert!(op.must_advance(1_000));
        op.advance(1_000, i64::MIN, &all());
        assert_eq!(op.watermark(), 100);
        assert_eq!(results(&mut op), vec![w("a", 0, 10, 2)]);
    }

    /// What one step of `clocked_run` gave: the late record, the windows emitted, the watermark.
    type Step = (Option<i64>, Vec<(String, i64, i64, u64)>, i64);

    /// Random records over three partitions (the third fed by two pumps), markers and ticks,
    /// the clock moving in steps around the idle timeout, the caught-up partitions changing;
    /// after each record, an advance only when `must_advance` asks (`gated`), or always.
    /// Returns every step's outcome and the advances skipped.
    fn clocked_run(make: &dyn Fn() -> CountWindows, seed: u64, gated: bool) -> (Vec<Step>, u64) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut op = make();
        let (mut now, mut time, mut skipped) = (0, rng.random_range(-50..50), 0);
        let mut pumps = [i64::MIN; 2];
        let mut caught_up = all();
        let mut force = true;
        let mut steps = Vec::new();
        for _ in 0..rng.random_range(20..300) {
            now += [0, 0, 1, 50, 400, 1_100][rng.random_range(0..6)];
            let (partition, pump) = (rng.random_range(0..3), rng.random_range(0..2));
            match rng.random_range(0..20) {
                0 => op.advance(now, i64::MIN, &caught_up),
                1 => {
                    op.heard(2, pump as u64, pumps[pump], now);
                    op.advance(now, i64::MIN, &caught_up);
                }
                2 => {
                    let all_read = caught_up.len() == 8;
                    caught_up = if all_read {
                        HashSet::from([0, 1])
                    } else {
                        all()
                    };
                    force = true;
                }
                _ => {
                    time += rng.random_range(0..12);
                    let t = time - rng.random_range(0..40);
                    // A pump's watermark follows all its source partitions: it may be ahead
                    // of what this partition, or any partition here, has seen.
                    pumps[pump] = pumps[pump].max(time - rng.random_range(0..30));
                    let upstream = (partition == 2).then_some((pump as u64, pumps[pump]));
                    let key = ["a", "b", "c", "d"][rng.random_range(0..4)];
                    let late = op.on_record(partition, key.into(), t, t, now, upstream, None);
                    if !gated || force || op.must_advance(now) {
                        op.advance(now, i64::MIN, &caught_up);
                        force = false;
                    } else {
                        skipped += 1;
                    }
                    steps.push((late, results(&mut op), op.watermark()));
                }
            }
        }
        op.advance(now, i64::MAX, &caught_up);
        steps.push((None, results(&mut op), op.watermark()));
        (steps, skipped)
    }

    #[test]
    fn skipping_the_advances_must_advance_declines_changes_no_result() {
        let kinds = [
            WindowKind::Tumbling { size: 10 },
            WindowKind::Hopping { size: 30, step: 10 },
            WindowKind::Sliding { size: 10 },
            WindowKind::Session { gap: 10 },
        ];
        let mut skipped = 0;
        for seed in 0..300 {
            let kind = kinds[seed as usize % kinds.len()];
            let grace = [0, 7, 30][(seed / 4 % 3) as usize];
            let panes = seed % 8 < 4;
            let make = || {
                let op = op(kind, grace);
                if panes { op } else { op.without_panes() }
            };
            let (always, _) = clocked_run(&make, seed, false);
            let (gated, skips) = clocked_run(&make, seed, true);
            assert_eq!(gated, always, "seed {seed}, {kind:?}, grace {grace}");
            skipped += skips;
        }
        assert!(skipped > 3_000, "{skipped} advances skipped");
    }

    #[test]
    fn window_state_is_stored_as_the_json_earlier_versions_wrote_and_read() {
        // `[key, end, state]` (panes: `[key, end, state, first window]`), byte for byte what
        // `serde_json::to_vec` per window wrote before; and such stored state loads.
        let writes = |op: &mut CountWindows| -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
            let writes = op.take_writes().unwrap().into_iter();
            writes.map(|(_, k, v)| (k, v)).collect()
        };
        let mut first = op(WindowKind::Tumbling { size: 10 }, 0);
        feed(&mut first, &[("a", 5), ("a", 7), ("b", 8)]);
        let stored = writes(&mut first);
        assert_eq!(
            stored[&window_key(b"a", 0)],
            Some(br#"["a",10,2]"#.to_vec())
        );
        assert_eq!(
            stored[&window_key(b"b", 0)],
            Some(br#"["b",10,1]"#.to_vec())
        );
        let mut second = op(WindowKind::Tumbling { size: 10 }, 0);
        let old = vec![(key_first(WINDOW, b"a", 0), br#"["a",10,2]"#.to_vec())];
        second.load(0, old, 0).unwrap();
        feed(&mut second, &[("a", 9), ("a", 20)]);
        assert_eq!(results(&mut second), vec![w("a", 0, 10, 3)]);
        let mut paned = op(WindowKind::Hopping { size: 60, step: 10 }, 0);
        feed(&mut paned, &[("a", 1)]);
        let stored = writes(&mut paned);
        let pane = stored_key(PANE, b"a", 0);
        assert_eq!(stored[&pane], Some(br#"["a",10,1,-50]"#.to_vec()));
    }

    /// The key of a window (`WINDOW`) or pane (`PANE`) in the key-first layout of earlier
    /// versions.
    fn key_first(tag: u8, key: &[u8], start: i64) -> Vec<u8> {
        let mut out = vec![if tag == PANE {
            KEY_FIRST_PANE
        } else {
            KEY_FIRST_WINDOW
        }];
        out.extend_from_slice(&u32::try_from(key.len()).unwrap().to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&time_bytes(start));
        out
    }

    #[test]
    fn entries_stored_key_first_load_as_time_first_ones_and_move_at_the_next_commit() {
        type Entry = (u8, &'static [u8], i64, &'static [u8]);
        let cases: [(WindowKind, Vec<Entry>); 3] = [
            (
                WindowKind::Tumbling { size: 10 },
                vec![
                    (WINDOW, b"a", 0, br#"["a",10,2]"#),
                    (WINDOW, b"b", 10, br#"["b",20,1]"#),
                ],
            ),
            (
                WindowKind::Sliding { size: 10 },
                vec![(WINDOW, b"a", 0, br#"["a",10,2,9]"#)],
            ),
            // Panes, and a whole window stored before panes (merged at close).
            (
                WindowKind::Hopping { size: 60, step: 10 },
                vec![
                    (PANE, b"a", 0, br#"["a",10,1,-50]"#),
                    (WINDOW, b"a", -10, br#"["a",50,4]"#),
                ],
            ),
        ];
        for (kind, entries) in cases {
            let run = |old: bool| {
                let mut op = op(kind, 0);
                let layout = if old { key_first } else { stored_key };
                let stored = entries
                    .iter()
                    .map(|&(tag, key, start, value)| (layout(tag, key, start), value.to_vec()))
                    .collect();
                op.load(0, stored, 0).unwrap();
                let moved: BTreeMap<_, _> = op
                    .take_writes()
                    .unwrap()
                    .into_iter()
                    .map(|(_, k, v)| (k, v))
                    .collect();
                feed(&mut op, &[("a", 8), ("b", 12), ("a", 300)]);
                let results = results(&mut op);
                let after: BTreeMap<_, _> = op
                    .take_writes()
                    .unwrap()
                    .into_iter()
                    .map(|(_, k, v)| (k, v))
                    .collect();
                (moved, results, after)
            };
            let (moved, from_old, after_old) = run(true);
            let (nothing, from_new, after_new) = run(false);
            assert!(nothing.is_empty(), "{kind:?}: {nothing:?}");
            assert!(!from_old.is_empty(), "{kind:?}");
            assert_eq!(from_old, from_new, "{kind:?}");
            assert_eq!(after_old, after_new, "{kind:?}");
            let expected: BTreeMap<_, _> = entries
                .iter()
                .flat_map(|&(tag, key, start, value)| {
                    [
                        (key_first(tag, key, start), None),
                        (stored_key(tag, key, start), Some(value.to_vec())),
                    ]
                })
                .collect();
            assert_eq!(moved, expected, "{kind:?}");
        }
    }

    #[test]
    fn a_partitions_windows_are_stored_in_order_of_start() {
        assert!(window_key(b"zzz", 0) < window_key(b"a", 10));
        assert!(window_key(b"a", -10) < window_key(b"a", 0));
        assert!(stored_key(PANE, b"b", 5) < stored_key(PANE, b"a", 6));
    }
}
