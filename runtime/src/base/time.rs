//! The worker's clock. Event time comes from records; this clock only measures how long a
//! partition has been idle (so an idle partition stops holding windows open) and answers a
//! windowed table's `now()`. Tests swap it for a virtual clock they move by hand, so window
//! tests never sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::watch;

use crate::base::message::now_millis;

/// Wall-clock time for the worker, or a virtual clock a test advances.
#[derive(Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A clock that moves only when told to (the test harness's).
    Virtual(Arc<VirtualClock>),
}

/// A clock a test moves by hand, plus a watermark floor the test can raise.
pub struct VirtualClock {
    now: AtomicI64,
    floor: AtomicI64,
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Clock::System => f.write_str("System"),
            Clock::Virtual(v) => write!(f, "Virtual({} ms)", v.now.load(Ordering::Relaxed)),
        }
    }
}

impl Clock {
    /// A virtual clock starting at the current wall-clock time.
    pub fn virtual_now() -> Self {
        Clock::Virtual(Arc::new(VirtualClock {
            now: AtomicI64::new(now_millis()),
            floor: AtomicI64::new(i64::MIN),
            changed: watch::channel(0).0,
        }))
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => now_millis(),
            Clock::Virtual(v) => v.now.load(Ordering::Acquire),
        }
    }

    /// The lowest watermark a test has forced (`i64::MIN` when none).
    pub(crate) fn watermark_floor(&self) -> i64 {
        match self {
            Clock::System => i64::MIN,
            Clock::Virtual(v) => v.floor.load(Ordering::Acquire),
        }
    }

    /// A receiver that changes whenever a virtual clock moves (`None` for the system clock).
    pub(crate) fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        match self {
            Clock::System => None,
            Clock::Virtual(v) => Some(v.changed.subscribe()),
        }
    }
}

impl VirtualClock {
    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now.fetch_add(ms, Ordering::AcqRel);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Raises every window's watermark to at least `ms` (event time, milliseconds).
    pub fn advance_watermark(&self, ms: i64) {
        self.floor.fetch_max(ms, Ordering::AcqRel);
        self.changed.send_modify(|n| *n += 1);
    }
}
