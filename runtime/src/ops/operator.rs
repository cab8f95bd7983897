//! What windows and joins share: an operator over event time whose state lives in a table of
//! the agent instance. On first poll its runner creates that table (and its changelog topic)
//! and adds it to the instance, so it recovers with the instance's other tables; it registers
//! the operator as a `context::Flush`, so the commit step writes its changes with the offsets
//! of the records that made them; after every assignment (once recovery is done) it reloads
//! the owned partitions from the store; each record goes through the operator, and a clock
//! tick lets idle partitions move the watermark while no record arrives. The operator is kept
//! in `InstanceState::windows` by table name, so a call of the agent function after a failure finds
//! it with the results it had not handed out yet.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::base::error::{Error, Result};
use crate::base::metrics::AgentStats;
use crate::base::time::Clock;
use crate::base::watermark;
use crate::instance::context::{Flush, InstanceState};
use crate::instance::table::{ExpiredRanges, Expiring, TableCore, TableDef};
use crate::ops::stream::Stream;

/// An operator an [`OperatorRunner`] drives (the window operator, the join operator).
pub(crate) trait Stateful: Send + 'static {
    /// What it emits.
    type Out: Send + 'static;
    /// Forgets every partition (they are reloaded from the store).
    fn clear(&mut self);
    fn has_partition(&self, partition: i32) -> bool;
    /// Loads a partition from its stored entries.
    fn load(&mut self, partition: i32, entries: Vec<(Vec<u8>, Vec<u8>)>, now: i64) -> Result<()>;
    /// A `group_by` pump's watermark marker read from `partition`.
    fn heard(&mut self, partition: i32, pump: u64, watermark: i64, now: i64);
    /// Recomputes the watermark at clock time `now` and acts on what it passed.
    fn advance(&mut self, now: i64, floor: i64, caught_up: &HashSet<i32>);
    /// False when `advance` at `now` would change nothing, with the floor and caught-up
    /// partitions of its last call: then a record skips it.
    fn must_advance(&self, _now: i64) -> bool {
        true
    }
    fn dirty(&self) -> bool;
    /// The changes since the last call.
    fn take_writes(&mut self) -> Result<Vec<StateWrite>>;
    /// The table's changelog may drop entries by age (`None`: it keeps them until a
    /// tombstone): an operator whose stored clock tells expired entries apart writes its live
    /// ones again in time and, when the changelog is known to, writes no tombstones: the
    /// commit step that writes its clock deletes what the clock shows expired from the local
    /// copy (`ExpiredRanges`).
    fn expire_by_age(&mut self, _changelog: Option<&Expiring>) {}
    /// The next result not handed out yet.
    fn next_out(&mut self) -> Option<Self::Out>;
    /// Adds what happened since the last call to the agent's stats.
    fn report(&mut self, _stats: &AgentStats) {}
}

/// The operator and the table overlay it is flushed into, shared with the commit step.
pub(crate) struct FlushedOperator<Op> {
    op: Mutex<Op>,
    table: Arc<TableCore>,
}

