//! The rill runtime: agents over typed streams, run on Kafka (rdkafka) or on an embedded LMDB
//! log. Most users depend on the `rill` facade, which re-exports this crate with the macros.
//!
//! Start with [`App`]; see `ARCHITECTURE.md` in the repository for the data path.

mod base;
mod entry;
mod instance;
mod io;
mod ops;
mod wiring;

/// Request/reply between agents: `Requests` asks (`Worker::requests`, `AgentContext::requests`),
/// agents answer each `Request` of `Stream::requests`.
pub mod request {
    pub use crate::ops::request::Request;
    pub use crate::wiring::asking::{Ask, Requests};
}

/// Schema-registry records (the Confluent wire format): the registry client, the frame, Avro
/// encoding with schema resolution, record schemas and topic bindings (`#[record(codec =
/// "avro")]` uses them).
pub mod schema_registry {
    pub use crate::base::avro::{self, AvroSchema};
    pub use crate::base::config::RegistryConfig;
    pub use crate::base::registry_keys::{
        JSON_INTEGER, JSON_STRING, KeyKind, KeySchema, RegistryKey,
    };
    pub use crate::base::schema::{self, RecordSchema, SchemaType, SubjectStrategy};
    pub use crate::base::wire::{self, FrameError, frame, unframe};
    pub use crate::io::registry::{RegisteredSchema, SchemaRegistry};
}

// The public modules, where users find them; `ARCHITECTURE.md` maps the layers behind them.
pub use base::{
    codec, config, error, failure, health, message, metrics, partitioner, record, schedule,
    telemetry, time,
};
pub use entry::{app, testing};
pub use instance::table;
pub use ops::{join, stream, topic, window};
pub use wiring::{agent, page, producer, reader, timer, topology, worker};

pub use agent::{AgentContext, AgentResult, AgentSpec, Registration, registered_agents};
pub use app::App;
/// The web framework of `App::routes`, at the version rill serves with.
pub use axum;
pub use base::metrics::{AgentStats, TimerStats};
pub use base::schedule::Schedule;
pub use codec::{Codec, EventTime, KeyBytes};
pub use config::{Broker, Config, OffsetReset, ProcessingGuarantee, RebalanceProtocol};
pub use error::{CodecError, Error, Result};
pub use failure::OnError;
pub use health::Health;
pub use join::{Either, JoinStream, JoinWindow, Lookup};
pub use message::{Bytes, Event, Headers, Metadata, OutRecord, RawRecord};
pub use ops::punctuate::Punctuation;
pub use page::{PageRegistration, PageSpec, registered_pages};
pub use producer::Producer;
pub use reader::{TableReader, Tables};
pub use record::{Field, Record, decode_from, encode_for, encode_vec_for};
pub use request::{Ask, Request, Requests};
pub use stream::{Batches, KeyedStream, Sink, Stream};
pub use table::{Entries, GlobalTable, Joined, SetTable, Table, TableJoin, TableSpec};
pub use testing::TestApp;
pub use time::Clock;
pub use timer::{TimerContext, TimerRegistration, TimerSpec, registered_timers};
pub use topic::{Topic, TopicSpec};
pub use window::{Emit, MergeState, WindowResult, WindowState, WindowStream, WindowedTable};
pub use worker::{Rebalances, Worker};

#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use prost;
    pub use serde;
    pub use serde_json;
}
