//! Joins: windowed stream-stream joins (inner, left, outer) on event time, and stream-table
//! joins against a [`Table`](crate::Table) or [`GlobalTable`](crate::GlobalTable).
//!
//! An agent over two topics takes one typed stream per topic (`#[agent(topics(views =
//! "pageviews", clicks = "clicks"))]`, or [`AgentContext::stream_of`](crate::AgentContext::stream_of));
//! the streams are read together:
//!
//! ```
//! use std::time::Duration;
//! use rill_runtime::{AgentSpec, App, JoinWindow, Record, TopicSpec};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
//! struct View { url: String, user: String, at: i64 }
//! impl Record for View {
//!     fn key(&self) -> Option<Vec<u8>> { Some(self.url.clone().into_bytes()) }
//!     fn event_time(&self) -> Option<i64> { Some(self.at) }
//! }
//! #[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
//! struct Click { url: String, at: i64 }
//! impl Record for Click {
//!     fn key(&self) -> Option<Vec<u8>> { Some(self.url.clone().into_bytes()) }
//!     fn event_time(&self) -> Option<i64> { Some(self.at) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> rill_runtime::Result<()> {
//! let agent = AgentSpec::new("view_to_click", "doc")
//!     .source(TopicSpec::of::<View>("views", "doc"))
//!     .source(TopicSpec::of::<Click>("clicks", "doc"))
//!     .co_partitioned()
//!     .sink(TopicSpec::of::<String>("converted", "doc"))
//!     .run(|mut ctx| async move {
//!         let views = ctx.stream_of::<View>("views")?;
//!         let clicks = ctx.stream_of::<Click>("clicks")?;
//!         let out = ctx.sink::<String>()?;
//!         let window = JoinWindow::within(Duration::from_secs(5));
//!         let mut joined = views.join(clicks, |v| v.url.clone(), |c| c.url.clone(), window);
//!         while let Some((view, click)) = joined.next().await {
//!             out.send(&format!("{} {} {}", view.user, view.url, click.at - view.at)).await?;
//!         }
//!         Ok(())
//!     });
//! let app = App::new("doc").partitions(2).agents([agent]).test().await?;
//! app.send_to("views", &View { url: "/a".into(), user: "u1".into(), at: 10_000 }).await?;
//! app.send_to("clicks", &Click { url: "/a".into(), at: 13_000 }).await?;
//! app.send_to("clicks", &Click { url: "/b".into(), at: 13_500 }).await?;
//! let got: Vec<String> = app.expect("converted", 1).await?;
//! assert_eq!(got, ["u1 /a 3000"]);
//! app.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Stream-stream joins
//!
//! [`Stream::join`] pairs a record of the left stream with every record of the right stream
//! that has the same join key and an event time within the [`JoinWindow`]: for a left record at
//! `t`, right records in `[t - before, t + after]` (`within(d)`: `before = after = d`).
//!
//! - **Once, as soon as both are there**: a pair is emitted when its second record arrives,
//!   whichever side that is, in order of arrival; each record is buffered, so it also meets the
//!   partners that come after it.
//! - **Left and outer joins** ([`Stream::left_join`], [`Stream::outer_join`]) also emit a
//!   record that met nothing, alone, once no partner can come any more: when the watermark
//!   passes `t + before + after + grace`. That is when a buffered record expires (for every
//!   kind of join), so the buffers hold a bounded span of event time. An outer side's records
//!   leave memory then; an inner side's at the next sweep, each time the watermark has moved
//!   half of `before + after + grace` (an expired record can meet nothing, as every record
//!   that could is late).
//! - **Late records**: a record is late when the watermark has passed the end of its own range
//!   plus grace (a left record at `t`: `t + after + grace`; a right one: `t + before + grace`),
//!   since partners it should meet may have expired. It is dropped and counted
//!   (`AgentStats::late_records`), neither paired nor emitted alone, as Kafka Streams does.
//! - **Watermarks** work as for windows ([`crate::window`]), with the two topics kept apart: a
//!   partition has reached the smaller of its two sides' largest event times (a side quiet for
//!   the idle timeout on a partition read to its end does not count), so one topic read ahead
//!   of the other during a backlog makes nothing late. Through the repartition topic the pump
//!   does the same over its source topic-partitions and stamps its watermark on the records.
//!   An instance takes the smallest over its partitions, idle partitions skipped after the
//!   idle timeout. A partition no pump feeds ([`JoinWindow::co_partitioned`] on the topics
//!   themselves) also goes by its own clock, the smaller of its sides' largest event times,
//!   when that is ahead: its records meet only records of that partition, so they expire,
//!   and a record is late, by that partition's time (as Kafka Streams goes by a task's
//!   stream time), not by the slowest partition the instance reads.
//! - **Co-partitioning**: the two sides meet in one partition only if records of one key are
//!   there. By default both sides are re-keyed by their key functions through one internal
//!   topic, `<app>-<agent>-<join name>-repartition` (each record tagged with its source topic),
//!   as `group_by` does. When both topics are already keyed by the join key (the key
//!   functions return the message key), [`JoinWindow::co_partitioned`] skips that hop; a
//!   record whose join key belongs to another partition is then a failed record (dead-lettered
//!   by default, with the reason). The source topics must have the same partition count
//!   either way: the worker refuses to start otherwise.
//! - **State**: both buffers and each partition's clock live in the table `<agent>-<join
//!   name>` (LMDB and the changelog `<app>-<agent>-<join name>-changelog`), written at each
//!   commit step with the offsets of the records that changed them. A restart, clean or after
//!   a rebuild from the changelog, finds the buffered records of the last commit: a pair whose
//!   records straddle the restart is emitted once. Expired records are deleted (tombstones in
//!   the compacted changelog). A match marks a record as met, and the mark is written again
//!   only on an outer side (the only one that reads it): changing a join from inner to outer
//!   over the same state needs a new join name. Buffered records are also held in memory,
//!   typed, so the joined types are `Clone`. What is buffered is the event-time span of the
//!   join plus, while a backlog is read, how far one topic is read ahead of the other (the
//!   watermark waits for the slower): the fetcher keeps an agent's topics within
//!   `Config::read_ahead` (30 s) of each other in event time, as Kafka Streams hands a task's
//!   records out in timestamp order (the benchmark's 1M-view backlog: ~200 MiB).
//!
//! - **Failures**: a pair (or lone record) whose handling fails counts against the record
//!   that completed it, under the agent's policy: dead-lettered, skipped, or stopping the
//!   worker. The join has already taken that record in, so retrying it (in place or through
//!   retry topics) does not make its pairs again, as for windows: handle a pair's errors in
//!   the agent when they must be retried.
//!
//! # Stream-table joins
//!
//! [`Stream::join_table`] and [`Stream::left_join_table`] enrich each record with the current
//! value of its key in a [`Table`](crate::Table) or [`GlobalTable`](crate::GlobalTable) (any
//! [`Lookup`]). A `Table` holds the keys of the partitions this instance reads, so look up keys
//! of the record's partition (the stream keyed like the table); a `GlobalTable` has every key.

