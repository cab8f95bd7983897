//! Windows through the test harness, on the embedded log: every window kind against results
//! worked out by hand here, out-of-order and late records, idle partitions on a virtual clock,
//! a clean restart in the middle of an open window, windowed tables, and bounded state.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::records::{Count, count, header, send_all, sorted};
use rill::prelude::*;
use rill::{AgentSpec, TopicSpec};

const SEC: i64 = 1_000;

#[record]
#[derive(Debug, Clone)]
struct View {
    user: String,
    url: String,
    /// Event time, ms since the epoch.
    #[record(timestamp)]
    at: i64,
}

fn view(user: &str, url: &str, at_secs: i64) -> View {
    View {
        user: user.into(),
        url: url.into(),
        at: at_secs * SEC,
    }
}

#[agent(topic = "views", sink = "minute_counts")]
async fn per_minute(views: Stream<View>, out: Sink<Count>) -> rill::Result<()> {
    let mut windows = views
        .group_by(View::url)
        .tumbling(Duration::from_secs(60))
        .grace(Duration::from_secs(10))
        .late_events_to("late_views")
        .count();
    while let Some(w) = windows.next().await {
        out.send(&w.into()).await?;
    }
    Ok(())
}

#[agent(topic = "views", sink = "hopping_counts")]
async fn hopping(views: Stream<View>, out: Sink<Count>) -> rill::Result<()> {
    let mut windows = views
        .group_by(View::url)
        .hopping(Duration::from_secs(60), Duration::from_secs(30))
        .count();
    while let Some(w) = windows.next().await {
        out.send(&w.into()).await?;
    }
    Ok(())
}

#[agent(topic = "views", sink = "sliding_counts")]
async fn sliding(views: Stream<View>, out: Sink<Count>) -> rill::Result<()> {
    let mut windows = views
        .group_by(View::url)
        .sliding(Duration::from_secs(10))
        .grace(Duration::from_secs(100))
        .count();
    while let Some(w) = windows.next().await {
        out.send(&w.into()).await?;
    }
    Ok(())
}

#[window_state]
#[derive(Default, Clone, Debug, PartialEq)]
struct Visits {
    views: u64,
    urls: BTreeSet<String>,
}

impl WindowState<View> for Visits {
    fn add(&mut self, view: &View) {
        self.views += 1;
        self.urls.insert(view.url.clone());
    }
}

impl MergeState for Visits {
    fn merge(&mut self, other: Self) {
        self.views += other.views;
        self.urls.extend(other.urls);
    }
}

#[record]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Session {
    user: String,
    start: i64,
    end: i64,
    views: u64,
    urls: Vec<String>,
}

#[agent(topic = "views", sink = "sessions")]
async fn sessions(views: Stream<View>, out: Sink<Session>) -> rill::Result<()> {
    let mut windows = views
        .group_by(View::user)
        .session(Duration::from_secs(30))
        .grace(Duration::from_secs(1000))
        .aggregate::<Visits>();
    while let Some(w) = windows.next().await {
        let session = Session {
            user: w.key,
            start: w.start,
            end: w.end,
            views: w.value.views,
            urls: w.value.urls.into_iter().collect(),
        };
        out.send(&session).await?;
    }
    Ok(())
}

fn app(agent: rill::AgentSpec, partitions: i32) -> App {
    App::new("windows_test")
        .partitions(partitions)
        .agents([agent])
}

async fn send(app: &TestApp, views: &[View]) -> rill::Result<()> {
    send_all(app.producer(), "views", views.to_vec()).await
}

