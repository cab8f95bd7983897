//! The steps of the record loop, in the order `RecordLoop::poll_raw` takes them for each record:
//! the commit step under way, table recovery, failures, finishing the record handed out last,
//! shutdown, assignment changes, the commit interval, the next record, and what to do when the
//! batch in hand is used up. Each step either lets the loop go on to the next one or ends this
//! turn of the loop with a [`Flow`].

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::{COOP_RECORDS, MAX_PARKED, MAX_PENDING, RecordLoop, Stop};
use crate::base::error::Error;
use crate::base::failure;
use crate::base::message::RawRecord;
use crate::io::transport::{Control, Tp};

/// How a step ends a turn of the record loop.
pub(super) enum Flow {
    /// Start the loop over (something changed that an earlier step looks at).
    Again,
    /// Wait: the step registered for what wakes the agent's task.
    Wait,
    /// The stream ends.
    End,
    /// Hand this record to the agent.
    Hand(RawRecord),
}

/// A step's outcome: go on to the next step (with a value), or end the turn.
pub(super) type Step<T = ()> = ControlFlow<Flow, T>;

impl RecordLoop {
    /// One turn of the record loop (see `poll_raw`).
    pub(super) fn turn(&mut self, cx: &mut Context<'_>) -> Step {
        let busy = self.commit_under_way(cx)?;
        self.recovery(cx)?;
        self.failures()?;
        // Between records of a batch in hand the instance does not wait, so the control
        // channels and the commit deadline are only looked at, without registering for a
        // wake-up (three registrations per record were ~4% of a stateless agent's time).
        // Whenever it may wait (the batch is used up, partitions are held back, a rollback is
        // under way) they are polled.
        let quick = self.batch.len() > 0 && self.held.is_empty() && !self.rewinding;
        self.finish_in_flight();
        if !busy {
            self.stop_requested(cx, quick)?;
            self.assignment_changes(cx, quick);
        }
        if (self.committing.is_some() && !busy) || self.recovering.is_some() {
            return ControlFlow::Break(Flow::Again);
        }
        if self.rewinding {
            // Woken by the control channel when the assignment is announced again.
            return ControlFlow::Break(Flow::Wait);
        }
        self.commit_when_due(cx, busy, quick)?;
        self.next_record(cx)?;
        self.batch_used_up(cx, busy)
    }

    /// A commit step under way: polled, and `busy` while it runs (this poll registered for its
    /// end). A revocation's or the last step holds everything until it is done.
    fn commit_under_way(&mut self, cx: &mut Context<'_>) -> Step<bool> {
        let Some(commit) = &self.committing else {
            return ControlFlow::Continue(false);
        };
        let exclusive = commit.last || !commit.acks.is_empty();
        if self.poll_committing(cx).is_ready() {
            return ControlFlow::Break(Flow::Again);
        }
        if exclusive {
            return ControlFlow::Break(Flow::Wait);
        }
        ControlFlow::Continue(true)
    }

    /// Table recovery after an assignment: no record of a partition reaches the agent before
    /// its state is back.
    fn recovery(&mut self, cx: &mut Context<'_>) -> Step {
        let Some(recovering) = &mut self.recovering else {
            return ControlFlow::Continue(());
        };
        let Poll::Ready(result) = recovering.as_mut().poll(cx) else {
            return ControlFlow::Break(Flow::Wait);
        };
        self.recovering = None;
        match result {
            Ok(resume) => self.resume = resume,
            Err(e) => {
                tracing::error!(agent = %self.shared.agent, error = %e, "table recovery failed; stopping the agent");
                self.shared.fail(e);
                self.closed = true;
            }
        }
        ControlFlow::Break(Flow::Again)
    }

