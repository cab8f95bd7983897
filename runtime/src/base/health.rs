//! Readiness: whether the worker can reach its broker. The Kafka fetchers and the offset
//! commits report here; a worker on the embedded log is always ready. The observability issue
//! serves this as `/ready`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the worker is connected; see the module docs.
#[derive(Debug)]
pub struct Health {
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            connected: AtomicBool::new(true),
            last_error: Mutex::new(None),
        }
    }
}

impl Health {
    /// True while the broker answers.
    pub fn is_ready(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Why the worker last lost its broker, while it has not come back.
    pub fn last_error(&self) -> Option<String> {
        if self.is_ready() {
            return None;
        }
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn lost(&self, why: impl std::fmt::Display) {
        if self.connected.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = %why, "broker unreachable: not ready; retrying with backoff, nothing is committed meanwhile");
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_string());
    }

    pub(crate) fn back(&self) {
        if !self.connected.load(Ordering::Relaxed) && !self.connected.swap(true, Ordering::AcqRel) {
            tracing::info!("broker reachable again: ready");
        }
    }
}
