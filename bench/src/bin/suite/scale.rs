//! Scale-out (issue 24, item 5): keyed count and tumbling count with 1, 2 and 4 worker
//! processes of one app on one broker. Run by hand, in release:
//!
//! ```text
//! ./target/release/suite scale --broker kafka://127.0.0.1:19392 --events 1000000
//! ```
//!
//! Every worker is `suite child --progress` (its own process, data directory and consumer,
//! one app id, so Kafka's group spreads the 8 partitions over them). A worker prints a JSON
//! line every 100 ms: the records its agent has read and the largest lag (receive time minus
//! event time) of those it read in those 100 ms; it stops cleanly when its stdin closes.
//!
//! **Throughput** (per scenario and worker count): the workers start together on the
//! preloaded `--events` views; the clock runs from the first record any worker reads until
//! the workers together have read them all. Also reported: the rate after the group became
//! `Stable` with every worker (the start-up rebalances excluded), the workers' CPU time, the
//! machine's busy share of its cores over the run, and the records read more than once. Then
//! the output is checked against the data: the final count of every URL in the table's
//! changelog, or every window emitted (each `(url, start)` once, with its count).
//!
//! **Pauses** (`--no-pauses` skips them): two workers read views produced at `--pause-load`
//! per second with the wall-clock time as event time; after `--warmup` seconds a third worker
//! joins, `--phase` seconds later the first is killed (`SIGKILL`: its partitions move after
//! `--session-timeout-ms`, which the workers' consumers are given). The pause of each event is
//! the largest lag any worker saw after it (a moved partition's records wait until their new
//! owner reads them), beside the lag before the join. The output check after a kill is
//! at-least-once's: no count below the data's (records the killed worker read after its last
//! commit are counted again; how many is reported).
//!
//! Results go to `<out>/scale-kafka.md` and `.json`; progress to stderr.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::ThreadedProducer;
use rdkafka::{Offset, TopicPartitionList};
use rill::AgentStats;
use rill::prelude::*;

use super::{
    ChildArgs, Produced, Sample, TICKS_PER_S, VIEWS, ViewTimes, delete_run_topics, kafka_err,
    metadata_client, now_ms, partition_count, produce_at, sample, truncate_inputs, view,
};

#[derive(Parser, Clone)]
pub(crate) struct ScaleArgs {
    /// The broker (`kafka://host:port`).
    #[arg(long)]
    broker: String,
    /// Views per throughput run (preloaded).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Distinct URLs.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Worker counts of the throughput runs.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    /// Scenarios (keyed-count, tumbling-count).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "keyed-count,tumbling-count"
    )]
    scenarios: Vec<String>,
    /// Views per second produced during the pause runs.
    #[arg(long, default_value_t = 20_000.0)]
    pause_load: f64,
    /// Seconds of the pause runs before the third worker joins.
    #[arg(long, default_value_t = 15)]
    warmup: u64,
    /// Seconds between the join and the kill, and after the kill's session timeout.
    #[arg(long, default_value_t = 25)]
    phase: u64,
    /// `session.timeout.ms` of the pause runs' workers (Kafka's default is 45000).
    #[arg(long, default_value_t = 10_000)]
    session_timeout_ms: u64,
    /// Skip the pause runs.
    #[arg(long)]
    no_pauses: bool,
    /// A run taking longer than this fails (seconds).
    #[arg(long, default_value_t = 600)]
    run_timeout: u64,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

// ---- the worker side (`suite child --progress`) ----

/// Whether this process notes lags (a scale-out worker); the suite's other runs do not.
static NOTING: AtomicBool = AtomicBool::new(false);
/// The largest lag (ms) of the records read since the last progress line.
static MAX_LAG: AtomicI64 = AtomicI64::new(i64::MIN);

pub(crate) fn noting() -> bool {
    NOTING.load(Ordering::Relaxed)
}

/// Notes the lag of a record of event time `view_time` (seconds), in a scale-out worker.
pub(crate) fn note_lag(view_time: f64) {
    if noting() {
        let lag = now_ms() - (view_time * 1000.0) as i64;
        MAX_LAG.fetch_max(lag, Ordering::Relaxed);
    }
}

