//! How fast the machine's cores run, through the suite's runs. This machine is a VM whose
//! cores change speed by up to 2x within minutes, at idle too (2026-12-06: a CPU-bound Python
//! loop took 0.19-0.40 s of CPU time for the same work). A program's CPU per record, its
//! backlog rate and so the rate of a latency run at "half its peak" move with it, and a
//! latency run on a slower machine than the backlog runs that set its rate gets a load its
//! machine cannot carry. Each run says how fast the machine was meanwhile.
//!
//! The probe: a fixed loop of dependent integer operations, timed by the wall clock; the
//! fastest of five tries, so that time spent waiting for a core (the machine is busy while it
//! measures) is left out. Once a second on a thread of its own: about 1 % of a core.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{median, now_ms};

/// Rounds of the loop: 2.4-3.6 ms a pass on this machine (2026-12-06).
const WORK: u32 = 1_000_000;
const TRIES: usize = 5;
const EVERY: Duration = Duration::from_secs(1);

/// One pass of the loop (xorshift64: each round depends on the last).
fn spin() -> Duration {
    let start = Instant::now();
    let mut x: u64 = std::hint::black_box(0x9E37_79B9_7F4A_7C15);
    for _ in 0..WORK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x);
    start.elapsed()
}

/// The probe's time now, in µs: the fastest of `TRIES` passes.
fn probe_us() -> f64 {
    (0..TRIES)
        .map(|_| spin())
        .min()
        .unwrap_or_default()
        .as_secs_f64()
        * 1e6
}

/// Probes once a second until dropped; answers for any period since it started.
pub(crate) struct SpeedWatch {
    /// (ms since the epoch, probe µs).
    samples: Arc<Mutex<Vec<(i64, f64)>>>,
    stop: Arc<AtomicBool>,
}

impl SpeedWatch {
    pub(crate) fn start() -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (into, until) = (Arc::clone(&samples), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !until.load(Ordering::Relaxed) {
                let us = probe_us();
                into.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((now_ms(), us));
                std::thread::sleep(EVERY);
            }
        });
        SpeedWatch { samples, stop }
    }

    /// The median probe (µs) over `[from, until)` (ms since the epoch); `None` without a sample.
    pub(crate) fn median_between(&self, from: i64, until: i64) -> Option<f64> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let within: Vec<f64> = samples
            .iter()
            .filter(|(at, _)| (from..until).contains(at))
            .map(|(_, us)| *us)
            .collect();
        (!within.is_empty()).then(|| median(within))
    }
}

impl Drop for SpeedWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_a_period_counts_only_its_samples() {
        let watch = SpeedWatch {
            samples: Arc::new(Mutex::new(vec![
                (1_000, 900.0),
                (2_000, 1_800.0),
                (3_000, 1_000.0),
                (4_000, 5_000.0),
            ])),
            stop: Arc::new(AtomicBool::new(true)),
        };
        assert_eq!(watch.median_between(1_000, 4_000), Some(1_000.0));
        assert_eq!(watch.median_between(1_000, 3_000), Some(1_350.0));
        assert_eq!(watch.median_between(5_000, 6_000), None);
    }

    #[test]
    fn the_probe_takes_time_and_the_watch_samples_it() {
        assert!(probe_us() > 0.0);
        let watch = SpeedWatch::start();
        let from = now_ms();
        std::thread::sleep(Duration::from_millis(300));
        assert!(watch.median_between(from - 1_000, now_ms() + 1).is_some());
    }
}
