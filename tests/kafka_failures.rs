//! Failure handling against real Apache Kafka brokers: dead letters for malformed records and
//! failing agents on the broker of `scripts/test.sh`, and a broker outage (SIGKILL, 20 s
//! down, restart on the same data) under a worker that keeps running, on a broker of the
//! test's own. Workers run in-process; input is produced and output read with plain rdkafka
//! clients.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Read;
use common::records::{Done, MAX_RECORD_BYTES, Order, handle, malformed, now_ms};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ProducerContext, ThreadedProducer};
use rill::prelude::*;
use rill::{AgentSpec, AgentStats, TopicSpec};

/// How long to keep reading after the expected records, to see anything written twice.
const SETTLE: Duration = Duration::from_secs(3);

// ------------------------------------------------------------------ dead letters --

fn process(orders: &str, done: &str) -> AgentSpec {
    AgentSpec::new("process", "tests/kafka_failures.rs")
        .source(TopicSpec::of::<Order>(orders, "tests/kafka_failures.rs"))
        .sink(TopicSpec::of::<Done>(done, "tests/kafka_failures.rs"))
        .on_error(rill::OnError::DeadLetter)
        .run(|mut ctx| async move {
            let mut orders = ctx.stream::<Order>()?;
            let out = ctx.sink::<Done>()?;
            while let Some(order) = orders.next().await {
                handle(&order, &out).await?;
            }
            Ok(())
        })
}

/// What should become of an input record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Good,
    Malformed(&'static str),
    Fails,
    Panics,
}

/// One input record: its fate, key, value and headers.
struct Input {
    fate: Fate,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, String)>,
}

fn input(i: u64) -> Input {
    let order = |url: &str| {
        serde_json::json!({"id": i, "url": url})
            .to_string()
            .into_bytes()
    };
    let (fate, value) = if i % 10 == 3 {
        let (value, way) = malformed(i);
        (Fate::Malformed(way), value)
    } else if i % 40 == 7 {
        (Fate::Fails, order("/fail"))
    } else if i % 40 == 27 {
        (Fate::Panics, order("/panic"))
    } else {
        (Fate::Good, order("/ok"))
    };
    Input {
        fate,
        // Some records without a key: a dead letter keeps that too.
        key: (!i.is_multiple_of(7)).then(|| format!("order-{i}").into_bytes()),
        value,
        headers: vec![
            ("origin".into(), "test".into()),
            ("idx".into(), i.to_string()),
        ],
    }
}

