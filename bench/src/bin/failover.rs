//! Failover benchmark (issue 21): how long a table partition takes to move to another worker,
//! with and without standby replicas (`RILL_STANDBY_REPLICAS`). Run by hand, in release mode:
//!
//! ```text
//! cargo run --release -p rill-bench --bin failover -- --broker kafka://127.0.0.1:19392
//! cargo run --release -p rill-bench --bin failover -- --broker kafka://127.0.0.1:19392 --keys 100000
//! ```
//!
//! Per run (one with 0 standby replicas, one with 1, each with a fresh app id, topic and data
//! dirs): two workers in this process share a group over a 2-partition topic; `--keys`
//! records, one per key, are counted into the table `counts` (so each partition's table holds
//! about half the keys). With a standby, the run waits until each worker's standby has replayed
//! the other's changelog. Then worker A stops (a clean shutdown: it commits and leaves the
//! group, so no session timeout is in the figure; after a crash Kafka adds
//! `session.timeout.ms`), a probe record is sent to each partition, and the clock runs until B
//! has counted the probe of A's partition: the rebalance, B's recovery of A's table partition
//! and the first record. The changelog records B replayed for it are reported too.
//!
//! Progress goes to stderr through `tracing`; a Markdown table to stdout.
#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its results on the terminal"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rill::prelude::*;
use rill::{AgentSpec, AgentStats, TopicSpec, Worker};

#[derive(Clone, Parser)]
struct Args {
    /// Kafka broker URL.
    #[arg(long)]
    broker: String,
    /// Keys (records) counted into the table before the failover.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
}

const TABLE: &str = "counts";

/// Counts records per key into `counts`; notes when a record `probe` arrives.
fn counter(topic: &str, probes: Arc<AtomicU64>) -> AgentSpec {
    AgentSpec::new("count", "bench/src/bin/failover.rs")
        .source(TopicSpec::of::<String>(topic, "bench/src/bin/failover.rs"))
        .table(TABLE)
        .run(move |mut ctx| {
            let probes = probes.clone();
            async move {
                let mut records = ctx.stream::<String>()?.events();
                let counts: Table<String, u64> = ctx.table(TABLE)?;
                while let Some(r) = records.next().await {
                    let key = String::from_utf8_lossy(r.meta.key.as_deref().unwrap_or_default())
                        .into_owned();
                    counts.update(key, |n| n + 1)?;
                    if r.value == "probe" {
                        probes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
        })
}

async fn worker(
    args: &Args,
    app: &str,
    topic: &str,
    dir: &std::path::Path,
    standby: usize,
    probes: Arc<AtomicU64>,
) -> rill::Result<Worker> {
    App::new(app)
        .broker(&args.broker)
        .data_dir(dir)
        .partitions(2)
        .configure(move |c| c.standby_replicas = standby)
        .agents([counter(topic, probes)])
        .start()
        .await
}

async fn wait(what: &str, mut done: impl FnMut() -> bool) -> rill::Result<()> {
    let started = Instant::now();
    let mut said = Instant::now();
    while !done() {
        if started.elapsed() > Duration::from_secs(1_800) {
            return Err(rill::Error::user(format!("{what}: not within 30 min")));
        }
        if said.elapsed() > Duration::from_secs(5) {
            tracing::info!(elapsed = ?started.elapsed(), "waiting: {what}");
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn stat(w: &Worker, f: fn(&AgentStats) -> &AtomicU64) -> u64 {
    w.stats("count")
        .map_or(0, |s| f(&s).load(Ordering::Relaxed))
}

/// The keys of `topic` sent to partition `p` of 2 first: probes go to each partition.
fn key_of_partition(p: i32) -> String {
    (0..)
        .map(|i| format!("probe-{i}"))
        .find(|k| rill::partitioner::partition_for_key(k.as_bytes(), 2) == p)
        .unwrap_or_default()
}

struct Run {
    standby: usize,
    load: Duration,
    warm: Duration,
    failover: Duration,
    replayed: u64,
}

async fn run(args: &Args, stamp: u64, standby: usize) -> rill::Result<Run> {
    let app = format!("failover-{stamp}-s{standby}");
    let topic: &'static str = Box::leak(format!("{app}-in").into_boxed_str());
    let dirs = (
        tempfile::tempdir().map_err(rill::Error::user)?,
        tempfile::tempdir().map_err(rill::Error::user)?,
    );
    let (probes_a, probes_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let a = worker(args, &app, topic, dirs.0.path(), standby, probes_a).await?;
    let b = worker(args, &app, topic, dirs.1.path(), standby, probes_b.clone()).await?;
    wait("both workers have partitions", || {
        a.readiness().is_ok() && b.readiness().is_ok()
    })
    .await?;

    let input: Topic<String, String> = Topic::new(topic);
    let started = Instant::now();
    let producer = a.producer();
    for i in 0..args.keys {
        producer
            .send_keyed(&input, &format!("k{i}"), &"x".to_owned())
            .await?;
    }
    producer.flush().await?;
    let total = args.keys;
    wait("every key counted", || {
        stat(&a, |s| &s.records_in) + stat(&b, |s| &s.records_in) >= total
    })
    .await?;
    let load = started.elapsed();
    tracing::info!(keys = total, ?load, "table loaded");

    let started = Instant::now();
    if standby > 0 {
        // Each worker's standby follows the other's changelog; the changelogs hold at least
        // one record per key.
        wait("the standbys replayed the other worker's changelog", || {
            stat(&a, |s| &s.standby_replayed) + stat(&b, |s| &s.standby_replayed) >= total
        })
        .await?;
    }
    let warm = started.elapsed();

    let replayed_before = stat(&b, |s| &s.restored);
    drop(producer);
    a.shutdown().await?;
    let started = Instant::now();
    let producer = b.producer();
    for p in 0..2 {
        producer
            .send_keyed(&input, &key_of_partition(p), &"probe".to_owned())
            .await?;
    }
    producer.flush().await?;
    wait("B counted the probes of both partitions", || {
        probes_b.load(Ordering::Relaxed) >= 2
    })
    .await?;
    let failover = started.elapsed();
    let replayed = stat(&b, |s| &s.restored) - replayed_before;
    tracing::info!(standby, ?failover, replayed, "failover");
    drop(producer);
    b.shutdown().await?;
    Ok(Run {
        standby,
        load,
        warm,
        failover,
        replayed,
    })
}

#[tokio::main]
async fn main() -> rill::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,failover=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(rill::Error::user)?
        .as_secs();
    let mut runs = Vec::new();
    for standby in [0, 1] {
        runs.push(run(&args, stamp, standby).await?);
    }
    println!(
        "| standby replicas | keys | load | standby catch-up | failover to first record | changelog records replayed |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &runs {
        println!(
            "| {} | {} | {:.1} s | {:.1} s | {:.2} s | {} |",
            r.standby,
            args.keys,
            r.load.as_secs_f64(),
            r.warm.as_secs_f64(),
            r.failover.as_secs_f64(),
            r.replayed
        );
    }
    Ok(())
}
