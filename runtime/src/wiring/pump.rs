//! The `group_by` pump: the task an instance's source stream becomes once the agent re-keys it.
//! It decodes each record, keys it by the new field and produces the original bytes to the
//! repartition topic; its source offsets commit after those sends are durable, through the
//! same commit step as any agent (the source's record loop now runs under the pump's context).
//! When a window or join reads the repartition topic, records carry the pump's watermark (see
//! `base::watermark`), and a pump with nothing to read tells every partition where it is.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use crate::base::error::Error;
use crate::base::failure::{Failure, FailureKind};
use crate::base::message::{Headers, OutRecord, RawRecord, now_millis};
use crate::base::time::Clock;
use crate::base::watermark::{self, SourceClock};
use crate::instance::context::{CURRENT, InstanceState};
use crate::instance::record_loop::RecordLoop;
use crate::instance::record_loop::setup::KeyOf;

/// How long shutdown waits for pumps after the agents stopped.
pub(crate) const PUMP_GRACE: Duration = Duration::from_secs(10);

/// One instance's pump: its source, where it sends, and its watermark.
pub(crate) struct Pump {
    /// The instance's source stream, handed over to the pump.
    pub(crate) source: RecordLoop,
    /// The pump's context: its sends, the source's offsets and failed records.
    pub(crate) shared: Arc<InstanceState>,
    /// The agent's context, failed when a send fails.
    pub(crate) agent: Arc<InstanceState>,
    pub(crate) key_of: KeyOf,
    /// The repartition topic and its number of partitions.
    pub(crate) topic: Arc<str>,
    pub(crate) partitions: i32,
    /// The source whose registry-coded keys place the agent's tables' keys: records go to the
    /// partition of their key's framed form there, as the tables look for it.
    pub(crate) key_topic: Option<Arc<str>>,
    /// A join's side topics (empty for `group_by`): the pump tags each record with its side's
    /// topic and keeps a clock per side.
    pub(crate) sides: Vec<Arc<str>>,
    pub(crate) watermarks: SourceClock,
    /// Set once a window or join reads the repartition topic: records then carry watermarks.
    pub(crate) windowed: Arc<AtomicBool>,
    pub(crate) clock: Clock,
}

/// What the source stream had for the pump.
enum Step {
    /// A record, in `RecordLoop::take_current`.
    Record,
    /// Nothing for now, and a watermark not yet told to every partition.
    Idle,
    /// The source ended (the worker stops, or the agent failed).
    End,
}

/// The instance's owned and caught-up source partitions as of the last record, which its
/// watermark needs: read again only when an assignment or a catch-up changed them.
struct Owned {
    version: u64,
    partitions: Vec<i32>,
    caught_up: HashSet<i32>,
}

impl Owned {
    fn new() -> Self {
        Owned {
            version: u64::MAX,
            partitions: Vec::new(),
            caught_up: HashSet::new(),
        }
    }

    fn refresh(&mut self, shared: &InstanceState) -> &Self {
        let version = shared.caught_up_version.load(Ordering::Acquire)
            ^ shared
                .position
                .assignment
                .load(Ordering::Acquire)
                .rotate_left(32);
        if version != self.version {
            *self = Owned {
                version,
                partitions: shared.position.owned_partitions(),
                caught_up: shared.caught_up(),
            };
        }
        self
    }
}

