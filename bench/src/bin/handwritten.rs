//! The hand-written baseline of the benchmark suite (bench/BASELINES.md): the same scenarios
//! as rill, written directly on rdkafka, serde_json and heed, with no framework. Run in
//! release mode:
//!
//! ```text
//! cargo build --release -p rill-bench --bin handwritten
//! H=target/release/handwritten
//! $H --bootstrap 127.0.0.1:19092 --produce-data 1000000             # bench-views, bench-clicks
//! $H --scenario keyed-count --bootstrap 127.0.0.1:19092 --events 1000000 --prefix run1
//! $H --scenario stateless --embedded /tmp/hw-embedded --events 1000000
//! ```
//!
//! Kafka (`--bootstrap`): each of `--threads` processing threads is assigned partitions
//! `p % T == i` of the inputs (no rebalance moves keys between their states). A `BaseConsumer`
//! polled on its own thread decodes records into typed structs and hands batches to the
//! processing thread, which keeps the state, produces through a `ThreadedProducer`
//! (murmur2_random) and commits every `--commit-interval-ms`: offsets are committed once every
//! output sent before them is delivered (tracked per commit epoch, so processing never waits
//! for the broker), after the state's write transaction (heed, at least 10,000 records per
//! transaction) is committed. `keyed-count` sends every update to a compacted changelog topic;
//! `eos-keyed-count` does so in Kafka transactions, one per commit interval, with the offsets
//! (`send_offsets_to_transaction`). Event time is the record's `view_time` (`click_time`); the
//! watermark is the largest event time seen per partition, the smallest over the thread's
//! input partitions (grace 0). The run stops after `--events` views (and, for `join`, half as
//! many clicks); outputs carry their input's timestamp.
//!
//! Topics created here (the data and the outputs) have `retention.ms=-1`: event times (message
//! timestamps) of data written by `--produce-data` may be older than the broker's 7-day
//! time-based retention.
//!
//! Embedded (`--embedded DIR`): writes `--events` page views into an LMDB database keyed by
//! big-endian offset, then times the loop that scans them, decodes, works (`stateless`: drop
//! `/health`, re-encode, append to an output database; `keyed-count`: a count per URL in a
//! database) and stores the read offset, 10,000 records per write transaction.
//!
//! One JSON line of results on stdout (the contract's), progress every second on stderr.
#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its results on the terminal"
)]

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U64};
use heed::{Database, Env, EnvOpenOptions, PutFlags, RwTxn, WithoutTls};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

const SYSTEM: &str = "handwritten";
const VIEWS_TOPIC: &str = "bench-views";
const CLICKS_TOPIC: &str = "bench-clicks";
/// Event time of the first generated view (ms since the epoch).
const START_MS: i64 = 1_764_000_000_000;
/// Records per LMDB write transaction (at least).
const TXN_RECORDS: u64 = 10_000;
/// Tumbling window size.
const WINDOW_MS: i64 = 60_000;
/// A click joins a view within this much event time of it (either side).
const JOIN_MS: i64 = 5_000;
/// Records handed from the consumer thread to the processing thread at once (at most).
const BATCH: usize = 1_024;
/// Commit epochs whose deliveries are tracked at once.
const EPOCHS: usize = 256;
/// Stop waiting for input after this long without records (the topics ran dry).
const IDLE_STOP: Duration = Duration::from_secs(30);
/// Timeout of blocking client calls (flush, commits, transactions, admin).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(about = "Hand-written baseline (rdkafka, serde_json, heed; no framework)")]
struct Args {
    /// Scenario to run.
    #[arg(long, value_enum, default_value = "stateless")]
    scenario: Scenario,
    /// Kafka bootstrap servers.
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "embedded")]
    bootstrap: Option<String>,
    /// Run on an LMDB log in DIR instead of Kafka (`stateless` and `keyed-count`).
    #[arg(long, value_name = "DIR", conflicts_with = "bootstrap")]
    embedded: Option<PathBuf>,
    /// Stop once this many views are processed.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Partitions of the topics this program creates.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Consumer group and prefix of the topics this program creates.
    #[arg(long, default_value = "bench-handwritten")]
    prefix: String,
    /// Directory of the LMDB state (default: a temporary one).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Processing threads (Kafka): thread `i` of `T` owns partitions `p` with `p % T == i` of
    /// every input topic, with its own consumer, producer and LMDB environment.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Offered load of a latency run (produced by the suite; nothing to do here).
    #[arg(long, value_name = "EVENTS_PER_S")]
    rate: Option<f64>,
    /// Write N views (and a click for every second one) to `bench-views` and `bench-clicks`,
    /// recreating them with `--partitions` partitions, and exit.
    #[arg(long, value_name = "N", requires = "bootstrap")]
    produce_data: Option<u64>,
    /// Distinct URLs of the generated views.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Commit interval.
    #[arg(long, default_value_t = 100)]
    commit_interval_ms: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Stateless,
    KeyedCount,
    TumblingCount,
    EosKeyedCount,
    Join,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Stateless => "stateless",
            Self::KeyedCount => "keyed-count",
            Self::TumblingCount => "tumbling-count",
            Self::EosKeyedCount => "eos-keyed-count",
            Self::Join => "join",
        }
    }
}

// ------------------------------------------------------------------------------- records --

