//! Timers and crontabs on the test harness's virtual clock: when they run, what a failed run
//! leads to under each policy, leader-only timers on the embedded log, tables read from a
//! timer, their metrics, and a graceful stop that lets a run finish.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use rill::prelude::*;
use rill::{Clock, OnError, Schedule, TimerSpec};

/// A tick: the timer's name and the time it was scheduled for.
#[record]
#[derive(Debug, Clone, PartialEq)]
struct Tick {
    timer: String,
    scheduled_ms: i64,
}

fn ticking(spec: TimerSpec) -> TimerSpec {
    spec.run(|cx| async move {
        let tick = Tick {
            timer: cx.name().to_owned(),
            scheduled_ms: cx.scheduled_ms(),
        };
        cx.producer().send_to("ticks", &tick).await
    })
}

async fn test_app(timers: impl IntoIterator<Item = TimerSpec>) -> rill::Result<TestApp> {
    App::new("timers").agents([]).timers(timers).test().await
}

/// Lets the timer task see a clock move and finish its run.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

#[tokio::test]
async fn an_interval_timer_runs_once_per_interval_from_the_start() -> rill::Result<()> {
    let app = test_app([ticking(TimerSpec::every(
        "every_10s",
        Duration::from_secs(10),
    ))])
    .await?;
    let start = app.now_ms();
    app.advance_clock(Duration::from_secs(9));
    settle().await;
    assert_eq!(app.count("ticks")?, 0, "not before the first interval");
    app.advance_clock(Duration::from_secs(1));
    let first: Vec<Tick> = app.expect("ticks", 1).await?;
    assert_eq!(first[0].scheduled_ms, start + 10_000);
    app.advance_clock(Duration::from_secs(10));
    let two: Vec<Tick> = app.expect("ticks", 2).await?;
    assert_eq!(two[1].scheduled_ms, start + 20_000);
    // A jump over three intervals runs once, at the last scheduled time passed, and counts
    // the others as skipped.
    app.advance_clock(Duration::from_secs(30));
    let three: Vec<Tick> = app.expect("ticks", 3).await?;
    assert_eq!(three[2].scheduled_ms, start + 30_000);
    let stats = app.timer_stats("every_10s").expect("stats");
    app.wait_until("the overrun ticks are counted", |_| {
        stats.skipped.load(Ordering::Relaxed) == 2
    })
    .await?;
    assert_eq!(stats.runs.load(Ordering::Relaxed), 3);
    app.stop().await
}

#[tokio::test]
async fn a_crontab_runs_at_the_times_its_expression_matches_in_its_zone() -> rill::Result<()> {
    let spec = ticking(TimerSpec::crontab("nightly", "0 20 * * *", "Europe/Paris"));
    let app = test_app([spec]).await?;
    let schedule = Schedule::cron("0 20 * * *", "Europe/Paris")?;
    let now = app.now_ms();
    let due = schedule.next_after(now, now).expect("a next time");
    app.advance_clock(Duration::from_millis((due - now - 1_000) as u64));
    settle().await;
    assert_eq!(app.count("ticks")?, 0, "not before 20:00 in Paris");
    app.advance_clock(Duration::from_secs(1));
    let ticks: Vec<Tick> = app.expect("ticks", 1).await?;
    assert_eq!(ticks[0].scheduled_ms, due);
    let next = schedule.next_after(due, due).expect("the day after");
    assert!(
        (23 * 3_600_000..=25 * 3_600_000).contains(&(next - due)),
        "one day later"
    );
    app.stop().await
}

/// A timer failing its first `fail` calls, sending a tick on the others.
fn failing(name: &str, fail: u32, policy: OnError) -> (TimerSpec, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let spec = TimerSpec::every(name, Duration::from_secs(1))
        .on_error(policy)
        .run(move |cx| {
            let call = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if call < fail {
                    return Err(rill::Error::User(format!("call {call} fails").into()));
                }
                let tick = Tick {
                    timer: cx.name().to_owned(),
                    scheduled_ms: cx.scheduled_ms(),
                };
                cx.producer().send_to("ticks", &tick).await
            }
        });
    (spec, calls)
}

