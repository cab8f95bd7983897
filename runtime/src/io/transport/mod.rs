//! Transports carry topics: Kafka through rdkafka, or the embedded LMDB log. Both implement
//! [`Log`], the one interface the runtime uses:
//!
//! - a *fetcher* per agent (a plain thread) that owns the group membership, reads the assigned
//!   partitions and hands batches to the agent's instances through a [`Router`];
//! - a [`Committer`] the instances use at each commit step;
//! - sends, held or enqueued until a commit step makes them durable ([`Pending`]).
//!
//! Assignment changes travel as [`Control`] messages, so an instance finishes and commits its
//! work on revoked partitions before the fetcher gives them up.

pub(crate) mod align;
pub(crate) mod channel;
pub(crate) mod embedded;
pub(crate) mod kafka;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::base::config::{Broker, Config, OffsetReset};
use crate::base::error::Result;
use crate::base::health::Health;
use crate::base::message::{OutRecord, RawRecord};
use crate::base::spec::TopicSpec;
pub(crate) use kafka::produce::{Deliveries, Outgoing};

/// A topic partition.
pub(crate) type Tp = (Arc<str>, i32);

/// Records a changelog or dead-letter read hands over at a time (`Log::read_range`): recovery
/// applies each batch in one LMDB transaction.
pub(crate) const READ_BATCH: usize = 10_000;

