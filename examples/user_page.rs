//! The app's own web routes beside rill's (`/metrics`, `/status`, `/tables`): `GET
//! /count/<page>` answers from the table an agent keeps, through a `TableReader`, behind the
//! same bearer token (`RILL_WEB_TOKEN`) as rill's routes.
//!
//! ```text
//! cargo run --example user_page                  # then: curl localhost:6066/count/pricing
//! cargo run --example user_page -- --web-port 8080
//! ```
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::time::Duration;

use rill::axum::{Json, Router, extract::Path, http::StatusCode, routing::get};
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

/// `GET /count/<page>`: the committed count of `/<page>` on this worker, or why not.
fn routes(tables: rill::Tables) -> Router {
    let counts = tables
        .reader::<String, u64>("page_counts")
        .expect("count_views declares page_counts");
    Router::new().route(
        "/count/{page}",
        get(move |Path(page): Path<String>| async move {
            match counts.get(&format!("/{page}")) {
                Ok(n) => Ok(Json(n.unwrap_or(0))),
                // A page counted on another worker: its partition lives there.
                Err(e) => Err((StatusCode::MISDIRECTED_REQUEST, e.to_string())),
            }
        }),
    )
}

fn main() -> rill::Result<()> {
    App::new("user_page")
        .routes(routes)
        .task(synthetic_views)
        .main()
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
