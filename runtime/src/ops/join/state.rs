//! The windowed join operator: per partition, the records of each side still able to meet a
//! record of the other, matching, expiry, and the state's stored form. No I/O: the driver feeds
//! it records and clock ticks and hands its writes to the table overlay at each commit step.
//!
//! Time rules (see the module docs of `join` for the user's view), with `W = before + after`:
//! - a left record at `t` meets right records in `[t - before, t + after]`, a right record at
//!   `t` left records in `[t - after, t + before]`;
//! - a record is late, and dropped, when the watermark has passed the end of its own range
//!   plus grace (left: `t + after + grace`, right: `t + before + grace`): a partner it could
//!   meet may already be gone;
//! - a buffered record expires when the watermark passes `t + W + grace`: from then on every
//!   record that could meet it would be late. That is when an unmatched record of an outer
//!   side is emitted alone, so it is never emitted alone and then matched. An outer side's
//!   records leave memory (and the store) then, from a queue in order of expiry; an inner
//!   side's in sweeps over its keys, each time the watermark crosses a line of a grid of
//!   `(W + grace) / 2` (shifted per partition, see `JoinPartition::sweep`). Per record, a sweep reads a few map slots where the queue took three
//!   cache misses (queue, slot, records); an expired record held until the sweep meets
//!   nothing, as every record that could meet it is late.
//! - a partition's time is the smaller of its two sides' largest event times (a side idle for
//!   the idle timeout on a caught-up partition does not count): one topic read far ahead of
//!   the other during a backlog does not make the other's records late.
//!
//! Stored form, per partition of the join's table (keys are bytes, values JSON):
//! - `l|r | time | seq | key` → `[matched, record]`: a buffered record of the left or right
//!   side. Time first, as windows are stored: a commit writes mostly the newest records and
//!   deletes the oldest, so it touches few LMDB pages. Versions before 2026-12-05 stored the
//!   key first (`L|R | len(key) u32 | key | time | seq`): such entries load, and the next
//!   commit moves them;
//! - `C` → the partition's clock: largest event time seen, the watermark it was expired at,
//!   the `group_by` pumps' watermarks, the offsets last applied per side, the next sequence;
//!   on a time-retained changelog (`JoinOperator::expire_by_age`) also the time below which
//!   every record has expired, and when the buffered records were last written again.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::Serialize;
use serde::de::DeserializeOwned;
use smallvec::SmallVec;

use std::sync::Arc;

use crate::base::error::{Error, Result};
use crate::base::watermark::Upstream;
use crate::instance::table::ExpiredRanges;
use crate::ops::expiry::{Aging, ChangelogAge, ExpiredBefore, time_bytes, time_from};
use crate::ops::window::state::{PartitionTime, watermark_of};

/// A record's side (in memory; stored as its tag in the key-first layout of earlier
/// versions, lowercase in today's).
const LEFT: u8 = b'L';
const RIGHT: u8 = b'R';
const CLOCK: &[u8] = b"C";

/// One side's record, as the operator receives it.
pub(crate) enum Side<A, B> {
    Left(A),
    Right(B),
}

/// A partition's clock as stored (the `C` entry).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredJoinClock {
    max_seen: i64,
    /// Largest event time per side, left and right.
    sides: [i64; 2],
    floor: i64,
    pumps: Vec<(u64, i64)>,
    /// Offsets of the last records applied, left and right.
    applied: [i64; 2],
    seq: u64,
    /// Records expired without tombstones (`JoinOperator::expire_by_age`): every record of
    /// either side at a time before this has expired, though the changelog may still hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expired_below: Option<i64>,
    /// When (wall clock, ms) every buffered record was last written again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refreshed: Option<i64>,
}

/// What a replayed clock entry shows expired (`ExpiredBefore`): every record of either side
/// (stored under its side's lowercase tag) before its `expired_below`.
pub(crate) fn expired_records() -> Arc<dyn ExpiredRanges> {
    ExpiredBefore::shared(CLOCK, b"lr")
}

/// The stored key of a buffered record: time first.
fn entry_key(side: u8, key: &[u8], time: i64, seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 16 + key.len());
    out.push(side.to_ascii_lowercase());
    out.extend_from_slice(&time_bytes(time));
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// A stored record's key, read in either layout.
struct EntryKey<'a> {
    side: u8,
    key: &'a [u8],
    time: i64,
    seq: u64,
    /// In an earlier version's key-first layout (moved at the next commit).
    key_first: bool,
}

fn split_entry_key(stored: &[u8]) -> Option<EntryKey<'_>> {
    let (&tag, rest) = stored.split_first()?;
    let (key, tail, key_first) = match tag {
        b'l' | b'r' => (rest.get(16..)?, rest.get(..16)?, false),
        LEFT | RIGHT => {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            (rest.get(4..4 + len)?, rest.get(4 + len..)?, true)
        }
        _ => return None,
    };
    Some(EntryKey {
        side: tag.to_ascii_uppercase(),
        key,
        time: time_from(tail.get(..8)?)?,
        seq: u64::from_be_bytes(tail.get(8..16)?.try_into().ok()?),
        key_first,
    })
}

/// A record buffered in memory, with whether it met a partner.
struct BufferedRecord<T> {
    value: T,
    matched: bool,
    /// In the table store (and its changelog): expiring it must delete it there.
    stored: bool,
}

/// One key's buffered records of one side, sorted by (time, seq). A key holds few records at a
/// time (those of one join window) and they mostly come in time order, so a sorted vector
/// (one small block, appended to) beats a B-tree (a node of eleven slots per key).
struct KeyRecords<T> {
    /// The time of the first (oldest) record: a sweep reads it in the map's own slot, without
    /// following `records` to memory last touched a window ago.
    first: i64,
    records: Vec<((i64, u64), BufferedRecord<T>)>,
}

/// The join state's per-record maps (see `window::state::Hasher`).
type Hasher = foldhash::fast::RandomState;

/// A record to write at the next commit (new, or newly matched on an outer side): its side,
/// key, time and sequence number.
type Pending = (u8, Vec<u8>, i64, u64);

/// A join key in a buffer's map: inline up to 24 bytes (most keys), so a new key costs no
/// allocation and a lookup compares bytes in the map's slot, not behind a pointer.
type KeyBuf = SmallVec<[u8; 24]>;

/// One side's buffered records, by join key.
struct Buffer<T> {
    keys: HashMap<KeyBuf, KeyRecords<T>, Hasher>,
}

impl<T> KeyRecords<T> {
    /// Where `at` is, or would go.
    fn position(&self, at: (i64, u64)) -> Result<usize, usize> {
        self.records.binary_search_by(|(id, _)| id.cmp(&at))
    }
}

