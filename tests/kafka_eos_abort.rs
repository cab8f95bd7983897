//! Exactly-once on the Apache Kafka broker: an aborted transaction rolls back and the worker
//! goes on. The first time the agent handles one particular order it also sends a record too
//! large for the producer, so that commit step's transaction aborts: nothing of it may become
//! visible to `read_committed` readers, the table must not keep its writes, and after the
//! rollback the records are processed again and committed once.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rill::prelude::*;

#[record]
#[derive(Debug, Clone)]
struct Order {
    #[record(key)]
    customer: String,
    id: u64,
}

#[record]
#[derive(Debug, Clone)]
struct Counted {
    #[record(key)]
    customer: String,
    id: u64,
    /// The customer's order count after this order (from the table).
    count: u64,
}

static POISONED: AtomicBool = AtomicBool::new(false);
/// This run's customer prefix (the topics outlive runs against one broker).
static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
/// Records of this run handed to the agent, repeats included.
static HANDLED: AtomicU64 = AtomicU64::new(0);

#[agent(
    topic = "eos-orders",
    sink = "eos-counted",
    tables(counts = "eos_counts")
)]
async fn count_orders(
    mut orders: Stream<Order>,
    counted: Sink<Counted>,
    counts: Table<String, u64>,
) -> rill::Result<()> {
    while let Some(order) = orders.next().await {
        let ours = RUN
            .get()
            .is_some_and(|r| order.customer.starts_with(r.as_str()));
        if ours {
            HANDLED.fetch_add(1, Ordering::SeqCst);
        }
        let count = counts.update(order.customer.clone(), |n| n + 1)?;
        counted
            .send(&Counted {
                customer: order.customer.clone(),
                id: order.id,
                count,
            })
            .await?;
        if ours && order.id == 250 && !POISONED.swap(true, Ordering::SeqCst) {
            // Larger than the producer's message.max.bytes: this transaction must abort.
            let huge = Counted {
                customer: "x".repeat(3 << 20),
                id: u64::MAX,
                count: 0,
            };
            counted.send(&huge).await?;
        }
    }
    Ok(())
}

/// Everything in `topic` a `read_committed` reader sees.
fn read_committed(bootstrap: &str, topic: &str) -> Vec<Counted> {
    common::read_to_end(bootstrap, topic, "read_committed")
        .iter()
        .map(|r| serde_json::from_slice(r.value.as_deref().unwrap_or_default()).expect("json"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_transaction_rolls_back_and_the_worker_goes_on() -> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("dir");
    let app_id = format!("eos-abort-{}", rand::random::<u32>());
    let worker = common::kafka_app(&app_id, &bootstrap, dir.path())
        .partitions(4)
        .processing_guarantee(rill::ProcessingGuarantee::ExactlyOnce)
        .agents([count_orders::agent()])
        .start()
        .await?;
    let run = RUN
        .get_or_init(|| format!("{}-", rand::random::<u32>()))
        .clone();
    let customers: Vec<String> = (0..10).map(|c| format!("{run}c{c}")).collect();
    let n = 500u64;
    for id in 0..n {
        let customer = customers[(id % 10) as usize].clone();
        worker
            .producer()
            .send_to("eos-orders", &Order { customer, id })
            .await?;
    }
    worker.producer().flush().await?;
    // Everything of this run committed: read_committed sees all its orders' results.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let out: Vec<Counted> = loop {
        let got: Vec<Counted> = read_committed(&bootstrap, "eos-counted")
            .into_iter()
            .filter(|c| c.customer.starts_with(&run) || c.id == u64::MAX)
            .collect();
        if got.len() >= n as usize {
            break got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} results committed",
            got.len()
        );
    };
    assert!(
        POISONED.load(Ordering::SeqCst),
        "the poisoned order was handled"
    );
    assert!(
        HANDLED.load(Ordering::SeqCst) > n,
        "records were handed out again after the rollback"
    );
    assert!(
        out.iter().all(|c| c.id != u64::MAX),
        "nothing of the aborted transaction is visible"
    );
    let mut ids: Vec<u64> = out.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..n).collect::<Vec<_>>(), "every order exactly once");
    // The table kept no write of the aborted transaction: counts run 1..=50 per customer.
    let mut per_customer: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in &out {
        per_customer
            .entry(c.customer.clone())
            .or_default()
            .push(c.count);
    }
    for (customer, mut counts) in per_customer {
        counts.sort_unstable();
        assert_eq!(counts, (1..=n / 10).collect::<Vec<_>>(), "{customer}");
    }
    worker.shutdown().await
}

