//! Standby replicas on a real Apache Kafka broker (each test with a broker of its own): two
//! `page_totals` worker processes share the group under exactly-once, each keeping the other's
//! table partitions warm (`RILL_STANDBY_REPLICAS=1`). One is killed with SIGKILL; the other
//! takes its partitions over, replaying only the changelog's tail, and every count is exact.
//! The same run without standby replicas is the control: the takeover replays the whole
//! changelog of the moved partitions.
//!
//! Window state is followed too: two in-process workers count hourly windows, over the source
//! stream and after `group_by` (state in the repartition group); when one stops, the other
//! takes its partitions over (a cooperative rebalance) replaying (almost) nothing of the window
//! state's changelog, where without standbys it replays all of it; either way every key's
//! window then counts on exactly.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use rill::{AgentSpec, AgentStats, Emit, TopicSpec, Worker, record};

#[record]
#[derive(Debug, Clone)]
struct Hit {
    #[record(key)]
    key: String,
    #[record(timestamp)]
    at: i64,
}

const URLS: usize = 2_000;

/// Runs the scenario with `standby` replicas on a broker at `port`; returns the changelog
/// records the surviving worker replayed to take the killed one's partitions over.
fn kill_one_of_two(port: u16, standby: &str) -> i64 {
    // Two brokers and four workers at once are too much for a small machine: one at a time.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let broker = common::OwnBroker::start(port);
    let kafka = format!("kafka://{}", broker.bootstrap);
    let dir = tempfile::tempdir().expect("tempdir");
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let (data_a, data_b) = (
        data_a.to_str().expect("utf-8"),
        data_b.to_str().expect("utf-8"),
    );
    let env = [
        ("SYNTHETIC_VIEWS", "0"),
        ("RILL_PARTITIONS", "4"),
        ("RILL_PROCESSING_GUARANTEE", "exactly_once"),
        ("RILL_STANDBY_REPLICAS", standby),
        // A killed worker's partitions move after this, not Kafka's default 45 s.
        ("RILL_KAFKA_SESSION_TIMEOUT_MS", "6000"),
        ("RILL_LOG", "info"),
    ];
    let (a_log, b_log) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = common::spawn_example_logged(
        "page_totals",
        &["--broker", &kafka, "--data-dir", data_a],
        &env,
        &a_log,
    );
    let a_lines = common::lines(&mut a);
    common::wait_log(
        "A gets partitions",
        &a_log,
        "partitions assigned",
        Duration::from_secs(60),
    );
    let mut b = common::spawn_example_logged(
        "page_totals",
        &["--broker", &kafka, "--data-dir", data_b],
        &env,
        &b_log,
    );
    let b_lines = common::lines(&mut b);
    common::wait_log(
        "B gets partitions",
        &b_log,
        "partitions assigned",
        Duration::from_secs(60),
    );
    let producer = common::producer(&broker.bootstrap);
    common::produce(
        &producer,
        "pageviews",
        &common::page_views(0..4 * URLS, URLS),
    );
    let both = || {
        let mut all = a_lines.lock().expect("lines").clone();
        all.extend(b_lines.lock().expect("lines").clone());
        common::printed_totals(&all)
    };
    common::wait_for("every URL counted to 4", Duration::from_secs(180), || {
        let totals = both();
        totals.len() == URLS && totals.values().all(|n| *n >= 4)
    });
    // A few standby rounds (one a second) for A to follow what B wrote last.
    std::thread::sleep(Duration::from_secs(5));
    let before = common::replayed(&a_log);

    common::signal(&b, "KILL");
    let _ = common::wait_exit(&mut b, Duration::from_secs(30));
    common::produce(
        &producer,
        "pageviews",
        &common::page_views(4 * URLS..5 * URLS, URLS),
    );
    common::wait_lines(&a_lines, Duration::from_secs(180), |l| {
        let totals = common::printed_totals(l);
        totals.len() == URLS && totals.values().all(|n| *n >= 5)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(common::terminate(&mut a, Duration::from_secs(60)).success());
    let totals: BTreeMap<String, u64> = common::table_of("page_totals", data_a, "url_view_totals");
    assert_eq!(totals.len(), URLS, "A holds every partition's table");
    let wrong: Vec<_> = totals.iter().filter(|(_, n)| **n != 5).collect();
    assert!(wrong.is_empty(), "exactly-once counts: {wrong:?}");
    let takeover = common::replayed(&a_log) - before;
    eprintln!("standby replicas {standby}: the takeover replayed {takeover} changelog records");
    takeover
}

#[test]
fn a_standby_takes_over_a_killed_worker_replaying_only_the_tail() {
    if common::kafka_bootstrap().is_none() {
        return;
    }
    let replayed = kill_one_of_two(18292, "1");
    // B's partitions hold about half the 2,000 keys; the standby had all but what B wrote
    // in its last moments.
    assert!(
        replayed < 100,
        "the takeover replayed {replayed} changelog records"
    );
}

#[test]
fn without_standby_replicas_the_takeover_replays_the_whole_changelog() {
    if common::kafka_bootstrap().is_none() {
        return;
    }
    let replayed = kill_one_of_two(18392, "0");
    assert!(replayed >= 500, "the control case replayed only {replayed}");
}

/// Hourly counts per key: over the source stream (the window state lives in the source
/// group's partitions) or after `group_by` (in the repartition group's).
/// Every update is sent to `output` as `<key>=<count>`.
fn hourly(input: &str, output: &str, group_by: bool) -> AgentSpec {
    AgentSpec::new("hourly", "tests/kafka_standby.rs")
        .source(TopicSpec::of::<Hit>(input, "tests/kafka_standby.rs"))
        .sink(TopicSpec::of::<String>(output, "tests/kafka_standby.rs"))
        .run(move |mut ctx| async move {
            let hits = ctx.stream::<Hit>()?;
            let out = ctx.sink::<String>()?;
            let keyed = if group_by {
                hits.group_by(Hit::key)
            } else {
                hits.keyed(Hit::key)
            };
            let mut windows = keyed
                .tumbling(Duration::from_secs(3600))
                .name("hourly")
                .emit(Emit::Update)
                .count();
            while let Some(w) = windows.next().await {
                out.send(&format!("{}={}", w.key, w.value)).await?;
            }
            Ok(())
        })
}

/// `n` hits from `from` on, over 400 keys, hit i at `hour + i` ms.
fn hits(hour: i64, from: i64, n: i64) -> Vec<(Option<String>, String)> {
    (from..from + n)
        .map(|i| {
            let key = format!("k{:03}", i % 400);
            let value = serde_json::json!({"key": key, "at": hour + i});
            (Some(key), value.to_string())
        })
        .collect()
}

fn total(workers: &[&Worker], counter: fn(&AgentStats) -> &std::sync::atomic::AtomicU64) -> u64 {
    workers
        .iter()
        .map(|w| common::stat(w, "hourly", counter))
        .sum()
}

/// Says, for a takeover that counted records twice, whether the records were twice in the topic
/// the windows read (a `group_by` pump forwarded them again: its source offsets lagged what it
/// had sent) or once (the window state and the offsets it resumed from disagreed).
fn explain_miscount(bootstrap: &str, worker: &Worker, input: &str) {
    let read = worker
        .assignment("hourly")
        .unwrap_or_default()
        .into_iter()
        .map(|(topic, _)| topic)
        .find(|topic| topic != input)
        .unwrap_or_else(|| input.to_owned());
    // A repartition topic is purged below what its group committed: its offsets still count
    // every record forwarded (watermark markers too).
    let partitions = common::partition_count(bootstrap, &read).unwrap_or(0);
    let ranges: Vec<(i64, i64)> = (0..partitions as i32)
        .map(|p| common::watermarks(bootstrap, &read, p))
        .collect();
    eprintln!("{read}: offsets (first, next) by partition {ranges:?}");
    let records = common::read_to_end(bootstrap, &read, "read_uncommitted");
    let mut at: std::collections::HashMap<String, Vec<(i32, i64)>> = Default::default();
    // Watermark markers have no value.
    for r in records.iter().filter(|r| r.value.is_some()) {
        at.entry(r.text())
            .or_default()
            .push((r.partition, r.offset));
    }
    let twice: Vec<_> = at.iter().filter(|(_, places)| places.len() > 1).collect();
    eprintln!(
        "{read}: {} records, {} of them more than once; the first few: {:?}",
        records.len(),
        twice.len(),
        &twice[..twice.len().min(12)]
    );
}

/// Two workers count 4,000 records over 400 keys into window state; the first stops and the
/// second takes its partitions over. Returns the window-state changelog records that takeover
/// replayed.
async fn window_takeover(standby: usize, group_by: bool) -> rill::Result<u64> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(0);
    };
    let run = common::run_id();
    let (app_id, input, output) = (
        format!("ksw_{run}"),
        format!("ksw_in_{run}"),
        format!("ksw_out_{run}"),
    );
    tokio::task::block_in_place(|| common::create_topic(&bootstrap, &input, 4, &[]));
    let (da, db) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let worker = |dir: &std::path::Path| {
        common::kafka_app(&app_id, &bootstrap, dir)
            .configure(move |c| c.standby_replicas = standby)
            .agents([hourly(&input, &output, group_by)])
            .start()
    };
    let (a, b) = (worker(da.path()).await?, worker(db.path()).await?);
    // The source group's partitions, and the repartition group's after `group_by`.
    let all = if group_by { 8 } else { 4 };
    let owns = |w: &Worker| w.assignment("hourly").map_or(0, |a| a.len());
    // The partitions whose window state a takeover moves: the repartition topic's after
    // `group_by` (a worker may own source partitions and no state), the source's otherwise.
    let stateful = |w: &Worker| {
        w.assignment("hourly").map_or(0, |a| {
            a.iter()
                .filter(|(topic, _)| (topic != &input) == group_by)
                .count()
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while owns(&a) + owns(&b) != all || stateful(&a) != 2 || stateful(&b) != 2 {
        assert!(tokio::time::Instant::now() < deadline, "no 2-2 assignment");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Event times within the first seconds of one hour: one window per key, never closed.
    let hour = common::records::now_ms() / 3_600_000 * 3_600_000;
    let produce = |from, n| {
        tokio::task::block_in_place(|| {
            common::produce(&common::producer(&bootstrap), &input, &hits(hour, from, n));
        });
    };
    produce(0, 4_000);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while total(&[&a, &b], |s| &s.records_in) < 4_000 {
        assert!(tokio::time::Instant::now() < deadline, "records not read");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Commits (100 ms) and a standby round (1 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let warm = common::stat(&b, "hourly", |s| &s.standby_replayed);
    let before = common::stat(&b, "hourly", |s| &s.restored);
    a.shutdown().await?;
    common::wait_ready(&b, Duration::from_secs(60)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while owns(&b) != all {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B did not take over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Recovery of the window state runs when the instance takes the assignment: until what
    // it set out to replay is replayed, and a moment longer.
    let settled = || {
        let (done, total) = (
            common::stat(&b, "hourly", |s| &s.restored),
            common::stat(&b, "hourly", |s| &s.restore_total),
        );
        (done == total).then_some(done)
    };
    let mut last = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = settled();
        if now.is_some() && now == last {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B's recovery did not end"
        );
        last = now;
    }
    let replayed = common::stat(&b, "hourly", |s| &s.restored) - before;
    // The window state B took over counts on: every key's updates are 1, 2, ... 20, each once.
    produce(4_000, 4_000);
    let out = tokio::task::block_in_place(|| {
        common::consume(&bootstrap, &output, 8_000, Duration::from_secs(90))
    });
    if let Some(wrong) = common::miscounted(&out, 400, 20) {
        tokio::task::block_in_place(|| explain_miscount(&bootstrap, &b, &input));
        panic!("standby replicas {standby}, group_by {group_by}: {wrong}");
    }
    eprintln!(
        "standby replicas {standby}, group_by {group_by}: {warm} window-state records kept warm, {replayed} replayed at the takeover"
    );
    b.shutdown().await?;
    Ok(replayed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_state_is_kept_warm_by_a_standby_too() -> rill::Result<()> {
    for group_by in [false, true] {
        let replayed = window_takeover(1, group_by).await?;
        let control = window_takeover(0, group_by).await?;
        if common::kafka_bootstrap().is_some() {
            // About half of the 400 keys' windows were the first worker's.
            assert!(control >= 150, "the control case replayed only {control}");
            assert!(
                replayed * 10 < control,
                "group_by {group_by}: with a standby the takeover replayed {replayed} records, without {control}"
            );
        }
    }
    Ok(())
}
