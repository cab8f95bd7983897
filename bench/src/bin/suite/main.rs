//! The benchmark suite (issue 9): every scenario of `bench/BASELINES.md` on rill and on the
//! baselines, same broker, same data, several repetitions, medians. Run by hand, in release:
//!
//! ```text
//! cargo build --release -p rill-bench --bin suite --bin handwritten
//! RILL_TEST_BROKER_PORT=19392 bash kafka/broker.sh start
//! ./target/release/suite --broker kafka://127.0.0.1:19392 --events 1000000 --reps 3
//! ./target/release/suite --embedded --events 1000000        # rill vs the hand-written heed loop
//! ```
//!
//! Each run is a child process started with the contract's command line (rill: this binary
//! with `child`), so its peak and anonymous RSS (LMDB's mapped pages excluded) and its CPU
//! time are its own, sampled from `/proc/<pid>` every 50 ms. Progress goes to stderr; the
//! results to `<out>/suite-{kafka,embedded}.md`, `.json` and `.svg` (throughput per scenario
//! and system). The Kafka Streams and Faust programs are run only when their `run.sh` exists
//! (`bench/kstreams`, `bench/faust`). `--embedded` runs every scenario on rill's embedded log;
//! the hand-written program's embedded loop covers `stateless` and `keyed-count` and reports
//! the others unsupported.
//!
//! Latency (`--no-latency` skips it): after the throughput runs, each scenario and
//! system with a median throughput gets a latency run at half that median (`--latency-load`
//! chooses another fraction, `--latency-rate` a fixed rate to compare builds at; the contract's
//! "Latency runs"). The suite deletes the input topics' records (`DeleteRecords` up to the
//! high watermark), starts the program with `--events` = the views the run will produce, waits
//! (`--latency-ready-timeout`) until it consumes (a group of its prefix `Stable` with members;
//! the hand-written program, which assigns its partitions, once its output topic exists), then
//! produces views at the rate in 5 ms steps with the wall-clock time as `view_time`, for
//! `--latency-warmup` seconds and then `--latency-seconds` measured ones (for `join`, a click
//! for every second view, 2 s of wall time later, stamped with its own production time, and
//! the URL spaces scaled by rate/1000 so that a click joins as many views as in the data). A
//! consumer of the suite reads the run's output from its start (`read_committed`): the output
//! topic, or for the counts the table's changelog. A record's latency is its receive time
//! minus the production time of its input, counted when that input was produced in the
//! measured period: for the counts, the view whose count the changelog record carries (the
//! count and URL say which: independent of the changelog's timestamps, which rill stamps with
//! its commit time), otherwise the record's message timestamp (every program stamps outputs
//! with their input's timestamp). `tumbling-count`'s outputs appear when a window closes: its
//! latency is the window-close delay, receive time minus the end of the output's window (the
//! run starts so that a minute boundary falls in the measured period). p50 and p99 go to the Markdown table and the JSON; a failed latency run is
//! reported as failed. After each run (throughput or latency) the suite deletes the topics
//! whose names start with the run's prefix.
//!
//! On the embedded log only rill has a latency mode, and the log lives in the worker's
//! process: `child --embedded DIR --rate R` produces the same load itself and runs a second
//! agent that reads the output as it is committed and times it the same way
//! (`embedded_latency`).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on the terminal"
)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use cpu_share::CpuShare;
use delivery::DeliveryClock;
use machine_speed::SpeedWatch;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use rill::prelude::*;
use rill::{AgentSpec, AgentStats, TopicSpec};
use view_times::ViewTimes;

mod cpu_share;
mod delivery;
mod machine_speed;
mod scale;
mod view_times;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    child: Option<Child>,
    /// The broker every system uses (`kafka://host:port`).
    #[arg(long)]
    broker: Option<String>,
    /// Run on rill's embedded log and the hand-written heed loop instead of Kafka.
    #[arg(long)]
    embedded: bool,
    /// Input events per run.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Distinct URLs.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Measured repetitions per scenario and system (after one warm-up run each).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Scenarios (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Systems (comma-separated; default all available).
    #[arg(long, value_delimiter = ',')]
    systems: Vec<String>,
    /// Events per Faust run (Faust does a few thousand a second; rates are per event).
    #[arg(long, default_value_t = 50_000)]
    faust_events: u64,
    /// A run taking longer than this is stopped and reported as failed (seconds).
    #[arg(long, default_value_t = 900)]
    run_timeout: u64,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Measured seconds of each latency run (at half the median throughput).
    #[arg(long, default_value_t = 20)]
    latency_seconds: u64,
    /// Seconds each latency run produces at its rate before the measured period (not measured).
    #[arg(long, default_value_t = 5)]
    latency_warmup: u64,
    /// Seconds a latency run waits for its program to be ready (its consumer group stable).
    #[arg(long, default_value_t = 90)]
    latency_ready_timeout: u64,
    /// Skip the latency runs.
    #[arg(long)]
    no_latency: bool,
    /// The offered load of the latency runs, as a fraction of the median throughput (the
    /// contract's runs: 0.5; the second performance round reports 0.25, 0.5 and 0.75).
    #[arg(long, default_value_t = 0.5)]
    latency_load: f64,
    /// The offered load of the latency runs in views per second, instead of a fraction of the
    /// median throughput: two builds compared at the same load.
    #[arg(long)]
    latency_rate: Option<f64>,
    /// The compression of the latency runs' generator (librdkafka's `compression.type`): an
    /// experiment's knob for what the generator and the broker cost; the data's is rill's
    /// producer's (lz4).
    #[arg(long, default_value = "lz4")]
    latency_compression: String,
}

#[derive(Subcommand)]
enum Child {
    /// Runs one scenario on rill (the contract's command line).
    Child(ChildArgs),
    /// Scale-out: keyed and tumbling count with 1, 2 and 4 worker processes (`scale`).
    Scale(scale::ScaleArgs),
}

#[derive(Parser, Clone)]
struct ChildArgs {
    #[arg(long)]
    scenario: String,
    #[arg(long)]
    bootstrap: Option<String>,
    /// The embedded log in this directory (the data is written first, not timed).
    #[arg(long)]
    embedded: Option<PathBuf>,
    #[arg(long)]
    events: u64,
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    #[arg(long)]
    prefix: String,
    #[arg(long)]
    state_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Offered load of a latency run. On Kafka the suite produces and the agent reads records
    /// as they come; with `--embedded` this process produces (the log is in-process) and times
    /// the outputs itself.
    #[arg(long)]
    rate: Option<f64>,
    /// Embedded latency runs: seconds produced before the measured period.
    #[arg(long, default_value_t = 5)]
    latency_warmup: u64,
    /// Embedded latency runs: measured seconds.
    #[arg(long, default_value_t = 20)]
    latency_seconds: u64,
    /// Scale-out worker: run until stdin closes, printing progress lines (`scale::worker`).
    #[arg(long)]
    progress: bool,
    /// Kafka's `session.timeout.ms` for this worker's consumers (scale-out kill runs).
    #[arg(long)]
    session_timeout_ms: Option<u64>,
}

const SCENARIOS: &[&str] = &[
    "stateless",
    "keyed-count",
    "tumbling-count",
    "eos-keyed-count",
    "join",
];

#[record]
#[derive(Clone, Debug)]
struct PageView {
    user_id: String,
    #[record(key)]
    url: String,
    #[record(timestamp)]
    view_time: f64,
}

#[record]
#[derive(Clone, Debug)]
struct ClickEvent {
    user_id: String,
    #[record(key)]
    url: String,
    #[record(timestamp)]
    click_time: f64,
}

#[record]
struct UrlCount {
    url: String,
    start: i64,
    count: u64,
}

#[record]
struct Conversion {
    view_user: String,
    url: String,
    delay_ms: i64,
}

/// Event `i` of the contract's data.
fn view(i: u64, keys: u64) -> PageView {
    let url = if i % 10 == 9 {
        format!("/health/{}", i % 100)
    } else {
        format!("/p/{}", i % keys)
    };
    PageView {
        user_id: format!("u{}", i % 1000),
        url,
        view_time: (start_ms() + i as i64) as f64 / 1000.0,
    }
}

/// The click of event `i` (every second view), 2 s after it.
fn click(i: u64, keys: u64) -> Option<ClickEvent> {
    i.is_multiple_of(2).then(|| {
        let v = view(i, keys);
        ClickEvent {
            user_id: v.user_id,
            url: v.url,
            click_time: v.view_time + 2.0,
        }
    })
}

/// Event time of event 0: the minute an hour before this process started (recent, so a
/// broker's time-based retention of 7 days keeps the data; minute-aligned, so 60 s windows
/// hold 60,000 events).
fn start_ms() -> i64 {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        (now / 60_000 - 60) * 60_000
    })
}

const VIEWS: &str = "bench-views";
const CLICKS: &str = "bench-clicks";

