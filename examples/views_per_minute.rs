//! Technique 2 of the seed: page views counted per URL in one-minute tumbling windows.
//!
//! ```text
//! cargo run --example views_per_minute                                  # embedded log, synthetic views
//! cargo run --example views_per_minute -- --broker kafka://127.0.0.1:9092
//! cargo run --example views_per_minute -- tables views_this_minute      # the windowed table
//! ```
//!
//! Two agents read `pageviews`, showing the two ways to window:
//!
//! - `count_views_every_minute` re-keys the views by URL, cuts them into tumbling windows of a
//!   minute of *event time* and receives each window once, when it closes: it prints it and
//!   sends a `UrlViews` record to the topic `views_per_minute`.
//! - `live_views` keeps a Faust-style windowed table: a count per URL and minute, updated on
//!   every view and readable at any time (`current()` is the window of the view being
//!   processed), before the minute is over.
//!
//! With no broker the app generates `SYNTHETIC_VIEWS` views (default 60, 0 for none) whose event
//! times advance 5 s per view, so a minute of event time passes in about a second. A window
//! closes when the watermark (the largest event time seen, the smallest over the partitions
//! read) passes its end. Partitions no URL maps to hold the watermark back until they have
//! been idle for the idle timeout (`RILL_IDLE_TIMEOUT_MS`, 10 s), so the first results appear
//! about 10 s after start; the last window waits for the stream to go idle too, after which
//! the watermark moves on with the wall clock. `event_time.rs` shows late and out-of-order
//! views.
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::time::Duration;

use rill::prelude::*;

#[record]
struct PageView {
    user_id: String,
    /// The topic is keyed by URL, so the windowed table's keys live in the view's partition.
    #[record(key)]
    url: String,
    /// Event time: seconds since the epoch (floats are seconds, integers milliseconds).
    #[record(timestamp)]
    view_time: f64,
}

/// One closed window, as sent to `views_per_minute`.
#[record]
struct UrlViews {
    url: String,
    /// Window bounds, ms since the epoch: `[start, end)`.
    start: i64,
    end: i64,
    views: u64,
}

const PAGEVIEWS: Topic<String, PageView> = Topic::new("pageviews");

#[agent(topic = PAGEVIEWS, sink = "views_per_minute")]
async fn count_views_every_minute(
    views: Stream<PageView>,
    out: Sink<UrlViews>,
) -> rill::Result<()> {
    // Faust: `views.group_by(PageView.url).tumbling(timedelta(minutes=1))` + `batch.count()`.
    let mut windows = views
        .group_by(PageView::url)
        .tumbling(Duration::from_secs(60))
        .count();
    while let Some(window) = windows.next().await {
        println!(
            "window [{}, {}) closed: {} had {} views",
            clock(window.start),
            clock(window.end),
            window.key,
            window.value
        );
        out.send(&UrlViews {
            url: window.key,
            start: window.start,
            end: window.end,
            views: window.value,
        })
        .await?;
    }
    Ok(())
}

#[agent(topic = PAGEVIEWS, tables(per_minute = "views_this_minute"))]
async fn live_views(
    mut views: Stream<PageView>,
    per_minute: Table<String, u64>,
) -> rill::Result<()> {
    // Faust: `app.Table("views_this_minute", default=int).tumbling(60, expires=3600)`.
    let per_minute = per_minute
        .tumbling(Duration::from_secs(60))
        .expires(Duration::from_secs(3600));
    while let Some(view) = views.next().await {
        per_minute.update(view.url.clone(), |n| n + 1)?;
        let so_far = per_minute.current(&view.url)?;
        tracing::info!(url = %view.url, so_far, "views this minute");
    }
    Ok(())
}

fn main() -> rill::Result<()> {
    App::new("views_per_minute").task(synthetic_views).main()
}

/// `HH:MM:SS` (UTC) of a time in ms since the epoch.
fn clock(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Sends views 5 s of event time apart: per minute, 6 on `/` and 3 each on `/pricing` and
/// `/docs`.
async fn synthetic_views(producer: Producer) -> rill::Result<()> {
    let count: u64 = std::env::var("SYNTHETIC_VIEWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    if producer.is_kafka() || count == 0 {
        return Ok(());
    }
    println!("no broker configured: sending {count} synthetic page views (Ctrl-C to stop)");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // Start at a minute boundary, far enough back that the views end around now.
    let start = now.saturating_sub(5 * count) / 60 * 60;
    let urls = ["/", "/pricing", "/", "/docs"];
    for i in 0..count {
        let view = PageView {
            user_id: format!("user-{}", i % 7),
            url: urls[(i % 4) as usize].to_owned(),
            view_time: (start + 5 * i) as f64,
        };
        producer.send(&PAGEVIEWS, &view).await?;
        producer.flush().await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("sent {count} synthetic page views");
    Ok(())
}
