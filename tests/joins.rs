//! Joins through the test harness, on the embedded log, against pairs worked out by hand:
//! in-order and out-of-order arrivals, records just inside and just outside the bounds
//! (symmetric and asymmetric), grace and late records, a clean restart between the two sides
//! of a match, left and outer joins, joining in place (`co_partitioned`) with a mis-keyed
//! record dead-lettered, stream-table joins, and the startup and misuse errors.
//!
//! Records are sent one at a time, each processed before the next, so the order the join sees
//! is the order written here.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::records::{header, sorted};
use rill::prelude::*;
use rill::{AgentSpec, TopicSpec};

const SEC: i64 = 1_000;

#[record]
#[derive(Debug, Clone)]
struct View {
    id: String,
    #[record(key)]
    url: String,
    user: String,
    /// Event time, ms since the epoch.
    #[record(timestamp)]
    at: i64,
}

#[record]
#[derive(Debug, Clone)]
struct Click {
    id: String,
    #[record(key)]
    url: String,
    #[record(timestamp)]
    at: i64,
}

/// The same JSON as a `Click`, keyed by `id` instead of the URL (a producer that keys clicks
/// differently).
#[record]
struct MisKeyedClick {
    #[record(key)]
    id: String,
    url: String,
    at: i64,
}

/// What a join emitted: the ids of its sides.
#[record]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Pair {
    view: Option<String>,
    click: Option<String>,
}

fn pair(view: &str, click: &str) -> Pair {
    Pair {
        view: Some(view.into()),
        click: Some(click.into()),
    }
}

fn lone_view(view: &str) -> Pair {
    Pair {
        view: Some(view.into()),
        click: None,
    }
}

fn lone_click(click: &str) -> Pair {
    Pair {
        view: None,
        click: Some(click.into()),
    }
}

enum Rec {
    V(&'static str, &'static str, i64),
    C(&'static str, &'static str, i64),
}
use Rec::{C, V};

#[agent(topics(views = "views", clicks = "clicks"), sink = "pairs")]
async fn inner(views: Stream<View>, clicks: Stream<Click>, out: Sink<Pair>) -> rill::Result<()> {
    let window = JoinWindow::within(Duration::from_secs(5)).grace(Duration::from_secs(10));
    let mut joined = views.join(clicks, |v| v.url.clone(), |c| c.url.clone(), window);
    while let Some((v, c)) = joined.next().await {
        out.send(&pair(&v.id, &c.id)).await?;
    }
    Ok(())
}

/// Clicks in the 5 s after a view only; the clicks stream is declared first and joined second.
#[agent(topics(clicks = "clicks", views = "views"), sink = "pairs")]
async fn clicks_after(
    clicks: Stream<Click>,
    views: Stream<View>,
    out: Sink<Pair>,
) -> rill::Result<()> {
    let window = JoinWindow::within(Duration::from_secs(5))
        .before(Duration::ZERO)
        .grace(Duration::from_secs(60));
    let mut joined = views.join(clicks, |v| v.url.clone(), |c| c.url.clone(), window);
    while let Some((v, c)) = joined.next().await {
        out.send(&pair(&v.id, &c.id)).await?;
    }
    Ok(())
}

#[agent(topics(views = "views", clicks = "clicks"), sink = "pairs")]
async fn left(views: Stream<View>, clicks: Stream<Click>, out: Sink<Pair>) -> rill::Result<()> {
    let window = JoinWindow::within(Duration::from_secs(5));
    let mut joined = views.left_join(clicks, |v| v.url.clone(), |c| c.url.clone(), window);
    while let Some((v, c)) = joined.next().await {
        out.send(&Pair {
            view: Some(v.id),
            click: c.map(|c| c.id),
        })
        .await?;
    }
    Ok(())
}

