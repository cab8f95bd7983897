//! Tables: per-key state an agent keeps across records, stored in LMDB (see `store`) and backed
//! by a changelog topic (`<app>-<table>-changelog`) from which a lost or stale local copy is
//! rebuilt.
//!
//! A table is partitioned like its source topic: a key lives in the partition its bytes hash to
//! (the Java client's murmur2), and an agent may only write keys of the partition of the record
//! it is processing, so a key is never counted in two places. Writes go to an in-memory overlay
//! that reads see at once; the commit step turns the overlay into changelog records, waits for
//! them with the agent's other outputs, then writes the overlay, the source offsets and the
//! changelog offsets in one LMDB transaction.

pub(crate) mod global;
pub(crate) mod joined;
pub(crate) mod recovery;
pub(crate) mod scan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::base::codec::KeyBytes;
use crate::base::error::{Error, Result};
use crate::base::partitioner::partition_for_key;
use crate::instance::position::Position;
use crate::io::store::{Overlay, PartitionMeta, PartitionWrites, Puts, TableStore};
pub use global::GlobalTable;
pub use joined::{Joined, TableJoin};
pub use scan::Entries;
use scan::{RawEntries, ScanScope};

pub use crate::base::spec::TableSpec;

/// One table of one agent, shared by the agent's fetcher (recovery) and instances.
pub(crate) struct TableDef {
    pub(crate) name: Arc<str>,
    /// The topic the table is restored from: `<app>-<table>-changelog`, or for a table built
    /// from a topic (`sourced`) that topic itself.
    pub(crate) changelog: Arc<str>,
    /// Built from its topic (`AgentSpec::table_of`, Kafka Streams' source-topic changelog):
    /// commit steps write no changelog records, recovery reads the topic through `decoder`,
    /// and only that topic's records change the table.
    pub(crate) sourced: bool,
    /// Turns a record of a sourced table's topic into its stored key and value (`None`: the
    /// record does not apply; it went to the failure policy when first read). Set when the
    /// agent takes the table (`AgentContext::table_of`), which knows the types and codec.
    pub(crate) decoder: std::sync::OnceLock<SourceDecoder>,
    pub(crate) source_partitions: i32,
    /// The topic whose keys are registry-coded and whose partitions the table's follow
    /// (`base/registry_keys.rs`): a key is placed by its framed form there.
    pub(crate) key_topic: Option<Arc<str>>,
    pub(crate) store: Arc<TableStore>,
    /// Where each local partition stands, kept current by recovery and commits.
    pub(crate) metas: Mutex<HashMap<i32, PartitionMeta>>,
    /// Turns a key typed by a user (JSON, or a plain string) into its partition and stored
    /// bytes; set when an agent first opens the table (it knows the key type), for the web
    /// server's table queries.
    pub(crate) key_parser: std::sync::OnceLock<KeyParser>,
    /// Set when the changelog drops the table's expired entries by age instead of by
    /// tombstones (tumbling and hopping windows and joins on a `compact,delete` topic).
    pub(crate) expiring: std::sync::OnceLock<Expiring>,
}

/// A table whose changelog may drop entries by age, and how it tells expired ones apart.
pub(crate) struct Expiring {
    /// The changelog's time retention (ms): an entry not written again for this long may be
    /// gone from it, so the owner writes what it keeps again well before (`ops/expiry.rs`).
    pub(crate) retention: i64,
    /// The changelog is known to drop entries by age: expired ones go without tombstones.
    /// (False when its configs cannot be read: then tombstones still go, and the live
    /// entries are written again all the same.)
    pub(crate) by_age: bool,
    pub(crate) ranges: Arc<dyn ExpiredRanges>,
}

/// What a replayed changelog record says has expired: recovery and standbys delete those
/// entries from the local copy (the changelog holds them until they age out). Declared here,
/// implemented by the operator that owns the stored form (the window and join state).
pub(crate) trait ExpiredRanges: Send + Sync {
    /// The stored key of the entry whose value tells what has expired (the operator's clock):
    /// a commit step that writes it deletes those ranges from the local copy
    /// ([`commit_writes`]).
    fn clock_key(&self) -> &[u8];
    /// The ranges `[from, to)` of stored keys that the record `key` → `value` shows to have
    /// expired (none for most records).
    fn expired_by(&self, key: &[u8], value: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)>;
}

