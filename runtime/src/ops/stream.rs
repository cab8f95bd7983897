//! `Stream<T>`: what an agent iterates, with `KeyedStream`, `Batches` and `Sink`. A stream
//! decodes the records its instance's record loop (`instance::record_loop`) hands out; asking
//! for the next item marks the previous one finished.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use crate::base::codec::{Codec, KeyBytes};
use crate::base::error::{Error, Result};
use crate::base::failure::{Failure, FailureKind};
use crate::base::message::{Event, Metadata, RawRecord};
use crate::base::record::Record;
use crate::instance::context::{self, InstanceState};
use crate::instance::record_loop::RecordLoop;

pub(crate) type Step<T> = Box<dyn FnMut(&RawRecord) -> Option<T> + Send>;

/// Reads a record's event time (ms since the epoch).
pub(crate) type TimeOf<T> = Arc<dyn Fn(&T) -> i64 + Send + Sync>;

/// The typed stream an agent reads: a `futures::Stream` of `T` with Kafka's per-partition order.
///
/// Asking for the next item marks the previous one finished; its offset is committed at the next
/// commit step, after everything the agent sent for it is durable (at-least-once).
pub struct Stream<T> {
    pub(crate) core: RecordLoop,
    step: Step<T>,
    /// The source's codec (what `group_by` decodes with).
    pub(crate) codec: Codec,
    /// A custom event-time extractor (`Stream::event_time`), carried through `group_by`.
    pub(crate) time: Option<TimeOf<T>>,
    /// The topic this stream reads when its agent reads several (`topics(a = .., b = ..)`):
    /// the instance's core reads them all, so one topic's stream read alone would meet the
    /// others' records. Such streams are read together (`join`, `either`).
    pub(crate) topic: Option<Arc<str>>,
    /// Items are no longer the topic's records (`map`): `group_by` and joins, which decode
    /// the records again elsewhere, refuse such a stream.
    pub(crate) mapped: bool,
}

impl<T: Record> Stream<T> {
    pub(crate) fn new(core: RecordLoop, codec: Codec) -> Self {
        let shared = core.shared.clone();
        let max = core.policy.max_record_bytes;
        Stream {
            core,
            step: Box::new(move |raw| {
                let value = decode::<T>(&shared, raw, codec, max)?;
                // Event time: the record's `#[record(timestamp)]` field, else the message's.
                let time = value.event_time().or(raw.timestamp).unwrap_or(i64::MIN);
                shared.position.event_time.store(time, Ordering::Relaxed);
                Some(value)
            }),
            codec,
            time: None,
            topic: None,
            mapped: false,
        }
    }

