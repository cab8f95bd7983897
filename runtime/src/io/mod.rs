//! Storage and transport: LMDB, the table store, and the logs records travel on (Kafka, the embedded log). It names only the foundation.

pub(crate) mod lmdb;
pub(crate) mod registry;
pub(crate) mod store;
pub(crate) mod transport;