/// A record of `bench-views`.
#[derive(Serialize, Deserialize)]
struct PageView {
    user_id: String,
    url: String,
    view_time: f64,
}

/// A record of `bench-views`, borrowing its strings from the bytes it was decoded from.
#[derive(Serialize, Deserialize)]
struct PageViewRef<'a> {
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow)]
    url: Cow<'a, str>,
    view_time: f64,
}

/// A record of `bench-clicks`.
#[derive(Serialize, Deserialize)]
struct Click {
    user_id: String,
    url: String,
    click_time: f64,
}

/// The output of `tumbling-count`: one per URL and closed window.
#[derive(Serialize)]
struct WindowCount<'a> {
    url: &'a str,
    window_start: i64,
    window_end: i64,
    count: u64,
}

/// The output of `join`.
#[derive(Serialize)]
struct Joined<'a> {
    view_user: &'a str,
    url: &'a str,
    delay_ms: i64,
}

fn secs_to_ms(secs: f64) -> i64 {
    (secs * 1000.0).round() as i64
}

fn ms_to_secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn is_health(url: &str) -> bool {
    url.starts_with("/health")
}

/// View `i` of the contract's data.
fn generated_view(i: u64, keys: u64) -> PageView {
    let url = if i.is_multiple_of(10) {
        format!("/health/{}", i % 100)
    } else {
        format!("/p/{}", i % keys)
    };
    PageView {
        user_id: format!("u{}", i % 1000),
        url,
        view_time: ms_to_secs(START_MS + i as i64),
    }
}

/// The click of view `i` (every second view has one, 2 s of event time after it).
fn generated_click(i: u64, view: &PageView) -> Option<Click> {
    (i % 2 == 1).then(|| Click {
        user_id: view.user_id.clone(),
        url: view.url.clone(),
        click_time: ms_to_secs(secs_to_ms(view.view_time) + 2_000),
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Timing and counts of a run, printed as the contract's JSON line.
struct Report {
    scenario: Scenario,
    events: u64,
    outputs: u64,
    late: u64,
    first_record_ms: i64,
    last_record_ms: i64,
    seconds: f64,
}

impl Report {
    fn print(&self) {
        let line = serde_json::json!({
            "scenario": self.scenario.name(),
            "system": SYSTEM,
            "events": self.events,
            "first_record_ms": self.first_record_ms,
            "last_record_ms": self.last_record_ms,
            "seconds": self.seconds,
            "events_per_s": if self.seconds > 0.0 { self.events as f64 / self.seconds } else { 0.0 },
            "outputs": self.outputs,
            "late": self.late,
        });
        println!("{line}");
    }
}

/// Prints progress on stderr at most once a second.
struct Progress {
    label: String,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(label: String) -> Self {
        let now = Instant::now();
        Self {
            label,
            started: now,
            last: now,
        }
    }

    fn tick(&mut self, done: u64, outputs: u64) {
        if self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            let secs = self.started.elapsed().as_secs_f64();
            eprintln!(
                "{}: {done} events, {outputs} outputs, {:.0} events/s",
                self.label,
                done as f64 / secs
            );
        }
    }
}

// ---------------------------------------------------------------------------------- LMDB --

#[allow(unsafe_code, reason = "opening an LMDB environment is unsafe in heed")]
fn open_env(path: &Path) -> heed::Result<Env<WithoutTls>> {
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(64 << 30).max_dbs(8);
    // SAFETY: this process opens each environment once and nothing else maps its files.
    unsafe { options.open(path) }
}

/// The state directory of a run: `--state-dir`, or a temporary directory removed at the end.
fn state_dir(args: &Args) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match &args.state_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Ok((dir.clone(), None))
        }
        None => {
            let temp = tempfile::tempdir()?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

// --------------------------------------------------------------------------------- Kafka --

fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.kbytes", "65536")
        // The Java client has no message count limit: the byte limit is the one that binds.
        .set("queue.buffering.max.messages", "1000000")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("acks", "all")
        .set("enable.idempotence", "true");
    config
}

fn consumer_config(bootstrap: &str, group: &str, read_committed: bool) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("queued.max.messages.kbytes", "65536")
        // rill's prefetch defaults (see `bench/BASELINES.md`): bounded fetches and a short
        // backoff once a partition's queue is full.
        .set("fetch.max.bytes", "1048576")
        .set("queued.min.messages", "10000")
        .set("fetch.queue.backoff.ms", "1")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        );
    config
}

/// Runs an admin future (rdkafka's futures need a tokio runtime for their timeouts).
fn block_on<F: Future>(future: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(future))
}

/// Creates `topics` (name, compacted); existing ones are kept, or deleted first if `recreate`.
fn create_topics(
    bootstrap: &str,
    topics: &[(String, bool)],
    partitions: i32,
    recreate: bool,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let options = AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT));
    if recreate {
        let names: Vec<&str> = topics.iter().map(|(name, _)| name.as_str()).collect();
        for result in block_on(admin.delete_topics(&names, &options))?? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((name, code)) => return Err(format!("deleting {name}: {code}").into()),
            }
        }
    }
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    for (name, compacted) in topics {
        // The contract's event times lie in the past: time-based retention must not delete
        // the records.
        let mut topic =
            NewTopic::new(name, partitions, TopicReplication::Fixed(1)).set("retention.ms", "-1");
        if *compacted {
            topic = topic.set("cleanup.policy", "compact");
        }
        loop {
            let results = block_on(admin.create_topics([&topic], &options))??;
            match results.into_iter().next() {
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists)))
                    if recreate && Instant::now() < deadline =>
                {
                    // The deletion is still under way.
                    thread::sleep(Duration::from_millis(500));
                }
                Some(Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => break,
                Some(Err((name, code))) => return Err(format!("creating {name}: {code}").into()),
            }
        }
    }
    Ok(())
}

