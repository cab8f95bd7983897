//! Read access to a table from outside the agent that writes it: another agent, a timer, a
//! web route (Faust's "tables are readable anywhere on the worker"; Kafka Streams' interactive
//! queries of a local store).
//!
//! A reader sees what the owner last committed (at most one commit interval behind it), of
//! the partitions this worker owns right now; a key of another partition is an error naming
//! the partition, never a silent miss. Ownership is read at each call, so a reader stays valid
//! across rebalances.

use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::base::codec::KeyBytes;
use crate::base::error::{Error, Result};
use crate::instance::table::TableDef;
use crate::instance::table::scan::{
    Entries, PendingWrites, RawEntries, ScanScope, reader_error, string_key_prefix,
};
use crate::wiring::observe::Observer;

/// The tables of this worker's agents, to open [`TableReader`]s on: from `Worker::tables`,
/// a timer's context, or `App::routes`.
#[derive(Clone)]
pub struct Tables {
    observer: Arc<Observer>,
}

impl Tables {
    pub(crate) fn new(observer: Arc<Observer>) -> Self {
        Tables { observer }
    }

    /// A reader of the table `name`, declared by one of this worker's agents
    /// (`tables(totals = "name")`). The types must be the owner's `Table<K, V>`'s.
    pub fn reader<K, V>(&self, name: &str) -> Result<TableReader<K, V>> {
        let names = self.observer.table_names();
        if !names.iter().any(|n| n == name) {
            return Err(Error::Table {
                table: name.to_owned(),
                message: format!(
                    "no agent of this worker declares it; the worker's tables are: {}",
                    names.join(", ")
                ),
            });
        }
        Ok(TableReader {
            observer: self.observer.clone(),
            name: Arc::from(name),
            _types: PhantomData,
        })
    }
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables").finish_non_exhaustive()
    }
}

/// Read-only access to another agent's table on this worker: its committed state, local
/// partitions only. See the module docs.
pub struct TableReader<K, V> {
    observer: Arc<Observer>,
    name: Arc<str>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for TableReader<K, V> {
    fn clone(&self) -> Self {
        TableReader {
            observer: self.observer.clone(),
            name: self.name.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, V> TableReader<K, V>
where
    K: Serialize + DeserializeOwned + KeyBytes,
    V: DeserializeOwned,
{
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn located(&self) -> Result<(Arc<TableDef>, Vec<i32>)> {
        self.observer.table_location(&self.name).ok_or_else(|| {
            self.error(
                "its agent has not started on this worker (yet); retry once the worker is ready"
                    .into(),
            )
        })
    }

    fn error(&self, message: String) -> Error {
        Error::Table {
            table: self.name.to_string(),
            message,
        }
    }

    /// The partitions of the table this worker owns now, sorted.
    pub fn partitions(&self) -> Result<Vec<i32>> {
        Ok(self.located()?.1)
    }

    /// The committed value of a key; an error if the key's partition is owned by another
    /// worker (ask that worker: its web server answers `/tables/<name>/<key>`).
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let (def, owned) = self.located()?;
        let partition = def.partition_of_key(&key.key_bytes());
        let stored =
            serde_json::to_vec(key).map_err(|e| self.error(format!("cannot encode a key: {e}")))?;
        if !owned.contains(&partition) {
            return Err(self.error(format!(
                "key {} lives in partition {partition}, which this worker does not own (it owns {owned:?}); read it on its owner, e.g. GET /tables/{}/<key> on any worker redirects there",
                String::from_utf8_lossy(&stored),
                self.name
            )));
        }
        match def.store.get(&def.name, partition, &stored)? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                self.error(format!(
                    "the stored value does not decode as `{}`: {e}",
                    std::any::type_name::<V>()
                ))
            }),
            None => Ok(None),
        }
    }

    /// The committed entries of the partitions this worker owns, read a page at a time.
    pub fn entries(&self) -> Result<Entries<K, V>> {
        self.scan(Vec::new())
    }

    /// The entries whose key is in `range`, compared as `K` (every local entry is read).
    pub fn range(&self, range: impl RangeBounds<K> + Send + 'static) -> Result<Entries<K, V>>
    where
        K: Ord,
    {
        Ok(self.entries()?.within(range))
    }

    /// Number of committed entries in the partitions this worker owns.
    pub fn len(&self) -> Result<usize> {
        self.entries()?.try_fold(0, |n, entry| entry.map(|_| n + 1))
    }

    /// True when those partitions hold no entry.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.entries()?.next().transpose()?.is_none())
    }

    fn scan(&self, prefix: Vec<u8>) -> Result<Entries<K, V>> {
        let (def, partitions) = self.located()?;
        let scope = ScanScope {
            store: def.store.clone(),
            table: def.name.clone(),
            partitions,
            prefix,
        };
        let raw = RawEntries::new(scope, PendingWrites::new());
        Ok(Entries::new(raw, reader_error(&self.name)))
    }
}

impl<V: DeserializeOwned> TableReader<String, V> {
    /// The committed entries whose key starts with `prefix` (read from the index: only those).
    pub fn prefix(&self, prefix: &str) -> Result<Entries<String, V>> {
        self.scan(string_key_prefix(prefix))
    }
}