impl<Op> FlushedOperator<Op> {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Op> {
        self.op.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<Op: Stateful> Flush for FlushedOperator<Op> {
    fn dirty(&self) -> bool {
        self.lock().dirty()
    }

    fn flush(&self) -> Result<()> {
        // The operator stays locked until its writes are in the overlay: they go in in order.
        let mut op = self.lock();
        self.table.put_all(op.take_writes()?);
        Ok(())
    }
}

/// Where the record being handled stands.
pub(crate) struct At {
    /// Its event time.
    pub(crate) time: i64,
    /// The clock's time.
    pub(crate) now: i64,
    pub(crate) partition: i32,
    /// The watermark of the `group_by` pump that forwarded it.
    pub(crate) upstream: Option<(u64, i64)>,
    /// Where it was first read (a retry record carries it): records at or below what an
    /// operator applied are not applied twice.
    pub(crate) offset: Option<i64>,
}

type Setup = BoxFuture<'static, Result<Arc<TableDef>>>;
type Configure<Op> = Box<dyn FnOnce(&mut Op) + Send>;

/// Drives a [`Stateful`] operator from a stream of the agent.
pub(crate) struct OperatorRunner<T, Op> {
    pub(crate) stream: Stream<T>,
    /// "window" or "join", for logs.
    what: &'static str,
    name: String,
    /// Said when the stream is not an agent's own.
    misuse: &'static str,
    setup: Option<Setup>,
    make: Option<Box<dyn FnOnce() -> Op + Send>>,
    /// Applied to the operator once it is ready (new or found again).
    configure: Option<Configure<Op>>,
    operator: Option<Arc<FlushedOperator<Op>>>,
    ended: bool,
    seen_assignment: u64,
    ticker: Ticker,
    clock: Clock,
    pub(crate) shared: Arc<InstanceState>,
    /// Version and contents of the instance's caught-up partitions.
    caught_up: (u64, HashSet<i32>),
    /// The watermark floor and caught-up version a record's `advance` last ran with: while
    /// they stay, the operator tells whether another is needed (`Stateful::must_advance`).
    advanced: Option<(i64, u64)>,
    /// The clock's time for the records of this `poll`, and how many used it: read once per
    /// `CLOCK_EVERY` records, not once per record.
    now: Option<(i64, u32)>,
}

/// How many records handled in one poll share a reading of the clock: a poll may go through
/// a whole fetched batch, and the reading times arrivals for idleness, so it must not grow
/// old (64 records take well under a millisecond).
const CLOCK_EVERY: u32 = 64;

impl<T: Send + 'static, Op: Stateful> OperatorRunner<T, Op> {
    /// `table` names the operator's table (`<agent>-<table>`), created on first poll when the
    /// stream is an agent's own; `make` builds the operator then.
    pub(crate) fn new(
        stream: Stream<T>,
        what: &'static str,
        table: String,
        misuse: &'static str,
        idle: Duration,
        expiring: Option<Arc<dyn ExpiredRanges>>,
        make: impl FnOnce() -> Op + Send + 'static,
    ) -> Self {
        let shared = stream.core.shared().clone();
        let clock = shared.position.clock.clone();
        if stream.core.pipeline().is_some() {
            // The operator's watermark is the smallest over the instance's partitions: read
            // them in step, or it waits for the slowest while the others' state piles up.
            shared.position.read_in_step();
        }
        let setup = stream.core.pipeline().cloned().map(|pipeline| {
            let name = table.clone();
            let setup: Setup =
                Box::pin(async move { pipeline.window_table(&name, expiring).await });
            setup
        });
        OperatorRunner {
            stream,
            what,
            name: table,
            misuse,
            setup,
            make: Some(Box::new(make)),
            configure: None,
            operator: None,
            ended: false,
            seen_assignment: u64::MAX,
            ticker: Ticker::new(&clock, idle),
            clock,
            shared,
            caught_up: (u64::MAX, HashSet::new()),
            advanced: None,
            now: None,
        }
    }

    /// Runs `setup` before the table is created (a late-events topic).
    pub(crate) fn before_setup(
        &mut self,
        first: impl std::future::Future<Output = Result<()>> + Send + 'static,
    ) {
        if let Some(setup) = self.setup.take() {
            self.setup = Some(Box::pin(async move {
                first.await?;
                setup.await
            }));
        }
    }

    /// Applies `f` to the operator, now if it is ready, else once it is.
    pub(crate) fn configure(&mut self, f: impl FnOnce(&mut Op) + Send + 'static) {
        match &self.operator {
            Some(operator) => f(&mut operator.lock()),
            None => self.configure = Some(Box::new(f)),
        }
    }

    pub(crate) fn fail(&mut self, error: Error) {
        self.stream.core.fail(error);
        self.ended = true;
    }

