//! Timers on a real Apache Kafka broker: leader-only timers run on exactly one of two workers
//! (elected through the consumer group `<app>-__leader`), the other worker takes over when the
//! leader stops, and timers without `on_leader` run on every worker. Under exactly-once a run's
//! sends commit in one transaction, and a failed run's never do.

mod common;

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use rill::{App, OnError, ProcessingGuarantee, TimerSpec, Worker};

/// A timer sending `<worker>` to `topic` every 200 ms.
fn beat(name: &str, worker: &str, topic: &str, on_leader: bool) -> TimerSpec {
    let (worker, topic) = (worker.to_owned(), topic.to_owned());
    TimerSpec::every(name, Duration::from_millis(200))
        .on_leader(on_leader)
        .run(move |cx| {
            let (worker, topic) = (worker.clone(), topic.clone());
            async move { cx.producer().send_to(&topic, &worker).await }
        })
}

fn worker_app(app_id: &str, bootstrap: &str, data: &std::path::Path, me: &str, run: &str) -> App {
    common::kafka_app(app_id, bootstrap, data)
        .agents([])
        .timers([
            beat("leader_beat", me, &format!("kt_leader_{run}"), true),
            beat("every_beat", me, &format!("kt_every_{run}"), false),
        ])
}

/// Waits until exactly one of the workers leads; checks that never both do meanwhile.
async fn one_leader(workers: &[&Worker], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let leading: Vec<usize> = (0..workers.len())
            .filter(|i| workers[*i].is_leader())
            .collect();
        assert!(leading.len() <= 1, "two workers lead at once");
        if let [one] = leading[..] {
            return one;
        }
        assert!(
            Instant::now() < deadline,
            "no worker became leader within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader, once one worker has led for 2 s without a change (at most one leads at any
/// time meanwhile).
async fn stable_leader(workers: &[&Worker]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(90);
    'again: loop {
        let leader = one_leader(workers, Duration::from_secs(60)).await;
        let held_from = Instant::now();
        while held_from.elapsed() < Duration::from_secs(2) {
            assert!(Instant::now() < deadline, "the leadership never settled");
            if one_leader(workers, Duration::from_secs(30)).await != leader {
                continue 'again;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        return leader;
    }
}

/// Who sent the records of `topic` so far (up to its end offset now; the timers keep sending).
fn senders(bootstrap: &str, topic: &str) -> Vec<String> {
    let end = tokio::task::block_in_place(|| common::end_offsets(bootstrap, topic, 1));
    let end = usize::try_from(end).expect("offset");
    let read = common::read_topic(
        bootstrap,
        topic,
        Duration::from_secs(30),
        Duration::ZERO,
        |r| r.len() >= end,
    );
    read.iter()
        .take(end)
        .map(common::kafka::Read::text)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_of_two_runs_leader_only_timers_and_another_takes_over() -> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let run = common::run_id();
    let app_id = format!("kt_{run}");
    let (leader_topic, every_topic) = (format!("kt_leader_{run}"), format!("kt_every_{run}"));
    tokio::task::block_in_place(|| {
        common::create_topic(&bootstrap, &leader_topic, 1, &[]);
        common::create_topic(&bootstrap, &every_topic, 1, &[]);
    });
    let (da, db) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = worker_app(&app_id, &bootstrap, da.path(), "a", &run)
        .start()
        .await?;
    let b = worker_app(&app_id, &bootstrap, db.path(), "b", &run)
        .start()
        .await?;
    // The first worker may lead alone for a moment; the second one joining can move the
    // partition (a range assignment): wait until the election group is stable with both.
    let group = format!("{app_id}-__leader");
    tokio::task::block_in_place(|| {
        common::wait_for(
            "both workers in the election group",
            Duration::from_secs(90),
            || {
                let client = common::client(&bootstrap, &[]);
                let groups = client.fetch_group_list(Some(&group), Duration::from_secs(5));
                groups.is_ok_and(|list| {
                    list.groups()
                        .iter()
                        .any(|g| g.state() == "Stable" && g.members().len() == 2)
                })
            },
        )
    });
    let first = stable_leader(&[&a, &b]).await;
    // Beats before this come from whoever led while the group settled.
    let settled = tokio::task::block_in_place(|| common::end_offsets(&bootstrap, &leader_topic, 1));
    let settled = usize::try_from(settled).expect("offset");
    // A few seconds of beats with both workers up and one leading throughout.
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        assert_eq!(
            one_leader(&[&a, &b], Duration::from_secs(1)).await,
            first,
            "the leader changed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names = ["a", "b"];
    let led: Vec<String> = senders(&bootstrap, &leader_topic);
    let since = &led[settled.min(led.len())..];
    assert!(since.len() >= 5, "leader beats: {led:?}");
    assert!(
        since.iter().all(|w| w == names[first]),
        "only the leader ran the timer: {led:?}"
    );
    let every = senders(&bootstrap, &every_topic);
    assert!(
        every.iter().any(|w| w == "a") && every.iter().any(|w| w == "b"),
        "{every:?}"
    );
    // The leader stops: the other one leads within a rebalance, and its beats follow.
    let (leader, other) = if first == 0 { (a, b) } else { (b, a) };
    let before = led.len();
    leader.shutdown().await?;
    let waited = Instant::now();
    while !other.is_leader() {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "no takeover within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = senders(&bootstrap, &leader_topic);
    let successor = names[1 - first];
    assert!(
        after[before..].iter().any(|w| w == successor),
        "the new leader's beats follow: {:?}",
        &after[before..]
    );
    let rill_leader = other.metrics_text();
    assert!(rill_leader.contains("rill_leader 1"), "{rill_leader}");
    other.shutdown().await
}

/// Each call sends three records; the first call then fails and is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_exactly_once_a_failed_runs_sends_are_never_committed() -> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let run = common::run_id();
    let topic = format!("kt_eos_{run}");
    tokio::task::block_in_place(|| common::create_topic(&bootstrap, &topic, 1, &[]));
    let calls = Arc::new(AtomicU32::new(0));
    let (counted, out) = (calls.clone(), topic.clone());
    let timer = TimerSpec::every("eos_beat", Duration::from_millis(300))
        .on_error(OnError::Retry {
            attempts: 1,
            backoff: Duration::from_millis(10),
        })
        .run(move |cx| {
            let call = counted.fetch_add(1, Ordering::SeqCst);
            let out = out.clone();
            async move {
                for i in 0..3 {
                    cx.producer().send_to(&out, &format!("{call}-{i}")).await?;
                }
                if call == 0 {
                    return Err(rill::Error::User("fails after sending".into()));
                }
                Ok(())
            }
        });
    let data = tempfile::tempdir().expect("tempdir");
    let worker = common::kafka_app(&format!("kt_eos_{run}"), &bootstrap, data.path())
        .processing_guarantee(ProcessingGuarantee::ExactlyOnce)
        .agents([])
        .timers([timer])
        .start()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while calls.load(Ordering::SeqCst) < 4 {
        assert!(
            Instant::now() < deadline,
            "the timer did not run four times"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await?;
    let (committed, all) = tokio::task::block_in_place(|| {
        (
            common::read_to_end(&bootstrap, &topic, "read_committed"),
            common::read_to_end(&bootstrap, &topic, "read_uncommitted"),
        )
    });
    let committed: Vec<String> = committed.iter().map(common::kafka::Read::text).collect();
    assert!(
        committed.len() >= 9,
        "three runs or more committed: {committed:?}"
    );
    assert!(
        committed.iter().all(|t| !t.starts_with("0-")),
        "the failed call's sends were committed: {committed:?}"
    );
    // Each run's three sends are in one transaction: whole runs only.
    assert_eq!(committed.len() % 3, 0, "{committed:?}");
    assert_eq!(
        all.len(),
        committed.len(),
        "nothing was produced and aborted either"
    );
    Ok(())
}
