//! rill's windows against Kafka Streams itself. Seeded random streams, one in order and several
//! out of order, go through rill (the test harness: one partition, the virtual clock, an agent
//! per window definition doing `keyed(..)`, the window and `.count()`) and through Kafka Streams
//! 4.1.1 (`rill.bench.kstreams.WindowsDiff` in bench/kstreams: a `TopologyTestDriver` per window,
//! final results only), for tumbling, hopping, sliding and session windows, with grace 0 and
//! grace > 0. Both must emit the same windows (key, bounds in rill's convention, count), each
//! once, and find the same records late. Late means added to no window, on both sides: Kafka
//! Streams' `dropped-records-total` counts every window a record was too late for (printed on
//! a failure, not compared).
//!
//! Each stream ends with records of a sentinel key, left out of the comparison, that move event
//! time past every window's close one second at a time. One far-future record would close every
//! window in rill but not in Kafka Streams: its sliding window store stops returning windows
//! that start `2d + grace` before the latest window start written, so a jump of stream time by
//! about `d` or more hides windows before it emits them (rill's documented difference).
//!
//! Needs `java` (17+) and, when `bench/kstreams/target/rill-bench-kstreams.jar` is missing or
//! older than its sources, `mvn` (`bench/kstreams/build.sh` builds it). Without them the tests
//! say they were skipped, unless `RILL_REQUIRE_KAFKA=1` (CI), where they fail.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rill::prelude::*;
use rill::{AgentSpec, AgentStats, TopicSpec};

const EVENTS: &str = "events";
/// 14 November 2023: epoch-ms times of today's magnitude.
const BASE: i64 = 1_700_000_000_000;
/// The key of the records that close the last windows; sorts after the generated keys.
const SENTINEL: &str = "~sentinel";
/// The sentinel records' spacing: below every window parameter, so no step hides a window.
const SENTINEL_STEP: i64 = 1_000;
const RECORDS: usize = 2_000;
const KEYS: usize = 36;
const GRACE: i64 = 15_000;
/// The longest either side may take on one stream (a bound against hanging, not a timing).
const WAIT: Duration = Duration::from_secs(180);

#[record]
#[derive(Debug, Clone)]
struct Event {
    #[record(key)]
    key: String,
    #[record(timestamp)]
    at: i64,
}