#[tokio::test]
async fn tumbling_windows_take_out_of_order_records_until_grace_and_route_late_ones()
-> rill::Result<()> {
    let app = app(per_minute::agent(), 1).test().await?;
    send(
        &app,
        &[
            view("u", "/a", 1),
            view("u", "/a", 30),
            view("u", "/b", 59),
            view("u", "/a", 61),
            // Out of order but within grace: [0, 60) closes when the watermark reaches 70.
            view("u", "/a", 20),
            // Watermark 75: [0, 60) closes.
            view("u", "/b", 75),
            // Late: its window closed.
            view("u", "/a", 5),
            // Watermark 130: [60, 120) closes.
            view("u", "/a", 130),
        ],
    )
    .await?;
    let got = sorted::<Count>(&app, "minute_counts", 4).await?;
    assert_eq!(
        got,
        vec![
            count("/a", 0, 60 * SEC, 3),
            count("/a", 60 * SEC, 120 * SEC, 1),
            count("/b", 0, 60 * SEC, 1),
            count("/b", 60 * SEC, 120 * SEC, 1),
        ]
    );
    let late: Vec<View> = app.expect("late_views", 1).await?;
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].at, 5 * SEC);
    assert_eq!(app.stat("per_minute", |s| &s.late_records), 1);

    // Time survives every hop: the repartition topic carries event times as message
    // timestamps, results the event time of the record that closed them, and the late topic
    // its record's event time in a header (stamped when set aside, for time retention).
    let repartitioned = app.records("windows_test-per_minute-url-repartition")?;
    // (Records without a value are the pump's watermark markers.)
    let times: Vec<i64> = repartitioned
        .iter()
        .filter(|r| r.value.is_some())
        .filter_map(|r| r.timestamp)
        .collect();
    assert_eq!(
        times,
        vec![1, 30, 59, 61, 20, 75, 5, 130]
            .into_iter()
            .map(|s| s * SEC)
            .collect::<Vec<_>>()
    );
    let late_record = &app.records("late_views")?[0];
    assert_eq!(
        late_record.headers.get("rill.source.timestamp"),
        Some(&b"5000"[..])
    );
    assert!(
        late_record.timestamp > Some(130 * SEC),
        "{:?}",
        late_record.timestamp
    );
    let result_times: BTreeSet<i64> = app
        .records("minute_counts")?
        .iter()
        .filter_map(|r| r.timestamp)
        .collect();
    assert_eq!(result_times, BTreeSet::from([75 * SEC, 130 * SEC]));

    common::settle().await;
    assert_eq!(
        app.count("minute_counts")?,
        4,
        "each window is emitted once"
    );
    app.stop().await
}

#[tokio::test]
async fn hopping_windows_count_each_record_in_every_window_containing_it() -> rill::Result<()> {
    let app = app(hopping::agent(), 1).test().await?;
    send(
        &app,
        &[
            view("u", "/a", 10),
            view("u", "/a", 40),
            view("u", "/a", 70),
        ],
    )
    .await?;
    // Watermark 70: [-30, 30) and [0, 60) have closed.
    assert_eq!(
        sorted::<Count>(&app, "hopping_counts", 2).await?,
        vec![
            count("/a", -30 * SEC, 30 * SEC, 1),
            count("/a", 0, 60 * SEC, 2)
        ]
    );
    common::settle().await;
    assert_eq!(app.count("hopping_counts")?, 2);
    // The test moves the watermark without a record: the rest close.
    app.advance_watermark(1_000 * SEC);
    let got = sorted::<Count>(&app, "hopping_counts", 4).await?;
    assert_eq!(
        got,
        vec![
            count("/a", -30 * SEC, 30 * SEC, 1),
            count("/a", 0, 60 * SEC, 2),
            count("/a", 30 * SEC, 90 * SEC, 2),
            count("/a", 60 * SEC, 120 * SEC, 1),
        ]
    );
    app.stop().await
}

#[tokio::test]
async fn sliding_windows_give_kafka_streams_windows_out_of_order() -> rill::Result<()> {
    let app = app(sliding::agent(), 1).test().await?;
    // Out of order: 20 s, then 8 s, then 5 s.
    send(
        &app,
        &[view("u", "/a", 20), view("u", "/a", 8), view("u", "/a", 5)],
    )
    .await?;
    app.wait_until("sliding read its records", |app| {
        app.stat("sliding", |s| &s.records_in) >= 3
    })
    .await?;
    app.advance_watermark(1_000 * SEC);
    let got = sorted::<Count>(&app, "sliding_counts", 3).await?;
    let size = 10 * SEC;
    // Kafka Streams' windows for these records: 5 s and 8 s come before the time difference
    // (size - 1 ms), so they share [0, size); the right window of 5 s starts right after it
    // and holds 8 s; the left window of 20 s ends right after it.
    let expected = vec![
        count("/a", 0, size, 2),
        count("/a", 5 * SEC + 1, 5 * SEC + 1 + size, 1),
        count("/a", 20 * SEC - size + 1, 20 * SEC + 1, 1),
    ];
    assert_eq!(got, expected);
    common::settle().await;
    assert_eq!(app.count("sliding_counts")?, 3);
    app.stop().await
}

