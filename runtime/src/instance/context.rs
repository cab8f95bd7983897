//! The agent context: while an agent instance runs, a task-local handle to its commit buffer.
//! `Topic::send` and `Sink::send` find it here, so a send inside an agent becomes part of the
//! record's effects and is made durable before the record's offset is committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::base::codec::Codec;
use crate::base::error::{Error, Result};
use crate::base::message::OutRecord;
use crate::base::message::{encode_out, out_timestamp};
use crate::base::metrics::AgentStats;
use crate::base::record::Record;
use crate::instance::position::Position;
use crate::instance::table::TableCore;
use crate::io::transport::{Deliveries, Outgoing};
use crate::io::transport::{Log, Pending};

tokio::task_local! {
    pub(crate) static CURRENT: Arc<InstanceState>;
}

/// What an agent function left of its stream when it returned or failed: the record loop's
/// core (`RecordLoop::park`), kept here without this module naming the record loop above it.
pub(crate) type Parked = Box<dyn std::any::Any + Send>;

/// The state of an agent instance that its record loop, its sends, its tables and its
/// operators share: the effects buffer of the next commit step (pending sends, dead letters,
/// tables and operators to flush), failures, and what traces and metrics need.
pub(crate) struct InstanceState {
    pub(crate) agent: Arc<str>,
    /// Where the instance stands (what its tables and windows see of it).
    pub(crate) position: Arc<Position>,
    /// The log sends go to.
    pub(crate) log: Arc<dyn Log>,
    /// Sends since the last commit step (not yet durable), the per-topic counter of sends
    /// this instance last used, and the deliveries the step will wait for (Kafka).
    pub(crate) pending: Mutex<(
        Vec<Pending>,
        crate::base::metrics::TopicCache,
        Arc<Deliveries>,
    )>,
    /// The instance's tables (their overlays are committed with its offsets); windows add
    /// theirs when they are built.
    pub(crate) tables: Mutex<Vec<Arc<TableCore>>>,
    /// State kept outside table overlays (windows), written into them at each commit step.
    pub(crate) flushers: Mutex<Vec<Arc<dyn Flush>>>,
    /// Owned partitions read to their end (every topic of the partition number), and a
    /// version bumped when the set changes.
    pub(crate) caught_up: Mutex<std::collections::HashSet<i32>>,
    pub(crate) caught_up_version: AtomicU64,
    /// Records that failed to decode, with why; the stream applies the failure policy.
    pub(crate) failed_records: Mutex<
        Vec<(
            crate::base::message::RawRecord,
            crate::base::failure::Failure,
        )>,
    >,
    /// Set when `failed_records` may hold records (the stream looks here once per record).
    has_failed: std::sync::atomic::AtomicBool,
    /// Window and join operators by table name, kept across calls of the agent function so
    /// results not yet handed out survive a failure (`ops::operator`).
    pub(crate) operators:
        Mutex<std::collections::HashMap<Arc<str>, Arc<dyn std::any::Any + Send + Sync>>>,
    /// Watermark markers read from repartition partitions: (partition, pump, watermark).
    pub(crate) marks: Mutex<Vec<(i32, u64, i64)>>,
    /// Dead-letter and retry records, sent in the next commit step before its offsets.
    pub(crate) dead: Mutex<Vec<OutRecord>>,
    /// Tables built from a topic (`AgentSpec::table_of`): the function applying each such
    /// topic's records to its table, instead of handing them to the agent.
    feeds: Mutex<Vec<(Arc<str>, TableFeed)>>,
    /// What the agent function set up once for the instance (`first_setup`).
    setups: Mutex<std::collections::HashSet<String>>,
    has_feeds: std::sync::atomic::AtomicBool,
    /// A reply to a request was sent (`Request::reply`): someone waits for it, so the record
    /// loop commits as soon as the agent has nothing in hand, not at the interval.
    pub(crate) commit_soon: std::sync::atomic::AtomicBool,
    /// The stream core, parked here when the agent's stream is dropped (the agent function
    /// returned or panicked), so the worker can call the function again on it.
    pub(crate) parked: Mutex<Option<Parked>>,
    pub(crate) stats: Arc<AgentStats>,
    pub(crate) fatal: Mutex<Option<Error>>,
    /// Set with `fatal`, cheap to check on every record.
    pub(crate) failed: std::sync::atomic::AtomicBool,
    /// Per-record metrics on (`Config::metrics`).
    pub(crate) metrics: bool,
    /// The span of the record being processed (tracing export only; see `telemetry`), and the
    /// thread polling the agent's future (`RecordScope`), on which that span is entered.
    record_span: Mutex<SpanSlot>,
}

