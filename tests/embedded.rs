//! Agents on the embedded transport, through the public test harness: ordering, partitioning,
//! commits, decode failures, restarts and startup checks.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use rill::prelude::*;

#[record]
#[derive(Debug, Clone, PartialEq)]
struct Tick {
    #[record(key)]
    user: String,
    seq: u64,
}

#[record]
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    #[record(key)]
    user: String,
    seq: u64,
    partition: i32,
    offset: i64,
}

#[agent(topic = "ticks", sink = "seen", concurrency = 3)]
async fn relay(ticks: Stream<Tick>, seen: Sink<Seen>) -> rill::Result<()> {
    let mut ticks = ticks.events();
    while let Some(t) = ticks.next().await {
        let out = Seen {
            user: t.user.clone(),
            seq: t.seq,
            partition: t.meta.partition,
            offset: t.meta.offset,
        };
        seen.send(&out).await?;
    }
    Ok(())
}

/// `stop`: the worker stops on the first failure (the default policy dead-letters instead).
#[agent(topic = "bad_ticks", on_error = "stop")]
async fn failing(mut ticks: Stream<Tick>) -> rill::Result<()> {
    if let Some(t) = ticks.next().await {
        return Err(rill::Error::user(format!("cannot handle seq {}", t.seq)));
    }
    Ok(())
}

async fn send_ticks(app: &TestApp, users: usize, per_user: u64) -> rill::Result<()> {
    let ticks = (0..per_user).flat_map(|seq| {
        (0..users).map(move |u| Tick {
            user: format!("user-{u}"),
            seq,
        })
    });
    common::records::send_all(app.producer(), "ticks", ticks).await
}

#[tokio::test]
async fn every_record_once_in_partition_order_across_instances() -> rill::Result<()> {
    let app = App::new("order").agents([relay::agent()]).test().await?;
    send_ticks(&app, 40, 50).await?;
    let seen: Vec<Seen> = app.expect("seen", 2000).await?;
    assert_eq!(seen.len(), 2000, "no record twice");
    let mut by_user: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut partitions = HashSet::new();
    for s in &seen {
        by_user.entry(s.user.clone()).or_default().push(s.seq);
        // Same key, same partition: the embedded log partitions like Kafka's Java client.
        assert_eq!(s.partition, rill_partition(&s.user, 8), "{s:?}");
        partitions.insert(s.partition);
    }
    assert!(
        partitions.len() >= 4,
        "keys should spread over partitions: {partitions:?}"
    );
    for (user, seqs) in by_user {
        assert_eq!(seqs, (0..50).collect::<Vec<_>>(), "order of {user}");
    }
    app.stop().await
}

fn rill_partition(key: &str, n: i32) -> i32 {
    rill::partitioner::partition_for_key(key.as_bytes(), n)
}

#[tokio::test]
async fn offsets_are_committed_for_finished_records() -> rill::Result<()> {
    let app = App::new("commits").agents([relay::agent()]).test().await?;
    send_ticks(&app, 10, 30).await?;
    app.expect::<Seen>("seen", 300).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut total = 0;
        for p in 0..8 {
            total += app.committed("commits-relay", "ticks", p)?.unwrap_or(0);
        }
        if total == 300 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "committed {total} of 300"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await
}

