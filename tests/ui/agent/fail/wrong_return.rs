use rill::prelude::*;

#[agent(topic = "a")]
async fn a(s: Stream<String>) -> u32 {
    drop(s);
    1
}

fn main() {}
