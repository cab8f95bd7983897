//! Tables against real Apache Kafka brokers, each test with a broker of its own: a worker
//! killed with SIGKILL mid-stream and restarted, and two worker processes sharing a group
//! through rebalances. The `page_totals` example is the worker; input is produced with plain
//! rdkafka.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

const URLS: usize = 20;

fn all_reach(totals: &BTreeMap<String, u64>, n: u64) -> bool {
    totals.len() == URLS && totals.values().all(|v| *v >= n)
}

fn table(data: &str) -> BTreeMap<String, u64> {
    common::table_of("page_totals", data, "url_view_totals")
}

#[test]
fn sigkill_then_restart_keeps_at_least_once_totals_and_replays_only_the_tail() {
    if common::kafka_bootstrap().is_none() {
        return;
    }
    let broker = common::OwnBroker::start(19192);
    let kafka = format!("kafka://{}", broker.bootstrap);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let env = [
        ("SYNTHETIC_VIEWS", "0"),
        ("RILL_PARTITIONS", "4"),
        ("RILL_COMMIT_INTERVAL_MS", "100"),
        // The killed member leaves the group after this, not after the default 45 s.
        ("RILL_KAFKA_SESSION_TIMEOUT_MS", "6000"),
        ("RILL_KAFKA_HEARTBEAT_INTERVAL_MS", "1000"),
    ];
    let args = ["--broker", kafka.as_str(), "--data-dir", data];
    const N: usize = 20_000;

    let mut first =
        common::spawn_example_logged("page_totals", &args, &env, &dir.path().join("first.log"));
    let first_lines = common::lines(&mut first);
    common::wait_for_topic(&broker.bootstrap, "pageviews", 4);
    common::produce(
        &common::producer(&broker.bootstrap),
        "pageviews",
        &common::page_views(0..N, URLS),
    );
    common::wait_lines(&first_lines, Duration::from_secs(120), |l| !l.is_empty());
    let processing_since = std::time::Instant::now();
    common::wait_lines(&first_lines, Duration::from_secs(120), |l| l.len() >= 3_000);
    common::signal(&first, "KILL");
    let rate =
        first_lines.lock().expect("lines").len() as f64 / processing_since.elapsed().as_secs_f64();
    common::wait_exit(&mut first, Duration::from_secs(10));
    let before = first_lines.lock().expect("lines").len();
    assert!(before < N, "the worker finished before the kill");

    let log = dir.path().join("second.log");
    let mut second = common::spawn_example_logged("page_totals", &args, &env, &log);
    let second_lines = common::lines(&mut second);
    let expected = (N / URLS) as u64;
    // A partition may have been finished before the kill: look at both runs' output.
    let first_output = first_lines.lock().expect("lines").clone();
    common::wait_lines(&second_lines, Duration::from_secs(180), |l| {
        let mut all = first_output.clone();
        all.extend_from_slice(l);
        all_reach(&common::printed_totals(&all), expected)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(common::terminate(&mut second, Duration::from_secs(60)).success());

    let totals = table(data);
    assert_eq!(totals.len(), URLS);
    for (url, n) in &totals {
        assert!(*n >= expected, "{url}: {n} < {expected}: a view was lost");
    }
    // At-least-once: only views the killed run processed can count twice (a kill between
    // delivering a commit's changelog and storing it locally replays that commit, whose views
    // are then processed again).
    let excess = totals.values().sum::<u64>() - N as u64;
    eprintln!("killed after {before} views ({rate:.0}/s); {excess} counted twice");
    assert!(
        excess <= before as u64,
        "{excess} views counted twice, more than the {before} the killed run processed"
    );
    let changelog = common::end_offsets(
        &broker.bootstrap,
        "page_totals-url_view_totals-changelog",
        4,
    );
    let tail = common::replayed(&log);
    assert!(
        tail < changelog,
        "the restart replayed {tail} of {changelog} changelog records: only the tail"
    );
}

#[test]
fn two_workers_share_partitions_and_tables_move_with_them() {
    if common::kafka_bootstrap().is_none() {
        return;
    }
    let broker = common::OwnBroker::start(19292);
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
        ("RILL_COMMIT_INTERVAL_MS", "100"),
    ];
    let producer = common::producer(&broker.bootstrap);

    let mut a = common::spawn_example_logged(
        "page_totals",
        &["--broker", &kafka, "--data-dir", data_a],
        &env,
        &dir.path().join("a.log"),
    );
    let a_lines = common::lines(&mut a);
    common::wait_for_topic(&broker.bootstrap, "pageviews", 4);
    common::produce(&producer, "pageviews", &common::page_views(0..4_000, URLS));
    common::wait_lines(&a_lines, Duration::from_secs(120), |l| {
        all_reach(&common::printed_totals(l), 200)
    });

    // B joins: the group rebalances; B recovers the tables of the partitions it takes.
    let b_log = dir.path().join("b.log");
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
    common::produce(
        &producer,
        "pageviews",
        &common::page_views(4_000..8_000, URLS),
    );
    let both = || {
        let mut all = a_lines.lock().expect("lines").clone();
        all.extend(b_lines.lock().expect("lines").clone());
        all
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !all_reach(&common::printed_totals(&both()), 400) {
        assert!(
            std::time::Instant::now() < deadline,
            "totals stalled: {:?}",
            common::printed_totals(&both())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !common::printed_totals(&b_lines.lock().expect("lines")).is_empty(),
        "B processed partitions after joining"
    );

    // B leaves: A takes every partition back and recovers what B wrote.
    assert!(common::terminate(&mut b, Duration::from_secs(60)).success());
    common::produce(
        &producer,
        "pageviews",
        &common::page_views(8_000..10_000, URLS),
    );
    common::wait_lines(&a_lines, Duration::from_secs(180), |l| {
        all_reach(&common::printed_totals(l), 500)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(common::terminate(&mut a, Duration::from_secs(60)).success());

    let totals = table(data_a);
    assert_eq!(totals.len(), URLS, "A holds every partition's table again");
    for (url, n) in &totals {
        assert!(*n >= 500, "{url}: {n} < 500: a view was lost");
        assert!(*n <= 500 + 500 / 2, "{url}: {n} is far above 500");
    }
}

#[rill::record]
struct View {
    #[record(key)]
    url: String,
    user: String,
}

#[rill::record]
struct Total {
    #[record(key)]
    user: String,
    n: u64,
}

#[rill::agent(
    topic = "grpk_views",
    sink = "grpk_totals",
    tables(totals = "grpk_user_totals"),
    concurrency = 2
)]
async fn count_users(
    views: rill::Stream<View>,
    out: rill::Sink<Total>,
    totals: rill::Table<String, u64>,
) -> rill::Result<()> {
    let mut views = views.group_by(View::user);
    while let Some(view) = views.next().await {
        let n = totals.update(view.user.clone(), |n| n + 1)?;
        out.send(&Total { user: view.user, n }).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_by_repartitions_through_a_kafka_topic() -> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = common::kafka_app("grpk", &bootstrap, dir.path())
        .agents([count_users::agent()])
        .partitions(4)
        .start()
        .await?;
    let input: Vec<(Option<String>, String)> = (0..400)
        .map(|i| {
            let url = format!("/page/{}", i % 7);
            (
                Some(url.clone()),
                serde_json::json!({"url": url, "user": format!("user-{}", i % 8)}).to_string(),
            )
        })
        .collect();
    tokio::task::block_in_place(|| {
        common::produce(&common::producer(&bootstrap), "grpk_views", &input)
    });
    let totals = tokio::task::block_in_place(|| {
        common::consume_until(&bootstrap, "grpk_totals", Duration::from_secs(90), |got| {
            got.iter()
                .filter(|(_, _, v)| v.contains("\"n\":50"))
                .count()
                >= 8
        })
    });
    let mut best: BTreeMap<String, u64> = BTreeMap::new();
    for (partition, key, value) in &totals {
        let t: serde_json::Value = serde_json::from_str(value).expect("json");
        let user = t["user"].as_str().expect("user").to_owned();
        assert_eq!(key.as_deref(), Some(user.as_str()));
        assert_eq!(
            *partition,
            rill::partitioner::partition_for_key(user.as_bytes(), 4)
        );
        let n = t["n"].as_u64().expect("n");
        let e = best.entry(user).or_default();
        *e = (*e).max(n);
    }
    assert_eq!(best.len(), 8);
    assert!(
        best.values().all(|n| *n == 50),
        "each user counted 50 times: {best:?}"
    );
    let repartitioned = common::end_offsets(&bootstrap, "grpk-count_users-user-repartition", 4);
    assert_eq!(
        repartitioned, 400,
        "every view went through the repartition topic once"
    );
    worker.shutdown().await
}