#[tokio::test]
async fn undecodable_records_are_skipped_counted_and_do_not_stop_the_agent() -> rill::Result<()> {
    let app = App::new("decode").agents([relay::agent()]).test().await?;
    app.send_bytes("ticks", Some(b"user-1"), b"{not json")
        .await?;
    app.send_bytes("ticks", Some(b"user-1"), br#"{"user":"user-1"}"#)
        .await?;
    app.send_bytes("ticks", Some(b"user-1"), b"").await?;
    app.send_to(
        "ticks",
        &Tick {
            user: "user-1".into(),
            seq: 7,
        },
    )
    .await?;
    let seen: Vec<Seen> = app.expect("seen", 1).await?;
    assert_eq!(seen[0].seq, 7);
    let stats = app.stats("relay").expect("relay runs");
    assert_eq!(rill::AgentStats::get(&stats.decode_errors), 3);
    assert_eq!(rill::AgentStats::get(&stats.records_out), 1);
    app.stop().await
}

#[tokio::test]
async fn a_failing_agent_stops_the_worker_with_its_error() -> rill::Result<()> {
    let mut worker = App::new("fails")
        .memory()
        .agents([failing::agent()])
        .start()
        .await?;
    worker
        .producer()
        .send_to(
            "bad_ticks",
            &Tick {
                user: "u".into(),
                seq: 41,
            },
        )
        .await?;
    worker.producer().flush().await?;
    let err = common::stop_error(&mut worker, Duration::from_secs(10)).await;
    assert!(err.to_string().contains("cannot handle seq 41"), "{err}");
    worker.shutdown().await
}

#[tokio::test]
async fn one_topic_with_two_types_is_rejected_at_startup_naming_both_places() {
    #[agent(topic = "ticks")]
    async fn as_strings(s: Stream<String>) -> rill::Result<()> {
        drop(s);
        Ok(())
    }
    let err = App::new("conflict")
        .agents([relay::agent(), as_strings::agent()])
        .test()
        .await
        .err()
        .expect("rejected");
    let msg = err.to_string();
    assert!(
        msg.contains("`ticks`") && msg.contains("Tick") && msg.contains("String"),
        "{msg}"
    );
    assert!(
        msg.matches("tests/embedded.rs:").count() == 2,
        "both places named: {msg}"
    );
}

#[tokio::test]
async fn sending_outside_an_agent_is_a_clear_error() {
    const T: Topic<String, Tick> = Topic::new("ticks");
    let err = T
        .send(&Tick {
            user: "u".into(),
            seq: 1,
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("outside an agent"), "{err}");
}

#[tokio::test]
async fn a_clean_restart_continues_where_it_stopped() -> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::new("restart")
        .agents([relay::agent()])
        .test_in(dir.path())
        .await?;
    send_ticks(&app, 10, 20).await?;
    app.expect::<Seen>("seen", 200).await?;
    app.stop().await?;

    let app = App::new("restart")
        .agents([relay::agent()])
        .test_in(dir.path())
        .await?;
    for u in 0..10 {
        app.producer()
            .send_to(
                "ticks",
                &Tick {
                    user: format!("user-{u}"),
                    seq: 20,
                },
            )
            .await?;
    }
    app.producer().flush().await?;
    app.expect::<Seen>("seen", 210).await?;
    // Give a wrongly restarted agent time to reprocess old records before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen: Vec<Seen> = app.read("seen")?;
    assert_eq!(
        seen.len(),
        210,
        "nothing reprocessed after a clean shutdown"
    );
    app.stop().await
}

/// Sends tick `seq` of users 0..10 and flushes.
async fn send_round(app: &TestApp, seq: u64) -> rill::Result<()> {
    for u in 0..10 {
        let tick = Tick {
            user: format!("user-{u}"),
            seq,
        };
        app.producer().send_to("ticks", &tick).await?;
    }
    app.producer().flush().await
}

#[tokio::test]
async fn offset_reset_latest_starts_a_new_group_at_the_end_and_earliest_at_the_start()
-> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::new("reset")
        .agents([relay::agent()])
        .test_in(dir.path())
        .await?;
    send_round(&app, 0).await?;
    app.expect::<Seen>("seen", 10).await?;
    app.stop().await?;

    // Another app id is another group (`<app>-relay`), new to the 10 ticks written: with
    // `latest` it reads only what comes after it started.
    let app = App::new("reset-latest")
        .agents([relay::agent().offset_reset(rill::OffsetReset::Latest)])
        .test_in(dir.path())
        .await?;
    app.wait_ready().await?;
    send_round(&app, 1).await?;
    app.expect::<Seen>("seen", 20).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seqs: Vec<u64> = app.read::<Seen>("seen")?.iter().map(|s| s.seq).collect();
    assert_eq!(seqs.len(), 20, "{seqs:?}");
    assert_eq!(seqs.iter().filter(|&&s| s == 1).count(), 10, "{seqs:?}");
    app.stop().await?;

    // The app-wide default does the same; a group with the default, earliest, reads all 20.
    let app = App::new("reset-app-wide")
        .offset_reset(rill::OffsetReset::Latest)
        .agents([relay::agent()])
        .test_in(dir.path())
        .await?;
    app.wait_ready().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.count("seen")?, 20, "a `latest` group read old ticks");
    app.stop().await?;
    let app = App::new("reset-earliest")
        .agents([relay::agent()])
        .test_in(dir.path())
        .await?;
    app.expect::<Seen>("seen", 40).await?;
    app.stop().await
}

#[tokio::test]
async fn typed_topics_and_filters_compose() -> rill::Result<()> {
    const TICKS: Topic<String, Tick> = Topic::new("typed_ticks");
    const EVEN: Topic<String, Tick> = Topic::new("even_ticks");

    #[agent(topic = TICKS, sink = EVEN)]
    async fn evens(ticks: Stream<Tick>, even: Sink<Tick>) -> rill::Result<()> {
        let mut ticks = ticks.filter(|t| t.seq % 2 == 0).enumerate();
        while let Some((i, t)) = ticks.next().await {
            even.send(&Tick {
                user: t.user,
                seq: i as u64 * 1000 + t.seq,
            })
            .await?;
        }
        Ok(())
    }
    let app = App::new("typed").agents([evens::agent()]).test().await?;
    for seq in 0..6 {
        app.send_to(
            "typed_ticks",
            &Tick {
                user: "one-key".into(),
                seq,
            },
        )
        .await?;
    }
    let got: Vec<Tick> = app.expect("even_ticks", 3).await?;
    let seqs: Vec<u64> = got.iter().map(|t| t.seq).collect();
    assert_eq!(seqs, vec![0, 1002, 2004]);
    app.stop().await
}

