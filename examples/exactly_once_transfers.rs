//! Technique 7 of the seed: exactly-once processing, for money.
//!
//! ```text
//! cargo run --example exactly_once_transfers                                  # embedded log, synthetic transfers
//! cargo run --example exactly_once_transfers -- tables balances               # the balances afterwards
//! cargo run --example exactly_once_transfers -- --broker kafka://127.0.0.1:9092
//! ```
//!
//! A ledger. Each `Transfer` on `transfers` moves `amount` from one account to another;
//! `split_transfers` turns it into two `LedgerEntry` records on `ledger_entries`, keyed by
//! account: `-amount` for `from`, `+amount` for `to`. `apply_entries` reads them in batches of
//! up to 50 (or whatever arrived within 2 s, the seed's `views.take(50, within=2)`), adds each
//! amount to the account's balance in the table `balances`, and commits after each batch.
//!
//! Every transfer adds `-amount` and `+amount`, so the balances always sum to 0 and money is
//! neither created nor destroyed, provided each entry is written exactly once and applied
//! exactly once. That is what `ProcessingGuarantee::ExactlyOnce` gives on Kafka (the seed's
//! `processing_guarantee='exactly_once'`): each commit step is one Kafka transaction holding
//! the agent's outputs (`ledger_entries`), its table changelog records (`balances`) and the
//! offsets it consumed. A worker killed mid-batch leaves an open transaction that its next
//! incarnation aborts: nothing of it is visible to `read_committed` consumers (rill's own
//! consumers read that way), and the records are processed again from the last committed
//! offset, once. Under at-least-once a crash could repeat the entries of the last commit
//! interval, and a repeated `-amount` would be money taken twice.
//!
//! On the embedded log (no broker) outputs and offsets already commit in one LMDB
//! transaction. With no broker the app sends itself `SYNTHETIC_TRANSFERS` transfers (default
//! 200; 0 for none) between 10 accounts, 20 a second.
#![allow(clippy::print_stdout, reason = "examples print what they do")]

use std::time::Duration;

use rill::prelude::*;

/// Money moving between two accounts, in cents.
#[record]
struct Transfer {
    #[record(key)]
    id: u64,
    from: String,
    to: String,
    amount: i64,
}

/// One side of a transfer: `amount` is negative for the account paying, positive for the one
/// paid. Keyed by account, so all entries of an account (and its balance) live in one
/// partition.
#[record]
struct LedgerEntry {
    transfer_id: u64,
    #[record(key)]
    account: String,
    amount: i64,
}

const TRANSFERS: Topic<u64, Transfer> = Topic::new("transfers");

#[agent(topic = TRANSFERS, sink = "ledger_entries")]
async fn split_transfers(
    mut transfers: Stream<Transfer>,
    entries: Sink<LedgerEntry>,
) -> rill::Result<()> {
    while let Some(t) = transfers.next().await {
        // Both entries go out in the transaction that commits this transfer's offset: a
        // reader sees both or neither.
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
}

/// A batch may hold entries of several partitions; each entry's account belongs to its own
/// entry's partition (the topic is keyed by account), which is where its balance lives.
#[agent(topic = "ledger_entries", tables(balances = "balances"))]
async fn apply_entries(
    entries: Stream<LedgerEntry>,
    balances: Table<String, i64>,
) -> rill::Result<()> {
    let mut batches = entries.take(50, Duration::from_secs(2));
    while let Some(batch) = batches.next().await {
        for entry in &batch {
            balances.update(entry.account.clone(), |b| b + entry.amount)?;
        }
        // The batch's balance changes and the offsets of its entries commit together (one
        // transaction on Kafka): a crash before this line applies none of them, and the batch
        // is read again.
        batches.commit().await?;
        println!("Committed a batch of {} entries", batch.len());
    }
    Ok(())
}

fn main() -> rill::Result<()> {
    App::new("financial_processor")
        .processing_guarantee(rill::ProcessingGuarantee::ExactlyOnce)
        .task(synthetic_transfers)
        .main()
}

/// On the embedded log, sends `SYNTHETIC_TRANSFERS` transfers (default 200) between 10
/// accounts.
async fn synthetic_transfers(producer: Producer) -> rill::Result<()> {
    let count: u64 = std::env::var("SYNTHETIC_TRANSFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    if producer.is_kafka() || count == 0 {
        return Ok(());
    }
    println!(
        "no broker configured: sending {count} synthetic transfers between 10 accounts; \
         `tables balances` shows the balances afterwards (they sum to 0)"
    );
    for id in 0..count {
        let transfer = Transfer {
            id,
            from: format!("account-{}", id % 10),
            to: format!("account-{}", (id * 7 + 3) % 10),
            amount: 100 + (id * 37 % 900) as i64,
        };
        producer.send(&TRANSFERS, &transfer).await?;
        producer.flush().await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