    fn ready(&mut self, def: Arc<TableDef>) {
        let reader = match self.stream.core.pipeline() {
            Some(p) => p.changelogs(),
            None => return,
        };
        let table = self.stream.core.add_table(def.clone(), reader);
        let existing = self
            .shared
            .operators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&def.name)
            .cloned()
            .and_then(|any| any.downcast::<FlushedOperator<Op>>().ok());
        let operator = match existing {
            // The agent function runs again after a failure: same operator, with the results
            // it had not handed out yet.
            Some(operator) => operator,
            None => {
                let Some(make) = self.make.take() else {
                    return;
                };
                let operator = Arc::new(FlushedOperator {
                    op: Mutex::new(make()),
                    table,
                });
                self.shared
                    .flushers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(operator.clone());
                self.shared
                    .operators
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(def.name.clone(), operator.clone());
                tracing::debug!(agent = %self.shared.agent, what = self.what, name = %self.name, "ready");
                operator
            }
        };
        operator.lock().expire_by_age(def.expiring.get());
        if let Some(configure) = self.configure.take() {
            configure(&mut operator.lock());
        }
        self.operator = Some(operator);
    }

    /// After a rebalance (once recovery is done), reloads the owned partitions from the store.
    fn sync_assignment(&mut self, now: i64) -> Result<()> {
        let generation = self.shared.position.assignment.load(Ordering::Acquire);
        if generation == self.seen_assignment || self.stream.core.is_recovering() {
            return Ok(());
        }
        let Some(operator) = &self.operator else {
            return Ok(());
        };
        self.seen_assignment = generation;
        let mut op = operator.lock();
        op.clear();
        for partition in self.shared.position.owned_partitions() {
            if !op.has_partition(partition) {
                // Committed state plus what an earlier call of the agent function left in the
                // overlay (the function runs again after a failed record).
                let entries = operator.table.entries(partition)?;
                op.load(partition, entries, now)?;
            }
        }
        Ok(())
    }

    /// The owned partitions read to their end (cached until the stream's set changes).
    fn caught_up(&mut self) -> &HashSet<i32> {
        let version = self.shared.caught_up_version.load(Ordering::Acquire);
        if version != self.caught_up.0 {
            self.caught_up = (version, self.shared.caught_up());
        }
        &self.caught_up.1
    }

    /// Hands the record being processed to the operator (`apply`), then moves the watermark
    /// (unless the operator tells that it would not move and nothing would close).
    /// `None` when the record has no event time (counted and skipped) or the operator is not
    /// there.
    pub(crate) fn record<R>(&mut self, apply: impl FnOnce(&mut Op, &At) -> R) -> Result<Option<R>> {
        let Some(time) = self.shared.event_time() else {
            self.shared
                .stats
                .no_event_time
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(agent = %self.shared.agent, what = self.what, name = %self.name, "skipping a record without event time: it has no `#[record(timestamp)]` field, no message timestamp, and the stream no `event_time` extractor");
            return Ok(None);
        };
        let now = self.now();
        self.sync_assignment(now)?;
        let at = At {
            time,
            now,
            partition: self
                .shared
                .position
                .current_partition
                .load(Ordering::Relaxed),
            upstream: self
                .stream
                .core
                .current_header(watermark::HEADER)
                .and_then(watermark::parse),
            offset: self.stream.core.current_origin_offset(),
        };
        let floor = self.clock.watermark_floor();
        self.caught_up();
        let Some(operator) = &self.operator else {
            return Ok(None);
        };
        let result = {
            let mut op = operator.lock();
            let result = apply(&mut op, &at);
            let inputs = Some((floor, self.caught_up.0));
            if self.advanced != inputs || op.must_advance(now) {
                op.advance(now, floor, &self.caught_up.1);
                self.advanced = inputs;
            }
            result
        };
        self.drain();
        Ok(Some(result))
    }

    fn tick(&mut self) -> Result<()> {
        // While rolling back (exactly-once), the operator still holds the aborted records'
        // effects: it reloads once the assignment is announced again.
        if self.stream.core.is_recovering() || self.stream.core.is_rewinding() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        self.now = Some((now, 0));
        self.sync_assignment(now)?;
        let floor = self.clock.watermark_floor();
        let caught_up = self.caught_up().clone();
        if let Some(operator) = &self.operator {
            operator.lock().advance(now, floor, &caught_up);
        }
        self.drain();
        Ok(())
    }

    /// The clock's time for the record being handled (see `now`).
    fn now(&mut self) -> i64 {
        match &mut self.now {
            Some((now, uses)) if *uses < CLOCK_EVERY => {
                *uses += 1;
                *now
            }
            _ => {
                let now = self.clock.now_ms();
                self.now = Some((now, 1));
                now
            }
        }
    }