/// Produces with a plain rdkafka producer and waits for delivery.
fn produce_inputs(bootstrap: &str, topic: &str, inputs: &[Input]) {
    tokio::task::block_in_place(|| {
        let p = common::producer(bootstrap);
        for input in inputs {
            let headers = input.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
                h.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                })
            });
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
                .payload(&input.value[..])
                .headers(headers);
            if let Some(k) = &input.key {
                rec = rec.key(&k[..]);
            }
            common::enqueue(&p, rec);
        }
        p.flush(Duration::from_secs(60)).expect("flush");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_on_kafka() -> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let started = Instant::now();
    let run = common::run_id();
    let app_id = format!("kf_dlq_{run}");
    let orders = format!("kf_dlq_orders_{run}");
    let done_topic = format!("kf_dlq_done_{run}");
    let dlq = format!("{app_id}-process-dlq");
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = common::kafka_app(&app_id, &bootstrap, dir.path())
        .agents([process(&orders, &done_topic)])
        .partitions(4)
        .configure(|c| c.max_record_bytes = MAX_RECORD_BYTES)
        .start()
        .await?;

    const N: u64 = 10_000;
    let inputs: Vec<Input> = (0..N).map(input).collect();
    let count = |f: fn(Fate) -> bool| inputs.iter().filter(|i| f(i.fate)).count();
    let good: BTreeSet<u64> = (0..N)
        .filter(|i| inputs[*i as usize].fate == Fate::Good)
        .collect();
    let malformed_n = count(|f| matches!(f, Fate::Malformed(_)));
    let (fails, panics) = (count(|f| f == Fate::Fails), count(|f| f == Fate::Panics));
    let oversized = count(|f| f == Fate::Malformed("oversized"));
    assert_eq!((malformed_n, fails + panics), (1_000, 500));
    let failed_from = now_ms();
    produce_inputs(&bootstrap, &orders, &inputs);

    // The source as the broker has it: (partition, offset) -> record, and each index once.
    let sources = common::read_topic(
        &bootstrap,
        &orders,
        Duration::from_secs(60),
        Duration::ZERO,
        |r| r.len() >= N as usize,
    );
    assert_eq!(sources.len(), N as usize, "every input record was produced");
    let idx = |r: &Read| -> u64 { r.header("idx").expect("idx").parse().expect("idx") };
    let mut produced = BTreeSet::new();
    for s in &sources {
        let i = idx(s);
        assert!(produced.insert(i), "input {i} produced twice");
        let sent = &inputs[i as usize];
        assert_eq!(s.value.as_deref().unwrap_or_default(), &sent.value[..]);
        assert_eq!(s.key, sent.key);
    }
    let sources: HashMap<(i32, i64), Read> = sources
        .into_iter()
        .map(|r| ((r.partition, r.offset), r))
        .collect();

    // Every good record exactly once.
    let done = common::read_topic(
        &bootstrap,
        &done_topic,
        Duration::from_secs(120),
        SETTLE,
        |r| r.len() >= good.len(),
    );
    let ids: Vec<u64> = done
        .iter()
        .map(|d| d.json()["id"].as_u64().expect("id"))
        .collect();
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    let missing: Vec<u64> = good.difference(&distinct).copied().collect();
    assert!(
        missing.is_empty(),
        "{} good records were not processed, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    let extra: Vec<u64> = distinct.difference(&good).copied().collect();
    assert!(
        extra.is_empty(),
        "{} records that should have failed were processed, e.g. {:?}",
        extra.len(),
        &extra[..extra.len().min(20)]
    );
    assert_eq!(ids.len(), good.len(), "no good record twice");

    // Every bad record once in the dead-letter topic, as it was, with why and where from.
    let expected_dead = malformed_n + fails + panics;
    let dead = common::read_topic(&bootstrap, &dlq, Duration::from_secs(120), SETTLE, |r| {
        r.len() >= expected_dead
    });
    assert_eq!(dead.len(), expected_dead, "dead letters");
    let written = tokio::task::block_in_place(|| common::end_offsets(&bootstrap, &dlq, 4));
    assert_eq!(written, expected_dead as i64, "nothing dead-lettered twice");
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut oversized_seen = 0;
    let failed_until = now_ms();
    for d in &dead {
        let h = |name: &str| {
            d.header(name)
                .unwrap_or_else(|| panic!("dead letter without `{name}`: {d:?}"))
        };
        let partition: i32 = h("rill.source.partition").parse().expect("partition");
        let offset: i64 = h("rill.source.offset").parse().expect("offset");
        let source = sources
            .get(&(partition, offset))
            .unwrap_or_else(|| panic!("no source record at {partition}/{offset}"));
        let i = idx(source);
        assert!(seen.insert(i), "input {i} dead-lettered twice");
        assert_eq!(h("rill.source.topic"), orders);
        assert_eq!(h("rill.agent"), "process");
        assert_eq!(h("rill.attempts"), "1");
        let failed_at: i64 = h("rill.failed_at").parse().expect("failed_at");
        assert!(
            (failed_from..=failed_until).contains(&failed_at),
            "failed_at {failed_at} outside the test's run"
        );
        assert_eq!(d.value, source.value, "the original bytes of input {i}");
        assert_eq!(d.key, source.key, "the original key of input {i}");
        let original: Vec<_> = d
            .headers
            .iter()
            .filter(|(n, _)| !n.starts_with("rill."))
            .cloned()
            .collect();
        assert_eq!(
            original, source.headers,
            "the original headers of input {i}"
        );
        let kind = h("rill.error.kind");
        let error = h("rill.error");
        match (inputs[i as usize].fate, kind.as_str()) {
            (Fate::Malformed(way), "decode") => {
                assert!(error.contains("cannot decode"), "{way}: {error}");
                if way == "oversized" {
                    assert!(error.contains("RILL_MAX_RECORD_BYTES"), "{error}");
                }
                if error.contains("RILL_MAX_RECORD_BYTES") {
                    oversized_seen += 1;
                }
            }
            (Fate::Fails, "error") => {
                assert!(
                    error.contains(&format!("cannot handle order {i}")),
                    "{error}"
                )
            }
            (Fate::Panics, "panic") => {
                assert!(error.contains(&format!("order {i} blew up")), "{error}")
            }
            (fate, kind) => panic!("input {i} ({fate:?}) dead-lettered as `{kind}`: {error}"),
        }
        *kinds.entry(kind).or_default() += 1;
    }
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("decode".to_string(), malformed_n),
            ("error".to_string(), fails),
            ("panic".to_string(), panics),
        ])
    );
    assert_eq!(
        oversized_seen, oversized,
        "oversized records are named as such"
    );
    assert_eq!(
        common::stat(&worker, "process", |s| &s.dead_lettered),
        expected_dead as u64
    );
    assert_eq!(
        common::stat(&worker, "process", |s| &s.failures),
        (fails + panics) as u64
    );
    assert_eq!(
        common::stat(&worker, "process", |s| &s.decode_errors),
        malformed_n as u64
    );
    assert!(worker.health().is_ready());

    // Still alive.
    let last = 99_999;
    tokio::task::block_in_place(|| {
        let value = serde_json::json!({"id": last, "url": "/ok"}).to_string();
        common::produce(&common::producer(&bootstrap), &orders, &[(None, value)]);
    });
    let after = common::read_topic(
        &bootstrap,
        &done_topic,
        Duration::from_secs(60),
        Duration::ZERO,
        |r| r.iter().any(|d| d.json()["id"].as_u64() == Some(last)),
    );
    assert!(
        after.iter().any(|d| d.json()["id"].as_u64() == Some(last)),
        "the worker keeps processing after the failures"
    );
    eprintln!(
        "dead_letters_on_kafka: {} processed, {} dead-lettered ({} decode, {fails} errors, {panics} panics) in {:.1?}",
        good.len(),
        dead.len(),
        malformed_n,
        started.elapsed()
    );
    worker.shutdown().await?;
    let committed = tokio::task::block_in_place(|| {
        common::committed_total(&bootstrap, &format!("{app_id}-process"), &orders, 4)
    });
    assert_eq!(
        committed,
        N as i64 + 1,
        "offsets are committed past every record, failed or not"
    );
    Ok(())
}