/// See [`TableDef::decoder`].
pub(crate) type SourceDecoder = Arc<
    dyn Fn(&crate::base::message::RawRecord) -> Option<(Vec<u8>, Option<Vec<u8>>)> + Send + Sync,
>;

/// See [`TableDef::key_parser`].
pub(crate) type KeyParser =
    Arc<dyn Fn(&str) -> std::result::Result<(i32, Vec<u8>), String> + Send + Sync>;

pub(crate) fn changelog_topic(app_id: &str, table: &str) -> String {
    format!("{app_id}-{table}-changelog")
}

impl TableDef {
    /// A table restored from `changelog`; `sourced` when that is the topic it is built from.
    #[cfg(test)]
    pub(crate) fn new(
        name: &str,
        changelog: &str,
        sourced: bool,
        source_partitions: i32,
        store: Arc<TableStore>,
    ) -> Arc<Self> {
        Self::placed_by(name, changelog, sourced, source_partitions, None, store)
    }

    /// [`TableDef::new`] for a table whose partitions follow `key_topic`'s registry-coded keys.
    pub(crate) fn placed_by(
        name: &str,
        changelog: &str,
        sourced: bool,
        source_partitions: i32,
        key_topic: Option<Arc<str>>,
        store: Arc<TableStore>,
    ) -> Arc<Self> {
        Arc::new(TableDef {
            name: Arc::from(name),
            changelog: Arc::from(changelog),
            sourced,
            decoder: std::sync::OnceLock::new(),
            source_partitions,
            key_topic,
            store,
            metas: Mutex::new(HashMap::new()),
            key_parser: std::sync::OnceLock::new(),
            expiring: std::sync::OnceLock::new(),
        })
    }

    /// The partition of the plain key `key`.
    pub(crate) fn partition_of_key(&self, key: &[u8]) -> i32 {
        match &self.key_topic {
            Some(topic) => {
                let placed = crate::base::registry_keys::wire_key(topic, key);
                partition_for_key(&placed, self.source_partitions)
            }
            None => partition_for_key(key, self.source_partitions),
        }
    }

    pub(crate) fn meta(&self, partition: i32) -> PartitionMeta {
        self.metas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&partition)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn set_meta(&self, partition: i32, meta: PartitionMeta) {
        self.metas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition, meta);
    }
}

/// Where a key's uncommitted write sits in an overlay: its partition and key bytes.
pub(crate) type Slot = (i32, Vec<u8>);

/// An instance's view of a table: the overlay of writes since the last commit step, over the
/// writes of the step under way (the agent keeps processing while it commits), over the store.
pub(crate) struct TableCore {
    pub(crate) def: Arc<TableDef>,
    overlay: Mutex<Overlay>,
    /// Writes taken by the commit step under way: read until the store holds them. The store
    /// writes the same map (shared, not copied).
    committing: Mutex<Arc<Overlay>>,
}

