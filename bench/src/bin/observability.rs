//! Observability benchmark: what rill's per-record metrics and its tracing cost a stateless
//! pipeline. Run by hand, in release mode, on the embedded log:
//!
//! ```text
//! cargo run --release -p rill-bench --bin observability                   # 2M events, 5 rounds
//! cargo run --release -p rill-bench --bin observability -- --events 5000000 --rounds 7
//! cargo run --release -p rill-bench --bin observability -- --setups off,tracing
//! ```
//!
//! Pipeline: `--events` JSON page views preloaded into `pageviews` (`--partitions`, keyed by
//! user), then one agent decodes each view, drops the fifth of them on `/internal/` pages and
//! forwards the rest to the sink topic `public_views`. Events/s is from the worker's start
//! until the agent has been handed every view (`AgentStats::records_in`). Three setups:
//!
//! - `off` (a): `Config::metrics = false` (no per-topic counters, no processing histogram),
//!   no web server, no tracing;
//! - `metrics` (b): the defaults (per-record metrics on) and the web server, its `/metrics`
//!   scraped once a second over HTTP while the agent runs;
//! - `tracing` (c): (b) plus 100 % sampled tracing (`OTEL_TRACES_SAMPLER=always_on`): one span
//!   per record and one per send, exported over OTLP gRPC through `rill::telemetry::init`.
//!
//! Each run is a child process of this binary (`--child <setup>`, hidden): `telemetry::init`
//! installs the process's global subscriber once, so setups cannot share a process; a fresh process per run also gives each the
//! same heap and page cache start. The runs alternate (`off, metrics, tracing`, the order
//! rotated every round so no setup always goes first) for `--rounds` rounds, and the table
//! gives medians. The OTLP receiver (a tonic `TraceService` that counts the spans, by kind)
//! runs in this parent process for the whole benchmark, on the same machine, and is reset
//! before each run; a run's spans are counted after its child exited (the exporter flushes
//! on shutdown). The span exporter keeps OpenTelemetry's defaults (`OTEL_BSP_*` variables,
//! passed through to the children, change them): a batch processor with a 2,048-span queue
//! that drops spans when it is full.
//!
//! Progress goes to stderr through `tracing` (`RUST_LOG` overrides the filter); the results to
//! stdout as a Markdown table followed by one JSON line per run.
#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its results on the terminal"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use rill::prelude::*;
use rill::telemetry::{OtlpProtocol, TelemetryConfig};
use rill::{AgentSpec, AgentStats, TopicSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    /// Events per run.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Runs of each setup (the table gives medians).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Setups to run, alternating.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "off,metrics,tracing"
    )]
    setups: Vec<Setup>,
    /// Partitions of the source topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Run one setup in this process and print its result as a JSON line (used by the parent).
    #[arg(long, value_enum, hide = true)]
    child: Option<Setup>,
    /// OTLP endpoint of the parent's receiver (with `--child tracing`).
    #[arg(long, hide = true)]
    otlp: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Setup {
    /// (a) Per-record metrics off, no web server, no tracing.
    Off,
    /// (b) Per-record metrics on, `/metrics` scraped once a second.
    Metrics,
    /// (c) As (b), plus every record traced and exported over OTLP gRPC.
    Tracing,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Off => "off",
            Setup::Metrics => "metrics",
            Setup::Tracing => "tracing",
        }
    }

    fn traced(self) -> bool {
        matches!(self, Setup::Tracing)
    }

    fn describe(self) -> &'static str {
        match self {
            Setup::Off => "(a) metrics off, no tracing",
            Setup::Metrics => "(b) metrics on, /metrics scraped every 1 s",
            Setup::Tracing => "(c) as (b) + 100 % traced, OTLP gRPC",
        }
    }
}

const SOURCE: &str = "pageviews";
const SINK: &str = "public_views";
/// 2026-11-26T00:00:00Z, seconds.
const START_S: f64 = 1_796_083_200.0;
const FILTER: &str = "warn,observability=info";

#[record]
struct PageView {
    #[record(key)]
    user_id: String,
    url: String,
    #[record(timestamp)]
    view_time: f64,
}

/// The agent: decode (the stream does), filter, forward.
fn agent() -> AgentSpec {
    AgentSpec::new("public_only", "bench")
        .source(TopicSpec::of::<PageView>(SOURCE, "bench"))
        .sink(TopicSpec::of::<PageView>(SINK, "bench"))
        .run(|mut ctx| async move {
            let mut views = ctx.stream::<PageView>()?;
            let out = ctx.sink::<PageView>()?;
            while let Some(view) = views.next().await {
                if !view.url.starts_with("/internal/") {
                    out.send(&view).await?;
                }
            }
            Ok(())
        })
}

