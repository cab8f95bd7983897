//! Technique 6 of the seed: a dead-letter queue. The seed's Faust agent wraps its logic in
//! `try`/`except` and sends an error string to `processing_failures` by hand; here the policy
//! is a declaration, and the dead letter is the original record itself, with headers saying
//! why it failed, where it came from and when, so it can be replayed after a fix.
//!
//! ```text
//! cargo run --example dead_letters                 # synthetic views; URLs with "test" fail
//! cargo run --example dead_letters -- dlq list     # counts and the newest errors
//! cargo run --example dead_letters -- dlq replay process_with_graceful_failure --filter test
//! ```
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::time::Duration;

use rill::prelude::*;

#[record]
struct PageView {
    user_id: String,
    url: String,
}

const PAGEVIEWS: Topic<String, PageView> = Topic::new("pageviews");

/// Simulates logic that might fail.
fn risky_processing_logic(view: &PageView) -> rill::Result<()> {
    if view.url.contains("test") {
        return Err(rill::Error::user(format!(
            "Failed on user {}, URL {}: found a test URL",
            view.user_id, view.url
        )));
    }
    Ok(())
}

/// A failing record goes to `processing_failures` (the default policy, `dead_letter`, with the
/// seed's topic name) and the agent continues with the next one. Records that are not valid
/// `PageView` JSON never reach the function: they are dead-lettered the same way.
#[agent(topic = PAGEVIEWS, on_error = "dead_letter", dead_letter = "processing_failures")]
async fn process_with_graceful_failure(mut views: Stream<PageView>) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        risky_processing_logic(&view)?;
        println!("processed {} for {}", view.url, view.user_id);
    }
    Ok(())
}

fn main() -> rill::Result<()> {
    App::new("failure_demo").task(synthetic_views).main()
}

/// On the embedded log, sends a few views, every fifth to a test URL, and one malformed record.
async fn synthetic_views(producer: Producer) -> rill::Result<()> {
    let count: usize = std::env::var("SYNTHETIC_VIEWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    if producer.is_kafka() || count == 0 {
        return Ok(());
    }
    println!("no broker configured: sending {count} synthetic page views, every fifth to /test");
    for i in 0..count {
        let url = if i % 5 == 4 {
            "/test/checkout"
        } else {
            "/docs"
        };
        let view = PageView {
            user_id: format!("user-{i}"),
            url: url.to_owned(),
        };
        producer.send(&PAGEVIEWS, &view).await?;
        producer.flush().await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    producer
        .send_raw(rill::OutRecord {
            topic: std::sync::Arc::from("pageviews"),
            partition: None,
            key: None,
            value: Some(b"{\"user_id\": 42}".to_vec()),
            timestamp: 0,
            headers: rill::Headers::default(),
        })
        .await?;
    producer.flush().await
}
