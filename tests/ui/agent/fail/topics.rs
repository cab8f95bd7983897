use rill::prelude::*;

#[agent(topic = "a", topics(a = "a", b = "b"))]
async fn both(a: Stream<String>, b: Stream<String>) -> rill::Result<()> {
    drop((a, b));
    Ok(())
}

#[agent(topics(views = "views"))]
async fn stream_without_topic(views: Stream<String>, clicks: Stream<String>) -> rill::Result<()> {
    drop((views, clicks));
    Ok(())
}

#[agent(topics(views = "views", clicks = "clicks"))]
async fn topic_without_stream(views: Stream<String>) -> rill::Result<()> {
    drop(views);
    Ok(())
}

#[agent(topic = "views")]
async fn two_streams_one_topic(views: Stream<String>, clicks: Stream<String>) -> rill::Result<()> {
    drop((views, clicks));
    Ok(())
}

#[agent(topics(views = "views", views = "again"))]
async fn duplicate(views: Stream<String>) -> rill::Result<()> {
    drop(views);
    Ok(())
}

fn main() {}
