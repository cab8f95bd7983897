//! `Stream::take(n, within)` batches and `commit()` at batch boundaries, on the test harness:
//! batch sizes, the flush when `within` passes, and that a commit step running while a batch
//! is assembled does not commit its records before the agent has them all.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rill::prelude::*;

#[record]
#[derive(Debug, Clone)]
struct Payment {
    id: u64,
}

static SIZES: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static COMMITTED_AFTER: Mutex<Vec<i64>> = Mutex::new(Vec::new());
static HANDED: AtomicUsize = AtomicUsize::new(0);

#[agent(topic = "payments", sink = "settled")]
async fn settle(payments: Stream<Payment>, settled: Sink<Payment>) -> rill::Result<()> {
    let mut batches = payments.take(50, Duration::from_millis(300));
    while let Some(batch) = batches.next().await {
        HANDED.fetch_add(batch.len(), Ordering::SeqCst);
        for p in &batch {
            settled.send(p).await?;
        }
        SIZES.lock().expect("lock").push(batch.len());
        batches.commit().await?;
        COMMITTED_AFTER
            .lock()
            .expect("lock")
            .push(HANDED.load(Ordering::SeqCst) as i64);
    }
    Ok(())
}

fn committed_total(app: &TestApp) -> i64 {
    (0..1)
        .map(|p| {
            app.committed("batches-settle", "payments", p)
                .expect("committed")
                .unwrap_or(0)
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_fill_flush_on_time_and_commit_at_their_boundaries() -> rill::Result<()> {
    let app = App::new("batches")
        .partitions(1)
        .agents([settle::agent()])
        .test()
        .await?;
    for id in 0..120 {
        app.send_to("payments", &Payment { id }).await?;
    }
    let settled: Vec<Payment> = app.expect("settled", 120).await?;
    assert_eq!(settled.len(), 120);
    let ids: Vec<u64> = settled.iter().map(|p| p.id).collect();
    assert_eq!(ids, (0..120).collect::<Vec<_>>(), "in order, once each");
    // 120 records in one partition: two full batches, then the rest when `within` passes.
    assert_eq!(*SIZES.lock().expect("lock"), vec![50, 50, 20]);
    // Each commit() covered its whole batch: the group's offset equals the records handed
    // out so far.
    let after = COMMITTED_AFTER.lock().expect("lock").clone();
    assert_eq!(after, vec![50, 100, 120]);
    assert_eq!(committed_total(&app), 120);
    app.stop().await
}

static SLOW_SEEN: AtomicUsize = AtomicUsize::new(0);

#[agent(topic = "slow_payments")]
async fn slow_batches(payments: Stream<Payment>) -> rill::Result<()> {
    let mut batches = payments.take(50, Duration::from_secs(2));
    while let Some(batch) = batches.next().await {
        SLOW_SEEN.fetch_add(batch.len(), Ordering::SeqCst);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_being_assembled_is_not_committed() -> rill::Result<()> {
    let app = App::new("slow")
        .partitions(1)
        .agents([slow_batches::agent()])
        .test()
        .await?;
    let committed = |app: &TestApp| {
        app.committed("slow-slow_batches", "slow_payments", 0)
            .expect("committed")
            .unwrap_or(0)
    };
    for id in 0..10 {
        app.send_to("slow_payments", &Payment { id }).await?;
    }
    // Several 100 ms commit intervals pass while the batch waits for more records.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        SLOW_SEEN.load(Ordering::SeqCst),
        0,
        "the batch is still open"
    );
    assert_eq!(committed(&app), 0, "nothing of an open batch is committed");
    // `within` passes: the batch of 10 goes to the agent; asking for the next batch finishes
    // it, and the next commit step commits it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while committed(&app) < 10 {
        assert!(tokio::time::Instant::now() < deadline, "never committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(SLOW_SEEN.load(Ordering::SeqCst), 10);
    app.stop().await
}

#[record]
#[derive(Debug, Clone)]
struct Entry {
    #[record(key)]
    account: String,
    amount: i64,
}

#[agent(topic = "entries", tables(balances = "batch_balances"))]
async fn apply_batches(entries: Stream<Entry>, balances: Table<String, i64>) -> rill::Result<()> {
    let mut batches = entries.take(40, Duration::from_millis(200));
    while let Some(batch) = batches.next().await {
        // A batch mixes partitions; each entry's account lives in its own entry's partition.
        for e in &batch {
            balances.update(e.account.clone(), |b| b + e.amount)?;
        }
        batches.commit().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_across_partitions_writes_each_key_in_its_own_partition() -> rill::Result<()> {
    let app = App::new("mixed")
        .partitions(4)
        .agents([apply_batches::agent()])
        .test()
        .await?;
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..300i64 {
        let account = format!("acct-{}", i % 13);
        *expected.entry(account.clone()).or_insert(0) += i;
        app.send_to("entries", &Entry { account, amount: i })
            .await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got: std::collections::BTreeMap<String, i64> =
            app.table("batch_balances")?.into_iter().collect();
        if got == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "balances {got:?} != {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await
}
