//! Leader election, for leader-only timers: every worker of an app joins the consumer group
//! `<app>-__leader` on the one-partition topic of the same name (which never holds a record);
//! the member that partition is assigned to leads. This is Faust's design (its
//! `__assignor-__leader` topic): Kafka's group coordinator decides, so at most one worker
//! leads at a time once a rebalance completes, and when the leader stops (leaving the group)
//! or dies (after `session.timeout.ms`) another one takes over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::client::{LogContext, creation_error};
use crate::base::error::{Error, Result};
use crate::io::transport::Leadership;

/// How often the election thread polls its consumer (heartbeats and rebalances happen there).
const POLL: Duration = Duration::from_millis(100);

/// Joins the election of `group` on `topic` (which must exist with one partition) and keeps
/// the returned leadership current from a thread of its own.
pub(super) fn elect(base: &ClientConfig, group: &str, topic: &str) -> Result<Leadership> {
    let mut config = base.clone();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        // Eager: the partition is revoked from the old leader before the new one gets it.
        .set("partition.assignment.strategy", "range");
    let consumer: BaseConsumer<LogContext> = config
        .create_with_context(LogContext)
        .map_err(|e| creation_error(&config, "creating the leader election's consumer", e))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| Error::kafka(format!("joining the leader election on `{topic}`"), e))?;
    let leadership = Leadership::new(false);
    let (leading, stop) = (leadership.leading.clone(), leadership.stop.clone());
    let thread = std::thread::Builder::new()
        .name("rill-leader".into())
        .spawn(move || follow(&consumer, &leading, &stop))
        .map_err(|e| Error::io("starting the leader election thread", e))?;
    leadership.hold(thread);
    Ok(leadership)
}

/// Polls until `stop`, setting `leading` to whether the consumer holds the partition; then
/// leaves the group, so another worker takes over at once.
fn follow(consumer: &BaseConsumer<LogContext>, leading: &AtomicBool, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        if let Some(Err(e)) = consumer.poll(POLL) {
            tracing::warn!(error = %e, "leader election consumer");
        }
        let leads = consumer.assignment().is_ok_and(|tpl| tpl.count() > 0);
        if leading.swap(leads, Ordering::AcqRel) != leads {
            tracing::info!(
                leader = leads,
                "leadership of the app's leader-only timers changed"
            );
        }
    }
    leading.store(false, Ordering::Release);
    consumer.unsubscribe();
}
