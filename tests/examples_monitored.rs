//! The `monitored` example as a process on the embedded log, fed by its synthetic generator:
//! its agent has no metrics code, yet the worker's `/metrics` counts the views it consumes and
//! times its ~10 ms of work per view, and the app's own counter is served beside rill's.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::http;
use common::prometheus::sample;

const WAIT: Duration = Duration::from_secs(30);

/// `GET path`: (status, body). The server answers with a `Content-Length`, not in chunks.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let reply = http::get(addr, path, None);
    assert!(
        !reply
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked")),
        "unexpected chunked reply: {reply:?}"
    );
    (reply.status, reply.body)
}

/// The address in the `web server listening on http://<addr>/` log line.
fn web_addr(log: &Mutex<Vec<String>>) -> SocketAddr {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = log.lock().expect("log lines").iter().find_map(|l| {
            let url = l.split("web server listening on ").nth(1)?;
            http::addr_of(url).ok()
        });
        if let Some(addr) = found {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "no web server address logged: {:#?}",
            log.lock().expect("log lines")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn monitored_agent_is_counted_and_timed_without_metrics_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let child = common::command("monitored")
        .args(["--data-dir", data])
        .env("RILL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn example");
    let mut child = common::Proc(child);
    let log = common::stderr_lines(&mut child, "monitored");
    let addr = web_addr(&log);

    let records_in = "rill_records_in_total{agent=\"monitored_agent\",topic=\"pageviews\"}";
    let scrape = || {
        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, 200, "{body}");
        body
    };
    // The generator sends 50 views a second: wait for some, then for more.
    let deadline = Instant::now() + WAIT;
    let (first, n1) = loop {
        let body = scrape();
        if let Some(n) = sample(&body, records_in).filter(|n| *n >= 5.0) {
            break (body, n);
        }
        assert!(Instant::now() < deadline, "no views counted:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (second, n2) = loop {
        std::thread::sleep(Duration::from_millis(500));
        let body = scrape();
        let n = sample(&body, records_in).unwrap_or(0.0);
        if n > n1 {
            break (body, n);
        }
        assert!(
            Instant::now() < deadline,
            "{records_in} stuck at {n1}:\n{body}"
        );
    };
    assert!(n2 > n1, "{first}\n{second}");

    // The histogram observed the views the agent finished, each taking its 10 ms of work.
    let count = sample(
        &second,
        "rill_processing_seconds_count{agent=\"monitored_agent\"}",
    )
    .unwrap_or_else(|| panic!("no processing histogram count:\n{second}"));
    let sum = sample(
        &second,
        "rill_processing_seconds_sum{agent=\"monitored_agent\"}",
    )
    .unwrap_or_else(|| panic!("no processing histogram sum:\n{second}"));
    assert!(count >= 5.0, "count {count}:\n{second}");
    let mean = sum / count;
    assert!(
        (0.005..1.0).contains(&mean),
        "mean processing time {mean} s over {count} views:\n{second}"
    );
    // Every observation sits above the 5 ms bucket: `le="0.005"` counts none of them.
    let fast = sample(
        &second,
        "rill_processing_seconds_bucket{agent=\"monitored_agent\",le=\"0.005\"}",
    );
    assert_eq!(fast, Some(0.0), "{second}");

    // The app's own metric, registered through `App::metrics`, is served beside rill's.
    let by_url: f64 = ["/", "/pricing", "/docs", "/blog/rill"]
        .iter()
        .filter_map(|url| sample(&second, &format!("pageviews_by_url_total{{url=\"{url}\"}}")))
        .sum();
    assert!(by_url >= 5.0, "pageviews_by_url_total: {by_url}\n{second}");

    // The status page is served too.
    let (status, page) = get(addr, "/");
    assert_eq!(status, 200);
    assert!(page.starts_with("<!doctype html>"), "{page}");

    let status = common::terminate(&mut child, WAIT);
    assert!(status.success(), "clean shutdown, got {status:?}");
}
