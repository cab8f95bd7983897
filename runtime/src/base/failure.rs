//! Failure handling: what happens to a record that cannot be decoded, or whose processing made
//! the agent function return `Err` or panic. A policy per agent (`#[agent(on_error = "...")]`,
//! else the App-wide default) decides; the worker never loses the record and never stops on
//! one bad event unless told to.
//!
//! | policy | the failing record | then |
//! | --- | --- | --- |
//! | `dead_letter` (default) | goes to the dead-letter topic | continue after it |
//! | `retry` | is retried in place, with exponential backoff and jitter, holding back only its partition | dead-lettered after the last attempt |
//! | `retry_topics` | moves to `<app>-<agent>-retry-<n>` and comes back after that topic's delay, without holding anything back | dead-lettered after the last attempt |
//! | `skip` | is counted and logged | continue after it |
//! | `stop` | is not committed | the worker stops |
//!
//! The policy covers the agent's own errors (`rill::Error::user`, `?` on its error types) and
//! panics. Errors rill raises about the deployment (a table written from the wrong partition,
//! stored state that no longer decodes, storage or broker failures; see
//! `Error::is_record_failure`) stop the worker whatever the policy: dead-lettering every record
//! would bury them.
//!
//! After an `Err` or a panic the agent function is called again, with a stream that continues
//! after the failing record (or with the record again, for `retry`); records before it are not
//! processed twice. Records that cannot be decoded never reach the agent: they follow the same
//! policy, except that they are never retried (decoding again gives the same result), so
//! `retry` and `retry_topics` dead-letter them at once.
//!
//! A dead-letter record keeps the original key, value bytes and headers and adds the headers
//! in [`headers`]. Its message timestamp is the time it was set aside, the original one in
//! [`headers::TIMESTAMP`]: a record's timestamp is often its event time, which a broker's time
//! retention would take for the dead letter's age (a backfill's dead letters would be deleted
//! at once). Retry records are stamped the same way and get their timestamp back when read.
//! Dead letters and retry records are sent in the commit step, before the source offset they
//! stand for is committed: if the send fails the offset does not move.

use std::sync::Arc;
use std::time::Duration;

use crate::base::message::{Headers, OutRecord, RawRecord, now_millis};

/// What to do with a record that fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Send it to the dead-letter topic and continue (the default).
    #[default]
    DeadLetter,
    /// Retry it in place `attempts` times, backing off exponentially from `backoff` (with
    /// jitter), holding back only its partition; then dead-letter it.
    Retry {
        /// Retries before dead-lettering.
        attempts: u32,
        /// First delay; each retry doubles it.
        backoff: Duration,
    },
    /// Move it through the retry topics `<app>-<agent>-retry-1..=attempts`, the n-th delaying
    /// it by `backoff · 4^(n-1)`, without holding back anything; then dead-letter it.
    RetryTopics {
        /// Retry topics (and retries) before dead-lettering.
        attempts: u32,
        /// Delay of the first retry topic.
        backoff: Duration,
    },
    /// Count and log it, and continue.
    Skip,
    /// Stop the worker without committing the record.
    Stop,
}

impl OnError {
    /// Parses a policy name (`dead_letter`, `retry`, `retry_topics`, `skip`, `stop`), with the
    /// default attempts (3) and backoff (100 ms in place, 1 s through retry topics).
    ///
    /// ```
    /// use rill_runtime::OnError;
    /// assert_eq!(OnError::from_name("skip"), Some(OnError::Skip));
    /// assert!(OnError::from_name("ignore").is_none());
    /// ```
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "dead_letter" => OnError::DeadLetter,
            "retry" => OnError::Retry {
                attempts: 3,
                backoff: Duration::from_millis(100),
            },
            "retry_topics" => OnError::RetryTopics {
                attempts: 3,
                backoff: Duration::from_secs(1),
            },
            "skip" => OnError::Skip,
            "stop" => OnError::Stop,
            _ => return None,
        })
    }

    /// The policy's name.
    pub fn name(self) -> &'static str {
        match self {
            OnError::DeadLetter => "dead_letter",
            OnError::Retry { .. } => "retry",
            OnError::RetryTopics { .. } => "retry_topics",
            OnError::Skip => "skip",
            OnError::Stop => "stop",
        }
    }

    /// The same policy with `attempts` retries (for `retry` and `retry_topics`).
    pub fn with_attempts(self, n: u32) -> Self {
        match self {
            OnError::Retry { backoff, .. } => OnError::Retry {
                attempts: n,
                backoff,
            },
            OnError::RetryTopics { backoff, .. } => OnError::RetryTopics {
                attempts: n,
                backoff,
            },
            other => other,
        }
    }

    /// The same policy with a first delay of `backoff` (for `retry` and `retry_topics`).
    pub fn with_backoff(self, backoff: Duration) -> Self {
        match self {
            OnError::Retry { attempts, .. } => OnError::Retry { attempts, backoff },
            OnError::RetryTopics { attempts, .. } => OnError::RetryTopics { attempts, backoff },
            other => other,
        }
    }
}

