//! The worker: starts a fetcher per agent and the agent instances, watches them, and shuts them
//! down in order (stop taking records, finish the current one, commit, stop fetchers, flush).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::base::config::Config;
use crate::base::error::{Error, Result};
use crate::base::failure::{Failure, FailureKind, Policy};
use crate::base::metrics::AgentStats;
use crate::base::spec::{Internal, TopicSpec, check_types};
use crate::instance::context::{CURRENT, Shared};
use crate::instance::record_loop::{CoreParts, Stop, StreamCore};
use crate::instance::table::global::{self, GlobalDef};
use crate::instance::table::recovery::Recovery;
use crate::instance::table::{TableCore, TableDef, changelog_topic};
use crate::io::transport::Log;
use crate::io::transport::{InstanceTx, Router};
use crate::wiring::agent::{AgentContext, AgentSpec, RunFn};
use crate::wiring::observe::{AgentView, Collector, Observer};
use crate::wiring::pipeline::{AgentPipeline, PUMP_GRACE, Registry, StoreCell};
use crate::wiring::producer::Producer;
use crate::wiring::topology::Topology;

/// Batches buffered per instance between fetcher and agent.
const QUEUE_BATCHES: usize = 4;

pub(crate) type TaskFn = Box<dyn FnOnce(Producer) -> BoxFuture<'static, Result<()>> + Send>;

/// A running worker.
pub struct Worker {
    pub(crate) transport: Arc<dyn Log>,
    stop: Arc<AtomicBool>,
    registry: Arc<Registry>,
    agents: JoinSet<(String, Result<()>)>,
    tasks: JoinSet<Result<()>>,
    producer: Producer,
    stats: HashMap<String, Arc<AgentStats>>,
    shutdown_timeout: Duration,
    pub(crate) tables: Arc<StoreCell>,
    observer: Arc<Observer>,
    web: Option<crate::wiring::web::WebServer>,
    metrics_export: Option<crate::wiring::otlp_metrics::MetricsExporter>,
}

