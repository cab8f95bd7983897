//! The record loop of an agent instance (`RecordLoop`), which its `Stream` polls. It also owns
//! the instance's commit step:
//!
//! - asking for the next record marks the previous one finished (Faust's ack-on-next);
//! - every commit interval (or when many sends are pending) the instance makes its pending sends
//!   durable and then commits the offsets of finished records, in one step; while it reads a
//!   backlog (its batches come full), every backlog commit interval (`steps.rs`, `put_off`);
//! - a revocation or shutdown commits what is finished before the partitions are given up.
//!
//! All of it runs inside `poll_next`, on the agent's own task: no locks or channel hops per
//! record beyond the batch channel from the fetcher.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::base::error::{Error, Result};
use crate::base::failure::{self, Policy};
use crate::base::message::RawRecord;
use crate::instance::context::InstanceState;
mod commit;
mod offsets;
mod retries;
pub(crate) mod setup;
mod steps;

use crate::instance::record_loop::setup::AgentSetup;
use crate::instance::table::recovery::Recovery;
use crate::instance::table::{TableCore, TableDef};
use crate::io::transport::Log;
use crate::io::transport::{Batch, Committer, Control, StoredWithSends, Tp};
use commit::Commit;
use offsets::Done;
use retries::Held;
use steps::Flow;

/// Buffered sends (embedded log, exactly-once) that trigger a commit before the interval
/// ends, bounding memory. Kafka's at-least-once sends are in librdkafka's queue, bounded by
/// its limits; they do not count (see `Pending::add_to`).
const MAX_PENDING: usize = 20_000;

/// Records parked behind held partitions before the instance stops reading new batches.
const MAX_PARKED: usize = 50_000;

/// Records handed out per unit of tokio's cooperative budget (128 units a turn).
const COOP_RECORDS: u32 = 32;

/// Shutdown request, sent by the worker alongside the fetcher's control messages.
pub(crate) enum Stop {
    Now,
}

/// The record loop of one agent instance: the batches its fetcher hands over, the records it
/// hands to the agent (through its `Stream`), the offsets they finish with, and the commit
/// steps that make their effects durable.
pub(crate) struct RecordLoop {
    data: mpsc::Receiver<Batch>,
    ctrl: mpsc::UnboundedReceiver<Control>,
    stop: mpsc::UnboundedReceiver<Stop>,
    generation: u64,
    batch: std::vec::IntoIter<RawRecord>,
    batch_generation: u64,
    in_flight: Option<(Tp, i64)>,
    /// Next offset to commit per partition: written once per record.
    done: Done,
    pub(crate) shared: Arc<InstanceState>,
    group: Arc<str>,
    committer: Arc<dyn Committer>,
    interval: Duration,
    /// The interval while reading a backlog (see `Config::backlog_commit_interval`).
    backlog_interval: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the last commit step started (or the loop was made).
    last_step: tokio::time::Instant,
    /// Batches received since the interval's last tick, and how many of them were full
    /// (`Batch::more`); whether the last one was (see `RecordLoop::put_off`).
    fetched: (u32, u32),
    last_full: bool,
    committing: Option<Commit>,
    closed: bool,
    resume: HashMap<Tp, i64>,
    recovery: Option<Arc<Recovery>>,
    recovering: Option<BoxFuture<'static, Result<HashMap<Tp, i64>>>>,
    instance: usize,
    instances: usize,
    pub(crate) pipeline: Option<Arc<dyn AgentSetup>>,
    /// The record last handed out (until the next one): what a failure is about.
    current: Option<RawRecord>,
    pub(crate) policy: Arc<Policy>,
    held: HashMap<Tp, Held>,
    hold_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Attempts so far of records retried in place.
    attempts: HashMap<(Tp, i64), u32>,
    /// The `group_by` name this core reads the repartition topic of (after a restart of the
    /// agent function, `group_by` with that name reuses it).
    pub(crate) rekeyed: Option<String>,
    /// A placeholder left in a `Stream` whose core was moved on: never parked or polled.
    pub(crate) husk: bool,
    /// Caught-up markers of the batch being read, applied once its records are handed out.
    batch_caught_up: Vec<Tp>,
    /// Owned topic-partitions read to their end with every record handed out.
    at_end: HashSet<Tp, foldhash::fast::RandomState>,
    owned_tps: Vec<Tp>,
    commit_failed: bool,
    /// The commit step being started is the commit interval's (not a `commit()`, a
    /// revocation or a full buffer).
    on_tick: bool,
    /// After an aborted transaction: nothing is handed out until the fetcher has gone back to
    /// the committed offsets and announced the assignment again.
    rewinding: bool,
    /// While a batch is being assembled (`Stream::take`), records handed out are finished only
    /// when the whole batch is (the agent asks for the next batch or commits): their offsets
    /// wait here.
    pub(crate) holding: bool,
    held_done: Vec<(Tp, i64)>,
    /// When the record being processed was handed out (for `rill_processing_seconds`).
    handed_at: Option<std::time::Instant>,
    /// The time the previous record finished, read in this call of `poll_raw`: the next
    /// record handed out in the same call starts then (one clock read per record).
    finished_at: Option<std::time::Instant>,
    in_topic: crate::base::metrics::TopicCache,
    /// Records handed out from batches (for the cooperative budget, `COOP_RECORDS`).
    handed: u32,
}

