//! End to end against a real Apache Kafka broker (started by `scripts/test.sh`): the `sink`
//! example runs as a separate process; its input is produced and its output consumed with
//! plain rdkafka clients, not rill. Then its `reset` command moves the stopped group, each
//! mode checked with a plain client.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

#[test]
fn sink_example_on_kafka_relays_filters_partitions_and_shuts_down_cleanly() {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return;
    };
    let broker = format!("kafka://{bootstrap}");
    let env = [
        ("SYNTHETIC_VIEWS", "0"),
        ("RILL_PARTITIONS", "4"),
        ("RILL_LOG", "warn"),
    ];
    let mut child = common::spawn_example("sink", &["--broker", &broker], &env);
    let printed = common::lines(&mut child);
    common::wait_for_topic(&bootstrap, "pageviews", 4);
    common::wait_for_topic(&bootstrap, "url_hits", 4);

    let mut input = Vec::new();
    for i in 0..1000 {
        let url = if i % 5 == 0 {
            "/internal/health".to_owned()
        } else {
            format!("/page/{}", i % 37)
        };
        let value = serde_json::json!({"user_id": format!("user-{i}"), "url": url, "view_time": 1.7e9 + f64::from(i)});
        input.push((Some(format!("user-{i}")), value.to_string()));
    }
    common::produce(&common::producer(&bootstrap), "pageviews", &input);

    let hits = common::consume(&bootstrap, "url_hits", 800, Duration::from_secs(90));
    assert_eq!(hits.len(), 800, "every non-internal view becomes one hit");
    let mut per_url: BTreeMap<String, usize> = BTreeMap::new();
    for (partition, key, value) in &hits {
        let hit: serde_json::Value = serde_json::from_str(value).expect("json hit");
        let url = hit["url"].as_str().expect("url").to_owned();
        assert!(!url.starts_with("/internal"), "filtered: {hit}");
        assert_eq!(key.as_deref(), Some(url.as_str()), "hits are keyed by url");
        // Placed where the Java client's partitioner puts the key.
        assert_eq!(
            *partition,
            rill::partitioner::partition_for_key(url.as_bytes(), 4),
            "{url}"
        );
        *per_url.entry(url).or_default() += 1;
    }
    assert_eq!(per_url.len(), 37);

    common::wait_lines(&printed, Duration::from_secs(60), |l| {
        l.iter().filter(|s| s.starts_with("hit on ")).count() >= 800
    });
    // `reset` refuses while the group has a live member: its next commit would undo it.
    let refused = reset(&broker, &["--agent", "to_hits", "--to-earliest"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("url_hits-to_hits") && err.contains("live member"),
        "{err}"
    );
    let status = common::terminate(&mut child, Duration::from_secs(60));
    assert!(
        status.success(),
        "SIGTERM shuts down with exit 0, got {status:?}"
    );
    let committed = || common::committed_total(&bootstrap, "url_hits-to_hits", "pageviews", 4);
    assert_eq!(committed(), 1000, "everything done was committed");

    // `reset`, each mode, on the stopped group.
    let rows = common::reset_moves(
        &reset(
            &broker,
            &["--agent", "to_hits", "--to-earliest", "--dry-run"],
        ),
        "url_hits-to_hits",
    );
    assert_eq!(rows.len(), 4, "a row per partition: {rows:?}");
    assert!(rows.iter().all(|&(_, new)| new == 0), "{rows:?}");
    assert_eq!(rows.iter().map(|&(old, _)| old).sum::<i64>(), 1000);
    assert_eq!(committed(), 1000, "a dry run changes nothing");
    for (args, expect) in [
        (vec!["--shift-by", "-10"], 960),
        (vec!["--to-earliest"], 0),
        (vec!["--shift-by", "25"], 100),
        (vec!["--to-latest"], 1000),
        (vec!["--to-datetime", "2000-01-01T00:00:00Z"], 0),
        (vec!["--to-datetime", "2100-01-01"], 1000),
    ] {
        let mut all = vec!["--agent", "to_hits"];
        all.extend(&args);
        let out = reset(&broker, &all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(committed(), expect, "{args:?}");
    }
}

/// Runs the `sink` example's `reset` command against the broker.
fn reset(broker: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--broker", broker, "reset"];
    all.extend(args);
    common::run_example("sink", &all)
}
