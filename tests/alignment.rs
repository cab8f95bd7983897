//! An agent over two topics with backlogs reads them in step in event time
//! (`Config::read_ahead`, `io/transport/align.rs`): a sparse topic (a record every 2 s of
//! event time) is not read far ahead of a dense one (five per second) over the same 20,000 s,
//! on the embedded log and on the broker. Without the limit (`RILL_READ_AHEAD_MS=off`) the
//! sparse topic's backlog is read through while the dense one is far behind.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use rill::join::Either;
use rill::prelude::*;
use rill::{AgentSpec, TopicSpec};

const HERE: &str = "tests/alignment.rs";
/// Records of the sparse topic, 2 s apart; the dense one has ten times as many, 200 ms apart.
const SPARSE: i64 = 10_000;
const DENSE: i64 = 10 * SPARSE;

#[record]
#[derive(Debug, Clone)]
struct Tick {
    #[record(timestamp)]
    at: i64,
}

/// What the agent saw: records read, and the largest lead in event time of one topic's last
/// record over the other's.
#[derive(Default)]
struct Seen {
    records: AtomicU64,
    lead_ms: AtomicI64,
}

fn agent(dense: &str, sparse: &str, seen: Arc<Seen>) -> AgentSpec {
    let (dense_topic, sparse_topic) = (dense.to_owned(), sparse.to_owned());
    AgentSpec::new("in_step", HERE)
        .source(TopicSpec::of::<Tick>(dense, HERE))
        .source(TopicSpec::of::<Tick>(sparse, HERE))
        .co_partitioned()
        .run(move |mut ctx| {
            let (seen, dense, sparse) = (seen.clone(), dense_topic.clone(), sparse_topic.clone());
            async move {
                let mut ticks = ctx
                    .stream_of::<Tick>(&dense)?
                    .either(ctx.stream_of::<Tick>(&sparse)?);
                let (mut last_dense, mut last_sparse) = (None, None);
                while let Some(tick) = ticks.next().await {
                    match tick {
                        Either::Left(t) => last_dense = Some(t.at),
                        Either::Right(t) => last_sparse = Some(t.at),
                    }
                    if let (Some(d), Some(s)) = (last_dense, last_sparse) {
                        seen.lead_ms.fetch_max((d - s).abs(), Ordering::Relaxed);
                    }
                    seen.records.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        })
}

/// The dense and sparse backlogs over the same 20,000 s, from six hours ago (within any
/// broker's retention).
fn backlogs() -> (Vec<Tick>, Vec<Tick>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let base = now - 6 * 3_600_000;
    let dense = (0..DENSE).map(|i| Tick { at: base + i * 200 }).collect();
    let sparse = (0..SPARSE)
        .map(|i| Tick {
            at: base + i * 2000,
        })
        .collect();
    (dense, sparse)
}

/// Runs the agent over the two backlogs on the embedded log with `read_ahead`; the largest
/// lead it saw.
async fn embedded_lead(read_ahead: Option<Duration>) -> rill::Result<i64> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dense, sparse) = backlogs();
    let loader = App::new("aligned")
        .partitions(1)
        .test_in(dir.path())
        .await?;
    for (topic, ticks) in [("dense", &dense), ("sparse", &sparse)] {
        for tick in ticks {
            loader.producer().send_to(topic, tick).await?;
        }
    }
    loader.producer().flush().await?;
    loader.stop().await?;
    let seen = Arc::new(Seen::default());
    let app = App::new("aligned")
        .partitions(1)
        .configure(|c| c.read_ahead = read_ahead)
        .agents([agent("dense", "sparse", seen.clone())])
        .test_in(dir.path())
        .await?;
    app.wait_until("both backlogs are read", |_| {
        seen.records.load(Ordering::Relaxed) >= (DENSE + SPARSE) as u64
    })
    .await?;
    app.stop().await?;
    Ok(seen.lead_ms.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_log_a_topic_is_not_read_far_ahead_of_the_other() -> rill::Result<()> {
    // A fetch takes 2,000 records of a partition: the sparse topic's span 4,000 s, which is
    // as far ahead as it can get before it is held.
    let aligned = embedded_lead(Some(Duration::from_secs(1))).await?;
    assert!(aligned <= 4_001_000, "lead {aligned} ms");
    let unaligned = embedded_lead(None).await?;
    assert!(
        unaligned >= 15_000_000,
        "lead {unaligned} ms without the limit"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_broker_a_topic_is_not_read_far_ahead_of_the_other() -> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let run = common::run_id();
    let (dense, sparse) = (format!("al_dense_{run}"), format!("al_sparse_{run}"));
    common::create_topic(&bootstrap, &dense, 1, &[]);
    common::create_topic(&bootstrap, &sparse, 1, &[]);
    let (dense_ticks, sparse_ticks) = backlogs();
    tokio::task::block_in_place(|| {
        // The event time is the message timestamp, as rill's own sends stamp it.
        let producer = common::producer(&bootstrap);
        for (topic, ticks) in [(&dense, &dense_ticks), (&sparse, &sparse_ticks)] {
            for tick in ticks {
                let value = serde_json::to_vec(tick).expect("json");
                let record: rdkafka::producer::BaseRecord<'_, [u8], [u8]> =
                    rdkafka::producer::BaseRecord::to(topic)
                        .payload(value.as_slice())
                        .timestamp(tick.at);
                common::kafka::enqueue(&producer, record);
            }
        }
        rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).expect("flush");
    });
    let seen = Arc::new(Seen::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = common::kafka_app(&format!("al_{run}"), &bootstrap, dir.path())
        .configure(|c| c.read_ahead = Some(Duration::from_secs(1)))
        .agents([agent(&dense, &sparse, seen.clone())])
        .start()
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while seen.records.load(Ordering::Relaxed) < (DENSE + SPARSE) as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} records",
            seen.records.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.shutdown().await?;
    // A fetched batch holds at most 2,000 records (the sparse topic's span 4,000 s).
    let lead = seen.lead_ms.load(Ordering::Relaxed);
    assert!(lead <= 4_001_000, "lead {lead} ms");
    Ok(())
}
