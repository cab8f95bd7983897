//! The commit step of an agent instance: every commit interval (or when many sends are pending,
//! or for a revocation, shutdown or `Stream::commit`), the instance's pending sends, dead
//! letters and table changelog records are made durable with the offsets of the records that
//! made them, then local table state is stored and the offsets committed. One step at a time;
//! the agent goes on reading while it runs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::BoxFuture;

use super::RecordLoop;
use crate::base::error::{Error, Result};
use crate::base::message::{Headers, OutRecord, now_millis};
use crate::base::metrics::AgentStats;
use crate::instance::table::{TableCore, TableDef};
use crate::io::store::Overlay;
use crate::io::transport::{Committer, Deliveries, Delivery, Log, Outgoing, Pending, Refused, Tp};

pub(super) struct Commit {
    /// Ends with the offsets the group refused during a rebalance.
    pub(super) future: BoxFuture<'static, Result<Refused>>,
    pub(super) acks: Vec<std_mpsc::SyncSender<()>>,
    pub(super) last: bool,
}

impl RecordLoop {
    pub(super) fn has_work(&self) -> bool {
        !self.done.is_empty()
            || self.shared.pending_len() > 0
            || self.shared.tables().iter().any(|t| t.is_dirty())
            || self.shared.flushers().iter().any(|f| f.dirty())
            || self.shared.has_dead()
    }

    /// The commit step: (1) the agent's sends and its tables' changelog records become durable
    /// (on the embedded log with the group offsets, in one LMDB transaction); (2) table data,
    /// source offsets and changelog offsets are written in one table-store transaction; (3) on
    /// Kafka, the consumer offsets are committed. A crash between steps leaves the changelog
    /// ahead of local state, which recovery replays.
    pub(super) fn start_commit(&mut self, acks: Vec<std_mpsc::SyncSender<()>>, last: bool) {
        debug_assert!(self.committing.is_none(), "one commit step at a time");
        self.last_step = tokio::time::Instant::now();
        self.fetched = (0, 0);
        let step = self.take_effects(last);
        let span = tracing::info_span!(
            parent: None,
            "rill.commit",
            agent = %self.shared.agent,
            offsets = step.offsets.len(),
            records = step.records()
        );
        let future = Box::pin(tracing::Instrument::instrument(step.run(), span));
        self.committing = Some(Commit { future, acks, last });
        let next = self.next_deadline();
        if let Some(deadline) = &mut self.deadline {
            deadline.as_mut().reset(next);
        }
    }

    /// Takes what the step makes durable: window state flushed into table overlays, pending
    /// sends, finished offsets, dead letters and the tables' writes.
    fn take_effects(&mut self, last: bool) -> CommitStep {
        let mut flushed = Ok(());
        for flusher in self.shared.flushers() {
            if flushed.is_ok() {
                flushed = flusher.flush();
            }
        }
        let pending = self.shared.take_pending();
        let offsets: Vec<(Tp, i64)> = self.done.drain();
        tracing::trace!(agent = %self.shared.agent, sends = pending.len(), offsets = offsets.len(), last, "commit step");
        // Dead letters and retry records first: they go out with the offsets they stand for.
        let dead = self.shared.take_dead();
        let (mut tables, mut changelogs) = (Vec::new(), Vec::new());
        let cores = self.shared.tables();
        for core in &cores {
            let (changelog, puts) = core.take_writes();
            if let Some(writes) = changelog.filter(|w| !w.is_empty()) {
                changelogs.push((core.def.changelog.clone(), writes));
            }
            if !puts.is_empty() || !offsets.is_empty() {
                tables.push((core.def.clone(), puts));
            }
        }
        let stats = self.shared.stats.clone();
        if let Some(t) = self.shared.event_time() {
            let lag = self.shared.position.clock.now_ms().saturating_sub(t);
            stats.event_time_lag_ms.store(lag, Ordering::Relaxed);
            stats.event_time_lag_set.store(true, Ordering::Relaxed);
        }
        CommitStep {
            flushed,
            pending,
            dead,
            changelogs,
            offsets,
            tables,
            cores,
            log: self.shared.log.clone(),
            committer: self.committer.clone(),
            group: self.group.clone(),
            on_tick: std::mem::take(&mut self.on_tick),
            stats,
        }
    }

    /// When the next commit step is due. Under exactly-once every instance of the worker
    /// commits on the same ticks (multiples of the interval since the worker's first), so
    /// their steps reach the transactional producer together and share one transaction
    /// (`transport::kafka::txn` gathers them); otherwise an interval from now.
    pub(super) fn next_deadline(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let transactional = self.committer.transactional();
        if !transactional || self.interval.is_zero() {
            return now + self.interval;
        }
        static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
        let epoch = *EPOCH.get_or_init(|| now);
        let interval = self.interval.as_nanos().max(1);
        let ticks = now.duration_since(epoch).as_nanos() / interval + 1;
        let offset = u64::try_from(ticks.saturating_mul(interval)).unwrap_or(u64::MAX);
        epoch + Duration::from_nanos(offset)
    }

    /// Waits for the commit step in progress (if any) and handles its outcome: a failed commit
    /// stops the agent without committing past it.
    pub(super) fn poll_committing(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let Some(commit) = &mut self.committing else {
            return Poll::Ready(Ok(()));
        };
        let result = ready!(commit.future.as_mut().poll(cx));
        let Some(commit) = self.committing.take() else {
            return Poll::Ready(Ok(()));
        };
        for ack in commit.acks {
            let _ = ack.send(());
        }
        if commit.last {
            self.closed = true;
        }
        Poll::Ready(match result {
            Ok(refused) => {
                for table in &self.shared.tables() {
                    table.committed();
                }
                self.commit_again(refused);
                Ok(())
            }
            Err(Error::Transaction(why)) if !commit.last => {
                self.roll_back(&why);
                Err(Error::Transaction(why))
            }
            Err(e) => {
                tracing::error!(agent = %self.shared.agent, error = %e, "commit failed; stopping the agent without committing past it");
                let reported = Error::Shutdown(format!("commit failed: {e}"));
                self.shared.fail(e);
                self.closed = true;
                self.commit_failed = true;
                for table in &self.shared.tables() {
                    table.discard();
                }
                Err(reported)
            }
        })
    }

