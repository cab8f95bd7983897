//! `group_by`: re-keying an agent's stream through a repartition topic
//! (`<app>-<agent>-<field>-repartition`), so a table or window keyed by the new key sees every
//! record of a key in one partition.
//!
//! The first instance that calls `group_by` creates the topic (as many partitions as the
//! source) and a second fetcher, of group `<app>-<agent>-repartition`, for all instances. Each
//! instance's source stream becomes a pump task: decode, key by the field, produce the original
//! bytes to the repartition topic; its source offsets commit after those sends are durable,
//! through the same commit step as any agent. The agent reads the repartition stream, which
//! carries the agent's tables: they recover when that stream takes its first assignment, and
//! the source stream never saw one with tables, because `group_by` runs before the agent reads.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use std::task::Poll;

use crate::base::config::Config;
use crate::base::error::{Error, Result};
use crate::base::failure::{Failure, FailureKind};
use crate::base::message::Headers;
use crate::base::message::{OutRecord, now_millis};
use crate::base::metrics::AgentStats;
use crate::base::spec::{Internal, TopicSpec};
use crate::base::watermark::{self, SourceClock};
use crate::instance::context::{CURRENT, Shared};
use crate::instance::record_loop::setup::{AgentSetup, KeyOf, NotRekeyed};
use crate::instance::record_loop::{CoreParts, StreamCore};
use crate::instance::table::TableDef;
use crate::io::transport::Log;
use crate::io::transport::{Batch, Committer, Control, InstanceTx, Router};
use futures::future::BoxFuture;

pub(crate) use crate::wiring::registry::Registry;
pub(crate) use crate::wiring::store_cell::StoreCell;

type Receivers = (mpsc::Receiver<Batch>, mpsc::UnboundedReceiver<Control>);

struct Repartition {
    topic: Arc<str>,
    group: Arc<str>,
    /// The repartition fetcher's router (its assignment decides where the agent's tables live).
    router: Arc<Router>,
    committer: Arc<dyn Committer>,
    receivers: Mutex<Vec<Option<Receivers>>>,
}

/// An agent's repartition topic, as the observer sees it.
pub(crate) struct Repartitioned {
    pub(crate) topic: String,
    pub(crate) group: Arc<str>,
    pub(crate) router: Arc<Router>,
}

/// What an agent's instances share to build a repartition pipeline.
pub(crate) struct AgentPipeline {
    pub(crate) app_id: String,
    pub(crate) agent: Arc<str>,
    pub(crate) transport: Arc<dyn Log>,
    pub(crate) config: Config,
    pub(crate) instances: usize,
    pub(crate) source_partitions: i32,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) registry: Arc<Registry>,
    /// The worker's table store (opened on first use) and where changelogs are read from:
    /// windows built inside the agent create their tables here.
    pub(crate) store: Arc<StoreCell>,
    pub(crate) reader: Arc<dyn Log>,
    repartition: OnceLock<std::result::Result<Repartition, String>>,
    windows: Mutex<HashMap<String, Arc<TableDef>>>,
    /// Set when a window is built on the repartitioned stream: pumps then carry watermarks.
    windowed: Arc<AtomicBool>,
}

impl AgentPipeline {
    /// What the agent set up at run time: its repartition topic (with the group and router
    /// reading it) and its window tables (for the topology, metrics, table sizes and lookups).
    pub(crate) fn runtime_parts(&self) -> (Option<Repartitioned>, Vec<Arc<TableDef>>) {
        let repartitioned = match self.repartition.get() {
            Some(Ok(r)) => Some(Repartitioned {
                topic: r.topic.to_string(),
                group: r.group.clone(),
                router: r.router.clone(),
            }),
            _ => None,
        };
        let windows = self
            .windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        (repartitioned, windows)
    }

