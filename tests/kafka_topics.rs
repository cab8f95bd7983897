//! The topics rill owns, on a real Apache Kafka broker as users run it (`scripts/test.sh` runs
//! this file against its strict broker and again against one configured as Apache Kafka
//! ships: `auto.create.topics.enable=true`, `num.partitions=3`):
//!
//! - internal topics are created by rill with the partitions and settings it needs, never by
//!   the broker; one that exists with other partitions is refused with both counts and the fix;
//! - a source partition that is empty and was never committed to does not hold windows back;
//! - a backlog whose event times are a year old goes through `group_by` and a window without
//!   losing a record to time retention, and the repartition topic is purged as it is consumed.
//!
//! Workers run in-process; input is produced and topics inspected with plain rdkafka clients.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::records::{Count, now_ms};
use rdkafka::producer::{BaseRecord, Producer as _};
use rill::prelude::*;
use rill::{AgentSpec, TopicSpec};

const SEC: i64 = 1_000;
const MINUTE: i64 = 60 * SEC;

#[record]
#[derive(Debug, Clone)]
struct View {
    url: String,
    /// Event time, ms since the epoch.
    #[record(timestamp)]
    at: i64,
}

/// `views.group_by(url).tumbling(60 s).count()`, each result sent to `sink`.
fn per_minute(source: &str, sink: &str, idle: Duration) -> AgentSpec {
    AgentSpec::new("count", "tests/kafka_topics.rs")
        .source(TopicSpec::of::<View>(source, "tests/kafka_topics.rs"))
        .sink(TopicSpec::of::<Count>(sink, "tests/kafka_topics.rs"))
        .run(move |mut ctx| async move {
            let views = ctx.stream::<View>()?;
            let out = ctx.sink::<Count>()?;
            let mut windows = views
                .group_by(View::url)
                .tumbling(Duration::from_secs(60))
                .idle_timeout(idle)
                .name("per-minute")
                .count();
            while let Some(w) = windows.next().await {
                out.send(&Count::from(w)).await?;
            }
            Ok(())
        })
}