/// A scale-out worker: runs the scenario's agent until stdin closes (then shuts down cleanly),
/// printing `{"t_ms", "records_in", "max_lag_ms"}` every 100 ms.
pub(crate) async fn worker(app: App, args: &ChildArgs) -> rill::Result<()> {
    NOTING.store(true, Ordering::Relaxed);
    let mut worker = app.agents([super::agent(args)]).start().await?;
    let stats = worker
        .stats("bench")
        .ok_or_else(|| rill::Error::user("no stats"))?;
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = closed_tx.send(());
    });
    let stop = Arc::new(AtomicBool::new(false));
    let reporter = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let lag = MAX_LAG.swap(i64::MIN, Ordering::Relaxed);
                println!(
                    "{}",
                    serde_json::json!({
                        "t_ms": now_ms(),
                        "records_in": AgentStats::get(&stats.records_in),
                        "max_lag_ms": (lag > i64::MIN).then_some(lag),
                    })
                );
            }
        })
    };
    let stopped = tokio::select! {
        _ = closed => None,
        stopped = worker.wait() => Some(stopped),
    };
    stop.store(true, Ordering::Relaxed);
    let _ = reporter.join();
    if let Some(stopped) = stopped {
        return Err(stopped
            .err()
            .unwrap_or_else(|| rill::Error::user("the worker stopped early")));
    }
    worker.shutdown().await
}

// ---- the driver side (`suite scale`) ----

/// What a worker process reported so far.
#[derive(Default)]
struct Progress {
    records_in: u64,
    /// (time, largest lag of the records read in the 100 ms before it), ms.
    lags: Vec<(i64, i64)>,
}

/// One worker process of a run.
struct WorkerProc {
    child: std::process::Child,
    stdin: Option<ChildStdin>,
    progress: Arc<Mutex<Progress>>,
    /// CPU ticks when the run's clock started.
    cpu_at_start: u64,
}

impl WorkerProc {
    fn spawn(
        args: &ScaleArgs,
        scenario: &str,
        prefix: &str,
        index: usize,
        work: &Path,
        session_timeout_ms: Option<u64>,
    ) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.arg("child")
            .args(["--scenario", scenario, "--prefix", prefix, "--progress"])
            .args(["--bootstrap", args.broker.trim_start_matches("kafka://")])
            .args(["--events", &args.events.to_string()])
            .args(["--partitions", &args.partitions.to_string()])
            .args(["--keys", &args.keys.to_string()])
            .arg("--state-dir")
            .arg(work.join(format!("{prefix}-state-{index}")));
        if let Some(ms) = session_timeout_ms {
            cmd.args(["--session-timeout-ms", &ms.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting worker {index}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let progress = Arc::new(Mutex::new(Progress::default()));
        let sink = Arc::clone(&progress);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let Ok(mut p) = sink.lock() else { return };
                if let Some(n) = v["records_in"].as_u64() {
                    p.records_in = n;
                }
                if let (Some(t), Some(lag)) = (v["t_ms"].as_i64(), v["max_lag_ms"].as_i64()) {
                    p.lags.push((t, lag));
                }
            }
        });
        Ok(WorkerProc {
            stdin: child.stdin.take(),
            child,
            progress,
            cpu_at_start: 0,
        })
    }

    fn records_in(&self) -> u64 {
        self.progress.lock().map_or(0, |p| p.records_in)
    }

    fn cpu_ticks(&self) -> u64 {
        sample(self.child.id()).map_or(0, |s: Sample| s.cpu_ticks)
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Closes stdin (a clean shutdown: commit, leave the group) and waits for the exit.
    fn stop(mut self) -> Result<(), String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("a worker exited with {status}")),
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    return Err("a worker did not stop within 60 s".to_owned());
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// Stops every worker (cleanly), keeping the first error.
fn stop_all(workers: Vec<WorkerProc>) -> Result<(), String> {
    let mut result = Ok(());
    for w in workers {
        if let Err(e) = w.stop()
            && result.is_ok()
        {
            result = Err(e);
        }
    }
    result
}

/// The app's consumer group (`<app>-<agent>`).
fn group_of(prefix: &str) -> String {
    format!("{prefix}-bench")
}

/// Whether `group` is `Stable` with `members` members.
fn stable_with(client: &BaseConsumer, group: &str, members: usize) -> bool {
    client
        .fetch_group_list(Some(group), Duration::from_secs(5))
        .is_ok_and(|list| {
            list.groups()
                .iter()
                .any(|g| g.state() == "Stable" && g.members().len() == members)
        })
}

