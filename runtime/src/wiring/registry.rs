//! The worker's registry of what it must wind down: fetcher threads, pump tasks and the stop
//! channels of record loops, including those created after start (`group_by` adds a
//! repartition fetcher and pumps while agents run).

use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::instance::record_loop::Stop;

/// Threads, tasks and stop channels a worker must wind down, including those created after
/// start (repartition fetchers and pumps).
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) stops: Mutex<Vec<mpsc::UnboundedSender<Stop>>>,
    pub(crate) threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    pub(crate) pumps: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Registry {
    /// A thread the worker joins when it stops (fetchers, standbys, the global tables').
    pub(crate) fn hold_thread(&self, thread: std::thread::JoinHandle<()>) {
        self.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(thread);
    }

    pub(crate) fn stop_channel(&self) -> mpsc::UnboundedReceiver<Stop> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        rx
    }
}
