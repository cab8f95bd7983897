//! Foundation: errors, codecs, records and messages, time and watermarks, metrics, configuration, failure policy, topic specs. It names nothing above it.

pub mod avro;
pub(crate) mod avro_references;
pub mod codec;
pub mod config;
pub mod error;
pub mod failure;
pub mod health;
pub mod message;
pub mod metrics;
pub mod partitioner;
pub mod record;
pub(crate) mod registry_keys;
pub mod schedule;
pub mod schema;
pub(crate) mod spec;
pub mod telemetry;
pub mod time;
pub(crate) mod watermark;
pub mod wire;