/// Busy and total jiffies of the machine (`/proc/stat`'s first line).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// One throughput run's figures.
#[derive(Debug, Clone, serde::Serialize)]
struct Throughput {
    scenario: String,
    workers: usize,
    events_per_s: f64,
    /// The rate once the group was stable with every worker (`None` when nearly everything
    /// was read before).
    stable_events_per_s: Option<f64>,
    worker_cpu_s: f64,
    /// Machine busy time over the run, in cores.
    busy_cores: f64,
    records_read: u64,
    check: Check,
}

/// The output compared with the data.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Check {
    /// URLs (counts) or windows (tumbling) checked.
    checked: u64,
    /// Outputs equal to the data's.
    exact: u64,
    /// Outputs above the data's (at-least-once redelivery), and by how much in total.
    over: u64,
    over_by: u64,
    /// Outputs below the data's, or missing.
    under: u64,
    /// Windows emitted more than once.
    repeated: u64,
    /// Windows in the data (closed or not; only closed ones are emitted).
    in_data: u64,
}

impl Check {
    fn verdict(&self) -> String {
        if self.checked == 0 {
            "nothing to check".to_owned()
        } else if self.under == 0 && self.over == 0 && self.repeated == 0 {
            format!(
                "exact ({} of {}{})",
                self.exact,
                self.checked,
                self.of_data()
            )
        } else {
            format!(
                "{} exact, {} over (by {}), {} under or missing, {} repeated, of {}{}",
                self.exact,
                self.over,
                self.over_by,
                self.under,
                self.repeated,
                self.checked,
                self.of_data()
            )
        }
    }

    fn of_data(&self) -> String {
        if self.in_data == 0 {
            String::new()
        } else {
            format!("; {} windows in the data", self.in_data)
        }
    }

    fn compare(&mut self, expected: u64, got: u64) {
        self.checked += 1;
        match got.cmp(&expected) {
            std::cmp::Ordering::Equal => self.exact += 1,
            std::cmp::Ordering::Greater => {
                self.over += 1;
                self.over_by += got - expected;
            }
            std::cmp::Ordering::Less => self.under += 1,
        }
    }
}

pub(crate) fn driver(args: &ScaleArgs) -> Result<(), String> {
    let bootstrap = args.broker.trim_start_matches("kafka://").to_owned();
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let stamp = now_ms() / 1000;
    truncate_inputs(&bootstrap)?;
    super::load_data(
        &args.broker,
        args.events,
        args.keys,
        args.partitions,
        work.path(),
    )?;
    let mut throughput = Vec::new();
    for scenario in &args.scenarios {
        for &n in &args.workers {
            let prefix = format!("scale-{stamp}-{scenario}-{n}w");
            eprintln!("[scale] {scenario} with {n} worker(s)");
            let run = throughput_run(args, scenario, n, &prefix, work.path());
            delete_run_topics(&bootstrap, &prefix);
            match run {
                Ok(t) => {
                    eprintln!(
                        "  {:.0} events/s ({} after stable), {:.1} worker CPU s, {:.2} cores busy; {}",
                        t.events_per_s,
                        t.stable_events_per_s
                            .map_or("n/a".to_owned(), |r| format!("{r:.0}")),
                        t.worker_cpu_s,
                        t.busy_cores,
                        t.check.verdict()
                    );
                    throughput.push(t);
                }
                Err(e) => eprintln!("  failed: {e}"),
            }
        }
    }
    let mut pauses = Vec::new();
    if !args.no_pauses {
        for scenario in &args.scenarios {
            let prefix = format!("scale-{stamp}-{scenario}-pause");
            eprintln!("[scale] pauses of {scenario}: 2 workers, a third joins, one is killed");
            let run = pause_run(args, scenario, &prefix, work.path());
            delete_run_topics(&bootstrap, &prefix);
            match run {
                Ok(p) => {
                    eprintln!(
                        "  lag before {} ms; after the join {} ms; after the kill {} ms; {}",
                        p.lag_before_ms,
                        p.join_pause_ms,
                        p.kill_pause_ms,
                        p.check.verdict()
                    );
                    pauses.push(p);
                }
                Err(e) => eprintln!("  failed: {e}"),
            }
        }
    }
    report(args, &throughput, &pauses)
}

