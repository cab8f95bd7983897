//! Windowed tables in Faust's style: a [`Table`] whose values are kept per key and time
//! window. `update` changes the windows containing the event time of the record being
//! processed; `current()`, `now()`, `delta(d)` and `at(t)` read one window of a key.
//!
//! ```ignore
//! let views = ctx.table::<String, u64>("views")?.tumbling(Duration::from_secs(60))
//!     .expires(Duration::from_secs(3600));
//! views.update(view.url.clone(), |n| n + 1)?;
//! let this_minute = views.current(&view.url)?;
//! ```
//!
//! Entries are stored in the table under the JSON key `[key, window_start]` and partitioned by
//! the key alone, so a key's windows live together. A window `[start, end)` is deleted once
//! the partition's event time (the largest seen by `update`) passes `end + expires` (default:
//! one window size); deletions go through the changelog like any write.
//!
//! Decision: "current" is always the event time of the record being processed (Faust uses the
//! event's timestamp too); `now()` reads the worker's clock (virtual in tests), as Faust's
//! `now()` reads the wall clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::millis;
use crate::base::codec::KeyBytes;
use crate::base::error::Result;
use crate::instance::table::Table;

/// A table of values per key and window; see the module docs.
pub struct WindowedTable<K, V> {
    table: Table<K, V>,
    size: i64,
    step: i64,
    expires: i64,
    index: Mutex<Index>,
}

/// A partition's stored windows: their stored keys by window start. Every update looks its
/// windows up here: a start among a few in the tree, then the key hashed, cheaper than
/// comparing key bytes down a tree of every (start, key).
type Starts = BTreeMap<i64, HashSet<Vec<u8>, foldhash::fast::RandomState>>;

type PartIndex = (i64, Starts);

#[derive(Default)]
struct Index {
    assignment: u64,
    /// Per partition: the largest event time written, and stored windows by (start, key).
    parts: HashMap<i32, PartIndex>,
}

impl<K, V> Table<K, V>
where
    K: Serialize + DeserializeOwned + KeyBytes,
    V: Serialize + DeserializeOwned + 'static,
{
    /// Keeps values per key in tumbling windows of `size`.
    pub fn tumbling(self, size: Duration) -> WindowedTable<K, V> {
        let size = millis(size).max(1);
        WindowedTable::new(self, size, size)
    }

    /// Keeps values per key in hopping windows of `size` starting every `step`; `update`
    /// changes every window containing the event time, reads see the latest-starting one.
    pub fn hopping(self, size: Duration, step: Duration) -> WindowedTable<K, V> {
        let size = millis(size).max(1);
        WindowedTable::new(self, size, millis(step).clamp(1, size))
    }
}

impl<K, V> WindowedTable<K, V>
where
    K: Serialize + DeserializeOwned + KeyBytes,
    V: Serialize + DeserializeOwned + 'static,
{
    fn new(table: Table<K, V>, size: i64, step: i64) -> Self {
        WindowedTable {
            table,
            size,
            step,
            expires: size,
            index: Mutex::new(Index::default()),
        }
    }

    /// How long after its end a window is kept for reads (default: one window size).
    pub fn expires(mut self, expires: Duration) -> Self {
        self.expires = millis(expires);
        self
    }

    /// The latest-starting window containing `time`.
    fn start_of(&self, time: i64) -> i64 {
        time.div_euclid(self.step) * self.step
    }

    fn stored_key(&self, key: &K, start: i64) -> Result<Vec<u8>> {
        serde_json::to_vec(&(key, start))
            .map_err(|e| self.table.error(format!("cannot encode a key: {e}")))
    }

    fn current_time(&self) -> Result<i64> {
        self.table.position.event_time().ok_or_else(|| {
            self.table.error(
                "`current()` and `update` read the event time of the record being processed, and there is none".into(),
            )
        })
    }

    /// The value of `key` in the window containing `time` (ms since the epoch), or the
    /// table's default.
    pub fn at(&self, key: &K, time: i64) -> Result<V> {
        let slot = (
            self.table.partition_of(key),
            self.stored_key(key, self.start_of(time))?,
        );
        Ok(self
            .table
            .read_slot(&slot)?
            .unwrap_or_else(|| (self.table.default)()))
    }

    /// The window containing the event time of the record being processed.
    pub fn current(&self, key: &K) -> Result<V> {
        self.at(key, self.current_time()?)
    }

    /// The window containing the worker clock's time.
    pub fn now(&self, key: &K) -> Result<V> {
        self.at(key, self.table.position.clock.now_ms())
    }

    /// The window containing the current event time minus `delta`.
    pub fn delta(&self, key: &K, delta: Duration) -> Result<V> {
        self.at(key, self.current_time()?.saturating_sub(millis(delta)))
    }

    /// Applies `f` to `key`'s value (the default when missing) in every window containing the
    /// current event time, and returns the value of the latest-starting one. Then deletes the
    /// partition's expired windows.
    pub fn update(&self, key: K, f: impl Fn(V) -> V) -> Result<V>
    where
        V: Clone,
    {
        let time = self.current_time()?;
        let partition = self.table.partition_of(&key);
        self.table.check_write(&key, partition)?;
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        self.load(&mut index, partition)?;
        let mut start = self.start_of(time);
        let mut last = None;
        while start > time - self.size {
            // One copy of the stored key per window: read and written where it is (copied
            // into the step's writes only when they do not have it yet), then moved into the
            // index (dropped when the index has the window already).
            let slot = (partition, self.stored_key(&key, start)?);
            let old = self
                .table
                .read_slot(&slot)?
                .unwrap_or_else(|| (self.table.default)());
            let new = f(old);
            self.table.write_at(&slot, Some(&new))?;
            if let Some((_, windows)) = index.parts.get_mut(&partition) {
                windows.entry(start).or_default().insert(slot.1);
            }
            last.get_or_insert(new);
            start -= self.step;
        }
        if let Some((max_time, windows)) = index.parts.get_mut(&partition) {
            *max_time = (*max_time).max(time);
            let horizon = max_time
                .saturating_sub(self.expires)
                .saturating_sub(self.size);
            while let Some(oldest) = windows.first_entry()
                && *oldest.key() < horizon
            {
                for k in oldest.remove() {
                    self.table.write(partition, k, None)?;
                }
            }
        }
        Ok(last.unwrap_or_else(|| (self.table.default)()))
    }

    /// Builds the partition's window index from the store on first use (after a rebalance,
    /// again).
    fn load(&self, index: &mut Index, partition: i32) -> Result<()> {
        let assignment = self.table.position.assignment.load(Ordering::Acquire);
        if index.assignment != assignment {
            index.parts.clear();
            index.assignment = assignment;
        }
        if index.parts.contains_key(&partition) {
            return Ok(());
        }
        let def = &self.table.core.def;
        let mut windows = Starts::new();
        for (k, _) in def.store.scan(&def.name, partition)? {
            if let Ok((_, start)) = serde_json::from_slice::<(serde_json::Value, i64)>(&k) {
                windows.entry(start).or_default().insert(k);
            }
        }
        index.parts.insert(partition, (i64::MIN, windows));
        Ok(())
    }
}

impl<K, V> std::fmt::Debug for WindowedTable<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WindowedTable({}, size {} ms, step {} ms)",
            self.table.core.def.name, self.size, self.step
        )
    }
}
