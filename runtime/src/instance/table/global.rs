//! Global tables: a topic read from the beginning by every worker (all partitions) into the
//! local table store and kept up to date while running; agents read it for lookups. Before
//! agents start, each global table catches up to the topic's end, so lookups never see an
//! older state than the topic had at startup. Its read positions live in the store's `meta`,
//! so a restart continues where the last run stopped.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::io::store::TableStore;
use crate::io::transport::Log;

/// Store partition that holds every entry of a global table.
const DATA_PARTITION: i32 = 0;
use crate::base::codec::KeyBytes;
use crate::base::error::{Error, Result};
use crate::base::record::Record;

/// The store name of a global table over `topic`.
/// A key of the global table's topic as stored: plain (unframed when the topic's keys are
/// registry-coded, which the app says by declaring the topic with its record, `App::topic`),
/// or as carried when it does not unframe.
fn plain_key(topic: &str, key: &[u8]) -> Vec<u8> {
    crate::base::registry_keys::plain_key(topic, key)
        .map_or_else(|_| key.to_vec(), |k| k.into_owned())
}

fn store_name(topic: &str) -> String {
    format!("global/{topic}")
}

/// One global table of a worker.
pub(crate) struct GlobalDef {
    pub(crate) topic: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) partitions: i32,
    pub(crate) store: Arc<TableStore>,
}

impl GlobalDef {
    pub(crate) fn new(topic: &str, partitions: i32, store: Arc<TableStore>) -> Arc<Self> {
        Arc::new(GlobalDef {
            topic: Arc::from(topic),
            name: Arc::from(store_name(topic).as_str()),
            partitions,
            store,
        })
    }

    /// Reads every partition up to `until` (its end when called), applying records to the store.
    fn catch_up(&self, reader: &Arc<dyn Log>, until: &[i64]) -> Result<u64> {
        let mut applied = 0u64;
        for p in 0..self.partitions {
            let mut meta = self.store.meta(&self.name, p)?.unwrap_or_default();
            let (low, _) = reader.watermarks(&self.topic, p)?;
            meta.changelog = meta.changelog.max(low);
            let end = until[p as usize];
            let name = self.name.clone();
            reader.read_range(&self.topic, p, meta.changelog, end, &mut |batch| {
                let Some(last) = batch.last() else {
                    return Ok(());
                };
                meta.changelog = last.offset + 1;
                applied += batch.len() as u64;
                let puts = batch
                    .into_iter()
                    .filter_map(|r| {
                        r.key
                            .map(|k| (plain_key(&r.topic, &k), r.value.map(Vec::from)))
                    })
                    .collect();
                // Keys are unique across the topic, so entries of every partition share the
                // store's partition 0; the read position is kept per topic partition.
                self.store
                    .apply_split(&name, DATA_PARTITION, puts, p, &meta)
            })?;
        }
        Ok(applied)
    }

    /// The stored value bytes of a key, as its topic carried them (the web server's lookups).
    pub(crate) fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.store.get(&self.name, DATA_PARTITION, key)
    }

    fn ends(&self, reader: &Arc<dyn Log>) -> Result<Vec<i64>> {
        (0..self.partitions)
            .map(|p| reader.watermarks(&self.topic, p).map(|(_, high)| high))
            .collect()
    }
}

/// Catches every global table up to the current end of its topic (before agents start), then
/// keeps them current on a thread until `stop`.
pub(crate) fn start(
    defs: Vec<Arc<GlobalDef>>,
    reader: Arc<dyn Log>,
    stop: Arc<AtomicBool>,
) -> Result<Option<std::thread::JoinHandle<()>>> {
    if defs.is_empty() {
        return Ok(None);
    }
    for def in &defs {
        let started = Instant::now();
        let ends = def.ends(&reader)?;
        let applied = def.catch_up(&reader, &ends)?;
        tracing::info!(topic = %def.topic, applied, elapsed = ?started.elapsed(), "global table ready");
    }
    let handle = std::thread::Builder::new()
        .name("rill-global-tables".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                for def in &defs {
                    let result = def.ends(&reader).and_then(|ends| def.catch_up(&reader, &ends));
                    if let Err(e) = result {
                        tracing::warn!(topic = %def.topic, error = %e, "global table update failed; retrying");
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .map_err(|e| Error::io("spawning the global table thread", e))?;
    Ok(Some(handle))
}

/// A read-only table holding the latest value per key of a whole topic, on every worker.
pub struct GlobalTable<K, V> {
    def: Arc<GlobalDef>,
    _types: PhantomData<fn(K) -> V>,
}

impl<K, V> Clone for GlobalTable<K, V> {
    fn clone(&self) -> Self {
        GlobalTable {
            def: self.def.clone(),
            _types: PhantomData,
        }
    }
}

impl<K: KeyBytes, V: Record> GlobalTable<K, V> {
    pub(crate) fn new(def: Arc<GlobalDef>) -> Self {
        GlobalTable {
            def,
            _types: PhantomData,
        }
    }

    /// The topic the table follows.
    pub fn topic(&self) -> &str {
        &self.def.topic
    }

    /// The latest value of a key (`None` if absent or deleted by a null record).
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        match self
            .def
            .store
            .get(&self.def.name, DATA_PARTITION, &key.key_bytes())?
        {
            None => Ok(None),
            Some(bytes) => crate::base::record::decode_from::<V>(&self.def.topic, &bytes, V::CODEC)
                .map(Some)
                .map_err(|source| Error::Codec {
                    topic: format!("{} (global table)", self.def.topic),
                    source,
                }),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> Result<usize> {
        Ok(self.def.store.scan(&self.def.name, DATA_PARTITION)?.len())
    }

    /// True when the table has no keys.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}
