//! `through` and `echo` (Faust's `stream.through` and `stream.echo`): page views keyed by user
//! go through the topic `pageviews-copy` (the agent continues from it, spread by its
//! partitions), and every view that is not a health check is copied to `audit`, in the same
//! commit step as the view's own work.
//!
//! ```text
//! cargo run --example through_echo
//! cargo run --example through_echo -- --broker kafka://127.0.0.1:9092
//! ```
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::time::Duration;

use rill::prelude::*;

#[record]
struct PageView {
    #[record(key)]
    user_id: String,
    url: String,
}

#[agent(topic = "pageviews", tables(per_user = "views_per_user"))]
async fn audited_views(views: Stream<PageView>, per_user: Table<String, u64>) -> rill::Result<()> {
    let mut views = views
        .through("pageviews-copy")
        .filter(|v| v.url != "/health")
        .echo(["audit"]);
    while let Some(view) = views.next().await {
        let n = per_user.update(view.user_id.clone(), |n| n + 1)?;
        println!(
            "{} viewed {} ({n} views so far; copied to `audit`)",
            view.user_id, view.url
        );
    }
    Ok(())
}

fn main() -> rill::Result<()> {
    App::new("through_echo").task(synthetic_views).main()
}

async fn synthetic_views(producer: Producer) -> rill::Result<()> {
    if producer.is_kafka() {
        return Ok(());
    }
    println!("no broker configured: sending a page view every 300 ms (Ctrl-C to stop)");
    let urls = ["/", "/health", "/docs"];
    for i in 0.. {
        let view = PageView {
            user_id: format!("user-{}", i % 4),
            url: urls[i % urls.len()].to_owned(),
        };
        producer.send_to("pageviews", &view).await?;
        producer.flush().await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}
