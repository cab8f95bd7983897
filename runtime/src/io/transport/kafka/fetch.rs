//! The fetcher of an agent's consumer group: its `BaseConsumer`, polled on a thread of its own,
//! hands batches to the agent's instances through the [`Router`] (keys and values of a batch
//! copied into one buffer); its rebalance hooks announce assignments and wait out revocations;
//! librdkafka's statistics tell which partitions are caught up; and after an aborted
//! transaction it rewinds to the committed offsets.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers as _, Message};
use rdkafka::types::RDKafkaRespErr;

use super::client::{LogContext, creation_error, prefetch_defaults};
use super::fetch_queue::FetchQueue;
use super::rebalance::Rebalancer;
use crate::base::config::{OffsetReset, RebalanceProtocol};
use crate::base::error::{Error, Result};
use crate::base::health::Health;
use crate::base::message::{Bytes, Headers, RawRecord};
use crate::io::transport::align::{Aligner, DECISION_WAIT};
use crate::io::transport::{Router, Tp};

/// The most records the fetcher hands over in one batch.
const FETCH_BATCH_MAX: usize = 2000;

/// How long the fetcher waits for a record on its queue before it polls the consumer's again
/// (a rebalance waits that long at most to be served).
const QUEUE_WAIT: Duration = Duration::from_millis(10);

/// How often the fetcher forwards every partition to its queue again (`forward_started`).
const FORWARD_AGAIN: Duration = Duration::from_millis(100);

/// How long it waits on the consumer's queue when it has no queue of its own.
const CONSUMER_WAIT: Duration = Duration::from_millis(100);

/// How an agent's consumers join their groups.
pub(super) struct Membership {
    /// `group.instance.id` (`Config::instance_id`): a static member.
    pub(super) instance_id: Option<String>,
    pub(super) protocol: RebalanceProtocol,
}

/// The config of an agent group's consumer: rill stores and commits its offsets itself; the
/// assignor is `cooperative-sticky`, or `range` under `RebalanceProtocol::Eager` (see
/// `rebalance`); `reset` is the agent's `offset_reset`, and `web_url` is advertised in its
/// `client.id` (see `KafkaTransport::web_url`). `Config::validate` refuses user values for
/// what is set here. `aligned`: the fetcher holds partitions in step (`prefetch_defaults`).
pub(super) fn consumer_config(
    base: &ClientConfig,
    group: &str,
    reset: OffsetReset,
    read_committed: bool,
    web_url: Option<&str>,
    membership: &Membership,
    aligned: bool,
) -> ClientConfig {
    let mut config = base.clone();
    let assignor = match membership.protocol {
        RebalanceProtocol::Cooperative => "cooperative-sticky",
        RebalanceProtocol::Eager => "range",
    };
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", reset.as_str())
        .set("partition.assignment.strategy", assignor);
    if let Some(id) = &membership.instance_id {
        // Static membership: a restart inside `session.timeout.ms` rebalances nothing.
        config.set("group.instance.id", id);
    }
    if read_committed {
        // Only committed transactions' records reach agents.
        config.set("isolation.level", "read_committed");
    }
    if let Some(url) = web_url {
        let id = base.get("client.id").unwrap_or("rill").to_owned();
        config.set("client.id", format!("{id};web={url}"));
    }
    if base.get("statistics.interval.ms").is_none_or(|v| v == "0") {
        // Consumer lag per partition, for windows' idle partitions (and later metrics).
        config.set("statistics.interval.ms", "1000");
    }
    prefetch_defaults(&mut config, aligned);
    if config.get("heartbeat.interval.ms").is_none() {
        // Members learn of a rebalance at their next heartbeat, and the partitions that move
        // wait for it: 1 s rather than librdkafka's 3 s (docs/decisions.md, "Heartbeats every
        // second"). A user's value is kept.
        config.set("heartbeat.interval.ms", HEARTBEAT_MS);
    }
    config
}

/// The default `heartbeat.interval.ms` of agent groups.
const HEARTBEAT_MS: &str = "1000";

/// Creates the consumer of `group` (not subscribed yet: the fetcher thread subscribes it).
pub(super) fn new_consumer(
    config: &ClientConfig,
    context: FetchContext,
    group: &str,
) -> Result<Arc<BaseConsumer<FetchContext>>> {
    let consumer: BaseConsumer<FetchContext> =
        config.create_with_context(context).map_err(|e| {
            creation_error(
                config,
                format!("creating the consumer of group `{group}`"),
                e,
            )
        })?;
    Ok(Arc::new(consumer))
}

/// Where the fetcher thread puts the group's consumer once subscribed (the committer reads it:
/// nothing is fetched, so nothing committed, before).
pub(super) type ConsumerSlot = Arc<std::sync::OnceLock<Arc<BaseConsumer<FetchContext>>>>;

