//! Starting one agent: its failure topics, its consumer group's fetcher, its repartition
//! pipeline, and its instances (one task each, with its channels from the fetcher).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::run::run_instance;
use super::tables::TableSetup;
use super::{QUEUE_BATCHES, Worker};
use crate::base::config::{Config, OffsetReset};
use crate::base::error::{Error, Result};
use crate::base::failure::Policy;
use crate::base::metrics::AgentStats;
use crate::base::spec::{Internal, TopicSpec};
use crate::instance::context::InstanceState;
use crate::instance::record_loop::{CoreParts, RecordLoop};
use crate::instance::table::recovery::Recovery;
use crate::instance::table::{TableCore, TableDef};
use crate::io::transport::align::ReadMode;
use crate::io::transport::{Batch, Committer, Control, InstanceTx, Router};
use crate::wiring::agent::{AgentContext, AgentSpec, RunFn};
use crate::wiring::observe::AgentView;
use crate::wiring::pipeline::AgentPipeline;
use crate::wiring::standby;

/// The receiving ends of an instance's channels from the fetcher.
type InstanceRx = (mpsc::Receiver<Batch>, mpsc::UnboundedReceiver<Control>);

/// What an agent's instances share.
struct AgentParts {
    run: RunFn,
    group: Arc<str>,
    stats: Arc<AgentStats>,
    defs: Vec<Arc<TableDef>>,
    recovery: Option<Arc<Recovery>>,
    policy: Arc<Policy>,
    committer: Arc<dyn Committer>,
    pipeline: Arc<AgentPipeline>,
    /// The router's read mode, which the instances' windows and joins decide.
    read_mode: Arc<ReadMode>,
}

impl Worker {
    /// Starts `spec`: failure topics, fetcher, pipeline, then its instances.
    pub(super) async fn spawn_agent(
        &mut self,
        config: &Config,
        spec: AgentSpec,
        tables: &TableSetup,
        partitions: &HashMap<String, i32>,
    ) -> Result<()> {
        let Some(run) = spec.run.clone() else {
            return Err(Error::config(
                format!("agent `{}`", spec.name()),
                "has no function; call `AgentSpec::run`",
            ));
        };
        let group: Arc<str> = Arc::from(spec.group_id(&config.app_id));
        let stats = Arc::new(AgentStats::default());
        self.stats.insert(spec.name().to_owned(), stats.clone());
        let (txs, rxs) = instance_channels(spec.concurrency);
        let defs = tables.defs_of(spec.name());
        // With standby replicas an agent without declared tables gets a recovery too: its
        // instances add their window state to it, and its standby follows that.
        let standby = standby::wanted(config.standby_replicas, &*self.transport);
        let recovery = (!defs.is_empty() || standby).then(|| {
            Arc::new(Recovery::new(
                defs.clone(),
                tables.reader.clone(),
                stats.clone(),
            ))
        });
        // Co-partitioned (`validate::co_partitioned`): the first source's count is every one's.
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
        self.transport
            .ensure_topics(
                &failure_topics(&spec, &policy, source_partitions),
                config.partitions,
            )
            .await?;
        let router = Arc::new(
            Router::new(spec.name(), txs, config.shutdown_timeout)
                .bootstrapping(&spec.table_feeds)
                .aligned(config.read_ahead)
                .decided_by_agent(),
        );
        let committer = self.start_fetcher(config, &spec, &group, &policy, &router)?;
        self.start_standby(config, &spec, &group, recovery.as_ref(), &router)?;
        let pipeline = AgentPipeline::new(
            &config.app_id,
            Arc::from(spec.name()),
            self.transport.clone(),
            config.clone(),
            spec.concurrency,
            (source_partitions, super::tables::key_topic(&spec, None)),
            self.stop.clone(),
            self.registry.clone(),
            self.tables.clone(),
            tables.reader.clone(),
        );
        self.observe_agent(&spec, &group, &stats, &router, &pipeline, &defs);
        let parts = AgentParts {
            run,
            group,
            stats,
            defs,
            recovery,
            policy,
            committer,
            pipeline,
            read_mode: router.read_mode.clone(),
        };
        self.spawn_instances(config, &spec, tables, &parts, rxs);
        tracing::info!(agent = %spec.name(), group = %parts.group, instances = spec.concurrency, sources = ?spec.sources.iter().map(|s| &s.name).collect::<Vec<_>>(), "agent started");
        Ok(())
    }

    /// Standby replicas of the agent's tables (Kafka, `standby_replicas` > 0).
    fn start_standby(
        &mut self,
        config: &Config,
        spec: &AgentSpec,
        group: &Arc<str>,
        recovery: Option<&Arc<Recovery>>,
        router: &Arc<Router>,
    ) -> Result<()> {
        let (Some(recovery), Some(source)) = (recovery, spec.sources.first()) else {
            return Ok(());
        };
        if !standby::wanted(config.standby_replicas, &*self.transport) {
            return Ok(());
        }
        standby::Standby {
            agent: Arc::from(spec.name()),
            group: group.clone(),
            topic: source.name.clone(),
            replicas: config.standby_replicas,
            recovery: recovery.clone(),
            router: router.clone(),
            log: self.transport.clone(),
        }
        .start(self.stop.clone(), &self.registry)
    }