pub(crate) struct CoreParts {
    pub(crate) data: mpsc::Receiver<Batch>,
    pub(crate) ctrl: mpsc::UnboundedReceiver<Control>,
    pub(crate) stop: mpsc::UnboundedReceiver<Stop>,
    pub(crate) shared: Arc<InstanceState>,
    pub(crate) group: Arc<str>,
    pub(crate) committer: Arc<dyn Committer>,
    pub(crate) interval: Duration,
    /// `Config::backlog_interval`.
    pub(crate) backlog_interval: Duration,
    pub(crate) recovery: Option<Arc<Recovery>>,
    pub(crate) instance: usize,
    pub(crate) instances: usize,
    pub(crate) pipeline: Option<Arc<dyn AgentSetup>>,
    pub(crate) policy: Arc<Policy>,
}

impl RecordLoop {
    /// Leaves this core with its instance (the agent function is done with its stream), for the
    /// worker to call the function again on it or to finish it.
    pub(crate) fn park(self) {
        let shared = self.shared.clone();
        shared.park(Box::new(self));
    }

    /// The core an agent function left behind (see `park`).
    pub(crate) fn take_parked(shared: &InstanceState) -> Option<RecordLoop> {
        shared
            .take_parked()
            .and_then(|core| core.downcast::<RecordLoop>().ok())
            .map(|core| *core)
    }

    pub(crate) fn new(p: CoreParts) -> Self {
        RecordLoop {
            data: p.data,
            ctrl: p.ctrl,
            stop: p.stop,
            generation: 0,
            batch: Vec::new().into_iter(),
            batch_generation: 0,
            in_flight: None,
            done: Done::default(),
            shared: p.shared,
            group: p.group,
            committer: p.committer,
            interval: p.interval,
            backlog_interval: p.backlog_interval,
            deadline: None,
            last_step: tokio::time::Instant::now(),
            fetched: (0, 0),
            last_full: false,
            committing: None,
            closed: false,
            resume: HashMap::new(),
            recovery: p.recovery,
            recovering: None,
            instance: p.instance,
            instances: p.instances.max(1),
            pipeline: p.pipeline,
            current: None,
            policy: p.policy,
            held: HashMap::new(),
            hold_timer: None,
            attempts: HashMap::new(),
            rekeyed: None,
            husk: false,
            batch_caught_up: Vec::new(),
            at_end: HashSet::default(),
            owned_tps: Vec::new(),
            commit_failed: false,
            on_tick: false,
            rewinding: false,
            holding: false,
            held_done: Vec::new(),
            handed_at: None,
            finished_at: None,
            in_topic: crate::base::metrics::TopicCache::default(),
            handed: 0,
        }
    }

