//! `group_by`: re-keying an agent's stream through a repartition topic
//! (`<app>-<agent>-<field>-repartition`), so a table or window keyed by the new key sees every
//! record of a key in one partition. `AgentPipeline` is what an agent's instances share to
//! set that up, and the window tables built inside the agent (its `AgentSetup` impl).
//!
//! The first instance that calls `group_by` creates the topic (as many partitions as the
//! source) and a second fetcher, of group `<app>-<agent>-repartition`, for all instances. Each
//! instance's source stream becomes a pump task (`pump`): decode, key by the field, produce the
//! original bytes to the repartition topic; its source offsets commit after those sends are
//! durable, through the same commit step as any agent. The agent reads the repartition stream,
//! which carries the agent's tables: they recover when that stream takes its first assignment,
//! and the source stream never saw one with tables, because `group_by` runs before the agent
//! reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::base::config::{Config, OffsetReset};
use crate::base::error::{Error, Result};
use crate::base::metrics::AgentStats;
use crate::base::spec::{Internal, TopicSpec};
use crate::base::watermark::SourceClock;
use crate::instance::context::InstanceState;
use crate::instance::record_loop::setup::{AgentSetup, KeyOf, NotRekeyed, RekeyTarget};
use crate::instance::record_loop::{CoreParts, RecordLoop};
use crate::instance::table::recovery::Recovery;
use crate::instance::table::{ExpiredRanges, Expiring, TableDef};
use crate::io::transport::{Batch, Committer, Control, InstanceTx, Log, Router, TimeRetention};
use crate::wiring::pump::Pump;

use crate::wiring::registry::Registry;
use crate::wiring::standby;
use crate::wiring::store_cell::StoreCell;

type Receivers = (mpsc::Receiver<Batch>, mpsc::UnboundedReceiver<Control>);

struct Repartition {
    topic: Arc<str>,
    group: Arc<str>,
    /// The repartition fetcher's router (its assignment decides where the agent's tables live).
    router: Arc<Router>,
    committer: Arc<dyn Committer>,
    receivers: Mutex<Vec<Option<Receivers>>>,
}

