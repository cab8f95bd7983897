//! The agent context: while an agent instance runs, a task-local handle to its commit buffer.
//! `Topic::send` and `Sink::send` find it here, so a send inside an agent becomes part of the
//! record's effects and is made durable before the record's offset is committed.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::message::OutRecord;
use crate::table::TableCore;
use crate::transport::{Pending, ProducerBackend};

tokio::task_local! {
    pub(crate) static CURRENT: Arc<Shared>;
}

/// Counters of one agent instance, readable from tests (and, later, exported as metrics).
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Records handed to the agent.
    pub records_in: AtomicU64,
    /// Records sent by the agent (sinks and topics).
    pub records_out: AtomicU64,
    /// Records that could not be decoded and were skipped.
    pub decode_errors: AtomicU64,
    /// Commit steps completed.
    pub commits: AtomicU64,
    /// Changelog records applied while recovering this agent's tables.
    pub restored: AtomicU64,
    /// Changelog records recovery set out to apply (with `restored`: its progress).
    pub restore_total: AtomicU64,
}

impl AgentStats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// State an instance shares between its stream (which commits) and its sends.
pub(crate) struct Shared {
    pub(crate) agent: Arc<str>,
    pub(crate) producer: ProducerBackend,
    pub(crate) pending: Mutex<Vec<Pending>>,
    /// The instance's tables (their overlays are committed with its offsets).
    pub(crate) tables: Vec<Arc<TableCore>>,
    /// Partition of the record being processed (-1: none), for tables' key checks.
    pub(crate) current_partition: AtomicI32,
    /// Partition numbers this instance owns.
    pub(crate) owned: Mutex<Vec<i32>>,
    pub(crate) stats: Arc<AgentStats>,
    pub(crate) fatal: Mutex<Option<Error>>,
    /// Set with `fatal`, cheap to check on every record.
    pub(crate) failed: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn new(
        agent: Arc<str>,
        producer: ProducerBackend,
        stats: Arc<AgentStats>,
        tables: Vec<Arc<TableCore>>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            agent,
            producer,
            pending: Mutex::new(Vec::new()),
            tables,
            current_partition: AtomicI32::new(-1),
            owned: Mutex::new(Vec::new()),
            stats,
            fatal: Mutex::new(None),
            failed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(crate) fn owned_partitions(&self) -> Vec<i32> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) async fn send(&self, record: OutRecord) -> Result<()> {
        let pending = self.producer.enqueue(record).await?;
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pending);
        self.stats.records_out.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn take_pending(&self) -> Vec<Pending> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub(crate) fn fail(&self, error: Error) {
        let mut slot = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(error);
        self.failed.store(true, Ordering::Release);
    }

    pub(crate) fn take_fatal(&self) -> Option<Error> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Sends through the current agent's commit buffer.
pub(crate) async fn send(what: &'static str, record: OutRecord) -> Result<()> {
    let shared = CURRENT
        .try_with(Arc::clone)
        .map_err(|_| Error::NoContext(what))?;
    shared.send(record).await
}
