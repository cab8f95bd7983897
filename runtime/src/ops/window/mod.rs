//! Windows over event time: tumbling, hopping, sliding and session windows on a stream re-keyed
//! with `group_by`, aggregated per key and window, emitted when a window closes (or on every
//! change), with their state kept in the table store and its changelog.
//!
//! ```
//! use std::time::Duration;
//! use rill_runtime::{AgentSpec, App, TopicSpec, Record, Field};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Clone)]
//! struct View { url: String, at: i64 }
//! impl Record for View {
//!     fn event_time(&self) -> Option<i64> { Some(self.at) }
//! }
//! const URL: Field<View, String> = { fn get(v: &View) -> &String { &v.url } Field::new("url", get) };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> rill_runtime::Result<()> {
//! let count = AgentSpec::new("count", "doc")
//!     .source(TopicSpec::of::<View>("views", "doc"))
//!     .sink(TopicSpec::of::<String>("counts", "doc"))
//!     .run(|mut ctx| async move {
//!         let views = ctx.stream::<View>()?;
//!         let out = ctx.sink::<String>()?;
//!         let mut windows = views.group_by(URL).tumbling(Duration::from_secs(60)).count();
//!         while let Some(w) = windows.next().await {
//!             out.send(&format!("{} [{}, {}) {}", w.key, w.start, w.end, w.value)).await?;
//!         }
//!         Ok(())
//!     });
//! let app = App::new("doc").partitions(1).agents([count]).test().await?;
//! for (url, at) in [("/a", 1_000), ("/a", 30_000), ("/b", 59_000), ("/a", 61_000)] {
//!     app.send_to("views", &View { url: url.into(), at }).await?;
//! }
//! // The record at 61 s moved the watermark past the first minute: it closed.
//! let got: Vec<String> = app.expect("counts", 2).await?;
//! assert!(got.contains(&"/a [0, 60000) 2".to_string()));
//! assert!(got.contains(&"/b [0, 60000) 1".to_string()));
//! app.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Time
//!
//! - **Event time** is the record's `#[record(timestamp)]` field, else the message timestamp,
//!   or what [`Stream::event_time`](crate::Stream::event_time) extracts. Records written to
//!   sinks, topics and repartition topics carry the event time of the record being processed as
//!   their message timestamp, so time survives every hop.
//! - **Watermarks**: a partition's watermark is the largest event time seen on it; an agent
//!   instance's watermark is the smallest over the partitions it reads. A window `[start, end)`
//!   closes when the watermark reaches `end + grace`; a record is *late* when every window it
//!   belongs to has closed (sliding windows: when it was added to no window, see below): it is
//!   counted (`AgentStats::late_records`) and dropped, or sent to the topic given to
//!   [`Windows::late_events_to`]. It is never merged into a closed window.
//! - **Across `group_by`**: a repartition partition gets the source partitions' records
//!   interleaved as the pump read them, so its watermark is the pump's (the smallest of the
//!   source partitions' watermarks), carried in a header and in markers the pump sends to every
//!   repartition partition, not the largest event time it received. A backlog is not lost to
//!   the interleaving.
//! - **Idle partitions**: a partition without records for the idle timeout (wall clock;
//!   `Config::idle_timeout`, `RILL_IDLE_TIMEOUT_MS`, default 10 s, or [`Windows::idle_timeout`])
//!   stops holding the watermark back. When every partition is idle, the watermark advances
//!   with the wall clock from the largest event time seen: it is `max_seen + (now -
//!   last_record_arrival - idle_timeout)`. So the last windows of a stream that stops close
//!   `idle_timeout + grace` after they would have closed had records kept flowing. A partition
//!   counts as idle only when it has been read to its end: records waiting to be read, however
//!   long they wait, keep it active. Records that were only delayed upstream for longer than
//!   the idle timeout (a lagging producer) may arrive behind the watermark and be late: set
//!   the idle timeout above the longest such delay. Partitions that never get a record hold
//!   the first windows back for the idle timeout after each start or rebalance.
//! - **State**: open windows (and the closed sliding windows still retained) and each
//!   partition's watermark live in a table `<agent>-<window name>` (LMDB, changelog
//!   `<app>-<agent>-<window name>-changelog`), committed with the offsets of the records that
//!   changed them. They survive restarts and move with their partitions. A closed window's
//!   state is deleted (a tombstone in the changelog; LMDB reuses its pages), a sliding
//!   window's once it leaves its retention, so an endless stream keeps a bounded store. The
//!   windows kept are also held in memory, typed.
//! - **Restarts**: a clean stop commits open windows; they continue after the restart and are
//!   emitted once. After a crash (at-least-once) a window may be emitted again, never lost.
//!
//! # Window kinds
//!
//! - [`tumbling(size)`](crate::stream::KeyedStream::tumbling): `[k·size, (k+1)·size)`.
//! - [`hopping(size, step)`](crate::stream::KeyedStream::hopping): windows of `size` starting
//!   every `step`; a record is in `size / step` of them. With an aggregation whose partial
//!   states merge in any order (`count`, `sum`, `min`, `max`, `mean`, [`Windows::combine`])
//!   and [`Emit::Final`], the state is kept per *pane* of `gcd(size, step)`: a record updates
//!   one pane, and a window is its panes merged when it closes, so a record costs one update
//!   whatever `size / step` is. The windows and late records are those of keeping every
//!   window whole (which `reduce`, `fold`, `collect`, `aggregate` and [`Emit::Update`] do);
//!   float sums and means may differ in their last bits.
//! - [`sliding(size)`](crate::stream::KeyedStream::sliding): Kafka Streams' sliding windows.
//!   `SlidingWindows.ofTimeDifferenceAndGrace(d, grace)` is `sliding(d + 1 ms).grace(grace)`
//!   here: Kafka Streams' window `[start, start + d]` (both ends included) is `[start, start +
//!   size)`. Each window keeps its aggregate and the largest event time in it, no records. A
//!   record at `t` is added to its key's open windows that contain it; it makes its left window
//!   `[t - size + 1, t + 1)` (from the window ending before it, when the previous record is in
//!   range), the previous record's right window when `t` falls in it, and its own right window
//!   `[t + 1, t + 1 + size)` when a later record came first (a copy of the aggregate of the
//!   latest window containing `t`, without `t`). Records less than `d` after the epoch share
//!   `[0, size)`, as in Kafka Streams; records before the epoch are late. A record is late when
//!   `[t, t + size)` has closed or it was added to no window (it may still have made a copy).
//!   A closed window is emitted once and kept, never updated, for `2d + grace` behind the
//!   latest window start of its partition (Kafka Streams' store retention), because later
//!   records read it. Given the same watermark (Kafka Streams' stream time is per partition:
//!   one partition per agent instance), windows, counts and late records are Kafka Streams
//!   4.1.1's (`tests/window_differential.rs` runs both on random streams), but for one
//!   deliberate difference: with `emitStrategy(onWindowClose())` Kafka Streams never emits the
//!   windows its store drops in the step that closes them, which happens when stream time
//!   jumps by about `d` or more at once (a pause in the data); rill emits every window when it
//!   closes.
//! - [`session(gap)`](crate::stream::KeyedStream::session): records of a key less than or
//!   equal to `gap` apart form one session; sessions merge when a record bridges them. A
//!   session's `start` and `end` are its first and last event times (both included, as in
//!   Kafka Streams); it closes when the watermark reaches `end + gap + grace`, when Kafka
//!   Streams' session store stops returning it (its retention is `gap + grace`), so the same
//!   sessions form (`tests/window_differential.rs`). One deliberate difference, at that
//!   boundary: a record at `t` arriving when the watermark is exactly `t + gap + grace` can
//!   only form a session that is closed already; rill counts it late, where Kafka Streams
//!   (which drops it only past that time) makes the session and emits it, possibly a second
//!   time with bounds it already emitted. rill emits each window once.
//!
//! # Emitting
//!
//! [`Emit::Final`] (the default) yields each window once, when it closes; [`Emit::Update`]
//! yields the window's new value after every record that changed it. Either way
//! [`WindowStream::on_window_close`] runs for every window as it closes.

