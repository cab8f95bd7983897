//! Failure handling on the embedded log: dead letters for malformed records and failing
//! agents, in-place retries, retry topics, skip and stop.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::records::{Done, MAX_RECORD_BYTES, Order, handle, header, malformed};
use rill::prelude::*;
use rill::{Headers, OutRecord, RawRecord};

#[agent(topic = "orders", sink = "done")]
async fn process(mut orders: Stream<Order>, out: Sink<Done>) -> rill::Result<()> {
    while let Some(order) = orders.next().await {
        handle(&order, &out).await?;
    }
    Ok(())
}

fn raw(topic: &str, value: Vec<u8>) -> OutRecord {
    OutRecord {
        topic: Arc::from(topic),
        partition: None,
        key: None,
        value: Some(value),
        timestamp: 1,
        headers: Headers(vec![("origin".into(), Some(b"test".to_vec()))]),
    }
}

#[tokio::test]
async fn bad_records_and_failing_records_go_to_the_dead_letter_topic_and_good_ones_are_processed_once()
-> rill::Result<()> {
    let app = App::new("dlq_test")
        .agents([process::agent()])
        .configure(|c| c.max_record_bytes = MAX_RECORD_BYTES)
        .test()
        .await?;
    let mut good = BTreeSet::new();
    let (mut bad, mut errors, mut panics) = (0u64, 0u64, 0u64);
    for i in 0..10_000u64 {
        let producer = app.producer();
        if i % 10 == 3 {
            bad += 1;
            producer.send_raw(raw("orders", malformed(i).0)).await?;
        } else if i % 20 == 7 {
            let url = if i % 40 == 7 { "/fail" } else { "/panic" };
            if url == "/fail" {
                errors += 1;
            } else {
                panics += 1;
            }
            producer
                .send_to(
                    "orders",
                    &Order {
                        id: i,
                        url: url.into(),
                    },
                )
                .await?;
        } else {
            good.insert(i);
            producer
                .send_to(
                    "orders",
                    &Order {
                        id: i,
                        url: "/ok".into(),
                    },
                )
                .await?;
        }
    }
    app.producer().flush().await?;
    assert_eq!((bad, errors + panics), (1_000, 500));

    let done: Vec<Done> = app.expect("done", good.len()).await?;
    app.wait_until("every bad record dead-lettered", |app| {
        app.count("dlq_test-process-dlq").unwrap_or(0) >= 1_500
    })
    .await?;
    common::settle().await;

    // Every good record exactly once.
    let done: Vec<u64> = {
        let again: Vec<Done> = app.read("done")?;
        assert_eq!(again.len(), done.len().max(again.len()));
        again.into_iter().map(|d| d.id).collect()
    };
    assert_eq!(done.len(), good.len(), "no good record twice");
    assert_eq!(done.iter().copied().collect::<BTreeSet<_>>(), good);

    // Every bad record once in the dead-letter topic, as it was, with why and where from.
    let sources: HashMap<(i32, i64), RawRecord> = app
        .records("orders")?
        .into_iter()
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    let dead = app.records("dlq_test-process-dlq")?;
    assert_eq!(dead.len(), 1_500);
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for d in &dead {
        let partition: i32 = header(d, "rill.source.partition")
            .parse()
            .expect("partition");
        let offset: i64 = header(d, "rill.source.offset").parse().expect("offset");
        assert!(seen.insert((partition, offset)), "dead-lettered twice");
        assert_eq!(header(d, "rill.source.topic"), "orders");
        assert_eq!(header(d, "rill.agent"), "process");
        assert_eq!(header(d, "rill.attempts"), "1");
        assert!(header(d, "rill.failed_at").parse::<i64>().is_ok());
        let source = &sources[&(partition, offset)];
        assert_eq!(d.value, source.value, "the original bytes");
        assert_eq!(d.key, source.key);
        let kind = header(d, "rill.error.kind");
        match kind.as_str() {
            "decode" => {
                assert_eq!(header(d, "origin"), "test", "original headers kept");
                assert!(header(d, "rill.error").contains("cannot decode"));
            }
            "error" => assert!(header(d, "rill.error").contains("cannot handle order")),
            "panic" => assert!(header(d, "rill.error").contains("blew up")),
            other => panic!("unexpected kind {other}"),
        }
        *kinds.entry(kind).or_default() += 1;
    }
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("decode".to_string(), 1_000),
            ("error".to_string(), errors),
            ("panic".to_string(), panics),
        ])
    );
    let oversized = dead
        .iter()
        .filter(|d| header(d, "rill.error").contains("RILL_MAX_RECORD_BYTES"))
        .count();
    assert!(oversized > 100, "oversized records are named as such");
    assert_eq!(app.stat("process", |s| &s.dead_lettered), 1_500);
    assert_eq!(app.stat("process", |s| &s.failures), 500);

    // Still alive.
    app.send_to(
        "orders",
        &Order {
            id: 99_999,
            url: "/ok".into(),
        },
    )
    .await?;
    app.wait_until("the worker keeps processing", |app| {
        app.read::<Done>("done")
            .is_ok_and(|d| d.iter().any(|d| d.id == 99_999))
    })
    .await?;
    app.stop().await
}

