//! `WindowStream`: drives a window operator from the agent's keyed stream. On first poll it
//! creates the window's table (and changelog topic) and adds it to the instance, so it
//! recovers with the instance's other tables; then each record goes through the operator, and
//! a clock tick lets idle partitions close windows while no record arrives.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::state::{OnClose, Operator};
use super::{Agg, Kind, Options, WindowResult, millis};
use crate::codec::KeyBytes;
use crate::context::{Flush, Shared};
use crate::error::{Error, Result};
use crate::record::Record;
use crate::stream::{KeyedStream, Stream};
use crate::table::{TableCore, TableDef};
use crate::time::Clock;
use crate::topic::{TopicSpec, encode_out};

/// The results of a window: a `futures::Stream` of [`WindowResult`]s.
///
/// Reading the next result marks the previous one handled, as for records: the window's
/// deletion commits with the offsets of the records that closed it, after whatever the agent
/// sent for the result is durable.
pub struct WindowStream<K, V> {
    inner: Box<dyn Drive<K, V>>,
}

trait Drive<K, V>: Send {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<WindowResult<K, V>>>;
    fn set_on_close(&mut self, f: OnClose<K, V>);
}

impl<K: Send + 'static, V: Send + 'static> WindowStream<K, V> {
    pub(crate) fn new<T, S>(
        keyed: KeyedStream<T, K>,
        kind: Kind,
        options: Options,
        name: String,
        agg: Arc<Agg<T, S, V>>,
    ) -> Self
    where
        T: Record,
        K: KeyBytes + Serialize + DeserializeOwned + Clone + Send + Sync,
        S: Serialize + DeserializeOwned + Send + 'static,
    {
        let KeyedStream { stream, key, .. } = keyed;
        let shared = stream.core.shared().clone();
        let clock = shared.clock.clone();
        let idle = options
            .idle_timeout
            .or_else(|| stream.core.pipeline().map(|p| p.config.idle_timeout))
            .unwrap_or(Duration::from_secs(10));
        let setup = match stream.core.pipeline().cloned() {
            None => None,
            Some(pipeline) => {
                let late = options.late_topic.clone();
                let table = name.clone();
                let setup: BoxFuture<'static, Result<Arc<TableDef>>> = Box::pin(async move {
                    if let Some(topic) = late {
                        pipeline
                            .ensure_topic(TopicSpec::of::<T>(&topic, "late events of a window"))
                            .await?;
                    }
                    pipeline.window_table(&table).await
                });
                Some(setup)
            }
        };
        let ticker = Ticker::new(&clock, idle);
        WindowStream {
            inner: Box::new(Driver {
                stream,
                key,
                kind,
                options,
                name,
                agg,
                idle: millis(idle),
                setup,
                cell: None,
                on_close: None,
                ended: false,
                seen_assignment: u64::MAX,
                ticker,
                clock,
                shared,
                caught_up: (u64::MAX, HashSet::new()),
            }),
        }
    }
}

impl<K, V> WindowStream<K, V> {
    /// Calls `f` for every window as it closes (in either emit mode), with its key, bounds and
    /// final value.
    pub fn on_window_close(mut self, f: impl FnMut(&WindowResult<K, V>) + Send + 'static) -> Self {
        self.inner.set_on_close(Box::new(f));
        self
    }

    /// The next result, or `None` when the worker shuts down.
    pub async fn next(&mut self) -> Option<WindowResult<K, V>> {
        futures::future::poll_fn(|cx| self.inner.poll(cx)).await
    }
}

impl<K, V> Unpin for WindowStream<K, V> {}

impl<K, V> futures::Stream for WindowStream<K, V> {
    type Item = WindowResult<K, V>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.poll(cx)
    }
}

impl<K, V> std::fmt::Debug for WindowStream<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WindowStream")
    }
}

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

/// The operator and the table overlay it is flushed into, shared with the commit step.
struct Cell<T, K, S, V> {
    op: Mutex<Operator<T, K, S, V>>,
    table: Arc<TableCore>,
}