impl Worker {
    pub(crate) async fn start(
        config: &Config,
        transport: Arc<dyn Log>,
        agents: Vec<AgentSpec>,
        topics: Vec<TopicSpec>,
        tasks: Vec<TaskFn>,
        mut registry: prometheus_client::registry::Registry,
    ) -> Result<Worker> {
        let all_topics: Vec<TopicSpec> = agents
            .iter()
            .flat_map(|a| a.sources.iter().chain(a.sink.iter()))
            .chain(topics.iter())
            .cloned()
            .collect();
        check_types(&all_topics)?;
        let mut names = std::collections::HashSet::new();
        for a in &agents {
            if !names.insert(a.name().to_owned()) {
                return Err(Error::config(
                    format!("agent `{}`", a.name()),
                    format!(
                        "two agents have this name (one at {}); rename one",
                        a.declared_at()
                    ),
                ));
            }
            if a.sources.is_empty() {
                return Err(Error::config(
                    format!("agent `{}`", a.name()),
                    "has no source topic",
                ));
            }
        }
        let store = StoreCell::new(config);
        let health = transport.health();
        let topology = Topology::from_specs(&config.app_id, &agents, config.on_error);
        let observer = Observer::new(
            &config.app_id,
            health,
            transport.clone(),
            store.clone(),
            topology,
        );
        registry.register_collector(Box::new(Collector(Arc::downgrade(&observer))));
        *observer.registry.lock().unwrap_or_else(|p| p.into_inner()) = registry;
        // The web server is up before the consumers join their groups: they advertise its
        // address to the other workers, and `/health` answers during recovery.
        let web = match config.web_port {
            Some(_) => {
                let server = crate::wiring::web::serve(config, observer.clone()).await?;
                let url = config
                    .web_advertise
                    .clone()
                    .unwrap_or_else(|| format!("http://{}", server.addr));
                if transport.advertise_web(&url)
                    && config.web_advertise.is_none()
                    && (server.addr.ip().is_loopback() || server.addr.ip().is_unspecified())
                {
                    tracing::warn!(%url, "workers on other hosts cannot reach this address to answer table queries; set RILL_WEB_ADVERTISE (e.g. http://<this-host>:<port>) and RILL_WEB_BIND");
                }
                let _ = observer.url.set(url);
                Some(server)
            }
            None => None,
        };
        let partitions = transport
            .ensure_topics(&all_topics, config.partitions)
            .await?;
        check_copartitioned(config, &agents, &partitions)?;
        let tables = TableSetup::prepare(config, &transport, &agents, &partitions, &store).await?;

        let stop = Arc::new(AtomicBool::new(false));
        // Global tables catch up to their topics' ends before any agent sees a record.
        let (globals, reader, global_stop) =
            (tables.globals.clone(), tables.reader.clone(), stop.clone());
        let global_thread =
            tokio::task::spawn_blocking(move || global::start(globals, reader, global_stop))
                .await
                .map_err(|e| Error::Shutdown(format!("global tables: {e}")))??;
        let log = transport.clone();
        let mut worker = Worker {
            transport: transport.clone(),
            stop: stop.clone(),
            registry: Arc::new(Registry::default()),
            agents: JoinSet::new(),
            tasks: JoinSet::new(),
            producer: Producer::new(log.clone()),
            stats: HashMap::new(),
            shutdown_timeout: config.shutdown_timeout,
            tables: store.clone(),
            observer: observer.clone(),
            web,
            metrics_export: crate::wiring::otlp_metrics::MetricsExporter::start(
                config,
                observer.clone(),
            )?,
        };
        worker
            .registry
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(global_thread);
        for spec in agents {
            let Some(run) = spec.run.clone() else {
                return Err(Error::config(
                    format!("agent `{}`", spec.name()),
                    "has no function; call `AgentSpec::run`",
                ));
            };
            let group: Arc<str> = Arc::from(spec.group_id(&config.app_id));
            let agent: Arc<str> = Arc::from(spec.name());
            let stats = Arc::new(AgentStats::default());
            worker.stats.insert(spec.name().to_owned(), stats.clone());
            let mut txs = Vec::new();
            let mut rxs = Vec::new();
            for _ in 0..spec.concurrency {
                let (data_tx, data_rx) = mpsc::channel(QUEUE_BATCHES);
                let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
                txs.push(InstanceTx {
                    data: data_tx,
                    ctrl: ctrl_tx,
                });
                rxs.push((data_rx, ctrl_rx));
            }
            let defs = tables.defs_of(spec.name());
            let recovery = (!defs.is_empty()).then(|| {
                Arc::new(Recovery {
                    tables: defs.clone(),
                    reader: tables.reader.clone(),
                    stats: stats.clone(),
                })
            });
            let source_partitions = spec
                .sources
                .first()
                .and_then(|s| partitions.get(&s.name).copied())
                .unwrap_or(config.partitions);
            let policy = Arc::new(Policy::new(
                spec.on_error.unwrap_or(config.on_error),
                &config.app_id,
                spec.name(),
                spec.dead_letter.as_deref(),
                config.max_record_bytes,
            ));
            // The dead-letter topic, and the retry topics, which the agent reads too
            // (co-partitioned with its source, so a retried record comes back to its instance).
            let mut failure_topics = vec![TopicSpec::internal(
                &policy.dead_letter,
                Internal::DeadLetters,
                None,
                &format!("dead letters of agent `{}`", spec.name()),
            )];
            for topic in &policy.retry_topics {
                failure_topics.push(TopicSpec::internal(
                    topic,
                    Internal::Retry,
                    Some(source_partitions),
                    &format!("retries of agent `{}`", spec.name()),
                ));
            }
            transport
                .ensure_topics(&failure_topics, config.partitions)
                .await?;
            let router = Arc::new(Router::new(spec.name(), txs, config.shutdown_timeout));
            let source_topics: Vec<String> = spec.sources.iter().map(|s| s.name.clone()).collect();
            let topics = spec
                .sources
                .iter()
                .map(|s| s.name.clone())
                .chain(policy.retry_topics.iter().map(|t| t.to_string()))
                .collect();
            let (committer, fetcher) =
                transport.start_fetcher(&group, topics, router.clone(), stop.clone())?;
            worker
                .registry
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(fetcher);
            let pipeline = AgentPipeline::new(
                &config.app_id,
                agent.clone(),
                transport.clone(),
                config.clone(),
                spec.concurrency,
                source_partitions,
                stop.clone(),
                worker.registry.clone(),
                store.clone(),
                tables.reader.clone(),
            );
            observer
                .agents
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .push(AgentView {
                    name: agent.clone(),
                    group: group.clone(),
                    stats: stats.clone(),
                    router: router.clone(),
                    pipeline: pipeline.clone(),
                    tables: defs.clone(),
                    sources: source_topics,
                });
            for (instance, (data, ctrl)) in rxs.into_iter().enumerate() {
                let stop_rx = worker.registry.stop_channel();
                let cores = defs.iter().map(|d| TableCore::new(d.clone())).collect();
                let shared = Shared::new(agent.clone(), log.clone(), stats.clone(), cores, config);
                let core = StreamCore::new(CoreParts {
                    data,
                    ctrl,
                    stop: stop_rx,
                    shared: shared.clone(),
                    group: group.clone(),
                    committer: committer.clone(),
                    interval: config.commit_interval,
                    recovery: recovery.clone(),
                    instance,
                    instances: spec.concurrency,
                    pipeline: Some(pipeline.clone()),
                    policy: policy.clone(),
                });
                let ctx = AgentContext {
                    agent: spec.name().to_owned(),
                    instance,
                    core: None,
                    sources: spec.sources.clone(),
                    sink: spec.sink.clone(),
                    shared: shared.clone(),
                    globals: tables.globals_of(&spec),
                    policy: policy.clone(),
                };
                let name = spec.name().to_owned();
                let result = run_instance(run.clone(), ctx, core);
                worker.agents.spawn(async move { (name, result.await) });
            }
            tracing::info!(agent = %spec.name(), group = %group, instances = spec.concurrency, sources = ?spec.sources.iter().map(|s| &s.name).collect::<Vec<_>>(), "agent started");
        }
        for task in tasks {
            let producer = worker.producer.clone();
            worker.tasks.spawn(task(producer));
        }
        worker.observer.started.store(true, Ordering::Release);
        Ok(worker)
    }

