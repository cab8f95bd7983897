//! Technique 4 of the seed: windows by event time, with records arriving out of order or late.
//!
//! ```text
//! cargo run --example event_time                                  # embedded log, synthetic views
//! cargo run --example event_time -- --broker kafka://127.0.0.1:9092
//! ```
//!
//! Views are counted per URL and minute of *event time* (when the view happened, the
//! `#[record(timestamp)]` field), not of arrival. How long to wait for stragglers:
//!
//! - The **watermark** is the largest event time seen so far (per partition; an agent
//!   instance takes the smallest over the partitions it reads, ignoring partitions idle for the
//!   idle timeout). It says "views older than this should have arrived by now".
//! - A window `[start, end)` stays open until the watermark reaches `end + grace`. A view that
//!   arrives out of order but before that is counted in its window.
//! - A view whose window has already closed is *late*: it is never merged into a closed
//!   result; here it goes, unchanged, to the topic `late_pageviews`, where a second agent
//!   reports it (without `late_events_to` it is only counted in the agent's stats).
//!
//! With no broker the app generates `SYNTHETIC_VIEWS` views (default 60, 0 for none), 5 s of
//! event time apart on `/` and `/docs` in turn. Every 6th view (on `/`) happened 20 s before
//! it arrives, often in the previous minute, after the watermark passed that minute's end: the
//! 30 s grace still counts it there. Every 20th (on `/docs`) happened 150 s before: it is late.
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::time::Duration;

use rill::prelude::*;

#[record]
struct PageView {
    user_id: String,
    /// Keyed by URL, so each URL's views keep the order they were sent in.
    #[record(key)]
    url: String,
    /// When the view happened, seconds since the epoch: windows, watermarks and lateness are
    /// all about this time, whenever the record arrives.
    #[record(timestamp)]
    view_time: f64,
}

const PAGEVIEWS: Topic<String, PageView> = Topic::new("pageviews");

#[agent(topic = PAGEVIEWS)]
async fn count_by_event_time(views: Stream<PageView>) -> rill::Result<()> {
    let mut windows = views
        .group_by(PageView::url)
        .tumbling(Duration::from_secs(60))
        // Keep each window open 30 s of event time past its end for out-of-order views.
        .grace(Duration::from_secs(30))
        // Views arriving after that go to this topic instead of being dropped silently.
        .late_events_to("late_pageviews")
        // One result per window, when it closes (the default; `Emit::Update` would yield the
        // window's new value after every view).
        .emit(Emit::Final)
        // A partition without views for 1 s stops holding the watermark back (default 10 s,
        // `RILL_IDLE_TIMEOUT_MS`). Short here because views land in at most 2 of the 8 partitions:
        // the others would hold every window open, and nothing would be late, for 10 s.
        .idle_timeout(Duration::from_secs(1))
        .count();
    while let Some(window) = windows.next().await {
        println!(
            "window [{}, {}) final: {} had {} views",
            clock(window.start),
            clock(window.end),
            window.key,
            window.value
        );
    }
    Ok(())
}

#[agent(topic = "late_pageviews")]
async fn report_late(mut late: Stream<PageView>) -> rill::Result<()> {
    while let Some(view) = late.next().await {
        println!(
            "late view of {} at {}: its window had closed",
            view.url,
            clock((view.view_time * 1000.0) as i64)
        );
    }
    Ok(())
}

fn main() -> rill::Result<()> {
    App::new("event_time").task(synthetic_views).main()
}

/// `HH:MM:SS` (UTC) of a time in ms since the epoch.
fn clock(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Sends views in arrival order, with some event times deliberately behind.
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
    let start = now.saturating_sub(5 * count) / 60 * 60;
    for i in 0..count {
        let arrives = start + 5 * i;
        let happened = if i % 20 == 19 {
            arrives - 150 // late: its window closed long ago
        } else if i % 6 == 2 {
            arrives - 20 // out of order, within the grace period
        } else {
            arrives
        };
        let view = PageView {
            user_id: format!("user-{}", i % 5),
            url: ["/", "/docs"][(i % 2) as usize].to_owned(),
            view_time: happened as f64,
        };
        producer.send(&PAGEVIEWS, &view).await?;
        producer.flush().await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("sent {count} synthetic page views");
    Ok(())
}
