//! In-memory channels on the test harness: an agent's sink, a producer and a timer hand records
//! to the agent reading a channel without the log ever holding them; keyed records keep to
//! one instance of a concurrent reader; a failed timer run's records never reach the channel;
//! a channel read by two agents, or with other topics, is refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rill::prelude::*;
use rill::{AgentSpec, OnError, TimerSpec};

#[record]
#[derive(Debug, Clone, PartialEq)]
struct View {
    #[record(key)]
    url: String,
}

#[record]
#[derive(Debug, Clone, PartialEq)]
struct Alert {
    #[record(key)]
    url: String,
    note: String,
}

/// An alert as the reading agent handled it: the channel partition it came from (partition `p`
/// goes to instance `p % 2`), and the count for its url.
#[record]
#[derive(Debug, Clone, PartialEq)]
struct Handled {
    url: String,
    note: String,
    partition: i32,
    count: u64,
}

#[agent(topic = "ch_views", sink = "ch_alerts")]
async fn watch(mut views: Stream<View>, alerts: Sink<Alert>) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        let alert = Alert {
            url: view.url,
            note: "viewed".into(),
        };
        alerts.send(&alert).await?;
    }
    Ok(())
}

#[agent(
    channel = "ch_alerts",
    sink = "ch_handled",
    concurrency = 2,
    tables(counts = "ch_counts")
)]
async fn alerting(
    alerts: Stream<Alert>,
    handled: Sink<Handled>,
    counts: Table<String, u64>,
) -> rill::Result<()> {
    let mut alerts = alerts.events();
    while let Some(event) = alerts.next().await {
        let alert = event.value;
        let count = counts.update(alert.url.clone(), |n| n + 1)?;
        let out = Handled {
            url: alert.url,
            note: alert.note,
            partition: event.meta.partition,
            count,
        };
        handled.send(&out).await?;
    }
    Ok(())
}

/// A timer whose first run sends an alert and fails; later runs send and succeed.
fn alarm() -> TimerSpec {
    let calls = Arc::new(AtomicU32::new(0));
    TimerSpec::every("alarm", Duration::from_secs(1))
        .on_error(OnError::Skip)
        .run(move |cx| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let alert = Alert {
                    url: "/timer".into(),
                    note: format!("run {call}"),
                };
                cx.producer().send_to("ch_alerts", &alert).await?;
                if call == 0 {
                    return Err(rill::Error::User("fails after sending".into()));
                }
                Ok(())
            }
        })
}

#[tokio::test]
async fn agents_producers_and_timers_hand_records_over_a_channel() -> rill::Result<()> {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::new("channels")
        .agents([watch::agent(), alerting::agent()])
        .timers([alarm()])
        .test_in(dir.path())
        .await?;
    for i in 0..40 {
        let view = View {
            url: format!("/p{}", i % 8),
        };
        app.send_to("ch_views", &view).await?;
    }
    let direct = Alert {
        url: "/direct".into(),
        note: "from a producer".into(),
    };
    app.producer().send_to("ch_alerts", &direct).await?;
    app.producer().flush().await?;
    let handled: Vec<Handled> = app.expect("ch_handled", 41).await?;
    // Each url's alerts went to one instance, which counted each once: counts 1..=5 per url.
    let mut by_url: HashMap<&str, Vec<&Handled>> = HashMap::new();
    for h in &handled {
        by_url.entry(&h.url).or_default().push(h);
    }
    for (url, hs) in &by_url {
        assert!(
            hs.iter().all(|h| h.partition == hs[0].partition),
            "{url} went to two partitions"
        );
        // (the output topic is unkeyed, so read back out of order)
        let mut counts: Vec<u64> = hs.iter().map(|h| h.count).collect();
        counts.sort_unstable();
        let expected: Vec<u64> = (1..=hs.len() as u64).collect();
        assert_eq!(counts, expected, "{url}");
    }
    let partitions: std::collections::HashSet<i32> = handled.iter().map(|h| h.partition).collect();
    assert_eq!(
        partitions.len(),
        2,
        "keys spread over both instances' partitions"
    );
    // The timer's first run failed after sending: its alert never arrives; the second does.
    app.advance_clock(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.advance_clock(Duration::from_secs(1));
    let handled: Vec<Handled> = app.expect("ch_handled", 42).await?;
    let timer_notes: Vec<&str> = handled
        .iter()
        .filter(|h| h.url == "/timer")
        .map(|h| h.note.as_str())
        .collect();
    assert_eq!(timer_notes, ["run 1"]);
    app.stop().await?;
    // The log never held the channel: an app without it sees no such topic.
    let again = App::new("channels").agents([]).test_in(dir.path()).await?;
    assert_eq!(again.count("ch_alerts")?, 0);
    assert_eq!(again.count("ch_handled")?, 42);
    again.stop().await
}

fn one_partition(topic: &str) -> rill::TopicSpec {
    let mut spec = rill::TopicSpec::of::<Alert>(topic, "test");
    spec.partitions = Some(1);
    spec
}

#[tokio::test]
async fn a_channel_has_one_reader_and_a_reader_reads_nothing_else() {
    async fn noop(_ctx: rill::AgentContext) -> rill::Result<()> {
        Ok(())
    }
    let two = App::new("channels_two")
        .agents([
            AgentSpec::new("first", "test")
                .channel::<Alert>("ch_one")
                .run(noop),
            AgentSpec::new("second", "test")
                .channel::<Alert>("ch_one")
                .run(noop),
        ])
        .test()
        .await;
    let err = two.err().expect("two readers are refused").to_string();
    assert!(
        err.contains("ch_one") && err.contains("one reader"),
        "{err}"
    );

    let mixed = App::new("channels_mixed")
        .agents([AgentSpec::new("mixed", "test")
            .channel::<Alert>("ch_two")
            .source(one_partition("ch_topic"))
            .co_partitioned()
            .run(noop)])
        .test()
        .await;
    let err = mixed
        .err()
        .expect("a channel with a topic is refused")
        .to_string();
    assert!(
        err.contains("ch_two") && err.contains("one channel"),
        "{err}"
    );
}
