//! Where an agent instance stands: the record being processed (its partition and event time),
//! the batch being assembled, the partitions it owns and the assignment they came with. The
//! record loop writes it; tables and windows read it, and see nothing else of the instance.

use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::base::time::Clock;
use crate::io::transport::align::ReadMode;

/// `current_partition` while a punctuator runs: table writes may go to any partition the
/// instance owns.
pub(crate) const PUNCTUATING: i32 = -2;

/// See the module docs.
pub(crate) struct Position {
    /// The agent (for errors).
    pub(crate) agent: Arc<str>,
    /// Event time of the record being processed, ms since the epoch (`i64::MIN`: none).
    pub(crate) event_time: AtomicI64,
    /// Partition of the record being processed (-1: none), for tables' key checks.
    pub(crate) current_partition: AtomicI32,
    /// Partitions of the records of the batch being assembled or processed (`Stream::take`):
    /// a batch's table writes may go to any of them.
    batch_partitions: Mutex<Vec<i32>>,
    /// Partition numbers this instance owns.
    pub(crate) owned: Mutex<Vec<i32>>,
    /// Bumped on every assignment and revocation, so windows know to reload their partitions.
    pub(crate) assignment: AtomicU64,
    /// The worker's clock.
    pub(crate) clock: Clock,
    /// A record of a table's topic is being applied to its table (the only writes a table
    /// built from a topic takes).
    pub(crate) feeding: std::sync::atomic::AtomicBool,
    /// Whether the agent's fetcher reads its partitions in step (`Router::read_mode`): a
    /// window or join asks for it (their watermark is the smallest over the partitions).
    pub(crate) read_mode: std::sync::OnceLock<Arc<ReadMode>>,
}

impl Position {
    /// Asks the agent's fetcher to read its partitions in step in event time (a window or
    /// join is hosted; see `io/transport/align.rs`).
    pub(crate) fn read_in_step(&self) {
        if let Some(mode) = self.read_mode.get() {
            mode.read_in_step();
        }
    }

    /// The agent asks for its first record: without a window or join by now, its fetcher
    /// reads its partitions independently (until one asks for them in step).
    pub(crate) fn reading(&self) {
        if let Some(mode) = self.read_mode.get() {
            mode.reading();
        }
    }

    pub(crate) fn new(agent: Arc<str>, clock: Clock) -> Self {
        Position {
            agent,
            event_time: AtomicI64::new(i64::MIN),
            current_partition: AtomicI32::new(-1),
            batch_partitions: Mutex::new(Vec::new()),
            owned: Mutex::new(Vec::new()),
            assignment: AtomicU64::new(0),
            clock,
            feeding: std::sync::atomic::AtomicBool::new(false),
            read_mode: std::sync::OnceLock::new(),
        }
    }

    /// Event time of the record being processed.
    pub(crate) fn event_time(&self) -> Option<i64> {
        Some(self.event_time.load(Ordering::Relaxed)).filter(|t| *t != i64::MIN)
    }

    pub(crate) fn add_batch_partition(&self, partition: i32) {
        let mut parts = self
            .batch_partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !parts.contains(&partition) {
            parts.push(partition);
        }
    }

    pub(crate) fn clear_batch_partitions(&self) {
        self.batch_partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Whether the batch being processed holds a record of `partition`.
    pub(crate) fn in_batch(&self, partition: i32) -> bool {
        self.batch_partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&partition)
    }

    pub(crate) fn owned_partitions(&self) -> Vec<i32> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