    /// An empty core left behind when a `Stream`'s core moves to another stream.
    pub(crate) fn husk(shared: Arc<InstanceState>, policy: Arc<Policy>) -> Self {
        let mut core = RecordLoop::new(CoreParts {
            data: mpsc::channel(1).1,
            ctrl: mpsc::unbounded_channel().1,
            stop: mpsc::unbounded_channel().1,
            shared,
            group: Arc::from(""),
            committer: Arc::new(StoredWithSends),
            interval: Duration::from_secs(3600),
            backlog_interval: Duration::from_secs(3600),
            recovery: None,
            instance: 0,
            instances: 1,
            pipeline: None,
            policy,
        });
        core.husk = true;
        core.closed = true;
        core
    }

    /// A placeholder without channels (see `husk`).
    pub(crate) fn is_husk(&self) -> bool {
        self.husk
    }

    pub(crate) fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    pub(crate) fn instance(&self) -> usize {
        self.instance
    }

    pub(crate) fn shared(&self) -> &Arc<InstanceState> {
        &self.shared
    }

    /// Gives this stream's tables to another one (`group_by`): this stream continues as a pump
    /// with `pump` as its shared state, and returns its table recovery, followed by
    /// `standby` (the repartition group's standby recovery) when there is one.
    pub(crate) fn hand_over(
        &mut self,
        pump: Arc<InstanceState>,
        standby: Option<&Recovery>,
    ) -> Option<Arc<Recovery>> {
        self.shared = pump;
        self.recovery
            .take()
            .map(|r| Arc::new(r.repartitioned(standby)))
    }

    /// Adds a table built after start (a window's state) to this instance. Its partitions
    /// recover with the others when the stream takes its first assignment, so it must be
    /// added before the stream is first polled.
    pub(crate) fn add_table(&mut self, def: Arc<TableDef>, reader: Arc<dyn Log>) -> Arc<TableCore> {
        if let Some(existing) = self
            .shared
            .tables()
            .into_iter()
            .find(|t| t.def.name == def.name)
        {
            // The agent function runs again and rebuilds its window: same table.
            return existing;
        }
        let core = TableCore::new(def.clone());
        self.shared
            .tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(core.clone());
        let recovery = match &self.recovery {
            Some(r) => r.with_table(def, reader),
            None => Recovery::new(vec![def], reader, self.shared.stats.clone()),
        };
        self.recovery = Some(Arc::new(recovery));
        core
    }

    /// True while table recovery runs (local state is not yet current).
    pub(crate) fn is_recovering(&self) -> bool {
        self.recovering.is_some()
    }

    pub(crate) fn pipeline(&self) -> Option<&Arc<dyn AgentSetup>> {
        self.pipeline.as_ref()
    }

    /// Marks the agent failed: its stream ends and the worker reports `error`.
    pub(crate) fn fail(&mut self, error: Error) {
        tracing::error!(agent = %self.shared.agent, error = %error, "stopping the agent");
        self.shared.fail(error);
        self.closed = true;
    }

    /// Publishes the partition numbers whose every owned topic is read to its end.
    fn publish_caught_up(&self) {
        let caught_up: HashSet<i32> = self
            .owned_tps
            .iter()
            .map(|(_, p)| *p)
            .filter(|p| {
                self.owned_tps
                    .iter()
                    .filter(|(_, q)| q == p)
                    .all(|tp| self.at_end.contains(tp))
            })
            .collect();
        self.shared.set_caught_up(caught_up);
    }

    /// A `group_by` pump's watermark marker is for the windows, not the agent: recorded in
    /// `InstanceState::marks` and finished at once. False for any other record.
    fn consume_marker(&mut self, record: &RawRecord) -> bool {
        if !crate::base::watermark::is_marker(record) {
            return false;
        }
        if let Some((pump, wm)) = record
            .headers
            .get(crate::base::watermark::HEADER)
            .and_then(crate::base::watermark::parse)
        {
            self.shared
                .marks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((record.partition, pump, wm));
        }
        self.done
            .set((record.topic.clone(), record.partition), record.offset + 1);
        true
    }

