//! An agent with a sink topic, feeding a second agent: page views become `UrlHit`s keyed by URL
//! (so all hits of a URL share a partition), internal pages are filtered out, and a second
//! agent prints the hits.
//!
//! ```text
//! cargo run --example sink                                      # embedded log, synthetic views
//! cargo run --example sink -- --broker kafka://127.0.0.1:9092   # on Kafka
//! cargo run --example sink -- agents                            # what runs where
//! ```
//!
//! `SYNTHETIC_VIEWS=<n>` sets how many views the app generates when no broker is configured
//! (default 20, 0 for none).
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::time::Duration;

use rill::prelude::*;

#[record]
struct PageView {
    user_id: String,
    url: String,
    #[record(timestamp)]
    view_time: f64,
}

#[record]
struct UrlHit {
    #[record(key)]
    url: String,
    user_id: String,
    #[record(timestamp)]
    view_time: f64,
}

#[agent(topic = "pageviews", sink = "url_hits", concurrency = 2)]
async fn to_hits(views: Stream<PageView>, hits: Sink<UrlHit>) -> rill::Result<()> {
    let mut views = views.filter(|v| !v.url.starts_with("/internal"));
    while let Some(view) = views.next().await {
        hits.send(&UrlHit {
            url: view.url,
            user_id: view.user_id,
            view_time: view.view_time,
        })
        .await?;
    }
    Ok(())
}

#[agent(topic = "url_hits")]
async fn print_hits(hits: Stream<UrlHit>) -> rill::Result<()> {
    let mut hits = hits.events();
    while let Some(hit) = hits.next().await {
        println!(
            "hit on {} by {} (partition {}, offset {})",
            hit.url, hit.user_id, hit.meta.partition, hit.meta.offset
        );
    }
    Ok(())
}

fn main() -> rill::Result<()> {
    App::new("url_hits").task(synthetic_views).main()
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
    let urls = ["/", "/pricing", "/internal/admin", "/docs"];
    for i in 0..count {
        let view = PageView {
            user_id: format!("user-{}", i % 5),
            url: urls[i % urls.len()].to_owned(),
            view_time: 1.7e9 + i as f64,
        };
        producer.send_to("pageviews", &view).await?;
        producer.flush().await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
