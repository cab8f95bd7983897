//! In-memory channels (Faust's `app.channel()`): typed agent-to-agent hand-off inside one
//! worker, with no broker. A channel is a topic name the worker keeps in memory: [`ChannelLog`]
//! wraps the worker's [`Log`] and takes every record sent to a channel out of the way to the
//! broker, queueing it for the agent that reads the channel; everything else passes through.
//!
//! Semantics, chosen to match what a channel can promise:
//! - A record is handed over when its sender's commit step delivers its sends (a producer's
//!   flush, a timer run's end), like a topic record becoming visible; a failed step's records
//!   never reach the channel.
//! - At most once: records queued or in the reader's hands when the process stops are gone;
//!   no offset of a channel is ever committed or stored anywhere.
//! - A channel has one partition per instance of the agent reading it; keyed records keep
//!   their order per key (murmur2 like Kafka's partitioner), unkeyed ones are spread.
//! - Offsets start at the microseconds since the epoch when the reader started, so they grow
//!   across restarts and local table state (which remembers offsets it reflects) never
//!   mistakes a new record for one already applied.
//! - A full queue makes senders wait (backpressure); a channel nobody in the worker reads
//!   keeps up to `CAPACITY` records and then drops new ones, counted and logged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::{
    Committer, Deliveries, Delivery, GroupMember, Leadership, Log, Outgoing, Pending, Router,
    StoredWithSends, Tp,
};
use crate::base::config::OffsetReset;
use crate::base::error::{Error, Result};
use crate::base::health::Health;
use crate::base::message::{OutRecord, RawRecord};
use crate::base::partitioner::partition_for_key;
use crate::base::spec::TopicSpec;

/// Records a channel holds before its senders wait (or, unread, before new ones are dropped).
pub(crate) const CAPACITY: usize = 10_000;

/// Records handed to the reader's instances at a time.
const BATCH: usize = 1_000;

/// One channel: its queue, and whether an agent of the worker reads it.
struct Channel {
    name: Arc<str>,
    tx: SyncSender<OutRecord>,
    rx: Mutex<Option<Receiver<OutRecord>>>,
    /// Partitions: the instances of the reading agent (1 until it starts).
    partitions: AtomicUsize,
    read: AtomicBool,
    dropped: AtomicU64,
}

/// The worker's log with its channels taken out of it.
pub(crate) struct ChannelLog {
    inner: Arc<dyn Log>,
    channels: HashMap<String, Arc<Channel>>,
}

impl ChannelLog {
    /// Wraps `inner`, keeping the topics named in `channels` (name, reader's instances) in
    /// memory; `inner` itself when there are none.
    pub(crate) fn wrap(inner: Arc<dyn Log>, channels: &[(String, usize)]) -> Arc<dyn Log> {
        if channels.is_empty() {
            return inner;
        }
        let channels = channels
            .iter()
            .map(|(name, partitions)| {
                let (tx, rx) = sync_channel(CAPACITY);
                let channel = Channel {
                    name: Arc::from(name.as_str()),
                    tx,
                    rx: Mutex::new(Some(rx)),
                    partitions: AtomicUsize::new((*partitions).max(1)),
                    read: AtomicBool::new(false),
                    dropped: AtomicU64::new(0),
                };
                (name.clone(), Arc::new(channel))
            })
            .collect();
        Arc::new(ChannelLog { inner, channels })
    }

    fn channel(&self, topic: &str) -> Option<&Arc<Channel>> {
        self.channels.get(topic)
    }

    fn is_channel_tp(&self, tp: &Tp) -> bool {
        self.channels.contains_key(&*tp.0)
    }

    /// Queues a record for its channel's reader: waits while the queue is full and read;
    /// drops (counted) when nobody reads it.
    async fn hand_to(channel: &Channel, mut record: OutRecord) {
        let mut pause = Duration::from_micros(200);
        loop {
            record = match channel.tx.try_send(record) {
                Ok(()) => return,
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(r)) => r,
            };
            if !channel.read.load(Ordering::Acquire) {
                if channel.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(channel = %channel.name, capacity = CAPACITY, "no agent of this worker reads the channel and it is full: new records are dropped");
                }
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Starts the thread moving a channel's records to its reader's instances.
    fn start_pump(
        &self,
        channel: &Arc<Channel>,
        router: Arc<Router>,
        stop: Arc<AtomicBool>,
    ) -> Result<std::thread::JoinHandle<()>> {
        let rx = channel
            .rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| {
                Error::config(
                    format!("channel `{}`", channel.name),
                    "is read by two agents; a channel has one reader (send to two channels, or use a topic)",
                )
            })?;
        channel.read.store(true, Ordering::Release);
        let channel = channel.clone();
        std::thread::Builder::new()
            .name(format!("rill-channel-{}", channel.name))
            .spawn(move || {
                pump(&channel, &rx, &router, &stop);
                // Nobody reads it any more: senders (a last commit step at shutdown) must not
                // wait for room.
                channel.read.store(false, Ordering::Release);
            })
            .map_err(|e| Error::io("spawning a channel thread", e))
    }
}