    /// Reads event time with `f` (milliseconds since the epoch) instead of the record's
    /// `#[record(timestamp)]` field or the message timestamp. Windows, sends and `group_by`
    /// use it from here on.
    pub fn event_time(mut self, f: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Self {
        let f: TimeOf<T> = Arc::new(f);
        let shared = self.core.shared.clone();
        let mut step = self.take_step();
        let extract = f.clone();
        self.step = Box::new(move |raw| {
            let value = step(raw)?;
            shared
                .position
                .event_time
                .store(extract(&value), Ordering::Relaxed);
            Some(value)
        });
        self.time = Some(f);
        self
    }

    /// Re-keys the stream by a field (`group_by(PageView::url)`): records travel through the
    /// internal topic `<app>-<agent>-<field>-repartition`, keyed by the field, so every record
    /// of a key reaches one partition, where the agent's tables keep that key. Call it before
    /// reading the stream; an agent re-keys once.
    pub fn group_by<K>(self, field: crate::base::record::Field<T, K>) -> KeyedStream<T, K>
    where
        K: KeyBytes + Clone + Send + Sync + 'static,
    {
        self.group_by_key(field.name(), move |value: &T| field.get(value).clone())
    }

    /// Groups by a field the source topic is already keyed by, without the repartition hop of
    /// [`Stream::group_by`] (Kafka Streams' `groupByKey`): use it when the producers key the
    /// topic by this field (`#[record(key)]`), so every record of a key is in the partition
    /// the key hashes to. Windows and tables then keep each key in place, saving a produce, a
    /// fetch and a second decode per record.
    ///
    /// A record whose field hashes to another partition than the one it was read from would
    /// split its key's state: it is dead-lettered with the partitions in the reason (use
    /// `group_by` for such a topic). The windows' state is named after the field with a
    /// `-keyed` suffix, so switching a running agent between `group_by` and `keyed` starts
    /// its windows afresh instead of reading state laid out by the other.
    pub fn keyed<K>(self, field: crate::base::record::Field<T, K>) -> KeyedStream<T, K>
    where
        K: KeyBytes + Clone + Send + Sync + 'static,
    {
        let name = format!("{}-keyed", field.name());
        let key: Arc<dyn Fn(&T) -> K + Send + Sync> = Arc::new(move |v: &T| field.get(v).clone());
        let (codec, time, mapped) = (self.codec, self.time.clone(), self.mapped);
        let mut this = self;
        if this.topic.is_some() {
            let mut core = this.take_core();
            let error = Error::agent(
                &core.shared.agent,
                "`keyed` on one stream of an agent over several topics; join them (`join`, `either`) instead",
            );
            core.fail(error);
            return KeyedStream::new(Stream::new(core, codec), key, &name);
        }
        let partitions = this
            .core
            .pipeline()
            .map_or(1, |p| p.source_partitions())
            .max(1);
        let shared = this.core.shared.clone();
        let check = key.clone();
        let mut stream = this.restep(move |mut step| {
            Box::new(move |raw: &RawRecord| {
                let value = step(raw)?;
                let bytes = check(&value).key_bytes();
                let fix = "use `group_by` to repartition";
                (!reject_misplaced(&shared, raw, &bytes, partitions, "key", fix)).then_some(value)
            })
        });
        stream.time = time;
        stream.mapped = mapped;
        KeyedStream::new(stream, key, &name)
    }

    /// Re-keys the stream by a computed key; `name` names the repartition topic
    /// (`<app>-<agent>-<name>-repartition`), as a field's name does for [`Stream::group_by`].
    ///
    /// Setup errors (a second `group_by` in one agent, a topic that cannot be created) end the
    /// stream at once and the worker reports them.
    pub fn group_by_key<K>(
        self,
        name: &str,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> KeyedStream<T, K>
    where
        K: KeyBytes + Send + 'static,
    {
        let key: Arc<dyn Fn(&T) -> K + Send + Sync> = Arc::new(key);
        let codec = self.codec;
        let time = self.time.clone();
        let mut this = self;
        if this.core.rekeyed.as_deref() == Some(name) {
            // The agent function runs again (after a failure) on its re-keyed stream.
            let core = this.take_core();
            let mut stream = Stream::new(core, codec);
            if let Some(f) = time {
                stream = stream.event_time(move |v: &T| f(v));
            }
            return KeyedStream::new(stream, key, name);
        }
        if this.topic.is_some() || this.mapped {
            // One topic of a multi-topic agent: its core reads the other topics too. A mapped
            // stream: the pump decodes the topic's records, not the mapped items.
            let mut core = this.take_core();
            let error = Error::agent(
                &core.shared.agent,
                if this.mapped {
                    "`group_by` after `map`: re-key the stream first, then map"
                } else {
                    "`group_by` on one stream of an agent over several topics; join them (`join`, `either`) instead"
                },
            );
            core.fail(error);
            return KeyedStream::new(Stream::new(core, codec), key, name);
        }
        let Some(pipeline) = this.core.pipeline.clone() else {
            let mut core = this.take_core();
            let error = Error::agent(
                &core.shared.agent,
                "`group_by` applies to an agent's own stream",
            );
            core.fail(error);
            return KeyedStream::new(Stream::new(core, codec), key, name);
        };
        let key_fn = key.clone();
        let time_fn = time.clone();
        let key_of = Box::new(move |raw: &RawRecord| -> Result<(Vec<u8>, Option<i64>)> {
            let bytes = raw.value.as_deref().unwrap_or_default();
            let value = T::decode(bytes, codec).map_err(|source| Error::Codec {
                topic: "group_by".into(),
                source,
            })?;
            let at = match &time_fn {
                Some(f) => Some(f(&value)),
                None => value.event_time(),
            };
            Ok((key_fn(&value).key_bytes(), at))
        });
        let core = match pipeline.group_by(name, this.take_core(), key_of, Vec::new()) {
            Ok(mut core) => {
                core.rekeyed = Some(name.to_owned());
                core
            }
            Err(failed) => {
                let (error, mut core) = *failed;
                core.fail(error);
                core
            }
        };
        let mut stream = Stream::new(core, codec);
        if let Some(f) = time {
            stream = stream.event_time(move |v: &T| f(v));
        }
        KeyedStream::new(stream, key, name)
    }
}

/// Dead-letters `raw` when `key` belongs to another of `partitions` than the one it was read
/// from (its topic is not keyed by it, so processing it in place would split the key's state):
/// true when it did. `what` names the key in the reason, `fix` the remedy.
pub(crate) fn reject_misplaced(
    shared: &InstanceState,
    raw: &RawRecord,
    key: &[u8],
    partitions: i32,
    what: &str,
    fix: &str,
) -> bool {
    let owner = crate::base::partitioner::partition_for_key(key, partitions);
    if owner == raw.partition {
        return false;
    }
    let message = format!(
        "{what} {} belongs to partition {owner}, but the record is in partition {} of `{}`: its topic is not keyed by it; {fix}",
        String::from_utf8_lossy(key),
        raw.partition,
        raw.topic
    );
    shared.record_failed(
        raw,
        Failure {
            kind: FailureKind::Error,
            message,
        },
    );
    true
}

fn decode<T: Record>(
    shared: &InstanceState,
    raw: &RawRecord,
    codec: Codec,
    max: usize,
) -> Option<T> {
    let result = match &raw.value {
        Some(bytes) if bytes.len() > max => Err(crate::base::error::CodecError::Oversized {
            size: bytes.len(),
            max,
        }),
        Some(bytes) => T::decode(bytes, codec),
        None => Err(crate::base::error::CodecError::NullValue),
    };
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            // The stream applies the agent's failure policy before the next record.
            shared.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            shared.record_failed(
                raw,
                Failure {
                    kind: FailureKind::Decode,
                    message: format!("cannot decode as `{}`: {error}", std::any::type_name::<T>()),
                },
            );
            None
        }
    }
}