#[tokio::test]
async fn sessions_merge_when_a_record_bridges_them_into_a_user_struct() -> rill::Result<()> {
    let app = app(sessions::agent(), 1).test().await?;
    send(
        &app,
        &[
            view("u1", "/a", 0),
            view("u1", "/b", 20),
            view("u1", "/a", 80),
            view("u2", "/c", 10),
            // 30 s after 20 and 30 s before 80: joins both sessions into one.
            view("u1", "/d", 50),
        ],
    )
    .await?;
    app.wait_until("sessions read its records", |app| {
        app.stat("sessions", |s| &s.records_in) >= 5
    })
    .await?;
    app.advance_watermark(10_000 * SEC);
    let mut got: Vec<Session> = app.expect("sessions", 2).await?;
    got.sort();
    assert_eq!(
        got,
        vec![
            Session {
                user: "u1".into(),
                start: 0,
                end: 80 * SEC,
                views: 4,
                urls: vec!["/a".into(), "/b".into(), "/d".into()],
            },
            Session {
                user: "u2".into(),
                start: 10 * SEC,
                end: 10 * SEC,
                views: 1,
                urls: vec!["/c".into()],
            },
        ]
    );
    app.stop().await
}

#[tokio::test]
async fn idle_partitions_hold_windows_until_the_idle_timeout_passes() -> rill::Result<()> {
    // Four partitions, one key: three partitions never see a record.
    let app = App::new("windows_test")
        .partitions(4)
        .agents([per_minute::agent()])
        .configure(|c| c.idle_timeout = Duration::from_secs(30))
        .test()
        .await?;
    send(
        &app,
        &[
            view("u", "/a", 1),
            view("u", "/a", 61),
            view("u", "/a", 200),
        ],
    )
    .await?;
    common::settle().await;
    assert_eq!(
        app.count("minute_counts")?,
        0,
        "the empty partitions hold the watermark back"
    );
    app.advance_clock(Duration::from_secs(29));
    common::settle().await;
    assert_eq!(app.count("minute_counts")?, 0, "not idle yet");
    // Every partition idle for 31 s: the watermark is 200 s + 1 s; [0, 60) and [60, 120)
    // have closed (end + 10 s grace), [180, 240) has not.
    app.advance_clock(Duration::from_secs(2));
    let got = sorted::<Count>(&app, "minute_counts", 2).await?;
    assert_eq!(
        got,
        vec![
            count("/a", 0, 60 * SEC, 1),
            count("/a", 60 * SEC, 120 * SEC, 1)
        ]
    );
    // It keeps moving with the clock: 49 s more reaches 240 s + grace.
    app.advance_clock(Duration::from_secs(48));
    common::settle().await;
    assert_eq!(app.count("minute_counts")?, 2);
    app.advance_clock(Duration::from_secs(1));
    let got = sorted::<Count>(&app, "minute_counts", 3).await?;
    assert_eq!(got[2], count("/a", 180 * SEC, 240 * SEC, 1));
    app.stop().await
}

#[tokio::test]
async fn a_window_open_across_a_clean_restart_is_emitted_once_with_every_record() -> rill::Result<()>
{
    let dir = tempfile::tempdir().expect("tempdir");
    let first = app(per_minute::agent(), 2).test_in(dir.path()).await?;
    send(
        &first,
        &[view("u", "/a", 1), view("u", "/a", 2), view("u", "/b", 3)],
    )
    .await?;
    first
        .wait_until("per_minute read its records", |app| {
            app.stat("per_minute", |s| &s.records_in) >= 3
        })
        .await?;
    first.stop().await?;

    let app = app(per_minute::agent(), 2).test_in(dir.path()).await?;
    send(
        &app,
        &[
            view("u", "/a", 4),
            view("u", "/a", 100),
            view("u", "/b", 100),
        ],
    )
    .await?;
    let got = sorted::<Count>(&app, "minute_counts", 2).await?;
    assert_eq!(
        got,
        vec![count("/a", 0, 60 * SEC, 3), count("/b", 0, 60 * SEC, 1)]
    );
    common::settle().await;
    assert_eq!(app.count("minute_counts")?, 2);
    app.stop().await
}