/// Sends, for every order, a record no producer setting here accepts.
#[agent(topic = "eos-huge-orders", sink = "eos-huge-out")]
async fn always_huge(mut orders: Stream<Order>, out: Sink<Counted>) -> rill::Result<()> {
    while let Some(order) = orders.next().await {
        let huge = Counted {
            customer: "x".repeat(3 << 20),
            id: order.id,
            count: 0,
        };
        out.send(&huge).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_every_retry_stops_the_worker_with_the_setting_to_change()
-> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let dir = tempfile::tempdir().expect("dir");
    let app_id = format!("eos-huge-{}", rand::random::<u32>());
    let mut worker = common::kafka_app(&app_id, &bootstrap, dir.path())
        .partitions(1)
        .processing_guarantee(rill::ProcessingGuarantee::ExactlyOnce)
        .agents([always_huge::agent()])
        .start()
        .await?;
    worker
        .producer()
        .send_to(
            "eos-huge-orders",
            &Order {
                customer: "c".into(),
                id: 1,
            },
        )
        .await?;
    worker.producer().flush().await?;
    // Each attempt aborts; after three in a row the worker stops instead of looping.
    let err = common::stop_error(&mut worker, Duration::from_secs(90)).await;
    let msg = err.to_string();
    assert!(
        msg.contains("message.max.bytes") && msg.contains("in a row"),
        "{msg}"
    );
    worker.shutdown().await
}

/// Forwards orders; four instances, so one worker has four commit steps per interval.
#[agent(topic = "eos-tick-orders", sink = "eos-tick-out", concurrency = 4)]
async fn forward(mut orders: Stream<Order>, out: Sink<Order>) -> rill::Result<()> {
    while let Some(order) = orders.next().await {
        out.send(&order).await?;
    }
    Ok(())
}

/// The worker's committed transactions, from its metrics.
fn committed_transactions(metrics: &str) -> u64 {
    common::prometheus::sample(metrics, "rill_transactions_total{outcome=\"committed\"}")
        .map_or(0, |n| n as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instances_of_a_worker_commit_their_intervals_in_shared_transactions()
-> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let dir = tempfile::tempdir().expect("dir");
    let app_id = format!("eos-tick-{}", rand::random::<u32>());
    let worker = common::kafka_app(&app_id, &bootstrap, dir.path())
        .partitions(8)
        .processing_guarantee(rill::ProcessingGuarantee::ExactlyOnce)
        .agents([forward::agent()])
        .start()
        .await?;
    let stats = worker.stats("forward").expect("stats");
    // Records for every partition for 3 s, so every instance has work at every tick. They
    // come from a plain producer: the worker's own producer is transactional here, and its
    // flushes would count as transactions too.
    let started = tokio::time::Instant::now();
    let mut id = 0u64;
    let producer = common::producer(&bootstrap);
    while started.elapsed() < Duration::from_secs(3) {
        let batch: Vec<(Option<String>, String)> = (0..16)
            .map(|c| {
                id += 1;
                let order = serde_json::json!({"customer": format!("c{c}"), "id": id});
                (Some(format!("c{c}")), order.to_string())
            })
            .collect();
        tokio::task::block_in_place(|| common::produce(&producer, "eos-tick-orders", &batch));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let steps = rill::AgentStats::get(&stats.commits);
    let transactions = committed_transactions(&worker.metrics_text());
    eprintln!("{transactions} transactions for {steps} commit steps");
    // Four instances commit on the same ticks, and their steps share one transaction: about
    // a quarter as many transactions as steps (half is the bound allowed here, for steps a
    // busy machine delays past the gathering window).
    assert!(
        steps >= 20 && transactions * 2 <= steps,
        "{transactions} transactions for {steps} commit steps"
    );
    worker.shutdown().await
}
