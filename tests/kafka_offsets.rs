//! Offsets under the user's control, on a real Apache Kafka broker: where an agent's group
//! starts on a partition it has no committed offset for (`#[agent(offset_reset = ...)]`, the
//! app's `offset_reset`, `-X auto.offset.reset`).
//!
//! Workers run in-process; input is produced and output read with plain rdkafka clients.

mod common;

use std::time::Duration;

use rill::OffsetReset;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_skips_what_was_written_before_the_group_and_earliest_reads_it() -> rill::Result<()>
{
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let run = common::run_id();
    let (app_id, input) = (format!("ko_{run}"), format!("ko_in_{run}"));
    let (from_start, from_end) = (format!("ko_start_{run}"), format!("ko_end_{run}"));
    tokio::task::block_in_place(|| {
        common::create_topic(&bootstrap, &input, 2, &[]);
        common::produce(
            &common::producer(&bootstrap),
            &input,
            &common::json_strings("old", 10),
        );
    });
    let dir = tempfile::tempdir().expect("tempdir");
    // `-X auto.offset.reset=latest` is the app's default; one agent overrides it.
    let worker = common::kafka_app(&app_id, &bootstrap, dir.path())
        .kafka_property("auto.offset.reset", "latest")
        .agents([
            common::string_relay("all", &input, &from_start).offset_reset(OffsetReset::Earliest),
            common::string_relay("new", &input, &from_end),
        ])
        .start()
        .await?;
    common::wait_ready(&worker, Duration::from_secs(60)).await;
    // `latest` is resolved when the consumer first fetches, a moment after the assignment:
    // probe until the `latest` agent passes a record on, then send the records counted.
    tokio::task::block_in_place(|| {
        let producer = common::producer(&bootstrap);
        let mut probes = 0;
        common::wait_for("the `latest` agent reads", Duration::from_secs(60), || {
            common::produce(
                &producer,
                &input,
                &common::json_strings(&format!("probe{probes}"), 1),
            );
            probes += 1;
            let partitions = common::partition_count(&bootstrap, &from_end).unwrap_or(0);
            common::end_offsets(&bootstrap, &from_end, partitions as i32) > 0
        });
        common::produce(&producer, &input, &common::json_strings("new", 5));
    });
    let count = |got: &[common::Read], prefix: &str| {
        got.iter()
            .filter(|r| {
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).contains(prefix)
            })
            .count()
    };
    // Each read settles 2 s after the 5 new records arrived, for anything extra to show.
    let read = |topic: &str| {
        common::read_topic(
            &bootstrap,
            topic,
            Duration::from_secs(60),
            Duration::from_secs(2),
            |got| count(got, "new-") >= 5,
        )
    };
    let all = read(&from_start);
    assert_eq!(
        (count(&all, "old-"), count(&all, "new-")),
        (10, 5),
        "earliest reads what was there before"
    );
    let new = read(&from_end);
    assert_eq!(
        (count(&new, "old-"), count(&new, "new-")),
        (0, 5),
        "latest skips it"
    );
    worker.shutdown().await?;
    Ok(())
}