impl<T: Serialize + DeserializeOwned> Buffer<T> {
    fn new() -> Self {
        Buffer {
            keys: HashMap::default(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.values().map(|e| e.records.len()).sum()
    }

    /// A stored entry (`[matched, record]`).
    fn load(&mut self, key: &[u8], time: i64, seq: u64, stored: &[u8]) -> serde_json::Result<()> {
        let (matched, value): (bool, T) = serde_json::from_slice(stored)?;
        self.insert(key, time, seq, value, matched, true);
        Ok(())
    }

    /// Buffers a record; the key is copied only when it holds no record yet.
    fn insert(&mut self, key: &[u8], time: i64, seq: u64, value: T, matched: bool, stored: bool) {
        let record = BufferedRecord {
            value,
            matched,
            stored,
        };
        let Some(entries) = self.keys.get_mut(key) else {
            // Room for this record alone: a key mostly holds one record per side within a
            // join window.
            let records = vec![((time, seq), record)];
            self.keys.insert(
                KeyBuf::from_slice(key),
                KeyRecords {
                    first: time,
                    records,
                },
            );
            return;
        };
        match entries.position((time, seq)) {
            Ok(i) => entries.records[i].1 = record,
            Err(i) => {
                entries.records.insert(i, ((time, seq), record));
                entries.first = entries.first.min(time);
            }
        }
    }

    /// The stored form of an entry (marking it stored), or `None` when it is gone.
    fn stored(&mut self, key: &[u8], time: i64, seq: u64) -> serde_json::Result<Option<Vec<u8>>> {
        let entries = self.keys.get_mut(key);
        let found = entries.and_then(|b| {
            let i = b.position((time, seq)).ok()?;
            b.records.get_mut(i).map(|(_, e)| e)
        });
        match found {
            Some(e) => {
                e.stored = true;
                serde_json::to_vec(&(e.matched, &e.value)).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Calls `f` with every record of `key` in `[lo, hi]` (in time order), marking it
    /// matched; true when there was one. `dirty` (an outer side's, with the side's tag) gets
    /// the written records newly matched, to store the mark: an inner side's mark is never
    /// read (only an outer side emits its unmatched records), so its stored records are not
    /// written again for it.
    fn meet(
        &mut self,
        key: &[u8],
        lo: i64,
        hi: i64,
        mut dirty: Option<(u8, &mut Vec<Pending>)>,
        mut f: impl FnMut(&T),
    ) -> bool {
        let Some(entries) = self.keys.get_mut(key) else {
            return false;
        };
        let mut met = false;
        let records = &mut entries.records;
        let from = records.partition_point(|(id, _)| *id < (lo, 0));
        let to = records.partition_point(|(id, _)| *id <= (hi, u64::MAX));
        for &mut ((t, s), ref mut e) in records.get_mut(from..to).unwrap_or_default() {
            met = true;
            f(&e.value);
            if !e.matched {
                e.matched = true;
                // A record not written yet is pending already.
                if let Some((side, dirty)) = dirty.as_mut().filter(|_| e.stored) {
                    dirty.push((*side, key.to_vec(), t, s));
                }
            }
        }
        met
    }

    fn take(&mut self, key: &[u8], time: i64, seq: u64) -> Option<BufferedRecord<T>> {
        let entries = self.keys.get_mut(key)?;
        let entry = entries
            .position((time, seq))
            .ok()
            .map(|i| entries.records.remove(i).1);
        match entries.records.first() {
            Some(&((t, _), _)) => entries.first = t,
            None => {
                self.keys.remove(key);
            }
        }
        entry
    }

    /// Drops every record at a time before `below`, handing each to `gone` (with its key,
    /// time and sequence number), and the keys left with none: one pass over the map's slots,
    /// following only the keys that have such a record.
    fn sweep(&mut self, below: i64, mut gone: impl FnMut(&[u8], i64, u64, BufferedRecord<T>)) {
        self.keys.retain(|key, entries| {
            if entries.first >= below {
                return true;
            }
            let n = entries.records.partition_point(|((t, _), _)| *t < below);
            for ((t, s), e) in entries.records.drain(..n) {
                gone(key, t, s, e);
            }
            match entries.records.first() {
                Some(&((t, _), _)) => {
                    entries.first = t;
                    true
                }
                None => false,
            }
        });
    }

    /// Every buffered record's identity (to write them all again).
    fn all(&self, side: u8) -> impl Iterator<Item = Pending> + '_ {
        self.keys.iter().flat_map(move |(key, entries)| {
            entries
                .records
                .iter()
                .map(move |&((t, s), _)| (side, key.to_vec(), t, s))
        })
    }
}

/// The join's state in one owned partition: both sides' buffers, their expiry and its clock.
/// A record's arrival, as a partition's clocks see it: its side (0 left, 1 right), event
/// time, the clock time, and the upstream pump's watermark it carried.
struct Arrival {
    side: usize,
    time: i64,
    now: i64,
    upstream: Option<(u64, i64)>,
}

struct JoinPartition<A, B> {
    left: Buffer<A>,
    right: Buffer<B>,
    /// The buffered records of outer sides by (expiry time, seq): their side, key and time.
    /// (A record's sequence number is unique in its partition, so no key is compared.) They
    /// expire exactly when the watermark passes their expiry, as an unmatched one is emitted
    /// alone then; an inner side's records go in sweeps (`JoinPartition::sweep`).
    expiring: BTreeMap<(i64, u64), (u8, Vec<u8>, i64)>,
    /// The watermark of the last sweep.
    swept: i64,
    /// Where this partition's sweeps fall on the grid of sweep steps (a hash of its number).
    sweep_phase: u64,
    max_seen: i64,
    /// Largest event time and clock time of the last record, per side.
    side_max: [i64; 2],
    side_arrival: [i64; 2],
    /// The watermark this partition's records were expired at (never goes back).
    floor: i64,
    last_arrival: i64,
    upstream: Upstream,
    applied: [i64; 2],
    seq: u64,
    /// Records to write at the next commit: new ones, written ones of an outer side newly
    /// matched, or all at a refresh. Those expired or gone by then are skipped (and dropped
    /// at each sweep).
    dirty: Vec<Pending>,
    /// Stored keys of written records that expired since the last commit.
    deletes: Vec<Vec<u8>>,
    /// Records loaded in the key-first layout, to move at the next commit: each value under
    /// its time-first key, and the old key deleted.
    relocated: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    clock_dirty: bool,
    /// Expired records without tombstones, and rewrites of the buffered ones (see
    /// `JoinOperator::expire_by_age`).
    aging: Aging,
}

impl<A: Serialize + DeserializeOwned, B: Serialize + DeserializeOwned> JoinPartition<A, B> {
    /// Moves this partition's clocks for a record that arrived; true when the watermark must
    /// be computed again (`computed` is the last one).
    fn note_arrival(&mut self, a: &Arrival, idle_timeout: i64, computed: i64) -> bool {
        let side = a.side;
        // A partition or side quiet for the idle timeout may have been left out of the
        // watermark: this record makes it count again.
        let mut stale = a.now.saturating_sub(self.side_arrival[side]) >= idle_timeout
            || a.now.saturating_sub(self.last_arrival) >= idle_timeout;
        // A partition's clock is its slower side's largest event time (both sides' largest
        // when both are quiet): raised from above the smallest over the partitions, it is not
        // what holds the watermark.
        if a.time > self.max_seen {
            stale |= self.max_seen <= computed;
            self.max_seen = a.time;
            self.clock_dirty = true;
        }
        if a.time > self.side_max[side] {
            stale |= self.side_max[side] <= computed;
            self.side_max[side] = a.time;
            self.clock_dirty = true;
        }
        self.side_arrival[side] = a.now;
        if let Some((pump, wm)) = a.upstream {
            stale |= self.upstream.heard(pump, wm, a.now);
            self.clock_dirty = true;
        }
        self.last_arrival = a.now;
        stale
    }

    /// How far the partition has got: the slower side's largest event time, leaving out a side
    /// that has been quiet for the idle timeout on a partition read to its end.
    fn reached(&self, now: i64, idle_timeout: i64, caught_up: bool) -> i64 {
        let mut low: Option<i64> = None;
        for side in 0..2 {
            let idle = caught_up && now.saturating_sub(self.side_arrival[side]) >= idle_timeout;
            if !idle {
                low = Some(low.map_or(self.side_max[side], |l: i64| l.min(self.side_max[side])));
            }
        }
        low.unwrap_or(self.max_seen)
    }

    /// The partition's own clock, the smaller of its sides' largest event times, when no pump
    /// feeds it (a co-partitioned join); `i64::MIN` when one follows pumps' watermarks.
    fn own_clock(&self) -> i64 {
        if self.upstream.follows() {
            i64::MIN
        } else {
            self.side_max[0].min(self.side_max[1])
        }
    }

    /// A partition with no state yet; `quiet`: see `JoinOperator::expire_by_age`.
    fn new(partition: i32, now: i64, quiet: bool) -> Self {
        JoinPartition {
            left: Buffer::new(),
            right: Buffer::new(),
            expiring: BTreeMap::new(),
            swept: i64::MIN,
            sweep_phase: u64::from(partition.unsigned_abs()).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            max_seen: i64::MIN,
            side_max: [i64::MIN; 2],
            side_arrival: [now; 2],
            floor: i64::MIN,
            last_arrival: now,
            upstream: Upstream::default(),
            applied: [i64::MIN; 2],
            seq: 0,
            dirty: Vec::new(),
            deletes: Vec::new(),
            relocated: Vec::new(),
            clock_dirty: false,
            aging: Aging::new(quiet),
        }
    }

    /// Marks every buffered record to be written again, and the clock.
    fn refresh(&mut self, now: i64) {
        self.dirty.extend(self.left.all(LEFT));
        self.dirty.extend(self.right.all(RIGHT));
        self.clock_dirty = true;
        self.aging.refreshed = now;
    }

    /// Expires the records of outer sides the watermark `wm` has passed, in order of expiry,
    /// emitting the unmatched ones alone (`outer`: left, right).
    fn expire_outer(&mut self, wm: i64, outer: (bool, bool), out: &mut VecDeque<Pair<A, B>>) {
        while let Some((&(expires, _), _)) = self.expiring.first_key_value() {
            if expires >= wm {
                break;
            }
            let Some(((_, seq), (side, key, time))) = self.expiring.pop_first() else {
                break;
            };
            let (stored, lone) = if side == LEFT {
                let Some(e) = self.left.take(&key, time, seq) else {
                    continue;
                };
                (
                    e.stored,
                    (!e.matched && outer.0).then(|| (Some(e.value), None)),
                )
            } else {
                let Some(e) = self.right.take(&key, time, seq) else {
                    continue;
                };
                (
                    e.stored,
                    (!e.matched && outer.1).then(|| (None, Some(e.value))),
                )
            };
            out.extend(lone);
            // A pending write of it is skipped (`take_writes`): deleted if it was written,
            // else never written (buffered and expired between two commits).
            if stored && !self.aging.quiet {
                self.deletes.push(entry_key(side, &key, time, seq));
            }
        }
    }

    /// Drops the expired records of inner sides (`inner`: left, right), and the pending
    /// writes of every expired record, once the watermark `wm` is a sweep step past the last
    /// sweep (`Bounds::sweep_every`). A record expired but not swept yet can meet no record
    /// that is not late (see the module docs), so sweeping late changes no result; a stored
    /// one is deleted, as at its expiry.
    fn sweep(&mut self, bounds: &Bounds, wm: i64, inner: (bool, bool)) {
        // Sweeps fall where the watermark crosses a line of a grid of the sweep step, shifted
        // by the partition's phase: an instance's partitions, whose watermarks move together,
        // sweep one after another. Swept at the same moment, at 20k views/s, they held the
        // suite's join for ~90 ms each sweep step (p99 20 -> 103 ms).
        let every = bounds.sweep_every();
        let phase = i64::try_from(self.sweep_phase % every.unsigned_abs()).unwrap_or(0);
        let line = |t: i64| t.saturating_add(phase).div_euclid(every);
        if self.swept != i64::MIN && line(wm) <= line(self.swept) {
            return;
        }
        self.swept = wm;
        let Some(below) = bounds.expired_below(wm) else {
            return;
        };
        let (quiet, deletes) = (self.aging.quiet, &mut self.deletes);
        let mut gone = |side: u8, key: &[u8], time: i64, seq: u64, stored: bool| {
            if stored && !quiet {
                deletes.push(entry_key(side, key, time, seq));
            }
        };
        if inner.0 {
            self.left
                .sweep(below, |k, t, s, e| gone(LEFT, k, t, s, e.stored));
        }
        if inner.1 {
            self.right
                .sweep(below, |k, t, s, e| gone(RIGHT, k, t, s, e.stored));
        }
        // Pending writes of expired records would be skipped at the commit: dropped now, so
        // that a long commit interval holds no more of them than of buffered records.
        self.dirty.retain(|&(_, _, time, _)| time >= below);
    }
}

/// A result of the join: the left and right records (one is `None` for a record of an outer
/// side emitted alone).
type Pair<A, B> = (Option<A>, Option<B>);

/// The join's bounds, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) before: i64,
    pub(crate) after: i64,
    pub(crate) grace: i64,
}

impl Bounds {
    fn span(&self) -> i64 {
        self.before.saturating_add(self.after)
    }

    fn expires(&self, time: i64) -> i64 {
        time.saturating_add(self.span()).saturating_add(self.grace)
    }

    /// Every record before this time has expired at watermark `floor` (a record expires once
    /// the watermark is past `time + W + grace`).
    fn expired_below(&self, floor: i64) -> Option<i64> {
        (floor != i64::MIN).then(|| floor.saturating_sub(self.span()).saturating_sub(self.grace))
    }

    /// How far the watermark moves between two sweeps of the inner sides' expired records (on
    /// a grid shifted per partition, see `JoinPartition::sweep`):
    /// half a record's life (`W + grace`), so a sweep visits each key a few times at most and
    /// a record stays at most half its life past its expiry.
    fn sweep_every(&self) -> i64 {
        (self.span().saturating_add(self.grace) / 2).max(1)
    }
}

/// One stored change: partition, stored key, value (`None` deletes).
use crate::ops::operator::StateWrite;

/// The join operator of one join: both sides' buffered records in every owned partition.
pub(crate) struct JoinOperator<A, B> {
    bounds: Bounds,
    idle_timeout: i64,
    /// Emit left records that met nothing (left and outer joins).
    left_outer: bool,
    /// Emit right records that met nothing (outer joins).
    right_outer: bool,
    parts: HashMap<i32, JoinPartition<A, B>, Hasher>,
    watermark: i64,
    /// Results not handed out yet, in the order they were made.
    pub(crate) out: VecDeque<Pair<A, B>>,
    /// Something `advance` reads changed since it last ran, other than the clock: a record
    /// moved a partition's or a side's largest event time or woke a quiet one, a partition
    /// was loaded or is new, a pump was heard (see `must_advance`).
    stale: bool,
    /// The clock time from which `advance` may move the watermark without a record: a
    /// partition, a side or a pump going quiet for the idle timeout.
    due: i64,
    /// The smallest clock over the partitions that `advance` last computed (before the
    /// floor): a record that moves a partition's clocks from above it moves no watermark.
    computed: i64,
    /// What the changelog drops by age (`expire_by_age`).
    age: ChangelogAge,
}

impl<A, B> JoinOperator<A, B>
where
    A: Serialize + DeserializeOwned + Clone,
    B: Serialize + DeserializeOwned + Clone,
{
    pub(crate) fn new(
        bounds: Bounds,
        idle_timeout: i64,
        left_outer: bool,
        right_outer: bool,
    ) -> Self {
        JoinOperator {
            bounds,
            idle_timeout,
            left_outer,
            right_outer,
            parts: HashMap::default(),
            watermark: i64::MIN,
            out: VecDeque::new(),
            stale: true,
            due: i64::MIN,
            computed: i64::MIN,
            age: ChangelogAge::default(),
        }
    }

    /// As windows do (`WindowOperator::expire_by_age`): on a changelog that may drop records
    /// older than `retention` ms, every buffered record is written again each quarter of the
    /// retention, and when it does (`by_age`), expired records go without tombstones, the
    /// stored clock's `expired_below` telling recovery and standbys that they expired.
    pub(crate) fn expire_by_age(&mut self, changelog: Option<(i64, bool)>) {
        self.age = ChangelogAge::new(changelog);
        for part in self.parts.values_mut() {
            part.aging.quiet = self.age.quiet();
        }
    }

    /// Forgets every partition (after a rebalance; they are reloaded from the store).
    pub(crate) fn clear(&mut self) {
        self.parts.clear();
        self.watermark = i64::MIN;
        self.stale = true;
    }

    /// True when `side`'s unmatched records are emitted alone (left, or outer, joins).
    fn outer(&self, side: u8) -> bool {
        if side == LEFT {
            self.left_outer
        } else {
            self.right_outer
        }
    }

    pub(crate) fn has_partition(&self, partition: i32) -> bool {
        self.parts.contains_key(&partition)
    }

    /// Records buffered in every partition (left, right).
    #[cfg(test)]
    fn buffered(&self) -> (usize, usize) {
        self.parts
            .values()
            .fold((0, 0), |(l, r), p| (l + p.left.len(), r + p.right.len()))
    }

    /// Loads a partition from its stored entries.
    pub(crate) fn load(
        &mut self,
        partition: i32,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        now: i64,
    ) -> Result<()> {
        let mut part = JoinPartition::new(partition, now, self.age.quiet());
        let bad = |what: &str, e: serde_json::Error| Error::Agent {
            agent: String::new(),
            message: format!(
                "join state: a stored {what} of partition {partition} does not decode ({e}); did a joined record type change? name the join differently to start afresh"
            ),
        };
        if let Some((_, value)) = entries.iter().find(|(k, _)| k == CLOCK) {
            let clock: StoredJoinClock =
                serde_json::from_slice(value).map_err(|e| bad("clock", e))?;
            part.max_seen = clock.max_seen;
            part.side_max = clock.sides;
            part.floor = clock.floor;
            part.applied = clock.applied;
            part.seq = clock.seq;
            part.upstream.restore(clock.pumps);
            part.aging.loaded(clock.refreshed);
        }
        let below = self.bounds.expired_below(part.floor).unwrap_or(i64::MIN);
        for (stored, value) in entries {
            let Some(EntryKey {
                side,
                key,
                time,
                seq,
                key_first,
            }) = split_entry_key(&stored)
            else {
                continue;
            };
            if time < below {
                // Expired at the stored watermark; its entry came back from a changelog that
                // keeps it until it ages out: it goes (an unmatched one was emitted then).
                if part.aging.quiet && !key_first {
                    // The next clock written deletes it from the local copy.
                    part.clock_dirty = true;
                } else {
                    part.relocated.push((stored, None));
                }
                continue;
            }
            match side {
                LEFT => part
                    .left
                    .load(key, time, seq, &value)
                    .map_err(|e| bad("left record", e))?,
                RIGHT => part
                    .right
                    .load(key, time, seq, &value)
                    .map_err(|e| bad("right record", e))?,
                _ => continue,
            }
            part.seq = part.seq.max(seq + 1);
            if self.outer(side) {
                part.expiring
                    .insert((self.bounds.expires(time), seq), (side, key.to_vec(), time));
            }
            if key_first {
                part.relocated
                    .push((entry_key(side, key, time, seq), Some(value)));
                part.relocated.push((stored, None));
            }
        }
        self.parts.insert(partition, part);
        self.stale = true;
        Ok(())
    }

    /// True when some partition has changes to write.
    pub(crate) fn dirty(&self) -> bool {
        let now = self.age.now();
        self.parts.values().any(|p| {
            p.clock_dirty
                || !p.dirty.is_empty()
                || !p.deletes.is_empty()
                || !p.relocated.is_empty()
                || self.age.refresh_due(&p.aging, now)
        })
    }

    /// The changes since the last call, as (partition, stored key, value or delete).
    pub(crate) fn take_writes(&mut self) -> Result<Vec<StateWrite>> {
        let encode = |e: serde_json::Error| Error::Agent {
            agent: String::new(),
            message: format!("cannot encode join state: {e}"),
        };
        // Room for every write at once: grown record by record, the list was copied over
        // and over (3.5 % of the suite's join).
        let room = self.parts.values().map(|p| {
            p.dirty.len() + p.deletes.len() + p.relocated.len() + usize::from(p.clock_dirty)
        });
        let mut out = Vec::with_capacity(room.sum());
        let (bounds, age) = (self.bounds, self.age);
        let now = age.now();
        for (&partition, part) in &mut self.parts {
            if age.refresh_due(&part.aging, now) {
                part.refresh(now);
            }
            // Moved records first: a later write of the same record (matched, or expired) wins.
            out.extend(part.relocated.drain(..).map(|(k, v)| (partition, k, v)));
            for (side, key, time, seq) in part.dirty.drain(..) {
                // An expired record is not written: deleted at its expiry if it was written,
                // else never written (buffered and expired between two commits).
                if bounds.expires(time) < part.floor {
                    continue;
                }
                let value = if side == LEFT {
                    part.left.stored(&key, time, seq)
                } else {
                    part.right.stored(&key, time, seq)
                }
                .map_err(encode)?;
                if let Some(value) = value {
                    out.push((partition, entry_key(side, &key, time, seq), Some(value)));
                }
            }
            out.extend(part.deletes.drain(..).map(|k| (partition, k, None)));
            if part.clock_dirty {
                part.clock_dirty = false;
                let clock = StoredJoinClock {
                    max_seen: part.max_seen,
                    sides: part.side_max,
                    floor: part.floor,
                    pumps: part.upstream.snapshot(),
                    applied: part.applied,
                    seq: part.seq,
                    expired_below: part
                        .aging
                        .quiet
                        .then(|| bounds.expired_below(part.floor))
                        .flatten(),
                    refreshed: age.refreshed(&part.aging),
                };
                out.push((
                    partition,
                    CLOCK.to_vec(),
                    Some(serde_json::to_vec(&clock).map_err(encode)?),
                ));
            }
        }
        Ok(out)
    }

    /// Handles one record of `partition` at event time `time`: pairs it with every buffered
    /// record of the other side in range (results go to `out`) and buffers it. Returns true
    /// when the record is late (dropped).
    #[allow(
        clippy::too_many_arguments,
        reason = "one record's parts, as the driver has them"
    )]
    pub(crate) fn on_record(
        &mut self,
        partition: i32,
        key: Vec<u8>,
        time: i64,
        record: Side<A, B>,
        now: i64,
        upstream: Option<(u64, i64)>,
        offset: Option<i64>,
    ) -> bool {
        let bounds = self.bounds;
        let watermark = self.watermark;
        let quiet = self.age.quiet();
        let outer = [self.left_outer, self.right_outer];
        let part = self.parts.entry(partition).or_insert_with(|| {
            self.stale = true;
            JoinPartition::new(partition, now, quiet)
        });
        let side = usize::from(matches!(record, Side::Right(_)));
        if let Some(offset) = offset {
            if offset <= part.applied[side] {
                // Already joined (handed out again after a failure or a crash).
                return false;
            }
            part.applied[side] = offset;
            part.clock_dirty = true;
        }
        let arrival = Arrival {
            side,
            time,
            now,
            upstream,
        };
        self.stale |= part.note_arrival(&arrival, self.idle_timeout, self.computed);
        // A partition with its own clock (see `advance`) judges lateness by it as it is now,
        // never below the clock its last sweep used: whether an advance ran in between does
        // not change what is late. An outer side's record it has passed is emitted alone at
        // the next advance, which it asks for as a moved watermark does.
        let own = part.own_clock();
        self.stale |= part
            .expiring
            .first_key_value()
            .is_some_and(|(&(expires, _), _)| expires < own);
        let wm = watermark.max(part.floor).max(own);
        let seq = part.seq;
        // A record meets the other side's records in its range, unless its own range plus
        // grace is behind the watermark (late).
        let (before, after) = match record {
            Side::Left(_) => (bounds.before, bounds.after),
            Side::Right(_) => (bounds.after, bounds.before),
        };
        if wm > time.saturating_add(after).saturating_add(bounds.grace) {
            return true;
        }
        let (lo, hi) = (time.saturating_sub(before), time.saturating_add(after));
        let out = &mut self.out;
        let tag = match record {
            Side::Left(a) => {
                let dirty = self.right_outer.then_some((RIGHT, &mut part.dirty));
                let matched = part.right.meet(&key, lo, hi, dirty, |b| {
                    out.push_back((Some(a.clone()), Some(b.clone())));
                });
                part.left.insert(&key, time, seq, a, matched, false);
                LEFT
            }
            Side::Right(b) => {
                let dirty = self.left_outer.then_some((LEFT, &mut part.dirty));
                let matched = part.left.meet(&key, lo, hi, dirty, |a| {
                    out.push_back((Some(a.clone()), Some(b.clone())));
                });
                part.right.insert(&key, time, seq, b, matched, false);
                RIGHT
            }
        };
        if outer[side] {
            part.expiring
                .insert((bounds.expires(time), seq), (tag, key.clone(), time));
        }
        part.dirty.push((tag, key, time, seq));
        part.seq += 1;
        part.clock_dirty = true;
        false
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
    /// caught-up partitions it last ran with (the caller tracks those), as for windows: no
    /// record moved a partition's or a side's largest event time from at or below the
    /// smallest `advance` computed, or woke a quiet one, since; no partition was loaded, and
    /// nothing has gone quiet for the idle timeout. A record that
    /// is not late expires after the watermark, so the expiry queue has nothing due either.
    pub(crate) fn must_advance(&self, now: i64) -> bool {
        self.stale || now >= self.due
    }

    /// The earliest clock time after `now` at which a partition, a side or a pump may go
    /// idle; the next millisecond when everything may be idle already (the watermark then
    /// moves with the clock).
    fn next_due(&self, now: i64) -> i64 {
        let idle = self.idle_timeout;
        let mut due = i64::MAX;
        let mut all_quiet = true;
        for part in self.parts.values() {
            for arrival in [
                part.last_arrival,
                part.side_arrival[0],
                part.side_arrival[1],
            ] {
                let idle_at = arrival.saturating_add(idle);
                if idle_at > now {
                    due = due.min(idle_at);
                    all_quiet = false;
                }
            }
            if let Some(at) = part.upstream.next_quiet(now, idle) {
                due = due.min(at);
            }
        }
        if all_quiet {
            due = now.saturating_add(1);
        }
        due
    }

    /// Recomputes the watermark at clock time `now` (as windows do) and expires the buffered
    /// records of outer sides it passed, emitting the unmatched ones; an inner side's go at
    /// the next sweep (`JoinPartition::sweep`).
    pub(crate) fn advance(&mut self, now: i64, floor: i64, caught_up: &HashSet<i32>) {
        let idle_timeout = self.idle_timeout;
        let computed = watermark_of(
            self.parts
                .iter_mut()
                .map(|(&partition, part)| PartitionTime {
                    partition,
                    max_seen: part.reached(now, idle_timeout, caught_up.contains(&partition)),
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
        let (outer, bounds) = ((self.left_outer, self.right_outer), self.bounds);
        for part in self.parts.values_mut() {
            // A partition no pump feeds (a co-partitioned join's) pairs only its own records:
            // it expires them, and judges lateness, by its own clock too, as Kafka Streams
            // does by a task's stream time, and not only by the instance's slowest partition
            // (which the fetcher lets trail by up to the read-ahead). One fed through a
            // repartition topic follows its pumps' watermarks.
            let wm = watermark.max(part.floor).max(part.own_clock());
            if wm > part.floor {
                part.floor = wm;
                part.clock_dirty = true;
            }
            part.expire_outer(wm, outer, &mut self.out);
            part.sweep(&bounds, wm, (!outer.0, !outer.1));
        }
        self.stale = false;
        self.due = self.next_due(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type StringJoin = JoinOperator<String, String>;
    type Pairs = Vec<(Option<String>, Option<String>)>;

    fn op(before: i64, after: i64, grace: i64, left: bool, right: bool) -> StringJoin {
        JoinOperator::new(
            Bounds {
                before,
                after,
                grace,
            },
            1_000_000,
            left,
            right,
        )
    }

    fn all() -> HashSet<i32> {
        HashSet::new()
    }

    /// Feeds records `(side, key, time, name)` in one partition; returns what came out.
    fn feed(op: &mut StringJoin, records: &[(char, &str, i64, &str)]) -> Pairs {
        feed_counting_late(op, records).0
    }

    /// Hands `op` record `name` of `side` at `time`, key `k`, in `partition` (through the pump
    /// and watermark `upstream`, if any), and advances; true when it was late.
    fn send_one(
        op: &mut StringJoin,
        partition: i32,
        upstream: Option<(u64, i64)>,
        side: char,
        time: i64,
        name: &str,
    ) -> bool {
        let record = if side == 'L' {
            Side::Left(name.to_owned())
        } else {
            Side::Right(name.to_owned())
        };
        let late = op.on_record(partition, b"k".to_vec(), time, record, 0, upstream, None);
        op.advance(0, i64::MIN, &all());
        late
    }

    /// `feed`, and how many records were late.
    fn feed_counting_late(
        op: &mut StringJoin,
        records: &[(char, &str, i64, &str)],
    ) -> (Pairs, usize) {
        let mut late = 0;
        for &(side, key, time, name) in records {
            let record = if side == 'L' {
                Side::Left(name.to_owned())
            } else {
                Side::Right(name.to_owned())
            };
            late +=
                usize::from(op.on_record(0, key.as_bytes().to_vec(), time, record, 0, None, None));
            op.advance(0, i64::MIN, &all());
        }
        (op.out.drain(..).collect(), late)
    }

    fn pair(a: &str, b: &str) -> (Option<String>, Option<String>) {
        (Some(a.to_owned()), Some(b.to_owned()))
    }

    /// Random out-of-order records over three keys (nothing late, nothing expires): every
    /// pair in range comes out exactly once, whatever the order records came in.
    #[test]
    fn random_records_meet_every_partner_in_range_once() {
        use rand::{Rng, SeedableRng};
        for seed in 0..200 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (before, after) = (rng.random_range(0..20), rng.random_range(0..20));
            let mut op = op(before, after, 1_000_000, false, false);
            let records: Vec<(char, String, i64, String)> = (0..60)
                .map(|i| {
                    let side = if rng.random_bool(0.5) { 'L' } else { 'R' };
                    let key = ["a", "b", "c"][rng.random_range(0..3)].to_owned();
                    (side, key, rng.random_range(0..100), format!("{side}{i}"))
                })
                .collect();
            let fed: Vec<(char, &str, i64, &str)> = records
                .iter()
                .map(|(s, k, t, n)| (*s, k.as_str(), *t, n.as_str()))
                .collect();
            let mut got = feed(&mut op, &fed);
            let mut expected = Vec::new();
            for (ls, lk, lt, ln) in &records {
                for (rs, rk, rt, rn) in &records {
                    if *ls == 'L'
                        && *rs == 'R'
                        && lk == rk
                        && (lt - before..=lt + after).contains(rt)
                    {
                        expected.push(pair(ln, rn));
                    }
                }
            }
            got.sort();
            expected.sort();
            assert_eq!(got, expected, "seed {seed}");
        }
    }

    #[test]
    fn pairs_are_emitted_once_when_the_second_side_arrives() {
        let mut op = op(5, 5, 0, false, false);
        let got = feed(
            &mut op,
            &[
                ('L', "/a", 100, "v1"),
                ('R', "/a", 103, "c1"),
                ('R', "/b", 104, "c2"),
                ('L', "/a", 106, "v2"),
            ],
        );
        assert_eq!(got, vec![pair("v1", "c1"), pair("v2", "c1")]);
    }

    #[test]
    fn bounds_are_inclusive_and_asymmetric() {
        // A right record may come at most 2 ms before and 10 ms after the left one.
        let mut op = op(2, 10, 100, false, false);
        let got = feed(
            &mut op,
            &[
                ('L', "k", 100, "v"),
                ('R', "k", 97, "too-early"),
                ('R', "k", 98, "earliest"),
                ('R', "k", 110, "latest"),
                ('R', "k", 111, "too-late"),
            ],
        );
        assert_eq!(got, vec![pair("v", "earliest"), pair("v", "latest")]);
    }

    #[test]
    fn out_of_order_arrivals_still_meet() {
        let mut op = op(5, 5, 10, false, false);
        let got = feed(
            &mut op,
            &[
                ('R', "k", 200, "c"),
                ('L', "x", 210, "other"),
                // Behind the watermark (210) but within grace of its range's end (201 + 5 + 10).
                ('L', "k", 201, "v"),
            ],
        );
        assert_eq!(got, vec![pair("v", "c")]);
    }

    #[test]
    fn late_records_are_dropped_and_counted() {
        let mut op = op(5, 5, 0, true, true);
        let (got, late) = feed_counting_late(
            &mut op,
            &[
                ('L', "k", 100, "v"),
                ('R', "y", 200, "r"),
                ('L', "x", 200, "w"),
                ('R', "k", 101, "late"),
            ],
        );
        // "v" expired (100 + 10 < 200) unmatched; the late click neither joins nor is emitted.
        assert_eq!(got, vec![(Some("v".to_owned()), None)]);
        assert_eq!(late, 1);
    }

    #[test]
    fn left_and_outer_joins_emit_unmatched_records_once_they_expire() {
        let mut left = op(5, 5, 0, true, false);
        let records = [
            ('L', "k", 100, "v1"),
            ('R', "k", 102, "c1"),
            ('L', "j", 101, "v2"),
            ('R', "z", 103, "c2"),
            // The watermark is the slower side's time: the right side first, then the left.
            ('R', "y", 111, "r3"),
            // Watermark 111: v1 (matched) expires (100 + 10 < 111); v2 (101 + 10) stays.
            ('L', "q", 111, "v3"),
            ('R', "y", 112, "r4"),
            // Watermark 112: v2 expires unmatched; c1 (102 + 10) stays.
            ('L', "q", 112, "v4"),
            ('R', "y", 114, "r5"),
            // Watermark 114: c1 (matched) and c2 (unmatched) expire.
            ('L', "q", 114, "v5"),
        ];
        let got = feed(&mut left, &records);
        assert_eq!(
            got,
            vec![pair("v1", "c1"), (Some("v2".to_owned()), None)],
            "left join: unmatched v2 once the watermark passed 101 + 10"
        );
        let mut outer = op(5, 5, 0, true, true);
        let got = feed(&mut outer, &records);
        assert_eq!(
            got,
            vec![
                pair("v1", "c1"),
                (Some("v2".to_owned()), None),
                (None, Some("c2".to_owned()))
            ]
        );
    }

    #[test]
    fn one_side_read_ahead_does_not_make_the_other_late() {
        let mut op = op(5, 5, 0, false, false);
        // A backlog of views read before any click: the watermark waits for the clicks.
        let (got, late) = feed_counting_late(
            &mut op,
            &[
                ('L', "a", 10, "v1"),
                ('L', "b", 400, "v2"),
                ('R', "a", 12, "c1"),
                ('R', "b", 401, "c2"),
            ],
        );
        assert_eq!(got, vec![pair("v1", "c1"), pair("v2", "c2")]);
        assert_eq!(late, 0);
    }

    #[test]
    fn a_partition_no_pump_feeds_expires_and_judges_lateness_by_its_own_clock() {
        // A co-partitioned join: partition 1 holds the instance's watermark at 10 while
        // partition 0 is read ahead to 200 (both sides).
        let mut op = op(5, 5, 0, false, false);
        let mut send =
            |p: i32, side: char, t: i64, name: &str| send_one(&mut op, p, None, side, t, name);
        send(1, 'L', 10, "v-slow");
        send(1, 'R', 10, "c-slow");
        send(0, 'L', 100, "v-old");
        send(0, 'L', 200, "v");
        send(0, 'R', 200, "c");
        // Behind partition 0's clock by more than the window: late there, not in partition 1.
        assert!(send(0, 'R', 150, "c-late"));
        assert!(!send(1, 'R', 150, "c-early"));
        assert_eq!(op.watermark, 10);
        // v-old expired by partition 0's clock: it is not written, the live records are.
        let written: Vec<_> = op
            .take_writes()
            .unwrap()
            .into_iter()
            .filter(|(p, k, v)| *p == 0 && k.as_slice() != CLOCK && v.is_some())
            .collect();
        assert_eq!(written.len(), 2, "{written:?}");
    }

    #[test]
    fn a_partition_fed_by_a_pump_follows_the_pumps_watermark_not_its_own_clock() {
        // Through the repartition topic: records of partition 0 come from a pump whose
        // watermark (from its slowest source partition) is 10, though both sides reached 200.
        let mut op = op(5, 5, 0, false, false);
        let mut send =
            |side: char, t: i64, name: &str| send_one(&mut op, 0, Some((1, 10)), side, t, name);
        send('L', 200, "v");
        send('R', 200, "c");
        send('L', 100, "v-old");
        // Another source partition's record, behind this partition's sides but not behind the
        // pump's watermark: not late, and it meets the record it is within range of.
        assert!(!send('R', 103, "c-old"));
        assert!(op.out.contains(&pair("v-old", "c-old")), "{:?}", op.out);
    }

    #[test]
    fn a_record_handed_out_again_is_not_joined_twice() {
        let mut op = op(5, 5, 0, false, false);
        op.on_record(
            0,
            b"k".to_vec(),
            100,
            Side::Left("v".into()),
            0,
            None,
            Some(7),
        );
        op.on_record(
            0,
            b"k".to_vec(),
            101,
            Side::Right("c".into()),
            0,
            None,
            Some(3),
        );
        op.on_record(
            0,
            b"k".to_vec(),
            101,
            Side::Right("c".into()),
            0,
            None,
            Some(3),
        );
        assert_eq!(op.out.len(), 1);
    }

    #[test]
    fn state_round_trips_through_the_store_and_expired_records_are_deleted() {
        let mut op = op(5, 5, 0, true, false);
        feed(
            &mut op,
            &[
                ('L', "k", 100, "v1"),
                ('L', "j", 100, "v2"),
                ('R', "j", 101, "c"),
            ],
        );
        let writes = op.take_writes().unwrap();
        // Two left records, one right, one clock.
        assert_eq!(writes.len(), 4);
        let store: Vec<(Vec<u8>, Vec<u8>)> = writes
            .into_iter()
            .map(|(_, k, v)| (k, v.unwrap()))
            .collect();
        let mut restored = self::op(5, 5, 0, true, false);
        restored.load(0, store, 0).unwrap();
        assert_eq!(restored.buffered(), (2, 1));
        // A click after the restart meets the view buffered before it, once.
        restored.on_record(
            0,
            b"k".to_vec(),
            103,
            Side::Right("c2".into()),
            0,
            None,
            None,
        );
        assert_eq!(
            restored.out.drain(..).collect::<Vec<_>>(),
            vec![pair("v1", "c2")]
        );
        // Past every expiry on both sides: nothing unmatched is left (v1 and v2 matched), all
        // deleted.
        for (key, record) in [
            (b"x", Side::Right("far".into())),
            (b"w", Side::Left("far".into())),
        ] {
            restored.on_record(0, key.to_vec(), 500, record, 0, None, None);
        }
        restored.advance(0, i64::MIN, &all());
        assert!(restored.out.is_empty());
        assert_eq!(restored.buffered(), (1, 1));
        let deletes = restored
            .take_writes()
            .unwrap()
            .into_iter()
            .filter(|(_, k, v)| v.is_none() && k != CLOCK)
            .count();
        assert_eq!(deletes, 3, "the three stored records are deleted");
    }

    /// A record's key in the key-first layout of earlier versions.
    fn key_first(side: u8, key: &[u8], time: i64, seq: u64) -> Vec<u8> {
        let mut out = vec![side];
        out.extend_from_slice(&u32::try_from(key.len()).unwrap().to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&time_bytes(time));
        out.extend_from_slice(&seq.to_be_bytes());
        out
    }

    #[test]
    fn records_stored_key_first_load_as_time_first_ones_and_move_at_the_next_commit() {
        type Entry = (u8, &'static [u8], i64, u64, &'static [u8]);
        let entries: [Entry; 3] = [
            (LEFT, b"a", 5, 0, br#"[false,"v"]"#),
            (LEFT, b"b", 6, 1, br#"[false,"u"]"#),
            (RIGHT, b"a", 4, 2, br#"[true,"c"]"#),
        ];
        let run = |old: bool| {
            let mut op = op(10, 10, 0, true, false);
            let layout = if old { key_first } else { entry_key };
            let stored = entries
                .iter()
                .map(|&(side, key, time, seq, value)| {
                    (layout(side, key, time, seq), value.to_vec())
                })
                .collect();
            op.load(0, stored, 0).unwrap();
            let moved: BTreeMap<_, _> = op
                .take_writes()
                .unwrap()
                .into_iter()
                .map(|(_, k, v)| (k, v))
                .collect();
            let out = feed(
                &mut op,
                &[
                    ('R', "a", 8, "d"),
                    ('L', "x", 500, "y"),
                    ('R', "x", 500, "z"),
                ],
            );
            let after: BTreeMap<_, _> = op
                .take_writes()
                .unwrap()
                .into_iter()
                .map(|(_, k, v)| (k, v))
                .collect();
            (moved, out, after)
        };
        let (moved, from_old, after_old) = run(true);
        let (nothing, from_new, after_new) = run(false);
        assert!(nothing.is_empty(), "{nothing:?}");
        assert_eq!(
            from_old,
            vec![pair("v", "d"), pair("y", "z"), (Some("u".to_owned()), None)]
        );
        assert_eq!(from_old, from_new);
        assert_eq!(after_old, after_new);
        let expected: BTreeMap<_, _> = entries
            .iter()
            .flat_map(|&(side, key, time, seq, value)| {
                [
                    (key_first(side, key, time, seq), None),
                    (entry_key(side, key, time, seq), Some(value.to_vec())),
                ]
            })
            .collect();
        assert_eq!(moved, expected);
    }

    #[test]
    fn an_inner_sides_expired_records_go_at_the_next_sweep_and_meet_nothing_meanwhile() {
        // W = 10, grace 0: a record at t expires once the watermark passes t + 10; the inner
        // sides are swept each time the watermark crosses a multiple of 5 (partition 0's
        // phase is 0).
        let mut op = op(5, 5, 0, false, false);
        feed(&mut op, &[('L', "k", 100, "v"), ('R', "j", 100, "c")]);
        assert!(
            op.take_writes()
                .unwrap()
                .iter()
                .all(|(_, _, v)| v.is_some())
        );
        // Watermark 110: swept, nothing expired yet (100 + 10 is not below 110).
        feed(&mut op, &[('L', "a", 110, "v2"), ('R', "b", 110, "c2")]);
        assert_eq!(op.buffered(), (2, 2));
        // Watermark 113: `v` (100) and `c` (100) expired, but 113 crosses no line since the
        // last sweep: they are still held, and a click that could have met `v` is late.
        let (pairs, late) = feed_counting_late(
            &mut op,
            &[
                ('L', "x", 113, "v3"),
                ('R', "y", 113, "c3"),
                ('R', "k", 105, "late"),
            ],
        );
        assert_eq!((pairs, late), (vec![], 1));
        assert_eq!(op.buffered(), (3, 3));
        let writes = op.take_writes().unwrap();
        assert!(writes.iter().all(|(_, _, v)| v.is_some()), "{writes:?}");
        // Watermark 116: swept; the two stored records are deleted.
        feed(&mut op, &[('L', "x", 116, "v4"), ('R', "y", 116, "c4")]);
        assert_eq!(op.buffered(), (3, 3));
        let deleted: Vec<Vec<u8>> = op
            .take_writes()
            .unwrap()
            .into_iter()
            .filter_map(|(_, k, v)| v.is_none().then_some(k))
            .collect();
        assert_eq!(
            deleted,
            vec![
                entry_key(LEFT, b"k", 100, 0),
                entry_key(RIGHT, b"j", 100, 1)
            ]
        );
    }

    #[test]
    fn partitions_sweep_at_different_points_of_the_sweep_step() {
        let bounds = Bounds {
            before: 5_000,
            after: 5_000,
            grace: 0,
        };
        let every = bounds.sweep_every() as u64;
        let phases: HashSet<u64> = (0..8)
            .map(|p| JoinPartition::<String, String>::new(p, 0, false).sweep_phase % every)
            .collect();
        assert_eq!(phases.len(), 8, "{phases:?}");
        // Partition 1 sweeps where its phase puts the grid's lines.
        let mut part = JoinPartition::<String, String>::new(1, 0, false);
        let phase = i64::try_from(part.sweep_phase % every).unwrap();
        assert_ne!(phase, 0);
        part.sweep(&bounds, 0, (true, true));
        let next = (1..=5_000)
            .find(|&wm| {
                part.sweep(&bounds, wm, (true, true));
                part.swept == wm
            })
            .unwrap();
        assert_eq!(next, 5_000 - phase);
    }

    #[test]
    fn pending_writes_of_expired_records_go_at_sweeps_without_a_commit() {
        for outer in [false, true] {
            let mut op = op(5, 5, 0, outer, outer);
            for t in 0..1000 {
                feed(&mut op, &[('L', "k", t, "v"), ('R', "j", t, "c")]);
            }
            // Live: about 1.5 (W + grace) = 15 ms of records per side.
            let pending = op.parts[&0].dirty.len();
            assert!(pending <= 2 * 16, "outer {outer}: {pending} pending writes");
        }
    }

    #[test]
    fn a_partitions_records_are_stored_in_order_of_time() {
        assert!(entry_key(LEFT, b"zzz", 0, 9) < entry_key(LEFT, b"a", 1, 0));
        assert!(entry_key(RIGHT, b"a", -1, 5) < entry_key(RIGHT, b"a", 0, 0));
    }

    #[test]
    fn a_match_writes_a_stored_record_again_only_on_an_outer_side() {
        for (left_outer, rewrites) in [(false, 0), (true, 1)] {
            let mut op = op(10, 10, 0, left_outer, false);
            op.on_record(0, b"k".to_vec(), 5, Side::Left("v".into()), 0, None, None);
            op.take_writes().unwrap();
            op.on_record(0, b"k".to_vec(), 6, Side::Right("c".into()), 0, None, None);
            assert_eq!(op.out.drain(..).collect::<Vec<_>>(), vec![pair("v", "c")]);
            let writes = op.take_writes().unwrap();
            let sides: Vec<u8> = writes
                .iter()
                .filter_map(|(_, k, _)| split_entry_key(k).map(|e| e.side))
                .collect();
            let left = sides.iter().filter(|&&s| s == LEFT).count();
            assert_eq!(left, rewrites, "left outer: {left_outer}");
            assert_eq!(sides.len() - left, 1, "the right record is written");
        }
    }

    #[test]
    fn a_record_waking_an_idle_partition_advances_though_it_moves_no_clock() {
        let mut op = op(10, 10, 0, true, false);
        op.idle_timeout = 1_000;
        let read_to_end = HashSet::from([2]);
        op.on_record(
            2,
            b"a".to_vec(),
            5,
            Side::Left("l5".into()),
            0,
            Some((1, 5)),
            None,
        );
        op.advance(0, i64::MIN, &read_to_end);
        // A marker: the pump is at 100. The partition, read to its end and quiet for the
        // idle timeout, is idle: the watermark is its largest event time (5).
        op.heard(2, 1, 100, 1_000);
        op.advance(1_000, i64::MIN, &read_to_end);
        assert_eq!(op.watermark, 5);
        // A record behind it, stamped with the same pump watermark, moves no clock; but the
        // partition counts again, and its watermark is the pump's.
        op.on_record(
            2,
            b"a".to_vec(),
            3,
            Side::Left("l3".into()),
            1_000,
            Some((1, 100)),
            None,
        );
        assert!(op.must_advance(1_000));
        op.advance(1_000, i64::MIN, &read_to_end);
        assert_eq!(op.watermark, 100);
    }

    /// What one step of `clocked_run` gave: late or not, the pairs emitted, the watermark.
    type Step = (bool, Pairs, i64);

    /// The results out, sorted: the partitions expire in no fixed order within one advance.
    fn drained(op: &mut StringJoin) -> Pairs {
        let mut out: Pairs = op.out.drain(..).collect();
        out.sort();
        out
    }

    /// Random records of both sides over three partitions (the third fed by two pumps),
    /// markers and ticks, the clock moving in steps around the idle timeout (1 s), the
    /// caught-up partitions changing; after each record, an advance only when `must_advance`
    /// asks (`gated`), or always. Returns every step's outcome and the advances skipped.
    fn clocked_run(make: &dyn Fn() -> StringJoin, seed: u64, gated: bool) -> (Vec<Step>, u64) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut op = make();
        let (mut now, mut time, mut skipped) = (0, rng.random_range(-50..50), 0);
        let mut pumps = [i64::MIN; 2];
        let mut caught_up = all();
        let mut force = true;
        let mut steps = Vec::new();
        for i in 0..rng.random_range(20..300) {
            now += [0, 0, 1, 50, 400, 1_100][rng.random_range(0..6)];
            let (partition, pump) = (rng.random_range(0..3), rng.random_range(0..2));
            match rng.random_range(0..20) {
                0 => op.advance(now, i64::MIN, &caught_up),
                1 => {
                    op.heard(2, pump as u64, pumps[pump], now);
                    op.advance(now, i64::MIN, &caught_up);
                }
                2 => {
                    caught_up = if caught_up.is_empty() {
                        HashSet::from([0, 1, 2])
                    } else {
                        all()
                    };
                    force = true;
                }
                _ => {
                    time += rng.random_range(0..12);
                    let t = time - rng.random_range(0..40);
                    pumps[pump] = pumps[pump].max(time - rng.random_range(0..30));
                    let upstream = (partition == 2).then_some((pump as u64, pumps[pump]));
                    // One side may go quiet for a while (its partitions idle, the other's not).
                    let left = if i % 50 < 25 {
                        rng.random_bool(0.5)
                    } else {
                        rng.random_bool(0.1)
                    };
                    let record = if left {
                        Side::Left(format!("L{i}"))
                    } else {
                        Side::Right(format!("R{i}"))
                    };
                    let key = ["a", "b", "c"][rng.random_range(0..3)].as_bytes().to_vec();
                    let late = op.on_record(partition, key, t, record, now, upstream, None);
                    if !gated || force || op.must_advance(now) {
                        op.advance(now, i64::MIN, &caught_up);
                        force = false;
                    } else {
                        skipped += 1;
                    }
                    steps.push((late, drained(&mut op), op.watermark));
                }
            }
        }
        op.advance(now, i64::MAX, &caught_up);
        steps.push((false, drained(&mut op), op.watermark));
        (steps, skipped)
    }

    #[test]
    fn skipping_the_advances_must_advance_declines_changes_no_result() {
        let mut skipped = 0;
        for seed in 0..300 {
            let (before, after) = ((seed % 3) as i64 * 10, (seed / 3 % 3) as i64 * 10);
            let grace = [0, 7, 30][(seed / 9 % 3) as usize];
            let (left, right) = (seed % 2 == 1, seed % 4 == 3);
            let make = || {
                let mut op = op(before, after, grace, left, right);
                op.idle_timeout = 1_000;
                op
            };
            let (always, _) = clocked_run(&make, seed, false);
            let (gated, skips) = clocked_run(&make, seed, true);
            assert_eq!(gated, always, "seed {seed}");
            skipped += skips;
        }
        assert!(skipped > 3_000, "{skipped} advances skipped");
    }

    const DAY: i64 = 86_400_000;

    /// A stored partition of the join's table, or of its changelog (last value per key).
    type Stored = BTreeMap<Vec<u8>, Vec<u8>>;

    /// Commits `op`'s writes to `stores` (a tombstone removes) and loads them into a fresh
    /// operator made by `make`: a restart. With `by_age`, `stores` are the changelog (closed
    /// records leave nothing) and, with `purge`, the entries a replayed clock shows expired
    /// are deleted as recovery does.
    fn restart_join(
        op: &mut StringJoin,
        stores: &mut HashMap<i32, Stored>,
        by_age: Option<bool>,
        make: &dyn Fn() -> StringJoin,
    ) -> StringJoin {
        for (partition, k, v) in op.take_writes().unwrap() {
            let store = stores.entry(partition).or_default();
            match v {
                Some(v) => store.insert(k, v),
                None => store.remove(&k),
            };
        }
        let mut fresh = make();
        for (&partition, store) in stores.iter_mut() {
            if by_age == Some(true) {
                let ranges = store
                    .get(CLOCK)
                    .map(|clock| expired_records().expired_by(CLOCK, clock))
                    .unwrap_or_default();
                store.retain(|k, _| !ranges.iter().any(|(from, to)| k >= from && k < to));
            }
            let entries = store.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            fresh.load(partition, entries, 0).unwrap();
        }
        fresh
    }

    /// Random records over two partitions and three keys, out of order, with restarts;
    /// everything that came out, sorted.
    fn restarting_run(seed: u64, make: &dyn Fn() -> StringJoin, by_age: Option<bool>) -> Pairs {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut op = make();
        let mut stores = HashMap::new();
        let mut out = Vec::new();
        let mut time: i64 = 0;
        for i in 0..rng.random_range(50..250) {
            if rng.random_range(0..15) == 0 {
                out.extend(op.out.drain(..));
                op = restart_join(&mut op, &mut stores, by_age, make);
                continue;
            }
            time += rng.random_range(0..6);
            let t = time - rng.random_range(0..25);
            let record = if rng.random_bool(0.5) {
                Side::Left(format!("L{i}"))
            } else {
                Side::Right(format!("R{i}"))
            };
            let key = ["a", "b", "c"][rng.random_range(0..3)].as_bytes().to_vec();
            op.on_record(rng.random_range(0..2), key, t, record, 0, None, None);
            op.advance(0, i64::MIN, &all());
        }
        op.advance(0, i64::MAX, &all());
        out.extend(op.out.drain(..));
        out.sort();
        out
    }

    #[test]
    fn records_expired_without_tombstones_join_as_tombstoned_ones_do_on_random_streams() {
        let mut compared = 0;
        for seed in 0..300 {
            let (before, after) = ((seed % 3) as i64 * 5, (seed / 3 % 3) as i64 * 5);
            let grace = [0, 4, 15][(seed / 9 % 3) as usize];
            let (left, right) = (seed % 2 == 1, seed % 4 == 3);
            let tombstoned = || op(before, after, grace, left, right);
            let expected = restarting_run(seed, &tombstoned, None);
            for purge in [false, true] {
                let by_age = || {
                    let mut op = op(before, after, grace, left, right);
                    op.expire_by_age(Some((DAY, true)));
                    op
                };
                let got = restarting_run(seed, &by_age, Some(purge));
                assert_eq!(got, expected, "seed {seed}, purge {purge}");
            }
            compared += expected.len();
        }
        assert!(compared > 5_000, "the runs joined {compared} pairs");
    }

    #[test]
    fn an_expired_record_leaves_no_tombstone_and_the_clock_marks_it_expired() {
        let mut op = op(5, 5, 0, true, false);
        op.expire_by_age(Some((DAY, true)));
        feed(&mut op, &[('L', "k", 100, "v1"), ('R', "j", 105, "c")]);
        assert!(
            op.take_writes()
                .unwrap()
                .iter()
                .all(|(_, _, v)| v.is_some())
        );
        // Watermark 111 (both sides there): v1 (100 + 10 < 111) expires, alone (a left
        // join); c stays.
        assert_eq!(
            feed(&mut op, &[('R', "j", 111, "c2"), ('L', "z", 111, "v3")]),
            vec![(Some("v1".to_owned()), None)]
        );
        let written = op.take_writes().unwrap();
        assert!(
            written.iter().all(|(_, _, v)| v.is_some()),
            "no tombstone: {written:?}"
        );
        // No tombstone either: the commit step that writes this clock deletes v1 from the
        // local copy, as recovery does after replaying it.
        let expired = entry_key(LEFT, b"k", 100, 0);
        let (_, _, clock) = written.iter().find(|(_, k, _)| k == CLOCK).unwrap();
        let clock = clock.as_deref().unwrap();
        let ranges = expired_records().expired_by(CLOCK, clock);
        let within = |k: &[u8]| {
            ranges
                .iter()
                .any(|(f, t)| k >= f.as_slice() && k < t.as_slice())
        };
        assert!(within(&expired));
        assert!(!within(&entry_key(RIGHT, b"j", 105, 1)));
        assert!(
            !within(&entry_key(LEFT, b"x", 101, 9)),
            "101 + 10 is not below 111"
        );
        // Every quarter of the retention, the buffered records are written again.
        op.parts.get_mut(&0).unwrap().aging.refreshed -= DAY / 4;
        assert!(op.dirty());
        let rewritten = op.take_writes().unwrap();
        assert_eq!(rewritten.len(), 4, "c, c2, v3 and the clock: {rewritten:?}");
    }
}
