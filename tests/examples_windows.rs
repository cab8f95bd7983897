//! The window examples as processes on the embedded log, fed by their synthetic generators:
//! the results they print (and the windowed table they keep) match what the generators' event
//! times work out to by hand.
//!
//! `RILL_IDLE_TIMEOUT_MS=1000` lets the partitions no key maps to stop holding the watermark
//! back after 1 s instead of 10 s, so windows close while the generator is still sending.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// One printed window: key, start and end (`HH:MM:SS`), count.
type Printed = (String, String, String, u64);

/// The example's window lines, in the order they were printed: lines look like
/// `window [12:00:00, 12:01:00) closed: /docs had 3 views`.
fn windows(lines: &[String]) -> Vec<Printed> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("window [")?;
            let (start, rest) = rest.split_once(", ")?;
            let (end, rest) = rest.split_once(") ")?;
            let (_, rest) = rest.split_once(": ")?;
            let (key, rest) = rest.split_once(" had ")?;
            let n = rest.strip_suffix(" views")?.parse().ok()?;
            Some((key.to_owned(), start.to_owned(), end.to_owned(), n))
        })
        .collect()
}

/// The counts of `key`'s windows, checking that they follow each other minute by minute.
fn counts_of(windows: &[Printed], key: &str) -> Vec<u64> {
    let mine: Vec<&Printed> = windows.iter().filter(|w| w.0 == key).collect();
    for pair in mine.windows(2) {
        assert_eq!(
            pair[0].2, pair[1].1,
            "consecutive windows of {key}: {mine:?}"
        );
    }
    mine.iter().map(|w| w.3).collect()
}

fn stop(child: &mut common::Proc) {
    let status = common::terminate(child, Duration::from_secs(30));
    assert!(status.success(), "clean shutdown, got {status:?}");
}

#[test]
fn views_per_minute_counts_each_url_per_minute_and_keeps_a_windowed_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    // 40 views, 5 s of event time apart from a minute boundary, cycling `/`, `/pricing`, `/`,
    // `/docs`: 12 views a minute, 6 on `/` and 3 on each other page; the last (partial)
    // minute has 4.
    let mut child = common::spawn_example(
        "views_per_minute",
        &["--data-dir", data],
        &[("SYNTHETIC_VIEWS", "40"), ("RILL_IDLE_TIMEOUT_MS", "1000")],
    );
    let lines = common::lines(&mut child);
    let out = common::wait_lines(&lines, WAIT, |l| {
        let w = windows(l);
        ["/", "/pricing", "/docs"]
            .iter()
            .all(|url| counts_of(&w, url).len() >= 3)
    });
    // The records up to 195 s close the first three minutes, not the fourth.
    let w = windows(&out);
    assert_eq!(counts_of(&w, "/"), [6, 6, 6], "{out:#?}");
    assert_eq!(counts_of(&w, "/pricing"), [3, 3, 3], "{out:#?}");
    assert_eq!(counts_of(&w, "/docs"), [3, 3, 3], "{out:#?}");

    // The windowed table has every minute, the open one included, read from the local copy
    // while the worker runs.
    let want: BTreeMap<String, Vec<u64>> = [
        ("/", vec![6, 6, 6, 2]),
        ("/docs", vec![3, 3, 3, 1]),
        ("/pricing", vec![3, 3, 3, 1]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        // {"key": [url, window start], "value": count}
        let mut entries: Vec<(String, i64, u64)> =
            common::table_json("views_per_minute", data, "views_this_minute")
                .into_iter()
                .map(|e| {
                    let url = e["key"][0].as_str().expect("url").to_owned();
                    let start = e["key"][1].as_i64().expect("window start");
                    (url, start, e["value"].as_u64().expect("count"))
                })
                .collect();
        entries.sort();
        let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (url, start, n) in &entries {
            assert_eq!(start % 60_000, 0, "minute windows: {entries:?}");
            got.entry(url.clone()).or_default().push(*n);
        }
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "views_this_minute: {entries:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(&mut child);
}

#[test]
fn event_time_counts_out_of_order_views_and_routes_late_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    // 60 views 5 s apart from a minute boundary, alternating `/` (even i) and `/docs` (odd).
    // Every 6th (i = 2, 8, 14, ...; on `/`) happened 20 s before it arrives: i = 14 arrives at
    // 70 s, after the watermark reached 60 s, yet the 30 s grace counts it in [0, 60). Every
    // 20th (i = 19, 39, 59; on `/docs`) happened 150 s before: late. So `/` has 1 view in the
    // minute before the first (i = 2, at -10 s) and 6 in each later one; `/docs` 6, 5, 6, 5 (a
    // late view is not counted). The last view (290 s) closes the windows ending by 255 s.
    let mut child = common::spawn_example(
        "event_time",
        &["--data-dir", data],
        &[("SYNTHETIC_VIEWS", "60")],
    );
    let lines = common::lines(&mut child);
    // The first late view arrives about 2 s in. If the partitions without views had not been
    // idle for a second by then (a slow start), it was not late yet and opened a window of its
    // own (`/docs` had 1 view, closing first): either way it is accounted for exactly once.
    let split = |l: &[String]| {
        let w = windows(l);
        let mut docs = counts_of(&w, "/docs");
        let early = docs.first() == Some(&1);
        if early {
            docs.remove(0);
        }
        let late = l
            .iter()
            .filter(|s| s.starts_with("late view of /docs at "))
            .count();
        (counts_of(&w, "/"), docs, late + usize::from(early))
    };
    let out = common::wait_lines(&lines, WAIT, |l| {
        let (root, docs, late) = split(l);
        root.len() >= 5 && docs.len() >= 4 && late >= 3
    });
    let (root, docs, late) = split(&out);
    assert_eq!(root, [1, 6, 6, 6, 6], "{out:#?}");
    assert_eq!(docs, [6, 5, 6, 5], "{out:#?}");
    assert_eq!(late, 3, "{out:#?}");
    // `/`'s first full minute is `/docs`'s first.
    let w = windows(&out);
    let first = |key: &str, n: u64| {
        w.iter()
            .find(|x| x.0 == key && x.3 == n)
            .map(|x| x.1.clone())
    };
    assert_eq!(first("/", 6), first("/docs", 6), "{out:#?}");
    assert!(
        out.iter().all(|l| !l.starts_with("late view of / ")),
        "{out:#?}"
    );
    stop(&mut child);
}

