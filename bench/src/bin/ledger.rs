//! Ledger benchmark (issue 7): throughput of the `exactly_once_transfers` pipeline under
//! exactly-once against at-least-once, in one invocation on one Kafka broker. Run by hand, in
//! release mode:
//!
//! ```text
//! cargo run --release -p rill-bench --bin ledger -- --broker kafka://127.0.0.1:19592
//! cargo run --release -p rill-bench --bin ledger -- --broker kafka://127.0.0.1:19592 --transfers 50000 --rounds 1
//! ```
//!
//! The pipeline is the example's: `split_transfers` turns each `Transfer` into two
//! `LedgerEntry` records (sink topic, keyed by account), `apply_entries` reads them with
//! `take(50, 2s)`, adds each amount to the account's balance in the table `balances` and calls
//! `commit()` after every batch. Both agents run in one worker, commit interval 100 ms.
//!
//! `--transfers` transfers between `--accounts` accounts are written once, with plain sends
//! through rill's `Producer`, to a topic named after the invocation (`ledger-<unix time>`).
//! Two warm-up runs (one per guarantee, `--warmup` transfers on a topic of their own) come
//! first, since a fresh broker's first transactions are slow (JIT); they are shown but not
//! counted. Then, for `--rounds` rounds, a worker runs the pipeline under each guarantee
//! (at-least-once first in odd rounds, exactly-once first in even ones, to cancel drift), each
//! run with a fresh app id (`<invocation>-r<round>-<alo|eos>`), hence fresh consumer groups, a
//! fresh `ledger_entries` topic, a fresh `balances` changelog and a fresh data directory: no
//! broker restart between runs, every run reads the same transfers.
//!
//! A run is done when `apply_entries` has committed the batch that makes its committed
//! entries reach twice the transfers. The balances it wrote (the values `update` returned,
//! kept once their batch committed) and, with one instance, the whole `balances` table read
//! right after that commit (the instance owns every partition) must sum to 0 and equal the
//! balances computed while writing the transfers; the benchmark fails otherwise. Throughput
//! is transfers per second from the first transfer read to that point (worker start-up, group
//! joins and, under exactly-once, `init_transactions` are reported apart), and from the
//! worker's start.
//!
//! Profiling switches (not the example's pipeline): `--batch`, `--apply-concurrency`, and
//! `--no-batch-commit` (batches are committed by the commit step every commit interval; the
//! run is done at the last commit step after every entry was applied).
//!
//! Progress goes to stderr through `tracing` (`RUST_LOG` overrides the filter); a Markdown
//! table of the runs, medians and the exactly-once / at-least-once ratio, then one JSON line,
//! go to stdout.
#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its results on the terminal"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use rill::prelude::*;
use rill::{AgentSpec, AgentStats, ProcessingGuarantee, TopicSpec};

#[derive(Clone, Parser)]
struct Args {
    /// Kafka broker URL (exactly-once needs Kafka).
    #[arg(long)]
    broker: String,
    /// Transfers to write and process per run.
    #[arg(long, default_value_t = 200_000)]
    transfers: u64,
    /// Distinct accounts.
    #[arg(long, default_value_t = 1_000)]
    accounts: u64,
    /// Rounds; each runs the pipeline once per guarantee.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Commit interval of the worker, in ms.
    #[arg(long, default_value_t = 100)]
    commit_interval_ms: u64,
    /// Batch size of `apply_entries` (`take(n, ..)`).
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Batch time limit of `apply_entries` (`take(.., within)`), in ms.
    #[arg(long, default_value_t = 2_000)]
    within_ms: u64,
    /// A run fails when nothing moves for this long, in seconds.
    #[arg(long, default_value_t = 120)]
    stall_secs: u64,
    /// Transfers of the warm-up runs (one per guarantee, on a topic of their own, not
    /// reported); 0 for none.
    #[arg(long, default_value_t = 10_000)]
    warmup: u64,
    /// Instances of `apply_entries` (profiling; the example has 1).
    #[arg(long, default_value_t = 1)]
    apply_concurrency: usize,
    /// Profiling: `apply_entries` does not call `commit()` after each batch, so its batches
    /// are committed by the commit step every commit interval (the example commits each batch).
    #[arg(long)]
    no_batch_commit: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guarantee {
    AtLeastOnce,
    ExactlyOnce,
}

impl Guarantee {
    fn short(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "alo",
            Guarantee::ExactlyOnce => "eos",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at_least_once",
            Guarantee::ExactlyOnce => "exactly_once",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::ExactlyOnce => "exactly-once",
        }
    }

