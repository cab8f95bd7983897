//! Technique 1 of the seed: an agent logging every page view.
//!
//! ```text
//! cargo run --example pageviews                                  # embedded log, synthetic views
//! cargo run --example pageviews -- --broker kafka://127.0.0.1:9092   # real Kafka, real producers
//! cargo run --example pageviews -- send pageviews '{"user_id":"u1","url":"/","view_time":1700000000.5}'
//! ```
//!
//! With no broker configured the app generates a few synthetic views itself (set
//! `SYNTHETIC_VIEWS=0` to turn that off, or to a number to send that many). Stop with Ctrl-C:
//! the worker finishes the current record, commits and exits.
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

/// The topic, declared once with its types.
const PAGEVIEWS: Topic<String, PageView> = Topic::new("pageviews");

#[agent(topic = PAGEVIEWS)]
async fn log_views(mut views: Stream<PageView>) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        println!(
            "[{:.3}] User {} visited {}",
            view.view_time, view.user_id, view.url
        );
    }
    Ok(())
}

fn main() -> rill::Result<()> {
    App::new("traffic_monitor").task(synthetic_views).main()
}

/// Sends a handful of views when running on the embedded log, so the example shows something.
async fn synthetic_views(producer: Producer) -> rill::Result<()> {
    let count: usize = std::env::var("SYNTHETIC_VIEWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    if producer.is_kafka() || count == 0 {
        return Ok(());
    }
    println!(
        "no broker configured: sending {count} synthetic page views to `pageviews` (Ctrl-C to stop)"
    );
    let urls = ["/", "/pricing", "/docs", "/blog/rill"];
    for i in 0..count {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let view = PageView {
            user_id: format!("user-{}", i % 7),
            url: urls[i % urls.len()].to_owned(),
            view_time: now.as_secs_f64(),
        };
        producer.send(&PAGEVIEWS, &view).await?;
        producer.flush().await?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}
