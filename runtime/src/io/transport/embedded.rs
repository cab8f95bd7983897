//! The embedded transport: Kafka's log model (topics, partitions, offsets, group commits) in one
//! LMDB environment under the data dir, so a single machine runs rill for real with nothing
//! installed, and tests run without a broker.
//!
//! Layout: one database per topic-partition keyed by big-endian offset (appended with
//! `PutFlags::APPEND`), a `topics` database of topic metadata, a `partitions` database of each
//! partition's next offset and size, and an `offsets` database of group commits. Produced records
//! and the offsets of the records that produced them are written in one LMDB transaction, so an
//! agent's outputs and its progress become durable together.
//!
//! Consumer groups are coordinated in-process (several workers of one app may share a process);
//! across processes, use Kafka. Another process (the `send` command) may append at any time:
//! fetchers poll for such writes as well as waiting on in-process notifications.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U64};
use heed::{Database, Env, PutFlags, RwTxn, WithoutTls};

use super::{Committer, Deliveries, Delivery, GroupMember, Log, Outgoing, Pending, Router, Tp};
use crate::base::config::{Config, OffsetReset};
use crate::base::error::{Error, Result};
use crate::base::health::Health;
use crate::base::message::{Headers, OutRecord, RawRecord, now_millis};
use crate::base::partitioner::partition_for_key;
use crate::base::spec::TopicSpec;
use futures::future::BoxFuture;

type PartDb = Database<U64<BigEndian>, Bytes>;

/// The partitions one append writes, with their state (foldhash: looked up once per record).
type PartWrites = HashMap<(Arc<str>, i32), (PartDb, PartState), foldhash::fast::RandomState>;

/// Records fetched per partition per round.
const FETCH_PER_PARTITION: usize = 2000;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct TopicMeta {
    partitions: i32,
    /// Changelogs: compacted (the last record per key stays) instead of retention.
    #[serde(default)]
    compacted: bool,
}

/// The embedded log.
pub(crate) struct EmbeddedLog {
    /// Itself, for the fetcher threads and writer tasks it starts.
    me: std::sync::Weak<EmbeddedLog>,
    env: Env<WithoutTls>,
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
    topics_db: Database<Str, Bytes>,
    parts_db: Database<Bytes, Bytes>,
    offsets_db: Database<Bytes, U64<BigEndian>>,
    topics: RwLock<HashMap<String, TopicMeta>>,
    dbs: RwLock<HashMap<(String, i32), PartDb>>,
    default_partitions: i32,
    retention_bytes: Option<u64>,
    retention_ms: Option<i64>,
    compaction_bytes: u64,
    tombstone_retention_ms: i64,
    changes: Mutex<u64>,
    changed: Condvar,
    groups: Mutex<HashMap<String, Group>>,
    spread: AtomicU32,
}

#[derive(Default)]
struct Group {
    generation: u64,
    members: BTreeMap<String, Vec<String>>,
    acked: HashSet<String>,
}

enum Barrier {
    Ready(Vec<Tp>),
    Waiting,
    Stale,
}

impl EmbeddedLog {
    /// Opens (or creates) the log under `<data_dir>/log`, or in a temporary directory.
    pub(crate) fn open(config: &Config, in_memory: bool) -> Result<Arc<Self>> {
        let crate::io::lmdb::Opened { env, path, temp } =
            crate::io::lmdb::open(config, "log", in_memory, config.embedded_map_size, 4096)?;
        let storage = |context: &str| crate::io::lmdb::storage_error(&path, context.to_owned(), "");
        let mut wtxn = env
            .write_txn()
            .map_err(storage("starting a write transaction"))?;
        let topics_db = env
            .create_database(&mut wtxn, Some("topics"))
            .map_err(storage("creating `topics`"))?;
        let parts_db = env
            .create_database(&mut wtxn, Some("partitions"))
            .map_err(storage("creating `partitions`"))?;
        let offsets_db = env
            .create_database(&mut wtxn, Some("offsets"))
            .map_err(storage("creating `offsets`"))?;
        wtxn.commit().map_err(storage("committing"))?;
        let log = Arc::new_cyclic(|me| EmbeddedLog {
            me: me.clone(),
            env,
            path,
            _temp: temp,
            topics_db,
            parts_db,
            offsets_db,
            topics: RwLock::new(HashMap::new()),
            dbs: RwLock::new(HashMap::new()),
            default_partitions: config.partitions,
            retention_bytes: config.retention_bytes,
            retention_ms: config
                .retention
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            compaction_bytes: config.compaction_bytes,
            tombstone_retention_ms: i64::try_from(config.tombstone_retention.as_millis())
                .unwrap_or(i64::MAX),
            changes: Mutex::new(0),
            changed: Condvar::new(),
            groups: Mutex::new(HashMap::new()),
            spread: AtomicU32::new(0),
        });
        log.reload_topics()?;
        Ok(log)
    }

    fn arc(&self) -> Result<Arc<EmbeddedLog>> {
        self.me
            .upgrade()
            .ok_or_else(|| Error::Shutdown("the embedded log is closed".into()))
    }

