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
#![forbid(unsafe_code)]

pub use rill_macros::{agent, record};
pub use rill_runtime::partitioner;
pub use rill_runtime::{
    AgentContext, AgentResult, AgentSpec, AgentStats, App, Broker, Codec, CodecError, Config,
    Error, Event, EventTime, Field, Headers, KeyBytes, Metadata, OutRecord, Producer, RawRecord,
    Record, Registration, Result, Sink, Stream, TestApp, Topic, TopicSpec, Worker,
    registered_agents,
};

/// What most apps need: `use rill::prelude::*;`.
pub mod prelude {
    pub use crate::{
        App, Codec, Event, Producer, Record, Result, Sink, Stream, TestApp, Topic, agent, record,
    };
}

#[doc(hidden)]
pub mod __private {
    pub use rill_runtime::__private::*;
}