    /// The fetcher of the agent's consumer group: its sources, and its retry topics.
    fn start_fetcher(
        &mut self,
        config: &Config,
        spec: &AgentSpec,
        group: &str,
        policy: &Policy,
        router: &Arc<Router>,
    ) -> Result<Arc<dyn Committer>> {
        let topics = spec
            .sources
            .iter()
            .map(|s| s.name.clone())
            .chain(policy.retry_topics.iter().map(|t| t.to_string()))
            .collect();
        let reset = offset_reset(config, spec, policy)?;
        let (committer, fetcher) = self.transport.start_fetcher(
            group,
            topics,
            reset,
            router.clone(),
            self.stop.clone(),
        )?;
        self.registry.hold_thread(fetcher);
        Ok(committer)
    }

    /// Makes the agent visible to `/status`, `/metrics` and table queries.
    fn observe_agent(
        &self,
        spec: &AgentSpec,
        group: &Arc<str>,
        stats: &Arc<AgentStats>,
        router: &Arc<Router>,
        pipeline: &Arc<AgentPipeline>,
        defs: &[Arc<TableDef>],
    ) {
        self.observer
            .agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(AgentView {
                name: Arc::from(spec.name()),
                group: group.clone(),
                stats: stats.clone(),
                router: router.clone(),
                pipeline: pipeline.clone(),
                tables: defs.to_vec(),
                sources: spec.sources.iter().map(|s| s.name.clone()).collect(),
            });
    }

    /// One task per instance: its record loop over its channels, and the agent function.
    fn spawn_instances(
        &mut self,
        config: &Config,
        spec: &AgentSpec,
        tables: &TableSetup,
        parts: &AgentParts,
        rxs: Vec<InstanceRx>,
    ) {
        let agent: Arc<str> = Arc::from(spec.name());
        for (instance, (data, ctrl)) in rxs.into_iter().enumerate() {
            let cores = parts
                .defs
                .iter()
                .map(|d| TableCore::new(d.clone()))
                .collect();
            let shared = InstanceState::new(
                agent.clone(),
                self.transport.clone(),
                parts.stats.clone(),
                cores,
                config,
            );
            let _ = shared.position.read_mode.set(parts.read_mode.clone());
            let core = RecordLoop::new(CoreParts {
                data,
                ctrl,
                stop: self.registry.stop_channel(),
                shared: shared.clone(),
                group: parts.group.clone(),
                committer: parts.committer.clone(),
                interval: config.commit_interval,
                backlog_interval: config.backlog_interval(),
                recovery: parts.recovery.clone(),
                instance,
                instances: spec.concurrency,
                pipeline: Some(parts.pipeline.clone()),
                policy: parts.policy.clone(),
            });
            let ctx = AgentContext {
                agent: spec.name().to_owned(),
                instance,
                core: None,
                sources: spec.sources.clone(),
                sink: spec.sink.clone(),
                shared,
                globals: tables.globals_of(spec),
                policy: parts.policy.clone(),
                requests: self.requests.clone(),
                table_feeds: spec.table_feeds.clone(),
                table_joins: spec.table_joins.clone(),
            };
            let name = spec.name().to_owned();
            let result = run_instance(parts.run.clone(), ctx, core);
            self.agents.spawn(async move { (name, result.await) });
        }
    }
}

/// The channels from an agent's fetcher to each of its instances.
/// Where the agent's group starts on a partition without a committed offset: the agent's
/// `offset_reset`, else the app's. One consumer reads an agent's sources and its retry
/// topics, so `latest` would also skip records already waiting in a retry topic the group
/// never read: refused.
fn offset_reset(config: &Config, spec: &AgentSpec, policy: &Policy) -> Result<OffsetReset> {
    let reset = match spec.offset_reset {
        Some(reset) => reset,
        None => config.default_offset_reset()?,
    };
    if reset == OffsetReset::Latest && !policy.retry_topics.is_empty() {
        return Err(Error::config(
            format!("agent `{}`: offset_reset", spec.name()),
            "`latest` with on_error = \"retry_topics\" would skip records waiting in a retry topic; use `earliest` or another on_error policy",
        ));
    }
    Ok(reset)
}

fn instance_channels(concurrency: usize) -> (Vec<InstanceTx>, Vec<InstanceRx>) {
    (0..concurrency)
        .map(|_| {
            let (data_tx, data_rx) = mpsc::channel(QUEUE_BATCHES);
            let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
            (
                InstanceTx {
                    data: data_tx,
                    ctrl: ctrl_tx,
                },
                (data_rx, ctrl_rx),
            )
        })
        .unzip()
}

/// The dead-letter topic, and the retry topics, which the agent reads too (co-partitioned with
/// its source, so a retried record comes back to its instance).
fn failure_topics(spec: &AgentSpec, policy: &Policy, source_partitions: i32) -> Vec<TopicSpec> {
    let mut topics = vec![TopicSpec::internal(
        &policy.dead_letter,
        Internal::DeadLetters,
        None,
        &format!("dead letters of agent `{}`", spec.name()),
    )];
    for topic in &policy.retry_topics {
        topics.push(TopicSpec::internal(
            topic,
            Internal::Retry,
            Some(source_partitions),
            &format!("retries of agent `{}`", spec.name()),
        ));
    }
    topics
}