    /// Whether the worker reaches its broker (always, on the embedded log).
    pub fn health(&self) -> Arc<crate::base::health::Health> {
        self.transport.health()
    }

    /// The address the web server listens on (`None`: no web server, see `Config::web_port`).
    pub fn web_addr(&self) -> Option<std::net::SocketAddr> {
        self.web.as_ref().map(|w| w.addr)
    }

    /// The app's topology: agents, topics and tables, with what the agents set up so far.
    pub fn topology(&self) -> crate::wiring::topology::Topology {
        crate::wiring::web::api::WebBackend::topology(&*self.observer)
    }

    /// Metrics in the Prometheus text format, as `/metrics` serves them.
    pub fn metrics_text(&self) -> String {
        crate::wiring::web::api::WebBackend::metrics(&*self.observer)
    }

    /// A producer for sending from outside agents.
    pub fn producer(&self) -> Producer {
        self.producer.clone()
    }

    /// Counters of an agent (all instances).
    pub fn stats(&self, agent: &str) -> Option<Arc<AgentStats>> {
        self.stats.get(agent).cloned()
    }

    /// Waits until an agent fails (its error) or every agent has returned.
    pub async fn wait(&mut self) -> Result<()> {
        loop {
            tokio::select! {
                Some(joined) = self.agents.join_next() => match joined {
                    Ok((name, Ok(()))) => {
                        if !self.stop.load(Ordering::Acquire) {
                            tracing::info!(agent = %name, "agent returned");
                        }
                    }
                    Ok((name, Err(e))) => {
                        tracing::error!(agent = %name, error = %e, "agent failed; stopping the worker");
                        return Err(e);
                    }
                    Err(e) => return Err(Error::Shutdown(format!("agent task: {e}"))),
                },
                Some(joined) = self.tasks.join_next() => match joined {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "app task failed; stopping the worker");
                        return Err(e);
                    }
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => return Err(Error::Shutdown(format!("app task: {e}"))),
                },
                else => return Ok(()),
            }
        }
    }

    /// Stops gracefully: agents finish their current record and commit, fetchers stop, the
    /// producer is flushed.
    pub async fn shutdown(mut self) -> Result<()> {
        tracing::info!("shutting down: finishing in-flight records and committing");
        self.tasks.abort_all();
        for stop in self
            .registry
            .stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = stop.send(Stop::Now);
        }
        let mut first_error = None;
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.agents.join_next()).await {
                Ok(Some(Ok((_, Ok(()))))) => {}
                Ok(Some(Ok((name, Err(e))))) => {
                    tracing::error!(agent = %name, error = %e, "agent failed while stopping");
                    first_error.get_or_insert(e);
                }
                Ok(Some(Err(e))) if e.is_cancelled() => {}
                Ok(Some(Err(e))) => {
                    first_error.get_or_insert(Error::Shutdown(format!("agent task: {e}")));
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(timeout = ?self.shutdown_timeout, "agents did not finish in time; their uncommitted records will be redelivered");
                    self.agents.abort_all();
                    break;
                }
            }
        }
        // Pumps of `group_by` end when their source streams have committed.
        let pumps = std::mem::take(
            &mut *self
                .registry
                .pumps
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for pump in pumps {
            if tokio::time::timeout(PUMP_GRACE, pump).await.is_err() {
                tracing::warn!(
                    "a group_by pump did not stop in time; its uncommitted records will be redelivered"
                );
            }
        }
        self.stop.store(true, Ordering::Release);
        let fetchers = std::mem::take(
            &mut *self
                .registry
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let _ = tokio::task::spawn_blocking(move || {
            for f in fetchers {
                let _ = f.join();
            }
        })
        .await;
        self.producer.flush().await?;
        if let Some(export) = self.metrics_export.take() {
            export.shutdown().await;
        }
        if let Some(web) = self.web.take() {
            web.shutdown().await;
        }
        let log = self.transport.clone();
        tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(30)))
            .await
            .map_err(|e| Error::Shutdown(format!("producer flush: {e}")))??;
        tracing::info!("worker stopped");
        first_error.map_or(Ok(()), Err)
    }
}

