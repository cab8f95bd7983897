//! `App`: the builder users start from. It collects agents (all `#[agent]`s of the binary by
//! default, or a chosen subset), settings and tasks, and runs them as a worker, as a CLI
//! (`App::main`), or as an in-process test harness (`App::test`).

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use crate::base::config::{Broker, Config};
use crate::base::error::Result;
use crate::base::record::Record;
use crate::base::spec::TopicSpec;
use crate::io::transport;
use crate::io::transport::channel::ChannelLog;
use crate::ops::topic::Topic;
use crate::wiring::agent::{AgentSpec, registered_agents};
use crate::wiring::page::{PageSpec, registered_pages};
use crate::wiring::producer::Producer;
use crate::wiring::reader::Tables;
use crate::wiring::timer::{TimerSpec, registered_timers};
use crate::wiring::worker::{Extras, Worker, shutdown_signal};

/// A rill application.
///
/// ```no_run
/// fn main() -> rill_runtime::Result<()> {
///     rill_runtime::App::new("traffic_monitor").main()
/// }
/// ```
pub struct App {
    pub(crate) config: Config,
    broker: Option<String>,
    pub(crate) agents: Option<Vec<AgentSpec>>,
    /// Chosen timers; `None`: the registered ones, unless agents were chosen.
    timers: Option<Vec<TimerSpec>>,
    /// Chosen pages; `None`: the registered ones, unless agents were chosen.
    pages: Option<Vec<PageSpec>>,
    pub(crate) topics: Vec<TopicSpec>,
    /// In-memory channels declared with `App::channel`.
    channels: Vec<String>,
    extras: Extras,
    registry: crate::base::metrics::Registry,
}

impl App {
    /// An app running every agent registered in this binary.
    pub fn new(id: &str) -> Self {
        App {
            config: Config::new(id),
            broker: None,
            agents: None,
            timers: None,
            pages: None,
            topics: Vec::new(),
            channels: Vec::new(),
            extras: Extras::default(),
            registry: crate::base::metrics::Registry::default(),
        }
    }

    /// Declares the in-memory channel `name` carrying `V` (Faust's `app.channel()`): records
    /// sent to it (`Producer::send_to`, a `Sink`, a `Topic` of that name) stay in this worker
    /// and go to the agent reading it (`#[agent(channel = "name")]`), never to the broker;
    /// at most once. Agents that read a channel declare it themselves; declare it here when
    /// only senders run in this app, so its records are not sent to the broker as a topic.
    pub fn channel<V: Record>(mut self, name: &str) -> Self {
        self.channels.push(name.to_owned());
        self
    }

    /// Serves exactly these pages (`my_page::page()` for a `#[page]`, or a `PageSpec`)
    /// instead of every registered one. An app that chooses its agents serves only the pages
    /// it chooses.
    pub fn pages(mut self, pages: impl IntoIterator<Item = PageSpec>) -> Self {
        self.pages = Some(pages.into_iter().collect());
        self
    }

    /// Runs exactly these agents instead of every registered one (e.g. in tests). An app that
    /// chooses its agents runs only the timers it chooses too ([`App::timers`]).
    pub fn agents(mut self, agents: impl IntoIterator<Item = AgentSpec>) -> Self {
        self.agents = Some(agents.into_iter().collect());
        self
    }

    /// Runs exactly these timers (`my_timer::timer()` for a `#[timer]` or `#[crontab]`, or a
    /// hand-written [`TimerSpec`]) instead of every registered one.
    pub fn timers(mut self, timers: impl IntoIterator<Item = TimerSpec>) -> Self {
        self.timers = Some(timers.into_iter().collect());
        self
    }

    /// The broker URL: `kafka://host:port[,host:port]`, `memory://`, or `embedded://` (default).
    pub fn broker(mut self, url: &str) -> Self {
        self.broker = Some(url.to_owned());
        self
    }

    /// Keeps the log in memory (a temporary directory removed on exit).
    pub fn memory(self) -> Self {
        self.broker("memory://")
    }