// ---------------------------------------------------------------- broker outage --

/// Port of the broker of `a_broker_outage_loses_nothing` (its controller: the next one).
const OUTAGE_PORT: u16 = 19792;

#[record]
#[derive(Debug, Clone)]
struct Item {
    n: u64,
}

fn copy(source: &str, sink: &str) -> AgentSpec {
    AgentSpec::new("copy", "tests/kafka_failures.rs")
        .source(TopicSpec::of::<Item>(source, "tests/kafka_failures.rs"))
        .sink(TopicSpec::of::<Item>(sink, "tests/kafka_failures.rs"))
        .run(|mut ctx| async move {
            let mut items = ctx.stream::<Item>()?;
            let out = ctx.sink::<Item>()?;
            while let Some(item) = items.next().await {
                out.send(&item).await?;
            }
            Ok(())
        })
}

/// Counts deliveries of the input producer.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

struct Counting(Arc<Deliveries>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                *self.0.last_error.lock().expect("last error") = Some(e.to_string());
            }
        }
    }
}

/// Records the input producer sends, `RATE` a second.
const OUTAGE_N: u64 = 20_000;
const RATE: u64 = 500;
const OUTAGE: Duration = Duration::from_secs(20);

/// Produces `{"n": 0..OUTAGE_N}` at `RATE` a second with an idempotent producer that waits out
/// outages (`message.timeout.ms=0`), then flushes; `sent` counts what was handed to it.
fn produce_through_outages(
    bootstrap: String,
    topic: String,
    sent: Arc<AtomicU64>,
) -> (std::thread::JoinHandle<()>, Arc<Deliveries>) {
    let deliveries = Arc::new(Deliveries::default());
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "0")
        .set("linger.ms", "5")
        .create_with_context(Counting(deliveries.clone()))
        .expect("producer");
    let handle = std::thread::spawn(move || {
        let start = Instant::now();
        for n in 0..OUTAGE_N {
            if n.is_multiple_of(RATE / 10) {
                let due = start + Duration::from_millis(n * 1_000 / RATE);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            let key = format!("k{}", n % 97);
            let value = serde_json::json!({ "n": n }).to_string();
            let rec: BaseRecord<'_, str, str> = BaseRecord::to(&topic)
                .key(key.as_str())
                .payload(value.as_str());
            common::enqueue(&producer, rec);
            sent.fetch_add(1, Ordering::Relaxed);
        }
        producer
            .flush(Duration::from_secs(120))
            .expect("flushing the input producer");
    });
    (handle, deliveries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_nothing() -> rill::Result<()> {
    if common::kafka_bootstrap().is_none() {
        return Ok(());
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let started = Instant::now();
    let broker = tokio::task::block_in_place(|| common::OwnBroker::start(OUTAGE_PORT));
    let bootstrap = broker.bootstrap.clone();
    let run = common::run_id();
    let app_id = format!("kf_outage_{run}");
    let items = format!("kf_outage_items_{run}");
    let copies = format!("kf_outage_copies_{run}");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut worker = common::kafka_app(&app_id, &bootstrap, dir.path())
        .agents([copy(&items, &copies)])
        .partitions(4)
        .start()
        .await?;
    let health = worker.health();
    let stats = worker.stats("copy").expect("agent stats");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Runs the worker until told to stop: `Err` if it ended before.
    let running = tokio::spawn(async move {
        let ended = tokio::select! {
            r = worker.wait() => Some(r),
            _ = stop_rx => None,
        };
        let stopped = worker.shutdown().await;
        match ended {
            Some(r) => Err(format!(
                "the worker ended on its own: {r:?} (shutdown: {stopped:?})"
            )),
            None => Ok(stopped),
        }
    });

    let sent = Arc::new(AtomicU64::new(0));
    let (producer, deliveries) =
        produce_through_outages(bootstrap.clone(), items.clone(), sent.clone());
    let records_in = || AgentStats::get(&stats.records_in);
    common::wait_for_async("the worker copies records", Duration::from_secs(60), || {
        records_in() >= 2_000
    })
    .await;
    assert!(health.is_ready());

    tokio::task::block_in_place(|| broker.kill());
    let killed = Instant::now();
    let (sent_at_kill, in_at_kill) = (sent.load(Ordering::Relaxed), records_in());
    let mut not_ready_after = None;
    let mut outage_error = None;
    while killed.elapsed() < OUTAGE {
        if !health.is_ready() && not_ready_after.is_none() {
            not_ready_after = Some(killed.elapsed());
            outage_error = health.last_error();
        }
        assert!(
            !running.is_finished(),
            "the worker stopped during the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready_at_end_of_outage = health.is_ready();
    let in_during_outage = records_in() - in_at_kill;
    let sent_in_outage = sent.load(Ordering::Relaxed) - sent_at_kill;
    assert!(
        sent_in_outage > 0 && sent_at_kill + sent_in_outage < OUTAGE_N,
        "input is produced before, during and after the outage"
    );
    tokio::task::block_in_place(|| broker.restart());
    let restarted = killed.elapsed();
    let ready_after = common::wait_for_async(
        "ready again after the broker came back",
        Duration::from_secs(60),
        || health.is_ready(),
    )
    .await;
    assert!(
        not_ready_after.is_some(),
        "is_ready() stayed true through a {OUTAGE:?} outage"
    );
    assert!(
        !ready_at_end_of_outage,
        "is_ready() was true again before the broker came back"
    );

    tokio::task::block_in_place(|| producer.join()).expect("producer thread");
    assert_eq!(
        deliveries.failed.load(Ordering::Relaxed),
        0,
        "input deliveries failed: {:?}",
        deliveries.last_error.lock().expect("last error")
    );
    assert_eq!(deliveries.ok.load(Ordering::Relaxed), OUTAGE_N);
    let input = tokio::task::block_in_place(|| common::end_offsets(&bootstrap, &items, 4));
    assert_eq!(
        input, OUTAGE_N as i64,
        "the input topic holds each record once"
    );

    // Every input record in the output, possibly more than once (at-least-once).
    let distinct = |r: &[Read]| {
        r.iter()
            .map(|c| c.json()["n"].as_u64().expect("n"))
            .collect::<BTreeSet<u64>>()
    };
    let copied = common::read_topic(&bootstrap, &copies, Duration::from_secs(60), SETTLE, |r| {
        distinct(r).len() >= OUTAGE_N as usize
    });
    let mut times: BTreeMap<u64, u32> = BTreeMap::new();
    for c in &copied {
        *times.entry(c.json()["n"].as_u64().expect("n")).or_default() += 1;
    }
    let missing: Vec<u64> = (0..OUTAGE_N).filter(|n| !times.contains_key(n)).collect();
    let duplicates = copied.len() - times.len();
    let most = times.values().copied().max().unwrap_or(0);
    eprintln!(
        "a_broker_outage_loses_nothing: broker killed after {sent_at_kill} sent / {in_at_kill} copied; \
         not ready {:.1?} after the kill ({outage_error:?}); {sent_in_outage} sent and {in_during_outage} taken during the outage; \
         restarted {restarted:.1?} after the kill, ready {ready_after:.1?} later; \
         {} copies of {OUTAGE_N} records: {duplicates} duplicates (at most {most} copies of one), {} lost; total {:.1?}",
        not_ready_after.unwrap_or_default(),
        copied.len(),
        missing.len(),
        started.elapsed()
    );
    assert!(
        missing.is_empty(),
        "{} of {OUTAGE_N} records lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(times.keys().all(|n| *n < OUTAGE_N), "only input records");

    assert!(
        !running.is_finished(),
        "the worker stopped after the outage"
    );
    let _ = stop_tx.send(());
    let stopped = running.await.expect("worker task");
    stopped.unwrap_or_else(|e| panic!("{e}"))?;
    let committed = tokio::task::block_in_place(|| {
        common::committed_total(&bootstrap, &format!("{app_id}-copy"), &items, 4)
    });
    assert_eq!(
        committed, OUTAGE_N as i64,
        "commits resumed after the outage, up to the last record"
    );
    Ok(())
}