/// Topics an agent reads together (joined, or with its tables) must be co-partitioned: records
/// of one key meet in one partition number.
fn check_copartitioned(
    config: &Config,
    agents: &[AgentSpec],
    partitions: &HashMap<String, i32>,
) -> Result<()> {
    for agent in agents
        .iter()
        .filter(|a| a.sources.len() > 1 && (a.co_partitioned || !a.tables.is_empty()))
    {
        let counts: Vec<(&str, i32)> = agent
            .sources
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    partitions
                        .get(&s.name)
                        .copied()
                        .unwrap_or(config.partitions),
                )
            })
            .collect();
        let source_partitions = counts[0].1;
        if let Some((topic, n)) = counts.iter().find(|(_, n)| *n != source_partitions) {
            return Err(Error::config(
                format!("agent `{}`", agent.name()),
                format!(
                    "its topics are read together (joined, or with its tables) and must be co-partitioned, but `{}` has {source_partitions} partitions and `{topic}` has {n}; give them the same partition count",
                    counts[0].0
                ),
            ));
        }
    }
    Ok(())
}

/// The tables of all agents: their store, definitions and changelog topics.
struct TableSetup {
    defs: Vec<(String, Arc<TableDef>)>,
    globals: Vec<Arc<GlobalDef>>,
    reader: Arc<dyn Log>,
}

impl TableSetup {
    async fn prepare(
        config: &Config,
        transport: &Arc<dyn Log>,
        agents: &[AgentSpec],
        partitions: &HashMap<String, i32>,
        store: &StoreCell,
    ) -> Result<Self> {
        let reader = transport.clone();
        let mut defs = Vec::new();
        if agents
            .iter()
            .all(|a| a.tables.is_empty() && a.global_tables.is_empty())
        {
            return Ok(TableSetup {
                defs,
                globals: Vec::new(),
                reader,
            });
        }
        let store = store.open()?;
        let mut globals: Vec<Arc<GlobalDef>> = Vec::new();
        for topic in agents.iter().flat_map(|a| a.global_tables.iter()) {
            if globals.iter().any(|g| &*g.topic == topic.as_str()) {
                continue;
            }
            let spec = TopicSpec::of::<Vec<u8>>(topic, "a global table");
            let counts = transport
                .ensure_topics(std::slice::from_ref(&spec), config.partitions)
                .await?;
            let n = counts.get(topic).copied().unwrap_or(config.partitions);
            globals.push(GlobalDef::new(topic, n, store.clone()));
        }
        let mut owners: HashMap<String, String> = HashMap::new();
        for agent in agents.iter().filter(|a| !a.tables.is_empty()) {
            // Co-partitioned (`check_copartitioned`): the first source's count is every one's.
            let source_partitions = agent
                .sources
                .first()
                .and_then(|s| partitions.get(&s.name).copied())
                .unwrap_or(config.partitions);
            for table in &agent.tables {
                if let Some(other) = owners.insert(table.name.clone(), agent.name().to_owned()) {
                    return Err(Error::config(
                        format!("table `{}`", table.name),
                        format!(
                            "declared by agents `{other}` and `{}`; a table has one writer",
                            agent.name()
                        ),
                    ));
                }
                let changelog = changelog_topic(&config.app_id, &table.name);
                let spec = TopicSpec::internal(
                    &changelog,
                    Internal::Changelog,
                    Some(source_partitions),
                    &format!("changelog of table `{}`", table.name),
                );
                transport
                    .ensure_topics(std::slice::from_ref(&spec), source_partitions)
                    .await?;
                defs.push((
                    agent.name().to_owned(),
                    Arc::new(TableDef {
                        name: Arc::from(table.name.as_str()),
                        changelog: Arc::from(changelog.as_str()),
                        source_partitions,
                        store: store.clone(),
                        metas: std::sync::Mutex::new(HashMap::new()),
                        key_parser: std::sync::OnceLock::new(),
                    }),
                ));
            }
        }
        Ok(TableSetup {
            defs,
            globals,
            reader,
        })
    }

