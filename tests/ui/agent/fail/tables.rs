use rill::prelude::*;

#[agent(topic = "views")]
async fn table_without_name(s: Stream<String>, totals: Table<String, u64>) -> rill::Result<()> {
    drop((s, totals));
    Ok(())
}

#[agent(topic = "views", tables(totals = "url_totals"))]
async fn name_without_table(s: Stream<String>) -> rill::Result<()> {
    drop(s);
    Ok(())
}

#[agent(topic = "views", tables(customers = table_of(CUSTOMERS), other = tabel_of("x")))]
async fn table_of_needs_a_topic_name(s: Stream<String>, customers: Table<String, u64>, other: Table<String, u64>) -> rill::Result<()> {
    drop((s, customers, other));
    Ok(())
}

fn main() {}
