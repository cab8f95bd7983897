//! Table-table joins (`tables(x = table_join("left", "right", "inner" | "left" | "outer"))`,
//! Kafka Streams' `KTable#join`/`leftJoin`/`outerJoin`) and the foreign-key stream-table join
//! over a global table (`Stream::left_join_global`, `join_global`) on the test harness.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use rill::prelude::*;
use rill::{Joined, OutRecord};

#[record]
#[derive(Debug, Clone, Default, PartialEq)]
struct Customer {
    name: String,
}

#[record]
#[derive(Debug, Clone, Default, PartialEq)]
struct Address {
    city: String,
}

#[record]
#[derive(Debug, Clone)]
struct Order {
    #[record(key)]
    customer_id: String,
    product_id: String,
}

#[record]
#[derive(Debug, Clone, PartialEq)]
struct Shipment {
    customer_id: String,
    name: Option<String>,
    city: Option<String>,
}

type Profile = Joined<Customer, Address>;

#[agent(
    topic = "tj_orders",
    sink = "tj_shipments",
    tables(
        customers = table_of("tj_customers"),
        addresses = table_of("tj_addresses"),
        both = table_join("tj_customers", "tj_addresses", "inner"),
        with_customer = table_join("tj_customers", "tj_addresses", "left"),
        either = table_join("tj_customers", "tj_addresses", "outer"),
    )
)]
async fn ship(
    mut orders: Stream<Order>,
    customers: Table<String, Customer>,
    addresses: Table<String, Address>,
    both: Table<String, Profile>,
    with_customer: Table<String, Profile>,
    either: Table<String, Profile>,
    out: Sink<Shipment>,
) -> rill::Result<()> {
    let _ = (&customers, &addresses, &both, &either);
    while let Some(order) = orders.next().await {
        let profile = with_customer.get(&order.customer_id)?.unwrap_or_default();
        let shipment = Shipment {
            customer_id: order.customer_id,
            name: profile.left.map(|c| c.name),
            city: profile.right.map(|a| a.city),
        };
        out.send(&shipment).await?;
    }
    Ok(())
}

/// Sends a keyed JSON value, or a tombstone for `None`.
async fn put<V: serde::Serialize>(
    app: &TestApp,
    topic: &str,
    key: &str,
    value: Option<V>,
) -> rill::Result<()> {
    let record = OutRecord {
        topic: topic.into(),
        partition: None,
        key: Some(key.as_bytes().to_vec()),
        value: value.map(|v| serde_json::to_vec(&v).expect("json")),
        timestamp: 0,
        headers: rill::Headers::default(),
    };
    app.producer().send_raw(record).await?;
    app.producer().flush().await
}

fn name(n: &str) -> Option<Customer> {
    Some(Customer { name: n.into() })
}

fn city(c: &str) -> Option<Address> {
    Some(Address { city: c.into() })
}

/// A join table's committed entries, as `key -> (name, city)`.
fn entries(app: &TestApp, table: &str) -> BTreeMap<String, (Option<String>, Option<String>)> {
    let rows: Vec<(String, Profile)> = app.table(table).expect("table");
    rows.into_iter()
        .map(|(k, p)| (k, (p.left.map(|c| c.name), p.right.map(|a| a.city))))
        .collect()
}