/// Sends a record, waiting while the producer's queue is full.
fn send<C: ProducerContext>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, str, [u8], C::DeliveryOpaque>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// `--produce-data N`: the contract's `bench-views` and `bench-clicks`.
fn produce_data(args: &Args, bootstrap: &str, views: u64) -> Result<()> {
    let topics = [
        (VIEWS_TOPIC.to_owned(), false),
        (CLICKS_TOPIC.to_owned(), false),
    ];
    create_topics(bootstrap, &topics, args.partitions, true)?;
    let producer: ThreadedProducer<DefaultProducerContext> = producer_config(bootstrap).create()?;
    let mut progress = Progress::new("handwritten produce-data".to_owned());
    let mut payload = Vec::with_capacity(128);
    let mut clicks = 0;
    for i in 0..views {
        let view = generated_view(i, args.keys);
        let ts = START_MS + i as i64;
        payload.clear();
        serde_json::to_writer(&mut payload, &view)?;
        send(
            &producer,
            BaseRecord::to(VIEWS_TOPIC)
                .key(view.url.as_str())
                .payload(payload.as_slice())
                .timestamp(ts),
        )?;
        if let Some(click) = generated_click(i, &view) {
            payload.clear();
            serde_json::to_writer(&mut payload, &click)?;
            send(
                &producer,
                BaseRecord::to(CLICKS_TOPIC)
                    .key(click.url.as_str())
                    .payload(payload.as_slice())
                    .timestamp(secs_to_ms(click.click_time)),
            )?;
            clicks += 1;
        }
        progress.tick(i + 1, clicks);
    }
    producer.flush(CLIENT_TIMEOUT)?;
    eprintln!("handwritten produce-data: {views} views, {clicks} clicks");
    Ok(())
}

/// Outstanding deliveries per commit epoch, and the first delivery error.
struct Deliveries {
    outstanding: Vec<AtomicI64>,
    error: Mutex<Option<String>>,
}

impl Deliveries {
    fn new() -> Self {
        Self {
            outstanding: (0..EPOCHS).map(|_| AtomicI64::new(0)).collect(),
            error: Mutex::new(None),
        }
    }

    fn counter(&self, epoch: usize) -> &AtomicI64 {
        &self.outstanding[epoch % EPOCHS]
    }

    fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }
}

/// The producer's context: counts deliveries down per epoch.
struct Tracked(Arc<Deliveries>);

impl ClientContext for Tracked {}

impl ProducerContext for Tracked {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, epoch: usize) {
        if let Err((e, _)) = result
            && let Ok(mut error) = self.0.error.lock()
        {
            error.get_or_insert_with(|| e.to_string());
        }
        self.0.counter(epoch).fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which input a record came from.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    Views,
    Clicks,
}

impl Side {
    fn topic(self) -> &'static str {
        match self {
            Self::Views => VIEWS_TOPIC,
            Self::Clicks => CLICKS_TOPIC,
        }
    }
}

enum Event {
    View(PageView),
    Click(Click),
    /// Undecodable: skipped (its offset still advances).
    Invalid,
}

/// A consumed record, decoded on the consumer thread.
struct Rec {
    side: Side,
    partition: i32,
    offset: i64,
    timestamp: i64,
    event: Event,
}

impl Rec {
    fn decode(message: &BorrowedMessage<'_>) -> Self {
        let payload = message.payload().unwrap_or_default();
        let (side, event) = if message.topic() == CLICKS_TOPIC {
            let event = serde_json::from_slice(payload).map_or(Event::Invalid, Event::Click);
            (Side::Clicks, event)
        } else {
            let event = serde_json::from_slice(payload).map_or(Event::Invalid, Event::View);
            (Side::Views, event)
        };
        let event_time = match &event {
            Event::View(v) => secs_to_ms(v.view_time),
            Event::Click(c) => secs_to_ms(c.click_time),
            Event::Invalid => 0,
        };
        Self {
            side,
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis().unwrap_or(event_time),
            event,
        }
    }
}

/// The consumer thread: polls, decodes, and hands batches over until `stop` or the receiver
/// is gone.
fn fetch(consumer: &BaseConsumer, batches: &SyncSender<Vec<Rec>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut timeout = Duration::from_millis(100);
        while batch.len() < BATCH {
            match consumer.poll(timeout) {
                None => break,
                Some(Ok(message)) => batch.push(Rec::decode(&message)),
                Some(Err(e)) => {
                    eprintln!("handwritten: consumer error: {e}");
                    break;
                }
            }
            timeout = Duration::ZERO;
        }
        if !batch.is_empty() && batches.send(batch).is_err() {
            return;
        }
    }
}

/// Per input partition: the next offset to commit and the largest event time seen.
struct Positions {
    parts: HashMap<(Side, i32), (i64, i64)>,
    /// Input partitions: the watermark exists once each has delivered a record.
    expected: usize,
}

