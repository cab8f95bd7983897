//! The table store: one LMDB environment per worker under `<data-dir>/tables`, one database per
//! table keyed by `[partition u32 BE][key]`, and a `meta` database recording, per table
//! partition, the changelog offset and the source offsets its data reflects. Both are written in
//! one LMDB transaction per commit step, so local state and the offsets it reflects never
//! disagree.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, TryLockError};

use heed::types::Bytes;
use heed::{Database, Env, RoTxn, WithoutTls};

use crate::base::config::Config;
use crate::base::error::{Error, Result};

type Db = Database<Bytes, Bytes>;

/// Uncommitted writes of a table by (partition, key bytes): value bytes, `None` deletes. The
/// instance's table overlays hold them until a commit step hands them to the store. foldhash:
/// every table write and most reads hash into it.
pub(crate) type Overlay =
    std::collections::HashMap<(i32, Vec<u8>), Option<Vec<u8>>, foldhash::fast::RandomState>;

/// Where a table partition's local copy stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PartitionMeta {
    /// Next changelog offset to apply.
    pub(crate) changelog: i64,
    /// Next source offset per source topic (records below it are reflected in the data).
    pub(crate) source: BTreeMap<String, i64>,
}

/// Writes of one commit step for one table partition.
pub(crate) struct PartitionWrites {
    pub(crate) puts: Puts,
    pub(crate) meta: PartitionMeta,
    /// Key ranges `[from, to)` deleted after the puts (entries a replayed changelog shows to
    /// have expired: see `TableDef::expiring`).
    pub(crate) expired: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The key and value bytes (`None` deletes) a [`PartitionWrites`] puts.
pub(crate) enum Puts {
    /// In order, the last of a key winning (a batch of replayed changelog records).
    List(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    /// This partition's entries of a commit step's writes, shared with the table's readers
    /// until the store holds them.
    Step(Arc<Overlay>),
}

/// The LMDB environment of all tables of a worker.
pub(crate) struct TableStore {
    env: Env<WithoutTls>,
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
    meta: Database<Bytes, Bytes>,
    dbs: RwLock<HashMap<String, Db>>,
    /// Held shared by every transaction of this process, exclusively to resize the map (the
    /// kept read transactions of `kept` stay out of it: a resize closes them first).
    gate: RwLock<()>,
    kept: KeptReads,
    map_size: std::sync::atomic::AtomicUsize,
    map_max: usize,
}

pub(crate) fn data_key(partition: i32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len());
    data_key_into(&mut k, partition, key);
    k
}

/// [`data_key`] written into `out` (cleared first), reusing its allocation.
fn data_key_into(out: &mut Vec<u8>, partition: i32, key: &[u8]) {
    out.clear();
    out.extend_from_slice(&(partition as u32).to_be_bytes());
    out.extend_from_slice(key);
}

fn meta_key(table: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(table.len() + 5);
    k.extend_from_slice(table.as_bytes());
    k.push(0);
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k
}

impl TableStore {
    pub(crate) fn open(config: &Config, in_memory: bool) -> Result<Arc<Self>> {
        let crate::io::lmdb::Opened { env, path, temp } =
            crate::io::lmdb::open(config, "tables", in_memory, config.table_map_size, 1024)?;
        let storage = |context: &str| crate::io::lmdb::storage_error(&path, context.to_owned(), "");
        let mut wtxn = env
            .write_txn()
            .map_err(storage("starting a write transaction"))?;
        let meta = env
            .create_database(&mut wtxn, Some("meta"))
            .map_err(storage("creating `meta`"))?;
        wtxn.commit().map_err(storage("committing"))?;
        Ok(Arc::new(TableStore {
            env,
            path,
            _temp: temp,
            meta,
            dbs: RwLock::new(HashMap::new()),
            gate: RwLock::new(()),
            kept: KeptReads::default(),
            map_size: std::sync::atomic::AtomicUsize::new(config.table_map_size),
            map_max: config.table_map_max.max(config.table_map_size),
        }))
    }