/// Produces views to `partition` with their event time as message timestamp.
fn produce(bootstrap: &str, topic: &str, partition: i32, views: &[(String, i64)]) {
    tokio::task::block_in_place(|| {
        let producer = common::producer(bootstrap);
        for (url, at) in views {
            let value = serde_json::json!({"url": url, "at": at}).to_string();
            let record: BaseRecord<'_, str, str> = BaseRecord::to(topic)
                .partition(partition)
                .key(url.as_str())
                .payload(value.as_str())
                .timestamp(*at);
            common::enqueue(&producer, record);
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    });
}

/// Window counts read from `sink` until `done` holds (90 s at most).
fn read_counts(bootstrap: &str, sink: &str, done: impl Fn(&[Count]) -> bool) -> Vec<Count> {
    let read = tokio::task::block_in_place(|| {
        common::consume_until(bootstrap, sink, Duration::from_secs(90), |got| {
            done(&counts_of(got))
        })
    });
    counts_of(&read)
}

fn counts_of(read: &[common::Consumed]) -> Vec<Count> {
    read.iter()
        .map(|(_, _, v)| serde_json::from_str(v).expect("a count"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_topics_are_created_by_rill_with_what_it_needs() -> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let run = common::run_id();
    let (app_id, views, counts) = (
        format!("kt_create_{run}"),
        format!("kt_create_views_{run}"),
        format!("kt_create_counts_{run}"),
    );
    // The user's topic, with a partition count neither rill's default (8) nor the broker's.
    tokio::task::block_in_place(|| common::create_topic(&bootstrap, &views, 2, &[]));
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = per_minute(&views, &counts, Duration::from_secs(600));
    let worker = common::kafka_app(&app_id, &bootstrap, dir.path())
        .agents([agent])
        .start()
        .await?;
    let base = (now_ms() / MINUTE - 60) * MINUTE;
    // Both partitions move past the first minute, which closes.
    produce(
        &bootstrap,
        &views,
        0,
        &[("/a".into(), base), ("/a".into(), base + 2 * MINUTE)],
    );
    produce(&bootstrap, &views, 1, &[("/b".into(), base + 2 * MINUTE)]);
    let got = read_counts(&bootstrap, &counts, |c| !c.is_empty());
    assert_eq!(got.first().map(|c| c.value), Some(1), "{got:?}");

    let repartition = format!("{app_id}-count-url-repartition");
    let changelog = format!("{app_id}-count-per-minute-changelog");
    let dead_letters = format!("{app_id}-count-dlq");
    tokio::task::block_in_place(|| {
        for topic in [&repartition, &changelog] {
            assert_eq!(
                common::partition_count(&bootstrap, topic),
                Some(2),
                "`{topic}` has the source's partitions"
            );
        }
        assert!(common::partition_count(&bootstrap, &dead_letters).is_some());
        let configs = common::topic_configs(&bootstrap, &repartition);
        assert_eq!(configs["retention.ms"], "-1", "{configs:?}");
        assert_eq!(configs["cleanup.policy"], "delete", "{configs:?}");
        // A tumbling window's changelog: closed windows age out instead of leaving tombstones.
        let configs = common::topic_configs(&bootstrap, &changelog);
        assert_eq!(configs["cleanup.policy"], "compact,delete", "{configs:?}");
        assert_eq!(configs["retention.ms"], "86400000", "{configs:?}");
    });
    worker.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repartition_topic_with_other_partitions_is_refused_with_both_counts_and_the_fix()
-> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let run = common::run_id();
    let (app_id, views, counts) = (
        format!("kt_refuse_{run}"),
        format!("kt_refuse_views_{run}"),
        format!("kt_refuse_counts_{run}"),
    );
    let repartition = format!("{app_id}-count-url-repartition");
    tokio::task::block_in_place(|| {
        common::create_topic(&bootstrap, &views, 1, &[]);
        // As a broker with `num.partitions=4` creates it when a client asks for it first.
        common::create_topic(&bootstrap, &repartition, 4, &[]);
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = per_minute(&views, &counts, Duration::from_secs(600));
    let mut worker = common::kafka_app(&app_id, &bootstrap, dir.path())
        .agents([agent])
        .start()
        .await?;
    let err = format!(
        "{}",
        common::stop_error(&mut worker, Duration::from_secs(60)).await
    );
    for part in [
        format!("`{repartition}`"),
        "4 partitions".to_owned(),
        "needs 1".to_owned(),
        format!("--delete --topic {repartition}"),
    ] {
        assert!(err.contains(&part), "`{part}` missing from: {err}");
    }
    // Nothing went into the wrong topic.
    let ends: i64 = tokio::task::block_in_place(|| {
        (0..4)
            .map(|p| common::watermarks(&bootstrap, &repartition, p).1)
            .sum()
    });
    assert_eq!(ends, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_partition_never_committed_to_does_not_hold_windows_back() -> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let run = common::run_id();
    let (app_id, views, counts) = (
        format!("kt_empty_{run}"),
        format!("kt_empty_views_{run}"),
        format!("kt_empty_counts_{run}"),
    );
    tokio::task::block_in_place(|| common::create_topic(&bootstrap, &views, 2, &[]));
    let dir = tempfile::tempdir().expect("tempdir");
    // Partition 1 never gets a record: after 2 s it stops holding the watermark back.
    let agent = per_minute(&views, &counts, Duration::from_secs(2));
    let worker = common::kafka_app(&app_id, &bootstrap, dir.path())
        .agents([agent])
        .start()
        .await?;
    let base = (now_ms() / MINUTE - 60) * MINUTE;
    let views_sent: Vec<(String, i64)> = (0..3)
        .flat_map(|m| {
            [
                ("/a".to_owned(), base + m * MINUTE),
                ("/a".to_owned(), base + m * MINUTE + 30 * SEC),
            ]
        })
        .collect();
    produce(&bootstrap, &views, 0, &views_sent);
    // The first two minutes close (the third stays open: nothing is past it yet).
    let mut got = read_counts(&bootstrap, &counts, |c| c.len() >= 2);
    got.sort();
    let expected: Vec<Count> = (0..2)
        .map(|m| Count {
            key: "/a".into(),
            start: base + m * MINUTE,
            end: base + (m + 1) * MINUTE,
            value: 2,
        })
        .collect();
    assert_eq!(got, expected);
    worker.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_old_backlog_loses_nothing_to_retention_and_its_repartition_topic_is_purged()
-> rill::Result<()> {
    if common::kafka_bootstrap().is_none() {
        return Ok(());
    }
    // The broker checks time retention (7 days) every second, not every 5 minutes.
    let broker = tokio::task::block_in_place(|| {
        common::OwnBroker::start_with(19592, "log.retention.check.interval.ms=1000")
    });
    let bootstrap = broker.bootstrap.clone();
    let run = common::run_id();
    let (app_id, views, counts) = (
        format!("kt_backlog_{run}"),
        format!("kt_backlog_views_{run}"),
        format!("kt_backlog_counts_{run}"),
    );
    // The user keeps the backfill's source topic (its own retention is theirs to set).
    tokio::task::block_in_place(|| {
        common::create_topic(&bootstrap, &views, 1, &[("retention.ms", "-1")])
    });
    const N: i64 = 20_000;
    let year_ago = (now_ms() / MINUTE - 365 * 24 * 60) * MINUTE;
    // 20,000 views of 10 URLs, 15 ms apart: five minutes of event time; then one view ten
    // minutes later, which closes every window of the backlog.
    let mut backlog: Vec<(String, i64)> = (0..N)
        .map(|i| (format!("/p{}", i % 10), year_ago + i * 15))
        .collect();
    backlog.push(("/flush".to_owned(), year_ago + 15 * MINUTE));
    produce(&bootstrap, &views, 0, &backlog);

    let dir = tempfile::tempdir().expect("tempdir");
    let agent = per_minute(&views, &counts, Duration::from_secs(600));
    let worker = common::kafka_app(&app_id, &bootstrap, dir.path())
        .agents([agent])
        .configure(|c| c.repartition_purge_interval = Duration::from_millis(200))
        .start()
        .await?;
    let total = |c: &[Count]| c.iter().map(|c| c.value as i64).sum::<i64>();
    let got = read_counts(&bootstrap, &counts, |c| total(c) >= N);
    let mut per_url: BTreeMap<String, i64> = BTreeMap::new();
    for c in &got {
        *per_url.entry(c.key.clone()).or_default() += c.value as i64;
    }
    assert_eq!(total(&got), N, "every view counted once: {per_url:?}");
    assert_eq!(per_url.len(), 10, "{per_url:?}");

    // What the group committed is deleted: the repartition topic's start moves up.
    let repartition = format!("{app_id}-count-url-repartition");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (start, end) =
            tokio::task::block_in_place(|| common::watermarks(&bootstrap, &repartition, 0));
        if start >= N {
            assert!(end > N, "records and the pump's markers: {end}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the repartition topic was not purged: it starts at {start}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.shutdown().await?;
    drop(broker);
    Ok(())
}