impl Positions {
    fn advance(&mut self, rec: &Rec, event_time: Option<i64>) {
        let entry = self
            .parts
            .entry((rec.side, rec.partition))
            .or_insert((0, i64::MIN));
        entry.0 = rec.offset + 1;
        if let Some(t) = event_time {
            entry.1 = entry.1.max(t);
        }
    }

    fn watermark(&self) -> Option<i64> {
        if self.parts.len() < self.expected {
            return None;
        }
        self.parts.values().map(|&(_, t)| t).min()
    }

    fn offsets(&self) -> Result<TopicPartitionList> {
        let mut list = TopicPartitionList::new();
        for (&(side, partition), &(next, _)) in &self.parts {
            list.add_partition_offset(side.topic(), partition, Offset::Offset(next))?;
        }
        Ok(list)
    }
}

/// Sends outputs, counting each into the current commit epoch.
struct Output {
    producer: ThreadedProducer<Tracked>,
    deliveries: Arc<Deliveries>,
    topic: String,
    epoch: usize,
    sent: u64,
    buf: Vec<u8>,
}

impl Output {
    /// Sends `value` (JSON) keyed by `key` with message timestamp `timestamp`.
    fn send<T: Serialize>(&mut self, key: &str, value: &T, timestamp: i64) -> Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, value)?;
        let counter = self.deliveries.counter(self.epoch);
        counter.fetch_add(1, Ordering::AcqRel);
        let record = BaseRecord::with_opaque_to(&self.topic, self.epoch)
            .key(key)
            .payload(self.buf.as_slice())
            .timestamp(timestamp);
        if let Err(e) = send(&self.producer, record) {
            counter.fetch_sub(1, Ordering::AcqRel);
            return Err(e.into());
        }
        self.sent += 1;
        Ok(())
    }

    /// Waits until every output sent so far is delivered. (rdkafka's `flush` polls in 100 ms
    /// steps: a commit would wait 100 ms for outputs delivered in 5.)
    fn wait_delivered(&self) -> Result<()> {
        // A flush without waiting sends the batches still lingering.
        let _ = self.producer.flush(Duration::ZERO);
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let outstanding = || {
            self.producer.in_flight_count() > 0
                || (self.deliveries.outstanding.iter()).any(|c| c.load(Ordering::Acquire) != 0)
        };
        while outstanding() {
            if let Some(error) = self.deliveries.error() {
                return Err(format!("delivery failed: {error}").into());
            }
            if Instant::now() > deadline {
                return Err("outputs not delivered in time".into());
            }
            thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    }
}

/// A URL's count in one window, and whether heed has it yet.
struct Slot {
    count: u64,
    dirty: bool,
}

/// `tumbling-count`: open windows in memory, written behind to heed at each state commit.
struct Windows {
    db: Database<Bytes, U64<BigEndian>>,
    open: BTreeMap<i64, HashMap<String, Slot>>,
    dirty: Vec<(i64, String)>,
    key: Vec<u8>,
    late: u64,
}

impl Windows {
    fn key(&mut self, start: i64, url: &str) -> &[u8] {
        self.key.clear();
        self.key.extend_from_slice(&start.to_be_bytes());
        self.key.extend_from_slice(url.as_bytes());
        &self.key
    }

    fn add(&mut self, url: String, event_time: i64, watermark: Option<i64>) {
        let start = event_time.div_euclid(WINDOW_MS) * WINDOW_MS;
        if watermark.is_some_and(|w| start + WINDOW_MS <= w) {
            self.late += 1;
            return;
        }
        let window = self.open.entry(start).or_default();
        match window.get_mut(&url) {
            Some(slot) => {
                slot.count += 1;
                if !slot.dirty {
                    slot.dirty = true;
                    self.dirty.push((start, url));
                }
            }
            None => {
                self.dirty.push((start, url.clone()));
                window.insert(
                    url,
                    Slot {
                        count: 1,
                        dirty: true,
                    },
                );
            }
        }
    }

    /// Emits and forgets every window the watermark has passed.
    fn close(
        &mut self,
        watermark: i64,
        timestamp: i64,
        out: &mut Output,
        wtxn: &mut RwTxn<'_>,
    ) -> Result<()> {
        while let Some(entry) = self.open.first_entry()
            && *entry.key() + WINDOW_MS <= watermark
        {
            let (start, counts) = entry.remove_entry();
            for (url, slot) in &counts {
                let value = WindowCount {
                    url,
                    window_start: start,
                    window_end: start + WINDOW_MS,
                    count: slot.count,
                };
                out.send(url, &value, timestamp)?;
            }
            let (low, high) = (start.to_be_bytes(), (start + 1).to_be_bytes());
            let range = (Bound::Included(&low[..]), Bound::Excluded(&high[..]));
            self.db.delete_range(wtxn, &range)?;
        }
        Ok(())
    }

    /// Writes the counts changed since the last call.
    fn persist(&mut self, wtxn: &mut RwTxn<'_>) -> Result<()> {
        for (start, url) in std::mem::take(&mut self.dirty) {
            let Some(slot) = self.open.get_mut(&start).and_then(|w| w.get_mut(&url)) else {
                continue; // emitted since
            };
            slot.dirty = false;
            let count = slot.count;
            let db = self.db;
            db.put(wtxn, self.key(start, &url), &count)?;
        }
        Ok(())
    }
}