fn agent(args: &ChildArgs) -> AgentSpec {
    let views = TopicSpec::of::<PageView>(VIEWS, "bench/suite");
    let out_topic = format!("{}-out", args.prefix);
    let spec = AgentSpec::new("bench", "bench/suite").concurrency(args.threads);
    match args.scenario.as_str() {
        "stateless" => spec
            .source(views)
            .sink(TopicSpec::of::<PageView>(&out_topic, "bench/suite"))
            .run(|mut ctx| async move {
                let mut views = ctx
                    .stream::<PageView>()?
                    .filter(|v| !v.url.starts_with("/health"));
                let out = ctx.sink::<PageView>()?;
                while let Some(v) = views.next().await {
                    out.send(&v).await?;
                }
                Ok(())
            }),
        "keyed-count" | "eos-keyed-count" => {
            spec.source(views)
                .table("bench_counts")
                .run(|mut ctx| async move {
                    let mut views = ctx.stream::<PageView>()?;
                    let counts: Table<String, u64> = ctx.table("bench_counts")?;
                    while let Some(v) = views.next().await {
                        scale::note_lag(v.view_time);
                        counts.update(v.url, |n| n + 1)?;
                    }
                    Ok(())
                })
        }
        "tumbling-count" => spec
            .source(views)
            .sink(TopicSpec::of::<UrlCount>(&out_topic, "bench/suite"))
            .run(|mut ctx| async move {
                let mut views = ctx.stream::<PageView>()?;
                if scale::noting() {
                    views = views.filter(|v| {
                        scale::note_lag(v.view_time);
                        true
                    });
                }
                let out = ctx.sink::<UrlCount>()?;
                // The topic is keyed by URL: window in place, as Kafka Streams' `groupByKey`.
                let mut windows = views
                    .keyed(PageView::url)
                    .tumbling(Duration::from_secs(60))
                    .count();
                while let Some(w) = windows.next().await {
                    out.send(&UrlCount {
                        url: w.key,
                        start: w.start,
                        count: w.value,
                    })
                    .await?;
                }
                Ok(())
            }),
        "join" => spec
            .source(views)
            .source(TopicSpec::of::<ClickEvent>(CLICKS, "bench/suite"))
            .co_partitioned()
            .sink(TopicSpec::of::<Conversion>(&out_topic, "bench/suite"))
            .run(|mut ctx| async move {
                let views = ctx.stream_of::<PageView>(VIEWS)?;
                let clicks = ctx.stream_of::<ClickEvent>(CLICKS)?;
                let out = ctx.sink::<Conversion>()?;
                // Both topics are keyed by URL: join in place, as Kafka Streams does.
                let window = JoinWindow::within(Duration::from_secs(5)).co_partitioned();
                let mut joined = views.join(clicks, |v| v.url.clone(), |c| c.url.clone(), window);
                while let Some((v, c)) = joined.next().await {
                    out.send(&Conversion {
                        view_user: v.user_id,
                        url: v.url,
                        delay_ms: ((c.click_time - v.view_time) * 1000.0) as i64,
                    })
                    .await?;
                }
                Ok(())
            }),
        other => spec.run({
            let other = other.to_owned();
            move |_| {
                let other = other.clone();
                async move { Err(rill::Error::user(format!("unknown scenario `{other}`"))) }
            }
        }),
    }
}

/// Records the agent reads for `events` views (a join reads their clicks too).
fn target(scenario: &str, events: u64) -> u64 {
    if scenario == "join" {
        events + events.div_ceil(2)
    } else {
        events
    }
}