pub(crate) mod driver;
pub(crate) mod state;
pub mod table;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::base::codec::KeyBytes;
use crate::base::record::Record;
use crate::ops::stream::KeyedStream;
pub use driver::WindowStream;
pub use table::WindowedTable;

/// One window's result.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct WindowResult<K, V> {
    /// The key (`group_by`'s).
    pub key: K,
    /// Window start, ms since the epoch (inclusive).
    pub start: i64,
    /// Window end, ms since the epoch: exclusive for tumbling, hopping and sliding windows;
    /// a session's last event time (inclusive).
    pub end: i64,
    /// The aggregated value.
    pub value: V,
}

/// When windows are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emit {
    /// Once, when the window closes (the default).
    #[default]
    Final,
    /// After every record that changed the window.
    Update,
}

/// Which windows a definition makes, with their sizes in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowKind {
    Tumbling { size: i64 },
    Hopping { size: i64, step: i64 },
    Sliding { size: i64 },
    Session { gap: i64 },
}

impl WindowKind {
    fn label(self) -> String {
        match self {
            WindowKind::Tumbling { size } => format!("tumbling-{size}ms"),
            WindowKind::Hopping { size, step } => format!("hopping-{size}ms-{step}ms"),
            WindowKind::Sliding { size } => format!("sliding-{size}ms"),
            WindowKind::Session { gap } => format!("session-{gap}ms"),
        }
    }
}