/// `join`: views and clicks per URL within their time bounds.
#[derive(Default)]
struct Join {
    views: HashMap<String, VecDeque<(i64, String)>>,
    clicks: HashMap<String, VecDeque<i64>>,
}

impl Join {
    fn view(
        &mut self,
        view: PageView,
        timestamp: i64,
        watermark: Option<i64>,
        out: &mut Output,
    ) -> Result<()> {
        let t = secs_to_ms(view.view_time);
        if let Some(clicks) = self.clicks.get_mut(&view.url) {
            if let Some(w) = watermark {
                while clicks.front().is_some_and(|&c| c + JOIN_MS < w) {
                    clicks.pop_front();
                }
            }
            for &c in clicks.iter().filter(|&&c| (c - t).abs() <= JOIN_MS) {
                let joined = Joined {
                    view_user: &view.user_id,
                    url: &view.url,
                    delay_ms: c - t,
                };
                out.send(&view.url, &joined, timestamp)?;
            }
        }
        self.views
            .entry(view.url)
            .or_default()
            .push_back((t, view.user_id));
        Ok(())
    }

    fn click(
        &mut self,
        click: Click,
        timestamp: i64,
        watermark: Option<i64>,
        out: &mut Output,
    ) -> Result<()> {
        let c = secs_to_ms(click.click_time);
        if let Some(views) = self.views.get_mut(&click.url) {
            if let Some(w) = watermark {
                while views.front().is_some_and(|&(t, _)| t + JOIN_MS < w) {
                    views.pop_front();
                }
            }
            for (t, user) in views.iter().filter(|(t, _)| (c - t).abs() <= JOIN_MS) {
                let joined = Joined {
                    view_user: user,
                    url: &click.url,
                    delay_ms: c - t,
                };
                out.send(&click.url, &joined, timestamp)?;
            }
        }
        self.clicks.entry(click.url).or_default().push_back(c);
        Ok(())
    }

    /// Drops every buffered record the watermark has left behind.
    fn expire(&mut self, watermark: i64) {
        self.views.retain(|_, views| {
            while views.front().is_some_and(|&(t, _)| t + JOIN_MS < watermark) {
                views.pop_front();
            }
            !views.is_empty()
        });
        self.clicks.retain(|_, clicks| {
            while clicks.front().is_some_and(|&c| c + JOIN_MS < watermark) {
                clicks.pop_front();
            }
            !clicks.is_empty()
        });
    }
}

/// The state of a scenario.
enum Work {
    Stateless,
    /// `keyed-count` and `eos-keyed-count`: the table, its changelog is the output topic.
    Count(Database<Str, U64<BigEndian>>),
    Windows(Windows),
    Join(Join),
}

/// The run's budget of records, shared by the processing threads.
#[derive(Default)]
struct Claims {
    views: AtomicU64,
    clicks: AtomicU64,
}

/// What a processing thread did: counts, and when it handled its first and last records.
struct Tally {
    views: u64,
    outputs: u64,
    late: u64,
    first: Option<(Instant, i64)>,
    last: Option<(Instant, i64)>,
}

/// Everything a processing thread owns.
struct Processor<'a> {
    args: &'a Args,
    label: String,
    claims: &'a Claims,
    consumer: &'a BaseConsumer,
    env: &'a Env<WithoutTls>,
    out: Output,
    eos: bool,
    work: Work,
    positions: Positions,
    /// Commits waiting for their epoch's deliveries: (epoch, offsets).
    pending: VecDeque<(usize, TopicPartitionList)>,
    /// Records written to heed since its last commit.
    unsaved: u64,
    views: u64,
    clicks: u64,
}

