//! Exactly-once on Kafka: one transactional producer per worker and group commit.
//!
//! Under `ProcessingGuarantee::ExactlyOnce` agents' sends are buffered, not produced; each
//! commit step hands its records (outputs, changelog records, dead letters) and its consumed
//! offsets, with its consumer group's metadata, to [`Transactions::commit`]. Every instance
//! commits on the same ticks of the commit interval, and the first step of a tick waits a few
//! milliseconds for the others, so one transaction covers all the partitions the worker owns;
//! steps that arrive while a transaction is running (a `Stream::commit`, a slow instance) share
//! the next one. A worker runs one transaction at a time (EOS v2: the group
//! metadata fences a zombie that lost its partitions, and the stable `transactional.id`
//! fences the previous incarnation of this worker when it restarts, aborting its open
//! transaction).
//!
//! On an abortable error the transaction is aborted; on a fatal one (fenced) the producer is
//! replaced by a new one (`init_transactions`). Either way every commit step of that
//! transaction gets the error: nothing of it is visible to `read_committed` readers, and the
//! instances stop without committing past it (their records are read again by the next
//! owner or incarnation).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;

use super::client::{LogContext, owned_headers};
use super::commit::KafkaCommitter;
use crate::base::config::Config;
use crate::base::error::{Error, Result};
use crate::base::message::OutRecord;
use crate::io::transport::{Pending, Tp};

/// A producer fenced twice within this is racing another live worker with its id.
const FENCED_AGAIN: Duration = Duration::from_secs(30);

/// Transactions in a row aborted because a record is larger than the producer or broker
/// accepts, after which the worker stops: retrying the same records cannot succeed.
const TOO_LARGE_STREAK: u32 = 3;

/// How long transactional calls may take before they count as failed.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the first commit step of a transaction waits for the worker's other instances,
/// which commit on the same ticks (`RecordLoop::next_deadline`), before the transaction
/// begins: they then share it instead of each waiting for the previous one's commit.
const GATHER: Duration = Duration::from_millis(3);

/// One commit step's part of a transaction.
pub(crate) struct TxnPart {
    pub(crate) records: Vec<OutRecord>,
    /// Consumed offsets (next to read) of one consumer group, with its metadata.
    pub(crate) offsets: Option<(ConsumerGroupMetadata, Vec<(Tp, i64)>)>,
    /// A commit interval's step: the transaction it starts waits [`GATHER`] for the others.
    pub(crate) on_tick: bool,
}

type Reply = oneshot::Sender<std::result::Result<HashMap<Tp, i64>, String>>;

#[derive(Default)]
struct Queue {
    waiting: Vec<(TxnPart, Reply)>,
    running: bool,
}

/// The worker's transactional producer.
pub(crate) struct Transactions {
    config: ClientConfig,
    id: String,
    producer: Mutex<FutureProducer<LogContext>>,
    queue: Mutex<Queue>,
    /// When this producer was last fenced: fenced again soon after, another live worker uses
    /// the same `transactional.id`, and this one stops instead of fencing it back.
    fenced_at: Mutex<Option<std::time::Instant>>,
    /// Set when this worker must stop (see `fenced_at`).
    stopped: std::sync::atomic::AtomicBool,
    /// Why it must stop.
    stop_reason: Mutex<Option<String>>,
    /// Transactions aborted in a row by a record over `message.max.bytes`.
    too_large: std::sync::atomic::AtomicU32,
    /// Transactions committed and aborted (metrics).
    pub(crate) committed: std::sync::atomic::AtomicU64,
    pub(crate) aborted: std::sync::atomic::AtomicU64,
}