    /// The error of a failed LMDB call, built only when it fails.
    fn err<'a>(
        &'a self,
        context: impl Into<String> + 'a,
    ) -> impl FnOnce(heed::Error) -> Error + 'a {
        move |source| {
            crate::io::lmdb::storage_error(
                &self.path,
                context.into(),
                "the embedded log is full; raise its map size or lower retention (RILL_RETENTION_BYTES)",
            )(source)
        }
    }

    fn reload_topics(&self) -> Result<()> {
        let rtxn = self.env.read_txn().map_err(self.err("reading topics"))?;
        let mut map = HashMap::new();
        for item in self
            .topics_db
            .iter(&rtxn)
            .map_err(self.err("reading topics"))?
        {
            let (name, meta) = item.map_err(self.err("reading topics"))?;
            if let Ok(meta) = serde_json::from_slice::<TopicMeta>(meta) {
                map.insert(name.to_owned(), meta);
            }
        }
        drop(rtxn);
        *self.topics.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }

    fn meta(&self, topic: &str) -> Option<TopicMeta> {
        if let Some(m) = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
        {
            return Some(*m);
        }
        // Another process may have created it.
        self.reload_topics().ok()?;
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .copied()
    }

    /// Partition count of a topic, if it exists.
    pub(crate) fn partitions(&self, topic: &str) -> Option<i32> {
        self.meta(topic).map(|m| m.partitions)
    }

    /// Creates a topic if missing; returns its partition count.
    #[cfg(test)]
    pub(crate) fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<i32> {
        self.ensure_topic_with(topic, partitions, false)
    }

    /// Creates a topic if missing, optionally compacted instead of retained by size and age;
    /// returns its partitions.
    pub(crate) fn ensure_topic_with(
        &self,
        topic: &str,
        partitions: i32,
        compacted: bool,
    ) -> Result<i32> {
        if let Some(m) = self.meta(topic) {
            return Ok(m.partitions);
        }
        let mut wtxn = self.env.write_txn().map_err(self.err("creating a topic"))?;
        let mut created = HashMap::new();
        let meta = self.create_in(&mut wtxn, topic, partitions, compacted, &mut created)?;
        wtxn.commit()
            .map_err(self.err(format!("creating topic `{topic}`")))?;
        self.publish(created);
        Ok(meta.partitions)
    }

    fn create_in(
        &self,
        wtxn: &mut RwTxn<'_>,
        topic: &str,
        partitions: i32,
        compacted: bool,
        created: &mut HashMap<String, TopicMeta>,
    ) -> Result<TopicMeta> {
        if let Some(m) = created.get(topic) {
            return Ok(*m);
        }
        let stored = self
            .topics_db
            .get(wtxn, topic)
            .map_err(self.err("reading topics"))?;
        if let Some(m) = stored.and_then(|b| serde_json::from_slice::<TopicMeta>(b).ok()) {
            return Ok(m);
        }
        let meta = TopicMeta {
            partitions: partitions.max(1),
            compacted,
        };
        let bytes = serde_json::to_vec(&meta).map_err(Error::user)?;
        self.topics_db
            .put(wtxn, topic, &bytes)
            .map_err(self.err(format!("creating topic `{topic}`")))?;
        created.insert(topic.to_owned(), meta);
        tracing::debug!(
            topic,
            partitions = meta.partitions,
            "created embedded topic"
        );
        Ok(meta)
    }

    fn publish(&self, created: HashMap<String, TopicMeta>) {
        if !created.is_empty() {
            self.topics
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .extend(created);
        }
    }

    fn part_db_rw(
        &self,
        wtxn: &mut RwTxn<'_>,
        topic: &str,
        partition: i32,
        new: &mut Vec<((String, i32), PartDb)>,
    ) -> Result<PartDb> {
        let key = (topic.to_owned(), partition);
        if let Some(db) = self.dbs.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(*db);
        }
        if let Some((_, db)) = new.iter().find(|(k, _)| *k == key) {
            return Ok(*db);
        }
        let db: PartDb = self
            .env
            .create_database(wtxn, Some(&part_name(topic, partition)))
            .map_err(self.err(format!("opening {topic}[{partition}]")))?;
        new.push((key, db));
        Ok(db)
    }

    fn part_db_ro(&self, topic: &str, partition: i32) -> Result<Option<PartDb>> {
        let key = (topic.to_owned(), partition);
        if let Some(db) = self.dbs.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(Some(*db));
        }
        // Open through a write transaction so the handle is valid for all later transactions.
        let wtxn = self
            .env
            .write_txn()
            .map_err(self.err("opening a partition"))?;
        let name = part_name(topic, partition);
        let db: Option<PartDb> = self
            .env
            .open_database(&wtxn, Some(&name))
            .map_err(self.err(format!("opening {name}")))?;
        wtxn.commit().map_err(self.err(format!("opening {name}")))?;
        if let Some(db) = db {
            self.dbs
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, db);
        }
        Ok(db)
    }

    /// Appends records and stores `offsets` for a group, in one LMDB transaction.
    pub(crate) fn append(
        &self,
        records: &[OutRecord],
        offsets: Option<(String, Vec<(Tp, i64)>)>,
    ) -> Result<HashMap<Tp, i64>> {
        if records.is_empty() && offsets.as_ref().is_none_or(|(_, o)| o.is_empty()) {
            return Ok(HashMap::new());
        }
        let mut wtxn = self
            .env
            .write_txn()
            .map_err(self.err("starting an append"))?;
        let mut created = HashMap::new();
        let mut new_dbs = Vec::new();
        let written = self.append_records(&mut wtxn, records, &mut created, &mut new_dbs)?;
        let produced = self.settle_partitions(&mut wtxn, written, &created)?;
        if let Some((group, offsets)) = offsets {
            for ((topic, partition), offset) in offsets {
                let key = offset_key(&group, &topic, partition);
                self.offsets_db
                    .put(&mut wtxn, &key, &(offset.max(0) as u64))
                    .map_err(self.err("committing offsets"))?;
            }
        }
        wtxn.commit().map_err(self.err("committing an append"))?;
        self.publish(created);
        if !new_dbs.is_empty() {
            self.dbs
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .extend(new_dbs);
        }
        self.notify();
        Ok(produced)
    }

    /// Puts `records` at the end of their partitions (creating missing topics into `created`,
    /// partition databases into `new_dbs`); returns the partitions written, with their state.
    fn append_records<'r>(
        &self,
        wtxn: &mut RwTxn<'_>,
        records: &'r [OutRecord],
        created: &mut HashMap<String, TopicMeta>,
        new_dbs: &mut Vec<((String, i32), PartDb)>,
    ) -> Result<PartWrites> {
        // Per record: the topic's metadata is the previous record's as a rule (one topic per
        // sink), looked up again only when the topic changes; the partition's state takes one
        // foldhash lookup.
        let mut states = PartWrites::default();
        let mut last_meta: Option<(&'r Arc<str>, TopicMeta)> = None;
        let mut buf = Vec::with_capacity(256);
        let appended_at = now_millis();
        for record in records {
            let meta = match last_meta {
                Some((topic, meta)) if Arc::ptr_eq(topic, &record.topic) => meta,
                _ => {
                    let meta = match self.meta(&record.topic) {
                        Some(m) => m,
                        None => self.create_in(
                            wtxn,
                            &record.topic,
                            self.default_partitions,
                            false,
                            created,
                        )?,
                    };
                    last_meta = Some((&record.topic, meta));
                    meta
                }
            };
            let partition = self.target_partition(record, meta)?;
            let (db, state) = match states.entry((record.topic.clone(), partition)) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let db = self.part_db_rw(wtxn, &record.topic, partition, new_dbs)?;
                    let state = self.part_state(wtxn, &record.topic, partition)?;
                    e.insert((db, state))
                }
            };
            buf.clear();
            encode_record(record, appended_at, &mut buf);
            db.put_with_flags(wtxn, PutFlags::APPEND, &state.next, &buf)
                .map_err(|e| self.err(format!("appending to {}[{partition}]", record.topic))(e))?;
            state.next += 1;
            state.bytes += buf.len() as u64;
        }
        Ok(states)
    }

    /// The partition `record` goes to: its own, else its key's, else the next in turn.
    fn target_partition(&self, record: &OutRecord, meta: TopicMeta) -> Result<i32> {
        Ok(match record.partition {
            Some(p) if (0..meta.partitions).contains(&p) => p,
            Some(p) => {
                return Err(Error::UnknownTopic(format!(
                    "{}[{p}] (the topic has {} partitions)",
                    record.topic, meta.partitions
                )));
            }
            None => match &record.key {
                Some(k) => partition_for_key(k, meta.partitions),
                None => {
                    (self.spread.fetch_add(1, Ordering::Relaxed) % meta.partitions as u32) as i32
                }
            },
        })
    }

    /// After an append, per partition written: retention or compaction, then its state
    /// stored. Returns the next offset of each.
    fn settle_partitions(
        &self,
        wtxn: &mut RwTxn<'_>,
        written: PartWrites,
        created: &HashMap<String, TopicMeta>,
    ) -> Result<HashMap<Tp, i64>> {
        let mut produced = HashMap::with_capacity(written.len());
        for ((topic, partition), (db, mut state)) in written {
            let compacted = created
                .get(&*topic)
                .copied()
                .or_else(|| self.meta(&topic))
                .is_some_and(|m| m.compacted);
            if !compacted {
                self.apply_retention(wtxn, db, &mut state, &topic, partition)?;
            } else if state.bytes > self.compaction_bytes
                && state.bytes > state.compacted_bytes.saturating_mul(2)
            {
                self.compact(wtxn, db, &mut state, &topic, partition)?;
            }
            self.parts_db
                .put(
                    wtxn,
                    part_name(&topic, partition).as_bytes(),
                    &state.to_bytes(),
                )
                .map_err(self.err("storing partition state"))?;
            produced.insert((topic, partition), state.next as i64);
        }
        Ok(produced)
    }

    /// Kafka's log compaction, for one partition at once: every record whose key has a later
    /// record is removed, and so are tombstones older than the tombstone retention. Offsets
    /// keep their numbers (reads skip the gaps); the last record of the partition always stays.
    fn compact(
        &self,
        wtxn: &mut RwTxn<'_>,
        db: PartDb,
        state: &mut PartState,
        topic: &str,
        partition: i32,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let tombstones_before = now_millis().saturating_sub(self.tombstone_retention_ms);
        let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
        for item in db.iter(wtxn).map_err(self.err("compaction scan"))? {
            let (offset, bytes) = item.map_err(self.err("compaction scan"))?;
            if let (Some(key), _) = decode_key_and_tombstone(bytes) {
                latest.insert(key, offset);
            }
        }
        let last = state.next.saturating_sub(1);
        let mut kept = 0u64;
        let mut doomed = Vec::new();
        for item in db.iter(wtxn).map_err(self.err("compaction scan"))? {
            let (offset, bytes) = item.map_err(self.err("compaction scan"))?;
            let (key, tombstone) = decode_key_and_tombstone(bytes);
            let superseded = key
                .as_ref()
                .is_some_and(|k| latest.get(k).is_some_and(|l| *l != offset));
            let expired_tombstone = tombstone && decode_appended_at(bytes) < tombstones_before;
            if offset != last && (superseded || expired_tombstone) {
                doomed.push(offset);
            } else {
                kept += bytes.len() as u64;
            }
        }
        let removed = doomed.len();
        for offset in doomed {
            db.delete(wtxn, &offset)
                .map_err(self.err(format!("compacting {topic}[{partition}]")))?;
        }
        tracing::debug!(
            topic,
            partition,
            removed,
            before = state.bytes,
            after = kept,
            elapsed = ?started.elapsed(),
            "compacted"
        );
        state.bytes = kept;
        state.compacted_bytes = kept;
        Ok(())
    }

    #[cfg(test)]
    fn compact_partition(&self, topic: &str, partition: i32) -> Result<()> {
        let mut wtxn = self.env.write_txn().map_err(self.err("compacting"))?;
        let mut new_dbs = Vec::new();
        let db = self.part_db_rw(&mut wtxn, topic, partition, &mut new_dbs)?;
        let mut state = self.part_state(&wtxn, topic, partition)?;
        self.compact(&mut wtxn, db, &mut state, topic, partition)?;
        wtxn.commit().map_err(self.err("compacting"))
    }

    fn apply_retention(
        &self,
        wtxn: &mut RwTxn<'_>,
        db: PartDb,
        state: &mut PartState,
        topic: &str,
        partition: i32,
    ) -> Result<()> {
        let over_bytes = self
            .retention_bytes
            .is_some_and(|limit| state.bytes > limit);
        let cutoff = self.retention_ms.map(|ms| now_millis().saturating_sub(ms));
        let Some((first, first_val)) = db.first(wtxn).map_err(self.err("reading retention"))?
        else {
            return Ok(());
        };
        if !over_bytes && cutoff.is_none_or(|c| decode_appended_at(first_val) >= c) {
            return Ok(());
        }
        let mut bytes = state.bytes;
        let mut last_deleted = None;
        for item in db
            .range(wtxn, &(first..state.next.saturating_sub(1)))
            .map_err(self.err("retention scan"))?
        {
            let (offset, value) = item.map_err(self.err("retention scan"))?;
            let too_big = self.retention_bytes.is_some_and(|limit| bytes > limit);
            let too_old = cutoff.is_some_and(|c| decode_appended_at(value) < c);
            if !too_big && !too_old {
                break;
            }
            bytes -= value.len() as u64;
            last_deleted = Some(offset);
        }
        if let Some(last) = last_deleted {
            let removed = db
                .delete_range(wtxn, &(first..=last))
                .map_err(self.err(format!("applying retention to {topic}[{partition}]")))?;
            tracing::debug!(
                topic,
                partition,
                removed,
                "retention removed the oldest records"
            );
            state.bytes = bytes;
        }
        Ok(())
    }

    fn part_state(
        &self,
        txn: &heed::RoTxn<'_, WithoutTls>,
        topic: &str,
        partition: i32,
    ) -> Result<PartState> {
        Ok(self
            .parts_db
            .get(txn, part_name(topic, partition).as_bytes())
            .map_err(self.err("reading partition state"))?
            .map(PartState::from_bytes)
            .unwrap_or_default())
    }

    /// Reads up to `max` records of a partition from `from`.
    pub(crate) fn read(
        &self,
        topic: &Arc<str>,
        partition: i32,
        from: i64,
        max: usize,
    ) -> Result<Vec<RawRecord>> {
        let Some(db) = self.part_db_ro(topic, partition)? else {
            return Ok(Vec::new());
        };
        let rtxn = self.env.read_txn().map_err(self.err("starting a read"))?;
        // The records are copied into one buffer and handed out as slices of it: one
        // allocation per read, not two per record freed on the agent's thread.
        let mut buffer = Vec::new();
        let mut spans = Vec::new();
        for item in db
            .range(&rtxn, &(from.max(0) as u64..))
            .map_err(self.err("reading"))?
            .take(max)
        {
            let (offset, bytes) = item.map_err(self.err("reading"))?;
            let start = buffer.len();
            buffer.extend_from_slice(bytes);
            spans.push((offset as i64, start..buffer.len()));
        }
        drop(rtxn);
        let buffer = bytes::Bytes::from(buffer);
        Ok(spans
            .into_iter()
            .map(|(offset, span)| decode_record(topic, partition, offset, &buffer.slice(span)))
            .collect())
    }

    /// First available offset and next offset of a partition.
    pub(crate) fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        // The partition's database must be opened before the snapshot that reads it: a handle
        // looked up first and found missing, then a snapshot taken after an append, would report
        // the log start past the first record.
        let db = self.part_db_ro(topic, partition)?;
        let rtxn = self.env.read_txn().map_err(self.err("starting a read"))?;
        let state = self.part_state(&rtxn, topic, partition)?;
        let low = match db {
            Some(db) => db
                .first(&rtxn)
                .map_err(self.err("reading"))?
                .map_or(state.next, |(o, _)| o),
            // Created after we looked: its records are all still there (retention has not run
            // on them yet), so the log starts at 0; the next call opens it.
            None => 0,
        };
        Ok((low as i64, state.next as i64))
    }

    /// The offset of a partition's first record with a timestamp at or after `ms`, or its end.
    /// A scan: the log keeps no time index (the `reset` command only).
    pub(crate) fn offset_for_time(&self, topic: &str, partition: i32, ms: i64) -> Result<i64> {
        let (low, end) = self.watermarks(topic, partition)?;
        let topic: Arc<str> = Arc::from(topic);
        let mut from = low;
        while from < end {
            let records = self.read(&topic, partition, from, 1000)?;
            let Some(last) = records.last() else { break };
            if let Some(hit) = records
                .iter()
                .find(|r| r.timestamp.is_some_and(|t| t >= ms))
            {
                return Ok(hit.offset);
            }
            from = last.offset + 1;
        }
        Ok(end)
    }

    /// The committed offset of a group on a partition.
    pub(crate) fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<i64>> {
        let rtxn = self.env.read_txn().map_err(self.err("starting a read"))?;
        Ok(self
            .offsets_db
            .get(&rtxn, &offset_key(group, topic, partition))
            .map_err(self.err("reading offsets"))?
            .map(|o| o as i64))
    }

    fn notify(&self) {
        let mut n = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        self.changed.notify_all();
    }

    fn change_count(&self) -> u64 {
        *self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until something changed after `seen`, or the timeout.
    fn wait_change(&self, seen: u64, timeout: Duration) {
        let guard = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if *guard == seen {
            let _ = self.changed.wait_timeout(guard, timeout);
        }
    }

    fn with_group<T>(&self, group: &str, f: impl FnOnce(&mut Group) -> T) -> T {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        f(groups.entry(group.to_owned()).or_default())
    }

    fn join(&self, group: &str, member: &str, topics: &[String]) {
        self.with_group(group, |g| {
            g.members.insert(member.to_owned(), topics.to_vec());
            g.generation += 1;
            g.acked.clear();
        });
        self.notify();
    }

    fn leave(&self, group: &str, member: &str) {
        self.with_group(group, |g| {
            g.members.remove(member);
            g.generation += 1;
            g.acked.clear();
        });
        self.notify();
    }

    fn generation(&self, group: &str) -> u64 {
        self.with_group(group, |g| g.generation)
    }

    /// Acknowledges `generation` (the member has given up its partitions) and, once every member
    /// has, returns this member's share: Kafka's range assignment, topic by topic, so equal
    /// partition numbers of co-partitioned topics go to the same member.
    fn assignment(&self, group: &str, member: &str, generation: u64) -> Barrier {
        let (members, mine) = {
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            let g = groups.entry(group.to_owned()).or_default();
            if g.generation != generation {
                return Barrier::Stale;
            }
            g.acked.insert(member.to_owned());
            if !g.members.keys().all(|m| g.acked.contains(m)) {
                drop(groups);
                self.notify();
                return Barrier::Waiting;
            }
            (
                g.members.clone(),
                g.members.get(member).cloned().unwrap_or_default(),
            )
        };
        let mut out = Vec::new();
        for topic in mine {
            let Some(n) = self.partitions(&topic) else {
                continue;
            };
            let subscribers: Vec<&String> = members
                .iter()
                .filter(|(_, ts)| ts.contains(&topic))
                .map(|(m, _)| m)
                .collect();
            let Some(index) = subscribers.iter().position(|m| *m == member) else {
                continue;
            };
            let count = subscribers.len() as i32;
            let (per, extra) = (n / count, n % count);
            let index = index as i32;
            let start = per * index + index.min(extra);
            let len = per + i32::from(index < extra);
            let topic: Arc<str> = Arc::from(topic.as_str());
            out.extend((start..start + len).map(|p| (topic.clone(), p)));
        }
        Barrier::Ready(out)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct PartState {
    next: u64,
    bytes: u64,
    /// Size right after the last compaction (compacted topics).
    compacted_bytes: u64,
}

impl PartState {
    fn to_bytes(self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.next.to_be_bytes());
        out[8..16].copy_from_slice(&self.bytes.to_be_bytes());
        out[16..].copy_from_slice(&self.compacted_bytes.to_be_bytes());
        out
    }

    fn from_bytes(b: &[u8]) -> Self {
        let word = |r: std::ops::Range<usize>| {
            b.get(r)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map_or(0, u64::from_be_bytes)
        };
        PartState {
            next: word(0..8),
            bytes: word(8..16),
            compacted_bytes: word(16..24),
        }
    }
}

fn part_name(topic: &str, partition: i32) -> String {
    format!("p/{topic}/{partition}")
}

fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(group.len() + topic.len() + 6);
    k.extend_from_slice(group.as_bytes());
    k.push(0);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

const NONE_LEN: u32 = u32::MAX;

fn put_opt(buf: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(b) => {
            buf.extend_from_slice(&(b.len() as u32).to_be_bytes());
            buf.extend_from_slice(b);
        }
        None => buf.extend_from_slice(&NONE_LEN.to_be_bytes()),
    }
}

