//! The test harness: an app on the in-memory embedded log, in a plain `#[tokio::test]`, with no
//! broker. Send records in, read what the agents produced, check counters.
//!
//! ```
//! use rill_runtime::{AgentSpec, App, TopicSpec};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> rill_runtime::Result<()> {
//! // A hand-written agent that upper-cases lines into `shouted`.
//! let shout = AgentSpec::new("shout", "doc")
//!     .source(TopicSpec::of::<String>("lines", "doc"))
//!     .sink(TopicSpec::of::<String>("shouted", "doc"))
//!     .run(|mut ctx| async move {
//!         let mut lines = ctx.stream::<String>()?;
//!         let out = ctx.sink::<String>()?;
//!         while let Some(line) = lines.next().await {
//!             out.send(&line.to_uppercase()).await?;
//!         }
//!         Ok(())
//!     });
//!
//! let app = App::new("doc").agents([shout]).test().await?;
//! app.send_to("lines", &"hello".to_string()).await?;
//! let got: Vec<String> = app.expect("shouted", 1).await?;
//! assert_eq!(got, vec!["HELLO".to_string()]);
//! app.stop().await?;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::base::config::Broker;
use crate::base::error::{Error, Result};
use crate::base::message::{Headers, OutRecord, RawRecord, now_millis};
use crate::base::metrics::AgentStats;
use crate::base::record::Record;
use crate::base::time::{Clock, VirtualClock};
use crate::entry::app::App;
use crate::io::transport::Log;
use crate::wiring::producer::Producer;
use crate::wiring::worker::Worker;

/// How long `expect` waits by default.
const EXPECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `wait_until` waits.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A running app on the in-memory log, for tests.
pub struct TestApp {
    worker: Worker,
    /// The in-memory log (`memory://`) the app runs on.
    log: Arc<dyn Log>,
    producer: Producer,
    clock: Arc<VirtualClock>,
}

impl App {
    /// Starts this app on a fresh in-memory log (ignoring any configured broker and the
    /// environment), with a short commit interval, for tests.
    pub async fn test(mut self) -> Result<TestApp> {
        self.config.broker = Broker::Memory;
        self.test_with_config().await
    }

    /// Like [`App::test`], but on the embedded log persisted under `data_dir`, so a test can
    /// stop and restart an app (or share the log with a worker process).
    pub async fn test_in(mut self, data_dir: impl Into<std::path::PathBuf>) -> Result<TestApp> {
        self.config.broker = Broker::Embedded;
        self.config.data_dir = data_dir.into();
        self.test_with_config().await
    }

    async fn test_with_config(mut self) -> Result<TestApp> {
        if self.config.commit_interval > Duration::from_millis(20) {
            self.config.commit_interval = Duration::from_millis(20);
        }
        // Tests commit at the one interval, backlog or not.
        self.config.backlog_commit_interval = self.config.commit_interval;
        // Virtual time: idle timeouts and windowed tables' `now()` move only when the test
        // says so; event time comes from the records, as in production.
        self.config.clock = Clock::virtual_now();
        let config = self.resolve(false)?;
        let clock = config.clock.clone();
        let worker = self.start_with(config).await?;
        let log = worker.transport.clone();
        let producer = worker.producer();
        let Clock::Virtual(clock) = clock else {
            return Err(Error::config(
                "clock",
                "the test harness runs on a virtual clock",
            ));
        };
        Ok(TestApp {
            worker,
            log,
            producer,
            clock,
        })
    }
}

impl TestApp {
    /// Moves the app's virtual clock forward: partitions without records for the idle timeout
    /// (`Config::idle_timeout`) stop holding windows open, and the watermark of an agent whose
    /// partitions are all idle advances with this clock. Records' event times are untouched.
    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The app's virtual clock, ms since the epoch (it starts at the wall-clock time).
    pub fn now_ms(&self) -> i64 {
        Clock::Virtual(self.clock.clone()).now_ms()
    }

    /// Sends requests to the app's agents and waits for their replies.
    pub fn requests(&self) -> crate::wiring::asking::Requests {
        self.worker.requests()
    }

    /// Metrics in the Prometheus text format, as `/metrics` serves them.
    pub fn metrics_text(&self) -> String {
        self.worker.metrics_text()
    }

    /// Counters of a timer the app runs.
    pub fn timer_stats(&self, timer: &str) -> Option<Arc<crate::base::metrics::TimerStats>> {
        self.worker.timer_stats(timer)
    }

    /// Raises every window's watermark to at least `event_time_ms`, closing the windows that
    /// end (plus grace) at or before it, without sending a record.
    pub fn advance_watermark(&self, event_time_ms: i64) {
        self.clock.advance_watermark(event_time_ms);
    }

    /// Sends a value to a topic (keyed by its `#[record(key)]` field) and makes it visible.
    pub async fn send_to<V: Record>(&self, topic: &str, value: &V) -> Result<()> {
        self.producer.send_to(topic, value).await?;
        self.producer.flush().await
    }

