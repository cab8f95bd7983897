//! Technique 8 of the seed: monitoring an agent, with no metrics code in it.
//!
//! ```text
//! cargo run --example monitored                                   # embedded log, synthetic views
//! curl -s http://127.0.0.1:6066/metrics | grep monitored_agent    # in another terminal
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 cargo run --example monitored   # + traces
//! cargo run --example monitored -- --broker kafka://127.0.0.1:9092
//! ```
//!
//! The seed's Faust agent starts an HTTP server, declares a counter and a histogram, and times
//! every view by hand. Here `monitored_agent` only does its work (about 10 ms per view): the
//! worker already measures every agent, and its web server (port 6066 for the `worker`
//! command; `--web-port`, or `RILL_WEB_PORT=0` for a free port, which is logged) serves:
//!
//! - `/metrics`, in the Prometheus text format: `rill_records_in_total{agent, topic}` (the
//!   seed's `app_messages_consumed_total`), the `rill_processing_seconds{agent}` histogram
//!   (its `app_process_latency_seconds`: from handing a record to the agent until it asks for
//!   the next), and consumer lag, commits, dead letters, ... (see `rill::metrics`);
//! - `/`, a status page with the same figures per agent, and `/status`, `/topology`, `/ready`.
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set (an OpenTelemetry collector, Jaeger, Tempo, ...) the
//! worker also exports a span per processed view, over OTLP (see `rill::telemetry`).
//!
//! What rill cannot know, the app counts itself: `pageviews_by_url_total{url}` is an ordinary
//! `prometheus-client` counter registered through `App::metrics`, served with rill's own.
//! `RILL_METRICS=off` turns off rill's per-record metrics (per-topic counters and the
//! processing histogram) where every nanosecond counts.
//!
//! With no broker configured the app sends itself 50 synthetic views a second until stopped
//! (set `SYNTHETIC_VIEWS=0` to turn that off, or to a number to send only that many). Stop
//! with Ctrl-C: the worker finishes the current view, commits and exits.
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::sync::LazyLock;
use std::time::Duration;

use rill::metrics::prometheus_client::metrics::{counter::Counter, family::Family};
use rill::prelude::*;

#[record]
struct PageView {
    user_id: String,
    url: String,
    #[record(timestamp)]
    view_time: f64,
}

const PAGEVIEWS: Topic<String, PageView> = Topic::new("pageviews");

/// Views per URL: the app's own metric (rill counts records, not what is in them). A label
/// per URL suits a site with a bounded set of pages; never label by an unbounded value such
/// as a user id (every value is a new time series in Prometheus).
static VIEWS_BY_URL: LazyLock<Family<[(&'static str, String); 1], Counter>> =
    LazyLock::new(Family::default);

#[agent(topic = PAGEVIEWS)]
async fn monitored_agent(mut views: Stream<PageView>) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        // Your actual processing work here (simulated). rill times it: the histogram's clock
        // runs from `next()` handing the view over until the loop asks for the next one.
        tokio::time::sleep(Duration::from_millis(10)).await;
        VIEWS_BY_URL.get_or_create(&[("url", view.url)]).inc();
    }
    Ok(())
}

fn main() -> rill::Result<()> {
    App::new("monitored")
        .metrics(|registry| {
            registry.register(
                "pageviews_by_url",
                "Page views per URL",
                VIEWS_BY_URL.clone(),
            );
        })
        .task(synthetic_views)
        .main()
}

/// Sends 50 views a second when running on the embedded log, so the counters move.
async fn synthetic_views(producer: Producer) -> rill::Result<()> {
    let count: Option<u64> = std::env::var("SYNTHETIC_VIEWS")
        .ok()
        .and_then(|v| v.parse().ok());
    if producer.is_kafka() || count == Some(0) {
        return Ok(());
    }
    println!(
        "no broker configured: sending 50 synthetic page views a second to `pageviews`; \
         see /metrics and the status page of the web server logged above (Ctrl-C to stop)"
    );
    let urls = ["/", "/pricing", "/docs", "/blog/rill"];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut i: u64 = 0;
    while count.is_none_or(|n| i < n) {
        tick.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let view = PageView {
            user_id: format!("user-{}", i % 7),
            url: urls[(i % 4) as usize].to_owned(),
            view_time: now.as_secs_f64(),
        };
        producer.send(&PAGEVIEWS, &view).await?;
        producer.flush().await?;
        i += 1;
    }
    Ok(())
}