/// `[append time i64][timestamp i64][key][headers][value]`, each optional part
/// length-prefixed (`u32::MAX` = none). Retention by age uses the append time, so records with
/// old event times (replays, backfills) are not deleted as soon as they are written.
fn encode_record(r: &OutRecord, appended_at: i64, buf: &mut Vec<u8>) {
    buf.extend_from_slice(&appended_at.to_be_bytes());
    buf.extend_from_slice(&r.timestamp.to_be_bytes());
    put_opt(buf, r.key.as_deref());
    buf.extend_from_slice(&(r.headers.0.len() as u16).to_be_bytes());
    for (name, value) in &r.headers.0 {
        put_opt(buf, Some(name.as_bytes()));
        put_opt(buf, value.as_deref());
    }
    put_opt(buf, r.value.as_deref());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
    fn u32(&mut self) -> u32 {
        <[u8; 4]>::try_from(self.take(4)).map_or(0, u32::from_be_bytes)
    }
    fn opt(&mut self) -> Option<&'a [u8]> {
        match self.u32() {
            NONE_LEN => None,
            n => Some(self.take(n as usize)),
        }
    }
}

fn decode_i64(bytes: &[u8], at: usize) -> i64 {
    bytes
        .get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, i64::from_be_bytes)
}

/// A stored record's key, and whether it is a tombstone (no value).
fn decode_key_and_tombstone(bytes: &[u8]) -> (Option<Vec<u8>>, bool) {
    let mut r = Reader(bytes.get(16..).unwrap_or_default());
    let key = r.opt().map(<[u8]>::to_vec);
    let n = <[u8; 2]>::try_from(r.take(2)).map_or(0, u16::from_be_bytes);
    for _ in 0..n {
        r.opt();
        r.opt();
    }
    (key, r.opt().is_none())
}