/// What an agent group's fetcher thread starts from.
pub(super) struct FetchStart {
    pub(super) group: String,
    /// Created with the agent's config (which it proves valid before the worker starts).
    pub(super) consumer: Arc<BaseConsumer<FetchContext>>,
    /// A one-topic agent that may read in step: the config of a consumer that prefetches
    /// for that, and its context. The thread waits for the agent to decide
    /// (`align::ReadMode`), and creates that consumer instead when it reads in step.
    pub(super) in_step: Option<(ClientConfig, FetchContext)>,
    /// The topics the group subscribes to (`rebalance` assigns the others' partitions).
    pub(super) subscribed: Vec<String>,
    /// Every topic read.
    pub(super) topics: Vec<String>,
    /// The committer's.
    pub(super) slot: ConsumerSlot,
}

/// Subscribes the group's consumer and polls it on a thread of its own, handing batches to
/// `router` until `stop`.
pub(super) fn spawn_poll_thread(
    start: FetchStart,
    router: Arc<Router>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("rill-fetch-{}", router.agent))
        .spawn(move || {
            let topics = start.topics.clone();
            if let Some(consumer) = start.subscribed_consumer(&router, &stop) {
                poll_loop(&consumer, &router, &stop, &topics);
                consumer.context().rebalancer.close();
            }
        })
        .map_err(|e| Error::io("spawning a fetcher thread", e))
}

impl FetchStart {
    /// A one-topic agent that may read in step: waits for its function to decide, and
    /// creates the consumer that prefetches for reading in step when it does; true then.
    pub(super) fn choose_consumer(&mut self, router: &Router, stop: &AtomicBool) -> bool {
        let Some((config, context)) = self.in_step.take() else {
            return false;
        };
        if !router.read_mode.decided_in_step(DECISION_WAIT, stop) {
            return false;
        }
        match new_consumer(&config, context, &self.group) {
            Ok(aligned) => {
                tracing::debug!(group = %self.group, "the agent reads in step: its consumer prefetches less");
                self.consumer = aligned;
                true
            }
            Err(e) => {
                tracing::warn!(group = %self.group, error = %e, "creating a consumer that prefetches for reading in step; going on with the first");
                false
            }
        }
    }

    /// The consumer to poll, subscribed and handed to the committer; `None` when it cannot
    /// subscribe (logged).
    fn subscribed_consumer(
        mut self,
        router: &Router,
        stop: &AtomicBool,
    ) -> Option<Arc<BaseConsumer<FetchContext>>> {
        self.choose_consumer(router, stop);
        let FetchStart {
            group,
            consumer,
            subscribed,
            slot,
            ..
        } = self;
        know_partner_leaders(&consumer, stop);
        let topic_refs: Vec<&str> = subscribed.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&topic_refs) {
            let e = Error::kafka(format!("subscribing group `{group}` to {subscribed:?}"), e);
            tracing::error!(agent = %router.agent, error = %e, "the agent reads nothing");
            consumer.context().health.lost(e.to_string());
            return None;
        }
        let _ = slot.set(consumer.clone());
        Some(consumer)
    }
}

/// Asks the cluster for the partner topics' metadata (cooperative: topics assigned with the
/// subscribed one, not subscribed themselves), so that librdkafka knows their leaders when
/// their partitions are assigned. A partition assigned without a known leader waits for it
/// before it can look up where to start (librdkafka retries every 500 ms): a join's second
/// topic started about a second after its first, and the first's partitions were held in step
/// meanwhile (`align.rs`). A failure only costs that wait again. Asks in tries of
/// `LEADERS_TRY`, up to `METADATA_TIMEOUT` a topic, and gives up when `stop` is set: a worker
/// stopped while its broker is unreachable does not wait out the timeout.
fn know_partner_leaders(consumer: &BaseConsumer<FetchContext>, stop: &AtomicBool) {
    for topic in consumer.context().rebalancer.partners() {
        let asked = std::time::Instant::now();
        loop {
            if stop.load(Ordering::Acquire) {
                return;
            }
            let tried = std::time::Instant::now();
            match consumer.fetch_metadata(Some(topic), LEADERS_TRY) {
                Ok(_) => break,
                Err(e) if asked.elapsed() >= super::client::METADATA_TIMEOUT => {
                    tracing::debug!(topic = %topic, error = %e, "reading a partner topic's metadata");
                    break;
                }
                // Not answered in time, or no broker to ask yet: try again (once a try's time).
                Err(_) => std::thread::sleep(LEADERS_TRY.saturating_sub(tried.elapsed())),
            }
        }
    }
}

