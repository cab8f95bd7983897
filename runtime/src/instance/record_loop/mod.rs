//! The record loop of an agent instance (`StreamCore`), which its `Stream` polls. It also owns
//! the instance's commit step:
//!
//! - asking for the next record marks the previous one finished (Faust's ack-on-next);
//! - every commit interval (or when many sends are pending) the instance makes its pending sends
//!   durable and then commits the offsets of finished records, in one step;
//! - a revocation or shutdown commits what is finished before the partitions are given up.
//!
//! All of it runs inside `poll_next`, on the agent's own task: no locks or channel hops per
//! record beyond the batch channel from the fetcher.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::base::error::{Error, Result};
use crate::base::failure::{self, Action, Failure, Policy};
use crate::base::message::RawRecord;
use crate::instance::context::Shared;
pub(crate) mod setup;

use crate::instance::record_loop::setup::AgentSetup;
use crate::instance::table::recovery::Recovery;
use crate::instance::table::{TableCore, TableDef};
use crate::io::transport::Log;
use crate::io::transport::{Batch, Committer, Control, Deliveries, StoredWithSends, Tp};

/// Buffered sends (embedded log, exactly-once) that trigger a commit before the interval
/// ends, bounding memory. Kafka's at-least-once sends are in librdkafka's queue, bounded by
/// its limits; they do not count (see `Pending::add_to`).
const MAX_PENDING: usize = 20_000;

/// Records parked behind held partitions before the instance stops reading new batches.
const MAX_PARKED: usize = 50_000;

/// Records handed out per unit of tokio's cooperative budget (128 units a turn).
const COOP_RECORDS: u32 = 32;

/// A partition held back: its first record is due again at `until` (an in-place retry, or a
/// retry-topic record not yet due); the records behind it wait their turn.
struct Held {
    until: tokio::time::Instant,
    records: VecDeque<RawRecord>,
}

/// Shutdown request, sent by the worker alongside the fetcher's control messages.
pub(crate) enum Stop {
    Now,
}

pub(crate) struct StreamCore {
    data: mpsc::Receiver<Batch>,
    ctrl: mpsc::UnboundedReceiver<Control>,
    stop: mpsc::UnboundedReceiver<Stop>,
    generation: u64,
    batch: std::vec::IntoIter<RawRecord>,
    batch_generation: u64,
    in_flight: Option<(Tp, i64)>,
    /// Next offset to commit per partition: written once per record.
    done: Done,
    pub(crate) shared: Arc<Shared>,
    group: Arc<str>,
    committer: Arc<dyn Committer>,
    interval: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
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

/// Next offset to commit per partition. A batch's records come in runs of one partition: the
/// current run's entry is kept apart and updated in place (no hashing, no key kept per
/// record); the map holds the others. `last` is never older than the map's entry for its
/// partition.
#[derive(Default)]
struct Done {
    last: Option<(Tp, i64)>,
    map: HashMap<Tp, i64, foldhash::fast::RandomState>,
}

impl Done {
    /// The next offset of `tp` is `next` (records of a partition finish in order).
    fn set(&mut self, tp: Tp, next: i64) {
        match &mut self.last {
            // The fetcher gives one topic's records one `Arc`: an address compare.
            Some((last, n)) if Arc::ptr_eq(&last.0, &tp.0) && last.1 == tp.1 => *n = next,
            _ => {
                if let Some((last, n)) = self.last.replace((tp, next)) {
                    self.map.insert(last, n);
                }
            }
        }
    }

    /// The next offset of `tp` is at least `next`.
    fn raise(&mut self, tp: Tp, next: i64) {
        self.settle();
        let n = self.map.entry(tp).or_insert(next);
        *n = (*n).max(next);
    }

    fn settle(&mut self) {
        if let Some((tp, n)) = self.last.take() {
            self.map.insert(tp, n);
        }
    }

    fn is_empty(&self) -> bool {
        self.last.is_none() && self.map.is_empty()
    }

    fn drain(&mut self) -> Vec<(Tp, i64)> {
        self.settle();
        self.map.drain().collect()
    }

