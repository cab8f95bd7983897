use rill::prelude::*;

#[agent(topic = "a", topic = "b", concurrency = 0, sink = 3)]
async fn a(s: Stream<String>) -> rill::Result<()> {
    drop(s);
    Ok(())
}

fn main() {}