#[tokio::test]
async fn open_windows_are_rebuilt_from_their_changelog_when_the_local_store_is_lost()
-> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = app(per_minute::agent(), 2).test_in(dir.path()).await?;
    send(
        &first,
        &[view("u", "/a", 1), view("u", "/a", 2), view("u", "/b", 3)],
    )
    .await?;
    first
        .wait_until("per_minute read its records", |app| {
            app.stat("per_minute", |s| &s.records_in) >= 3
        })
        .await?;
    first.stop().await?;
    // A new machine: the log is there, the table store is not.
    std::fs::remove_dir_all(dir.path().join("tables")).expect("remove the table store");

    let app = app(per_minute::agent(), 2).test_in(dir.path()).await?;
    send(
        &app,
        &[
            view("u", "/a", 4),
            view("u", "/a", 100),
            view("u", "/b", 100),
        ],
    )
    .await?;
    let got = sorted::<Count>(&app, "minute_counts", 2).await?;
    assert_eq!(
        got,
        vec![count("/a", 0, 60 * SEC, 3), count("/b", 0, 60 * SEC, 1)]
    );
    assert!(
        app.stat("per_minute", |s| &s.restored) > 0,
        "state came from the changelog"
    );
    app.stop().await
}

#[tokio::test]
async fn update_mode_emits_every_change_and_on_window_close_sees_the_final_value()
-> rill::Result<()> {
    let closed: Arc<Mutex<Vec<(String, i64, u64)>>> = Arc::default();
    let seen = closed.clone();
    let agent = AgentSpec::new("updates", "tests/windows.rs")
        .source(TopicSpec::of::<View>("views", "tests/windows.rs"))
        .sink(TopicSpec::of::<Count>("updates", "tests/windows.rs"))
        .run(move |mut ctx| {
            let seen = seen.clone();
            async move {
                let views = ctx.stream::<View>()?;
                let out = ctx.sink::<Count>()?;
                let mut windows = views
                    .group_by(View::url)
                    .tumbling(Duration::from_secs(60))
                    .emit(Emit::Update)
                    .count()
                    .on_window_close(move |w| {
                        seen.lock().unwrap().push((w.key.clone(), w.start, w.value));
                    });
                while let Some(w) = windows.next().await {
                    out.send(&w.into()).await?;
                }
                Ok(())
            }
        });
    let app = app(agent, 1).test().await?;
    send(
        &app,
        &[view("u", "/a", 1), view("u", "/a", 2), view("u", "/a", 70)],
    )
    .await?;
    let got: Vec<Count> = app.expect("updates", 3).await?;
    assert_eq!(
        got,
        vec![
            count("/a", 0, 60 * SEC, 1),
            count("/a", 0, 60 * SEC, 2),
            count("/a", 60 * SEC, 120 * SEC, 1)
        ]
    );
    app.wait_until("one window closed", |_| closed.lock().unwrap().len() == 1)
        .await?;
    assert_eq!(closed.lock().unwrap()[0], ("/a".to_string(), 0, 2));
    app.stop().await
}

#[record]
#[derive(Debug, Clone, PartialEq)]
struct Reading {
    url: String,
    current: u64,
    previous: u64,
}

#[record]
#[derive(Debug, Clone)]
struct KeyedView {
    #[record(key)]
    url: String,
    #[record(timestamp)]
    at: i64,
}

#[agent(
    topic = "keyed_views",
    sink = "readings",
    tables(counts = "views_per_minute")
)]
async fn windowed_table(
    mut views: Stream<KeyedView>,
    readings: Sink<Reading>,
    counts: Table<String, u64>,
) -> rill::Result<()> {
    let counts = counts
        .tumbling(Duration::from_secs(60))
        .expires(Duration::from_secs(60));
    while let Some(view) = views.next().await {
        counts.update(view.url.clone(), |n| n + 1)?;
        let reading = Reading {
            current: counts.current(&view.url)?,
            previous: counts.delta(&view.url, Duration::from_secs(60))?,
            url: view.url,
        };
        readings.send(&reading).await?;
    }
    Ok(())
}

