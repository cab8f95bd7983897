use rill::prelude::*;

#[agent(topic = "pageviews")]
fn a(s: Stream<String>) -> rill::Result<()> {
    drop(s);
    Ok(())
}

fn main() {}