    /// Offsets the group refused during a rebalance go in the next step, for the partitions
    /// the instance still owns (a revocation's step took its partitions away before it ran:
    /// their next owner reads them again).
    fn commit_again(&mut self, refused: Refused) {
        for (tp, next) in refused {
            if self.owned_tps.contains(&tp) {
                self.done.raise(tp, next);
            }
        }
    }

    /// An exactly-once transaction was aborted: forget every effect since the last commit
    /// (table overlays, buffered sends and dead letters, finished offsets) and read again from
    /// the committed offsets. Local tables reload from the store, which holds the last commit.
    fn roll_back(&mut self, why: &str) {
        tracing::warn!(agent = %self.shared.agent, error = %why, "transaction aborted; rolling back to the last commit");
        for table in &self.shared.tables() {
            table.discard();
        }
        drop(self.shared.take_pending());
        drop(self.shared.take_dead());
        self.done.clear();
        self.in_flight = None;
        self.held_done.clear();
        self.held.clear();
        self.hold_timer = None;
        self.attempts.clear();
        self.batch = Vec::new().into_iter();
        self.batch_caught_up.clear();
        self.shared.position.clear_batch_partitions();
        self.rewinding = true;
        self.committer.request_rewind();
    }
}

/// What one commit step makes durable, taken from the instance when it starts.
struct CommitStep {
    flushed: Result<()>,
    pending: Vec<Pending>,
    /// Dead letters and retry records.
    dead: Vec<OutRecord>,
    /// Each table's changelog topic and the step's writes to it.
    changelogs: Vec<(Arc<str>, Arc<Overlay>)>,
    offsets: Vec<(Tp, i64)>,
    tables: Vec<(Arc<TableDef>, Arc<Overlay>)>,
    cores: Vec<Arc<TableCore>>,
    log: Arc<dyn Log>,
    committer: Arc<dyn Committer>,
    group: Arc<str>,
    on_tick: bool,
    stats: Arc<AgentStats>,
}

impl CommitStep {
    /// Sends, dead letters and changelog records the step makes durable (pending sends of
    /// one batch count once).
    fn records(&self) -> usize {
        let logged: usize = self.changelogs.iter().map(|(_, w)| w.len()).sum();
        self.pending.len() + self.dead.len() + logged
    }

    /// (1) Sends, dead letters and changelog records become durable, with the offsets where
    /// the log stores them together; (2) the tables' writes and the offsets they reflect go to
    /// the table store; (3) the offsets are committed where (1) did not.
    async fn run(mut self) -> Result<Refused> {
        std::mem::replace(&mut self.flushed, Ok(()))?;
        if self.records() == 0 && self.offsets.is_empty() {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let mut pending = self.pending;
        let batch = Deliveries::new();
        for record in self.dead {
            self.log.enqueue(record, &batch).await?.add_to(&mut pending);
        }
        enqueue_changelogs(&*self.log, &self.changelogs, &batch, &mut pending).await?;
        let produced = self
            .log
            .deliver(Delivery {
                pending,
                group: &self.group,
                offsets: &self.offsets,
                committer: Some(&*self.committer),
                on_tick: self.on_tick,
            })
            .await?;
        if let Some((def, _)) = self.tables.first() {
            let store = def.store.clone();
            let writes =
                crate::instance::table::commit_writes(&self.tables, &self.offsets, &produced);
            drop(self.tables);
            let cores = self.cores;
            tokio::task::spawn_blocking(move || {
                store.commit(writes)?;
                // The store has the writes: readers go to it. Dropping the step's writes here
                // frees them on this thread, not the agent's.
                for core in &cores {
                    core.committed();
                }
                Ok::<_, Error>(())
            })
            .await
            .map_err(|e| Error::Shutdown(format!("table commit: {e}")))??;
        }
        let refused = self.committer.commit_offsets(self.offsets).await?;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats.commit_latency.observe(started.elapsed());
        Ok(refused)
    }
}

/// Enqueues the tables' changelog records, stamped with the wall clock, from the step's writes:
/// borrowed where the log takes them at once (librdkafka copies them), owned where it holds
/// them until the commit (the embedded log, exactly-once) or its queue is full.
async fn enqueue_changelogs(
    log: &dyn Log,
    changelogs: &[(Arc<str>, Arc<Overlay>)],
    batch: &Arc<Deliveries>,
    pending: &mut Vec<Pending>,
) -> Result<()> {
    let now = now_millis();
    for (topic, writes) in changelogs {
        for ((partition, key), value) in writes.iter() {
            let record = Outgoing {
                topic,
                key: Some(key),
                value: value.as_deref(),
                partition: Some(*partition),
                timestamp: now,
                headers: None,
            };
            if log.try_enqueue(&record, batch)? {
                Pending::add_enqueued(pending, batch);
                continue;
            }
            let owned = OutRecord {
                topic: topic.clone(),
                partition: Some(*partition),
                key: Some(key.clone()),
                value: value.clone(),
                timestamp: now,
                headers: Headers::default(),
            };
            log.enqueue(owned, batch).await?.add_to(pending);
        }
    }
    Ok(())
}
