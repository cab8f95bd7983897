//! `JoinStream`: drives a join operator from the agent's two-sided stream. On first poll it
//! creates the join's table (and changelog topic) and adds it to the instance, so it recovers
//! with the instance's other tables; then each record goes through the operator, and a clock
//! tick lets idle partitions expire buffered records while no record arrives. The same shape as
//! `window::driver`.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::state::{Bounds, Operator, Side};
use crate::context::{Flush, Shared};
use crate::error::{Error, Result};
use crate::stream::Stream;
use crate::table::{TableCore, TableDef};
use crate::time::Clock;
use crate::window::driver::Ticker;

/// A two-sided record with its join key's bytes, as the driver reads it.
pub(crate) type Keyed<A, B> = (Side<A, B>, Vec<u8>);

/// Turns the operator's (left, right) into the join's item (`None`: not emitted by this kind).
pub(crate) type Shape<A, B, O> = fn(Option<A>, Option<B>) -> Option<O>;

/// The results of a windowed join: a `futures::Stream` of pairs (see [`crate::join`]).
///
/// Reading the next pair marks the previous one handled, as for records: the join's state
/// commits with the offsets of the records that made it, after whatever the agent sent for the
/// pair is durable.
pub struct JoinStream<O> {
    inner: Box<dyn Drive<O>>,
}

trait Drive<O>: Send {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<O>>;
}

impl<O: Send + 'static> JoinStream<O> {
    #[allow(
        clippy::too_many_arguments,
        reason = "plain wiring from `Stream::join`"
    )]
    pub(crate) fn new<A, B>(
        stream: Stream<Keyed<A, B>>,
        bounds: Bounds,
        idle_timeout: Option<Duration>,
        name: String,
        outer: (bool, bool),
        shape: Shape<A, B, O>,
    ) -> Self
    where
        A: Serialize + DeserializeOwned + Clone + Send + 'static,
        B: Serialize + DeserializeOwned + Clone + Send + 'static,
    {
        let shared = stream.core.shared().clone();
        let clock = shared.clock.clone();
        let idle = idle_timeout
            .or_else(|| stream.core.pipeline().map(|p| p.config.idle_timeout))
            .unwrap_or(Duration::from_secs(10));
        let setup = stream.core.pipeline().cloned().map(|pipeline| {
            let table = name.clone();
            let setup: BoxFuture<'static, Result<Arc<TableDef>>> =
                Box::pin(async move { pipeline.window_table(&table).await });
            setup
        });
        JoinStream {
            inner: Box::new(Driver {
                stream,
                bounds,
                outer,
                shape,
                name,
                idle: crate::window::millis(idle),
                setup,
                cell: None,
                ended: false,
                seen_assignment: u64::MAX,
                ticker: Ticker::new(&clock, idle),
                clock,
                shared,
                caught_up: (u64::MAX, HashSet::new()),
            }),
        }
    }
}

impl<O> JoinStream<O> {
    /// The next pair, or `None` when the worker shuts down.
    pub async fn next(&mut self) -> Option<O> {
        futures::future::poll_fn(|cx| self.inner.poll(cx)).await
    }
}

impl<O> Unpin for JoinStream<O> {}

impl<O> futures::Stream for JoinStream<O> {
    type Item = O;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<O>> {
        self.get_mut().inner.poll(cx)
    }
}

impl<O> std::fmt::Debug for JoinStream<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinStream")
    }
}

/// The operator and the table overlay it is flushed into, shared with the commit step.
struct Cell<A, B> {
    op: Mutex<Operator<A, B>>,
    table: Arc<TableCore>,
}