/// Writes the contract's data (views, and clicks for joins) through rill's producer.
async fn produce(producer: &Producer, events: u64, keys: u64, clicks: bool) -> rill::Result<()> {
    let views: Topic<String, PageView> = Topic::new(VIEWS);
    let click_topic: Topic<String, ClickEvent> = Topic::new(CLICKS);
    let started = Instant::now();
    for i in 0..events {
        producer.send(&views, &view(i, keys)).await?;
        if clicks && let Some(c) = click(i, keys) {
            producer.send(&click_topic, &c).await?;
        }
        if i.is_multiple_of(200_000) && i > 0 {
            eprintln!(
                "  data: {i}/{events} views ({:.0}/s)",
                i as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    producer.flush().await
}

/// The rill child: runs one scenario until the agent has read `target` records, prints the
/// contract's JSON line.
async fn child(args: ChildArgs) -> rill::Result<()> {
    let state = match &args.state_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("rill-suite-{}", args.prefix)),
    };
    let mut app = App::new(&args.prefix)
        .partitions(args.partitions)
        .configure(|c| c.web_port = None);
    app = match (&args.bootstrap, &args.embedded) {
        // The contract's librdkafka queue limits (the hand-written program's, too): rill
        // gives the consumer's to its consumers and the producer's to its producers.
        (Some(b), _) => app
            .broker(&format!("kafka://{b}"))
            .data_dir(&state)
            .kafka_property("queued.max.messages.kbytes", "65536")
            .kafka_property("queue.buffering.max.kbytes", "65536"),
        (None, Some(dir)) => app.data_dir(dir),
        (None, None) => return Err(rill::Error::user("give --bootstrap or --embedded")),
    };
    if args.scenario == "eos-keyed-count" {
        app = app.processing_guarantee(rill::ProcessingGuarantee::ExactlyOnce);
    }
    if let (Some(_), Some(rate)) = (&args.embedded, args.rate) {
        return embedded_latency(&args, app, rate).await;
    }
    if let Some(ms) = args.session_timeout_ms {
        app = app.kafka_property("session.timeout.ms", &ms.to_string());
    }
    if args.progress {
        return scale::worker(app, &args).await;
    }
    if let Some(dir) = &args.embedded {
        // The embedded log's data is this process's to write (not timed).
        let loader = App::new(&args.prefix)
            .partitions(args.partitions)
            .data_dir(dir)
            .configure(|c| c.web_port = None)
            .topic(&Topic::<String, PageView>::new(VIEWS))
            .topic(&Topic::<String, ClickEvent>::new(CLICKS))
            .start()
            .await?;
        produce(
            &loader.producer(),
            args.events,
            args.keys,
            args.scenario == "join",
        )
        .await?;
        loader.shutdown().await?;
    }
    // CPU spent so far (writing the embedded log's data) is not the scenario's.
    let setup_cpu_s = sample(std::process::id()).map_or(0.0, |s| s.cpu_ticks as f64 / TICKS_PER_S);
    let mut worker = app.agents([agent(&args)]).start().await?;
    let stats = worker
        .stats("bench")
        .ok_or_else(|| rill::Error::user("no stats"))?;
    let goal = target(&args.scenario, args.events);
    let base = Instant::now();
    let base_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(0);
    let wall =
        |t: Instant| base_ms + i64::try_from(t.duration_since(base).as_millis()).unwrap_or(0);
    // The clock watches from an OS thread of its own: a task of the worker's runtime would see
    // the first and last records only when the agent's task lets it run.
    let scenario = args.scenario.clone();
    let watched = Arc::clone(&stats);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut first: Option<Instant> = None;
        let mut last_report = Instant::now();
        loop {
            let n = AgentStats::get(&watched.records_in);
            if n > 0 && first.is_none() {
                first = Some(Instant::now());
            }
            if n >= goal {
                let _ = tx.send((first, Instant::now()));
                return;
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                let steps = AgentStats::get(&watched.commits);
                eprintln!("  rill {scenario}: {n}/{goal}, {steps} commit steps");
                last_report = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    // A worker that stops (an agent's error) ends the run with its error.
    let (first, done) = tokio::select! {
        watched = rx => watched.map_err(|_| rill::Error::user("the progress watcher failed"))?,
        stopped = worker.wait() => {
            return Err(stopped.err().unwrap_or_else(|| rill::Error::user("the worker stopped early")));
        }
    };
    let first = first.unwrap_or(base);
    let seconds = done.duration_since(first).as_secs_f64();
    worker.shutdown().await?;
    println!(
        "{}",
        serde_json::json!({
            "scenario": args.scenario,
            "system": "rill",
            "events": args.events,
            "first_record_ms": wall(first),
            "last_record_ms": wall(done),
            "seconds": seconds,
            "events_per_s": args.events as f64 / seconds.max(1e-9),
            "setup_cpu_s": setup_cpu_s,
            "commit_steps": AgentStats::get(&stats.commits),
        })
    );
    Ok(())
}

/// The outputs a latency run times, and the measured period `[from, until)` (ms).
#[derive(Clone)]
struct Timing {
    samples: Arc<Mutex<Vec<f64>>>,
    received: Arc<AtomicU64>,
    from: Arc<std::sync::atomic::AtomicI64>,
    until: Arc<std::sync::atomic::AtomicI64>,
}

impl Timing {
    fn new() -> Self {
        Timing {
            samples: Arc::default(),
            received: Arc::default(),
            from: Arc::new(i64::MAX.into()),
            until: Arc::new(i64::MAX.into()),
        }
    }

    /// An output received now, whose input was produced at `input` (ms).
    fn output(&self, input: Option<i64>) {
        let now = now_ms();
        self.received.fetch_add(1, Ordering::Relaxed);
        let (from, until) = (
            self.from.load(Ordering::Relaxed),
            self.until.load(Ordering::Relaxed),
        );
        if let Some(t) = input
            && (from..until).contains(&t)
            && let Ok(mut samples) = self.samples.lock()
        {
            samples.push((now - t) as f64);
        }
    }
}

/// The agent of an embedded latency run that reads the scenario's output as it is committed
/// and times it against its input, as the suite's consumer does on Kafka: the message
/// timestamp (the input's event time), the view a count counts, or a window's end.
fn probe_agent(args: &ChildArgs, timing: Timing, produced: Option<Produced>) -> AgentSpec {
    let spec = AgentSpec::new("probe", "bench/suite");
    let out = format!("{}-out", args.prefix);
    match args.scenario.as_str() {
        "keyed-count" | "eos-keyed-count" => {
            let changelog = format!("{}-bench_counts-changelog", args.prefix);
            let mut topic = TopicSpec::of::<serde_json::Value>(&changelog, "bench/suite");
            topic.compacted = true;
            spec.source(topic).run(move |mut ctx| {
                let (timing, produced) = (timing.clone(), produced.clone());
                async move {
                    let mut counts = ctx.stream::<serde_json::Value>()?.events();
                    while let Some(e) = counts.next().await {
                        let input = (|| {
                            let key = e.meta.key.as_deref()?;
                            let n = e.value.as_u64()?;
                            let (url, _) = decode_count(key, n.to_string().as_bytes())?;
                            produced.as_ref()?.of_count(&url, n)
                        })();
                        timing.output(input);
                    }
                    Ok(())
                }
            })
        }
        "tumbling-count" => spec
            .source(TopicSpec::of::<UrlCount>(&out, "bench/suite"))
            .run(move |mut ctx| {
                let timing = timing.clone();
                async move {
                    let mut windows = ctx.stream::<UrlCount>()?;
                    while let Some(w) = windows.next().await {
                        timing.output(Some(w.start + 60_000));
                    }
                    Ok(())
                }
            }),
        "join" => by_timestamp::<Conversion>(spec, &out, timing),
        _ => by_timestamp::<PageView>(spec, &out, timing),
    }
}

/// A probe reading `T`s from `out`, timed by their message timestamp (their input's).
fn by_timestamp<T: Record + Send + 'static>(
    spec: AgentSpec,
    out: &str,
    timing: Timing,
) -> AgentSpec {
    spec.source(TopicSpec::of::<T>(out, "bench/suite"))
        .run(move |mut ctx| {
            let timing = timing.clone();
            async move {
                let mut outputs = ctx.stream::<T>()?.events();
                while let Some(e) = outputs.next().await {
                    timing.output(e.meta.timestamp);
                }
                Ok(())
            }
        })
}

/// A latency run on the embedded log (`child --embedded DIR --rate R`): the log lives in this
/// process, so this process produces the load (as the suite does on Kafka: views at `rate`/s
/// in 5 ms steps with the wall-clock time as event time, a click 2 s after every second view
/// for `join`), runs the scenario's agent and a probe agent that times the committed outputs,
/// and prints p50/p99 over the measured period.
async fn embedded_latency(args: &ChildArgs, app: App, rate: f64) -> rill::Result<()> {
    let join = args.scenario == "join";
    let timing = Timing::new();
    let warmup_ms = i64::try_from(args.latency_warmup * 1000).unwrap_or(0);
    let measured_ms = i64::try_from(args.latency_seconds * 1000).unwrap_or(0);
    let total = ((warmup_ms + measured_ms) as f64 / 1000.0 * rate) as u64;
    let produced: Option<Produced> = args
        .scenario
        .ends_with("keyed-count")
        .then(|| Arc::new(ViewTimes::new(total, args.keys)));
    let mut worker = app
        .topic(&Topic::<String, PageView>::new(VIEWS))
        .topic(&Topic::<String, ClickEvent>::new(CLICKS))
        .agents([
            agent(args),
            probe_agent(args, timing.clone(), produced.clone()),
        ])
        .start()
        .await?;
    if args.scenario == "tumbling-count" {
        tokio::time::sleep(until_a_window_closes_mid_run(warmup_ms, measured_ms)).await;
    }
    let from = now_ms() + warmup_ms;
    let until = from + measured_ms;
    timing.from.store(from, Ordering::Relaxed);
    timing.until.store(until, Ordering::Relaxed);
    let producer = worker.producer();
    let views_topic: Topic<String, PageView> = Topic::new(VIEWS);
    let clicks_topic: Topic<String, ClickEvent> = Topic::new(CLICKS);
    let start = Instant::now();
    let scale = (rate / 1000.0).round().max(1.0) as u64;
    let mut pending: std::collections::VecDeque<(Instant, ClickEvent)> = Default::default();
    let (mut i, mut in_measured) = (0_u64, 0_u64);
    let mut last_report = Instant::now();
    let mut step = tokio::time::interval(Duration::from_millis(5));
    while i < total || !pending.is_empty() {
        step.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
        while i < due {
            let mut v = view(i, args.keys);
            if join {
                // The data's fan-out at this rate, as on Kafka (`produce_at`).
                live_url(&mut v.url, i, args.keys, Some(scale));
            }
            let t = now_ms();
            v.view_time = t as f64 / 1000.0;
            producer.send(&views_topic, &v).await?;
            if (from..until).contains(&t) {
                in_measured += 1;
            }
            if join && i.is_multiple_of(2) {
                let click = ClickEvent {
                    user_id: v.user_id.clone(),
                    url: v.url.clone(),
                    click_time: 0.0,
                };
                pending.push_back((Instant::now() + Duration::from_secs(2), click));
            } else if let Some(produced) = &produced {
                produced.produced(i, t);
            }
            i += 1;
        }
        let now = Instant::now();
        while let Some((due, _)) = pending.front()
            && *due <= now
        {
            let Some((_, mut click)) = pending.pop_front() else {
                break;
            };
            click.click_time = now_ms() as f64 / 1000.0;
            producer.send(&clicks_topic, &click).await?;
        }
        producer.flush().await?;
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!(
                "  latency: {i}/{total} views produced, {} outputs received",
                timing.received.load(Ordering::Relaxed)
            );
        }
    }
    // Outputs of the last inputs may still be on their way.
    let drained = Instant::now();
    let mut last = timing.received.load(Ordering::Relaxed);
    let mut quiet = Instant::now();
    while drained.elapsed() < Duration::from_secs(30) && quiet.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = timing.received.load(Ordering::Relaxed);
        if n != last {
            last = n;
            quiet = Instant::now();
        }
    }
    let stopped = tokio::time::timeout(Duration::from_millis(1), worker.wait()).await;
    if let Ok(Err(e)) = stopped {
        return Err(e);
    }
    worker.shutdown().await?;
    let mut samples = timing.samples.lock().map(|s| s.clone()).unwrap_or_default();
    samples.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "scenario": args.scenario,
            "system": "rill",
            "latency": {
                "rate": rate,
                "offered_per_s": in_measured as f64 / (measured_ms.max(1) as f64 / 1000.0),
                "p50_ms": quantile(&samples, 0.50),
                "p99_ms": quantile(&samples, 0.99),
                "samples": samples.len(),
                "received": timing.received.load(Ordering::Relaxed),
            },
        })
    );
    Ok(())
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
struct Run {
    scenario: String,
    system: String,
    events_per_s: f64,
    seconds: f64,
    peak_rss_mib: f64,
    peak_anon_mib: f64,
    cpu_s_per_m: f64,
    /// The machine's speed over the run (`machine_speed`: the probe's median µs; lower is
    /// faster).
    #[serde(skip_serializing_if = "Option::is_none")]
    machine_probe_us: Option<f64>,
}

/// Clock ticks per second of `/proc/<pid>/stat` CPU times (`USER_HZ`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// Memory and CPU of a process, from `/proc`.
#[derive(Default, Clone, Copy)]
struct Sample {
    hwm_kib: u64,
    anon_kib: u64,
    cpu_ticks: u64,
}

fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime is the 14th, stime 15th.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(Sample {
        hwm_kib: field("VmHWM:"),
        anon_kib: field("RssAnon:"),
        cpu_ticks: ticks(11) + ticks(12),
    })
}

/// Runs a child to the end, sampling it; returns its JSON line and the peak samples.
/// A run whose `stop` is set is killed and fails.
fn run_child(
    mut cmd: Command,
    timeout: Duration,
    stop: &AtomicBool,
    pid_out: Option<&AtomicU32>,
) -> Result<(serde_json::Value, Sample), String> {
    let deadline = Instant::now() + timeout;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting {cmd:?}: {e}"))?;
    let pid = child.id();
    if let Some(out) = pid_out {
        out.store(pid, Ordering::Relaxed);
    }
    let mut peak = Sample::default();
    let status = loop {
        if let Some(s) = sample(pid) {
            peak.hwm_kib = peak.hwm_kib.max(s.hwm_kib);
            peak.anon_kib = peak.anon_kib.max(s.anon_kib);
            peak.cpu_ticks = peak.cpu_ticks.max(s.cpu_ticks);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if stop.load(Ordering::Relaxed) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("stopped".to_owned());
            }
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no result within {timeout:?}; stopped"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use std::io::Read;
        let _ = stdout.read_to_string(&mut out);
    }
    if !status.success() {
        return Err(format!("{cmd:?} exited with {status}"));
    }
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| format!("no result line from {cmd:?}"))?;
    let value = serde_json::from_str(line).map_err(|e| format!("{line}: {e}"))?;
    Ok((value, peak))
}