mod driver;
pub(crate) mod state;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::base::codec::{Codec, KeyBytes};
use crate::base::error::{Error, Result};
use crate::base::failure::{Failure, FailureKind};
use crate::base::message::RawRecord;
use crate::base::record::Record;
use crate::instance::table::{GlobalTable, Table};
use crate::ops::stream::{Stream, TimeOf};
pub use driver::JoinStream;
use state::{Bounds, Side};

/// A record of one of two streams read together ([`Stream::either`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Either<A, B> {
    /// From the stream `either` was called on.
    Left(A),
    /// From the other stream.
    Right(B),
}

/// The bounds and options of a windowed join.
#[derive(Debug, Clone)]
pub struct JoinWindow {
    before: Duration,
    after: Duration,
    grace: Duration,
    idle_timeout: Option<Duration>,
    name: Option<String>,
    co_partitioned: bool,
}

impl JoinWindow {
    /// Records at most `d` apart meet, whichever comes first in event time.
    pub fn within(d: Duration) -> Self {
        JoinWindow {
            before: d,
            after: d,
            grace: Duration::ZERO,
            idle_timeout: None,
            name: None,
            co_partitioned: false,
        }
    }

    /// A right record may be at most `d` earlier than the left record it meets
    /// (`within(5 s).before(Duration::ZERO)`: clicks in the 5 s after a view).
    pub fn before(mut self, d: Duration) -> Self {
        self.before = d;
        self
    }

    /// A right record may be at most `d` later than the left record it meets.
    pub fn after(mut self, d: Duration) -> Self {
        self.after = d;
        self
    }

    /// How long past the end of its range a record is still accepted out of order (and
    /// buffered records kept); default 0.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Idle timeout of the join's watermark (default `Config::idle_timeout`); see
    /// [`crate::window`]. Through the repartition topic, the pump's own clock uses
    /// `Config::idle_timeout`.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Names the join's state table (`<agent>-<name>`) and repartition topic (default
    /// `join`). An agent runs one join (its instance has one stream); renaming a join starts
    /// it with empty buffers.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Both topics are keyed by the join key already: join in place, without the repartition
    /// topic. A record whose join key belongs to another partition fails (the agent's failure
    /// policy applies: dead-lettered by default).
    pub fn co_partitioned(mut self) -> Self {
        self.co_partitioned = true;
        self
    }