    /// The error of a failed LMDB call, built only when it fails (this is on the path of every
    /// put).
    fn err<'a>(
        &'a self,
        table: &'a str,
        context: &'a str,
    ) -> impl FnOnce(heed::Error) -> Error + 'a {
        move |source| {
            let context = if table.is_empty() {
                context.to_owned()
            } else {
                format!("table `{table}`: {context}")
            };
            crate::io::lmdb::storage_error(
                &self.path,
                context,
                "the table store is full (it grows up to RILL_TABLE_MAP_MAX; raise that or free disk space)",
            )(source)
        }
    }

    fn db(&self, table: &str) -> Result<Db> {
        if let Some(db) = self
            .dbs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(table)
        {
            return Ok(*db);
        }
        let mut wtxn = self.env.write_txn().map_err(self.err(table, "opening"))?;
        let db: Db = self
            .env
            .create_database(&mut wtxn, Some(&format!("t/{table}")))
            .map_err(self.err(table, "creating its database"))?;
        // A transaction begun before the database existed cannot read it: `finish` closes
        // the kept ones.
        self.finish(wtxn, table, "creating its database")?;
        self.dbs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(table.to_owned(), db);
        Ok(db)
    }

    /// Commits a write transaction, then closes the kept read transactions: every write of
    /// the store ends here, so no read sees data older than it (`KeptReads`).
    fn finish(&self, wtxn: heed::RwTxn<'_>, table: &str, context: &str) -> Result<()> {
        wtxn.commit().map_err(self.err(table, context))?;
        self.kept.close();
        Ok(())
    }

    /// Runs `f` on a table's database in a read transaction of its own (under the resize gate).
    fn reading<R>(
        &self,
        table: &str,
        f: impl FnOnce(Db, &heed::RoTxn<'_, WithoutTls>) -> Result<R>,
    ) -> Result<R> {
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let db = self.db(table)?;
        let rtxn = self
            .env
            .read_txn()
            .map_err(self.err(table, "starting a read"))?;
        f(db, &rtxn)
    }

    /// Reads one key of one partition, in a kept read transaction when one is free.
    pub(crate) fn get(&self, table: &str, partition: i32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let k = data_key(partition, key);
        let read = |db: Db, rtxn: &RoTxn<'_, WithoutTls>| {
            Ok(db
                .get(rtxn, &k)
                .map_err(self.err(table, "reading"))?
                .map(<[u8]>::to_vec))
        };
        let db = {
            // Creating the database writes: not during a resize.
            let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
            self.db(table)?
        };
        match self.kept.with(&self.env, |rtxn| read(db, rtxn)) {
            Some(Ok(found)) => found,
            Some(Err(e)) => Err(self.err(table, "starting a read")(e)),
            None => self.reading(table, read),
        }
    }

    /// All entries of one partition, in key order.
    pub(crate) fn scan(&self, table: &str, partition: i32) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.each_entry(table, partition, |k, v| out.push((k.to_vec(), v.to_vec())))?;
        Ok(out)
    }

    /// Up to `limit` entries of one partition whose key starts with `prefix`, in key order,
    /// after the key `after` when given (exclusive): one page of a scan that holds neither a
    /// read transaction nor the whole partition between pages.
    pub(crate) fn page(
        &self,
        table: &str,
        partition: i32,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        use std::ops::Bound;
        let start = data_key(partition, after.unwrap_or(prefix));
        let lower = match after {
            Some(_) => Bound::Excluded(&start[..]),
            None => Bound::Included(&start[..]),
        };
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (lower, Bound::Unbounded);
        let scope = data_key(partition, prefix);
        self.reading(table, |db, rtxn| {
            let mut out = Vec::new();
            for item in db
                .range(rtxn, &bounds)
                .map_err(self.err(table, "scanning"))?
            {
                let (k, v) = item.map_err(self.err(table, "scanning"))?;
                if !k.starts_with(&scope) || out.len() == limit {
                    break;
                }
                out.push((k[4..].to_vec(), v.to_vec()));
            }
            Ok(out)
        })
    }

    /// Entries and bytes of one partition.
    pub(crate) fn stats(&self, table: &str, partition: i32) -> Result<(u64, u64)> {
        let (mut n, mut bytes) = (0u64, 0u64);
        self.each_entry(table, partition, |k, v| {
            n += 1;
            bytes += (k.len() + v.len()) as u64;
        })?;
        Ok((n, bytes))
    }

    /// Calls `f` with every key (without its partition prefix) and value of one partition, in
    /// key order, in one read transaction.
    fn each_entry(
        &self,
        table: &str,
        partition: i32,
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Result<()> {
        let prefix = (partition as u32).to_be_bytes();
        self.reading(table, |db, rtxn| {
            for item in db
                .prefix_iter(rtxn, &prefix)
                .map_err(self.err(table, "scanning"))?
            {
                let (k, v) = item.map_err(self.err(table, "scanning"))?;
                f(&k[4..], v);
            }
            Ok(())
        })
    }

    /// Entries and bytes (pages in use) of a whole table, from LMDB's statistics (cheap: no
    /// scan).
    pub(crate) fn size(&self, table: &str) -> Result<(u64, u64)> {
        self.reading(table, |db, rtxn| {
            let stat = db
                .stat(rtxn)
                .map_err(self.err(table, "reading statistics"))?;
            let pages = stat.branch_pages + stat.leaf_pages + stat.overflow_pages;
            Ok((
                stat.entries as u64,
                pages as u64 * u64::from(stat.page_size),
            ))
        })
    }

    /// Where a table partition stands (`None`: no local copy).
    pub(crate) fn meta(&self, table: &str, partition: i32) -> Result<Option<PartitionMeta>> {
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let rtxn = self
            .env
            .read_txn()
            .map_err(self.err(table, "starting a read"))?;
        let raw = self
            .meta
            .get(&rtxn, &meta_key(table, partition))
            .map_err(self.err(table, "reading meta"))?;
        Ok(raw.and_then(|b| serde_json::from_slice(b).ok()))
    }

    /// The tables with a local copy of some partition (tables, window and join state).
    pub(crate) fn tables(&self) -> Result<Vec<String>> {
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let rtxn = self
            .env
            .read_txn()
            .map_err(self.err("", "starting a read"))?;
        let mut out: Vec<String> = Vec::new();
        for item in self
            .meta
            .iter(&rtxn)
            .map_err(self.err("", "reading meta"))?
        {
            let (k, _) = item.map_err(self.err("", "reading meta"))?;
            let name = k.split(|b| *b == 0).next().unwrap_or_default();
            let name = String::from_utf8_lossy(name);
            if out.last().map(String::as_str) != Some(&*name) {
                out.push(name.into_owned());
            }
        }
        Ok(out)
    }

    /// Partitions with a local copy of a table.
    pub(crate) fn partitions(&self, table: &str) -> Result<Vec<i32>> {
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let rtxn = self
            .env
            .read_txn()
            .map_err(self.err(table, "starting a read"))?;
        let mut prefix = table.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self
            .meta
            .prefix_iter(&rtxn, &prefix)
            .map_err(self.err(table, "reading meta"))?
        {
            let (k, _) = item.map_err(self.err(table, "reading meta"))?;
            if let Some(p) = k
                .get(prefix.len()..)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
            {
                out.push(u32::from_be_bytes(p) as i32);
            }
        }
        Ok(out)
    }

    /// Writes a commit step: data and meta of several table partitions in one transaction.
    pub(crate) fn commit(&self, writes: Vec<(Arc<str>, i32, PartitionWrites)>) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        loop {
            let result = {
                let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
                self.commit_once(&writes)
            };
            match result {
                Err(e) if is_map_full(&e) => self.grow(e)?,
                other => return other,
            }
        }
    }

    /// Doubles the map (up to its maximum) after a transaction found it full.
    fn grow(&self, full: Error) -> Result<()> {
        let _closed = self.kept.close_for_resize();
        let _gate = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let current = self.map_size.load(std::sync::atomic::Ordering::Acquire);
        if current >= self.map_max {
            return Err(full);
        }
        let next = current.saturating_mul(2).min(self.map_max);
        // No transaction of this store is open in this process: the gate is held exclusively.
        crate::io::lmdb::resize(&self.env, next)
            .map_err(self.err("", "growing the table store"))?;
        self.map_size
            .store(next, std::sync::atomic::Ordering::Release);
        tracing::info!(from = current, to = next, path = %self.path.display(), "table store map grown");
        Ok(())
    }

    fn commit_once(&self, writes: &[(Arc<str>, i32, PartitionWrites)]) -> Result<()> {
        let dbs: Vec<Db> = writes
            .iter()
            .map(|(t, _, _)| self.db(t))
            .collect::<Result<_>>()?;
        let mut wtxn = self
            .env
            .write_txn()
            .map_err(self.err("", "starting a table commit"))?;
        let mut k = Vec::new();
        for ((table, partition, w), db) in writes.iter().zip(dbs) {
            let mut put = |key: &[u8], value: Option<&[u8]>| -> Result<()> {
                data_key_into(&mut k, *partition, key);
                match value {
                    Some(v) => db
                        .put(&mut wtxn, &k, v)
                        .map_err(self.err(table, "writing"))?,
                    None => {
                        db.delete(&mut wtxn, &k)
                            .map_err(self.err(table, "deleting"))?;
                    }
                }
                Ok(())
            };
            match &w.puts {
                Puts::List(puts) => {
                    for (key, value) in puts {
                        put(key, value.as_deref())?;
                    }
                }
                Puts::Step(step) => {
                    // In key order: neighbouring keys share LMDB pages, and a B-tree walk
                    // in order stays in cache.
                    let mut mine: Vec<(&[u8], Option<&[u8]>)> = step
                        .iter()
                        .filter(|((p, _), _)| p == partition)
                        .map(|((_, key), value)| (key.as_slice(), value.as_deref()))
                        .collect();
                    mine.sort_unstable_by(|a, b| a.0.cmp(b.0));
                    for (key, value) in mine {
                        put(key, value)?;
                    }
                }
            }
            for (from, to) in &w.expired {
                let (from, to) = (data_key(*partition, from), data_key(*partition, to));
                let range = (
                    std::ops::Bound::Included(from.as_slice()),
                    std::ops::Bound::Excluded(to.as_slice()),
                );
                db.delete_range(&mut wtxn, &range)
                    .map_err(self.err(table, "deleting expired entries"))?;
            }
            let meta = serde_json::to_vec(&w.meta).map_err(Error::user)?;
            self.meta
                .put(&mut wtxn, &meta_key(table, *partition), &meta)
                .map_err(self.err(table, "writing meta"))?;
        }
        self.finish(wtxn, "", "committing tables")
    }

    /// Writes entries under one store partition and a read position under another, in one
    /// transaction (global tables keep all entries together but read each topic partition).
    pub(crate) fn apply_split(
        &self,
        table: &str,
        data_partition: i32,
        puts: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        meta_partition: i32,
        meta: &PartitionMeta,
    ) -> Result<()> {
        loop {
            let result = {
                let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
                self.apply_split_once(table, data_partition, &puts, meta_partition, meta)
            };
            match result {
                Err(e) if is_map_full(&e) => self.grow(e)?,
                other => return other,
            }
        }
    }

    fn apply_split_once(
        &self,
        table: &str,
        data_partition: i32,
        puts: &[(Vec<u8>, Option<Vec<u8>>)],
        meta_partition: i32,
        meta: &PartitionMeta,
    ) -> Result<()> {
        let db = self.db(table)?;
        let mut wtxn = self
            .env
            .write_txn()
            .map_err(self.err(table, "starting a write"))?;
        for (key, value) in puts {
            let k = data_key(data_partition, key);
            match value {
                Some(v) => db
                    .put(&mut wtxn, &k, v)
                    .map_err(self.err(table, "writing"))?,
                None => {
                    db.delete(&mut wtxn, &k)
                        .map_err(self.err(table, "deleting"))?;
                }
            }
        }
        let meta = serde_json::to_vec(meta).map_err(Error::user)?;
        self.meta
            .put(&mut wtxn, &meta_key(table, meta_partition), &meta)
            .map_err(self.err(table, "writing meta"))?;
        self.finish(wtxn, table, "committing")
    }

    /// Drops the local copy of a table partition (before a rebuild from the changelog).
    pub(crate) fn clear(&self, table: &str, partition: i32) -> Result<()> {
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let db = self.db(table)?;
        let mut wtxn = self.env.write_txn().map_err(self.err(table, "clearing"))?;
        let start = data_key(partition, &[]);
        let end = data_key(partition + 1, &[]);
        let range = (
            std::ops::Bound::Included(start.as_slice()),
            std::ops::Bound::Excluded(end.as_slice()),
        );
        db.delete_range(&mut wtxn, &range)
            .map_err(self.err(table, "clearing"))?;
        self.meta
            .delete(&mut wtxn, &meta_key(table, partition))
            .map_err(self.err(table, "clearing"))?;
        self.finish(wtxn, table, "clearing")
    }
}

