//! Technique 3 of the seed: a running total of views per URL in a table that survives restarts.
//!
//! ```text
//! cargo run --example page_totals -- --data-dir /tmp/totals   # run it, Ctrl-C, run it again:
//! cargo run --example page_totals -- --data-dir /tmp/totals   # the totals continue
//! cargo run --example page_totals -- --broker kafka://127.0.0.1:9092
//! ```
//!
//! The table `url_view_totals` lives in LMDB under the data dir; every update also goes to the
//! changelog topic `page_totals-url_view_totals-changelog`, from which a lost local copy is
//! rebuilt. Page views are keyed by URL, so each URL's total lives in exactly one partition.
//! `SYNTHETIC_VIEWS=<n>` sets how many views the app generates with no broker (default 20).
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::time::Duration;

use rill::prelude::*;

#[record]
struct PageView {
    user_id: String,
    #[record(key)]
    url: String,
    #[record(timestamp)]
    view_time: f64,
}

const PAGEVIEWS: Topic<String, PageView> = Topic::new("pageviews");

#[agent(topic = PAGEVIEWS, tables(totals = "url_view_totals"))]
async fn update_total_views(
    mut views: Stream<PageView>,
    totals: Table<String, u64>,
) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        let total = totals.update(view.url.clone(), |n| n + 1)?;
        println!("Running total for {}: {total}", view.url);
    }
    Ok(())
}

fn main() -> rill::Result<()> {
    App::new("page_totals").task(synthetic_views).main()
}

async fn synthetic_views(producer: Producer) -> rill::Result<()> {
    let count: usize = std::env::var("SYNTHETIC_VIEWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    if producer.is_kafka() || count == 0 {
        return Ok(());
    }
    println!("no broker configured: sending {count} synthetic page views (Ctrl-C to stop)");
    let urls = ["/", "/pricing", "/docs"];
    for i in 0..count {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let view = PageView {
            user_id: format!("user-{i}"),
            url: urls[i % urls.len()].to_owned(),
            view_time: now.as_secs_f64(),
        };
        producer.send(&PAGEVIEWS, &view).await?;
        producer.flush().await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