#[tokio::test]
async fn windowed_tables_read_the_current_and_earlier_windows_and_expire_old_ones()
-> rill::Result<()> {
    let app = app(windowed_table::agent(), 1).test().await?;
    for (url, at) in [("/a", 1), ("/a", 30), ("/b", 40), ("/a", 70), ("/a", 200)] {
        app.producer()
            .send_to(
                "keyed_views",
                &KeyedView {
                    url: url.into(),
                    at: at * SEC,
                },
            )
            .await?;
    }
    app.producer().flush().await?;
    let got: Vec<Reading> = app.expect("readings", 5).await?;
    let reading = |url: &str, current, previous| Reading {
        url: url.into(),
        current,
        previous,
    };
    assert_eq!(
        got,
        vec![
            reading("/a", 1, 0),
            reading("/a", 2, 0),
            reading("/b", 1, 0),
            reading("/a", 1, 2),
            reading("/a", 1, 0),
        ]
    );
    // At 200 s, windows that ended 60 s (expires) before are deleted: [0, 60) of both keys
    // and [60, 120) of /a.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut stored: Vec<((String, i64), u64)> = app.table("views_per_minute")?;
        stored.sort();
        let want = vec![(("/a".to_string(), 180 * SEC), 1)];
        if stored == want || tokio::time::Instant::now() > deadline {
            assert_eq!(stored, want);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await
}

#[agent(topic = "keyed_views", tables(counts = "views_per_20s"))]
async fn hopping_table(
    mut views: Stream<KeyedView>,
    counts: Table<String, u64>,
) -> rill::Result<()> {
    let counts = counts
        .hopping(Duration::from_secs(60), Duration::from_secs(20))
        .expires(Duration::from_secs(20));
    while let Some(view) = views.next().await {
        counts.update(view.url, |n| n + 1)?;
    }
    Ok(())
}

/// Stored windows: ((key, start ms), count).
type Windows = Vec<((String, i64), u64)>;

/// `(key, start in s, count)` as stored windows, sorted.
fn windows(list: &[(&str, i64, u64)]) -> Windows {
    let mut out: Windows = list
        .iter()
        .map(|(k, start, n)| (((*k).to_owned(), start * SEC), *n))
        .collect();
    out.sort();
    out
}

/// The committed entries of `table`, sorted, once they equal `want` (or after 10 s).
async fn stored_windows(app: &TestApp, table: &str, want: &Windows) -> rill::Result<Windows> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut stored: Windows = app.table(table)?;
        stored.sort();
        if stored == *want || tokio::time::Instant::now() > deadline {
            return Ok(stored);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_hopping_windowed_table_expires_every_keys_windows_after_a_restart() -> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let views = |list: &[(&str, i64)]| -> Vec<KeyedView> {
        list.iter()
            .map(|(url, at)| KeyedView {
                url: (*url).into(),
                at: at * SEC,
            })
            .collect()
    };
    let first_run = app(hopping_table::agent(), 1).test_in(dir.path()).await?;
    let first = views(&[("/a", 10), ("/b", 10), ("/c", 10), ("/a", 50)]);
    send_all(first_run.producer(), "keyed_views", first).await?;
    // 60 s windows every 20 s: a view at 10 s counts in those starting at -40, -20 and 0 s.
    // At 50 s the windows starting at -40 s (ended at 20 s, kept 20 s more: `expires`) are
    // deleted, of all three keys.
    let mut want = vec![("/a", -20, 1), ("/a", 0, 2), ("/a", 20, 1), ("/a", 40, 1)];
    for url in ["/b", "/c"] {
        want.extend([(url, -20, 1), (url, 0, 1)]);
    }
    let want = windows(&want);
    assert_eq!(
        stored_windows(&first_run, "views_per_20s", &want).await?,
        want
    );
    first_run.stop().await?;

    // After a restart the windows are known from the store: a view at 300 s deletes every
    // window that ended more than 20 s before it, of every key, several keys to a start.
    let restarted = app(hopping_table::agent(), 1).test_in(dir.path()).await?;
    send_all(restarted.producer(), "keyed_views", views(&[("/b", 300)])).await?;
    let want = windows(&[("/b", 260, 1), ("/b", 280, 1), ("/b", 300, 1)]);
    assert_eq!(
        stored_windows(&restarted, "views_per_20s", &want).await?,
        want
    );
    restarted.stop().await
}

#[tokio::test]
async fn window_state_stays_bounded_on_an_endless_stream() -> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app(per_minute::agent(), 2).test_in(dir.path()).await?;
    let store = dir.path().join("tables").join("data.mdb");
    let mut sizes = Vec::new();
    let mut minute = 0i64;
    for round in 0..8 {
        // Each round: 100 keys over 20 minutes of event time, every window closing behind.
        for _ in 0..20 {
            for k in 0..100 {
                let v = view("u", &format!("/page/{k}"), minute * 60 + k % 60);
                app.producer().send_to("views", &v).await?;
            }
            minute += 1;
        }
        app.producer().flush().await?;
        let want = 2_000 * (round + 1);
        app.wait_until("per_minute read its records", |app| {
            app.stat("per_minute", |s| &s.records_in) >= want
        })
        .await?;
        common::settle().await;
        sizes.push(std::fs::metadata(&store).expect("table store file").len());
    }
    // Closed windows are deleted and LMDB reuses their pages: once the open windows' pages
    // exist the file stays within a few pages, although every round writes and closes 2,000
    // windows (over 100 KiB if they were kept).
    let late_growth = sizes[7] - sizes[3];
    assert!(
        late_growth <= 4 * 4096,
        "the table store grew by {late_growth} bytes over the last four rounds: {sizes:?}"
    );
    let closed = app.stat("per_minute", |s| &s.windows_closed);
    assert!(closed >= 7_000, "windows closed: {closed}");
    app.stop().await
}

