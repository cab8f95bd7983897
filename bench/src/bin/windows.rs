//! Windows benchmark. Run by hand, in release mode, on the embedded log:
//!
//! ```text
//! cargo run --release -p rill-bench --bin windows                        # tumbling and hopping
//! cargo run --release -p rill-bench --bin windows -- --windows hopping --events 200000
//! cargo run --release -p rill-bench --bin windows -- --source-key page   # no cross-partition move
//! ```
//!
//! For each window kind, on a fresh data directory: writes `--events` page views over `--keys`
//! pages into the source topic (event times spread evenly over `--span-hours`, and
//! `--jitter-percent` of them up to `--jitter-ms` earlier than their neighbours), then starts
//! an agent that re-keys them by page (`group_by`), counts them per window (tumbling 60 s, or
//! hopping 60 s every 10 s, grace `--grace-ms`) and sends every closed window to a sink topic.
//!
//! Reports the processing rate (worker start until the agent has read every event), the
//! windows emitted (when every event was read, and after the last windows closed on the idle
//! timeout), late records, memory (VmRSS before the run, the run's VmHWM after resetting it
//! through /proc/self/clear_refs, and sampled RssAnon: VmRSS also counts LMDB's mapped file
//! pages), and the sizes of the table store (`tables/data.mdb`) and of the log. Progress goes
//! to stderr through `tracing` (`RUST_LOG` overrides the filter); a JSON line of results per
//! window kind to stdout. `--keep DIR` keeps the data directories for inspection.
#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its results on the terminal"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rill::prelude::*;
use rill::{AgentSpec, AgentStats, TopicSpec};

#[derive(Parser)]
struct Args {
    /// Events per window kind.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Distinct pages (the `group_by` key).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Window kinds to run, one after the other (each on a fresh data directory).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "tumbling,hopping"
    )]
    windows: Vec<Kind>,
    /// Event time the events span, in hours.
    #[arg(long, default_value_t = 4.0)]
    span_hours: f64,
    /// Percent of events that arrive out of order.
    #[arg(long, default_value_t = 10)]
    jitter_percent: u64,
    /// How much earlier than its neighbours an out-of-order event can be, in ms.
    #[arg(long, default_value_t = 5_000)]
    jitter_ms: u64,
    /// Grace period of the windows, in ms (above the jitter: no event is late).
    #[arg(long, default_value_t = 10_000)]
    grace_ms: u64,
    /// Key of the source topic's records: `user` (the record's key; `group_by` then moves
    /// records between partitions) or `page` (the source is already partitioned like the
    /// repartition topic, so each repartition partition is fed by one source partition).
    #[arg(long, value_enum, default_value = "user")]
    source_key: SourceKey,
    /// Partitions of the source topic (and so of the repartition topic).
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Keep each run's data directory as `<DIR>/<window kind>` (default: a temporary one).
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Idle timeout of the worker, in ms: once every partition is idle this long, the watermark
    /// advances with the wall clock and the last windows close.
    #[arg(long, default_value_t = 10_000)]
    idle_timeout_ms: u64,
    /// Count with `fold` instead of `count`: the same results, every hopping window kept whole
    /// (the path before panes, for comparison).
    #[arg(long)]
    whole_windows: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SourceKey {
    /// Keyed by user.
    User,
    /// Keyed by page, the `group_by` field.
    Page,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// Tumbling windows of 60 s.
    Tumbling,
    /// Hopping windows of 60 s every 10 s.
    Hopping,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tumbling => "tumbling",
            Kind::Hopping => "hopping",
        }
    }

    /// Windows each record belongs to.
    fn windows_per_record(self) -> u64 {
        match self {
            Kind::Tumbling => 1,
            Kind::Hopping => 6,
        }
    }
}

const SIZE: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_secs(10);
/// 2026-11-25T00:00:00Z, ms.
const START_MS: i64 = 1_795_564_800_000;
const SOURCE: &str = "page_views";
const SINK: &str = "page_counts";

#[record]
struct PageView {
    /// Partitions the source topic; the agent re-keys by page.
    #[record(key)]
    user: String,
    page: String,
    #[record(timestamp)]
    at: i64,
}

/// One closed window, as sent to the sink.
#[record]
struct PageCount {
    page: String,
    start: i64,
    end: i64,
    count: u64,
}

/// What the agent saw, beyond `AgentStats`.
#[derive(Default)]
struct Emitted {
    /// Results sent to the sink.
    windows: AtomicU64,
    /// Sum of their counts (`events × windows per record` once every window has closed).
    counted: AtomicU64,
}