    fn rill(self) -> ProcessingGuarantee {
        match self {
            Guarantee::AtLeastOnce => ProcessingGuarantee::AtLeastOnce,
            Guarantee::ExactlyOnce => ProcessingGuarantee::ExactlyOnce,
        }
    }
}

/// Money moving between two accounts, in cents.
#[record]
struct Transfer {
    #[record(key)]
    id: u64,
    from: String,
    to: String,
    amount: i64,
}

/// One side of a transfer, keyed by account.
#[record]
struct LedgerEntry {
    transfer_id: u64,
    #[record(key)]
    account: String,
    amount: i64,
}

/// The example's transfer `id`, over `accounts` accounts.
fn transfer(id: u64, accounts: u64) -> Transfer {
    Transfer {
        id,
        from: format!("account-{}", id % accounts),
        to: format!("account-{}", (id * 7 + 3) % accounts),
        amount: 100 + (id * 37 % 900) as i64,
    }
}

/// What `apply_entries` reports to the benchmark.
#[derive(Default)]
struct Applied {
    /// Entries of batches done: applied and, with batch commits, committed.
    entries: AtomicU64,
    /// Batches done.
    batches: AtomicU64,
    /// Time spent in `Batches::commit`, ns.
    commit_ns: AtomicU64,
    /// Largest `Batches::commit`, ns.
    commit_max_ns: AtomicU64,
    /// Time spent waiting in `Batches::next`, ns.
    wait_ns: AtomicU64,
    /// Set once every entry is applied (and, with batch commits, committed).
    done: AtomicBool,
    /// The whole table, read by the instance that applied the last entry, when it owns every
    /// partition (`--apply-concurrency 1`).
    table: Mutex<Option<Vec<(String, i64)>>>,
    /// Every account's balance as last written by the agent (after the batch's commit when
    /// it commits batches).
    written: Mutex<BTreeMap<String, i64>>,
}

fn split_transfers(transfers: &str, entries: &str) -> AgentSpec {
    AgentSpec::new("split_transfers", "bench")
        .source(TopicSpec::of::<Transfer>(transfers, "bench"))
        .sink(TopicSpec::of::<LedgerEntry>(entries, "bench"))
        .run(|mut ctx| async move {
            let mut transfers = ctx.stream::<Transfer>()?;
            let entries = ctx.sink::<LedgerEntry>()?;
            while let Some(t) = transfers.next().await {
                entries
                    .send(&LedgerEntry {
                        transfer_id: t.id,
                        account: t.from,
                        amount: -t.amount,
                    })
                    .await?;
                entries
                    .send(&LedgerEntry {
                        transfer_id: t.id,
                        account: t.to,
                        amount: t.amount,
                    })
                    .await?;
            }
            Ok(())
        })
}