impl TableCore {
    pub(crate) fn new(def: Arc<TableDef>) -> Arc<Self> {
        Arc::new(TableCore {
            def,
            overlay: Mutex::new(Overlay::default()),
            committing: Mutex::new(Arc::default()),
        })
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn committing(&self) -> std::sync::MutexGuard<'_, Arc<Overlay>> {
        self.committing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `f` of the uncommitted write of a key (`None`: deleted), if any: the overlay's, else
    /// the commit step's under way.
    fn with_pending<R>(&self, slot: &Slot, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        if let Some(v) = self.overlay().get(slot) {
            return Some(f(v.as_deref()));
        }
        let committing = self.committing();
        if committing.is_empty() {
            return None;
        }
        committing.get(slot).map(|v| f(v.as_deref()))
    }

    /// The commit step that took the writes is done: the store holds them.
    pub(crate) fn committed(&self) {
        let mut committing = self.committing();
        if !committing.is_empty() {
            *committing = Arc::default();
        }
    }

    /// The uncommitted writes, the commit step's under way first (the overlay's win).
    fn uncommitted(&self) -> Overlay {
        let mut all = Overlay::clone(&self.committing());
        all.extend(self.overlay().iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }

    pub(crate) fn is_dirty(&self) -> bool {
        !self.overlay().is_empty()
    }

    /// Takes the writes since the last commit step: the step's own, whose changelog records the
    /// step sends (`None`: the table is built from its topic, which is its changelog already),
    /// and what the store writes (the same map, after an earlier step's writes still held).
    /// They stay readable until [`TableCore::committed`]. One step at a time.
    pub(crate) fn take_writes(&self) -> (Option<Arc<Overlay>>, Arc<Overlay>) {
        let writes = Arc::new(std::mem::take(&mut *self.overlay()));
        let mut committing = self.committing();
        if committing.is_empty() {
            *committing = writes.clone();
        } else {
            // An earlier step's writes are still held: the store gets both, newest last.
            Arc::make_mut(&mut committing)
                .extend(writes.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        ((!self.def.sourced).then_some(writes), committing.clone())
    }

    /// Drops writes that were not committed (the commit failed or partitions were revoked).
    pub(crate) fn discard(&self) {
        self.overlay().clear();
        *self.committing() = Arc::default();
    }

    /// The partition's committed entries with the overlay's uncommitted writes applied.
    pub(crate) fn entries(&self, partition: i32) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .def
            .store
            .scan(&self.def.name, partition)?
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        for ((p, k), v) in self.uncommitted() {
            if p == partition {
                merged.insert(k, v);
            }
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    /// Writes raw key and value bytes (`None` deletes) into the overlay, under one lock.
    pub(crate) fn put_all(
        &self,
        writes: impl IntoIterator<Item = (i32, Vec<u8>, Option<Vec<u8>>)>,
    ) {
        let writes = writes.into_iter();
        let mut overlay = self.overlay();
        // A step's overlay starts empty: room for an operator's writes at once, not by doubling.
        overlay.reserve(writes.size_hint().0);
        for (partition, key, value) in writes {
            overlay.insert((partition, key), value);
        }
    }
}

/// A keyed table with serde keys and values, partitioned like the agent's source topic.
///
/// Reads see the agent's own writes at once; writes become durable (LMDB and the changelog) at
/// the next commit step, together with the offsets of the records that made them.
pub struct Table<K, V> {
    pub(crate) core: Arc<TableCore>,
    /// What the table sees of the instance writing it.
    pub(crate) position: Arc<Position>,
    pub(crate) default: Arc<dyn Fn() -> V + Send + Sync>,
    _key: PhantomData<fn(K)>,
}

/// Another handle on the same table (an agent that joins a stream with its own table keeps one
/// to write with).
impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        Table {
            core: self.core.clone(),
            position: self.position.clone(),
            default: self.default.clone(),
            _key: PhantomData,
        }
    }
}

impl<K, V> Table<K, V>
where
    K: Serialize + DeserializeOwned + KeyBytes,
    V: Serialize + DeserializeOwned + Default + 'static,
{
    pub(crate) fn new(core: Arc<TableCore>, position: Arc<Position>) -> Self {
        let def = Arc::downgrade(&core.def);
        let _ = core.def.key_parser.get_or_init(|| {
            Arc::new(move |text: &str| {
                let key: K = serde_json::from_str(text)
                    .or_else(|_| serde_json::from_value(serde_json::Value::String(text.to_owned())))
                    .map_err(|e| {
                        format!("`{text}` is not a `{}` ({e})", std::any::type_name::<K>())
                    })?;
                let stored = serde_json::to_vec(&key).map_err(|e| e.to_string())?;
                let def = def.upgrade().ok_or("the table is gone")?;
                Ok((def.partition_of_key(&key.key_bytes()), stored))
            })
        });
        Self::wrap(core, position)
    }

    fn wrap(core: Arc<TableCore>, position: Arc<Position>) -> Self {
        Table {
            core,
            position,
            default: Arc::new(V::default),
            _key: PhantomData,
        }
    }
}

impl<K, V> Table<K, V>
where
    K: Serialize + DeserializeOwned + KeyBytes,
    V: Serialize + DeserializeOwned + 'static,
{
    /// Uses `f` for missing keys in `update` (instead of `V::default()`).
    pub fn with_default(mut self, f: impl Fn() -> V + Send + Sync + 'static) -> Self {
        self.default = Arc::new(f);
        self
    }

    pub(crate) fn def(&self) -> &Arc<TableDef> {
        &self.core.def
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.core.def.name
    }

    fn encode_key(&self, key: &K) -> Result<Vec<u8>> {
        serde_json::to_vec(key).map_err(|e| self.error(format!("cannot encode a key: {e}")))
    }

    pub(crate) fn error(&self, message: String) -> Error {
        Error::Agent {
            agent: self.position.agent.to_string(),
            message: format!("table `{}`: {message}", self.name()),
        }
    }

    pub(crate) fn partition_of(&self, key: &K) -> i32 {
        // Borrowed: a string key is hashed where it is, not copied first.
        self.core.def.partition_of_key(&key.key_cow())
    }

    pub(crate) fn decode(&self, key: &[u8], bytes: &[u8]) -> Result<V> {
        serde_json::from_slice(bytes).map_err(|e| {
            self.error(format!(
                "the stored value of key {} does not decode as `{}` ({e}); did the value type change between deployments?",
                String::from_utf8_lossy(key),
                std::any::type_name::<V>()
            ))
        })
    }

    /// Writes must stay in the partition of the record being processed (in a punctuator: in
    /// the partitions the instance owns).
    pub(crate) fn check_write(&self, key: &K, partition: i32) -> Result<()> {
        if self.core.def.sourced && !self.position.feeding.load(Ordering::Relaxed) {
            return Err(self.error(format!(
                "it is built from topic `{}` and changes only through that topic's records; send the change to the topic",
                self.core.def.changelog
            )));
        }
        let current = self.position.current_partition.load(Ordering::Relaxed);
        if current == crate::instance::position::PUNCTUATING
            && !self.position.owned_partitions().contains(&partition)
        {
            return Err(self.error(format!(
                "a punctuator wrote key {}, of partition {partition}, which this instance does not own",
                serde_json::to_string(key).unwrap_or_default()
            )));
        }
        if current >= 0 && current != partition && !self.position.in_batch(partition) {
            return Err(self.error(format!(
                "key {} belongs to partition {partition}, but the record being processed came from partition {current}; \
                 key the source topic by the table key, or re-key the stream with `group_by`",
                serde_json::to_string(key).unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// The value at `slot`: the uncommitted write's, else the store's.
    pub(crate) fn read_slot(&self, slot: &Slot) -> Result<Option<V>> {
        let (partition, key) = slot;
        if let Some(found) = self
            .core
            .with_pending(slot, |entry| entry.map(|b| self.decode(key, b)).transpose())
        {
            return found;
        }
        match self
            .core
            .def
            .store
            .get(&self.core.def.name, *partition, key)?
        {
            Some(bytes) => self.decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn write(&self, partition: i32, key: Vec<u8>, value: Option<&V>) -> Result<()> {
        self.write_slot((partition, key), value)
    }

    /// Writes `value` at `slot` (`None` deletes), over the bytes of the slot's last write since
    /// the step when there is one: the write hashes the key once (`entry`), and a key updated
    /// again within a step allocates nothing for its value (the read before it hashes too).
    /// `V`'s `Serialize` runs under the overlay's lock; it has no business reading the table.
    fn write_slot(&self, slot: Slot, value: Option<&V>) -> Result<()> {
        use std::collections::hash_map::Entry;
        match self.core.overlay().entry(slot) {
            Entry::Occupied(mut written) => self.overwrite(written.get_mut(), value),
            Entry::Vacant(slot) => {
                slot.insert(value.map(|v| self.encode_value(v)).transpose()?);
                Ok(())
            }
        }
    }

    /// [`Table::write_slot`] at a borrowed slot, for a caller that keeps the key: it is copied
    /// only when the step has not written it yet (the lookup and the insert then hash it
    /// twice).
    pub(crate) fn write_at(&self, slot: &Slot, value: Option<&V>) -> Result<()> {
        let mut overlay = self.core.overlay();
        if let Some(written) = overlay.get_mut(slot) {
            return self.overwrite(written, value);
        }
        let encoded = value.map(|v| self.encode_value(v)).transpose()?;
        overlay.insert(slot.clone(), encoded);
        Ok(())
    }

    /// Replaces a step's write of a key by `value` (`None` deletes), in its buffer when both
    /// are values.
    fn overwrite(&self, written: &mut Option<Vec<u8>>, value: Option<&V>) -> Result<()> {
        match (written, value) {
            (Some(bytes), Some(value)) => self.encode_over(bytes, value),
            (written, value) => {
                *written = value.map(|v| self.encode_value(v)).transpose()?;
                Ok(())
            }
        }
    }

    fn encode_value(&self, value: &V) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(|e| self.error(format!("cannot encode a value: {e}")))
    }

    /// Replaces `bytes` by `value`'s encoding, in their buffer (appended, then the old bytes
    /// drained); left as they were when `value` does not encode, or its `Serialize` panics (a
    /// panic is a record failure, after which the agent goes on).
    fn encode_over(&self, bytes: &mut Vec<u8>, value: &V) -> Result<()> {
        /// Cuts the buffer back to `keep` bytes when dropped.
        struct Appending<'a> {
            bytes: &'a mut Vec<u8>,
            keep: usize,
        }
        impl Drop for Appending<'_> {
            fn drop(&mut self) {
                self.bytes.truncate(self.keep);
            }
        }
        let old = bytes.len();
        let mut appending = Appending { bytes, keep: old };
        serde_json::to_writer(&mut *appending.bytes, value)
            .map_err(|e| self.error(format!("cannot encode a value: {e}")))?;
        appending.bytes.drain(..old);
        // The new value, whole: kept.
        appending.keep = appending.bytes.len();
        Ok(())
    }

    /// The value of a key.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.read_slot(&(self.partition_of(key), self.encode_key(key)?))
    }

    /// Sets a key.
    pub fn insert(&self, key: K, value: V) -> Result<()> {
        let partition = self.partition_of(&key);
        self.check_write(&key, partition)?;
        let k = self.encode_key(&key)?;
        self.write(partition, k, Some(&value))
    }

    /// Applies `f` to the key's value (the default when missing), stores and returns the result.
    pub fn update(&self, key: K, f: impl FnOnce(V) -> V) -> Result<V>
    where
        V: Clone,
    {
        let partition = self.partition_of(&key);
        self.check_write(&key, partition)?;
        let slot = (partition, self.encode_key(&key)?);
        let current = self.read_slot(&slot)?.unwrap_or_else(|| (self.default)());
        // `f` runs with no lock held: it may read the table.
        let next = f(current);
        self.write_slot(slot, Some(&next))?;
        Ok(next)
    }

    /// Removes a key, returning its value.
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        let partition = self.partition_of(key);
        self.check_write(key, partition)?;
        let slot = (partition, self.encode_key(key)?);
        let old = self.read_slot(&slot)?;
        if old.is_some() {
            self.write_slot(slot, None)?;
        }
        Ok(old)
    }

    /// The entries of the partitions this agent instance owns, its own writes included, read
    /// lazily a page at a time: partition by partition, keys in the byte order of their JSON
    /// encoding within each. Nothing holds the whole table.
    pub fn entries(&self) -> Entries<K, V> {
        self.scan(Vec::new())
    }

    /// The entries whose key is in `range` (e.g. `table.range(10..20)`), compared as `K`:
    /// every entry of the owned partitions is read to find them. For string keys with a
    /// common start, [`Table::prefix`] reads only those.
    pub fn range(&self, range: impl RangeBounds<K> + Send + 'static) -> Entries<K, V>
    where
        K: Ord,
    {
        self.entries().within(range)
    }

    /// All entries, collected (see [`Table::entries`] to iterate without holding them all).
    pub fn iter(&self) -> Result<Vec<(K, V)>> {
        self.entries().collect()
    }

    /// Number of entries in the partitions this instance owns.
    pub fn len(&self) -> Result<usize> {
        self.entries().try_fold(0, |n, entry| entry.map(|_| n + 1))
    }

    /// True when those partitions hold no entry.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.entries().next().transpose()?.is_none())
    }

    fn scan(&self, prefix: Vec<u8>) -> Entries<K, V> {
        let mut partitions = self.position.owned_partitions();
        partitions.sort_unstable();
        let pending = scan::pending_in_scope(self.core.uncommitted(), &partitions, &prefix);
        let scope = ScanScope {
            store: self.core.def.store.clone(),
            table: self.core.def.name.clone(),
            partitions,
            prefix,
        };
        let agent = self.position.agent.clone();
        let table = self.core.def.name.clone();
        let error: scan::TableError = Arc::new(move |message| Error::Agent {
            agent: agent.to_string(),
            message: format!("table `{table}`: {message}"),
        });
        Entries::new(RawEntries::new(scope, pending), error)
    }
}

impl<V> Table<String, V>
where
    V: Serialize + DeserializeOwned + 'static,
{
    /// The entries whose key starts with `prefix`, read from the store's index (only those
    /// entries are read), in key order within each owned partition.
    pub fn prefix(&self, prefix: &str) -> Entries<String, V> {
        self.scan(scan::string_key_prefix(prefix))
    }
}

/// A table whose values are sets (Faust's `SetTable`): `tables(tags = "url_tags")` with a
/// `tags: SetTable<String, String>` parameter. A `Table<K, BTreeSet<V>>` with set operations;
/// a key whose set becomes empty is removed.
pub type SetTable<K, V> = Table<K, std::collections::BTreeSet<V>>;

impl<K, V> Table<K, std::collections::BTreeSet<V>>
where
    K: Serialize + DeserializeOwned + KeyBytes,
    V: Serialize + DeserializeOwned + Ord + Clone + 'static,
{
    /// Adds `member` to the key's set; true when it was not there.
    pub fn add(&self, key: K, member: V) -> Result<bool> {
        let mut added = false;
        self.update(key, |mut set| {
            added = set.insert(member);
            set
        })?;
        Ok(added)
    }

    /// Removes `member` from the key's set (the key too when the set becomes empty); true
    /// when it was there.
    pub fn discard(&self, key: &K, member: &V) -> Result<bool> {
        let Some(mut set) = self.get(key)? else {
            return Ok(false);
        };
        if !set.remove(member) {
            return Ok(false);
        }
        let partition = self.partition_of(key);
        self.check_write(key, partition)?;
        let k = self.encode_key(key)?;
        let value = (!set.is_empty()).then_some(&set);
        self.write(partition, k, value)?;
        Ok(true)
    }

    /// Whether the key's set holds `member`.
    pub fn contains(&self, key: &K, member: &V) -> Result<bool> {
        Ok(self.get(key)?.is_some_and(|set| set.contains(member)))
    }
}

/// Builds the LMDB writes of a commit step: the overlay's puts, plus meta (source offsets of
/// finished records, changelog offsets of what was just delivered) for every touched partition.
pub(crate) fn commit_writes(
    tables: &[(Arc<TableDef>, Arc<Overlay>)],
    done: &[((Arc<str>, i32), i64)],
    produced: &HashMap<(Arc<str>, i32), i64>,
) -> Vec<(Arc<str>, i32, PartitionWrites)> {
    let mut out = Vec::new();
    for (def, puts) in tables {
        let mut partitions: Vec<i32> = puts
            .keys()
            .map(|(p, _)| *p)
            .collect::<HashSet<i32>>()
            .into_iter()
            .collect();
        partitions.extend(done.iter().map(|((_, p), _)| *p));
        partitions.sort_unstable();
        partitions.dedup();
        for partition in partitions {
            let mut meta = def.meta(partition);
            for ((topic, p), next) in done {
                if *p == partition {
                    meta.source.insert(topic.to_string(), *next);
                }
            }
            if def.sourced {
                if let Some((_, next)) = done
                    .iter()
                    .find(|((t, p), _)| *p == partition && **t == *def.changelog)
                {
                    meta.changelog = *next;
                }
            } else if let Some(next) = produced.get(&(def.changelog.clone(), partition)) {
                meta.changelog = *next;
            }
            def.set_meta(partition, meta.clone());
            let expired = expired_in_step(def, puts, partition);
            let puts = Puts::Step(puts.clone());
            out.push((
                def.name.clone(),
                partition,
                PartitionWrites {
                    puts,
                    meta,
                    expired,
                },
            ));
        }
    }
    out
}

/// The ranges of `partition`'s entries that its clock, written in this step, shows expired.
/// On a changelog that drops them by age they left no tombstone, so the local copy deletes
/// them here, a range at a time after the step's puts, as recovery and standbys do after a
/// replayed clock ([`ExpiredRanges`]). Until the step is in the store, a read of such an
/// entry still finds it; the operators that own them never read it again.
fn expired_in_step(def: &TableDef, puts: &Overlay, partition: i32) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some(expiring) = def.expiring.get().filter(|e| e.by_age) else {
        return Vec::new();
    };
    let clock = expiring.ranges.clock_key();
    match puts.get(&(partition, clock.to_vec())) {
        Some(Some(value)) => expiring.ranges.expired_by(clock, value),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(core: &TableCore, key: &[u8]) -> Option<Option<Vec<u8>>> {
        core.with_pending(&(0, key.to_vec()), |v| v.map(<[u8]>::to_vec))
    }

    #[test]
    fn a_table_built_from_a_topic_changes_only_through_its_records_and_logs_nothing() -> Result<()>
    {
        let store = TableStore::open(&crate::base::config::Config::new("t"), true)?;
        let def = TableDef::new("customers", "customers", true, 1, store);
        let position = Arc::new(Position::new(Arc::from("a"), Default::default()));
        let table: Table<String, u64> = Table::new(TableCore::new(def), position.clone());
        let refused = table
            .insert("k".into(), 1)
            .expect_err("a write by the agent");
        assert!(
            refused.to_string().contains("built from topic `customers`"),
            "{refused}"
        );
        position.feeding.store(true, Ordering::Relaxed);
        table.insert("k".into(), 1)?;
        let (records, writes) = table.core.take_writes();
        assert!(records.is_none(), "its topic is its changelog");
        assert_eq!(writes.len(), 1);
        Ok(())
    }

    #[test]
    fn a_commit_steps_writes_stay_readable_until_the_store_has_them() -> Result<()> {
        let store = TableStore::open(&crate::base::config::Config::new("t"), true)?;
        let def = TableDef::new("t", "t-changelog", false, 1, store.clone());
        let core = TableCore::new(def.clone());
        core.put_all([(0, b"a".to_vec(), Some(b"1".to_vec()))]);
        core.put_all([(0, b"b".to_vec(), Some(b"1".to_vec()))]);
        let (records, puts) = core.take_writes();
        assert_eq!(records.map(|r| r.len()), Some(2));
        assert!(!core.is_dirty());
        // The step is under way: not in the store yet, read from the step's writes.
        assert_eq!(store.get("t", 0, b"a")?, None);
        assert_eq!(pending(&core, b"a"), Some(Some(b"1".to_vec())));
        // Writes after the step started win over the step's.
        core.put_all([(0, b"b".to_vec(), None)]);
        assert_eq!(pending(&core, b"b"), Some(None));
        assert_eq!(core.entries(0)?, vec![(b"a".to_vec(), b"1".to_vec())]);
        // The step ends: the store has its writes, the step's layer is gone.
        store.commit(commit_writes(&[(def, puts)], &[], &HashMap::new()))?;
        core.committed();
        assert_eq!(store.get("t", 0, b"b")?, Some(b"1".to_vec()));
        assert_eq!(pending(&core, b"a"), None);
        assert_eq!(pending(&core, b"b"), Some(None));
        // A failed step drops both layers.
        core.take_writes();
        core.put_all([(0, b"c".to_vec(), Some(b"1".to_vec()))]);
        core.discard();
        assert_eq!((pending(&core, b"b"), pending(&core, b"c")), (None, None));
        Ok(())
    }

    /// A value whose encoding fails when it is `Fails` (serde_json refuses a map key that is
    /// not a string), and panics halfway when it is `Panics` (after `{"Panics":`).
    #[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
    enum Count {
        #[default]
        Empty,
        N(u64),
        Fails(BTreeMap<Vec<u8>, u64>),
        Panics(#[serde(serialize_with = "panics")] u64),
    }

    fn panics<S: serde::Serializer>(_: &u64, _: S) -> std::result::Result<S::Ok, S::Error> {
        panic!("a broken Serialize")
    }

    #[test]
    fn updates_within_a_step_rewrite_the_value_in_place_and_a_failed_encoding_keeps_the_last()
    -> Result<()> {
        let store = TableStore::open(&crate::base::config::Config::new("t"), true)?;
        let def = TableDef::new("t", "t-changelog", false, 1, store);
        let position = Arc::new(Position::new(Arc::from("a"), Default::default()));
        let table: Table<String, Count> = Table::new(TableCore::new(def), position);
        let bump = |c: Count| match c {
            Count::N(n) => Count::N(n * 1000 + 1),
            _ => Count::N(1),
        };
        // Longer and shorter encodings over the same buffer, and over a deleted key.
        for _ in 0..3 {
            table.update("k".into(), bump)?;
        }
        assert_eq!(
            pending(&table.core, b"\"k\""),
            Some(Some(br#"{"N":1001001}"#.to_vec()))
        );
        table.insert("k".into(), Count::N(7))?;
        assert_eq!(
            pending(&table.core, b"\"k\""),
            Some(Some(br#"{"N":7}"#.to_vec()))
        );
        table.remove(&"k".to_owned())?;
        table.update("k".into(), bump)?;
        assert!(matches!(table.get(&"k".to_owned())?, Some(Count::N(1))));
        let failed = table
            .update("k".into(), |_| Count::Fails(BTreeMap::from([(vec![1], 1)])))
            .expect_err("a map with byte-string keys does not encode as JSON");
        assert!(
            failed.to_string().contains("cannot encode a value"),
            "{failed}"
        );
        assert_eq!(
            pending(&table.core, b"\"k\""),
            Some(Some(br#"{"N":1}"#.to_vec()))
        );
        // A panic halfway through the encoding (the agent goes on after it) leaves it too.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            table.update("k".into(), |_| Count::Panics(2))
        }));
        assert!(panicked.is_err());
        assert_eq!(
            pending(&table.core, b"\"k\""),
            Some(Some(br#"{"N":1}"#.to_vec()))
        );
        let (records, _) = table.core.take_writes();
        assert_eq!(records.map(|r| r.len()), Some(1));
        Ok(())
    }

    /// A record `C` → `n` expires the keys `k0` .. below `k{n}`.
    pub(super) struct BelowN;

    impl ExpiredRanges for BelowN {
        fn clock_key(&self) -> &[u8] {
            b"C"
        }

        fn expired_by(&self, key: &[u8], value: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
            if key != b"C" {
                return Vec::new();
            }
            vec![(b"k".to_vec(), [b"k", value].concat())]
        }
    }

    /// One commit step of `writes` to a table whose changelog drops entries by age (or, not
    /// `by_age`, keeps them until a tombstone): its changelog records and the store's keys.
    fn expiring_steps(by_age: bool, steps: &[&[(&str, &str)]]) -> Result<(usize, Vec<Vec<u8>>)> {
        let store = TableStore::open(&crate::base::config::Config::new("t"), true)?;
        let def = TableDef::new("w", "w-changelog", false, 1, store.clone());
        let ranges: Arc<dyn ExpiredRanges> = Arc::new(BelowN);
        let expiring = Expiring {
            retention: 86_400_000,
            by_age,
            ranges,
        };
        assert!(def.expiring.set(expiring).is_ok());
        let core = TableCore::new(def.clone());
        let mut logged = 0;
        for step in steps {
            core.put_all(
                step.iter()
                    .map(|(k, v)| (0, k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()))),
            );
            let (records, puts) = core.take_writes();
            logged = records.map_or(0, |r| r.len());
            store.commit(commit_writes(&[(def.clone(), puts)], &[], &HashMap::new()))?;
            core.committed();
        }
        let keys = store.scan("w", 0)?.into_iter().map(|(k, _)| k).collect();
        Ok((logged, keys))
    }

    #[test]
    fn a_step_that_writes_the_clock_deletes_what_it_shows_expired_from_the_local_copy() -> Result<()>
    {
        let first: &[(&str, &str)] = &[("k1", "a"), ("k2", "b"), ("k5", "c"), ("C", "0")];
        let second: &[(&str, &str)] = &[("k6", "d"), ("C", "3")];
        let (logged, keys) = expiring_steps(true, &[first, second])?;
        assert_eq!(logged, 2, "k6 and the clock, no tombstone");
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        assert_eq!(keys, [&b"C"[..], b"k5", b"k6"]);
        // A step without the clock deletes nothing.
        let (_, keys) = expiring_steps(true, &[second, &[("k1", "a")]])?;
        assert_eq!(keys.len(), 3, "{keys:?}");
        // A changelog that keeps entries until a tombstone: the owner writes the tombstones.
        let (_, keys) = expiring_steps(false, &[first, second])?;
        assert_eq!(keys.len(), 5, "{keys:?}");
        Ok(())
    }
}
