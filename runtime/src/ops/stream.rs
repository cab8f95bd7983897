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
use crate::instance::record_loop::setup::{AgentSetup, RekeyTarget};
use crate::instance::table::global::GlobalTable;
use crate::ops::punctuate::{Punctuation, PunctuationTime, Punctuator};

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
    /// `echo`s: topics records are copied to, each with the flag its step sets for a record
    /// that reached it.
    echo: Vec<EchoTo>,
    /// The copies of the record in hand being sent, and the item (if any) held until they are.
    echoing: Option<(futures::future::BoxFuture<'static, Result<()>>, Option<T>)>,
    /// `every` and `every_event_time`.
    punctuators: Vec<Punctuator>,
    /// The largest event time handed out (event-time punctuation follows it).
    max_event_ms: Option<i64>,
}

/// One `Stream::echo`: its topics, and whether the record in hand reached it.
#[derive(Clone)]
struct EchoTo {
    topics: Arc<[Arc<str>]>,
    reached: Arc<std::sync::atomic::AtomicBool>,
    /// The topics were created (or found) before the first copy: rill never lets a broker
    /// auto-create a topic.
    ensured: Arc<std::sync::atomic::AtomicBool>,
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
            echo: Vec::new(),
            echoing: None,
            punctuators: Vec::new(),
            max_event_ms: None,
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
        let key_fn = key.clone();
        let stream = self.rekey(RekeyTarget::Field(name), move |value, _| {
            Some(key_fn(value).key_bytes())
        });
        KeyedStream::new(stream, key, name)
    }

    /// Sends every record to `topic` and continues from there (Faust's `stream.through`, Kafka
    /// Streams' `repartition` into a named topic): records keep their key, value, headers and
    /// event time, and the agent reads them back from `topic` through a consumer group of its
    /// own (`<app>-<agent>-through`), so work after `through` is spread by the topic's
    /// partitions and survives a restart of the source's consumers. Records without a key go
    /// to any partition.
    ///
    /// The topic is created with the source's partition count (and must have it), so the
    /// agent's tables stay partitioned like the records; unlike `group_by`'s internal topic it
    /// keeps its records as its retention says, for other readers. An agent re-keys once:
    /// `through` or `group_by`, not both.
    pub fn through(self, topic: &str) -> Stream<T> {
        self.rekey(RekeyTarget::Topic(topic), |_, raw| {
            raw.key.as_ref().map(|k| k.to_vec())
        })
    }

    /// Turns this stream's source into a pump into `target`, keyed by `key_of` (given the
    /// decoded record and the raw one), and returns the stream read back from it.
    fn rekey(
        self,
        target: RekeyTarget<'_>,
        key_of: impl Fn(&T, &RawRecord) -> Option<Vec<u8>> + Send + 'static,
    ) -> Stream<T> {
        let (codec, time) = (self.codec, self.time.clone());
        let marker = match target {
            RekeyTarget::Field(name) => name.to_owned(),
            RekeyTarget::Topic(topic) => format!("through:{topic}"),
        };
        let mut this = self;
        let core = if this.core.rekeyed.as_deref() == Some(marker.as_str()) {
            // The agent function runs again (after a failure) on its re-keyed stream.
            this.take_core()
        } else {
            match this.rekey_refused() {
                Some(error) => {
                    let mut core = this.take_core();
                    core.fail(error);
                    core
                }
                None => this.start_rekey(target, marker, key_of),
            }
        };
        let mut stream = Stream::new(core, codec);
        if let Some(f) = time {
            stream = stream.event_time(move |v: &T| f(v));
        }
        stream
    }

    /// Why this stream cannot be re-keyed, if it cannot.
    fn rekey_refused(&self) -> Option<Error> {
        let agent = &self.core.shared.agent;
        if !self.echo.is_empty() {
            // The pump reads the source's records itself, past this stream's steps.
            Some(Error::agent(
                agent,
                "`echo` before `group_by` or `through`: echo the re-keyed stream instead (it has the same records)",
            ))
        } else if self.mapped {
            // The pump decodes the topic's records, not the mapped items.
            Some(Error::agent(
                agent,
                "`group_by` or `through` after `map`: re-key the stream first, then map",
            ))
        } else if self.topic.is_some() {
            // One topic of a multi-topic agent: its core reads the other topics too.
            Some(Error::agent(
                agent,
                "`group_by` or `through` on one stream of an agent over several topics; join them (`join`, `either`) instead",
            ))
        } else if self.core.pipeline.is_none() {
            Some(Error::agent(
                agent,
                "`group_by` and `through` apply to an agent's own stream",
            ))
        } else {
            None
        }
    }

    fn start_rekey(
        &mut self,
        target: RekeyTarget<'_>,
        marker: String,
        key_of: impl Fn(&T, &RawRecord) -> Option<Vec<u8>> + Send + 'static,
    ) -> RecordLoop {
        let (codec, time_fn) = (self.codec, self.time.clone());
        let key_of = Box::new(
            move |raw: &RawRecord| -> Result<(Option<Vec<u8>>, Option<i64>)> {
                let bytes = raw.value.as_deref().unwrap_or_default();
                let value = crate::base::record::decode_from::<T>(&raw.topic, bytes, codec)
                    .map_err(|source| Error::Codec {
                        topic: raw.topic.to_string(),
                        source,
                    })?;
                let at = match &time_fn {
                    Some(f) => Some(f(&value)),
                    None => value.event_time(),
                };
                Ok((key_of(&value, raw), at))
            },
        );
        let pipeline = self
            .core
            .pipeline
            .clone()
            .expect("checked by rekey_refused");
        match pipeline.group_by(target, self.take_core(), key_of, Vec::new()) {
            Ok(mut core) => {
                core.rekeyed = Some(marker);
                core
            }
            Err(failed) => {
                let (error, mut core) = *failed;
                core.fail(error);
                core
            }
        }
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
    // A topic with registry-coded keys is partitioned by their framed form.
    let placed = crate::base::registry_keys::wire_key(&raw.topic, key);
    let owner = crate::base::partitioner::partition_for_key(&placed, partitions);
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
        Some(bytes) => crate::base::record::decode_from::<T>(&raw.topic, bytes, codec),
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
    pub fn map<U: Send + 'static>(self, mut f: impl FnMut(T) -> U + Send + 'static) -> Stream<U> {
        self.mapped_with(move |mut step| Box::new(move |raw| step(raw).map(&mut f)))
    }

    /// Joins each record with the value a [`GlobalTable`] holds under a key taken from the
    /// record: a foreign-key stream-table join (Kafka Streams' `KStream#leftJoin(GlobalKTable,
    /// keySelector, joiner)`). The table's topic is keyed and partitioned by its own key, not
    /// the stream's: every worker holds all of it. `None` when the table has no such key. A
    /// lookup that fails (a stored value that no longer decodes) sends the record to the
    /// agent's failure policy.
    pub fn left_join_global<K, V>(
        self,
        table: &GlobalTable<K, V>,
        mut key: impl FnMut(&T) -> K + Send + 'static,
    ) -> Stream<(T, Option<V>)>
    where
        K: KeyBytes + 'static,
        V: Record,
    {
        let table = table.clone();
        let shared = self.core.shared.clone();
        self.mapped_with(move |mut step| {
            Box::new(move |raw| {
                let value = step(raw)?;
                match table.get(&key(&value)) {
                    Ok(found) => Some((value, found)),
                    Err(e) => {
                        let message = format!(
                            "looking the record up in global table `{}`: {e}",
                            table.topic()
                        );
                        shared.record_failed(
                            raw,
                            Failure {
                                kind: FailureKind::Error,
                                message,
                            },
                        );
                        None
                    }
                }
            })
        })
    }

    /// Like [`Stream::left_join_global`], keeping only the records whose key the table holds
    /// (an inner join).
    pub fn join_global<K, V>(
        self,
        table: &GlobalTable<K, V>,
        key: impl FnMut(&T) -> K + Send + 'static,
    ) -> Stream<(T, V)>
    where
        K: KeyBytes + 'static,
        V: Record,
    {
        self.left_join_global(table, key).mapped_with(|mut step| {
            Box::new(move |raw| step(raw).and_then(|(value, found)| Some((value, found?))))
        })
    }

    /// Copies every record that reaches this point of the stream to each of `topics`, as it
    /// was read (key, value, headers, timestamp), in the commit step of the record: the copies
    /// are durable before its offset is committed, and under exactly-once they commit in its
    /// transaction (Faust's `stream.echo`). Records a filter before this point drops are not
    /// copied; later filters do not matter.
    pub fn echo<S: AsRef<str>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        let topics: Arc<[Arc<str>]> = topics.into_iter().map(|t| Arc::from(t.as_ref())).collect();
        let reached = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = reached.clone();
        let mut step = self.take_step();
        self.step = Box::new(move |raw| {
            let value = step(raw)?;
            flag.store(true, Ordering::Relaxed);
            Some(value)
        });
        self.echo.push(EchoTo {
            topics,
            reached,
            ensured: Arc::default(),
        });
        self
    }

    /// Calls `f` every `interval` of the worker's clock, between two records (also while the
    /// stream waits for records), inside the instance: it may write the tables of every
    /// partition the instance owns and send records ([`Punctuation::send`]) in the instance's
    /// commit step (Kafka Streams' wall-clock punctuator). An error from `f` stops the agent.
    pub fn every(
        mut self,
        interval: std::time::Duration,
        f: impl FnMut(&mut Punctuation) -> Result<()> + Send + 'static,
    ) -> Self {
        self.punctuators.push(Punctuator::new(
            PunctuationTime::WallClock,
            interval,
            Box::new(f),
        ));
        self
    }

    /// Calls `f` each time the largest event time the stream handed out passes another
    /// `interval` (Kafka Streams' stream-time punctuator); otherwise like [`Stream::every`].
    pub fn every_event_time(
        mut self,
        interval: std::time::Duration,
        f: impl FnMut(&mut Punctuation) -> Result<()> + Send + 'static,
    ) -> Self {
        self.punctuators.push(Punctuator::new(
            PunctuationTime::EventTime,
            interval,
            Box::new(f),
        ));
        self
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
    pub fn events(self) -> Stream<Event<T>> {
        self.mapped_with(|mut step| {
            Box::new(move |raw| {
                let meta = Metadata::of(raw);
                step(raw).map(|value| Event { value, meta })
            })
        })
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

    /// The same stream (same topic) with its items made by `wrap(step)` from the records: no
    /// longer the topic's records (`mapped`).
    fn mapped_with<U>(mut self, wrap: impl FnOnce(Step<T>) -> Step<U>) -> Stream<U> {
        let step = self.take_step();
        Stream {
            core: self.take_core(),
            step: wrap(step),
            codec: self.codec,
            time: None,
            topic: self.topic.clone(),
            mapped: true,
            echo: self.echo.clone(),
            echoing: None,
            punctuators: std::mem::take(&mut self.punctuators),
            max_event_ms: self.max_event_ms,
        }
    }

    /// A stream of `U` over this stream's core, reading with `step` (made from this stream's
    /// step); the result reads every topic of the core.
    pub(crate) fn restep<U>(self, step: impl FnOnce(Step<T>) -> Step<U>) -> Stream<U> {
        let mut stream = self.mapped_with(step);
        stream.topic = None;
        stream
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
            if this.echoing.is_none() && !this.punctuators.is_empty() {
                match this.punctuate(cx) {
                    Ok(sends) if sends.is_empty() => {}
                    Ok(sends) => this.echoing = Some((send_all(&this.core.shared, sends), None)),
                    Err(e) => {
                        this.core.fail(e);
                        return Poll::Ready(None);
                    }
                }
            }
            if let Some((sending, _)) = &mut this.echoing {
                let sent = ready!(sending.as_mut().poll(cx));
                let held = this.echoing.take().and_then(|(_, item)| item);
                if let Err(e) = sent {
                    this.core.fail(e);
                    return Poll::Ready(None);
                }
                match held {
                    Some(value) => return Poll::Ready(Some(value)),
                    None => continue,
                }
            }
            // Only an agent with tables built from topics looks its records' topics up.
            let fed = this
                .core
                .shared
                .has_feeds()
                .then(|| this.core.shared.clone());
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
                    if let Some(shared) = &fed
                        && fed_a_table(shared, raw)
                    {
                        continue;
                    }
                    let item = (this.step)(raw);
                    if let Some((copies, unknown)) = echo_copies(&this.echo, raw) {
                        let sending = send_echoes(
                            &this.core.shared,
                            this.core.pipeline.clone(),
                            copies,
                            unknown,
                        );
                        this.echoing = Some((sending, item));
                        continue;
                    }
                    if let Some(value) = item {
                        if !this.punctuators.is_empty() {
                            let at = this.core.shared.position.event_time();
                            this.max_event_ms = this.max_event_ms.max(at);
                        }
                        return Poll::Ready(Some(value));
                    }
                }
            }
        }
    }
}

