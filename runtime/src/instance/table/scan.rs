//! Reading many entries of a table without holding them all: the store is read a page at a
//! time (each page its own short read transaction, so no transaction stays open while the user
//! iterates), merged with the writes the reader has not committed yet, in (partition, key
//! bytes) order. `Table::entries`, `range`, `prefix` and `TableReader` are built on it.

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::base::error::{Error, Result};
use crate::io::store::TableStore;

/// Entries read from the store per page.
const PAGE: usize = 256;

/// Uncommitted writes in a scan's scope, by (partition, key bytes); `None` deletes.
pub(crate) type PendingWrites = BTreeMap<(i32, Vec<u8>), Option<Vec<u8>>>;

/// What a scan reads: these partitions of a table, keys starting with `prefix`.
pub(crate) struct ScanScope {
    pub(crate) store: Arc<TableStore>,
    pub(crate) table: Arc<str>,
    pub(crate) partitions: Vec<i32>,
    pub(crate) prefix: Vec<u8>,
}

/// One raw entry: partition, key bytes, value bytes.
type RawEntry = (i32, Vec<u8>, Vec<u8>);

/// Raw entries of a scan.
pub(crate) struct RawEntries {
    scope: ScanScope,
    pending: PendingWrites,
    /// Index into `scope.partitions` of the partition being read.
    at: usize,
    page: VecDeque<(Vec<u8>, Vec<u8>)>,
    /// Last key read from the store in this partition (the next page starts after it).
    after: Option<Vec<u8>>,
    /// The store has no more entries in this partition.
    drained: bool,
    failed: bool,
    page_size: usize,
}

impl RawEntries {
    pub(crate) fn new(scope: ScanScope, pending: PendingWrites) -> Self {
        RawEntries {
            scope,
            pending,
            at: 0,
            page: VecDeque::new(),
            after: None,
            drained: false,
            failed: false,
            page_size: PAGE,
        }
    }

    /// The next stored entry of the current partition, reading a page when needed.
    fn peek_stored(&mut self, partition: i32) -> Result<Option<&(Vec<u8>, Vec<u8>)>> {
        if self.page.is_empty() && !self.drained {
            let page = self.scope.store.page(
                &self.scope.table,
                partition,
                &self.scope.prefix,
                self.after.as_deref(),
                self.page_size,
            )?;
            self.drained = page.len() < self.page_size;
            self.after = page.last().map(|(k, _)| k.clone());
            self.page.extend(page);
        }
        Ok(self.page.front())
    }

    /// The next uncommitted write of `partition`, if it comes before `stored` (or ties).
    fn take_pending_before(
        &mut self,
        partition: i32,
        stored: Option<&[u8]>,
    ) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
        let entry = self.pending.first_entry()?;
        let (p, key) = entry.key();
        let first = *p < partition || (*p == partition && stored.is_none_or(|s| key[..] <= *s));
        if !first {
            return None;
        }
        let ((_, key), value) = entry.remove_entry();
        Some((key, value))
    }

    fn next_in_partition(&mut self, partition: i32) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        loop {
            let stored = self.peek_stored(partition)?.map(|(k, _)| k.clone());
            match self.take_pending_before(partition, stored.as_deref()) {
                Some((key, value)) => {
                    if stored.as_deref() == Some(&key[..]) {
                        self.page.pop_front();
                    }
                    match value {
                        Some(v) => return Ok(Some((key, v))),
                        None => continue,
                    }
                }
                None => return Ok(self.page.pop_front()),
            }
        }
    }

    fn advance(&mut self) -> Result<Option<RawEntry>> {
        while let Some(&partition) = self.scope.partitions.get(self.at) {
            if let Some((k, v)) = self.next_in_partition(partition)? {
                return Ok(Some((partition, k, v)));
            }
            self.at += 1;
            self.page.clear();
            self.after = None;
            self.drained = false;
        }
        Ok(None)
    }
}

impl Iterator for RawEntries {
    type Item = Result<RawEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.advance();
        self.failed = next.is_err();
        next.transpose()
    }
}

/// Turns a table's message into the error of whoever reads it (an agent, or a reader).
pub(crate) type TableError = Arc<dyn Fn(String) -> Error + Send + Sync>;

/// The error of a table read outside an agent.
pub(crate) fn reader_error(table: &str) -> TableError {
    let table = table.to_owned();
    Arc::new(move |message| Error::Table {
        table: table.clone(),
        message,
    })
}

/// Which decoded keys a scan yields.
type KeyFilter<K> = Box<dyn Fn(&K) -> bool + Send>;