    /// Makes `record` the one being processed.
    fn hand_out(&mut self, record: RawRecord) -> &RawRecord {
        let tp = (record.topic.clone(), record.partition);
        if !self.at_end.is_empty() && self.at_end.remove(&tp) {
            self.publish_caught_up();
        }
        if self.holding {
            self.shared.position.add_batch_partition(record.partition);
        }
        self.in_flight = Some((tp, record.offset));
        self.shared
            .position
            .current_partition
            .store(record.partition, Ordering::Relaxed);
        self.shared.stats.records_in.fetch_add(1, Ordering::Relaxed);
        if self.shared.metrics {
            self.in_topic
                .inc(&self.shared.stats.topics_in, &record.topic);
            let now = self
                .finished_at
                .take()
                .unwrap_or_else(std::time::Instant::now);
            self.handed_at = Some(now);
        }
        if crate::base::telemetry::active() {
            let system = self.shared.messaging_system();
            let span = crate::base::telemetry::record_span(
                &record,
                &self.shared.agent,
                &self.group,
                system,
            );
            self.shared.begin_record_span(span);
        }
        self.current.insert(record)
    }

    /// Where the record being processed was first read (its own offset, or the one a retry
    /// record carries).
    pub(crate) fn current_origin_offset(&self) -> Option<i64> {
        self.current.as_ref().map(failure::origin_offset)
    }

    /// After an aborted transaction, until the assignment is announced again: state derived
    /// from the records since the last commit is being rolled back.
    pub(crate) fn is_rewinding(&self) -> bool {
        self.rewinding
    }

    /// A header of the record being processed.
    pub(crate) fn current_header(&self, name: &str) -> Option<&[u8]> {
        self.current.as_ref()?.headers.get(name)
    }

    /// Takes the record just handed out (for a pump that forwards it).
    pub(crate) fn take_current(&mut self) -> Option<RawRecord> {
        self.current.take()
    }

    /// Commits what is finished (not the record in flight) and ends the stream.
    pub(crate) async fn finish(mut self) {
        if self.husk || self.commit_failed {
            return;
        }
        self.in_flight = None;
        // The step under way (the agent kept reading while it ran) first.
        let _ = futures::future::poll_fn(|cx| self.poll_committing(cx)).await;
        if self.commit_failed {
            return;
        }
        self.closed = false;
        self.start_commit(Vec::new(), true);
        while futures::future::poll_fn(|cx| self.poll_raw(cx).map(|r| r.is_some())).await {}
    }

    /// Records handed out so far count as finished (the agent is done with them).
    pub(crate) fn finish_handed(&mut self) {
        let mut finished = std::mem::take(&mut self.held_done);
        if let Some((tp, offset)) = self.in_flight.take() {
            self.attempts.remove(&(tp.clone(), offset));
            finished.push((tp, offset));
        }
        for (tp, offset) in finished {
            self.done.raise(tp, offset + 1);
        }
    }

    /// Finishes what was handed out and commits now (`Stream::commit`).
    pub(crate) async fn commit_now(&mut self) -> Result<()> {
        // A commit already under way does not hold the records finished here: wait for it.
        futures::future::poll_fn(|cx| self.poll_committing(cx)).await?;
        if self.closed || self.shared.failed.load(Ordering::Acquire) {
            return Err(Error::Shutdown(
                "the stream has stopped; nothing more is committed".into(),
            ));
        }
        self.finish_handed();
        self.start_commit(Vec::new(), false);
        futures::future::poll_fn(|cx| self.poll_committing(cx)).await
    }

    /// The next raw record for the agent, committing on the way when due.
    ///
    /// A commit step runs while the agent goes on with the next records (one step at a time):
    /// its sends, table writes and offsets were taken when it started, and reads see its
    /// table writes until the store has them. What needs a step of its own (the next
    /// interval's, a full buffer, a revocation, shutdown) waits for it; so does everything
    /// while a revocation's or the last step runs.
    pub(crate) fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Option<&RawRecord>> {
        self.finished_at = None;
        loop {
            match self.turn(cx) {
                ControlFlow::Continue(()) | ControlFlow::Break(Flow::Again) => {}
                ControlFlow::Break(Flow::Wait) => return Poll::Pending,
                ControlFlow::Break(Flow::End) => return Poll::Ready(None),
                ControlFlow::Break(Flow::Hand(record)) => {
                    return Poll::Ready(Some(self.hand_out(record)));
                }
            }
        }
    }
}