impl Repartition {
    /// The receivers of instance `instance`'s repartitioned stream; `None` once taken.
    fn take_receivers(&self, instance: usize) -> Option<Receivers> {
        self.receivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(instance)
            .and_then(Option::take)
    }
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
    /// The source whose registry-coded keys place the agent's keys (its tables', its
    /// repartition topic's); see `worker::tables::key_topic`.
    pub(crate) key_topic: Option<Arc<str>>,
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
    /// The repartition group's standby recovery (standby replicas on Kafka), started with the
    /// first pump.
    standby: OnceLock<Option<Arc<Recovery>>>,
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
        (source_partitions, key_topic): (i32, Option<Arc<str>>),
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
            key_topic,
            stop,
            registry,
            store,
            reader,
            repartition: OnceLock::new(),
            windows: Mutex::new(HashMap::new()),
            windowed: Arc::new(AtomicBool::new(false)),
            standby: OnceLock::new(),
        })
    }

    fn repartition(&self, target: RekeyTarget<'_>) -> Result<&Repartition> {
        let built = self
            .repartition
            .get_or_init(|| self.build(target).map_err(|e| e.to_string()));
        match built {
            Ok(r) if *r.topic == *self.topic_of(target) => Ok(r),
            Ok(r) => Err(Error::Agent {
                agent: self.agent.to_string(),
                message: format!(
                    "`{}` after re-keying into `{}`: an agent re-keys its stream once (`group_by` or `through`)",
                    what(target),
                    r.topic
                ),
            }),
            Err(e) => Err(Error::Agent {
                agent: self.agent.to_string(),
                message: format!("setting up `{}`: {e}", what(target)),
            }),
        }
    }

    /// The topic a re-keying writes to and reads back.
    fn topic_of(&self, target: RekeyTarget<'_>) -> String {
        match target {
            RekeyTarget::Field(field) => {
                format!("{}-{}-{field}-repartition", self.app_id, self.agent)
            }
            RekeyTarget::Topic(topic) => topic.to_owned(),
        }
    }

    /// Creates the topic and starts its fetcher, whose router feeds one re-keyed stream per
    /// instance. `group_by`'s internal topic is purged as its group commits; a `through` topic
    /// keeps its records as its retention says (others may read it).
    fn build(&self, target: RekeyTarget<'_>) -> Result<Repartition> {
        let topic = self.topic_of(target);
        let (role, suffix) = match target {
            RekeyTarget::Field(_) => (Internal::Repartition, "repartition"),
            RekeyTarget::Topic(_) => (Internal::Through, "through"),
        };
        self.create_topic(&topic, role)?;
        let (txs, receivers) = instance_channels(self.instances);
        let group = format!("{}-{}-{suffix}", self.app_id, self.agent);
        let router = Arc::new(Router::new(
            &format!("{}/{suffix}", self.agent),
            txs,
            self.config.shutdown_timeout,
        ));
        // Read from its start: a repartition topic holds only what this agent wrote; a
        // `through` topic's earlier records are the stream's too, as in Kafka Streams.
        let (committer, thread) = self.transport.start_fetcher(
            &group,
            vec![topic.clone()],
            OffsetReset::Earliest,
            router.clone(),
            self.stop.clone(),
        )?;
        if role == Internal::Repartition {
            committer.purge_consumed(self.config.repartition_purge_interval);
        }
        self.registry.hold_thread(thread);
        tracing::info!(agent = %self.agent, topic, "{}: re-keying through a topic", what(target));
        Ok(Repartition {
            topic: Arc::from(topic.as_str()),
            group: Arc::from(group.as_str()),
            router,
            committer,
            receivers: Mutex::new(receivers),
        })
    }

    /// With standby replicas on Kafka, the recovery the repartition group's standby follows:
    /// the tables the repartitioned streams take over and the windows built on them. Its
    /// thread starts with the first pump.
    fn repartition_standby(
        &self,
        r: &Repartition,
        stats: &Arc<AgentStats>,
    ) -> Option<Arc<Recovery>> {
        self.standby
            .get_or_init(|| {
                if !standby::wanted(self.config.standby_replicas, &*self.transport) {
                    return None;
                }
                let root = Arc::new(Recovery::new(
                    Vec::new(),
                    self.reader.clone(),
                    stats.clone(),
                ));
                let standby = standby::Standby {
                    agent: self.agent.clone(),
                    group: r.group.clone(),
                    topic: r.topic.to_string(),
                    replicas: self.config.standby_replicas,
                    recovery: root.clone(),
                    router: r.router.clone(),
                    log: self.transport.clone(),
                };
                if let Err(e) = standby.start(self.stop.clone(), &self.registry) {
                    tracing::warn!(agent = %self.agent, error = %e, "standby replicas of the repartition group not started");
                }
                Some(root)
            })
            .clone()
    }

    fn create_topic(&self, topic: &str, role: Internal) -> Result<()> {
        let spec = TopicSpec::internal(topic, role, Some(self.source_partitions), "group_by");
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
        Ok(())
    }

    /// Turns `source` into a pump into the repartition topic and returns the core of this
    /// instance's repartitioned stream.
    ///
    /// On error, `source` comes back untouched.
    fn rekey(
        self: &Arc<Self>,
        target: RekeyTarget<'_>,
        source: RecordLoop,
        key_of: KeyOf,
        sides: Vec<Arc<str>>,
    ) -> std::result::Result<RecordLoop, Box<(Error, RecordLoop)>> {
        let r = match self.repartition(target) {
            Ok(r) => r,
            Err(e) => return Err(Box::new((e, source))),
        };
        let instance = source.instance();
        let Some((data, ctrl)) = r.take_receivers(instance) else {
            let error = Error::Agent {
                agent: self.agent.to_string(),
                message: format!("`{}` called twice on one instance", what(target)),
            };
            return Err(Box::new((error, source)));
        };
        let shared = source.shared().clone();
        let policy = source.policy().clone();
        let recovery = self.start_pump(r, source, key_of, sides);
        Ok(RecordLoop::new(CoreParts {
            data,
            ctrl,
            stop: self.registry.stop_channel(),
            shared,
            group: r.group.clone(),
            committer: r.committer.clone(),
            interval: self.config.commit_interval,
            backlog_interval: self.config.backlog_interval(),
            recovery,
            instance,
            instances: self.instances,
            pipeline: Some(self.clone() as Arc<dyn AgentSetup>),
            policy,
        }))
    }

    /// Hands `source` over to a new pump task into the repartition topic (registered for
    /// shutdown), and returns the source's table recovery, which the repartitioned stream
    /// takes on.
    fn start_pump(
        &self,
        r: &Repartition,
        mut source: RecordLoop,
        key_of: KeyOf,
        sides: Vec<Arc<str>>,
    ) -> Option<Arc<Recovery>> {
        let agent = source.shared().clone();
        let pump_shared = InstanceState::new(
            self.agent.clone(),
            agent.log.clone(),
            Arc::new(AgentStats::default()),
            Vec::new(),
            &self.config,
        );
        let standby = self.repartition_standby(r, &agent.stats);
        let recovery = source.hand_over(pump_shared.clone(), standby.as_deref());
        let pump = Pump {
            // A join's pump keeps a clock per side.
            watermarks: SourceClock::new(
                i64::try_from(self.config.idle_timeout.as_millis()).unwrap_or(i64::MAX),
                sides.len(),
            ),
            source,
            shared: pump_shared,
            agent,
            key_of,
            topic: r.topic.clone(),
            partitions: self.source_partitions,
            key_topic: self.key_topic.clone(),
            sides,
            windowed: self.windowed.clone(),
            clock: self.config.clock.clone(),
        }
        .spawn();
        self.registry
            .pumps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pump);
        recovery
    }
}