/// Marks windows of fixed size (tumbling, hopping, sliding): their state never merges.
#[derive(Debug)]
pub enum Fixed {}
/// Marks session windows: their aggregations must merge (two sessions joined by a record).
#[derive(Debug)]
pub enum Sessions {}

/// A user struct that accumulates a window's records: `Default` is the empty window, `add`
/// takes one record. Mark the struct with `#[window_state]`, which derives its serde plumbing
/// (the state is stored in the table store and its changelog as JSON).
///
/// ```
/// use std::collections::BTreeSet;
/// use rill_runtime::window::{WindowState, MergeState};
///
/// #[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
/// struct Visits { views: u64, users: BTreeSet<String> }
///
/// impl WindowState<(String, String)> for Visits {
///     fn add(&mut self, (user, _url): &(String, String)) {
///         self.views += 1;
///         self.users.insert(user.clone());
///     }
/// }
/// impl MergeState for Visits {
///     fn merge(&mut self, other: Self) {
///         self.views += other.views;
///         self.users.extend(other.users);
///     }
/// }
/// ```
pub trait WindowState<T>: Serialize + DeserializeOwned + Default + Clone + Send + 'static {
    /// Adds one record to the window.
    fn add(&mut self, item: &T);
}

/// How two sessions' states combine when a record joins them (session windows only).
pub trait MergeState {
    /// Folds `other` (the later session) into `self`.
    fn merge(&mut self, other: Self);
}

type InitFn<S> = Box<dyn Fn() -> S + Send + Sync>;
type AddFn<T, S> = Box<dyn Fn(&mut S, &T) + Send + Sync>;
type MergeFn<S> = Box<dyn Fn(&mut S, S) + Send + Sync>;
type OutputFn<S, O> = Box<dyn Fn(&S) -> O + Send + Sync>;

/// An aggregation: its empty state, how a record and another state fold in, what it emits.
pub(crate) struct Agg<T, S, O> {
    pub(crate) name: &'static str,
    pub(crate) init: InitFn<S>,
    pub(crate) add: AddFn<T, S>,
    pub(crate) merge: Option<MergeFn<S>>,
    /// Merging partial states, in any order, gives the state of adding the records one by one
    /// in their order (count, sum, min, max, mean, `combine`): hopping windows may then keep
    /// panes (`state/panes.rs`).
    pub(crate) order_free: bool,
    pub(crate) output: OutputFn<S, O>,
}

