//! Rolling deploys on a real Apache Kafka broker: workers with `instance_id` (Kafka's
//! `group.instance.id`, static membership) restarted within the session timeout get their
//! partitions back without a rebalance, so the other workers of the group keep theirs.
//!
//! Workers run in-process; input is produced and output read with plain rdkafka clients.

mod common;

use std::time::Duration;

use rill::App;

struct Setup {
    bootstrap: String,
    app_id: String,
    input: String,
    output: String,
}

impl Setup {
    fn worker(&self, instance: Option<&str>, data: &std::path::Path) -> App {
        let id = instance.map(str::to_owned);
        common::kafka_app(&self.app_id, &self.bootstrap, data)
            .configure(move |c| c.instance_id = id)
            .agents([common::string_relay("relay", &self.input, &self.output)])
    }
}

/// Two workers share four partitions; the first is stopped and started again at once. The
/// revocations the second saw meanwhile, and whether every record was relayed.
async fn restart_one_of_two(static_members: bool) -> rill::Result<u64> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(0);
    };
    let run = common::run_id();
    let setup = Setup {
        bootstrap,
        app_id: format!("km_{run}"),
        input: format!("km_in_{run}"),
        output: format!("km_out_{run}"),
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
    let before = second.rebalances("relay").expect("relay runs").1;
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
    let revoked = second.rebalances("relay").expect("relay runs").1 - before;
    first.shutdown().await?;
    second.shutdown().await?;
    Ok(revoked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarted_at_once_moves_no_partition_of_the_others() -> rill::Result<()> {
    let revoked = restart_one_of_two(true).await?;
    assert_eq!(
        revoked, 0,
        "the other worker lost its partitions to a rebalance"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_instance_id_the_same_restart_rebalances_the_others() -> rill::Result<()> {
    if common::kafka_bootstrap().is_none() {
        return Ok(());
    }
    let revoked = restart_one_of_two(false).await?;
    assert!(
        revoked > 0,
        "the control case: a dynamic member's restart rebalances"
    );
    Ok(())
}