    fn globals_of(&self, spec: &AgentSpec) -> Vec<Arc<GlobalDef>> {
        self.globals
            .iter()
            .filter(|g| spec.global_tables.iter().any(|t| **t == *g.topic))
            .cloned()
            .collect()
    }

    fn defs_of(&self, agent: &str) -> Vec<Arc<TableDef>> {
        self.defs
            .iter()
            .filter(|(a, _)| a == agent)
            .map(|(_, d)| d.clone())
            .collect()
    }
}

/// Runs one agent instance: calls the agent function, and again after a failure the policy
/// gets past (on the same stream, continuing after the failing record, or with it again for an
/// in-place retry); stops with the error when the policy says so.
async fn run_instance(run: RunFn, template: AgentContext, core: StreamCore) -> Result<()> {
    let shared = template.shared.clone();
    let mut core = Some(core);
    loop {
        let mut ctx = template.clone_parts();
        ctx.core = core.take();
        let call = run(ctx);
        let call: BoxFuture<'static, Result<()>> = if crate::base::telemetry::active() {
            Box::pin(RecordScope {
                inner: call,
                shared: shared.clone(),
            })
        } else {
            call
        };
        let outcome = CURRENT
            .scope(
                shared.clone(),
                std::panic::AssertUnwindSafe(call).catch_unwind(),
            )
            .await;
        let parked = StreamCore::take_parked(&shared);
        // Window state kept by the finished function goes into its table overlays now (the
        // operators stay registered: a window built again by the next call takes its over).
        for flusher in shared.flushers() {
            if let Err(e) = flusher.flush() {
                shared.fail(e);
            }
        }
        if let Some(fatal) = shared.take_fatal() {
            if let Some(parked) = parked {
                parked.finish().await;
            }
            return Err(fatal);
        }
        let (error, failure) = match outcome {
            Ok(Ok(())) => {
                if let Some(parked) = parked {
                    parked.finish().await;
                }
                return Ok(());
            }
            Ok(Err(Error::Transaction(why))) if parked.is_some() => {
                // `Stream::commit` saw its transaction aborted: the stream has rolled back and
                // reads again from the committed offsets; call the function again on it.
                tracing::warn!(agent = %shared.agent, error = %why, "commit aborted; calling the agent function again from the last commit");
                core = parked;
                continue;
            }
            Ok(Err(e)) if !e.is_record_failure() => {
                if let Some(parked) = parked {
                    parked.finish().await;
                }
                return Err(e);
            }
            Ok(Err(e)) => {
                let failure = Failure {
                    kind: FailureKind::Error,
                    message: e.to_string(),
                };
                (e, failure)
            }
            Err(panic) => {
                let message = format!("panicked: {}", panic_message(&panic));
                let failure = Failure {
                    kind: FailureKind::Panic,
                    message: message.clone(),
                };
                let e = Error::Agent {
                    agent: shared.agent.to_string(),
                    message,
                };
                (e, failure)
            }
        };
        let Some(mut parked) = parked else {
            return Err(error);
        };
        match parked.agent_failed(failure) {
            Ok(()) => {
                tracing::info!(agent = %shared.agent, "calling the agent function again after the failed record");
                core = Some(parked);
            }
            Err(_) => {
                parked.finish().await;
                return Err(error);
            }
        }
    }
}

/// Polls an agent's future inside the span of the record it is processing, so `tracing` spans
/// the agent creates nest under the record's (tracing export only).
struct RecordScope {
    inner: BoxFuture<'static, Result<()>>,
    shared: Arc<Shared>,
}

impl std::future::Future for RecordScope {
    type Output = Result<()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<()>> {
        struct Leave<'a>(&'a Shared);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                // Also when the agent panics: the span must not stay entered on this thread.
                self.0.exit_record_span();
            }
        }
        let shared = self.shared.clone();
        shared.enter_record_span();
        let _leave = Leave(&shared);
        self.inner.as_mut().poll(cx)
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned())
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the worker");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
