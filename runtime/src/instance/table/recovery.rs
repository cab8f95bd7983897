//! Recovery: before an agent sees records of a newly assigned partition, each of its tables'
//! partitions is brought up to the end of its changelog, starting from the offset its LMDB copy
//! already reached. After a clean shutdown that is nothing; after a crash, the tail; with no
//! local copy (a new machine), or one older than the changelog's start (compaction dropped
//! records), the partition is rebuilt from the beginning.
//!
//! Standby replicas (`Config::standby_replicas`) use the same replay to keep partitions this
//! worker does not own warm ([`Recovery::warm`]): when one is assigned, recovery replays only
//! the tail. Gates (striped by partition) keep a standby replay and an owner's recovery off one
//! partition at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::TableDef;
use crate::base::error::{Error, Result};
use crate::base::message::RawRecord;
use crate::io::store::{PartitionMeta, PartitionWrites, Puts};
use crate::io::transport::{Log, Tp};

/// The tables of one agent and where to read their changelogs.
pub(crate) struct Recovery {
    pub(crate) tables: Vec<Arc<TableDef>>,
    pub(crate) reader: Arc<dyn Log>,
    pub(crate) stats: Arc<crate::base::metrics::AgentStats>,
    /// Held while a table partition replays (recovery or standby); shared by the agent's
    /// recoveries (an instance extends its own with window tables).
    pub(crate) gates: Arc<ReplayGates>,
    /// What the agent's standby follows besides the declared tables, shared by the agent's
    /// recoveries ([`Recovery::warm`]).
    followed: Arc<Followed>,
}

/// Tables an agent's instances added at run time (window state), and whether its state moved
/// to a repartition group (`group_by`), whose partitions the source group's assignment says
/// nothing about: then the source group's standby follows nothing (the repartition group's
/// follows them, see [`Recovery::repartitioned`]).
#[derive(Default)]
struct Followed {
    added: std::sync::Mutex<Vec<Arc<TableDef>>>,
    repartitioned: std::sync::atomic::AtomicBool,
}

impl Followed {
    fn add(&self, def: &Arc<TableDef>) {
        let mut added = self.added.lock().unwrap_or_else(|p| p.into_inner());
        if !added.iter().any(|d| d.name == def.name) {
            added.push(def.clone());
        }
    }
}

/// Locks by partition number (striped), so a standby replay and an owner's recovery never
/// replay one partition at once while instances recovering their own partitions seldom wait
/// for each other.
pub(crate) struct ReplayGates(Vec<std::sync::Mutex<()>>);

impl Default for ReplayGates {
    fn default() -> Self {
        ReplayGates((0..16).map(|_| std::sync::Mutex::new(())).collect())
    }
}

impl ReplayGates {
    fn lock(&self, partition: i32) -> std::sync::MutexGuard<'_, ()> {
        let stripe = partition.unsigned_abs() as usize % self.0.len();
        self.0[stripe].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Recovery {
    /// The recovery of `tables`, with gates of its own (an agent's first).
    pub(crate) fn new(
        tables: Vec<Arc<TableDef>>,
        reader: Arc<dyn Log>,
        stats: Arc<crate::base::metrics::AgentStats>,
    ) -> Self {
        Recovery {
            tables,
            reader,
            stats,
            gates: Arc::default(),
            followed: Arc::default(),
        }
    }

    /// This recovery with `def` too (an instance's window state, read through `reader`); the
    /// agent's standby follows it from now on.
    pub(crate) fn with_table(&self, def: Arc<TableDef>, reader: Arc<dyn Log>) -> Recovery {
        self.followed.add(&def);
        let mut tables = self.tables.clone();
        tables.push(def);
        Recovery {
            tables,
            reader,
            stats: self.stats.clone(),
            gates: self.gates.clone(),
            followed: self.followed.clone(),
        }
    }

    /// This recovery for a repartitioned stream (`group_by`), which takes the agent's tables
    /// into the repartition group: the source group's standby stops following them. `into`,
    /// the repartition group's standby recovery when there is one, follows them instead, and
    /// the windows added from now on.
    pub(crate) fn repartitioned(&self, into: Option<&Recovery>) -> Recovery {
        self.followed
            .repartitioned
            .store(true, std::sync::atomic::Ordering::Release);
        let (gates, followed) = match into {
            Some(root) => {
                for def in &self.tables {
                    root.followed.add(def);
                }
                (root.gates.clone(), root.followed.clone())
            }
            None => (self.gates.clone(), Arc::default()),
        };
        Recovery {
            tables: self.tables.clone(),
            reader: self.reader.clone(),
            stats: self.stats.clone(),
            gates,
            followed,
        }
    }

    /// Every table a standby follows: the declared ones and those added at run time; none
    /// once the agent's state moved to a repartition group.
    pub(crate) fn followed(&self) -> Vec<Arc<TableDef>> {
        if self
            .followed
            .repartitioned
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Vec::new();
        }
        let mut all = self.tables.clone();
        let added = self
            .followed
            .added
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for def in added.iter() {
            if !all.iter().any(|d| d.name == def.name) {
                all.push(def.clone());
            }
        }
        all
    }