    fn bounds(&self) -> Bounds {
        Bounds {
            before: crate::ops::window::millis(self.before),
            after: crate::ops::window::millis(self.after),
            grace: crate::ops::window::millis(self.grace),
        }
    }
}

/// Reads a record's event time with a stream's extractor, else its own field.
fn time_of<T: Record>(f: &Option<TimeOf<T>>, value: &T) -> Option<i64> {
    match f {
        Some(f) => Some(f(value)),
        None => value.event_time(),
    }
}

impl<A: Record> Stream<A> {
    /// Reads this stream and `other` (the streams of two topics of one agent) as one stream, in
    /// the order their records arrive. The streams' `event_time` extractors and filters apply.
    pub fn either<B: Record>(self, other: Stream<B>) -> Stream<Either<A, B>> {
        self.either_parts(other).0
    }

    /// `either`, and the two topics with the streams' event-time extractors (for the join's
    /// repartitioning).
    #[allow(clippy::type_complexity, reason = "internal plumbing")]
    fn either_parts<B: Record>(
        mut self,
        mut other: Stream<B>,
    ) -> (
        Stream<Either<A, B>>,
        Option<(Arc<str>, Arc<str>)>,
        (Option<TimeOf<A>>, Option<TimeOf<B>>),
    ) {
        if self.core.is_husk() {
            std::mem::swap(&mut self.core, &mut other.core);
        }
        let times = (self.time.clone(), other.time.clone());
        let topics = match (self.topic.clone(), other.topic.clone()) {
            (Some(a), Some(b)) if a != b => Some((a, b)),
            (a, b) => {
                let message = match (a, b) {
                    (Some(a), Some(_)) => format!("the two streams both read `{a}`"),
                    _ => "reading two streams together needs the streams of two topics of the agent: `#[agent(topics(a = \"..\", b = \"..\"))]` or `AgentContext::stream_of`".to_owned(),
                };
                let error = Error::agent(&self.core.shared().agent, message);
                if self.core.is_husk() {
                    self.core.shared().fail(error);
                } else {
                    self.core.fail(error);
                }
                None
            }
        };
        let mut right = other.take_step();
        let names = topics.clone();
        let shared = self.core.shared().clone();
        let stream = self.restep(move |mut left| {
            Box::new(move |raw: &RawRecord| {
                let (a, b) = names.as_ref()?;
                let topic = crate::base::failure::side_topic(raw);
                if topic == &**a {
                    left(raw).map(Either::Left)
                } else if topic == &**b {
                    right(raw).map(Either::Right)
                } else {
                    // A third topic of the agent, or a record that lost its side tag.
                    shared.record_failed(
                        raw,
                        Failure {
                            kind: FailureKind::Error,
                            message: format!(
                                "a record of `{topic}` where `{a}` and `{b}` are read together"
                            ),
                        },
                    );
                    None
                }
            })
        });
        (stream, topics, times)
    }

    /// Windowed inner join with `other` (see [`crate::join`]): every pair of records with equal
    /// keys (`key`, `other_key`) and event times within `window`, once, when its second record
    /// arrives.
    pub fn join<B, K>(
        self,
        other: Stream<B>,
        key: impl Fn(&A) -> K + Send + Sync + 'static,
        other_key: impl Fn(&B) -> K + Send + Sync + 'static,
        window: JoinWindow,
    ) -> JoinStream<(A, B)>
    where
        A: Clone,
        B: Record + Clone,
        K: KeyBytes + 'static,
    {
        self.join_with(other, key, other_key, window, (false, false), |a, b| {
            Some((a?, b?))
        })
    }

    /// Windowed left join: the inner join's pairs, and each left record that met nothing,
    /// alone, once its window has closed.
    pub fn left_join<B, K>(
        self,
        other: Stream<B>,
        key: impl Fn(&A) -> K + Send + Sync + 'static,
        other_key: impl Fn(&B) -> K + Send + Sync + 'static,
        window: JoinWindow,
    ) -> JoinStream<(A, Option<B>)>
    where
        A: Clone,
        B: Record + Clone,
        K: KeyBytes + 'static,
    {
        self.join_with(other, key, other_key, window, (true, false), |a, b| {
            Some((a?, b))
        })
    }