/// One try of `know_partner_leaders`: how long a stop can wait for it.
const LEADERS_TRY: Duration = Duration::from_millis(500);

/// A fetched batch being assembled: every key and value is copied into one buffer, and the
/// records are slices of it. One allocation per batch instead of two per record, freed when the
/// agent drops the batch's last record: freeing small blocks on another thread than the one
/// that allocated them cost a stateless agent ~12% of its CPU in glibc.
struct Fetched {
    bytes: Vec<u8>,
    /// The records, their keys and values still `None`: where those are in `bytes` is in
    /// `places` (filled in place when the batch is taken, without moving the records again).
    records: Vec<RawRecord>,
    places: Vec<KeyValueRanges>,
}

/// Where a fetched record's key and value are in its batch's buffer.
type KeyValueRanges = (Option<Range<usize>>, Option<Range<usize>>);

impl Fetched {
    fn new() -> Self {
        Fetched {
            bytes: Vec::new(),
            records: Vec::with_capacity(FETCH_BATCH_MAX),
            places: Vec::with_capacity(FETCH_BATCH_MAX),
        }
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
        self.places.clear();
    }

    fn copy(&mut self, data: Option<&[u8]>) -> Option<Range<usize>> {
        data.map(|d| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(d);
            start..self.bytes.len()
        })
    }

    /// Adds `record` with this key and value (its own are ignored).
    fn push(&mut self, record: RawRecord, key: Option<&[u8]>, value: Option<&[u8]>) {
        let key = self.copy(key);
        let value = self.copy(value);
        self.records.push(record);
        self.places.push((key, value));
    }

    /// The records, their keys and values sharing the batch's buffer; `self` starts afresh,
    /// with a buffer the size of this one (not regrown from empty, a copy per doubling).
    fn take(&mut self) -> Vec<RawRecord> {
        let size = self.bytes.len();
        let bytes = Bytes::from(std::mem::replace(&mut self.bytes, Vec::with_capacity(size)));
        let mut records = std::mem::replace(&mut self.records, Vec::with_capacity(FETCH_BATCH_MAX));
        for (record, (key, value)) in records.iter_mut().zip(self.places.drain(..)) {
            record.key = key.map(|r| bytes.slice(r));
            record.value = value.map(|r| bytes.slice(r));
        }
        records
    }
}

/// The fetcher thread: polls `consumer` and hands batches to `router`, until `stop` or until
/// every instance is gone.
fn poll_loop(
    consumer: &BaseConsumer<FetchContext>,
    router: &Router,
    stop: &AtomicBool,
    subscribed: &[String],
) {
    let mut poller = Poller {
        consumer,
        router,
        topics: TopicNames::new(subscribed),
        batch: Fetched::new(),
        ends: PartitionEnds::default(),
        last_error: None,
        bootstrap: Bootstrap::default(),
        aligner: Aligner::new(router.read_ahead, subscribed.len(), &router.read_mode),
        queue: FetchQueue::new(consumer, FETCH_BATCH_MAX),
        forwarded: Vec::new(),
        forwarded_at: std::time::Instant::now(),
    };
    let rebalancer = &consumer.context().rebalancer;
    while !stop.load(Ordering::Acquire) && !router.all_closed() {
        if let Some(why) = rebalancer.take_read_again() {
            poller.batch.clear();
            poller.ends.forget();
            poller.restart_alignment();
            rebalancer.read_again(consumer, why);
        }
        let generation = poller.fill_batch();
        if rebalancer.read_again_pending() {
            // Fetched before the re-read's seek: read again after it.
            poller.batch.clear();
            poller.restart_alignment();
            continue;
        }
        let caught_up = poller.newly_caught_up(generation);
        // A full batch: librdkafka's queue still held records.
        let more = poller.batch.len() >= FETCH_BATCH_MAX;
        if (!poller.batch.is_empty() || !caught_up.is_empty())
            && !router.route_fetched_in(generation, poller.batch.take(), caught_up, more)
        {
            break;
        }
        if router.generation() == generation {
            // Only after records routed under the current assignment: the heads are theirs.
            poller.align();
        }
    }
}

/// What the fetcher thread keeps between polls.
struct Poller<'a> {
    consumer: &'a BaseConsumer<FetchContext>,
    router: &'a Router,
    topics: TopicNames,
    batch: Fetched,
    ends: PartitionEnds,
    /// When a consumer error was last logged.
    last_error: Option<std::time::Instant>,
    bootstrap: Bootstrap,
    /// Keeps the agent's topics in step in event time (`align.rs`).
    aligner: Aligner,
    /// Where assigned partitions' records are read in batches (`fetch_queue`); `None` when
    /// librdkafka could not make it, and every record comes through `poll`.
    queue: Option<FetchQueue<'a>>,
    /// Every partition forwarded to `queue`, and when they all were last.
    forwarded: Vec<Tp>,
    forwarded_at: std::time::Instant,
}