    /// Recovers every table partition of `partitions`; returns where each source partition
    /// resumes according to local state (records below are already reflected in it).
    pub(crate) fn recover(&self, agent: &str, partitions: &[Tp]) -> Result<HashMap<Tp, i64>> {
        let numbers: BTreeSet<i32> = partitions.iter().map(|(_, p)| *p).collect();
        let _span = tracing::info_span!(
            "rill.recovery",
            agent,
            tables = self.tables.len(),
            partitions = numbers.len()
        )
        .entered();
        let mut resume = HashMap::new();
        for def in &self.tables {
            for &p in &numbers {
                let _gate = self.gates.lock(p);
                let meta = self.recover_partition(agent, def, p)?;
                for (topic, next) in meta.source {
                    if let Some(tp) = partitions.iter().find(|(t, q)| **t == *topic && *q == p) {
                        let entry = resume.entry(tp.clone()).or_insert(next);
                        *entry = (*entry).min(next);
                    }
                }
            }
        }
        Ok(resume)
    }

    /// Standby: brings this worker's copy of every followed table's `partition` up to its
    /// changelog's end, while `standby` says the partition is still not this worker's (asked
    /// under the gate, so an assignment in between waits and recovers only what is left).
    /// Returns the changelog records replayed (counted in `AgentStats::standby_replayed`).
    pub(crate) fn warm(&self, partition: i32, standby: impl Fn() -> bool) -> Result<u64> {
        let mut replayed = 0;
        for def in &self.followed() {
            let _gate = self.gates.lock(partition);
            if !standby() {
                return Ok(replayed);
            }
            if def.sourced && def.decoder.get().is_none() {
                // No instance took the table yet; the next round follows it.
                continue;
            }
            let (low, high) = self.reader.watermarks(&def.changelog, partition)?;
            let mut meta = starting_point(def, partition, low, high)?;
            if meta.changelog >= high {
                continue;
            }
            let before = meta.changelog;
            let mut progress = Progress::new(high - before);
            let counter = &self.stats.standby_replayed;
            self.replay(def, partition, &mut meta, high, &mut progress, counter)?;
            replayed += (meta.changelog - before).max(0) as u64;
        }
        Ok(replayed)
    }