/// No timestamp field: event time comes from a custom extractor.
#[record]
#[derive(Debug, Clone)]
struct Purchase {
    user: String,
    amount: u64,
    ts_secs: i64,
}

#[record]
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    aggregation: String,
    user: String,
    start: i64,
    value: serde_json::Value,
}

async fn summarize<V: serde::Serialize>(
    aggregation: &str,
    mut windows: WindowStream<String, V>,
    out: Sink<Summary>,
) -> rill::Result<()> {
    while let Some(w) = windows.next().await {
        let summary = Summary {
            aggregation: aggregation.into(),
            user: w.key,
            start: w.start,
            value: serde_json::to_value(&w.value).expect("json"),
        };
        out.send(&summary).await?;
    }
    Ok(())
}

fn purchases(views: Stream<Purchase>) -> rill::window::Windows<Purchase, String> {
    views
        .event_time(|p| p.ts_secs * SEC)
        .group_by(Purchase::user)
        .tumbling(Duration::from_secs(60))
}

#[agent(topic = "purchases", sink = "summaries")]
async fn sum_of(p: Stream<Purchase>, out: Sink<Summary>) -> rill::Result<()> {
    summarize("sum", purchases(p).sum(|p| p.amount), out).await
}

#[agent(topic = "purchases", sink = "summaries")]
async fn min_of(p: Stream<Purchase>, out: Sink<Summary>) -> rill::Result<()> {
    summarize("min", purchases(p).min(|p| p.amount), out).await
}

#[agent(topic = "purchases", sink = "summaries")]
async fn max_of(p: Stream<Purchase>, out: Sink<Summary>) -> rill::Result<()> {
    summarize("max", purchases(p).max(|p| p.amount), out).await
}

#[agent(topic = "purchases", sink = "summaries")]
async fn mean_of(p: Stream<Purchase>, out: Sink<Summary>) -> rill::Result<()> {
    summarize("mean", purchases(p).mean(|p| p.amount as f64), out).await
}

#[agent(topic = "purchases", sink = "summaries")]
async fn biggest(p: Stream<Purchase>, out: Sink<Summary>) -> rill::Result<()> {
    let windows = purchases(p).reduce(|a, b| {
        if b.amount > a.amount {
            b.clone()
        } else {
            a.clone()
        }
    });
    summarize("reduce", windows, out).await
}

#[agent(topic = "purchases", sink = "summaries")]
async fn collected(p: Stream<Purchase>, out: Sink<Summary>) -> rill::Result<()> {
    let windows = purchases(p).collect_limit(2).collect();
    summarize("collect", windows, out).await
}

#[agent(topic = "purchases", sink = "summaries")]
async fn folded(p: Stream<Purchase>, out: Sink<Summary>) -> rill::Result<()> {
    let windows = purchases(p).fold(Vec::new, |seen: &mut Vec<i64>, p| seen.push(p.ts_secs));
    summarize("fold", windows, out).await
}