/// The command of one run of `system`, or `None` when that system is not available.
fn command(
    system: &str,
    scenario: &str,
    args: &Args,
    prefix: &str,
    work: &Path,
    events: u64,
) -> Option<Command> {
    let exe = std::env::current_exe().ok()?;
    let mut cmd = match system {
        "rill" => {
            let mut c = Command::new(&exe);
            c.arg("child");
            c
        }
        "handwritten" => Command::new(exe.with_file_name("handwritten")),
        // Kafka programs: no embedded mode.
        "kafka-streams" | "faust" if args.embedded => return None,
        "kafka-streams" | "faust" => {
            let dir = if system == "faust" {
                "faust"
            } else {
                "kstreams"
            };
            let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(dir)
                .join("run.sh");
            if !script.exists() {
                return None;
            }
            let mut c = Command::new("bash");
            c.arg(script);
            c
        }
        _ => return None,
    };
    cmd.args(["--scenario", scenario, "--prefix", prefix])
        .args(["--events", &events.to_string()])
        .args(["--partitions", &args.partitions.to_string()]);
    if system == "rill" {
        cmd.args(["--keys", &args.keys.to_string()]);
    }
    let state = work.join(format!("{prefix}-state"));
    cmd.arg("--state-dir").arg(&state);
    match (&args.broker, args.embedded) {
        (_, true) => {
            cmd.arg("--embedded")
                .arg(work.join(format!("{prefix}-log")));
        }
        (Some(b), false) => {
            cmd.args(["--bootstrap", b.trim_start_matches("kafka://")]);
        }
        (None, false) => return None,
    }
    Some(cmd)
}

/// Input events of one run of `system`.
fn events_of(system: &str, args: &Args) -> u64 {
    if system == "faust" {
        args.events.min(args.faust_events)
    } else {
        args.events
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// A bar chart of median throughput per scenario and system.
fn chart(
    medians: &BTreeMap<(String, String), Run>,
    scenarios: &[String],
    systems: &[String],
) -> String {
    let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
    let max = medians
        .values()
        .map(|r| r.events_per_s)
        .fold(1.0_f64, f64::max);
    let (bar, gap, height) = (18.0, 30.0, 300.0);
    let group = bar * systems.len() as f64 + gap;
    let width = 80.0 + group * scenarios.len() as f64 + 160.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n",
        height + 80.0
    );
    svg.push_str(&format!(
        "<text x=\"10\" y=\"16\">events/s (median), max {max:.0}</text>\n"
    ));
    for (i, scenario) in scenarios.iter().enumerate() {
        let x0 = 60.0 + group * i as f64;
        for (j, system) in systems.iter().enumerate() {
            if let Some(r) = medians.get(&(scenario.clone(), system.clone())) {
                let h = height * r.events_per_s / max;
                svg.push_str(&format!(
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar}\" height=\"{h:.1}\" fill=\"{}\"><title>{system} {scenario}: {:.0} events/s</title></rect>\n",
                    x0 + bar * j as f64,
                    30.0 + height - h,
                    colors[j % colors.len()],
                    r.events_per_s
                ));
            }
        }
        svg.push_str(&format!(
            "<text x=\"{x0:.1}\" y=\"{:.1}\">{scenario}</text>\n",
            height + 48.0
        ));
    }
    for (j, system) in systems.iter().enumerate() {
        let y = 40.0 + 16.0 * j as f64;
        let x = width - 150.0;
        svg.push_str(&format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{system}</text>\n",
            colors[j % colors.len()],
            x + 14.0,
            y + 9.0
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn driver(args: &Args) -> Result<(), String> {
    let scenarios: Vec<String> = if args.scenarios.is_empty() {
        SCENARIOS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.scenarios.clone()
    };
    let systems: Vec<String> = if args.systems.is_empty() {
        let all: &[&str] = if args.embedded {
            &["rill", "handwritten"]
        } else {
            &["rill", "handwritten", "kafka-streams", "faust"]
        };
        all.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.systems.clone()
    };
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if let Some(broker) = &args.broker
        && !args.embedded
    {
        // Children read the topics from the beginning: only this suite's data may be there
        // (an earlier suite's, or its latency runs' real-time records, would come first).
        truncate_inputs(broker.trim_start_matches("kafka://"))?;
        load_data(broker, args.events, args.keys, args.partitions, work.path())?;
    }
    let mut runs: Vec<Run> = Vec::new();
    let never = AtomicBool::new(false);
    let speed = SpeedWatch::start();
    let total = scenarios.len() * systems.len() * (args.reps + 1);
    let mut done = 0;
    for scenario in &scenarios {
        for system in &systems {
            for rep in 0..=args.reps {
                done += 1;
                let prefix = format!("suite-{stamp}-{scenario}-{system}-{rep}");
                let events = events_of(system, args);
                let Some(cmd) = command(system, scenario, args, &prefix, work.path(), events)
                else {
                    eprintln!("[{done}/{total}] {system} not available; skipped");
                    break;
                };
                let what = if rep == 0 { "warm-up" } else { "run" };
                eprintln!("[{done}/{total}] {scenario} on {system}: {what} {rep}");
                let began = now_ms();
                let result = run_child(cmd, Duration::from_secs(args.run_timeout), &never, None);
                let machine_probe_us = speed.median_between(began, now_ms());
                if let Some(broker) = &args.broker
                    && !args.embedded
                {
                    delete_run_topics(broker.trim_start_matches("kafka://"), &prefix);
                }
                match result {
                    Ok((value, peak)) => {
                        if let Some(why) = value.get("unsupported") {
                            eprintln!("  unsupported: {why}");
                            break;
                        }
                        let rate = value["events_per_s"].as_f64().unwrap_or(0.0);
                        let secs = value["seconds"].as_f64().unwrap_or(0.0);
                        // A child may say how much CPU its setup took (rill writing the
                        // embedded log's data): not the scenario's.
                        let setup = value["setup_cpu_s"].as_f64().unwrap_or(0.0);
                        let cpu_s = (peak.cpu_ticks as f64 / TICKS_PER_S - setup).max(0.0);
                        let run = Run {
                            scenario: scenario.clone(),
                            system: system.clone(),
                            events_per_s: rate,
                            seconds: secs,
                            peak_rss_mib: peak.hwm_kib as f64 / 1024.0,
                            peak_anon_mib: peak.anon_kib as f64 / 1024.0,
                            cpu_s_per_m: cpu_s / events_of(system, args) as f64 * 1e6,
                            machine_probe_us,
                        };
                        eprintln!(
                            "  {rate:.0} events/s, peak RSS {:.0} MiB (anon {:.0}), {:.2} CPU s per M",
                            run.peak_rss_mib, run.peak_anon_mib, run.cpu_s_per_m
                        );
                        if rep > 0 {
                            runs.push(run);
                        }
                    }
                    Err(e) => {
                        eprintln!("  failed: {e}");
                        break;
                    }
                }
            }
        }
    }
    let medians = medians(&scenarios, &systems, &runs);
    let mut latencies: BTreeMap<(String, String), Latency> = BTreeMap::new();
    if !args.no_latency {
        // On the embedded log only rill has a latency mode (the hand-written heed loop reads
        // a preloaded log).
        let timed: Vec<_> = medians
            .iter()
            .filter(|((_, system), _)| !args.embedded || system == "rill")
            .collect();
        let total = timed.len();
        for (done, ((scenario, system), m)) in timed.into_iter().enumerate() {
            let rate = args
                .latency_rate
                .unwrap_or(m.events_per_s * args.latency_load);
            let prefix = format!("suite-{stamp}-{scenario}-{system}-latency");
            eprintln!(
                "[latency {}/{total}] {scenario} on {system} at {rate:.0} views/s",
                done + 1
            );
            let began = now_ms();
            let mut latency = if args.embedded {
                embedded_latency_run(args, scenario, rate, &prefix, work.path())
            } else {
                latency_run(args, scenario, system, rate, &prefix, work.path())
            }
            .unwrap_or_else(|e| Latency::failed(scenario, system, rate, e));
            latency.machine_probe_us = (m.machine_probe_us, speed.median_between(began, now_ms()));
            if let Some(broker) = &args.broker
                && !args.embedded
            {
                delete_run_topics(broker.trim_start_matches("kafka://"), &prefix);
            }
            match &latency.failed {
                Some(e) => eprintln!("  failed: {e}"),
                None => eprintln!(
                    "  p50 {} ms, p99 {} ms ({} samples; {:.0} views/s offered)",
                    ms(latency.p50_ms),
                    ms(latency.p99_ms),
                    latency.samples,
                    latency.offered_per_s
                ),
            }
            latencies.insert((scenario.clone(), system.clone()), latency);
        }
    }
    report(args, &scenarios, &systems, &runs, &medians, &latencies)
}

/// Writes the contract's data (views and clicks) to the broker's input topics, through rill.
fn load_data(
    broker: &str,
    events: u64,
    keys: u64,
    partitions: i32,
    work: &Path,
) -> Result<(), String> {
    eprintln!("writing {events} views (and clicks) to {broker}");
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let loader = App::new("bench-data")
            .broker(broker)
            .partitions(partitions)
            .data_dir(work.join("loader"))
            .configure(|c| c.web_port = None)
            .topic(&Topic::<String, PageView>::new(VIEWS))
            .topic(&Topic::<String, ClickEvent>::new(CLICKS))
            .start()
            .await?;
        produce(&loader.producer(), events, keys, true).await?;
        loader.shutdown().await
    })
    .map_err(|e| e.to_string())
}

/// Median of every measure per scenario and system (those with runs).
fn medians(
    scenarios: &[String],
    systems: &[String],
    runs: &[Run],
) -> BTreeMap<(String, String), Run> {
    let mut medians: BTreeMap<(String, String), Run> = BTreeMap::new();
    for scenario in scenarios {
        for system in systems {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| &r.scenario == scenario && &r.system == system)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let m = |f: fn(&Run) -> f64| median(mine.iter().map(|r| f(r)).collect());
            medians.insert(
                (scenario.clone(), system.clone()),
                Run {
                    scenario: scenario.clone(),
                    system: system.clone(),
                    events_per_s: m(|r| r.events_per_s),
                    seconds: m(|r| r.seconds),
                    peak_rss_mib: m(|r| r.peak_rss_mib),
                    peak_anon_mib: m(|r| r.peak_anon_mib),
                    cpu_s_per_m: m(|r| r.cpu_s_per_m),
                    machine_probe_us: {
                        let probes: Vec<f64> =
                            mine.iter().filter_map(|r| r.machine_probe_us).collect();
                        (!probes.is_empty()).then(|| median(probes))
                    },
                },
            );
        }
    }
    medians
}