/// The router's bootstrap topics (tables built from topics) are read to their end after each
/// assignment before the other topics: a record of another topic fetched meanwhile pauses its
/// partition, which goes back to that record's offset and resumes once every bootstrap
/// partition has reached its end (`newly_caught_up`).
#[derive(Default)]
struct Bootstrap {
    /// The assignment generation the state below is for.
    generation: u64,
    holding: bool,
    /// Partitions paused meanwhile.
    held: Vec<Tp>,
    since: Option<std::time::Instant>,
}

/// The longest the other topics wait for the bootstrap topics (a partition whose end the
/// statistics never report must not stop the agent).
const BOOTSTRAP_MAX: Duration = Duration::from_secs(60);

impl Poller<'_> {
    /// Reads until the batch is full or nothing more is waiting; returns the assignment
    /// generation the batch was fetched under.
    fn fill_batch(&mut self) -> u64 {
        // Rebalance callbacks run inside `poll`; records of a batch must belong to one assignment.
        let generation = self.router.generation();
        self.bootstrap_after_assignment(generation);
        // The consumer's queue first, always to its end: a partition's records fetched before it
        // was forwarded come before those on the fetcher's queue.
        let wait = if self.queue.is_some() {
            Duration::ZERO
        } else {
            CONSUMER_WAIT
        };
        let generation = self.poll_consumer(generation, wait);
        if self.batch.len() < FETCH_BATCH_MAX {
            self.read_queue();
        }
        generation
    }

    /// Polls the consumer's queue (rebalances run here) until it is empty or the batch full,
    /// waiting up to `wait` for the first record; forwards newly assigned partitions to the
    /// fetcher's queue. Returns the generation of the batch.
    fn poll_consumer(&mut self, mut generation: u64, wait: Duration) -> u64 {
        let consumer = self.consumer;
        let mut timeout = wait;
        while self.batch.len() < FETCH_BATCH_MAX {
            let polled = consumer.poll(timeout);
            self.forward_started();
            match polled {
                None => break,
                Some(Ok(m)) => {
                    consumer.context().health.back();
                    if self.router.generation() != generation {
                        // This poll ran a rebalance: what came before belongs to the old assignment.
                        self.batch.clear();
                        self.restart_alignment();
                        generation = self.router.generation();
                    }
                    if !self.hold_back(&m) {
                        self.add_message(&m);
                    }
                    timeout = Duration::ZERO;
                }
                Some(Err(e)) => {
                    self.consumer_error(&e);
                    break;
                }
            }
        }
        if self.router.generation() != generation {
            // The last poll ran a rebalance: the records read after it, from the fetcher's
            // queue, are the new assignment's.
            self.batch.clear();
            self.restart_alignment();
            generation = self.router.generation();
        }
        generation
    }

    /// Forwards the partitions a rebalance just assigned to the fetcher's queue, and every
    /// partition assigned so far again each `FORWARD_AGAIN`: librdkafka drops a partition's
    /// forwarding when it stops fetching it, asynchronously, so a revocation's stop can land
    /// after the next assignment's forwarding, and the partition's records would then stay in
    /// its own queue (forwarding again is idempotent, and harmless for a partition no longer
    /// assigned).
    fn forward_started(&mut self) {
        let started = self.consumer.context().rebalancer.take_started();
        let Some(queue) = &self.queue else { return };
        if !started.is_empty() {
            queue.forward(started.iter().map(|(t, p)| (&**t, *p)));
            for tp in started {
                if !self.forwarded.contains(&tp) {
                    self.forwarded.push(tp);
                }
            }
        }
        if self.forwarded_at.elapsed() >= FORWARD_AGAIN {
            queue.forward(self.forwarded.iter().map(|(t, p)| (&**t, *p)));
            self.forwarded_at = std::time::Instant::now();
        }
    }

    /// Reads the fetcher's queue into the batch, waiting up to `QUEUE_WAIT` for a first
    /// record when the batch is empty. No rebalance runs meanwhile (they run in `poll`).
    fn read_queue(&mut self) {
        let Some(mut queue) = self.queue.take() else {
            return;
        };
        let wait = if self.batch.is_empty() {
            QUEUE_WAIT
        } else {
            Duration::ZERO
        };
        let mut error = None;
        let read = queue.read(wait, FETCH_BATCH_MAX - self.batch.len(), |m| match m {
            Ok(m) => {
                if !self.hold_back(m) {
                    self.add_message(m);
                }
            }
            Err(e) => {
                error.get_or_insert(e);
            }
        });
        self.queue = Some(queue);
        if read > 0 {
            self.consumer.context().health.back();
        }
        if let Some(e) = error {
            self.consumer_error(&e);
        }
    }

    /// A new assignment: hold other topics back while its bootstrap partitions are read.
    fn bootstrap_after_assignment(&mut self, generation: u64) {
        if self.bootstrap.generation != generation {
            // Partitions held under the last assignment and kept (a cooperative change) would
            // stay paused: resume them; they are held again if they come too early.
            self.resume_held();
            self.restart_alignment();
            self.bootstrap = Bootstrap {
                generation,
                holding: !self.router.bootstrap.is_empty(),
                held: Vec::new(),
                since: Some(std::time::Instant::now()),
            };
        }
    }

    /// While bootstrapping, pauses the partition of a message of another topic and moves it
    /// back to the message (fetched again on resume); true when it did.
    fn hold_back<M: Message>(&mut self, m: &M) -> bool {
        if !self.bootstrap.holding || self.router.is_bootstrap(m.topic()) {
            return false;
        }
        let tp: Tp = (self.topics.name_of(m), m.partition());
        if self.bootstrap.held.contains(&tp) {
            // Held already, at an earlier record: a later one of the same batch read (fetched
            // before the pause) comes again on resume.
            return true;
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition(m.topic(), m.partition());
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(error = %e, topic = m.topic(), "pausing a partition until the tables' topics are read");
            return false;
        }
        let offset = rdkafka::Offset::Offset(m.offset());
        if let Err(e) = self
            .consumer
            .seek(m.topic(), m.partition(), offset, Duration::from_secs(5))
        {
            tracing::warn!(error = %e, topic = m.topic(), "seeking back a held partition");
        }
        self.bootstrap.held.push(tp);
        true
    }

    /// Resumes the held partitions once every assigned partition of the bootstrap topics is
    /// at its end.
    fn end_bootstrap_when_read(&mut self) {
        if !self.bootstrap.holding {
            return;
        }
        let assignment = self.router.current_assignment();
        let read = assignment
            .iter()
            .filter(|(t, _)| self.router.is_bootstrap(t))
            .all(|tp| self.ends.at_end.contains(tp));
        let waited = self.bootstrap.since.map_or(Duration::ZERO, |t| t.elapsed());
        if waited > BOOTSTRAP_MAX {
            tracing::warn!(agent = %self.router.agent, ?waited, "the tables' topics did not report their end; reading the other topics anyway");
        } else if !read || assignment.is_empty() {
            return;
        }
        self.bootstrap.holding = false;
        self.resume_held();
        // The other topics start now: alignment waits for their first records from here.
        self.restart_alignment();
    }

    /// Resumes the partitions held back while the bootstrap topics were read.
    fn resume_held(&mut self) {
        let held = std::mem::take(&mut self.bootstrap.held);
        self.resume(
            held,
            "resuming partitions held while the tables' topics were read",
        );
    }

    /// Pauses the partitions read too far ahead of the others (resuming each at the offset
    /// after its last record handed out) and resumes those the others caught up with.
    fn align(&mut self) {
        // While the tables' topics are read first, the others wait anyway.
        if !self.aligner.enabled() || self.bootstrap.holding {
            return;
        }
        for ((topic, partition), offset) in self.aligner.hold(&self.ends.at_end) {
            let mut tpl = rdkafka::TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            if let Err(e) = self.consumer.pause(&tpl) {
                tracing::warn!(error = %e, topic = %topic, partition, "pausing a partition read ahead of the agent's other topics");
                continue;
            }
            let at = rdkafka::Offset::Offset(offset);
            if let Err(e) = self
                .consumer
                .seek(&topic, partition, at, Duration::from_secs(5))
            {
                tracing::warn!(error = %e, topic = %topic, partition, "seeking a partition held in step");
            }
        }
        let free = self.aligner.release(&self.ends.at_end);
        self.resume(
            free,
            "resuming a partition held in step with the agent's other topics",
        );
    }

    /// A new assignment or a re-read from the committed offsets: alignment starts afresh, and
    /// the partitions it held that the consumer still owns go on.
    ///
    /// Owned by the consumer, not by the router: a cooperative revocation clears the router's
    /// assignment until the re-read announces the kept partitions again, and a kept partition
    /// held here then stayed paused for good (its records never came).
    fn restart_alignment(&mut self) {
        let owned = self.router.current_assignment();
        let still: Option<Vec<Tp>> = match self.consumer.assignment() {
            Ok(tpl) => Some(
                tpl.elements()
                    .iter()
                    .map(|e| (Arc::from(e.topic()), e.partition()))
                    .collect(),
            ),
            Err(e) => {
                // Resuming one it no longer owns does no harm; leaving one paused loses it.
                tracing::warn!(error = %e, "reading the consumer's assignment; resuming every partition held in step");
                None
            }
        };
        let held: Vec<Tp> = self
            .aligner
            .reset(&owned)
            .into_iter()
            .filter(|tp| still.as_ref().is_none_or(|s| s.contains(tp)))
            .collect();
        self.resume(
            held,
            "resuming a partition held in step after an assignment",
        );
    }

    fn resume(&self, partitions: Vec<Tp>, what: &str) {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (t, p) in &partitions {
            tpl.add_partition(t, *p);
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.resume(&tpl)
        {
            tracing::warn!(error = %e, "{what}");
        }
    }

    /// Adds a fetched message to the batch.
    fn add_message<M: Message>(&mut self, m: &M) {
        let record = RawRecord {
            topic: self.topics.name_of(m),
            partition: m.partition(),
            offset: m.offset(),
            key: None,
            value: None,
            timestamp: m.timestamp().to_millis(),
            headers: headers_of(m),
        };
        self.ends.note_read(&record);
        if self.aligner.enabled() {
            let tp = (record.topic.clone(), record.partition);
            self.aligner.handed(&tp, record.timestamp, record.offset);
        }
        self.batch.push(record, m.key(), m.payload());
    }

    /// Logs a consumer error: broker outages surface here repeatedly, so at most every 5 s.
    fn consumer_error(&mut self, e: &KafkaError) {
        if self
            .last_error
            .is_none_or(|t| t.elapsed() > Duration::from_secs(5))
        {
            tracing::warn!(agent = %self.router.agent, error = %e, "consumer error; librdkafka keeps retrying");
            self.last_error = Some(std::time::Instant::now());
        }
    }

    /// The partitions to report caught up after this batch (none when a rebalance ran since
    /// `generation`).
    fn newly_caught_up(&mut self, generation: u64) -> Vec<Tp> {
        // Drained what was fetched: partitions librdkafka's statistics (once a second) last
        // showed with no consumer lag are caught up; the marker travels after their records.
        let mut caught_up = Vec::new();
        if self.batch.len() < FETCH_BATCH_MAX {
            let lags = self
                .consumer
                .context()
                .lags
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            self.ends.note_lags(lags, &mut caught_up);
            self.end_bootstrap_when_read();
        }
        if self.router.generation() != generation {
            self.ends.forget();
            caught_up.clear();
        }
        caught_up
    }
}

