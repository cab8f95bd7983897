use rill::prelude::*;

#[agent]
async fn no_topic_no_stream(n: u32) -> rill::Result<()> {
    let _ = n;
    Ok(())
}

#[agent(topic = "a", sink = "b")]
async fn sink_without_param(s: Stream<String>) -> rill::Result<()> {
    drop(s);
    Ok(())
}

#[agent(topic = "a")]
async fn param_without_sink(s: Stream<String>, out: Sink<String>) -> rill::Result<()> {
    drop((s, out));
    Ok(())
}

fn main() {}