fn report(
    args: &Args,
    scenarios: &[String],
    systems: &[String],
    runs: &[Run],
    medians: &BTreeMap<(String, String), Run>,
    latencies: &BTreeMap<(String, String), Latency>,
) -> Result<(), String> {
    let transport = if args.embedded {
        "embedded".to_owned()
    } else {
        args.broker.clone().unwrap_or_default()
    };
    let mut md = String::from(
        "| scenario | system | events/s | peak RSS MiB | anon MiB | CPU s / M events | rill / it | machine probe µs |",
    );
    // Latency columns, when there were latency runs.
    let latency = !latencies.is_empty();
    md.push_str(if latency {
        " p50 ms | p99 ms |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    } else {
        "\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    });
    for ((scenario, system), r) in medians {
        let ratio = medians
            .get(&(scenario.clone(), "rill".to_owned()))
            .filter(|_| system != "rill")
            .map(|rill| format!("{:.2}", rill.events_per_s / r.events_per_s))
            .unwrap_or_default();
        let (p50, p99) = match latencies.get(&(scenario.clone(), system.clone())) {
            Some(l) if l.failed.is_some() => ("failed".to_owned(), "failed".to_owned()),
            Some(l) => (ms(l.p50_ms), ms(l.p99_ms)),
            None => (String::new(), String::new()),
        };
        md.push_str(&format!(
            "| {scenario} | {system} | {:.0} | {:.0} | {:.0} | {:.2} | {ratio} | {} |",
            r.events_per_s,
            r.peak_rss_mib,
            r.peak_anon_mib,
            r.cpu_s_per_m,
            ms(r.machine_probe_us)
        ));
        if latency {
            md.push_str(&format!(" {p50} | {p99} |"));
        }
        md.push('\n');
    }
    md.push_str(PROBE_NOTE);
    md.push_str(&latency_notes(args, latencies));
    let machine = machine(args.embedded);
    let faust = if args.embedded {
        String::new()
    } else {
        format!(" ({} for Faust)", args.events.min(args.faust_events))
    };
    md = format!(
        "Suite run of {} on {transport}: {} events per run{faust}, {} keys, {} partitions, {} measured runs after a warm-up, medians.\n\nMachine: {}.\n\n{md}",
        machine["date"].as_str().unwrap_or_default(),
        args.events,
        args.keys,
        args.partitions,
        args.reps,
        machine["summary"].as_str().unwrap_or_default(),
    );
    println!("{md}");
    let json = serde_json::json!({
        "machine": machine,
        "transport": transport,
        "events": args.events,
        "keys": args.keys,
        "partitions": args.partitions,
        "reps": args.reps,
        "runs": runs,
        "medians": medians.values().map(|m| {
            let mut v = serde_json::to_value(m).unwrap_or_default();
            if let (Some(l), Some(obj)) =
                (latencies.get(&(m.scenario.clone(), m.system.clone())), v.as_object_mut())
            {
                obj.insert("p50_ms".into(), l.p50_ms.into());
                obj.insert("p99_ms".into(), l.p99_ms.into());
                obj.insert("latency_samples".into(), l.samples.into());
            }
            v
        }).collect::<Vec<_>>(),
        "latency": {
            "warmup_s": args.latency_warmup,
            "measured_s": args.latency_seconds,
            "runs": latencies.values().collect::<Vec<_>>(),
        },
    });
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    let name = if args.embedded {
        "suite-embedded"
    } else {
        "suite-kafka"
    };
    let base = args.out.join(name);
    std::fs::write(base.with_extension("md"), &md).map_err(|e| e.to_string())?;
    std::fs::write(base.with_extension("json"), json.to_string()).map_err(|e| e.to_string())?;
    std::fs::write(
        base.with_extension("svg"),
        chart(medians, scenarios, systems),
    )
    .map_err(|e| e.to_string())?;
    eprintln!("results in {}.{{md,json,svg}}", base.display());
    Ok(())
}

/// What the results were measured on: CPU, cores, memory, kernel, rill's commit, the date.
fn machine(embedded: bool) -> serde_json::Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_owned(), |m| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let output = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let commit = output("git", &["rev-parse", "--short", "HEAD"]);
    let date = output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    // rill's worker and the hand-written program are this build's (BASELINES.md, "Allocator").
    let allocator = if cfg!(feature = "jemalloc") {
        "jemalloc"
    } else {
        "the system's malloc"
    };
    serde_json::json!({
        "cpu": cpu,
        "cores": cores,
        "memory_gib": (mem_gib * 10.0).round() / 10.0,
        "kernel": kernel,
        "rill_commit": commit,
        "date": date,
        "allocator": allocator,
        "summary": if embedded {
            format!(
                "{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {kernel}; rill {commit}; Rust programs on {allocator}"
            )
        } else {
            format!(
                "{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {kernel}; rill {commit}; Rust programs on {allocator}; Kafka broker: the test harness's (`kafka/broker.sh`, one KRaft node on 127.0.0.1)"
            )
        },
    })
}

// ------------------------------------------------------------------------- latency runs --

/// One latency run: percentiles of output latency at a fixed offered load.
#[derive(Debug, Clone, serde::Serialize)]
struct Latency {
    scenario: String,
    system: String,
    /// Offered load (views/s): half the median throughput, or what `--latency-load` or
    /// `--latency-rate` asked for.
    rate: f64,
    /// Views/s actually produced during the measured period.
    offered_per_s: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// Output records whose input was produced in the measured period.
    samples: u64,
    /// Output records received in all.
    received: u64,
    /// The topic read as the output.
    output: String,
    /// The program's CPU seconds (all its threads, start to exit) per million views produced
    /// (Kafka runs): its cost under a live load, beside the backlog's.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_s_per_m: Option<f64>,
    /// p50 and p99 (ms) of the time a measured view took to reach the broker (`DeliveryClock`,
    /// Kafka runs): part of every latency above, and not the program's.
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_ms: Option<(f64, f64)>,
    /// Cores busy over the measured period: the machine's, the program's, the suite's own
    /// (Kafka runs; the rest is the broker's, mostly).
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_share: Option<CpuShare>,
    /// The machine's speed (`machine_speed`: the probe's median µs, lower is faster) over the
    /// backlog runs of the same scenario and system, which set `rate` when it is a share of
    /// their throughput, and over this run.
    machine_probe_us: (Option<f64>, Option<f64>),
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<String>,
}

impl Latency {
    fn failed(scenario: &str, system: &str, rate: f64, why: String) -> Self {
        Self {
            scenario: scenario.to_owned(),
            system: system.to_owned(),
            rate,
            offered_per_s: 0.0,
            p50_ms: None,
            p99_ms: None,
            samples: 0,
            received: 0,
            output: String::new(),
            cpu_s_per_m: None,
            delivery_ms: None,
            cpu_share: None,
            machine_probe_us: (None, None),
            failed: Some(why),
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}

/// The latency runs' offered load, as the notes name it (`whose`: whose median throughput).
fn load_text(args: &Args, whose: &str) -> String {
    let load = args.latency_load;
    if let Some(rate) = args.latency_rate {
        format!("{rate:.0} views/s")
    } else if (load - 0.5).abs() < f64::EPSILON {
        format!("half of {whose} median throughput")
    } else {
        format!("{:.0} % of {whose} median throughput", load * 100.0)
    }
}

/// What the Markdown says about the machine probe column.
const PROBE_NOTE: &str = "\nMachine probe: how fast the machine's cores ran \
     (`machine_speed`: the median time of a fixed loop, the fastest of five tries once a \
     second; lower is faster), over the system's measured runs and, for a latency run, over \
     the backlog runs that set its rate and over the run itself. The cores of the VM these \
     figures were first taken on change speed by up to 2x within minutes, at idle too: \
     figures taken at different probes are not taken on the same machine.\n";

/// What the Markdown says about the latency columns.
fn latency_notes(args: &Args, latencies: &BTreeMap<(String, String), Latency>) -> String {
    let mut notes = String::new();
    if latencies.is_empty() {
        return notes;
    }
    if args.embedded {
        notes.push_str(&format!(
            "\np50/p99 (rill only: the hand-written heed loop reads a preloaded log): processing \
             latency at an offered load of {}. The embedded log lives \
             in the worker's process, so the run's own process produces the load as the Kafka \
             runs do (views at that rate with the wall-clock time as event time, for `join` a \
             click for every second view 2 s later; {} s of warm-up then {} s measured) and a \
             second agent of the same worker reads the output as it is committed: latency = \
             receive time minus the production time of the input (`keyed-count`: of the view \
             whose count the changelog record carries; otherwise the output's message \
             timestamp); `tumbling-count`: window-close delays, receive time minus the end of \
             the output's window.\n",
            load_text(args, "rill's"),
            args.latency_warmup,
            args.latency_seconds
        ));
    } else {
        notes.push_str(&format!(
            "\np50/p99: processing latency at an offered load of {}: the suite produces views (and, for `join`, a click for every second \
         view 2 s later) at that rate with the wall-clock time as event time, {} s of warm-up \
         then {} s measured, and reads the output (`read_committed`) as it comes: latency = \
         receive time minus the production time of the input (`keyed-count`: of the view whose \
         count the changelog record carries; otherwise the output's message timestamp). \
         `tumbling-count` outputs appear when a window closes: its figures are window-close \
         delays, receive time minus the end of the output's window (the run is placed so that \
         a minute boundary falls in the measured period). `-`: no output in the measured \
         period. Program CPU: the program's CPU seconds, start to exit, per million views \
         produced. Views' delivery: the time a measured view (one in 16) took from its \
         production to the broker's acknowledgement, part of every latency and not the \
         program's; it grows when the machine does not carry the load. Cores busy: over the \
         measured period, the machine's (every process and the kernel, of its cores), the \
         program's, the suite's own (load generator and consumer) and the rest (the broker, \
         mostly); a machine near all its cores busy queues every process's work, and its \
         latency is the machine's as much as the program's.\n",
            load_text(args, "the system's"),
            args.latency_warmup,
            args.latency_seconds
        ));
    }
    notes.push_str(
        "\n| scenario | system | rate views/s | offered views/s | samples | received | program CPU s / M views | views' delivery p50 / p99 ms | cores busy: all / program / suite / rest | machine probe µs: backlog runs / this run |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for l in latencies.values() {
        notes.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} / {} |\n",
            l.scenario,
            l.system,
            l.rate,
            l.offered_per_s,
            l.samples,
            l.received,
            l.cpu_s_per_m
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.2}")),
            l.delivery_ms.map_or_else(
                || "-".to_owned(),
                |(p50, p99)| format!("{p50:.0} / {p99:.0}")
            ),
            l.cpu_share.map_or_else(
                || "-".to_owned(),
                |c| format!(
                    "{:.2} of {} / {:.2} / {:.2} / {:.2}",
                    c.busy,
                    c.cores,
                    c.program,
                    c.suite,
                    c.rest()
                )
            ),
            ms(l.machine_probe_us.0),
            ms(l.machine_probe_us.1),
        ));
    }
    let short: Vec<String> = latencies
        .values()
        .filter(|l| l.failed.is_none() && l.offered_per_s < 0.95 * l.rate)
        .map(|l| format!("{} on {}", l.scenario, l.system))
        .collect();
    if !short.is_empty() {
        notes.push_str(&format!(
            "\nThe load's producer fell short of the rate (it shares the machine with the \
             program and, on Kafka, the broker and the suite's consumer): {}.\n",
            short.join(", ")
        ));
    }
    for l in latencies.values() {
        if let Some(why) = &l.failed {
            notes.push_str(&format!(
                "\nLatency run of {} on {} failed: {why}\n",
                l.scenario, l.system
            ));
        }
    }
    notes
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    i64::try_from(now).unwrap_or(i64::MAX)
}

