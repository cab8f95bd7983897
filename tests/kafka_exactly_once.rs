//! Exactly-once on real Apache Kafka brokers (one per test), with the `exactly_once_transfers`
//! example as the worker: transfers are split into two ledger entries each (`ledger_entries`,
//! written in the worker's transactions) and summed per account into the table `balances`.
//!
//! - a worker SIGKILLed at random moments (some right after a batch commit) and restarted
//!   while transfers keep coming: `read_committed` readers see every entry exactly once and
//!   the balances equal the hand-computed ones;
//! - two workers through rebalances (one of them killed and restarted): the same, with the
//!   balances read through the web servers (a 307 leads to the key's owner);
//! - a worker fenced by a second one with the same `transactional.id`: the records of its
//!   aborted transaction stay invisible to `read_committed` readers, and it stops with an
//!   error.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http;
use rand::Rng;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};

const EXAMPLE: &str = "exactly_once_transfers";
const PARTITIONS: i32 = 4;
const ACCOUNTS: u64 = 50;
const SPLIT_GROUP: &str = "financial_processor-split_transfers";
const APPLY_GROUP: &str = "financial_processor-apply_entries";

/// A transfer the test produced: (id, from, to, amount).
type Transfer = (u64, String, String, i64);

fn account(i: u64) -> String {
    format!("acct-{i:02}")
}

/// Transfers with ids in `ids`, between random distinct accounts, random amounts.
fn transfers(ids: std::ops::Range<u64>) -> Vec<Transfer> {
    let mut rng = rand::rng();
    ids.map(|id| {
        let from = rng.random_range(0..ACCOUNTS);
        let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
        (id, account(from), account(to), rng.random_range(1..=1_000))
    })
    .collect()
}

fn produce(producer: &ThreadedProducer<DefaultProducerContext>, batch: &[Transfer]) {
    let items: Vec<(Option<String>, String)> = batch
        .iter()
        .map(|(id, from, to, amount)| {
            let value = serde_json::json!({"id": id, "from": from, "to": to, "amount": amount});
            (Some(id.to_string()), value.to_string())
        })
        .collect();
    common::produce(producer, "transfers", &items);
}

fn expected_balances(all: &[Transfer]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (_, from, to, amount) in all {
        *out.entry(from.clone()).or_default() -= amount;
        *out.entry(to.clone()).or_default() += amount;
    }
    out
}

/// A ledger entry as read back: (partition, offset, transfer_id, account, amount).
type Entry = (i32, i64, u64, String, i64);

/// The ledger entries of `ledger_entries` as seen with the isolation level.
fn read_topic(bootstrap: &str, topic: &str, isolation: &str) -> Vec<Entry> {
    common::read_to_end(bootstrap, topic, isolation)
        .into_iter()
        .map(|r| {
            let v: serde_json::Value =
                serde_json::from_slice(r.value.as_deref().unwrap_or_default()).expect("entry json");
            (
                r.partition,
                r.offset,
                v["transfer_id"].as_u64().expect("transfer_id"),
                v["account"].as_str().expect("account").to_owned(),
                v["amount"].as_i64().expect("amount"),
            )
        })
        .collect()
}

/// The last value per account in the changelog of `balances` (diagnostics).
fn changelog_balances(bootstrap: &str, isolation: &str) -> BTreeMap<String, i64> {
    common::read_to_end(
        bootstrap,
        "financial_processor-balances-changelog",
        isolation,
    )
    .into_iter()
    .filter_map(|r| {
        let key: String = serde_json::from_str(&r.key_text()?).ok()?;
        Some((key, serde_json::from_slice(r.value.as_deref()?).ok()?))
    })
    .collect()
}

/// A temporary directory, kept when `RILL_TEST_KEEP` is set (for the logs).
fn workdir() -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new()
        .prefix("rill-eos-")
        .tempdir()
        .expect("tempdir");
    if std::env::var_os("RILL_TEST_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    dir
}

