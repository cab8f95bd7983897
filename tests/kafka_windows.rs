//! Windows against a real Apache Kafka broker (the one of `scripts/test.sh`): a tumbling count
//! over out-of-order and late records, with event times carried as message timestamps through
//! the repartition, late and sink topics; and window state rebuilt from its changelog after a
//! clean restart that lost the local table store. Workers run in-process; input is produced
//! and output read with plain rdkafka clients.
//!
//! Topics use one partition, so the single partition's largest event time is the watermark.
//! The idle timeout is set far beyond the tests' length, so only records close windows.
//! Event times are a minute-aligned hour ago rather than near the epoch: Kafka's time-based
//! retention (7 days by message timestamp) would otherwise delete the repartition topic's
//! segments at the broker's next retention check.

mod common;

use std::time::Duration;

use common::Read;
use common::records::{Count, count, now_ms};
use rill::prelude::*;
use rill::{AgentSpec, TopicSpec};

const SEC: i64 = 1_000;
/// No window closes by idleness while a test runs.
const NO_IDLE: Duration = Duration::from_secs(600);
/// How long to keep reading after the expected results, to see anything emitted twice.
const SETTLE: Duration = Duration::from_secs(3);

#[record]
#[derive(Debug, Clone)]
struct View {
    user: String,
    url: String,
    /// Event time, ms since the epoch.
    #[record(timestamp)]
    at: i64,
}

/// Start of the minute an hour ago, ms: event times are `base + offset`.
fn base_minute() -> i64 {
    (now_ms() / (60 * SEC) - 60) * 60 * SEC
}

/// `views.group_by(url).tumbling(60 s).count()`, each result sent to `sink`.
fn per_minute(name: &str, source: &str, sink: &str, late: Option<&str>) -> AgentSpec {
    let late = late.map(str::to_owned);
    AgentSpec::new(name, "tests/kafka_windows.rs")
        .source(TopicSpec::of::<View>(source, "tests/kafka_windows.rs"))
        .sink(TopicSpec::of::<Count>(sink, "tests/kafka_windows.rs"))
        .run(move |mut ctx| {
            let late = late.clone();
            async move {
                let views = ctx.stream::<View>()?;
                let out = ctx.sink::<Count>()?;
                let mut windows = views.group_by(View::url).tumbling(Duration::from_secs(60));
                if let Some(topic) = &late {
                    windows = windows.late_events_to(topic);
                }
                let mut windows = windows.count();
                while let Some(w) = windows.next().await {
                    out.send(&Count::from(w)).await?;
                }
                Ok(())
            }
        })
}

fn app(app_id: &str, agent: AgentSpec, bootstrap: &str, data: &std::path::Path) -> App {
    common::kafka_app(app_id, bootstrap, data)
        .agents([agent])
        .partitions(1)
        .configure(|c| {
            c.idle_timeout = NO_IDLE;
            // The test reads the repartition topic afterwards: nothing is purged meanwhile.
            c.repartition_purge_interval = Duration::from_secs(3600);
        })
}

/// Produces views with a plain rdkafka producer (message timestamps: now, not event times).
fn produce(bootstrap: &str, topic: &str, views: &[(&str, i64)]) {
    let items: Vec<(Option<String>, String)> = views
        .iter()
        .map(|(url, at)| {
            let value = serde_json::json!({"user": "u", "url": url, "at": at});
            (Some((*url).to_owned()), value.to_string())
        })
        .collect();
    tokio::task::block_in_place(|| common::produce(&common::producer(bootstrap), topic, &items));
}

/// The counts of `topic` (sorted) once `n` are there, read `SETTLE` longer so that extra
/// ones show.
fn read_counts(bootstrap: &str, topic: &str, n: usize) -> Vec<Count> {
    let mut got: Vec<Count> = read_stamped(bootstrap, topic, n, SETTLE)
        .iter()
        .map(|(_, v, _, _)| serde_json::from_str(v).expect("a count"))
        .collect();
    got.sort();
    got
}

/// A record read back with its Kafka message timestamp: (key, value, timestamp ms, and the
/// original timestamp in `rill.source.timestamp` of a record rill set aside).
type Stamped = (Option<String>, String, Option<i64>, Option<i64>);