fn kafka_err(what: &str) -> impl Fn(rdkafka::error::KafkaError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The topic a latency run reads: the output topic, or for the counts the table's changelog
/// (`<app id>-<table>-changelog` for rill and Faust, `<application.id>-<store>-changelog` for
/// Kafka Streams, the hand-written program's own `<prefix>-counts-changelog`).
fn output_topic(system: &str, scenario: &str, prefix: &str) -> String {
    match (scenario, system) {
        ("keyed-count" | "eos-keyed-count", "rill" | "faust") => {
            format!("{prefix}-bench_counts-changelog")
        }
        ("keyed-count" | "eos-keyed-count", _) => format!("{prefix}-counts-changelog"),
        _ => format!("{prefix}-out"),
    }
}

fn metadata_client(bootstrap: &str) -> Result<BaseConsumer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(kafka_err("creating a client"))
}

/// Partitions of `topic`, 0 when it does not exist (yet).
fn partition_count(client: &BaseConsumer, topic: &str) -> usize {
    client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()
        .and_then(|m| {
            m.topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len())
        })
        .unwrap_or(0)
}

/// An admin client of the broker, with its call options and a runtime to wait on its calls.
struct Admin {
    client: AdminClient<DefaultClientContext>,
    options: AdminOptions,
    rt: tokio::runtime::Runtime,
}

impl Admin {
    fn new(bootstrap: &str) -> Result<Self, String> {
        Ok(Admin {
            client: ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .create()
                .map_err(kafka_err("creating an admin client"))?,
            options: AdminOptions::new().operation_timeout(Some(Duration::from_secs(60))),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?,
        })
    }
}

/// Deletes the topics a run created (output, changelog, repartition and internal topics: their
/// names start with the run's prefix), so that later runs do not share the broker with them
/// (compacted changelogs keep its log cleaner busy). A failure is reported, not fatal.
fn delete_run_topics(bootstrap: &str, prefix: &str) {
    let deleted = (|| -> Result<usize, String> {
        let client = metadata_client(bootstrap)?;
        let metadata = client
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(kafka_err("listing topics"))?;
        let names: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .filter(|name| name.starts_with(prefix))
            .collect();
        if names.is_empty() {
            return Ok(0);
        }
        let admin = Admin::new(bootstrap)?;
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let results = admin
            .rt
            .block_on(admin.client.delete_topics(&refs, &admin.options))
            .map_err(kafka_err("deleting topics"))?;
        for result in results {
            if let Err((topic, code)) = result {
                return Err(format!("deleting {topic}: {code}"));
            }
        }
        Ok(names.len())
    })();
    if let Err(e) = deleted {
        eprintln!("  warning: the run's topics stay on the broker: {e}");
    }
}

/// Deletes every record of the input topics that exist (moves their log start to the high
/// watermark), so a program that reads from the beginning reads only what comes next.
fn truncate_inputs(bootstrap: &str) -> Result<(), String> {
    let client = metadata_client(bootstrap)?;
    let mut list = TopicPartitionList::new();
    for topic in [VIEWS, CLICKS] {
        for p in 0..partition_count(&client, topic) {
            list.add_partition_offset(topic, p as i32, Offset::End)
                .map_err(kafka_err("listing partitions"))?;
        }
    }
    if list.count() == 0 {
        return Ok(());
    }
    let admin = Admin::new(bootstrap)?;
    let result = admin
        .rt
        .block_on(admin.client.delete_records(&list, &admin.options))
        .map_err(kafka_err("deleting records"))?;
    for e in result.elements() {
        if let Err(err) = e.error() {
            return Err(format!(
                "deleting records of {}/{}: {err}",
                e.topic(),
                e.partition()
            ));
        }
    }
    Ok(())
}

/// Waits until the program of a latency run consumes: a consumer group of its prefix is
/// `Stable` with members. The hand-written program assigns its partitions (no group
/// membership): it is taken as ready a second after its output topic exists (it creates that
/// topic right before its consumers).
fn wait_ready(
    client: &BaseConsumer,
    system: &str,
    prefix: &str,
    output: &str,
    timeout: Duration,
    exited: &dyn Fn() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if exited() {
            return Err("the program exited before it was ready".to_owned());
        }
        if system == "handwritten" {
            if partition_count(client, output) > 0 {
                std::thread::sleep(Duration::from_secs(1));
                return Ok(());
            }
        } else if let Ok(list) = client.fetch_group_list(None, Duration::from_secs(5))
            && list.groups().iter().any(|g| {
                g.name().starts_with(prefix) && g.state() == "Stable" && !g.members().is_empty()
            })
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not ready within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A changelog record of a count: (URL, count). Keys are the URL, raw or as a JSON string;
/// counts a JSON number or (Kafka Streams' `Serdes.Long`) 8 bytes big-endian.
fn decode_count<'a>(key: &'a [u8], value: &[u8]) -> Option<(Cow<'a, str>, u64)> {
    let key = std::str::from_utf8(key).ok()?;
    let url = if key.starts_with('"') {
        Cow::Owned(serde_json::from_str::<String>(key).ok()?)
    } else {
        Cow::Borrowed(key)
    };
    let count = if value.len() == 8 && !value.iter().all(u8::is_ascii_digit) {
        u64::from_be_bytes(value.try_into().ok()?)
    } else {
        std::str::from_utf8(value).ok()?.trim().parse().ok()?
    };
    Some((url, count))
}

/// Production times of a latency run's views, shared by its producer and its consumer.
type Produced = Arc<ViewTimes>;

/// The end (ms) of the window of a `tumbling-count` output: its `window_end` or `end` field, or
/// its `start` or `window_start` plus 60 s (each program names them its own way; all in ms).
fn window_end(value: &[u8]) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    let field = |name: &str| v.get(name).and_then(serde_json::Value::as_i64);
    field("window_end").or_else(|| field("end")).or_else(|| {
        field("start")
            .or_else(|| field("window_start"))
            .map(|s| s + 60_000)
    })
}