    /// Sends raw bytes (for example a malformed record) and makes them visible.
    pub async fn send_bytes(&self, topic: &str, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        self.producer
            .send_raw(OutRecord {
                topic: Arc::from(topic),
                partition: None,
                key: key.map(<[u8]>::to_vec),
                value: Some(value.to_vec()),
                timestamp: now_millis(),
                headers: Headers::default(),
            })
            .await?;
        self.producer.flush().await
    }

    /// The producer, for sending many records before one `flush`.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Every record now in a topic, partition by partition, in offset order.
    pub fn records(&self, topic: &str) -> Result<Vec<RawRecord>> {
        let Some(partitions) = self.log.partition_count(topic)? else {
            return Ok(Vec::new());
        };
        let name: Arc<str> = Arc::from(topic);
        let mut out = Vec::new();
        for p in 0..partitions {
            let (low, high) = self.log.watermarks(topic, p)?;
            self.log.read_range(&name, p, low, high, &mut |batch| {
                out.extend(batch);
                Ok(())
            })?;
        }
        Ok(out)
    }

    /// How many records a topic holds now (cheap: read from partition watermarks).
    pub fn count(&self, topic: &str) -> Result<usize> {
        let Some(partitions) = self.log.partition_count(topic)? else {
            return Ok(0);
        };
        let mut total = 0;
        for p in 0..partitions {
            let (low, high) = self.log.watermarks(topic, p)?;
            total += usize::try_from(high - low).unwrap_or(0);
        }
        Ok(total)
    }

    /// Every record now in a topic, decoded.
    pub fn read<V: Record>(&self, topic: &str) -> Result<Vec<V>> {
        self.records(topic)?
            .into_iter()
            .map(|r| {
                let bytes = r.value.as_deref().unwrap_or_default();
                crate::base::record::decode_from::<V>(topic, bytes, V::CODEC).map_err(|source| {
                    Error::Codec {
                        topic: topic.to_owned(),
                        source,
                    }
                })
            })
            .collect()
    }

    /// Waits (up to 10 s) until a topic holds at least `n` records and returns them decoded.
    pub async fn expect<V: Record>(&self, topic: &str, n: usize) -> Result<Vec<V>> {
        let deadline = tokio::time::Instant::now() + EXPECT_TIMEOUT;
        loop {
            let got = self.count(topic)?;
            if got >= n {
                return self.read(topic);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Shutdown(format!(
                    "expected {n} records in `{topic}` within {EXPECT_TIMEOUT:?}, found {got}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Readers of the app's tables, as timers and web routes get them.
    pub fn tables(&self) -> crate::wiring::reader::Tables {
        self.worker.tables()
    }

    /// The committed entries of a table (all local partitions), decoded. Writes still in an
    /// agent's overlay appear after its next commit.
    pub fn table<K: serde::de::DeserializeOwned, V: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Vec<(K, V)>> {
        let Some(store) = self.worker.tables.get() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for partition in store.partitions(name)? {
            for (k, v) in store.scan(name, partition)? {
                let decode = |what: &str, e: serde_json::Error| Error::Agent {
                    agent: String::new(),
                    message: format!("table `{name}`: a stored {what} does not decode: {e}"),
                };
                out.push((
                    serde_json::from_slice(&k).map_err(|e| decode("key", e))?,
                    serde_json::from_slice(&v).map_err(|e| decode("value", e))?,
                ));
            }
        }
        Ok(out)
    }

    /// Counters of an agent.
    pub fn stats(&self, agent: &str) -> Option<Arc<AgentStats>> {
        self.worker.stats(agent)
    }

    /// One counter of an agent (0 for an agent the app does not run):
    /// `app.stat("count", |s| &s.late_records)`.
    pub fn stat(
        &self,
        agent: &str,
        counter: fn(&AgentStats) -> &std::sync::atomic::AtomicU64,
    ) -> u64 {
        self.stats(agent)
            .map_or(0, |stats| AgentStats::get(counter(&stats)))
    }

    /// Waits (up to 30 s) until `condition` holds, looking every 10 ms; the error names
    /// `what` was awaited. For effects that are not records, such as counters:
    ///
    /// ```no_run
    /// # async fn f(app: rill_runtime::TestApp) -> rill_runtime::Result<()> {
    /// app.wait_until("the bad record is dead-lettered", |app| {
    ///     app.stat("count", |s| &s.dead_lettered) == 1
    /// })
    /// .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_until(
        &self,
        what: &str,
        mut condition: impl FnMut(&TestApp) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT_TIMEOUT;
        while !condition(self) {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Shutdown(format!(
                    "waited {WAIT_TIMEOUT:?} until {what}, in vain"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Waits (up to 30 s) until every agent has its partitions and its tables recovered
    /// ([`Worker::readiness`]): records sent after it are read by the groups as they stand.
    pub async fn wait_ready(&self) -> Result<()> {
        self.wait_until("every agent has its partitions", |app| {
            app.worker.readiness().is_ok()
        })
        .await
    }

    /// The committed offset of an agent's group on a partition.
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Result<Option<i64>> {
        self.log.committed(group, topic, partition)
    }

    /// Stops the app gracefully.
    pub async fn stop(self) -> Result<()> {
        self.worker.shutdown().await
    }
}