/// Reads a topic (of one partition) from the beginning with a plain rdkafka consumer until `n`
/// records (90 s at most), then `settle` longer so that extra records show.
fn read_stamped(bootstrap: &str, topic: &str, n: usize, settle: Duration) -> Vec<Stamped> {
    // A `group_by` pump's watermark marker has no value: it is not a record.
    let records = |read: &[Read]| read.iter().filter(|r| r.value.is_some()).count();
    common::read_topic(bootstrap, topic, Duration::from_secs(90), settle, |r| {
        records(r) >= n
    })
    .iter()
    .filter(|r| r.value.is_some())
    .map(|r| {
        let original = r
            .header("rill.source.timestamp")
            .and_then(|t| t.parse().ok());
        (r.key_text(), r.text(), r.timestamp, original)
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumbling_counts_on_kafka_carry_event_times_and_route_the_late_record() -> rill::Result<()>
{
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let run = common::run_id();
    let app_id = format!("kw_tumbling_{run}");
    let views = format!("kw_tumbling_views_{run}");
    let counts = format!("kw_tumbling_counts_{run}");
    let late = format!("kw_tumbling_late_{run}");
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = per_minute("per_minute", &views, &counts, Some(&late));
    let worker = app(&app_id, agent, &bootstrap, dir.path()).start().await?;

    let started = now_ms();
    let base = base_minute();
    let at = |secs: i64| base + secs * SEC;
    // (url, seconds after `base`), in the order sent.
    let input = [
        ("/a", 1),
        ("/a", 30),
        ("/b", 59),
        // Watermark 61 s: [0, 60) closes (no grace).
        ("/a", 61),
        ("/a", 90),
        // Out of order, but [60, 120) is open: counted.
        ("/a", 70),
        // Late: [0, 60) has closed. Routed to the late topic, not counted.
        ("/a", 50),
        ("/b", 119),
        // Watermark 130 s: [60, 120) closes; [120, 180) stays open.
        ("/a", 130),
    ];
    let sent: Vec<(&str, i64)> = input.iter().map(|(u, s)| (*u, at(*s))).collect();
    produce(&bootstrap, &views, &sent);

    let results = read_stamped(&bootstrap, &counts, 4, SETTLE);
    let mut got: Vec<(Count, Option<i64>)> = results
        .iter()
        .map(|(_, v, ts, _)| (serde_json::from_str(v).expect("a count"), *ts))
        .collect();
    got.sort();
    // A result carries the event time of the record that closed its window.
    assert_eq!(
        got,
        vec![
            (count("/a", at(0), at(60), 2), Some(at(61))),
            (count("/a", at(60), at(120), 3), Some(at(130))),
            (count("/b", at(0), at(60), 1), Some(at(61))),
            (count("/b", at(60), at(120), 1), Some(at(130))),
        ],
        "each closed window once, with its count and the closing record's time"
    );
    assert_eq!(common::stat(&worker, "per_minute", |s| &s.late_records), 1);
    assert_eq!(
        common::stat(&worker, "per_minute", |s| &s.windows_closed),
        4
    );

    // The repartition topic: every view once, keyed by URL, in the order sent, with its event
    // time (not the producer's timestamp) as the message timestamp.
    let repartition = format!("{app_id}-per_minute-url-repartition");
    let repartitioned = read_stamped(
        &bootstrap,
        &repartition,
        input.len(),
        Duration::from_secs(2),
    );
    assert_eq!(
        repartitioned.len(),
        9,
        "nothing went through the repartition topic twice"
    );
    let expected: Vec<(Option<String>, Option<i64>)> = sent
        .iter()
        .map(|(url, t)| (Some((*url).to_owned()), Some(*t)))
        .collect();
    let found: Vec<(Option<String>, Option<i64>)> = repartitioned
        .iter()
        .map(|(k, _, ts, _)| (k.clone(), *ts))
        .collect();
    assert_eq!(found, expected);
    let times: Vec<i64> = repartitioned
        .iter()
        .map(|(_, v, _, _)| {
            serde_json::from_str::<serde_json::Value>(v).expect("json")["at"]
                .as_i64()
                .expect("at")
        })
        .collect();
    assert_eq!(
        times,
        sent.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        "the original values"
    );

    // The late view, unchanged; stamped when it was set aside (so that the broker's time
    // retention does not take it for an hour old), its event time in a header.
    let late_views = read_stamped(&bootstrap, &late, 1, SETTLE);
    assert_eq!(late_views.len(), 1, "{late_views:?}");
    let view: View = serde_json::from_str(&late_views[0].1).expect("a view");
    assert_eq!((view.url.as_str(), view.at), ("/a", at(50)));
    assert!(
        late_views[0].2.is_some_and(|t| t >= started),
        "stamped at {:?}, test started at {started}",
        late_views[0].2
    );
    assert_eq!(late_views[0].3, Some(at(50)));
    worker.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_state_is_rebuilt_from_its_kafka_changelog_after_a_restart_without_local_state()
-> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let run = common::run_id();
    let app_id = format!("kw_restart_{run}");
    let views = format!("kw_restart_views_{run}");
    let counts = format!("kw_restart_counts_{run}");
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = || per_minute("per_minute", &views, &counts, None);
    let base = base_minute();
    let at = |secs: i64| base + secs * SEC;

    let first = app(&app_id, agent(), &bootstrap, dir.path())
        .start()
        .await?;
    produce(
        &bootstrap,
        &views,
        &[("/a", at(1)), ("/a", at(2)), ("/b", at(3))],
    );
    common::wait_for_async(
        "the first run reads 3 views",
        Duration::from_secs(90),
        || common::stat(&first, "per_minute", |s| &s.records_in) >= 3,
    )
    .await;
    // A clean stop commits the open windows to the changelog and the offsets past them.
    first.shutdown().await?;
    let repartition = format!("{app_id}-per_minute-url-repartition");
    let group = format!("{app_id}-per_minute-repartition");
    // Everything in the repartition topic (the 3 views and the pump's watermark markers).
    let written = tokio::task::block_in_place(|| common::end_offsets(&bootstrap, &repartition, 1));
    assert!(written >= 3);
    assert_eq!(
        tokio::task::block_in_place(|| common::committed_total(
            &bootstrap,
            &group,
            &repartition,
            1
        )),
        written,
        "the first run's views are committed: the second run does not read them again"
    );
    let changelog = format!("{app_id}-per_minute-url-tumbling-60000ms-count-changelog");
    let changelog_records =
        tokio::task::block_in_place(|| common::end_offsets(&bootstrap, &changelog, 1));
    assert!(
        changelog_records > 0,
        "the open windows are in `{changelog}`"
    );

    // A new machine: the table store is gone; only Kafka has the state.
    let tables = dir.path().join("tables");
    assert!(tables.is_dir(), "the window's table store is {tables:?}");
    std::fs::remove_dir_all(&tables).expect("remove the table store");

    let second = app(&app_id, agent(), &bootstrap, dir.path())
        .start()
        .await?;
    produce(
        &bootstrap,
        &views,
        &[
            ("/a", at(4)),
            // Watermark 100 s: [0, 60) closes, [60, 120) stays open.
            ("/a", at(100)),
            ("/b", at(100)),
        ],
    );
    let got = read_counts(&bootstrap, &counts, 2);
    assert_eq!(
        got,
        vec![count("/a", at(0), at(60), 3), count("/b", at(0), at(60), 1)],
        "[0, 60) once per key, counting both runs' views"
    );
    let restored = common::stat(&second, "per_minute", |s| &s.restored);
    assert!(
        restored > 0 && restored <= u64::try_from(changelog_records).expect("count"),
        "the window state came from the changelog: {restored} of {changelog_records} records"
    );
    second.shutdown().await?;

    // Closing [0, 60) wrote no tombstones: the changelog is time-retained, keeps the closed
    // windows until they age out, and the stored watermark tells recovery they closed.
    let log = tokio::task::block_in_place(|| {
        let configs = common::topic_configs(&bootstrap, &changelog);
        assert_eq!(configs["cleanup.policy"], "compact,delete", "{configs:?}");
        assert_eq!(configs["retention.ms"], "86400000", "{configs:?}");
        let end = common::end_offsets(&bootstrap, &changelog, 1);
        common::read_topic(
            &bootstrap,
            &changelog,
            Duration::from_secs(90),
            SETTLE,
            |r| r.len() as i64 >= end,
        )
    });
    assert!(
        log.iter().all(|r| r.value.is_some()),
        "no tombstone in `{changelog}`"
    );
    // The closed windows of /a and /b are among its records.
    let closed_at_zero = log
        .iter()
        .filter(|r| r.value.as_deref().is_some_and(|v| v.starts_with(b"[\"/")))
        .filter(|r| {
            std::str::from_utf8(r.value.as_deref().unwrap_or_default())
                .is_ok_and(|v| v.contains(&format!(",{},", at(60))))
        })
        .count();
    assert!(
        closed_at_zero >= 2,
        "[0, 60) of /a and /b: {closed_at_zero}"
    );

    // Another machine again: recovery replays the closed windows and drops them by the
    // stored watermark; only the open [60, 120) closes now, and [0, 60) is not emitted again.
    std::fs::remove_dir_all(&tables).expect("remove the table store");
    let third = app(&app_id, agent(), &bootstrap, dir.path())
        .start()
        .await?;
    produce(&bootstrap, &views, &[("/b", at(200))]);
    let got = read_counts(&bootstrap, &counts, 4);
    assert_eq!(
        got,
        vec![
            count("/a", at(0), at(60), 3),
            count("/a", at(60), at(120), 1),
            count("/b", at(0), at(60), 1),
            count("/b", at(60), at(120), 1),
        ],
        "each window once, across three runs and two lost table stores"
    );
    third.shutdown().await
}