impl InstanceState {
    pub(crate) fn new(
        agent: Arc<str>,
        log: Arc<dyn Log>,
        stats: Arc<AgentStats>,
        tables: Vec<Arc<TableCore>>,
        config: &crate::base::config::Config,
    ) -> Arc<Self> {
        Arc::new(InstanceState {
            position: Arc::new(Position::new(agent.clone(), config.clock.clone())),
            agent,
            log,
            pending: Mutex::new((
                Vec::new(),
                crate::base::metrics::TopicCache::default(),
                Deliveries::new(),
            )),
            tables: Mutex::new(tables),
            flushers: Mutex::new(Vec::new()),
            caught_up: Mutex::new(std::collections::HashSet::new()),
            caught_up_version: AtomicU64::new(0),
            metrics: config.metrics,
            failed_records: Mutex::new(Vec::new()),
            has_failed: std::sync::atomic::AtomicBool::new(false),
            dead: Mutex::new(Vec::new()),
            commit_soon: std::sync::atomic::AtomicBool::new(false),
            feeds: Mutex::new(Vec::new()),
            setups: Mutex::new(std::collections::HashSet::new()),
            has_feeds: std::sync::atomic::AtomicBool::new(false),
            marks: Mutex::new(Vec::new()),
            operators: Mutex::new(std::collections::HashMap::new()),
            parked: Mutex::new(None),
            stats,
            fatal: Mutex::new(None),
            failed: std::sync::atomic::AtomicBool::new(false),
            record_span: Mutex::new(SpanSlot::default()),
        })
    }