/// Compares balances, with the changelog's view of them when they differ.
fn check_balances(bootstrap: &str, got: &BTreeMap<String, i64>, want: &BTreeMap<String, i64>) {
    if got != want {
        if let Some(dir) = std::env::var_os("RILL_TEST_KEEP") {
            // Both topics as JSON lines, for a closer look.
            for (topic, isolation) in [
                ("ledger_entries", "read_committed"),
                ("financial_processor-balances-changelog", "read_committed"),
                ("financial_processor-balances-changelog", "read_uncommitted"),
            ] {
                let lines: Vec<String> = common::read_to_end(bootstrap, topic, isolation)
                    .iter()
                    .map(|r| {
                        serde_json::json!([r.partition, r.offset, r.key_text(), r.text()])
                            .to_string()
                    })
                    .collect();
                let path = Path::new(&dir).join(format!("{topic}.{isolation}.jsonl"));
                std::fs::write(&path, lines.join("\n")).expect("dump");
                eprintln!("wrote {}", path.display());
            }
        }
        let committed = changelog_balances(bootstrap, "read_committed");
        let uncommitted = changelog_balances(bootstrap, "read_uncommitted");
        let compare: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .map(|(k, v)| {
                (
                    k,
                    *v,
                    got.get(k).copied(),
                    committed.get(k).copied(),
                    uncommitted.get(k).copied(),
                )
            })
            .collect();
        eprintln!(
            "balances differ (account, expected, got, changelog read_committed, read_uncommitted): {compare:?}; \
             the changelog (read_committed) is right for {} of {} accounts",
            want.iter()
                .filter(|(k, v)| committed.get(*k) == Some(v))
                .count(),
            want.len()
        );
    }
    assert_balances(got, want);
}