fn attempts() -> &'static Mutex<HashMap<u64, u32>> {
    static ATTEMPTS: OnceLock<Mutex<HashMap<u64, u32>>> = OnceLock::new();
    ATTEMPTS.get_or_init(Default::default)
}

/// Fails the first `url.len() - 1` attempts of each order (`/`: never fails, `/xx`: fails
/// twice), and always when the url contains "always".
async fn flaky(order: &Order, out: &Sink<Done>, counter: &AtomicU32) -> rill::Result<()> {
    let n = {
        let mut a = attempts().lock().unwrap_or_else(|p| p.into_inner());
        let n = a.entry(order.id).or_default();
        *n += 1;
        *n
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if order.url.contains("always") || (n as usize) < order.url.len() {
        return Err(rill::Error::user(format!(
            "attempt {n} of order {}",
            order.id
        )));
    }
    out.send(&Done { id: order.id }).await
}

static IN_PLACE_CALLS: AtomicU32 = AtomicU32::new(0);

#[agent(
    topic = "retried_orders",
    sink = "retried_done",
    on_error = "retry",
    retries = 3,
    retry_backoff_ms = 20
)]
async fn retry_in_place(mut orders: Stream<Order>, out: Sink<Done>) -> rill::Result<()> {
    while let Some(order) = orders.next().await {
        flaky(&order, &out, &IN_PLACE_CALLS).await?;
    }
    Ok(())
}

#[tokio::test]
async fn in_place_retries_keep_partition_order_and_dead_letter_after_the_last_attempt()
-> rill::Result<()> {
    let app = App::new("retry_test")
        .partitions(1)
        .agents([retry_in_place::agent()])
        .test()
        .await?;
    // Offsets 0..6 in one partition.
    let urls = ["/", "/xx", "/always", "/x", "/", "/xxxx"];
    for (i, url) in urls.iter().enumerate() {
        let order = Order {
            id: 100 + i as u64,
            url: url.to_string(),
        };
        app.producer().send_to("retried_orders", &order).await?;
    }
    app.producer().flush().await?;
    // `/xxxx` fails 4 times: 3 retries are not enough.
    app.wait_until("two dead letters", |app| {
        app.count("retry_test-retry_in_place-dlq").unwrap_or(0) >= 2
    })
    .await?;
    let done: Vec<u64> = app
        .expect::<Done>("retried_done", 4)
        .await?
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(
        done,
        vec![100, 101, 103, 104],
        "partition order kept through the retries"
    );
    let dead = app.records("retry_test-retry_in_place-dlq")?;
    let dead: Vec<(String, String)> = dead
        .iter()
        .map(|d| (header(d, "rill.source.offset"), header(d, "rill.attempts")))
        .collect();
    assert_eq!(
        dead,
        vec![("2".into(), "4".into()), ("5".into(), "4".into())]
    );
    // Calls: 1 + 3 + 4 + 2 + 1 + 4; retries: 2 + 3 + 1 + 3.
    assert_eq!(IN_PLACE_CALLS.load(Ordering::Relaxed), 15);
    assert_eq!(app.stat("retry_in_place", |s| &s.retried), 9);
    app.stop().await
}