/// Which input time a latency run's output is timed against.
#[derive(Clone)]
enum Against {
    /// The output's message timestamp (its input's).
    Timestamp,
    /// `keyed-count`: the production time of the view a changelog record (URL, n) counts.
    Count(Produced),
    /// `tumbling-count`: the end of the output's window.
    WindowEnd,
}

/// What the suite's consumer of a latency run saw.
#[derive(Default)]
struct Probe {
    /// Latencies (ms) of outputs whose input was produced in the measured period.
    samples: Vec<f64>,
    received: u64,
}

/// The suite's consumer: reads every partition of `topic` from the beginning
/// (`read_committed`) until `stop`, timing outputs of inputs produced in `[from, until)` ms.
fn probe(
    consumer: &BaseConsumer,
    against: &Against,
    from: i64,
    until: i64,
    stop: &AtomicBool,
    received: &AtomicU64,
) -> Probe {
    let mut out = Probe::default();
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let now = now_ms();
        out.received += 1;
        received.store(out.received, Ordering::Relaxed);
        let input = match against {
            Against::Timestamp => None,
            Against::Count(produced) => (|| {
                let (url, n) = decode_count(m.key()?, m.payload()?)?;
                produced.of_count(&url, n)
            })(),
            Against::WindowEnd => m.payload().and_then(window_end),
        };
        let Some(t) = input.or_else(|| m.timestamp().to_millis()) else {
            continue;
        };
        if (from..until).contains(&t) {
            out.samples.push((now - t) as f64);
        }
    }
    out
}

/// How long a `tumbling-count` latency run waits before producing: windows close at minute
/// boundaries, and one should fall in the middle of the measured period.
fn until_a_window_closes_mid_run(warmup_ms: i64, measured_ms: i64) -> Duration {
    let offset = warmup_ms + measured_ms / 2;
    let boundary = (now_ms() + offset).div_euclid(60_000) * 60_000 + 60_000;
    let wait = boundary - offset - now_ms();
    if wait <= 0 {
        return Duration::ZERO;
    }
    eprintln!(
        "  waiting {:.1} s so that a window closes in the measured period",
        wait as f64 / 1000.0
    );
    Duration::from_millis(wait.unsigned_abs())
}

/// The value at quantile `q` (nearest rank) of sorted `xs`.
fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let rank = (q * xs.len() as f64).ceil() as usize;
    Some(xs[rank.clamp(1, xs.len()) - 1])
}

/// Sends a record, waiting while librdkafka's queue is full; whether it waited.
fn send_record<C: ProducerContext<DeliveryOpaque = usize> + 'static>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, str, [u8], usize>,
) -> Result<bool, String> {
    let mut waited = false;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(waited),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                waited = true;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(format!("producing: {e}")),
        }
    }
}

/// A latency run needs a rate of at least one view a second.
fn offerable(rate: f64) -> Result<(), String> {
    if !rate.is_finite() || rate < 1.0 {
        return Err(format!("no rate to offer ({rate})"));
    }
    Ok(())
}

/// A latency run of `scenario` on `system` at `rate` views/s (Kafka): starts the program,
/// waits until it consumes, produces at `rate` (warm-up, then the measured period) and times
/// the outputs.
fn latency_run(
    args: &Args,
    scenario: &str,
    system: &str,
    rate: f64,
    prefix: &str,
    work: &Path,
) -> Result<Latency, String> {
    offerable(rate)?;
    let bootstrap = args
        .broker
        .as_deref()
        .ok_or("no broker")?
        .trim_start_matches("kafka://")
        .to_owned();
    let warmup = Duration::from_secs(args.latency_warmup);
    let measured = Duration::from_secs(args.latency_seconds);
    // Even, so every second view has its click (a join counts views plus half as many).
    let mut views = (rate * (warmup + measured).as_secs_f64()).round() as u64;
    views = (views + views % 2).max(2);
    let join = scenario == "join";
    let counting = scenario.ends_with("keyed-count");
    let output = output_topic(system, scenario, prefix);

    truncate_inputs(&bootstrap)?;
    let mut cmd =
        command(system, scenario, args, prefix, work, views).ok_or("system not available")?;
    cmd.args(["--rate", &format!("{rate:.0}")]);
    let stop_child = Arc::new(AtomicBool::new(false));
    let timeout =
        Duration::from_secs(args.latency_ready_timeout + args.run_timeout) + warmup + measured;
    let program = Arc::new(AtomicU32::new(0));
    let child = {
        let (stop, program) = (Arc::clone(&stop_child), Arc::clone(&program));
        std::thread::spawn(move || run_child(cmd, timeout, &stop, Some(&program)))
    };
    let result = drive(
        args, scenario, system, rate, prefix, &bootstrap, views, join, counting, &output, &child,
        program,
    );
    if result.is_err() {
        stop_child.store(true, Ordering::Relaxed);
    }
    let finished = child
        .join()
        .unwrap_or_else(|_| Err("the run's thread panicked".to_owned()));
    let (mut latency, probe_stop, prober) = result?;
    let finished = finished.map(|(_, used)| {
        latency.cpu_s_per_m = Some(used.cpu_ticks as f64 / TICKS_PER_S / views as f64 * 1e6);
    });
    // Outputs the program sent before it exited may still be on their way.
    let drained = Instant::now();
    let mut last = latency.received;
    let mut quiet = Instant::now();
    while drained.elapsed() < Duration::from_secs(30) && quiet.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(200));
        let n = probe_stop.1.load(Ordering::Relaxed);
        if n != last {
            last = n;
            quiet = Instant::now();
        }
    }
    probe_stop.0.store(true, Ordering::Relaxed);
    let mut probe = prober
        .join()
        .map_err(|_| "the suite's consumer panicked".to_owned())?;
    finished?;
    probe.samples.sort_by(f64::total_cmp);
    latency.p50_ms = quantile(&probe.samples, 0.50);
    latency.p99_ms = quantile(&probe.samples, 0.99);
    latency.samples = probe.samples.len() as u64;
    latency.received = probe.received;
    Ok(latency)
}

/// A latency run of `scenario` on rill's embedded log at `rate` views/s: the child produces
/// and times the outputs itself (`embedded_latency`).
fn embedded_latency_run(
    args: &Args,
    scenario: &str,
    rate: f64,
    prefix: &str,
    work: &Path,
) -> Result<Latency, String> {
    offerable(rate)?;
    let views = (rate * (args.latency_warmup + args.latency_seconds) as f64).round() as u64;
    let mut cmd = command("rill", scenario, args, prefix, work, views).ok_or("no rill")?;
    cmd.args(["--rate", &format!("{rate:.0}")])
        .args(["--latency-warmup", &args.latency_warmup.to_string()])
        .args(["--latency-seconds", &args.latency_seconds.to_string()]);
    // A minute at most to line up a window's close, then the run and its drain.
    let timeout =
        Duration::from_secs(args.run_timeout + 120 + args.latency_warmup + args.latency_seconds);
    let (value, _) = run_child(cmd, timeout, &AtomicBool::new(false), None)?;
    let l = &value["latency"];
    let number = |name: &str| l.get(name).and_then(serde_json::Value::as_f64);
    Ok(Latency {
        scenario: scenario.to_owned(),
        system: "rill".to_owned(),
        rate,
        offered_per_s: number("offered_per_s").ok_or("the run reported no latency")?,
        p50_ms: number("p50_ms"),
        p99_ms: number("p99_ms"),
        samples: l
            .get("samples")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
        received: l
            .get("received")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
        output: if scenario.ends_with("keyed-count") {
            format!("{prefix}-bench_counts-changelog")
        } else {
            format!("{prefix}-out")
        },
        // The process produces the load too.
        cpu_s_per_m: None,
        delivery_ms: None,
        cpu_share: None,
        machine_probe_us: (None, None),
        failed: None,
    })
}

type ProbeStop = (Arc<AtomicBool>, Arc<AtomicU64>);

/// The thread that runs the measured program (`run_child`).
type ChildThread = std::thread::JoinHandle<Result<(serde_json::Value, Sample), String>>;