/// Read transactions kept open between point reads (`TableStore::get`). Each LMDB read
/// transaction of its own takes a reader slot under a process-shared mutex and zeroes a table
/// of `max_dbs` entries: about a tenth of a keyed count's profile under a live load when every
/// read that missed the overlay began one (the `memset` alone 6 %; the worker's CPU per view
/// fell 3 % with kept ones: bench/results/latency-2026-12-06.md). A few are kept, one per
/// thread reading at once; a read that finds none free begins its own.
///
/// A kept transaction sees the store as of its beginning, so every commit closes them
/// (`close`): a read never sees data older than the last commit (the table's overlay covers a
/// commit under way), and no transaction keeps old pages from reuse for longer than a commit
/// interval. A resize needs no transaction open in the process: it closes them and keeps
/// new ones from opening until it is done (`close_for_resize`).
#[derive(Default)]
struct KeptReads {
    slots: [Mutex<Option<RoTxn<'static, WithoutTls>>>; 4],
    /// Resizes under way: while any is, reads begin their own transaction, under the gate.
    resizing: AtomicUsize,
}

impl KeptReads {
    /// Runs `read` in a kept transaction (begun now if its slot has none); `None` when every
    /// slot is in use or a resize is under way.
    fn with<R>(
        &self,
        env: &Env<WithoutTls>,
        read: impl FnOnce(&RoTxn<'_, WithoutTls>) -> R,
    ) -> Option<heed::Result<R>> {
        for slot in &self.slots {
            let mut kept = match slot.try_lock() {
                Ok(kept) => kept,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            // Checked under the slot's lock: a resize closes each slot after raising it.
            if self.resizing.load(Ordering::SeqCst) > 0 {
                return None;
            }
            let txn = match kept.take() {
                Some(txn) => txn,
                None => match env.clone().static_read_txn() {
                    Ok(txn) => txn,
                    Err(e) => return Some(Err(e)),
                },
            };
            return Some(Ok(read(kept.insert(txn))));
        }
        None
    }

    /// Closes every kept transaction (waiting for reads in them to end).
    fn close(&self) {
        for slot in &self.slots {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// Closes every kept transaction and keeps new ones from opening until the guard drops.
    fn close_for_resize(&self) -> ResizeGuard<'_> {
        self.resizing.fetch_add(1, Ordering::SeqCst);
        self.close();
        ResizeGuard(self)
    }
}

/// A resize under way (`KeptReads::close_for_resize`).
struct ResizeGuard<'a>(&'a KeptReads);

impl Drop for ResizeGuard<'_> {
    fn drop(&mut self) {
        self.0.resizing.fetch_sub(1, Ordering::SeqCst);
    }
}

fn is_map_full(e: &Error) -> bool {
    matches!(
        e,
        Error::Storage {
            source: heed::Error::Mdb(heed::MdbError::MapFull),
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(puts: &[(&[u8], Option<&[u8]>)]) -> PartitionWrites {
        let puts = puts
            .iter()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        PartitionWrites {
            puts: Puts::List(puts),
            meta: PartitionMeta::default(),
            expired: Vec::new(),
        }
    }

    fn commit(store: &TableStore, table: &str, puts: &[(&[u8], Option<&[u8]>)]) -> Result<()> {
        store.commit(vec![(Arc::from(table), 0, step(puts))])
    }

    /// Reads in a kept transaction see every commit before them: each way of writing closes
    /// the transactions kept open by earlier reads.
    #[test]
    fn a_read_sees_every_write_before_it_though_earlier_reads_kept_their_transaction() -> Result<()>
    {
        let store = TableStore::open(&Config::new("t"), true)?;
        commit(&store, "t", &[(b"a", Some(b"1"))])?;
        assert_eq!(store.get("t", 0, b"a")?, Some(b"1".to_vec()));
        commit(&store, "t", &[(b"a", Some(b"2"))])?;
        assert_eq!(store.get("t", 0, b"a")?, Some(b"2".to_vec()));
        let meta = PartitionMeta::default();
        store.apply_split("t", 0, vec![(b"a".to_vec(), Some(b"3".to_vec()))], 1, &meta)?;
        assert_eq!(store.get("t", 0, b"a")?, Some(b"3".to_vec()));
        store.clear("t", 0)?;
        assert_eq!(store.get("t", 0, b"a")?, None);
        Ok(())
    }

    /// A transaction begun before a database was created cannot read it (LMDB says EINVAL):
    /// creating one closes the kept transactions.
    #[test]
    fn a_table_first_read_after_a_kept_transaction_began_is_readable() -> Result<()> {
        let store = TableStore::open(&Config::new("t"), true)?;
        assert_eq!(store.get("first", 0, b"a")?, None);
        assert_eq!(store.get("second", 0, b"a")?, None);
        commit(&store, "second", &[(b"a", Some(b"1"))])?;
        assert_eq!(store.get("second", 0, b"a")?, Some(b"1".to_vec()));
        Ok(())
    }

    /// The map grows between reads that keep transactions, and reads afterwards see the data
    /// written across it. (That a resize closes the kept transactions first is LMDB's
    /// contract, "no transaction active in this process"; breaking it is undefined behaviour
    /// no test here can be sure to see.)
    #[test]
    fn the_map_grows_under_reads_that_keep_transactions() -> Result<()> {
        let mut config = Config::new("t");
        config.table_map_size = 1 << 20;
        config.table_map_max = 1 << 26;
        let store = TableStore::open(&config, true)?;
        let value = vec![7_u8; 4096];
        for round in 0..8_u32 {
            assert_eq!(store.get("t", 0, b"missing")?, None);
            let keys: Vec<Vec<u8>> = (0..256_u32)
                .map(|i| (round * 256 + i).to_be_bytes().to_vec())
                .collect();
            let puts: Vec<(&[u8], Option<&[u8]>)> = keys
                .iter()
                .map(|k| (k.as_slice(), Some(value.as_slice())))
                .collect();
            commit(&store, "t", &puts)?;
        }
        assert!(store.map_size.load(Ordering::Acquire) > 1 << 20, "it grew");
        let last = (8 * 256 - 1_u32).to_be_bytes();
        assert_eq!(store.get("t", 0, &last)?, Some(value));
        Ok(())
    }
}
