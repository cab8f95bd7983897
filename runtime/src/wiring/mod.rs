//! Wiring: agents, the worker, producers, repartition pipelines, observability and the web server.

pub mod agent;
pub(crate) mod asking;
pub(crate) mod dlq;
pub(crate) mod observe;
pub(crate) mod otlp_metrics;
pub mod page;
pub(crate) mod pipeline;
pub mod producer;
pub(crate) mod pump;
pub mod reader;
pub(crate) mod registry;
pub(crate) mod schemas;
pub(crate) mod standby;
pub(crate) mod store_cell;
pub mod timer;
pub mod topology;
pub(crate) mod web;
pub mod worker;