    #[allow(clippy::too_many_arguments, reason = "plain wiring from the worker")]
    pub(crate) fn new(
        app_id: &str,
        agent: Arc<str>,
        transport: Arc<dyn Log>,
        config: Config,
        instances: usize,
        source_partitions: i32,
        stop: Arc<AtomicBool>,
        registry: Arc<Registry>,
        store: Arc<StoreCell>,
        reader: Arc<dyn Log>,
    ) -> Arc<Self> {
        Arc::new(AgentPipeline {
            app_id: app_id.to_owned(),
            agent,
            transport,
            config,
            instances,
            source_partitions,
            stop,
            registry,
            store,
            reader,
            repartition: OnceLock::new(),
            windows: Mutex::new(HashMap::new()),
            windowed: Arc::new(AtomicBool::new(false)),
        })
    }

    fn repartition(&self, field: &str) -> Result<&Repartition> {
        let built = self
            .repartition
            .get_or_init(|| self.build(field).map_err(|e| e.to_string()));
        match built {
            Ok(r) if r.topic.ends_with(&format!("-{field}-repartition")) => Ok(r),
            Ok(r) => Err(Error::Agent {
                agent: self.agent.to_string(),
                message: format!(
                    "`group_by({field})` after `group_by` into `{}`: an agent re-keys its stream once",
                    r.topic
                ),
            }),
            Err(e) => Err(Error::Agent {
                agent: self.agent.to_string(),
                message: format!("setting up `group_by`: {e}"),
            }),
        }
    }