static TOPIC_CALLS: AtomicU32 = AtomicU32::new(0);

#[agent(
    topic = "later_orders",
    sink = "later_done",
    on_error = "retry_topics",
    retries = 2,
    retry_backoff_ms = 50
)]
async fn retry_later(mut orders: Stream<Order>, out: Sink<Done>) -> rill::Result<()> {
    while let Some(order) = orders.next().await {
        flaky(&order, &out, &TOPIC_CALLS).await?;
    }
    Ok(())
}

#[tokio::test]
async fn retry_topics_bring_a_record_back_after_a_delay_without_holding_others_back()
-> rill::Result<()> {
    let app = App::new("topics_test")
        .partitions(2)
        .agents([retry_later::agent()])
        .test()
        .await?;
    let orders = [(200, "/xx"), (201, "/"), (202, "/always"), (203, "/x")];
    for (id, url) in orders {
        app.producer()
            .send_to(
                "later_orders",
                &Order {
                    id,
                    url: url.into(),
                },
            )
            .await?;
    }
    app.producer().flush().await?;
    app.wait_until("one dead letter", |app| {
        app.count("topics_test-retry_later-dlq").unwrap_or(0) >= 1
    })
    .await?;
    let mut done: Vec<u64> = app
        .expect::<Done>("later_done", 3)
        .await?
        .iter()
        .map(|d| d.id)
        .collect();
    done.sort();
    assert_eq!(done, vec![200, 201, 203]);
    // 200 went through retry-1 and came back; 202 through retry-1 and retry-2, then the DLQ.
    assert_eq!(app.count("topics_test-retry_later-retry-1")?, 3);
    assert_eq!(app.count("topics_test-retry_later-retry-2")?, 2);
    let dead = &app.records("topics_test-retry_later-dlq")?[0];
    assert_eq!(header(dead, "rill.source.topic"), "later_orders");
    assert_eq!(header(dead, "rill.attempts"), "3");
    let source = app
        .records("later_orders")?
        .into_iter()
        .find(|r| r.value == dead.value)
        .expect("the source record");
    assert_eq!(
        header(dead, "rill.source.offset"),
        source.offset.to_string()
    );
    assert_eq!(
        header(dead, "rill.source.partition"),
        source.partition.to_string()
    );
    // The record waited in the retry topic at least its delay: 50 ms, then 200 ms.
    let retried = app.records("topics_test-retry_later-retry-2")?;
    for r in retried {
        let due: i64 = header(&r, "rill.retry.due").parse().expect("due");
        let failed: i64 = header(&r, "rill.failed_at").parse().expect("failed_at");
        assert!(due - failed >= 200, "retry-2 delays by 4 × 50 ms");
    }
    app.stop().await
}

#[agent(topic = "skipped_orders", sink = "skipped_done", on_error = "skip")]
async fn skipping(mut orders: Stream<Order>, out: Sink<Done>) -> rill::Result<()> {
    while let Some(order) = orders.next().await {
        handle(&order, &out).await?;
    }
    Ok(())
}

#[tokio::test]
async fn skip_counts_and_continues() -> rill::Result<()> {
    let app = App::new("skip_test")
        .agents([skipping::agent()])
        .test()
        .await?;
    for (id, url) in [(1, "/"), (2, "/fail"), (3, "/panic"), (4, "/")] {
        app.producer()
            .send_to(
                "skipped_orders",
                &Order {
                    id,
                    url: url.into(),
                },
            )
            .await?;
    }
    app.producer()
        .send_raw(raw("skipped_orders", b"nope".to_vec()))
        .await?;
    app.producer().flush().await?;
    let mut done: Vec<u64> = app
        .expect::<Done>("skipped_done", 2)
        .await?
        .iter()
        .map(|d| d.id)
        .collect();
    done.sort();
    assert_eq!(done, vec![1, 4]);
    app.wait_until("three skipped", |app| {
        app.stat("skipping", |s| &s.skipped) == 3
    })
    .await?;
    assert_eq!(app.count("skip_test-skipping-dlq")?, 0);
    app.stop().await
}