fn apply_entries(args: &Args, entries: &str, applied: Arc<Applied>) -> AgentSpec {
    let target = args.transfers * 2;
    let (n, within) = (args.batch, Duration::from_millis(args.within_ms));
    let commit_batches = !args.no_batch_commit;
    let whole_table = args.apply_concurrency == 1;
    AgentSpec::new("apply_entries", "bench")
        .source(TopicSpec::of::<LedgerEntry>(entries, "bench"))
        .table("balances")
        .concurrency(args.apply_concurrency)
        .run(move |mut ctx| {
            let applied = applied.clone();
            async move {
                let entries = ctx.stream::<LedgerEntry>()?;
                let balances: Table<String, i64> = ctx.table("balances")?;
                let mut batches = entries.take(n, within);
                let mut written = Vec::with_capacity(n);
                loop {
                    let waiting = Instant::now();
                    let Some(batch) = batches.next().await else {
                        break;
                    };
                    add_ns(&applied.wait_ns, waiting.elapsed());
                    written.clear();
                    for entry in &batch {
                        let balance =
                            balances.update(entry.account.clone(), |b| b + entry.amount)?;
                        written.push((entry.account.clone(), balance));
                    }
                    let len = batch.len() as u64;
                    if commit_batches {
                        let committing = Instant::now();
                        batches.commit().await?;
                        let took = committing.elapsed();
                        add_ns(&applied.commit_ns, took);
                        applied
                            .commit_max_ns
                            .fetch_max(nanos(took), Ordering::Relaxed);
                    }
                    applied.batches.fetch_add(1, Ordering::Relaxed);
                    applied
                        .written
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(written.drain(..));
                    let before = applied.entries.fetch_add(len, Ordering::AcqRel);
                    if before < target && before + len >= target {
                        // Every entry is applied (and committed, with batch commits): the
                        // table as this instance sees it now is what gets committed.
                        if whole_table {
                            let all = balances.iter()?;
                            *applied.table.lock().unwrap_or_else(|p| p.into_inner()) = Some(all);
                        }
                        applied.done.store(true, Ordering::Release);
                    }
                }
                Ok(())
            }
        })
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn add_ns(counter: &AtomicU64, d: Duration) {
    counter.fetch_add(nanos(d), Ordering::Relaxed);
}

fn app(args: &Args, id: &str, dir: &Path, guarantee: Guarantee, agents: Vec<AgentSpec>) -> App {
    App::new(id)
        .broker(&args.broker)
        .agents(agents)
        .data_dir(dir)
        .partitions(args.partitions)
        .commit_interval(Duration::from_millis(args.commit_interval_ms))
        .processing_guarantee(guarantee.rill())
}

/// Writes `count` transfers to a new topic named `<invocation>-<name>`.
async fn preload(args: &Args, invocation: &str, name: &str, count: u64) -> rill::Result<Input> {
    // `Topic` names are `&'static str`: a few per invocation.
    let topic: &'static str = Box::leak(format!("{invocation}-{name}").into_boxed_str());
    tracing::info!(
        transfers = count,
        accounts = args.accounts,
        topic,
        "writing transfers"
    );
    let dir = tempfile::tempdir().map_err(rill::Error::user)?;
    let transfers: Topic<u64, Transfer> = Topic::new(topic).with_partitions(args.partitions);
    let loader = app(
        args,
        &format!("{invocation}-load-{name}"),
        dir.path(),
        Guarantee::AtLeastOnce,
        vec![],
    )
    .topic(&transfers)
    .start()
    .await?;
    let producer = loader.producer();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let started = Instant::now();
    let mut last = Instant::now();
    for id in 0..count {
        let t = transfer(id, args.accounts);
        *expected.entry(t.from.clone()).or_default() -= t.amount;
        *expected.entry(t.to.clone()).or_default() += t.amount;
        producer.send(&transfers, &t).await?;
        if last.elapsed() >= Duration::from_secs(2) {
            tracing::info!(written = id, of = count, "writing transfers");
            last = Instant::now();
        }
    }
    producer.flush().await?;
    drop(producer);
    loader.shutdown().await?;
    tracing::info!(elapsed = ?started.elapsed(), "transfers written");
    Ok(Input {
        topic,
        transfers: count,
        expected,
    })
}

/// The first sample of a Prometheus text line `name{...label...} value`.
fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && l.contains(label)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Transfers written to a topic, and the balances they add up to.
struct Input {
    topic: &'static str,
    transfers: u64,
    expected: BTreeMap<String, i64>,
}

struct Run {
    /// 0 for a warm-up run.
    round: u32,
    guarantee: Guarantee,
    json: serde_json::Value,
    rate: f64,
    rate_from_start: f64,
    startup: Duration,
    process: Duration,
    batches: u64,
    mean_commit_ms: f64,
    commit_share: f64,
    transactions: f64,
}

/// Accounts whose balance is not the expected one (missing, extra or different).
fn wrong(expected: &BTreeMap<String, i64>, got: &BTreeMap<String, i64>) -> usize {
    expected
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .count()
        + got.keys().filter(|k| !expected.contains_key(*k)).count()
}

async fn run(
    args: &Args,
    invocation: &str,
    input: &Input,
    round: u32,
    guarantee: Guarantee,
) -> rill::Result<Run> {
    let tag = if round == 0 {
        "warmup".to_owned()
    } else {
        format!("r{round}")
    };
    let id = format!("{invocation}-{tag}-{}", guarantee.short());
    let entries_topic = format!("{id}-ledger_entries");
    let dir = tempfile::tempdir().map_err(rill::Error::user)?;
    let applied = Arc::new(Applied::default());
    let target = input.transfers;
    let run_args = Args {
        transfers: target,
        ..args.clone()
    };
    let agents = vec![
        split_transfers(input.topic, &entries_topic),
        apply_entries(&run_args, &entries_topic, applied.clone()),
    ];
    tracing::info!(run = %tag, guarantee = guarantee.label(), app = %id, transfers = target, "starting a worker");
    let started = Instant::now();
    let worker = app(args, &id, dir.path(), guarantee, agents)
        .start()
        .await?;
    let split = worker
        .stats("split_transfers")
        .ok_or_else(|| rill::Error::user("no stats for split_transfers"))?;
    let apply = worker
        .stats("apply_entries")
        .ok_or_else(|| rill::Error::user("no stats for apply_entries"))?;
    let started_up = started.elapsed();

    let stall = Duration::from_secs(args.stall_secs);
    // Without batch commits, the last batch is committed by a commit step after the agent
    // applied it: done at the last commit step seen once commits have stopped for this long.
    let quiet = Duration::from_millis(args.commit_interval_ms * 5).max(Duration::from_secs(1));
    let mut first_read: Option<Instant> = None;
    let mut split_read: Option<Duration> = None;
    let mut entries_read: Option<Duration> = None;
    let mut all_applied: Option<(Instant, u64)> = None;
    let mut last_log = Instant::now();
    let mut last_move = Instant::now();
    let mut last_seen = (0, 0, 0);
    let result = loop {
        let seen = (
            AgentStats::get(&split.records_in),
            AgentStats::get(&apply.records_in),
            applied.entries.load(Ordering::Acquire),
        );
        let now = Instant::now();
        if first_read.is_none() && seen.0 > 0 {
            first_read = Some(now);
        }
        let since_first = first_read.map(|t| now - t).unwrap_or_default();
        if split_read.is_none() && seen.0 >= target {
            split_read = Some(since_first);
        }
        if entries_read.is_none() && seen.1 >= target * 2 {
            entries_read = Some(since_first);
        }
        if applied.done.load(Ordering::Acquire) {
            if !args.no_batch_commit {
                break Ok(now);
            }
            let commits = AgentStats::get(&apply.commits);
            match &mut all_applied {
                None => all_applied = Some((now, commits)),
                Some((at, seen_commits)) if *seen_commits != commits => {
                    *at = now;
                    *seen_commits = commits;
                }
                Some((at, _)) if now - *at >= quiet => break Ok(*at),
                Some(_) => {}
            }
        }
        if seen != last_seen {
            last_seen = seen;
            last_move = now;
        } else if now - last_move > stall && all_applied.is_none() {
            break Err(rill::Error::user(format!(
                "{id}: no progress for {stall:?} (transfers read {}, entries read {}, entries done {})",
                seen.0, seen.1, seen.2
            )));
        }
        if now - last_log >= Duration::from_secs(2) {
            let secs = since_first.as_secs_f64().max(1e-9);
            tracing::info!(
                run = %id,
                transfers_read = seen.0,
                entries_read = seen.1,
                entries_done = seen.2,
                of = target * 2,
                rate = (seen.2 as f64 / 2.0 / secs).round(),
                "progress"
            );
            last_log = now;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let metrics = worker.metrics_text();
    let split_commits = AgentStats::get(&split.commits);
    let apply_commits = AgentStats::get(&apply.commits);
    let stopped = worker.shutdown().await;
    let done_at = result?;
    stopped?;
    let total = done_at - started;
    let process = first_read.map(|t| done_at - t).unwrap_or(total);

    // The table must hold exactly the balances the transfers add up to: both as the agent
    // last wrote each account and, with one instance, as the whole table reads at the end.
    let written = std::mem::take(&mut *applied.written.lock().unwrap_or_else(|p| p.into_inner()));
    let table = applied
        .table
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let sum: i64 = written.values().sum();
    let mut bad = wrong(&input.expected, &written);
    let mut table_sum = None;
    if let Some(table) = &table {
        let got: BTreeMap<String, i64> = table.iter().cloned().collect();
        table_sum = Some(got.values().sum::<i64>());
        bad = bad.max(wrong(&input.expected, &got));
    }
    if sum != 0 || table_sum.is_some_and(|s| s != 0) || bad != 0 {
        return Err(rill::Error::user(format!(
            "{id}: the balances sum to {sum} (whole table: {table_sum:?}; expected 0) and {bad} of {} accounts differ from the transfers' balances: money was created or destroyed",
            input.expected.len()
        )));
    }
    let done_entries = applied.entries.load(Ordering::Acquire);
    if done_entries != target * 2 {
        return Err(rill::Error::user(format!(
            "{id}: {done_entries} entries applied, expected {}",
            target * 2
        )));
    }

    let rate = target as f64 / process.as_secs_f64();
    let rate_from_start = target as f64 / total.as_secs_f64();
    let startup = total.saturating_sub(process);
    let batches = applied.batches.load(Ordering::Relaxed);
    let commit_ns = applied.commit_ns.load(Ordering::Relaxed);
    let mean_commit_ms = commit_ns as f64 / 1e6 / batches.max(1) as f64;
    let commit_share =
        commit_ns as f64 / 1e9 / process.as_secs_f64() / args.apply_concurrency as f64;
    let transactions = metric(&metrics, "rill_transactions_total", "outcome=\"committed\"");
    let aborted = metric(&metrics, "rill_transactions_total", "outcome=\"aborted\"");
    let step = |agent: &str| {
        let label = format!("agent=\"{agent}\"");
        let sum = metric(&metrics, "rill_commit_seconds_sum", &label);
        let count = metric(&metrics, "rill_commit_seconds_count", &label);
        (count, if count > 0.0 { sum * 1e3 / count } else { 0.0 })
    };
    let (split_steps, split_step_ms) = step("split_transfers");
    let (apply_steps, apply_step_ms) = step("apply_entries");
    tracing::info!(
        run = %id,
        rate = rate.round(),
        rate_from_start = rate_from_start.round(),
        process = ?process,
        startup = ?startup,
        batches,
        mean_batch_commit_ms = format!("{mean_commit_ms:.2}"),
        transactions,
        accounts = written.len(),
        "done; the balances sum to 0 and match the transfers"
    );
    let ms = |d: Duration| d.as_millis() as u64;
    let json = serde_json::json!({
        "scenario": "ledger",
        "round": round,
        "warmup": round == 0,
        "guarantee": guarantee.name(),
        "app": id,
        "transport": args.broker,
        "transfers": target,
        "accounts": args.accounts,
        "partitions": args.partitions,
        "commit_interval_ms": args.commit_interval_ms,
        "batch": args.batch,
        "within_ms": args.within_ms,
        "batch_commit": !args.no_batch_commit,
        "apply_concurrency": args.apply_concurrency,
        "transfers_per_s": rate.round(),
        "transfers_per_s_from_start": rate_from_start.round(),
        "start_ms": ms(started_up),
        "startup_to_first_read_ms": ms(startup),
        "process_ms": ms(process),
        "transfers_read_ms": split_read.map(ms),
        "entries_read_ms": entries_read.map(ms),
        "batches": batches,
        "batch_commit_mean_ms": (mean_commit_ms * 100.0).round() / 100.0,
        "batch_commit_max_ms": applied.commit_max_ns.load(Ordering::Relaxed) / 1_000_000,
        "batch_commit_share": (commit_share * 1000.0).round() / 1000.0,
        "batch_wait_ms": applied.wait_ns.load(Ordering::Relaxed) / 1_000_000,
        "split_commits": split_commits,
        "apply_commits": apply_commits,
        "split_commit_steps": split_steps,
        "split_commit_step_mean_ms": (split_step_ms * 100.0).round() / 100.0,
        "apply_commit_steps": apply_steps,
        "apply_commit_step_mean_ms": (apply_step_ms * 100.0).round() / 100.0,
        "transactions_committed": transactions,
        "transactions_aborted": aborted,
        "balances_accounts": written.len(),
        "balances_sum": sum,
        "whole_table_checked": table.is_some(),
    });
    Ok(Run {
        round,
        guarantee,
        json,
        rate,
        rate_from_start,
        startup,
        process,
        batches,
        mean_commit_ms,
        commit_share,
        transactions,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// 1234567.8 → "1,234,568".
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn report(args: &Args, runs: &[Run], warmups: &[Run]) -> serde_json::Value {
    println!(
        "| round | guarantee | transfers/s | from start | processing s | start-up s | batches | mean batch commit ms | commit share | transactions |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in warmups.iter().chain(runs) {
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {} | {:.2} | {:.0}% | {} |",
            if r.round == 0 {
                "warm-up".to_owned()
            } else {
                r.round.to_string()
            },
            r.guarantee.label(),
            thousands(r.rate),
            thousands(r.rate_from_start),
            r.process.as_secs_f64(),
            r.startup.as_secs_f64(),
            r.batches,
            r.mean_commit_ms,
            r.commit_share * 100.0,
            if r.guarantee == Guarantee::ExactlyOnce {
                thousands(r.transactions)
            } else {
                "-".into()
            },
        );
    }
    let pick = |g: Guarantee, f: fn(&Run) -> f64| {
        median(runs.iter().filter(|r| r.guarantee == g).map(f).collect())
    };
    let alo = pick(Guarantee::AtLeastOnce, |r| r.rate);
    let eos = pick(Guarantee::ExactlyOnce, |r| r.rate);
    let alo_start = pick(Guarantee::AtLeastOnce, |r| r.rate_from_start);
    let eos_start = pick(Guarantee::ExactlyOnce, |r| r.rate_from_start);
    let ratio = if alo > 0.0 { eos / alo } else { 0.0 };
    let ratio_start = if alo_start > 0.0 {
        eos_start / alo_start
    } else {
        0.0
    };
    println!();
    println!("| guarantee | median transfers/s | median from start |");
    println!("| --- | ---: | ---: |");
    println!(
        "| at-least-once | {} | {} |",
        thousands(alo),
        thousands(alo_start)
    );
    println!(
        "| exactly-once | {} | {} |",
        thousands(eos),
        thousands(eos_start)
    );
    println!();
    println!(
        "exactly-once / at-least-once: {ratio:.2} (from start: {ratio_start:.2}); target at least 0.85 at a {} ms commit interval: {}",
        args.commit_interval_ms,
        if ratio >= 0.85 { "met" } else { "NOT met" }
    );
    serde_json::json!({
        "scenario": "ledger",
        "transport": args.broker,
        "transfers": args.transfers,
        "accounts": args.accounts,
        "rounds": args.rounds,
        "commit_interval_ms": args.commit_interval_ms,
        "batch": args.batch,
        "within_ms": args.within_ms,
        "batch_commit": !args.no_batch_commit,
        "apply_concurrency": args.apply_concurrency,
        "warmup_transfers": args.warmup,
        "median_transfers_per_s": { "at_least_once": alo.round(), "exactly_once": eos.round() },
        "median_transfers_per_s_from_start": { "at_least_once": alo_start.round(), "exactly_once": eos_start.round() },
        "ratio_eos_alo": (ratio * 1000.0).round() / 1000.0,
        "ratio_eos_alo_from_start": (ratio_start * 1000.0).round() / 1000.0,
        "target": 0.85,
        "target_met": ratio >= 0.85,
        "runs": runs.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
        "warmup_runs": warmups.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
    })
}

#[tokio::main]
async fn main() -> rill::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,ledger=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    if args.transfers == 0 || args.accounts < 2 || args.rounds == 0 || args.batch == 0 {
        return Err(rill::Error::user(
            "--transfers, --rounds and --batch must be above 0, --accounts above 1",
        ));
    }
    if !args.broker.starts_with("kafka://") {
        return Err(rill::Error::user(
            "--broker must be a kafka:// URL: exactly-once needs Kafka",
        ));
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(rill::Error::user)?
        .as_secs();
    let invocation = format!("ledger-{stamp}");
    let input = preload(&args, &invocation, "transfers", args.transfers).await?;
    let mut warmups = Vec::new();
    if args.warmup > 0 {
        let warm = preload(&args, &invocation, "warmup-transfers", args.warmup).await?;
        for guarantee in [Guarantee::AtLeastOnce, Guarantee::ExactlyOnce] {
            warmups.push(run(&args, &invocation, &warm, 0, guarantee).await?);
        }
    }

    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        let order = if round % 2 == 1 {
            [Guarantee::AtLeastOnce, Guarantee::ExactlyOnce]
        } else {
            [Guarantee::ExactlyOnce, Guarantee::AtLeastOnce]
        };
        for guarantee in order {
            runs.push(run(&args, &invocation, &input, round, guarantee).await?);
        }
    }
    let summary = report(&args, &runs, &warmups);
    println!();
    println!("{summary}");
    Ok(())
}
