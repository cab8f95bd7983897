//! How long the latency runs' views took to reach the broker: the suite's producer shares the
//! machine with the broker and the program it measures, and at loads the machine does not
//! carry its own queue grows. Every latency figure includes that time, so the report shows it.

use std::sync::Mutex;

use rdkafka::ClientContext;
use rdkafka::producer::{DeliveryResult, ProducerContext};

/// Views sampled: one in this many of the measured period's.
pub(crate) const SAMPLE_EVERY: u64 = 16;

/// The context of the suite's producer: a record sent with a nonzero opaque (its production
/// time, ms) has its delivery timed, from then until the broker acknowledged it (`acks=all`)
/// and the producer's own thread served the report (`ThreadedProducer`).
#[derive(Default)]
pub(crate) struct DeliveryClock {
    took_ms: Mutex<Vec<f32>>,
}

impl DeliveryClock {
    /// The sampled delivery times (ms), sorted.
    pub(crate) fn sorted(&self) -> Vec<f64> {
        let mut all: Vec<f64> = self
            .took_ms
            .lock()
            .map(|t| t.iter().map(|&ms| f64::from(ms)).collect())
            .unwrap_or_default();
        all.sort_by(f64::total_cmp);
        all
    }
}

impl ClientContext for DeliveryClock {}

impl ProducerContext for DeliveryClock {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, produced_at: usize) {
        if produced_at == 0 || result.is_err() {
            return;
        }
        let took = super::now_ms() - i64::try_from(produced_at).unwrap_or(i64::MAX);
        if let Ok(mut all) = self.took_ms.lock() {
            all.push(took as f32);
        }
    }
}
