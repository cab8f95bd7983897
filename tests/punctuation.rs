//! Punctuation on the test harness: `Stream::every` fires on the worker's (virtual) clock while
//! the agent waits for records, reads and rewrites the instance's tables across its partitions
//! and sends in its commit step; `Stream::every_event_time` follows the records' event time.

mod common;

use std::time::Duration;

use rill::prelude::*;

#[record]
#[derive(Debug, Clone)]
struct View {
    #[record(key)]
    url: String,
    #[record(timestamp)]
    at_ms: i64,
}

#[record]
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    at_ms: i64,
    urls: usize,
    views: u64,
}

/// Counts views per URL; every 10 s of the clock publishes the totals and halves them.
#[agent(topic = "views", tables(totals = "punct_totals"))]
async fn decaying_counts(views: Stream<View>, totals: Table<String, u64>) -> rill::Result<()> {
    let table = totals.clone();
    let mut views = views.every(Duration::from_secs(10), move |p| {
        let all = table.iter()?;
        let summary = Summary {
            at_ms: p.at_ms(),
            urls: all.len(),
            views: all.iter().map(|(_, n)| n).sum(),
        };
        p.send("summaries", &summary)?;
        for (url, n) in all {
            table.insert(url, n / 2)?;
        }
        Ok(())
    });
    while let Some(view) = views.next().await {
        totals.update(view.url, |n| n + 1)?;
    }
    Ok(())
}

/// Every minute of event time: how many views the stream handed out so far.
#[agent(topic = "timed_views")]
async fn per_minute(views: Stream<View>) -> rill::Result<()> {
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = seen.clone();
    let mut views = views.every_event_time(Duration::from_secs(60), move |p| {
        let views = counted.load(std::sync::atomic::Ordering::Relaxed);
        p.send(
            "minutes",
            &Summary {
                at_ms: p.at_ms(),
                urls: 0,
                views,
            },
        )
    });
    while views.next().await.is_some() {
        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

#[tokio::test]
async fn wall_clock_punctuation_reads_and_writes_every_partition_and_sends() -> rill::Result<()> {
    let app = App::new("punctuation")
        .agents([decaying_counts::agent()])
        .test()
        .await?;
    let start = app.now_ms();
    let views = (0..40).map(|i| View {
        url: format!("/p/{}", i % 8),
        at_ms: start,
    });
    common::records::send_all(app.producer(), "views", views).await?;
    app.wait_until("the views are counted", |app| {
        app.table::<String, u64>("punct_totals")
            .is_ok_and(|t| t.iter().map(|(_, n)| n).sum::<u64>() == 40)
    })
    .await?;
    // Nothing more arrives: the punctuation fires while the agent waits.
    app.advance_clock(Duration::from_secs(10));
    let first: Vec<Summary> = app.expect("summaries", 1).await?;
    assert_eq!(
        first[0],
        Summary {
            at_ms: start + 10_000,
            urls: 8,
            views: 40
        }
    );
    app.wait_until("the counts are halved", |app| {
        app.table::<String, u64>("punct_totals")
            .is_ok_and(|t| t.iter().all(|(_, n)| *n == 2))
    })
    .await?;
    app.advance_clock(Duration::from_secs(10));
    let two: Vec<Summary> = app.expect("summaries", 2).await?;
    assert_eq!(
        two[1],
        Summary {
            at_ms: start + 20_000,
            urls: 8,
            views: 16
        }
    );
    app.stop().await
}

#[tokio::test]
async fn event_time_punctuation_follows_the_records() -> rill::Result<()> {
    let app = App::new("punctuation_et")
        .agents([per_minute::agent()])
        .test()
        .await?;
    let t0 = 1_700_000_000_000i64;
    // One view every 10 s of event time, 150 s in all: minutes end at t0 + 60 s and + 120 s.
    let views = (0..16).map(|i| View {
        url: "/".into(),
        at_ms: t0 + i * 10_000,
    });
    common::records::send_all(app.producer(), "timed_views", views).await?;
    let minutes: Vec<Summary> = app.expect("minutes", 2).await?;
    assert_eq!(
        minutes.iter().map(|m| m.at_ms).collect::<Vec<_>>(),
        [t0 + 60_000, t0 + 120_000]
    );
    // Each fired after the record that reached its time (at t0 + 60 s: the 7th), before the
    // next one: Kafka Streams punctuates after the record that advanced stream time.
    assert_eq!(minutes.iter().map(|m| m.views).collect::<Vec<_>>(), [7, 13]);
    app.stop().await
}
