//! Failed records: the failure policy applied to a record the agent failed on or that could not
//! be decoded, and the partitions held back behind a record retried in place or a retry-topic
//! record not due yet.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::RecordLoop;
use crate::base::error::Error;
use crate::base::failure::{self, Action, Failure};
use crate::base::message::RawRecord;
use crate::io::transport::Tp;

/// A partition held back: its first record is due again at `until` (an in-place retry, or a
/// retry-topic record not yet due); the records behind it wait their turn.
pub(super) struct Held {
    pub(super) until: tokio::time::Instant,
    pub(super) records: VecDeque<RawRecord>,
}

impl RecordLoop {
    /// Holds `tp` back for `wait`, with `record` first in line.
    pub(super) fn hold(&mut self, tp: Tp, record: RawRecord, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        let held = self.held.entry(tp).or_insert_with(|| Held {
            until,
            records: VecDeque::new(),
        });
        held.until = until;
        held.records.push_front(record.detached());
        self.arm_hold_timer();
    }

    pub(super) fn arm_hold_timer(&mut self) {
        if let Some(first) = self.held.values().map(|h| h.until).min() {
            match &mut self.hold_timer {
                Some(timer) if timer.deadline() <= first => {}
                _ => self.hold_timer = Some(Box::pin(tokio::time::sleep_until(first))),
            }
        }
    }

    /// The first record of a held partition whose time has come.
    pub(super) fn release_held(&mut self) -> Option<RawRecord> {
        if self.held.is_empty() {
            return None;
        }
        let now = tokio::time::Instant::now();
        let tp = self
            .held
            .iter()
            .find(|(_, h)| h.until <= now)
            .map(|(tp, _)| tp.clone())?;
        let held = self.held.get_mut(&tp)?;
        let record = held.records.pop_front();
        // A retry record behind it that is not due yet holds the partition again.
        if let Some(next_due) = held.records.front().and_then(failure::due_of) {
            let wait = next_due.saturating_sub(crate::base::message::now_millis());
            if wait > 0 {
                held.until = now + Duration::from_millis(wait.unsigned_abs());
            }
        }
        if held.records.is_empty() {
            self.held.remove(&tp);
        }
        self.arm_hold_timer();
        record
    }

    /// Applies the failure policy to `raw` (the record in flight), which failed `attempts`
    /// times so far; false when the policy stops the agent.
    fn apply(&mut self, raw: RawRecord, failure: Failure, attempts: u32) -> bool {
        if crate::base::telemetry::active() {
            self.shared
                .fail_record_span(failure.kind.name(), &failure.message);
        }
        let stats = &self.shared.stats;
        let agent = &self.shared.agent;
        let now = crate::base::message::now_millis();
        let action = self.policy.decide(failure.kind, attempts, now);
        tracing::warn!(
            %agent, topic = %raw.topic, partition = raw.partition, offset = raw.offset,
            kind = failure.kind.name(), error = %failure.message, attempts,
            action = ?action, "a record failed"
        );
        match action {
            Action::Skip => {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
            }
            Action::DeadLetter => {
                stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                let topic = self.policy.dead_letter.clone();
                self.shared.push_dead(failure::failed_record(
                    &raw, &topic, None, agent, &failure, attempts, now, None,
                ));
            }
            Action::RetryTopic(topic, due) => {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                let (_, partition, _) = failure::origin(&raw);
                self.shared.push_dead(failure::failed_record(
                    &raw,
                    &topic,
                    Some(partition),
                    agent,
                    &failure,
                    attempts,
                    now,
                    Some(due),
                ));
            }
            Action::Hold(wait) => {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                if let Some((tp, offset)) = self.in_flight.take() {
                    self.attempts.insert((tp.clone(), offset), attempts);
                    self.hold(tp, raw, wait);
                }
            }
            Action::Stop => {
                // Not finished: its offset is not committed.
                self.in_flight = None;
                return false;
            }
        }
        true
    }

    /// A record that could not be decoded (reported by the stream's decode step).
    pub(super) fn apply_failure(&mut self, raw: RawRecord, failure: Failure) {
        let message = failure.message.clone();
        if !self.apply(raw, failure, 1) {
            self.fail(Error::agent(
                &self.shared.agent,
                format!(
                    "stopping on a record that cannot be decoded (on_error = \"stop\"): {message}"
                ),
            ));
        }
    }

    /// The agent function returned `Err` or panicked: applies the policy to the record it was
    /// processing. `Err` gives the failure back when the worker must stop: the policy says
    /// so, or there is no record to blame.
    pub(crate) fn agent_failed(&mut self, failure: Failure) -> std::result::Result<(), Failure> {
        self.shared.stats.failures.fetch_add(1, Ordering::Relaxed);
        let (Some(raw), Some((tp, offset))) = (self.current.take(), self.in_flight.clone()) else {
            return Err(failure);
        };
        if self.closed {
            return Err(failure);
        }
        let earlier = self
            .attempts
            .get(&(tp, offset))
            .copied()
            .unwrap_or_else(|| failure::attempts_of(&raw));
        if self.apply(raw, failure.clone(), earlier + 1) {
            Ok(())
        } else {
            Err(failure)
        }
    }
}