impl<A, B> Cell<A, B> {
    fn op(&self) -> std::sync::MutexGuard<'_, Operator<A, B>> {
        self.op.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<A, B> Flush for Cell<A, B>
where
    A: Serialize + DeserializeOwned + Clone + Send,
    B: Serialize + DeserializeOwned + Clone + Send,
{
    fn dirty(&self) -> bool {
        self.op().dirty()
    }

    fn flush(&self) -> Result<()> {
        for (partition, key, value) in self.op().take_writes()? {
            self.table.put(partition, key, value);
        }
        Ok(())
    }
}

struct Driver<A, B, O> {
    stream: Stream<Keyed<A, B>>,
    bounds: Bounds,
    outer: (bool, bool),
    shape: Shape<A, B, O>,
    name: String,
    idle: i64,
    setup: Option<BoxFuture<'static, Result<Arc<TableDef>>>>,
    cell: Option<Arc<Cell<A, B>>>,
    ended: bool,
    seen_assignment: u64,
    ticker: Ticker,
    clock: Clock,
    shared: Arc<Shared>,
    caught_up: (u64, HashSet<i32>),
}

impl<A, B, O> Driver<A, B, O>
where
    A: Serialize + DeserializeOwned + Clone + Send + 'static,
    B: Serialize + DeserializeOwned + Clone + Send + 'static,
    O: Send + 'static,
{
    fn fail(&mut self, error: Error) {
        self.stream.core.fail(error);
        self.ended = true;
    }

    fn ready(&mut self, def: Arc<TableDef>) {
        let reader = match self.stream.core.pipeline() {
            Some(p) => p.reader.clone(),
            None => return,
        };
        let table = self.stream.core.add_table(def.clone(), reader);
        let existing = self
            .shared
            .windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&def.name)
            .cloned()
            .and_then(|any| any.downcast::<Cell<A, B>>().ok());
        if let Some(cell) = existing {
            // The agent function runs again after a failure: same operator, with the pairs it
            // had not handed out yet.
            self.cell = Some(cell);
            return;
        }
        let op = Operator::new(self.bounds, self.idle, self.outer.0, self.outer.1);
        let cell = Arc::new(Cell {
            op: Mutex::new(op),
            table,
        });
        self.shared
            .flushers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cell.clone());
        self.shared
            .windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(def.name.clone(), cell.clone());
        tracing::debug!(agent = %self.shared.agent, join = %self.name, bounds = ?self.bounds, "join ready");
        self.cell = Some(cell);
    }

    /// After a rebalance (once recovery is done), reloads the owned partitions from the store.
    fn sync_assignment(&mut self, now: i64) -> Result<()> {
        let generation = self.shared.assignment.load(Ordering::Acquire);
        if generation == self.seen_assignment || self.stream.core.is_recovering() {
            return Ok(());
        }
        let Some(cell) = &self.cell else {
            return Ok(());
        };
        self.seen_assignment = generation;
        let mut op = cell.op();
        op.clear();
        for partition in self.shared.owned_partitions() {
            if !op.has_partition(partition) {
                let entries = cell.table.entries(partition)?;
                op.load(partition, entries, now)?;
            }
        }
        Ok(())
    }

    fn caught_up(&mut self) -> &HashSet<i32> {
        let version = self.shared.caught_up_version.load(Ordering::Acquire);
        if version != self.caught_up.0 {
            self.caught_up = (version, self.shared.caught_up());
        }
        &self.caught_up.1
    }

    fn handle(&mut self, (record, key): Keyed<A, B>) -> Result<()> {
        let Some(time) = self.shared.event_time() else {
            self.shared
                .stats
                .no_event_time
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(agent = %self.shared.agent, join = %self.name, "skipping a record without event time: it has no `#[record(timestamp)]` field, no message timestamp, and the stream no `event_time` extractor");
            return Ok(());
        };
        let now = self.clock.now_ms();
        self.sync_assignment(now)?;
        let partition = self.shared.current_partition.load(Ordering::Relaxed);
        let upstream = self
            .stream
            .core
            .current_header(crate::window::propagate::HEADER)
            .and_then(crate::window::propagate::parse);
        // A retry record carries the offset it was first read at: already taken in.
        let offset = self.stream.core.current_origin_offset();
        let floor = self.clock.watermark_floor();
        self.caught_up();
        let Some(cell) = &self.cell else {
            return Ok(());
        };
        let late = {
            let mut op = cell.op();
            let late = op.on_record(partition, key, time, record, now, upstream, offset);
            op.advance(now, floor, &self.caught_up.1);
            late
        };
        if late {
            self.shared
                .stats
                .late_records
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(agent = %self.shared.agent, join = %self.name, time, "dropping a late record");
        }
        self.drain();
        Ok(())
    }

    fn tick(&mut self) -> Result<()> {
        if self.stream.core.is_recovering() || self.stream.core.is_rewinding() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        self.sync_assignment(now)?;
        let floor = self.clock.watermark_floor();
        let caught_up = self.caught_up().clone();
        if let Some(cell) = &self.cell {
            cell.op().advance(now, floor, &caught_up);
        }
        self.drain();
        Ok(())
    }

    fn drain(&mut self) {
        let Some(cell) = &self.cell else {
            return;
        };
        let mut op = cell.op();
        let marks =
            std::mem::take(&mut *self.shared.marks.lock().unwrap_or_else(|p| p.into_inner()));
        if !marks.is_empty() {
            let now = self.clock.now_ms();
            for (partition, pump, watermark) in marks {
                op.heard(partition, pump, watermark, now);
            }
            op.advance(now, self.clock.watermark_floor(), &self.caught_up.1);
        }
        op.counts.late = 0;
        op.counts.expired = 0;
    }
}

impl<A, B, O> Drive<O> for Driver<A, B, O>
where
    A: Serialize + DeserializeOwned + Clone + Send + 'static,
    B: Serialize + DeserializeOwned + Clone + Send + 'static,
    O: Send + 'static,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<O>> {
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
            if self.cell.is_none() && !self.ended {
                let error = Error::Agent {
                    agent: self.shared.agent.to_string(),
                    message: "joins apply to an agent's own streams".into(),
                };
                self.fail(error);
            }
            // Pairs stay in the operator until handed out, so a failure loses none.
            loop {
                let next = self
                    .cell
                    .as_ref()
                    .and_then(|cell| cell.op().out.pop_front());
                let Some((left, right)) = next else { break };
                if let Some(item) = (self.shape)(left, right) {
                    return Poll::Ready(Some(item));
                }
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match futures::Stream::poll_next(Pin::new(&mut self.stream), cx) {
                Poll::Ready(Some(item)) => {
                    if let Err(e) = self.handle(item) {
                        self.fail(e);
                    }
                }
                Poll::Ready(None) => self.ended = true,
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
