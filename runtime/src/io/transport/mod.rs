//! Transports carry topics: Kafka through rdkafka, or the embedded LMDB log. Both present the
//! same shape to the runtime:
//!
//! - a *fetcher* per agent (a plain thread) that owns the group membership, reads the assigned
//!   partitions and hands batches to the agent's instances through a [`Router`];
//! - a [`Committer`] the instances use at each commit step;
//! - a [`ProducerBackend`] agents send through.
//!
//! Assignment changes travel as [`Control`] messages, so an instance finishes and commits its
//! work on revoked partitions before the fetcher gives them up.

pub(crate) mod delivery;
pub(crate) mod embedded;
pub(crate) mod kafka;
pub(crate) mod purge;
pub(crate) mod txn;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::base::error::{Error, Result};
use crate::base::message::{OutRecord, RawRecord};
use crate::base::spec::TopicSpec;

/// A topic partition.
pub(crate) type Tp = (Arc<str>, i32);

/// Records for one instance, tagged with the assignment generation they were fetched under.
pub(crate) struct Batch {
    pub(crate) generation: u64,
    pub(crate) records: Vec<RawRecord>,
    /// Partitions whose end this fetch reached, after the records above: nothing more was
    /// there to read (windows let such partitions go idle; see `window`).
    pub(crate) caught_up: Vec<Tp>,
}

/// Assignment changes, sent to every instance of an agent.
pub(crate) enum Control {
    /// Partitions were assigned; batches of `generation` follow.
    Assigned {
        generation: u64,
        partitions: Vec<Tp>,
    },
    /// Everything is being taken away: commit what is done, then acknowledge.
    Revoked {
        generation: u64,
        ack: std_mpsc::SyncSender<()>,
    },
}

/// The channels to one agent instance.
pub(crate) struct InstanceTx {
    pub(crate) data: mpsc::Sender<Batch>,
    pub(crate) ctrl: mpsc::UnboundedSender<Control>,
}

/// Routes fetched records to instances: partition `p` goes to instance `p % n`, so order holds
/// per partition and co-partitioned topics meet in one instance.
pub(crate) struct Router {
    pub(crate) agent: String,
    instances: Vec<InstanceTx>,
    generation: std::sync::atomic::AtomicU64,
    revoke_timeout: Duration,
    /// What the consumer owns now (for metrics and table queries).
    pub(crate) assignment: std::sync::Mutex<Vec<Tp>>,
    /// Consumer lag per owned partition, as the broker client last reported it (Kafka).
    pub(crate) lags: std::sync::Mutex<HashMap<Tp, i64>>,
    /// Assignments and revocations so far.
    pub(crate) assigned_count: std::sync::atomic::AtomicU64,
    pub(crate) revoked_count: std::sync::atomic::AtomicU64,
    /// Set when an exactly-once transaction was aborted: the fetcher goes back to the
    /// committed offsets and announces the assignment again.
    pub(crate) rewind: std::sync::atomic::AtomicBool,
}