#[tokio::test]
async fn a_failed_run_is_retried_in_place_or_waits_for_the_next_time() -> rill::Result<()> {
    let retry = OnError::Retry {
        attempts: 2,
        backoff: Duration::from_millis(10),
    };
    let (retried, _) = failing("retried", 1, retry);
    let (skipped, _) = failing("skipped", 1, OnError::Skip);
    let app = test_app([retried, skipped]).await?;
    app.advance_clock(Duration::from_secs(1));
    let ticks: Vec<Tick> = app.expect("ticks", 1).await?;
    assert_eq!(ticks[0].timer, "retried", "the retry succeeded at once");
    let stats = app.timer_stats("retried").expect("stats");
    assert_eq!(
        (
            stats.runs.load(Ordering::Relaxed),
            stats.failures.load(Ordering::Relaxed)
        ),
        (2, 1)
    );
    // The other one failed and runs again at its next time.
    app.advance_clock(Duration::from_secs(1));
    let ticks: Vec<Tick> = app.expect("ticks", 3).await?;
    let skipped_ticks = ticks.iter().filter(|t| t.timer == "skipped").count();
    assert_eq!(skipped_ticks, 1);
    let stats = app.timer_stats("skipped").expect("stats");
    assert_eq!(stats.failures.load(Ordering::Relaxed), 1);
    let metrics = app.metrics_text();
    assert!(
        metrics.contains("rill_timer_failures_total{timer=\"skipped\"} 1"),
        "{metrics}"
    );
    app.stop().await
}

/// A timer whose first call sends a tick and then fails; the calls after it send and succeed.
fn half_done(name: &str) -> TimerSpec {
    let calls = Arc::new(AtomicU32::new(0));
    TimerSpec::every(name, Duration::from_secs(1))
        .on_error(OnError::Retry {
            attempts: 1,
            backoff: Duration::from_millis(10),
        })
        .run(move |cx| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let tick = Tick {
                    timer: format!("call {call}"),
                    scheduled_ms: cx.scheduled_ms(),
                };
                cx.producer().send_to("ticks", &tick).await?;
                if call == 0 {
                    return Err(rill::Error::User("fails after sending".into()));
                }
                Ok(())
            }
        })
}

#[tokio::test]
async fn a_failed_runs_sends_are_discarded_and_its_retry_sends_once() -> rill::Result<()> {
    let app = test_app([half_done("half_done")]).await?;
    app.advance_clock(Duration::from_secs(1));
    let ticks: Vec<Tick> = app.expect("ticks", 1).await?;
    settle().await;
    assert_eq!(app.count("ticks")?, 1, "only the successful call's send");
    assert_eq!(ticks[0].timer, "call 1");
    app.stop().await
}

