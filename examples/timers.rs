//! Timers and crontabs (Faust's `@app.timer` and `@app.crontab`): an agent counts views per
//! URL in a table; a timer on the leader publishes the totals every 5 s, read from the table
//! through a `TableReader`; a crontab prints a report at 20:00 in Paris.
//!
//! ```text
//! cargo run --example timers                                   # the embedded log
//! cargo run --example timers -- --broker kafka://127.0.0.1:9092   # run it twice: one leader
//! ```
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::time::Duration;

use rill::prelude::*;

#[record]
struct PageView {
    #[record(key)]
    url: String,
}

#[record]
struct Totals {
    views: u64,
    urls: u64,
    at_ms: i64,
}

#[agent(topic = "pageviews", tables(url_totals = "timer_url_totals"))]
async fn count_views(
    mut views: Stream<PageView>,
    url_totals: Table<String, u64>,
) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        url_totals.update(view.url, |n| n + 1)?;
    }
    Ok(())
}

/// Every 5 s, on one worker of the app: the totals so far, to the topic `totals`.
#[timer(every = "5s", on_leader = true, tables(totals = "timer_url_totals"))]
async fn publish_totals(totals: TableReader<String, u64>, cx: TimerContext) -> rill::Result<()> {
    let (mut views, mut urls) = (0, 0);
    for entry in totals.entries()? {
        let (_, n) = entry?;
        views += n;
        urls += 1;
    }
    println!("totals: {views} views of {urls} URLs");
    let totals = Totals {
        views,
        urls,
        at_ms: cx.scheduled_ms(),
    };
    cx.producer().send_to("totals", &totals).await
}

/// At 20:00 in Paris, every day, on one worker.
#[crontab("0 20 * * *", timezone = "Europe/Paris", on_leader = true)]
async fn nightly_report(cx: TimerContext) -> rill::Result<()> {
    println!("nightly report at {} ms", cx.scheduled_ms());
    Ok(())
}

fn main() -> rill::Result<()> {
    App::new("timers").task(synthetic_views).main()
}

async fn synthetic_views(producer: Producer) -> rill::Result<()> {
    if producer.is_kafka() {
        return Ok(());
    }
    println!("no broker configured: sending a page view every 200 ms (Ctrl-C to stop)");
    let urls = ["/", "/pricing", "/docs"];
    for i in 0.. {
        let view = PageView {
            url: urls[i % urls.len()].to_owned(),
        };
        producer.send_to("pageviews", &view).await?;
        producer.flush().await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