/// Each fetched record's topic name, shared: one `Arc<str>` per topic, not one per record.
struct TopicNames {
    /// Subscribed to one topic (names, not patterns: a topic name cannot hold `^`), every
    /// message is of it: no name to read (librdkafka's `strlen`, UTF-8 check) and compare.
    only: Option<Arc<str>>,
    /// The last record's topic.
    last: Option<Arc<str>>,
    known: HashMap<String, Arc<str>>,
}

impl TopicNames {
    fn new(subscribed: &[String]) -> Self {
        TopicNames {
            only: match subscribed {
                [one] => Some(Arc::from(one.as_str())),
                _ => None,
            },
            last: None,
            known: HashMap::new(),
        }
    }

    /// The name of `m`'s topic.
    fn name_of<M: Message>(&mut self, m: &M) -> Arc<str> {
        if let Some(t) = &self.only {
            return t.clone();
        }
        // Runs of one topic are the rule: compare with the last before looking up.
        let name = m.topic();
        if let Some(t) = &self.last
            && **t == *name
        {
            return t.clone();
        }
        let t = match self.known.get(name) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = Arc::from(name);
                self.known.insert(name.to_owned(), t.clone());
                t
            }
        };
        self.last = Some(t.clone());
        t
    }
}

/// A fetched message's headers, copied.
pub(super) fn headers_of<M: Message>(m: &M) -> Headers {
    m.headers()
        .map(|h| {
            Headers(
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// The partitions at their end, so that each arrival at the end is reported once (windows let
/// caught-up partitions go idle).
#[derive(Default)]
struct PartitionEnds {
    at_end: std::collections::HashSet<Tp>,
    /// The partition of the last record that took a partition out of `at_end`.
    last_read: Option<Tp>,
}

impl PartitionEnds {
    /// A record of `record`'s partition was fetched.
    fn note_read(&mut self, record: &RawRecord) {
        if !self.at_end.is_empty()
            && !self
                .last_read
                .as_ref()
                .is_some_and(|(t, p)| Arc::ptr_eq(t, &record.topic) && *p == record.partition)
        {
            // A partition that gets records is no longer at its end: its next
            // catch-up is reported again (looked up once per run of a partition).
            self.at_end
                .remove(&(record.topic.clone(), record.partition));
            self.last_read = Some((record.topic.clone(), record.partition));
        }
    }

    /// Takes in the consumer lags: partitions that just reached their end go to `caught_up`.
    fn note_lags(&mut self, lags: HashMap<Tp, i64>, caught_up: &mut Vec<Tp>) {
        for (tp, lag) in lags {
            if lag == 0 {
                if self.at_end.insert(tp.clone()) {
                    caught_up.push(tp);
                    self.last_read = None;
                }
            } else if lag > 0 {
                self.at_end.remove(&tp);
            }
        }
    }

    /// Forgets which partitions are at their end (a rebalance or a rewind ran): each is
    /// reported again when it gets there.
    fn forget(&mut self) {
        self.at_end.clear();
    }
}

/// How many records of a partition are still to be read, from librdkafka's statistics, or
/// `None` while that is unknown. The position is the furthest of: the last record handed to
/// rill (`app_offset`), the group's committed offset, and, when nothing waits in librdkafka's
/// queue, how far it fetched (past records that never reach rill: transaction markers,
/// aborted records). librdkafka's own `consumer_lag` counts from the committed offset only, so
/// it stays unknown for a partition that is empty and was never committed to, and such a
/// partition would hold its windows back for ever.
fn unread(p: &rdkafka::statistics::Partition, read_committed: bool) -> Option<i64> {
    let end = if read_committed {
        p.ls_offset
    } else {
        p.hi_offset
    };
    let mut position = p.app_offset.max(p.committed_offset);
    if p.fetchq_cnt == 0 {
        position = position.max(p.next_offset);
    }
    (end >= 0 && position >= 0).then(|| (end - position).max(0))
}

/// The context of an agent's consumer: its rebalance hooks, health and statistics.
pub(crate) struct FetchContext {
    pub(super) router: Arc<Router>,
    pub(super) health: Arc<Health>,
    rebalancer: Rebalancer,
    /// Records still to read per assigned partition, from librdkafka's statistics.
    lags: std::sync::Mutex<HashMap<Tp, i64>>,
    /// The consumer reads committed records only (exactly-once): its end is the last stable
    /// offset.
    read_committed: bool,
}

impl FetchContext {
    pub(super) fn new(
        router: Arc<Router>,
        health: Arc<Health>,
        read_committed: bool,
        reset: OffsetReset,
        partners: Vec<String>,
    ) -> Self {
        FetchContext {
            rebalancer: Rebalancer::new(router.clone(), reset, partners),
            router,
            health,
            lags: std::sync::Mutex::new(HashMap::new()),
            read_committed,
        }
    }
}

impl ClientContext for FetchContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        LogContext.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.health.lost(reason);
        }
        LogContext.error(error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lags = HashMap::new();
        for (name, topic) in statistics.topics {
            let name: Arc<str> = Arc::from(name.as_str());
            for (partition, p) in topic.partitions {
                if partition < 0 || p.fetch_state != "active" {
                    continue;
                }
                if let Some(lag) = unread(&p, self.read_committed) {
                    lags.insert((name.clone(), partition), lag);
                }
            }
        }
        *self.router.lags.lock().unwrap_or_else(|p| p.into_inner()) = lags.clone();
        *self.lags.lock().unwrap_or_else(|p| p.into_inner()) = lags;
    }
}

impl ConsumerContext for FetchContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut rdkafka::TopicPartitionList,
    ) {
        self.rebalancer.rebalance(consumer, err, tpl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An at-least-once group's consumer config over `base`, joining by `protocol`.
    fn group_config(base: &ClientConfig, protocol: RebalanceProtocol) -> ClientConfig {
        let membership = Membership {
            instance_id: None,
            protocol,
        };
        let reset = OffsetReset::Earliest;
        consumer_config(base, "g", reset, false, None, &membership, false)
    }

    #[test]
    fn the_assignor_is_cooperative_sticky_unless_the_protocol_is_eager() {
        let assignor = |protocol| {
            group_config(&ClientConfig::new(), protocol)
                .get("partition.assignment.strategy")
                .map(str::to_owned)
        };
        assert_eq!(
            assignor(RebalanceProtocol::Cooperative).as_deref(),
            Some("cooperative-sticky")
        );
        assert_eq!(assignor(RebalanceProtocol::Eager).as_deref(), Some("range"));
    }

    #[test]
    fn members_heartbeat_every_second_unless_told_otherwise() {
        let heartbeat = |base: &ClientConfig| {
            group_config(base, RebalanceProtocol::Cooperative)
                .get("heartbeat.interval.ms")
                .map(str::to_owned)
        };
        assert_eq!(heartbeat(&ClientConfig::new()).as_deref(), Some("1000"));
        let mut mine = ClientConfig::new();
        mine.set("heartbeat.interval.ms", "2500");
        assert_eq!(heartbeat(&mine).as_deref(), Some("2500"));
    }

    #[test]
    fn unread_records_count_from_the_furthest_known_position() {
        use rdkafka::statistics::Partition;
        const INVALID: i64 = -1001;
        let stats = |lo, hi, next, app, committed, queued| Partition {
            lo_offset: lo,
            hi_offset: hi,
            ls_offset: hi,
            next_offset: next,
            app_offset: app,
            committed_offset: committed,
            fetchq_cnt: queued,
            ..Partition::default()
        };
        // Empty and never committed to: read to its end (librdkafka's consumer_lag: -1).
        assert_eq!(unread(&stats(0, 0, 0, INVALID, INVALID, 0), false), Some(0));
        // Records waiting, none handed out yet, nothing committed.
        assert_eq!(unread(&stats(0, 10, 10, INVALID, INVALID, 10), false), None);
        assert_eq!(
            unread(&stats(0, 10, 0, INVALID, INVALID, 0), false),
            Some(10)
        );
        // Handed out up to 7, not committed yet: 3 to go, though 10 were fetched.
        assert_eq!(unread(&stats(0, 10, 10, 7, INVALID, 3), false), Some(3));
        // Committed at 8 by an earlier run; a transaction marker at 9: fetched past it.
        assert_eq!(unread(&stats(0, 10, 10, INVALID, 8, 0), true), Some(0));
        // Before the first fetch response, the end is unknown.
        assert_eq!(
            unread(&stats(INVALID, INVALID, INVALID, INVALID, 5, 0), false),
            None
        );
    }

    #[test]
    fn a_fetched_batch_hands_out_slices_of_one_buffer() {
        let record = |offset| RawRecord {
            topic: Arc::from("t"),
            partition: 0,
            offset,
            key: None,
            value: None,
            timestamp: None,
            headers: Headers::default(),
        };
        let mut batch = Fetched::new();
        batch.push(record(0), Some(b"k0"), Some(b"v0"));
        batch.push(record(1), None, Some(b"value one"));
        batch.push(record(2), Some(b""), None);
        assert_eq!(batch.len(), 3);
        let records = batch.take();
        assert!(batch.is_empty());
        let text = |b: Option<&Bytes>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        let got: Vec<_> = records
            .iter()
            .map(|r| (r.offset, text(r.key.as_ref()), text(r.value.as_ref())))
            .collect();
        let s = |t: &str| Some(t.to_owned());
        assert_eq!(
            got,
            vec![
                (0, s("k0"), s("v0")),
                (1, None, s("value one")),
                (2, s(""), None)
            ]
        );
        // Neighbours in one buffer: "v0" sits right before "value one".
        let at = |r: &RawRecord| r.value.as_ref().map_or(0, |v| v.as_ptr() as usize);
        assert_eq!(at(&records[1]) - at(&records[0]), 2);
        // A record kept for long gets a buffer of its own.
        let kept = records[1].clone().detached();
        assert_eq!(kept.value.as_deref(), Some(&b"value one"[..]));
        assert_ne!(at(&kept), at(&records[1]));
    }

    /// A fetcher stopped while the broker cannot be reached stops asking for its partner
    /// topics' leaders: it does not wait out the metadata timeout for each.
    #[test]
    fn asking_for_partner_leaders_gives_up_when_stopped() {
        let (data, _data_rx) = tokio::sync::mpsc::channel(1);
        let (ctrl, _ctrl_rx) = tokio::sync::mpsc::unbounded_channel();
        let instances = vec![crate::io::transport::InstanceTx { data, ctrl }];
        let router = Arc::new(Router::new("a", instances, Duration::from_secs(1)));
        let partners = vec!["clicks".to_owned(), "orders".to_owned()];
        let context = FetchContext::new(
            router,
            Arc::new(Health::default()),
            false,
            OffsetReset::Earliest,
            partners,
        );
        // A broker that accepts connections and never answers: every metadata request waits
        // for its timeout.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let address = silent.local_addr().expect("address").to_string();
        let consumer: BaseConsumer<FetchContext> = ClientConfig::new()
            .set("bootstrap.servers", &address)
            .set("group.id", "g")
            .create_with_context(context)
            .expect("consumer");
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                stop.store(true, Ordering::Release);
            })
        };
        let started = std::time::Instant::now();
        know_partner_leaders(&consumer, &stop);
        stopper.join().unwrap();
        // Two partners without the stop: twice `METADATA_TIMEOUT` (10 s).
        assert!(
            started.elapsed() < super::super::client::METADATA_TIMEOUT / 2,
            "took {:?}",
            started.elapsed()
        );
    }
}