#[tokio::test]
async fn every_aggregation_over_a_custom_event_time() -> rill::Result<()> {
    let app = App::new("windows_aggs")
        .partitions(1)
        .agents([
            sum_of::agent(),
            min_of::agent(),
            max_of::agent(),
            mean_of::agent(),
            biggest::agent(),
            collected::agent(),
            folded::agent(),
        ])
        .test()
        .await?;
    for (amount, ts_secs) in [(10, 5), (3, 20), (7, 50), (100, 70)] {
        let p = Purchase {
            user: "u".into(),
            amount,
            ts_secs,
        };
        app.producer().send_to("purchases", &p).await?;
    }
    app.producer().flush().await?;
    let got: Vec<Summary> = app.expect("summaries", 7).await?;
    let value = |name: &str| {
        let found: Vec<&Summary> = got.iter().filter(|s| s.aggregation == name).collect();
        assert_eq!(found.len(), 1, "{name}: {got:?}");
        assert_eq!((found[0].user.as_str(), found[0].start), ("u", 0));
        found[0].value.clone()
    };
    assert_eq!(value("sum"), serde_json::json!(20));
    assert_eq!(value("min"), serde_json::json!(3));
    assert_eq!(value("max"), serde_json::json!(10));
    assert_eq!(value("mean"), serde_json::json!(20.0 / 3.0));
    assert_eq!(value("reduce")["amount"], serde_json::json!(10));
    let collected: Vec<u64> = value("collect")
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["amount"].as_u64().expect("amount"))
        .collect();
    assert_eq!(collected, vec![10, 3], "bounded to the first two");
    assert_eq!(value("fold"), serde_json::json!([5, 20, 50]));
    app.stop().await
}

/// A backlog through `group_by`: the pump reads the source partitions a chunk at a time, so a
/// repartition partition gets minutes-apart chunks of event time from each source partition in
/// turn. The windows follow the pump's watermark (the slowest source partition), not the
/// interleaved event times, so nothing in order is dropped as late.
#[tokio::test]
async fn a_backlog_through_group_by_loses_nothing_to_interleaving() -> rill::Result<()> {
    // The backlog is written before the agent starts, as after downtime.
    let dir = tempfile::tempdir().expect("tempdir");
    let loader = App::new("windows_test")
        .partitions(8)
        .agents([])
        .test_in(dir.path())
        .await?;
    let n = 40_000i64;
    let urls = common::records::covering_urls("/u", 8, 2);
    let mut expected: std::collections::BTreeMap<(String, i64), u64> = Default::default();
    for i in 0..n {
        // No key: spread over the 8 source partitions, each covering the whole hour. The
        // URLs cover every repartition partition, so none holds the watermark back.
        let url = urls[i as usize % urls.len()].clone();
        let at = i * 100;
        *expected
            .entry((url.clone(), at.div_euclid(60 * SEC) * 60 * SEC))
            .or_default() += 1;
        loader
            .producer()
            .send_to(
                "views",
                &View {
                    user: "u".into(),
                    url,
                    at,
                },
            )
            .await?;
    }
    loader.producer().flush().await?;
    loader.stop().await?;
    let app = App::new("windows_test")
        .partitions(8)
        .agents([per_minute::agent()])
        .test_in(dir.path())
        .await?;
    app.wait_until("per_minute read its records", |app| {
        app.stat("per_minute", |s| &s.records_in) >= n as u64
    })
    .await?;
    app.advance_watermark(n * 100 + 3_600 * SEC);
    let got = sorted::<Count>(&app, "minute_counts", expected.len()).await?;
    assert_eq!(
        app.stat("per_minute", |s| &s.late_records),
        0,
        "nothing late"
    );
    let got: std::collections::BTreeMap<(String, i64), u64> = got
        .into_iter()
        .map(|c| ((c.key, c.start), c.value))
        .collect();
    assert_eq!(got, expected);
    app.stop().await
}

static FAILED_ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[agent(
    topic = "views",
    sink = "retried_counts",
    on_error = "retry",
    retries = 2,
    retry_backoff_ms = 10
)]
async fn fails_on_first_result(views: Stream<View>, out: Sink<Count>) -> rill::Result<()> {
    let mut windows = views
        .group_by(View::url)
        .tumbling(Duration::from_secs(60))
        .count();
    while let Some(w) = windows.next().await {
        if !FAILED_ONCE.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(rill::Error::user("the first result fails once"));
        }
        out.send(&w.into()).await?;
    }
    Ok(())
}