    /// Applies the pumps' watermark markers the stream consumed, and reports.
    fn drain(&mut self) {
        let Some(operator) = &self.operator else {
            return;
        };
        let mut op = operator.lock();
        let marks =
            std::mem::take(&mut *self.shared.marks.lock().unwrap_or_else(|p| p.into_inner()));
        if !marks.is_empty() {
            let now = self.clock.now_ms();
            for (partition, pump, watermark) in marks {
                op.heard(partition, pump, watermark, now);
            }
            op.advance(now, self.clock.watermark_floor(), &self.caught_up.1);
        }
        op.report(&self.shared.stats);
    }

    /// The next result: set up on first poll, then results the operator holds, then the next
    /// record through `handle` (or a clock tick while none comes).
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        mut handle: impl FnMut(&mut Self, T) -> Result<()>,
    ) -> Poll<Option<Op::Out>> {
        self.now = None;
        loop {
            if let Some(setup) = &mut self.setup {
                let result = ready!(setup.as_mut().poll(cx));
                self.setup = None;
                match result {
                    Ok(def) => self.ready(def),
                    Err(e) => self.fail(e),
                }
                continue;
            }
            if self.operator.is_none() && !self.ended {
                let error = Error::Agent {
                    agent: self.shared.agent.to_string(),
                    message: self.misuse.into(),
                };
                self.fail(error);
            }
            // Results stay in the operator until handed out, so a failure loses none.
            let next = self
                .operator
                .as_ref()
                .and_then(|operator| operator.lock().next_out());
            if let Some(result) = next {
                return Poll::Ready(Some(result));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match futures::Stream::poll_next(Pin::new(&mut self.stream), cx) {
                Poll::Ready(Some(item)) => {
                    if let Err(e) = handle(self, item) {
                        self.fail(e);
                    }
                }
                Poll::Ready(None) => self.ended = true,
                Poll::Pending if !tokio::task::coop::has_budget_remaining() => {
                    // The stream yields to the runtime's other tasks (its cooperative budget
                    // is spent), records in hand: polled again at once, no tick meanwhile.
                    return Poll::Pending;
                }
                Poll::Pending => {
                    let marked = !self.stream.core.is_recovering()
                        && !self
                            .shared
                            .marks
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .is_empty();
                    if !self.ticker.due(cx) && !marked {
                        return Poll::Pending;
                    }
                    if let Err(e) = self.tick() {
                        self.fail(e);
                    }
                }
            }
        }
    }
}

/// A write of an operator's state into its table: partition, key, value (`None` deletes).
pub(crate) type StateWrite = (i32, Vec<u8>, Option<Vec<u8>>);

fn changed(mut rx: tokio::sync::watch::Receiver<u64>) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let _ = rx.changed().await;
    })
}

/// Wakes a window or join to look at the clock while no record arrives (idle partitions).
pub(crate) enum Ticker {
    System(Pin<Box<tokio::time::Sleep>>, Duration),
    Virtual(tokio::sync::watch::Receiver<u64>, BoxFuture<'static, ()>),
}

impl Ticker {
    /// Ticks a few times per idle timeout on the system clock, or on every change of the
    /// virtual clock in tests.
    pub(crate) fn new(clock: &Clock, idle: Duration) -> Self {
        match clock.subscribe() {
            Some(rx) => Ticker::Virtual(rx.clone(), changed(rx)),
            None => {
                let every = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
                Ticker::System(Box::pin(tokio::time::sleep(every)), every)
            }
        }
    }

    /// True when it is time to look at the clock again.
    pub(crate) fn due(&mut self, cx: &mut Context<'_>) -> bool {
        match self {
            Ticker::System(sleep, every) => {
                let mut fired = false;
                while sleep.as_mut().poll(cx).is_ready() {
                    fired = true;
                    let next = tokio::time::Instant::now() + *every;
                    sleep.as_mut().reset(next);
                }
                fired
            }
            Ticker::Virtual(rx, fut) => {
                let mut fired = false;
                while fut.as_mut().poll(cx).is_ready() {
                    fired = true;
                    rx.borrow_and_update();
                    *fut = changed(rx.clone());
                }
                fired
            }
        }
    }
}
