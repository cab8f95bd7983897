//! Tables on the embedded transport through the test harness: running totals, restarts that
//! replay nothing, state rebuilt from the changelog, and the errors a user can run into.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use rill::prelude::*;

#[record]
#[derive(Debug, Clone)]
struct View {
    #[record(key)]
    url: String,
    user: String,
}

#[agent(topic = "views", tables(totals = "url_totals"), concurrency = 2)]
async fn count(mut views: Stream<View>, totals: Table<String, u64>) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        totals.update(view.url, |n| n + 1)?;
    }
    Ok(())
}

#[agent(topic = "views", tables(totals = "by_user"))]
async fn count_by_user(mut views: Stream<View>, totals: Table<String, u64>) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        // Wrong: the views topic is keyed by url, not by user.
        totals.update(view.user, |n| n + 1)?;
    }
    Ok(())
}

#[agent(topic = "views", tables(totals = "url_totals"))]
async fn read_as_text(
    mut views: Stream<View>,
    totals: Table<String, Vec<String>>,
) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        totals.get(&view.url)?;
    }
    Ok(())
}

async fn send_views(app: &TestApp, urls: usize, per_url: usize) -> rill::Result<()> {
    let views = (0..per_url).flat_map(|i| {
        (0..urls).map(move |u| View {
            url: format!("/page/{u}"),
            user: format!("user-{i}"),
        })
    });
    common::records::send_all(app.producer(), "views", views).await
}

/// Waits until the committed `table` holds `expected` (or 10 s) and returns what it holds.
async fn table_reaches(
    app: &TestApp,
    table: &str,
    expected: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got: BTreeMap<String, u64> = app.table(table).expect("table").into_iter().collect();
        if &got == expected || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn totals_reach(app: &TestApp, expected: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    table_reaches(app, "url_totals", expected).await
}

fn expected(urls: usize, each: u64) -> BTreeMap<String, u64> {
    (0..urls).map(|u| (format!("/page/{u}"), each)).collect()
}

#[tokio::test]
async fn running_totals_per_key_across_instances() -> rill::Result<()> {
    let app = App::new("totals").agents([count::agent()]).test().await?;
    send_views(&app, 12, 25).await?;
    assert_eq!(
        totals_reach(&app, &expected(12, 25)).await,
        expected(12, 25)
    );
    app.stop().await
}

#[tokio::test]
async fn a_clean_restart_continues_and_replays_no_changelog() -> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::new("restart")
        .agents([count::agent()])
        .test_in(dir.path())
        .await?;
    send_views(&app, 5, 10).await?;
    assert_eq!(totals_reach(&app, &expected(5, 10)).await, expected(5, 10));
    app.stop().await?;

    let app = App::new("restart")
        .agents([count::agent()])
        .test_in(dir.path())
        .await?;
    send_views(&app, 5, 7).await?;
    assert_eq!(totals_reach(&app, &expected(5, 17)).await, expected(5, 17));
    let stats = app.stats("count").expect("stats");
    assert_eq!(
        rill::AgentStats::get(&stats.restored),
        0,
        "nothing replayed after a clean shutdown"
    );
    app.stop().await
}

#[tokio::test]
async fn lost_local_state_is_rebuilt_from_the_changelog() -> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::new("rebuild")
        .agents([count::agent()])
        .test_in(dir.path())
        .await?;
    send_views(&app, 4, 20).await?;
    assert_eq!(totals_reach(&app, &expected(4, 20)).await, expected(4, 20));
    app.stop().await?;

    std::fs::remove_dir_all(dir.path().join("tables")).expect("delete the table store");
    let app = App::new("rebuild")
        .agents([count::agent()])
        .test_in(dir.path())
        .await?;
    send_views(&app, 4, 1).await?;
    assert_eq!(totals_reach(&app, &expected(4, 21)).await, expected(4, 21));
    let stats = app.stats("count").expect("stats");
    // Updates of a key within one commit interval coalesce into one changelog record.
    let restored = rill::AgentStats::get(&stats.restored);
    assert!(
        (4..=80).contains(&restored),
        "restored {restored} changelog records"
    );
    app.stop().await
}