/// The part of a latency run between the program's start and its last input: readiness, the
/// suite's consumer, production.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site, the run's parameters"
)]
fn drive(
    args: &Args,
    scenario: &str,
    system: &str,
    rate: f64,
    prefix: &str,
    bootstrap: &str,
    views: u64,
    join: bool,
    counting: bool,
    output: &str,
    child: &ChildThread,
    program: Arc<AtomicU32>,
) -> Result<(Latency, ProbeStop, std::thread::JoinHandle<Probe>), String> {
    let client = metadata_client(bootstrap)?;
    let ready_timeout = Duration::from_secs(args.latency_ready_timeout);
    wait_ready(&client, system, prefix, output, ready_timeout, &|| {
        child.is_finished()
    })?;
    // The output topic (programs create it, or their changelog, at start-up).
    let deadline = Instant::now() + Duration::from_secs(30);
    let partitions = loop {
        match partition_count(&client, output) {
            0 if Instant::now() > deadline => return Err(format!("no topic {output}")),
            0 => std::thread::sleep(Duration::from_millis(250)),
            n => break n,
        }
    };

    let warmup_ms = i64::try_from(args.latency_warmup * 1000).unwrap_or(0);
    let measured_ms = i64::try_from(args.latency_seconds * 1000).unwrap_or(0);
    if scenario == "tumbling-count" {
        std::thread::sleep(until_a_window_closes_mid_run(warmup_ms, measured_ms));
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // A group id (librdkafka wants one to assign), not the program's prefix: never joined.
        .set("group.id", format!("latency-probe-{prefix}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(kafka_err("creating the suite's consumer"))?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(output, p as i32, Offset::Beginning)
            .map_err(kafka_err("assigning"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(kafka_err("assigning"))?;

    // Threaded: its thread serves delivery reports as they come. `BaseProducer::poll` with
    // no wait serves one report event a call, and reports left waiting hold their messages
    // in librdkafka's queue, which filled and stalled the generator for a second at a time.
    let producer: ThreadedProducer<DeliveryClock> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // Keys land where the data's do (rill, the Java client and the baselines hash alike).
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.kbytes", "65536")
        .set("queue.buffering.max.messages", "1000000")
        .set("linger.ms", "5")
        .set("compression.type", &args.latency_compression)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create_with_context(DeliveryClock::default())
        .map_err(kafka_err("creating the suite's producer"))?;

    let produced: Option<Produced> = counting.then(|| Arc::new(ViewTimes::new(views, args.keys)));
    let against = match &produced {
        Some(p) => Against::Count(Arc::clone(p)),
        None if scenario == "tumbling-count" => Against::WindowEnd,
        None => Against::Timestamp,
    };
    let start = Instant::now();
    let from = now_ms() + warmup_ms;
    let until = from + measured_ms;
    let cpu = cpu_share::measure(program, from, until);
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let prober = {
        let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
        std::thread::spawn(move || probe(&consumer, &against, from, until, &stop, &received))
    };
    let result = produce_at(
        &producer,
        rate,
        views,
        args.keys,
        join,
        produced.as_ref(),
        (from, until),
        start,
        &received,
    );
    let measured_views = match result {
        Ok(n) => n,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            let _ = prober.join();
            return Err(e);
        }
    };
    let delivered = producer.context().sorted();
    let latency = Latency {
        scenario: scenario.to_owned(),
        system: system.to_owned(),
        rate,
        offered_per_s: measured_views as f64 / (measured_ms.max(1) as f64 / 1000.0),
        p50_ms: None,
        p99_ms: None,
        samples: 0,
        received: received.load(Ordering::Relaxed),
        output: output.to_owned(),
        cpu_s_per_m: None,
        delivery_ms: quantile(&delivered, 0.50).zip(quantile(&delivered, 0.99)),
        cpu_share: cpu.join().ok().flatten(),
        machine_probe_us: (None, None),
        failed: None,
    };
    Ok((latency, (stop, received), prober))
}

/// The view a latency run's generator sends next, written into buffers it reuses: the
/// generator shares the machine with the broker and the program it measures, so it allocates
/// nothing per view.
#[derive(Default)]
struct LiveView {
    url: String,
    user_id: String,
    json: Vec<u8>,
}

/// A `PageView` that borrows its strings.
#[derive(serde::Serialize)]
struct PageViewRef<'a> {
    user_id: &'a str,
    url: &'a str,
    view_time: f64,
}

/// Writes the URL of view `i` of a live run into `out` (cleared first): the data's (`view`),
/// or for a join at `scale` times 1000 views/s, from key spaces `scale` times larger. The
/// data's URLs recur every `keys` (health: 100) ms of event time, 1 ms per event, so a click
/// joins as many views as in the data.
fn live_url(out: &mut String, i: u64, keys: u64, scale: Option<u64>) {
    use std::fmt::Write as _;
    out.clear();
    let s = scale.unwrap_or(1);
    // Writing to a `String` cannot fail.
    let _ = if i % 10 == 9 {
        write!(out, "/health/{}", i % (100 * s))
    } else {
        write!(out, "/p/{}", i % (keys * s))
    };
}

impl LiveView {
    /// View `i` of the data (`view`) produced at `t` (ms), its URL from `live_url`.
    fn write(&mut self, i: u64, keys: u64, scale: Option<u64>, t: i64) -> Result<(), String> {
        use std::fmt::Write as _;
        live_url(&mut self.url, i, keys, scale);
        self.user_id.clear();
        write!(self.user_id, "u{}", i % 1000).map_err(|e| e.to_string())?;
        self.json.clear();
        let view = PageViewRef {
            user_id: &self.user_id,
            url: &self.url,
            view_time: t as f64 / 1000.0,
        };
        serde_json::to_writer(&mut self.json, &view).map_err(|e| e.to_string())
    }
}

/// Produces `views` views at `rate`/s in small steps (every 5 ms), with the wall-clock time
/// as `view_time` and message timestamp, and for `join` a click for every second view 2 s
/// later (its time then); returns how many views fell in `measured` (ms).
#[allow(clippy::too_many_arguments, reason = "one call site")]
fn produce_at<C: ProducerContext<DeliveryOpaque = usize> + 'static>(
    producer: &ThreadedProducer<C>,
    rate: f64,
    views: u64,
    keys: u64,
    join: bool,
    produced: Option<&Produced>,
    measured: (i64, i64),
    start: Instant,
    received: &AtomicU64,
) -> Result<u64, String> {
    let mut pending: std::collections::VecDeque<(Instant, String, String)> =
        std::collections::VecDeque::new();
    let (mut i, mut clicks, mut in_measured) = (0_u64, 0_u64, 0_u64);
    let mut last_report = Instant::now();
    let mut live = LiveView::default();
    let scale = join.then(|| (rate / 1000.0).round().max(1.0) as u64);
    while i < views || !pending.is_empty() {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(views);
        let (mut t, mut since) = (now_ms(), 0);
        while i < due {
            // The clock once every 64 views of a step (some 50 µs of producing): on this VM
            // reading it was 7 % of the generator's profile when every view read it.
            if since == 64 {
                (t, since) = (now_ms(), 0);
            }
            since += 1;
            live.write(i, keys, scale, t)?;
            let in_period = (measured.0..measured.1).contains(&t);
            let timed = in_period && i.is_multiple_of(delivery::SAMPLE_EVERY);
            let waited = send_record(
                producer,
                BaseRecord::with_opaque_to(VIEWS, if timed { t as usize } else { 0 })
                    .key(live.url.as_str())
                    .payload(live.json.as_slice())
                    .timestamp(t),
            )?;
            if waited {
                // The clock read before the wait is stale for the views after it.
                since = 64;
            }
            in_measured += u64::from(in_period);
            if join && i.is_multiple_of(2) {
                pending.push_back((
                    Instant::now() + Duration::from_secs(2),
                    live.url.clone(),
                    live.user_id.clone(),
                ));
            } else if let Some(produced) = produced {
                produced.produced(i, t);
            }
            i += 1;
        }
        let now = Instant::now();
        while let Some((due, ..)) = pending.front()
            && *due <= now
        {
            let Some((_, url, user_id)) = pending.pop_front() else {
                break;
            };
            let t = now_ms();
            let c = ClickEvent {
                user_id,
                url,
                click_time: t as f64 / 1000.0,
            };
            live.json.clear();
            serde_json::to_writer(&mut live.json, &c).map_err(|e| e.to_string())?;
            send_record(
                producer,
                BaseRecord::with_opaque_to(CLICKS, 0)
                    .key(c.url.as_str())
                    .payload(live.json.as_slice())
                    .timestamp(t),
            )?;
            clicks += 1;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!(
                "  latency: {i}/{views} views{} produced, {} outputs received",
                if join {
                    format!(" (+{clicks} clicks)")
                } else {
                    String::new()
                },
                received.load(Ordering::Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(kafka_err("flushing"))?;
    Ok(in_measured)
}

/// The same allocator as the hand-written program's (BASELINES.md, "Allocator").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: rill::Jemalloc = rill::Jemalloc;

fn main() -> Result<(), String> {
    let args = Args::parse();
    // Warnings and errors, or what `RUST_LOG` asks for (debugging a run).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    match args.child {
        Some(Child::Child(child_args)) => {
            // The runtime `App::main` gives a worker (`RILL_WORKER_THREADS` threads, default
            // half the cores).
            let mut config = rill::Config::new(&child_args.prefix);
            config.apply_env().map_err(|e| e.to_string())?;
            let rt = config.runtime().map_err(|e| e.to_string())?;
            rt.block_on(child(child_args)).map_err(|e| e.to_string())
        }
        Some(Child::Scale(scale_args)) => scale::driver(&scale_args),
        None => driver(&args),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn a_live_run_views_the_data_s_urls_and_a_join_s_scaled_key_spaces() {
        let mut url = String::from("left over");
        for i in 0..2_000 {
            live_url(&mut url, i, 30, None);
            assert_eq!(url, view(i, 30).url, "view {i}");
        }
        let (mut pages, mut health) = (HashSet::new(), HashSet::new());
        for i in 0..100_000 {
            live_url(&mut url, i, 30, Some(4));
            if url.starts_with("/health/") {
                health.insert(url.clone());
            } else {
                pages.insert(url.clone());
            }
        }
        // Key spaces of 30 pages and 100 health URLs, each times 4. Every tenth view is a
        // health view, so of 120 page keys those ending in 9 never come (as in the data,
        // whose 100,000 keys give 90,000 page URLs), and of the 400 health keys only those.
        assert_eq!(pages.len(), 30 * 4 * 9 / 10);
        assert_eq!(health.len(), 100 * 4 / 10);
    }
}
