use rill::prelude::*;

#[record]
struct View {
    url: String,
}

#[agent(topic = "views", on_error = "ignore")]
async fn unknown_policy(views: Stream<View>) -> rill::Result<()> {
    drop(views);
    Ok(())
}

#[agent(topic = "views", on_error = "skip", retries = 3)]
async fn retries_without_retrying(views: Stream<View>) -> rill::Result<()> {
    drop(views);
    Ok(())
}

fn main() {}
