//! Avro page views governed by a schema registry: an agent reads `PageView` records in the
//! Confluent wire format (what Kafka Streams, Quix Streams and Confluent's serializers read and
//! write), keeps a total per URL, and writes `UrlTotal` records, Avro too.
//!
//! ```text
//! bash registry/registry.sh start        # Apicurio Registry from Maven Central, on :18081
//! cargo run --example avro_pageviews     # or RILL_SCHEMA_REGISTRY_URL=<another registry>
//! cargo run --example avro_pageviews -- schema              # the derived schemas and subjects
//! cargo run --example avro_pageviews -- --broker kafka://127.0.0.1:9092
//! ```
//!
//! The schemas are derived from the structs at compile time; at start the worker registers
//! them under `pageviews_avro-value` and `url_totals-value` (the topic naming strategy;
//! RILL_SCHEMA_SUBJECT_STRATEGY changes it, RILL_SCHEMA_AUTO_REGISTER=off only looks them up).
//! A record that is not Avro-framed, or carries a schema id the registry does not know, goes
//! to the dead-letter topic `avro_pageviews-count_views-dlq` with the reason.
//! `SYNTHETIC_VIEWS=<n>` sets how many views the app generates with no broker (default 20).
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::time::Duration;

use rill::prelude::*;

#[record(codec = "avro")]
struct PageView {
    user_id: String,
    #[record(key)]
    url: String,
    #[record(timestamp)]
    view_time: f64,
    /// Added in a later version: `Option` fields default to null, so records written before it
    /// still read (Avro schema resolution).
    referrer: Option<String>,
}

#[record(codec = "avro")]
struct UrlTotal {
    #[record(key)]
    url: String,
    total: i64,
}

const PAGEVIEWS: Topic<String, PageView> = Topic::new("pageviews_avro");

#[agent(topic = PAGEVIEWS, sink = "url_totals", tables(totals = "url_totals_table"))]
async fn count_views(
    mut views: Stream<PageView>,
    totals: Table<String, i64>,
    out: Sink<UrlTotal>,
) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        let total = totals.update(view.url.clone(), |n| n + 1)?;
        println!(
            "{} viewed {} (from {}): total {total}",
            view.user_id,
            view.url,
            view.referrer.as_deref().unwrap_or("-")
        );
        out.send(&UrlTotal {
            url: view.url.clone(),
            total,
        })
        .await?;
    }
    Ok(())
}

fn main() -> rill::Result<()> {
    // The registry of `registry/registry.sh`; RILL_SCHEMA_REGISTRY_URL overrides it.
    App::new("avro_pageviews")
        .schema_registry("http://127.0.0.1:18081/apis/ccompat/v7")
        .task(synthetic_views)
        .main()
}

async fn synthetic_views(producer: Producer) -> rill::Result<()> {
    let count: usize = std::env::var("SYNTHETIC_VIEWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    if producer.is_kafka() || count == 0 {
        return Ok(());
    }
    println!("no broker configured: sending {count} synthetic Avro page views (Ctrl-C to stop)");
    let urls = ["/", "/pricing", "/docs"];
    for i in 0..count {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let view = PageView {
            user_id: format!("user-{i}"),
            url: urls[i % urls.len()].to_owned(),
            view_time: now.as_secs_f64(),
            referrer: (i % 2 == 0).then(|| "search".to_owned()),
        };
        producer.send(&PAGEVIEWS, &view).await?;
        producer.flush().await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
