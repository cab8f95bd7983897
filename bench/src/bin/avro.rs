//! Avro (Confluent wire format, against a real schema registry) against JSON in the keyed-count
//! scenario: the cost per record of decoding and encoding the scenario's record through rill's
//! codec path, and the keyed count's end-to-end rate with each codec.
//!
//! ```text
//! bash registry/registry.sh start
//! cargo run --release -p rill-bench --bin avro -- --registry http://127.0.0.1:18081/apis/ccompat/v7
//! cargo run --release -p rill-bench --bin avro -- --registry ... --broker kafka://127.0.0.1:19092
//! ```
//!
//! Per record: `decode_from` + `encode_vec_for` of the scenario's record, `--records` times,
//! for JSON, for Avro written with the reader's own schema (the common case: no resolution),
//! and for Avro written with another version of it (resolved through apache-avro's `Value`). End to
//! end: `--events` events over `--keys` keys loaded with the codec, then counted per key in a
//! table. Progress to stderr, a JSON line of results to stdout.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on the terminal"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rill::prelude::*;
use rill::schema_registry::{SchemaRegistry, SchemaType, avro, frame};
use rill::{AgentSpec, AgentStats, TopicSpec};

#[derive(Parser)]
struct Args {
    /// The schema registry (Confluent-compatible API).
    #[arg(long)]
    registry: String,
    /// Broker URL (default: the embedded log in a temporary directory).
    #[arg(long)]
    broker: Option<String>,
    /// Records for the per-record measure.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Events for the end-to-end keyed count.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Runs of each measure (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

#[record]
#[derive(Clone)]
struct EventJson {
    #[record(key)]
    key: String,
    n: i64,
}

#[record(codec = "avro")]
#[derive(Clone)]
struct Event {
    #[record(key)]
    key: String,
    n: i64,
}

trait Keyed: Record + Clone {
    fn make(key: String, n: i64) -> Self;
    fn key_of(&self) -> &str;
}

impl Keyed for EventJson {
    fn make(key: String, n: i64) -> Self {
        EventJson { key, n }
    }
    fn key_of(&self) -> &str {
        &self.key
    }
}

impl Keyed for Event {
    fn make(key: String, n: i64) -> Self {
        Event { key, n }
    }
    fn key_of(&self) -> &str {
        &self.key
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Nanoseconds per record to decode `bytes` (as a record of `topic`) and encode it again.
fn per_record<R: Keyed>(topic: &str, bytes: &[Vec<u8>], records: u64) -> rill::Result<f64> {
    let codec = R::CODEC;
    let started = Instant::now();
    let mut out = 0usize;
    for i in 0..records {
        let raw = &bytes[usize::try_from(i).unwrap_or(0) % bytes.len()];
        let value: R = rill::decode_from(topic, raw, codec).map_err(rill::Error::user)?;
        out += rill::encode_vec_for(topic, codec, &value)
            .map_err(rill::Error::user)?
            .len();
    }
    std::hint::black_box(out);
    Ok(started.elapsed().as_nanos() as f64 / records as f64)
}

fn counter<R: Keyed>(topic: &str) -> AgentSpec {
    AgentSpec::new("count", "bench")
        .source(TopicSpec::of::<R>(topic, "bench"))
        .table("avro_bench_counts")
        .run(|mut ctx| async move {
            let mut events = ctx.stream::<R>()?;
            let counts: Table<String, u64> = ctx.table("avro_bench_counts")?;
            while let Some(e) = events.next().await {
                counts.update(e.key_of().to_owned(), |c| c + 1)?;
            }
            Ok(())
        })
}

fn app(args: &Args, id: &str, dir: &std::path::Path) -> App {
    let app = App::new(id)
        .data_dir(dir)
        .partitions(8)
        .schema_registry(&args.registry);
    match &args.broker {
        Some(b) => app.broker(b),
        None => app,
    }
}

/// Loads `--events` events of `R` into a fresh topic and counts them: events per second.
async fn keyed_count<R: Keyed>(args: &Args, name: &str) -> rill::Result<f64> {
    let dir = tempfile::tempdir().map_err(rill::Error::user)?;
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let id = format!("avro_bench_{name}_{run}");
    let topic_name = format!("{id}_events");
    let spec = TopicSpec::of::<R>(&topic_name, "bench");
    let loader = app(args, &id, dir.path())
        .agents([AgentSpec::new("load", "bench")
            .source(TopicSpec::of::<String>(&format!("{id}_unused"), "bench"))
            .sink(spec)
            .run(|_ctx| async move { Ok(()) })])
        .start()
        .await?;
    let producer = loader.producer();
    eprintln!("{name}: writing {} events", args.events);
    for i in 0..args.events {
        let key = format!("key-{}", i % args.keys);
        let event = R::make(key, i64::try_from(i).unwrap_or(i64::MAX));
        producer.send_to(&topic_name, &event).await?;
    }
    producer.flush().await?;
    drop(producer);
    loader.shutdown().await?;
    let worker = app(args, &id, dir.path())
        .agents([counter::<R>(&topic_name)])
        .start()
        .await?;
    let stats: Arc<AgentStats> = worker
        .stats("count")
        .ok_or_else(|| rill::Error::user("no stats"))?;
    let started = Instant::now();
    let mut last = Instant::now();
    while AgentStats::get(&stats.records_in) < args.events {
        if last.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "{name}: counted {}/{}",
                AgentStats::get(&stats.records_in),
                args.events
            );
            last = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = args.events as f64 / started.elapsed().as_secs_f64();
    worker.shutdown().await?;
    eprintln!("{name}: keyed count {rate:.0} events/s");
    Ok(rate)
}

/// Records framed with another version of `Event`'s schema (a field more, which the reader
/// skips), registered under `topic`'s subject.
async fn other_version(
    args: &Args,
    topic: &str,
    samples: &[(String, i64)],
) -> rill::Result<Vec<Vec<u8>>> {
    #[derive(serde::Serialize)]
    struct Other<'a> {
        key: &'a str,
        n: i64,
        source: &'a str,
    }
    let other = r#"{"type":"record","name":"Event","namespace":"avro","fields":[{"name":"key","type":"string"},{"name":"n","type":"long"},{"name":"source","type":"string","default":""}]}"#;
    let registry = SchemaRegistry::new(&args.registry)?;
    let subject = format!("{topic}-value");
    registry.set_compatibility(&subject, "NONE").await?;
    let id = registry.register(&subject, SchemaType::Avro, other).await?;
    let schema = avro::parse(other).map_err(rill::Error::user)?;
    samples
        .iter()
        .map(|(key, n)| {
            let body = avro::encode(
                &schema,
                &Other {
                    key,
                    n: *n,
                    source: "web",
                },
            )?;
            Ok(frame(id, &body))
        })
        .collect::<Result<_, rill::CodecError>>()
        .map_err(rill::Error::user)
}

/// The per-record figures: decode + encode with JSON, Avro and Avro of another version.
async fn per_record_figures(
    args: &Args,
    figures: &mut serde_json::Map<String, serde_json::Value>,
) -> rill::Result<()> {
    // Bind the topic as a worker would: start an app that writes it.
    let topic = "avro_bench_records";
    let dir = tempfile::tempdir().map_err(rill::Error::user)?;
    let binder = app(args, "avro_bench_bind", dir.path())
        .agents([AgentSpec::new("bind", "bench")
            .source(TopicSpec::of::<String>("avro_bench_bind_in", "bench"))
            .sink(TopicSpec::of::<Event>(topic, "bench"))
            .run(|_ctx| async move { Ok(()) })])
        .start()
        .await?;
    let samples: Vec<(String, i64)> = (0..1000)
        .map(|i| (format!("key-{}", i * 7919 % 100_000), i * 1_000_003))
        .collect();
    let encoded = |codec: Codec| -> rill::Result<Vec<Vec<u8>>> {
        samples
            .iter()
            .map(|(k, n)| match codec {
                Codec::Avro => rill::encode_vec_for(topic, codec, &Event::make(k.clone(), *n)),
                _ => rill::encode_vec_for(topic, codec, &EventJson::make(k.clone(), *n)),
            })
            .collect::<Result<_, _>>()
            .map_err(rill::Error::user)
    };
    let (json, own) = (encoded(Codec::Json)?, encoded(Codec::Avro)?);
    let resolved = other_version(args, topic, &samples).await?;
    for (name, run) in [("json_ns", 0), ("avro_ns", 1), ("avro_resolved_ns", 2)] {
        let mut xs = Vec::new();
        for _ in 0..args.reps {
            xs.push(match run {
                0 => per_record::<EventJson>(topic, &json, args.records)?,
                1 => per_record::<Event>(topic, &own, args.records)?,
                _ => per_record::<Event>(topic, &resolved, args.records)?,
            });
        }
        let ns = median(xs);
        eprintln!("{name}: {ns:.0} ns per record (decode + encode)");
        figures.insert(name.to_owned(), serde_json::json!(ns.round()));
    }
    binder.shutdown().await
}

#[tokio::main]
async fn main() -> rill::Result<()> {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .try_init();
    let mut figures = serde_json::Map::new();
    per_record_figures(&args, &mut figures).await?;
    for (name, avro) in [("json", false), ("avro", true)] {
        let mut xs = Vec::new();
        for _ in 0..args.reps {
            xs.push(if avro {
                keyed_count::<Event>(&args, name).await?
            } else {
                keyed_count::<EventJson>(&args, name).await?
            });
        }
        figures.insert(
            format!("keyed_count_{name}_events_per_s"),
            serde_json::json!(median(xs).round()),
        );
    }
    figures.insert(
        "transport".into(),
        serde_json::json!(args.broker.clone().unwrap_or_else(|| "embedded".into())),
    );
    figures.insert("events".into(), serde_json::json!(args.events));
    println!("{}", serde_json::Value::Object(figures));
    Ok(())
}