/// When the record was appended.
fn decode_appended_at(bytes: &[u8]) -> i64 {
    decode_i64(bytes, 0)
}

/// A stored record; its key and value are slices of `bytes`.
fn decode_record(topic: &Arc<str>, partition: i32, offset: i64, bytes: &bytes::Bytes) -> RawRecord {
    let timestamp = decode_i64(bytes, 8);
    let mut r = Reader(bytes.get(16..).unwrap_or_default());
    let key = r.opt().map(|k| bytes.slice_ref(k));
    let n = <[u8; 2]>::try_from(r.take(2)).map_or(0, u16::from_be_bytes);
    let mut headers = Headers::default();
    for _ in 0..n {
        let name = String::from_utf8_lossy(r.opt().unwrap_or_default()).into_owned();
        headers.0.push((name, r.opt().map(<[u8]>::to_vec)));
    }
    let value = r.opt().map(|v| bytes.slice_ref(v));
    RawRecord {
        topic: topic.clone(),
        partition,
        offset,
        key,
        value,
        timestamp: Some(timestamp),
        headers,
    }
}

impl Log for EmbeddedLog {
    fn system(&self) -> &'static str {
        "rill"
    }

    fn health(&self) -> Arc<Health> {
        Arc::new(Health::default())
    }

    fn ensure_topics<'a>(
        &'a self,
        specs: &'a [TopicSpec],
        default_partitions: i32,
    ) -> BoxFuture<'a, Result<HashMap<String, i32>>> {
        Box::pin(async move {
            let mut out = HashMap::new();
            for spec in specs {
                let n = self.ensure_topic_with(
                    &spec.name,
                    spec.partitions.unwrap_or(default_partitions),
                    spec.compacted,
                )?;
                // No topic configs to check here beyond compaction, which the log keeps as
                // created.
                spec.check_existing(n, None)?;
                out.insert(spec.name.clone(), n);
            }
            Ok(out)
        })
    }

    fn partition_count(&self, topic: &str) -> Result<Option<i32>> {
        Ok(self.partitions(topic))
    }

    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        EmbeddedLog::watermarks(self, topic, partition)
    }

    fn read_range(
        &self,
        topic: &Arc<str>,
        partition: i32,
        from: i64,
        until: i64,
        f: &mut dyn FnMut(Vec<RawRecord>) -> Result<()>,
    ) -> Result<()> {
        let mut next = from;
        while next < until {
            let batch = self.read(topic, partition, next, super::READ_BATCH)?;
            let Some(last) = batch.last() else { break };
            next = last.offset + 1;
            f(batch)?;
        }
        Ok(())
    }

    fn committed(&self, group: &str, topic: &str, partition: i32) -> Result<Option<i64>> {
        EmbeddedLog::committed(self, group, topic, partition)
    }

    fn offset_for_time(&self, topic: &str, partition: i32, ms: i64) -> Result<i64> {
        EmbeddedLog::offset_for_time(self, topic, partition, ms)
    }

    fn reset_offsets(&self, group: &str, offsets: &[(Tp, i64)]) -> Result<()> {
        self.append(&[], Some((group.to_owned(), offsets.to_vec())))
            .map(|_| ())
    }

    fn start_fetcher(
        &self,
        group: &str,
        topics: Vec<String>,
        reset: OffsetReset,
        router: Arc<Router>,
        stop: Arc<AtomicBool>,
    ) -> Result<(Arc<dyn Committer>, std::thread::JoinHandle<()>)> {
        let thread = spawn_fetcher(self.arc()?, group, topics, reset, router, stop)?;
        Ok((Arc::new(super::StoredWithSends), thread))
    }

    fn lags(&self, group: &str, router: &Router) -> Vec<(Tp, i64)> {
        router
            .current_assignment()
            .into_iter()
            .filter_map(|(t, p)| {
                let (low, end) = EmbeddedLog::watermarks(self, &t, p).ok()?;
                // Offsets retention removed are not lag.
                let next = EmbeddedLog::committed(self, group, &t, p)
                    .ok()?
                    .unwrap_or(0)
                    .max(low);
                Some(((t, p), (end - next).max(0)))
            })
            .collect()
    }

    fn group_members(&self, _group: &str) -> Result<Vec<GroupMember>> {
        Ok(Vec::new())
    }

    fn buffers(&self) -> bool {
        true
    }

    fn enqueue<'a>(
        &'a self,
        record: OutRecord,
        _batch: &'a Arc<Deliveries>,
    ) -> BoxFuture<'a, Result<Pending>> {
        Box::pin(std::future::ready(Ok(Pending::Buffered(record))))
    }

    fn try_enqueue(&self, _record: &Outgoing<'_>, _batch: &Arc<Deliveries>) -> Result<bool> {
        Ok(false)
    }

    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> BoxFuture<'a, Result<HashMap<Tp, i64>>> {
        let Delivery {
            pending,
            group,
            offsets,
            ..
        } = delivery;
        Box::pin(async move {
            let records = pending
                .into_iter()
                .filter_map(|p| match p {
                    Pending::Buffered(r) => Some(r),
                    Pending::Enqueued(..) => None,
                })
                .collect::<Vec<_>>();
            let offsets = (!offsets.is_empty()).then(|| (group.to_owned(), offsets.to_vec()));
            let log = self.arc()?;
            let (appended, records) = tokio::task::spawn_blocking(move || {
                let appended = log.append(&records, offsets);
                (appended, records)
            })
            .await
            .map_err(|e| Error::Shutdown(format!("embedded log writer: {e}")))?;
            // Freed here, on the thread that allocated them (most likely): freeing them on the
            // writer thread contended for the allocator's arena lock with the agent's
            // allocations.
            drop(records);
            appended
        })
    }

    fn flush(&self, _timeout: Duration) -> Result<()> {
        Ok(())
    }

    fn transactions(&self) -> Option<(u64, u64)> {
        None
    }
}

