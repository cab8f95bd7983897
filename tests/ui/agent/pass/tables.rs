use rill::prelude::*;

#[record]
struct View {
    #[record(key)]
    url: String,
}

#[agent(topic = "views", tables(totals = "url_totals", seen = "seen_users"))]
async fn count(mut views: Stream<View>, totals: Table<String, u64>, seen: Table<String, bool>) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        totals.update(view.url.clone(), |n| n + 1)?;
        seen.insert(view.url, true)?;
    }
    Ok(())
}

#[record]
#[derive(Default)]
struct Customer {
    tier: String,
}

#[agent(topic = "views", tables(customers = table_of("customers"), totals = "per_customer"))]
async fn enrich(mut views: Stream<View>, customers: Table<String, Customer>, totals: Table<String, u64>) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        let tier = customers.get(&view.url)?.map(|c| c.tier).unwrap_or_default();
        totals.update(tier, |n| n + 1)?;
    }
    Ok(())
}

fn main() {
    let enrich = enrich::agent();
    let topics: Vec<&str> = enrich.sources().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(topics, ["views", "customers"], "the table's topic is read too");
    let tables: Vec<&str> = enrich.tables().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tables, ["customers", "per_customer"]);
    let spec = count::agent();
    let names: Vec<&str> = spec.tables().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["url_totals", "seen_users"]);
}
