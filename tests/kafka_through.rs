//! `through` and `echo` on a real Apache Kafka broker under exactly-once: every record is in
//! the `through` topic, the `echo` topic and the sink exactly once as a `read_committed`
//! reader sees them, across a restart of the worker between two halves of the input. An
//! in-memory channel between two agents on Kafka never reaches the broker.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use rill::{AgentSpec, ProcessingGuarantee, TopicSpec};

struct Names {
    source: String,
    through: String,
    audit: String,
    sink: String,
}

fn relay(names: &Names) -> AgentSpec {
    let (through, audit) = (names.through.clone(), names.audit.clone());
    AgentSpec::new("through_relay", "tests/kafka_through.rs")
        .source(TopicSpec::of::<String>(
            &names.source,
            "tests/kafka_through.rs",
        ))
        .sink(TopicSpec::of::<String>(
            &names.sink,
            "tests/kafka_through.rs",
        ))
        .run(move |mut ctx| {
            let (through, audit) = (through.clone(), audit.clone());
            async move {
                let input = ctx.stream::<String>()?;
                let mut input = input.through(&through).echo([audit]);
                let out = ctx.sink::<String>()?;
                while let Some(value) = input.next().await {
                    out.send(&value).await?;
                }
                Ok(())
            }
        })
}

fn values(bootstrap: &str, topic: &str) -> Vec<String> {
    let read =
        tokio::task::block_in_place(|| common::read_to_end(bootstrap, topic, "read_committed"));
    read.iter()
        .map(|r| r.json().as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_and_echo_are_exactly_once_across_a_restart() -> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let run = common::run_id();
    let names = Names {
        source: format!("kth_in_{run}"),
        through: format!("kth_through_{run}"),
        audit: format!("kth_audit_{run}"),
        sink: format!("kth_out_{run}"),
    };
    tokio::task::block_in_place(|| common::create_topic(&bootstrap, &names.source, 4, &[]));
    let data = tempfile::tempdir().expect("tempdir");
    let app = || {
        common::kafka_app(&format!("kth_{run}"), &bootstrap, data.path())
            .processing_guarantee(ProcessingGuarantee::ExactlyOnce)
            .agents([relay(&names)])
    };
    let all = common::json_strings("v", 400);
    let producer = common::producer(&bootstrap);
    let worker = app().start().await?;
    tokio::task::block_in_place(|| common::produce(&producer, &names.source, &all[..200]));
    let wait = |n: usize| {
        common::read_topic(
            &bootstrap,
            &names.sink,
            Duration::from_secs(90),
            Duration::ZERO,
            move |r| r.len() >= n,
        )
    };
    assert!(wait(200).len() >= 200, "the first half is relayed");
    worker.shutdown().await?;
    tokio::task::block_in_place(|| common::produce(&producer, &names.source, &all[200..]));
    let worker = app().start().await?;
    assert!(wait(400).len() >= 400, "the second half is relayed");
    worker.shutdown().await?;
    let want: BTreeSet<String> = (0..400).map(|i| format!("v-{i}")).collect();
    for topic in [&names.through, &names.audit, &names.sink] {
        let got = values(&bootstrap, topic);
        assert_eq!(got.len(), 400, "{topic}: no record lost or doubled");
        assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want, "{topic}");
    }
    // The through topic has the source's partitions, and each record its key.
    assert_eq!(
        tokio::task::block_in_place(|| common::partition_count(&bootstrap, &names.through)),
        Some(4)
    );
    let through = tokio::task::block_in_place(|| {
        common::read_to_end(&bootstrap, &names.through, "read_committed")
    });
    assert!(
        through
            .iter()
            .all(|r| r.key_text().as_deref() == r.json().as_str())
    );
    Ok(())
}

fn texts(bootstrap: &str, topic: &str) -> Vec<String> {
    common::read_to_end(bootstrap, topic, "read_committed")
        .iter()
        .map(common::kafka::Read::text)
        .collect()
}

/// Agent `upper` reads the source and sends to the channel; `relay_channel` reads the channel
/// and writes the sink.
fn channel_pair(source: &str, channel: &str, sink: &str) -> [AgentSpec; 2] {
    let at = "tests/kafka_through.rs";
    let (channel_out, sink_name) = (channel.to_owned(), sink.to_owned());
    let upper = AgentSpec::new("upper", at)
        .source(TopicSpec::of::<String>(source, at))
        .sink(TopicSpec::of::<String>(&channel_out, at))
        .run(|mut ctx| async move {
            let mut input = ctx.stream::<String>()?;
            let out = ctx.sink::<String>()?;
            while let Some(value) = input.next().await {
                out.send(&value.to_uppercase()).await?;
            }
            Ok(())
        });
    let relay = AgentSpec::new("relay_channel", at)
        .channel::<String>(channel)
        .sink(TopicSpec::of::<String>(&sink_name, at))
        .run(|mut ctx| async move {
            let mut input = ctx.stream::<String>()?;
            let out = ctx.sink::<String>()?;
            while let Some(value) = input.next().await {
                out.send(&format!("{value}!")).await?;
            }
            Ok(())
        });
    [upper, relay]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_between_agents_never_reaches_the_broker() -> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let run = common::run_id();
    let (source, channel, sink) = (
        format!("kc_src_{run}"),
        format!("kc_chan_{run}"),
        format!("kc_out_{run}"),
    );
    tokio::task::block_in_place(|| common::create_topic(&bootstrap, &source, 2, &[]));
    let data = tempfile::tempdir().expect("tempdir");
    let worker = common::kafka_app(&format!("kc_{run}"), &bootstrap, data.path())
        .agents(channel_pair(&source, &channel, &sink))
        .start()
        .await?;
    let producer = worker.producer();
    for i in 0..50 {
        producer.send_to(&source, &format!("v{i}")).await?;
    }
    producer.flush().await?;
    tokio::task::block_in_place(|| {
        common::wait_for("50 relayed records", Duration::from_secs(60), || {
            common::partition_count(&bootstrap, &sink).is_some()
                && texts(&bootstrap, &sink).len() >= 50
        });
    });
    worker.shutdown().await?;
    let got: BTreeSet<String> = texts(&bootstrap, &sink).into_iter().collect();
    let want: BTreeSet<String> = (0..50).map(|i| format!("V{i}!")).collect();
    assert_eq!(got, want);
    let channel_topic =
        tokio::task::block_in_place(|| common::partition_count(&bootstrap, &channel));
    assert_eq!(
        channel_topic, None,
        "the channel became a topic on the broker"
    );
    Ok(())
}