#[test]
fn sessions_accumulate_each_visit_into_a_window_state_struct() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let log = dir.path().join("stderr.log");
    // user-0 visits 3 pages, user-1 4, user-2 5 (on 4 distinct pages), 10 s apart, pausing
    // 100 s (more than the 30 s gap) between visits: every visit is one session, logged by
    // `on_window_close`.
    let mut child = common::spawn_example_logged(
        "sessions",
        &["--data-dir", data],
        &[("SYNTHETIC_VIEWS", "60"), ("RILL_IDLE_TIMEOUT_MS", "1000")],
        &log,
    );
    let lines = common::lines(&mut child);
    // Emit::Update: every view of an open session is printed.
    common::wait_lines(&lines, WAIT, |l| {
        l.iter()
            .any(|s| s.starts_with("user-2 is visiting: 5 views on 4 pages since "))
    });
    let closed = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .filter(|l| l.contains("session closed"))
            .map(|l| {
                let field = |name: &str| {
                    l.split_whitespace()
                        .find_map(|f| f.strip_prefix(name))
                        .unwrap_or_default()
                        .to_owned()
                };
                let user = field("user=");
                let summary = format!("views={} pages={}", field("views="), field("pages="));
                (user, summary)
            })
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    let sessions = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let sessions = closed(&text);
        let per_user = |u: &str| sessions.iter().filter(|(user, _)| user == u).count();
        if ["user-0", "user-1", "user-2"]
            .iter()
            .all(|u| per_user(u) >= 3)
        {
            break sessions;
        }
        assert!(Instant::now() < deadline, "sessions closed so far:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for (user, summary) in &sessions {
        let want = match user.as_str() {
            "user-0" => "views=3 pages=3",
            "user-1" => "views=4 pages=4",
            "user-2" => "views=5 pages=4",
            other => panic!("unexpected user {other:?}: {sessions:?}"),
        };
        assert_eq!(summary, want, "{user}: {sessions:?}");
    }
    stop(&mut child);
}