/// The workers' records read so far.
fn total_read(workers: &[WorkerProc]) -> u64 {
    workers.iter().map(WorkerProc::records_in).sum()
}

fn throughput_run(
    args: &ScaleArgs,
    scenario: &str,
    n: usize,
    prefix: &str,
    work: &Path,
) -> Result<Throughput, String> {
    let client = metadata_client(args.broker.trim_start_matches("kafka://"))?;
    let mut workers = (0..n)
        .map(|i| WorkerProc::spawn(args, scenario, prefix, i, work, None))
        .collect::<Result<Vec<_>, _>>()?;
    let measured = measure(args, &client, &mut workers, prefix);
    let measured = match measured {
        Ok(m) => m,
        Err(e) => {
            let _ = stop_all(workers);
            return Err(e);
        }
    };
    // Everything read is committed before the workers stop (a clean stop commits anyway).
    let drained = wait_committed(args, prefix, Duration::from_secs(60))
        .and_then(|()| settle(args, scenario, prefix));
    let records_read = total_read(&workers);
    stop_all(workers)?;
    drained?;
    let check = match scenario {
        "keyed-count" => check_counts(args, prefix, &expected_counts(args.events, args.keys))?,
        _ => check_windows(args, prefix, &expected_windows(args.events, args.keys))?,
    };
    Ok(Throughput {
        scenario: scenario.to_owned(),
        workers: n,
        records_read,
        check,
        ..measured
    })
}

