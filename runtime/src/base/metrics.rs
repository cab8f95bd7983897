//! Metrics: what rill counts about every agent, exposed at the web server's `/metrics` in the
//! Prometheus text format, next to the user's own metrics.
//!
//! rill's own metrics cost one or two relaxed atomic adds per record: agents count into
//! [`AgentStats`](crate::AgentStats) and a lock-free [`Histogram`], and a collector turns those
//! into Prometheus families when `/metrics` is scraped (so table sizes, consumer lag and
//! recovery progress are read then, not maintained per record).
//!
//! User metrics are `prometheus-client` metrics registered on the app's registry, which rill
//! re-exports so the versions match:
//!
//! ```
//! use rill_runtime::metrics::prometheus_client::metrics::counter::Counter;
//!
//! let orders: Counter = Counter::default();
//! let app = rill_runtime::App::new("shop")
//!     .metrics(|registry| registry.register("shop_orders", "Orders seen", orders.clone()));
//! # let _ = app;
//! ```
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `rill_records_in_total` | counter | agent, topic |
//! | `rill_records_out_total` | counter | agent, topic |
//! | `rill_processing_seconds` | histogram | agent |
//! | `rill_event_time_lag_seconds` | gauge | agent |
//! | `rill_consumer_lag` | gauge | agent, topic, partition |
//! | `rill_commits_total` | counter | agent |
//! | `rill_commit_seconds` | histogram | agent |
//! | `rill_dead_lettered_total`, `rill_retried_total`, `rill_skipped_total`, `rill_failures_total`, `rill_decode_errors_total` | counter | agent |
//! | `rill_late_records_total`, `rill_windows_closed_total` | counter | agent |
//! | `rill_table_keys`, `rill_table_bytes` | gauge | table |
//! | `rill_recovery_records_total`, `rill_recovery_target_records_total` (changelog offsets) | counter | agent |
//! | `rill_standby_records_total` (changelog offsets replayed into standby copies) | counter | agent |
//! | `rill_rebalances_total` | counter | agent, kind (`assigned`, `revoked`) |
//! | `rill_ready` | gauge | |

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

pub use prometheus_client;
/// The registry user metrics are registered on (`App::metrics`).
pub use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of rill's latency histograms: 10 µs to 10 s.
pub(crate) const LATENCY_BOUNDS: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 1.0, 10.0,
];

/// `LATENCY_BOUNDS` in nanoseconds (integer comparisons on the hot path).
const BOUNDS_NANOS: [u64; LATENCY_BOUNDS.len()] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
    10_000_000_000,
];

