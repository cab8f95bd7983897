//! A windowed join against a real Apache Kafka broker (the one of `scripts/test.sh`): views
//! keyed by user and clicks keyed by click id, so both sides go through the join's
//! repartition topic to meet by URL, across four partitions and a clean restart between the
//! views and their clicks. Input is produced and output read with plain rdkafka clients.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use rill::prelude::*;
use rill::{AgentSpec, TopicSpec};

const SEC: i64 = 1_000;
const PARTITIONS: i32 = 4;
const VIEWS: i64 = 40;

#[record]
#[derive(Debug, Clone)]
struct View {
    id: String,
    user: String,
    url: String,
    #[record(timestamp)]
    at: i64,
}

#[record]
#[derive(Debug, Clone)]
struct Click {
    id: String,
    url: String,
    #[record(timestamp)]
    at: i64,
}

#[record]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Pair {
    view: String,
    click: String,
}

/// An hour ago, ms (recent enough for the broker's time-based retention).
fn base() -> i64 {
    common::records::now_ms() - 3_600 * SEC
}

fn joiner(views: &str, clicks: &str, pairs: &str) -> AgentSpec {
    let (v, c) = (views.to_owned(), clicks.to_owned());
    AgentSpec::new("joiner", "tests/kafka_joins.rs")
        .source(TopicSpec::of::<View>(views, "tests/kafka_joins.rs"))
        .source(TopicSpec::of::<Click>(clicks, "tests/kafka_joins.rs"))
        .co_partitioned()
        .sink(TopicSpec::of::<Pair>(pairs, "tests/kafka_joins.rs"))
        .run(move |mut ctx| {
            let (v, c) = (v.clone(), c.clone());
            async move {
                let views = ctx.stream_of::<View>(&v)?;
                let clicks = ctx.stream_of::<Click>(&c)?;
                let out = ctx.sink::<Pair>()?;
                // Clicks come long after the views in this test: a grace of an hour keeps the
                // views buffered and the clicks on time.
                let window =
                    JoinWindow::within(Duration::from_secs(5)).grace(Duration::from_secs(3_600));
                let mut joined = views.join(clicks, |v| v.url.clone(), |c| c.url.clone(), window);
                while let Some((view, click)) = joined.next().await {
                    out.send(&Pair {
                        view: view.id,
                        click: click.id,
                    })
                    .await?;
                }
                Ok(())
            }
        })
}

