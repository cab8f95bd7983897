//! KTable join benchmark: orders enriched from a table built from the `customers` topic
//! (`AgentSpec::table_of`), on the embedded log or on Kafka. Run by hand, in release mode:
//!
//! ```text
//! cargo run --release -p rill-bench --bin ktable                                  # embedded
//! cargo run --release -p rill-bench --bin ktable -- --broker kafka://127.0.0.1:19392
//! cargo run --release -p rill-bench --bin ktable -- --orders 2000000 --customers 100000
//! ```
//!
//! `--customers` customers (keyed by id) and then `--orders` orders (keyed by customer id)
//! are preloaded into two topics of `--partitions` partitions; then one worker starts and the
//! agent looks each order's customer up in the table. Reported: events/s (customers applied
//! plus orders joined, from the worker's start until every record was read) and how many
//! lookups found their customer (records of the two topics are read in fetch order, so a few
//! orders can be read before their customer's record). Progress on stderr; the result as a
//! Markdown table on stdout.
#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its results on the terminal"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rill::{AgentSpec, App, OutRecord, TopicSpec, record};

#[derive(Parser)]
struct Args {
    /// `kafka://host:port`; the embedded log in a temporary directory when absent.
    #[arg(long)]
    broker: Option<String>,
    #[arg(long, default_value_t = 1_000_000)]
    orders: u64,
    #[arg(long, default_value_t = 10_000)]
    customers: u64,
    #[arg(long, default_value_t = 4)]
    partitions: i32,
}

#[record]
#[derive(Default)]
struct Customer {
    tier: String,
}

#[record]
struct Order {
    #[record(key)]
    customer_id: String,
    amount: u64,
}

fn enrich(orders: &str, customers: &str, hits: Arc<AtomicU64>) -> AgentSpec {
    let table = customers.to_owned();
    AgentSpec::new("enrich", "bench/src/bin/ktable.rs")
        .source(TopicSpec::of::<Order>(orders, "bench/src/bin/ktable.rs"))
        .table_of::<Customer>(customers)
        .run(move |mut ctx| {
            let (table, hits) = (table.clone(), hits.clone());
            async move {
                let customers = ctx.table_of::<String, Customer>(&table)?;
                let mut orders = ctx.stream::<Order>()?;
                while let Some(order) = orders.next().await {
                    if customers.get(&order.customer_id)?.is_some() {
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
        })
}

/// A topic name for `Topic::new` (one per run).
fn leak(name: &str) -> &'static str {
    Box::leak(name.to_owned().into_boxed_str())
}

#[tokio::main]
async fn main() -> rill::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,ktable=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let data = tempfile::tempdir().map_err(|e| rill::Error::User(Box::new(e)))?;
    let run = std::process::id();
    let (orders, customers) = (format!("kt-orders-{run}"), format!("kt-customers-{run}"));
    let hits = Arc::new(AtomicU64::new(0));
    let app = || {
        let mut app = App::new(&format!("ktable_bench_{run}"))
            .data_dir(data.path())
            .partitions(args.partitions)
            .configure(|c| c.web_port = None);
        if let Some(broker) = &args.broker {
            app = app.broker(broker);
        }
        app
    };
    // Preload with a worker that runs nothing but declares the topics.
    let loader = app()
        .agents([])
        .topic(&rill::Topic::<String, Customer>::new(leak(&customers)))
        .topic(&rill::Topic::<String, Order>::new(leak(&orders)))
        .start()
        .await?;
    let producer = loader.producer();
    tracing::info!(
        customers = args.customers,
        orders = args.orders,
        "preloading"
    );
    for i in 0..args.customers {
        let value = serde_json::to_vec(&Customer {
            tier: format!("t{}", i % 3),
        })
        .unwrap_or_default();
        producer
            .send_raw(OutRecord {
                topic: customers.as_str().into(),
                partition: None,
                key: Some(format!("c{i}").into_bytes()),
                value: Some(value),
                timestamp: 0,
                headers: rill::Headers::default(),
            })
            .await?;
    }
    for i in 0..args.orders {
        let order = Order {
            customer_id: format!("c{}", i % args.customers),
            amount: i,
        };
        producer.send_to(&orders, &order).await?;
    }
    producer.flush().await?;
    drop(producer);
    loader.shutdown().await?;
    tracing::info!("joining");
    let started = Instant::now();
    let worker = app()
        .agents([enrich(&orders, &customers, hits.clone())])
        .start()
        .await?;
    let stats = worker.stats("enrich").expect("the agent runs");
    let total = args.orders + args.customers;
    while stats.records_in.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let system = if args.broker.is_some() {
        "kafka"
    } else {
        "embedded"
    };
    println!("| log | customers | orders | events/s | orders that found their customer |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| {system} | {} | {} | {:.0} | {} |",
        args.customers,
        args.orders,
        total as f64 / elapsed.as_secs_f64(),
        hits.load(Ordering::Relaxed)
    );
    worker.shutdown().await
}
