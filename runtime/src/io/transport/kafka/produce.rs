//! Delivery tracking for the worker's Kafka producer (at-least-once).
//!
//! A commit step waits until every record its agent instance sent since the previous step is
//! acknowledged, and needs the next offset of each partition written (tables record their
//! changelog position). Instead of a future per record (rdkafka's `FutureProducer`: a oneshot
//! channel allocated, completed and polled per record), records carry an `Arc<Deliveries>` of
//! their batch as librdkafka's delivery opaque; the delivery callback, on the producer's
//! polling thread, counts the batch down and keeps each partition's highest offset, and the
//! step awaits one count. A batch is an instance's sends between two steps, or a `Producer`'s
//! between two flushes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};

use super::client::{LogContext, owned_headers};
use crate::base::error::{Error, Result};
use crate::base::message::OutRecord;
use crate::io::transport::{Pending, Tp};

type FoldHash = foldhash::fast::RandomState;
/// Next offset per partition of one topic.
type Partitions = HashMap<i32, i64, FoldHash>;

/// The deliveries of one batch of sends.
#[derive(Default)]
pub(crate) struct Deliveries {
    /// Records enqueued and not yet acknowledged (or failed).
    outstanding: AtomicUsize,
    /// Next offset per topic and partition, from the acknowledgements (foldhash: looked up
    /// once per delivered record).
    next: Mutex<HashMap<Arc<str>, Partitions, FoldHash>>,
    /// The first delivery error.
    error: Mutex<Option<KafkaError>>,
    done: tokio::sync::Notify,
}

impl Deliveries {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn delivered(&self, result: &DeliveryResult<'_>) {
        match result {
            Ok(message) => {
                let (topic, partition, offset) =
                    (message.topic(), message.partition(), message.offset());
                let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
                let partitions = match next.get_mut(topic) {
                    Some(p) => p,
                    None => next.entry(Arc::from(topic)).or_default(),
                };
                let at = partitions.entry(partition).or_insert(0);
                *at = (*at).max(offset + 1);
            }
            Err((error, _)) => {
                self.error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| error.clone());
            }
        }
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_waiters();
        }
    }

    /// Waits until every record enqueued so far is acknowledged; the next offset of each
    /// partition written, or the first delivery error.
    pub(crate) async fn wait(&self) -> Result<HashMap<Tp, i64>> {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.outstanding.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
        // Kept (not taken): a batch can be awaited twice (a send that raced a flush of
        // `Producer` clones lands in the next flush), and each wait must see the failure.
        if let Some(error) = self
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Err(Error::kafka("delivering a produced record", error.clone()));
        }
        let next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        Ok(next
            .iter()
            .flat_map(|(topic, parts)| parts.iter().map(|(p, o)| ((topic.clone(), *p), *o)))
            .collect())
    }
}

/// The worker producer's context: librdkafka's logs into `tracing`, deliveries into their
/// batch.
#[derive(Clone, Default)]
pub(crate) struct DeliveryContext;

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        LogContext.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        LogContext.error(error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<Deliveries>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<Deliveries>) {
        batch.delivered(result);
    }
}

/// The worker's producer, shared by its agents: deliveries count down their batch.
pub(crate) type WorkerProducer = ThreadedProducer<DeliveryContext>;

/// A record as librdkafka is handed it (borrowed: librdkafka copies key and value).
pub(crate) struct Outgoing<'a> {
    pub(crate) topic: &'a str,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) partition: Option<i32>,
    pub(crate) timestamp: i64,
    pub(crate) headers: Option<&'a OwnedHeaders>,
}

impl<'a> Outgoing<'a> {
    pub(crate) fn of(r: &'a OutRecord, headers: Option<&'a OwnedHeaders>) -> Self {
        Outgoing {
            topic: &r.topic,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            partition: r.partition,
            timestamp: r.timestamp,
            headers,
        }
    }
}

/// Enqueues `r` in librdkafka, counted in `batch`. `Ok(false)`: librdkafka's queue is full
/// (nothing was enqueued; try again once it drains).
pub(crate) fn try_produce(
    producer: &WorkerProducer,
    r: &Outgoing<'_>,
    batch: &Arc<Deliveries>,
) -> std::result::Result<bool, KafkaError> {
    let mut record: BaseRecord<'_, [u8], [u8], Arc<Deliveries>> =
        BaseRecord::with_opaque_to(r.topic, batch.clone()).timestamp(r.timestamp);
    if let Some(k) = r.key {
        record = record.key(k);
    }
    if let Some(v) = r.value {
        record = record.payload(v);
    }
    if let Some(p) = r.partition {
        record = record.partition(p);
    }
    if let Some(h) = r.headers {
        record = record.headers(h.clone());
    }
    batch.outstanding.fetch_add(1, Ordering::AcqRel);
    let result = producer.send(record);
    if result.is_err() {
        // Never enqueued: no delivery report will count it down.
        if batch.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            batch.done.notify_waiters();
        }
    }
    match result {
        Ok(()) => Ok(true),
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Ok(false),
        Err((e, _)) => Err(e),
    }
}

/// Enqueues `r` in librdkafka, counted in `batch`, waiting while librdkafka's queue is full.
pub(crate) async fn produce(
    producer: &WorkerProducer,
    r: &OutRecord,
    batch: &Arc<Deliveries>,
) -> std::result::Result<(), KafkaError> {
    let headers = owned_headers(r);
    let out = Outgoing::of(r, headers.as_ref());
    while !try_produce(producer, &out, batch)? {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// At-least-once: waits for the deliveries of the batches `pending` counts (each once: their
/// records share it) and returns the next offset of every partition written.
pub(super) async fn wait_for_deliveries(pending: Vec<Pending>) -> Result<HashMap<Tp, i64>> {
    let mut batches: Vec<Arc<Deliveries>> = Vec::new();
    for p in pending {
        if let Pending::Enqueued(batch) = p
            && !batches.last().is_some_and(|b| Arc::ptr_eq(b, &batch))
            && !batches.iter().any(|b| Arc::ptr_eq(b, &batch))
        {
            batches.push(batch);
        }
    }
    let mut produced: HashMap<Tp, i64> = HashMap::new();
    for batch in batches {
        for (tp, next) in batch.wait().await? {
            let at = produced.entry(tp).or_insert(0);
            *at = (*at).max(next);
        }
    }
    Ok(produced)
}
