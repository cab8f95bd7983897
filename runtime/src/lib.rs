//! The rill runtime: agents over typed streams, run on Kafka (rdkafka) or on an embedded LMDB
//! log. Most users depend on the `rill` facade, which re-exports this crate with the macros.
//!
//! Start with [`App`]; see `ARCHITECTURE.md` in the repository for the data path.

pub mod agent;
pub mod app;
mod cli;
pub mod codec;
pub mod config;
mod context;
mod dlq;
pub mod error;
pub mod failure;
pub mod health;
pub mod join;
mod lmdb;
pub mod message;
pub mod metrics;
mod observe;
mod otlp_metrics;
pub mod partitioner;
pub mod producer;
pub mod record;
mod repartition;
pub mod stream;
pub mod table;
pub mod telemetry;
pub mod testing;
pub mod time;
pub mod topic;
pub mod topology;
mod transport;
mod web;
pub mod window;
pub mod worker;

pub use agent::{AgentContext, AgentResult, AgentSpec, Registration, registered_agents};
pub use app::App;
pub use codec::{Codec, EventTime, KeyBytes};
pub use config::{Broker, Config, ProcessingGuarantee};
pub use context::AgentStats;
pub use error::{CodecError, Error, Result};
pub use failure::OnError;
pub use health::Health;
pub use join::{Either, JoinStream, JoinWindow, Lookup};
pub use message::{Bytes, Event, Headers, Metadata, OutRecord, RawRecord};
pub use producer::Producer;
pub use record::{Field, Record};
pub use stream::{Batches, KeyedStream, Sink, Stream};
pub use table::{GlobalTable, Table, TableSpec};
pub use testing::TestApp;
pub use time::Clock;
pub use topic::{Topic, TopicSpec};
pub use window::{Emit, MergeState, WindowResult, WindowState, WindowStream, WindowedTable};
pub use worker::Worker;

#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use serde;
}