static MEMBER_SEQ: AtomicU32 = AtomicU32::new(0);

/// Starts the fetcher thread of one agent's group on the embedded log.
pub(crate) fn spawn_fetcher(
    log: Arc<EmbeddedLog>,
    group: &str,
    topics: Vec<String>,
    reset: OffsetReset,
    router: Arc<Router>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let member = format!(
        "{}-{}",
        std::process::id(),
        MEMBER_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let group = group.to_owned();
    log.join(&group, &member, &topics);
    std::thread::Builder::new()
        .name(format!("rill-fetch-{}", router.agent))
        .spawn(move || {
            Fetcher {
                log: &log,
                group: &group,
                member: &member,
                reset,
                router: &router,
                stop: &stop,
                topics: topics.len(),
            }
            .run();
            log.leave(&group, &member);
        })
        .map_err(|e| Error::io("spawning a fetcher thread", e))
}

/// What a fetcher keeps between reads of its assignment.
struct FetchState {
    /// The assignment generation `positions` are for.
    generation: u64,
    positions: Vec<(Tp, i64)>,
    /// Partitions read to their end (reported once each time they get there).
    at_end: HashSet<Tp>,
    /// The router's bootstrap topics are not all read to their end since the assignment: the
    /// other topics wait.
    holding: bool,
    /// Partitions read too far ahead of the agent's other topics wait (`align.rs`).
    aligner: super::align::Aligner,
}

struct Fetcher<'a> {
    log: &'a EmbeddedLog,
    group: &'a str,
    member: &'a str,
    reset: OffsetReset,
    router: &'a Router,
    stop: &'a AtomicBool,
    /// How many topics the group reads (several: their reads are kept in step).
    topics: usize,
}