#[tokio::test]
async fn a_failed_run_under_stop_stops_the_worker() -> rill::Result<()> {
    let (stopping, _) = failing("stopping", 1, OnError::Stop);
    let clock = Clock::virtual_now();
    let Clock::Virtual(virtual_clock) = &clock else {
        unreachable!()
    };
    let virtual_clock = virtual_clock.clone();
    let mut worker = App::new("timers_stop")
        .memory()
        .agents([])
        .timers([stopping])
        .configure(|c| c.clock = clock)
        .start()
        .await?;
    virtual_clock.advance(Duration::from_secs(1));
    let outcome = tokio::time::timeout(Duration::from_secs(10), worker.wait()).await;
    let err = outcome
        .expect("the worker stops")
        .expect_err("with the error");
    assert!(err.to_string().contains("timer `stopping`"), "{err}");
    let _ = worker.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn leader_only_timers_run_on_the_embedded_logs_one_process() -> rill::Result<()> {
    let spec = ticking(TimerSpec::every("leader", Duration::from_secs(5)).on_leader(true));
    let app = test_app([spec]).await?;
    app.advance_clock(Duration::from_secs(5));
    app.expect::<Tick>("ticks", 1).await?;
    assert!(app.metrics_text().contains("rill_leader 1"));
    app.stop().await
}

#[tokio::test]
async fn a_stop_lets_a_run_under_way_finish() -> rill::Result<()> {
    let finished = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let (f, s) = (finished.clone(), started.clone());
    let slow = TimerSpec::every("slow", Duration::from_secs(1)).run(move |_| {
        let (f, s) = (f.clone(), s.clone());
        async move {
            s.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            f.store(true, Ordering::SeqCst);
            Ok(())
        }
    });
    let app = test_app([slow]).await?;
    app.advance_clock(Duration::from_secs(1));
    app.wait_until("the run started", |_| started.load(Ordering::SeqCst))
        .await?;
    app.stop().await?;
    assert!(
        finished.load(Ordering::SeqCst),
        "the stop waited for the run"
    );
    Ok(())
}

#[tokio::test]
async fn invalid_schedules_stop_the_start_with_the_timers_name() {
    let bad = TimerSpec::crontab("broken", "0 25 * * *", "UTC").run(|_| async { Ok(()) });
    let err = test_app([bad]).await.err().expect("refused").to_string();
    assert!(
        err.contains("timer `broken`") && err.contains("0 25 * * *"),
        "{err}"
    );
    let zone = TimerSpec::crontab("zoned", "0 20 * * *", "Mars/Olympus").run(|_| async { Ok(()) });
    let err = test_app([zone]).await.err().expect("refused").to_string();
    assert!(err.contains("Mars/Olympus"), "{err}");
}

#[record]
#[derive(Debug, Clone)]
struct View {
    #[record(key)]
    url: String,
}

#[record]
#[derive(Debug, Clone, PartialEq)]
struct Total {
    views: u64,
    scheduled_ms: i64,
}

#[agent(topic = "views", tables(url_totals = "timer_url_totals"))]
async fn count_views(mut views: Stream<View>, url_totals: Table<String, u64>) -> rill::Result<()> {
    while let Some(view) = views.next().await {
        url_totals.update(view.url, |n| n + 1)?;
    }
    Ok(())
}

/// Every 10 s, on the leader: the sum of the counts an agent keeps, read through a
/// `TableReader`.
#[timer(every = "10s", on_leader = true, tables(totals = "timer_url_totals"))]
async fn publish_totals(
    totals: TableReader<String, u64>,
    producer: Producer,
    cx: TimerContext,
) -> rill::Result<()> {
    let views = totals
        .entries()?
        .map(|e| e.map(|(_, n)| n))
        .sum::<rill::Result<u64>>()?;
    let total = Total {
        views,
        scheduled_ms: cx.scheduled_ms(),
    };
    producer.send_to("totals", &total).await
}

#[tokio::test]
async fn a_timer_macro_reads_an_agents_table_on_schedule() -> rill::Result<()> {
    let app = App::new("timer_macro")
        .agents([count_views::agent()])
        .timers([publish_totals::timer()])
        .test()
        .await?;
    let start = app.now_ms();
    let views = ["/a", "/b", "/a", "/c", "/a"].map(|u| View { url: u.into() });
    common::records::send_all(app.producer(), "views", views).await?;
    let reader = app.tables().reader::<String, u64>("timer_url_totals")?;
    let committed = || -> rill::Result<u64> { reader.entries()?.map(|e| e.map(|(_, n)| n)).sum() };
    app.wait_until("the counts are committed", |_| {
        committed().is_ok_and(|n| n == 5)
    })
    .await?;
    app.advance_clock(Duration::from_secs(10));
    let totals: Vec<Total> = app.expect("totals", 1).await?;
    assert_eq!(
        totals[0],
        Total {
            views: 5,
            scheduled_ms: start + 10_000
        }
    );
    app.stop().await
}