fn app(args: &Args, dir: &Path, agents: Vec<AgentSpec>) -> App {
    App::new("bench")
        .agents(agents)
        .data_dir(dir)
        .partitions(args.partitions)
}

/// Writes the views into the source topic: one in five on an `/internal/` page.
async fn preload(args: &Args, dir: &Path) -> rill::Result<()> {
    let topic: Topic<String, PageView> = Topic::new(SOURCE).with_partitions(args.partitions);
    let loader = app(args, dir, vec![]).topic(&topic).start().await?;
    let producer = loader.producer();
    let started = Instant::now();
    for i in 0..args.events {
        let url = if i % 5 == 0 {
            "/internal/health".to_owned()
        } else {
            format!("/page/{}", i % 1_000)
        };
        let view = PageView {
            user_id: format!("user-{}", i % 10_000),
            url,
            view_time: START_S + i as f64 / 1_000.0,
        };
        producer.send(&topic, &view).await?;
    }
    producer.flush().await?;
    drop(producer);
    loader.shutdown().await?;
    tracing::info!(events = args.events, elapsed = ?started.elapsed(), "events written");
    Ok(())
}

/// CPU time this process has used (all threads), from /proc/self/stat; zero elsewhere.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the 3rd field, utime
    // and stime the 14th and 15th, in USER_HZ (100 on Linux) ticks.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// What the scraper saw.
#[derive(Default)]
struct Scrapes {
    count: AtomicU64,
    /// Size of the last `/metrics` body.
    bytes: AtomicU64,
    /// Slowest scrape, µs.
    max_micros: AtomicU64,
}

/// `GET /metrics` over a fresh HTTP/1.1 connection; the body.
async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("/metrics answered {head}")));
    }
    Ok(body.to_owned())
}

/// Scrapes `/metrics` once a second, checking it counts the agent, until aborted or a scrape
/// fails.
async fn scrape_every_second(addr: SocketAddr, seen: Arc<Scrapes>) -> std::io::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let started = Instant::now();
        let body = scrape(addr).await?;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if !body.contains("rill_records_in_total{agent=\"public_only\",topic=\"pageviews\"}") {
            return Err(std::io::Error::other(format!(
                "/metrics does not count the agent:\n{body}"
            )));
        }
        seen.count.fetch_add(1, Ordering::Relaxed);
        seen.bytes.store(body.len() as u64, Ordering::Relaxed);
        seen.max_micros.fetch_max(micros, Ordering::Relaxed);
    }
}

/// One run of `setup` in this (child) process; returns its JSON result.
async fn child(args: &Args, setup: Setup) -> rill::Result<serde_json::Value> {
    let dir = tempfile::tempdir().map_err(rill::Error::user)?;
    preload(args, dir.path()).await?;

    let load_before = load_average();
    let cpu_before = cpu_time();
    let started = Instant::now();
    let worker = app(args, dir.path(), vec![agent()])
        .configure(|c| {
            c.metrics = setup != Setup::Off;
            c.web_port = (setup != Setup::Off).then_some(0);
        })
        .start()
        .await?;
    let stats = worker
        .stats("public_only")
        .ok_or_else(|| rill::Error::user("no stats for the agent"))?;
    let scrapes = Arc::new(Scrapes::default());
    let scraper = worker
        .web_addr()
        .map(|addr| tokio::spawn(scrape_every_second(addr, scrapes.clone())));

    let mut last_log = Instant::now();
    let mut last_move = (Instant::now(), 0);
    loop {
        let done = AgentStats::get(&stats.records_in);
        if done >= args.events {
            break;
        }
        if done != last_move.1 {
            last_move = (Instant::now(), done);
        } else if last_move.0.elapsed() > Duration::from_secs(60) {
            return Err(rill::Error::user(format!(
                "no progress for 60 s ({done} of {} events)",
                args.events
            )));
        }
        if last_log.elapsed() >= Duration::from_secs(1) {
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                setup = setup.name(),
                processed = done,
                of = args.events,
                rate = (done as f64 / secs).round(),
                "progress"
            );
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let process = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);
    if let Some(scraper) = scraper {
        // A failed scrape ended the task early; else it is waiting for its next tick.
        if scraper.is_finished() {
            scraper
                .await
                .map_err(rill::Error::user)?
                .map_err(rill::Error::user)?;
        } else {
            scraper.abort();
        }
    }
    let sent = AgentStats::get(&stats.records_out);
    let commits = AgentStats::get(&stats.commits);
    worker.shutdown().await?;
    let rate = args.events as f64 / process.as_secs_f64();
    tracing::info!(setup = setup.name(), elapsed = ?process, rate = rate.round(), "run done");
    Ok(serde_json::json!({
        "setup": setup.name(),
        "events": args.events,
        "partitions": args.partitions,
        "process_ms": process.as_millis(),
        "events_per_s": rate.round(),
        "sent": sent,
        "commits": commits,
        "cpu_ms": cpu.as_millis(),
        "cpu_us_per_event": (cpu.as_secs_f64() * 1e6 / args.events as f64 * 100.0).round() / 100.0,
        "scrapes": scrapes.count.load(Ordering::Relaxed),
        "metrics_bytes": scrapes.bytes.load(Ordering::Relaxed),
        "slowest_scrape_us": scrapes.max_micros.load(Ordering::Relaxed),
        "load_average_before": load_before,
    }))
}