impl Transactions {
    /// Creates the producer and fences any previous incarnation (blocking).
    pub(crate) fn new(mut config: ClientConfig, id: &str) -> Result<Arc<Self>> {
        config
            .set("transactional.id", id)
            .set("enable.idempotence", "true")
            .set("transaction.timeout.ms", "60000");
        let producer = create(&config, id)?;
        tracing::info!(
            transactional_id = id,
            "exactly-once: transactional producer ready"
        );
        Ok(Arc::new(Transactions {
            config,
            id: id.to_owned(),
            producer: Mutex::new(producer),
            queue: Mutex::new(Queue::default()),
            fenced_at: Mutex::new(None),
            stopped: std::sync::atomic::AtomicBool::new(false),
            stop_reason: Mutex::new(None),
            too_large: std::sync::atomic::AtomicU32::new(0),
            committed: std::sync::atomic::AtomicU64::new(0),
            aborted: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// The worker's transactional producer, configured like its idempotent one
    /// (`producer_config`) but for transactions (blocking).
    pub(super) fn for_worker(producer_config: &ClientConfig, config: &Config) -> Result<Arc<Self>> {
        let mut txn_config = producer_config.clone();
        // A transaction's records are produced together at its commit, which waits
        // for them: lingering would only add its 5 ms to every commit. And a
        // transaction begun right after the previous one's commit may be refused
        // as concurrent for a moment: retry in 10 ms, not librdkafka's 100 ms.
        for (key, value) in [("linger.ms", "0"), ("retry.backoff.ms", "10")] {
            if !config.kafka.iter().any(|(k, _)| k == key) {
                txn_config.set(key, value);
            }
        }
        Transactions::new(txn_config, &transactional_id(config))
    }

    /// Exactly-once: a commit step's buffered records and `offsets` (with the consumer's group
    /// metadata) in one transaction, shared with the other steps of its tick.
    pub(super) async fn commit_step(
        self: &Arc<Self>,
        pending: Vec<Pending>,
        offsets: &[(Tp, i64)],
        committer: Option<&KafkaCommitter>,
        on_tick: bool,
    ) -> Result<HashMap<Tp, i64>> {
        let records: Vec<OutRecord> = pending
            .into_iter()
            .filter_map(|p| match p {
                Pending::Buffered(r) => Some(r),
                Pending::Enqueued(..) => None,
            })
            .collect();
        let group_offsets = match committer {
            Some(c) if !offsets.is_empty() => Some((c.group_metadata()?, offsets.to_vec())),
            _ => None,
        };
        if records.is_empty() && group_offsets.is_none() {
            return Ok(HashMap::new());
        }
        let produced = self
            .commit(TxnPart {
                records,
                offsets: group_offsets,
                on_tick,
            })
            .await?;
        if let Some(c) = committer {
            c.committed(offsets);
        }
        Ok(produced)
    }

    /// Commits `part` in a transaction (shared with the commit steps waiting meanwhile) and
    /// returns the next offset of every partition the transaction wrote.
    pub(crate) async fn commit(self: &Arc<Self>, part: TxnPart) -> Result<HashMap<Tp, i64>> {
        let (reply, answer) = oneshot::channel();
        let gather = part.on_tick;
        let lead = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.waiting.push((part, reply));
            !std::mem::replace(&mut q.running, true)
        };
        tracing::debug!(lead, "commit step queued for a transaction");
        if lead {
            let this = self.clone();
            tokio::spawn(async move {
                if gather {
                    tokio::time::sleep(GATHER).await;
                }
                this.run().await;
            });
        }
        let result = answer
            .await
            .map_err(|_| Error::Shutdown("the transaction runner stopped".into()))?;
        if self.stopped.load(std::sync::atomic::Ordering::Acquire) {
            let reason = self
                .stop_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            return Err(Error::Shutdown(reason));
        }
        result.map_err(Error::Transaction)
    }

    /// Runs transactions while commit steps wait.
    async fn run(self: Arc<Self>) {
        loop {
            let batch = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                if q.waiting.is_empty() {
                    q.running = false;
                    return;
                }
                std::mem::take(&mut q.waiting)
            };
            let (parts, replies): (Vec<TxnPart>, Vec<Reply>) = batch.into_iter().unzip();
            let result = self.transact(parts).await.map_err(|e| e.to_string());
            for reply in replies {
                let _ = reply.send(result.clone());
            }
        }
    }

    /// This worker must stop, with `reason`.
    fn stop(&self, reason: String) {
        self.stop_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(reason);
        self.stopped
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn producer(&self) -> FutureProducer<LogContext> {
        self.producer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn transact(&self, parts: Vec<TxnPart>) -> Result<HashMap<Tp, i64>> {
        let producer = self.producer();
        match attempt(&producer, parts).await {
            Ok(produced) => {
                self.committed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.too_large
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                Ok(produced)
            }
            Err(e) => {
                self.aborted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.recover(&producer, &e).await;
                let too_large = matches!(
                    e.rdkafka_error_code(),
                    Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge)
                );
                let streak = if too_large {
                    self.too_large
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        + 1
                } else {
                    self.too_large
                        .store(0, std::sync::atomic::Ordering::Relaxed);
                    0
                };
                if streak >= TOO_LARGE_STREAK {
                    tracing::error!(error = %e, "exactly-once: a record is too large for the producer, {streak} transactions in a row; stopping");
                    self.stop(format!(
                        "exactly-once: {streak} transactions in a row were aborted because a record is larger than `message.max.bytes` allows ({e}); raise `message.max.bytes` (`-X message.max.bytes=...`, and the broker's and topic's `max.message.bytes`) or send smaller records"
                    ));
                }
                Err(Error::kafka("an exactly-once transaction (aborted)", e))
            }
        }
    }

    /// After a failed transaction: abort it, or replace a fenced/fatally failed producer.
    async fn recover(&self, producer: &FutureProducer<LogContext>, e: &KafkaError) {
        let mut fatal = fenced(e);
        if !fatal {
            let p = producer.clone();
            let aborted = tokio::task::spawn_blocking(move || p.abort_transaction(TXN_TIMEOUT))
                .await
                .map_err(|_| KafkaError::Canceled)
                .and_then(|r| r);
            match aborted {
                Ok(()) => {
                    tracing::warn!(error = %e, "exactly-once: transaction aborted");
                    return;
                }
                // The produce error did not say so (e.g. `InvalidProducerEpoch` on a record),
                // but the abort does: fenced.
                Err(why) if fenced(&why) => fatal = true,
                Err(why) => {
                    tracing::warn!(error = %e, abort_error = %why, "exactly-once: abort failed; replacing the producer");
                }
            }
        }
        if fatal {
            let now = std::time::Instant::now();
            let again = self
                .fenced_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .replace(now)
                .is_some_and(|t| now.duration_since(t) < FENCED_AGAIN);
            if again {
                tracing::error!(error = %e, transactional_id = %self.id, "exactly-once: fenced again; another worker uses this transactional.id, stopping");
                self.stop(format!(
                    "exactly-once: the transactional producer `{}` was fenced twice within {FENCED_AGAIN:?}: another live worker uses the same transactional.id (the same data directory or RILL_WORKER_ID); this one stops",
                    self.id
                ));
                return;
            }
            tracing::warn!(error = %e, "exactly-once: producer fenced or failed; replacing it");
        }
        let (config, id) = (self.config.clone(), self.id.clone());
        match tokio::task::spawn_blocking(move || create(&config, &id)).await {
            Ok(Ok(fresh)) => {
                *self.producer.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "exactly-once: cannot create a new transactional producer")
            }
            Err(e) => {
                tracing::error!(error = %e, "exactly-once: creating a new transactional producer panicked")
            }
        }
    }
}

/// A fatal transactional error, or a broker saying a newer instance took over.
fn fenced(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    match e {
        KafkaError::Transaction(t) => t.is_fatal(),
        other => matches!(
            other.rdkafka_error_code(),
            Some(Code::Fenced | Code::ProducerFenced | Code::InvalidProducerEpoch)
        ),
    }
}

fn create(config: &ClientConfig, id: &str) -> Result<FutureProducer<LogContext>> {
    let producer: FutureProducer<LogContext> =
        config.create_with_context(LogContext).map_err(|e| {
            super::client::creation_error(
                config,
                format!("creating the transactional producer `{id}`"),
                e,
            )
        })?;
    producer
        .init_transactions(TXN_TIMEOUT)
        .map_err(|e| Error::kafka(format!("initializing transactions of `{id}`"), e))?;
    Ok(producer)
}

/// The worker's `transactional.id`: stable across restarts of one worker (so a restart
/// fences its previous incarnation and aborts its open transaction), distinct between workers:
/// `RILL_WORKER_ID`, else derived from the data directory.
fn transactional_id(config: &Config) -> String {
    if let Ok(id) = std::env::var("RILL_WORKER_ID")
        && !id.trim().is_empty()
    {
        return format!("rill-{}-{}", config.app_id, id.trim());
    }
    let dir = std::fs::canonicalize(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
    // FNV-1a: stable across builds (std's hasher is not promised to be).
    let hash = dir
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("rill-{}-{hash:016x}", config.app_id)
}

/// Enqueues a record in a (transactional) producer, waiting while its queue is full.
async fn send_record(
    producer: &FutureProducer<LogContext>,
    r: &OutRecord,
) -> std::result::Result<DeliveryFuture, KafkaError> {
    let headers = owned_headers(r);
    loop {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&r.topic).timestamp(r.timestamp);
        if let Some(k) = r.key.as_deref() {
            record = record.key(k);
        }
        if let Some(v) = r.value.as_deref() {
            record = record.payload(v);
        }
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        if let Some(h) = &headers {
            record = record.headers(h.clone());
        }
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// One transaction: begin, produce every record, add every group's offsets, commit.
async fn attempt(
    producer: &FutureProducer<LogContext>,
    parts: Vec<TxnPart>,
) -> std::result::Result<HashMap<Tp, i64>, KafkaError> {
    producer.begin_transaction()?;
    tracing::debug!(parts = parts.len(), "transaction begun");
    let mut deliveries = Vec::new();
    let mut offsets = Vec::new();
    for part in parts {
        for record in &part.records {
            let delivery = send_record(producer, record).await?;
            deliveries.push((record.topic.clone(), delivery));
        }
        if let Some(o) = part.offsets {
            offsets.push(o);
        }
    }
    for (cgm, list) in offsets {
        if list.is_empty() {
            continue;
        }
        let mut tpl = TopicPartitionList::with_capacity(list.len());
        for ((topic, partition), next) in &list {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        let p = producer.clone();
        tokio::task::spawn_blocking(move || p.send_offsets_to_transaction(&tpl, &cgm, TXN_TIMEOUT))
            .await
            .map_err(|_| KafkaError::Canceled)??;
    }
    let mut produced: HashMap<Tp, i64> = HashMap::new();
    for (topic, delivery) in deliveries {
        match delivery.await {
            Ok(Ok(d)) => {
                let next = produced.entry((topic, d.partition)).or_insert(0);
                *next = (*next).max(d.offset + 1);
            }
            Ok(Err((e, _))) => return Err(e),
            Err(_) => return Err(KafkaError::Canceled),
        }
    }
    tracing::debug!(
        records = produced.len(),
        "transaction delivered; committing"
    );
    let p = producer.clone();
    tokio::task::spawn_blocking(move || p.commit_transaction(TXN_TIMEOUT))
        .await
        .map_err(|_| KafkaError::Canceled)??;
    tracing::debug!("transaction committed");
    Ok(produced)
}