impl Router {
    pub(crate) fn new(agent: &str, instances: Vec<InstanceTx>, revoke_timeout: Duration) -> Self {
        Router {
            agent: agent.to_owned(),
            instances,
            generation: std::sync::atomic::AtomicU64::new(0),
            revoke_timeout,
            assignment: std::sync::Mutex::new(Vec::new()),
            lags: std::sync::Mutex::new(HashMap::new()),
            assigned_count: std::sync::atomic::AtomicU64::new(0),
            revoked_count: std::sync::atomic::AtomicU64::new(0),
            rewind: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The current assignment generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Hands records to their instances; blocks while an instance's queue is full (backpressure).
    /// Returns false once every instance is gone.
    pub(crate) fn route(&self, records: Vec<RawRecord>, caught_up: Vec<Tp>) -> bool {
        self.route_fetched_in(self.generation(), records, caught_up)
    }

    /// Like `route`, for records fetched while `generation` was current: if the assignment
    /// changed since (a rebalance ran inside the fetch), they are dropped, because this worker
    /// may no longer own their partitions; the owner refetches them from the committed offset.
    pub(crate) fn route_fetched_in(
        &self,
        generation: u64,
        records: Vec<RawRecord>,
        caught_up: Vec<Tp>,
    ) -> bool {
        if generation != self.generation() {
            tracing::debug!(agent = %self.agent, dropped = records.len(), "dropping records fetched before a rebalance");
            return !self.all_closed();
        }
        let n = self.instances.len();
        if n == 1 {
            return self.instances[0]
                .data
                .blocking_send(Batch {
                    generation,
                    records,
                    caught_up,
                })
                .is_ok();
        }
        let mut split: Vec<(Vec<RawRecord>, Vec<Tp>)> =
            (0..n).map(|_| (Vec::new(), Vec::new())).collect();
        for r in records {
            split[(r.partition.unsigned_abs() as usize) % n].0.push(r);
        }
        for tp in caught_up {
            split[(tp.1.unsigned_abs() as usize) % n].1.push(tp);
        }
        let mut alive = false;
        for (tx, (records, caught_up)) in self.instances.iter().zip(split) {
            if records.is_empty() && caught_up.is_empty() {
                alive |= !tx.data.is_closed();
                continue;
            }
            alive |= tx
                .data
                .blocking_send(Batch {
                    generation,
                    records,
                    caught_up,
                })
                .is_ok();
        }
        alive
    }

    /// Announces a new assignment. Instances recover their tables' partitions before they
    /// take records of it.
    pub(crate) fn assigned(&self, partitions: Vec<Tp>) -> Result<()> {
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        let _span =
            tracing::info_span!("rill.rebalance", agent = %self.agent, kind = "assigned").entered();
        tracing::info!(agent = %self.agent, partitions = ?fmt_tps(&partitions), "partitions assigned");
        self.assigned_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.assignment.lock().unwrap_or_else(|p| p.into_inner()) = partitions.clone();
        for tx in &self.instances {
            let _ = tx.ctrl.send(Control::Assigned {
                generation,
                partitions: partitions.clone(),
            });
        }
        Ok(())
    }

    /// Revokes everything and waits until each live instance has committed its finished work.
    pub(crate) fn revoke(&self) {
        let _span =
            tracing::info_span!("rill.rebalance", agent = %self.agent, kind = "revoked").entered();
        self.revoked_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.assignment
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.lags.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        let mut acks = Vec::new();
        for tx in &self.instances {
            let (ack, rx) = std_mpsc::sync_channel(1);
            if tx.ctrl.send(Control::Revoked { generation, ack }).is_ok() {
                acks.push(rx);
            }
        }
        for rx in acks {
            // A dropped sender (instance gone) also ends the wait.
            if let Err(std_mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(self.revoke_timeout) {
                tracing::warn!(
                    agent = %self.agent,
                    timeout = ?self.revoke_timeout,
                    "an agent instance did not finish its record in time during a rebalance; its uncommitted records will be redelivered"
                );
            }
        }
        tracing::info!(agent = %self.agent, "partitions revoked");
    }

    pub(crate) fn all_closed(&self) -> bool {
        self.instances.iter().all(|tx| tx.data.is_closed())
    }
}

pub(crate) fn fmt_tps(tps: &[Tp]) -> Vec<String> {
    tps.iter().map(|(t, p)| format!("{t}[{p}]")).collect()
}

/// A send that is not yet durable: the commit step waits for it before committing offsets.
pub(crate) enum Pending {
    /// Enqueued in librdkafka, counted in its batch's deliveries.
    Kafka(Arc<delivery::Deliveries>),
    /// Held until the commit step: appended to the embedded log in the same LMDB transaction
    /// as the offsets, or (exactly-once on Kafka) produced in the commit's transaction.
    Buffered(OutRecord),
}

impl Pending {
    /// Appends this send to `list`. Kafka sends of one batch share one entry (the batch's
    /// `Deliveries` counts them), so `list.len()` grows with buffered records only: those are
    /// what commit steps triggered by a full buffer bound. An entry per Kafka send had such
    /// steps every 20,000 sends, each waiting for the previous step's deliveries.
    pub(crate) fn add_to(self, list: &mut Vec<Pending>) {
        match self {
            Pending::Kafka(batch) => Self::add_kafka(list, &batch),
            buffered => list.push(buffered),
        }
    }

    /// Appends a Kafka send counted in `batch` to `list` (cloning `batch` only for a new entry).
    pub(crate) fn add_kafka(list: &mut Vec<Pending>, batch: &Arc<delivery::Deliveries>) {
        if !matches!(list.last(), Some(Pending::Kafka(last)) if Arc::ptr_eq(last, batch)) {
            list.push(Pending::Kafka(batch.clone()));
        }
    }
}

/// Where agents' sends go.
#[derive(Clone)]
pub(crate) enum ProducerBackend {
    Embedded(Arc<embedded::EmbeddedLog>),
    Kafka(Arc<kafka::KafkaTransport>),
}

impl ProducerBackend {
    /// Sends are held until the commit step (the embedded log; exactly-once on Kafka): what
    /// [`ProducerBackend::enqueue`] returns is the record itself.
    pub(crate) fn buffers(&self) -> bool {
        !matches!(self, ProducerBackend::Kafka(k) if k.txn.is_none())
    }

    /// Enqueues a record; the returned `Pending` becomes durable at the next commit.
    /// `batch`: the deliveries a commit step (or flush) will wait for, on Kafka at-least-once.
    pub(crate) async fn enqueue(
        &self,
        record: OutRecord,
        batch: &Arc<delivery::Deliveries>,
    ) -> Result<Pending> {
        match self {
            ProducerBackend::Kafka(k) if k.txn.is_none() => {
                k.enqueue(record, batch).await?;
                Ok(Pending::Kafka(batch.clone()))
            }
            _ => Ok(Pending::Buffered(record)),
        }
    }

    /// Makes pending sends durable and returns the next offset of every partition written.
    /// On the embedded log `offsets` of `group` are stored in the same LMDB transaction; on
    /// Kafka they are left to [`ProducerBackend::commit_offsets`], after local state is stored.
    pub(crate) async fn deliver(
        &self,
        pending: Vec<Pending>,
        group: &str,
        offsets: &[(Tp, i64)],
    ) -> Result<HashMap<Tp, i64>> {
        self.deliver_in(pending, group, offsets, None, false).await
    }

    /// [`ProducerBackend::deliver`] for a commit step of an agent's consumer (`committer`):
    /// under exactly-once on Kafka the records and `offsets` go in one transaction.
    /// `on_tick`: the step is a commit interval's (the transaction waits briefly for the
    /// worker's other instances, committing on the same tick).
    pub(crate) async fn deliver_in(
        &self,
        pending: Vec<Pending>,
        group: &str,
        offsets: &[(Tp, i64)],
        committer: Option<&Committer>,
        on_tick: bool,
    ) -> Result<HashMap<Tp, i64>> {
        if let ProducerBackend::Kafka(k) = self
            && let Some(txn) = &k.txn
        {
            let records: Vec<OutRecord> = pending
                .into_iter()
                .filter_map(|p| match p {
                    Pending::Buffered(r) => Some(r),
                    Pending::Kafka(..) => None,
                })
                .collect();
            let offsets_committed = offsets;
            let offsets = match committer {
                Some(Committer::Kafka(c)) if !offsets.is_empty() => {
                    Some((c.group_metadata()?, offsets.to_vec()))
                }
                _ => None,
            };
            if records.is_empty() && offsets.is_none() {
                return Ok(HashMap::new());
            }
            let produced = txn
                .commit(txn::TxnPart {
                    records,
                    offsets,
                    on_tick,
                })
                .await?;
            if let Some(Committer::Kafka(c)) = committer {
                c.committed(offsets_committed);
            }
            return Ok(produced);
        }
        match self {
            ProducerBackend::Embedded(log) => {
                let records = pending
                    .into_iter()
                    .filter_map(|p| match p {
                        Pending::Buffered(r) => Some(r),
                        Pending::Kafka(..) => None,
                    })
                    .collect::<Vec<_>>();
                let offsets = (!offsets.is_empty()).then(|| (group.to_owned(), offsets.to_vec()));
                let log = log.clone();
                let (appended, records) = tokio::task::spawn_blocking(move || {
                    let appended = log.append(&records, offsets);
                    (appended, records)
                })
                .await
                .map_err(|e| Error::Shutdown(format!("embedded log writer: {e}")))?;
                // Freed here, on the thread that allocated them (most likely): freeing them
                // on the writer thread contended for the allocator's arena lock with the
                // agent's allocations.
                drop(records);
                appended
            }
            ProducerBackend::Kafka(_) => {
                // Each batch once (its records share it).
                let mut batches: Vec<Arc<delivery::Deliveries>> = Vec::new();
                for p in pending {
                    if let Pending::Kafka(batch) = p
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
        }
    }

    /// Commits consumer offsets where `deliver` did not already (Kafka).
    pub(crate) async fn commit_offsets(
        &self,
        committer: &Committer,
        offsets: Vec<(Tp, i64)>,
    ) -> Result<()> {
        if let (Committer::Kafka(c), false) = (committer, offsets.is_empty()) {
            if c.transactional {
                // Committed in the commit step's transaction.
                return Ok(());
            }
            let c = c.clone();
            let offsets = tokio::task::spawn_blocking(move || c.commit(&offsets).map(|()| offsets))
                .await
                .map_err(|e| Error::Shutdown(format!("offset commit: {e}")))??;
            if let Committer::Kafka(c) = committer {
                c.committed(&offsets);
            }
        }
        Ok(())
    }
}

/// Commits consumer offsets for one agent's group.
#[derive(Clone)]
pub(crate) enum Committer {
    /// Offsets are stored by the embedded log in the append transaction.
    Embedded,
    /// Offsets are committed through the agent's Kafka consumer.
    Kafka(Arc<kafka::KafkaCommitter>),
}

impl Committer {
    /// From now on, records below the offsets this group commits are deleted every
    /// `interval` (a repartition topic's consumer, on Kafka; see `purge`). The embedded log
    /// keeps its retention by size and append time instead.
    pub(crate) fn purge_consumed(&self, interval: Duration) {
        if let Committer::Kafka(c) = self {
            c.purge_consumed(interval);
        }
    }
}

/// The chosen transport.
#[derive(Clone)]
pub(crate) enum Transport {
    Embedded(Arc<embedded::EmbeddedLog>),
    Kafka(Arc<kafka::KafkaTransport>),
}

impl Transport {
    pub(crate) fn producer(&self) -> ProducerBackend {
        match self {
            Transport::Embedded(l) => ProducerBackend::Embedded(l.clone()),
            Transport::Kafka(k) => ProducerBackend::Kafka(k.clone()),
        }
    }

    /// Creates missing topics, checks the existing ones rill owns (partition counts, and
    /// topic configs on Kafka; see `TopicSpec::check_existing`) and returns every topic's
    /// partition count.
    pub(crate) async fn ensure_topics(
        &self,
        specs: &[TopicSpec],
        default_partitions: i32,
    ) -> Result<std::collections::HashMap<String, i32>> {
        match self {
            Transport::Embedded(log) => {
                let mut out = std::collections::HashMap::new();
                for spec in specs {
                    let n = log.ensure_topic_with(
                        &spec.name,
                        spec.partitions.unwrap_or(default_partitions),
                        spec.compacted,
                    )?;
                    // The embedded log has no topic configs to check beyond compaction, which
                    // it keeps as created.
                    spec.check_existing(n, None)?;
                    out.insert(spec.name.clone(), n);
                }
                Ok(out)
            }
            Transport::Kafka(k) => k.ensure_topics(specs, default_partitions).await,
        }
    }

    /// First and next offset of a partition.
    pub(crate) fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        match self {
            Transport::Embedded(log) => log.watermarks(topic, partition),
            Transport::Kafka(k) => k.watermarks(topic, partition),
        }
    }

    /// Starts the fetcher of one agent's consumer group.
    pub(crate) fn start_fetcher(
        &self,
        group: &str,
        topics: Vec<String>,
        router: Arc<Router>,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<(Committer, std::thread::JoinHandle<()>)> {
        match self {
            Transport::Embedded(log) => {
                let handle = embedded::spawn_fetcher(log.clone(), group, topics, router, stop)?;
                Ok((Committer::Embedded, handle))
            }
            Transport::Kafka(k) => {
                let (committer, handle) = k.spawn_fetcher(group, topics, router, stop)?;
                Ok((Committer::Kafka(committer), handle))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64) -> RawRecord {
        RawRecord {
            topic: Arc::from("t"),
            partition,
            offset,
            key: None,
            value: None,
            timestamp: None,
            headers: crate::base::message::Headers::default(),
        }
    }

    #[test]
    fn records_fetched_before_a_rebalance_are_not_delivered() {
        let (data, mut data_rx) = mpsc::channel(8);
        let (ctrl, _ctrl_rx) = mpsc::unbounded_channel();
        let router = Router::new("a", vec![InstanceTx { data, ctrl }], Duration::from_secs(1));
        let before = router.generation();
        router.assigned(vec![(Arc::from("t"), 0)]).unwrap();
        assert!(router.route_fetched_in(before, vec![record(0, 1)], Vec::new()));
        assert!(data_rx.try_recv().is_err(), "stale batch dropped");
        assert!(router.route_fetched_in(router.generation(), vec![record(0, 2)], Vec::new()));
        let batch = data_rx.try_recv().expect("current batch delivered");
        assert_eq!(batch.generation, router.generation());
        assert_eq!(batch.records[0].offset, 2);
    }

    #[test]
    fn kafka_sends_of_one_batch_share_one_pending_entry() {
        let (a, b) = (delivery::Deliveries::new(), delivery::Deliveries::new());
        let out = |n: i64| OutRecord {
            topic: Arc::from("t"),
            partition: None,
            key: None,
            value: Some(n.to_be_bytes().to_vec()),
            timestamp: n,
            headers: crate::base::message::Headers::default(),
        };
        let mut list = Vec::new();
        for p in [
            Pending::Kafka(a.clone()),
            Pending::Kafka(a.clone()),
            Pending::Buffered(out(1)),
            Pending::Buffered(out(2)),
            Pending::Kafka(a.clone()),
            Pending::Kafka(b.clone()),
            Pending::Kafka(b.clone()),
        ] {
            p.add_to(&mut list);
        }
        let kinds: Vec<String> = list
            .iter()
            .map(|p| match p {
                Pending::Kafka(d) if Arc::ptr_eq(d, &a) => "a".to_owned(),
                Pending::Kafka(_) => "b".to_owned(),
                Pending::Buffered(r) => r.timestamp.to_string(),
            })
            .collect();
        // Buffered records each keep their entry (and their order); a batch repeats only
        // after something else came between.
        assert_eq!(kinds, ["a", "1", "2", "a", "b"]);
    }

    #[test]
    fn partitions_spread_over_instances_by_number() {
        let mut rxs = Vec::new();
        let mut txs = Vec::new();
        for _ in 0..3 {
            let (data, rx) = mpsc::channel(8);
            let (ctrl, _) = mpsc::unbounded_channel();
            txs.push(InstanceTx { data, ctrl });
            rxs.push(rx);
        }
        let router = Router::new("a", txs, Duration::from_secs(1));
        assert!(router.route((0..6).map(|p| record(p, 0)).collect(), Vec::new()));
        for (i, rx) in rxs.iter_mut().enumerate() {
            let batch = rx.try_recv().expect("batch");
            let parts: Vec<i32> = batch.records.iter().map(|r| r.partition).collect();
            assert_eq!(parts, vec![i as i32, i as i32 + 3]);
        }
    }
}
