//! Reading a partition outside the agents' consumer groups: a range of a changelog (recovery)
//! or of a dead-letter topic, each with a consumer of its own; the offset a group committed,
//! the offset of a time, and committing a group's offsets from outside it (`reset`).

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::admin::Admin;
use super::client::{LogContext, METADATA_TIMEOUT, creation_error, prefetch_defaults};
use crate::base::error::{Error, Result};
use crate::base::message::{Bytes, Headers, RawRecord};
use crate::io::transport::READ_BATCH;

/// Reads `range` of a partition (a changelog) in batches of up to [`READ_BATCH`] records,
/// handed to `f`, with a consumer of its own.
pub(super) fn read_partition_range(
    base: &ClientConfig,
    admin: &Admin<'_>,
    topic: &Arc<str>,
    partition: i32,
    range: Range<i64>,
    f: &mut dyn FnMut(Vec<RawRecord>) -> Result<()>,
) -> Result<()> {
    if range.is_empty() {
        return Ok(());
    }
    let consumer = restore_consumer(base, topic, partition, range.start)?;
    let mut batch = Vec::with_capacity(READ_BATCH.min(100_000));
    let mut last_progress = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let offset = m.offset();
                batch.push(restored_record(topic, partition, &m));
                let finished = offset + 1 >= range.end;
                if batch.len() >= READ_BATCH || finished {
                    f(std::mem::take(&mut batch))?;
                }
                if finished {
                    return Ok(());
                }
            }
            Some(Err(e)) => {
                return Err(Error::kafka(format!("reading {topic}[{partition}]"), e));
            }
            None => {
                if !batch.is_empty() {
                    f(std::mem::take(&mut batch))?;
                }
                if nothing_left_to_read(&consumer, admin, topic, partition, &range, last_progress)?
                {
                    return Ok(());
                }
            }
        }
    }
}

/// A consumer outside any group, assigned `topic[partition]` from offset `from`.
fn restore_consumer(
    base: &ClientConfig,
    topic: &str,
    partition: i32,
    from: i64,
) -> Result<BaseConsumer<LogContext>> {
    let mut config = base.clone();
    config
        .set("group.id", "rill-restore")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        // A changelog tail of transaction markers only returns nothing: do not let the
        // broker hold each empty fetch for its default 500 ms.
        .set("fetch.wait.max.ms", "20");
    prefetch_defaults(&mut config, false);
    let consumer: BaseConsumer<LogContext> = config
        .create_with_context(LogContext)
        .map_err(|e| creation_error(&config, "creating a restore consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .map_err(|e| Error::kafka("building a restore assignment", e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| Error::kafka(format!("assigning {topic}[{partition}]"), e))?;
    Ok(consumer)
}

/// A read record, its key and value copied (headers are not restored).
fn restored_record(topic: &Arc<str>, partition: i32, m: &BorrowedMessage<'_>) -> RawRecord {
    RawRecord {
        topic: topic.clone(),
        partition,
        offset: m.offset(),
        key: m.key().map(Bytes::copy_from_slice),
        value: m.payload().map(Bytes::copy_from_slice),
        timestamp: m.timestamp().to_millis(),
        headers: Headers::default(),
    }
}

/// After a poll that returned nothing: whether the read is done, though it did not reach
/// `range.end` (compaction or aborted transactions can leave the end offset unreachable).
/// An error once it made no progress for a minute.
fn nothing_left_to_read(
    consumer: &BaseConsumer<LogContext>,
    admin: &Admin<'_>,
    topic: &str,
    partition: i32,
    range: &Range<i64>,
    last_progress: Instant,
) -> Result<bool> {
    let (_, high) = admin.watermarks(topic, partition)?;
    let position = consumer
        .position()
        .ok()
        .and_then(|tpl| {
            tpl.find_partition(topic, partition)
                .and_then(|e| e.offset().to_raw())
        })
        .unwrap_or(range.start);
    if position >= range.end.min(high) {
        return Ok(true);
    }
    if last_progress.elapsed() > Duration::from_secs(60) {
        return Err(Error::Shutdown(format!(
            "reading {topic}[{partition}] made no progress for 60 s at offset {position} (end {})",
            range.end
        )));
    }
    Ok(false)
}

/// The offset `group` committed on `topic[partition]`, read with a consumer of that group
/// (blocking).
pub(super) fn committed_offset(
    base: &ClientConfig,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>> {
    let consumer: BaseConsumer<LogContext> = base
        .clone()
        .set("group.id", group)
        .create_with_context(LogContext)
        .map_err(|e| Error::kafka("creating a consumer to read committed offsets", e))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let committed = consumer
        .committed_offsets(tpl, METADATA_TIMEOUT)
        .map_err(|e| Error::kafka(format!("reading the offsets of group `{group}`"), e))?;
    Ok(committed
        .find_partition(topic, partition)
        .and_then(|e| e.offset().to_raw())
        .filter(|o| *o >= 0))
}

/// The offset of the first record of `topic[partition]` with a timestamp at or after `ms`, or
/// the partition's end when there is none (blocking).
pub(super) fn offset_for_time(
    base: &ClientConfig,
    admin: &Admin<'_>,
    topic: &str,
    partition: i32,
    ms: i64,
) -> Result<i64> {
    let consumer: BaseConsumer<LogContext> = base
        .create_with_context(LogContext)
        .map_err(|e| creation_error(base, "creating a consumer to look up offsets by time", e))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(ms))
        .map_err(|e| Error::kafka("building an offsets-for-times request", e))?;
    let found = consumer
        .offsets_for_times(tpl, METADATA_TIMEOUT)
        .map_err(|e| Error::kafka(format!("looking up {topic}[{partition}] by time"), e))?;
    match found.find_partition(topic, partition).map(|e| e.offset()) {
        Some(Offset::Offset(o)) if o >= 0 => Ok(o),
        // No record that recent: the end, as Kafka's reset tool does.
        _ => Ok(admin.watermarks(topic, partition)?.1),
    }
}

/// Commits `offsets` for `group` from outside the group (the `reset` command), as Kafka's
/// tools do: the broker accepts it while the group has no members (blocking).
pub(super) fn commit_group_offsets(
    base: &ClientConfig,
    group: &str,
    offsets: &[(crate::io::transport::Tp, i64)],
) -> Result<()> {
    let consumer: BaseConsumer<LogContext> = base
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create_with_context(LogContext)
        .map_err(|e| creation_error(base, "creating a consumer to commit offsets", e))?;
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .map_err(|e| Error::kafka("building an offset commit", e))?;
    }
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .map_err(|e| Error::kafka(format!("committing the offsets of group `{group}`"), e))
}