impl Processor<'_> {
    fn handle(&mut self, rec: Rec, watermark: Option<i64>, wtxn: &mut RwTxn<'_>) -> Result<()> {
        let event_time = match &rec.event {
            Event::View(v) => Some(secs_to_ms(v.view_time)),
            Event::Click(c) => Some(secs_to_ms(c.click_time)),
            Event::Invalid => None,
        };
        self.positions.advance(&rec, event_time);
        match rec.side {
            Side::Views => self.views += 1,
            Side::Clicks => self.clicks += 1,
        }
        let ts = rec.timestamp;
        match (&mut self.work, rec.event) {
            (_, Event::Invalid) => {}
            (Work::Stateless, Event::View(view)) => {
                if !is_health(&view.url) {
                    self.out.send(&view.url, &view, ts)?;
                }
            }
            (Work::Count(db), Event::View(view)) => {
                let count = db.get(wtxn, &view.url)?.unwrap_or(0) + 1;
                db.put(wtxn, &view.url, &count)?;
                self.unsaved += 1;
                self.out.send(&view.url, &count, ts)?;
            }
            (Work::Windows(windows), Event::View(view)) => {
                windows.add(view.url, secs_to_ms(view.view_time), watermark);
                self.unsaved += 1;
            }
            (Work::Join(join), Event::View(view)) => {
                join.view(view, ts, watermark, &mut self.out)?
            }
            (Work::Join(join), Event::Click(click)) => {
                join.click(click, ts, watermark, &mut self.out)?;
            }
            (_, Event::Click(_)) => {}
        }
        Ok(())
    }

    /// Claims the next record of `side` from the run's budget (`--events` views, half as many
    /// clicks); false once the budget is spent.
    fn claim(&self, side: Side) -> bool {
        match side {
            Side::Views => self.claims.views.fetch_add(1, Ordering::Relaxed) < self.args.events,
            Side::Clicks => {
                self.claims.clicks.fetch_add(1, Ordering::Relaxed) < self.args.events / 2
            }
        }
    }

    fn done(&self) -> bool {
        self.claims.views.load(Ordering::Relaxed) >= self.args.events
            && (!matches!(self.work, Work::Join(_))
                || self.claims.clicks.load(Ordering::Relaxed) >= self.args.events / 2)
    }

    /// The commit step: the state's transaction (at least `TXN_RECORDS` records, or all at the
    /// end), then the offsets once the outputs before them are delivered (or the Kafka
    /// transaction).
    fn commit<'e>(&mut self, wtxn: RwTxn<'e>, last: bool) -> Result<Option<RwTxn<'e>>> {
        if let Some(error) = self.out.deliveries.error() {
            return Err(format!("delivery failed: {error}").into());
        }
        let mut wtxn = Some(wtxn);
        // Nothing unsaved (no state, or no update since): the commit costs nothing.
        let save = last || self.unsaved == 0 || self.unsaved >= TXN_RECORDS;
        let offsets = self.positions.offsets()?;
        if self.eos {
            // The changelog and the offsets commit together; the local table follows.
            let Some(group) = self.consumer.group_metadata() else {
                return Err("no consumer group metadata".into());
            };
            self.out
                .producer
                .send_offsets_to_transaction(&offsets, &group, CLIENT_TIMEOUT)?;
            // (`commit_transaction` flushes too, but rdkafka's flush waits in 100 ms steps.)
            self.out.wait_delivered()?;
            self.out.producer.commit_transaction(CLIENT_TIMEOUT)?;
            if !last {
                self.out.producer.begin_transaction()?;
            }
            if save && let Some(txn) = wtxn.take() {
                txn.commit()?;
                self.unsaved = 0;
            }
            return Ok(wtxn);
        }
        if save {
            if let (Work::Windows(windows), Some(txn)) = (&mut self.work, wtxn.as_mut()) {
                windows.persist(txn)?;
            }
            if let Some(txn) = wtxn.take() {
                txn.commit()?;
            }
            self.unsaved = 0;
            if self.pending.len() + 1 >= EPOCHS {
                self.out.wait_delivered()?;
            }
            self.pending.push_back((self.out.epoch, offsets));
            self.out.epoch += 1;
        }
        if last {
            self.out.wait_delivered()?;
        }
        let mut ready = None;
        while let Some((epoch, _)) = self.pending.front()
            && self.out.deliveries.counter(*epoch).load(Ordering::Acquire) == 0
        {
            ready = self.pending.pop_front().map(|(_, offsets)| offsets);
        }
        if let Some(offsets) = ready
            && offsets.count() > 0
        {
            let mode = if last {
                CommitMode::Sync
            } else {
                CommitMode::Async
            };
            self.consumer.commit(&offsets, mode)?;
        }
        Ok(wtxn)
    }

    /// Processes batches until the run's `--events` views are done.
    fn run(&mut self, batches: &Receiver<Vec<Rec>>) -> Result<Tally> {
        let interval = Duration::from_millis(self.args.commit_interval_ms);
        let mut progress = Progress::new(self.label.clone());
        let mut wtxn = self.env.write_txn()?;
        let mut first: Option<(Instant, i64)> = None;
        let mut last = None;
        let mut last_commit = Instant::now();
        let mut last_expiry = Instant::now();
        let mut last_input = Instant::now();
        while !self.done() {
            let batch = match batches.recv_timeout(interval) {
                Ok(batch) => batch,
                Err(RecvTimeoutError::Timeout) => {
                    if first.is_some() && last_input.elapsed() > IDLE_STOP {
                        eprintln!("handwritten: no input for {IDLE_STOP:?}, stopping early");
                        break;
                    }
                    Vec::new()
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("the consumer thread stopped".into());
                }
            };
            if !batch.is_empty() {
                last_input = Instant::now();
                if first.is_none() {
                    first = Some((Instant::now(), now_ms()));
                    progress = Progress::new(self.label.clone());
                }
            }
            let watermark = self.positions.watermark();
            let mut batch_ts = None;
            for rec in batch {
                if !self.claim(rec.side) {
                    continue;
                }
                batch_ts = Some(rec.timestamp);
                self.handle(rec, watermark, &mut wtxn)?;
            }
            if let Some(ts) = batch_ts {
                last = Some((Instant::now(), now_ms()));
                if let Some(watermark) = self.positions.watermark() {
                    match &mut self.work {
                        Work::Windows(windows) => {
                            windows.close(watermark, ts, &mut self.out, &mut wtxn)?;
                        }
                        Work::Join(join) if last_expiry.elapsed() >= Duration::from_secs(1) => {
                            join.expire(watermark);
                            last_expiry = Instant::now();
                        }
                        _ => {}
                    }
                }
            }
            if last_commit.elapsed() >= interval {
                last_commit = Instant::now();
                if let Some(txn) = self.commit(wtxn, false)? {
                    wtxn = txn;
                } else {
                    wtxn = self.env.write_txn()?;
                }
            }
            progress.tick(self.views, self.out.sent);
        }
        let _ = self.commit(wtxn, true)?;
        let late = match &self.work {
            Work::Windows(windows) => windows.late,
            _ => 0,
        };
        Ok(Tally {
            views: self.views,
            outputs: self.out.sent,
            late,
            first,
            last,
        })
    }
}

