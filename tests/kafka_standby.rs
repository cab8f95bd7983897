//! Standby replicas on a real Apache Kafka broker (each test with a broker of its own): two
//! `page_totals` worker processes share the group under exactly-once, each keeping the other's
//! table partitions warm (`RILL_STANDBY_REPLICAS=1`). One is killed with SIGKILL; the other
//! takes its partitions over, replaying only the changelog's tail, and every count is exact.
//! The same run without standby replicas is the control: the takeover replays the whole
//! changelog of the moved partitions.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

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
