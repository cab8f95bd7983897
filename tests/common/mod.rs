//! Helpers shared by the integration tests, one module per concern. A test file declares
//! `mod common;` and takes what it needs; nothing here is written in a test file again.
//!
//! - [`process`]: example binaries and their CLI (tables as JSON), children killed when a test
//!   ends, signals, bounded waits for an exit, the lines and logs a child writes, programs run
//!   to their end.
//! - [`kafka`]: the broker of `scripts/test.sh` and brokers of a test's own, apps on them, plain
//!   rdkafka producers and consumers, topics and their configs, watermarks, committed offsets,
//!   run ids.
//! - [`wait`]: bounded waiting for a condition, and settling before looking for extra output.
//! - [`worker`]: counters of a worker started in-process, waiting for it to be ready, the
//!   error it stops with (the test harness's `TestApp` has `stat` and `wait_until` of its own),
//!   and a relay agent of JSON strings with its input.
//! - [`http`]: a plain HTTP/1.1 GET for the worker's web server.
//! - [`prometheus`]: samples of the Prometheus text at `/metrics`.
//! - [`registry`]: the schema registry of `scripts/test.sh`, the non-rill client that
//!   cross-checks the Confluent wire format, and the Avro view and visit records with their
//!   agent.
//! - [`otlp`]: rill's telemetry pointed at OTLP trace and metrics receivers, and reading and
//!   checking the spans they received.
//! - [`records`]: the orders of the failure tests and malformed ones, the window count record,
//!   URLs covering every partition, event times, sending many, sorted output, headers, the
//!   `page_totals` example's views and printed totals.
//!
//! The process, Kafka, waiting and worker helpers are the tests' common vocabulary and are
//! re-exported here (`common::spawn_example(..)`, `common::producer(..)`); the others are named
//! with their module (`common::http::get(..)`, `use common::otlp::describe`).
#![allow(dead_code, reason = "each test binary uses a subset")]
#![allow(
    unused_imports,
    reason = "each test binary uses a subset of the re-exports"
)]

pub(crate) mod http;
pub(crate) mod kafka;
pub(crate) mod otlp;
pub(crate) mod process;
pub(crate) mod prometheus;
pub(crate) mod records;
pub(crate) mod registry;
pub(crate) mod wait;
pub(crate) mod worker;

pub(crate) use kafka::{
    Consumed, OwnBroker, Read, client, committed_offsets, committed_total, consume, consume_until,
    create_topic, end_offsets, enqueue, kafka_app, kafka_bootstrap, partition_count, produce,
    producer, read_to_end, read_topic, run_id, topic_configs, wait_for_topic, watermarks,
};
pub(crate) use process::{
    Lines, Proc, Running, command, example, exited_within, lines, log_tail, replayed, reset_moves,
    run_example, run_to_end, signal, spawn_example, spawn_example_logged, spawn_example_quiet,
    stderr_lines, table_json, table_of, terminate, wait_exit, wait_lines, wait_log,
};
pub(crate) use records::{assert_counted_exactly, miscounted, page_views, printed_totals};
pub(crate) use wait::{settle, wait_for, wait_for_async};
pub(crate) use worker::{json_strings, stat, stop_error, string_relay, wait_ready};
