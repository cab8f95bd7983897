//! `WindowStream`: drives a window operator from the agent's keyed stream. On first poll it
//! creates the window's table (and changelog topic) and adds it to the instance, so it
//! recovers with the instance's other tables; then each record goes through the operator, and
//! a clock tick lets idle partitions close windows while no record arrives.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::state::{OnClose, WindowOperator, closed_windows};
use super::{Agg, Options, WindowKind, WindowResult, millis};
use crate::base::codec::KeyBytes;
use crate::base::error::Result;
use crate::base::message::encode_out;
use crate::base::record::Record;
use crate::base::spec::{Internal, TopicSpec};
use crate::ops::operator::{OperatorRunner, StateWrite, Stateful};
use crate::ops::stream::KeyedStream;

/// The results of a window: a `futures::Stream` of [`WindowResult`]s.
///
/// Reading the next result marks the previous one handled, as for records: the window's
/// deletion commits with the offsets of the records that closed it, after whatever the agent
/// sent for the result is durable.
pub struct WindowStream<K, V> {
    inner: Box<dyn DriveWindow<K, V>>,
}

/// A [`WindowDriver`] with its record and state types erased: what a `WindowStream<K, V>` holds.
trait DriveWindow<K, V>: Send {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<WindowResult<K, V>>>;
    fn set_on_close(&mut self, f: OnClose<K, V>);
}

impl<K: Send + 'static, V: Send + 'static> WindowStream<K, V> {
    pub(crate) fn new<T, S>(
        keyed: KeyedStream<T, K>,
        kind: WindowKind,
        options: Options,
        name: String,
        agg: Arc<Agg<T, S, V>>,
    ) -> Self
    where
        T: Record,
        K: KeyBytes + Serialize + DeserializeOwned + Clone + Send + Sync,
        S: Serialize + DeserializeOwned + Clone + Send + 'static,
    {
        let KeyedStream { stream, key, .. } = keyed;
        let idle = options
            .idle_timeout
            .or_else(|| stream.core.pipeline().map(|p| p.config().idle_timeout))
            .unwrap_or(Duration::from_secs(10));
        let (grace, emit, idle_ms) = (options.grace, options.emit, millis(idle));
        let pipeline = stream.core.pipeline().cloned();
        let mut runner = OperatorRunner::new(
            stream,
            "window",
            name,
            "windows apply to an agent's own stream, re-keyed with `group_by`",
            idle,
            closed_windows(kind),
            move || WindowOperator::new(kind, grace, idle_ms, emit, agg),
        );
        if let (Some(topic), Some(pipeline)) = (options.late_topic.clone(), pipeline) {
            runner.before_setup(async move {
                let mut spec = TopicSpec::of::<T>(&topic, "late events of a window");
                spec.internal = Some(Internal::DeadLetters);
                pipeline.ensure_topic(spec).await
            });
        }
        WindowStream {
            inner: Box::new(WindowDriver {
                runner,
                key,
                options,
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

impl<T, K, S, V> Stateful for WindowOperator<T, K, S, V>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    K: KeyBytes + Serialize + DeserializeOwned + Clone + Send + 'static,
    S: Serialize + DeserializeOwned + Clone + Send + 'static,
    V: Send + 'static,
{
    type Out = WindowResult<K, V>;

    fn clear(&mut self) {
        WindowOperator::clear(self);
    }

    fn has_partition(&self, partition: i32) -> bool {
        WindowOperator::has_partition(self, partition)
    }

    fn load(&mut self, partition: i32, entries: Vec<(Vec<u8>, Vec<u8>)>, now: i64) -> Result<()> {
        WindowOperator::load(self, partition, entries, now)
    }

    fn heard(&mut self, partition: i32, pump: u64, watermark: i64, now: i64) {
        WindowOperator::heard(self, partition, pump, watermark, now);
    }

    fn advance(&mut self, now: i64, floor: i64, caught_up: &std::collections::HashSet<i32>) {
        WindowOperator::advance(self, now, floor, caught_up);
    }

    fn must_advance(&self, now: i64) -> bool {
        WindowOperator::must_advance(self, now)
    }

    fn dirty(&self) -> bool {
        WindowOperator::dirty(self)
    }

    fn take_writes(&mut self) -> Result<Vec<StateWrite>> {
        WindowOperator::take_writes(self)
    }

    fn expire_by_age(&mut self, changelog: Option<&crate::instance::table::Expiring>) {
        WindowOperator::expire_by_age(self, changelog.map(|e| (e.retention, e.by_age)));
    }

    fn next_out(&mut self) -> Option<WindowResult<K, V>> {
        self.out.pop_front()
    }

    fn report(&mut self, stats: &crate::base::metrics::AgentStats) {
        // Called after every record: no shared counter touched when none closed.
        let closed = std::mem::take(&mut self.counts.closed);
        if closed > 0 {
            stats.windows_closed.fetch_add(closed, Ordering::Relaxed);
        }
    }
}

/// Feeds a window's keyed records to its [`WindowOperator`] through the runner.
struct WindowDriver<T, K, S, V> {
    runner: OperatorRunner<T, WindowOperator<T, K, S, V>>,
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    options: Options,
}

/// Feeds one record to the window; a late one goes to the late topic, or is counted.
fn handle<T, K, S, V>(
    runner: &mut OperatorRunner<T, WindowOperator<T, K, S, V>>,
    key: &Arc<dyn Fn(&T) -> K + Send + Sync>,
    options: &Options,
    item: T,
) -> Result<()>
where
    T: Record,
    K: KeyBytes + Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    S: Serialize + DeserializeOwned + Clone + Send + 'static,
    V: Send + 'static,
{
    let k = key(&item);
    let late = runner.record(|op, at| {
        op.on_record(
            at.partition,
            k,
            at.time,
            item,
            at.now,
            at.upstream,
            at.offset,
        )
    })?;
    if let Some(Some(item)) = late {
        let shared = &runner.shared;
        shared.stats.late_records.fetch_add(1, Ordering::Relaxed);
        match &options.late_topic {
            Some(topic) => {
                // Sent in the next commit step, before the offsets it stands for; stamped
                // now, as dead letters are (its event time is old: it is late).
                let current = shared.event_time();
                let mut record = encode_out(
                    topic.as_str(),
                    runner.stream.codec,
                    item.key(),
                    &item,
                    current,
                )?;
                let event_time = record.timestamp;
                crate::base::failure::stamp_now(&mut record, Some(event_time));
                shared.push_dead(record);
            }
            None => {
                tracing::debug!(agent = %shared.agent, window = ?options.name, "dropping a late record");
            }
        }
    }
    Ok(())
}

impl<T, K, S, V> DriveWindow<K, V> for WindowDriver<T, K, S, V>
where
    T: Record,
    K: KeyBytes + Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    S: Serialize + DeserializeOwned + Clone + Send + 'static,
    V: Send + 'static,
{
    fn set_on_close(&mut self, f: OnClose<K, V>) {
        self.runner.configure(move |op| op.on_close = Some(f));
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<WindowResult<K, V>>> {
        let WindowDriver {
            runner,
            key,
            options,
        } = self;
        runner.poll(cx, |runner, item| handle(runner, key, options, item))
    }
}
