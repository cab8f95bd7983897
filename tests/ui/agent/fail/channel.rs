use rill::prelude::*;

#[agent(topic = "pageviews", channel = "alerts")]
async fn both(mut s: Stream<String>) -> rill::Result<()> {
    while s.next().await.is_some() {}
    Ok(())
}

#[agent(channel = "")]
async fn unnamed(mut s: Stream<String>) -> rill::Result<()> {
    while s.next().await.is_some() {}
    Ok(())
}

fn main() {}