/// A window definition on a keyed stream; finish it with an aggregation (`count`, `sum`, ...),
/// which returns the [`WindowStream`] of results.
pub struct Windows<T, K, W = Fixed> {
    keyed: KeyedStream<T, K>,
    kind: WindowKind,
    options: Options,
    _kind: PhantomData<fn() -> W>,
}

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) grace: i64,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) emit: Emit,
    pub(crate) late_topic: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) collect_limit: usize,
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl<T, K> KeyedStream<T, K>
where
    T: Record,
    K: KeyBytes + Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    fn windows<W>(self, kind: WindowKind) -> Windows<T, K, W> {
        Windows {
            keyed: self,
            kind,
            options: Options {
                grace: 0,
                idle_timeout: None,
                emit: Emit::Final,
                late_topic: None,
                name: None,
                collect_limit: 10_000,
            },
            _kind: PhantomData,
        }
    }

    /// Tumbling windows of `size`: `[k·size, (k+1)·size)`.
    pub fn tumbling(self, size: Duration) -> Windows<T, K, Fixed> {
        let size = millis(size).max(1);
        self.windows(WindowKind::Tumbling { size })
    }

    /// Hopping windows of `size` starting every `step` (`step <= size`).
    pub fn hopping(self, size: Duration, step: Duration) -> Windows<T, K, Fixed> {
        let size = millis(size).max(1);
        let step = millis(step).clamp(1, size);
        self.windows(WindowKind::Hopping { size, step })
    }

    /// Sliding windows of `size`: Kafka Streams' `SlidingWindows.ofTimeDifference(size - 1 ms)`
    /// (see the module docs).
    pub fn sliding(self, size: Duration) -> Windows<T, K, Fixed> {
        let size = millis(size).max(1);
        self.windows(WindowKind::Sliding { size })
    }

    /// Session windows closing after `gap` of inactivity per key.
    pub fn session(self, gap: Duration) -> Windows<T, K, Sessions> {
        let gap = millis(gap).max(0);
        self.windows(WindowKind::Session { gap })
    }
}

