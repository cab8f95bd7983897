//! How an agent group's assignment changes reach its instances.
//!
//! - **Eager** (`range`, `RILL_REBALANCE_PROTOCOL=eager`): every rebalance revokes every
//!   partition (the instances commit and drop their work), then announces the new assignment.
//! - **Cooperative** (`cooperative-sticky`, the default): the group revokes only the partitions
//!   that move; a worker whose assignment does not change is not called at all. An agent
//!   reading several co-partitioned topics (a join, retry topics) subscribes to its first
//!   topic only, and partition n of each other topic (its *partners*) is assigned and revoked
//!   with partition n of the first, in the same call: `cooperative-sticky` alone would split
//!   them between workers. A worker losing or gaining partitions has its instances commit and
//!   drop what they hold (a few milliseconds), then reads its kept partitions again from their
//!   committed offsets (records fetched but not finished would otherwise be skipped) and
//!   announces the whole new assignment: tables recover only what the local copy lacks,
//!   windows reload from the store, and exactly-once transactions never span two assignments.
//!
//! The same re-reading serves a rollback after an aborted transaction (`rewind`). A partition
//! without a committed offset is read again from where it started: its beginning under
//! `earliest`, under `latest` its end when it was assigned (noted at assignment).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use crate::base::config::OffsetReset;
use crate::io::transport::{Router, Tp};

/// How long broker calls of a rebalance may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why partitions are read again from their committed offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadAgain {
    /// An exactly-once transaction was aborted.
    Rollback,
    /// A cooperative rebalance added or removed partitions.
    Changed,
}

/// The rebalance hooks of an agent's consumer, and its re-reads.
pub(super) struct Rebalancer {
    router: Arc<Router>,
    reset: OffsetReset,
    /// Topics read with the subscribed one, partition for partition (cooperative only).
    partners: Vec<String>,
    /// Set in a cooperative rebalance: the fetcher reads the assignment again from the
    /// committed offsets before it fetches on.
    changed: AtomicBool,
    /// Under `latest`, where each partition without a committed offset started.
    starts: Mutex<HashMap<Tp, i64>>,
    /// Set once the fetcher stopped, before the consumer closes (`close`).
    closing: AtomicBool,
    /// Partitions assigned since the fetcher last took them: it forwards their records to its
    /// own queue (`fetch_queue`), after every assignment, as librdkafka requires.
    started: Mutex<Vec<Tp>>,
}

impl Rebalancer {
    pub(super) fn new(router: Arc<Router>, reset: OffsetReset, partners: Vec<String>) -> Self {
        Rebalancer {
            router,
            reset,
            partners,
            changed: AtomicBool::new(false),
            starts: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            started: Mutex::new(Vec::new()),
        }
    }

    /// The topics assigned with the subscribed one, partition for partition (cooperative).
    pub(super) fn partners(&self) -> &[String] {
        &self.partners
    }

