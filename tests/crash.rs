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
        ("RILL_LOG", "info,rill_runtime=debug"),
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
    assert!(common::terminate(&mut child, Duration::from_secs(30)).success());

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

/// What `views_per_minute` sends for each closed window.
#[record]
struct UrlViews {
    url: String,
    start: i64,
    end: i64,
    views: u64,
}

#[record]
struct KeyedView {
    user_id: String,
    #[record(key)]
    url: String,
    #[record(timestamp)]
    view_time: f64,
}

const VIEWS: usize = 200_000;

/// Windows on the embedded log: their state, the results they emit and the source offsets
/// commit together, so SIGKILLs at any point give every window once, with its exact count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_windows_then_restart_emits_every_window_once_and_exactly()
-> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    let log = App::new("views_per_minute")
        .agents([])
        .test_in(dir.path())
        .await?;
    // Views 40 ms of event time apart, cycling through the URLs: 1,500 views a minute.
    let base = 1_700_000_000.0;
    // Two URLs per partition of `pageviews` (8): every partition moves the watermark, so
    // windows close as the records are processed, not when idle partitions time out.
    let urls = common::records::covering_urls("/p", 8, 2);
    let mut expected: std::collections::BTreeMap<(String, i64), u64> = Default::default();
    for i in 0..VIEWS {
        let view = KeyedView {
            user_id: format!("u{i}"),
            url: urls[i % urls.len()].clone(),
            view_time: base + i as f64 * 0.04,
        };
        let ms = (view.view_time * 1000.0).round() as i64;
        *expected
            .entry((view.url.clone(), ms.div_euclid(60_000) * 60_000))
            .or_default() += 1;
        log.producer().send_to("pageviews", &view).await?;
    }
    // A view of every URL an hour later closes every window above.
    for url in &urls {
        let view = KeyedView {
            user_id: "closer".into(),
            url: url.clone(),
            view_time: base + VIEWS as f64 * 0.04 + 3600.0,
        };
        log.producer().send_to("pageviews", &view).await?;
    }
    log.producer().flush().await?;
    let windows = expected.len();

    let env = [
        ("SYNTHETIC_VIEWS", "0"),
        ("RILL_COMMIT_INTERVAL_MS", "20"),
        ("RILL_LOG", "warn"),
    ];
    let args = ["--data-dir", data.as_str()];
    let mut last = 0;
    let mut mid_stream_kills = 0;
    for fraction in [0.1, 0.3, 0.5] {
        let mut child = common::spawn_example_quiet("views_per_minute", &args, &env);
        let target = (windows as f64 * fraction) as usize;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let done = log.count("views_per_minute")?;
            if done >= target.max(last + 1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "worker stalled at {done} windows"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        common::signal(&child, "KILL");
        common::wait_exit(&mut child, Duration::from_secs(10));
        last = log.count("views_per_minute")?;
        if last >= windows {
            // A busy machine let it finish before this kill: the kills so far count.
            break;
        }
        mid_stream_kills += 1;
    }
    assert!(mid_stream_kills >= 1, "no kill landed mid-stream");

    let mut child = common::spawn_example_quiet("views_per_minute", &args, &env);
    let deadline = Instant::now() + Duration::from_secs(180);
    while log.count("views_per_minute")? < windows {
        assert!(Instant::now() < deadline, "restarted worker did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(common::terminate(&mut child, Duration::from_secs(30)).success());

    let emitted: Vec<UrlViews> = log.read("views_per_minute")?;
    assert_eq!(emitted.len(), windows, "no window emitted twice");
    let got: std::collections::BTreeMap<(String, i64), u64> = emitted
        .into_iter()
        .map(|w| ((w.url, w.start), w.views))
        .collect();
    assert_eq!(got, expected, "every window with its exact count");
    log.stop().await
}