    /// Windowed outer join: the inner join's pairs, and each record of either side that met
    /// nothing, alone, once its window has closed.
    pub fn outer_join<B, K>(
        self,
        other: Stream<B>,
        key: impl Fn(&A) -> K + Send + Sync + 'static,
        other_key: impl Fn(&B) -> K + Send + Sync + 'static,
        window: JoinWindow,
    ) -> JoinStream<(Option<A>, Option<B>)>
    where
        A: Clone,
        B: Record + Clone,
        K: KeyBytes + 'static,
    {
        self.join_with(other, key, other_key, window, (true, true), |a, b| {
            Some((a, b))
        })
    }

    /// What the windowed joins share: reads both streams as one, re-keys them by join key
    /// (through the join's repartition topic unless `co_partitioned`), pairs each record with
    /// its join key and hands the stream to the join operator.
    fn join_with<B, K, O>(
        self,
        other: Stream<B>,
        key: impl Fn(&A) -> K + Send + Sync + 'static,
        other_key: impl Fn(&B) -> K + Send + Sync + 'static,
        window: JoinWindow,
        outer: (bool, bool),
        shape: driver::Shape<A, B, O>,
    ) -> JoinStream<O>
    where
        A: Clone,
        B: Record + Clone,
        K: KeyBytes + 'static,
        O: Send + 'static,
    {
        let name = window.name.clone().unwrap_or_else(|| "join".to_owned());
        let codecs = (self.codec, other.codec);
        let mapped = self.mapped || other.mapped;
        let (mut stream, topics, times) = self.either_parts(other);
        let key: Arc<dyn Fn(&A) -> K + Send + Sync> = Arc::new(key);
        let other_key: Arc<dyn Fn(&B) -> K + Send + Sync> = Arc::new(other_key);
        if mapped {
            // The join decodes the topics' records again (the repartition pump, the reader):
            // a mapped item cannot be.
            let error = Error::agent(
                &stream.core.shared().agent,
                "`join` after `map`: join the topics' streams, then map the pairs",
            );
            stream.core.fail(error);
        }
        let partitions = stream
            .core
            .pipeline()
            .map_or(1, |p| p.source_partitions())
            .max(1);
        if let Some(topics) = topics
            && !window.co_partitioned
            && stream.core.rekeyed.as_deref() != Some(name.as_str())
        {
            let keys = (key.clone(), other_key.clone());
            repartition_sides(&mut stream, &name, topics, codecs, times, keys);
        }
        let keyed = key_sides(stream, key, other_key, window.co_partitioned, partitions);
        JoinStream::new(
            keyed,
            window.bounds(),
            window.idle_timeout,
            name,
            outer,
            shape,
        )
    }
}