/// The agent fails while handling a window result: the in-flight record is retried, which
/// must not count it twice, and the results not yet handed out are still delivered. (The result
/// being handled when it failed is not emitted again.)
#[tokio::test]
async fn a_failure_while_handling_results_neither_double_counts_nor_drops_the_others()
-> rill::Result<()> {
    let app = app(fails_on_first_result::agent(), 1).test().await?;
    send(
        &app,
        &[
            view("u", "/a", 1),
            view("u", "/a", 2),
            view("u", "/b", 3),
            // Closes [0, 60) of /a and /b; the agent fails on /a's result.
            view("u", "/c", 70),
        ],
    )
    .await?;
    let got = sorted::<Count>(&app, "retried_counts", 1).await?;
    assert_eq!(got, vec![count("/b", 0, 60 * SEC, 1)]);
    send(&app, &[view("u", "/a", 71), view("u", "/c", 130)]).await?;
    let got = sorted::<Count>(&app, "retried_counts", 3).await?;
    assert_eq!(
        got,
        vec![
            count("/a", 60 * SEC, 120 * SEC, 1),
            count("/b", 0, 60 * SEC, 1),
            // /c at 70 s was handed out again by the retry: counted once.
            count("/c", 60 * SEC, 120 * SEC, 1),
        ]
    );
    assert!(FAILED_ONCE.load(std::sync::atomic::Ordering::SeqCst));
    app.stop().await
}

#[agent(topic = "keyed_views", sink = "keyed_counts")]
async fn in_place(views: Stream<KeyedView>, out: Sink<Count>) -> rill::Result<()> {
    let mut windows = views
        .keyed(KeyedView::url)
        .tumbling(Duration::from_secs(60))
        .count();
    while let Some(w) = windows.next().await {
        out.send(&w.into()).await?;
    }
    Ok(())
}

#[tokio::test]
async fn keyed_windows_count_in_place_and_dead_letter_a_record_keyed_elsewhere() -> rill::Result<()>
{
    let partitions = 4;
    let app = app(in_place::agent(), partitions).test().await?;
    // URLs until every partition has one: each partition's watermark must pass 60 s.
    let mut urls: Vec<String> = Vec::new();
    let mut covered = BTreeSet::new();
    for i in 0.. {
        let url = format!("/p{i}");
        covered.insert(rill::partitioner::partition_for_key(
            url.as_bytes(),
            partitions,
        ));
        urls.push(url);
        if covered.len() == partitions as usize {
            break;
        }
    }
    for (i, url) in urls.iter().enumerate() {
        // `i + 1` views of each URL in [0, 60), then one at 61 s to close the window.
        for n in 0..=i {
            let at = n as i64 * SEC;
            app.send_to(
                "keyed_views",
                &KeyedView {
                    url: url.clone(),
                    at,
                },
            )
            .await?;
        }
    }
    // A record keyed by something else than its URL: it lands in another partition.
    let other = (0..)
        .map(|i| format!("elsewhere-{i}"))
        .find(|k| {
            rill::partitioner::partition_for_key(k.as_bytes(), partitions)
                != rill::partitioner::partition_for_key(b"/p0", partitions)
        })
        .expect("a key of another partition");
    let stray = serde_json::json!({"url": "/p0", "at": 30 * SEC}).to_string();
    app.send_bytes("keyed_views", Some(other.as_bytes()), stray.as_bytes())
        .await?;
    for url in &urls {
        let v = KeyedView {
            url: url.clone(),
            at: 61 * SEC,
        };
        app.send_to("keyed_views", &v).await?;
    }
    app.producer().flush().await?;
    let got = sorted::<Count>(&app, "keyed_counts", urls.len()).await?;
    let mut want: Vec<Count> = urls
        .iter()
        .enumerate()
        .map(|(i, url)| count(url, 0, 60 * SEC, i as u64 + 1))
        .collect();
    want.sort();
    assert_eq!(got, want, "the stray record is not counted");
    let dead = app.records("windows_test-in_place-dlq")?;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key.as_deref(), Some(other.as_bytes()));
    let reason = header(&dead[0], "rill.error");
    assert!(reason.contains("use `group_by`"), "{reason}");
    assert!(
        app.records("windows_test-in_place-url-repartition")?
            .is_empty(),
        "no repartition topic in use"
    );
    common::settle().await;
    assert_eq!(app.count("keyed_counts")?, urls.len());
    app.stop().await
}
