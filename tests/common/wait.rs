//! Bounded waiting for conditions the test harness's `TestApp::wait_until` cannot see: the
//! state of processes, of a broker, of an in-process `Worker`. Every wait names what it waited
//! for when it gives up.

use std::time::{Duration, Instant};

/// How often the waits look.
const POLL: Duration = Duration::from_millis(50);

/// Blocks until `done` holds, looking every 50 ms; fails the test naming `what` after
/// `timeout`. Returns how long it took.
pub(crate) fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(POLL);
    }
    start.elapsed()
}

/// [`wait_for`] on a tokio runtime: sleeps without blocking the thread.
pub(crate) async fn wait_for_async(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(POLL).await;
    }
    start.elapsed()
}

/// Gives agents time to do more than a test expects (emit a record twice, commit past a
/// failure), so that it shows in what the test looks at next.
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}
