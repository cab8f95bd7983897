//! The tables of the app's agents, set up before agents start: their changelog topics (checked
//! against their sources' partitions), definitions, and the global tables.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::base::config::Config;
use crate::base::error::{Error, Result};
use crate::base::spec::{Internal, TopicSpec};
use crate::instance::table::TableDef;
use crate::instance::table::global::{self, GlobalDef};
use crate::io::transport::Log;
use crate::wiring::agent::AgentSpec;
use crate::wiring::store_cell::StoreCell;

/// The tables of all agents: their store, definitions and changelog topics.
pub(super) struct TableSetup {
    defs: Vec<(String, Arc<TableDef>)>,
    globals: Vec<Arc<GlobalDef>>,
    /// Where changelogs are read from (the worker's log).
    pub(super) reader: Arc<dyn Log>,
}

impl TableSetup {
    pub(super) async fn prepare(
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
                // A table built from a topic is restored from that topic (created with the
                // agent's sources); every other table from a changelog of its own.
                let sourced = agent.table_feeds.contains(&table.name);
                let changelog = agent.changelog_of(&config.app_id, &table.name);
                if !sourced {
                    let spec = TopicSpec::internal(
                        &changelog,
                        Internal::Changelog,
                        Some(source_partitions),
                        &format!("changelog of table `{}`", table.name),
                    );
                    transport
                        .ensure_topics(std::slice::from_ref(&spec), source_partitions)
                        .await?;
                }
                let key_topic = key_topic(agent, sourced.then_some(changelog.as_str()));
                defs.push((
                    agent.name().to_owned(),
                    TableDef::placed_by(
                        &table.name,
                        &changelog,
                        sourced,
                        source_partitions,
                        key_topic,
                        store.clone(),
                    ),
                ));
            }
        }
        Ok(TableSetup {
            defs,
            globals,
            reader,
        })
    }

    /// Global tables catch up to their topics' ends (blocking this call), then a thread keeps
    /// following them until `stop`.
    pub(super) async fn start_globals(
        &self,
        stop: Arc<AtomicBool>,
    ) -> Result<Option<std::thread::JoinHandle<()>>> {
        let (globals, reader) = (self.globals.clone(), self.reader.clone());
        tokio::task::spawn_blocking(move || global::start(globals, reader, stop))
            .await
            .map_err(|e| Error::Shutdown(format!("global tables: {e}")))?
    }

    /// Every global table of the worker.
    pub(super) fn globals(&self) -> &[Arc<GlobalDef>] {
        &self.globals
    }

    pub(super) fn globals_of(&self, spec: &AgentSpec) -> Vec<Arc<GlobalDef>> {
        self.globals
            .iter()
            .filter(|g| spec.global_tables.iter().any(|t| **t == *g.topic))
            .cloned()
            .collect()
    }

    pub(super) fn defs_of(&self, agent: &str) -> Vec<Arc<TableDef>> {
        self.defs
            .iter()
            .filter(|(a, _)| a == agent)
            .map(|(_, d)| d.clone())
            .collect()
    }
}

/// The topic whose registry-coded keys place an agent's table keys (`TableDef::key_topic`): a
/// table built from a topic follows that topic, the others the agent's first source; `None`
/// when its keys are plain.
pub(crate) fn key_topic(agent: &AgentSpec, built_from: Option<&str>) -> Option<Arc<str>> {
    let source = match built_from {
        Some(topic) => agent.sources.iter().find(|s| s.name == topic),
        None => agent.sources.first(),
    }?;
    (source.key_schema)().map(|_| Arc::from(source.name.as_str()))
}