#[agent(topics(views = "views", clicks = "clicks"), sink = "pairs")]
async fn outer(views: Stream<View>, clicks: Stream<Click>, out: Sink<Pair>) -> rill::Result<()> {
    let window = JoinWindow::within(Duration::from_secs(5));
    let mut joined = views.outer_join(clicks, |v| v.url.clone(), |c| c.url.clone(), window);
    while let Some((v, c)) = joined.next().await {
        out.send(&Pair {
            view: v.map(|v| v.id),
            click: c.map(|c| c.id),
        })
        .await?;
    }
    Ok(())
}

#[agent(topics(views = "views", clicks = "clicks"), sink = "pairs")]
async fn in_place(views: Stream<View>, clicks: Stream<Click>, out: Sink<Pair>) -> rill::Result<()> {
    let window = JoinWindow::within(Duration::from_secs(5)).co_partitioned();
    let mut joined = views.join(clicks, |v| v.url.clone(), |c| c.url.clone(), window);
    while let Some((v, c)) = joined.next().await {
        out.send(&pair(&v.id, &c.id)).await?;
    }
    Ok(())
}

fn app(agent: AgentSpec, partitions: i32) -> App {
    App::new("joins_test")
        .partitions(partitions)
        .agents([agent])
}

/// Sends each record and waits until the agent has read it.
async fn feed(app: &TestApp, agent: &str, records: &[Rec]) -> rill::Result<()> {
    for r in records {
        let before = app.stat(agent, |s| &s.records_in);
        match *r {
            V(id, url, at) => {
                let v = View {
                    id: id.into(),
                    url: url.into(),
                    user: format!("user-of-{id}"),
                    at: at * SEC,
                };
                app.send_to("views", &v).await?;
            }
            C(id, url, at) => {
                let c = Click {
                    id: id.into(),
                    url: url.into(),
                    at: at * SEC,
                };
                app.send_to("clicks", &c).await?;
            }
        }
        app.wait_until("the agent read it", |app| {
            app.stat(agent, |s| &s.records_in) > before
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn pairs_meet_in_and_out_of_order_inside_the_bounds_only() -> rill::Result<()> {
    let app = app(inner::agent(), 2).test().await?;
    feed(
        &app,
        "inner",
        &[
            // In order.
            V("v1", "/a", 10),
            C("c1", "/a", 12),
            // The click first: the view it follows in event time arrives after it.
            C("c2", "/a", 20),
            V("v2", "/a", 18),
            // Bounds are inclusive: 5 s before and after meet, 5.001 s does not.
            V("v3", "/b", 100),
            C("c3", "/b", 105),
            C("c4", "/b", 95),
        ],
    )
    .await?;
    for (id, at_ms) in [("c5", 105_001), ("c6", 94_999)] {
        let c = Click {
            id: id.into(),
            url: "/b".into(),
            at: at_ms,
        };
        app.send_to("clicks", &c).await?;
    }
    let got = sorted::<Pair>(&app, "pairs", 4).await?;
    assert_eq!(
        got,
        vec![
            pair("v1", "c1"),
            pair("v2", "c2"),
            pair("v3", "c3"),
            pair("v3", "c4")
        ]
    );
    app.wait_until("9 records read", |app| {
        app.stat("inner", |s| &s.records_in) >= 9
    })
    .await?;
    common::settle().await;
    assert_eq!(
        app.count("pairs")?,
        4,
        "each pair once, nothing outside the bounds"
    );
    // Both sides went through one repartition topic, each record tagged with its topic.
    let repartitioned = app.records("joins_test-inner-join-repartition")?;
    let tags: BTreeSet<String> = repartitioned
        .iter()
        .filter(|r| r.value.is_some())
        .filter_map(|r| r.headers.get("rill.topic"))
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect();
    assert_eq!(
        tags,
        BTreeSet::from(["clicks".to_owned(), "views".to_owned()])
    );
    app.stop().await
}

#[tokio::test]
async fn asymmetric_bounds_pair_only_clicks_after_the_view() -> rill::Result<()> {
    let app = app(clicks_after::agent(), 1).test().await?;
    feed(
        &app,
        "clicks_after",
        &[
            V("v", "/c", 200),
            C("before", "/c", 199),
            C("same-time", "/c", 200),
            C("after", "/c", 205),
            C("too-late", "/c", 206),
        ],
    )
    .await?;
    let got = sorted::<Pair>(&app, "pairs", 2).await?;
    assert_eq!(got, vec![pair("v", "after"), pair("v", "same-time")]);
    common::settle().await;
    assert_eq!(app.count("pairs")?, 2);
    app.stop().await
}

#[tokio::test]
async fn out_of_order_records_within_grace_still_meet_and_late_ones_are_dropped() -> rill::Result<()>
{
    // `inner`: within 5 s, grace 10 s.
    let app = app(inner::agent(), 1).test().await?;
    feed(
        &app,
        "inner",
        &[
            V("v1", "/a", 10),
            // Watermark 25 (the slower side's time: both sides reach 25).
            C("other-click", "/y", 25),
            V("other", "/z", 25),
            // 12 + 5 + 10 = 27 > 25: not late; v1 (kept until 10 + 10 + 10) is still there.
            C("c1", "/a", 12),
            // Watermark 100.
            C("far-click", "/y", 100),
            V("far", "/z", 100),
            // 14 + 15 < 100: late, dropped without a pair (v1 has expired anyway).
            C("late", "/a", 14),
            // A view that is late too.
            V("late-view", "/a", 15),
        ],
    )
    .await?;
    assert_eq!(
        app.expect::<Pair>("pairs", 1).await?,
        vec![pair("v1", "c1")]
    );
    assert_eq!(app.stat("inner", |s| &s.late_records), 2);
    common::settle().await;
    assert_eq!(app.count("pairs")?, 1);
    app.stop().await
}

#[tokio::test]
async fn a_match_across_a_clean_restart_is_emitted_exactly_once() -> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = app(inner::agent(), 2).test_in(dir.path()).await?;
    feed(&first, "inner", &[V("v1", "/a", 10), V("v2", "/b", 11)]).await?;
    first.stop().await?;

    let app = app(inner::agent(), 2).test_in(dir.path()).await?;
    feed(&app, "inner", &[C("c1", "/a", 12), C("c2", "/b", 30)]).await?;
    assert_eq!(
        app.expect::<Pair>("pairs", 1).await?,
        vec![pair("v1", "c1")]
    );
    feed(&app, "inner", &[V("v3", "/b", 29)]).await?;
    let got = sorted::<Pair>(&app, "pairs", 2).await?;
    assert_eq!(got, vec![pair("v1", "c1"), pair("v3", "c2")]);
    common::settle().await;
    assert_eq!(
        app.count("pairs")?,
        2,
        "nothing re-read, nothing paired twice"
    );
    assert_eq!(
        app.stat("inner", |s| &s.records_in),
        3,
        "the views read before the restart are not read again"
    );
    app.stop().await?;

    // The same after the local store is lost: the buffers come back from the changelog.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let first = self::app(inner::agent(), 2).test_in(dir2.path()).await?;
    feed(&first, "inner", &[V("v1", "/a", 10)]).await?;
    first.stop().await?;
    std::fs::remove_dir_all(dir2.path().join("tables")).expect("remove the table store");
    let rebuilt = self::app(inner::agent(), 2).test_in(dir2.path()).await?;
    feed(&rebuilt, "inner", &[C("c1", "/a", 13)]).await?;
    assert_eq!(
        rebuilt.expect::<Pair>("pairs", 1).await?,
        vec![pair("v1", "c1")]
    );
    rebuilt.stop().await
}

/// Views and clicks with one pair, one lonely view and one lonely click, then a view far
/// ahead in event time that moves the watermark past all of them.
const LONELY: &[Rec] = &[
    V("v1", "/a", 10),
    C("c1", "/a", 12),
    V("v2", "/b", 11),
    C("c2", "/c", 13),
    // Watermark 40 (both sides there): every record above expires (at t + 5 + 5 + 0).
    C("c3", "/y", 40),
    V("v3", "/z", 40),
];

#[tokio::test]
async fn a_left_join_emits_lonely_views_once_their_window_has_closed() -> rill::Result<()> {
    let app = app(left::agent(), 1).test().await?;
    feed(&app, "left", &LONELY[..5]).await?;
    assert_eq!(
        app.expect::<Pair>("pairs", 1).await?,
        vec![pair("v1", "c1")]
    );
    common::settle().await;
    assert_eq!(app.count("pairs")?, 1, "v2 may still meet a click");
    feed(&app, "left", &LONELY[5..]).await?;
    let got = sorted::<Pair>(&app, "pairs", 2).await?;
    assert_eq!(got, vec![pair("v1", "c1"), lone_view("v2")]);
    common::settle().await;
    assert_eq!(
        app.count("pairs")?,
        2,
        "v3 is still open; c2 is not a left record"
    );
    app.stop().await
}

#[tokio::test]
async fn an_outer_join_emits_lonely_records_of_both_sides() -> rill::Result<()> {
    let app = app(outer::agent(), 1).test().await?;
    feed(&app, "outer", LONELY).await?;
    let got = sorted::<Pair>(&app, "pairs", 3).await?;
    assert_eq!(
        got,
        vec![lone_click("c2"), pair("v1", "c1"), lone_view("v2")]
    );
    common::settle().await;
    assert_eq!(app.count("pairs")?, 3);
    app.stop().await
}

#[tokio::test]
async fn joining_in_place_dead_letters_a_record_keyed_by_something_else() -> rill::Result<()> {
    let partitions = 4;
    let app = app(in_place::agent(), partitions).test().await?;
    feed(&app, "in_place", &[V("v1", "/a", 10), C("c1", "/a", 11)]).await?;
    assert_eq!(
        app.expect::<Pair>("pairs", 1).await?,
        vec![pair("v1", "c1")]
    );
    // A click keyed by its id, which lands in another partition than its URL's.
    let id = (0..)
        .map(|i| format!("click-{i}"))
        .find(|id| {
            rill::partitioner::partition_for_key(id.as_bytes(), partitions)
                != rill::partitioner::partition_for_key(b"/a", partitions)
        })
        .expect("an id of another partition");
    app.send_to(
        "clicks",
        &MisKeyedClick {
            id: id.clone(),
            url: "/a".into(),
            at: 12 * SEC,
        },
    )
    .await?;
    let dead = app.expect::<Vec<u8>>("joins_test-in_place-dlq", 1).await?;
    assert!(String::from_utf8_lossy(&dead[0]).contains(&id));
    let reason = header(&app.records("joins_test-in_place-dlq")?[0], "rill.error");
    assert!(reason.contains("co_partitioned"), "{reason}");
    assert!(
        app.records("joins_test-in_place-join-repartition")?
            .is_empty(),
        "no repartition topic in use"
    );
    common::settle().await;
    assert_eq!(app.count("pairs")?, 1);
    app.stop().await
}

#[record]
#[derive(Debug, Clone)]
struct Profile {
    #[record(key)]
    user: String,
    country: String,
}

#[record]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Enriched {
    view: String,
    country: Option<String>,
    earlier_views_of_url: Option<u64>,
}

/// Stream-table joins: each view with its user's profile (a global table over `profiles`) and
/// with the number of earlier views of its URL (the agent's own table, updated after).
#[agent(
    topic = "views",
    sink = "enriched",
    global_tables(profiles = "profiles"),
    tables(seen = "views_per_url")
)]
async fn enrich(
    views: Stream<View>,
    out: Sink<Enriched>,
    profiles: GlobalTable<String, Profile>,
    seen: Table<String, u64>,
) -> rill::Result<()> {
    let mut enriched = views
        .left_join_table(seen.clone(), |v| v.url.clone())
        .left_join_table(profiles, |(v, _)| v.user.clone());
    while let Some(((view, earlier), profile)) = enriched.next().await {
        seen.update(view.url.clone(), |n| n + 1)?;
        out.send(&Enriched {
            view: view.id,
            country: profile.map(|p| p.country),
            earlier_views_of_url: earlier,
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn stream_table_joins_read_the_current_value_of_a_table_and_a_global_table()
-> rill::Result<()> {
    let app = App::new("joins_test")
        .partitions(2)
        .agents([enrich::agent()])
        .test()
        .await?;
    app.send_to(
        "profiles",
        &Profile {
            user: "user-of-v1".into(),
            country: "NL".into(),
        },
    )
    .await?;
    // The global table follows its topic on a thread of its own: probe until it has the
    // profile (probes are on a URL of their own and left out below).
    let mut probes = 0;
    loop {
        let probe = View {
            id: format!("probe-{probes}"),
            url: "/probe".into(),
            user: "user-of-v1".into(),
            at: 0,
        };
        app.send_to("views", &probe).await?;
        probes += 1;
        let got: Vec<Enriched> = app.expect("enriched", probes).await?;
        if got.iter().any(|e| e.country.is_some()) {
            break;
        }
        assert!(probes < 100, "the global table never got the profile");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    feed(
        &app,
        "enrich",
        &[V("v1", "/a", 1), V("v2", "/a", 2), V("v3", "/b", 3)],
    )
    .await?;
    let mut got: Vec<Enriched> = app.expect("enriched", probes + 3).await?;
    got.retain(|e| !e.view.starts_with("probe-"));
    got.sort();
    let e = |view: &str, country: Option<&str>, earlier: Option<u64>| Enriched {
        view: view.into(),
        country: country.map(Into::into),
        earlier_views_of_url: earlier,
    };
    assert_eq!(
        got,
        vec![
            e("v1", Some("NL"), None),
            e("v2", None, Some(1)),
            e("v3", None, None)
        ]
    );
    app.stop().await
}

#[tokio::test]
async fn topics_read_together_must_have_the_same_partition_count() -> rill::Result<()> {
    let mut views = TopicSpec::of::<View>("views", "test");
    views.partitions = Some(2);
    let mut clicks = TopicSpec::of::<Click>("clicks", "test");
    clicks.partitions = Some(3);
    let agent = |name: &str| {
        AgentSpec::new(name, "test")
            .source(views.clone())
            .source(clicks.clone())
            .run(|_ctx| async { Ok(()) })
    };
    // Read as one stream (fan-in), the topics need not be co-partitioned.
    App::new("joins_test")
        .agents([agent("fan_in")])
        .test()
        .await?
        .stop()
        .await?;
    // Read together (what `#[agent(topics(..))]` declares), they must.
    let err = App::new("joins_test")
        .agents([agent("mismatched").co_partitioned()])
        .test()
        .await
        .err()
        .expect("the worker refuses to start");
    let msg = err.to_string();
    assert!(
        msg.contains("mismatched")
            && msg.contains("co-partitioned")
            && msg.contains("`clicks` has 3"),
        "{msg}"
    );
    Ok(())
}

#[agent(topics(views = "views", clicks = "clicks"))]
async fn views_only(mut views: Stream<View>, clicks: Stream<Click>) -> rill::Result<()> {
    drop(clicks);
    while views.next().await.is_some() {}
    Ok(())
}

#[tokio::test]
async fn reading_one_stream_of_a_two_topic_agent_alone_is_an_error() -> rill::Result<()> {
    let mut worker = App::new("joins_test")
        .memory()
        .partitions(1)
        .agents([views_only::agent()])
        .start()
        .await?;
    let producer = worker.producer();
    producer
        .send_to(
            "clicks",
            &Click {
                id: "c".into(),
                url: "/a".into(),
                at: 1,
            },
        )
        .await?;
    producer.flush().await?;
    let err = common::stop_error(&mut worker, Duration::from_secs(10)).await;
    let msg = err.to_string();
    assert!(
        msg.contains("views_only") && msg.contains("read alone") && msg.contains("join"),
        "{msg}"
    );
    worker.shutdown().await
}

#[tokio::test]
async fn join_state_stays_bounded_on_an_endless_stream() -> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app(inner::agent(), 2).test_in(dir.path()).await?;
    let store = dir.path().join("tables").join("data.mdb");
    let mut sizes = Vec::new();
    let mut t = 0i64;
    for round in 0..8u64 {
        // Each round: 200 views on 50 URLs, each followed by its click 1 s later; event time
        // moves 2 s per view, so a buffered record expires (t + 5 + 5 + 10 s) 10 views later.
        for i in 0..200 {
            let url = format!("/page/{}", i % 50);
            let id = format!("{round}-{i}");
            let v = View {
                id: id.clone(),
                url: url.clone(),
                user: "u".into(),
                at: t * SEC,
            };
            app.producer().send_to("views", &v).await?;
            let c = Click {
                id,
                url,
                at: (t + 1) * SEC,
            };
            app.producer().send_to("clicks", &c).await?;
            t += 2;
        }
        app.producer().flush().await?;
        let want = 400 * (round + 1);
        app.wait_until("the round read", |app| {
            app.stat("inner", |s| &s.records_in) >= want
        })
        .await?;
        common::settle().await;
        sizes.push(std::fs::metadata(&store).expect("table store file").len());
    }
    // Expired records are deleted and LMDB reuses their pages. Kept, the 3,200 records that
    // went through the buffers would take over 300 KiB (~100 bytes each, before B-tree
    // overhead); the file holds what is buffered at once: records waiting for the other
    // topic's side to be read (at most a fetch of one topic), then a few pages.
    let last = sizes[7];
    assert!(
        last <= 160 * 1024,
        "the table store reached {last} bytes: {sizes:?}"
    );
    // Every view met its own click (and no other: the next view of a URL is 100 s later).
    assert_eq!(app.stat("inner", |s| &s.late_records), 0);
    app.expect::<Pair>("pairs", 1_600).await?;
    common::settle().await;
    assert_eq!(app.count("pairs")?, 1_600);
    app.stop().await
}

/// Fails on the click `boom`: the default policy dead-letters it and calls the function again.
#[agent(topics(views = "views", clicks = "clicks"), sink = "pairs")]
async fn fragile(views: Stream<View>, clicks: Stream<Click>, out: Sink<Pair>) -> rill::Result<()> {
    let window = JoinWindow::within(Duration::from_secs(5)).grace(Duration::from_secs(10));
    let mut joined = views.join(clicks, |v| v.url.clone(), |c| c.url.clone(), window);
    while let Some((v, c)) = joined.next().await {
        if c.id == "boom" {
            return Err(rill::Error::user(format!(
                "cannot handle {} with {}",
                v.id, c.id
            )));
        }
        out.send(&pair(&v.id, &c.id)).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_failing_pair_dead_letters_its_record_and_the_join_keeps_its_buffers() -> rill::Result<()>
{
    let app = app(fragile::agent(), 2).test().await?;
    feed(
        &app,
        "fragile",
        &[
            V("v1", "/a", 10),
            C("c1", "/a", 11),
            C("boom", "/a", 12),
            // After the function was called again: v1 is still buffered.
            C("c2", "/a", 13),
        ],
    )
    .await?;
    let got = sorted::<Pair>(&app, "pairs", 2).await?;
    assert_eq!(got, vec![pair("v1", "c1"), pair("v1", "c2")]);
    let dead = app.records("joins_test-fragile-dlq")?;
    assert_eq!(dead.len(), 1);
    let click: Click = serde_json::from_slice(dead[0].value.as_deref().unwrap_or_default())
        .expect("the dead letter is the click");
    assert_eq!(click.id, "boom");
    assert_eq!(
        dead[0].headers.get("rill.topic"),
        Some(&b"clicks"[..]),
        "the dead letter keeps its side, so a replay finds it"
    );
    common::settle().await;
    assert_eq!(app.count("pairs")?, 2);
    app.stop().await
}