/// Spans the receiver has taken in, by kind.
#[derive(Default)]
struct Received {
    /// `<topic> process`: one per record handed to the agent.
    process: AtomicU64,
    /// `<topic> publish`: one per send.
    publish: AtomicU64,
    /// Everything else (`rill.commit`, `rill.rebalance`, ...).
    other: AtomicU64,
    /// The names of the others, with their counts.
    other_names: Mutex<BTreeMap<String, u64>>,
    requests: AtomicU64,
}

impl Received {
    fn reset(&self) {
        for c in [&self.process, &self.publish, &self.other, &self.requests] {
            c.store(0, Ordering::Relaxed);
        }
        self.other_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// An OTLP gRPC trace receiver that counts what it is sent.
struct Receiver(Arc<Received>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans);
        for span in spans {
            if span.name.ends_with(" process") {
                self.0.process.fetch_add(1, Ordering::Relaxed);
            } else if span.name.ends_with(" publish") {
                self.0.publish.fetch_add(1, Ordering::Relaxed);
            } else {
                self.0.other.fetch_add(1, Ordering::Relaxed);
                *self
                    .0
                    .other_names
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(span.name.clone())
                    .or_default() += 1;
            }
        }
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts the receiver on a free local port; its endpoint URL.
fn start_receiver(received: Arc<Received>) -> rill::Result<String> {
    let incoming =
        tonic::transport::server::TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|e| rill::Error::user(format!("binding the OTLP receiver: {e}")))?;
    let addr = incoming
        .local_addr()
        .map_err(|e| rill::Error::user(format!("OTLP receiver address: {e}")))?;
    tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(received)))
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "OTLP receiver stopped");
        }
    });
    tracing::info!(%addr, "OTLP receiver listening");
    Ok(format!("http://{addr}"))
}

/// One finished run, as the parent sees it.
struct Run {
    setup: Setup,
    result: serde_json::Value,
    spans: [u64; 3],
    /// The other spans by name.
    other_names: BTreeMap<String, u64>,
    /// CPU the parent (the receiver, mostly) used during the run.
    parent_cpu: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        self.result["events_per_s"].as_f64().unwrap_or(0.0)
    }
}