fn app(app_id: &str, agent: AgentSpec, bootstrap: &str, data: &std::path::Path) -> App {
    common::kafka_app(app_id, bootstrap, data)
        .agents([agent])
        .partitions(PARTITIONS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_and_clicks_keyed_otherwise_meet_through_the_repartition_topic_across_a_restart()
-> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let run = common::run_id();
    let app_id = format!("kj_{run}");
    let (views, clicks, pairs) = (
        format!("kj_views_{run}"),
        format!("kj_clicks_{run}"),
        format!("kj_pairs_{run}"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let base = base();
    // View i on its own URL at base + 10 s·i, keyed by user. Clicks keyed by their own id:
    // views with an even i get one 3 s later (a pair), every fourth view from 1 one 7 s later
    // (outside the 5 s bound).
    let view_records: Vec<(Option<String>, String)> = (0..VIEWS)
        .map(|i| {
            let user = format!("user-{}", i % 3);
            let v = serde_json::json!({"id": format!("v{i}"), "user": user, "url": format!("/u{i}"), "at": base + i * 10 * SEC});
            (Some(user), v.to_string())
        })
        .collect();
    let click_records: Vec<(Option<String>, String)> = (0..VIEWS)
        .filter_map(|i| {
            let delay = match i % 4 {
                0 | 2 => 3,
                1 => 7,
                _ => return None,
            };
            let id = format!("c{i}");
            let c = serde_json::json!({"id": id, "url": format!("/u{i}"), "at": base + (i * 10 + delay) * SEC});
            Some((Some(id), c.to_string()))
        })
        .collect();
    let expected: BTreeSet<Pair> = (0..VIEWS)
        .filter(|i| i % 2 == 0)
        .map(|i| Pair {
            view: format!("v{i}"),
            click: format!("c{i}"),
        })
        .collect();

    let worker = app(
        &app_id,
        joiner(&views, &clicks, &pairs),
        &bootstrap,
        dir.path(),
    )
    .start()
    .await?;
    let producer = common::producer(&bootstrap);
    tokio::task::block_in_place(|| common::produce(&producer, &views, &view_records));
    common::wait_for_async("views processed", Duration::from_secs(60), || {
        common::stat(&worker, "joiner", |s| &s.records_in) >= VIEWS as u64
    })
    .await;
    // Views buffered and committed; the clicks come to the next worker.
    worker.shutdown().await?;

    let worker = app(
        &app_id,
        joiner(&views, &clicks, &pairs),
        &bootstrap,
        dir.path(),
    )
    .start()
    .await?;
    tokio::task::block_in_place(|| common::produce(&producer, &clicks, &click_records));
    let got = tokio::task::block_in_place(|| {
        let first = common::consume(&bootstrap, &pairs, expected.len(), Duration::from_secs(90));
        assert!(
            first.len() >= expected.len(),
            "{} of {} pairs",
            first.len(),
            expected.len()
        );
        // Read again after a while: anything emitted twice would show.
        std::thread::sleep(Duration::from_secs(3));
        common::consume_until(&bootstrap, &pairs, Duration::from_secs(10), |got| {
            got.len() > expected.len()
        })
    });
    let pairs_got: Vec<Pair> = got
        .iter()
        .map(|(_, _, v)| serde_json::from_str(v).expect("a pair"))
        .collect();
    assert_eq!(
        pairs_got.len(),
        expected.len(),
        "each pair once: {pairs_got:?}"
    );
    assert_eq!(pairs_got.into_iter().collect::<BTreeSet<_>>(), expected);

    // Both sides went through one repartition topic with the sources' partition count.
    let repartition = format!("{app_id}-joiner-join-repartition");
    let records = tokio::task::block_in_place(|| {
        common::consume_until(&bootstrap, &repartition, Duration::from_secs(10), |got| {
            got.iter().filter(|(_, _, v)| !v.is_empty()).count()
                >= view_records.len() + click_records.len()
        })
    });
    let valued: Vec<&common::Consumed> = records.iter().filter(|(_, _, v)| !v.is_empty()).collect();
    assert_eq!(valued.len(), view_records.len() + click_records.len());
    for (partition, key, _) in &valued {
        let url = key.as_deref().expect("keyed by URL");
        assert!(url.starts_with("/u"), "{url}");
        assert_eq!(
            *partition,
            rill::partitioner::partition_for_key(url.as_bytes(), PARTITIONS),
            "{url} in its partition"
        );
    }
    worker.shutdown().await?;

    // Buffered records that expired wrote no tombstones: the join's changelog is
    // time-retained, and its stored watermark tells recovery what has expired.
    let changelog = format!("{app_id}-joiner-join-changelog");
    let log = tokio::task::block_in_place(|| {
        let configs = common::topic_configs(&bootstrap, &changelog);
        assert_eq!(configs["cleanup.policy"], "compact,delete", "{configs:?}");
        let end = common::end_offsets(&bootstrap, &changelog, PARTITIONS);
        common::read_topic(
            &bootstrap,
            &changelog,
            Duration::from_secs(90),
            Duration::from_secs(1),
            |r| r.len() as i64 >= end,
        )
    });
    let buffered = log
        .iter()
        .filter(|r| r.key.as_deref() != Some(b"C"))
        .count();
    assert!(
        buffered >= VIEWS as usize,
        "the views were buffered: {buffered}"
    );
    assert!(
        log.iter().all(|r| r.value.is_some()),
        "no tombstone in `{changelog}`"
    );
    Ok(())
}
