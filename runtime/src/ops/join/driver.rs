//! `JoinStream`: drives a join operator from the agent's two-sided stream, through the
//! machinery windows use (`operator::OperatorRunner`): the join's table, flushing at each
//! commit step, reloading after assignments, ticking while idle.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::state::{Bounds, JoinOperator, Side, expired_records};
use crate::base::error::Result;
use crate::ops::operator::StateWrite;
use crate::ops::operator::{OperatorRunner, Stateful};
use crate::ops::stream::Stream;

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
    inner: Box<dyn DriveJoin<O>>,
}

/// A [`JoinDriver`] with its sides' types erased: what a `JoinStream<O>` holds.
trait DriveJoin<O>: Send {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<O>>;
}

impl<O: Send + 'static> JoinStream<O> {
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
        let idle = idle_timeout
            .or_else(|| stream.core.pipeline().map(|p| p.config().idle_timeout))
            .unwrap_or(Duration::from_secs(10));
        let idle_ms = crate::ops::window::millis(idle);
        let runner = OperatorRunner::new(
            stream,
            "join",
            name,
            "joins apply to an agent's own streams",
            idle,
            Some(expired_records()),
            move || JoinOperator::new(bounds, idle_ms, outer.0, outer.1),
        );
        JoinStream {
            inner: Box::new(JoinDriver { runner, shape }),
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

impl<A, B> Stateful for JoinOperator<A, B>
where
    A: Serialize + DeserializeOwned + Clone + Send + 'static,
    B: Serialize + DeserializeOwned + Clone + Send + 'static,
{
    type Out = (Option<A>, Option<B>);

    fn clear(&mut self) {
        JoinOperator::clear(self);
    }

    fn has_partition(&self, partition: i32) -> bool {
        JoinOperator::has_partition(self, partition)
    }

    fn load(&mut self, partition: i32, entries: Vec<(Vec<u8>, Vec<u8>)>, now: i64) -> Result<()> {
        JoinOperator::load(self, partition, entries, now)
    }

    fn heard(&mut self, partition: i32, pump: u64, watermark: i64, now: i64) {
        JoinOperator::heard(self, partition, pump, watermark, now);
    }

    fn advance(&mut self, now: i64, floor: i64, caught_up: &HashSet<i32>) {
        JoinOperator::advance(self, now, floor, caught_up);
    }

    fn must_advance(&self, now: i64) -> bool {
        JoinOperator::must_advance(self, now)
    }

    fn dirty(&self) -> bool {
        JoinOperator::dirty(self)
    }

    fn take_writes(&mut self) -> Result<Vec<StateWrite>> {
        JoinOperator::take_writes(self)
    }

    fn expire_by_age(&mut self, changelog: Option<&crate::instance::table::Expiring>) {
        JoinOperator::expire_by_age(self, changelog.map(|e| (e.retention, e.by_age)));
    }

    fn next_out(&mut self) -> Option<Self::Out> {
        self.out.pop_front()
    }
}

/// Feeds a join's two-sided records to its [`JoinOperator`] through the runner, and shapes its
/// results into the join's items.
struct JoinDriver<A, B, O> {
    runner: OperatorRunner<Keyed<A, B>, JoinOperator<A, B>>,
    shape: Shape<A, B, O>,
}

impl<A, B, O> DriveJoin<O> for JoinDriver<A, B, O>
where
    A: Serialize + DeserializeOwned + Clone + Send + 'static,
    B: Serialize + DeserializeOwned + Clone + Send + 'static,
    O: Send + 'static,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<O>> {
        loop {
            let polled = self.runner.poll(cx, |runner, (record, key)| {
                let late = runner.record(|op, at| {
                    op.on_record(
                        at.partition,
                        key,
                        at.time,
                        record,
                        at.now,
                        at.upstream,
                        at.offset,
                    )
                })?;
                if late == Some(true) {
                    runner
                        .shared
                        .stats
                        .late_records
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(agent = %runner.shared.agent, "join: dropping a late record");
                }
                Ok(())
            });
            match polled {
                Poll::Ready(Some((left, right))) => {
                    if let Some(item) = (self.shape)(left, right) {
                        return Poll::Ready(Some(item));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
