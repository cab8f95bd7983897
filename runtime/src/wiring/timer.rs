//! Timers and crontabs (Faust's `@app.timer` and `@app.crontab`, Kafka Streams' wall-clock
//! punctuators at the app level): functions the worker runs on a [`Schedule`], on every worker
//! or, with `on_leader`, on the one worker of the app that leads (elected through Kafka group
//! membership, see `Log::elect`; on the embedded log the one process leads).
//!
//! Time is the worker's clock (`Config::clock`), so tests move timers with
//! `TestApp::advance_clock` and never sleep. A run's sends go through a producer of its own
//! and are flushed when the run returns (at-least-once: a worker that dies mid-run may have
//! sent part of it). A failed run is counted and logged, retried in place under
//! `OnError::Retry`, and stops the worker under `OnError::Stop`; under the other policies the
//! timer runs again at its next scheduled time (there is no record to dead-letter).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tracing::Instrument;

use crate::base::error::{Error, Result};
use crate::base::failure::OnError;
use crate::base::metrics::TimerStats;
use crate::base::schedule::Schedule;
use crate::base::time::Clock;
use crate::io::transport::{Leadership, Log};
use crate::wiring::asking::Requests;
use crate::wiring::producer::Producer;
use crate::wiring::reader::{TableReader, Tables};

/// A timer's function: called with its context at each scheduled time.
type TimerFn = Arc<dyn Fn(TimerContext) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// A timer's declaration: `#[timer]` and `#[crontab]` build one; it can be written by hand.
///
/// ```no_run
/// # use std::time::Duration;
/// use rill_runtime::timer::TimerSpec;
/// let spec = TimerSpec::every("publish_totals", Duration::from_secs(10))
///     .on_leader(true)
///     .run(|cx| async move {
///         cx.producer().send_to("ticks", &"tick".to_owned()).await
///     });
/// ```
#[derive(Clone)]
pub struct TimerSpec {
    name: Arc<str>,
    /// The schedule, or why its expression or zone is invalid (reported at start).
    schedule: std::result::Result<Schedule, String>,
    on_leader: bool,
    on_error: OnError,
    run: Option<TimerFn>,
}

impl TimerSpec {
    /// A timer running every `interval`, the first time one interval after the worker starts.
    pub fn every(name: &str, interval: Duration) -> Self {
        Self::with(name, Schedule::every(interval))
    }

    /// A timer running when the cron `expression` matches in time zone `zone` (see
    /// [`Schedule::cron`]).
    pub fn crontab(name: &str, expression: &str, zone: &str) -> Self {
        Self::with(name, Schedule::cron(expression, zone))
    }

    fn with(name: &str, schedule: Result<Schedule>) -> Self {
        TimerSpec {
            name: Arc::from(name),
            schedule: schedule.map_err(|e| e.to_string()),
            on_leader: false,
            on_error: OnError::Skip,
            run: None,
        }
    }

    /// Runs only on the worker that leads the app (default: on every worker).
    pub fn on_leader(mut self, on_leader: bool) -> Self {
        self.on_leader = on_leader;
        self
    }

    /// What a failed run leads to: `Retry` retries it in place, `Stop` stops the worker; any
    /// other policy logs and counts it and waits for the next scheduled time (the default).
    pub fn on_error(mut self, policy: OnError) -> Self {
        self.on_error = policy;
        self
    }

    /// The function to run.
    pub fn run<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(TimerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.run = Some(Arc::new(move |cx| Box::pin(f(cx))));
        self
    }

    /// The timer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it runs on the leader only.
    pub fn is_on_leader(&self) -> bool {
        self.on_leader
    }

    /// Its schedule; an error naming the timer when its expression or zone is invalid.
    pub fn schedule(&self) -> Result<Schedule> {
        self.schedule
            .clone()
            .map_err(|message| Error::config(format!("timer `{}`", self.name), message))
    }

