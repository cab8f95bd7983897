//! Offset commits of an agent group's consumer (at-least-once): synchronous commits of the
//! next offsets to read, retried while the coordinator is away; under exactly-once the
//! commit step's transaction carries them instead. A repartition topic's group also purges
//! what it committed (`purge`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use super::fetch::{ConsumerSlot, FetchContext};
use super::purge;
use crate::base::error::{Error, Result};
use crate::base::health::Health;
use crate::io::transport::{Committer, Refused, Router, Tp};

/// Commits an agent group's offsets.
pub(crate) struct KafkaCommitter {
    /// Exactly-once: offsets go in the commit step's transaction instead.
    transactional: bool,
    router: Arc<Router>,
    /// Set by the fetcher thread once it has created its consumer (a one-topic agent's waits
    /// for its agent to decide how it reads, `align::ReadMode`); nothing is fetched, so
    /// nothing committed, before.
    consumer: ConsumerSlot,
    group: String,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// Set for a repartition topic's group: what it commits is deleted.
    purger: std::sync::OnceLock<Arc<purge::Purger>>,
}

impl KafkaCommitter {
    /// The committer of the group of `context`'s consumer (its fetcher fills `consumer_slot`);
    /// `transactional`: offsets go in the commit step's transaction instead (exactly-once).
    pub(super) fn new(
        group: &str,
        context: &FetchContext,
        stop: Arc<AtomicBool>,
        admin: Arc<AdminClient<DefaultClientContext>>,
        transactional: bool,
    ) -> Arc<Self> {
        Arc::new(KafkaCommitter {
            router: context.router.clone(),
            transactional,
            group: group.to_owned(),
            health: context.health.clone(),
            consumer: ConsumerSlot::default(),
            stop,
            admin,
            purger: std::sync::OnceLock::new(),
        })
    }

    /// Where the fetcher thread puts the group's consumer.
    pub(super) fn consumer_slot(&self) -> ConsumerSlot {
        self.consumer.clone()
    }

    /// The group's consumer, once created.
    fn consumer(&self) -> Result<&BaseConsumer<FetchContext>> {
        self.consumer.get().map(|c| &**c).ok_or_else(|| {
            Error::Shutdown(format!(
                "the consumer of group `{}` was never created (its fetcher stopped first)",
                self.group
            ))
        })
    }

    /// Offsets this group just committed (for purging).
    pub(crate) fn committed(&self, offsets: &[(Tp, i64)]) {
        if let Some(purger) = self.purger.get() {
            purger.committed(offsets);
        }
    }

    /// The consumer's group metadata, which fences a zombie's transactional offset commits.
    pub(crate) fn group_metadata(&self) -> Result<rdkafka::consumer::ConsumerGroupMetadata> {
        let consumer = self.consumer.get().map(|c| &**c);
        consumer.and_then(|c| c.group_metadata()).ok_or_else(|| {
            Error::Transaction(format!(
                "no consumer group metadata for group `{}` yet",
                self.group
            ))
        })
    }

    /// Commits the next offsets to read (synchronously; callers run it off the async threads):
    /// false when the group refused them because it was rebalancing.
    pub(crate) fn commit(&self, offsets: &[(Tp, i64)]) -> Result<bool> {
        if offsets.is_empty() {
            return Ok(true);
        }
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for ((topic, partition), offset) in offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|e| Error::kafka("building an offset list", e))?;
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.commit_once(&tpl) {
                Err(Retry(e)) if !self.stop.load(Ordering::Acquire) => {
                    // The broker is away: keep the offsets and try again, backing off.
                    self.health.lost(&e);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(Retry(e)) => {
                    return Err(Error::kafka(
                        format!(
                            "committing offsets of group `{}` while stopping",
                            self.group
                        ),
                        e,
                    ));
                }
                Ok(result) => {
                    if result.is_ok() {
                        self.health.back();
                    }
                    return result;
                }
            }
        }
    }

    /// One commit attempt: `Err` when it is worth retrying, false when refused in a rebalance.
    fn commit_once(&self, tpl: &TopicPartitionList) -> std::result::Result<Result<bool>, Retry> {
        let consumer = match self.consumer() {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        Ok(match consumer.commit(tpl, CommitMode::Sync) {
            Ok(()) => Ok(true),
            // The group is rebalancing: the instance commits them again while it owns the
            // partitions (`Refused`); what moved, its new owner reads again.
            Err(KafkaError::ConsumerCommit(code))
                if matches!(
                    code,
                    RDKafkaErrorCode::RebalanceInProgress
                        | RDKafkaErrorCode::IllegalGeneration
                        | RDKafkaErrorCode::UnknownMemberId
                ) =>
            {
                tracing::info!(group = %self.group, %code, "offset commit refused during a rebalance; committing again at the next step the partitions that stay");
                Ok(false)
            }
            Err(KafkaError::ConsumerCommit(code)) if retriable(code) => {
                return Err(Retry(KafkaError::ConsumerCommit(code)));
            }
            Err(e) => Err(Error::kafka(
                format!("committing offsets of group `{}`", self.group),
                e,
            )),
        })
    }
}

/// A commit failure worth retrying.
struct Retry(KafkaError);

/// Errors of an unreachable or moving coordinator, as opposed to refusals (authorization,
/// invalid offsets) that retrying cannot fix.
fn retriable(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::WaitingForCoordinator
    )
}

impl Committer for KafkaCommitter {
    fn transactional(&self) -> bool {
        self.transactional
    }

    fn commit_offsets(
        self: Arc<Self>,
        offsets: Vec<(Tp, i64)>,
    ) -> BoxFuture<'static, Result<Refused>> {
        Box::pin(async move {
            if self.transactional || offsets.is_empty() {
                // Under exactly-once they were committed in the step's transaction.
                return Ok(Vec::new());
            }
            let this = self.clone();
            let (accepted, offsets) =
                tokio::task::spawn_blocking(move || this.commit(&offsets).map(|ok| (ok, offsets)))
                    .await
                    .map_err(|e| Error::Shutdown(format!("offset commit: {e}")))??;
            if !accepted {
                // Nothing below them may be purged: they are not committed.
                return Ok(offsets);
            }
            self.committed(&offsets);
            Ok(Vec::new())
        })
    }

    fn request_rewind(&self) {
        self.router.rewind.store(true, Ordering::Release);
    }

    fn purge_consumed(&self, interval: Duration) {
        let _ = self
            .purger
            .set(Arc::new(purge::Purger::new(self.admin.clone(), interval)));
    }
}
