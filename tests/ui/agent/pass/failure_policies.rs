use rill::prelude::*;

#[record]
struct View {
    url: String,
}

#[agent(topic = "views", on_error = "dead_letter", dead_letter = "processing_failures")]
async fn to_named_dlq(mut views: Stream<View>) -> rill::Result<()> {
    while let Some(v) = views.next().await {
        let _ = v.url;
    }
    Ok(())
}

#[agent(topic = "views", on_error = "retry", retries = 5, retry_backoff_ms = 250)]
async fn retry_in_place(views: Stream<View>) -> rill::Result<()> {
    drop(views);
    Ok(())
}

#[agent(topic = "views", on_error = "retry_topics", retries = 2)]
async fn through_retry_topics(views: Stream<View>) -> rill::Result<()> {
    drop(views);
    Ok(())
}

#[agent(topic = "views", on_error = "skip")]
async fn skip_failures(views: Stream<View>) -> rill::Result<()> {
    drop(views);
    Ok(())
}

#[agent(topic = "views", on_error = "stop")]
async fn stop_on_failure(views: Stream<View>) -> rill::Result<()> {
    drop(views);
    Ok(())
}

fn main() {
    assert_eq!(to_named_dlq::agent().name(), "to_named_dlq");
    let _ = (
        retry_in_place::agent(),
        through_retry_topics::agent(),
        skip_failures::agent(),
        stop_on_failure::agent(),
    );
}