impl<T, K, W> Windows<T, K, W>
where
    T: Record,
    K: KeyBytes + Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// How long after its end a window still accepts late records (default 0).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.options.grace = millis(grace);
        self
    }

    /// Overrides the worker's idle timeout (`Config::idle_timeout`) for this window.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.options.idle_timeout = Some(timeout);
        self
    }

    /// When results are emitted (default [`Emit::Final`]).
    pub fn emit(mut self, emit: Emit) -> Self {
        self.options.emit = emit;
        self
    }

    /// Sends late records (their windows had closed) to `topic`, unchanged, instead of only
    /// counting them. Their message timestamp is the time they were found late (their event
    /// time, old by definition, is in the header `rill.source.timestamp`), so the topic's time
    /// retention does not delete them at once.
    pub fn late_events_to(mut self, topic: &str) -> Self {
        self.options.late_topic = Some(topic.to_owned());
        self
    }

    /// Names the window's state table (`<agent>-<name>`); the default is derived from the
    /// key, kind, size and aggregation, e.g. `url-tumbling-60000ms-count`. Name windows whose
    /// derived names would collide, and keep a name when changing a window's definition only
    /// if its stored state stays compatible.
    pub fn name(mut self, name: &str) -> Self {
        self.options.name = Some(name.to_owned());
        self
    }

    fn build<S, O>(self, agg: Agg<T, S, O>) -> WindowStream<K, O>
    where
        S: Serialize + DeserializeOwned + Clone + Send + 'static,
        O: Send + 'static,
    {
        let mut options = self.options;
        let name = options
            .name
            .take()
            .unwrap_or_else(|| format!("{}-{}-{}", self.keyed.name, self.kind.label(), agg.name));
        WindowStream::new(self.keyed, self.kind, options, name, Arc::new(agg))
    }

    /// Counts records per window.
    pub fn count(self) -> WindowStream<K, u64> {
        self.build(Agg {
            name: "count",
            init: Box::new(|| 0u64),
            add: Box::new(|n: &mut u64, _: &T| *n += 1),
            merge: Some(Box::new(|n: &mut u64, m| *n += m)),
            order_free: true,
            output: Box::new(|n| *n),
        })
    }

    /// Sums `f(record)` per window.
    pub fn sum<N>(self, f: impl Fn(&T) -> N + Send + Sync + 'static) -> WindowStream<K, N>
    where
        N: std::ops::AddAssign + Default + Copy + Serialize + DeserializeOwned + Send + Sync,
        N: 'static,
    {
        self.build(Agg {
            name: "sum",
            init: Box::new(N::default),
            add: Box::new(move |s: &mut N, v: &T| *s += f(v)),
            merge: Some(Box::new(|s: &mut N, o| *s += o)),
            order_free: true,
            output: Box::new(|s| *s),
        })
    }

    /// The smallest `f(record)` per window.
    pub fn min<N>(self, f: impl Fn(&T) -> N + Send + Sync + 'static) -> WindowStream<K, N>
    where
        N: PartialOrd + Default + Copy + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.extreme("min", f, |new, old| new < old)
    }

    /// The largest `f(record)` per window.
    pub fn max<N>(self, f: impl Fn(&T) -> N + Send + Sync + 'static) -> WindowStream<K, N>
    where
        N: PartialOrd + Default + Copy + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.extreme("max", f, |new, old| new > old)
    }

    fn extreme<N>(
        self,
        name: &'static str,
        f: impl Fn(&T) -> N + Send + Sync + 'static,
        better: fn(&N, &N) -> bool,
    ) -> WindowStream<K, N>
    where
        N: PartialOrd + Default + Copy + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let pick = move |s: &mut Option<N>, n: N| {
            if s.as_ref().is_none_or(|old| better(&n, old)) {
                *s = Some(n);
            }
        };
        self.build(Agg {
            name,
            init: Box::new(|| None),
            add: Box::new(move |s: &mut Option<N>, v: &T| pick(s, f(v))),
            merge: Some(Box::new(move |s: &mut Option<N>, o: Option<N>| {
                if let Some(n) = o {
                    pick(s, n);
                }
            })),
            order_free: true,
            output: Box::new(|s| s.unwrap_or_default()),
        })
    }

    /// The mean of `f(record)` per window.
    pub fn mean(self, f: impl Fn(&T) -> f64 + Send + Sync + 'static) -> WindowStream<K, f64> {
        self.build(Agg {
            name: "mean",
            init: Box::new(|| (0.0f64, 0u64)),
            add: Box::new(move |s: &mut (f64, u64), v: &T| {
                s.0 += f(v);
                s.1 += 1;
            }),
            merge: Some(Box::new(|s: &mut (f64, u64), o: (f64, u64)| {
                s.0 += o.0;
                s.1 += o.1;
            })),
            order_free: true,
            output: Box::new(|s| if s.1 == 0 { 0.0 } else { s.0 / s.1 as f64 }),
        })
    }

    /// Combines the window's records pairwise with `f` (which must be associative, as
    /// sessions combine partial results with it too).
    pub fn reduce(self, f: impl Fn(&T, &T) -> T + Send + Sync + 'static) -> WindowStream<K, T>
    where
        T: Clone,
    {
        let f = Arc::new(f);
        let g = f.clone();
        self.build(Agg {
            name: "reduce",
            init: Box::new(|| None),
            add: Box::new(move |s: &mut Option<T>, v: &T| {
                *s = Some(match s.take() {
                    Some(acc) => f(&acc, v),
                    None => v.clone(),
                });
            }),
            merge: Some(Box::new(move |s: &mut Option<T>, o: Option<T>| {
                *s = match (s.take(), o) {
                    (Some(a), Some(b)) => Some(g(&a, &b)),
                    (a, b) => a.or(b),
                };
            })),
            order_free: false,
            output: Box::new(|s: &Option<T>| s.clone().unwrap_or_else(|| unreachable_empty())),
        })
    }

    /// The window's records (the first [`Windows::collect_limit`], 10,000 by default, are
    /// kept; more are counted in the log and dropped, so one hot key cannot exhaust memory).
    pub fn collect(self) -> WindowStream<K, Vec<T>>
    where
        T: Clone,
    {
        let limit = self.options.collect_limit;
        self.build(Agg {
            name: "collect",
            init: Box::new(Vec::new),
            add: Box::new(move |s: &mut Vec<T>, v: &T| {
                if s.len() < limit {
                    s.push(v.clone());
                } else if s.len() == limit {
                    tracing::warn!(
                        limit,
                        "a window's `collect` is full; dropping its further records"
                    );
                }
            }),
            merge: Some(Box::new(move |s: &mut Vec<T>, o: Vec<T>| {
                let room = limit.saturating_sub(s.len());
                s.extend(o.into_iter().take(room));
            })),
            order_free: false,
            output: Box::new(Vec::clone),
        })
    }

    /// The most records `collect` keeps per window.
    pub fn collect_limit(mut self, limit: usize) -> Self {
        self.options.collect_limit = limit;
        self
    }
}

