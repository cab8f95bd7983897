//! Tables built from a topic (Kafka Streams' KTable, `tables(customers = table_of("customers"))`)
//! on the test harness: the topic's records update the table (a record without a value
//! deletes), the agent sees only its own topic's records, and looks up the table by key.

mod common;

use rill::prelude::*;

#[record]
#[derive(Debug, Clone, Default, PartialEq)]
struct Customer {
    name: String,
    tier: String,
}

#[record]
#[derive(Debug, Clone)]
struct Order {
    #[record(key)]
    customer_id: String,
    amount: u64,
}

#[record]
#[derive(Debug, Clone, PartialEq)]
struct Enriched {
    customer_id: String,
    amount: u64,
    customer: Option<String>,
    tier: Option<String>,
}

#[agent(topic = "orders", sink = "enriched", tables(customers = table_of("customers")))]
async fn enrich(
    mut orders: Stream<Order>,
    customers: Table<String, Customer>,
    out: Sink<Enriched>,
) -> rill::Result<()> {
    while let Some(order) = orders.next().await {
        let customer = customers.get(&order.customer_id)?;
        let enriched = Enriched {
            customer_id: order.customer_id,
            amount: order.amount,
            customer: customer.as_ref().map(|c| c.name.clone()),
            tier: customer.map(|c| c.tier),
        };
        out.send(&enriched).await?;
    }
    Ok(())
}

async fn send_customer(app: &TestApp, id: &str, customer: Option<Customer>) -> rill::Result<()> {
    let value = customer.map(|c| serde_json::to_vec(&c).expect("json"));
    match value {
        Some(v) => app.send_bytes("customers", Some(id.as_bytes()), &v).await,
        None => {
            let tombstone = rill::OutRecord {
                topic: "customers".into(),
                partition: None,
                key: Some(id.as_bytes().to_vec()),
                value: None,
                timestamp: 0,
                headers: rill::Headers::default(),
            };
            app.producer().send_raw(tombstone).await?;
            app.producer().flush().await
        }
    }
}

fn customer(name: &str, tier: &str) -> Option<Customer> {
    Some(Customer {
        name: name.into(),
        tier: tier.into(),
    })
}

fn order(id: &str, amount: u64) -> Order {
    Order {
        customer_id: id.into(),
        amount,
    }
}

#[tokio::test]
async fn orders_are_enriched_from_a_table_built_from_a_topic() -> rill::Result<()> {
    let app = App::new("ktable").agents([enrich::agent()]).test().await?;
    send_customer(&app, "c1", customer("Ada", "gold")).await?;
    send_customer(&app, "c2", customer("Bob", "free")).await?;
    app.wait_until("the customers are in the table", |app| {
        app.table::<String, Customer>("customers")
            .is_ok_and(|t| t.len() == 2)
    })
    .await?;
    common::records::send_all(app.producer(), "orders", [order("c1", 10), order("c3", 5)]).await?;
    let first: Vec<Enriched> = app.expect("enriched", 2).await?;
    let by_id =
        |id: &str, all: &[Enriched]| all.iter().rev().find(|e| e.customer_id == id).cloned();
    assert_eq!(
        by_id("c1", &first).and_then(|e| e.tier),
        Some("gold".into())
    );
    assert_eq!(
        by_id("c3", &first).and_then(|e| e.customer),
        None,
        "no such customer"
    );
    // An update and a deletion reach later orders.
    send_customer(&app, "c1", customer("Ada", "platinum")).await?;
    send_customer(&app, "c2", None).await?;
    app.wait_until("the update and the deletion are applied", |app| {
        app.table::<String, Customer>("customers")
            .is_ok_and(|t| t.len() == 1 && t[0].1.tier == "platinum")
    })
    .await?;
    common::records::send_all(app.producer(), "orders", [order("c1", 20), order("c2", 7)]).await?;
    let all: Vec<Enriched> = app.expect("enriched", 4).await?;
    assert_eq!(
        by_id("c1", &all).map(|e| (e.amount, e.tier)),
        Some((20, Some("platinum".into())))
    );
    assert_eq!(
        by_id("c2", &all).map(|e| (e.amount, e.customer)),
        Some((7, None))
    );
    // The agent never saw the customers' records as orders.
    assert_eq!(all.len(), 4);
    assert_eq!(
        app.stats("enrich")
            .map(|s| s.dead_lettered.load(std::sync::atomic::Ordering::Relaxed)),
        Some(0)
    );
    app.stop().await
}

#[tokio::test]
async fn a_backlog_of_orders_waits_until_the_customers_are_read() -> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    // Preload both topics while no agent runs: the customers first, then many orders each.
    let loader = App::new("ktable_backlog")
        .agents([])
        .test_in(dir.path())
        .await?;
    for i in 0..50 {
        send_customer(&loader, &format!("c{i}"), customer(&format!("n{i}"), "t")).await?;
    }
    let orders = (0..500).map(|n| order(&format!("c{}", n % 50), n));
    common::records::send_all(loader.producer(), "orders", orders).await?;
    loader.stop().await?;
    let app = App::new("ktable_backlog")
        .agents([enrich::agent()])
        .test_in(dir.path())
        .await?;
    let all: Vec<Enriched> = app.expect("enriched", 500).await?;
    let missed: Vec<&Enriched> = all.iter().filter(|e| e.customer.is_none()).collect();
    assert!(
        missed.is_empty(),
        "every order found its customer: {} missed",
        missed.len()
    );
    app.stop().await
}