impl<T: Send + 'static> Stream<T> {
    /// The next record, or `None` when the worker shuts down.
    pub async fn next(&mut self) -> Option<T> {
        futures::StreamExt::next(self).await
    }

    /// Commits now: the records handed out so far are finished, and their effects (sends,
    /// table writes, dead letters) are made durable with their offsets, as at the end of a
    /// commit interval. Under exactly-once this commits the worker's transaction. For agents
    /// that commit at batch boundaries (see [`Stream::take`]).
    pub async fn commit(&mut self) -> Result<()> {
        self.core.commit_now().await
    }

    /// Batches: up to `n` records at a time, or fewer when `within` has passed since the
    /// batch's first record (Faust's `stream.take(50, within=2)`). A batch's records are
    /// finished together, when the agent asks for the next batch or calls
    /// [`Batches::commit`]; a commit step that runs meanwhile does not commit them.
    pub fn take(self, n: usize, within: std::time::Duration) -> Batches<T> {
        Batches {
            stream: self,
            n: n.max(1),
            within,
        }
    }

    /// Keeps the records for which `keep` is true; the others count as finished.
    pub fn filter(mut self, mut keep: impl FnMut(&T) -> bool + Send + 'static) -> Stream<T> {
        let mut step = self.take_step();
        self.step = Box::new(move |raw| step(raw).filter(|v| keep(v)));
        self
    }

    /// Transforms each record.
    pub fn map<U: Send + 'static>(
        mut self,
        mut f: impl FnMut(T) -> U + Send + 'static,
    ) -> Stream<U> {
        let mut step = self.take_step();
        Stream {
            core: self.take_core(),
            step: Box::new(move |raw| step(raw).map(&mut f)),
            codec: self.codec,
            time: None,
            topic: self.topic.clone(),
            mapped: true,
        }
    }

    /// Pairs each record with its position in this stream (from 0).
    pub fn enumerate(self) -> Stream<(usize, T)> {
        let mut n = 0usize;
        self.map(move |v| {
            let i = n;
            n += 1;
            (i, v)
        })
    }

    /// Yields each record with its metadata (topic, partition, offset, key, timestamp, headers).
    pub fn events(mut self) -> Stream<Event<T>> {
        let mut step = self.take_step();
        Stream {
            core: self.take_core(),
            codec: self.codec,
            time: None,
            topic: self.topic.clone(),
            mapped: true,
            step: Box::new(move |raw| {
                let meta = Metadata::of(raw);
                step(raw).map(|value| Event { value, meta })
            }),
        }
    }
}