/// Runs the clock over a throughput run: from the first record any worker reads until they
/// have read `events` together.
fn measure(
    args: &ScaleArgs,
    client: &BaseConsumer,
    workers: &mut [WorkerProc],
    prefix: &str,
) -> Result<Throughput, String> {
    let n = workers.len();
    let group = group_of(prefix);
    let deadline = Instant::now() + Duration::from_secs(args.run_timeout);
    let mut first: Option<(Instant, (u64, u64))> = None;
    let mut stable: Option<(Instant, u64)> = None;
    let mut last_check = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let read = total_read(workers);
        if read > 0 && first.is_none() {
            for w in workers.iter_mut() {
                w.cpu_at_start = w.cpu_ticks();
            }
            first = Some((Instant::now(), machine_ticks()));
        }
        if stable.is_none() && last_check.elapsed() >= Duration::from_millis(200) {
            last_check = Instant::now();
            if stable_with(client, &group, n) {
                stable = Some((Instant::now(), total_read(workers)));
            }
        }
        if read >= args.events {
            break;
        }
        if workers.iter_mut().any(WorkerProc::exited) {
            return Err("a worker exited".to_owned());
        }
        if Instant::now() > deadline {
            return Err(format!("not done within {} s", args.run_timeout));
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!("  read {read}/{}", args.events);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = Instant::now();
    let (busy_end, total_end) = machine_ticks();
    let cpu: u64 = workers
        .iter()
        .map(|w| w.cpu_ticks().saturating_sub(w.cpu_at_start))
        .sum();
    let (start, (busy_start, total_start)) = first.ok_or("no record read")?;
    let seconds = done.duration_since(start).as_secs_f64().max(1e-9);
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let busy_share = (busy_end - busy_start) as f64 / (total_end - total_start).max(1) as f64;
    // After the group settled with every worker, if most of the data was left to read.
    let stable_rate = stable
        .filter(|(_, read)| *read < args.events / 2)
        .map(|(t, read)| {
            (args.events - read) as f64 / done.duration_since(t).as_secs_f64().max(1e-9)
        });
    Ok(Throughput {
        scenario: String::new(),
        workers: n,
        events_per_s: args.events as f64 / seconds,
        stable_events_per_s: stable_rate,
        worker_cpu_s: cpu as f64 / TICKS_PER_S,
        busy_cores: busy_share * cores,
        records_read: 0,
        check: Check::default(),
    })
}

/// Waits until the group's committed offsets reach the end of every views partition.
fn wait_committed(args: &ScaleArgs, prefix: &str, timeout: Duration) -> Result<(), String> {
    let bootstrap = args.broker.trim_start_matches("kafka://");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group_of(prefix))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(kafka_err("creating an offsets client"))?;
    let partitions = partition_count(&consumer, VIEWS);
    let deadline = Instant::now() + timeout;
    loop {
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(VIEWS, p as i32);
        }
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .map_err(kafka_err("reading committed offsets"))?;
        let behind = (0..partitions).find(|&p| {
            let end = consumer
                .fetch_watermarks(VIEWS, p as i32, Duration::from_secs(10))
                .map_or(i64::MAX, |(_, high)| high);
            let at = committed
                .find_partition(VIEWS, p as i32)
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(-1);
            at < end
        });
        match behind {
            None => return Ok(()),
            Some(p) if Instant::now() > deadline => {
                return Err(format!("partition {p} not committed to its end"));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// A record's key and value.
type KeyValue = (Vec<u8>, Vec<u8>);

/// For `tumbling-count`, waits until no window has been emitted for 12 s: a partition that
/// gets no record after a rebalance holds its worker's windows back for the idle timeout
/// (`RILL_IDLE_TIMEOUT_MS`, 10 s; see `ops::window`), so what is emitted right after the last
/// record depends on where partitions moved. Gives up quietly after 90 s.
fn settle(args: &ScaleArgs, scenario: &str, prefix: &str) -> Result<(), String> {
    if scenario != "tumbling-count" {
        return Ok(());
    }
    let client = metadata_client(args.broker.trim_start_matches("kafka://"))?;
    let topic = format!("{prefix}-out");
    let emitted = || -> i64 {
        (0..partition_count(&client, &topic) as i32)
            .filter_map(|p| {
                client
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .ok()
            })
            .map(|(_, high)| high)
            .sum()
    };
    let (started, mut last, mut since) = (Instant::now(), emitted(), Instant::now());
    while since.elapsed() < Duration::from_secs(12) && started.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_millis(500));
        let now = emitted();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    Ok(())
}

/// Every record of `topic`, from the beginning to its high watermark when the call started
/// (`read_committed`; a partition whose last offsets are transaction markers ends after 5 s
/// without records).
fn read_topic(args: &ScaleArgs, topic: &str) -> Result<Vec<KeyValue>, String> {
    let bootstrap = args.broker.trim_start_matches("kafka://");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("scale-check-{topic}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(kafka_err("creating the check's consumer"))?;
    let partitions = partition_count(&consumer, topic);
    if partitions == 0 {
        return Err(format!("no topic {topic}"));
    }
    let mut list = TopicPartitionList::new();
    // Offsets still to read to, per partition.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for p in 0..partitions as i32 {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(kafka_err("reading watermarks"))?;
        if high > low {
            ends.insert(p, high);
        }
        list.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(kafka_err("assigning"))?;
    }
    consumer.assign(&list).map_err(kafka_err("assigning"))?;
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_record = Instant::now();
    while !ends.is_empty() && last_record.elapsed() < Duration::from_secs(5) {
        if Instant::now() > deadline {
            return Err(format!("{topic} not read to its end within 120 s"));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_record = Instant::now();
                if ends
                    .get(&m.partition())
                    .is_some_and(|end| m.offset() + 1 >= *end)
                {
                    ends.remove(&m.partition());
                }
                records.push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
            }
            Some(Err(e)) => return Err(format!("reading {topic}: {e}")),
            None => {}
        }
    }
    Ok(records)
}

/// Views per URL of the preloaded data.
fn expected_counts(events: u64, keys: u64) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for i in 0..events {
        *counts.entry(view(i, keys).url).or_insert(0) += 1;
    }
    counts
}

/// Views per (URL, minute) of the preloaded data.
fn expected_windows(events: u64, keys: u64) -> HashMap<(String, i64), u64> {
    let mut windows = HashMap::new();
    for i in 0..events {
        let v = view(i, keys);
        let t = (v.view_time * 1000.0).round() as i64;
        *windows
            .entry((v.url, t.div_euclid(60_000) * 60_000))
            .or_insert(0) += 1;
    }
    windows
}

/// The table's final count of every URL (its changelog's last record per key) against the
/// data's.
fn check_counts(
    args: &ScaleArgs,
    prefix: &str,
    expected: &HashMap<String, u64>,
) -> Result<Check, String> {
    let mut last: HashMap<String, u64> = HashMap::new();
    for (k, v) in read_topic(args, &format!("{prefix}-bench_counts-changelog"))? {
        if let Some((url, n)) = super::decode_count(&k, &v) {
            last.insert(url.into_owned(), n);
        }
    }
    let mut check = Check::default();
    for (url, n) in expected {
        check.compare(*n, last.get(url).copied().unwrap_or(0));
    }
    Ok(check)
}

