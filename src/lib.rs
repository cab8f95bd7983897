//! # rill
//!
//! Faust-style stream processing for Rust. Mark structs with [`record`] and `async fn`s with
//! [`agent`]; [`App::main`] runs them as a worker on Kafka, or on an embedded log persisted in
//! LMDB when no broker is configured.
//!
//! ```no_run
//! use rill::prelude::*;
//!
//! #[record]
//! pub struct PageView {
//!     pub user_id: String,
//!     pub url: String,
//!     #[record(timestamp)]
//!     pub view_time: f64,
//! }
//!
//! #[agent(topic = "pageviews")]
//! async fn log_views(mut views: Stream<PageView>) -> rill::Result<()> {
//!     while let Some(view) = views.next().await {
//!         tracing::info!(user = %view.user_id, url = %view.url, "page view");
//!     }
//!     Ok(())
//! }
//!
//! fn main() -> rill::Result<()> {
//!     App::new("traffic_monitor").main()
//! }
//! ```
//!
//! ## Testing agents
//!
//! [`App::test`] runs an app on an in-memory log inside a plain `#[tokio::test]`: send records
//! in, read what the agents produced. No broker, no mocks of Kafka: the embedded log has
//! Kafka's semantics (partitions, offsets, group commits).
//!
//! ```
//! use rill::prelude::*;
//!
//! #[record]
//! pub struct PageView {
//!     #[record(key)]
//!     pub user_id: String,
//!     pub url: String,
//! }
//!
//! #[record]
//! pub struct Alert {
//!     pub user_id: String,
//!     pub reason: String,
//! }
//!
//! #[agent(topic = "pageviews", sink = "alerts")]
//! async fn watch_admin(mut views: Stream<PageView>, alerts: Sink<Alert>) -> rill::Result<()> {
//!     while let Some(view) = views.next().await {
//!         if view.url.starts_with("/admin") {
//!             alerts.send(&Alert { user_id: view.user_id, reason: format!("opened {}", view.url) }).await?;
//!         }
//!     }
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> rill::Result<()> {
//! let app = App::new("guard").agents([watch_admin::agent()]).test().await?;
//! app.send_to("pageviews", &PageView { user_id: "u1".into(), url: "/home".into() }).await?;
//! app.send_to("pageviews", &PageView { user_id: "u2".into(), url: "/admin/users".into() }).await?;
//! let alerts: Vec<Alert> = app.expect("alerts", 1).await?;
//! assert_eq!(alerts[0].user_id, "u2");
//! assert_eq!(alerts[0].reason, "opened /admin/users");
//! app.stop().await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub use rill_macros::{AvroSchema, agent, crontab, page, record, timer, window_state};
/// A type's Avro schema (`#[derive(AvroSchema)]` implements it; the same name as the derive).
pub use rill_runtime::schema_registry::AvroSchema;
pub use rill_runtime::{
    AgentContext, AgentResult, AgentSpec, AgentStats, App, Broker, Bytes, Codec, CodecError,
    Config, Error, Event, EventTime, Field, GlobalTable, Headers, KeyBytes, Metadata, OffsetReset,
    OutRecord, PageRegistration, PageSpec, ProcessingGuarantee, Producer, RawRecord,
    RebalanceProtocol, Rebalances, Record, Registration, Request, Requests, Result, Schedule,
    SetTable, Sink, Stream, Table, TableReader, TableSpec, Tables, TestApp, TimerContext,
    TimerRegistration, TimerSpec, TimerStats, Topic, TopicSpec, Worker, decode_from, encode_for,
    encode_vec_for, registered_agents, registered_timers,
};
pub use rill_runtime::{
    Batches, Clock, Emit, KeyedStream, MergeState, OnError, Punctuation, WindowResult, WindowState,
    WindowStream, WindowedTable,
};
pub use rill_runtime::{Either, Entries, JoinStream, JoinWindow, Joined, Lookup, TableJoin};
pub use rill_runtime::{
    axum, join, metrics, partitioner, request, schema_registry, telemetry, time, timer, topology,
    window,
};

/// jemalloc, as the worker binary's global allocator (feature `jemalloc`). A worker hands
/// every record from the fetching thread to the agent's and every send on to the producer's,
/// which glibc's malloc serves slowly: the suite's join ran at 50-60 % of its jemalloc rate on
/// it (bench/results/allocator-2026-12-06.md). A library cannot choose the allocator; the binary
/// does:
///
/// ```no_run
/// #[global_allocator]
/// static ALLOCATOR: rill::Jemalloc = rill::Jemalloc;
///
/// fn main() -> rill::Result<()> {
///     rill::App::new("traffic_monitor").main()
/// }
/// ```
#[cfg(feature = "jemalloc")]
pub use tikv_jemallocator::Jemalloc;

/// What most apps need: `use rill::prelude::*;`.
pub mod prelude {
    pub use crate::{
        App, Codec, Either, Emit, Event, GlobalTable, JoinStream, JoinWindow, KeyedStream,
        MergeState, OnError, Producer, Record, Request, Requests, Result, SetTable, Sink, Stream,
        Table, TableReader, TestApp, TimerContext, Topic, WindowResult, WindowState, WindowStream,
        WindowedTable, agent, crontab, page, record, timer, window_state,
    };
}

#[doc(hidden)]
pub mod __private {
    pub use rill_runtime::__private::*;
}