impl<T> Unpin for Stream<T> {}

impl<T> Stream<T> {
    /// A stream of one topic of a multi-topic agent was read on its own: an error in the
    /// agent's code, reported once and stopping the worker.
    fn fail_apart(&mut self, other: Option<String>) {
        let topic = self.topic.as_deref().unwrap_or_default();
        let what = match other {
            Some(other) => {
                format!("the stream of `{topic}` was read alone and met a record of `{other}`")
            }
            None => format!("the stream of `{topic}` was read alone"),
        };
        let error = Error::agent(
            &self.core.shared.agent,
            format!(
                "{what}: an agent over several topics reads their streams together, with `join`, `left_join`, `outer_join` or `either`"
            ),
        );
        if self.core.husk {
            self.core.shared.fail(error);
        } else {
            self.core.fail(error);
        }
    }

    /// A stream of `U` over this stream's core, reading with `step` (made from this stream's
    /// step); the result reads every topic of the core.
    pub(crate) fn restep<U>(mut self, step: impl FnOnce(Step<T>) -> Step<U>) -> Stream<U> {
        let inner = self.take_step();
        Stream {
            core: self.take_core(),
            step: step(inner),
            codec: self.codec,
            time: None,
            topic: None,
            mapped: true,
        }
    }

    /// Moves the core out (to a new stream), leaving a husk that is not parked on drop.
    pub(crate) fn take_core(&mut self) -> RecordLoop {
        let husk = RecordLoop::husk(self.core.shared.clone(), self.core.policy.clone());
        std::mem::replace(&mut self.core, husk)
    }

    pub(crate) fn take_step(&mut self) -> Step<T> {
        std::mem::replace(&mut self.step, Box::new(|_| None))
    }
}

impl<T> Drop for Stream<T> {
    /// The agent function is done with its stream (it returned, failed or panicked): the core
    /// waits in the instance's shared state, for the worker to call the function again on it
    /// or to finish it.
    fn drop(&mut self) {
        if !self.core.husk {
            let core = self.take_core();
            core.park();
        }
    }
}

/// A stream re-keyed by `group_by`: iterate it like a [`Stream`], or window it
/// (`tumbling`, `hopping`, `sliding`, `session`; see [`crate::window`]).
pub struct KeyedStream<T, K> {
    pub(crate) stream: Stream<T>,
    pub(crate) key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    pub(crate) name: String,
}

impl<T: Record, K> KeyedStream<T, K> {
    fn new(stream: Stream<T>, key: Arc<dyn Fn(&T) -> K + Send + Sync>, name: &str) -> Self {
        KeyedStream {
            stream,
            key,
            name: name.to_owned(),
        }
    }

    /// The next record, or `None` when the worker shuts down.
    pub async fn next(&mut self) -> Option<T> {
        self.stream.next().await
    }

    /// Reads event time with `f`; see [`Stream::event_time`].
    pub fn event_time(mut self, f: impl Fn(&T) -> i64 + Send + Sync + 'static) -> Self {
        self.stream = self.stream.event_time(f);
        self
    }

    /// The key of a record.
    pub fn key_of(&self, value: &T) -> K {
        (self.key)(value)
    }

    /// The plain stream (the key function is dropped).
    pub fn into_stream(self) -> Stream<T> {
        self.stream
    }
}

impl<T, K> Unpin for KeyedStream<T, K> {}

impl<T: Send + 'static, K> futures::Stream for KeyedStream<T, K> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        Pin::new(&mut self.get_mut().stream).poll_next(cx)
    }
}

impl<T, K> std::fmt::Debug for KeyedStream<T, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyedStream({}, by {})",
            self.stream.core.shared.agent, self.name
        )
    }
}