/// Header names rill adds to dead-letter and retry records.
pub mod headers {
    /// The error message.
    pub const ERROR: &str = "rill.error";
    /// `decode`, `error` (the agent returned `Err`) or `panic`.
    pub const ERROR_KIND: &str = "rill.error.kind";
    /// Topic the record was first read from.
    pub const SOURCE_TOPIC: &str = "rill.source.topic";
    /// Its partition there.
    pub const SOURCE_PARTITION: &str = "rill.source.partition";
    /// Its offset there.
    pub const SOURCE_OFFSET: &str = "rill.source.offset";
    /// The agent that failed on it.
    pub const AGENT: &str = "rill.agent";
    /// How many times processing was attempted.
    pub const ATTEMPTS: &str = "rill.attempts";
    /// When it failed (ms since the epoch).
    pub const FAILED_AT: &str = "rill.failed_at";
    /// Retry records: when the record is due back (ms since the epoch).
    pub const DUE: &str = "rill.retry.due";
    /// The record's own message timestamp (ms since the epoch; absent when it had none).
    /// Dead-letter, retry and late-event records are stamped with the time they are sent, so
    /// that a broker's time retention counts from then and not from an old event time; a
    /// retried or replayed record gets this timestamp back.
    pub const TIMESTAMP: &str = "rill.source.timestamp";
}

/// Why a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    Decode,
    Error,
    Panic,
}

impl FailureKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FailureKind::Decode => "decode",
            FailureKind::Error => "error",
            FailureKind::Panic => "panic",
        }
    }
}

/// A failed record and why.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) kind: FailureKind,
    pub(crate) message: String,
}

/// An agent's failure policy, resolved at start: its topics and limits.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) on_error: OnError,
    pub(crate) dead_letter: Arc<str>,
    /// `retry_topics` only: `<app>-<agent>-retry-1..=attempts`.
    pub(crate) retry_topics: Vec<Arc<str>>,
    /// Larger record values are failures (`oversized`) before decoding.
    pub(crate) max_record_bytes: usize,
}

/// What to do with one failed record.
#[derive(Debug, PartialEq)]
pub(crate) enum Action {
    DeadLetter,
    Skip,
    Stop,
    /// Hand it to the agent again after this delay, holding back its partition.
    Hold(Duration),
    /// Send it to this retry topic, due back at this time (ms since the epoch).
    RetryTopic(Arc<str>, i64),
}

impl Policy {
    pub(crate) fn new(
        on_error: OnError,
        app_id: &str,
        agent: &str,
        dead_letter: Option<&str>,
        max_record_bytes: usize,
    ) -> Self {
        let retry_topics = match on_error {
            OnError::RetryTopics { attempts, .. } => (1..=attempts)
                .map(|n| Arc::from(retry_topic(app_id, agent, n).as_str()))
                .collect(),
            _ => Vec::new(),
        };
        Policy {
            on_error,
            dead_letter: Arc::from(dead_letter_topic(app_id, agent, dead_letter).as_str()),
            retry_topics,
            max_record_bytes,
        }
    }