    fn build(&self, field: &str) -> Result<Repartition> {
        let topic = format!("{}-{}-{field}-repartition", self.app_id, self.agent);
        let spec = TopicSpec::internal(
            &topic,
            Internal::Repartition,
            Some(self.source_partitions),
            "group_by",
        );
        // Created once per agent, before any record flows. `group_by` is synchronous, so the
        // creation runs to completion on a thread of its own with its own small runtime (its
        // retries sleep on a tokio timer): blocking on it in place could hang a current-thread
        // runtime, whose timer would be the blocked thread.
        let transport = self.transport.clone();
        let partitions = self.source_partitions;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .map_err(|e| Error::Shutdown(format!("group_by setup runtime: {e}")))?
                        .block_on(transport.ensure_topics(std::slice::from_ref(&spec), partitions))
                })
                .join()
                .map_err(|_| Error::Shutdown("group_by setup panicked".into()))?
        })?;
        let mut txs = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..self.instances {
            let (data_tx, data_rx) = mpsc::channel(4);
            let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
            txs.push(InstanceTx {
                data: data_tx,
                ctrl: ctrl_tx,
            });
            receivers.push(Some((data_rx, ctrl_rx)));
        }
        let group = format!("{}-{}-repartition", self.app_id, self.agent);
        let router = Arc::new(Router::new(
            &format!("{}/repartition", self.agent),
            txs,
            self.config.shutdown_timeout,
        ));
        let (committer, thread) = self.transport.start_fetcher(
            &group,
            vec![topic.clone()],
            router.clone(),
            self.stop.clone(),
        )?;
        committer.purge_consumed(self.config.repartition_purge_interval);
        self.registry
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(thread);
        tracing::info!(agent = %self.agent, topic, "group_by: repartitioning through an internal topic");
        Ok(Repartition {
            topic: Arc::from(topic.as_str()),
            group: Arc::from(group.as_str()),
            router,
            committer,
            receivers: Mutex::new(receivers),
        })
    }

    /// Turns `source` into a pump into the repartition topic and returns the core of this
    /// instance's repartitioned stream.
    ///
    /// On error, `source` comes back untouched.
    fn rekey(
        self: &Arc<Self>,
        field: &str,
        mut source: StreamCore,
        key_of: KeyOf,
        sides: Vec<Arc<str>>,
    ) -> std::result::Result<StreamCore, Box<(Error, StreamCore)>> {
        let r = match self.repartition(field) {
            Ok(r) => r,
            Err(e) => return Err(Box::new((e, source))),
        };
        let instance = source.instance();
        let taken = r
            .receivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(instance)
            .and_then(Option::take);
        let Some((data, ctrl)) = taken else {
            let error = Error::Agent {
                agent: self.agent.to_string(),
                message: "`group_by` called twice on one instance".into(),
            };
            return Err(Box::new((error, source)));
        };
        let shared = source.shared().clone();
        let policy = source.policy().clone();
        let pump_shared = Shared::new(
            self.agent.clone(),
            shared.log.clone(),
            Arc::new(AgentStats::default()),
            Vec::new(),
            &self.config,
        );
        let recovery = source.hand_over(pump_shared.clone());
        let topic = r.topic.clone();
        let main_shared = shared.clone();
        let clock = self.config.clock.clone();
        let partitions = self.source_partitions;
        let windowed = self.windowed.clone();
        // A join's pump tags each record with its side's topic and keeps a clock per side.
        let tag_topic = !sides.is_empty();
        let mut watermarks = SourceClock::new(
            i64::try_from(self.config.idle_timeout.as_millis()).unwrap_or(i64::MAX),
            sides.len(),
        );
        let pump = tokio::spawn(CURRENT.scope(pump_shared.clone(), async move {
            let mut seen = (u64::MAX, Vec::new(), HashSet::new());
            loop {
                let step = futures::future::poll_fn(|cx| match source.poll_raw(cx) {
                    Poll::Ready(Some(_)) => Poll::Ready(Some(true)),
                    Poll::Ready(None) => Poll::Ready(None),
                    // Nothing to read for now (not a yield of the cooperative budget, records
                    // in hand): tell every partition where the pump is.
                    Poll::Pending
                        if watermarks.unsent()
                            && windowed.load(Ordering::Acquire)
                            && tokio::task::coop::has_budget_remaining() =>
                    {
                        Poll::Ready(Some(false))
                    }
                    Poll::Pending => Poll::Pending,
                })
                .await;
                match step {
                    None => break,
                    Some(false) => {
                        if let Some(stamp) = watermarks.take_broadcast() {
                            for partition in 0..partitions {
                                let marker = OutRecord {
                                    topic: topic.clone(),
                                    partition: Some(partition),
                                    key: None,
                                    value: None,
                                    timestamp: now_millis(),
                                    headers: Headers(vec![(
                                        watermark::HEADER.to_owned(),
                                        Some(stamp.clone().into_bytes()),
                                    )]),
                                };
                                if let Err(e) = pump_shared.send(marker, None).await {
                                    main_shared.fail(e);
                                }
                            }
                        }
                        continue;
                    }
                    Some(true) => {}
                }
                let Some(mut raw) = source.take_current() else {
                    continue;
                };
                let keyed = match &raw.value {
                    Some(_) => key_of(&raw),
                    None => Err(Error::Codec {
                        topic: raw.topic.to_string(),
                        source: crate::base::error::CodecError::NullValue,
                    }),
                };
                match keyed {
                    Ok((key, at)) => {
                        let time = at.or(raw.timestamp).unwrap_or_else(now_millis);
                        let version = pump_shared.caught_up_version.load(Ordering::Acquire)
                            ^ pump_shared
                                .position
                                .assignment
                                .load(Ordering::Acquire)
                                .rotate_left(32);
                        if version != seen.0 {
                            seen = (
                                version,
                                pump_shared.position.owned_partitions(),
                                pump_shared.caught_up(),
                            );
                        }
                        // A join's side: the topic the record stands for, tagged on it below.
                        let tag =
                            tag_topic.then(|| crate::base::failure::side_topic(&raw).to_owned());
                        let side = tag
                            .as_deref()
                            .and_then(|t| sides.iter().position(|s| &**s == t))
                            .unwrap_or(0);
                        let stamp = watermarks.observe(
                            side,
                            raw.partition,
                            time,
                            clock.now_ms(),
                            &seen.1,
                            &seen.2,
                        );
                        let mut headers = std::mem::take(&mut raw.headers);
                        headers.0.retain(|(name, _)| name != watermark::HEADER);
                        if let Some(tag) = tag
                            && headers.get(crate::base::message::header::TOPIC).is_none()
                        {
                            headers.insert(crate::base::message::header::TOPIC, tag.into_bytes());
                        }
                        if windowed.load(Ordering::Relaxed) {
                            headers.insert(watermark::HEADER, stamp);
                        }
                        // The record's event time travels as the message timestamp, the pump's
                        // watermark in a header.
                        let record = OutRecord {
                            topic: topic.clone(),
                            partition: None,
                            key: Some(key),
                            value: raw.value.take().map(Vec::from),
                            timestamp: time,
                            headers,
                        };
                        if let Err(e) = pump_shared.send(record, None).await {
                            main_shared.fail(e);
                            break;
                        }
                    }
                    Err(e) => {
                        // The agent's failure policy applies (at the pump's next record).
                        pump_shared.record_failed(
                            &raw,
                            Failure {
                                kind: FailureKind::Decode,
                                message: format!("group_by: {e}"),
                            },
                        );
                    }
                }
            }
            if let Some(e) = pump_shared.take_fatal() {
                main_shared.fail(e);
            }
        }));
        self.registry
            .pumps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pump);
        Ok(StreamCore::new(CoreParts {
            data,
            ctrl,
            stop: self.registry.stop_channel(),
            shared,
            group: r.group.clone(),
            committer: r.committer.clone(),
            interval: self.config.commit_interval,
            recovery,
            instance,
            instances: self.instances,
            pipeline: Some(self.clone() as Arc<dyn AgentSetup>),
            policy,
        }))
    }
}