    /// Checks what the worker needs before it starts.
    pub(crate) fn check(&self) -> Result<()> {
        self.schedule()?;
        if self.run.is_none() {
            return Err(Error::config(
                format!("timer `{}`", self.name),
                "it has no function: call `TimerSpec::run`",
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for TimerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerSpec")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("on_leader", &self.on_leader)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

/// What a timer's function gets at each run.
pub struct TimerContext {
    name: Arc<str>,
    scheduled_ms: i64,
    producer: Producer,
    tables: Tables,
    requests: Requests,
}

impl TimerContext {
    /// The timer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The time this run was scheduled for, ms since the epoch (the run starts at or just
    /// after it).
    pub fn scheduled_ms(&self) -> i64 {
        self.scheduled_ms
    }

    /// A producer whose sends are flushed when the run returns.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The worker's tables.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Asks agents and waits for their replies (see [`Requests::ask`]).
    pub fn requests(&self) -> &Requests {
        &self.requests
    }

    /// A reader of the table `name` (see [`Tables::reader`]).
    pub fn reader<K, V>(&self, name: &str) -> Result<TableReader<K, V>> {
        self.tables.reader(name)
    }
}

/// A timer registered by `#[timer]` or `#[crontab]` (collected with `inventory`).
pub struct TimerRegistration {
    /// Builds the timer's spec.
    pub build: fn() -> TimerSpec,
}

inventory::collect!(TimerRegistration);

/// Every timer registered in this binary, sorted by name.
pub fn registered_timers() -> Vec<TimerSpec> {
    let mut specs: Vec<TimerSpec> = inventory::iter::<TimerRegistration>
        .into_iter()
        .map(|r| (r.build)())
        .collect();
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    specs
}

/// What every timer of a worker shares.
#[derive(Clone)]
pub(crate) struct TimerEnv {
    pub(crate) clock: Clock,
    pub(crate) log: Arc<dyn Log>,
    pub(crate) tables: Tables,
    pub(crate) requests: Requests,
    /// The app's election, when a timer runs on the leader only.
    pub(crate) leadership: Option<Arc<Leadership>>,
    /// Becomes true when the worker stops.
    pub(crate) stop: watch::Receiver<bool>,
    /// When the timers started (intervals count from it), read before their tasks spawn.
    pub(crate) start_ms: i64,
}

/// Runs one timer until the worker stops; `Err` only when a run failed under `OnError::Stop`.
pub(crate) async fn run_timer(
    spec: TimerSpec,
    mut env: TimerEnv,
    stats: Arc<TimerStats>,
) -> Result<()> {
    let schedule = spec.schedule()?;
    let start = env.start_ms;
    let mut after = start;
    while let Some(due) = schedule.next_after(start, after) {
        if !sleep_until(&env.clock, due, &mut env.stop).await {
            return Ok(());
        }
        let leads = env.leadership.as_ref().is_none_or(|l| l.is_leader());
        if spec.on_leader && !leads {
            stats.skipped.fetch_add(1, Ordering::Relaxed);
            after = due;
            continue;
        }
        run_once(&spec, &env, due, &stats).await?;
        let now = env.clock.now_ms().max(due);
        stats
            .skipped
            .fetch_add(overrun(&schedule, start, due, now), Ordering::Relaxed);
        after = now;
    }
    Ok(())
}

/// Scheduled times in `(due, now]`: passed over by a run that took until `now`.
fn overrun(schedule: &Schedule, start: i64, due: i64, now: i64) -> u64 {
    let mut passed = 0;
    let mut t = due;
    while let Some(next) = schedule.next_after(start, t) {
        if next > now || passed >= 100_000 {
            break;
        }
        passed += 1;
        t = next;
    }
    passed
}

/// Waits until the clock reaches `due_ms`; false when the worker stops first.
async fn sleep_until(clock: &Clock, due_ms: i64, stop: &mut watch::Receiver<bool>) -> bool {
    let mut moved = clock.subscribe();
    loop {
        if *stop.borrow() {
            return false;
        }
        let now = clock.now_ms();
        if now >= due_ms {
            return true;
        }
        let wait = Duration::from_millis(u64::try_from(due_ms - now).unwrap_or(0));
        let stopped = match &mut moved {
            None => tokio::select! {
                () = tokio::time::sleep(wait) => false,
                changed = stop.changed() => changed.is_err(),
            },
            Some(virtual_clock) => tokio::select! {
                changed = virtual_clock.changed() => changed.is_err(),
                changed = stop.changed() => changed.is_err(),
            },
        };
        if stopped {
            return false;
        }
    }
}

/// One scheduled run, retried under `OnError::Retry`; `Err` when it failed under `Stop`.
async fn run_once(spec: &TimerSpec, env: &TimerEnv, due: i64, stats: &TimerStats) -> Result<()> {
    let Some(run) = &spec.run else {
        return Ok(());
    };
    let (retries, backoff) = match spec.on_error {
        OnError::Retry { attempts, backoff } => (attempts, backoff),
        _ => (0, Duration::ZERO),
    };
    let mut attempt = 0;
    loop {
        stats.runs.fetch_add(1, Ordering::Relaxed);
        let outcome = call(spec, env, run, due, attempt, stats).await;
        let Err(e) = outcome else {
            return Ok(());
        };
        stats.failures.fetch_add(1, Ordering::Relaxed);
        if attempt < retries {
            let delay = backoff.saturating_mul(2u32.saturating_pow(attempt));
            tracing::warn!(timer = %spec.name, error = %e, attempt, ?delay, "timer run failed; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
            continue;
        }
        if spec.on_error == OnError::Stop {
            return Err(Error::Shutdown(format!(
                "timer `{}` failed and its policy is `stop`: {e}",
                spec.name
            )));
        }
        tracing::error!(timer = %spec.name, error = %e, "timer run failed; it runs again at its next scheduled time");
        return Ok(());
    }
}

/// Calls the function once in a span, then flushes its sends; a panic is an error.
async fn call(
    spec: &TimerSpec,
    env: &TimerEnv,
    run: &TimerFn,
    due: i64,
    attempt: u32,
    stats: &TimerStats,
) -> Result<()> {
    let producer = Producer::atomic(env.log.clone());
    let cx = TimerContext {
        name: spec.name.clone(),
        scheduled_ms: due,
        producer: producer.clone(),
        tables: env.tables.clone(),
        requests: env.requests.clone(),
    };
    let span = tracing::info_span!("timer", rill.timer = %spec.name, rill.scheduled_ms = due, rill.attempt = attempt);
    let started = Instant::now();
    let result = std::panic::AssertUnwindSafe(run(cx).instrument(span))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(Error::Shutdown(format!(
                "panicked: {}",
                crate::base::error::panic_message(&panic)
            )))
        });
    // A run's sends commit like an agent's commit step: together (one transaction under
    // exactly-once), and only when the run succeeded.
    let result = match result {
        Ok(()) => producer.flush().await,
        Err(e) => {
            let dropped = producer.discard();
            if dropped > 0 {
                tracing::debug!(timer = %spec.name, dropped, "the failed run's sends are discarded");
            }
            Err(e)
        }
    };
    stats.duration.observe(started.elapsed());
    result
}
