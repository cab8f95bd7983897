//! The worker's table store, opened once, by whichever comes first: a declared table's agent
//! or a window built inside an agent.

use std::sync::{Arc, Mutex, OnceLock};

use crate::base::config::{Broker, Config};
use crate::base::error::Result;
use crate::io::store::TableStore;

/// The worker's table store, opened when the first table or window needs it.
pub(crate) struct StoreCell {
    config: Config,
    store: OnceLock<Arc<TableStore>>,
    opening: Mutex<()>,
}

impl StoreCell {
    pub(crate) fn new(config: &Config) -> Arc<Self> {
        Arc::new(StoreCell {
            config: config.clone(),
            store: OnceLock::new(),
            opening: Mutex::new(()),
        })
    }

    pub(crate) fn get(&self) -> Option<Arc<TableStore>> {
        self.store.get().cloned()
    }

    pub(crate) fn open(&self) -> Result<Arc<TableStore>> {
        let _guard = self.opening.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = self.store.get() {
            return Ok(store.clone());
        }
        let store = TableStore::open(&self.config, self.config.broker == Broker::Memory)?;
        let _ = self.store.set(store.clone());
        Ok(store)
    }
}