    /// The stream has ended or failed (elsewhere too: a `group_by` pump), or records failed to
    /// decode and wait for the failure policy.
    fn failures(&mut self) -> Step {
        if self.closed || self.shared.failed.load(Ordering::Acquire) {
            // The agent returns and the worker reports the error; nothing past it is committed.
            self.closed = true;
            return ControlFlow::Break(Flow::End);
        }
        if self.shared.has_failed_records() {
            for (raw, failure) in self.shared.take_failed_records() {
                self.apply_failure(raw, failure);
            }
        }
        if self.closed {
            return ControlFlow::Break(Flow::Again);
        }
        ControlFlow::Continue(())
    }

    /// The agent asked for the next record: the one handed out last is finished (its offset
    /// commits at the next step; a batch's wait for the whole batch).
    fn finish_in_flight(&mut self) {
        let Some((tp, offset)) = self.in_flight.take() else {
            return;
        };
        if let Some(at) = self.handed_at.take() {
            let now = std::time::Instant::now();
            self.shared.stats.processing.observe(now - at);
            self.finished_at = Some(now);
        }
        if crate::base::telemetry::active() {
            self.shared.end_record_span();
        }
        if !self.attempts.is_empty() {
            self.attempts.remove(&(tp.clone(), offset));
        }
        if self.holding {
            self.held_done.push((tp, offset));
        } else {
            self.done.set(tp, offset + 1);
        }
    }

    /// Shutdown: the last commit step.
    fn stop_requested(&mut self, cx: &mut Context<'_>, quick: bool) -> Step {
        if (!quick || !self.stop.is_empty())
            && let Poll::Ready(Some(Stop::Now)) = self.stop.poll_recv(cx)
        {
            self.start_commit(Vec::new(), true);
            return ControlFlow::Break(Flow::Again);
        }
        ControlFlow::Continue(())
    }

    /// Assignments and revocations the fetcher announced (they wait for the step under way).
    fn assignment_changes(&mut self, cx: &mut Context<'_>, quick: bool) {
        while (!quick || !self.ctrl.is_empty())
            && let Poll::Ready(Some(msg)) = self.ctrl.poll_recv(cx)
        {
            let wait_for_it = match msg {
                Control::Assigned {
                    generation,
                    partitions,
                } => self.assigned(generation, partitions),
                Control::Revoked { generation, ack } => {
                    self.revoked(generation, ack);
                    true
                }
            };
            if wait_for_it {
                break;
            }
        }
    }

    /// Partitions were assigned: this instance's share becomes its own, and its tables recover
    /// them (true: recovery runs before anything else).
    fn assigned(&mut self, generation: u64, partitions: Vec<Tp>) -> bool {
        self.generation = generation;
        if std::mem::take(&mut self.rewinding) {
            // Window state flushed since the rollback (when the agent function returned) is
            // not committed either: windows reload from the store.
            for table in &self.shared.tables() {
                table.discard();
            }
        }
        self.shared
            .position
            .assignment
            .fetch_add(1, Ordering::AcqRel);
        let mine: Vec<Tp> = partitions
            .into_iter()
            .filter(|(_, p)| p.unsigned_abs() as usize % self.instances == self.instance)
            .collect();
        self.owned_tps = mine.clone();
        self.at_end.clear();
        self.batch_caught_up.clear();
        self.publish_caught_up();
        let mut owned: Vec<i32> = mine.iter().map(|(_, p)| *p).collect();
        owned.sort_unstable();
        owned.dedup();
        *self
            .shared
            .position
            .owned
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = owned;
        self.resume.clear();
        let Some(recovery) = self.recovery.clone() else {
            return false;
        };
        let agent = self.shared.agent.clone();
        self.recovering = Some(Box::pin(async move {
            tokio::task::spawn_blocking(move || recovery.recover(&agent, &mine))
                .await
                .map_err(|e| Error::Shutdown(format!("table recovery: {e}")))?
        }));
        true
    }

