//! The app's own web page beside rill's routes (`/metrics`, `/status`, `/tables`): `GET
//! /count/<page>` (a `#[page]`, Faust's `@app.page`) answers from the table an agent keeps,
//! through a `TableReader`, behind the same bearer token (`RILL_WEB_TOKEN`) as rill's routes.
//! `App::routes(|tables| axum::Router)` does the same for a whole router.
//!
//! ```text
//! cargo run --example user_page                  # then: curl localhost:6066/count/pricing
//! cargo run --example user_page -- --web-port 8080
//! ```
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::time::Duration;

use rill::axum::{Json, extract::Path, http::StatusCode};
use rill::prelude::*;

#[record]
struct PageView {
    #[record(key)]
    url: String,
}

#[agent(topic = "pageviews", tables(totals = "page_counts"))]
async fn count_views(mut views: Stream<PageView>, totals: Table<String, u64>) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        totals.update(view.url, |n| n + 1)?;
    }
    Ok(())
}

/// `GET /count/<page>`: the committed count of `/<page>` on this worker, or why not. The
/// `TableReader` is opened when the worker starts; `Path` is an ordinary axum extractor.
#[page("/count/{page}", tables(counts = "page_counts"))]
async fn count(
    Path(page): Path<String>,
    counts: TableReader<String, u64>,
) -> Result<Json<u64>, (StatusCode, String)> {
    match counts.get(&format!("/{page}")) {
        Ok(n) => Ok(Json(n.unwrap_or(0))),
        // A page counted on another worker: its partition lives there.
        Err(e) => Err((StatusCode::MISDIRECTED_REQUEST, e.to_string())),
    }
}

fn main() -> rill::Result<()> {
    App::new("user_page").task(synthetic_views).main()
}

async fn synthetic_views(producer: Producer) -> rill::Result<()> {
    if producer.is_kafka() {
        return Ok(());
    }
    println!("no broker configured: counting synthetic views; try GET /count/pricing");
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