#[tokio::test]
async fn writing_a_key_of_another_partition_is_an_error() -> rill::Result<()> {
    let mut worker = App::new("split")
        .memory()
        .agents([count_by_user::agent()])
        .start()
        .await?;
    let producer = worker.producer();
    for i in 0..20 {
        producer
            .send_to(
                "views",
                &View {
                    url: "/one-url".into(),
                    user: format!("user-{i}"),
                },
            )
            .await?;
    }
    producer.flush().await?;
    let err = common::stop_error(&mut worker, Duration::from_secs(10)).await;
    let msg = err.to_string();
    assert!(
        msg.contains("by_user") && msg.contains("belongs to partition") && msg.contains("group_by"),
        "{msg}"
    );
    worker.shutdown().await
}

#[tokio::test]
async fn a_value_that_no_longer_decodes_names_table_key_and_type() -> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::new("schema")
        .agents([count::agent()])
        .test_in(dir.path())
        .await?;
    send_views(&app, 1, 3).await?;
    assert_eq!(totals_reach(&app, &expected(1, 3)).await, expected(1, 3));
    app.stop().await?;

    // Same app and table, redeployed with another value type.
    let mut worker = App::new("schema")
        .agents([read_as_text::agent()])
        .data_dir(dir.path())
        .configure(|c| c.broker = rill::Broker::Embedded)
        .start()
        .await?;
    worker
        .producer()
        .send_to(
            "views",
            &View {
                url: "/page/0".into(),
                user: "u".into(),
            },
        )
        .await?;
    worker.producer().flush().await?;
    let err = common::stop_error(&mut worker, Duration::from_secs(10)).await;
    let msg = err.to_string();
    assert!(
        msg.contains("url_totals")
            && msg.contains("/page/0")
            && msg.contains("Vec<alloc::string::String>"),
        "{msg}"
    );
    worker.shutdown().await
}

#[agent(topic = "views", tables(big = "big_values"))]
async fn hoard(mut views: Stream<View>, big: Table<String, String>) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        big.insert(view.url, "x".repeat(20_000))?;
    }
    Ok(())
}

#[tokio::test]
async fn a_full_table_store_stops_the_agent_with_a_clear_error() -> rill::Result<()> {
    let mut worker = App::new("full")
        .memory()
        .agents([hoard::agent()])
        .configure(|c| {
            c.table_map_size = 1 << 20;
            c.table_map_max = 1 << 20;
        })
        .start()
        .await?;
    for i in 0..200 {
        worker
            .producer()
            .send_to(
                "views",
                &View {
                    url: format!("/{i}"),
                    user: "u".into(),
                },
            )
            .await?;
    }
    worker.producer().flush().await?;
    let err = common::stop_error(&mut worker, Duration::from_secs(10)).await;
    let msg = err.to_string();
    assert!(
        msg.contains("table store is full") && msg.contains("RILL_TABLE_MAP_MAX"),
        "{msg}"
    );
    worker.shutdown().await.ok();
    Ok(())
}

#[tokio::test]
async fn the_table_store_grows_its_map_when_needed() -> rill::Result<()> {
    let app = App::new("grow")
        .agents([hoard::agent()])
        .configure(|c| c.table_map_size = 1 << 20)
        .test()
        .await?;
    for i in 0..200 {
        app.producer()
            .send_to(
                "views",
                &View {
                    url: format!("/{i}"),
                    user: "u".into(),
                },
            )
            .await?;
    }
    app.producer().flush().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.table::<String, String>("big_values")?.len() < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "4 MB of values did not fit in a growing 1 MiB map"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await
}

#[record]
#[derive(Debug, Clone, PartialEq)]
struct Profile {
    #[record(key)]
    user: String,
    country: String,
}

#[record]
#[derive(Debug, Clone, PartialEq)]
struct Enriched {
    url: String,
    user: String,
    country: Option<String>,
}

