//! A producer handle for code outside agents (`App::task`s, timers, tests, the `send` command).
//! Sends are enqueued and made durable by `flush` (or automatically when many are pending), like
//! a Kafka producer's batching. A timer's producer is atomic: where the log buffers sends (the
//! embedded log, exactly-once on Kafka) a run's sends are delivered together, in one
//! transaction on Kafka, or discarded when the run fails.

use std::sync::{Arc, Mutex};

use crate::base::codec::KeyBytes;
use crate::base::error::Result;
use crate::base::message::OutRecord;
use crate::base::message::encode_out;
use crate::base::record::Record;
use crate::instance::context::current_event_time;
use crate::io::transport::{Deliveries, Delivery, Log, Pending};
use crate::ops::topic::Topic;

/// Buffered sends (embedded log, exactly-once) flushed without waiting for `flush`.
const AUTO_FLUSH: usize = 10_000;

/// Sends records from outside agents.
#[derive(Clone)]
pub struct Producer {
    log: Arc<dyn Log>,
    /// Sends since the last flush, with the deliveries they are counted in (Kafka).
    pending: Arc<Mutex<(Vec<Pending>, Arc<Deliveries>)>>,
    /// Never flushes on its own: everything sent goes in one delivery (a timer's run).
    atomic: bool,
}

impl Producer {
    pub(crate) fn new(log: Arc<dyn Log>) -> Self {
        Producer {
            log,
            pending: Arc::new(Mutex::new((Vec::new(), Deliveries::new()))),
            atomic: false,
        }
    }

    /// A producer whose sends are delivered together by `flush` or dropped by `discard`.
    pub(crate) fn atomic(log: Arc<dyn Log>) -> Self {
        Producer {
            atomic: true,
            ..Producer::new(log)
        }
    }

    /// True when the worker runs on Kafka (examples generate input only when it does not).
    pub fn is_kafka(&self) -> bool {
        self.log.system() == "kafka"
    }

    /// Sends a value keyed by its `#[record(key)]` field.
    pub async fn send<K, V: Record>(&self, topic: &Topic<K, V>, value: &V) -> Result<()> {
        crate::wiring::schemas::ensure_writable::<V>(topic.name(), topic.codec()).await?;
        self.send_raw(encode_out(
            topic.name(),
            topic.codec(),
            value.key(),
            value,
            current_event_time(),
        )?)
        .await
    }

    /// Sends a value with an explicit key.
    pub async fn send_keyed<K: KeyBytes, V: Record>(
        &self,
        topic: &Topic<K, V>,
        key: &K,
        value: &V,
    ) -> Result<()> {
        crate::wiring::schemas::ensure_writable::<V>(topic.name(), topic.codec()).await?;
        self.send_raw(encode_out(
            topic.name(),
            topic.codec(),
            Some(key.key_bytes()),
            value,
            current_event_time(),
        )?)
        .await
    }

    /// Sends a value to a topic named by string, with the value type's codec.
    pub async fn send_to<V: Record>(&self, topic: &str, value: &V) -> Result<()> {
        crate::wiring::schemas::ensure_writable::<V>(topic, V::CODEC).await?;
        self.send_raw(encode_out(
            topic,
            V::CODEC,
            value.key(),
            value,
            current_event_time(),
        )?)
        .await
    }

    /// Sends an already encoded record.
    pub async fn send_raw(&self, record: OutRecord) -> Result<()> {
        let batch = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone();
        let pending = self.log.enqueue(record, &batch).await?;
        let len = {
            let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.add_to(&mut guard.0);
            guard.0.len()
        };
        if len >= AUTO_FLUSH && !self.atomic {
            self.flush().await?;
        }
        Ok(())
    }

    /// Waits until everything sent so far is durable (appended, or acknowledged by Kafka).
    pub async fn flush(&self) -> Result<()> {
        let pending = {
            let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            guard.1 = Deliveries::new();
            std::mem::take(&mut guard.0)
        };
        if pending.is_empty() {
            return Ok(());
        }
        self.log.deliver(Delivery::sends(pending)).await.map(|_| ())
    }

    /// Drops the sends not flushed yet: where the log buffers them (the embedded log,
    /// exactly-once on Kafka) none is ever seen; sends librdkafka already took (Kafka
    /// at-least-once) cannot be called back. Returns how many buffered sends were dropped.
    pub(crate) fn discard(&self) -> usize {
        let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        guard.1 = Deliveries::new();
        std::mem::take(&mut guard.0)
            .into_iter()
            .filter(|p| matches!(p, Pending::Buffered(_)))
            .count()
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_kafka() {
            "Producer(kafka)"
        } else {
            "Producer(embedded)"
        })
    }
}
