use rill::prelude::*;
use rill::Joined;

#[agent(
    topic = "orders",
    tables(
        customers = table_of("customers"),
        profiles = table_join("customers", "addresses", "left"),
        wrong = table_join("customers", "customers", "full"),
    )
)]
async fn a(
    mut s: Stream<String>,
    customers: Table<String, String>,
    profiles: Table<String, Joined<String, String>>,
    wrong: Table<String, Joined<String, String>>,
) -> rill::Result<()> {
    while s.next().await.is_some() {}
    Ok(())
}

fn main() {}
