//! A table built from a topic (Kafka Streams' KTable): orders are enriched with their customer,
//! looked up in a table that the `customers` topic (keyed by customer id, compacted on a
//! broker) keeps current; a customer record without a value removes the customer.
//!
//! ```text
//! cargo run --example ktable
//! cargo run --example ktable -- --broker kafka://127.0.0.1:9092
//! ```
//!
//! Both topics are keyed by customer id and have the same partition count, so each instance
//! holds the customers of the orders it reads. The table is also written to its changelog
//! (`ktable-customers-changelog`), from which a worker that lost its local copy restores it.
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::time::Duration;

use rill::prelude::*;

#[record]
#[derive(Default)]
struct Customer {
    name: String,
    tier: String,
}

#[record]
struct Order {
    #[record(key)]
    customer_id: String,
    amount: u64,
}

#[agent(topic = "orders", tables(customers = table_of("customers")))]
async fn enrich_orders(
    mut orders: Stream<Order>,
    customers: Table<String, Customer>,
) -> rill::Result<()> {
    while let Some(order) = orders.next().await {
        match customers.get(&order.customer_id)? {
            Some(c) => println!("order of {} by {} ({} tier)", order.amount, c.name, c.tier),
            None => println!(
                "order of {} by unknown customer {}",
                order.amount, order.customer_id
            ),
        }
    }
    Ok(())
}

fn main() -> rill::Result<()> {
    App::new("ktable").task(synthetic_input).main()
}

async fn synthetic_input(producer: Producer) -> rill::Result<()> {
    if producer.is_kafka() {
        return Ok(());
    }
    println!("no broker configured: sending customers, then an order every 300 ms");
    let customers = [
        ("c1", "Ada", "gold"),
        ("c2", "Bob", "free"),
        ("c3", "Cy", "silver"),
    ];
    for (id, name, tier) in customers {
        let value = serde_json::json!({ "name": name, "tier": tier }).to_string();
        let record = rill::OutRecord {
            topic: "customers".into(),
            partition: None,
            key: Some(id.as_bytes().to_vec()),
            value: Some(value.into_bytes()),
            timestamp: 0,
            headers: rill::Headers::default(),
        };
        producer.send_raw(record).await?;
    }
    producer.flush().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0u64.. {
        let order = Order {
            customer_id: format!("c{}", i % 4 + 1),
            amount: 10 * (i + 1),
        };
        producer.send_to("orders", &order).await?;
        producer.flush().await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}
