//! Punctuation (Kafka Streams' punctuators): a function an agent's stream calls every interval
//! of the worker's clock (`Stream::every`) or of its event time (`Stream::every_event_time`),
//! between two records, inside the instance, so it can read and write the tables of the
//! partitions the instance owns and send records in the instance's commit step.
//!
//! Wall-clock punctuation fires while the stream waits for records too (the stream's task
//! wakes at the due time; the test harness's virtual clock moves it). Event-time punctuation
//! fires when the largest event time the stream has handed out passes the due time, so it
//! follows the data, idle or not. A punctuation late by several intervals fires once (as Kafka
//! Streams' does), at the next due time after now.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::base::error::Result;
use crate::base::message::{OutRecord, encode_out};
use crate::base::record::Record;
use crate::base::time::Clock;

/// What a punctuator gets when it runs.
pub struct Punctuation {
    at_ms: i64,
    partitions: Vec<i32>,
    sends: Vec<OutRecord>,
}

impl Punctuation {
    /// The time it was due: ms since the epoch of the worker's clock (`every`) or of event
    /// time (`every_event_time`).
    pub fn at_ms(&self) -> i64 {
        self.at_ms
    }

    /// The partitions the instance owns now (their table keys may be written).
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// Sends `value` to `topic` (keyed by its `#[record(key)]` field) in the instance's next
    /// commit step.
    pub fn send<V: Record>(&mut self, topic: &str, value: &V) -> Result<()> {
        self.sends.push(encode_out(
            topic,
            V::CODEC,
            value.key(),
            value,
            Some(self.at_ms),
        )?);
        Ok(())
    }
}

/// Which time a punctuator follows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PunctuationTime {
    WallClock,
    EventTime,
}

type PunctuateFn = Box<dyn FnMut(&mut Punctuation) -> Result<()> + Send>;

/// One punctuator of a stream.
pub(crate) struct Punctuator {
    time: PunctuationTime,
    interval_ms: i64,
    next_ms: Option<i64>,
    f: PunctuateFn,
    /// Wakes the stream's task at the wall-clock due time.
    wake: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Punctuator {
    pub(crate) fn new(
        time: PunctuationTime,
        interval: std::time::Duration,
        f: PunctuateFn,
    ) -> Self {
        Punctuator {
            time,
            interval_ms: i64::try_from(interval.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
            next_ms: None,
            f,
            wake: None,
        }
    }

    /// Which time it follows.
    pub(crate) fn time(&self) -> PunctuationTime {
        self.time
    }

    /// Runs the function if it is due at `now_ms` (the clock's time, or the largest event
    /// time handed out; `None` before the first record for event time); the records it sent.
    /// Registers a wake-up for the next wall-clock due time.
    pub(crate) fn poll_due(
        &mut self,
        cx: &mut Context<'_>,
        clock: &Clock,
        now_ms: Option<i64>,
        partitions: impl FnOnce() -> Vec<i32>,
    ) -> Result<Vec<OutRecord>> {
        let Some(now) = now_ms else {
            return Ok(Vec::new());
        };
        let next = *self
            .next_ms
            .get_or_insert(now.saturating_add(self.interval_ms));
        let mut sends = Vec::new();
        if now >= next {
            let mut punctuation = Punctuation {
                at_ms: next,
                partitions: partitions(),
                sends: Vec::new(),
            };
            (self.f)(&mut punctuation)?;
            sends = punctuation.sends;
            let ticks = (now - next) / self.interval_ms + 1;
            self.next_ms = Some(next.saturating_add(ticks.saturating_mul(self.interval_ms)));
            self.wake = None;
        }
        if self.time == PunctuationTime::WallClock {
            self.register_wake(cx, clock, now);
        }
        Ok(sends)
    }

    /// Makes sure the task is woken at the next due time (or when a virtual clock moves).
    fn register_wake(&mut self, cx: &mut Context<'_>, clock: &Clock, now: i64) {
        let due = self.next_ms.unwrap_or(now);
        if self.wake.is_none() {
            self.wake = Some(match clock.subscribe() {
                Some(mut moved) => Box::pin(async move {
                    let _ = moved.changed().await;
                }),
                None => {
                    let wait =
                        std::time::Duration::from_millis(u64::try_from(due - now).unwrap_or(0));
                    Box::pin(tokio::time::sleep(wait))
                }
            });
        }
        if let Some(wake) = &mut self.wake
            && let Poll::Ready(()) = wake.as_mut().poll(cx)
        {
            // Fired (or the clock moved): the next poll sets up the next one.
            self.wake = None;
            cx.waker().wake_by_ref();
        }
    }
}
