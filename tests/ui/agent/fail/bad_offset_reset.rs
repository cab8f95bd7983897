use rill::prelude::*;

#[record]
struct View {
    url: String,
}

#[agent(topic = "views", offset_reset = "newest")]
async fn unknown_reset(views: Stream<View>) -> rill::Result<()> {
    drop(views);
    Ok(())
}

fn main() {}
