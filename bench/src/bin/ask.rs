//! Request/reply benchmark: `Requests::ask` round trips to an agent that answers each request,
//! on the embedded log or on Kafka.
//! Run by hand, in release mode:
//!
//! ```text
//! cargo run --release -p rill-bench --bin ask                                   # embedded log
//! cargo run --release -p rill-bench --bin ask -- --broker kafka://127.0.0.1:19392
//! cargo run --release -p rill-bench --bin ask -- --asks 20000 --in-flight 1,16,256
//! ```
//!
//! One worker runs the `doubler` agent (reads `ask-bench-in`, `--partitions`, replies with
//! twice the number) and asks it `--asks` times with `--in-flight` asks outstanding at once,
//! after a warm-up of 200 asks. Reported per setting: round trips per second and the p50/p99
//! of one ask's latency. Progress goes to stderr through `tracing`; results to stdout as a
//! Markdown table.
#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its results on the terminal"
)]

use std::time::{Duration, Instant};

use clap::Parser;
use rill::{AgentSpec, App, Requests, TopicSpec};

#[derive(Parser)]
struct Args {
    /// `kafka://host:port`; the embedded log in a temporary directory when absent.
    #[arg(long)]
    broker: Option<String>,
    /// Asks measured per setting.
    #[arg(long, default_value_t = 5000)]
    asks: usize,
    /// Asks outstanding at once, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,16,128")]
    in_flight: Vec<usize>,
    /// Partitions of the agent's topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
}

fn doubler(topic: &str) -> AgentSpec {
    AgentSpec::new("doubler", "bench/src/bin/ask.rs")
        .source(TopicSpec::of::<String>(topic, "bench/src/bin/ask.rs"))
        .run(|mut ctx| async move {
            let mut input = ctx.stream::<String>()?.requests();
            while let Some(text) = input.next().await {
                let n: i64 = text.parse().unwrap_or(0);
                text.reply(&(2 * n)).await?;
            }
            Ok(())
        })
}

/// `asks` asks, `in_flight` at a time; each ask's latency.
async fn run(
    requests: &Requests,
    topic: &str,
    asks: usize,
    in_flight: usize,
) -> rill::Result<Vec<Duration>> {
    use futures::StreamExt;
    let results = futures::stream::iter(0..asks)
        .map(|i| {
            let requests = requests.clone();
            let topic = topic.to_owned();
            async move {
                let started = Instant::now();
                let reply: i64 = requests
                    .ask(&topic, &i.to_string())
                    .timeout(Duration::from_secs(60))
                    .await?;
                assert_eq!(reply, 2 * i as i64, "the reply to ask {i}");
                Ok::<_, rill::Error>(started.elapsed())
            }
        })
        .buffer_unordered(in_flight)
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> rill::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,ask=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let data = tempfile::tempdir().map_err(|e| rill::Error::User(Box::new(e)))?;
    let run_id = std::process::id();
    let topic = format!("ask-bench-in-{run_id}");
    let mut app = App::new(&format!("ask_bench_{run_id}"))
        .data_dir(data.path())
        .partitions(args.partitions)
        .agents([doubler(&topic)])
        .configure(|c| c.web_port = None);
    if let Some(broker) = &args.broker {
        app = app.broker(broker);
    }
    let worker = app.start().await?;
    let requests = worker.requests();
    tracing::info!("warming up");
    run(&requests, &topic, 200, 16).await?;
    let system = if args.broker.is_some() {
        "kafka"
    } else {
        "embedded"
    };
    println!("| log | in flight | asks | round trips/s | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for &in_flight in &args.in_flight {
        tracing::info!(in_flight, asks = args.asks, "measuring");
        let started = Instant::now();
        let mut latencies = run(&requests, &topic, args.asks, in_flight.max(1)).await?;
        let elapsed = started.elapsed();
        latencies.sort();
        println!(
            "| {system} | {in_flight} | {} | {:.0} | {:.2} | {:.2} |",
            args.asks,
            args.asks as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        );
    }
    worker.shutdown().await
}