fn agent(kind: Kind, grace: Duration, whole: bool, emitted: Arc<Emitted>) -> AgentSpec {
    AgentSpec::new("windows", "bench")
        .source(TopicSpec::of::<PageView>(SOURCE, "bench"))
        .sink(TopicSpec::of::<PageCount>(SINK, "bench"))
        .run(move |mut ctx| {
            let emitted = emitted.clone();
            async move {
                let views = ctx.stream::<PageView>()?;
                let out = ctx.sink::<PageCount>()?;
                let keyed = views.group_by(PageView::page);
                let windows = match kind {
                    Kind::Tumbling => keyed.tumbling(SIZE),
                    Kind::Hopping => keyed.hopping(SIZE, STEP),
                };
                let windows = windows.grace(grace);
                let mut windows = if whole {
                    windows.fold(|| 0u64, |n, _| *n += 1)
                } else {
                    windows.count()
                };
                while let Some(w) = windows.next().await {
                    emitted.windows.fetch_add(1, Ordering::Relaxed);
                    emitted.counted.fetch_add(w.value, Ordering::Relaxed);
                    let count = PageCount {
                        page: w.key,
                        start: w.start,
                        end: w.end,
                        count: w.value,
                    };
                    out.send(&count).await?;
                }
                Ok(())
            }
        })
}

fn app(args: &Args, dir: &Path, agents: Vec<AgentSpec>) -> App {
    let idle = Duration::from_millis(args.idle_timeout_ms);
    App::new("bench")
        .agents(agents)
        .data_dir(dir)
        .partitions(args.partitions)
        .configure(move |c| c.idle_timeout = idle)
}

/// splitmix64: a small deterministic generator, so every run sees the same events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Writes the events into the source topic; returns the largest event time.
async fn preload(args: &Args, dir: &Path) -> rill::Result<i64> {
    let span_ms = (args.span_hours * 3_600_000.0) as u64;
    tracing::info!(
        events = args.events,
        keys = args.keys,
        span_hours = args.span_hours,
        "writing events"
    );
    let topic: Topic<String, PageView> = Topic::new(SOURCE).with_partitions(args.partitions);
    let loader = app(args, dir, vec![]).topic(&topic).start().await?;
    let producer = loader.producer();
    let mut rng = Rng(42);
    let mut max_at = i64::MIN;
    let started = Instant::now();
    let mut last = Instant::now();
    for i in 0..args.events {
        let mut offset = span_ms.saturating_mul(i) / args.events.max(1);
        if rng.below(100) < args.jitter_percent {
            offset = offset.saturating_sub(rng.below(args.jitter_ms + 1));
        }
        let at = START_MS + offset as i64;
        max_at = max_at.max(at);
        let view = PageView {
            user: format!("user-{}", rng.below(100_000)),
            page: format!("/page/{}", rng.below(args.keys)),
            at,
        };
        match args.source_key {
            SourceKey::User => producer.send(&topic, &view).await?,
            SourceKey::Page => producer.send_keyed(&topic, &view.page, &view).await?,
        }
        if last.elapsed() >= Duration::from_secs(2) {
            tracing::info!(written = i, of = args.events, "writing events");
            last = Instant::now();
        }
    }
    producer.flush().await?;
    drop(producer);
    loader.shutdown().await?;
    tracing::info!(elapsed = ?started.elapsed(), "events written");
    Ok(max_at)
}

/// Memory of this process from /proc/self/status, in KiB.
#[derive(Clone, Copy, Default)]
struct Mem {
    /// Resident set (VmRSS).
    rss: u64,
    /// Peak resident set (VmHWM).
    peak: u64,
    /// Resident anonymous memory (RssAnon: the heap, stacks).
    anon: u64,
    /// Resident file-backed pages (RssFile: mostly LMDB's memory maps).
    file: u64,
}

fn mem() -> Mem {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss: field("VmRSS:"),
        peak: field("VmHWM:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
    }
}

/// Samples anonymous memory every 50 ms (the kernel keeps no peak of it); returns the largest
/// value seen, in KiB, when `stop` is set.
fn sample_anon(stop: Arc<std::sync::atomic::AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            max = max.max(mem().anon);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        max.max(mem().anon)
    })
}