    /// The action for a record that failed its `attempts`-th time (from 1), at `now` (ms since
    /// the epoch; a retry record is due back a delay after it).
    pub(crate) fn decide(&self, kind: FailureKind, attempts: u32, now: i64) -> Action {
        match self.on_error {
            OnError::Skip => Action::Skip,
            OnError::Stop => Action::Stop,
            OnError::DeadLetter => Action::DeadLetter,
            // Decoding again gives the same result: no retries.
            _ if kind == FailureKind::Decode => Action::DeadLetter,
            OnError::Retry {
                attempts: n,
                backoff,
            } if attempts <= n => Action::Hold(retry_delay(backoff, attempts)),
            OnError::RetryTopics {
                attempts: n,
                backoff,
            } if attempts <= n => {
                let topic = self
                    .retry_topics
                    .get(attempts as usize - 1)
                    .cloned()
                    .unwrap_or_else(|| self.dead_letter.clone());
                let delay = retry_topic_delay(backoff, attempts);
                let due = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                Action::RetryTopic(topic, due)
            }
            OnError::Retry { .. } | OnError::RetryTopics { .. } => Action::DeadLetter,
        }
    }
}

/// The dead-letter topic of an agent: `<app>-<agent>-dlq` unless named.
pub(crate) fn dead_letter_topic(app_id: &str, agent: &str, named: Option<&str>) -> String {
    named.map_or_else(|| format!("{app_id}-{agent}-dlq"), str::to_owned)
}

/// The n-th retry topic of an agent (from 1).
pub(crate) fn retry_topic(app_id: &str, agent: &str, n: u32) -> String {
    format!("{app_id}-{agent}-retry-{n}")
}