/// Records for one instance, tagged with the assignment generation they were fetched under.
pub(crate) struct Batch {
    pub(crate) generation: u64,
    pub(crate) records: Vec<RawRecord>,
    /// Partitions whose end this fetch reached, after the records above: nothing more was
    /// there to read (windows let such partitions go idle; see `window`).
    pub(crate) caught_up: Vec<Tp>,
    /// The fetch stopped at its size limit with records left to read: the instance reads a
    /// backlog (see `Config::backlog_commit_interval`).
    pub(crate) more: bool,
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
    /// Partitions the group took away so far (all owned ones at an eager revocation, the
    /// moving ones at a cooperative one).
    pub(crate) revoked_partitions: std::sync::atomic::AtomicU64,
    /// Set when an exactly-once transaction was aborted: the fetcher goes back to the
    /// committed offsets and announces the assignment again.
    pub(crate) rewind: std::sync::atomic::AtomicBool,
    /// Topics read to their end before the others after each assignment (the topics tables
    /// are built from, `AgentSpec::table_of`): the fetcher holds back the other topics'
    /// partitions meanwhile, so a table is complete before the records that look it up.
    pub(crate) bootstrap: Vec<Arc<str>>,
    /// How far ahead in event time one of the agent's topics may be read (`align.rs`).
    pub(crate) read_ahead: Option<Duration>,
    /// In step once the agent hosts a window or join: their watermark is the smallest over
    /// an instance's partitions, so even one topic's partitions are then read in step.
    pub(crate) read_mode: Arc<align::ReadMode>,
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
            revoked_partitions: std::sync::atomic::AtomicU64::new(0),
            rewind: std::sync::atomic::AtomicBool::new(false),
            bootstrap: Vec::new(),
            read_ahead: None,
            read_mode: Arc::new(align::ReadMode::independent()),
        }
    }

    /// An agent's router: its function decides whether one topic's partitions are read in
    /// step (see `align::ReadMode`).
    pub(crate) fn decided_by_agent(mut self) -> Self {
        self.read_mode = Arc::new(align::ReadMode::undecided());
        self
    }

    /// Keeps the agent's topics within `read_ahead` of each other in event time (`align.rs`).
    pub(crate) fn aligned(mut self, read_ahead: Option<Duration>) -> Self {
        self.read_ahead = read_ahead;
        self
    }

    /// Reads `topics` to their end before the others after each assignment (see `bootstrap`).
    pub(crate) fn bootstrapping(mut self, topics: &[String]) -> Self {
        self.bootstrap = topics.iter().map(|t| Arc::from(t.as_str())).collect();
        self
    }

    /// What the consumer owns now.
    pub(crate) fn current_assignment(&self) -> Vec<Tp> {
        self.assignment
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The partition numbers the consumer owns now, sorted (co-partitioned topics once).
    pub(crate) fn owned_partitions(&self) -> Vec<i32> {
        let mut owned: Vec<i32> = self
            .current_assignment()
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        owned.sort_unstable();
        owned.dedup();
        owned
    }

    /// Whether `topic` is read first after an assignment.
    pub(crate) fn is_bootstrap(&self, topic: &str) -> bool {
        self.bootstrap.iter().any(|t| &**t == topic)
    }

    /// The current assignment generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Hands records to their instances; blocks while an instance's queue is full (backpressure).
    /// Returns false once every instance is gone.
    /// `more`: the fetch stopped at its size limit with records left to read (`Batch::more`).
    pub(crate) fn route(&self, records: Vec<RawRecord>, caught_up: Vec<Tp>, more: bool) -> bool {
        self.route_fetched_in(self.generation(), records, caught_up, more)
    }

    /// Like `route`, for records fetched while `generation` was current: if the assignment
    /// changed since (a rebalance ran inside the fetch), they are dropped, because this worker
    /// may no longer own their partitions; the owner refetches them from the committed offset.
    pub(crate) fn route_fetched_in(
        &self,
        generation: u64,
        records: Vec<RawRecord>,
        caught_up: Vec<Tp>,
        more: bool,
    ) -> bool {
        if generation != self.generation() {
            tracing::debug!(agent = %self.agent, dropped = records.len(), "dropping records fetched before a rebalance");
            return !self.all_closed();
        }
        let n = self.instances.len();
        if n == 1 {
            return self.hand_over(
                &self.instances[0],
                Batch {
                    generation,
                    records,
                    caught_up,
                    more,
                },
            );
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
            alive |= self.hand_over(
                tx,
                Batch {
                    generation,
                    records,
                    caught_up,
                    more,
                },
            );
        }
        alive
    }

    /// Hands `batch` to an instance, waiting while its queue is full (backpressure); false once
    /// the instance is gone. A rollback requested meanwhile drops the batch: the instance then
    /// waits for the assignment to be announced again, not for records, so its queue would not
    /// drain and the fetcher would never get to the re-read that announces it. The re-read
    /// fetches the dropped records again from the committed offsets.
    fn hand_over(&self, tx: &InstanceTx, batch: Batch) -> bool {
        use tokio::sync::mpsc::error::TrySendError;
        let mut batch = match tx.data.try_send(batch) {
            Ok(()) => return true,
            Err(TrySendError::Closed(_)) => return false,
            Err(TrySendError::Full(b)) => b,
        };
        let mut pause = Duration::from_micros(100);
        loop {
            if self.rewind.load(std::sync::atomic::Ordering::Acquire) {
                return true;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
            batch = match tx.data.try_send(batch) {
                Ok(()) => return true,
                Err(TrySendError::Closed(_)) => return false,
                Err(TrySendError::Full(b)) => b,
            };
        }
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

    /// The group revokes `partitions` (eager: all of them): every instance commits its
    /// finished work and drops the rest (see [`Router::take_back`]).
    pub(crate) fn revoke(&self, partitions: usize) {
        let _span =
            tracing::info_span!("rill.rebalance", agent = %self.agent, kind = "revoked").entered();
        self.revoked_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.revoked_partitions
            .fetch_add(partitions as u64, std::sync::atomic::Ordering::Relaxed);
        self.take_back();
        tracing::info!(agent = %self.agent, partitions, "partitions revoked");
    }

    /// Before partitions are added to a cooperative assignment: every instance commits and
    /// drops what it holds, and the assignment is announced again with the new partitions (the
    /// fetcher reads the kept ones again from their committed offsets). Not a revocation: the
    /// group took nothing away.
    pub(crate) fn pause_for_change(&self) {
        let _span =
            tracing::info_span!("rill.rebalance", agent = %self.agent, kind = "extended").entered();
        self.take_back();
    }

    /// Takes every partition back from the instances and waits until each live one has
    /// committed its finished work.
    fn take_back(&self) {
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
    /// Enqueued in a client that delivers it itself (librdkafka), counted in its batch's
    /// deliveries.
    Enqueued(Arc<Deliveries>),
    /// Held until the commit step: appended to the embedded log in the same LMDB transaction
    /// as the offsets, or (exactly-once on Kafka) produced in the commit's transaction.
    Buffered(OutRecord),
}

impl Pending {
    /// Appends this send to `list`. Enqueued sends of one batch share one entry (the batch's
    /// `Deliveries` counts them), so `list.len()` grows with buffered records only: those are
    /// what commit steps triggered by a full buffer bound. An entry per Kafka send had such
    /// steps every 20,000 sends, each waiting for the previous step's deliveries.
    pub(crate) fn add_to(self, list: &mut Vec<Pending>) {
        match self {
            Pending::Enqueued(batch) => Self::add_enqueued(list, &batch),
            buffered => list.push(buffered),
        }
    }

    /// Appends an enqueued send counted in `batch` to `list` (cloning `batch` only for a new
    /// entry).
    pub(crate) fn add_enqueued(list: &mut Vec<Pending>, batch: &Arc<Deliveries>) {
        if !matches!(list.last(), Some(Pending::Enqueued(last)) if Arc::ptr_eq(last, batch)) {
            list.push(Pending::Enqueued(batch.clone()));
        }
    }
}

/// Whether this worker leads its app (runs its leader-only timers), kept current by the log's
/// election thread until [`Leadership::resign`] or drop.
pub(crate) struct Leadership {
    pub(crate) leading: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Leadership {
    /// A leadership that stays as it starts unless a thread is given to keep it current.
    pub(crate) fn new(leading: bool) -> Self {
        Leadership {
            leading: Arc::new(std::sync::atomic::AtomicBool::new(leading)),
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            thread: std::sync::Mutex::new(None),
        }
    }

    /// The thread that keeps `leading` current, joined by `resign`.
    pub(crate) fn hold(&self, thread: std::thread::JoinHandle<()>) {
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
    }

    /// Whether this worker leads now.
    pub(crate) fn is_leader(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Leaves the election and waits for its thread (blocking: the consumer leaves its group).
    pub(crate) fn resign(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// The log records travel on: Kafka (`kafka`, through rdkafka) or the embedded log
/// (`embedded`, in LMDB). The layers above use this interface only; [`open`] picks the
/// implementation from the configured broker. Blocking methods are called off the async
/// threads.
/// What a topic's time retention is ([`Log::time_retention`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeRetention {
    /// Records stay until compaction or size retention removes them.
    Kept,
    /// `cleanup.policy` includes `delete` and `retention.ms` is this (finite).
    After(i64),
    /// The broker does not describe the topic's configs to rill.
    Unknown,
}

pub(crate) trait Log: Send + Sync {
    /// `messaging.system` of spans: `kafka`, or `rill` for the embedded log.
    fn system(&self) -> &'static str;

    /// Whether the worker reaches its broker (the embedded log always does).
    fn health(&self) -> Arc<Health>;

    /// Tells the other workers of each consumer group the web address that answers this one's
    /// table queries (Kafka advertises it in the consumers' `client.id`); false where no
    /// worker elsewhere shares the groups (the embedded log's live in one process).
    fn advertise_web(&self, _url: &str) -> bool {
        false
    }

    /// Creates missing topics, checks the existing ones rill owns (partition counts, and topic
    /// configs on Kafka; see `TopicSpec::check_existing`) and returns every topic's partition
    /// count.
    fn ensure_topics<'a>(
        &'a self,
        specs: &'a [TopicSpec],
        default_partitions: i32,
    ) -> BoxFuture<'a, Result<HashMap<String, i32>>>;

    /// Whether records of `topic` go by age (stamped with when they were written). The
    /// embedded log's compacted topics keep them.
    fn time_retention<'a>(&'a self, _topic: &'a str) -> BoxFuture<'a, Result<TimeRetention>> {
        Box::pin(async { Ok(TimeRetention::Kept) })
    }

    /// Joins the election of the worker that runs the app's leader-only timers (Kafka: a
    /// consumer group on a one-partition topic; the embedded log's one process always leads).
    fn elect<'a>(&'a self, _app_id: &'a str) -> BoxFuture<'a, Result<Leadership>> {
        Box::pin(async { Ok(Leadership::new(true)) })
    }

    /// Partition count of a topic; `None` when it does not exist (blocking).
    fn partition_count(&self, topic: &str) -> Result<Option<i32>>;

    /// First and next offset of a partition (blocking).
    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)>;

    /// Reads `[from, until)` of a partition in batches (changelogs, dead letters; blocking).
    fn read_range(
        &self,
        topic: &Arc<str>,
        partition: i32,
        from: i64,
        until: i64,
        f: &mut dyn FnMut(Vec<RawRecord>) -> Result<()>,
    ) -> Result<()>;

    /// The offset `group` committed on a partition (blocking).
    fn committed(&self, group: &str, topic: &str, partition: i32) -> Result<Option<i64>>;

    /// The offset of a partition's first record with a timestamp at or after `ms`; the end
    /// when there is none (blocking).
    fn offset_for_time(&self, topic: &str, partition: i32, ms: i64) -> Result<i64>;

    /// Sets `group`'s committed offsets from outside the group: the `reset` command, while
    /// the group has no members (blocking).
    fn reset_offsets(&self, group: &str, offsets: &[(Tp, i64)]) -> Result<()>;

    /// Starts the fetcher of one agent's consumer group: a thread handing batches to
    /// `router`, until `stop`. A partition the group has no committed offset for (or one
    /// before the log's start) is read from where `reset` says.
    fn start_fetcher(
        &self,
        group: &str,
        topics: Vec<String>,
        reset: OffsetReset,
        router: Arc<Router>,
        stop: Arc<AtomicBool>,
    ) -> Result<(Arc<dyn Committer>, std::thread::JoinHandle<()>)>;

    /// Records left to read on each partition `router` owns for `group` (metrics).
    fn lags(&self, group: &str, router: &Router) -> Vec<(Tp, i64)>;

    /// The members of a consumer group, each with its advertised web address and its
    /// partitions (blocking; none on the embedded log, whose groups live in one process).
    fn group_members(&self, group: &str) -> Result<Vec<GroupMember>>;

    /// Sends are held until the commit step (the embedded log; exactly-once on Kafka): what
    /// [`Log::enqueue`] returns is the record itself.
    fn buffers(&self) -> bool;

    /// Enqueues a record; the returned `Pending` becomes durable at the next commit. `batch`:
    /// the deliveries a commit step (or flush) will wait for, where the log delivers itself.
    fn enqueue<'a>(
        &'a self,
        record: OutRecord,
        batch: &'a Arc<Deliveries>,
    ) -> BoxFuture<'a, Result<Pending>>;

    /// Enqueues a borrowed record at once, counted in `batch`, where sends are not buffered;
    /// `Ok(false)` when they are, or the client's queue is full (send an owned record then).
    fn try_enqueue(&self, record: &Outgoing<'_>, batch: &Arc<Deliveries>) -> Result<bool>;

    /// Makes a [`Delivery`]'s sends durable, with its offsets where the log stores them
    /// together; returns the next offset of every partition written.
    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> BoxFuture<'a, Result<HashMap<Tp, i64>>>;

    /// Waits until everything enqueued was delivered (shutdown; blocking).
    fn flush(&self, timeout: Duration) -> Result<()>;

    /// Exactly-once transactions so far, committed and aborted (`None`: not transactional).
    fn transactions(&self) -> Option<(u64, u64)>;
}

/// What `Log::deliver` makes durable: pending sends and, for a commit step of an agent's
/// consumer (`committer`), the `offsets` of `group`, stored with them where the log can (the
/// embedded log's LMDB transaction, a Kafka transaction under exactly-once); else
/// [`Committer::commit_offsets`] commits them after local state is stored.
pub(crate) struct Delivery<'a> {
    pub(crate) pending: Vec<Pending>,
    pub(crate) group: &'a str,
    pub(crate) offsets: &'a [(Tp, i64)],
    pub(crate) committer: Option<&'a dyn Committer>,
    /// The step is a commit interval's: a transaction waits briefly for the worker's other
    /// instances, committing on the same tick.
    pub(crate) on_tick: bool,
}

impl Delivery<'_> {
    /// Sends alone, outside a commit step (a producer's flush, a command).
    pub(crate) fn sends(pending: Vec<Pending>) -> Delivery<'static> {
        Delivery {
            pending,
            group: "",
            offsets: &[],
            committer: None,
            on_tick: false,
        }
    }
}

/// Offsets a consumer group refused to commit because it was rebalancing (Kafka's
/// `REBALANCE_IN_PROGRESS`, or a generation that just ended). Under the cooperative protocol
/// the partitions usually stay where they are, so the instance commits these again at its next
/// step for the partitions it still owns, as Kafka Streams keeps such tasks dirty. Dropped, a
/// `group_by` pump that went idle never committed them, and the next read of its partitions
/// from the committed offsets forwarded the same records again.
pub(crate) type Refused = Vec<(Tp, i64)>;

/// Commits an agent group's offsets, at each commit step of its instances.
pub(crate) trait Committer: Send + Sync + std::any::Any {
    /// Offsets go in the commit step's transaction (exactly-once), not through
    /// [`Committer::commit_offsets`].
    fn transactional(&self) -> bool;

    /// Commits the next offsets to read, after the step's sends were delivered and local
    /// state stored (a no-op where `Log::deliver` stored them). Returns what the group
    /// refused because it was rebalancing ([`Refused`]).
    fn commit_offsets(
        self: Arc<Self>,
        offsets: Vec<(Tp, i64)>,
    ) -> BoxFuture<'static, Result<Refused>>;

    /// After an aborted transaction: the fetcher goes back to the committed offsets and
    /// announces the assignment again.
    fn request_rewind(&self);

    /// From now on, records below the offsets this group commits are deleted every
    /// `interval` (a repartition topic's consumer, on Kafka; see `purge`). The embedded log
    /// keeps its retention by size and append time instead.
    fn purge_consumed(&self, _interval: Duration) {}
}

/// A committer with nothing to do: the log stored the step's offsets with its records (the
/// embedded log's `Log::deliver`), or there are none (a stream's placeholder core).
pub(crate) struct StoredWithSends;

impl Committer for StoredWithSends {
    fn transactional(&self) -> bool {
        false
    }

    fn commit_offsets(
        self: Arc<Self>,
        _offsets: Vec<(Tp, i64)>,
    ) -> BoxFuture<'static, Result<Refused>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    fn request_rewind(&self) {}
}

/// A consumer group member: its advertised web address and its topic-partitions.
pub(crate) type GroupMember = (Option<String>, Vec<(String, i32)>);

/// Opens the configured log.
pub(crate) fn open(config: &Config) -> Result<Arc<dyn Log>> {
    Ok(match &config.broker {
        Broker::Embedded => embedded::EmbeddedLog::open(config, false)? as Arc<dyn Log>,
        Broker::Memory => embedded::EmbeddedLog::open(config, true)?,
        Broker::Kafka { bootstrap } => kafka::KafkaTransport::connect(config, bootstrap)?,
    })
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
        assert!(router.route_fetched_in(before, vec![record(0, 1)], Vec::new(), false));
        assert!(data_rx.try_recv().is_err(), "stale batch dropped");
        assert!(router.route_fetched_in(
            router.generation(),
            vec![record(0, 2)],
            Vec::new(),
            false
        ));
        let batch = data_rx.try_recv().expect("current batch delivered");
        assert_eq!(batch.generation, router.generation());
        assert_eq!(batch.records[0].offset, 2);
    }

    #[test]
    fn kafka_sends_of_one_batch_share_one_pending_entry() {
        let (a, b) = (Deliveries::new(), Deliveries::new());
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
            Pending::Enqueued(a.clone()),
            Pending::Enqueued(a.clone()),
            Pending::Buffered(out(1)),
            Pending::Buffered(out(2)),
            Pending::Enqueued(a.clone()),
            Pending::Enqueued(b.clone()),
            Pending::Enqueued(b.clone()),
        ] {
            p.add_to(&mut list);
        }
        let kinds: Vec<String> = list
            .iter()
            .map(|p| match p {
                Pending::Enqueued(d) if Arc::ptr_eq(d, &a) => "a".to_owned(),
                Pending::Enqueued(_) => "b".to_owned(),
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
        assert!(router.route((0..6).map(|p| record(p, 0)).collect(), Vec::new(), false));
        for (i, rx) in rxs.iter_mut().enumerate() {
            let batch = rx.try_recv().expect("batch");
            let parts: Vec<i32> = batch.records.iter().map(|r| r.partition).collect();
            assert_eq!(parts, vec![i as i32, i as i32 + 3]);
        }
    }
}