    pub(crate) fn tables(&self) -> Vec<Arc<TableCore>> {
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn flushers(&self) -> Vec<Arc<dyn Flush>> {
        self.flushers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Event time of the record being processed.
    pub(crate) fn event_time(&self) -> Option<i64> {
        self.position.event_time()
    }

    pub(crate) fn set_caught_up(&self, partitions: std::collections::HashSet<i32>) {
        *self.caught_up.lock().unwrap_or_else(|p| p.into_inner()) = partitions;
        self.caught_up_version.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn caught_up(&self) -> std::collections::HashSet<i32> {
        self.caught_up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn park(&self, core: Parked) {
        *self.parked.lock().unwrap_or_else(|p| p.into_inner()) = Some(core);
    }

    pub(crate) fn take_parked(&self) -> Option<Parked> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub(crate) fn record_failed(
        &self,
        raw: &crate::base::message::RawRecord,
        failure: crate::base::failure::Failure,
    ) {
        self.failed_records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((raw.clone(), failure));
        self.has_failed.store(true, Ordering::Release);
    }

    /// Whether records failed since `take_failed_records` last ran.
    pub(crate) fn has_failed_records(&self) -> bool {
        self.has_failed.load(Ordering::Acquire)
    }

    pub(crate) fn take_failed_records(
        &self,
    ) -> Vec<(
        crate::base::message::RawRecord,
        crate::base::failure::Failure,
    )> {
        self.has_failed.store(false, Ordering::Release);
        std::mem::take(
            &mut *self
                .failed_records
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    pub(crate) fn push_dead(&self, record: OutRecord) {
        self.dead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
    }

    pub(crate) fn take_dead(&self) -> Vec<OutRecord> {
        std::mem::take(&mut *self.dead.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn has_dead(&self) -> bool {
        !self
            .dead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// `messaging.system` of this worker's transport.
    pub(crate) fn messaging_system(&self) -> &'static str {
        self.log.system()
    }

    /// Makes `span` the current record's span (entered at once if the agent is being polled
    /// on this thread).
    pub(crate) fn begin_record_span(&self, span: tracing::Span) {
        let mut slot = self.record_span.lock().unwrap_or_else(|p| p.into_inner());
        if slot.entered_here() {
            if let Some(old) = slot.span.as_ref() {
                old.with_subscriber(|(id, d)| d.exit(id));
            }
            span.with_subscriber(|(id, d)| d.enter(id));
        }
        slot.span = Some(span);
    }

    /// Marks the current record's span failed.
    pub(crate) fn fail_record_span(&self, kind: &str, message: &str) {
        let slot = self.record_span.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(span) = slot.span.as_ref() {
            crate::base::telemetry::record_failed(span, kind, message);
        }
    }

    /// Ends the current record's span.
    pub(crate) fn end_record_span(&self) {
        let mut slot = self.record_span.lock().unwrap_or_else(|p| p.into_inner());
        let entered = slot.entered_here();
        if let Some(old) = slot.span.take()
            && entered
        {
            old.with_subscriber(|(id, d)| d.exit(id));
        }
    }

    /// A poll of the agent's future starts on this thread: the current record's span is
    /// entered until the poll ends (`RecordScope`). A span is entered exactly while it is in
    /// the slot and the slot names the polling thread; spans are entered and left on that
    /// thread only (a stream polled from another task does not move them).
    pub(crate) fn enter_record_span(&self) {
        let mut slot = self.record_span.lock().unwrap_or_else(|p| p.into_inner());
        slot.poller = Some(std::thread::current().id());
        if let Some(span) = slot.span.as_ref() {
            span.with_subscriber(|(id, d)| d.enter(id));
        }
    }

    /// The poll ends: the span is left.
    pub(crate) fn exit_record_span(&self) {
        let mut slot = self.record_span.lock().unwrap_or_else(|p| p.into_inner());
        if slot.entered_here()
            && let Some(span) = slot.span.as_ref()
        {
            span.with_subscriber(|(id, d)| d.exit(id));
        }
        slot.poller = None;
    }

    /// Buffers a send; `counter` caches the per-topic send counter of a `Sink` (without it,
    /// the topic's counter is found under the send buffer's lock).
    pub(crate) async fn send(
        &self,
        mut record: OutRecord,
        counter: Option<&SendCounter>,
    ) -> Result<()> {
        if crate::base::telemetry::active() {
            let parent = self
                .record_span
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .span
                .clone();
            if let Some(parent) = parent {
                let system = self.messaging_system();
                crate::base::telemetry::publish(
                    &parent,
                    &record.topic,
                    system,
                    &mut record.headers,
                );
            }
        }
        if self.log.buffers() {
            // Held until the commit step: one lock, nothing to enqueue.
            let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let (list, cache, _) = &mut *guard;
            self.count_out(cache, &record.topic, counter);
            list.push(Pending::Buffered(record));
            return Ok(());
        }
        let batch = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .2
            .clone();
        let topic = record.topic.clone();
        let pending = self.log.enqueue(record, &batch).await?;
        let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.add_to(&mut guard.0);
        self.count_out(&mut guard.1, &topic, counter);
        Ok(())
    }

    /// Sends `value` at once where the log does not buffer sends (Kafka at-least-once):
    /// encoded into this thread's reused buffer and enqueued in the client, which copies it, so
    /// the send allocates nothing of its own. False when that does not apply (the embedded log
    /// and exactly-once hold records until the commit step; a record span adds a header) or the
    /// client's queue is full: the caller sends an owned record instead.
    pub(crate) fn try_send_now<V: Record>(
        &self,
        topic: &str,
        codec: Codec,
        key: Option<&[u8]>,
        value: &V,
        counter: Option<&SendCounter>,
    ) -> Result<bool> {
        if self.log.buffers() || crate::base::telemetry::active() {
            return Ok(false);
        }
        crate::base::codec::with_scratch(|buf| {
            crate::base::record::encode_for(topic, codec, value, buf).map_err(|source| {
                Error::Codec {
                    topic: topic.to_owned(),
                    source,
                }
            })?;
            let key = match key {
                Some(plain) if codec.is_registry() => Some(
                    crate::base::registry_keys::frame_key(topic, plain.into()).map_err(
                        |source| Error::Codec {
                            topic: topic.to_owned(),
                            source,
                        },
                    )?,
                ),
                key => key.map(std::borrow::Cow::Borrowed),
            };
            let out = Outgoing {
                topic,
                key: key.as_deref(),
                value: Some(buf),
                partition: None,
                timestamp: out_timestamp(value, self.event_time()),
                headers: None,
            };
            let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            // Under the lock: the step that takes these sends waits for this batch.
            if !self.log.try_enqueue(&out, &guard.2)? {
                return Ok(false);
            }
            let (list, cache, batch) = &mut *guard;
            Pending::add_enqueued(list, batch);
            self.count_out(cache, topic, counter);
            Ok(true)
        })
    }

    /// Counts a send in `rill_records_out_total` (per topic) and the agent's stats.
    fn count_out(
        &self,
        cache: &mut crate::base::metrics::TopicCache,
        topic: &str,
        counter: Option<&SendCounter>,
    ) {
        if self.metrics {
            match counter {
                Some(cached) => {
                    cached
                        .get_or_init(|| self.stats.topics_out.counter(topic))
                        .fetch_add(1, Ordering::Relaxed);
                }
                None => cache.inc_name(&self.stats.topics_out, topic),
            }
        }
        self.stats.records_out.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn take_pending(&self) -> Vec<Pending> {
        let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // The next step's sends are counted apart from this step's.
        guard.2 = Deliveries::new();
        std::mem::take(&mut guard.0)
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .len()
    }

    pub(crate) fn fail(&self, error: Error) {
        let mut slot = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(error);
        self.failed.store(true, Ordering::Release);
    }

    pub(crate) fn take_fatal(&self) -> Option<Error> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The span of the record being processed, and the thread polling the agent's future.
#[derive(Default)]
pub(crate) struct SpanSlot {
    span: Option<tracing::Span>,
    poller: Option<std::thread::ThreadId>,
}

impl SpanSlot {
    /// Whether the agent's future is being polled on this thread (its span is entered here).
    fn entered_here(&self) -> bool {
        self.poller == Some(std::thread::current().id())
    }
}

/// State that lives outside table overlays between commits (windows keep theirs typed in
/// memory) and is written into its table's overlay at the start of every commit step.
pub(crate) trait Flush: Send + Sync {
    /// True when there is something to write.
    fn dirty(&self) -> bool;
    /// Writes the changes since the last flush into the table overlay.
    fn flush(&self) -> Result<()>;
}

/// Event time of the record the current agent is processing.
pub(crate) fn current_event_time() -> Option<i64> {
    CURRENT.try_with(|s| s.event_time()).ok().flatten()
}

/// Sends through the current agent's commit buffer.
pub(crate) async fn send(
    what: &'static str,
    record: OutRecord,
    counter: Option<&SendCounter>,
) -> Result<()> {
    let shared = CURRENT
        .try_with(Arc::clone)
        .map_err(|_| Error::NoContext(what))?;
    shared.send(record, counter).await
}

/// Applies a record of a table's topic to the table (`AgentSpec::table_of`).
pub(crate) type TableFeed =
    Arc<dyn Fn(&crate::base::message::RawRecord) -> Result<()> + Send + Sync>;

impl InstanceState {
    /// Feeds `topic`'s records to a table from now on (replacing an earlier feed of it).
    pub(crate) fn feed(&self, topic: &str, feed: TableFeed) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds.retain(|(t, _)| &**t != topic);
        feeds.push((Arc::from(topic), feed));
        self.has_feeds.store(true, Ordering::Release);
    }

    /// True the first time `what` is set up on this instance (the agent function runs again
    /// after a failure; what it installed, such as feeds, stays).
    pub(crate) fn first_setup(&self, what: &str) -> bool {
        self.setups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(what.to_owned())
    }

    /// Whether a table is built from one of the agent's topics.
    pub(crate) fn has_feeds(&self) -> bool {
        self.has_feeds.load(Ordering::Acquire)
    }

    /// The feed of `topic`'s records, if a table is built from it.
    pub(crate) fn feed_of(&self, topic: &str) -> Option<TableFeed> {
        if !self.has_feeds.load(Ordering::Acquire) {
            return None;
        }
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds
            .iter()
            .find(|(t, _)| &**t == topic)
            .map(|(_, f)| f.clone())
    }
}

/// Asks the current agent instance to commit as soon as it has nothing in hand (a reply is
/// waited for); nothing outside an agent.
pub(crate) fn commit_soon() {
    let _ = CURRENT.try_with(|shared| shared.commit_soon.store(true, Ordering::Relaxed));
}

/// Encodes and sends a value through the current agent's commit buffer (`Sink::send`,
/// `Topic::send`): at once when it can (see `InstanceState::try_send_now`), else as an owned record.
pub(crate) async fn send_value<V: Record>(
    what: &'static str,
    topic: impl AsRef<str> + Into<Arc<str>>,
    codec: Codec,
    key: Option<std::borrow::Cow<'_, [u8]>>,
    value: &V,
    counter: Option<&SendCounter>,
) -> Result<()> {
    let name = topic.as_ref();
    let sent = CURRENT
        .try_with(|shared| shared.try_send_now(name, codec, key.as_deref(), value, counter))
        .map_err(|_| Error::NoContext(what))??;
    if sent {
        return Ok(());
    }
    let key = key.map(std::borrow::Cow::into_owned);
    send(
        what,
        encode_out(topic, codec, key, value, current_event_time())?,
        counter,
    )
    .await
}

/// A `Sink`'s cached counter of its topic's sends.
pub(crate) type SendCounter = std::sync::OnceLock<Arc<AtomicU64>>;
