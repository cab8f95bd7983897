//! Rolling deploys on a real Apache Kafka broker:
//! - workers with `instance_id` (Kafka's `group.instance.id`, static membership) restarted
//!   within the session timeout get their partitions back without a rebalance, so the other
//!   workers of the group keep theirs;
//! - cooperative rebalancing (the default): a worker joining two running ones takes only the
//!   partitions that move, the others keep processing theirs, and a table's counts stay exact
//!   across the change (with `RebalanceProtocol::Eager` as the control: every partition is
//!   revoked).
//!
//! Workers run in-process; input is produced and output read with plain rdkafka clients.

mod common;

use std::time::Duration;

use std::collections::BTreeSet;

use rill::{AgentSpec, App, Either, RebalanceProtocol, TopicSpec, Worker};

struct Setup {
    bootstrap: String,
    app_id: String,
    input: String,
    output: String,
    protocol: RebalanceProtocol,
}

impl Setup {
    fn worker(&self, instance: Option<&str>, data: &std::path::Path) -> App {
        let id = instance.map(str::to_owned);
        let protocol = self.protocol;
        common::kafka_app(&self.app_id, &self.bootstrap, data)
            .configure(move |c| {
                c.instance_id = id;
                c.rebalance_protocol = protocol;
            })
            .agents([common::string_relay("relay", &self.input, &self.output)])
    }
}