/// Re-keys both sides of a join by their join keys through the join's repartition topic
/// `name`, as `group_by` does: the pump decodes each record by its side's topic (with that
/// side's codec and event-time extractor) and tags it with the topic, so the reader knows the
/// side. On error the stream fails, keeping its core.
#[allow(clippy::type_complexity, reason = "one pair per side")]
fn repartition_sides<A, B, K>(
    stream: &mut Stream<Either<A, B>>,
    name: &str,
    (a_topic, b_topic): (Arc<str>, Arc<str>),
    (a_codec, b_codec): (Codec, Codec),
    (a_time, b_time): (Option<TimeOf<A>>, Option<TimeOf<B>>),
    (ka, kb): (
        Arc<dyn Fn(&A) -> K + Send + Sync>,
        Arc<dyn Fn(&B) -> K + Send + Sync>,
    ),
) where
    A: Record,
    B: Record,
    K: KeyBytes + 'static,
{
    let sides = vec![a_topic.clone(), b_topic.clone()];
    match stream.core.pipeline().cloned() {
        None => {
            let error = Error::agent(
                &stream.core.shared().agent,
                "joins apply to an agent's own streams",
            );
            stream.core.fail(error);
        }
        Some(pipeline) => {
            let key_of = Box::new(
                move |raw: &RawRecord| -> Result<(Option<Vec<u8>>, Option<i64>)> {
                    let bytes = raw.value.as_deref().unwrap_or_default();
                    let topic = crate::base::failure::side_topic(raw);
                    let bad = |source| Error::Codec {
                        topic: topic.to_owned(),
                        source,
                    };
                    if topic == &*a_topic {
                        let a = crate::base::record::decode_from::<A>(topic, bytes, a_codec)
                            .map_err(bad)?;
                        Ok((Some(ka(&a).key_bytes()), time_of(&a_time, &a)))
                    } else if topic == &*b_topic {
                        let b = crate::base::record::decode_from::<B>(topic, bytes, b_codec)
                            .map_err(bad)?;
                        Ok((Some(kb(&b).key_bytes()), time_of(&b_time, &b)))
                    } else {
                        Err(Error::Agent {
                            agent: String::new(),
                            message: format!(
                                "a record of `{topic}` in a join of `{a_topic}` and `{b_topic}`"
                            ),
                        })
                    }
                },
            );
            pipeline.mark_windowed();
            let core = stream.take_core();
            let target = crate::instance::record_loop::setup::RekeyTarget::Field(name);
            stream.core = match pipeline.group_by(target, core, key_of, sides) {
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
        }
    }
}

/// Pairs each record of a join's stream with its join key's bytes (`key` for the left side,
/// `other_key` for the right). When `check` (`JoinWindow::co_partitioned`), a record whose
/// join key belongs to another of the `partitions` fails instead.
fn key_sides<A, B, K>(
    stream: Stream<Either<A, B>>,
    key: Arc<dyn Fn(&A) -> K + Send + Sync>,
    other_key: Arc<dyn Fn(&B) -> K + Send + Sync>,
    check: bool,
    partitions: i32,
) -> Stream<driver::Keyed<A, B>>
where
    A: Send + 'static,
    B: Send + 'static,
    K: KeyBytes + 'static,
{
    let shared = stream.core.shared().clone();
    stream.restep(move |mut step| {
        Box::new(move |raw: &RawRecord| {
            let (side, key) = match step(raw)? {
                Either::Left(a) => {
                    let k = key(&a).into_key_bytes();
                    (Side::Left(a), k)
                }
                Either::Right(b) => {
                    let k = other_key(&b).into_key_bytes();
                    (Side::Right(b), k)
                }
            };
            let fix = "drop `JoinWindow::co_partitioned` to repartition";
            if check
                && crate::ops::stream::reject_misplaced(
                    &shared, raw, &key, partitions, "join key", fix,
                )
            {
                return None;
            }
            Some((side, key))
        })
    })
}

/// A table a stream can be joined with: [`Table`] and [`GlobalTable`].
pub trait Lookup<K, V>: Send + 'static {
    /// The current value of a key.
    fn lookup(&self, key: &K) -> Result<Option<V>>;
}

impl<K, V> Lookup<K, V> for Table<K, V>
where
    K: Serialize + DeserializeOwned + KeyBytes + 'static,
    V: Serialize + DeserializeOwned + 'static,
{
    /// Like a write, a lookup must stay in the partition of the record being processed: this
    /// instance's copy of any other partition may be missing or stale.
    fn lookup(&self, key: &K) -> Result<Option<V>> {
        self.check_write(key, self.partition_of(key))?;
        self.get(key)
    }
}

impl<K, V> Lookup<K, V> for GlobalTable<K, V>
where
    K: KeyBytes + 'static,
    V: Record,
{
    fn lookup(&self, key: &K) -> Result<Option<V>> {
        self.get(key)
    }
}

impl<T: Send + 'static> Stream<T> {
    /// Stream-table join: each record with the current value of its key in `table`; records
    /// whose key has no value are skipped (they count as finished). A failing lookup (a stored
    /// value that does not decode) stops the worker, as any table error does.
    pub fn join_table<K: 'static, V: 'static>(
        self,
        table: impl Lookup<K, V>,
        key: impl Fn(&T) -> K + Send + 'static,
    ) -> Stream<(T, V)> {
        self.lookup_with(table, key, |t, v| Some((t, v?)))
    }

    /// Stream-table left join: each record with the current value of its key in `table`, or
    /// `None`.
    pub fn left_join_table<K: 'static, V: 'static>(
        self,
        table: impl Lookup<K, V>,
        key: impl Fn(&T) -> K + Send + 'static,
    ) -> Stream<(T, Option<V>)> {
        self.lookup_with(table, key, |t, v| Some((t, v)))
    }

    fn lookup_with<K: 'static, V: 'static, O: 'static>(
        self,
        table: impl Lookup<K, V>,
        key: impl Fn(&T) -> K + Send + 'static,
        shape: fn(T, Option<V>) -> Option<O>,
    ) -> Stream<O> {
        let shared = self.core.shared().clone();
        let topic = self.topic.clone();
        let mut out = self.restep(move |mut step| {
            Box::new(move |raw: &RawRecord| {
                let value = step(raw)?;
                match table.lookup(&key(&value)) {
                    Ok(found) => shape(value, found),
                    Err(e) => {
                        shared.fail(e);
                        None
                    }
                }
            })
        });
        out.topic = topic;
        out
    }
}