/// Every window emitted, against the data's count of its URL and minute: each once, equal.
fn check_windows(
    args: &ScaleArgs,
    prefix: &str,
    expected: &HashMap<(String, i64), u64>,
) -> Result<Check, String> {
    let mut seen: HashMap<(String, i64), u64> = HashMap::new();
    let mut check = Check {
        in_data: expected.len() as u64,
        ..Check::default()
    };
    for (_, v) in read_topic(args, &format!("{prefix}-out"))? {
        let out: serde_json::Value = serde_json::from_slice(&v).map_err(|e| e.to_string())?;
        let url = out["url"].as_str().unwrap_or_default().to_owned();
        let start = out["start"].as_i64().unwrap_or_default();
        let count = out["count"].as_u64().unwrap_or_default();
        if seen.insert((url.clone(), start), count).is_some() {
            check.repeated += 1;
        }
        check.compare(expected.get(&(url, start)).copied().unwrap_or(0), count);
    }
    Ok(check)
}

/// One pause run's figures (ms).
#[derive(Debug, Clone, serde::Serialize)]
struct Pauses {
    scenario: String,
    load: f64,
    session_timeout_ms: u64,
    /// The median of the workers' largest lags per 100 ms before the join.
    lag_before_ms: i64,
    join_pause_ms: i64,
    kill_pause_ms: i64,
    check: Check,
}