/// A window emitted by rill, as its agent sends it.
#[record]
#[derive(Debug, Clone)]
struct Emitted {
    key: String,
    start: i64,
    end: i64,
    count: u64,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tumbling {
        size: i64,
    },
    Hopping {
        size: i64,
        advance: i64,
    },
    /// Kafka Streams' `SlidingWindows.ofTimeDifference(difference)`.
    Sliding {
        difference: i64,
    },
    Session {
        gap: i64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Def {
    kind: Kind,
    grace: i64,
}

impl Def {
    /// Kafka Streams' parameters, as `WindowsDiff` takes them.
    fn spec(self) -> String {
        let g = self.grace;
        match self.kind {
            Kind::Tumbling { size } => format!("tumbling:{size}:{g}"),
            Kind::Hopping { size, advance } => format!("hopping:{size}:{advance}:{g}"),
            Kind::Sliding { difference } => format!("sliding:{difference}:{g}"),
            Kind::Session { gap } => format!("session:{gap}:{g}"),
        }
    }

    /// The rill agent's name, and its sink's.
    fn name(self) -> String {
        self.spec().replace(':', "-")
    }

    /// How far event time must move past a window's last record to close it, at most.
    fn reach(self) -> i64 {
        let extent = match self.kind {
            Kind::Tumbling { size } | Kind::Hopping { size, .. } => size,
            Kind::Sliding { difference } => difference + 1,
            Kind::Session { gap } => gap + 1,
        };
        extent + self.grace
    }
}

fn ms(n: i64) -> Duration {
    Duration::from_millis(u64::try_from(n).expect("a non-negative duration"))
}

fn agent(def: Def) -> AgentSpec {
    let name = def.name();
    AgentSpec::new(&name, file!())
        .source(TopicSpec::of::<Event>(EVENTS, "the generated stream"))
        .sink(TopicSpec::of::<Emitted>(&name, "the windows emitted"))
        .run(move |mut ctx| async move {
            let keyed = ctx.stream::<Event>()?.keyed(Event::key);
            let grace = ms(def.grace);
            let mut windows = match def.kind {
                Kind::Tumbling { size } => keyed.tumbling(ms(size)).grace(grace).count(),
                Kind::Hopping { size, advance } => {
                    keyed.hopping(ms(size), ms(advance)).grace(grace).count()
                }
                // Kafka Streams' inclusive end: `ofTimeDifference(d)` is `sliding(d + 1 ms)`.
                Kind::Sliding { difference } => {
                    keyed.sliding(ms(difference + 1)).grace(grace).count()
                }
                Kind::Session { gap } => keyed.session(ms(gap)).grace(grace).count(),
            };
            let out = ctx.sink::<Emitted>()?;
            while let Some(w) = windows.next().await {
                let emitted = Emitted {
                    key: w.key,
                    start: w.start,
                    end: w.end,
                    count: w.value,
                };
                out.send(&emitted).await?;
            }
            Ok(())
        })
}

/// A generated stream: (key, event time) in arrival order.
struct Input {
    name: String,
    events: Vec<(String, i64)>,
}

/// `RECORDS` records over `KEYS` keys, event times about 0.5 s apart from `BASE`, on whole
/// seconds when `grid` (then equal times, and records exactly a window apart, are common). Out
/// of order: a record arrives up to 20 s after its event time, and one in fifty 1 to 3 minutes
/// after it.
fn generate(seed: u64, grid: bool, disorder: bool) -> Input {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut at = BASE;
    let mut arrivals = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        at += if grid {
            rng.random_range(0..=1) * 1_000
        } else {
            rng.random_range(0..1_000)
        };
        let key = format!("/p{}", rng.random_range(0..KEYS));
        let delay = match (disorder, rng.random_bool(0.02)) {
            (false, _) => 0,
            (true, false) => rng.random_range(0..=20_000),
            (true, true) => rng.random_range(60_000..=180_000),
        };
        arrivals.push((at + delay, i, key, at));
    }
    arrivals.sort();
    let order = if disorder { "out of order" } else { "in order" };
    let times = if grid { ", whole seconds" } else { "" };
    Input {
        name: format!("seed {seed}, {order}{times}"),
        events: arrivals.into_iter().map(|(_, _, k, at)| (k, at)).collect(),
    }
}

/// The streams every window kind is checked on.
fn inputs() -> Vec<Input> {
    vec![
        generate(1, false, false),
        generate(2, false, true),
        generate(3, false, true),
        generate(4, true, true),
    ]
}

/// The sentinel records that close every window of `defs` after `events`, a step at a time.
fn closing(events: &[(String, i64)], defs: &[Def]) -> Vec<(String, i64)> {
    let last = events.iter().map(|e| e.1).max().unwrap_or(BASE);
    let reach = defs.iter().map(|d| d.reach()).max().unwrap_or(0);
    let steps = reach / SENTINEL_STEP + 2;
    (1..=steps)
        .map(|k| (SENTINEL.to_owned(), last + k * SENTINEL_STEP))
        .collect()
}

/// What one side produced for one window definition.
#[derive(Debug, Default)]
struct Outcome {
    /// (key, start, end, count), as emitted, the sentinel's left out.
    windows: Vec<(String, i64, i64, u64)>,
    late: u64,
    /// Kafka Streams' `dropped-records-total` (it counts windows a record was too late for,
    /// not records), shown for information.
    dropped: Option<u64>,
}

/// Runs the records through rill: an agent per definition on one partition.
async fn run_rill(defs: &[Def], events: &[(String, i64)]) -> rill::Result<Vec<Outcome>> {
    let app = App::new("window_differential")
        .partitions(1)
        .agents(defs.iter().map(|d| agent(*d)))
        .test()
        .await?;
    for (key, at) in events {
        let event = Event {
            key: key.clone(),
            at: *at,
        };
        app.producer().send_to(EVENTS, &event).await?;
    }
    app.producer().flush().await?;
    wait_for_rill(&app, defs, events.len() as u64).await?;
    let mut outcomes = Vec::new();
    for def in defs {
        let windows = app
            .read::<Emitted>(&def.name())?
            .into_iter()
            .filter(|w| w.key != SENTINEL)
            .map(|w| (w.key, w.start, w.end, w.count))
            .collect();
        let stats = app.stats(&def.name()).expect("agent stats");
        let late = AgentStats::get(&stats.late_records);
        outcomes.push(Outcome {
            windows,
            late,
            dropped: None,
        });
    }
    app.stop().await?;
    Ok(outcomes)
}

/// Waits until every agent took every record and sent every window it closed, twice in a row.
async fn wait_for_rill(app: &TestApp, defs: &[Def], records: u64) -> rill::Result<()> {
    let deadline = Instant::now() + WAIT;
    let mut previous = None;
    loop {
        let mut now = Vec::new();
        for def in defs {
            let stats = app.stats(&def.name()).expect("agent stats");
            let taken = AgentStats::get(&stats.records_in);
            let closed = AgentStats::get(&stats.windows_closed);
            now.push((taken, closed, app.count(&def.name())? as u64));
        }
        let done = now
            .iter()
            .all(|&(taken, closed, sent)| taken == records && closed == sent);
        if done && previous.as_ref() == Some(&now) {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "rill did not finish within {WAIT:?}: (records taken, windows closed, sent) per agent {now:?} of {records} records"
        );
        previous = Some(now);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The jar of bench/kstreams, built when missing or stale; `Err` says what is missing.
fn kstreams_jar() -> &'static Result<PathBuf, String> {
    static JAR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    JAR.get_or_init(|| {
        let java = Command::new("java").arg("-version").output();
        if !java.is_ok_and(|o| o.status.success()) {
            return Err("no `java` on the PATH".into());
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/kstreams");
        let built = Command::new("bash")
            .arg(dir.join("build.sh"))
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run bench/kstreams/build.sh: {e}"))?;
        if !built.status.success() {
            return Err(format!(
                "bench/kstreams/build.sh failed: {}",
                String::from_utf8_lossy(&built.stderr).trim()
            ));
        }
        Ok(dir.join("target/rill-bench-kstreams.jar"))
    })
}

/// The jar, or `None` when the test is skipped (it fails instead under `RILL_REQUIRE_KAFKA=1`).
fn jar_or_skip() -> Option<&'static Path> {
    match kstreams_jar() {
        Ok(jar) => Some(jar),
        Err(why) => {
            assert!(
                std::env::var("RILL_REQUIRE_KAFKA").as_deref() != Ok("1"),
                "RILL_REQUIRE_KAFKA=1 but Kafka Streams cannot run: {why}"
            );
            eprintln!("skipped: Kafka Streams cannot run: {why}");
            None
        }
    }
}

/// Starts Kafka Streams on the records in `input` (JSON lines) for every definition.
fn start_kstreams(jar: &Path, input: &Path, defs: &[Def]) -> common::Running {
    let mut java = Command::new("java");
    java.arg("-cp")
        .arg(jar)
        .arg("rill.bench.kstreams.WindowsDiff")
        .arg(input)
        .args(defs.iter().map(|d| d.spec()));
    common::Running::spawn(&mut java, b"")
}

/// Waits (bounded) for Kafka Streams and parses its lines into one outcome per definition.
fn finish_kstreams(java: common::Running, defs: &[Def]) -> Vec<Outcome> {
    let out = java.finish(WAIT);
    let (status, stdout) = (out.status, String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "WindowsDiff failed ({status}): {stderr}");
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let field = |name: &str| v[name].as_i64().expect(name);
        let window = v["window"].as_str().expect("window").to_owned();
        let outcome = outcomes.entry(window).or_default();
        if v.get("late").is_some() {
            outcome.late = field("late") as u64;
            outcome.dropped = Some(field("dropped") as u64);
            continue;
        }
        let key = v["key"].as_str().expect("key").to_owned();
        if key != SENTINEL {
            let window = (key, field("start"), field("end"), field("count") as u64);
            outcome.windows.push(window);
        }
    }
    defs.iter()
        .map(|d| outcomes.remove(&d.spec()).unwrap_or_default())
        .collect()
}

/// How rill's outcome differs from Kafka Streams', readably; `None` when it does not.
fn compare(rill: &Outcome, ks: &Outcome) -> Option<String> {
    type Bounds = (String, i64, i64);
    fn tally(windows: &[(String, i64, i64, u64)]) -> (BTreeMap<Bounds, u64>, Vec<Bounds>) {
        let mut by_bounds = BTreeMap::new();
        let mut twice = Vec::new();
        for (key, start, end, count) in windows {
            let bounds = (key.clone(), *start, *end);
            if by_bounds.insert(bounds.clone(), *count).is_some() {
                twice.push(bounds);
            }
        }
        (by_bounds, twice)
    }
    let show = |(key, start, end): &Bounds| format!("{key} [{start}, {end})");
    let (ours, ours_twice) = tally(&rill.windows);
    let (theirs, theirs_twice) = tally(&ks.windows);
    let mut lines = Vec::new();
    for (bounds, count) in &ours {
        match theirs.get(bounds) {
            Some(c) if c == count => {}
            Some(c) => lines.push(format!(
                "  {}: rill {count}, Kafka Streams {c}",
                show(bounds)
            )),
            None => lines.push(format!(
                "  {}: rill {count}, Kafka Streams none",
                show(bounds)
            )),
        }
    }
    for (bounds, count) in &theirs {
        if !ours.contains_key(bounds) {
            lines.push(format!(
                "  {}: rill none, Kafka Streams {count}",
                show(bounds)
            ));
        }
    }
    let differing = lines.len();
    lines.sort();
    lines.truncate(12);
    for (who, twice) in [("rill", &ours_twice), ("Kafka Streams", &theirs_twice)] {
        for bounds in twice.iter().take(5) {
            lines.push(format!("  {} emitted twice by {who}", show(bounds)));
        }
    }
    if lines.is_empty() && rill.late == ks.late {
        return None;
    }
    let dropped = ks.dropped.map_or(String::new(), |d| {
        format!(" (its dropped-records-total: {d})")
    });
    let head = format!(
        "  {} windows from rill, {} from Kafka Streams, {differing} differing (the first below); late records: rill {}, Kafka Streams {}{dropped}",
        rill.windows.len(),
        ks.windows.len(),
        rill.late,
        ks.late
    );
    lines.insert(0, head);
    Some(lines.join("\n"))
}

/// Checks `kind`, with grace 0 and with grace, on every input against Kafka Streams.
async fn check(kind: Kind) -> rill::Result<()> {
    let Some(jar) = jar_or_skip() else {
        return Ok(());
    };
    let defs = [Def { kind, grace: 0 }, Def { kind, grace: GRACE }];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    for input in inputs() {
        let mut events = input.events;
        events.extend(closing(&events, &defs));
        let path = dir.path().join("input.jsonl");
        let mut lines = String::new();
        for (key, at) in &events {
            lines.push_str(&format!(
                "{}\n",
                serde_json::json!({"key": key, "time": at})
            ));
        }
        std::fs::write(&path, lines).expect("write the input");
        let java = start_kstreams(jar, &path, &defs);
        let ours = run_rill(&defs, &events).await?;
        let theirs = finish_kstreams(java, &defs);
        for ((def, ours), theirs) in defs.iter().zip(&ours).zip(&theirs) {
            assert!(
                !theirs.windows.is_empty(),
                "Kafka Streams emitted no windows for {}",
                def.spec()
            );
            if let Some(diff) = compare(ours, theirs) {
                failures.push(format!("{} on {}:\n{diff}", def.spec(), input.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "rill differs from Kafka Streams in {} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn tumbling_windows_match_kafka_streams() -> rill::Result<()> {
    check(Kind::Tumbling { size: 30_000 }).await
}

#[tokio::test]
async fn hopping_windows_match_kafka_streams() -> rill::Result<()> {
    check(Kind::Hopping {
        size: 30_000,
        advance: 10_000,
    })
    .await
}

#[tokio::test]
async fn sliding_windows_match_kafka_streams() -> rill::Result<()> {
    check(Kind::Sliding { difference: 30_000 }).await
}

#[tokio::test]
async fn session_windows_match_kafka_streams() -> rill::Result<()> {
    check(Kind::Session { gap: 20_000 }).await
}
