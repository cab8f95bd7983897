use rill::prelude::*;

#[agent(topc = "pageviews", concurrency = 2)]
async fn a(mut s: Stream<String>) -> rill::Result<()> {
    while s.next().await.is_some() {}
    Ok(())
}

fn main() {}