    fn clear(&mut self) {
        self.last = None;
        self.map.clear();
    }
}

struct Commit {
    future: BoxFuture<'static, Result<()>>,
    acks: Vec<std_mpsc::SyncSender<()>>,
    last: bool,
}

pub(crate) struct CoreParts {
    pub(crate) data: mpsc::Receiver<Batch>,
    pub(crate) ctrl: mpsc::UnboundedReceiver<Control>,
    pub(crate) stop: mpsc::UnboundedReceiver<Stop>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) group: Arc<str>,
    pub(crate) committer: Arc<dyn Committer>,
    pub(crate) interval: Duration,
    pub(crate) recovery: Option<Arc<Recovery>>,
    pub(crate) instance: usize,
    pub(crate) instances: usize,
    pub(crate) pipeline: Option<Arc<dyn AgentSetup>>,
    pub(crate) policy: Arc<Policy>,
}

impl StreamCore {
    /// Leaves this core with its instance (the agent function is done with its stream), for the
    /// worker to call the function again on it or to finish it.
    pub(crate) fn park(self) {
        let shared = self.shared.clone();
        shared.park(Box::new(self));
    }

    /// The core an agent function left behind (see `park`).
    pub(crate) fn take_parked(shared: &Shared) -> Option<StreamCore> {
        shared
            .take_parked()
            .and_then(|core| core.downcast::<StreamCore>().ok())
            .map(|core| *core)
    }