    /// The fetcher stopped and the consumer is about to close: closing, librdkafka revokes the
    /// assignment through the callback, where only librdkafka's side is done. The instances
    /// have committed and ended, and asking librdkafka for the assignment then
    /// (`rd_kafka_assignment`, as `after` does) waits forever: a static member's worker hung
    /// in its shutdown so.
    pub(super) fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// librdkafka's rebalance callback (inside `poll`, on the fetcher thread): rdkafka's own,
    /// with the partners' partitions added to what the group assigns or revokes.
    pub(super) fn rebalance<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        err: RDKafkaRespErr,
        tpl: &TopicPartitionList,
    ) {
        let tpl = self.with_partners(tpl);
        let cooperative = cooperative(consumer);
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(&tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(&tpl),
            _ => Rebalance::Error(KafkaError::Rebalance(err.into())),
        };
        let closing = self.closing.load(Ordering::Acquire);
        if !closing {
            self.before(&rebalance, cooperative);
        }
        let applied = match (&rebalance, cooperative) {
            (Rebalance::Assign(_), true) => consumer.incremental_assign(&tpl),
            (Rebalance::Assign(_), false) => consumer.assign(&tpl),
            (_, true) => consumer.incremental_unassign(&tpl),
            (_, false) => consumer.unassign(),
        };
        match applied {
            Err(e) => {
                tracing::error!(agent = %self.router.agent, error = %e, "applying a rebalance");
            }
            Ok(()) if matches!(rebalance, Rebalance::Assign(_)) => {
                let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
                started.extend(tps_of(&tpl));
            }
            Ok(()) => {}
        }
        if !closing {
            self.after(consumer, &rebalance, cooperative);
        }
    }

    /// `tpl` with partition n of every partner topic for each partition n of it.
    fn with_partners(&self, tpl: &TopicPartitionList) -> TopicPartitionList {
        let mut all = tpl.clone();
        for e in tpl.elements() {
            for partner in &self.partners {
                all.add_partition(partner, e.partition());
            }
        }
        all
    }

    /// Before librdkafka applies a change.
    fn before(&self, rebalance: &Rebalance<'_>, cooperative: bool) {
        match rebalance {
            // Blocks the fetcher until each instance has committed its finished records.
            Rebalance::Revoke(tpl) if tpl.count() > 0 || !cooperative => {
                self.router.revoke(tpl.count());
            }
            Rebalance::Assign(tpl) if tpl.count() > 0 && cooperative && !self.owns_nothing() => {
                self.router.pause_for_change();
            }
            _ => {}
        }
    }

    /// After librdkafka applied a change.
    fn after<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        rebalance: &Rebalance<'_>,
        cooperative: bool,
    ) {
        match rebalance {
            Rebalance::Assign(tpl) if tpl.count() > 0 || !cooperative => {
                self.note_starts(consumer, tpl);
                let all = assignment(consumer);
                if cooperative && all.len() > tpl.count() {
                    self.changed.store(true, Ordering::Release);
                } else if let Err(e) = self.router.assigned(tps_of(tpl)) {
                    tracing::error!(agent = %self.router.agent, error = %e, "assignment failed; stopping the agent");
                }
            }
            Rebalance::Revoke(tpl)
                if tpl.count() > 0 && cooperative && !assignment(consumer).is_empty() =>
            {
                self.changed.store(true, Ordering::Release);
            }
            Rebalance::Error(e) => {
                tracing::warn!(agent = %self.router.agent, error = %e, "rebalance error");
            }
            _ => {}
        }
    }

    /// Why the assignment must be read again from the committed offsets, if it must (taken:
    /// asks once).
    pub(super) fn take_read_again(&self) -> Option<ReadAgain> {
        if self.router.rewind.swap(false, Ordering::AcqRel) {
            // A rollback reads everything again, which covers a change too.
            self.changed.store(false, Ordering::Release);
            Some(ReadAgain::Rollback)
        } else if self.changed.swap(false, Ordering::AcqRel) {
            Some(ReadAgain::Changed)
        } else {
            None
        }
    }

    /// The partitions assigned since the last call (inside `poll`, on the fetcher thread).
    pub(super) fn take_started(&self) -> Vec<Tp> {
        std::mem::take(&mut *self.started.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether the fetcher must read again before handing over what it fetched.
    pub(super) fn read_again_pending(&self) -> bool {
        self.router.rewind.load(Ordering::Acquire) || self.changed.load(Ordering::Acquire)
    }

    /// Every owned partition goes back to its committed offset and the assignment is announced
    /// again (a new generation: instances drop what they hold, reload their tables from the
    /// last commit and read from there). On a broker error it is asked for again.
    pub(super) fn read_again<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        why: ReadAgain,
    ) {
        let retry = |what: &str, error: &dyn std::fmt::Display| {
            tracing::warn!(agent = %self.router.agent, error = %error, "{what}; retrying");
            std::thread::sleep(Duration::from_millis(500));
            match why {
                ReadAgain::Rollback => self.router.rewind.store(true, Ordering::Release),
                ReadAgain::Changed => self.changed.store(true, Ordering::Release),
            }
        };
        let committed = match consumer.committed(CALL_TIMEOUT) {
            Ok(tpl) => tpl,
            Err(e) => return retry("reading committed offsets to read partitions again", &e),
        };
        let starts = self
            .starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut tps = Vec::new();
        for e in committed.elements() {
            let tp: Tp = (Arc::from(e.topic()), e.partition());
            let to = match (e.offset(), starts.get(&tp)) {
                (Offset::Offset(o), _) => Offset::Offset(o),
                (_, Some(start)) => Offset::Offset(*start),
                _ => Offset::Beginning,
            };
            if let Err(err) = consumer.seek(e.topic(), e.partition(), to, CALL_TIMEOUT) {
                return retry(
                    &format!("seeking {}[{}] back to {to:?}", e.topic(), e.partition()),
                    &err,
                );
            }
            tps.push(tp);
        }
        match why {
            ReadAgain::Rollback => {
                tracing::warn!(agent = %self.router.agent, partitions = tps.len(), "transaction aborted: reading again from the committed offsets");
            }
            ReadAgain::Changed => {
                tracing::info!(agent = %self.router.agent, partitions = tps.len(), "assignment changed: reading on from the committed offsets");
            }
        }
        if let Err(e) = self.router.assigned(tps) {
            tracing::error!(agent = %self.router.agent, error = %e, "announcing the assignment");
        }
    }

    fn owns_nothing(&self) -> bool {
        self.router
            .assignment
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Under `latest`, notes the end of each newly assigned partition that has no committed
    /// offset: where the group starts reading it, and where a re-read goes back to. (librdkafka
    /// looks the end up itself a moment later; records written in between are read twice at
    /// most, never skipped.)
    fn note_starts<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
    ) {
        if self.reset != OffsetReset::Latest || tpl.count() == 0 {
            return;
        }
        let committed = match consumer.committed_offsets(tpl.clone(), CALL_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(agent = %self.router.agent, error = %e, "reading committed offsets of new partitions; a rollback before their first commit reads them from their beginning");
                return;
            }
        };
        let mut starts = self.starts.lock().unwrap_or_else(|p| p.into_inner());
        for e in committed.elements() {
            if matches!(e.offset(), Offset::Offset(_)) {
                continue;
            }
            match consumer.fetch_watermarks(e.topic(), e.partition(), CALL_TIMEOUT) {
                Ok((_, high)) => {
                    starts.insert((Arc::from(e.topic()), e.partition()), high);
                }
                Err(err) => {
                    tracing::warn!(agent = %self.router.agent, topic = e.topic(), partition = e.partition(), error = %err, "reading the end of a new partition");
                }
            }
        }
    }
}

fn cooperative<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> bool {
    matches!(
        consumer.rebalance_protocol(),
        RebalanceProtocol::Cooperative
    )
}

fn tps_of(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

/// The consumer's whole assignment (none when librdkafka cannot say).
fn assignment<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Vec<Tp> {
    consumer
        .assignment()
        .map(|tpl| tps_of(&tpl))
        .unwrap_or_default()
}