/// Where a record was first read: its own coordinates, or those a retry record carries.
pub(crate) fn origin(raw: &RawRecord) -> (String, i32, i64) {
    let carried = |name: &str| {
        raw.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    match (
        carried(headers::SOURCE_TOPIC),
        carried(headers::SOURCE_PARTITION).and_then(|p| p.parse().ok()),
        carried(headers::SOURCE_OFFSET).and_then(|o| o.parse().ok()),
    ) {
        (Some(topic), Some(partition), Some(offset)) => (topic, partition, offset),
        _ => (raw.topic.to_string(), raw.partition, raw.offset),
    }
}

/// The offset of [`origin`], without copying the topic: read for every record a window or a
/// join applies.
pub(crate) fn origin_offset(raw: &RawRecord) -> i64 {
    let carried = |name: &str| {
        raw.headers
            .get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    match (
        raw.headers.get(headers::SOURCE_TOPIC).is_some(),
        carried(headers::SOURCE_PARTITION).and_then(|p| p.parse::<i32>().ok()),
        carried(headers::SOURCE_OFFSET).and_then(|o| o.parse::<i64>().ok()),
    ) {
        (true, Some(_), Some(offset)) => offset,
        _ => raw.offset,
    }
}

/// The topic a record stands for: the one a join's repartition topic carries, else the one a
/// retry record was first read from, else its own.
pub(crate) fn side_topic(raw: &RawRecord) -> &str {
    if let Some(topic) = raw.headers.get(crate::base::message::header::TOPIC)
        && let Ok(topic) = std::str::from_utf8(topic)
    {
        return topic;
    }
    if let Some(topic) = raw.headers.get(headers::SOURCE_TOPIC)
        && let Ok(topic) = std::str::from_utf8(topic)
    {
        return topic;
    }
    &raw.topic
}

/// Attempts a retry record says were made so far (0 for a record from its source).
pub(crate) fn attempts_of(raw: &RawRecord) -> u32 {
    raw.headers
        .get(headers::ATTEMPTS)
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// The timestamp a dead-letter or retry record carries for its original (see
/// [`headers::TIMESTAMP`]), else its own.
pub(crate) fn original_timestamp(raw: &RawRecord) -> Option<i64> {
    raw.headers
        .get(headers::TIMESTAMP)
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .or(raw.timestamp)
}

/// Stamps a record rill keeps aside (a dead letter, a retry or a late event) with the time
/// now, keeping its own timestamp in [`headers::TIMESTAMP`]: its timestamp may be an event
/// time far in the past, which a broker's time retention would take as the record's age.
pub(crate) fn stamp_now(record: &mut OutRecord, original: Option<i64>) {
    if let Some(t) = original {
        record.headers.0.push((
            headers::TIMESTAMP.to_owned(),
            Some(t.to_string().into_bytes()),
        ));
    }
    record.timestamp = now_millis();
}

/// When a retry record is due back (`None`: now).
pub(crate) fn due_of(raw: &RawRecord) -> Option<i64> {
    raw.headers
        .get(headers::DUE)
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
}

/// The original record with rill's failure headers (replacing any earlier ones), for `topic`;
/// it failed at `failed_at` (ms since the epoch).
#[allow(
    clippy::too_many_arguments,
    reason = "one failure's facts, each a header of the record"
)]
pub(crate) fn failed_record(
    raw: &RawRecord,
    topic: &Arc<str>,
    partition: Option<i32>,
    agent: &str,
    failure: &Failure,
    attempts: u32,
    failed_at: i64,
    due: Option<i64>,
) -> OutRecord {
    let (source_topic, source_partition, source_offset) = origin(raw);
    let mut headers: Vec<(String, Option<Vec<u8>>)> = raw
        .headers
        .0
        .iter()
        // rill's headers of the failed attempt go; a join's side tag stays, so the record
        // finds its side when it comes back (retry topics, `dlq replay`).
        .filter(|(name, _)| {
            !name.starts_with("rill.") || name == crate::base::message::header::TOPIC
        })
        .cloned()
        .collect();
    let mut add =
        |name: &str, value: String| headers.push((name.to_owned(), Some(value.into_bytes())));
    add(headers::ERROR, failure.message.clone());
    add(headers::ERROR_KIND, failure.kind.name().to_owned());
    add(headers::SOURCE_TOPIC, source_topic);
    add(headers::SOURCE_PARTITION, source_partition.to_string());
    add(headers::SOURCE_OFFSET, source_offset.to_string());
    add(headers::AGENT, agent.to_owned());
    add(headers::ATTEMPTS, attempts.to_string());
    add(headers::FAILED_AT, failed_at.to_string());
    if let Some(due) = due {
        add(headers::DUE, due.to_string());
    }
    let mut record = OutRecord {
        topic: topic.clone(),
        partition,
        key: raw.key.as_deref().map(<[u8]>::to_vec),
        value: raw.value.as_deref().map(<[u8]>::to_vec),
        timestamp: 0,
        headers: Headers(headers),
    };
    stamp_now(&mut record, original_timestamp(raw));
    record
}

/// The delay before in-place retry `attempt` (from 1): `backoff · 2^(attempt-1)`, capped at
/// a minute, times a random factor in [0.5, 1.5) so retries of many records spread out.
pub(crate) fn retry_delay(backoff: Duration, attempt: u32) -> Duration {
    let base = backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let base = base.min(Duration::from_secs(60));
    base.mul_f64(0.5 + rand::random::<f64>())
}

/// The delay of retry topic `n` (from 1): `backoff · 4^(n-1)`.
pub(crate) fn retry_topic_delay(backoff: Duration, n: u32) -> Duration {
    backoff.saturating_mul(4u32.saturating_pow(n.saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::message::Bytes;

    fn raw() -> RawRecord {
        RawRecord {
            topic: Arc::from("views"),
            partition: 3,
            offset: 42,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"{bad")),
            timestamp: Some(7),
            headers: Headers(vec![("trace".into(), Some(b"t".to_vec()))]),
        }
    }

    #[test]
    fn a_dead_letter_keeps_the_record_and_says_what_failed_where() {
        let failure = Failure {
            kind: FailureKind::Decode,
            message: "expected value".into(),
        };
        let before = now_millis();
        let out = failed_record(
            &raw(),
            &Arc::from("dlq"),
            None,
            "count",
            &failure,
            1,
            before,
            None,
        );
        assert_eq!(out.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out.value.as_deref(), Some(&b"{bad"[..]));
        // Stamped now, so time retention counts from the failure; the original rides along.
        assert!(out.timestamp >= before, "{} < {before}", out.timestamp);
        let h = |n: &str| String::from_utf8(out.headers.get(n).unwrap().to_vec()).unwrap();
        assert_eq!(h(headers::TIMESTAMP), "7");
        assert_eq!(h("trace"), "t");
        assert_eq!(h(headers::ERROR_KIND), "decode");
        assert_eq!(h(headers::SOURCE_TOPIC), "views");
        assert_eq!(h(headers::SOURCE_PARTITION), "3");
        assert_eq!(h(headers::SOURCE_OFFSET), "42");
        assert_eq!(h(headers::AGENT), "count");
        assert_eq!(h(headers::ATTEMPTS), "1");
    }

    #[test]
    fn a_retry_record_carries_its_origin_through_every_hop() {
        let failure = Failure {
            kind: FailureKind::Error,
            message: "boom".into(),
        };
        let hop = failed_record(
            &raw(),
            &Arc::from("r1"),
            Some(3),
            "count",
            &failure,
            1,
            5,
            Some(99),
        );
        let again = RawRecord {
            topic: Arc::from("r1"),
            partition: 3,
            offset: 0,
            key: hop.key.clone().map(Bytes::from),
            value: hop.value.clone().map(Bytes::from),
            timestamp: Some(hop.timestamp),
            headers: hop.headers.clone(),
        };
        assert_eq!(origin(&again), ("views".to_string(), 3, 42));
        assert_eq!(origin_offset(&again), 42);
        assert_eq!(attempts_of(&again), 1);
        assert_eq!(due_of(&again), Some(99));
        let dead = failed_record(
            &again,
            &Arc::from("dlq"),
            None,
            "count",
            &failure,
            2,
            5,
            None,
        );
        assert_eq!(
            dead.headers
                .0
                .iter()
                .filter(|(n, _)| n == headers::SOURCE_TOPIC)
                .count(),
            1
        );
        assert!(dead.headers.get(headers::DUE).is_none());
        // The first record's timestamp, through every hop.
        assert_eq!(original_timestamp(&again), Some(7));
        let stamps: Vec<_> = dead
            .headers
            .0
            .iter()
            .filter(|(n, _)| n == headers::TIMESTAMP)
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(stamps, vec![Some(b"7".to_vec())]);
    }

    #[test]
    fn policies_decide_per_kind_and_attempt() {
        let retry = OnError::from_name("retry").unwrap().with_attempts(2);
        let p = Policy::new(retry, "app", "count", None, 1 << 20);
        assert_eq!(&*p.dead_letter, "app-count-dlq");
        assert!(matches!(
            p.decide(FailureKind::Error, 1, 0),
            Action::Hold(_)
        ));
        assert!(matches!(
            p.decide(FailureKind::Panic, 2, 0),
            Action::Hold(_)
        ));
        assert_eq!(p.decide(FailureKind::Error, 3, 0), Action::DeadLetter);
        assert_eq!(p.decide(FailureKind::Decode, 1, 0), Action::DeadLetter);
        let topics = OnError::from_name("retry_topics").unwrap();
        let p = Policy::new(topics, "app", "count", Some("failures"), 1 << 20);
        assert_eq!(&*p.dead_letter, "failures");
        match p.decide(FailureKind::Error, 2, 1_000) {
            Action::RetryTopic(topic, due) => {
                assert_eq!(&*topic, "app-count-retry-2");
                // The second retry topic delays by 4 × 1 s after the failure.
                assert_eq!(due, 5_000);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.decide(FailureKind::Error, 4, 0), Action::DeadLetter);
        let stop = Policy::new(OnError::Stop, "app", "count", None, 1 << 20);
        assert_eq!(stop.decide(FailureKind::Decode, 1, 0), Action::Stop);
    }

    #[test]
    fn in_place_retries_back_off_exponentially_with_jitter() {
        let d1 = retry_delay(Duration::from_millis(100), 1);
        let d3 = retry_delay(Duration::from_millis(100), 3);
        assert!(d1 >= Duration::from_millis(50) && d1 < Duration::from_millis(150));
        assert!(d3 >= Duration::from_millis(200) && d3 < Duration::from_millis(600));
        assert_eq!(
            retry_topic_delay(Duration::from_secs(1), 3),
            Duration::from_secs(16)
        );
    }
}