#[agent(topic = "stopping_orders", sink = "stopping_done", on_error = "stop")]
async fn stopping(mut orders: Stream<Order>, out: Sink<Done>) -> rill::Result<()> {
    while let Some(order) = orders.next().await {
        handle(&order, &out).await?;
    }
    Ok(())
}

#[tokio::test]
async fn stop_does_not_commit_past_the_failing_record() -> rill::Result<()> {
    let app = App::new("stop_test")
        .partitions(1)
        .agents([stopping::agent()])
        .test()
        .await?;
    for (id, url) in [(1, "/"), (2, "/"), (3, "/fail"), (4, "/")] {
        app.producer()
            .send_to(
                "stopping_orders",
                &Order {
                    id,
                    url: url.into(),
                },
            )
            .await?;
    }
    app.producer().flush().await?;
    let done: Vec<Done> = app.expect("stopping_done", 2).await?;
    assert_eq!(done, vec![Done { id: 1 }, Done { id: 2 }]);
    let group = "stop_test-stopping";
    app.wait_until("the records before it committed", |app| {
        app.committed(group, "stopping_orders", 0).ok().flatten() == Some(2)
    })
    .await?;
    common::settle().await;
    assert_eq!(
        app.committed(group, "stopping_orders", 0)?,
        Some(2),
        "offset 2 (the failing record) is where a restart resumes"
    );
    assert_eq!(app.count("stopping_done")?, 2, "nothing after it ran");
    let err = app
        .stop()
        .await
        .expect_err("the worker reports the failure");
    assert!(err.to_string().contains("cannot handle order 3"), "{err}");
    Ok(())
}

static HOLD_CALLS: AtomicU32 = AtomicU32::new(0);

static HOLD_ORDER: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[agent(
    topic = "held_orders",
    sink = "held_done",
    on_error = "retry",
    retries = 2,
    retry_backoff_ms = 300
)]
async fn hold_one_partition(mut orders: Stream<Order>, out: Sink<Done>) -> rill::Result<()> {
    while let Some(order) = orders.next().await {
        flaky(&order, &out, &HOLD_CALLS).await?;
        HOLD_ORDER
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(order.id);
    }
    Ok(())
}

#[tokio::test]
async fn an_in_place_retry_holds_back_only_its_partition() -> rill::Result<()> {
    let app = App::new("hold_test")
        .partitions(2)
        .agents([hold_one_partition::agent()])
        .test()
        .await?;
    let to = |partition: i32, id: u64, url: &str| {
        let mut r = raw(
            "held_orders",
            serde_json::to_vec(&serde_json::json!({ "id": id, "url": url })).expect("json"),
        );
        r.partition = Some(partition);
        r
    };
    // Partition 0: an order that fails twice (about 0.3 s + 0.6 s of backoff), then one
    // behind it. Partition 1: three orders that succeed.
    app.producer().send_raw(to(0, 300, "/xx")).await?;
    app.producer().send_raw(to(0, 301, "/")).await?;
    app.producer().flush().await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    for id in [310, 311, 312] {
        app.producer().send_raw(to(1, id, "/")).await?;
    }
    app.producer().flush().await?;
    app.expect::<Done>("held_done", 5).await?;
    // The order the agent finished them in (the output topic spreads them over partitions).
    let done = HOLD_ORDER.lock().unwrap().clone();
    assert_eq!(
        done,
        vec![310, 311, 312, 300, 301],
        "partition 1 ran while partition 0 waited; partition 0 kept its order"
    );
    app.stop().await
}

#[tokio::test]
async fn the_app_wide_policy_applies_to_agents_that_do_not_choose_one() -> rill::Result<()> {
    let app = App::new("default_policy")
        .on_error(rill::OnError::Skip)
        .agents([process::agent()])
        .test()
        .await?;
    for (id, url) in [(1, "/fail"), (2, "/")] {
        app.producer()
            .send_to(
                "orders",
                &Order {
                    id,
                    url: url.into(),
                },
            )
            .await?;
    }
    app.producer().flush().await?;
    app.expect::<Done>("done", 1).await?;
    app.wait_until("skipped", |app| app.stat("process", |s| &s.skipped) == 1)
        .await?;
    assert_eq!(app.count("default_policy-process-dlq")?, 0);
    app.stop().await
}
