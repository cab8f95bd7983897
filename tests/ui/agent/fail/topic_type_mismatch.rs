use rill::prelude::*;

#[record]
struct PageView {
    url: String,
}

#[record]
struct Click {
    url: String,
}

const CLICKS: Topic<String, Click> = Topic::new("clicks");

#[agent(topic = CLICKS)]
async fn a(s: Stream<PageView>) -> rill::Result<()> {
    drop(s);
    Ok(())
}

fn main() {}