impl AgentSetup for AgentPipeline {
    fn config(&self) -> &Config {
        &self.config
    }

    fn source_partitions(&self) -> i32 {
        self.source_partitions
    }

    fn changelogs(&self) -> Arc<dyn Log> {
        self.reader.clone()
    }

    /// The table of a window named `name` in this agent (`<app>-<agent>-<name>-changelog`),
    /// created with its changelog topic on first use and shared by the agent's instances.
    fn window_table<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Arc<TableDef>>> {
        Box::pin(async move {
            self.windowed.store(true, Ordering::Release);
            let table = format!("{}-{name}", self.agent);
            if let Some(def) = self
                .windows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&table)
            {
                return Ok(def.clone());
            }
            let changelog = crate::instance::table::changelog_topic(&self.app_id, &table);
            // Expired windows leave tombstones, so compaction keeps the changelog to open windows.
            let spec = TopicSpec::internal(
                &changelog,
                Internal::Changelog,
                Some(self.source_partitions),
                &format!("window `{name}`"),
            );
            self.transport
                .ensure_topics(std::slice::from_ref(&spec), self.source_partitions)
                .await?;
            let store = self.store.open()?;
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let def = windows.entry(table.clone()).or_insert_with(|| {
                Arc::new(TableDef {
                    name: Arc::from(table.as_str()),
                    changelog: Arc::from(changelog.as_str()),
                    source_partitions: self.source_partitions,
                    store,
                    metas: Mutex::new(HashMap::new()),
                    key_parser: std::sync::OnceLock::new(),
                })
            });
            Ok(def.clone())
        })
    }

    /// Pumps stamp their watermarks from now on (a window or join reads the repartition
    /// topic). Windows set it when they create their table; a join sets it before its pump
    /// starts, so no record goes out unstamped.
    fn mark_windowed(&self) {
        self.windowed.store(true, Ordering::Release);
    }

    /// Creates a topic an agent writes to after start (a late-events topic).
    fn ensure_topic(&self, spec: TopicSpec) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.transport
                .ensure_topics(std::slice::from_ref(&spec), self.config.partitions)
                .await
                .map(|_| ())
        })
    }

    fn group_by(
        self: Arc<Self>,
        field: &str,
        source: StreamCore,
        key_of: KeyOf,
        sides: Vec<Arc<str>>,
    ) -> std::result::Result<StreamCore, NotRekeyed> {
        self.rekey(field, source, key_of, sides)
    }
}

/// How long shutdown waits for pumps after the agents stopped.
pub(crate) const PUMP_GRACE: Duration = Duration::from_secs(10);
