//! rill benchmarks. Run by hand, in release mode:
//!
//! ```text
//! cargo run --release -p rill-bench -- keyed-count                       # embedded log
//! cargo run --release -p rill-bench -- keyed-count --broker kafka://127.0.0.1:19092
//! cargo run --release -p rill-bench -- keyed-count --broker kafka://127.0.0.1:19092 --exactly-once
//! cargo run --release -p rill-bench -- windowed-count                    # Faust-style windows
//! ```
//!
//! Topics and groups are fixed (`bench_events`, app `bench`): give each run a fresh broker.
//!
//! `keyed-count`: a running count per key in a table (LMDB + changelog) over `--events` events
//! and `--keys` keys. Reports the processing rate, the time a clean restart takes to process
//! its first record (no changelog replay), and the time to rebuild the table from its changelog
//! after the local copy is deleted.
//!
//! `windowed-count`: the same events counted per key in a Faust-style windowed table, hopping
//! 60 s every 10 s (`Table::hopping`, so each event updates six windows of its key); event
//! times are the records' production times, a few seconds apart. Reports the processing rate.
//!
//! Progress goes to stderr; a JSON line of results to stdout.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on the terminal"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rill::prelude::*;
use rill::{AgentSpec, AgentStats, TopicSpec};

#[derive(Parser)]
struct Args {
    /// Scenario: `keyed-count` or `windowed-count`.
    scenario: String,
    /// Events to process.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Broker URL (default: the embedded log in a temporary directory).
    #[arg(long)]
    broker: Option<String>,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Process with exactly-once (Kafka transactions) instead of at-least-once.
    #[arg(long)]
    exactly_once: bool,
}

#[record]
struct Event {
    #[record(key)]
    key: String,
    n: u64,
}

/// Counts per key in hopping windows of a windowed table (`windowed-count`).
fn windowed_counter() -> AgentSpec {
    AgentSpec::new("count", "bench")
        .source(TopicSpec::of::<Event>("bench_events", "bench"))
        .table("bench_window_counts")
        .run(|mut ctx| async move {
            let mut events = ctx.stream::<Event>()?;
            let counts = ctx
                .table::<String, u64>("bench_window_counts")?
                .hopping(Duration::from_secs(60), Duration::from_secs(10));
            while let Some(e) = events.next().await {
                counts.update(e.key, |c| c + 1)?;
            }
            Ok(())
        })
}

fn counter() -> AgentSpec {
    AgentSpec::new("count", "bench")
        .source(TopicSpec::of::<Event>("bench_events", "bench"))
        .table("bench_counts")
        .run(|mut ctx| async move {
            let mut events = ctx.stream::<Event>()?;
            let counts: Table<String, u64> = ctx.table("bench_counts")?;
            while let Some(e) = events.next().await {
                counts.update(e.key, |c| c + 1)?;
            }
            Ok(())
        })
}

fn app(args: &Args, dir: &std::path::Path, agents: Vec<AgentSpec>) -> App {
    let mut app = App::new("bench")
        .agents(agents)
        .data_dir(dir)
        .partitions(args.partitions);
    if args.exactly_once {
        app = app.processing_guarantee(rill::ProcessingGuarantee::ExactlyOnce);
    }
    if let Some(b) = &args.broker {
        app = app.broker(b);
    }
    app
}