fn run_kafka(args: &Args, bootstrap: &str) -> Result<()> {
    let scenario = args.scenario;
    let counting = matches!(scenario, Scenario::KeyedCount | Scenario::EosKeyedCount);
    let out_topic = if counting {
        format!("{}-counts-changelog", args.prefix)
    } else {
        format!("{}-out", args.prefix)
    };
    create_topics(
        bootstrap,
        &[(out_topic.clone(), counting)],
        args.partitions,
        false,
    )?;
    let inputs: &[&str] = if scenario == Scenario::Join {
        &[VIEWS_TOPIC, CLICKS_TOPIC]
    } else {
        &[VIEWS_TOPIC]
    };
    let mut partitions = Vec::new();
    {
        let metadata: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()?;
        for topic in inputs {
            let metadata = metadata.fetch_metadata(Some(topic), CLIENT_TIMEOUT)?;
            let count = metadata
                .topics()
                .iter()
                .find(|t| t.name() == *topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len());
            if count == 0 {
                return Err(format!("topic {topic} is missing (run --produce-data first)").into());
            }
            partitions.push((*topic, count as i32));
        }
    }

    let (dir, _temp) = state_dir(args)?;
    let threads = args.threads.max(1);
    let claims = Claims::default();
    let tallies: Vec<Result<Tally>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|index| {
                let worker = Worker {
                    args,
                    bootstrap,
                    index,
                    threads,
                    partitions: &partitions,
                    out_topic: &out_topic,
                    dir: dir.join(format!("worker-{index}")),
                    claims: &claims,
                };
                scope.spawn(move || worker.run())
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("a worker panicked".into())))
            .collect()
    });
    let tallies = tallies.into_iter().collect::<Result<Vec<_>>>()?;
    let first = tallies.iter().filter_map(|t| t.first).min_by_key(|f| f.0);
    let last = tallies.iter().filter_map(|t| t.last).max_by_key(|l| l.0);
    let (first, last) = match (first, last) {
        (Some(first), Some(last)) => (first, last),
        _ => {
            let now = (Instant::now(), now_ms());
            (now, now)
        }
    };
    Report {
        scenario,
        events: tallies.iter().map(|t| t.views).sum(),
        outputs: tallies.iter().map(|t| t.outputs).sum(),
        late: tallies.iter().map(|t| t.late).sum(),
        first_record_ms: first.1,
        last_record_ms: last.1,
        seconds: last.0.duration_since(first.0).as_secs_f64(),
    }
    .print();
    Ok(())
}

/// A processing thread of a Kafka run, with its consumer thread.
struct Worker<'a> {
    args: &'a Args,
    bootstrap: &'a str,
    index: usize,
    threads: usize,
    /// Input topics and their partition counts.
    partitions: &'a [(&'a str, i32)],
    out_topic: &'a str,
    /// Its LMDB environment.
    dir: PathBuf,
    claims: &'a Claims,
}

impl Worker<'_> {
    fn run(self) -> Result<Tally> {
        let args = self.args;
        let scenario = args.scenario;
        let eos = scenario == Scenario::EosKeyedCount;

        // Its share of the partitions, assigned (no rebalance moves them, so each thread's
        // state holds every key of its partitions); offsets are the group's.
        let mut assignment = TopicPartitionList::new();
        for &(topic, count) in self.partitions {
            for partition in (0..count).filter(|p| *p as usize % self.threads == self.index) {
                assignment.add_partition_offset(topic, partition, Offset::Stored)?;
            }
        }
        let expected = assignment.count();
        let consumer: Arc<BaseConsumer> =
            Arc::new(consumer_config(self.bootstrap, &args.prefix, eos).create()?);
        consumer.assign(&assignment)?;

        let deliveries = Arc::new(Deliveries::new());
        let mut config = producer_config(self.bootstrap);
        if eos {
            // A transaction begun right after the previous commit may be refused as concurrent
            // for a moment: retry in 10 ms (as rill and the Java client do), not in 100.
            config
                .set(
                    "transactional.id",
                    format!("{}-txn-{}", args.prefix, self.index),
                )
                .set("retry.backoff.ms", "10");
        }
        let producer: ThreadedProducer<Tracked> =
            config.create_with_context(Tracked(Arc::clone(&deliveries)))?;
        if eos {
            producer.init_transactions(CLIENT_TIMEOUT)?;
            producer.begin_transaction()?;
        }

        std::fs::create_dir_all(&self.dir)?;
        let env = open_env(&self.dir)?;
        let work = {
            let mut wtxn = env.write_txn()?;
            let work = match scenario {
                Scenario::Stateless => Work::Stateless,
                Scenario::KeyedCount | Scenario::EosKeyedCount => {
                    Work::Count(env.create_database(&mut wtxn, Some("counts"))?)
                }
                Scenario::TumblingCount => Work::Windows(Windows {
                    db: env.create_database(&mut wtxn, Some("windows"))?,
                    open: BTreeMap::new(),
                    dirty: Vec::new(),
                    key: Vec::new(),
                    late: 0,
                }),
                Scenario::Join => Work::Join(Join::default()),
            };
            wtxn.commit()?;
            work
        };

        let (sender, batches) = sync_channel(16);
        let stop = Arc::new(AtomicBool::new(false));
        let fetcher = {
            let consumer = Arc::clone(&consumer);
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name(format!("consumer-{}", self.index))
                .spawn(move || fetch(&consumer, &sender, &stop))?
        };
        let label = if self.threads > 1 {
            format!(
                "handwritten {} [{}/{}]",
                scenario.name(),
                self.index + 1,
                self.threads
            )
        } else {
            format!("handwritten {}", scenario.name())
        };
        let mut processor = Processor {
            args,
            label,
            claims: self.claims,
            consumer: &consumer,
            env: &env,
            out: Output {
                producer,
                deliveries,
                topic: self.out_topic.to_owned(),
                epoch: 0,
                sent: 0,
                buf: Vec::with_capacity(256),
            },
            eos,
            work,
            positions: Positions {
                parts: HashMap::new(),
                expected,
            },
            pending: VecDeque::new(),
            unsaved: 0,
            views: 0,
            clicks: 0,
        };
        let tally = processor.run(&batches);
        stop.store(true, Ordering::Relaxed);
        drop(batches);
        if fetcher.join().is_err() {
            return Err("the consumer thread panicked".into());
        }
        tally
    }
}

