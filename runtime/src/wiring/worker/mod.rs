//! The worker: starts a fetcher per agent and the agent instances, watches them, and shuts them
//! down in order (stop taking records, finish the current one, commit, stop fetchers, flush).
//! Starting is: check the declarations (`validate`), the web server, the topics and tables
//! (`tables`), then each agent (`spawn`), whose instances run the agent function (`run`).

pub(crate) mod lock;
mod run;
mod spawn;
mod tables;
mod validate;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::task::JoinSet;

use crate::base::config::Config;
use crate::base::error::{Error, Result};
use crate::base::metrics::AgentStats;
use crate::base::metrics::TimerStats;
use crate::base::spec::TopicSpec;
use crate::instance::record_loop::Stop;
use crate::io::transport::{Leadership, Log};
use crate::wiring::agent::AgentSpec;
use crate::wiring::asking::Requests;
pub use crate::wiring::observe::Rebalances;
use crate::wiring::observe::{Collector, Observer};
use crate::wiring::producer::Producer;
use crate::wiring::pump::PUMP_GRACE;
use crate::wiring::reader::Tables;
use crate::wiring::registry::Registry;
use crate::wiring::store_cell::StoreCell;
use crate::wiring::timer::{TimerEnv, TimerSpec, run_timer};
use crate::wiring::topology::Topology;
use tables::TableSetup;

/// Batches buffered per instance between fetcher and agent.
const QUEUE_BATCHES: usize = 4;

pub(crate) type TaskFn = Box<dyn FnOnce(Producer) -> BoxFuture<'static, Result<()>> + Send>;

/// Builds the app's own web routes (`App::routes`), given the worker's tables.
pub(crate) type RoutesFn = Box<dyn FnOnce(Tables) -> axum::Router + Send>;

/// What an app runs beside its agents.
#[derive(Default)]
pub(crate) struct Extras {
    /// `App::task`s.
    pub(crate) tasks: Vec<TaskFn>,
    /// `App::routes`.
    pub(crate) routes: Option<RoutesFn>,
    /// `#[page]`s and `App::pages`.
    pub(crate) pages: Vec<crate::wiring::page::PageSpec>,
    /// `#[timer]`s, `#[crontab]`s and `App::timer`s.
    pub(crate) timers: Vec<TimerSpec>,
}

/// What `/metrics`, `/status` and table queries read, registered as a collector on the app's
/// registry.
fn observer(
    config: &Config,
    transport: &Arc<dyn Log>,
    store: &Arc<StoreCell>,
    agents: &[AgentSpec],
    mut registry: prometheus_client::registry::Registry,
) -> Arc<Observer> {
    let topology = Topology::from_specs(&config.app_id, agents, config.on_error);
    let observer = Observer::new(
        &config.app_id,
        transport.health(),
        transport.clone(),
        store.clone(),
        topology,
    );
    registry.register_collector(Box::new(Collector(Arc::downgrade(&observer))));
    *observer.registry.lock().unwrap_or_else(|p| p.into_inner()) = registry;
    observer
}

/// The web server, when `Config::web_port` asks for one; its address is advertised to the
/// other workers of the consumer groups.
async fn start_web(
    config: &Config,
    transport: &Arc<dyn Log>,
    observer: &Arc<Observer>,
    routes: Option<RoutesFn>,
    pages: &[crate::wiring::page::PageSpec],
) -> Result<Option<crate::wiring::web::WebServer>> {
    if config.web_port.is_none() {
        if routes.is_some() || !pages.is_empty() {
            tracing::warn!(
                "the app's routes and pages (App::routes, #[page]) are not served: the web server is off (--no-web)"
            );
        }
        return Ok(None);
    }
    let tables = Tables::new(observer.clone());
    let routes = match (routes, pages.is_empty()) {
        (None, true) => None,
        (routes, _) => {
            let base = routes.map_or_else(axum::Router::new, |build| build(tables.clone()));
            Some(crate::wiring::page::merge(base, pages, &tables)?)
        }
    };
    let server = crate::wiring::web::serve(config, observer.clone(), routes).await?;
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
    Ok(Some(server))
}