    /// Everything is revoked: drop what is held (the partitions' next owner refetches it) and
    /// commit what is finished before acknowledging.
    fn revoked(&mut self, generation: u64, ack: std_mpsc::SyncSender<()>) {
        self.generation = generation;
        self.shared
            .position
            .assignment
            .fetch_add(1, Ordering::AcqRel);
        // Held records are refetched by the partitions' next owner, and so are those of a
        // batch being assembled.
        self.held.clear();
        self.held_done.clear();
        self.shared.position.clear_batch_partitions();
        self.hold_timer = None;
        self.attempts.clear();
        self.owned_tps.clear();
        self.at_end.clear();
        self.batch_caught_up.clear();
        self.publish_caught_up();
        self.batch = Vec::new().into_iter();
        self.shared
            .position
            .owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.start_commit(vec![ack], false);
    }

    /// The commit interval: a step when there is work, else the deadline moves on.
    fn commit_when_due(&mut self, cx: &mut Context<'_>, busy: bool, quick: bool) -> Step {
        let due = match &mut self.deadline {
            Some(deadline) if quick => deadline.is_elapsed(),
            Some(deadline) => deadline.as_mut().poll(cx).is_ready(),
            None => {
                // Polled at once: registered with the timer, `is_elapsed` can tell.
                let mut deadline = Box::pin(tokio::time::sleep_until(self.next_deadline()));
                let due = deadline.as_mut().poll(cx).is_ready();
                self.deadline = Some(deadline);
                due
            }
        };
        // A reply is waited for: commit once nothing is in hand, rather than at the interval.
        let replied = self.batch.len() == 0 && self.shared.commit_soon.load(Ordering::Relaxed);
        if (due || replied) && !busy {
            self.shared.commit_soon.store(false, Ordering::Relaxed);
            if !replied && self.put_off(cx) {
                return ControlFlow::Continue(());
            }
            if self.has_work() {
                self.on_tick = true;
                self.start_commit(Vec::new(), false);
                return ControlFlow::Break(Flow::Again);
            }
            let next = self.next_deadline();
            if let Some(deadline) = &mut self.deadline {
                deadline.as_mut().reset(next);
                let _ = deadline.as_mut().poll(cx);
            }
        }
        ControlFlow::Continue(())
    }

    /// Puts the interval's step off while the loop reads a backlog, until the backlog
    /// interval has passed since the last step: fewer, larger steps while catching up (see
    /// `Config::backlog_commit_interval`). The loop reads a backlog when at least three in
    /// four batches it received since the interval's last tick were full (the fetch stopped
    /// at its size limit with records left; the last batch when none came). True when it put
    /// the step off, to the next tick.
    fn put_off(&mut self, cx: &mut Context<'_>) -> bool {
        if self.backlog_interval <= self.interval {
            // One interval (exactly-once keeps its ticks aligned across instances).
            return false;
        }
        let (batches, full) = std::mem::take(&mut self.fetched);
        let backlog = if batches == 0 {
            self.last_full
        } else {
            full.saturating_mul(4) >= batches.saturating_mul(3)
        };
        let now = tokio::time::Instant::now();
        let until = self.last_step + self.backlog_interval;
        if !backlog || now >= until {
            return false;
        }
        if let Some(deadline) = &mut self.deadline {
            deadline.as_mut().reset((now + self.interval).min(until));
            let _ = deadline.as_mut().poll(cx);
        }
        true
    }

    /// The next record for the agent: a held partition's that is due, else the batch's next.
    fn next_record(&mut self, cx: &mut Context<'_>) -> Step {
        if self.batch_generation < self.generation {
            // Fetched before a revocation: another owner (or a later fetch) redoes them.
            self.batch = Vec::new().into_iter();
            self.batch_caught_up.clear();
        }
        if let Some(record) = self.release_held() {
            if self.consume_marker(&record) {
                return ControlFlow::Break(Flow::Again);
            }
            return ControlFlow::Break(Flow::Hand(record));
        }
        if self.batch_generation > self.generation {
            // A batch from an assignment whose announcement is already queued: read it first.
            return ControlFlow::Break(Flow::Again);
        }
        if self.batch.len() > 0 {
            // Every 32 records count against the task's budget as one channel message does: a
            // busy agent lets the tasks sharing its runtime thread run (web endpoints, other
            // agents, timers) every 4096 records, a few ms. (A unit per record made it yield
            // every 128, and each yield on a multi-thread runtime wakes an idle worker to steal
            // it: ~5% of a stateless agent.)
            self.handed = self.handed.wrapping_add(1);
            if self.handed.is_multiple_of(COOP_RECORDS) {
                match tokio::task::coop::poll_proceed(cx) {
                    Poll::Ready(restore) => restore.made_progress(),
                    Poll::Pending => return ControlFlow::Break(Flow::Wait),
                }
            }
        }
        match self.batch.next() {
            Some(record) => ControlFlow::Break(self.take_from_batch(record)),
            None => ControlFlow::Continue(()),
        }
    }