/// `n` ticks of one user written to `topic`'s one partition on an embedded log in a new
/// directory, by app `app` with no agents.
async fn preload_ticks(
    app: &str,
    topic: &Topic<String, Tick>,
    n: u64,
) -> rill::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir().expect("tempdir");
    let loader = App::new(app)
        .partitions(1)
        .agents([])
        .topic(topic)
        .test_in(dir.path())
        .await?;
    for seq in 0..n {
        let user = "u".to_owned();
        loader
            .producer()
            .send_to(topic.name(), &Tick { user, seq })
            .await?;
    }
    loader.producer().flush().await?;
    loader.stop().await?;
    Ok(dir)
}

/// A busy agent yields to the tasks sharing its runtime thread every few thousand records
/// (tokio's cooperative budget), even while its next batches are already waiting: on a
/// one-thread runtime the web endpoints, timers and other agents still run.
#[tokio::test(flavor = "current_thread")]
async fn a_busy_agent_lets_the_tasks_sharing_its_thread_run() -> rill::Result<()> {
    const TICKS: Topic<String, Tick> = Topic::new("busy_ticks");
    const N: u64 = 40_000;
    // Written before the agent starts, to one partition: the fetcher keeps its batches coming.
    let dir = preload_ticks("busy", &TICKS, N).await?;

    let spec = rill::AgentSpec::new("busy", "tests/embedded.rs")
        .source(TICKS.spec())
        .run(|mut ctx| async move {
            let mut ticks = ctx.stream::<Tick>()?;
            while let Some(t) = ticks.next().await {
                // Slower than the fetcher reads, so a batch is always waiting.
                let until = std::time::Instant::now() + Duration::from_micros(2);
                while std::time::Instant::now() < until {
                    std::hint::black_box(t.seq);
                }
            }
            Ok(())
        });
    let app = App::new("busy")
        .partitions(1)
        .agents([spec])
        .test_in(dir.path())
        .await?;
    let stats = app.stats("busy").expect("agent stats");
    // This task shares the one thread: each time it runs while the agent is midway counts.
    let mut midway = 0;
    let watch = async {
        loop {
            tokio::task::yield_now().await;
            let n = rill::AgentStats::get(&stats.records_in);
            if n >= N {
                break;
            }
            if n > 0 {
                midway += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), watch)
        .await
        .expect("the agent read every record within 60 s");
    assert!(
        midway >= 3,
        "ran {midway} times while the agent read {N} records"
    );
    app.stop().await
}

/// Commit steps counted while a worker reads a preloaded backlog of 8,000 records slowly (its
/// commit interval 10 ms): (steps by the time it has read 3/4 of them, steps once it has read
/// them all and stepped again).
async fn commits_reading_a_backlog(backlog_interval: Duration) -> rill::Result<(u64, u64)> {
    const TICKS: Topic<String, Tick> = Topic::new("backlog_ticks");
    const N: u64 = 8_000;
    let dir = preload_ticks("backlog", &TICKS, N).await?;

    let spec = rill::AgentSpec::new("backlog", "tests/embedded.rs")
        .source(TICKS.spec())
        .run(|mut ctx| async move {
            let mut ticks = ctx.stream::<Tick>()?;
            while let Some(t) = ticks.next().await {
                // 8,000 records in about 2 s: the fetcher's batches (2,000 records) wait.
                // Yielding lets the runtime fire the commit deadline between records.
                std::thread::sleep(Duration::from_micros(250));
                std::hint::black_box(t.seq);
                tokio::task::yield_now().await;
            }
            Ok(())
        });
    let worker = App::new("backlog")
        .partitions(1)
        .data_dir(dir.path())
        .configure(|c| c.web_port = None)
        .commit_interval(Duration::from_millis(10))
        .backlog_commit_interval(backlog_interval)
        .agents([spec])
        .start()
        .await?;
    let stats = worker.stats("backlog").expect("agent stats");
    let watch = async {
        let mut midway = None;
        loop {
            let read = rill::AgentStats::get(&stats.records_in);
            let commits = rill::AgentStats::get(&stats.commits);
            if read >= N * 3 / 4 && midway.is_none() {
                midway = Some(commits);
            }
            if read >= N && commits > midway.unwrap_or(0) {
                // A step after the last record: at the end of the log, batches are not full.
                return (midway.unwrap_or(0), commits);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let counted = tokio::time::timeout(Duration::from_secs(60), watch)
        .await
        .expect("the worker read every record and committed within 60 s");
    worker.shutdown().await?;
    Ok(counted)
}

/// While an instance reads a backlog (the fetcher's batches come full), its commit steps wait
/// for the backlog commit interval; once it reaches the end of the log, the step comes at the
/// commit interval. With both intervals equal, it steps every 10 ms throughout.
#[tokio::test]
async fn a_backlog_is_committed_at_the_backlog_interval_and_the_end_at_once() -> rill::Result<()> {
    let (midway, done) = commits_reading_a_backlog(Duration::from_secs(3600)).await?;
    assert_eq!(midway, 0, "no step while reading the backlog");
    assert!(done >= 1, "the end of the log is committed");
    let (midway, _) = commits_reading_a_backlog(Duration::from_millis(10)).await?;
    assert!(
        midway >= 10,
        "with the backlog interval at the commit interval, steps every 10 ms: {midway}"
    );
    Ok(())
}