    /// Directory of the embedded log and local state.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = dir.into();
        self
    }

    /// The failure policy of agents that do not choose one with `#[agent(on_error = ...)]`
    /// (default: dead-letter and continue); `RILL_ON_ERROR` overrides it.
    pub fn on_error(mut self, policy: crate::base::failure::OnError) -> Self {
        self.config.on_error = policy;
        self
    }

    /// Where agents without `#[agent(offset_reset = ...)]` start on a partition their group has
    /// no committed offset for (default earliest); `RILL_OFFSET_RESET` overrides it.
    pub fn offset_reset(mut self, reset: crate::base::config::OffsetReset) -> Self {
        self.config.offset_reset = Some(reset);
        self
    }

    /// At-least-once (default) or exactly-once processing (`RILL_PROCESSING_GUARANTEE`).
    pub fn processing_guarantee(
        mut self,
        guarantee: crate::base::config::ProcessingGuarantee,
    ) -> Self {
        self.config.processing_guarantee = guarantee;
        self
    }

    /// How often agents commit (default 100 ms).
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.config.commit_interval = interval;
        self
    }

    /// How often an agent instance reading a backlog commits (default 1 s, never shorter than
    /// the commit interval; see [`Config::backlog_commit_interval`]).
    pub fn backlog_commit_interval(mut self, interval: Duration) -> Self {
        self.config.backlog_commit_interval = interval;
        self
    }

    /// Partitions of topics rill creates (default 8).
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.config.partitions = partitions;
        self
    }

    /// A librdkafka property for every Kafka client.
    pub fn kafka_property(mut self, key: &str, value: &str) -> Self {
        self.config.kafka.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The schema registry of the registry codecs (`#[record(codec = "avro")]`), e.g.
    /// `http://127.0.0.1:8081` (Apicurio: `http://host:8080/apis/ccompat/v7`);
    /// `RILL_SCHEMA_REGISTRY_URL` overrides it. Authentication, a private CA, the subject
    /// naming strategy and auto-registration: [`crate::schema_registry::RegistryConfig`]
    /// through [`App::configure`], or their `RILL_SCHEMA_*` variables.
    pub fn schema_registry(mut self, url: &str) -> Self {
        let old = self.config.schema_registry.take();
        self.config.schema_registry = Some(crate::base::config::RegistryConfig {
            url: url.to_owned(),
            ..old.unwrap_or_else(|| crate::base::config::RegistryConfig::new(url))
        });
        self
    }

    /// Edits any setting.
    pub fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// Declares a topic the app sends to, so the worker creates it and checks its type.
    pub fn topic<K, V: Record>(mut self, topic: &Topic<K, V>) -> Self {
        self.topics.push(topic.spec());
        self
    }

    /// Runs a task beside the agents (Faust's `@app.task`), e.g. to generate input.
    pub fn task<F, Fut>(mut self, f: F) -> Self
    where
        F: FnOnce(Producer) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.extras.tasks.push(Box::new(move |p| Box::pin(f(p))));
        self
    }

    /// Serves the app's own HTTP routes from the worker's web server, beside `/metrics` and
    /// `/tables` and behind the same bearer token (`RILL_WEB_TOKEN`). `f` gets the worker's
    /// [`Tables`] to read agents' tables with. A route that rill serves itself is refused at
    /// start; with the web server off (`--no-web`) the routes are not served.
    ///
    /// ```no_run
    /// use axum::{Json, Router, extract::Path, routing::get};
    /// # fn app() -> rill_runtime::App {
    /// rill_runtime::App::new("traffic").routes(|tables| {
    ///     let totals = tables.reader::<String, u64>("url_view_totals").expect("declared");
    ///     Router::new().route("/count/{url}", get(move |Path(url): Path<String>| async move {
    ///         Json(totals.get(&url).ok().flatten().unwrap_or(0))
    ///     }))
    /// })
    /// # }
    /// ```
    pub fn routes(mut self, f: impl FnOnce(Tables) -> axum::Router + Send + 'static) -> Self {
        self.extras.routes = Some(Box::new(f));
        self
    }

    /// Registers the app's own metrics, served at `/metrics` with rill's (see
    /// [`crate::metrics`]).
    pub fn metrics(mut self, f: impl FnOnce(&mut crate::base::metrics::Registry)) -> Self {
        f(&mut self.registry);
        self
    }

    /// The app id.
    pub fn id(&self) -> &str {
        &self.config.app_id
    }

    /// The agents this app runs.
    pub fn agent_specs(&self) -> Vec<AgentSpec> {
        self.agents.clone().unwrap_or_else(registered_agents)
    }

    /// Settings after the builder's broker and the `RILL_*` environment.
    pub(crate) fn resolve(&mut self, env: bool) -> Result<Config> {
        if let Some(url) = &self.broker {
            self.config.broker = Broker::parse(url)?;
        }
        if env {
            self.config.apply_env()?;
        }
        self.config.validate()?;
        Ok(self.config.clone())
    }

    /// Starts the worker in the background on the current tokio runtime.
    pub async fn start(mut self) -> Result<Worker> {
        let config = self.resolve(true)?;
        self.start_with(config).await
    }

    pub(crate) async fn start_with(mut self, config: Config) -> Result<Worker> {
        let chose_agents = self.agents.is_some();
        let agents = self.agents.take().unwrap_or_else(registered_agents);
        let transport = ChannelLog::wrap(transport::open(&config)?, &self.channels_of(&agents));
        self.extras.timers = match self.timers.take() {
            Some(timers) => timers,
            None if chose_agents => Vec::new(),
            None => registered_timers(),
        };
        self.extras.pages = match self.pages.take() {
            Some(pages) => pages,
            None if chose_agents => Vec::new(),
            None => registered_pages(),
        };
        Worker::start(
            &config,
            transport,
            agents,
            std::mem::take(&mut self.topics),
            std::mem::take(&mut self.extras),
            std::mem::take(&mut self.registry),
        )
        .await
    }

    /// The app's in-memory channels, each with the instances of the agent reading it (its
    /// partitions).
    fn channels_of(&self, agents: &[AgentSpec]) -> Vec<(String, usize)> {
        let mut channels: Vec<(String, usize)> = agents
            .iter()
            .flat_map(|a| {
                a.sources
                    .iter()
                    .filter(|s| s.channel)
                    .map(|s| (s.name.clone(), a.instances()))
            })
            .collect();
        for name in &self.channels {
            if !channels.iter().any(|(n, _)| n == name) {
                channels.push((name.clone(), 1));
            }
        }
        channels
    }

    /// Runs the worker until Ctrl-C/SIGTERM (then shuts down gracefully) or an agent fails.
    pub async fn run(self) -> Result<()> {
        let worker = self.start().await?;
        run_until_signal(worker).await
    }
}

pub(crate) async fn run_until_signal(mut worker: Worker) -> Result<()> {
    let outcome = tokio::select! {
        r = worker.wait() => r,
        () = shutdown_signal() => Ok(()),
    };
    let stopped = worker.shutdown().await;
    outcome.and(stopped)
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
