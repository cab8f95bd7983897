use rill::prelude::*;

#[record]
pub struct PageView {
    pub user_id: String,
    pub url: String,
    #[record(timestamp)]
    pub view_time: f64,
}

#[record]
pub struct Hit {
    #[record(key)]
    pub url: String,
}

const PAGEVIEWS: Topic<String, PageView> = Topic::new("pageviews");
const HITS: Topic<String, Hit> = Topic::new("hits");

#[agent(topic = "pageviews")]
async fn log_views(mut views: Stream<PageView>) -> rill::Result<()> {
    while let Some(_view) = views.next().await {}
    Ok(())
}

#[agent(topic = PAGEVIEWS, sink = HITS, concurrency = 4, group = "hits-v2")]
pub async fn to_hits(mut views: Stream<PageView>, hits: Sink<Hit>) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        hits.send(&Hit { url: view.url }).await?;
    }
    Ok(())
}

#[agent(topic = "hits")]
async fn unit_return(views: rill::Stream<Hit>) {
    drop(views);
}

fn main() {
    let spec = to_hits::agent();
    assert_eq!(spec.name(), "to_hits");
    assert_eq!(spec.instances(), 4);
    assert_eq!(spec.group_id("app"), "hits-v2");
    assert_eq!(spec.sink_topic().unwrap().name, "hits");
    assert_eq!(log_views::agent().group_id("app"), "app-log_views");
    let names: Vec<String> = rill::registered_agents().iter().map(|a| a.name().to_owned()).collect();
    assert_eq!(names, ["log_views", "to_hits", "unit_return"]);
    let _still_callable = log_views;
    let _ = unit_return::agent();
}