/// The entries of a table's partitions this reader holds, decoded, read lazily a page at a
/// time (`Table::entries`, `range`, `prefix`; `TableReader`'s the same). Order: partition by
/// partition, keys in the byte order of their JSON encoding within each.
pub struct Entries<K, V> {
    raw: RawEntries,
    error: TableError,
    keep: Option<KeyFilter<K>>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: DeserializeOwned, V: DeserializeOwned> Entries<K, V> {
    pub(crate) fn new(raw: RawEntries, error: TableError) -> Self {
        Entries {
            raw,
            error,
            keep: None,
            _types: PhantomData,
        }
    }

    /// Only the keys in `range` (compared decoded, as `K: Ord`: every entry in scope is read).
    pub(crate) fn within(mut self, range: impl RangeBounds<K> + Send + 'static) -> Self
    where
        K: Ord,
    {
        self.keep = Some(Box::new(move |k| range.contains(k)));
        self
    }

    fn decode(&self, key: &[u8], value: &[u8]) -> Result<(K, V)> {
        let k = serde_json::from_slice(key).map_err(|e| {
            (self.error)(format!(
                "a stored key does not decode as `{}`: {e}",
                std::any::type_name::<K>()
            ))
        })?;
        let v = serde_json::from_slice(value).map_err(|e| {
            (self.error)(format!(
                "the stored value of key {} does not decode as `{}` ({e}); did the value type change between deployments?",
                String::from_utf8_lossy(key),
                std::any::type_name::<V>()
            ))
        })?;
        Ok((k, v))
    }
}

impl<K: DeserializeOwned, V: DeserializeOwned> Iterator for Entries<K, V> {
    type Item = Result<(K, V)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (_, key, value) = match self.raw.next()? {
                Ok(entry) => entry,
                Err(e) => return Some(Err(e)),
            };
            match self.decode(&key, &value) {
                Ok((k, v)) if self.keep.as_ref().is_none_or(|keep| keep(&k)) => {
                    return Some(Ok((k, v)));
                }
                Ok(_) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The stored-key prefix of every string key starting with `prefix`: its JSON encoding
/// without the closing quote (JSON escapes each character on its own, so the encoding of a
/// longer string starts with it).
pub(crate) fn string_key_prefix(prefix: &str) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(prefix).unwrap_or_else(|_| b"\"".to_vec());
    bytes.pop();
    bytes
}

/// The uncommitted writes a scan of `partitions` and `prefix` must merge in.
pub(crate) fn pending_in_scope(
    writes: impl IntoIterator<Item = ((i32, Vec<u8>), Option<Vec<u8>>)>,
    partitions: &[i32],
    prefix: &[u8],
) -> PendingWrites {
    writes
        .into_iter()
        .filter(|((p, k), _)| partitions.contains(p) && k.starts_with(prefix))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::store::{PartitionWrites, Puts};

    fn store_with(entries: &[(i32, &str)]) -> Result<Arc<TableStore>> {
        let store = TableStore::open(&crate::base::config::Config::new("t"), true)?;
        let writes = entries.iter().map(|(p, k)| {
            let puts = Puts::List(vec![(k.as_bytes().to_vec(), Some(b"1".to_vec()))]);
            let meta = Default::default();
            let expired = Vec::new();
            (
                Arc::from("t"),
                *p,
                PartitionWrites {
                    puts,
                    meta,
                    expired,
                },
            )
        });
        store.commit(writes.collect())?;
        Ok(store)
    }

    fn keys(
        store: &Arc<TableStore>,
        partitions: &[i32],
        prefix: &str,
        pending: &[(i32, &str, bool)],
        page: usize,
    ) -> Result<Vec<String>> {
        let scope = ScanScope {
            store: store.clone(),
            table: Arc::from("t"),
            partitions: partitions.to_vec(),
            prefix: prefix.as_bytes().to_vec(),
        };
        let writes = pending
            .iter()
            .map(|(p, k, put)| ((*p, k.as_bytes().to_vec()), put.then(|| b"2".to_vec())));
        let mut raw = RawEntries::new(
            scope,
            pending_in_scope(writes, partitions, prefix.as_bytes()),
        );
        raw.page_size = page;
        raw.map(|e| e.map(|(p, k, _)| format!("{p}:{}", String::from_utf8_lossy(&k))))
            .collect()
    }

    #[test]
    fn pages_of_the_store_merge_with_pending_writes_in_key_order() -> Result<()> {
        let stored: Vec<(i32, &str)> = ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .map(|k| (0, *k))
            .chain([(1, "a"), (2, "x")])
            .collect();
        let store = store_with(&stored)?;
        // Removed (stored and not), added between and after stored keys, across page ends.
        let pending = [
            (0, "c", false),
            (0, "cc", true),
            (0, "h", true),
            (0, "zz", false),
            (1, "0", true),
            (3, "q", true),
        ];
        for page in [1, 2, 3, 256] {
            assert_eq!(
                keys(&store, &[0, 1, 2], "", &pending, page)?,
                [
                    "0:a", "0:b", "0:cc", "0:d", "0:e", "0:f", "0:g", "0:h", "1:0", "1:a", "2:x"
                ],
                "page size {page}"
            );
        }
        // Only the scope's partitions and prefix.
        assert_eq!(keys(&store, &[0], "c", &pending, 1)?, ["0:cc"]);
        assert_eq!(keys(&store, &[2, 3], "", &pending, 2)?, ["2:x", "3:q"]);
        Ok(())
    }

    #[test]
    fn a_string_prefix_is_a_prefix_of_the_stored_keys() {
        for (prefix, key) in [("/a/", "/a/1"), ("", "x"), ("\"", "\"q\""), ("é", "été")] {
            let stored = serde_json::to_vec(key).expect("json");
            assert!(
                stored.starts_with(&string_key_prefix(prefix)),
                "{prefix} / {key}"
            );
        }
        let stored = serde_json::to_vec("/b/1").expect("json");
        assert!(!stored.starts_with(&string_key_prefix("/a")));
    }
}