    pub(crate) fn new(p: CoreParts) -> Self {
        StreamCore {
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
            deadline: None,
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
    pub(crate) fn husk(shared: Arc<Shared>, policy: Arc<Policy>) -> Self {
        let mut core = StreamCore::new(CoreParts {
            data: mpsc::channel(1).1,
            ctrl: mpsc::unbounded_channel().1,
            stop: mpsc::unbounded_channel().1,
            shared,
            group: Arc::from(""),
            committer: Arc::new(StoredWithSends),
            interval: Duration::from_secs(3600),
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

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Gives this stream's tables to another one (`group_by`): this stream continues as a pump
    /// with `pump` as its shared state, and returns its table recovery.
    pub(crate) fn hand_over(&mut self, pump: Arc<Shared>) -> Option<Arc<Recovery>> {
        self.shared = pump;
        self.recovery.take()
    }

    fn has_work(&self) -> bool {
        !self.done.is_empty()
            || self.shared.pending_len() > 0
            || self.shared.tables().iter().any(|t| t.is_dirty())
            || self.shared.flushers().iter().any(|f| f.dirty())
            || self.shared.has_dead()
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
        let mut tables = self
            .recovery
            .as_ref()
            .map(|r| r.tables.clone())
            .unwrap_or_default();
        tables.push(def);
        self.recovery = Some(Arc::new(Recovery {
            tables,
            reader,
            stats: self.shared.stats.clone(),
        }));
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

    /// The commit step: (1) the agent's sends and its tables' changelog records become durable
    /// (on the embedded log with the group offsets, in one LMDB transaction); (2) table data,
    /// source offsets and changelog offsets are written in one table-store transaction; (3) on
    /// Kafka, the consumer offsets are committed. A crash between steps leaves the changelog
    /// ahead of local state, which recovery replays.
    fn start_commit(&mut self, acks: Vec<std_mpsc::SyncSender<()>>, last: bool) {
        debug_assert!(self.committing.is_none(), "one commit step at a time");
        let mut flushed = Ok(());
        for flusher in self.shared.flushers() {
            if flushed.is_ok() {
                flushed = flusher.flush();
            }
        }
        let pending = self.shared.take_pending();
        let offsets: Vec<(Tp, i64)> = self.done.drain();
        tracing::trace!(agent = %self.shared.agent, sends = pending.len(), offsets = offsets.len(), last, "commit step");
        // Dead letters and retry records first: they go out with the offsets they stand for.
        let mut changelog = self.shared.take_dead();
        let mut tables = Vec::new();
        let cores = self.shared.tables();
        for core in &cores {
            let (records, puts) = core.take_writes();
            changelog.extend(records);
            if !puts.is_empty() || !offsets.is_empty() {
                tables.push((core.def.clone(), puts));
            }
        }
        let log = self.shared.log.clone();
        let committer = self.committer.clone();
        let group = self.group.clone();
        let on_tick = std::mem::take(&mut self.on_tick);
        let stats = self.shared.stats.clone();
        if let Some(t) = self.shared.event_time() {
            let lag = self.shared.position.clock.now_ms().saturating_sub(t);
            stats.event_time_lag_ms.store(lag, Ordering::Relaxed);
            stats.event_time_lag_set.store(true, Ordering::Relaxed);
        }
        let span = tracing::info_span!(
            parent: None,
            "rill.commit",
            agent = %self.shared.agent,
            offsets = offsets.len(),
            records = pending.len() + changelog.len()
        );
        let future = Box::pin(tracing::Instrument::instrument(
            async move {
                flushed?;
                if pending.is_empty() && offsets.is_empty() && changelog.is_empty() {
                    return Ok(());
                }
                let started = std::time::Instant::now();
                let mut pending = pending;
                let batch = Deliveries::new();
                for record in changelog {
                    pending.push(log.enqueue(record, &batch).await?);
                }
                let produced = log
                    .deliver(pending, &group, &offsets, Some(&*committer), on_tick)
                    .await?;
                if let Some((def, _)) = tables.first() {
                    let store = def.store.clone();
                    let writes =
                        crate::instance::table::commit_writes(&tables, &offsets, &produced);
                    drop(tables);
                    tokio::task::spawn_blocking(move || {
                        store.commit(writes)?;
                        // The store has the writes: readers go to it. Dropping the step's
                        // writes here frees them on this thread, not the agent's.
                        for core in &cores {
                            core.committed();
                        }
                        Ok::<_, Error>(())
                    })
                    .await
                    .map_err(|e| Error::Shutdown(format!("table commit: {e}")))??;
                }
                committer.commit_offsets(offsets).await?;
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.commit_latency.observe(started.elapsed());
                Ok(())
            },
            span,
        ));
        self.committing = Some(Commit { future, acks, last });
        let next = self.next_deadline();
        if let Some(deadline) = &mut self.deadline {
            deadline.as_mut().reset(next);
        }
    }

    /// When the next commit step is due. Under exactly-once every instance of the worker
    /// commits on the same ticks (multiples of the interval since the worker's first), so
    /// their steps reach the transactional producer together and share one transaction
    /// (`transport::txn` gathers them); otherwise an interval from now.
    fn next_deadline(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let transactional = self.committer.transactional();
        if !transactional || self.interval.is_zero() {
            return now + self.interval;
        }
        static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
        let epoch = *EPOCH.get_or_init(|| now);
        let interval = self.interval.as_nanos().max(1);
        let ticks = now.duration_since(epoch).as_nanos() / interval + 1;
        let offset = u64::try_from(ticks.saturating_mul(interval)).unwrap_or(u64::MAX);
        epoch + Duration::from_nanos(offset)
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
    /// `Shared::marks` and finished at once. False for any other record.
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
        self.current.as_ref().map(|r| failure::origin(r).2)
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

    /// Holds `tp` back for `wait`, with `record` first in line.
    fn hold(&mut self, tp: Tp, record: RawRecord, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        let held = self.held.entry(tp).or_insert_with(|| Held {
            until,
            records: VecDeque::new(),
        });
        held.until = until;
        held.records.push_front(record.detached());
        self.arm_hold_timer();
    }

    fn arm_hold_timer(&mut self) {
        if let Some(first) = self.held.values().map(|h| h.until).min() {
            match &mut self.hold_timer {
                Some(timer) if timer.deadline() <= first => {}
                _ => self.hold_timer = Some(Box::pin(tokio::time::sleep_until(first))),
            }
        }
    }

    /// The first record of a held partition whose time has come.
    fn release_held(&mut self) -> Option<RawRecord> {
        if self.held.is_empty() {
            return None;
        }
        let now = tokio::time::Instant::now();
        let tp = self
            .held
            .iter()
            .find(|(_, h)| h.until <= now)
            .map(|(tp, _)| tp.clone())?;
        let held = self.held.get_mut(&tp)?;
        let record = held.records.pop_front();
        // A retry record behind it that is not due yet holds the partition again.
        if let Some(next_due) = held.records.front().and_then(failure::due_of) {
            let wait = next_due.saturating_sub(crate::base::message::now_millis());
            if wait > 0 {
                held.until = now + Duration::from_millis(wait.unsigned_abs());
            }
        }
        if held.records.is_empty() {
            self.held.remove(&tp);
        }
        self.arm_hold_timer();
        record
    }

    /// Applies the failure policy to `raw` (the record in flight), which failed `attempts`
    /// times so far; false when the policy stops the agent.
    fn apply(&mut self, raw: RawRecord, failure: Failure, attempts: u32) -> bool {
        if crate::base::telemetry::active() {
            self.shared
                .fail_record_span(failure.kind.name(), &failure.message);
        }
        let stats = &self.shared.stats;
        let agent = &self.shared.agent;
        let now = crate::base::message::now_millis();
        let action = self.policy.decide(failure.kind, attempts, now);
        tracing::warn!(
            %agent, topic = %raw.topic, partition = raw.partition, offset = raw.offset,
            kind = failure.kind.name(), error = %failure.message, attempts,
            action = ?action, "a record failed"
        );
        match action {
            Action::Skip => {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
            }
            Action::DeadLetter => {
                stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                let topic = self.policy.dead_letter.clone();
                self.shared.push_dead(failure::failed_record(
                    &raw, &topic, None, agent, &failure, attempts, now, None,
                ));
            }
            Action::RetryTopic(topic, due) => {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                let (_, partition, _) = failure::origin(&raw);
                self.shared.push_dead(failure::failed_record(
                    &raw,
                    &topic,
                    Some(partition),
                    agent,
                    &failure,
                    attempts,
                    now,
                    Some(due),
                ));
            }
            Action::Hold(wait) => {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                if let Some((tp, offset)) = self.in_flight.take() {
                    self.attempts.insert((tp.clone(), offset), attempts);
                    self.hold(tp, raw, wait);
                }
            }
            Action::Stop => {
                // Not finished: its offset is not committed.
                self.in_flight = None;
                return false;
            }
        }
        true
    }

    /// A record that could not be decoded (reported by the stream's decode step).
    fn apply_failure(&mut self, raw: RawRecord, failure: Failure) {
        let message = failure.message.clone();
        if !self.apply(raw, failure, 1) {
            self.fail(Error::agent(
                &self.shared.agent,
                format!(
                    "stopping on a record that cannot be decoded (on_error = \"stop\"): {message}"
                ),
            ));
        }
    }

    /// The agent function returned `Err` or panicked: applies the policy to the record it was
    /// processing. `Err` gives the failure back when the worker must stop: the policy says
    /// so, or there is no record to blame.
    pub(crate) fn agent_failed(&mut self, failure: Failure) -> std::result::Result<(), Failure> {
        self.shared.stats.failures.fetch_add(1, Ordering::Relaxed);
        let (Some(raw), Some((tp, offset))) = (self.current.take(), self.in_flight.clone()) else {
            return Err(failure);
        };
        if self.closed {
            return Err(failure);
        }
        let earlier = self
            .attempts
            .get(&(tp, offset))
            .copied()
            .unwrap_or_else(|| failure::attempts_of(&raw));
        if self.apply(raw, failure.clone(), earlier + 1) {
            Ok(())
        } else {
            Err(failure)
        }
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

    /// Waits for the commit step in progress (if any) and handles its outcome: a failed commit
    /// stops the agent without committing past it.
    fn poll_committing(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let Some(commit) = &mut self.committing else {
            return Poll::Ready(Ok(()));
        };
        let result = ready!(commit.future.as_mut().poll(cx));
        let Some(commit) = self.committing.take() else {
            return Poll::Ready(Ok(()));
        };
        for ack in commit.acks {
            let _ = ack.send(());
        }
        if commit.last {
            self.closed = true;
        }
        Poll::Ready(match result {
            Ok(()) => {
                for table in &self.shared.tables() {
                    table.committed();
                }
                Ok(())
            }
            Err(Error::Transaction(why)) if !commit.last => {
                self.roll_back(&why);
                Err(Error::Transaction(why))
            }
            Err(e) => {
                tracing::error!(agent = %self.shared.agent, error = %e, "commit failed; stopping the agent without committing past it");
                let reported = Error::Shutdown(format!("commit failed: {e}"));
                self.shared.fail(e);
                self.closed = true;
                self.commit_failed = true;
                for table in &self.shared.tables() {
                    table.discard();
                }
                Err(reported)
            }
        })
    }

    /// An exactly-once transaction was aborted: forget every effect since the last commit
    /// (table overlays, buffered sends and dead letters, finished offsets) and read again from
    /// the committed offsets. Local tables reload from the store, which holds the last commit.
    fn roll_back(&mut self, why: &str) {
        tracing::warn!(agent = %self.shared.agent, error = %why, "transaction aborted; rolling back to the last commit");
        for table in &self.shared.tables() {
            table.discard();
        }
        drop(self.shared.take_pending());
        drop(self.shared.take_dead());
        self.done.clear();
        self.in_flight = None;
        self.held_done.clear();
        self.held.clear();
        self.hold_timer = None;
        self.attempts.clear();
        self.batch = Vec::new().into_iter();
        self.batch_caught_up.clear();
        self.shared.position.clear_batch_partitions();
        self.rewinding = true;
        self.committer.request_rewind();
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
            // A step under way: `busy` while it runs (this poll registered for its end).
            let mut busy = false;
            if let Some(commit) = &self.committing {
                let exclusive = commit.last || !commit.acks.is_empty();
                if self.poll_committing(cx).is_ready() {
                    continue;
                }
                if exclusive {
                    return Poll::Pending;
                }
                busy = true;
            }
            if let Some(recovering) = &mut self.recovering {
                let result = ready!(recovering.as_mut().poll(cx));
                self.recovering = None;
                match result {
                    Ok(resume) => self.resume = resume,
                    Err(e) => {
                        tracing::error!(agent = %self.shared.agent, error = %e, "table recovery failed; stopping the agent");
                        self.shared.fail(e);
                        self.closed = true;
                    }
                }
                continue;
            }
            if self.closed || self.shared.failed.load(Ordering::Acquire) {
                // Failed elsewhere too (a `group_by` pump): end the stream so the agent returns
                // and the worker reports the error; nothing past it is committed.
                self.closed = true;
                return Poll::Ready(None);
            }
            if self.shared.has_failed_records() {
                for (raw, failure) in self.shared.take_failed_records() {
                    self.apply_failure(raw, failure);
                }
            }
            if self.closed {
                continue;
            }
            // Between records of a batch in hand the instance does not wait, so the control
            // channels and the commit deadline are only looked at, without registering for a
            // wake-up (three registrations per record were ~4% of a stateless agent's time).
            // Whenever it may wait (the batch is used up, partitions are held back, a rollback
            // is under way) they are polled.
            let quick = self.batch.len() > 0 && self.held.is_empty() && !self.rewinding;
            if let Some((tp, offset)) = self.in_flight.take() {
                if let Some(at) = self.handed_at.take() {
                    let now = std::time::Instant::now();
                    self.shared.stats.processing.observe(now - at);
                    self.finished_at = Some(now);
                }
                if crate::base::telemetry::active() {
                    self.shared.end_record_span();
                }
                if !self.attempts.is_empty() {
                    self.attempts.remove(&(tp.clone(), offset));
                }
                if self.holding {
                    self.held_done.push((tp, offset));
                } else {
                    self.done.set(tp, offset + 1);
                }
            }
            if !busy
                && (!quick || !self.stop.is_empty())
                && let Poll::Ready(Some(Stop::Now)) = self.stop.poll_recv(cx)
            {
                self.start_commit(Vec::new(), true);
                continue;
            }
            // Assignment changes wait for the step under way.
            while !busy
                && (!quick || !self.ctrl.is_empty())
                && let Poll::Ready(Some(msg)) = self.ctrl.poll_recv(cx)
            {
                match msg {
                    Control::Assigned {
                        generation,
                        partitions,
                    } => {
                        self.generation = generation;
                        if std::mem::take(&mut self.rewinding) {
                            // Window state flushed since the rollback (when the agent function
                            // returned) is not committed either: windows reload from the store.
                            for table in &self.shared.tables() {
                                table.discard();
                            }
                        }
                        self.shared
                            .position
                            .assignment
                            .fetch_add(1, Ordering::AcqRel);
                        let mine: Vec<Tp> = partitions
                            .into_iter()
                            .filter(|(_, p)| {
                                p.unsigned_abs() as usize % self.instances == self.instance
                            })
                            .collect();
                        self.owned_tps = mine.clone();
                        self.at_end.clear();
                        self.batch_caught_up.clear();
                        self.publish_caught_up();
                        let mut owned: Vec<i32> = mine.iter().map(|(_, p)| *p).collect();
                        owned.sort_unstable();
                        owned.dedup();
                        *self
                            .shared
                            .position
                            .owned
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = owned;
                        self.resume.clear();
                        if let Some(recovery) = self.recovery.clone() {
                            // Tables first: no record of a partition reaches the agent before its
                            // state is back.
                            let agent = self.shared.agent.clone();
                            self.recovering = Some(Box::pin(async move {
                                tokio::task::spawn_blocking(move || recovery.recover(&agent, &mine))
                                    .await
                                    .map_err(|e| Error::Shutdown(format!("table recovery: {e}")))?
                            }));
                            break;
                        }
                    }
                    Control::Revoked { generation, ack } => {
                        self.generation = generation;
                        self.shared
                            .position
                            .assignment
                            .fetch_add(1, Ordering::AcqRel);
                        // Held records are refetched by the partitions' next owner, and so are
                        // those of a batch being assembled.
                        self.held.clear();
                        self.held_done.clear();
                        self.shared.position.clear_batch_partitions();
                        self.hold_timer = None;
                        self.attempts.clear();
                        self.owned_tps.clear();
                        self.at_end.clear();
                        self.batch_caught_up.clear();
                        self.publish_caught_up();
                        self.batch = Vec::new().into_iter();
                        self.shared
                            .position
                            .owned
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .clear();
                        self.start_commit(vec![ack], false);
                        break;
                    }
                }
            }
            if (self.committing.is_some() && !busy) || self.recovering.is_some() {
                continue;
            }
            if self.rewinding {
                // Woken by the control channel when the assignment is announced again.
                return Poll::Pending;
            }
            let due = match &mut self.deadline {
                Some(deadline) if quick => deadline.is_elapsed(),
                Some(deadline) => deadline.as_mut().poll(cx).is_ready(),
                None => {
                    // Polled at once: registered with the timer, `is_elapsed` can tell.
                    let mut deadline = Box::pin(tokio::time::sleep_until(self.next_deadline()));
                    let due = deadline.as_mut().poll(cx).is_ready();
                    self.deadline = Some(deadline);
                    due
                }
            };
            if due && !busy {
                if self.has_work() {
                    self.on_tick = true;
                    self.start_commit(Vec::new(), false);
                    continue;
                }
                let next = self.next_deadline();
                if let Some(deadline) = &mut self.deadline {
                    deadline.as_mut().reset(next);
                    let _ = deadline.as_mut().poll(cx);
                }
            }
            if self.batch_generation < self.generation {
                // Fetched before a revocation: another owner (or a later fetch) redoes them.
                self.batch = Vec::new().into_iter();
                self.batch_caught_up.clear();
            }
            if let Some(record) = self.release_held() {
                if self.consume_marker(&record) {
                    continue;
                }
                return Poll::Ready(Some(self.hand_out(record)));
            }
            if self.batch_generation <= self.generation {
                if self.batch.len() > 0 {
                    // Every 32 records count against the task's budget as one channel message
                    // does: a busy agent lets the tasks sharing its runtime thread run (web
                    // endpoints, other agents, timers) every 4096 records, a few ms. (A unit
                    // per record made it yield every 128, and each yield on a multi-thread
                    // runtime wakes an idle worker to steal it: ~5% of a stateless agent.)
                    self.handed = self.handed.wrapping_add(1);
                    if self.handed.is_multiple_of(COOP_RECORDS) {
                        ready!(tokio::task::coop::poll_proceed(cx)).made_progress();
                    }
                }
                if let Some(mut record) = self.batch.next() {
                    let tp = || (record.topic.clone(), record.partition);
                    if !self.resume.is_empty()
                        && self.resume.get(&tp()).is_some_and(|r| record.offset < *r)
                    {
                        // Already reflected in local table state (committed there, not yet in
                        // the group): finished without running the agent again.
                        self.done.set(tp(), record.offset + 1);
                        continue;
                    }
                    if !self.held.is_empty()
                        && let Some(held) = self.held.get_mut(&tp())
                    {
                        held.records.push_back(record.detached());
                        continue;
                    }
                    if self.consume_marker(&record) {
                        continue;
                    }
                    if let Some(due) = failure::due_of(&record) {
                        // A retry record: its original timestamp back (event time).
                        record.timestamp = failure::original_timestamp(&record);
                        let wait = due.saturating_sub(crate::base::message::now_millis());
                        if wait > 0 {
                            // A retry record not due yet: its retry topic partition waits.
                            let wait = Duration::from_millis(wait.unsigned_abs());
                            self.hold(tp(), record, wait);
                            continue;
                        }
                    }
                    return Poll::Ready(Some(self.hand_out(record)));
                }
            } else {
                // A batch from an assignment whose announcement is already queued: read it first.
                continue;
            }
            if !self.batch_caught_up.is_empty() {
                // The batch's records are all handed out: its partitions' ends are reached.
                let reached = std::mem::take(&mut self.batch_caught_up);
                self.at_end.extend(reached);
                self.publish_caught_up();
            }
            if self.shared.pending_len() >= MAX_PENDING {
                if busy {
                    // Woken when the step under way ends.
                    return Poll::Pending;
                }
                self.start_commit(Vec::new(), false);
                continue;
            }
            if let Some(timer) = &mut self.hold_timer
                && timer.as_mut().poll(cx).is_ready()
            {
                self.hold_timer = None;
                self.arm_hold_timer();
                continue;
            }
            let parked: usize = self.held.values().map(|h| h.records.len()).sum();
            if parked >= MAX_PARKED {
                // Backpressure: wait for the held partitions before reading more.
                return Poll::Pending;
            }
            match self.data.poll_recv(cx) {
                Poll::Ready(Some(batch)) => {
                    self.batch_generation = batch.generation;
                    self.batch = batch.records.into_iter();
                    self.batch_caught_up = batch.caught_up;
                }
                Poll::Ready(None) if busy => return Poll::Pending,
                Poll::Ready(None) => self.start_commit(Vec::new(), true),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<(Tp, i64)>) -> Vec<(String, i32, i64)> {
        v.sort();
        v.into_iter()
            .map(|((t, p), n)| (t.to_string(), p, n))
            .collect()
    }

    #[test]
    fn done_offsets_keep_the_latest_per_partition_across_runs() {
        let a: Arc<str> = Arc::from("a");
        let a_again: Arc<str> = Arc::from("a");
        let mut done = Done::default();
        assert!(done.is_empty());
        done.set((a.clone(), 0), 5);
        done.set((a.clone(), 0), 6);
        done.set((a.clone(), 1), 3);
        // The same topic under another `Arc` (a later fetch loop) is the same partition.
        done.set((a_again.clone(), 0), 7);
        done.set((a.clone(), 1), 4);
        assert!(!done.is_empty());
        assert_eq!(
            sorted(done.drain()),
            [("a".into(), 0, 7), ("a".into(), 1, 4)]
        );
        assert!(done.is_empty());
        // `raise` never lowers what a partition finished.
        done.set((a.clone(), 0), 9);
        done.raise((a.clone(), 0), 8);
        done.raise((a.clone(), 2), 1);
        assert_eq!(
            sorted(done.drain()),
            [("a".into(), 0, 9), ("a".into(), 2, 1)]
        );
        done.set((a, 0), 10);
        done.clear();
        assert!(done.is_empty() && done.drain().is_empty());
    }
}