/// Checks that `entries` hold exactly the two entries of every transfer, once each.
fn assert_exactly_once(entries: &[Entry], all: &[Transfer]) {
    let mut seen: HashMap<(u64, String, bool), usize> = HashMap::new();
    for (_, _, id, account, amount) in entries {
        *seen.entry((*id, account.clone(), *amount < 0)).or_default() += 1;
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let by_id: HashMap<u64, &Transfer> = all.iter().map(|t| (t.0, t)).collect();
    let mut missing = Vec::new();
    for (id, from, to, amount) in all {
        for (account, amount) in [(from, -amount), (to, *amount)] {
            if !seen.contains_key(&(*id, account.clone(), amount < 0)) {
                missing.push((*id, account.clone(), amount));
            }
        }
    }
    let unknown: Vec<_> = seen
        .keys()
        .filter(|(id, account, negative)| {
            by_id.get(id).is_none_or(|(_, from, to, _)| {
                if *negative {
                    from != account
                } else {
                    to != account
                }
            })
        })
        .collect();
    assert!(
        duplicates.is_empty() && missing.is_empty() && unknown.is_empty(),
        "{} entries read_committed for {} transfers: {} duplicated (e.g. {:?}), {} missing (e.g. {:?}), {} unknown (e.g. {:?})",
        entries.len(),
        all.len(),
        duplicates.len(),
        duplicates.iter().take(5).collect::<Vec<_>>(),
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        unknown.len(),
        unknown.iter().take(5).collect::<Vec<_>>(),
    );
    assert_eq!(entries.len(), 2 * all.len());
    for (_, _, id, _, amount) in entries {
        let (_, _, _, a) = by_id[id];
        assert_eq!(amount.abs(), *a, "the amount of transfer {id}");
    }
}

/// Committed offsets of a group per partition (0 when none, or when the coordinator cannot
/// answer yet).
fn committed(bootstrap: &str, group: &str, topic: &str) -> Vec<i64> {
    common::committed_offsets(bootstrap, group, topic, PARTITIONS)
        .unwrap_or_else(|_| vec![0; PARTITIONS as usize])
}

/// Waits until both agents have committed everything: `split_transfers` up to the end of
/// `transfers` (produced without transactions, so its end offsets are records only), and
/// `apply_entries` past the last committed entry of every `ledger_entries` partition. Returns
/// the `read_committed` entries. On a timeout the panic shows the end of the workers' `logs`.
fn wait_caught_up(
    bootstrap: &str,
    expected_transfers: usize,
    timeout: Duration,
    logs: &[&Path],
) -> Vec<Entry> {
    let deadline = Instant::now() + timeout;
    let tails = || {
        logs.iter()
            .map(|l| format!("\n--- {}:\n{}", l.display(), common::log_tail(l)))
            .collect::<String>()
    };
    loop {
        let split: i64 = committed(bootstrap, SPLIT_GROUP, "transfers").iter().sum();
        let end = common::end_offsets(bootstrap, "transfers", PARTITIONS);
        assert_eq!(end, expected_transfers as i64, "transfers produced");
        if split == end {
            let entries = read_topic(bootstrap, "ledger_entries", "read_committed");
            let mut last = vec![-1_i64; PARTITIONS as usize];
            for (p, offset, ..) in &entries {
                let l = &mut last[*p as usize];
                *l = (*l).max(*offset);
            }
            let applied = committed(bootstrap, APPLY_GROUP, "ledger_entries");
            if applied.iter().zip(&last).all(|(c, l)| *c > *l) {
                return entries;
            }
            assert!(
                Instant::now() < deadline,
                "apply_entries did not catch up: committed {applied:?}, last entries {last:?}{}",
                tails()
            );
        } else {
            assert!(
                Instant::now() < deadline,
                "split_transfers did not catch up: committed {split} of {end}{}",
                tails()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The `balances` table of a data dir, through the example's `tables` command.
fn table(data: &str) -> BTreeMap<String, i64> {
    common::table_of(EXAMPLE, data, "balances")
}

fn assert_balances(got: &BTreeMap<String, i64>, want: &BTreeMap<String, i64>) {
    let wrong: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| (k, *v, got.get(k).copied()))
        .collect();
    assert!(
        wrong.is_empty() && got.len() == want.len(),
        "{} of {} balances wrong (account, expected, got): {wrong:?}",
        wrong.len(),
        want.len()
    );
    assert_eq!(got.values().sum::<i64>(), 0, "the balances sum to 0");
}

/// Settings of every worker: 4 partitions, and a killed member leaves its groups after 6 s.
const ENV: [(&str, &str); 4] = [
    ("RILL_PARTITIONS", "4"),
    ("RILL_COMMIT_INTERVAL_MS", "100"),
    ("RILL_KAFKA_SESSION_TIMEOUT_MS", "6000"),
    ("RILL_KAFKA_HEARTBEAT_INTERVAL_MS", "1000"),
];

fn start(
    kafka: &str,
    data: &str,
    log: &Path,
    env: &[(&str, &str)],
    extra: &[&str],
) -> (common::Proc, common::Lines) {
    let mut args = vec!["--broker", kafka, "--data-dir", data];
    args.extend_from_slice(extra);
    let mut all_env = ENV.to_vec();
    all_env.extend_from_slice(env);
    let mut proc = common::spawn_example_logged(EXAMPLE, &args, &all_env, log);
    let lines = common::lines(&mut proc);
    (proc, lines)
}

fn commits(lines: &common::Lines) -> usize {
    lines
        .lock()
        .expect("lines")
        .iter()
        .filter(|l| l.starts_with("Committed a batch of "))
        .count()
}

/// Waits up to `timeout` for the worker to print `n` batch commits in all; false if it did not.
fn wait_commits(lines: &common::Lines, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while commits(lines) < n {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn sigkill_at_random_moments_keeps_entries_and_balances_exactly_once() {
    if common::kafka_bootstrap().is_none() {
        return;
    }
    let broker = common::OwnBroker::start(19992);
    let bootstrap = broker.bootstrap.clone();
    let kafka = format!("kafka://{bootstrap}");
    let dir = workdir();
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let producer = common::producer(&bootstrap);
    let mut rng = rand::rng();

    let mut all = Vec::new();
    let (mut worker, mut lines) = start(&kafka, data, &dir.path().join("run-0.log"), &[], &[]);
    common::wait_for_topic(&bootstrap, "transfers", PARTITIONS as usize);
    let first = transfers(0..4_000);
    produce(&producer, &first);
    all.extend(first);

    const KILLS: usize = 12;
    let mut log = dir.path().join("run-0.log");
    for kill in 0..KILLS {
        // Three kinds of moments: right after a batch commit, a random time into processing,
        // a random time after the start (recovery, group join, the first transactions).
        let moment = match kill % 3 {
            0 => {
                let seen = commits(&lines);
                let hit = wait_commits(
                    &lines,
                    seen + 1 + rng.random_range(0..5),
                    Duration::from_secs(60),
                );
                format!("right after a batch commit (reached: {hit})")
            }
            1 => {
                let hit = wait_commits(&lines, 1, Duration::from_secs(60));
                let ms = rng.random_range(300..3_000);
                std::thread::sleep(Duration::from_millis(ms));
                format!("{ms} ms into processing (processing: {hit})")
            }
            _ => {
                let ms = rng.random_range(300..3_000);
                std::thread::sleep(Duration::from_millis(ms));
                format!("{ms} ms after the start")
            }
        };
        assert!(
            worker.try_wait().expect("try_wait").is_none(),
            "the worker exited by itself; log: {}",
            common::log_tail(&log)
        );
        common::signal(&worker, "KILL");
        common::wait_exit(&mut worker, Duration::from_secs(10));
        eprintln!(
            "kill {}: {moment}, after {} batch commits",
            kill + 1,
            commits(&lines)
        );
        // More transfers while the worker is down.
        let next = all.len() as u64;
        let more = transfers(next..next + 300);
        produce(&producer, &more);
        all.extend(more);
        log = dir.path().join(format!("run-{}.log", kill + 1));
        (worker, lines) = start(&kafka, data, &log, &[], &[]);
    }

    let entries = wait_caught_up(&bootstrap, all.len(), Duration::from_secs(120), &[&log]);
    let status = common::terminate(&mut worker, Duration::from_secs(60));
    assert!(
        status.success(),
        "SIGTERM: {status}; log: {}",
        common::log_tail(&log)
    );

    assert_exactly_once(&entries, &all);
    let uncommitted = read_topic(&bootstrap, "ledger_entries", "read_uncommitted");
    eprintln!(
        "{KILLS} kills, {} transfers, {} entries read_committed, {} read_uncommitted (the rest were in aborted transactions)",
        all.len(),
        entries.len(),
        uncommitted.len()
    );
    assert!(uncommitted.len() >= entries.len());
    let want = expected_balances(&all);
    check_balances(&bootstrap, &table(data), &want);
}

/// A balance through a worker's web server, following redirects to the owner.
fn web_balance(addr: SocketAddr, account: &str) -> Result<(i64, bool), String> {
    let path = format!("/tables/balances/{account}");
    let get = |addr: SocketAddr| {
        http::try_get(addr, &path, None).map_err(|e| format!("GET {path} from {addr}: {e}"))
    };
    let mut reply = get(addr)?;
    let mut redirected = false;
    for _ in 0..3 {
        if reply.status != 307 {
            break;
        }
        let to = reply
            .header("location")
            .ok_or("a 307 without a Location")?
            .to_owned();
        let owner = http::addr_of(&to).map_err(|e| format!("redirect to {to}: {e}"))?;
        redirected = true;
        reply = get(owner)?;
    }
    let body = &reply.body;
    match reply.status {
        200 => {
            let v: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
            v["value"]
                .as_i64()
                .map(|n| (n, redirected))
                .ok_or_else(|| format!("no value in {body}"))
        }
        // Never written: no entry of this account was applied.
        404 if body.contains("has no value") => Ok((0, redirected)),
        status => Err(format!("{status}: {body}")),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn two_workers_through_rebalances_keep_entries_and_balances_exactly_once() {
    if common::kafka_bootstrap().is_none() {
        return;
    }
    let broker = common::OwnBroker::start(19994);
    let bootstrap = broker.bootstrap.clone();
    let kafka = format!("kafka://{bootstrap}");
    let dir = workdir();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let (data_a, data_b) = (
        data_a.to_str().expect("utf-8"),
        data_b.to_str().expect("utf-8"),
    );
    let (port_a, port_b) = (free_port(), free_port());
    let (port_a_s, port_b_s) = (port_a.to_string(), port_b.to_string());
    let producer = common::producer(&bootstrap);
    let mut rng = rand::rng();

    let log_a = dir.path().join("a.log");
    let (mut a, a_lines) = start(
        &kafka,
        data_a,
        &log_a,
        &[("RILL_WORKER_ID", "a")],
        &["--web-port", &port_a_s],
    );
    common::wait_for_topic(&bootstrap, "transfers", PARTITIONS as usize);
    let mut all = transfers(0..2_000);
    produce(&producer, &all);
    assert!(wait_commits(&a_lines, 1, Duration::from_secs(60)));

    let start_b = |run: usize| {
        start(
            &kafka,
            data_b,
            &dir.path().join(format!("b-{run}.log")),
            &[("RILL_WORKER_ID", "b")],
            &["--web-port", &port_b_s],
        )
    };
    let (mut b, mut b_lines) = start_b(0);
    const B_KILLS: usize = 4;
    let mut b_commits = 0;
    for run in 1..=B_KILLS {
        // Transfers keep coming while B joins, works and dies.
        for _ in 0..4 {
            let next = all.len() as u64;
            let more = transfers(next..next + 250);
            produce(&producer, &more);
            all.extend(more);
            std::thread::sleep(Duration::from_millis(rng.random_range(300..1_500)));
        }
        wait_commits(&b_lines, 1, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(rng.random_range(300..3_000)));
        b_commits += commits(&b_lines);
        assert!(
            b.try_wait().expect("try_wait").is_none(),
            "B exited by itself; log: {}",
            common::log_tail(&dir.path().join(format!("b-{}.log", run - 1)))
        );
        common::signal(&b, "KILL");
        common::wait_exit(&mut b, Duration::from_secs(10));
        eprintln!("B killed ({run}), {b_commits} batch commits by B so far");
        // A takes B's partitions once B's session times out (6 s); B comes back before or
        // after that.
        std::thread::sleep(Duration::from_millis(rng.random_range(500..8_000)));
        (b, b_lines) = start_b(run);
    }
    let next = all.len() as u64;
    let more = transfers(next..next + 1_000);
    produce(&producer, &more);
    all.extend(more);
    assert!(
        a.try_wait().expect("try_wait").is_none(),
        "A exited by itself; log: {}",
        common::log_tail(&log_a)
    );

    let log_b = dir.path().join(format!("b-{B_KILLS}.log"));
    let entries = wait_caught_up(
        &bootstrap,
        all.len(),
        Duration::from_secs(120),
        &[&log_a, &log_b],
    );
    assert_exactly_once(&entries, &all);
    b_commits += commits(&b_lines);
    let a_commits = commits(&a_lines);
    assert!(
        a_commits > 0 && b_commits > 0,
        "both workers applied batches: A {a_commits}, B {b_commits}"
    );

    // Balances through either worker's web server: the owner answers, the other redirects.
    let want = expected_balances(&all);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (addr_a, addr_b) = (
        SocketAddr::from(([127, 0, 0, 1], port_a)),
        SocketAddr::from(([127, 0, 0, 1], port_b)),
    );
    let (got, redirects) = loop {
        let mut got = BTreeMap::new();
        let mut redirects = 0;
        let mut errors = Vec::new();
        for (i, account) in want.keys().enumerate() {
            let addr = if i % 2 == 0 { addr_a } else { addr_b };
            match web_balance(addr, account) {
                Ok((n, redirected)) => {
                    got.insert(account.clone(), n);
                    redirects += usize::from(redirected);
                }
                Err(e) => errors.push((account.clone(), e)),
            }
        }
        if (errors.is_empty() && got == want) || Instant::now() > deadline {
            assert!(errors.is_empty(), "table queries failed: {errors:?}");
            break (got, redirects);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "two workers, {B_KILLS} kills of B, {} transfers, {} entries; A {a_commits} and B {b_commits} batch commits; {redirects} of {} balance queries redirected",
        all.len(),
        entries.len(),
        want.len()
    );
    check_balances(&bootstrap, &got, &want);
    assert!(redirects > 0, "some keys are owned by the other worker");

    for (w, name) in [(&mut b, "B"), (&mut a, "A")] {
        let status = common::terminate(w, Duration::from_secs(60));
        assert!(status.success(), "{name} after SIGTERM: {status}");
    }
}

/// (partition, low, high) offsets of `ledger_entries` as seen with the isolation level: for
/// `read_committed` the high mark is the last stable offset (the first offset of the oldest
/// open transaction).
fn marks(bootstrap: &str, isolation: &str) -> Vec<i64> {
    let consumer = common::client(bootstrap, &[("isolation.level", isolation)]);
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks("ledger_entries", p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}

#[test]
fn a_fenced_worker_s_open_transaction_stays_invisible() {
    if common::kafka_bootstrap().is_none() {
        return;
    }
    let broker = common::OwnBroker::start(19996);
    let bootstrap = broker.bootstrap.clone();
    let kafka = format!("kafka://{bootstrap}");
    let dir = workdir();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let (data_a, data_b) = (
        data_a.to_str().expect("utf-8"),
        data_b.to_str().expect("utf-8"),
    );
    // One transactional.id for both: B's `init_transactions` fences A.
    let same_id = [("RILL_WORKER_ID", "only")];
    let producer = common::producer(&bootstrap);

    let log_a = dir.path().join("a.log");
    let (mut a, a_lines) = start(&kafka, data_a, &log_a, &same_id, &[]);
    common::wait_for_topic(&bootstrap, "transfers", PARTITIONS as usize);
    let mut all = transfers(0..1_000);
    produce(&producer, &all);
    assert!(wait_commits(&a_lines, 1, Duration::from_secs(60)));

    // Transfers keep coming (a thread) so that A's transactions are open much of the time;
    // SIGSTOP freezes A, and the stable offset behind the end of `ledger_entries` shows
    // whether it was frozen inside a transaction that wrote entries. Tried until it was.
    let flowing = Arc::new(Mutex::new(Vec::<Transfer>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let (flowing, stop, bootstrap) = (flowing.clone(), stop.clone(), bootstrap.clone());
        std::thread::spawn(move || {
            let producer = common::producer(&bootstrap);
            let mut next = 1_000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let more = transfers(next..next + 20);
                produce(&producer, &more);
                flowing.lock().expect("flowing").extend(more);
                next += 20;
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // A's sends are buffered until its commit step, so a transaction is open only while one
    // runs (a few ms of each 100 ms commit interval): catching it can take many tries.
    let mut open = Vec::new();
    for attempt in 0..250 {
        std::thread::sleep(Duration::from_millis(rand::rng().random_range(20..200)));
        common::signal(&a, "STOP");
        std::thread::sleep(Duration::from_millis(300));
        let (lso, hw) = (
            marks(&bootstrap, "read_committed"),
            marks(&bootstrap, "read_uncommitted"),
        );
        open = (0..PARTITIONS as usize)
            .filter(|p| lso[*p] < hw[*p])
            .map(|p| (p as i32, lso[p], hw[p]))
            .collect();
        if !open.is_empty() {
            eprintln!("A stopped inside an open transaction on attempt {attempt}: {open:?}");
            break;
        }
        common::signal(&a, "CONT");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    feeder.join().expect("feeder");
    all.extend(flowing.lock().expect("flowing").drain(..));
    assert!(!open.is_empty(), "A was never caught inside a transaction");
    // The records of A's open transaction: visible to read_uncommitted readers now.
    let pending: Vec<(i32, i64)> = read_topic(&bootstrap, "ledger_entries", "read_uncommitted")
        .into_iter()
        .filter(|(p, o, ..)| open.iter().any(|(q, lso, hw)| p == q && o >= lso && o < hw))
        .map(|(p, o, ..)| (p, o))
        .collect();
    assert!(!pending.is_empty(), "A's open transaction wrote entries");

    // B, same transactional.id: its init_transactions fences A and aborts A's transaction.
    let log_b = dir.path().join("b.log");
    let (mut b, b_lines) = start(&kafka, data_b, &log_b, &same_id, &[]);
    common::wait_log(
        "B's producer gets ready",
        &log_b,
        "transactional producer ready",
        Duration::from_secs(60),
    );
    // The abort: the stable offset moves past A's records, which stay unread by
    // read_committed readers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lso = marks(&bootstrap, "read_committed");
        if open.iter().all(|(p, _, hw)| lso[*p as usize] >= *hw) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A's transaction was never aborted: {lso:?} vs {open:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let visible = read_topic(&bootstrap, "ledger_entries", "read_committed");
    let leaked: Vec<_> = visible
        .iter()
        .filter(|(p, o, ..)| pending.contains(&(*p, *o)))
        .collect();
    assert!(
        leaked.is_empty(),
        "records of A's aborted transaction are visible to read_committed: {leaked:?}"
    );

    // A wakes up fenced: its next transaction fails and it stops with an error. Checked at
    // the end, after B's part: a fenced worker that keeps going is killed here so that B can
    // finish.
    common::signal(&a, "CONT");
    let a_exit = common::exited_within(&mut a, Duration::from_secs(30));
    let replaced = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("producer fenced or failed; replacing it")
            .count()
    };
    let a_problem = match a_exit {
        Some(status) if !status.success() => None,
        Some(status) => Some(format!(
            "the fenced worker exited with {status}, not an error"
        )),
        None => {
            common::signal(&a, "KILL");
            common::wait_exit(&mut a, Duration::from_secs(10));
            Some(format!(
                "the fenced worker did not stop within 30 s; its log shows {} producer \
                 replacements and B's {} (each new producer's init_transactions fences the \
                 other worker); A's log ends with:\n{}",
                replaced(&log_a),
                replaced(&log_b),
                common::log_tail(&log_a)
            ))
        }
    };
    eprintln!(
        "A (fenced): {}; {} of its entries were in the aborted transaction",
        a_problem.as_deref().unwrap_or("stopped with an error"),
        pending.len()
    );

    // B finishes the work: every entry exactly once for read_committed readers, A's aborted
    // ones never.
    let next = all.len() as u64;
    let more = transfers(next..next + 500);
    produce(&producer, &more);
    all.extend(more);
    let entries = wait_caught_up(&bootstrap, all.len(), Duration::from_secs(120), &[&log_b]);
    assert!(
        b.try_wait().expect("try_wait").is_none(),
        "B is still running; log: {}",
        common::log_tail(&log_b)
    );
    assert_exactly_once(&entries, &all);
    assert!(
        entries
            .iter()
            .all(|(p, o, ..)| !pending.contains(&(*p, *o))),
        "A's aborted entries never become visible"
    );
    assert!(commits(&b_lines) > 0);
    let status = common::terminate(&mut b, Duration::from_secs(60));
    assert!(
        status.success(),
        "B after SIGTERM: {status}; log: {}",
        common::log_tail(&log_b)
    );
    // B owns every partition since A stopped: its copy of the table is the whole ledger.
    check_balances(&bootstrap, &table(data_b), &expected_balances(&all));
    assert!(a_problem.is_none(), "{}", a_problem.unwrap_or_default());
}
