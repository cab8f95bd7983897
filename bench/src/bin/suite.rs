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
//! results to `<out>/suite-<date>.md`, `.json` and `.svg` (throughput per scenario and system).
//!
//! Not yet: latency at half the peak load (the contract's latency runs), and the Kafka Streams
//! and Faust programs are run only when their `run.sh` exists (`bench/kstreams`,
//! `bench/faust`).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on the terminal"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rill::prelude::*;
use rill::{AgentSpec, AgentStats, TopicSpec};

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
}

#[derive(Subcommand)]
enum Child {
    /// Runs one scenario on rill (the contract's command line).
    Child(ChildArgs),
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
                        counts.update(v.url, |n| n + 1)?;
                    }
                    Ok(())
                })
        }
        "tumbling-count" => spec
            .source(views)
            .sink(TopicSpec::of::<UrlCount>(&out_topic, "bench/suite"))
            .run(|mut ctx| async move {
                let views = ctx.stream::<PageView>()?;
                let out = ctx.sink::<UrlCount>()?;
                let mut windows = views
                    .group_by(PageView::url)
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
        // The contract's librdkafka queue limits (the hand-written program's, too). rill hands
        // its `kafka` properties to every client (it has no per-client settings), so
        // librdkafka warns once per client (CONFWARN) that the producer ignores the
        // consumer's limit and the consumers the producer's: harmless.
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
    let mut first: Option<Instant> = None;
    let mut last_report = Instant::now();
    let wall = |t: Instant, base: Instant, base_ms: i64| {
        base_ms + i64::try_from(t.duration_since(base).as_millis()).unwrap_or(0)
    };
    let base = Instant::now();
    let base_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(0);
    let progress = async {
        loop {
            let n = AgentStats::get(&stats.records_in);
            if n > 0 && first.is_none() {
                first = Some(Instant::now());
            }
            if n >= goal {
                break Instant::now();
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                eprintln!("  rill {}: {n}/{goal}", args.scenario);
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    // A worker that stops (an agent's error) ends the run with its error.
    let done = tokio::select! {
        done = progress => done,
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
            "first_record_ms": wall(first, base, base_ms),
            "last_record_ms": wall(done, base, base_ms),
            "seconds": seconds,
            "events_per_s": args.events as f64 / seconds.max(1e-9),
            "setup_cpu_s": setup_cpu_s,
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
fn run_child(mut cmd: Command, timeout: Duration) -> Result<(serde_json::Value, Sample), String> {
    let deadline = Instant::now() + timeout;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting {cmd:?}: {e}"))?;
    let pid = child.id();
    let mut peak = Sample::default();
    let status = loop {
        if let Some(s) = sample(pid) {
            peak.hwm_kib = peak.hwm_kib.max(s.hwm_kib);
            peak.anon_kib = peak.anon_kib.max(s.anon_kib);
            peak.cpu_ticks = peak.cpu_ticks.max(s.cpu_ticks);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
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
) -> Option<Command> {
    let exe = std::env::current_exe().ok()?;
    let mut cmd = match system {
        "rill" => {
            let mut c = Command::new(&exe);
            c.arg("child");
            c
        }
        "handwritten" => Command::new(exe.with_file_name("handwritten")),
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
        .args(["--events", &events_of(system, args).to_string()])
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
        let all: &[&str] = if args.embedded {
            &["stateless", "keyed-count"]
        } else {
            SCENARIOS
        };
        all.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.scenarios.clone()
    };
    let systems: Vec<String> = if args.systems.is_empty() {
        ["rill", "handwritten", "kafka-streams", "faust"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
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
        eprintln!("writing {} views (and clicks) to {broker}", args.events);
        let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        rt.block_on(async {
            let loader = App::new("bench-data")
                .broker(broker)
                .partitions(args.partitions)
                .data_dir(work.path().join("loader"))
                .configure(|c| c.web_port = None)
                .topic(&Topic::<String, PageView>::new(VIEWS))
                .topic(&Topic::<String, ClickEvent>::new(CLICKS))
                .start()
                .await?;
            produce(&loader.producer(), args.events, args.keys, true).await?;
            loader.shutdown().await
        })
        .map_err(|e| e.to_string())?;
    }
    let mut runs: Vec<Run> = Vec::new();
    let total = scenarios.len() * systems.len() * (args.reps + 1);
    let mut done = 0;
    for scenario in &scenarios {
        for system in &systems {
            for rep in 0..=args.reps {
                done += 1;
                let prefix = format!("suite-{stamp}-{scenario}-{system}-{rep}");
                let Some(cmd) = command(system, scenario, args, &prefix, work.path()) else {
                    eprintln!("[{done}/{total}] {system} not available; skipped");
                    break;
                };
                let what = if rep == 0 { "warm-up" } else { "run" };
                eprintln!("[{done}/{total}] {scenario} on {system}: {what} {rep}");
                match run_child(cmd, Duration::from_secs(args.run_timeout)) {
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
    report(args, &scenarios, &systems, &runs)
}

fn report(
    args: &Args,
    scenarios: &[String],
    systems: &[String],
    runs: &[Run],
) -> Result<(), String> {
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
                },
            );
        }
    }
    let transport = if args.embedded {
        "embedded".to_owned()
    } else {
        args.broker.clone().unwrap_or_default()
    };
    let mut md = String::from(
        "| scenario | system | events/s | peak RSS MiB | anon MiB | CPU s / M events | rill / it |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for ((scenario, system), r) in &medians {
        let ratio = medians
            .get(&(scenario.clone(), "rill".to_owned()))
            .filter(|_| system != "rill")
            .map(|rill| format!("{:.2}", rill.events_per_s / r.events_per_s))
            .unwrap_or_default();
        md.push_str(&format!(
            "| {scenario} | {system} | {:.0} | {:.0} | {:.0} | {:.2} | {ratio} |\n",
            r.events_per_s, r.peak_rss_mib, r.peak_anon_mib, r.cpu_s_per_m
        ));
    }
    println!("{md}");
    let json = serde_json::json!({
        "transport": transport,
        "events": args.events,
        "keys": args.keys,
        "partitions": args.partitions,
        "reps": args.reps,
        "runs": runs,
        "medians": medians.values().collect::<Vec<_>>(),
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
        chart(&medians, scenarios, systems),
    )
    .map_err(|e| e.to_string())?;
    eprintln!("results in {}.{{md,json,svg}}", base.display());
    Ok(())
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .try_init();
    if let Some(Child::Child(child_args)) = args.child {
        let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        return rt.block_on(child(child_args)).map_err(|e| e.to_string());
    }
    driver(&args)
}