/// Runs one setup in a child process of this binary.
async fn spawn_run(args: &Args, setup: Setup, endpoint: &str) -> rill::Result<serde_json::Value> {
    let exe = std::env::current_exe().map_err(rill::Error::user)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--child", setup.name()])
        .args(["--events", &args.events.to_string()])
        .args(["--partitions", &args.partitions.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    // The setup decides these, not the environment the benchmark was started in.
    for var in [
        "RILL_METRICS",
        "RILL_WEB_PORT",
        "RILL_BROKER",
        "RILL_DATA_DIR",
    ] {
        cmd.env_remove(var);
    }
    if setup.traced() {
        cmd.args(["--otlp", endpoint])
            .env("OTEL_TRACES_SAMPLER", "always_on");
    }
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(rill::Error::user)?
        .map_err(rill::Error::user)?;
    if !output.status.success() {
        return Err(rill::Error::user(format!(
            "the {} run failed: {}",
            setup.name(),
            output.status
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .map_err(|e| rill::Error::user(format!("the {} run printed {line:?}: {e}", setup.name())))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.round());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn table(args: &Args, runs: &[Run]) -> String {
    let mut out = String::from(
        "| setup | runs | events/s (median) | min – max | vs (a) | CPU µs/event (median) | \
         spans received (median): process / publish / other | records / sends |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let rate_of = |setup: Setup| {
        median(
            runs.iter()
                .filter(|r| r.setup == setup)
                .map(Run::rate)
                .collect(),
        )
    };
    let baseline = rate_of(Setup::Off);
    for &setup in &args.setups {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.setup == setup).collect();
        if mine.is_empty() {
            continue;
        }
        let rates: Vec<f64> = mine.iter().map(|r| r.rate()).collect();
        let (min, max) = rates
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        let rate = median(rates);
        let cpu = median(
            mine.iter()
                .map(|r| r.result["cpu_us_per_event"].as_f64().unwrap_or(f64::NAN))
                .collect(),
        );
        let spans = if setup.traced() {
            let kind =
                |i: usize| thousands(median(mine.iter().map(|r| r.spans[i] as f64).collect()));
            format!("{} / {} / {}", kind(0), kind(1), kind(2))
        } else {
            "–".to_owned()
        };
        let sent = median(
            mine.iter()
                .map(|r| r.result["sent"].as_f64().unwrap_or(f64::NAN))
                .collect(),
        );
        let ratio = if baseline.is_finite() {
            format!("{:.2}", rate / baseline)
        } else {
            "–".to_owned()
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} – {} | {ratio} | {cpu:.2} | {spans} | {} / {} |\n",
            setup.describe(),
            mine.len(),
            thousands(rate),
            thousands(min),
            thousands(max),
            thousands(args.events as f64),
            thousands(sent),
        ));
    }
    out
}

async fn parent(args: &Args) -> rill::Result<()> {
    let received = Arc::new(Received::default());
    let endpoint = start_receiver(received.clone())?;
    let mut runs = Vec::new();
    let total = args.rounds * args.setups.len();
    for round in 0..args.rounds {
        // Rotate the order every round, so no setup always runs first (or right after another).
        let mut order = args.setups.clone();
        let shift = round % order.len();
        order.rotate_left(shift);
        for setup in order {
            received.reset();
            tracing::info!(
                run = runs.len() + 1,
                of = total,
                setup = setup.name(),
                "starting run"
            );
            let parent_before = cpu_time();
            let result = spawn_run(args, setup, &endpoint).await?;
            let parent_cpu = cpu_time().saturating_sub(parent_before);
            let spans = [
                received.process.load(Ordering::Relaxed),
                received.publish.load(Ordering::Relaxed),
                received.other.load(Ordering::Relaxed),
            ];
            tracing::info!(
                setup = setup.name(),
                events_per_s = result["events_per_s"].as_f64().unwrap_or(0.0),
                spans_process = spans[0],
                spans_publish = spans[1],
                spans_other = spans[2],
                export_requests = received.requests.load(Ordering::Relaxed),
                "run finished"
            );
            let other_names = std::mem::take(
                &mut *received
                    .other_names
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()),
            );
            runs.push(Run {
                setup,
                result,
                spans,
                other_names,
                parent_cpu,
            });
        }
    }
    println!("{}", table(args, &runs));
    for run in &runs {
        let mut line = run.result.clone();
        if run.setup.traced() {
            line["spans_process"] = run.spans[0].into();
            line["spans_publish"] = run.spans[1].into();
            line["spans_other"] = run.spans[2].into();
            line["spans_other_by_name"] = serde_json::json!(run.other_names);
            line["receiver_cpu_ms"] = u64::try_from(run.parent_cpu.as_millis())
                .unwrap_or(u64::MAX)
                .into();
        }
        println!("{line}");
    }
    Ok(())
}

fn filter() -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_| FILTER.to_owned())
}

#[tokio::main]
async fn main() -> rill::Result<()> {
    let args = Args::parse();
    if args.events == 0 || args.rounds == 0 || args.setups.is_empty() {
        return Err(rill::Error::user(
            "--events, --rounds and --setups must not be empty",
        ));
    }
    // Traced runs log through rill's subscriber, which must be the first one installed.
    let config = |endpoint: &str| TelemetryConfig {
        endpoint: Some(endpoint.to_owned()),
        protocol: Some(OtlpProtocol::Grpc),
        service_name: Some("rill-bench".to_owned()),
        headers: Vec::new(),
    };
    let no_exporter = || rill::Error::user("no OTLP exporter was set up");
    let _telemetry = match (args.child, &args.otlp) {
        (Some(Setup::Tracing), Some(endpoint)) => {
            let guard = rill::telemetry::init(&config(endpoint), "bench", &filter())?;
            Some(guard.ok_or_else(no_exporter)?)
        }
        (Some(setup), None) if setup.traced() => {
            return Err(rill::Error::user(format!(
                "--child {} needs --otlp",
                setup.name()
            )));
        }
        _ => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter()))
                .with_writer(std::io::stderr)
                .try_init();
            None
        }
    };
    match args.child {
        Some(setup) => {
            let result = child(&args, setup).await?;
            println!("{result}");
            Ok(())
        }
        None => parent(&args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_thousands() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