/// Waits until `counter` reaches `target`, printing progress every second.
async fn progress(
    what: &str,
    stats: &AgentStats,
    target: u64,
    read: fn(&AgentStats) -> u64,
) -> Duration {
    let started = Instant::now();
    let mut last = Instant::now();
    loop {
        let done = read(stats);
        if done >= target {
            return started.elapsed();
        }
        if last.elapsed() >= Duration::from_secs(1) {
            let rate = done as f64 / started.elapsed().as_secs_f64();
            eprintln!("{what}: {done}/{target} ({rate:.0}/s)");
            last = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() -> rill::Result<()> {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .try_init();
    let windowed = match args.scenario.as_str() {
        "keyed-count" => false,
        "windowed-count" => true,
        other => {
            return Err(rill::Error::user(format!(
                "unknown scenario `{other}`; expected `keyed-count` or `windowed-count`"
            )));
        }
    };
    let dir = tempfile::tempdir().map_err(rill::Error::user)?;

    eprintln!("writing {} events over {} keys", args.events, args.keys);
    let topic: Topic<String, Event> = Topic::new("bench_events").with_partitions(args.partitions);
    let loader = app(&args, dir.path(), vec![]).topic(&topic).start().await?;
    let producer = loader.producer();
    for i in 0..args.events {
        producer
            .send(
                &topic,
                &Event {
                    key: format!("key-{}", i % args.keys),
                    n: i,
                },
            )
            .await?;
    }
    producer.flush().await?;
    drop(producer);
    loader.shutdown().await?;

    eprintln!("processing");
    let agent = if windowed {
        windowed_counter()
    } else {
        counter()
    };
    let worker = app(&args, dir.path(), vec![agent]).start().await?;
    let stats: Arc<AgentStats> = worker
        .stats("count")
        .ok_or_else(|| rill::Error::user("no stats"))?;
    let process = progress("processed", &stats, args.events, |s| {
        AgentStats::get(&s.records_in)
    })
    .await;
    let commits_before = AgentStats::get(&stats.commits);
    progress("committing", &stats, commits_before + 1, |s| {
        AgentStats::get(&s.commits)
    })
    .await;
    worker.shutdown().await?;
    let rate = args.events as f64 / process.as_secs_f64();
    eprintln!("{}: {rate:.0} events/s", args.scenario);
    if windowed {
        let result = serde_json::json!({
            "scenario": "windowed-count",
            "transport": args.broker.clone().unwrap_or_else(|| "embedded".into()),
            "events": args.events,
            "keys": args.keys,
            "events_per_s": rate.round(),
        });
        println!("{result}");
        return Ok(());
    }

    // A clean restart: time until a new record is processed (no changelog replay expected).
    let restart = measure_first_record(&args, dir.path(), &producer_topic(), args.events).await?;
    eprintln!(
        "clean restart to first record: {:?} ({} changelog records replayed)",
        restart.0, restart.1
    );

    // Lost local state: rebuild from the changelog.
    std::fs::remove_dir_all(dir.path().join("tables")).map_err(rill::Error::user)?;
    let rebuild =
        measure_first_record(&args, dir.path(), &producer_topic(), args.events + 1).await?;
    eprintln!(
        "rebuild from changelog to first record: {:?} ({} changelog records)",
        rebuild.0, rebuild.1
    );

    let result = serde_json::json!({
        "scenario": "keyed-count",
        "guarantee": if args.exactly_once { "exactly_once" } else { "at_least_once" },
        "transport": args.broker.clone().unwrap_or_else(|| "embedded".into()),
        "events": args.events,
        "keys": args.keys,
        "events_per_s": rate.round(),
        "clean_restart_ms": restart.0.as_millis(),
        "clean_restart_replayed": restart.1,
        "rebuild_ms": rebuild.0.as_millis(),
        "rebuild_records": rebuild.1,
    });
    println!("{result}");
    Ok(())
}

fn producer_topic() -> Topic<String, Event> {
    Topic::new("bench_events")
}

/// Starts the worker, sends one record and returns the time until it was processed, with the
/// number of changelog records recovery applied.
async fn measure_first_record(
    args: &Args,
    dir: &std::path::Path,
    topic: &Topic<String, Event>,
    n: u64,
) -> rill::Result<(Duration, u64)> {
    let started = Instant::now();
    let worker = app(args, dir, vec![counter()]).start().await?;
    let producer = worker.producer();
    producer
        .send(
            topic,
            &Event {
                key: "key-0".into(),
                n,
            },
        )
        .await?;
    producer.flush().await?;
    drop(producer);
    let stats = worker
        .stats("count")
        .ok_or_else(|| rill::Error::user("no stats"))?;
    progress("restarting", &stats, 1, |s| AgentStats::get(&s.records_in)).await;
    let elapsed = started.elapsed();
    let replayed = AgentStats::get(&stats.restored);
    worker.shutdown().await?;
    Ok((elapsed, replayed))
}