#[agent(
    topic = "views",
    sink = "enriched",
    global_tables(profiles = "profiles")
)]
async fn enrich(
    mut views: Stream<View>,
    out: Sink<Enriched>,
    profiles: GlobalTable<String, Profile>,
) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        let country = profiles.get(&view.user)?.map(|p| p.country);
        out.send(&Enriched {
            url: view.url,
            user: view.user,
            country,
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn global_tables_hold_a_whole_topic_before_agents_start_and_follow_updates()
-> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = App::new("global").agents([]).test_in(dir.path()).await?;
    for (i, country) in ["fr", "jp", "br", "ke", "nz", "ca"].iter().enumerate() {
        setup
            .producer()
            .send_to(
                "profiles",
                &Profile {
                    user: format!("u{i}"),
                    country: (*country).into(),
                },
            )
            .await?;
    }
    setup.producer().flush().await?;
    setup.stop().await?;

    let app = App::new("global")
        .agents([enrich::agent()])
        .test_in(dir.path())
        .await?;
    for i in 0..7 {
        app.send_to(
            "views",
            &View {
                url: "/".into(),
                user: format!("u{i}"),
            },
        )
        .await?;
    }
    let got: Vec<Enriched> = app.expect("enriched", 7).await?;
    let mut countries: Vec<(String, Option<String>)> =
        got.into_iter().map(|e| (e.user, e.country)).collect();
    countries.sort();
    assert_eq!(countries[0], ("u0".into(), Some("fr".into())));
    assert_eq!(countries[5], ("u5".into(), Some("ca".into())));
    assert_eq!(
        countries[6],
        ("u6".into(), None),
        "unknown users have no profile"
    );

    // Updates reach the table while the worker runs.
    app.send_to(
        "profiles",
        &Profile {
            user: "u6".into(),
            country: "is".into(),
        },
    )
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        app.send_to(
            "views",
            &View {
                url: "/again".into(),
                user: "u6".into(),
            },
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let again: Vec<Enriched> = app.read("enriched")?;
        if again
            .iter()
            .any(|e| e.url == "/again" && e.country.as_deref() == Some("is"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the update never reached the global table"
        );
    }
    app.stop().await
}

#[agent(topic = "views", tables(totals = "user_totals"), concurrency = 2)]
async fn count_users(views: Stream<View>, totals: Table<String, u64>) -> rill::Result<()> {
    // The topic is keyed by url; re-key by user so each user's count lives in one partition.
    let mut views = views.group_by(View::user);
    while let Some(view) = views.next().await {
        totals.update(view.user, |n| n + 1)?;
    }
    Ok(())
}

#[tokio::test]
async fn group_by_repartitions_through_an_internal_topic_so_tables_can_key_by_any_field()
-> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::new("grp")
        .agents([count_users::agent()])
        .test_in(dir.path())
        .await?;
    for i in 0..300 {
        app.producer()
            .send_to(
                "views",
                &View {
                    url: format!("/page/{}", i % 7),
                    user: format!("user-{}", i % 10),
                },
            )
            .await?;
    }
    app.producer().flush().await?;
    let expected: BTreeMap<String, u64> = (0..10).map(|u| (format!("user-{u}"), 30)).collect();
    assert_eq!(
        table_reaches(&app, "user_totals", &expected).await,
        expected
    );
    let repartitioned = app.records("grp-count_users-user-repartition")?;
    assert_eq!(
        repartitioned.len(),
        300,
        "every view went through the repartition topic once"
    );
    for r in &repartitioned {
        let key = String::from_utf8(r.key.clone().expect("keyed").to_vec()).expect("utf-8");
        assert_eq!(
            r.partition,
            rill::partitioner::partition_for_key(key.as_bytes(), 8),
            "keyed by user"
        );
    }
    app.stop().await?;

    // A restart continues from the committed positions of both topics.
    let app = App::new("grp")
        .agents([count_users::agent()])
        .test_in(dir.path())
        .await?;
    app.send_to(
        "views",
        &View {
            url: "/x".into(),
            user: "user-3".into(),
        },
    )
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got: BTreeMap<String, u64> = app.table("user_totals")?.into_iter().collect();
        if got.get("user-3") == Some(&31) {
            assert_eq!(
                got.values().sum::<u64>(),
                301,
                "nothing counted twice: {got:?}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "totals {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await
}

#[agent(topic = "views", tables(totals = "first_letters"))]
async fn count_initials(views: Stream<View>, totals: Table<String, u64>) -> rill::Result<()> {
    let mut views = views.group_by_key("initial", |v: &View| v.user[..1].to_owned());
    while let Some(view) = views.next().await {
        totals.update(view.user[..1].to_owned(), |n| n + 1)?;
    }
    Ok(())
}

#[tokio::test]
async fn group_by_key_takes_a_closure_and_names_its_topic() -> rill::Result<()> {
    let app = App::new("initials")
        .agents([count_initials::agent()])
        .test()
        .await?;
    for name in ["ada", "alan", "barbara", "bjarne", "brian"] {
        app.send_to(
            "views",
            &View {
                url: "/".into(),
                user: name.into(),
            },
        )
        .await?;
    }
    let expected = BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 3)]);
    assert_eq!(
        table_reaches(&app, "first_letters", &expected).await,
        expected
    );
    assert_eq!(app.count("initials-count_initials-initial-repartition")?, 5);
    app.stop().await
}