// ------------------------------------------------------------------------------ embedded --

fn run_embedded(args: &Args, dir: &Path) -> Result<()> {
    let scenario = args.scenario;
    if !matches!(scenario, Scenario::Stateless | Scenario::KeyedCount) {
        let line = serde_json::json!({
            "scenario": scenario.name(),
            "unsupported": "the embedded hand-written loop covers stateless and keyed-count",
        });
        println!("{line}");
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let env = open_env(dir)?;
    let mut wtxn = env.write_txn()?;
    let input: Database<U64<BigEndian>, Bytes> = env.create_database(&mut wtxn, Some("input"))?;
    let output: Database<U64<BigEndian>, Bytes> = env.create_database(&mut wtxn, Some("output"))?;
    let offsets: Database<Str, U64<BigEndian>> = env.create_database(&mut wtxn, Some("offsets"))?;
    let counts: Database<Str, U64<BigEndian>> = env.create_database(&mut wtxn, Some("counts"))?;
    for db in [input, output] {
        db.clear(&mut wtxn)?;
    }
    for db in [offsets, counts] {
        db.clear(&mut wtxn)?;
    }
    wtxn.commit()?;

    // The input log (not timed).
    let mut payload = Vec::with_capacity(128);
    let mut i = 0;
    while i < args.events {
        let mut wtxn = env.write_txn()?;
        let end = (i + TXN_RECORDS).min(args.events);
        for offset in i..end {
            payload.clear();
            serde_json::to_writer(&mut payload, &generated_view(offset, args.keys))?;
            input.put_with_flags(&mut wtxn, PutFlags::APPEND, &offset, &payload)?;
        }
        wtxn.commit()?;
        i = end;
    }
    eprintln!("handwritten embedded: {} views written", args.events);

    // The timed loop.
    let mut progress = Progress::new(format!("handwritten embedded {}", scenario.name()));
    let (started, first_ms) = (Instant::now(), now_ms());
    let mut next = 0;
    let mut written = 0;
    while next < args.events {
        let end = (next + TXN_RECORDS).min(args.events);
        let rtxn = env.read_txn()?;
        let mut wtxn = env.write_txn()?;
        for entry in input.range(&rtxn, &(next..end))? {
            let (_, bytes) = entry?;
            let view: PageViewRef<'_> = serde_json::from_slice(bytes)?;
            match scenario {
                Scenario::Stateless => {
                    if !is_health(&view.url) {
                        payload.clear();
                        serde_json::to_writer(&mut payload, &view)?;
                        output.put_with_flags(&mut wtxn, PutFlags::APPEND, &written, &payload)?;
                        written += 1;
                    }
                }
                _ => {
                    let count = counts.get(&wtxn, &view.url)?.unwrap_or(0) + 1;
                    counts.put(&mut wtxn, &view.url, &count)?;
                }
            }
        }
        offsets.put(&mut wtxn, VIEWS_TOPIC, &end)?;
        wtxn.commit()?;
        drop(rtxn);
        next = end;
        progress.tick(next, written);
    }
    let seconds = started.elapsed().as_secs_f64();
    let rtxn = env.read_txn()?;
    if scenario == Scenario::KeyedCount {
        written = counts.len(&rtxn)?;
    }
    Report {
        scenario,
        events: next,
        outputs: written,
        late: 0,
        first_record_ms: first_ms,
        last_record_ms: now_ms(),
        seconds,
    }
    .print();
    Ok(())
}

/// The same allocator as rill's worker in the suite (BASELINES.md, "Allocator"): jemalloc (the
/// re-export is the allocator only).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: rill::Jemalloc = rill::Jemalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match (&args.embedded, &args.bootstrap, args.produce_data) {
        (Some(dir), _, _) => run_embedded(&args, dir),
        (None, Some(bootstrap), Some(views)) => produce_data(&args, bootstrap, views),
        (None, Some(bootstrap), None) => run_kafka(&args, bootstrap),
        (None, None, _) => Err("--bootstrap or --embedded is required".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handwritten: {e}");
            ExitCode::FAILURE
        }
    }
}
