//! Request/reply on a real Apache Kafka broker, under exactly-once: a worker asks an agent
//! whose partitions are spread over two workers; every ask gets its own reply (from whichever
//! worker owns its partition), a cast gets none, and each request is answered once.

mod common;

use std::time::Duration;

use rill::{AgentSpec, ProcessingGuarantee, TopicSpec};

fn doubler(topic: &str) -> AgentSpec {
    AgentSpec::new("doubler", "tests/kafka_requests.rs")
        .source(TopicSpec::of::<String>(topic, "tests/kafka_requests.rs"))
        .run(|mut ctx| async move {
            let mut input = ctx.stream::<String>()?.requests();
            while let Some(text) = input.next().await {
                let n: i64 = text.parse().unwrap_or(-1);
                text.reply(&(2 * n)).await?;
            }
            Ok(())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asks_across_two_workers_get_one_reply_each() -> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let run = common::run_id();
    let topic = format!("kr_in_{run}");
    tokio::task::block_in_place(|| common::create_topic(&bootstrap, &topic, 4, &[]));
    let (da, db) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let app = |dir: &std::path::Path| {
        common::kafka_app(&format!("kr_{run}"), &bootstrap, dir)
            .processing_guarantee(ProcessingGuarantee::ExactlyOnce)
            .agents([doubler(&topic)])
    };
    let a = app(da.path()).start().await?;
    let b = app(db.path()).start().await?;
    common::wait_ready(&a, Duration::from_secs(60)).await;
    common::wait_ready(&b, Duration::from_secs(60)).await;
    let requests = a.requests();
    let asks = (0..200i64).map(|i| {
        let requests = requests.clone();
        let topic = topic.clone();
        async move {
            requests
                .ask::<i64, _>(&topic, &i.to_string())
                .timeout(Duration::from_secs(60))
                .await
        }
    });
    let replies = futures::future::try_join_all(asks).await?;
    assert_eq!(replies, (0..200).map(|i| 2 * i).collect::<Vec<_>>());
    let served = |w: &rill::Worker| {
        w.stats("doubler").map_or(0, |s| {
            s.records_in.load(std::sync::atomic::Ordering::Relaxed)
        })
    };
    assert!(
        served(&a) > 0 && served(&b) > 0,
        "both workers answered: {} / {}",
        served(&a),
        served(&b)
    );
    requests.cast(&topic, &"5".to_owned()).await?;
    a.shutdown().await?;
    b.shutdown().await?;
    // One committed reply per ask (the cast got none).
    let replies = tokio::task::block_in_place(|| {
        common::read_to_end(&bootstrap, &format!("kr_{run}-__replies"), "read_committed")
    });
    assert_eq!(replies.len(), 200);
    Ok(())
}

/// Like `doubler`, taking a few milliseconds per request, so asks are in flight when the
/// worker stops.
fn slow_doubler(topic: &str) -> AgentSpec {
    AgentSpec::new("doubler", "tests/kafka_requests.rs")
        .source(TopicSpec::of::<String>(topic, "tests/kafka_requests.rs"))
        .run(|mut ctx| async move {
            let mut input = ctx.stream::<String>()?.requests();
            while let Some(text) = input.next().await {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let n: i64 = text.parse().unwrap_or(-1);
                text.reply(&(2 * n)).await?;
            }
            Ok(())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asks_in_flight_across_a_restart_of_the_answering_worker_get_one_reply_each()
-> rill::Result<()> {
    let Some(bootstrap) = common::kafka_bootstrap() else {
        return Ok(());
    };
    let run = common::run_id();
    let topic = format!("kr_rs_{run}");
    tokio::task::block_in_place(|| common::create_topic(&bootstrap, &topic, 2, &[]));
    let app_id = format!("kr_rs_{run}");
    let (asker_dir, answer_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let answering = || {
        common::kafka_app(&app_id, &bootstrap, answer_dir.path())
            .processing_guarantee(ProcessingGuarantee::ExactlyOnce)
            .agents([slow_doubler(&topic)])
    };
    let asker = common::kafka_app(&app_id, &bootstrap, asker_dir.path())
        .processing_guarantee(ProcessingGuarantee::ExactlyOnce)
        .agents([])
        .start()
        .await?;
    let answerer = answering().start().await?;
    common::wait_ready(&answerer, Duration::from_secs(60)).await;
    let requests = asker.requests();
    let asks = tokio::spawn({
        let (requests, topic) = (requests.clone(), topic.clone());
        async move {
            let asks = (0..300i64).map(|i| {
                let (requests, topic) = (requests.clone(), topic.clone());
                async move {
                    requests
                        .ask::<i64, _>(&topic, &i.to_string())
                        .timeout(Duration::from_secs(120))
                        .await
                }
            });
            futures::future::try_join_all(asks).await
        }
    });
    // Restart the answering worker while asks are still being answered.
    common::wait_for_async("some asks answered", Duration::from_secs(60), || {
        answerer
            .stats("doubler")
            .is_some_and(|s| s.records_in.load(std::sync::atomic::Ordering::Relaxed) >= 30)
    })
    .await;
    answerer.shutdown().await?;
    let answerer = answering().start().await?;
    let replies = asks
        .await
        .map_err(|e| rill::Error::Shutdown(format!("asks: {e}")))??;
    assert_eq!(replies, (0..300).map(|i| 2 * i).collect::<Vec<_>>());
    answerer.shutdown().await?;
    asker.shutdown().await?;
    // Exactly one committed reply per ask: none lost, none doubled by the restart.
    let replies = tokio::task::block_in_place(|| {
        common::read_to_end(&bootstrap, &format!("{app_id}-__replies"), "read_committed")
    });
    assert_eq!(replies.len(), 300);
    Ok(())
}
