//! A worker on the embedded log killed with SIGKILL mid-stream and restarted loses nothing. On
//! the embedded log an agent's outputs and its offsets are committed in one LMDB transaction,
//! so it also repeats nothing.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rill::prelude::*;

#[record]
struct PageView {
    user_id: String,
    url: String,
    view_time: f64,
}

#[record]
struct UrlHit {
    url: String,
    user_id: String,
    view_time: f64,
}

const N: usize = 200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_loses_and_repeats_nothing() -> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    // The test shares the log with the worker process (LMDB is multi-process safe).
    let log = App::new("url_hits").agents([]).test_in(dir.path()).await?;
    for i in 0..N {
        let view = PageView {
            user_id: format!("u{i}"),
            url: format!("/p{}", i % 10),
            view_time: 1.7e9 + i as f64,
        };
        log.producer().send_to("pageviews", &view).await?;
    }
    log.producer().flush().await?;

    let env = [
        ("SYNTHETIC_VIEWS", "0"),
        ("RILL_COMMIT_INTERVAL_MS", "20"),
        ("RILL_LOG", "warn"),
    ];
    let args = ["--data-dir", data.as_str()];
    let mut kills = 0;
    let mut last = 0;
    // Kill the worker three times at different points, restarting it each time.
    for fraction in [0.1, 0.4, 0.7] {
        let mut child = common::spawn_example_quiet("sink", &args, &env);
        let target = (N as f64 * fraction) as usize;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let done = log.count("url_hits")?;
            if done >= target.max(last + 1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "worker stalled at {done} outputs"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        common::signal(&child, "KILL");
        common::wait_exit(&mut child, Duration::from_secs(10));
        kills += 1;
        last = log.count("url_hits")?;
        assert!(last < N, "the worker finished before the kill; raise N");
    }
    assert_eq!(kills, 3);

    let mut child = common::spawn_example_quiet("sink", &args, &env);
    let deadline = Instant::now() + Duration::from_secs(180);
    while log.count("url_hits")? < N {
        assert!(Instant::now() < deadline, "restarted worker did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    common::signal(&child, "TERM");
    assert!(common::wait_exit(&mut child, Duration::from_secs(30)).success());

    let hits: Vec<UrlHit> = log.read("url_hits")?;
    let users: HashSet<&str> = hits.iter().map(|h| h.user_id.as_str()).collect();
    assert_eq!(users.len(), N, "every view made it through");
    assert_eq!(hits.len(), N, "no view was processed twice");
    let committed: i64 = (0..8)
        .map(|p| {
            log.committed("url_hits-to_hits", "pageviews", p)
                .expect("offsets")
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(committed, N as i64);
    log.stop().await
}