impl Pump {
    /// Runs the pump as a task, under its own context.
    pub(crate) fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(CURRENT.scope(self.shared.clone(), self.run()))
    }

    async fn run(mut self) {
        let mut owned = Owned::new();
        loop {
            match self.next_step().await {
                Step::End => break,
                Step::Idle => self.broadcast_watermark().await,
                Step::Record => {
                    let Some(raw) = self.source.take_current() else {
                        continue;
                    };
                    if self.forward(raw, &mut owned).await.is_break() {
                        break;
                    }
                }
            }
        }
        if let Some(e) = self.shared.take_fatal() {
            self.agent.fail(e);
        }
    }

    async fn next_step(&mut self) -> Step {
        futures::future::poll_fn(|cx| match self.source.poll_raw(cx) {
            Poll::Ready(Some(_)) => Poll::Ready(Step::Record),
            Poll::Ready(None) => Poll::Ready(Step::End),
            // Nothing to read for now (not a yield of the cooperative budget, records
            // in hand): tell every partition where the pump is.
            Poll::Pending
                if self.watermarks.unsent()
                    && self.windowed.load(Ordering::Acquire)
                    && tokio::task::coop::has_budget_remaining() =>
            {
                Poll::Ready(Step::Idle)
            }
            Poll::Pending => Poll::Pending,
        })
        .await
    }

    /// Sends the pump's watermark, if it moved, to every partition as a marker (no key, no
    /// value).
    async fn broadcast_watermark(&mut self) {
        let Some(stamp) = self.watermarks.take_broadcast() else {
            return;
        };
        for partition in 0..self.partitions {
            let marker = OutRecord {
                topic: self.topic.clone(),
                partition: Some(partition),
                key: None,
                value: None,
                timestamp: now_millis(),
                headers: Headers(vec![(
                    watermark::HEADER.to_owned(),
                    Some(stamp.clone().into_bytes()),
                )]),
            };
            if let Err(e) = self.shared.send(marker, None).await {
                self.agent.fail(e);
            }
        }
    }

    /// Keys `raw` and sends it to the repartition topic; breaks when the send failed (the
    /// agent then fails with it). A record that cannot be keyed is a decode failure.
    async fn forward(&mut self, raw: RawRecord, owned: &mut Owned) -> ControlFlow<()> {
        let keyed = match &raw.value {
            Some(_) => (self.key_of)(&raw),
            None => Err(Error::Codec {
                topic: raw.topic.to_string(),
                source: crate::base::error::CodecError::NullValue,
            }),
        };
        match keyed {
            Ok((key, at)) => {
                let record = self.rekeyed(raw, key, at, owned);
                if let Err(e) = self.shared.send(record, None).await {
                    self.agent.fail(e);
                    return ControlFlow::Break(());
                }
            }
            Err(e) => {
                // The agent's failure policy applies (at the pump's next record).
                self.shared.record_failed(
                    &raw,
                    Failure {
                        kind: FailureKind::Decode,
                        message: format!("group_by: {e}"),
                    },
                );
            }
        }
        ControlFlow::Continue(())
    }

    /// The record `raw` becomes under its new key: its original value, its event time as the
    /// message timestamp, the pump's watermark (and a join side's topic) in headers.
    fn rekeyed(
        &mut self,
        mut raw: RawRecord,
        key: Option<Vec<u8>>,
        at: Option<i64>,
        owned: &mut Owned,
    ) -> OutRecord {
        let time = at.or(raw.timestamp).unwrap_or_else(now_millis);
        let owned = owned.refresh(&self.shared);
        // A join's side: the topic the record stands for, tagged on it below.
        let tag =
            (!self.sides.is_empty()).then(|| crate::base::failure::side_topic(&raw).to_owned());
        let side = tag
            .as_deref()
            .and_then(|t| self.sides.iter().position(|s| &**s == t))
            .unwrap_or(0);
        let stamp = self.watermarks.observe(
            side,
            raw.partition,
            time,
            self.clock.now_ms(),
            &owned.partitions,
            &owned.caught_up,
        );
        let mut headers = std::mem::take(&mut raw.headers);
        headers.0.retain(|(name, _)| name != watermark::HEADER);
        if let Some(tag) = tag
            && headers.get(crate::base::message::header::TOPIC).is_none()
        {
            headers.insert(crate::base::message::header::TOPIC, tag.into_bytes());
        }
        if self.windowed.load(Ordering::Relaxed) {
            headers.insert(watermark::HEADER, stamp);
        }
        // The record's event time travels as the message timestamp, the pump's
        // watermark in a header.
        let partition = match (&self.key_topic, &key) {
            (Some(topic), Some(key)) => {
                let placed = crate::base::registry_keys::wire_key(topic, key);
                Some(crate::base::partitioner::partition_for_key(
                    &placed,
                    self.partitions,
                ))
            }
            _ => None,
        };
        OutRecord {
            topic: self.topic.clone(),
            partition,
            key,
            value: raw.value.take().map(Vec::from),
            timestamp: time,
            headers,
        }
    }
}
