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

fn main() {
    let spec = count::agent();
    let names: Vec<&str> = spec.tables().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["url_totals", "seen_users"]);
}