fn pause_run(
    args: &ScaleArgs,
    scenario: &str,
    prefix: &str,
    work: &Path,
) -> Result<Pauses, String> {
    let bootstrap = args.broker.trim_start_matches("kafka://").to_owned();
    truncate_inputs(&bootstrap)?;
    let timeout = Some(args.session_timeout_ms);
    let mut workers = (0..2)
        .map(|i| WorkerProc::spawn(args, scenario, prefix, i, work, timeout))
        .collect::<Result<Vec<_>, _>>()?;
    let client = metadata_client(&bootstrap)?;
    let ready = Instant::now();
    while !stable_with(&client, &group_of(prefix), 2) {
        if ready.elapsed() > Duration::from_secs(90) {
            let _ = stop_all(workers);
            return Err("the two workers' group not stable within 90 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let produced = Arc::new(ViewTimes::new(pause_views(args), args.keys));
    let producer = spawn_producer(args, &produced);
    let start = Instant::now();
    let at = |s: u64| start + Duration::from_secs(s);
    sleep_until(at(args.warmup));
    let t_join = now_ms();
    workers.push(WorkerProc::spawn(args, scenario, prefix, 2, work, timeout)?);
    sleep_until(at(args.warmup + args.phase));
    let t_kill = now_ms();
    let killed = workers.remove(0);
    kill(killed);
    let produced_ok = producer
        .join()
        .map_err(|_| "the producer panicked".to_owned())
        .and_then(|r| r);
    let drained = wait_committed(args, prefix, Duration::from_secs(120))
        .and_then(|()| settle(args, scenario, prefix));
    let lags: Vec<(i64, i64)> = workers
        .iter()
        .flat_map(|w| {
            w.progress
                .lock()
                .map(|p| p.lags.clone())
                .unwrap_or_default()
        })
        .collect();
    stop_all(workers)?;
    produced_ok?;
    drained?;
    let expected = produced_counts(&produced, args.keys, scenario == "keyed-count");
    let check = match expected {
        Expected::Counts(c) => check_counts(args, prefix, &c)?,
        Expected::Windows(w) => check_windows(args, prefix, &w)?,
    };
    let in_period = |from: i64, to: i64| {
        let mut in_it: Vec<i64> = lags
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .map(|(_, l)| *l)
            .collect();
        in_it.sort_unstable();
        in_it
    };
    let before = in_period(t_join - 10_000, t_join);
    Ok(Pauses {
        scenario: scenario.to_owned(),
        load: args.pause_load,
        session_timeout_ms: args.session_timeout_ms,
        lag_before_ms: before.get(before.len() / 2).copied().unwrap_or(0),
        join_pause_ms: in_period(t_join, t_kill).last().copied().unwrap_or(0),
        kill_pause_ms: in_period(t_kill, i64::MAX).last().copied().unwrap_or(0),
        check,
    })
}

/// How many views a pause run produces.
fn pause_views(args: &ScaleArgs) -> u64 {
    let seconds = args.warmup + 2 * args.phase + args.session_timeout_ms / 1000;
    (args.pause_load * seconds as f64) as u64
}

/// Produces the pause run's views at `--pause-load` per second, noting when.
fn spawn_producer(
    args: &ScaleArgs,
    produced: &Produced,
) -> std::thread::JoinHandle<Result<(), String>> {
    let views = pause_views(args);
    let (produced, rate, keys) = (Arc::clone(produced), args.pause_load, args.keys);
    let bootstrap = args.broker.trim_start_matches("kafka://").to_owned();
    std::thread::spawn(move || -> Result<(), String> {
        // Its deliveries are not timed: it produces no measured period.
        let producer: ThreadedProducer<super::DeliveryClock> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create_with_context(super::DeliveryClock::default())
            .map_err(kafka_err("creating the producer"))?;
        let received = AtomicU64::new(0);
        produce_at(
            &producer,
            rate,
            views,
            keys,
            false,
            Some(&produced),
            (0, 0),
            Instant::now(),
            &received,
        )
        .map(|_| ())
    })
}

fn sleep_until(t: Instant) {
    std::thread::sleep(t.saturating_duration_since(Instant::now()));
}

/// Kills a worker (`SIGKILL`: no commit, no leaving the group).
fn kill(mut w: WorkerProc) {
    let _ = w.child.kill();
    let _ = w.child.wait();
}

enum Expected {
    Counts(HashMap<String, u64>),
    Windows(HashMap<(String, i64), u64>),
}

/// The data a pause run produced, per URL or per (URL, minute).
fn produced_counts(produced: &Produced, keys: u64, counts: bool) -> Expected {
    let views = produced.iter().map(|(i, t)| (super::view(i, keys).url, t));
    if counts {
        let mut per_url = HashMap::new();
        for (url, _) in views {
            *per_url.entry(url).or_insert(0) += 1;
        }
        return Expected::Counts(per_url);
    }
    let mut windows = HashMap::new();
    for (url, t) in views {
        *windows
            .entry((url, t.div_euclid(60_000) * 60_000))
            .or_insert(0) += 1;
    }
    Expected::Windows(windows)
}

fn report(args: &ScaleArgs, throughput: &[Throughput], pauses: &[Pauses]) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut md = format!(
        "# Scale-out on Kafka\n\n`suite scale --broker {} --events {}` ({} partitions, {} URLs, {cores} cores, one run each)\n\n",
        args.broker, args.events, args.partitions, args.keys
    );
    md.push_str("| scenario | workers | events/s | after stable | worker CPU s | events per worker CPU s | machine busy (cores) | records read | output |\n");
    md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for t in throughput {
        md.push_str(&format!(
            "| {} | {} | {:.0} | {} | {:.1} | {:.0} | {:.2} | {} | {} |\n",
            t.scenario,
            t.workers,
            t.events_per_s,
            t.stable_events_per_s
                .map_or("n/a".to_owned(), |r| format!("{r:.0}")),
            t.worker_cpu_s,
            args.events as f64 / t.worker_cpu_s.max(1e-9),
            t.busy_cores,
            t.records_read,
            t.check.verdict()
        ));
    }
    if !pauses.is_empty() {
        md.push_str("\n| scenario | views/s | session.timeout.ms | lag before (median) | largest lag after the join | largest lag after the kill | output |\n");
        md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | --- |\n");
        for p in pauses {
            md.push_str(&format!(
                "| {} | {:.0} | {} | {} ms | {} ms | {} ms | {} |\n",
                p.scenario,
                p.load,
                p.session_timeout_ms,
                p.lag_before_ms,
                p.join_pause_ms,
                p.kill_pause_ms,
                p.check.verdict()
            ));
        }
    }
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    let md_path = args.out.join("scale-kafka.md");
    std::fs::write(&md_path, &md).map_err(|e| e.to_string())?;
    let json = serde_json::json!({ "throughput": throughput, "pauses": pauses });
    let json_path = args.out.join("scale-kafka.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    eprintln!("{md}");
    eprintln!("wrote {} and {}", md_path.display(), json_path.display());
    Ok(())
}