impl<T, K, S, V> Cell<T, K, S, V> {
    fn op(&self) -> std::sync::MutexGuard<'_, Operator<T, K, S, V>> {
        self.op.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T, K, S, V> Flush for Cell<T, K, S, V>
where
    T: Serialize + DeserializeOwned + Send,
    K: Serialize + DeserializeOwned + Clone + Send,
    S: Serialize + DeserializeOwned + Send,
    V: Send,
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

type Ready<T, K, S, V> = (Arc<Cell<T, K, S, V>>, Arc<TableDef>);

struct Driver<T, K, S, V> {
    stream: Stream<T>,
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    kind: Kind,
    options: Options,
    name: String,
    agg: Arc<Agg<T, S, V>>,
    idle: i64,
    setup: Option<BoxFuture<'static, Result<Arc<TableDef>>>>,
    /// The operator and its table, once set up.
    cell: Option<Ready<T, K, S, V>>,
    on_close: Option<OnClose<K, V>>,
    ended: bool,
    seen_assignment: u64,
    ticker: Ticker,
    clock: Clock,
    shared: Arc<Shared>,
    /// Version and contents of the instance's caught-up partitions.
    caught_up: (u64, HashSet<i32>),
}

impl<T, K, S, V> Driver<T, K, S, V>
where
    T: Record,
    K: KeyBytes + Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    S: Serialize + DeserializeOwned + Send + 'static,
    V: Send + 'static,
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
            .and_then(|any| any.downcast::<Cell<T, K, S, V>>().ok());
        if let Some(cell) = existing {
            // The agent function runs again after a failure: same operator, with the results
            // it had not handed out yet (reloaded from the overlay at the next record).
            if let Some(on_close) = self.on_close.take() {
                cell.op().on_close = Some(on_close);
            }
            self.cell = Some((cell, def));
            return;
        }
        let mut op = Operator::new(
            self.kind,
            self.options.grace,
            self.idle,
            self.options.emit,
            self.agg.clone(),
        );
        op.on_close = self.on_close.take();
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
        tracing::debug!(agent = %self.shared.agent, window = %self.name, kind = ?self.kind, "window ready");
        self.cell = Some((cell, def));
    }

    /// After a rebalance (once recovery is done), reloads the owned partitions from the store.
    fn sync_assignment(&mut self, now: i64) -> Result<()> {
        let generation = self.shared.assignment.load(Ordering::Acquire);
        if generation == self.seen_assignment || self.stream.core.is_recovering() {
            return Ok(());
        }
        let Some((cell, _)) = &self.cell else {
            return Ok(());
        };
        self.seen_assignment = generation;
        let mut op = cell.op();
        op.clear();
        for partition in self.shared.owned_partitions() {
            if !op.has_partition(partition) {
                // Committed state plus what an earlier call of the agent function left in the
                // overlay (the function runs again after a failed record).
                let entries = cell.table.entries(partition)?;
                op.load(partition, entries, now)?;
            }
        }
        Ok(())
    }

    fn handle(&mut self, item: T) -> Result<()> {
        let Some(time) = self.shared.event_time() else {
            self.shared
                .stats
                .no_event_time
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(agent = %self.shared.agent, window = %self.name, "skipping a record without event time: it has no `#[record(timestamp)]` field, no message timestamp, and the stream no `event_time` extractor");
            return Ok(());
        };
        let now = self.clock.now_ms();
        self.sync_assignment(now)?;
        let partition = self.shared.current_partition.load(Ordering::Relaxed);
        let key = (self.key)(&item);
        let key_bytes = key.key_bytes();
        let upstream = self
            .stream
            .core
            .current_header(super::propagate::HEADER)
            .and_then(super::propagate::parse);
        // A retry record carries the offset it was first read at: already counted.
        let offset = self.stream.core.current_origin_offset();
        let floor = self.clock.watermark_floor();
        self.caught_up();
        let Some((cell, _)) = &self.cell else {
            return Ok(());
        };
        let late = {
            let mut op = cell.op();
            let late = op.on_record(partition, key_bytes, key, time, item, now, upstream, offset);
            op.advance(now, floor, &self.caught_up.1);
            late
        };
        if let Some(item) = late {
            self.shared
                .stats
                .late_records
                .fetch_add(1, Ordering::Relaxed);
            match &self.options.late_topic {
                Some(topic) => {
                    // Sent in the next commit step, before the offsets it stands for.
                    let record = encode_out(topic, self.stream.codec, item.key(), &item)?;
                    self.shared.push_dead(record);
                }
                None => {
                    tracing::debug!(agent = %self.shared.agent, window = %self.name, time, "dropping a late record");
                }
            }
        }
        self.drain();
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

    fn tick(&mut self) -> Result<()> {
        // While rolling back (exactly-once), the operator still holds the aborted records'
        // effects: it reloads once the assignment is announced again.
        if self.stream.core.is_recovering() || self.stream.core.is_rewinding() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        self.sync_assignment(now)?;
        let floor = self.clock.watermark_floor();
        let caught_up = self.caught_up().clone();
        if let Some((cell, _)) = &self.cell {
            cell.op().advance(now, floor, &caught_up);
        }
        self.drain();
        Ok(())
    }

    fn drain(&mut self) {
        let Some((cell, _)) = &self.cell else {
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
        let closed = std::mem::take(&mut op.counts.closed);
        self.shared
            .stats
            .windows_closed
            .fetch_add(closed, Ordering::Relaxed);
    }
}

impl<T, K, S, V> Drive<K, V> for Driver<T, K, S, V>
where
    T: Record,
    K: KeyBytes + Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    S: Serialize + DeserializeOwned + Send + 'static,
    V: Send + 'static,
{
    fn set_on_close(&mut self, f: OnClose<K, V>) {
        match &self.cell {
            Some((cell, _)) => cell.op().on_close = Some(f),
            None => self.on_close = Some(f),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<WindowResult<K, V>>> {
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
                    message: "windows apply to an agent's own stream, re-keyed with `group_by`"
                        .into(),
                };
                self.fail(error);
            }
            // Results stay in the operator until handed out, so a failure loses none.
            let next = self
                .cell
                .as_ref()
                .and_then(|(cell, _)| cell.op().out.pop_front());
            if let Some(result) = next {
                return Poll::Ready(Some(result));
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