type Expected = [(&'static str, (Option<&'static str>, Option<&'static str>))];

/// Waits until the join table holds exactly `want`.
async fn wait_for(app: &TestApp, table: &str, want: &Expected) {
    let want: BTreeMap<String, (Option<String>, Option<String>)> = want
        .iter()
        .map(|(k, (n, c))| {
            (
                (*k).to_owned(),
                (n.map(str::to_owned), c.map(str::to_owned)),
            )
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = entries(app, table);
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "table {table}: {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test]
async fn table_joins_hold_the_keys_of_their_kind_and_follow_both_sides() -> rill::Result<()> {
    let app = App::new("table_joins")
        .agents([ship::agent()])
        .test()
        .await?;
    put(&app, "tj_customers", "c1", name("Ann")).await?;
    put(&app, "tj_customers", "c2", name("Bob")).await?;
    put(&app, "tj_addresses", "c1", city("Paris")).await?;
    put(&app, "tj_addresses", "c3", city("Oslo")).await?;
    wait_for(&app, "both", &[("c1", (Some("Ann"), Some("Paris")))]).await;
    wait_for(
        &app,
        "with_customer",
        &[
            ("c1", (Some("Ann"), Some("Paris"))),
            ("c2", (Some("Bob"), None)),
        ],
    )
    .await;
    wait_for(
        &app,
        "either",
        &[
            ("c1", (Some("Ann"), Some("Paris"))),
            ("c2", (Some("Bob"), None)),
            ("c3", (None, Some("Oslo"))),
        ],
    )
    .await;

    // Orders read the left join (sent once the tables hold both sides: after the first read
    // of the tables' topics, records of different topics are handed out in fetch order).
    for id in ["c1", "c2", "c3", "c4"] {
        let order = Order {
            customer_id: id.into(),
            product_id: "p".into(),
        };
        app.send_to("tj_orders", &order).await?;
    }
    let mut shipped: Vec<Shipment> = app.expect("tj_shipments", 4).await?;
    shipped.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
    let view: Vec<(Option<&str>, Option<&str>)> = shipped
        .iter()
        .map(|s| (s.name.as_deref(), s.city.as_deref()))
        .collect();
    assert_eq!(
        view,
        [
            (Some("Ann"), Some("Paris")),
            (Some("Bob"), None),
            (None, None),
            (None, None)
        ],
        "the left join holds customers, with their address when there is one"
    );
    // A deleted customer leaves the inner and left joins; an address arriving completes c2.
    put::<Customer>(&app, "tj_customers", "c1", None).await?;
    put(&app, "tj_addresses", "c2", city("Rome")).await?;
    wait_for(&app, "both", &[("c2", (Some("Bob"), Some("Rome")))]).await;
    wait_for(
        &app,
        "with_customer",
        &[("c2", (Some("Bob"), Some("Rome")))],
    )
    .await;
    wait_for(
        &app,
        "either",
        &[
            ("c1", (None, Some("Paris"))),
            ("c2", (Some("Bob"), Some("Rome"))),
            ("c3", (None, Some("Oslo"))),
        ],
    )
    .await;
    app.stop().await
}

#[record]
#[derive(Debug, Clone, PartialEq)]
struct Product {
    #[record(key)]
    id: String,
    title: String,
}

#[record]
#[derive(Debug, Clone, PartialEq)]
struct Line {
    customer_id: String,
    product: Option<String>,
}

#[agent(
    topic = "fk_orders",
    sink = "fk_lines",
    global_tables(products = "fk_products")
)]
async fn itemize(
    orders: Stream<Order>,
    products: GlobalTable<String, Product>,
    out: Sink<Line>,
) -> rill::Result<()> {
    // Orders are keyed by customer; the products topic by product id.
    let mut lines = orders.left_join_global(&products, |o| o.product_id.clone());
    while let Some((order, product)) = lines.next().await {
        let line = Line {
            customer_id: order.customer_id,
            product: product.map(|p| p.title),
        };
        out.send(&line).await?;
    }
    Ok(())
}

#[agent(
    topic = "fk_orders2",
    sink = "fk_lines2",
    global_tables(products = "fk_products")
)]
async fn itemize_known(
    orders: Stream<Order>,
    products: GlobalTable<String, Product>,
    out: Sink<Line>,
) -> rill::Result<()> {
    let mut lines = orders.join_global(&products, |o| o.product_id.clone());
    while let Some((order, product)) = lines.next().await {
        let line = Line {
            customer_id: order.customer_id,
            product: Some(product.title),
        };
        out.send(&line).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_stream_joins_a_global_table_by_a_foreign_key() -> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = App::new("fk_join").agents([]).test_in(dir.path()).await?;
    for (id, title) in [("p1", "lamp"), ("p2", "desk"), ("p3", "chair")] {
        let product = Product {
            id: id.into(),
            title: title.into(),
        };
        setup.producer().send_to("fk_products", &product).await?;
    }
    setup.producer().flush().await?;
    setup.stop().await?;

    let app = App::new("fk_join")
        .agents([itemize::agent(), itemize_known::agent()])
        .test_in(dir.path())
        .await?;
    let orders: Vec<Order> = (0..12)
        .map(|i| Order {
            customer_id: format!("c{}", i % 5),
            product_id: format!("p{}", i % 4 + 1),
        })
        .collect();
    for order in &orders {
        app.send_to("fk_orders", order).await?;
        app.send_to("fk_orders2", order).await?;
    }
    let lines: Vec<Line> = app.expect("fk_lines", 12).await?;
    let titles = |lines: &[Line]| {
        let mut t: Vec<Option<String>> = lines.iter().map(|l| l.product.clone()).collect();
        t.sort();
        t
    };
    let want: Vec<Option<String>> = {
        let mut t: Vec<Option<String>> = orders
            .iter()
            .map(|o| match o.product_id.as_str() {
                "p1" => Some("lamp".to_owned()),
                "p2" => Some("desk".to_owned()),
                "p3" => Some("chair".to_owned()),
                _ => None,
            })
            .collect();
        t.sort();
        t
    };
    assert_eq!(titles(&lines), want, "left join: unknown products are None");
    let known: Vec<Line> = app.expect("fk_lines2", 9).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.count("fk_lines2")?,
        9,
        "inner join: orders of p4 dropped"
    );
    assert!(known.iter().all(|l| l.product.is_some()));
    app.stop().await
}
