//! Workers started in-process with `App::start` (the test harness's `TestApp` has its own
//! `stat` and `wait_until`): their counters, and the error they stop with.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use rill::AgentStats;

/// One counter of an agent the worker runs: `stat(&worker, "count", |s| &s.late_records)`.
pub(crate) fn stat(
    worker: &rill::Worker,
    agent: &str,
    counter: fn(&AgentStats) -> &AtomicU64,
) -> u64 {
    let stats = worker.stats(agent).expect("agent stats");
    AgentStats::get(counter(&stats))
}

/// The error a worker stops with on its own; fails the test when it does not stop within
/// `within`, or stops without an error.
pub(crate) async fn stop_error(worker: &mut rill::Worker, within: Duration) -> rill::Error {
    tokio::time::timeout(within, worker.wait())
        .await
        .unwrap_or_else(|_| panic!("the worker did not stop within {within:?}"))
        .expect_err("the worker stops with an error")
}

/// Waits until the worker is ready ([`rill::Worker::readiness`]: every agent has partitions and
/// its tables recovered); fails the test with what it still waits for after `within`.
pub(crate) async fn wait_ready(worker: &rill::Worker, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match worker.readiness() {
            Ok(()) => return,
            Err(waiting) if tokio::time::Instant::now() >= deadline => {
                panic!("the worker was not ready within {within:?}: {waiting}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// An agent copying JSON strings from `source` to `sink` unchanged, declared by hand (not
/// with `#[agent]`) so each test picks its topics.
pub(crate) fn string_relay(name: &str, source: &str, sink: &str) -> rill::AgentSpec {
    use rill::TopicSpec;
    rill::AgentSpec::new(name, "tests/common/worker.rs")
        .source(TopicSpec::of::<String>(source, "tests/common/worker.rs"))
        .sink(TopicSpec::of::<String>(sink, "tests/common/worker.rs"))
        .run(|mut ctx| async move {
            let mut input = ctx.stream::<String>()?;
            let out = ctx.sink::<String>()?;
            while let Some(value) = input.next().await {
                out.send(&value).await?;
            }
            Ok(())
        })
}

/// `n` keyed JSON strings `"<prefix>-<i>"` for `common::produce`.
pub(crate) fn json_strings(prefix: &str, n: usize) -> Vec<(Option<String>, String)> {
    (0..n)
        .map(|i| {
            let v = format!("{prefix}-{i}");
            (Some(v.clone()), serde_json::json!(v).to_string())
        })
        .collect()
}
