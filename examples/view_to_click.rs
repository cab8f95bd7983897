//! Technique 5 of the seed: a page view means more when you know it was followed by a click.
//! A windowed join pairs each view with the clicks on its URL within 5 seconds of event time.
//!
//! ```text
//! cargo run --example view_to_click                                   # embedded log, synthetic data
//! cargo run --example view_to_click -- --broker kafka://127.0.0.1:9092
//! cargo run --example view_to_click -- send pageviews '{"user_id":"u1","url":"/a","view_time":1700000000.0}'
//! cargo run --example view_to_click -- send clicks '{"user_id":"u1","url":"/a","click_time":1700000003.0}'
//! ```
//!
//! The agent reads two topics, one typed stream each (`topics(views = ..., clicks = ...)`).
//! Both sides are re-keyed by URL through the internal topic
//! `view_to_click-join_view_to_click-join-repartition`, so a view and its clicks meet in one
//! partition whatever the topics are keyed by; the records waiting for a partner are kept in
//! the table `join_view_to_click-join` (LMDB and its changelog), so a restart between a view
//! and its click still pairs them, once. Each pair is printed and sent to `conversions`.
//!
//! With no broker the app sends `SYNTHETIC_VIEWS` views (default 12, 0 for none), one per
//! second of event time, each on its own URL: a third get a click 2 s later (a pair), a third
//! a click 8 s later (outside the 5 s bound: no pair), a third none.
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::time::Duration;

use rill::prelude::*;

#[record]
#[derive(Clone, Debug)]
struct PageView {
    user_id: String,
    url: String,
    /// Event time, seconds since the epoch.
    #[record(timestamp)]
    view_time: f64,
}

#[record]
#[derive(Clone, Debug)]
struct ClickEvent {
    user_id: String,
    url: String,
    #[record(timestamp)]
    click_time: f64,
}

/// A view followed by a click, as sent to `conversions`.
#[record]
struct Conversion {
    user_id: String,
    url: String,
    /// Seconds from the view to the click.
    after_s: f64,
}

const PAGEVIEWS: Topic<String, PageView> = Topic::new("pageviews");
const CLICKS: Topic<String, ClickEvent> = Topic::new("clicks");

#[agent(topics(views = PAGEVIEWS, clicks = CLICKS), sink = "conversions")]
async fn join_view_to_click(
    views: Stream<PageView>,
    clicks: Stream<ClickEvent>,
    conversions: Sink<Conversion>,
) -> rill::Result<()> {
    // Faust: `views.join(click_topic, within=timedelta(seconds=5))`. `within` is symmetric;
    // `.before(Duration::ZERO)` would only pair clicks that come after the view.
    let window = JoinWindow::within(Duration::from_secs(5));
    let mut joined = views.join(clicks, |v| v.url.clone(), |c| c.url.clone(), window);
    while let Some((view, click)) = joined.next().await {
        println!(
            "Success! View on {} by {} led to a click.",
            view.url, view.user_id
        );
        conversions
            .send(&Conversion {
                user_id: view.user_id,
                url: view.url,
                after_s: click.click_time - view.view_time,
            })
            .await?;
    }
    Ok(())
}

fn main() -> rill::Result<()> {
    App::new("view_to_click").task(synthetic_traffic).main()
}

/// Views and clicks for the embedded log, so the example shows something.
async fn synthetic_traffic(producer: Producer) -> rill::Result<()> {
    let count: usize = std::env::var("SYNTHETIC_VIEWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    if producer.is_kafka() || count == 0 {
        return Ok(());
    }
    println!("no broker configured: sending {count} synthetic views and their clicks");
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        .floor();
    for i in 0..count {
        let view = PageView {
            user_id: format!("user-{}", i % 4),
            url: format!("/article/{i}"),
            view_time: start + i as f64,
        };
        producer.send(&PAGEVIEWS, &view).await?;
        let delay = match i % 3 {
            1 => Some(2.0),
            2 => Some(8.0),
            _ => None,
        };
        if let Some(delay) = delay {
            let click = ClickEvent {
                user_id: view.user_id.clone(),
                url: view.url.clone(),
                click_time: view.view_time + delay,
            };
            producer.send(&CLICKS, &click).await?;
        }
    }
    producer.flush().await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