/// A latency histogram with fixed buckets, updated with relaxed atomics only (no lock: agents
/// observe into it on every record, scrapes read it concurrently).
#[derive(Debug)]
pub(crate) struct Histogram {
    /// Per bucket (not cumulative); the last counts values above every bound.
    counts: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one duration.
    pub(crate) fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NANOS.partition_point(|b| *b < nanos);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Sum (seconds), count, and `(upper bound, count)` per bucket, `+Inf` last.
    pub(crate) fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets = Vec::with_capacity(self.counts.len());
        let mut count = 0;
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            buckets.push((LATENCY_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

/// Counters kept per topic (records in or out of an agent by topic): a short list, since an
/// agent touches few topics; the hot path caches the counter of the topic it last used.
#[derive(Debug, Default)]
pub(crate) struct TopicCounters {
    counters: std::sync::Mutex<Vec<(std::sync::Arc<str>, std::sync::Arc<AtomicU64>)>>,
}

impl TopicCounters {
    /// The counter of `topic`, created at zero.
    pub(crate) fn counter(&self, topic: &str) -> std::sync::Arc<AtomicU64> {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = counters.iter().find(|(t, _)| **t == *topic) {
            return c.clone();
        }
        let c = std::sync::Arc::new(AtomicU64::new(0));
        counters.push((std::sync::Arc::from(topic), c.clone()));
        c
    }

    /// Every topic with its count.
    pub(crate) fn snapshot(&self) -> Vec<(std::sync::Arc<str>, u64)> {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(t, c)| (t.clone(), c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// A cached per-topic counter for a hot path: the counter of the topic last seen.
#[derive(Debug, Default)]
pub(crate) struct TopicCache {
    last: Option<(std::sync::Arc<str>, std::sync::Arc<AtomicU64>)>,
}

impl TopicCache {
    /// Adds one to `topic`'s counter in `counters`. A topic handed in as the same `Arc` each
    /// time (a fetched record's) is recognised by its address.
    pub(crate) fn inc(&mut self, counters: &TopicCounters, topic: &std::sync::Arc<str>) {
        self.inc_with(counters, topic, || topic.clone());
    }

    /// [`TopicCache::inc`] for a topic name (compared by content).
    pub(crate) fn inc_name(&mut self, counters: &TopicCounters, topic: &str) {
        self.inc_with(counters, topic, || std::sync::Arc::from(topic));
    }

    fn inc_with(
        &mut self,
        counters: &TopicCounters,
        topic: &str,
        owned: impl FnOnce() -> std::sync::Arc<str>,
    ) {
        match &self.last {
            Some((t, c)) if std::ptr::eq(&**t, topic) || **t == *topic => {
                c.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                let c = counters.counter(topic);
                c.fetch_add(1, Ordering::Relaxed);
                self.last = Some((owned(), c));
            }
        }
    }
}

/// Counters of one timer (`#[timer]`, `#[crontab]`), at `/metrics` as `rill_timer_*`.
#[derive(Debug, Default)]
pub struct TimerStats {
    /// Runs started.
    pub runs: AtomicU64,
    /// Runs that returned an error (each retry counts).
    pub failures: AtomicU64,
    /// Scheduled times passed over: a run overran them, or this worker did not lead.
    pub skipped: AtomicU64,
    /// Seconds the runs took.
    pub(crate) duration: Histogram,
}

/// Counters of one agent instance, readable from tests (and, later, exported as metrics).
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Records handed to the agent.
    pub records_in: AtomicU64,
    /// Records sent by the agent (sinks and topics).
    pub records_out: AtomicU64,
    /// Records that could not be decoded and were skipped.
    pub decode_errors: AtomicU64,
    /// Commit steps completed.
    pub commits: AtomicU64,
    /// Changelog offsets covered while recovering this agent's tables (the records applied,
    /// plus offsets compaction removed).
    pub restored: AtomicU64,
    /// Changelog offsets recovery set out to cover (with `restored`: its progress).
    pub restore_total: AtomicU64,
    /// Changelog offsets covered keeping standby copies of partitions this worker does not
    /// own warm (`Config::standby_replicas`).
    pub standby_replayed: AtomicU64,
    /// Records that arrived after their window had closed (dropped, or sent to a late topic).
    pub late_records: AtomicU64,
    /// Records skipped by windows because they carried no event time.
    pub no_event_time: AtomicU64,
    /// Windows closed (final results computed).
    pub windows_closed: AtomicU64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Retries: in place, or through a retry topic.
    pub retried: AtomicU64,
    /// Failed records skipped (`on_error = "skip"`).
    pub skipped: AtomicU64,
    /// Times the agent function returned `Err` or panicked on a record.
    pub failures: AtomicU64,
    /// Records handed to the agent, per topic.
    pub(crate) topics_in: TopicCounters,
    /// Records sent by the agent, per topic.
    pub(crate) topics_out: TopicCounters,
    /// From handing a record to the agent to the agent asking for the next one.
    pub(crate) processing: Histogram,
    /// Duration of commit steps.
    pub(crate) commit_latency: Histogram,
    /// Wall clock minus the event time of the last record processed, at the last commit step
    /// (ms), once `event_time_lag_set`.
    pub(crate) event_time_lag_ms: AtomicI64,
    pub(crate) event_time_lag_set: std::sync::atomic::AtomicBool,
}

impl AgentStats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanosecond_bounds_match_the_published_ones() {
        for (s, n) in LATENCY_BOUNDS.iter().zip(BOUNDS_NANOS) {
            assert_eq!((s * 1e9).round() as u64, n);
        }
    }

    #[test]
    fn histogram_buckets_and_sum() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(5));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 20.003_005).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.000_01, 1));
        let at_5ms = buckets.iter().find(|(b, _)| *b == 0.005).map(|(_, n)| *n);
        assert_eq!(at_5ms, Some(1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
    }

    #[test]
    fn topic_cache_counts_per_topic() {
        let counters = TopicCounters::default();
        let mut cache = TopicCache::default();
        let (a, b): (std::sync::Arc<str>, std::sync::Arc<str>) = ("a".into(), "b".into());
        cache.inc(&counters, &a);
        cache.inc(&counters, &a);
        cache.inc(&counters, &b);
        cache.inc_name(&counters, "a");
        let mut snap = counters.snapshot();
        snap.sort();
        assert_eq!(snap, vec![("a".into(), 3), ("b".into(), 1)]);
    }
}
