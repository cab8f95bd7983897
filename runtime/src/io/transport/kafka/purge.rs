//! Purging consumed records of repartition topics (Kafka). A repartition topic has no time
//! retention (`retention.ms=-1`: its records carry old event times as timestamps, which time
//! retention would take for their age and delete before they are read), so rill deletes what
//! its consumer group has committed instead, as Kafka Streams does: every purge interval, one
//! `DeleteRecords` request up to the committed offsets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::{Offset, TopicPartitionList};

use crate::io::transport::Tp;

/// Deletes a repartition topic's records below the offsets its group committed.
pub(crate) struct Purger {
    admin: Arc<AdminClient<DefaultClientContext>>,
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Committed offsets not purged up to yet.
    pending: HashMap<Tp, i64>,
    /// When the last purge started.
    last: Option<Instant>,
    /// A task is purging, or waiting to: it ends when it finds nothing more to purge.
    running: bool,
}

impl Purger {
    pub(crate) fn new(admin: Arc<AdminClient<DefaultClientContext>>, interval: Duration) -> Self {
        Purger {
            admin,
            interval,
            // The first purge an interval after start, as later ones.
            state: Mutex::new(State {
                last: Some(Instant::now()),
                ..State::default()
            }),
        }
    }

    /// Notes offsets that were just committed: records below them are deleted within an
    /// interval (on a task of its own: the commit step does not wait for it).
    pub(crate) fn committed(self: &Arc<Self>, offsets: &[(Tp, i64)]) {
        if offsets.is_empty() {
            return;
        }
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            for (tp, offset) in offsets {
                let at = state.pending.entry(tp.clone()).or_insert(*offset);
                *at = (*at).max(*offset);
            }
            if state.running {
                return;
            }
            state.running = true;
        }
        tokio::spawn(self.clone().run());
    }

    /// Purges what was noted, at most once per interval, until nothing more is noted.
    async fn run(self: Arc<Self>) {
        loop {
            let wait = {
                let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                state.last.map_or(Duration::ZERO, |t| {
                    self.interval.saturating_sub(t.elapsed())
                })
            };
            tokio::time::sleep(wait).await;
            let due = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.pending.is_empty() {
                    state.running = false;
                    return;
                }
                state.last = Some(Instant::now());
                std::mem::take(&mut state.pending)
            };
            self.delete(&due).await;
        }
    }

    /// One `DeleteRecords` request; a failure is logged (the next purge covers the same
    /// records, since offsets only grow).
    async fn delete(&self, offsets: &HashMap<Tp, i64>) {
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for ((topic, partition), offset) in offsets {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                tracing::warn!(%topic, partition, error = %e, "purging a repartition topic");
                return;
            }
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        match self.admin.delete_records(&tpl, &options).await {
            Ok(result) => {
                for e in result.elements() {
                    if let Err(error) = e.error() {
                        tracing::warn!(topic = e.topic(), partition = e.partition(), %error, "purging consumed records of a repartition topic");
                    } else {
                        tracing::debug!(topic = e.topic(), partition = e.partition(), start = ?e.offset(), "purged consumed records");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "purging consumed records of repartition topics");
            }
        }
    }
}
