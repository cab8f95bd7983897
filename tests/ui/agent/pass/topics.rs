use std::time::Duration;

use rill::prelude::*;

#[record]
#[derive(Clone)]
struct View {
    url: String,
}

#[record]
#[derive(Clone)]
struct Click {
    url: String,
}

const CLICKS: Topic<String, Click> = Topic::new("clicks");

// One typed stream per topic, by name or by `Topic` constant, in any parameter order.
#[agent(topics(views = "views", clicks = CLICKS), sink = "pairs")]
async fn join_view_to_click(
    out: Sink<String>,
    clicks: Stream<Click>,
    views: Stream<View>,
) -> rill::Result<()> {
    let window = JoinWindow::within(Duration::from_secs(5));
    let mut joined = views.join(clicks, |v| v.url.clone(), |c| c.url.clone(), window);
    while let Some((view, _click)) = joined.next().await {
        out.send(&view.url).await?;
    }
    Ok(())
}

fn main() {
    let spec = join_view_to_click::agent();
    let topics: Vec<&str> = spec.sources().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(topics, ["views", "clicks"]);
}