fn unreachable_empty<T>() -> T {
    // A window exists only once a record was added to it.
    panic!("an empty window was emitted; this is a rill bug")
}

impl<T, K> Windows<T, K, Fixed>
where
    T: Record,
    K: KeyBytes + Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// Folds the window's records into `A`, starting from `init()`.
    pub fn fold<A>(
        self,
        init: impl Fn() -> A + Send + Sync + 'static,
        f: impl Fn(&mut A, &T) + Send + Sync + 'static,
    ) -> WindowStream<K, A>
    where
        A: Serialize + DeserializeOwned + Clone + Send + 'static,
    {
        self.build(Agg {
            name: "fold",
            init: Box::new(init),
            add: Box::new(f),
            merge: None,
            order_free: false,
            output: Box::new(A::clone),
        })
    }

    /// Accumulates each window into a user struct that can also merge, in any order (its
    /// `merge` of partial states gives what adding the records one by one would): hopping
    /// windows then keep one state per pane of `gcd(size, step)` and merge them when a window
    /// closes, so a record costs one `add` whatever `size / step` is. Results are
    /// [`Windows::aggregate`]'s.
    pub fn combine<S: WindowState<T> + MergeState>(self) -> WindowStream<K, S> {
        self.build(Agg {
            name: "combine",
            init: Box::new(S::default),
            add: Box::new(|s: &mut S, v: &T| s.add(v)),
            merge: Some(Box::new(|s: &mut S, o: S| s.merge(o))),
            order_free: true,
            output: Box::new(S::clone),
        })
    }

    /// Accumulates each window into a user struct (see [`WindowState`]).
    pub fn aggregate<S: WindowState<T>>(self) -> WindowStream<K, S> {
        self.build(Agg {
            name: "aggregate",
            init: Box::new(S::default),
            add: Box::new(|s: &mut S, v: &T| s.add(v)),
            merge: None,
            order_free: false,
            output: Box::new(S::clone),
        })
    }
}

impl<T, K> Windows<T, K, Sessions>
where
    T: Record,
    K: KeyBytes + Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// Folds the session's records into `A`; `merge` joins two sessions' states when a
    /// record bridges them.
    pub fn fold<A>(
        self,
        init: impl Fn() -> A + Send + Sync + 'static,
        f: impl Fn(&mut A, &T) + Send + Sync + 'static,
        merge: impl Fn(&mut A, A) + Send + Sync + 'static,
    ) -> WindowStream<K, A>
    where
        A: Serialize + DeserializeOwned + Clone + Send + 'static,
    {
        self.build(Agg {
            name: "fold",
            init: Box::new(init),
            add: Box::new(f),
            merge: Some(Box::new(merge)),
            order_free: false,
            output: Box::new(A::clone),
        })
    }

    /// Accumulates each session into a user struct that can also merge.
    pub fn aggregate<S: WindowState<T> + MergeState>(self) -> WindowStream<K, S> {
        self.build(Agg {
            name: "aggregate",
            init: Box::new(S::default),
            add: Box::new(|s: &mut S, v: &T| s.add(v)),
            merge: Some(Box::new(|s: &mut S, o: S| s.merge(o))),
            order_free: false,
            output: Box::new(S::clone),
        })
    }
}

impl<T, K, W> std::fmt::Debug for Windows<T, K, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Windows({:?}, {:?})", self.kind, self.options)
    }
}