/// The reader's side of a channel: assigns every partition to the reader, then hands the
/// records over in batches, reporting the partitions caught up whenever the queue is empty
/// (so windows see the channel as idle, not as lagging).
fn pump(channel: &Channel, rx: &Receiver<OutRecord>, router: &Router, stop: &AtomicBool) {
    let partitions = channel.partitions.load(Ordering::Acquire).max(1);
    let tps: Vec<Tp> = (0..partitions)
        .map(|p| (channel.name.clone(), i32::try_from(p).unwrap_or(i32::MAX)))
        .collect();
    if router.assigned(tps.clone()).is_err() {
        return;
    }
    let base = crate::base::message::now_millis().saturating_mul(1_000);
    let mut next = vec![base; partitions];
    let mut spread = 0usize;
    let mut idle = false;
    while !stop.load(Ordering::Acquire) && !router.all_closed() {
        let first = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(record) => record,
            Err(RecvTimeoutError::Timeout) => {
                if !idle {
                    idle = true;
                    router.route(Vec::new(), tps.clone(), false);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        idle = false;
        let mut batch = Vec::with_capacity(BATCH.min(64));
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
        let records = batch
            .into_iter()
            .map(|r| {
                let p = match (&r.key, r.partition) {
                    (_, Some(p)) => usize::try_from(p).unwrap_or(0) % partitions,
                    (Some(key), None) => {
                        let p = partition_for_key(key, i32::try_from(partitions).unwrap_or(1));
                        usize::try_from(p).unwrap_or(0)
                    }
                    (None, None) => {
                        spread = spread.wrapping_add(1);
                        spread % partitions
                    }
                };
                let offset = next[p];
                next[p] += 1;
                raw_of(r, &tps[p], offset)
            })
            .collect();
        if !router.route(records, Vec::new(), false) {
            return;
        }
    }
}

fn raw_of(r: OutRecord, tp: &Tp, offset: i64) -> RawRecord {
    RawRecord {
        topic: tp.0.clone(),
        partition: tp.1,
        offset,
        key: r.key.map(Bytes::from),
        value: r.value.map(Bytes::from),
        timestamp: Some(r.timestamp),
        headers: r.headers,
    }
}

impl Log for ChannelLog {
    fn system(&self) -> &'static str {
        self.inner.system()
    }

    fn health(&self) -> Arc<Health> {
        self.inner.health()
    }

    fn advertise_web(&self, url: &str) -> bool {
        self.inner.advertise_web(url)
    }

    fn ensure_topics<'a>(
        &'a self,
        specs: &'a [TopicSpec],
        default_partitions: i32,
    ) -> BoxFuture<'a, Result<HashMap<String, i32>>> {
        Box::pin(async move {
            let (channels, topics): (Vec<&TopicSpec>, Vec<&TopicSpec>) = specs
                .iter()
                .partition(|s| self.channels.contains_key(&s.name));
            let topics: Vec<TopicSpec> = topics.into_iter().cloned().collect();
            let mut counts = self
                .inner
                .ensure_topics(&topics, default_partitions)
                .await?;
            for spec in channels {
                let partitions = self.partition_count(&spec.name)?.unwrap_or(1);
                counts.insert(spec.name.clone(), partitions);
            }
            Ok(counts)
        })
    }

    fn elect<'a>(&'a self, app_id: &'a str) -> BoxFuture<'a, Result<Leadership>> {
        self.inner.elect(app_id)
    }

    fn partition_count(&self, topic: &str) -> Result<Option<i32>> {
        match self.channel(topic) {
            Some(c) => Ok(Some(
                i32::try_from(c.partitions.load(Ordering::Acquire)).unwrap_or(1),
            )),
            None => self.inner.partition_count(topic),
        }
    }

    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        match self.channel(topic) {
            Some(_) => Ok((0, 0)),
            None => self.inner.watermarks(topic, partition),
        }
    }

    fn read_range(
        &self,
        topic: &Arc<str>,
        partition: i32,
        from: i64,
        until: i64,
        f: &mut dyn FnMut(Vec<RawRecord>) -> Result<()>,
    ) -> Result<()> {
        if self.channel(topic).is_some() {
            return Ok(());
        }
        self.inner.read_range(topic, partition, from, until, f)
    }

    fn committed(&self, group: &str, topic: &str, partition: i32) -> Result<Option<i64>> {
        match self.channel(topic) {
            Some(_) => Ok(None),
            None => self.inner.committed(group, topic, partition),
        }
    }

    fn offset_for_time(&self, topic: &str, partition: i32, ms: i64) -> Result<i64> {
        match self.channel(topic) {
            Some(_) => Ok(0),
            None => self.inner.offset_for_time(topic, partition, ms),
        }
    }

    fn reset_offsets(&self, group: &str, offsets: &[(Tp, i64)]) -> Result<()> {
        let kept: Vec<(Tp, i64)> = offsets
            .iter()
            .filter(|(tp, _)| !self.is_channel_tp(tp))
            .cloned()
            .collect();
        self.inner.reset_offsets(group, &kept)
    }

    fn start_fetcher(
        &self,
        group: &str,
        topics: Vec<String>,
        reset: OffsetReset,
        router: Arc<Router>,
        stop: Arc<AtomicBool>,
    ) -> Result<(Arc<dyn Committer>, std::thread::JoinHandle<()>)> {
        let channels: Vec<&Arc<Channel>> = topics.iter().filter_map(|t| self.channel(t)).collect();
        match (channels.as_slice(), topics.len()) {
            ([], _) => self.inner.start_fetcher(group, topics, reset, router, stop),
            ([channel], 1) => {
                let pump = self.start_pump(channel, router, stop)?;
                Ok((Arc::new(StoredWithSends), pump))
            }
            _ => Err(Error::config(
                format!("consumer group `{group}`"),
                format!(
                    "reads the channel(s) {:?} with other topics ({topics:?}); an agent reads one channel and nothing else (no retry topics either: use on_error = \"dead_letter\" or \"skip\")",
                    channels.iter().map(|c| &*c.name).collect::<Vec<_>>()
                ),
            )),
        }
    }

    fn lags(&self, group: &str, router: &Router) -> Vec<(Tp, i64)> {
        self.inner.lags(group, router)
    }

    fn group_members(&self, group: &str) -> Result<Vec<GroupMember>> {
        self.inner.group_members(group)
    }

    fn buffers(&self) -> bool {
        self.inner.buffers()
    }

    fn enqueue<'a>(
        &'a self,
        record: OutRecord,
        batch: &'a Arc<Deliveries>,
    ) -> BoxFuture<'a, Result<Pending>> {
        if self.channel(&record.topic).is_some() {
            // Held until the sender's step delivers, whatever the log does with its topics.
            return Box::pin(std::future::ready(Ok(Pending::Buffered(record))));
        }
        self.inner.enqueue(record, batch)
    }

    fn try_enqueue(&self, record: &Outgoing<'_>, batch: &Arc<Deliveries>) -> Result<bool> {
        if self.channel(record.topic).is_some() {
            return Ok(false);
        }
        self.inner.try_enqueue(record, batch)
    }

    fn deliver<'a>(&'a self, delivery: Delivery<'a>) -> BoxFuture<'a, Result<HashMap<Tp, i64>>> {
        Box::pin(async move {
            let mut queued = Vec::new();
            let mut pending = Vec::with_capacity(delivery.pending.len());
            for p in delivery.pending {
                match p {
                    Pending::Buffered(r) if self.channels.contains_key(&*r.topic) => {
                        queued.push(r);
                    }
                    other => pending.push(other),
                }
            }
            let offsets: Vec<(Tp, i64)>;
            let offsets = if delivery
                .offsets
                .iter()
                .any(|(tp, _)| self.is_channel_tp(tp))
            {
                offsets = delivery
                    .offsets
                    .iter()
                    .filter(|(tp, _)| !self.is_channel_tp(tp))
                    .cloned()
                    .collect();
                &offsets[..]
            } else {
                delivery.offsets
            };
            let written = self
                .inner
                .deliver(Delivery {
                    pending,
                    offsets,
                    ..delivery
                })
                .await?;
            for record in queued {
                if let Some(channel) = self.channel(&record.topic) {
                    Self::hand_to(channel, record).await;
                }
            }
            Ok(written)
        })
    }

    fn flush(&self, timeout: Duration) -> Result<()> {
        self.inner.flush(timeout)
    }

    fn transactions(&self) -> Option<(u64, u64)> {
        self.inner.transactions()
    }
}