impl Fetcher<'_> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire) || self.router.all_closed()
    }

    fn run(&self) {
        let mut st = FetchState {
            generation: 0,
            positions: Vec::new(),
            at_end: HashSet::new(),
            holding: false,
            aligner: super::align::Aligner::new(
                self.router.read_ahead,
                self.topics,
                &self.router.read_mode,
            ),
        };
        while !self.stopped() {
            let current = self.log.generation(self.group);
            if current != st.generation {
                if !self.reassign(&mut st, current) {
                    return;
                }
                continue;
            }
            let seen = self.log.change_count();
            let Some(mut fetched) = self.read_assigned(&mut st) else {
                return;
            };
            if st.holding && self.bootstrap_read(&st) {
                st.holding = false;
                // The other topics start now: alignment waits for their first records.
                let tps: Vec<Tp> = st.positions.iter().map(|(tp, _)| tp.clone()).collect();
                st.aligner.reset(&tps);
                continue;
            }
            if !st.holding {
                st.aligner.hold(&st.at_end);
                if !st.aligner.release(&st.at_end).is_empty() {
                    fetched = true;
                }
            }
            if !fetched {
                // Also wakes up periodically to see appends made by other processes.
                self.log.wait_change(seen, Duration::from_millis(50));
            }
        }
    }

    /// The group's assignment changed to generation `current`: revokes the last one, waits for
    /// this member's partitions and where they start. False when the agent must stop.
    fn reassign(&self, st: &mut FetchState, current: u64) -> bool {
        if !st.positions.is_empty() {
            self.router.revoke(st.positions.len());
            st.positions.clear();
        }
        st.at_end.clear();
        st.holding = !self.router.bootstrap.is_empty();
        st.generation = current;
        let Some(tps) = self.await_assignment(current) else {
            return true;
        };
        match self.starting_positions(&tps) {
            Ok(p) => {
                st.positions = p;
                st.aligner.reset(&tps);
                if let Err(e) = self.router.assigned(tps) {
                    tracing::error!(error = %e, group = self.group, "assignment failed; stopping the agent");
                    return false;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, group = self.group, "reading committed offsets");
                st.generation = 0;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        true
    }

    /// Reads once from every assigned partition that may be read (not held back by the
    /// bootstrap or in step) and routes what it read. `Some(true)` when it read records,
    /// `None` when every instance is gone.
    fn read_assigned(&self, st: &mut FetchState) -> Option<bool> {
        let mut fetched = false;
        for ((topic, partition), position) in &mut st.positions {
            if st.holding && !self.router.is_bootstrap(topic) {
                continue;
            }
            let tp = (topic.clone(), *partition);
            if st.aligner.is_held(&tp) {
                continue;
            }
            match self
                .log
                .read(topic, *partition, *position, FETCH_PER_PARTITION)
            {
                Ok(records) if !records.is_empty() => {
                    fetched = true;
                    if !self.route_read(records, tp, position, &mut st.at_end, &mut st.aligner) {
                        return None;
                    }
                }
                Ok(_) => {
                    if st.at_end.insert(tp.clone())
                        && !self.router.route(Vec::new(), vec![tp], false)
                    {
                        return None;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, topic = %topic, partition, "embedded fetch failed; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Some(fetched)
    }

    /// Routes `records` read from `tp` (not empty), moving its `position` past them; a read
    /// of fewer than asked for reached the partition's end. False when every instance is gone.
    fn route_read(
        &self,
        records: Vec<RawRecord>,
        tp: Tp,
        position: &mut i64,
        at_end: &mut HashSet<Tp>,
        aligner: &mut super::align::Aligner,
    ) -> bool {
        if let Some(last) = records.last() {
            *position = last.offset + 1;
            if aligner.enabled() {
                let newest = records.iter().filter_map(|r| r.timestamp).max();
                aligner.handed(&tp, newest, last.offset);
            }
        }
        let mut caught_up = Vec::new();
        let more = records.len() >= FETCH_PER_PARTITION;
        if more {
            at_end.remove(&tp);
        } else {
            at_end.insert(tp.clone());
            caught_up.push(tp);
        }
        self.router.route(records, caught_up, more)
    }

    /// Every bootstrap partition of the assignment has been read to its end.
    fn bootstrap_read(&self, st: &FetchState) -> bool {
        st.positions
            .iter()
            .filter(|(tp, _)| self.router.is_bootstrap(&tp.0))
            .all(|(tp, _)| st.at_end.contains(tp))
    }

    fn await_assignment(&self, generation: u64) -> Option<Vec<Tp>> {
        while !self.stopped() {
            let seen = self.log.change_count();
            match self.log.assignment(self.group, self.member, generation) {
                Barrier::Ready(tps) => return Some(tps),
                Barrier::Stale => return None,
                Barrier::Waiting => self.log.wait_change(seen, Duration::from_millis(50)),
            }
        }
        None
    }

    fn starting_positions(&self, tps: &[Tp]) -> Result<Vec<(Tp, i64)>> {
        let mut out = Vec::with_capacity(tps.len());
        for (topic, partition) in tps {
            let (low, end) = self.log.watermarks(topic, *partition)?;
            // As Kafka's `auto.offset.reset`: where there is no offset to resume at.
            let reset = match self.reset {
                OffsetReset::Earliest => low,
                OffsetReset::Latest => end,
            };
            let position = match self.log.committed(self.group, topic, *partition)? {
                Some(c) if c >= low => c,
                Some(c) => {
                    tracing::warn!(
                        topic = %topic, partition, committed = c, log_start = low, resume = reset,
                        "committed offset was removed by retention; resuming where offset_reset says"
                    );
                    reset
                }
                None => reset,
            };
            out.push(((topic.clone(), *partition), position));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(topic: &str, key: Option<&str>, value: &str) -> OutRecord {
        OutRecord {
            topic: Arc::from(topic),
            partition: None,
            key: key.map(|k| k.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            timestamp: now_millis(),
            headers: Headers(vec![("h".into(), Some(b"v".to_vec()))]),
        }
    }

    #[test]
    fn records_round_trip_with_metadata_and_offsets_are_dense() {
        let config = Config::new("t");
        let log = EmbeddedLog::open(&config, true).unwrap();
        log.ensure_topic("a", 4).unwrap();
        let recs: Vec<_> = (0..10)
            .map(|i| out("a", Some("k"), &format!("v{i}")))
            .collect();
        log.append(&recs, None).unwrap();
        let p = partition_for_key(b"k", 4);
        let got = log.read(&Arc::from("a"), p, 0, 100).unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(got[3].value.as_deref(), Some(&b"v3"[..]));
        assert_eq!(got[3].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(got[3].headers.get("h"), Some(&b"v"[..]));
        assert_eq!(log.watermarks("a", p).unwrap(), (0, 10));
    }

    #[test]
    fn offsets_commit_with_the_append() {
        let log = EmbeddedLog::open(&Config::new("t"), true).unwrap();
        log.ensure_topic("a", 1).unwrap();
        log.append(
            &[out("b", None, "x")],
            Some(("g".into(), vec![((Arc::from("a"), 0), 42)])),
        )
        .unwrap();
        assert_eq!(log.committed("g", "a", 0).unwrap(), Some(42));
        assert_eq!(log.committed("other", "a", 0).unwrap(), None);
        // `b` was auto-created with the default partition count.
        assert_eq!(log.partitions("b"), Some(8));
    }

    #[test]
    fn byte_retention_removes_the_oldest_offsets() {
        let mut config = Config::new("t");
        config.retention_bytes = Some(2000);
        let log = EmbeddedLog::open(&config, true).unwrap();
        log.ensure_topic("a", 1).unwrap();
        for _ in 0..10 {
            let recs: Vec<_> = (0..20).map(|_| out("a", None, &"x".repeat(50))).collect();
            log.append(&recs, None).unwrap();
        }
        let (low, high) = log.watermarks("a", 0).unwrap();
        assert_eq!(high, 200);
        assert!(
            low > 150,
            "oldest offsets should be gone, log start is {low}"
        );
        let first = log.read(&Arc::from("a"), 0, 0, 1).unwrap();
        assert_eq!(first[0].offset, low);
    }

    #[test]
    fn compacted_topics_keep_the_last_record_per_key_and_drop_old_tombstones() {
        let mut config = Config::new("t");
        config.compaction_bytes = 4096;
        config.tombstone_retention = Duration::ZERO;
        config.retention_bytes = Some(1);
        let log = EmbeddedLog::open(&config, true).unwrap();
        log.ensure_topic_with("c", 1, true).unwrap();
        let keyed = |key: &str, value: Option<&str>| {
            let mut r = out("c", Some(key), "");
            r.value = value.map(|v| v.as_bytes().to_vec());
            r.partition = Some(0);
            r
        };
        // 3 keys written 100 times each, then key `z` deleted: a tombstone.
        for round in 0..100 {
            let value = format!("{round:0>40}");
            let batch: Vec<_> = ["x", "y", "z"]
                .iter()
                .map(|k| keyed(k, Some(value.as_str())))
                .collect();
            log.append(&batch, None).unwrap();
        }
        log.append(&[keyed("z", None)], None).unwrap();
        // Compaction runs on appends once the partition is past 4 KiB and twice its compacted
        // size; one more append of `x` triggers it if the last did not.
        log.append(&[keyed("x", Some("last"))], None).unwrap();
        let (_, high) = log.watermarks("c", 0).unwrap();
        assert_eq!(high, 302, "offsets keep their numbers");
        let left = log.read(&Arc::from("c"), 0, 0, usize::MAX).unwrap();
        // Compaction runs whenever the partition passes 4 KiB (about 50 of these records).
        assert!(left.len() < 60, "compaction left {} records", left.len());
        std::thread::sleep(Duration::from_millis(5));
        log.compact_partition("c", 0).unwrap();
        let left = log.read(&Arc::from("c"), 0, 0, usize::MAX).unwrap();
        assert_eq!(left.len(), 2, "{left:?}");
        let latest: HashMap<Vec<u8>, Option<Vec<u8>>> = left
            .iter()
            .map(|r| {
                (
                    r.key.as_deref().unwrap().to_vec(),
                    r.value.as_deref().map(<[u8]>::to_vec),
                )
            })
            .collect();
        assert_eq!(latest.get(b"x".as_slice()), Some(&Some(b"last".to_vec())));
        assert_eq!(
            latest.get(b"y".as_slice()),
            Some(&Some(format!("{:0>40}", 99).into_bytes()))
        );
        assert!(
            !latest.contains_key(b"z".as_slice()),
            "the expired tombstone and the values it deleted are gone"
        );
        // Retention by size (1 byte) does not apply to compacted topics.
        assert_eq!(left.last().unwrap().offset, 301);
    }

    #[test]
    fn age_retention_uses_append_time_not_event_time() {
        let mut config = Config::new("t");
        config.retention = Some(Duration::from_secs(3600));
        let log = EmbeddedLog::open(&config, true).unwrap();
        log.ensure_topic("a", 1).unwrap();
        let mut old_event = out("a", None, "from 1970");
        old_event.timestamp = 1000;
        log.append(&[old_event.clone(), old_event], None).unwrap();
        assert_eq!(
            log.watermarks("a", 0).unwrap(),
            (0, 2),
            "fresh appends stay"
        );
        let got = log.read(&Arc::from("a"), 0, 0, 10).unwrap();
        assert_eq!(
            got[0].timestamp,
            Some(1000),
            "the record keeps its own timestamp"
        );
    }

    #[test]
    fn range_assignment_keeps_copartitioned_topics_together() {
        let log = EmbeddedLog::open(&Config::new("t"), true).unwrap();
        log.ensure_topic("x", 4).unwrap();
        log.ensure_topic("y", 4).unwrap();
        let topics = vec!["x".to_owned(), "y".to_owned()];
        log.join("g", "m1", &topics);
        log.join("g", "m2", &topics);
        let generation = log.generation("g");
        assert!(matches!(
            log.assignment("g", "m1", generation),
            Barrier::Waiting
        ));
        let Barrier::Ready(b) = log.assignment("g", "m2", generation) else {
            panic!("not ready")
        };
        let Barrier::Ready(a) = log.assignment("g", "m1", generation) else {
            panic!("not ready")
        };
        let parts = |v: &[Tp], t: &str| {
            v.iter()
                .filter(|(x, _)| &**x == t)
                .map(|(_, p)| *p)
                .collect::<Vec<_>>()
        };
        assert_eq!(parts(&a, "x"), vec![0, 1]);
        assert_eq!(parts(&a, "y"), vec![0, 1]);
        assert_eq!(parts(&b, "x"), vec![2, 3]);
        assert!(matches!(
            log.assignment("g", "m1", generation - 1),
            Barrier::Stale
        ));
    }
}