    /// A record of the batch: skipped when local table state has it already, parked behind a
    /// held partition, consumed when it is a watermark marker, held when it is a retry record
    /// not due yet; else handed out.
    fn take_from_batch(&mut self, mut record: RawRecord) -> Flow {
        let tp = || (record.topic.clone(), record.partition);
        if !self.resume.is_empty() && self.resume.get(&tp()).is_some_and(|r| record.offset < *r) {
            // Already reflected in local table state (committed there, not yet in the group):
            // finished without running the agent again.
            self.done.set(tp(), record.offset + 1);
            return Flow::Again;
        }
        if !self.held.is_empty()
            && let Some(held) = self.held.get_mut(&tp())
        {
            held.records.push_back(record.detached());
            return Flow::Again;
        }
        if self.consume_marker(&record) {
            return Flow::Again;
        }
        if let Some(due) = failure::due_of(&record) {
            // A retry record: its original timestamp back (event time).
            record.timestamp = failure::original_timestamp(&record);
            let wait = due.saturating_sub(crate::base::message::now_millis());
            if wait > 0 {
                // A retry record not due yet: its retry topic partition waits.
                let wait = Duration::from_millis(wait.unsigned_abs());
                self.hold(tp(), record, wait);
                return Flow::Again;
            }
        }
        Flow::Hand(record)
    }

    /// The batch in hand is used up: its partitions' ends are reached; a full send buffer
    /// commits; held partitions' timers and backpressure; then the next batch.
    fn batch_used_up(&mut self, cx: &mut Context<'_>, busy: bool) -> Step {
        if !self.batch_caught_up.is_empty() {
            let reached = std::mem::take(&mut self.batch_caught_up);
            self.at_end.extend(reached);
            self.publish_caught_up();
        }
        if self.shared.pending_len() >= MAX_PENDING {
            if busy {
                // Woken when the step under way ends.
                return ControlFlow::Break(Flow::Wait);
            }
            self.start_commit(Vec::new(), false);
            return ControlFlow::Break(Flow::Again);
        }
        if let Some(timer) = &mut self.hold_timer
            && timer.as_mut().poll(cx).is_ready()
        {
            self.hold_timer = None;
            self.arm_hold_timer();
            return ControlFlow::Break(Flow::Again);
        }
        let parked: usize = self.held.values().map(|h| h.records.len()).sum();
        if parked >= MAX_PARKED {
            // Backpressure: wait for the held partitions before reading more.
            return ControlFlow::Break(Flow::Wait);
        }
        // Asked for records: the agent function has built its windows and joins by now.
        self.shared.position.reading();
        match self.data.poll_recv(cx) {
            Poll::Ready(Some(batch)) => {
                self.last_full = batch.more;
                self.fetched.0 = self.fetched.0.saturating_add(1);
                self.fetched.1 = self.fetched.1.saturating_add(u32::from(batch.more));
                self.batch_generation = batch.generation;
                self.batch = batch.records.into_iter();
                self.batch_caught_up = batch.caught_up;
            }
            Poll::Ready(None) if busy => return ControlFlow::Break(Flow::Wait),
            Poll::Ready(None) => self.start_commit(Vec::new(), true),
            Poll::Pending => return ControlFlow::Break(Flow::Wait),
        }
        ControlFlow::Break(Flow::Again)
    }
}