/// A running worker.
pub struct Worker {
    pub(crate) transport: Arc<dyn Log>,
    stop: Arc<AtomicBool>,
    registry: Arc<Registry>,
    agents: JoinSet<(String, Result<()>)>,
    tasks: JoinSet<Result<()>>,
    /// The timers' tasks, told to stop through `stop_timers`.
    timers: JoinSet<Result<()>>,
    stop_timers: tokio::sync::watch::Sender<bool>,
    /// The app's leader election, when a timer runs on the leader only.
    leadership: Option<Arc<Leadership>>,
    /// The writer schemas of its schema-registry topics: records held for the registry give
    /// up when the worker stops.
    schema_writers: Option<Arc<crate::io::registry::RegistryWriters>>,
    /// Requests to agents (`ask`, `cast`), replies read from the app's reply topic.
    pub(crate) requests: Requests,
    producer: Producer,
    stats: HashMap<String, Arc<AgentStats>>,
    shutdown_timeout: Duration,
    pub(crate) tables: Arc<StoreCell>,
    observer: Arc<Observer>,
    web: Option<crate::wiring::web::WebServer>,
    metrics_export: Option<crate::wiring::otlp_metrics::MetricsExporter>,
    /// On the embedded log: the data dir, held shared against `reset` (see `lock`).
    _data_lock: Option<lock::DataDirLock>,
}

impl Worker {
    pub(crate) async fn start(
        config: &Config,
        transport: Arc<dyn Log>,
        agents: Vec<AgentSpec>,
        topics: Vec<TopicSpec>,
        extras: Extras,
        registry: prometheus_client::registry::Registry,
    ) -> Result<Worker> {
        let all_topics = validate::declarations(&agents, &topics)?;
        validate::timers(&extras.timers)?;
        let schema_writers = crate::wiring::schemas::bind(
            config,
            agents.iter().flat_map(|a| a.sources.iter()),
            agents
                .iter()
                .flat_map(|a| a.sink.iter())
                .chain(topics.iter()),
        )
        .await?;
        let data_lock = lock::hold_shared(config)?;
        let store = StoreCell::new(config);
        let observer = observer(config, &transport, &store, &agents, registry);
        // The web server is up before the consumers join their groups: they advertise its
        // address to the other workers, and `/health` answers during recovery.
        let web = start_web(config, &transport, &observer, extras.routes, &extras.pages).await?;
        let partitions = transport
            .ensure_topics(&all_topics, config.partitions)
            .await?;
        validate::co_partitioned(config, &agents, &partitions)?;
        let tables = TableSetup::prepare(config, &transport, &agents, &partitions, &store).await?;
        observer.set_globals(tables.globals().to_vec());
        let stop = Arc::new(AtomicBool::new(false));
        let registry = Arc::new(Registry::default());
        let requests = Requests::new(
            &config.app_id,
            config.partitions,
            transport.clone(),
            stop.clone(),
            registry.clone(),
            config.shutdown_timeout,
        );
        // Global tables catch up to their topics' ends before any agent sees a record.
        let global_thread = tables.start_globals(stop.clone()).await?;
        let mut worker = Worker {
            transport: transport.clone(),
            stop,
            registry,
            agents: JoinSet::new(),
            tasks: JoinSet::new(),
            timers: JoinSet::new(),
            stop_timers: tokio::sync::watch::channel(false).0,
            leadership: None,
            schema_writers,
            requests,
            producer: Producer::new(transport.clone()),
            stats: HashMap::new(),
            shutdown_timeout: config.shutdown_timeout,
            tables: store,
            observer: observer.clone(),
            web,
            metrics_export: crate::wiring::otlp_metrics::MetricsExporter::start(config, observer)?,
            _data_lock: data_lock,
        };
        worker
            .registry
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(global_thread);
        for spec in agents {
            worker
                .spawn_agent(config, spec, &tables, &partitions)
                .await?;
        }
        for task in extras.tasks {
            let producer = worker.producer.clone();
            worker.tasks.spawn(task(producer));
        }
        worker.start_timers(config, extras.timers).await?;
        worker.observer.started.store(true, Ordering::Release);
        Ok(worker)
    }