/// Two workers share four partitions; the first is stopped and started again at once. The
/// partitions the second had revoked meanwhile, and whether every record was relayed.
async fn restart_one_of_two(
    static_members: bool,
    protocol: RebalanceProtocol,
) -> rill::Result<u64> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(0);
    };
    let run = common::run_id();
    let setup = Setup {
        bootstrap,
        app_id: format!("km_{run}"),
        input: format!("km_in_{run}"),
        output: format!("km_out_{run}"),
        protocol,
    };
    tokio::task::block_in_place(|| common::create_topic(&setup.bootstrap, &setup.input, 4, &[]));
    let (a, b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let ids = |id| static_members.then_some(id);
    let first = setup.worker(ids("a"), a.path()).start().await?;
    let second = setup.worker(ids("b"), b.path()).start().await?;
    common::wait_ready(&first, Duration::from_secs(60)).await;
    common::wait_ready(&second, Duration::from_secs(60)).await;
    let before = second
        .rebalances("relay")
        .expect("relay runs")
        .partitions_revoked;
    first.shutdown().await?;
    let first = setup.worker(ids("a"), a.path()).start().await?;
    common::wait_ready(&first, Duration::from_secs(60)).await;
    tokio::task::block_in_place(|| {
        common::produce(
            &common::producer(&setup.bootstrap),
            &setup.input,
            &common::json_strings("v", 200),
        );
        let out = common::consume(
            &setup.bootstrap,
            &setup.output,
            200,
            Duration::from_secs(90),
        );
        assert_eq!(out.len(), 200, "every record relayed after the restart");
    });
    let revoked = second
        .rebalances("relay")
        .expect("relay runs")
        .partitions_revoked
        - before;
    first.shutdown().await?;
    second.shutdown().await?;
    Ok(revoked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarted_at_once_moves_no_partition_of_the_others() -> rill::Result<()> {
    let revoked = restart_one_of_two(true, RebalanceProtocol::Cooperative).await?;
    assert_eq!(
        revoked, 0,
        "the other worker lost its partitions to a rebalance"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_instance_id_an_eager_group_rebalances_the_others_at_the_same_restart()
-> rill::Result<()> {
    if common::kafka_bootstrap().is_none() {
        return Ok(());
    }
    // Eager: with cooperative rebalancing the other worker may keep its partitions anyway
    // (when the restarted one is back before the group reassigns them).
    let revoked = restart_one_of_two(false, RebalanceProtocol::Eager).await?;
    assert!(
        revoked > 0,
        "the control case: a dynamic member's restart rebalances"
    );
    Ok(())
}

/// Counts records per key in the table `counts` and sends `<key>=<count>` for each; over two
/// co-partitioned topics read together (`either`) when `inputs` names two.
fn key_counter(inputs: &[String], output: &str) -> AgentSpec {
    let mut spec = AgentSpec::new("counter", "tests/kafka_membership.rs");
    for input in inputs {
        spec = spec.source(TopicSpec::of::<String>(input, "tests/kafka_membership.rs"));
    }
    if inputs.len() > 1 {
        spec = spec.co_partitioned();
    }
    let inputs = inputs.to_vec();
    spec.sink(TopicSpec::of::<String>(output, "tests/kafka_membership.rs"))
        .table("counts")
        .run(move |mut ctx| {
            let inputs = inputs.clone();
            async move {
                let mut input = match inputs.as_slice() {
                    [_] => ctx.stream::<String>()?,
                    [a, b, ..] => ctx
                        .stream_of::<String>(a)?
                        .either(ctx.stream_of::<String>(b)?)
                        .map(|e| match e {
                            Either::Left(v) | Either::Right(v) => v,
                        }),
                    [] => unreachable!("a source"),
                };
                let out = ctx.sink::<String>()?;
                let counts = ctx.table::<String, u64>("counts")?;
                while let Some(value) = input.next().await {
                    let key = value.split('#').next().unwrap_or_default().to_owned();
                    let n = counts.update(key.clone(), |c| c + 1)?;
                    out.send(&format!("{key}={n}")).await?;
                }
                Ok(())
            }
        })
}

const KEYS: usize = 40;

/// `n` records `<key>#<i>` keyed by their key (`String` is its UTF-8 bytes), over [`KEYS`]
/// keys.
fn keyed(from: usize, n: usize) -> Vec<(Option<String>, String)> {
    (from..from + n)
        .map(|i| {
            let key = format!("k{:02}", i % KEYS);
            (Some(key.clone()), format!("{key}#{i}"))
        })
        .collect()
}

/// Waits until the workers' assignments of `counter` cover `partitions` partitions without
/// overlap, each worker owning some; returns them.
async fn settled(workers: &[&Worker], partitions: usize) -> Vec<BTreeSet<(String, i32)>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let owned: Vec<BTreeSet<(String, i32)>> = workers
            .iter()
            .map(|w| {
                w.assignment("counter")
                    .expect("counter runs")
                    .into_iter()
                    .collect()
            })
            .collect();
        let total: usize = owned.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<_> = owned.iter().flatten().collect();
        if total == partitions && union.len() == partitions && owned.iter().all(|o| !o.is_empty()) {
            return owned;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the assignment did not settle: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two workers count six partitions (of each of `topics` topics); a third joins while records
/// keep coming. Returns the partitions the first two had revoked meanwhile and how many the
/// third took.
async fn third_worker_joins(
    protocol: RebalanceProtocol,
    topics: usize,
) -> rill::Result<(u64, usize)> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok((0, 0));
    };
    let run = common::run_id();
    let (app_id, output) = (format!("kc_{run}"), format!("kc_out_{run}"));
    let inputs: Vec<String> = (0..topics).map(|t| format!("kc_in{t}_{run}")).collect();
    for input in &inputs {
        tokio::task::block_in_place(|| common::create_topic(&bootstrap, input, 6, &[]));
    }
    let partitions = 6 * topics;
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let worker = |i: usize| {
        common::kafka_app(&app_id, &bootstrap, dirs[i].path())
            .configure(move |c| {
                c.rebalance_protocol = protocol;
            })
            .agents([key_counter(&inputs, &output)])
            .start()
    };
    // Records of one key go to every input topic in turn, into partition n of each.
    let produce = |from: usize, n: usize| {
        tokio::task::block_in_place(|| {
            let producer = common::producer(&bootstrap);
            for (t, input) in inputs.iter().enumerate() {
                let share: Vec<_> = keyed(from, n)
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| i % topics == t)
                    .map(|(_, r)| r)
                    .collect();
                common::produce(&producer, input, &share);
            }
        });
    };
    let (a, b) = (worker(0).await?, worker(1).await?);
    let before = settled(&[&a, &b], partitions).await;
    produce(0, 400);
    let revoked = |w: &Worker| {
        w.rebalances("counter")
            .expect("counter runs")
            .partitions_revoked
    };
    let revoked_before = revoked(&a) + revoked(&b);

    let c = worker(2).await?;
    produce(400, 400);
    let after = settled(&[&a, &b, &c], partitions).await;
    for owned in &after {
        // Co-partitioned: partition n of every input topic in one worker.
        let numbers = |t: &String| -> BTreeSet<i32> {
            owned
                .iter()
                .filter(|(x, _)| x == t)
                .map(|(_, p)| *p)
                .collect()
        };
        assert!(
            inputs.iter().all(|t| numbers(t) == numbers(&inputs[0])),
            "partitions of the inputs split between workers: {owned:?}"
        );
    }
    produce(800, 400);
    let moved = revoked(&a) + revoked(&b) - revoked_before;
    if protocol == RebalanceProtocol::Cooperative {
        for (kept, had) in after.iter().zip(&before) {
            assert!(kept.is_subset(had), "{kept:?} were not all {had:?}'s");
        }
    }

    // Every key counted exactly: its outputs are 1, 2, ... n, each once.
    let out = tokio::task::block_in_place(|| {
        common::consume(&bootstrap, &output, 1_200, Duration::from_secs(90))
    });
    common::assert_counted_exactly(&out, KEYS, (1_200 / KEYS) as u64);
    for w in [a, b, c] {
        w.shutdown().await?;
    }
    Ok((moved, after[2].len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_worker_takes_only_the_partitions_that_move() -> rill::Result<()> {
    let (revoked, taken) = third_worker_joins(RebalanceProtocol::Cooperative, 1).await?;
    if common::kafka_bootstrap().is_some() {
        assert_eq!(
            revoked, taken as u64,
            "the first two workers lost exactly the partitions the third took"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn co_partitioned_topics_move_together_and_only_when_they_must() -> rill::Result<()> {
    let (revoked, taken) = third_worker_joins(RebalanceProtocol::Cooperative, 2).await?;
    if common::kafka_bootstrap().is_some() {
        assert!(taken >= 2, "the third worker took {taken} partitions");
        assert_eq!(
            revoked, taken as u64,
            "the first two workers lost exactly the partitions the third took"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eager_group_revokes_every_partition_when_a_worker_joins() -> rill::Result<()> {
    let (revoked, taken) = third_worker_joins(RebalanceProtocol::Eager, 1).await?;
    if common::kafka_bootstrap().is_some() {
        assert!(taken > 0);
        assert_eq!(revoked, 6, "the control case: all six partitions revoked");
    }
    Ok(())
}