    fn recover_partition(
        &self,
        agent: &str,
        def: &TableDef,
        partition: i32,
    ) -> Result<PartitionMeta> {
        let (low, high) = self.reader.watermarks(&def.changelog, partition)?;
        let mut meta = starting_point(def, partition, low, high)?;
        let total = high - meta.changelog;
        self.stats
            .restore_total
            .fetch_add(total.max(0) as u64, std::sync::atomic::Ordering::Relaxed);
        if total > 0 {
            tracing::info!(agent, table = %def.name, partition, records = total, from = meta.changelog, "recovering table partition from its changelog");
        }
        let mut progress = Progress::new(total);
        self.replay(
            def,
            partition,
            &mut meta,
            high,
            &mut progress,
            &self.stats.restored,
        )?;
        // A table built from a topic may now be ahead of the group's committed offset on it:
        // the fetcher hands those records out again and the feed applies them again, which
        // leaves the table as it is (the latest value per key) and lets tables derived from it
        // (table joins) see them.
        // Offsets compacted away at the end of the changelog count as covered too.
        let rest = high - meta.changelog;
        if rest > 0 {
            self.stats
                .restored
                .fetch_add(rest as u64, std::sync::atomic::Ordering::Relaxed);
        }
        if total > 0 {
            tracing::info!(table = %def.name, partition, records = progress.done, elapsed = ?progress.started.elapsed(), "table partition recovered");
        }
        // Remember the starting point even for an empty changelog.
        def.store.commit(vec![(
            def.name.clone(),
            partition,
            PartitionWrites {
                puts: Puts::List(Vec::new()),
                meta: meta.clone(),
                expired: Vec::new(),
            },
        )])?;
        def.set_meta(partition, meta.clone());
        Ok(meta)
    }

    /// Writes the changelog from `meta.changelog` up to `high` into the table, a batch per
    /// write transaction, `meta` moving along.
    fn replay(
        &self,
        def: &TableDef,
        partition: i32,
        meta: &mut PartitionMeta,
        high: i64,
        progress: &mut Progress,
        counter: &std::sync::atomic::AtomicU64,
    ) -> Result<()> {
        let name = def.name.clone();
        let decoder = match (def.sourced, def.decoder.get()) {
            (false, _) => None,
            (true, Some(decoder)) => Some(decoder.clone()),
            (true, None) => {
                return Err(Error::Agent {
                    agent: String::new(),
                    message: format!(
                        "table `{name}` is built from its topic and was not taken before the stream was read; call `AgentContext::table_of(\"{name}\")` first"
                    ),
                });
            }
        };
        self.reader.read_range(
            &def.changelog,
            partition,
            meta.changelog,
            high,
            &mut |batch: Vec<RawRecord>| {
                let Some(last) = batch.last() else {
                    return Ok(());
                };
                // Progress in offsets, as `restore_total`: compaction leaves gaps.
                let covered = last.offset + 1 - meta.changelog;
                meta.changelog = last.offset + 1;
                progress.done += batch.len() as i64;
                counter.fetch_add(covered.max(0) as u64, std::sync::atomic::Ordering::Relaxed);
                let expired = expired_in(def, &batch);
                let puts = match &decoder {
                    // A table built from a topic: its records decoded as the feed does.
                    Some(decode) => batch.iter().filter_map(|r| decode(r)).collect(),
                    None => batch
                        .into_iter()
                        .filter_map(|r| r.key.map(|k| (k.to_vec(), r.value.map(Vec::from))))
                        .collect(),
                };
                def.store.commit(vec![(
                    name.clone(),
                    partition,
                    PartitionWrites {
                        puts: Puts::List(puts),
                        meta: meta.clone(),
                        expired,
                    },
                )])?;
                progress.report(&name, partition, high - meta.changelog);
                Ok(())
            },
        )
    }
}

/// The entries that records of a replayed batch show to have expired, for a table whose
/// changelog drops them by age (deleted after the batch's puts: an entry written after the
/// record that expired it never is below its range). Ranges from one start are merged into
/// the widest.
fn expired_in(def: &TableDef, batch: &[RawRecord]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some(expiring) = def.expiring.get() else {
        return Vec::new();
    };
    let mut widest: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
    let ranges = batch
        .iter()
        .filter_map(|r| Some((r.key.as_deref()?, r.value.as_deref()?)))
        .flat_map(|(k, v)| expiring.ranges.expired_by(k, v));
    for (from, to) in ranges {
        let until = widest.entry(from).or_default();
        if to > *until {
            *until = to;
        }
    }
    widest.into_iter().collect()
}