    /// Joins the leader election if a timer needs it, then starts every timer.
    async fn start_timers(&mut self, config: &Config, timers: Vec<TimerSpec>) -> Result<()> {
        if timers.iter().any(TimerSpec::is_on_leader) {
            let leadership = Arc::new(self.transport.elect(&config.app_id).await?);
            self.observer.set_leadership(leadership.clone());
            self.leadership = Some(leadership);
        }
        let env = TimerEnv {
            clock: config.clock.clone(),
            log: self.transport.clone(),
            tables: self.tables(),
            requests: self.requests.clone(),
            leadership: self.leadership.clone(),
            stop: self.stop_timers.subscribe(),
            start_ms: config.clock.now_ms(),
        };
        for spec in timers {
            let stats = self.observer.add_timer(spec.name());
            self.timers.spawn(run_timer(spec, env.clone(), stats));
        }
        Ok(())
    }

    /// Counters of a timer; `None` for a timer the worker does not run.
    pub fn timer_stats(&self, timer: &str) -> Option<Arc<TimerStats>> {
        self.observer.timer(timer)
    }

    /// Whether this worker leads the app (runs its leader-only timers); always on the embedded
    /// log, and false when no timer asked for an election.
    pub fn is_leader(&self) -> bool {
        self.leadership.as_ref().is_some_and(|l| l.is_leader())
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

    /// Readers of the tables of this worker's agents (see [`TableReader`](crate::wiring::reader::TableReader)).
    pub fn tables(&self) -> Tables {
        Tables::new(self.observer.clone())
    }

    /// Sends requests to agents and waits for their replies (`Requests::ask`), or sends
    /// without waiting (`Requests::cast`).
    pub fn requests(&self) -> Requests {
        self.requests.clone()
    }

    /// A producer for sending from outside agents.
    pub fn producer(&self) -> Producer {
        self.producer.clone()
    }

    /// `Ok` once the worker is connected and every agent has partitions and its tables
    /// recovered; else what it waits for. What `/ready` serves.
    pub fn readiness(&self) -> std::result::Result<(), String> {
        use crate::wiring::web::api::WebBackend;
        self.observer.ready()
    }

    /// How an agent's consumers' assignments changed so far (`rill_rebalances_total`,
    /// `rill_partitions_revoked_total`); `None` for an agent the worker does not run.
    pub fn rebalances(&self, agent: &str) -> Option<Rebalances> {
        self.observer.rebalances(agent)
    }

    /// The partitions an agent's consumers own now, sorted; `None` for an agent the worker
    /// does not run.
    pub fn assignment(&self, agent: &str) -> Option<Vec<(String, i32)>> {
        self.observer.assignment(agent)
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
                Some(joined) = self.timers.join_next() => match joined {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "a timer failed; stopping the worker");
                        return Err(e);
                    }
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => return Err(Error::Shutdown(format!("timer task: {e}"))),
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
        if let Some(writers) = &self.schema_writers {
            writers.stop_holding();
        }
        self.tasks.abort_all();
        let timers_done = self.stop_timers_gracefully();
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
        timers_done.await;
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
        if let Some(leadership) = self.leadership.take() {
            let _ = tokio::task::spawn_blocking(move || leadership.resign()).await;
        }
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

impl Worker {
    /// Tells the timers to stop; the returned future waits (up to the shutdown timeout) for
    /// runs under way to finish.
    fn stop_timers_gracefully(&mut self) -> impl Future<Output = ()> + use<> {
        let _ = self.stop_timers.send(true);
        let mut timers = std::mem::take(&mut self.timers);
        let timeout = self.shutdown_timeout;
        async move {
            let all = async { while timers.join_next().await.is_some() {} };
            if tokio::time::timeout(timeout, all).await.is_err() {
                tracing::warn!(
                    ?timeout,
                    "timer runs did not finish in time; they were cancelled"
                );
            }
        }
    }
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
