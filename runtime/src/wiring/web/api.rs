//! What the web server asks of the worker. The server (`web::server`) knows HTTP; the worker
//! (`wiring::observe`) implements [`WebBackend`] over its agents, tables and metrics.

use serde::Serialize;

use crate::wiring::topology::Topology;

/// Answer to `/tables/<name>/<key>`.
#[derive(Debug)]
pub(crate) enum TableAnswer {
    /// The key's current value (JSON), read from this worker's copy.
    Found(serde_json::Value),
    /// This worker owns the key's partition and the key has no value.
    Missing,
    /// No table of this name.
    NoSuchTable,
    /// Another worker owns the key's partition: its web base URL (`http://host:port`).
    Elsewhere(String),
    /// Nobody is known to own the key's partition right now (rebalance, recovery).
    Unavailable(String),
    /// The key does not parse as the table's key type.
    BadKey(String),
}

/// Live figures of one agent, for the status page (it turns counters into rates).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AgentStatus {
    pub(crate) name: String,
    pub(crate) records_in: u64,
    pub(crate) records_out: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) late_records: u64,
    pub(crate) commits: u64,
    /// Sum of consumer lag over the partitions this worker owns (records).
    pub(crate) consumer_lag: i64,
    /// Now minus the event time of the last record processed (seconds; none before one).
    pub(crate) event_time_lag_seconds: Option<f64>,
    /// Partitions this worker owns, over every instance.
    pub(crate) partitions: Vec<i32>,
}

/// `/status` (the status page polls it).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Status {
    pub(crate) app: String,
    /// This worker's web address.
    pub(crate) url: String,
    pub(crate) ready: bool,
    /// Why not ready, when not.
    pub(crate) reason: Option<String>,
    /// ms since the epoch when these figures were read.
    pub(crate) now_ms: i64,
    pub(crate) agents: Vec<AgentStatus>,
}

/// The worker seen from the web server.
pub(crate) trait WebBackend: Send + Sync + 'static {
    /// `Ok` when connected to the broker and every table has recovered; else why not.
    fn ready(&self) -> Result<(), String>;
    /// Metrics in the Prometheus text format (version 0.0.4).
    fn metrics(&self) -> String;
    /// The topology, including what agents set up at run time.
    fn topology(&self) -> Topology;
    /// Figures for the status page.
    fn status(&self) -> Status;
    /// Looks a key up in a table; `key` is JSON, or a plain string for string keys. `at`
    /// (ms since the epoch): in a windowed table, the key's window that started last at or
    /// before it.
    fn table(&self, table: &str, key: &str, at: Option<i64>) -> TableAnswer;
}