/// Where a partition's replay starts: the local copy's position when it lies within the
/// changelog, else the changelog's start, with the local copy cleared.
fn starting_point(def: &TableDef, partition: i32, low: i64, high: i64) -> Result<PartitionMeta> {
    match def.store.meta(&def.name, partition)? {
        Some(m) if m.changelog >= low && m.changelog <= high => Ok(m),
        Some(m) => {
            tracing::warn!(
                table = %def.name, partition, local = m.changelog, log_start = low, log_end = high,
                "local table copy does not fit the changelog (compacted past it, or the changelog was recreated); rebuilding"
            );
            def.store.clear(&def.name, partition)?;
            Ok(PartitionMeta {
                changelog: low,
                source: Default::default(),
            })
        }
        None => {
            def.store.clear(&def.name, partition)?;
            Ok(PartitionMeta {
                changelog: low,
                source: Default::default(),
            })
        }
    }
}

/// How far one partition's replay got, for the logs.
struct Progress {
    started: Instant,
    last_report: Instant,
    /// Records written so far.
    done: i64,
    /// Offsets to cover.
    total: i64,
}

impl Progress {
    fn new(total: i64) -> Self {
        Progress {
            started: Instant::now(),
            last_report: Instant::now(),
            done: 0,
            total,
        }
    }

    /// Logs the rate and the time left, at most once a second.
    fn report(&mut self, table: &str, partition: i32, left: i64) {
        if self.last_report.elapsed() > Duration::from_secs(1) {
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            let left = left.max(0);
            tracing::info!(
                table = %table, partition, done = self.done, total = self.total, rate = rate as u64,
                eta_s = (left as f64 / rate.max(1.0)) as u64,
                "recovering"
            );
            self.last_report = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::store::TableStore;

    use super::super::tests::BelowN;

    fn record(offset: i64, key: &str, value: &str) -> RawRecord {
        RawRecord {
            topic: Arc::from("t-changelog"),
            partition: 0,
            offset,
            key: Some(bytes::Bytes::copy_from_slice(key.as_bytes())),
            value: Some(bytes::Bytes::copy_from_slice(value.as_bytes())),
            timestamp: None,
            headers: Default::default(),
        }
    }

    #[test]
    fn a_replayed_batch_deletes_what_its_records_show_expired_after_its_puts() -> Result<()> {
        let store = TableStore::open(&crate::base::config::Config::new("t"), true)?;
        let def = TableDef::new("t", "t-changelog", false, 1, store.clone());
        let batch = vec![
            record(0, "k1", "1"),
            record(1, "k5", "5"),
            record(2, "C", "3"),
            record(3, "k2", "2"),
            record(4, "C", "4"),
            record(5, "k4", "4"),
        ];
        // Without expiry, nothing is deleted.
        assert!(expired_in(&def, &batch).is_empty());
        let ranges = Arc::new(BelowN);
        let expiring = super::super::Expiring {
            retention: 1,
            by_age: true,
            ranges,
        };
        assert!(def.expiring.set(expiring).is_ok());
        // The two clock records' ranges merge into the wider one.
        let expired = expired_in(&def, &batch);
        assert_eq!(expired, vec![(b"k".to_vec(), b"k4".to_vec())]);
        let puts = batch
            .iter()
            .map(|r| {
                (
                    r.key.as_deref().unwrap_or_default().to_vec(),
                    r.value.as_deref().map(Vec::from),
                )
            })
            .collect();
        let writes = PartitionWrites {
            puts: Puts::List(puts),
            meta: Default::default(),
            expired,
        };
        store.commit(vec![(def.name.clone(), 0, writes)])?;
        let left: Vec<Vec<u8>> = store.scan("t", 0)?.into_iter().map(|(k, _)| k).collect();
        let want: Vec<&[u8]> = vec![b"C", b"k4", b"k5"];
        assert_eq!(left, want);
        Ok(())
    }
}