impl<T> futures::Stream for Stream<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        if this.topic.is_some() && this.core.husk {
            // One topic's stream of a multi-topic agent, without the instance's core.
            this.fail_apart(None);
            return Poll::Ready(None);
        }
        loop {
            match ready!(this.core.poll_raw(cx)) {
                None => return Poll::Ready(None),
                Some(raw) => {
                    if let Some(topic) = &this.topic
                        && crate::base::failure::side_topic(raw) != &**topic
                    {
                        let other = crate::base::failure::side_topic(raw).to_owned();
                        this.fail_apart(Some(other));
                        return Poll::Ready(None);
                    }
                    if let Some(value) = (this.step)(raw) {
                        return Poll::Ready(Some(value));
                    }
                }
            }
        }
    }
}

/// Batches of a [`Stream`] (`Stream::take`).
pub struct Batches<T> {
    stream: Stream<T>,
    n: usize,
    within: std::time::Duration,
}

impl<T: Send + 'static> Batches<T> {
    /// The next batch (never empty), or `None` when the worker shuts down. The previous batch
    /// counts as finished.
    pub async fn next(&mut self) -> Option<Vec<T>> {
        self.stream.core.finish_handed();
        self.stream.core.holding = true;
        let batch = self.fill().await;
        self.stream.core.holding = false;
        batch
    }

    /// Fills a batch. Records read before a rebalance or a rollback (the assignment was
    /// announced again) belong to no one any more: they are dropped (their offsets were
    /// forgotten with them), and the batch starts over from the first record read after it.
    async fn fill(&mut self) -> Option<Vec<T>> {
        let shared = self.stream.core.shared.clone();
        let assignment = || shared.position.assignment.load(Ordering::Acquire);
        let mut carried = None;
        loop {
            let first = match carried.take() {
                Some(value) => value,
                None => {
                    shared.position.clear_batch_partitions();
                    self.stream.next().await?
                }
            };
            let seen = assignment();
            let mut batch = Vec::with_capacity(self.n);
            batch.push(first);
            let deadline = tokio::time::Instant::now() + self.within;
            while batch.len() < self.n {
                match tokio::time::timeout_at(deadline, self.stream.next()).await {
                    Ok(Some(value)) if assignment() == seen => batch.push(value),
                    Ok(Some(value)) => {
                        carried = Some(value);
                        break;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            if carried.is_none() && assignment() == seen {
                return Some(batch);
            }
        }
    }

    /// Commits now, the batch handed out included (see [`Stream::commit`]).
    pub async fn commit(&mut self) -> Result<()> {
        self.stream.commit().await
    }
}

impl<T> std::fmt::Debug for Batches<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Batches(up to {} within {:?})", self.n, self.within)
    }
}

/// The agent's sink topic (`#[agent(sink = "...")]`): values sent here are delivered before the
/// offsets of the records that produced them are committed.
pub struct Sink<T> {
    topic: Arc<str>,
    codec: Codec,
    /// This topic's send counter of the agent (`rill_records_out_total`), found on first send.
    counter: std::sync::OnceLock<Arc<std::sync::atomic::AtomicU64>>,
    _type: std::marker::PhantomData<fn(T)>,
}

impl<T: Record> Sink<T> {
    pub(crate) fn new(topic: &str, codec: Codec) -> Self {
        Sink {
            topic: Arc::from(topic),
            codec,
            counter: std::sync::OnceLock::new(),
            _type: std::marker::PhantomData,
        }
    }

    /// The sink topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends a value, keyed by its `#[record(key)]` field.
    pub async fn send(&self, value: &T) -> Result<()> {
        let key = value.key_ref();
        context::send_value(
            "Sink::send",
            Arc::clone(&self.topic),
            self.codec,
            key,
            value,
            Some(&self.counter),
        )
        .await
    }

    /// Sends a value with an explicit key.
    pub async fn send_keyed<K: KeyBytes + ?Sized>(&self, key: &K, value: &T) -> Result<()> {
        context::send_value(
            "Sink::send",
            Arc::clone(&self.topic),
            self.codec,
            Some(key.key_cow()),
            value,
            Some(&self.counter),
        )
        .await
    }
}

impl<T> std::fmt::Debug for Sink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sink({})", self.topic)
    }
}

impl<T> std::fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stream({})", self.core.shared.agent)
    }
}