impl<T> Stream<T> {
    /// Runs the punctuators that are due; the records they sent.
    fn punctuate(&mut self, cx: &mut Context<'_>) -> Result<Vec<crate::base::message::OutRecord>> {
        let shared = self.core.shared.clone();
        let position = &shared.position;
        let wall = position.clock.now_ms();
        let before = position
            .current_partition
            .swap(crate::instance::position::PUNCTUATING, Ordering::Relaxed);
        let mut sends = Vec::new();
        let mut outcome = Ok(());
        for p in &mut self.punctuators {
            let now = match p.time() {
                PunctuationTime::WallClock => Some(wall),
                PunctuationTime::EventTime => self.max_event_ms,
            };
            match p.poll_due(cx, &position.clock, now, || position.owned_partitions()) {
                Ok(sent) => sends.extend(sent),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        position.current_partition.store(before, Ordering::Relaxed);
        outcome.map(|()| sends)
    }
}

/// A record of a table's topic (`AgentSpec::table_of`) updates the table, and the agent never
/// sees it: true when `raw` was one (a failure to apply it goes to the dead letters).
fn fed_a_table(shared: &InstanceState, raw: &RawRecord) -> bool {
    let Some(feed) = shared.feed_of(&raw.topic) else {
        return false;
    };
    shared.position.feeding.store(true, Ordering::Relaxed);
    let fed = feed(raw);
    shared.position.feeding.store(false, Ordering::Relaxed);
    if let Err(e) = fed {
        shared.record_failed(
            raw,
            Failure {
                kind: FailureKind::Error,
                message: e.to_string(),
            },
        );
    }
    true
}

/// Sends an `echo`'s `copies` through the instance, in order, as one future, creating the
/// `unknown` topics first.
fn send_echoes(
    shared: &Arc<InstanceState>,
    setup: Option<Arc<dyn AgentSetup>>,
    copies: Vec<crate::base::message::OutRecord>,
    unknown: Vec<Arc<str>>,
) -> futures::future::BoxFuture<'static, Result<()>> {
    let shared = shared.clone();
    Box::pin(async move {
        if let Some(setup) = setup {
            for topic in unknown {
                let spec = crate::base::spec::TopicSpec::of::<Vec<u8>>(&topic, "echo");
                setup.ensure_topic(spec).await?;
            }
        }
        for copy in copies {
            shared.send(copy, None).await?;
        }
        Ok(())
    })
}

/// Sends `records` through the instance, in order, as one future.
fn send_all(
    shared: &Arc<InstanceState>,
    records: Vec<crate::base::message::OutRecord>,
) -> futures::future::BoxFuture<'static, Result<()>> {
    let shared = shared.clone();
    Box::pin(async move {
        for record in records {
            shared.send(record, None).await?;
        }
        Ok(())
    })
}

/// The copies `echo`s want of `raw` (those whose point it reached; each flag is reset), and
/// the topics to create first (the first copy of each `echo`).
fn echo_copies(
    echo: &[EchoTo],
    raw: &RawRecord,
) -> Option<(Vec<crate::base::message::OutRecord>, Vec<Arc<str>>)> {
    let mut copies = Vec::new();
    let mut unknown = Vec::new();
    for e in echo {
        if e.reached.swap(false, Ordering::Relaxed) {
            if !e.ensured.swap(true, Ordering::Relaxed) {
                unknown.extend(e.topics.iter().cloned());
            }
            copies.extend(e.topics.iter().map(|topic| {
                crate::base::message::OutRecord {
                    topic: topic.clone(),
                    partition: None,
                    key: raw.key.as_deref().map(<[u8]>::to_vec),
                    value: raw.value.as_deref().map(<[u8]>::to_vec),
                    timestamp: raw
                        .timestamp
                        .unwrap_or_else(crate::base::message::now_millis),
                    headers: raw.headers.clone(),
                }
            }));
        }
    }
    (!copies.is_empty()).then_some((copies, unknown))
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