/// Resets the peak RSS (VmHWM) to the current RSS (Linux ≥ 4.0); false when not allowed.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Apparent size and allocated bytes of a file (0 when missing).
fn file_size(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| (m.len(), m.blocks() * 512))
        .unwrap_or((0, 0))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

struct Watch<'a> {
    stats: &'a AgentStats,
    emitted: &'a Emitted,
    tables: PathBuf,
    /// Largest table store file seen while running.
    max_tables: u64,
}

impl Watch<'_> {
    fn sample(&mut self) -> u64 {
        let size = file_size(&self.tables).0;
        self.max_tables = self.max_tables.max(size);
        size
    }

    fn log(&mut self, phase: &str, started: Instant, target: u64) {
        let done = AgentStats::get(&self.stats.records_in);
        let secs = started.elapsed().as_secs_f64();
        let tables = self.sample();
        let m = mem();
        tracing::info!(
            phase,
            processed = done,
            of = target,
            rate = (done as f64 / secs).round(),
            elapsed_s = secs.round(),
            windows_closed = AgentStats::get(&self.stats.windows_closed),
            windows_sent = self.emitted.windows.load(Ordering::Relaxed),
            late = AgentStats::get(&self.stats.late_records),
            tables_mib = format!("{:.1}", mib(tables)),
            rss_mib = m.rss / 1024,
            anon_mib = m.anon / 1024,
            "progress"
        );
    }

    /// Waits until `done()` holds, logging every second; fails when nothing moves for `stall`.
    async fn until(
        &mut self,
        phase: &str,
        target: u64,
        stall: Duration,
        done: impl Fn(&AgentStats, &Emitted) -> bool,
    ) -> rill::Result<Duration> {
        let started = Instant::now();
        let mut last_log = Instant::now();
        let mut last_move = Instant::now();
        let mut last_seen = (0, 0);
        loop {
            if done(self.stats, self.emitted) {
                return Ok(started.elapsed());
            }
            let seen = (
                AgentStats::get(&self.stats.records_in),
                self.emitted.windows.load(Ordering::Relaxed),
            );
            if seen != last_seen {
                last_seen = seen;
                last_move = Instant::now();
            } else if last_move.elapsed() > stall {
                return Err(rill::Error::user(format!(
                    "{phase}: no progress for {stall:?} (processed {}, windows {})",
                    seen.0, seen.1
                )));
            }
            if last_log.elapsed() >= Duration::from_secs(1) {
                self.log(phase, started, target);
                last_log = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn run(args: &Args, kind: Kind) -> rill::Result<serde_json::Value> {
    let temp = tempfile::tempdir().map_err(rill::Error::user)?;
    let dir = match &args.keep {
        Some(root) => {
            let dir = root.join(kind.name());
            if dir.exists() {
                return Err(rill::Error::user(format!(
                    "{} exists; --keep wants a new directory",
                    dir.display()
                )));
            }
            dir
        }
        None => temp.path().to_path_buf(),
    };
    let max_at = preload(args, &dir).await?;

    let peak_reset = reset_peak_rss();
    let before = mem();
    let stop_sampler = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_anon(stop_sampler.clone());
    let tables = dir.join("tables").join("data.mdb");
    let log = dir.join("log").join("data.mdb");
    let (log_before, _) = file_size(&log);
    tracing::info!(
        window = kind.name(),
        rss_mib = before.rss / 1024,
        anon_mib = before.anon / 1024,
        log_mib = format!("{:.1}", mib(log_before)),
        "processing"
    );

    let emitted = Arc::new(Emitted::default());
    let grace = Duration::from_millis(args.grace_ms);
    let started = Instant::now();
    let worker = app(
        args,
        &dir,
        vec![agent(kind, grace, args.whole_windows, emitted.clone())],
    )
    .start()
    .await?;
    let stats = worker
        .stats("windows")
        .ok_or_else(|| rill::Error::user("no stats"))?;
    let mut watch = Watch {
        stats: &stats,
        emitted: &emitted,
        tables: tables.clone(),
        max_tables: 0,
    };
    let target = args.events;
    watch
        .until(kind.name(), target, Duration::from_secs(60), |s, _| {
            AgentStats::get(&s.records_in) >= target
        })
        .await?;
    let process = started.elapsed();
    let windows_at_end = emitted.windows.load(Ordering::Relaxed);
    let rate = args.events as f64 / process.as_secs_f64();
    tracing::info!(
        window = kind.name(),
        elapsed = ?process,
        rate = rate.round(),
        windows = windows_at_end,
        "all events processed; waiting for the last windows to close"
    );

    // The last windows close when the watermark, advancing with the wall clock once every
    // partition is idle, passes their end plus grace: at the latest idle timeout + size + grace
    // after the last record (plus a tick). Done earlier when the counts add up (every record
    // in all its windows: not so when some were late).
    let processed_at = Instant::now();
    let deadline = Duration::from_millis(args.idle_timeout_ms + args.grace_ms) + SIZE;
    let deadline = deadline + Duration::from_secs(5);
    let mut last_windows = windows_at_end;
    let mut last_window_at = Duration::ZERO;
    let mut last_log = Instant::now();
    loop {
        let windows = emitted.windows.load(Ordering::Relaxed);
        if windows != last_windows {
            last_windows = windows;
            last_window_at = processed_at.elapsed();
        }
        let kept = target - AgentStats::get(&stats.late_records);
        if emitted.counted.load(Ordering::Relaxed) >= kept * kind.windows_per_record()
            || processed_at.elapsed() >= deadline
        {
            break;
        }
        if last_log.elapsed() >= Duration::from_secs(5) {
            watch.log("draining", started, target);
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain = last_window_at;
    let commits = AgentStats::get(&stats.commits);
    watch
        .until("committing", target, Duration::from_secs(60), |s, _| {
            AgentStats::get(&s.commits) > commits + 1
        })
        .await?;
    let end = mem();
    let tables_running_max = watch.max_tables.max(watch.sample());
    worker.shutdown().await?;
    stop_sampler.store(true, Ordering::Relaxed);
    let peak_anon = sampler.await.map_err(rill::Error::user)?;

    let windows = emitted.windows.load(Ordering::Relaxed);
    let (tables_len, tables_alloc) = file_size(&tables);
    let (log_len, _) = file_size(&log);
    let late = AgentStats::get(&stats.late_records);
    let closed = AgentStats::get(&stats.windows_closed);
    tracing::info!(
        window = kind.name(),
        rate = rate.round(),
        windows,
        closed,
        late,
        rss_before_mib = before.rss / 1024,
        peak_rss_mib = end.peak / 1024,
        peak_anon_mib = peak_anon / 1024,
        tables_mib = format!("{:.1}", mib(tables_len)),
        log_mib = format!("{:.1}", mib(log_len)),
        "done"
    );
    let after = mem();
    Ok(serde_json::json!({
        "scenario": format!("windows-{}", kind.name()),
        "transport": "embedded",
        "window": match kind {
            Kind::Tumbling => "tumbling 60s",
            Kind::Hopping => "hopping 60s/10s",
        },
        "state": if args.whole_windows { "whole windows (fold)" } else { "count (panes when hopping)" },
        "events": args.events,
        "keys": args.keys,
        "source_key": format!("{:?}", args.source_key).to_lowercase(),
        "partitions": args.partitions,
        "span_hours": args.span_hours,
        "jitter": format!("{}% up to {} ms early", args.jitter_percent, args.jitter_ms),
        "grace_ms": args.grace_ms,
        "process_ms": process.as_millis(),
        "events_per_s": rate.round(),
        "windows_emitted_when_processed": windows_at_end,
        "windows_emitted": windows,
        "windows_closed": closed,
        "late_records": late,
        "last_windows_closed_after_ms": drain.as_millis(),
        "rss_before_mib": before.rss / 1024,
        "anon_before_mib": before.anon / 1024,
        "peak_rss_mib": end.peak / 1024,
        "peak_rss_is_of_run": peak_reset,
        "peak_anon_mib_sampled": peak_anon / 1024,
        "rss_end_mib": end.rss / 1024,
        "anon_end_mib": end.anon / 1024,
        "file_end_mib": end.file / 1024,
        "rss_after_shutdown_mib": after.rss / 1024,
        "anon_after_shutdown_mib": after.anon / 1024,
        "tables_mdb_bytes": tables_len,
        "tables_mdb_allocated_bytes": tables_alloc,
        "tables_mdb_max_seen_bytes": tables_running_max,
        "log_mdb_bytes_before": log_before,
        "log_mdb_bytes": log_len,
        "source_max_event_time": max_at,
    }))
}

#[tokio::main]
async fn main() -> rill::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,windows=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    if args.events == 0 || args.keys == 0 {
        return Err(rill::Error::user("--events and --keys must be above 0"));
    }
    for kind in args.windows.clone() {
        let result = run(&args, kind).await?;
        println!("{result}");
    }
    Ok(())
}