/// How the user wrote a re-keying, for messages.
fn what(target: RekeyTarget<'_>) -> String {
    match target {
        RekeyTarget::Field(field) => format!("group_by({field})"),
        RekeyTarget::Topic(topic) => format!("through(\"{topic}\")"),
    }
}

/// The channels of `instances` repartitioned streams: the router's ends and the streams'.
fn instance_channels(instances: usize) -> (Vec<InstanceTx>, Vec<Option<Receivers>>) {
    let mut txs = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..instances {
        let (data_tx, data_rx) = mpsc::channel(4);
        let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
        txs.push(InstanceTx {
            data: data_tx,
            ctrl: ctrl_tx,
        });
        receivers.push(Some((data_rx, ctrl_rx)));
    }
    (txs, receivers)
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
    fn window_table<'a>(
        &'a self,
        name: &'a str,
        expiring: Option<Arc<dyn ExpiredRanges>>,
    ) -> BoxFuture<'a, Result<Arc<TableDef>>> {
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
            // Expired state leaves tombstones, so compaction keeps the changelog to what is
            // live; or, for tumbling and hopping windows and joins on a time-retained
            // changelog, it ages out while the stored clock tells recovery it expired.
            let role = match expiring {
                Some(_) => Internal::WindowChangelog,
                None => Internal::Changelog,
            };
            let spec = TopicSpec::internal(
                &changelog,
                role,
                Some(self.source_partitions),
                &format!("window `{name}`"),
            );
            self.transport
                .ensure_topics(std::slice::from_ref(&spec), self.source_partitions)
                .await?;
            let retention = match expiring {
                Some(_) => self.transport.time_retention(&changelog).await?,
                None => TimeRetention::Kept,
            };
            let store = self.store.open()?;
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let def = windows.entry(table.clone()).or_insert_with(|| {
                let key_topic = self.key_topic.clone();
                let def = TableDef::placed_by(
                    &table,
                    &changelog,
                    false,
                    self.source_partitions,
                    key_topic,
                    store,
                );
                let aged = match retention {
                    TimeRetention::After(ms) => Some((ms, true)),
                    // What rill creates it with, unless someone changed it.
                    TimeRetention::Unknown => {
                        Some((Internal::WINDOW_CHANGELOG_RETENTION_MS, false))
                    }
                    TimeRetention::Kept => None,
                };
                if let (Some((retention, by_age)), Some(ranges)) = (aged, expiring) {
                    let _ = def.expiring.set(Expiring {
                        retention,
                        by_age,
                        ranges,
                    });
                }
                def
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
        target: RekeyTarget<'_>,
        source: RecordLoop,
        key_of: KeyOf,
        sides: Vec<Arc<str>>,
    ) -> std::result::Result<RecordLoop, NotRekeyed> {
        self.rekey(target, source, key_of, sides)
    }
}
