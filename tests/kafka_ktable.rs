//! A table built from a topic (`AgentSpec::table_of`) on a real Apache Kafka broker: a backlog
//! of orders is enriched from the customers topic across four co-partitioned partitions (the
//! customers are read to their end before any order), and after the worker's local state is
//! lost, a new worker restores the table from the customers topic itself (a table built from a
//! topic has no changelog of its own) and enriches new orders without the customers being sent
//! again.

mod common;

use std::time::Duration;

use rill::{AgentSpec, TopicSpec, record};

#[record]
#[derive(Debug, Clone, Default)]
struct Customer {
    tier: String,
}

#[record]
#[derive(Debug, Clone)]
struct Order {
    #[record(key)]
    customer_id: String,
    n: u64,
}

#[record]
#[derive(Debug, Clone)]
struct Enriched {
    customer_id: String,
    n: u64,
    tier: Option<String>,
}

struct Names {
    orders: String,
    customers: String,
    out: String,
}

fn enrich(names: &Names) -> AgentSpec {
    let customers = names.customers.clone();
    AgentSpec::new("enrich", "tests/kafka_ktable.rs")
        .source(TopicSpec::of::<Order>(
            &names.orders,
            "tests/kafka_ktable.rs",
        ))
        .sink(TopicSpec::of::<Enriched>(
            &names.out,
            "tests/kafka_ktable.rs",
        ))
        .table_of::<Customer>(&names.customers)
        .run(move |mut ctx| {
            let customers = customers.clone();
            async move {
                let table = ctx.table_of::<String, Customer>(&customers)?;
                let mut orders = ctx.stream::<Order>()?;
                let out = ctx.sink::<Enriched>()?;
                while let Some(order) = orders.next().await {
                    let tier = table.get(&order.customer_id)?.map(|c| c.tier);
                    out.send(&Enriched {
                        customer_id: order.customer_id,
                        n: order.n,
                        tier,
                    })
                    .await?;
                }
                Ok(())
            }
        })
}

fn orders(from: u64, to: u64) -> Vec<(Option<String>, String)> {
    (from..to)
        .map(|n| {
            let id = format!("c{}", n % 20);
            (
                Some(id.clone()),
                serde_json::json!({ "customer_id": id, "n": n }).to_string(),
            )
        })
        .collect()
}

/// The enriched orders read so far, waiting until there are `n`.
fn enriched(bootstrap: &str, topic: &str, n: usize) -> Vec<serde_json::Value> {
    let read = common::read_topic(
        bootstrap,
        topic,
        Duration::from_secs(90),
        Duration::ZERO,
        |r| r.len() >= n,
    );
    read.iter().map(common::kafka::Read::json).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_built_from_a_topic_enriches_and_is_restored() -> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let run = common::run_id();
    let names = Names {
        orders: format!("kk_orders_{run}"),
        customers: format!("kk_customers_{run}"),
        out: format!("kk_out_{run}"),
    };
    tokio::task::block_in_place(|| {
        common::create_topic(&bootstrap, &names.orders, 4, &[]);
        common::create_topic(
            &bootstrap,
            &names.customers,
            4,
            &[("cleanup.policy", "compact")],
        );
    });
    let producer = common::producer(&bootstrap);
    // Twenty customers, c0..c19, tier "t<i>".
    let customers: Vec<(Option<String>, String)> = (0..20)
        .map(|i| {
            (
                Some(format!("c{i}")),
                serde_json::json!({ "tier": format!("t{i}") }).to_string(),
            )
        })
        .collect();
    tokio::task::block_in_place(|| common::produce(&producer, &names.customers, &customers));
    // A backlog of orders too: the worker reads the customers to their end before any order.
    tokio::task::block_in_place(|| common::produce(&producer, &names.orders, &orders(0, 100)));
    let app_id = format!("kk_{run}");
    let first_dir = tempfile::tempdir().expect("tempdir");
    let worker = common::kafka_app(&app_id, &bootstrap, first_dir.path())
        .agents([enrich(&names)])
        .start()
        .await?;
    let out = tokio::task::block_in_place(|| enriched(&bootstrap, &names.out, 100));
    assert_eq!(out.len(), 100);
    for e in &out {
        let n = e["n"].as_u64().expect("n");
        assert_eq!(e["tier"], serde_json::json!(format!("t{}", n % 20)), "{e}");
    }
    worker.shutdown().await?;
    let changelog = format!("{app_id}-{}-changelog", names.customers);
    let made = tokio::task::block_in_place(|| common::partition_count(&bootstrap, &changelog));
    assert_eq!(
        made, None,
        "a table built from a topic got a changelog topic"
    );
    // A new worker with an empty data dir: the table comes back from the customers topic.
    drop(first_dir);
    let second_dir = tempfile::tempdir().expect("tempdir");
    let worker = common::kafka_app(&app_id, &bootstrap, second_dir.path())
        .agents([enrich(&names)])
        .start()
        .await?;
    common::wait_ready(&worker, Duration::from_secs(60)).await;
    tokio::task::block_in_place(|| common::produce(&producer, &names.orders, &orders(100, 140)));
    let out = tokio::task::block_in_place(|| enriched(&bootstrap, &names.out, 140));
    let late: Vec<&serde_json::Value> = out
        .iter()
        .filter(|e| e["n"].as_u64().unwrap_or(0) >= 100)
        .collect();
    assert_eq!(late.len(), 40, "no order was enriched twice or lost");
    let stats = worker.stats("enrich").expect("stats");
    assert!(
        stats.restored.load(std::sync::atomic::Ordering::Relaxed) >= 20,
        "the table was restored from its topic"
    );
    for e in late {
        let n = e["n"].as_u64().expect("n");
        assert_eq!(
            e["tier"],
            serde_json::json!(format!("t{}", n % 20)),
            "restored: {e}"
        );
    }
    worker.shutdown().await
}
